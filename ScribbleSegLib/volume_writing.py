"""Writing RGB volumes, labelmaps, tile masks, probabilities and Slicer segmentations.

Every writer checks its array and geometry first, goes through
:func:`~ScribbleSegLib.fileio.atomic_output`, so a failed write never leaves
a half-written file, and compresses its output.  A ``.seg.nrrd`` is written
with ``slicerio``, each segment in the layer Slicer itself would put it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import slicerio

from .errors import ScribbleSegError
from .fileio import PathLike, atomic_output, check_path, native_stderr_held
from .geometry import Geometry, Volume, check_geometry

HEART_COLOR = (0.85, 0.2, 0.2)
"""Display colour (RGB in [0, 1]) of the ``heart`` segment in every segmentation ScribbleSeg writes and in the
Slicer scene; a rendered surface (:func:`ScribbleSegLib.surface.render_surface_png`) takes Slicer's anatomical
heart colour instead (:data:`ScribbleSegLib.surface.HEART_COLOR`)."""

BACKGROUND_COLOR = (0.2, 0.4, 0.85)
"""Display colour (RGB in [0, 1]) of the ``background`` segment everywhere in ScribbleSeg."""

# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------


def _with_geometry(image, geometry: Geometry):
    check_geometry(geometry)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


#: Formats that hold one 2D image: ITK writes a volume's first section alone to them, without a word.
FLAT_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _write_sitk(path: PathLike, image, expected_bytes: Optional[int] = None) -> None:
    if Path(path).name.lower().endswith(FLAT_SUFFIXES) and image.GetDimension() == 3 and image.GetSize()[2] > 1:
        raise ScribbleSegError(f"{path}: a {Path(path).suffix.lstrip('.').upper()} holds one section, the volume has "
                               f"{image.GetSize()[2]}; write it as .nrrd, .nii.gz or .mha (a tile's mask: "
                               "write_tile_mask)")
    # Outermost, so that a truncated write that atomic_output reports also drops the native complaint.
    with native_stderr_held(), atomic_output(path, expected_bytes) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), True)
        except RuntimeError:
            raise ScribbleSegError(
                f"{path}: SimpleITK cannot write this file type; use .nrrd, .nii, .nii.gz or .mha"
            ) from None


def _check_array(path: PathLike, array: np.ndarray, ndim: int, what: str) -> np.ndarray:
    check_path(path)  # before the array: a writer given (array, path) in the wrong order says so
    array = np.asarray(array)
    if array.ndim != ndim or (ndim == 4 and array.shape[3] != 3):
        expected = "(Z, Y, X, 3)" if ndim == 4 else "(Z, Y, X)"
        raise ScribbleSegError(f"{path}: {what} must be a {expected} array, got shape {array.shape}")
    return array


def _shown_type(value: object) -> str:
    """How an error names what it was given: its type, and a sequence's length and first item's type."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, (list, tuple)):
        first = f" of {type(value[0]).__name__}" if value else ""
        return f"a {type(value).__name__} of {len(value)}{first}"
    return type(value).__name__


def write_rgb_volume(path: PathLike, volume: Volume) -> None:
    """Write an RGB volume; as NRRD, Slicer opens it as a colour vector volume.

    Parameters
    ----------
    path : str or Path
        Output file; its extension picks the format (``.nrrd`` recommended:
        ``kinds: vector domain domain domain``, gzip-compressed).
    volume : Volume
        ``array`` ``(Z, Y, X, 3)`` uint8 with its geometry.

    Examples
    --------
    >>> import tempfile
    >>> from ScribbleSegLib.volume_io import read_image
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = Path(folder.name) / "stack.nrrd"
    >>> write_rgb_volume(path, Volume(np.full((2, 3, 4, 3), 200, np.uint8), Geometry((0.5, 0.5, 2.0))))
    >>> read_image(path).array.shape
    (2, 3, 4, 3)
    >>> folder.cleanup()
    """
    if not isinstance(volume, Volume):  # an array alone: "'numpy.ndarray' object has no attribute 'array'"
        raise ScribbleSegError(f"{path}: volume must be a Volume (the RGB array and its geometry), got "
                               f"{_shown_type(volume)}")
    array = _check_array(path, volume.array, 4, "an RGB image")
    if array.dtype != np.uint8:
        raise ScribbleSegError(f"{path}: an RGB image must be uint8, got {array.dtype}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=True)
    _write_sitk(path, _with_geometry(image, volume.geometry), array.nbytes)


def write_labelmap(path: PathLike, labels: np.ndarray, geometry: Geometry) -> None:
    """Write a ``(Z, Y, X)`` uint8 labelmap (compressed; format from the extension).

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = Path(folder.name) / "labels.nii.gz"
    >>> write_labelmap(path, np.array([[[0, 1, 2]]], np.uint8), Geometry((0.5, 0.5, 2.0)))
    >>> sitk.GetArrayFromImage(sitk.ReadImage(str(path))).tolist()
    [[[0, 1, 2]]]
    >>> folder.cleanup()
    """
    labels = _check_array(path, labels, 3, "a labelmap")
    if labels.dtype.kind not in "uib":
        raise ScribbleSegError(f"{path}: a labelmap must have integer values, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ScribbleSegError(f"{path}: labelmap values must lie in 0..255")
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels, dtype=np.uint8))
    _write_sitk(path, _with_geometry(image, geometry), labels.size)


