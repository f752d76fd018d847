"""The model file: a trained network with everything inference and DDML need.

One file written by :func:`torch.save` holding only tensors, strings and
numbers, and read with ``torch.load(weights_only=True)``, so loading never
executes code.  Its top level is a dict:

``format`` (``"scribbleseg-model"``), ``format_version`` (int),
``meta`` (a JSON string: architecture config, reference stain, voxel size,
training record), ``state`` (the network's state dict), ``bank_features``
(float16 ``(N, C)``) and ``bank_labels`` (uint8 ``(N,)``): features of training
pixels and their labels (1 heart, 0 background), class-balanced, for DDML.

Format versions: 1, the first; 2 adds ``meta["provenance"]``, where the model
came from (see :func:`make_provenance`): the volumes it learnt from, the
optimisation steps, when, and its parent model when it was fine-tuned from one
(``scribbleseg train --init``).  Version-1 files still load, with an empty
provenance.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import choices
from .checks import check_device, check_spacing
from .errors import ScribbleSegError
from .fileio import atomic_output, signals_held
from .nets import ModelConfig, build_net
from .runtime import resolve_device

FORMAT = "scribbleseg-model"
FORMAT_VERSION = 2
"""The version this code writes."""

READABLE_VERSIONS = (1, 2)
"""Every version this code reads (older files must keep working after an update)."""

PathLike = Union[str, os.PathLike]


@dataclass
class SegModel:
    """A loaded model.

    Attributes
    ----------
    config : nets.ModelConfig
    net : torch.nn.Module
        In eval mode, on ``device``.
    stain : dict or None
        The reference stain (``stain.VahadaneNormalizer.from_dict``), or None if
        the model was trained without stain normalization.
    voxel_size : tuple of 3 float
        ``(x, y, z)`` mm of the training volumes.
    bank_features : numpy.ndarray
        float32 ``(N, C)``.
    bank_labels : numpy.ndarray
        uint8 ``(N,)``, 1 heart, 0 background.
    device : torch.device
    meta : dict
        The training record (``training`` key) and anything else stored.
    path : pathlib.Path or None

    Examples
    --------
    >>> from ScribbleSegLib.nets import ModelConfig, build_net
    >>> config = ModelConfig(feature_channels=16)
    >>> model = SegModel(config, build_net(config).eval(), None, (0.02, 0.02, 0.1), np.zeros((0, 16), np.float32),
    ...                  np.zeros(0, np.uint8), torch.device("cpu"))
    >>> model.feature_channels, model.provenance  # a model with no record of where it came from
    (16, {})
    """

    config: ModelConfig
    net: torch.nn.Module
    stain: Optional[Dict[str, Any]]
    voxel_size: Tuple[float, float, float]
    bank_features: np.ndarray
    bank_labels: np.ndarray
    device: torch.device
    meta: Dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None

    @property
    def feature_channels(self) -> int:
        """Channels of the per-pixel features."""
        return self.config.feature_channels

    @property
    def provenance(self) -> Dict[str, Any]:
        """Where the model came from (``{}`` for a format-1 file); see :func:`make_provenance`.

        Examples
        --------
        >>> from ScribbleSegLib.nets import ModelConfig, build_net
        >>> model = SegModel(ModelConfig(), build_net(ModelConfig()), None, (1.0, 1.0, 1.0), np.zeros((0, 32)),
        ...                  np.zeros(0, np.uint8), torch.device("cpu"), meta={"provenance": {"steps": 500}})
        >>> model.provenance["steps"], model.provenance is model.meta["provenance"]  # a copy
        (500, False)
        """
        return dict(self.meta.get("provenance") or {})


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes (identifies a parent model whatever its name).

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "empty.model")
    >>> open(path, "wb").close()
    >>> file_sha256(path)  # the SHA-256 of no bytes
    'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def array_sha256(array: np.ndarray) -> str:
    """Hex SHA-256 of an array's shape, dtype and values (C order): identifies training data whatever
    file format held it.

    A model's provenance keeps it for each volume it learnt from (``data_sha256``), so that
    ``array_sha256(volume_io.read_image(path).array)`` tells whether a file still holds those
    voxels.  A section at a time: a memory map is never read whole.

    Examples
    --------
    >>> array_sha256(np.zeros((2, 3), np.uint8)) == array_sha256(np.zeros((2, 3), np.uint8))
    True
    >>> array_sha256(np.zeros((2, 3), np.uint8)) == array_sha256(np.zeros((3, 2), np.uint8))
    False
    """
    array = np.asarray(array)
    h = hashlib.sha256(f"{array.dtype.str} {array.shape}\n".encode("ascii"))
    for part in (array if array.ndim > 1 else [array]):
        h.update(np.ascontiguousarray(part).data)
    return h.hexdigest()


def bank_network_logit(model: Any) -> Optional[np.ndarray]:
    """The network's own heart logit of each pixel of a model's bank: its 1x1 output layer on the stored features.

    The features are the ones the output layer reads, so ``sigmoid`` of this is the network's probability of
    those pixels (to the float16 rounding of the stored features).  None when the model has no bank or its
    network no 1x1 output layer named ``head``.

    Examples
    --------
    >>> from ScribbleSegLib.nets import ModelConfig, build_net
    >>> config = ModelConfig.small("munet")
    >>> model = SegModel(config, build_net(config), None, (1.0, 1.0, 1.0),
    ...                  np.zeros((3, config.feature_channels), np.float32), np.array([0, 1, 1], np.uint8),
    ...                  torch.device("cpu"))
    >>> bank_network_logit(model).shape
    (3,)
    """
    head = getattr(getattr(model, "net", None), "head", None)
    bank = getattr(model, "bank_features", None)
    if bank is None or not len(bank) or not isinstance(head, torch.nn.Conv2d) or head.kernel_size != (1, 1):
        return None
    weight = head.weight.detach().float().cpu().numpy().reshape(-1)
    bias = 0.0 if head.bias is None else float(head.bias.detach().float().cpu())
    return np.asarray(bank, np.float32) @ weight + np.float32(bias)


def make_provenance(volumes: Sequence[str], steps: int, parent: Optional["SegModel"] = None,
                    **extra: Any) -> Dict[str, Any]:
    """The provenance record stored in a model file (JSON-able).

    Parameters
    ----------
    volumes : list of str
        What the model learnt from in this run (file names, or a description of generated data).
    steps : int
        Optimisation steps of this run.
    parent : SegModel, optional
        The model this one was fine-tuned from.  Its file name, SHA-256 and own
        provenance are kept, so a chain of fine-tunings can be traced back to
        the first model.
    **extra
        Anything else worth keeping (e.g. the command that made the model).

    Returns
    -------
    dict
        ``created`` (ISO 8601, UTC), ``volumes``, ``steps``, ``parent`` (None or
        ``{"file", "sha256", "provenance"}``), ``generation`` (0 for a model trained
        from scratch, parent's + 1 for a fine-tuned one) and ``extra``'s keys.

    Examples
    --------
    >>> first = make_provenance(["heart1.nrrd"], 1000, command="scribbleseg train")
    >>> first["volumes"], first["steps"], first["parent"], first["generation"], first["command"]
    (['heart1.nrrd'], 1000, None, 0, 'scribbleseg train')

    A model fine-tuned from one that was itself fine-tuned once:

    >>> from ScribbleSegLib.nets import ModelConfig, build_net
    >>> parent = SegModel(ModelConfig(), build_net(ModelConfig()), None, (1.0, 1.0, 1.0), np.zeros((0, 32)),
    ...                   np.zeros(0, np.uint8), torch.device("cpu"), meta={"provenance": {"generation": 1}})
    >>> record = make_provenance(["heart2.nrrd"], 200, parent=parent)
    >>> record["generation"], record["parent"]["provenance"]
    (2, {'generation': 1})
    """
    record: Dict[str, Any] = {
        "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "volumes": [str(v) for v in volumes],
        "steps": int(steps),
        "parent": None,
        "generation": 0,
    }
    if parent is not None:
        parent_record = parent.provenance
        record["parent"] = {
            "file": parent.path.name if parent.path is not None else None,
            "sha256": file_sha256(parent.path) if parent.path is not None and parent.path.is_file() else None,
            "provenance": parent_record,
        }
        record["generation"] = int(parent_record.get("generation", 0)) + 1
    record.update(extra)
    return record


def expected_model_bytes(config: ModelConfig, bank_pixels: int) -> int:
    """About how many bytes :func:`save_model` writes for a network of ``config`` and a bank of
    ``bank_pixels`` training pixels, so that a training run can check the free space before it starts.

    The network is built on torch's ``meta`` device, which allocates nothing.

    Examples
    --------
    >>> from ScribbleSegLib.nets import ModelConfig
    >>> config = ModelConfig.preset("small", "munet")
    >>> expected_model_bytes(config, 40000) > 40000 * config.feature_channels * 2
    True
    """
    from .nets import build_net

    with torch.device("meta"):
        net = build_net(config)
    state = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    # float16 features and a uint8 label per bank pixel, plus the metadata and the archive's own records.
    return int(state + int(bank_pixels) * (2 * config.feature_channels + 1) + (64 << 10))


#: Endings of the files the other commands read and write (images, segmentations, surfaces): a model file given
#: one of them is a slip for another output, and the next run would take it for that kind of file.
NOT_MODEL_SUFFIXES = (".seg.nrrd", ".nrrd", ".nii", ".nii.gz", ".mha", ".mhd", ".png", ".tif", ".tiff", ".jpg",
                      ".jpeg", ".stl", ".vtp", ".obj")


def payload_checksum(state: Dict[str, torch.Tensor], bank_features: torch.Tensor, bank_labels: torch.Tensor) -> str:
    """Hex SHA-256 of a model's numbers: every weight (by name, in name order) and the feature bank.

    torch's zip format does not check what it reads: bytes damaged inside a tensor load as other numbers, and
    a network would run on them without a word.  :func:`save_model` stores this in the model's meta and
    :func:`load_model` compares (a file without it, from before, loads as it did).

    Examples
    --------
    >>> state = {"w": torch.ones(2, 3)}
    >>> payload_checksum(state, torch.zeros(0, 3), torch.zeros(0)) == payload_checksum(
    ...     {"w": torch.ones(2, 3)}, torch.zeros(0, 3), torch.zeros(0))
    True
    >>> payload_checksum(state, torch.zeros(0, 3), torch.zeros(0)) == payload_checksum(
    ...     {"w": torch.full((2, 3), 2.0)}, torch.zeros(0, 3), torch.zeros(0))
    False
    """
    digest = hashlib.sha256()
    named = sorted(state.items()) + [("bank_features", bank_features), ("bank_labels", bank_labels)]
    for name, tensor in named:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def check_model_name(path: PathLike, name: str) -> Path:
    """``path`` as a :class:`~pathlib.Path`, or a one-line error naming ``name`` if it ends like an image, a
    segmentation or a surface (:data:`NOT_MODEL_SUFFIXES`).

    Examples
    --------
    >>> check_model_name("heart.model", "out_path")
    PosixPath('heart.model')
    >>> check_model_name("heart.seg.nrrd", "out_path")
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: heart.seg.nrrd (out_path): ends in .seg.nrrd, as an image, a \
segmentation or a surface does; a model file goes here (heart.model, say)
    """
    path = Path(path)
    ending = next((s for s in NOT_MODEL_SUFFIXES if path.name.lower().endswith(s)), None)
    if ending is not None:
        raise ScribbleSegError(f"{path} ({name}): ends in {ending}, as an image, a segmentation or a surface does; "
                               "a model file goes here (heart.model, say)")
    return path


def check_model_output(path: PathLike, name: str) -> Path:
    """:func:`check_model_name`, and a file already at ``path`` must be a ScribbleSeg model: a training
    replaces a model, nothing else (it replaced notes, tables and manifests given as its output, and said "in
    place of the model that was there").  A model of another format version may be replaced.

    Examples
    --------
    >>> import os, tempfile
    >>> notes = os.path.join(tempfile.mkdtemp(), "notes.txt")
    >>> with open(notes, "w") as f:
    ...     _ = f.write("important")
    >>> check_model_output(notes, "out_path")
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: /.../notes.txt (out_path): holds a file that is not a ScribbleSeg \
model (not a ScribbleSeg model file); a training replaces only a model: give another path, or remove the file
    """
    path = check_model_name(path, name)
    if path.is_file():
        try:
            _read(path, any_version=True)
        except ScribbleSegError as exc:
            reason = str(exc).split(": ", 1)[-1]
            raise ScribbleSegError(f"{path} ({name}): holds a file that is not a ScribbleSeg model ({reason}); a "
                                   "training replaces only a model: give another path, or remove the file") from None
    return path


def save_model(path: PathLike, net: torch.nn.Module, config: ModelConfig, *,
               stain: Optional[Dict[str, Any]] = None,
               voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
               bank_features: Optional[np.ndarray] = None, bank_labels: Optional[np.ndarray] = None,
               training: Optional[Dict[str, Any]] = None,
               provenance: Optional[Dict[str, Any]] = None) -> Path:
    """Write a model file atomically.

    Parameters
    ----------
    path : path
    net : torch.nn.Module
        The trained network (its state dict is stored on the CPU).
    config : nets.ModelConfig
    stain : dict, optional
        ``VahadaneNormalizer.to_dict()`` of the reference stain.
    voxel_size : 3 floats
        ``(x, y, z)`` mm.
    bank_features, bank_labels : numpy.ndarray, optional
        ``(N, C)`` features and ``(N,)`` labels (0/1) of training pixels.
    training : dict, optional
        JSON-able record of the training run.
    provenance : dict, optional
        Where the model came from (:func:`make_provenance`); default: nothing known.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile
    >>> from ScribbleSegLib.nets import ModelConfig, build_net
    >>> folder = tempfile.TemporaryDirectory()
    >>> config = ModelConfig()
    >>> path = save_model(Path(folder.name) / "fresh.model", build_net(config), config, voxel_size=(0.02, 0.02, 0.1))
    >>> load_model(path, device="cpu").voxel_size
    (0.02, 0.02, 0.1)
    >>> folder.cleanup()
    """
    # Everything load_model will check, checked here: a file it would call damaged is never written.
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ScribbleSegError(f"path must be a model file name, got {path!r}")
    if not isinstance(config, ModelConfig):
        raise ScribbleSegError(f"config must be a ModelConfig, got {type(config).__name__}")
    if not isinstance(net, torch.nn.Module):
        raise ScribbleSegError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    try:
        build_net(config).load_state_dict(net.state_dict())
    except (RuntimeError, TypeError) as exc:
        raise ScribbleSegError(f"net does not fit config ({_first_line(exc)})") from None
    size = check_spacing(voxel_size, "voxel_size")
    if size is None:
        raise ScribbleSegError("voxel_size must be three positive numbers (x, y, z) in mm, got None")
    c = config.feature_channels
    raw = np.zeros((0, c), np.float32) if bank_features is None else np.asarray(bank_features, np.float32)
    if raw.size and not (np.isfinite(raw).all() and np.abs(raw).max() <= np.finfo(np.float16).max):
        raise ScribbleSegError("bank_features must be finite and within float16's range (it is stored as float16)")
    feats = raw.astype(np.float16)
    raw_labels = np.zeros(0, np.uint8) if bank_labels is None else np.asarray(bank_labels).reshape(-1)
    if raw_labels.size and not np.isin(raw_labels, (0, 1)).all():
        raise ScribbleSegError("bank_labels must be 0 (background) or 1 (heart)")
    labels = raw_labels.astype(np.uint8)
    if feats.ndim != 2 or feats.shape[1] != c or len(labels) != len(feats):
        raise ScribbleSegError(f"{path}: the feature bank must be (N, {c}) with N labels, got {feats.shape} "
                               f"and {labels.shape}")
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    bank_x, bank_y = torch.from_numpy(feats.copy()), torch.from_numpy(labels.copy())
    meta = {"config": config.to_dict(), "stain": stain, "voxel_size": list(size),
            "training": training or {}, "provenance": provenance or {},
            "checksum": payload_checksum(state, bank_x, bank_y)}
    try:
        meta_text = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ScribbleSegError(f"stain, training and provenance must be plain JSON data ({_first_line(exc)})") \
            from None
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": meta_text,
        "state": state,
        "bank_features": bank_x,
        "bank_labels": bank_y,
    }
    nbytes = sum(t.numel() * t.element_size() for t in payload["state"].values()) + feats.nbytes + labels.nbytes
    with atomic_output(path, nbytes + len(meta_text)) as tmp:  # a full disk: one line, no partial file
        # Ctrl-C or SIGTERM inside torch's zip writer ended in a traceback from it, or in an abort: held until the
        # temporary is whole, then raised here, where it is removed.
        with signals_held(), open(tmp, "wb") as f:  # our own handle: closed even when torch's writer fails
            torch.save(payload, f)
    return Path(path)


def _read(path: Path, any_version: bool = False) -> Dict[str, Any]:
    if not path.is_file():
        from .starter import starter_name_hint

        raise ScribbleSegError(f"{path}: is a folder, not a model file" if path.is_dir() else
                               f"{path}: no such model file{starter_name_hint(path)}")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise ScribbleSegError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None
    # torch saves a zip archive; older files are a pickle (protocol 2 or later starts with 0x80).  Anything else
    # (a text file, an image) is not a model, whatever torch's unpickler says about it; a shorter file is cut
    # if it starts as one does (a 3-byte "{}" was called "Python objects other than tensors").
    if head and not (b"PK\x03\x04".startswith(head[:4]) or head.startswith(b"\x80")):
        raise ScribbleSegError(f"{path}: not a ScribbleSeg model file")
    if len(head) < 4 and not head.startswith(b"\x80"):
        raise ScribbleSegError(f"{path}: not a readable model file (truncated or corrupt)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4" from a hostile file
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise ScribbleSegError(f"{path}: refused to load: the file holds Python objects other than tensors "
                                   "and loading it could execute code") from None
        raise ScribbleSegError(f"{path}: not a readable model file (truncated or corrupt)") from None
    except Exception:  # noqa: BLE001 - whatever torch raises on a damaged file, the answer is the same
        raise ScribbleSegError(f"{path}: not a readable model file (truncated or corrupt)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ScribbleSegError(f"{path}: not a ScribbleSeg model file")
    version = payload.get("format_version")
    if version not in READABLE_VERSIONS and not any_version:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        hint = "; update ScribbleSeg" if isinstance(version, int) and version > FORMAT_VERSION else ""
        raise ScribbleSegError(f"{path}: model file format version {version!r}; this ScribbleSeg reads "
                               f"versions {readable}{hint}")
    return payload


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def load_model(path: PathLike, device: str = choices.DEFAULT_DEVICE) -> SegModel:
    """Load a model file without executing code.

    Parameters
    ----------
    path : path
        A model file, or ``"starter"`` for the starter model that comes with ScribbleSeg.
    device : str
        ``auto``, ``cpu`` or ``cuda``.

    Returns
    -------
    SegModel

    Raises
    ------
    ScribbleSegError
        If the file is missing, truncated or corrupt, of another format version,
        holds anything but tensors and plain data, or does not fit its config.

    Examples
    --------
    >>> from ScribbleSegLib.starter import starter_model_path
    >>> model = load_model(starter_model_path(), device="cpu")
    >>> model.config.arch, model.voxel_size
    ('munet', (0.0177, 0.0177, 0.035))
    """
    from .starter import STARTER, resolve_model

    if not isinstance(path, (str, os.PathLike)) or not str(path):
        shown = "an empty file name" if isinstance(path, str) else type(path).__name__
        raise ScribbleSegError(f"path must be a model file name (or {STARTER!r}), got {shown}")
    path = resolve_model(path) if str(path) == STARTER else Path(path)
    dev = resolve_device(check_device(device))  # None or 0 refused, as segment and Session refuse them
    payload = _read(path)
    try:
        meta = json.loads(payload["meta"])
        meta.setdefault("provenance", {})  # format 1 had none
        meta["format_version"] = payload["format_version"]
        config = ModelConfig.from_dict(meta["config"])
        voxel_size = tuple(float(v) for v in meta["voxel_size"])
        stain = meta.get("stain")
        state = payload["state"]
        checksum = meta.get("checksum")  # files written before it have none
        if checksum is not None and checksum != payload_checksum(state, payload["bank_features"],
                                                                 payload["bank_labels"]):
            raise ScribbleSegError("damaged model file (its weights or feature bank do not match the checksum "
                                   "stored with them)")
        feats = payload["bank_features"].float().numpy()
        labels = payload["bank_labels"].to(torch.uint8).numpy()
    except KeyError as exc:  # str() of a KeyError is the bare key in quotes: "damaged model file ('bank_features')"
        raise ScribbleSegError(f"{path}: damaged model file (it lacks its {exc.args[0]!r} entry)") from None
    except (TypeError, ValueError, AttributeError, RuntimeError, json.JSONDecodeError) as exc:
        raise ScribbleSegError(f"{path}: damaged model file ({_first_line(exc)})") from None
    except ScribbleSegError as exc:
        raise ScribbleSegError(f"{path}: {exc}") from None
    if len(voxel_size) != 3 or not all(math.isfinite(v) and v > 0 for v in voxel_size) or feats.ndim != 2 \
            or feats.shape[1:] != (config.feature_channels,) or labels.shape != (len(feats),):
        raise ScribbleSegError(f"{path}: damaged model file (voxel size or feature bank has the wrong shape)")
    # Bytes overwritten inside a tensor load as numbers; NaN or infinite ones are damage, found here and not
    # as a NaN result (or "training diverged") later.
    if not (np.isfinite(feats).all() and all(not torch.is_floating_point(t) or bool(torch.isfinite(t).all())
                                             for t in state.values() if isinstance(t, torch.Tensor))):
        raise ScribbleSegError(f"{path}: damaged model file (weights or feature bank hold NaN or infinite values)")
    if stain is not None:  # checked here, where the file can be named, not when a volume is first normalized
        from .stain import VahadaneNormalizer

        try:
            VahadaneNormalizer.from_dict(stain)
        except ScribbleSegError as exc:
            raise ScribbleSegError(f"{path}: damaged model file ({exc})") from None
    with torch.random.fork_rng(devices=[]):  # the initial weights, replaced below, drew on the caller's RNG
        net = build_net(config)
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        # torch's message opens with "Error(s) in loading state_dict for MUNet:"; the problem is on the next line.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else _first_line(exc)
        raise ScribbleSegError(f"{path}: the weights do not fit the stored architecture "
                               f"({detail[:200]})") from None
    net.to(dev).eval()
    return SegModel(config=config, net=net, stain=stain, voxel_size=voxel_size, bank_features=feats,
                    bank_labels=labels, device=dev, meta=meta, path=path)
