"""Training volumes and their labels read from files: the one way ``scribbleseg train`` and the worker read them.

A label may lie on the image's grid as read, or, when ``spacing`` or ``downsample``
changed how the image was read, on the grid the image file's header states (a
label made on the file itself); it is then reduced as the image was.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import choices
from .errors import ScribbleSegError
from .fileio import PathLike
from .geometry import Volume
from .progress import CancelToken, ProgressCallback


def read_training_pair(image_path: PathLike, label_path: PathLike, *, spacing: Optional[Sequence[float]] = None,
                       downsample: int = 1, cancel: Optional[CancelToken] = None) -> Tuple[Volume, np.ndarray]:
    """One training image and its label on the image's grid as read.

    Parameters
    ----------
    image_path, label_path : str or Path
        An image (3D file, folder of sections or 2D section) and its label (see
        :func:`ScribbleSegLib.volume_io.read_label`).
    spacing, downsample
        As for :func:`ScribbleSegLib.volume_io.read_image`.  A label on the image
        file's own grid is then placed and reduced as the image was.
    cancel
        See :mod:`ScribbleSegLib.progress`.

    Returns
    -------
    (Volume, numpy.ndarray)
        The image and its ``(Z, Y, X)`` uint8 label (1 heart).

    Raises
    ------
    ScribbleSegError
        One line naming the file and the problem: the first reading's, when the
        label is on neither grid.

    Examples
    --------
    >>> import tempfile, os
    >>> from ScribbleSegLib import phantom
    >>> folder = tempfile.mkdtemp()
    >>> p = phantom.make_phantom(seed=0, config=phantom.PhantomConfig(shape=(4, 32, 32)))
    >>> from ScribbleSegLib.volume_io import write_labelmap, write_rgb_volume
    >>> write_rgb_volume(os.path.join(folder, "i.nrrd"), p.image)
    >>> write_labelmap(os.path.join(folder, "l.nrrd"), p.label, p.image.geometry)
    >>> image, label = read_training_pair(os.path.join(folder, "i.nrrd"), os.path.join(folder, "l.nrrd"),
    ...                                   downsample=2)
    >>> image.shape[:3], label.shape
    ((4, 16, 16), (4, 16, 16))
    """
    from . import volume_io

    # A blank scan, or a label or mask given as the image, is refused as segment refuses it: trained on, it made a
    # model with no word but a stain warning that named no file.
    image = volume_io.check_not_blank(volume_io.read_image(image_path, spacing=spacing, downsample=downsample,
                                                           cancel=cancel), image_path, "the stained sections")
    try:
        label = volume_io.read_label(label_path, image.shape, image.geometry, downsample=downsample)
    except ScribbleSegError as exc:
        label = volume_io.marks_on_file_grid(label_path, image_path, image.shape, spacing=spacing,
                                             downsample=downsample, strokes=False)
        if label is None:  # which image it was paired with: a label out of order fits another one
            raise ScribbleSegError(f"{exc} (the label given for {image_path})") from None
    if int(downsample) > 1 and not label.any():
        _check_heart_kept(label_path, int(downsample))
    why = volume_io.scribbles_like(label_path)
    if why is not None:
        logging.getLogger("ScribbleSegLib").warning(
            "%s: looks like scribbles, not a label (%s): training takes every value > 0 (or the 'heart' segment) "
            "as the whole heart", label_path, why)
    return image, label


def _check_heart_kept(label_path: PathLike, downsample: int) -> None:
    """Refuse a label whose heart read with ``downsample`` vanished: its heart would be taught as background.

    A block of the reduced grid is heart where at least half of it is, so a heart thinner than the blocks is lost;
    the error blamed the label file ("marks no heart voxel") and never named the downsampling.
    """
    from . import volume_io

    try:
        full = int(np.count_nonzero(volume_io.read_label_volume(label_path).array))
    except ScribbleSegError:  # a folder of sections, or a file read otherwise: the label set's own check speaks
        return
    if full:
        raise ScribbleSegError(f"{label_path}: its heart ({full} voxels) vanishes when read downsampled by "
                               f"{downsample} (a block is heart where at least half of it is); give a smaller "
                               "downsample")


def check_pairs(images: Sequence[PathLike], labels: Sequence[PathLike],
                names: Tuple[str, str] = ("images", "labels")) -> None:
    """Refuse lists of images and labels of different lengths (``names``: how the caller names them).

    Examples
    --------
    >>> check_pairs(["a.nrrd"], ["b.nrrd", "c.nrrd"], ("--images", "--labels"))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: --images and --labels: 1 image but 2 labels
    """
    if len(images) != len(labels):
        counted = [f"{n} {word}{'s' * (n != 1)}" for n, word in ((len(images), "image"), (len(labels), "label"))]
        raise ScribbleSegError(f"{names[0]} and {names[1]}: {counted[0]} but {counted[1]}")


def repeated_images(images: Sequence[PathLike], val_images: Sequence[PathLike] = (),
                    names: Tuple[str, str] = ("images", "val_images")) -> List[str]:
    """One-line warnings for an image given twice for training (it weighs twice), and for a validation image that
    is also a training image (early stopping then follows how well the network fits its own training data).

    Examples
    --------
    >>> repeated_images(["a.nrrd", "b.nrrd", "a.nrrd"], ["./b.nrrd"])
    ['a.nrrd is given twice in images: it weighs twice in the training', './b.nrrd is in val_images and in images: \
validation on a training image cannot tell when the network stops learning what holds for other images']
    """
    def key(path: PathLike) -> str:
        return os.path.normcase(os.path.realpath(os.fspath(path)))

    warnings, seen = [], set()
    for path in images:
        if key(path) in seen:
            warnings.append(f"{path} is given twice in {names[0]}: it weighs twice in the training")
        seen.add(key(path))
    for path in val_images:
        if key(path) in seen:
            warnings.append(f"{path} is in {names[1]} and in {names[0]}: validation on a training image cannot tell "
                            "when the network stops learning what holds for other images")
    return warnings


def read_training_pairs(images: Sequence[PathLike], labels: Sequence[PathLike], *,
                        spacing: Optional[Sequence[float]] = None, downsample: int = 1,
                        cancel: Optional[CancelToken] = None,
                        names: Tuple[str, str] = ("images", "labels")) -> Tuple[List[Volume], List[np.ndarray]]:
    """Images and labels given as two lists of files, paired in order (:func:`read_training_pair`).

    ``names`` are how the caller names the two lists, for the message when their lengths differ.

    Examples
    --------
    >>> read_training_pairs([], [])
    ([], [])
    """
    check_pairs(images, labels, names)
    volumes, masks = [], []
    repeats = _RepeatedTileNotes()
    log = logging.getLogger("ScribbleSegLib")
    log.addFilter(repeats)
    try:
        for image_path, label_path in zip(images, labels):
            image, label = read_training_pair(image_path, label_path, spacing=spacing, downsample=downsample,
                                              cancel=cancel)
            volumes.append(image)
            masks.append(label)
    finally:
        log.removeFilter(repeats)
    if repeats.held:
        log.info("%d more 2D %s with no spacing given %s read the same way", repeats.held,
                 "file" if repeats.held == 1 else "files", "was" if repeats.held == 1 else "were")
    return volumes, masks


class _RepeatedTileNotes(logging.Filter):
    """Lets through the first note of each pixel size that tiles read without a spacing give, and counts the rest.

    A hundred training tiles would otherwise print a hundred lines that say the same.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sizes: set = set()
        self.held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        from .volume_io import TILE_GRID_NOTE

        if record.msg is not TILE_GRID_NOTE:
            return True
        size = tuple(record.args[1:]) if isinstance(record.args, tuple) else ()
        if size in self.sizes:
            self.held += 1
            return False
        self.sizes.add(size)
        return True