def write_tile_mask(path: PathLike, labels: np.ndarray, geometry: Geometry) -> None:
    """Write a one-section ``(1, Y, X)`` labelmap as a 2D image (a PNG): 255 where it is non-zero, else 0, with
    the section's pixel size (what a tile tool or an image viewer reads; :func:`read_label` reads it back).

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "mask.png")
    >>> write_tile_mask(path, np.array([[[0, 1, 1]]], np.uint8), Geometry((0.5, 0.5, 1.0)))
    >>> sitk.GetArrayFromImage(sitk.ReadImage(path)).tolist()
    [[0, 255, 255]]
    """
    labels = _check_array(path, labels, 3, "a labelmap")
    if labels.shape[0] != 1:
        raise ScribbleSegError(f"{path}: a PNG holds one section, the labels have {labels.shape[0]}")
    image = sitk.GetImageFromArray(np.where(labels[0] != 0, np.uint8(255), np.uint8(0)))
    image.SetSpacing(tuple(float(s) for s in geometry.spacing[:2]))
    image.SetOrigin(tuple(float(o) for o in geometry.origin[:2]))
    _write_sitk(path, image, labels.size)


#: How far outside 0 to 1 a probability map's values may lie (rounding), before it is refused.
PROBABILITY_SLACK = 1e-3


def write_probability(path: PathLike, prob: np.ndarray, geometry: Geometry) -> None:
    """Write a ``(Z, Y, X)`` probability map as float32 (compressed; format from the extension).

    Raises
    ------
    ScribbleSegError
        If ``prob`` holds NaN or infinite values.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = Path(folder.name) / "h.nrrd"
    >>> write_probability(path, np.array([[[0.25, 1.0]]], np.float32), Geometry((0.5, 0.5, 2.0)))
    >>> sitk.GetArrayFromImage(sitk.ReadImage(str(path))).tolist(), sitk.ReadImage(str(path)).GetSpacing()
    ([[[0.25, 1.0]]], (0.5, 0.5, 2.0))
    >>> write_probability(path, np.array([[[np.nan]]], np.float32), Geometry((0.5, 0.5, 2.0)))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: ...
    >>> folder.cleanup()
    """
    prob = _check_array(path, prob, 3, "a probability map")
    prob = np.ascontiguousarray(prob, dtype=np.float32)
    # Two reductions, no mask of the whole map: NaN and inf pass into the smallest or the largest value.
    low, high = float(prob.min(initial=0.0)), float(prob.max(initial=0.0))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ScribbleSegError(f"{path}: the probability map contains NaN or infinite values; nothing written")
    # A logit or a score map, written as a probability without a word (a float's last bits of a blend are not).
    if low < -PROBABILITY_SLACK or high > 1.0 + PROBABILITY_SLACK:
        raise ScribbleSegError(f"{path}: the probability map holds values from {low:g} to {high:g}, outside 0 to 1; "
                               "nothing written")
    _write_sitk(path, _with_geometry(sitk.GetImageFromArray(prob), geometry), prob.nbytes)


def _segment_layers(segmentation: dict, segments: Sequence[Tuple[str, np.ndarray, Sequence[float]]]
                    ) -> List[np.ndarray]:
    """The ``(Z, Y, X)`` label layers of ``segments``, each added to ``segmentation["segments"]``.

    The rule of ``slicerio.add_segment``: a segment takes the next label value of the first layer
    it does not overlap, else a new layer.  Why not add_segment itself: its boolean indexing and
    ``nonzero`` on the transposed ``(i, j, k)`` view took 2 s of writing a 100x512x512 result
    (BENCHMARKS.md, "Interactive speed" item 14); on our ``(z, y, x)`` arrays the same work is
    a few reductions.
    """
    dtype = segmentation["voxels"].dtype
    layers: List[np.ndarray] = []
    top: List[int] = []  # the highest label value of each layer
    entries = segmentation.setdefault("segments", [])
    for name, mask, color in segments:
        mask = np.asarray(mask) != 0
        for index, layer in enumerate(layers):
            if top[index] < np.iinfo(dtype).max and not np.any((layer != 0) & mask):
                break
        else:
            layers.append(np.zeros(mask.shape, dtype))
            top.append(0)
            index = len(layers) - 1
        top[index] += 1
        np.copyto(layers[index], top[index], where=mask)
        # extent: first and last index along i, j, k (x, y, z), as Slicer's header has it
        extent = [0, -1, 0, -1, 0, -1]
        if mask.any():
            extent = []
            for axes in ((0, 1), (0, 2), (1, 2)):
                hit = np.flatnonzero(mask.any(axis=axes))
                extent += [int(hit[0]), int(hit[-1])]
        entries.append({"id": name, "name": name, "color": [float(c) for c in color], "nameAutoGenerated": False,
                        "colorAutoGenerated": False, "labelValue": top[index], "layer": index, "extent": extent})
    return layers


