"""Training of the M-Unet (or the plain U-Net) on labelled volumes.

What a training run does (:func:`train_model`):

1. checks every image/label pair, fits the reference stain on the training
   sections and renders every volume in it (Vahadane; skipped with a warning
   when the images hold no two distinct stains);
2. builds each section's multi-magnification pyramid (:mod:`multifov`);
3. draws class-balanced patches (half centred on heart pixels, a quarter on
   background near the heart, a quarter anywhere in the background) and
   augments them: the 8 flips/90-degree rotations, small scale changes and
   stain jitter in optical-density space, identical for all fields of view;
4. minimises the heart cross-entropy of the output plus the experts' own
   losses (deep supervision) and, with adaptive weighting, the weighting CNN's
   error in predicting each expert's Dice, with Adam (lr 1e-3, batch 8, as the
   paper; the rate falls along a cosine over the budget); bf16 autocast on a
   GPU; on a CPU with two cores or fewer, one intra-op thread;
5. evaluates on fixed validation patches and stops early when the validation
   loss stops improving, or when the iteration or time budget is spent, and
   keeps the best weights;
6. computes the training-pixel bank for DDML: features of class-balanced
   training pixels, half near the heart boundary and half farther away, from
   the same tiled inference that later runs on new volumes;
7. writes the model file (:mod:`model_file`).

With the iteration budget (not the time budget) ending the run, a fixed seed
gives the same model on the CPU.

Fine-tuning (``init=``, ``scribbleseg train --init MODEL``) starts from an
existing model instead of random weights: the parent's architecture and
reference stain are kept (the new volumes are rendered in the parent's stain,
so the features the parent's users cached stay comparable), the learning rate
and step budget default to ``choices.FINETUNE_LR`` and ``choices.FINETUNE_ITERS``,
and the DDML bank is computed again, on the new volumes, with the fine-tuned
network: the parent's bank holds features of the parent's network, which no
longer match.  The new file records its parent in ``meta["provenance"]``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import choices, multifov
from .errors import ScribbleSegError
from .fileio import check_output_path, check_outputs
from .geometry import UNKNOWN_PIXEL, Volume, micrometres_question
from .inference import SectionPredictor, cpu_threads, default_tile
from .model_file import SegModel, array_sha256, check_model_output, load_model, make_provenance, save_model
from .nets import ModelConfig, MUNet, build_net, scale_input
from .padding import padding_to_glass
from .progress import CancelToken, LinkedToken, ProgressCallback, check, report
from .runtime import in_order, resolve_device, section_workers, thread_pool, torch_threads
from .white_point import glass_white, white_glass

_log = logging.getLogger(__name__)

# The eight flips and quarter turns, as 2x2 matrices acting on (x, y).
_D4 = np.array([[[1, 0], [0, 1]], [[0, -1], [1, 0]], [[-1, 0], [0, -1]], [[0, 1], [-1, 0]],
                [[-1, 0], [0, 1]], [[1, 0], [0, -1]], [[0, 1], [1, 0]], [[0, -1], [-1, 0]]], dtype=np.float32)


@dataclass
class TrainOptions:
    """Settings of a training run.

    Attributes
    ----------
    batch : int
        Patches per step (8 in the paper).
    lr : float
        Adam learning rate (1e-3 in the paper).
    cosine : bool
        Let the learning rate fall along a cosine to 5 % of ``lr`` over the
        budget (the larger of the spent fractions of iterations and time).
    max_iters : int
        Iteration budget (default: the small preset's, :data:`choices.PRESETS`;
        the paper-sized networks want tens of thousands).
    max_minutes : float or None
        Wall-clock budget of the optimisation (the bank and the file come after): no step starts that would leave
        too little of it, by the last step's and the last validation's times, for the validation after it.
    eval_every : int
        Steps between validation evaluations.
    patience : int
        Evaluations without a better validation loss before stopping.
    val_patches : int
        Fixed validation patches (half on heart, half on background).
    augment : bool
        Flips, quarter turns, scale and stain jitter.
    scale_jitter : float
        Scale factors are drawn log-uniformly in ``[1/(1+s), 1+s]``.
    od_jitter : float
        Relative jitter of each colour channel's optical density.
    normalize : bool
        Fit a reference stain on the training data and render every volume in it.
    bank_per_class : int
        Training pixels per class in the DDML bank.
    bank_sections : int
        Sections per training volume whose features feed the bank.

    Examples
    --------
    >>> TrainOptions().batch, TrainOptions().augment
    (8, True)
    >>> TrainOptions(max_minutes=10, patience=12).max_minutes  # a time budget, and a longer wait
    10
    """

    batch: int = choices.TRAIN_BATCH
    lr: float = choices.TRAIN_LR
    max_iters: int = choices.PRESETS[choices.DEFAULT_PRESET].max_iters
    max_minutes: Optional[float] = None
    eval_every: int = 100
    patience: int = 6
    val_patches: int = 192
    cosine: bool = True
    augment: bool = True
    scale_jitter: float = 0.1
    od_jitter: float = 0.1
    normalize: bool = True
    bank_per_class: int = 20000
    bank_sections: int = 8


# --------------------------------------------------------------------------- inputs

def check_pair(image: Union[Volume, np.ndarray], label: np.ndarray, name: str) -> Tuple[np.ndarray, np.ndarray]:
    """Check one training volume; return its image array and a 0/1 uint8 label.

    A label without heart, or all heart, is a volume like any other here (a tile beside the
    organ teaches background); :func:`check_label_set` asks the set as a whole for both classes.

    Raises
    ------
    ScribbleSegError
        If the image is not ``(Z, Y, X, 3)`` or ``(Z, Y, X)`` (grey, repeated into RGB) uint8, or the label's
        size differs or its values are not numbers of 0 and above.

    Examples
    --------
    >>> image, label = check_pair(np.zeros((1, 2, 4), np.uint8), np.array([[[0, 3, 0, 0], [0, 0, 0, 1]]]), "v")
    >>> image.shape, label.tolist()  # grey repeated into RGB; any value above 0 is heart
    ((1, 2, 4, 3), [[[0, 1, 0, 0], [0, 0, 0, 1]]])
    """
    array = image.array if isinstance(image, Volume) else np.asarray(image)
    label = np.asarray(label)
    if array.ndim == 3 and array.dtype == np.uint8 and array.shape[2] != 3:
        # Grey, as pipeline.segment and the command line take it (a shape (Z, Y, 3) would be one RGB section).
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ScribbleSegError(f"{name}: the image must be (Z, Y, X, 3) uint8 RGB or (Z, Y, X) uint8 grey, got "
                               f"{array.dtype} {array.shape}")
    if label.shape != array.shape[:3]:
        raise ScribbleSegError(f"{name}: the label is {_size(label.shape)} but the image is {_size(array.shape[:3])}")
    # As a label file's values are checked: NaN counted as background, and -1 was "no heart voxel (all zero)".
    if label.dtype.kind not in "buif":
        raise ScribbleSegError(f"{name}: the label must be numbers (0 background, > 0 heart), got {label.dtype}")
    if label.dtype.kind == "f" and not np.isfinite(label).all():
        raise ScribbleSegError(f"{name}: the label holds NaN or infinite values (0 background, > 0 heart)")
    if label.dtype.kind in "if" and label.size and label.min() < 0:
        raise ScribbleSegError(f"{name}: the label holds negative values (down to {label.min():g}); 0 is "
                               "background, > 0 heart")
    return array, (label > 0).astype(np.uint8)


#: A label marking more than this share of its voxels as heart gets a warning: the heart rarely fills a section
#: but a mask saved the other way round does (89 % in a new-user pass of 2026-12-06).
INVERTED_SHARE = 0.8


def check_label_set(labels: Sequence[np.ndarray], names: Sequence[str], kind: str = "training") -> None:
    """Refuse a set of 0/1 labels without a heart or without a background voxel; note the labels of one class only.

    Tiles or volumes that hold only background (or only heart) are useful beside others that hold both: each
    gets one note, so that a label file given by mistake (all zero) is still seen.  ``kind`` names the set.

    Raises
    ------
    ScribbleSegError
        If no label marks a heart voxel, or every label marks every voxel as heart.

    Examples
    --------
    >>> check_label_set([np.array([[[0, 1]]]), np.zeros((1, 1, 2))], ["a.png", "b.png"])
    >>> check_label_set([np.zeros((1, 1, 2))], ["b.png"])
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: b.png: the training label marks no heart voxel (all zero)
    """
    if not labels:
        return
    empty = [n for l, n in zip(labels, names) if not l.any()]
    full = [n for l, n in zip(labels, names) if l.all()]
    if len(empty) == len(labels):
        where = names[0] if len(labels) == 1 else f"every {kind} label ({len(labels)})"
        raise ScribbleSegError(f"{where}: the {kind} label marks no heart voxel (all zero)" if len(labels) == 1 else
                               f"{where} marks no heart voxel (all zero): {kind} needs heart somewhere")
    if len(full) == len(labels):
        where = names[0] if len(labels) == 1 else f"every {kind} label ({len(labels)})"
        raise ScribbleSegError(f"{where}: the {kind} label marks every voxel as heart (no background)"
                               if len(labels) == 1 else
                               f"{where} marks every voxel as heart: {kind} needs background somewhere")
    for name in empty:
        _log.info("%s: the label marks no heart voxel: its sections teach background only", name)
    for name in full:
        _log.info("%s: the label marks every voxel as heart: its sections teach heart only", name)
    for label, name in zip(labels, names):
        share = float(np.count_nonzero(label)) / max(1, label.size)
        if INVERTED_SHARE < share < 1.0:
            # A mask saved the other way round (heart black, the rest white) trained the glass as heart, unsaid.
            _log.warning("%s: the label marks %.0f%% of the voxels as heart: is the mask inverted (heart black)?",
                         name, 100 * share)
        gaps = _sections_without_heart_inside(label)
        if gaps:
            # A heart runs through its sections without a break: a stack outlined on every few sections (or up to
            # where the outliner stopped) teaches the heart of the others as background, unsaid.
            _log.warning("%s: %d section(s) between sections with heart hold none (%s): is the label partial? Its "
                         "unmarked sections are taught as background", name, len(gaps), _section_list(gaps))


def _sections_without_heart_inside(label: np.ndarray) -> List[int]:
    """The sections (0-based) of a ``(Z, Y, X)`` label without heart that lie between sections with heart."""
    if label.ndim != 3 or label.shape[0] < 3:
        return []
    marked = label.reshape(label.shape[0], -1).any(axis=1)
    first, last = np.flatnonzero(marked)[[0, -1]] if marked.any() else (0, -1)
    return [int(z) for z in range(first + 1, last) if not marked[z]]


def _section_list(sections: Sequence[int], shown: int = 6) -> str:
    """Section numbers counted from 1, as ``3, 4, 7`` or ``3, 4, 7, 8, 9, 12 and 5 more``."""
    text = ", ".join(str(z + 1) for z in sections[:shown])
    return text + (f" and {len(sections) - shown} more" if len(sections) > shown else "")


def _size(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


# --------------------------------------------------------------------------- data

class PatchSource:
    """Pyramids of labelled volumes and class-balanced patch centres.

    Parameters
    ----------
    images : list of (Z, Y, X, 3) uint8
    labels : list of (Z, Y, X) uint8 (0/1)
    config : nets.ModelConfig
    sections : list of index arrays, optional
        Sections of each volume to draw from (default all).
    max_pool : int
        The most pixel indices a volume keeps per class: each of its sections keeps at most ``max_pool`` over
        their number, sampled at random where it has more (this bounds the index memory of large volumes).
    seed : int
        Seed of that sampling.

    Examples
    --------
    >>> label = np.zeros((2, 64, 64), np.uint8); label[:, 20:40, 20:40] = 1
    >>> image = np.where(label[..., None] > 0, 90, 200).astype(np.uint8)
    >>> source = PatchSource([image], [label], ModelConfig.small())
    >>> source.pools["heart"].shape  # (volume, section, flat pixel index) of each of the 2 x 400 heart pixels
    (3, 800)
    """

    def __init__(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], config: ModelConfig,
                 sections: Optional[Sequence[np.ndarray]] = None, max_pool: int = 2_000_000, seed: int = 0) -> None:
        self.config = config
        self.n_levels = max(config.fov_count, multifov.weight_level(config.fov_count) + 1)
        self.step = 2 ** (config.fov_count - 1)
        self.images: List[List[np.ndarray]] = []  # [volume][level] -> (Z, Yk, Xk, 3)
        self.labels: List[List[np.ndarray]] = []  # [volume][level] -> (Z, Yk, Xk), 0..255
        self.shapes = [image.shape[:3] for image in images]
        rng = np.random.default_rng(seed)
        pools: Dict[str, List[np.ndarray]] = {"heart": [], "near": [], "far": []}
        for v, (image, label) in enumerate(zip(images, labels)):
            self.images.append(_volume_pyramid(image, self.n_levels))
            self.labels.append(_volume_pyramid(label * np.uint8(255), config.fov_count))
            zs = np.arange(label.shape[0]) if sections is None else np.asarray(sections[v])
            cap = max(1, max_pool // max(1, len(zs)))
            for z in zs:
                near = _dilate(label[z], config.patch // 2) > label[z]
                for name, mask in (("heart", label[z] > 0), ("near", near), ("far", label[z] == 0)):
                    idx = np.flatnonzero(mask)
                    if len(idx) > cap:  # bound the index memory of large volumes
                        idx = rng.choice(idx, cap, replace=False)
                    pools[name].append(np.stack([np.full(len(idx), v), np.full(len(idx), z), idx]))
        self.pools = {k: np.concatenate(p, axis=1) if p else np.zeros((3, 0), np.int64) for k, p in pools.items()}
        if self.pools["heart"].shape[1] == 0 or self.pools["far"].shape[1] == 0:
            raise ScribbleSegError("the sections to learn from hold no heart or no background voxel")

    def centres(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` patch centres ``(volume, z, y, x)``: 1/2 heart, 1/4 near background, 1/4 any background.

        Examples
        --------
        >>> label = np.zeros((2, 64, 64), np.uint8); label[:, 20:40, 20:40] = 1
        >>> source = PatchSource([np.full((2, 64, 64, 3), 200, np.uint8)], [label], ModelConfig.small())
        >>> centres = source.centres(np.random.default_rng(0), 8)
        >>> centres.shape, bool((centres[:, 2:] % source.step == 0).all())  # on the coarsest level's grid
        ((8, 4), True)
        """
        kinds = rng.choice(4, size=n)
        out = np.empty((n, 4), np.int64)
        for i, kind in enumerate(kinds):
            pool = self.pools["heart" if kind < 2 else "near" if kind == 2 else "far"]
            if pool.shape[1] == 0:
                pool = self.pools["far"]
            v, z, flat = pool[:, rng.integers(pool.shape[1])]
            y, x = divmod(int(flat), self.shapes[v][2])
            out[i] = (v, z, y // self.step * self.step, x // self.step * self.step)
        return out

    def batch(self, centres: np.ndarray, geom: multifov.FovGeometry, device: torch.device,
              rng: Optional[np.random.Generator] = None, options: Optional[TrainOptions] = None
              ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Network inputs (one per window of ``geom``) and targets (one per field of view).

        With ``rng`` the patches are augmented (see :class:`TrainOptions`);
        every field of view gets the same flip, turn, scale and stain jitter.

        Examples
        --------
        >>> label = np.zeros((2, 64, 64), np.uint8); label[:, 20:40, 20:40] = 1
        >>> source = PatchSource([np.full((2, 64, 64, 3), 200, np.uint8)], [label], ModelConfig.small())
        >>> centres = source.centres(np.random.default_rng(0), 4)
        >>> inputs, targets = source.batch(centres, multifov.patch_geometry(source.config), torch.device("cpu"),
        ...                                rng=np.random.default_rng(1), options=TrainOptions())
        >>> [tuple(x.shape) for x in inputs], [tuple(t.shape) for t in targets]  # per window, per field of view
        ([(4, 3, 64, 64), (4, 3, 64, 64), (4, 3, 64, 64)], [(4, 1, 64, 64), (4, 1, 64, 64), (4, 1, 64, 64)])
        """
        p = self.config.patch
        augment = rng is not None
        margin = 0
        if augment:
            margin = augment_margin(p, options)
        size = (p + margin, p + margin)
        half = size[0] // 2
        inputs, targets = [], []
        levels = [w.level for w in geom.windows]
        for level in levels:
            f = 2 ** level
            crops = [multifov.crop(self.images[v][level][z], (y // f - half, x // f - half), size)
                     for v, z, y, x in centres]
            inputs.append(torch.from_numpy(np.stack(crops)).to(device).permute(0, 3, 1, 2).float())
        for level in range(self.config.fov_count):
            f = 2 ** level
            crops = [multifov.crop(self.labels[v][level][z], (y // f - half, x // f - half), size)
                     for v, z, y, x in centres]
            targets.append(torch.from_numpy(np.stack(crops)).to(device)[:, None].float() / 255.0)
        if augment:
            n = len(centres)
            s = np.exp(rng.uniform(-1, 1, n) * math.log1p(options.scale_jitter)).astype(np.float32)
            theta = np.zeros((n, 2, 3), np.float32)
            theta[:, :, :2] = _D4[rng.integers(8, size=n)] * (s * p / size[0])[:, None, None]
            grid = F.affine_grid(torch.from_numpy(theta).to(device), (n, 3, p, p), align_corners=False)
            gain = rng.uniform(1 - options.od_jitter, 1 + options.od_jitter, (n, 3, 1, 1)).astype(np.float32)
            gain *= rng.uniform(1 - options.od_jitter, 1 + options.od_jitter, (n, 1, 1, 1)).astype(np.float32)
            bias = rng.uniform(-0.2, 0.2, (n, 3, 1, 1)).astype(np.float32) * options.od_jitter
            gain_t, bias_t = torch.from_numpy(gain).to(device), torch.from_numpy(bias).to(device)
            inputs = [_od_jitter(F.grid_sample(x, grid, mode="bilinear", align_corners=False), gain_t, bias_t)
                      for x in inputs]
            targets = [F.grid_sample(t, grid, mode="bilinear", align_corners=False) for t in targets]
        return [scale_input(x) for x in inputs], targets


def _od_jitter(rgb: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Scale and shift each channel's optical density (Beer–Lambert, as :mod:`stain`)."""
    od = -torch.log((rgb + 1.0) / 256.0)
    od = (od * gain + bias).clamp_(min=0.0)
    return (256.0 * torch.exp(-od) - 1.0).clamp_(0.0, 255.0)


def _volume_pyramid(volume: np.ndarray, n_levels: int) -> List[np.ndarray]:
    levels = [volume]
    for _ in range(1, n_levels):
        levels.append(np.stack([multifov.downsample2(s) for s in levels[-1]]))
    return levels


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square dilation of a 2D 0/1 mask by ``radius`` pixels (separable max filters)."""
    t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    k = 2 * radius + 1
    t = F.max_pool2d(t, (1, k), stride=1, padding=(0, radius))
    t = F.max_pool2d(t, (k, 1), stride=1, padding=(radius, 0))
    return t[0, 0].numpy().astype(np.uint8)


def _boundary_band(label: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` of the heart boundary, on either side (2D)."""
    return _dilate(label, radius) != (1 - _dilate(1 - label, radius))


# --------------------------------------------------------------------------- a step's memory

def augment_margin(patch: int, options: TrainOptions) -> int:
    """Pixels added to a patch's side before an augmented patch is scaled and turned back to ``patch``.

    Examples
    --------
    >>> augment_margin(64, TrainOptions()), augment_margin(64, TrainOptions(scale_jitter=0.0))
    (10, 2)
    """
    return 2 * math.ceil(patch * options.scale_jitter / 2 + 1)


#: A training step on the CPU holds each layer's output for the backward pass and their gradients: the estimate
#: with this factor was 1.2-1.8 times the measured rise of the peak (the small M-Unet, batches of 8 and 32;
#: ``benchmarks/bench_train_memory.py``, BENCHMARKS.md "Reliability").
STEP_MEMORY_FACTOR = 2.0


def step_bytes(config: ModelConfig, options: TrainOptions) -> int:
    """Estimated memory of training on the CPU with ``options.batch`` patches per step: the layers' outputs of
    one patch's forward pass (measured on an untrained network of ``config``, at the augmented patch size),
    times :data:`STEP_MEMORY_FACTOR` and the batch, plus the validation patches held for the whole run.

    Examples
    --------
    >>> small = step_bytes(ModelConfig(), TrainOptions(batch=8))
    >>> step_bytes(ModelConfig(), TrainOptions(batch=80)) > 9 * small
    True
    """
    geom = multifov.patch_geometry(config)
    out_bytes = []

    def count(_module, _inputs, output) -> None:
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if torch.is_tensor(t):
                out_bytes.append(t.numel() * t.element_size())

    net = build_net(config)
    hooks = [m.register_forward_hook(count) for m in net.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            net([torch.zeros(1, 3, *w.size) for w in geom.windows], geom)
    finally:
        for hook in hooks:
            hook.remove()
    # An augmented patch is cut larger, then scaled and turned back to the patch's size.
    margin = augment_margin(config.patch, options) if options.augment else 0
    patch_inputs = sum(4 * 3 * (h + margin) * (w + margin) for h, w in (window.size for window in geom.windows))
    grown = ((config.patch + margin) / config.patch) ** 2
    per_patch = STEP_MEMORY_FACTOR * sum(out_bytes) * grown + patch_inputs
    return int(options.batch * per_patch + options.val_patches * patch_inputs)


# --------------------------------------------------------------------------- loss

def training_loss(out, targets: Sequence[torch.Tensor], config: ModelConfig) -> torch.Tensor:
    """Output cross-entropy + deep supervision + the weighting CNN's Dice regression.

    Examples
    --------
    Logits of 0 on heart cost ``log 2`` at the output, and half that again from the experts (deep supervision 0.5):

    >>> from ScribbleSegLib.nets import NetOutput
    >>> zero, heart = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    >>> out = NetOutput(logit=zero, features=None, expert_logits=[zero, zero], expert_probs=[], weights=None)
    >>> round(float(training_loss(out, [heart, heart], ModelConfig.small())), 4), round(1.5 * math.log(2), 4)
    (1.0397, 1.0397)
    """
    y = targets[0]
    loss = F.binary_cross_entropy_with_logits(out.logit.float(), y)
    if out.expert_logits and config.deep_supervision > 0:
        ds = sum(F.binary_cross_entropy_with_logits(lg.float(), t) for lg, t in zip(out.expert_logits, targets))
        loss = loss + config.deep_supervision * ds / len(out.expert_logits)
    if out.weights is not None:
        # Two-class Dice of a soft map with a soft truth, summed over both classes: 1 - mean |p - y|.
        dice = torch.stack([1.0 - (p - y).abs().mean(dim=(1, 2, 3)) for p in out.expert_probs], dim=1)
        loss = loss + F.mse_loss(out.weights.float(), dice.detach())
    return loss


def expert_workers(net: torch.nn.Module, device: torch.device) -> int:
    """Threads that run the experts of an M-Unet's training step side by side: one per expert on a CPU
    of two cores, else 1.

    The same rule as :func:`runtime.section_workers`: on two cores torch runs on one thread
    (:func:`inference.cpu_threads`), and the experts on threads of their own share both cores.
    A thread per expert rather than per core: three experts on two threads leave a core idle for
    the third (a small M-Unet's step took 397 ms on one thread, 349 ms on two, 296 ms on three;
    BENCHMARKS.md, "Interactive speed" item 28).

    Examples
    --------
    A U-Net, or a network on a GPU, runs its step on one thread:

    >>> cpu, gpu = torch.device("cpu"), torch.device("cuda")
    >>> expert_workers(build_net(ModelConfig.small("unet")), cpu), expert_workers(build_net(ModelConfig.small()), gpu)
    (1, 1)
    >>> expert_workers(build_net(ModelConfig.small()), cpu) in (1, ModelConfig.small().n_fov)  # by the CPU's cores
    True
    """
    if not isinstance(net, MUNet) or device.type != "cpu" or cpu_threads() != 1:
        return 1
    return net.config.n_fov if (os.cpu_count() or 1) == 2 else 1


def backward_step(net: torch.nn.Module, inputs, targets, geom, config: ModelConfig,
                  pool: Optional[ThreadPoolExecutor] = None, device: torch.device = torch.device("cpu")
                  ) -> torch.Tensor:
    """The training loss of a batch, with its gradients accumulated into the network's parameters.

    With ``pool`` (an M-Unet on a CPU), the experts, whose parameters are disjoint, run their forward
    and backward passes on the pool's threads: the network's forward from the experts' outputs on,
    and the loss's backward to those outputs, run here, and each expert's backward then starts
    from the gradients at its outputs.  The operations are those of one backward pass, so the
    gradients are the same (``Testing/test_training.py``).  Without, the forward pass runs under
    ``device``'s autocast (bfloat16 on a GPU).

    Examples
    --------
    One step of a tiny M-Unet on a batch of four patches:

    >>> config = ModelConfig(patch=16, width=4, depth=2, n_fov=2, aggregator=(8,), feature_channels=8)
    >>> label = np.zeros((1, 32, 32), np.uint8); label[:, 8:24, 8:24] = 1
    >>> source = PatchSource([np.full((1, 32, 32, 3), 200, np.uint8)], [label], config)
    >>> geom, net = multifov.patch_geometry(config), build_net(config)
    >>> inputs, targets = source.batch(source.centres(np.random.default_rng(0), 4), geom, torch.device("cpu"))
    >>> loss = backward_step(net, inputs, targets, geom, config)
    >>> loss.ndim, all(p.grad is not None for p in net.parameters())
    (0, True)
    """
    if pool is None:
        with _autocast(device):
            out = net(inputs, geom)
        loss = training_loss(out, targets, config)
        loss.backward()
        return loss
    n = config.n_fov
    outputs = list(pool.map(lambda k: net.expert(k, inputs[k]), range(n)))
    cut = [tuple(t.detach().requires_grad_() for t in pair) for pair in outputs]
    loss = training_loss(net(inputs, geom, experts=cut), targets, config)
    loss.backward()

    def expert_backward(k: int) -> None:
        pairs = [(t, c.grad) for t, c in zip(outputs[k], cut[k]) if c.grad is not None]
        if pairs:
            torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])

    list(pool.map(expert_backward, range(n)))
    return loss


# --------------------------------------------------------------------------- training

def train_model(images: Sequence[Union[Volume, np.ndarray]], labels: Sequence[np.ndarray],
                out_path: Union[str, os.PathLike], config: Optional[ModelConfig] = None, *,
                val_images: Optional[Sequence[Union[Volume, np.ndarray]]] = None,
                val_labels: Optional[Sequence[np.ndarray]] = None,
                options: Optional[TrainOptions] = None, max_iters: Optional[int] = None,
                max_minutes: Optional[float] = None, device: str = choices.DEFAULT_DEVICE, seed: int = 0,
                names: Optional[Sequence[str]] = None, val_names: Optional[Sequence[str]] = None,
                init: Optional[Union[str, os.PathLike, SegModel]] = None,
                provenance: Optional[Dict[str, object]] = None,
                progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> Path:
    """Train a network on labelled volumes, or fine-tune an existing one, and write its model file.

    Parameters
    ----------
    images : list of Volume or numpy.ndarray
        ``(Z, Y, X, 3)`` uint8 RGB training volumes (Volumes also give the voxel size).
    labels : list of numpy.ndarray
        ``(Z, Y, X)``, > 0 for heart.
    out_path : path
        The model file to write.
    config : nets.ModelConfig, optional
        Default ``ModelConfig.small("munet")``, or the parent's when fine-tuning
        (another config is then an error).
    val_images, val_labels : lists, optional
        Validation volumes for early stopping; without them every fifth section
        of the training volumes is held out.
    options : TrainOptions, optional
    max_iters, max_minutes : optional
        Override the options' budgets.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    seed : int
        Seeds the initialisation, the patches and the augmentation.
    names, val_names : lists of str, optional
        How error messages and the model's provenance name the volumes (e.g. their files).
    init : path or model_file.SegModel, optional
        Fine-tune this model (see the module docstring) instead of starting from random weights.
    provenance : dict, optional
        Extra JSON-able fields for the model's provenance record (e.g. the command); a ``volumes``
        entry replaces ``names`` there.  The record always gets ``data_sha256`` and
        ``validation_sha256``: per volume, :func:`model_file.array_sha256` of the image as given and
        of its 0/1 label.
    progress, cancel
        See :mod:`progress`.

    Returns
    -------
    pathlib.Path
        ``out_path``.

    Raises
    ------
    ScribbleSegError
        On a bad volume (see :func:`check_pair`), a set of labels without heart or without background
        (:func:`check_label_set`) or a bad output path; nothing is written.

    Examples
    --------
    Two steps on one small phantom (a real training takes thousands; this one warns that it learnt nothing):

    >>> import tempfile
    >>> from ScribbleSegLib.model_file import load_model
    >>> from ScribbleSegLib.phantom import PhantomConfig, make_phantom
    >>> phantom = make_phantom(seed=3, config=PhantomConfig(shape=(16, 96, 96)))
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = train_model([phantom.image], [phantom.label], Path(folder.name) / "tiny.model", max_iters=2,
    ...                    device="cpu")
    >>> model = load_model(path, device="cpu")
    >>> model.config.arch, model.voxel_size == phantom.image.geometry.spacing, model.bank_features.shape[1]
    ('munet', True, 32)
    >>> folder.cleanup()
    """
    from .checks import check_instance, check_progress_cancel, check_seed, check_whole

    # Every argument checked before any work (the stain fit alone can take minutes).
    check_instance(config, "config", ModelConfig)
    check_instance(options, "options", TrainOptions)
    check_seed(seed)
    check_progress_cancel(progress, cancel)
    if not isinstance(out_path, (str, os.PathLike)) or not str(out_path):
        raise ScribbleSegError(f"out_path must be a model file name, got {out_path!r}")
    images, labels = _volume_list(images, "images"), _volume_list(labels, "labels")
    val_images, val_labels = _volume_list(val_images, "val_images"), _volume_list(val_labels, "val_labels")
    if not images:
        raise ScribbleSegError("images is empty: training needs at least one labelled volume")
    if len(images) != len(labels):
        raise ScribbleSegError(f"training needs one label per image, got {len(images)} images and "
                               f"{len(labels)} labels")
    if len(val_images) != len(val_labels):
        raise ScribbleSegError(f"validation needs one label per image, got {len(val_images)} images and "
                               f"{len(val_labels)} labels")
    # A shorter list of names would cut the volumes short without a word (zip).
    names = _names(names, len(images), "names", "training volume")
    val_names = _names(val_names, len(val_images), "val_names", "validation volume")
    parent = None
    if init is not None:
        parent = init if isinstance(init, SegModel) else load_model(init, device=device)
        if config is not None and config != parent.config:
            raise ScribbleSegError(f"config: a fine-tuned model keeps its parent's architecture "
                                   f"({parent.config.arch}, {parent.path}); leave config out with init")
        config = parent.config
        if options is not None and not options.normalize and parent.stain is not None:
            # The model would keep the reference stain that every image is rendered in before its network, which
            # this training never saw.
            raise ScribbleSegError(f"options.normalize: a fine-tuned model keeps its parent's reference stain "
                                   f"({parent.path}) and its network sees every image in it; leave normalize on "
                                   "with init")
    config = config or ModelConfig.small("munet")
    if options is None and parent is not None:  # a fine-tune's own step budget and rate (choices.training_budget)
        steps, minutes, rate = choices.training_budget(fine_tune=True)
        options = TrainOptions(lr=rate, max_iters=steps, max_minutes=minutes)
    options = copy.copy(options or TrainOptions())
    if max_iters is not None:
        options.max_iters = check_whole(max_iters, "max_iters")
    if max_minutes is not None:
        options.max_minutes = _positive_finite(max_minutes, "max_minutes")
    _check_options(options)
    out_path = check_output_path(check_model_output(out_path, "out_path"), "out_path")
    parent_path = getattr(parent, "path", None)
    if parent_path is not None:  # a fine-tune never replaces its parent model
        check_outputs({"out_path": out_path}, {"init": parent_path})
    train = [check_pair(i, l, n) for i, l, n in zip(images, labels, names)]
    val = [check_pair(i, l, n) for i, l, n in zip(val_images, val_labels, val_names)]
    check_label_set([l for _, l in train], names)
    check_label_set([l for _, l in val], val_names, "validation")
    side = max(max(a.shape[1:3]) for a, _ in train)
    if config.patch > 2 * side:  # the paper preset's 256-pixel patches on a tile: mostly padding, and slow
        smallest = min(ModelConfig.preset(name, config.arch).patch for name in choices.PRESETS)
        # With the smallest preset's patches already, the sections are what is small: "a smaller preset" named none.
        advice = ("the small preset fits these volumes" if config.patch > smallest else
                  "larger sections fit it better (read them downsampled less)")
        _log.warning("the network's training patches (%d pixels) are over twice the sections' size (%d pixels): "
                     "most of each patch is padding; %s", config.patch, side, advice)
    dev = resolve_device(device)
    small = choices.PRESETS[choices.DEFAULT_PRESET]
    if dev.type == "cpu" and options.max_minutes is None and options.max_iters > small.max_iters:
        # The paper preset has no time budget of its own: on a CPU it would run for days, unannounced.
        _log.warning("training %d steps on a CPU without a time budget can take days; give one (max_minutes) "
                     "or train on a GPU", options.max_iters)
    if parent is not None:
        _check_parent_scale(images, parent)
    with torch_threads(cpu_threads() if dev.type == "cpu" else torch.get_num_threads()):
        return _train(train, val, out_path, config, options, dev, seed, _voxel_size(images), progress, cancel,
                      parent=parent, volume_names=names, provenance=provenance)


def _train(train, val, out_path: Path, config: ModelConfig, options: TrainOptions, dev: torch.device, seed: int,
           voxel_size, progress, cancel, parent: Optional[SegModel] = None, volume_names: Sequence[str] = (),
           provenance: Optional[Dict[str, object]] = None) -> Path:
    started = time.perf_counter()
    if dev.type == "cpu":  # before the stain fit: a batch that cannot fit would otherwise end in the OS's kill
        from .resources import require_memory

        require_memory(step_bytes(config, options), f"training with batch {options.batch}",
                       "use a smaller batch")
    data, val_data = list(train), list(val)  # as given: stain normalization below replaces the pairs
    # The network sees black registration fill and grey, unevenly lit or cast glass as white glass, in training
    # as in inference (white_point.py first, then padding.py).
    train, val = ([(padding_to_glass(white_glass(a, glass_white(a))), l) for a, l in pairs] for pairs in (train, val))
    stain_dict, stain_note = None, "off"
    if parent is not None:
        stain_dict = parent.stain
        if options.normalize and stain_dict is not None:
            report(progress, "stain reference", 0.0, "rendering the volumes in the parent model's stain")
            train, val = _render_in_stain(train, val, stain_dict, seed, cancel)
            stain_note = "vahadane (parent's reference)"
    elif options.normalize:
        report(progress, "stain reference", 0.0, "fitting")
        stain_dict, stain_note, train, val = _normalize_stains(train, val, seed, cancel)

    report(progress, "training", 0.0, "preparing patches")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, labels = [a for a, _ in train], [l for _, l in train]
    if val:
        source = PatchSource(images, labels, config, seed=seed)
        val_source = PatchSource([a for a, _ in val], [l for _, l in val], config, seed=seed)
    else:
        held = [np.arange(a.shape[0]) % 5 == 2 if a.shape[0] >= 5 else np.zeros(a.shape[0], bool) for a in images]
        source = PatchSource(images, labels, config, sections=[np.flatnonzero(~h) for h in held], seed=seed)
        try:
            val_source = PatchSource(images, labels, config, sections=[np.flatnonzero(h) for h in held], seed=seed)
        except ScribbleSegError:  # nothing to hold out: validate on training patches
            val_source = source
            # A stack of 24 sections with the heart traced on two was told it had none of 5 sections or more.
            why = ("its held-out sections (every 5th from the 3rd) hold no heart or no background voxel" if
                   any(h.any() for h in held) else
                   "no training volume of 5 or more sections to hold a fifth of it out (tiles, or short stacks)")
            _log.warning("no validation volumes (val_images) and %s: early stopping watches the training patches "
                         "themselves and cannot see the network learn them by heart; give validation volumes", why)

    net = copy.deepcopy(parent.net).to(dev) if parent is not None else build_net(config).to(dev)
    record = _optimise(net, source, val_source, options, dev, rng, progress, cancel, fine_tune=parent is not None)

    report(progress, "training-pixel bank", 0.0, "features of training sections")
    bank_x, bank_y = feature_bank(net, train, dev, rng, options.bank_per_class, options.bank_sections,
                                  progress=progress, cancel=cancel)
    check(cancel)
    if not (np.isfinite(bank_x).all() and np.abs(bank_x).max(initial=0) <= np.finfo(np.float16).max):
        raise ScribbleSegError("training diverged: the network's features run out of range; try a lower learning "
                               "rate (lr)")
    record.update(seed=int(seed), stain_normalization=stain_note, device=str(dev), torch=torch.__version__,
                  options=asdict(options), minutes=round((time.perf_counter() - started) / 60, 3),
                  bank_pixels=int(len(bank_y)), fine_tuned=parent is not None)
    extra = dict(provenance or {})
    # The voxels learnt from, whatever files held them (model_file.array_sha256), in the volumes' order.
    extra["data_sha256"] = [{"image": array_sha256(a), "label": array_sha256(l)} for a, l in data]
    extra["validation_sha256"] = [{"image": array_sha256(a), "label": array_sha256(l)} for a, l in val_data]
    origin = make_provenance(extra.pop("volumes", volume_names), record["steps"], parent=parent, **extra)
    return save_model(out_path, net, config, stain=stain_dict, voxel_size=voxel_size,
                      bank_features=bank_x, bank_labels=bank_y, training=record, provenance=origin)


def _volume_list(values, name: str) -> list:
    """``values`` (a list or tuple of volumes or arrays; None: none) as a list, or a one-line error."""
    if values is None:
        return []
    if not isinstance(values, (list, tuple)):
        raise ScribbleSegError(f"{name} must be a list of volumes, got {type(values).__name__}")
    return list(values)


def _names(names, count: int, name: str, default: str) -> List[str]:
    if names is None:
        return [f"{default} {i + 1}" for i in range(count)]
    names = [str(n) for n in names]
    if len(names) != count:
        raise ScribbleSegError(f"{name}: {len(names)} names for {count} volumes")
    return names


def _positive_finite(value, name: str) -> float:
    try:
        number = float(value) if not isinstance(value, (bool, str)) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):  # an infinite budget fails only at the save, hours later
        raise ScribbleSegError(f"{name} must be a positive finite number, got {value!r}")
    return number


def _check_options(options: TrainOptions) -> None:
    for name in ("batch", "max_iters", "eval_every", "patience", "val_patches", "bank_per_class", "bank_sections"):
        if int(getattr(options, name)) < 1:
            raise ScribbleSegError(f"training option {name} must be at least 1, got {getattr(options, name)}")
    _positive_finite(options.lr, "training option lr")
    if options.max_minutes is not None:
        _positive_finite(options.max_minutes, "training option max_minutes")
    if not 0 <= options.scale_jitter < 1 or not 0 <= options.od_jitter < 1:
        raise ScribbleSegError("training options scale_jitter and od_jitter must lie in [0, 1)")


#: Training volumes whose pixel sizes differ by more than this factor get a warning: the network sees each at
#: its own scale, but the model records one pixel size (the median), to which stacks are resampled.
MIXED_PIXEL_SIZES = 1.5


def _check_parent_scale(images: Sequence[Union[Volume, np.ndarray]], parent: SegModel) -> None:
    """Warn when a fine-tune's volumes are at another pixel size than its parent learnt from: the network then
    learns them at their own scale (and the model records theirs), which a forgotten spacing makes by mistake."""
    spacings = _stated_spacings(images)
    parent_xy = tuple(float(v) for v in parent.voxel_size[:2])
    if not spacings or parent_xy == UNKNOWN_PIXEL:
        return
    own = float(np.median([min(s[0], s[1]) for s in spacings]))
    if all(tuple(s[:2]) == UNKNOWN_PIXEL for s in spacings):
        _log.warning("the training volumes state no pixel size (1 mm, what a PNG says), and the parent model "
                     "learnt at %g mm: give their spacing if they were scanned like its volumes, or the fine-tune "
                     "learns them at their own scale", min(parent_xy))
    elif max(own / min(parent_xy), min(parent_xy) / own) > MIXED_PIXEL_SIZES:
        _log.warning("the training volumes' pixel size %g mm is %.2gx the parent model's %g mm: the fine-tune "
                     "learns them at their own scale", own, own / min(parent_xy), min(parent_xy))


def _stated_spacings(images: Sequence[Union[Volume, np.ndarray]], say: bool = False) -> List[Tuple[float, ...]]:
    """The scan voxel sizes of the training volumes, leaving out those that state no pixel size (read on
    :data:`UNKNOWN_PIXEL`, as a PNG tile is) where others state one: their 1 mm placeholder beside stacks of
    0.04 mm made the model record a median of 0.52 mm, and every stack then ran at the wrong scale.  ``say``:
    one warning when some are left out."""
    spacings = [im.scan_spacing for im in images if isinstance(im, Volume)]
    stated = [s for s in spacings if tuple(s[:2]) != UNKNOWN_PIXEL]
    if not stated or len(stated) == len(spacings):
        return spacings
    if say:
        _log.warning("%d of the %d training images state no pixel size (read at 1 mm, as a PNG is): the model records "
                     "the others' (median %g mm); give the spacing if they were scanned at another size",
                     len(spacings) - len(stated), len(spacings), float(np.median([min(s[0], s[1]) for s in stated])))
    return stated


def _voxel_size(images: Sequence[Union[Volume, np.ndarray]]) -> Tuple[float, float, float]:
    """The median voxel size of the training volumes, ``(x, y, z)`` mm ((1, 1, 1) for bare arrays); in-plane, the
    scan's pixel size where a file states it apart from its grid (``Volume.scan_pixel``)."""
    spacings = _stated_spacings(images, say=True)
    if not spacings:
        return UNKNOWN_PIXEL + (1.0,)
    pixels = [min(s[0], s[1]) for s in spacings]
    if max(pixels) > MIXED_PIXEL_SIZES * min(pixels):
        _log.warning("the training volumes' pixel sizes differ by %.1fx (%g to %g mm): the network learns them "
                     "at their own scales, and the model records the median", max(pixels) / min(pixels),
                     min(pixels), max(pixels))
    voxel = tuple(float(v) for v in np.median(np.asarray(spacings), axis=0))
    # A tile has no distance between sections, only the 1 mm its file is read with: stacks say what z is.
    stacks = [im.scan_spacing[2] for im in images if isinstance(im, Volume) and im.array.shape[0] > 1
              and tuple(im.scan_spacing[:2]) != UNKNOWN_PIXEL]
    if stacks and len(stacks) < len(spacings):
        voxel = voxel[:2] + (float(np.median(stacks)),)
    question = micrometres_question(min(voxel[:2]))
    if question:  # the model records it, and every stack given the same spacing then matches it without a word
        _log.warning("the training volumes' pixel size %s", question)
    return voxel


def _normalize_stains(train, val, seed: int, cancel):
    """Fit the reference stain on the training volumes and render every volume in it."""
    from . import stain_volume

    arrays = [a for a, _ in train]
    try:
        target = stain_volume.fit_reference(arrays, seed=seed)
    except ScribbleSegError as exc:
        _log.warning("training without stain normalization: %s", exc)
        return None, f"skipped ({exc})", train, val
    norm, norm_val = _in_stain(train, val, target, seed, cancel)
    return target.to_dict(), "vahadane", norm, norm_val


def _render_in_stain(train, val, stain_dict: Dict[str, object], seed: int, cancel):
    """Render every volume in a given reference stain (the parent model's, when fine-tuning)."""
    from . import stain

    return _in_stain(train, val, stain.VahadaneNormalizer.from_dict(stain_dict), seed, cancel)


def _in_stain(train, val, target, seed: int, cancel):
    """Each pair's image rendered in ``target``; the stain notes say which volume (1-based, as given) they are about."""
    from . import stain_volume

    several = len(train) + len(val) > 1  # one volume alone needs no name

    def render(pairs, kind: str):
        return [(stain_volume.normalize_volume(a, target, seed=seed, cancel=cancel,
                                        name=f"{kind} volume {i + 1} of {len(pairs)}" if several else None), l)
                for i, (a, l) in enumerate(pairs)]

    return render(train, "training"), render(val, "validation")


def _optimise(net, source: PatchSource, val_source: PatchSource, options: TrainOptions, dev: torch.device,
              rng: np.random.Generator, progress, cancel, fine_tune: bool = False) -> Dict[str, object]:
    """The optimisation loop with validation, early stopping and budgets; leaves the best weights in ``net``.

    A fine-tune is said to diverge against where its parent started on these volumes (a parent far from them
    may start above an untrained network), a new network against an untrained one.
    """
    config = source.config
    geom = multifov.patch_geometry(config)
    val_rng = np.random.default_rng(rng.integers(2 ** 32))
    val_batches = [val_source.batch(val_source.centres(val_rng, options.batch), geom, dev)
                   for _ in range(max(1, options.val_patches // options.batch))]
    guess = _constant_guess_loss(val_batches)
    # What the last step and the last validation took: a step is not started that would leave no time in the budget
    # for the validation after it (a paper-sized network's validation on a CPU took minutes past max_minutes).
    step_seconds, val_seconds = 0.0, 0.0
    began = time.perf_counter()
    start_loss = _validate(net, val_batches, geom, dev) if fine_tune else math.log(2.0)
    if fine_tune:
        val_seconds = time.perf_counter() - began
    diverged_above = max(DIVERGED_LOSS, 2 * start_loss)
    opt = torch.optim.Adam(net.parameters(), lr=options.lr)
    budget = None if options.max_minutes is None else 60.0 * options.max_minutes
    best, best_state, best_iter, waited = math.inf, None, 0, 0
    ema, it, reason, done = None, 0, "iteration budget", 0.0
    loop_start = time.perf_counter()
    history = []
    workers = expert_workers(net, dev)
    pool = thread_pool(workers) if workers > 1 else None
    try:
        while it < options.max_iters:
            check(cancel)
            if budget is not None and it and \
                    time.perf_counter() - loop_start + step_seconds + _validation_seconds(val_seconds, step_seconds,
                                                                                         val_batches) > budget:
                reason = "time budget"
                break
            began = time.perf_counter()
            if options.cosine:
                for group in opt.param_groups:
                    group["lr"] = options.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * done)))
            net.train()
            inputs, targets = source.batch(source.centres(rng, options.batch), geom, dev, rng if options.augment
                                           else None, options)
            opt.zero_grad(set_to_none=True)
            loss = backward_step(net, inputs, targets, geom, config, pool, dev)
            opt.step()
            it += 1
            value = loss.item()
            if not math.isfinite(value):
                raise ScribbleSegError(f"training diverged at step {it} (loss {value}); try a lower learning "
                                       "rate (lr)")
            ema = value if ema is None else 0.95 * ema + 0.05 * value
            step_seconds = time.perf_counter() - began
            if it % options.eval_every == 0 or it == options.max_iters:
                began = time.perf_counter()
                val_loss = _validate(net, val_batches, geom, dev, pool)
                val_seconds = time.perf_counter() - began
                history.append([it, round(ema, 4), round(val_loss, 4)])
                if val_loss < best - 1e-4:
                    best, best_iter, waited = val_loss, it, 0
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                else:
                    waited += 1
                    if waited >= options.patience:
                        reason = "early stopping"
                        break
            elapsed = time.perf_counter() - loop_start
            done = it / options.max_iters if budget is None else max(it / options.max_iters, elapsed / budget)
            report(progress, "training", done, f"step {it} loss {ema:.3f}" + (f" val {best:.3f}" if history else ""))
            if budget is not None and elapsed >= budget:
                reason = "time budget"
                break
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if not history or history[-1][0] != it:
        checked = val_batches
        if not history and budget is not None:
            # No validation yet, so no loss to compare with: as many batches as the budget leaves time for (one at
            # least). A paper-sized network on a CPU stopped after its first step, then validated for minutes
            # past max_minutes with its progress bar still.
            left = budget - (time.perf_counter() - loop_start)
            per_batch = step_seconds * FORWARD_SHARE
            checked = val_batches[:max(1, min(len(val_batches), int(left / per_batch) if per_batch > 0 else 1))]
        report(progress, "training", done, f"step {it}: validating")
        val_loss = _validate(net, checked, geom, dev)
        history.append([it, round(ema, 4), round(val_loss, 4)])
        if val_loss < best:
            best, best_iter, best_state = val_loss, it, None
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    start = "the parent's was" if fine_tune else "an untrained network's is"
    # What stopped it is what to give more of: steps said after a time budget sent the user the wrong way.
    more = "more time (max_minutes)" if reason == "time budget" else "more steps (max_iters)"
    if diverged_above < best <= FEW_STEPS_LOSS * diverged_above and it < options.eval_every:
        # A few steps move the weights before they learn anything (one step from scratch: loss 2.1): that is
        # not a divergence, and the steps were what was asked for.
        _log.warning("training stopped at step %d, too few to learn (best validation loss %.3g; %s %.3g): "
                     "the model is not trained; give it %s", it, best, start, start_loss, more)
    elif best > diverged_above:
        # Far worse than where it started: the weights ran away, and the model would call everything heart, or
        # nothing.
        raise ScribbleSegError(f"training diverged (best validation loss {best:.3g}; {start} {start_loss:.3g}); "
                               "try a lower learning rate (lr)")
    if best > guess and it >= options.eval_every:
        _log.warning("training did not learn: its best validation loss %.3g is no better than %.3g, a constant "
                     "guess of the heart's share; try a lower learning rate (lr) or more steps", best, guess)
    elif best > guess and best <= diverged_above:
        # A short run (max_iters 20, a first try) wrote a model that had learnt nothing, without a word.
        _log.warning("training stopped at step %d, before it learnt anything (best validation loss %.3g, no better "
                     "than %.3g, a constant guess of the heart's share): give it %s", it, best, guess, more)
    if reason == "time budget" and it < options.max_iters / 2:
        _log.warning("training stopped by its time budget (max_minutes %g) after %d of %d steps: the model may be "
                     "undertrained; give it more time", options.max_minutes, it, options.max_iters)
    report(progress, "training", 1.0, f"{reason} after {it} steps, best val {best:.3f} at {best_iter}")
    return {"steps": it, "stopped_by": reason, "best_step": best_iter, "best_val_loss": round(best, 5),
            "train_minutes": round((time.perf_counter() - loop_start) / 60, 3), "history": history}


#: Twice the binary cross-entropy of logits at 0, as an untrained network gives them: a best validation loss
#: above it means the training diverged (learning rates of 1, 10 and 100 gave 70, 47000 and 427; BENCHMARKS.md).
DIVERGED_LOSS = 2 * math.log(2.0)
#: Stopped before its first validation, a run is said to have diverged only above this many times that bound: a
#: step or two from scratch gives 2.1, and a learning rate of 1e6 gave 1.06e7 in two steps, which was called
#: "too few to learn".
FEW_STEPS_LOSS = 10.0


def _constant_guess_loss(batches) -> float:
    """The validation loss of the best constant prediction: the entropy of the heart's share in ``batches``."""
    share = float(np.mean([float(targets[0].float().mean()) for _, targets in batches]))
    share = min(max(share, 1e-6), 1 - 1e-6)
    return -(share * math.log(share) + (1 - share) * math.log(1 - share))


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


#: A validation batch's share of a training step's time, before a validation has been timed: a forward pass of a
#: batch as large (a paper-sized network's first step took 24 s on a 2-core CPU, one batch of its validation
#: about 6 s).
FORWARD_SHARE = 1.0 / 3.0


def _validation_seconds(measured: float, step_seconds: float, batches: Sequence) -> float:
    """What a validation takes: as ``measured``, or before the first, :data:`FORWARD_SHARE` of a step per batch."""
    return measured if measured > 0 else len(batches) * step_seconds * FORWARD_SHARE


def _validate(net, batches, geom, dev, pool: Optional[ThreadPoolExecutor] = None) -> float:
    """The mean validation loss; with ``pool``, the batches run on its threads (summed in order, as without)."""
    net.eval()

    def loss(batch) -> float:
        inputs, targets = batch
        with torch.inference_mode(), _autocast(dev):  # both are per thread
            out = net(inputs, geom)
            return float(F.binary_cross_entropy_with_logits(out.logit.float(), targets[0]))

    total = 0.0
    for value in (pool.map(loss, batches) if pool is not None else map(loss, batches)):
        total += value
    return total / len(batches)


# --------------------------------------------------------------------------- bank

def feature_bank(net, volumes: Sequence[Tuple[np.ndarray, np.ndarray]], device: torch.device,
                 rng: np.random.Generator, per_class: int, sections: int, boundary_px: int = 8,
                 progress: Optional[ProgressCallback] = None,
                 cancel: Optional[CancelToken] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Features of class-balanced training pixels for DDML.

    From each volume, ``sections`` sections (half of them through the heart)
    are run through the same tiled inference as new volumes; per class, half
    of the pixels lie within ``boundary_px`` of the heart boundary and half
    farther away.

    Returns
    -------
    features : numpy.ndarray
        float32 ``(N, C)``.
    labels : numpy.ndarray
        uint8 ``(N,)``, 1 heart, 0 background.

    Examples
    --------
    >>> net = build_net(ModelConfig(patch=16, width=4, depth=2, n_fov=2, aggregator=(8,), feature_channels=8))
    >>> label = np.zeros((2, 32, 32), np.uint8); label[:, 8:24, 8:24] = 1
    >>> volumes = [(np.full((2, 32, 32, 3), 200, np.uint8), label)]
    >>> features, labels = feature_bank(net, volumes, torch.device("cpu"), np.random.default_rng(0), 10, 2)
    >>> features.shape, features.dtype, np.bincount(labels).tolist()  # 10 pixels per class, 8 features each
    ((20, 8), dtype('float32'), [10, 10])
    """
    core, batch = default_tile(device)
    predictor = SectionPredictor(net.eval(), device, core, batch)
    chosen = []
    for v, (image, label) in enumerate(volumes):
        with_heart = np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))
        picks = set(_evenly(with_heart, (sections + 1) // 2)) | set(_evenly(np.arange(label.shape[0]), sections // 2))
        chosen += [(v, int(z)) for z in sorted(picks)]
    pools: Dict[Tuple[int, bool], List[np.ndarray]] = {(c, b): [] for c in (0, 1) for b in (False, True)}
    per_pool = per_class // 2

    stop = LinkedToken(cancel)  # a signal in this thread stops the sections' threads at their next tile

    def features(pick: Tuple[int, int]) -> np.ndarray:
        image, label = volumes[pick[0]]
        h, w = label.shape[1:]
        feats = np.empty((h, w, predictor.channels), np.float16)
        predictor.predict(image[pick[1]], np.empty((h, w), np.float32), feats, stop)
        return feats

    def draw(item: Tuple[int, Tuple[int, int]], feats: np.ndarray) -> None:
        # Here, in the sections' order: the bank is the same whichever thread ran a section.
        i, (v, z) = item
        check(cancel)
        report(progress, "training-pixel bank", (i + 1) / len(chosen), f"section {i + 1}/{len(chosen)}")
        _draw_bank_pixels(pools, feats, volumes[v][1][z], boundary_px, per_pool, len(chosen), rng)

    workers = section_workers(device, max(int(np.prod(label.shape[1:])) for _, label in volumes))
    with torch_threads(1) if workers > 1 else contextlib.nullcontext():
        in_order(lambda item: features(item[1]), list(enumerate(chosen)), workers, draw, stop)
    xs, ys = [], []
    channels = predictor.channels
    for c in (0, 1):
        near = _concat(pools[(c, True)], channels)
        far = _concat(pools[(c, False)], channels)
        n_near = min(len(near), max(per_pool, per_class - len(far)))
        n_far = min(len(far), per_class - n_near)
        for part, n in ((near, n_near), (far, n_far)):
            xs.append(part[rng.choice(len(part), n, replace=False)].astype(np.float32))
            ys.append(np.full(n, c, np.uint8))
    report(progress, "training-pixel bank", 1.0, f"{sum(len(y) for y in ys)} pixels")
    return np.concatenate(xs), np.concatenate(ys)


def _draw_bank_pixels(pools: Dict[Tuple[int, bool], List[np.ndarray]], feats: np.ndarray, label: np.ndarray,
                      boundary_px: int, per_pool: int, sections: int, rng: np.random.Generator) -> None:
    """Add one section's share of pixels to each pool of :func:`feature_bank` (class, near the boundary)."""
    band = _boundary_band(label, boundary_px)
    for c in (0, 1):
        for near in (False, True):
            idx = np.flatnonzero((label == c) & (band == near))
            take = min(len(idx), math.ceil(4 * per_pool / sections))
            if take:
                pools[(c, near)].append(feats.reshape(-1, feats.shape[-1])[rng.choice(idx, take, replace=False)])


def _evenly(items: np.ndarray, n: int) -> np.ndarray:
    if len(items) <= n:
        return items
    # Centres of n equal bins: the first and last sections of a range are its least typical.
    return items[((np.arange(n) + 0.5) * len(items) / n).astype(int)]


def _concat(parts: List[np.ndarray], channels: int) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, channels), np.float16)