def volume_records(images: Sequence[PathLike], labels: Sequence[PathLike]) -> List[str]:
    """How a model's provenance names its training volumes: each image and its label, as absolute paths
    (a path as typed means nothing once the folder it was typed in is forgotten).

    Examples
    --------
    >>> volume_records(["/data/a.nrrd"], ["/data/a_label.nrrd"])
    ['/data/a.nrrd (label /data/a_label.nrrd)']
    """
    return [f"{Path(i).absolute()} (label {Path(l).absolute()})" for i, l in zip(images, labels)]


def train_from_files(images: Sequence[PathLike], labels: Sequence[PathLike], out_path: PathLike, config=None, *,
                     val_images: Sequence[PathLike] = (), val_labels: Sequence[PathLike] = (),
                     init: Union[None, PathLike, Any] = None, options=None, max_iters: Optional[int] = None,
                     max_minutes: Optional[float] = None, spacing: Optional[Sequence[float]] = None,
                     downsample: int = 1, device: str = choices.DEFAULT_DEVICE, seed: int = 0,
                     provenance: Optional[Dict[str, Any]] = None,
                     names: Tuple[str, str, str, str] = ("images", "labels", "val_images", "val_labels"),
                     progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> Path:
    """Train (or fine-tune) a network on image and label files and write its model file: the one path from files
    to a model, of ``scribbleseg train`` and of the Slicer worker.

    Warns of an image given twice or also for validation, refuses a disk too full for the model file before
    reading anything, reads the pairs (:func:`read_training_pairs`), then runs :func:`ScribbleSegLib.training.
    train_model`, whose messages name each volume by its label file.

    Parameters
    ----------
    images, labels, val_images, val_labels : lists of paths
        Paired in order.
    out_path : path
        The model file to write.
    config : nets.ModelConfig, optional
        The network (None: the small M-Unet; with ``init``, the parent's).
    init : path or model_file.SegModel, optional
        The model to fine-tune.
    options, max_iters, max_minutes, device, seed
        As for ``train_model``.
    spacing, downsample
        As for :func:`ScribbleSegLib.volume_io.read_image`.
    provenance : dict, optional
        Extra fields of the model's record; ``volumes`` defaults to :func:`volume_records`.
    names : 4 str
        How the caller names the four lists in messages (``--images`` ... on the command line).
    progress, cancel
        See :mod:`ScribbleSegLib.progress`.

    Returns
    -------
    pathlib.Path
        ``out_path``.

    Examples
    --------
    >>> train_from_files(["a.nrrd"], [], "m.model")
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: images and labels: 1 image but 0 labels
    """
    from .fileio import check_free_space
    from .model_file import SegModel, check_model_output, expected_model_bytes, load_model
    from .nets import ModelConfig
    from .training import TrainOptions, train_model

    check_pairs(images, labels, names[:2])
    check_pairs(val_images, val_labels, names[2:])
    check_model_output(out_path, "out_path")  # before the images are read
    log = logging.getLogger("ScribbleSegLib")
    for line in repeated_images(images, val_images, (names[0], names[2])):
        log.warning(line)
    parent = init if init is None or isinstance(init, SegModel) else load_model(init, device=device)
    network = parent.config if parent is not None else (config or ModelConfig.small("munet"))
    bank = (options or TrainOptions()).bank_per_class
    # The model file's size is known from its network and bank: a disk too full for it is refused now, not after
    # the whole training budget.
    check_free_space({out_path: expected_model_bytes(network, 2 * bank)})
    train = read_training_pairs(images, labels, spacing=spacing, downsample=downsample, cancel=cancel,
                                names=names[:2])
    val = read_training_pairs(val_images, val_labels, spacing=spacing, downsample=downsample, cancel=cancel,
                              names=names[2:])
    record = {"volumes": volume_records(images, labels), **(provenance or {})}
    return train_model(*train, out_path, config, val_images=val[0] or None, val_labels=val[1] or None,
                       options=options, max_iters=max_iters, max_minutes=max_minutes, device=device, seed=seed,
                       names=[str(l) for l in labels], val_names=[str(l) for l in val_labels] or None,
                       init=parent, provenance=record, progress=progress, cancel=cancel)