def write_segmentation(
    path: PathLike,
    segments: Sequence[Tuple[str, np.ndarray, Sequence[float]]],
    geometry: Geometry,
) -> None:
    """Write named, coloured segments as a Slicer ``.seg.nrrd`` (through slicerio).

    Parameters
    ----------
    path : str or Path
        Output file; its name must end in ``.seg.nrrd``.
    segments : sequence of (name, mask, color)
        ``mask`` is a ``(Z, Y, X)`` array (non-zero = inside), all of the same
        shape; ``color`` is RGB in [0, 1] (see :data:`HEART_COLOR`,
        :data:`BACKGROUND_COLOR`).  Names must be distinct (ignoring case).
        Overlapping segments are stored in separate layers, as Slicer does.
    geometry : Geometry
        Geometry of the masks' grid.

    Examples
    --------
    >>> import tempfile
    >>> from ScribbleSegLib.volume_io import read_label, read_segmentation
    >>> folder = tempfile.TemporaryDirectory()
    >>> path, geometry = Path(folder.name) / "result.seg.nrrd", Geometry((0.02, 0.02, 0.1))
    >>> heart = np.zeros((3, 8, 8), np.uint8); heart[1, 2:5, 2:5] = 1
    >>> write_segmentation(path, [("heart", heart, (0.9, 0.3, 0.3))], geometry)
    >>> segments, read_geometry = read_segmentation(path)
    >>> list(segments), int(segments["heart"].sum()), read_geometry.spacing
    (['heart'], 9, (0.02, 0.02, 0.1))
    >>> int(read_label(path, (3, 8, 8), geometry).sum())  # on an image's grid, as a label
    9
    >>> folder.cleanup()
    """
    if not str(check_path(path)).lower().endswith(".seg.nrrd"):
        raise ScribbleSegError(f"{path}: a segmentation file name must end in .seg.nrrd")
    if not isinstance(segments, (list, tuple)) or not all(
            isinstance(s, (list, tuple)) and len(s) == 3 for s in segments):
        # A bare labelmap, a dict of masks, one triple alone or pairs without a colour: numpy's or Python's own
        # errors said nothing of what was expected.
        raise ScribbleSegError(f"{path}: segments must be a list of (name, mask, colour) triples, e.g. "
                               f"[('heart', labels, HEART_COLOR)]; got {_shown_type(segments)}")
    if not segments:
        raise ScribbleSegError(f"{path}: no segments to write")
    shape = None
    seen = set()
    for name, mask, color in segments:
        mask = _check_array(path, mask, 3, f"segment '{name}'")
        if mask.dtype.kind not in "uib":  # a probability: every value above 0 would be inside
            raise ScribbleSegError(f"{path}: segment '{name}' must be an integer or boolean mask, got {mask.dtype} "
                                   "(a probability? threshold it first)")
        if shape is not None and mask.shape != shape:
            raise ScribbleSegError(f"{path}: segment '{name}' has shape {mask.shape}, the first segment {shape}")
        shape = mask.shape
        if not name or "\n" in name or name.lower() in seen:
            raise ScribbleSegError(f"{path}: segment names must be non-empty, one line and distinct, got {name!r}")
        seen.add(name.lower())
        if not isinstance(color, (list, tuple, np.ndarray)) or len(color) != 3 \
                or not all(isinstance(c, (int, float, np.number)) and 0.0 <= float(c) <= 1.0 for c in color):
            raise ScribbleSegError(f"{path}: segment '{name}' colour must be three numbers in [0, 1], got {color!r}")

    # slicerio's default index order is (i, j, k), i.e. the transpose of our [z, y, x] arrays.
    check_geometry(geometry)
    segmentation = slicerio.create_segmentation(shape[::-1], geometry.ijk_to_lps())
    segmentation["containedRepresentationNames"] = ["Binary labelmap"]
    layers = _segment_layers(segmentation, segments)
    # (i, j, k) views of our (z, y, x) arrays: the NRRD writer's Fortran-order bytes are then a plain copy.
    segmentation["voxels"] = (layers[0].transpose(2, 1, 0) if len(layers) == 1
                              else np.stack(layers).transpose(0, 3, 2, 1))
    with atomic_output(path, len(segments) * int(np.prod(shape))) as tmp:
        slicerio.write_segmentation(str(tmp), segmentation, compression_level=6)


# ---------------------------------------------------------------------------
