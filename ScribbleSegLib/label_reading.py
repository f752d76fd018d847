"""Reading labels, scribbles and Slicer segmentations onto an image's grid.

Labels (0/1) and scribbles (0 none, 1 heart, 2 background) come from a
labelmap file, a folder of labelmap sections, or a Slicer ``.seg.nrrd``
segmentation (read with ``slicerio``, which handles overlapping segments
stored in layers).  They are checked against the image's geometry; a
``.seg.nrrd`` that Slicer cropped to the extent of its segments is padded
back onto the image grid, and strokes drawn on a finer grid are reduced.
"""

from __future__ import annotations

import logging
import re
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import slicerio

from . import grids, image_tags
from .errors import ScribbleSegError
from .fileio import PathLike, check_path
from .geometry import Geometry, Volume
from .image_reading import (SECTION_SUFFIXES, _check_downsample, _first_of, _geometry_of, _pixels_of, _read_sitk,
                            image_file_grid, is_segmentation_file, list_section_files, missing_section_numbers,
                            nrrd_header_lines)
# What slicerio's reader raises on a file it cannot parse (StopIteration: an empty file, at its first header line).
_SEGMENTATION_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, StopIteration, zlib.error)

# Segmentations, labels and scribbles
# ---------------------------------------------------------------------------


def _read_failure(exc: BaseException) -> str:
    """Why slicerio could not read a segmentation, in the user's words.

    The parser's own words ("not enough values to unpack") say nothing to the user; the system's do.  A header field
    that slicerio refuses (``kinds``, ``space``: "kinds field must be 'domain domain domain' or ...") is said as it
    is: the file is whole, only written in a layout it does not take, and "damaged" sent the user looking for a fault
    that is not there.

    Examples
    --------
    >>> _read_failure(OSError("kinds field must be 'domain domain domain' or 'list domain domain domain'"))
    "a header field slicerio does not read: kinds field must be 'domain domain domain' or 'list domain domain domain'"
    >>> _read_failure(ValueError("not enough values to unpack"))
    'a damaged or truncated file'
    """
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    said = str(exc.args[0]) if isinstance(exc, OSError) and exc.args else ""
    if " field " in said:
        return f"a header field slicerio does not read: {said}"
    return "a damaged or truncated file"


def read_segmentation(path: PathLike, say: bool = True) -> Tuple[Dict[str, np.ndarray], Geometry]:
    """Read a Slicer ``.seg.nrrd`` into masks by segment name.

    Parameters
    ----------
    path : str or Path
    say : bool
        Warn where segments share a name (False: a read for the shape alone).

    Returns
    -------
    masks : dict of str to numpy.ndarray
        Lower-cased segment name -> ``(Z, Y, X)`` uint8 0/1 mask; segments
        sharing a name (ignoring case) are merged, with one warning.
    geometry : Geometry
        The geometry of the file's voxel grid (which Slicer may have cropped
        to the segments' extent).

    Examples
    --------
    >>> import tempfile
    >>> from ScribbleSegLib.volume_io import write_segmentation
    >>> folder = tempfile.TemporaryDirectory()
    >>> path, geometry = Path(folder.name) / "strokes.seg.nrrd", Geometry((0.5, 0.5, 2.0))
    >>> heart = np.zeros((2, 3, 3), np.uint8); heart[0, 1, 1] = 1
    >>> write_segmentation(path, [("Heart", heart, (1.0, 0.0, 0.0)), ("background", 1 - heart, (0.0, 0.0, 1.0))],
    ...                    geometry)
    >>> masks, read_geometry = read_segmentation(path)
    >>> sorted(masks), int(masks["heart"].sum()), read_geometry.spacing
    (['background', 'heart'], 1, (0.5, 0.5, 2.0))
    >>> folder.cleanup()
    """
    path = check_path(path)
    if not path.is_file():
        raise ScribbleSegError(f"{path}: no such file")
    try:
        segmentation = slicerio.read_segmentation(str(path))
    except _SEGMENTATION_READ_ERRORS as exc:
        raise ScribbleSegError(f"{path}: cannot be read as a segmentation ({_read_failure(exc)})") from None
    voxels = segmentation["voxels"]
    if voxels.ndim not in (3, 4):
        raise ScribbleSegError(f"{path}: a segmentation must be 3D, got {voxels.ndim} dimensions")
    geometry = _geometry_from_ijk_to_lps(segmentation["ijkToLPS"], path)
    masks: Dict[str, np.ndarray] = {}
    spellings: Dict[str, List[str]] = {}
    for index, segment in enumerate(_with_header_names(path, segmentation.get("segments", []))):
        spelled = str(segment.get("name", segment.get("id", ""))).strip()
        name = spelled.lower()
        spellings.setdefault(name, []).append(spelled)
        if voxels.ndim == 4 and "layer" not in segment:
            # Slicer 4.10 and earlier gave each segment a layer of its own and wrote no layer field; Slicer reads
            # such a segment from the layer of its index, where slicerio takes the first layer for all of them.
            if index >= voxels.shape[0]:
                raise ScribbleSegError(f"{path}: segment '{name}' states no layer, and the file has no layer "
                                       f"{index} to hold it (it has {voxels.shape[0]})")
            segment = dict(segment, layer=index)
        mask = np.ascontiguousarray(slicerio.segment_mask(segmentation, segment).transpose(2, 1, 0))
        mask = mask.astype(np.uint8)
        masks[name] = np.maximum(masks[name], mask) if name in masks else mask
    shared = ["{} and {}".format(", ".join(f"'{n}'" for n in names[:-1]), f"'{names[-1]}'")
              for names in spellings.values() if len(names) > 1]
    if shared and say:
        # 'heart' beside 'Heart' (a segment added again, or another user's): both were read as the heart's
        # strokes without a word, and the result moved with them.
        logging.getLogger("ScribbleSegLib").warning(
            "%s: segments %s are read as one (names are matched ignoring case); rename or remove the one that is "
            "not meant", path, "; ".join(shared))
    return masks, geometry


def _geometry_from_ijk_to_lps(matrix, path: Path) -> Geometry:
    matrix = np.asarray(matrix, dtype=float)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    if not np.all(spacing > 0):
        raise ScribbleSegError(f"{path}: the voxel grid has a zero spacing")
    direction = matrix[:3, :3] / spacing[None, :]
    return Geometry(tuple(spacing), tuple(matrix[:3, 3]), tuple(direction.ravel()))


def reduce_strokes(strokes: np.ndarray, shape: Sequence[int], downsample: int) -> np.ndarray:
    """Strokes (0 none, 1 heart, 2 background) drawn at ``downsample`` times an image's in-plane size,
    reduced onto the image's ``shape`` as :func:`read_image` reduces it: a block takes a class when any of its
    pixels has it and none has the other.  Returned as they are when they are not of that size.

    Examples
    --------
    >>> s = np.zeros((1, 4, 4), np.uint8); s[0, 0, 0] = 1; s[0, 3, 3] = 2
    >>> reduce_strokes(s, (1, 2, 2), 2)[0].tolist()
    [[1, 0], [0, 2]]
    """
    return _reduced(np.asarray(strokes), shape, int(downsample), strokes=True)


def reduce_label_volume(label: "Volume", downsample: int) -> "Volume":
    """A label on its own grid, reduced as :func:`read_image` reduces an image read with ``downsample``:
    ``downsample`` x ``downsample`` blocks in-plane (a block is heart when at least half of it is, the
    remainder cropped), on the grid such an image has.

    Examples
    --------
    >>> full = Volume(np.ones((1, 4, 5), np.uint8), Geometry((0.5, 0.5, 2.0)))
    >>> small = reduce_label_volume(full, 2)
    >>> small.shape, small.geometry.spacing
    ((1, 2, 2), (1.0, 1.0, 2.0))
    """
    factor = _check_downsample(downsample, Path("label"))
    z, y, x = label.shape
    if factor == 1:
        return label
    if y < factor or x < factor:
        raise ScribbleSegError(f"the label ({_size_text(label.shape)} voxels) is smaller than one block of "
                               f"downsample {factor}")
    return Volume(_reduced(label.array, (z, y // factor, x // factor), factor, strokes=False),
                  label.geometry.scaled((factor, factor, 1)))


def marks_on_file_grid(path: PathLike, image_path: PathLike, shape: Sequence[int], *, spacing=None,
                       downsample: int = 1, strokes: bool) -> Optional[np.ndarray]:
    """A label (``strokes=False``) or strokes drawn on an image file's own grid, onto the image as it was read.

    ``spacing`` or ``downsample`` (:func:`read_image`) change the image's grid as it is read, but a label or
    strokes made on the file itself (in Slicer, or by ``scribbleseg phantom``) lie on the grid its header
    states (:func:`image_file_grid`), and with ``downsample`` they may lie on the image at full size with
    ``spacing`` (a stack read whole before).  They are read on such a grid and reduced as the image was (a label
    block is heart when at least half of it is, a stroke block takes a class when any of its pixels has it and
    none has the other).  On a folder's grid only a file of the folder's full size counts: a folder has no
    origin of its own by which a smaller box (a crop, or another stack's file) could be placed.

    Returns
    -------
    numpy.ndarray or None
        ``(Z, Y, X)`` uint8 on ``shape`` (the image as read); None when neither ``spacing`` nor
        ``downsample`` was given, the image has no grid of its own, or the file is on none of these grids (the
        caller then reports its own reading's error).
    """
    if not spacing and int(downsample) == 1:
        return None
    grid = image_file_grid(image_path)
    if grid is None:
        return None
    file_shape, geometry = grid
    grids = [geometry]
    if spacing and int(downsample) > 1:
        grids.append(Geometry(tuple(float(v) for v in spacing), geometry.origin, geometry.direction))
    whole_only = Path(image_path).is_dir()
    for on in grids:
        try:
            if whole_only and on is geometry and _marks_shape(Path(path)) != tuple(file_shape):
                continue
            marks = (read_scribbles(path, file_shape, on, finer_grids=False) if strokes
                     else read_label(path, file_shape, on))
        except ScribbleSegError:
            continue
        marks = _reduced(marks, shape, int(downsample), strokes=strokes)
        if marks.shape == tuple(int(n) for n in shape):
            return marks
    return None


def _marks_shape(path: Path) -> Tuple[int, ...]:
    """The shape ``(Z, Y, X)`` of the marks a label or strokes file holds, read without a word: the read that
    places them gives its warnings (read as a label, strokes of 128 and 255 were told "every one counts as heart"
    before the strokes' own read refused them)."""
    if is_segmentation_file(path):
        masks, _ = read_segmentation(path, say=False)
        return tuple(next(iter(masks.values())).shape) if masks else ()
    return tuple(_read_labelmap_file(path, binary=True, say=False)[0].shape)


def _read_label_sections(folder: Path, binary: bool = False, say: bool = True) -> np.ndarray:
    """A folder of 2D labelmap sections (natural order, as :func:`list_section_files`), stacked ``(Z, Y, X)``;
    ``binary`` and ``say`` (the folder's warnings) as :func:`_read_labelmap_file`."""
    files = list_section_files(folder)
    if not files:
        raise ScribbleSegError(
            f"{folder}: contains no section images ({', '.join(s.lstrip('.') for s in SECTION_SUFFIXES)})")
    missing = missing_section_numbers(files)
    if missing and say:
        # Each file goes with the section of its place in the folder: after a number left out, every mask would
        # lie a section off (and a count that still matches said nothing).
        shown = _first_of(missing, 5)
        logging.getLogger("ScribbleSegLib").warning(
            "%s: the section numbers skip %s (of %s to %s); each file is the section of its place in the folder, "
            "so those after the gap lie a section off if a file is missing there (keep one file per section, "
            "blank where nothing is marked)", folder, shown, files[0].name, files[-1].name)
    planes = []
    jpegs = [f for f in files if f.suffix.lower() in (".jpg", ".jpeg")]
    for file in files:
        plane, own = _read_labelmap_file(file, binary, say=False)
        if own is not None:
            raise ScribbleSegError(f"{file}: is a 3D file; a folder of label sections holds 2D images")
        if planes and plane.shape != planes[0].shape:
            raise ScribbleSegError(f"{file}: has size {_size_text(plane.shape)}, the folder's first section "
                                   f"{files[0].name} {_size_text(planes[0].shape)}")
        planes.append(plane)
    if jpegs and say:  # every one was read as a black-and-white mask: one warning for the folder
        logging.getLogger("ScribbleSegLib").warning(
            "%s: %d of %d label sections are JPEG (lossy, %s the first): read as black-and-white masks, where "
            "their pixels are more than half white; PNG or TIFF keep a mask exact", folder, len(jpegs),
            len(files), jpegs[0].name)
    return np.concatenate(planes)


#: A JPEG label is read when at least this share of its pixels lies within :data:`JPEG_MASK_MARGIN` of black
#: or white (a black-and-white mask, as public data sets ship them); the compression's ringing along the
#: edges leaves a few per cent in between.
JPEG_MASK_SHARE = 0.95
JPEG_MASK_MARGIN = 48


def _black_and_white_jpeg(path: Path, binary: bool, say: bool = True) -> np.ndarray:
    """A 2D JPEG label ``(1, Y, X)``: a black-and-white mask read as its pixels over half white, with one
    warning (``say``).  JPEG's compression moves values along every edge, so a mask read as "> 0" would grow
    a halo, and scribbles (values 1 and 2) or a mask of 0 and 1 cannot be told from the noise: refused."""
    lossy = (f"{path}: a JPEG {'label' if binary else 'labelmap'} is lossy (its compression changes the values "
             "along every edge)")
    image = _read_sitk(path) if binary else None
    if image is None or image.GetDimension() != 2:
        raise ScribbleSegError(f"{lossy}; save labels and scribbles as PNG or TIFF")
    grey = sitk.GetArrayFromImage(image).astype(np.float32)
    if grey.ndim == 3:
        grey = grey[..., :3].mean(axis=-1)
    near = (grey <= JPEG_MASK_MARGIN) | (grey >= 255 - JPEG_MASK_MARGIN)
    if grey.max() < 128 or near.mean() < JPEG_MASK_SHARE:
        raise ScribbleSegError(f"{lossy}, and it is not a black-and-white mask that could be read as more than "
                               "half white; save it as PNG or TIFF")
    if say:
        logging.getLogger("ScribbleSegLib").warning(
            "%s: a JPEG label (lossy): read as a black-and-white mask, where its pixels are more than half "
            "white; PNG or TIFF keep a mask exact", path)
    return (grey > 127.5).astype(np.uint8)[None]


def _read_labelmap_file(path: Path, binary: bool = False,
                        say: bool = True) -> Tuple[np.ndarray, Optional[Geometry]]:
    """The labelmap and its geometry; ``None`` for a 2D file (one section) or a folder of them, which take
    the image's.  ``binary``: only ``> 0`` will be read (a label, not scribbles), so a colour mask of one
    colour on black is read too (:func:`_grey_of_colour_labelmap`), and a black-and-white JPEG mask
    (:func:`_black_and_white_jpeg`, with a warning unless ``say`` is False)."""
    if path.is_dir():
        return _read_label_sections(path, binary, say), None
    if path.suffix.lower() in (".jpg", ".jpeg"):
        return _black_and_white_jpeg(path, binary, say), None
    image = _read_sitk(path)
    flat = image.GetDimension() == 2
    if flat:
        image = sitk.JoinSeries(image)
    elif image.GetDimension() != 3:
        raise ScribbleSegError(f"{path}: is a {image.GetDimension()}D image; expected a 3D labelmap or a 2D section")
    array = _pixels_of(image)  # a labelmap as large as the stack: no copy of it
    palette = image_tags.png_palette(path) if flat and not binary else None
    if palette is not None:
        array = _palette_strokes(array, palette, path)
    elif image.GetNumberOfComponentsPerPixel() != 1:
        array = _grey_of_colour_labelmap(array, path, binary)
    if array.dtype.kind not in "uif":
        raise ScribbleSegError(f"{path}: pixel type {array.dtype} is not a labelmap type")
    if array.dtype.kind == "f" and not (np.isfinite(array).all() and np.array_equal(array, np.round(array))):
        # segment's --probability output is the likeliest such file: say what to give instead.
        within = bool(np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1)
        raise ScribbleSegError(f"{path}: a labelmap must hold whole numbers; found non-integer values"
                               + (" (values in [0, 1]: a probability? give the segmentation itself, or "
                                  "threshold it at 0.5)" if within else ""))
    return array, None if flat else _geometry_of(image, path)


#: In strokes saved as a palette PNG, an index other than 0 (none) over this share of the pixels is the empty
#: canvas under another index (strokes cover a small part of an image), not strokes.
PALETTE_CANVAS_SHARE = 0.5


def _palette_strokes(array: np.ndarray, palette: np.ndarray, path: Path) -> np.ndarray:
    """The palette indices of strokes saved as an indexed-colour PNG (GIMP, labelling tools), which ITK reads as
    the palette's colours: RGB, RGBA where the palette has transparency, or grey for a palette of greys.  The
    strokes' classes are indices 0, 1 and 2, so those entries must differ."""
    rgb = array[..., :3] if array.ndim == 4 else np.repeat(array[..., None], 3, axis=-1)
    indices = image_tags.palette_indices(rgb, palette)
    if indices is None or len({tuple(c) for c in palette[:3]}) < min(3, len(palette)):
        raise ScribbleSegError(f"{path}: an indexed-colour PNG whose colours do not tell its indices 0, 1 and 2 "
                               "apart; save the scribbles as a grey image (0 none, 1 heart, 2 background)")
    counts = np.bincount(indices.reshape(-1), minlength=1)
    canvas = int(np.argmax(counts))
    if canvas != 0 and counts[canvas] > PALETTE_CANVAS_SHARE * indices.size:
        # An editor that numbered its palette red, green, black read as heart, background and "background
        # everywhere else": the run went on and gave the background strokes alone as the heart (IoU 0).
        colour = "#" + "".join(f"{int(v):02x}" for v in palette[canvas][:3])
        raise ScribbleSegError(
            f"{path}: an indexed-colour PNG whose index {canvas} ({colour}) covers {counts[canvas] / indices.size:.0%} "
            "of it: strokes are read as their palette indices (0 none, 1 heart, 2 background), so its empty canvas "
            "must be index 0; save it with the canvas at index 0, heart at 1 and background at 2, or as a grey "
            "image of those values")
    return indices


def _grey_of_colour_labelmap(array: np.ndarray, path: Path, binary: bool = False) -> np.ndarray:
    """The grey values of a labelmap saved as RGB or RGBA with the same value in its three colour channels
    (many image editors and slide viewers save a black-and-white mask so), ``(Z, Y, X)``.

    With ``binary`` (a label, read as ``> 0``), a mask of one colour on black (a palette PNG of one class, as
    labelling tools export) gives 1 where it is not black.  A grey mask with alpha (a grey PNG with alpha, or
    RGBA of equal channels) whose transparent pixels all hold 0 is read as its grey: a stroke layer saved with
    its empty pixels transparent.  A mask whose colour channels differ otherwise (colour-coded classes, or
    strokes) or whose transparent pixels hold values (an overlay) could mean several things, and is refused
    with one line.
    """
    components = array.shape[-1]
    grey_alpha = components == 2 and image_tags.png_colour_type(path) == image_tags.PNG_GREY_ALPHA
    if components not in (3, 4) and not grey_alpha:  # (two of another file are no grey and alpha)
        raise ScribbleSegError(f"{path}: has {components} components per pixel; expected a scalar labelmap")
    if components in (2, 4):
        # A stroke layer or mask saved with its empty pixels transparent (GIMP, labelling tools): those hold 0.
        alpha, colour = array[..., -1], array[..., :-1]
        if not ((alpha == alpha.flat[0]).all() or not colour[alpha == 0].any()):
            raise ScribbleSegError(f"{path}: its transparency varies from pixel to pixel and its transparent pixels "
                                   "hold values (an overlay?); save the labelmap as a grey image without "
                                   "transparency")
        if components == 2:
            return np.ascontiguousarray(colour[..., 0])
    grey = array[..., 0]
    if np.array_equal(grey, array[..., 1]) and np.array_equal(grey, array[..., 2]):
        return np.ascontiguousarray(grey)
    if not binary:
        raise ScribbleSegError(f"{path}: is a colour image whose channels differ; save scribbles as a grey image "
                               "(0 none, 1 heart, 2 background)")
    coloured = array[..., :3].any(axis=-1)
    colours = array[..., :3][coloured]  # not empty: black pixels have equal channels
    if not (colours == colours[0]).all():
        raise ScribbleSegError(f"{path}: is a colour image of several colours (colour-coded classes, or not a "
                               "mask?); save the mask as a grey image (0 outside, > 0 inside) or one colour on black")
    return coloured.astype(np.uint8)


def _named_mask(masks: Dict[str, np.ndarray], name: str, path: Path, only: bool) -> np.ndarray:
    """The segment named ``name`` (any case), or with ``only`` the file's only segment whatever its name."""
    if name in masks:
        return masks[name]
    if only and len(masks) == 1:
        return next(iter(masks.values()))
    found = ", ".join(f"'{n}'" for n in _segment_names(path, masks)) or "none"
    hint = (f"name the target's segment '{name}', or keep it as the file's only segment" if only
            else "scribbles need a 'heart' and a 'background' segment")
    raise ScribbleSegError(f"{path}: has no segment named '{name}' (segments: {found}); {hint}")


def _segment_names(path: Path, masks: Dict[str, np.ndarray]) -> List[str]:
    """The segments' names as the file spells them (``masks`` keys them lower-cased, for matching)."""
    names = segment_names(path)
    return list(masks) if names is None else list(dict.fromkeys(names))  # merged names once, in the file's order


def segment_names(path: PathLike) -> Optional[List[str]]:
    """The names of a ``.seg.nrrd``'s segments as the file spells them, in its order, read from its header
    alone; None where it cannot be read as a segmentation.

    Examples
    --------
    >>> import tempfile
    >>> from ScribbleSegLib.volume_io import write_segmentation
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = Path(folder.name) / "strokes.seg.nrrd"
    >>> strokes = np.zeros((1, 2, 2), np.uint8); strokes[0, 0] = 1
    >>> write_segmentation(path, [("Heart", strokes, (1, 0, 0)), ("background", 1 - strokes, (0, 0, 1))],
    ...                    Geometry((1.0, 1.0, 1.0)))
    >>> segment_names(path)
    ['Heart', 'background']
    >>> folder.cleanup()
    """
    path = Path(path)
    try:
        segments = _with_header_names(path, slicerio.read_segmentation(str(path), skip_voxels=True)["segments"])
    except _SEGMENTATION_READ_ERRORS:
        return None
    return [str(s.get("name", s.get("id", ""))).strip() for s in segments]


#: Where a ``.seg.nrrd``'s header is looked for its segments' names (it ends at its first empty line).
SEGMENTATION_HEADER_MAX_BYTES = 4 * 2**20


def _with_header_names(path: Path, segments: List[dict]) -> List[dict]:
    """``segments`` as slicerio lists them (by ``Segment<i>``, in order), with the names the file's header holds
    read as UTF-8, as Slicer writes them: the NRRD reader decodes the header as ASCII and drops every other
    character, so that ``Сердце`` and ``Лёгкое`` both read as '' (and were merged as one segment)."""
    names, indices = {}, set()
    for line in nrrd_header_lines(path, SEGMENTATION_HEADER_MAX_BYTES):
        match = re.match(rb"Segment(\d+)_([A-Za-z]+):=(.*)$", line)
        if match:
            indices.add(int(match.group(1)))
            if match.group(2) == b"Name":
                try:
                    names[int(match.group(1))] = match.group(3).decode("utf-8")
                except UnicodeDecodeError:  # an older writer's Latin-1
                    names[int(match.group(1))] = match.group(3).decode("latin-1")
    if len(indices) != len(segments):  # not the layout slicerio read: keep its names
        return segments
    return [dict(segment, name=names[i]) if i in names else segment for i, segment in zip(sorted(indices), segments)]


def _read_label_file(path: Path) -> Tuple[np.ndarray, Optional[Geometry]]:
    """Label mask and its own geometry (None: a 2D file or a folder of them).  A ``.seg.nrrd``'s target is its
    ``heart`` segment, or its only segment whatever its name (a segmentation painted in Slicer for a gland or a
    nucleus names it so, or ``Segment_1``)."""
    if not (path.is_file() or path.is_dir()):
        raise ScribbleSegError(f"{path}: no such file or folder")
    if is_segmentation_file(path):
        masks, geometry = read_segmentation(path)
        return _named_mask(masks, "heart", path, True), geometry
    array, geometry = _read_labelmap_file(path, binary=True)
    if array.dtype.kind in "if" and array.size and array.min() < 0:
        raise ScribbleSegError(f"{path}: a label must not hold negative values (found {array.min():g})")
    return _heart_mask(array, path), geometry


#: A mask whose marked voxels hold more than this many values between 0 and its largest has soft edges (resized
#: or blurred); fewer are classes coded by value (organs as 1, 2, 3 or 100, 200), all of which count.
SOFT_MASK_VALUES = 16


#: A label whose voxels are 0 in under this share and hold values between 0 and its largest in over
#: :data:`IMAGE_SOFT_SHARE` of the others is an image (a grey scan), not a mask, however blurred: a mask is 0 outside
#: its target, and a blurred one has its soft values along the outline.
IMAGE_ZERO_SHARE = 0.1
IMAGE_SOFT_SHARE = 0.5


def _heart_mask(array: np.ndarray, path: Path) -> np.ndarray:
    """A label's heart, ``array > 0`` as uint8, with one warning where that reads more than one value as heart
    (classes coded by value); a black-and-white mask with soft edges (:data:`SOFT_MASK_VALUES`) is read where it
    is more than half its largest value, with one warning: read as "> 0" its edges made the heart 12 % larger
    (a mask resized with bilinear interpolation) to 39 % (blurred) in a new-user pass of 2026-12-06.  A grey image
    (:data:`IMAGE_ZERO_SHARE`, :data:`IMAGE_SOFT_SHARE`) is refused."""
    marked = array > 0
    if not array.size or array.dtype.kind not in "ui":
        return marked.astype(np.uint8)
    top = array.max()
    soft = marked & (array < top)
    if not soft.any():
        return marked.astype(np.uint8)
    values = np.unique(array[soft])
    if len(values) <= SOFT_MASK_VALUES:
        if set(values.tolist()) | {int(top)} != {1, 2}:  # 0, 1 and 2 alone: scribbles_like says so
            # Organs coded by value (1 heart, 2 lung, 3 other): all count, as the README says, but not unsaid.
            shown = ", ".join(str(int(v)) for v in [*values, top])
            logging.getLogger("ScribbleSegLib").warning(
                "%s: holds the label values %s: every one counts as heart (keep the heart's value alone, or give a "
                ".seg.nrrd with a 'heart' segment)", path, shown)
        return marked.astype(np.uint8)
    soft_share = np.count_nonzero(soft) / np.count_nonzero(marked)
    if soft_share > IMAGE_SOFT_SHARE and np.count_nonzero(~marked) < IMAGE_ZERO_SHARE * array.size:
        # A grey scan given as the label: "a resized or blurred mask?" and a threshold at half its largest value
        # scored (and trained on) its bright glass as the target, exit 0.
        raise ScribbleSegError(f"{path}: {100 * soft_share:.1f}% of its voxels hold {len(values)} values between 0 "
                               f"and its largest, {int(top)}, and {100 * np.count_nonzero(~marked) / array.size:.1f}% "
                               "are 0: an image rather than a mask; give the mask (0 outside the target)")
    logging.getLogger("ScribbleSegLib").warning(
        "%s: %.1f%% of its marked voxels hold values between 0 and its largest, %d (a resized or blurred mask?): "
        "read where they are more than half of it, as a black-and-white mask; save masks with two values",
        path, 100.0 * np.count_nonzero(soft) / np.count_nonzero(marked), int(top))
    return (array > top / 2).astype(np.uint8)


def _reduces_to(full: Sequence[int], shape: Sequence[int], factor: int) -> bool:
    """Whether a ``(Z, Y, X)`` grid ``full`` read with in-plane downsample ``factor`` > 1 gives ``shape``
    (as :func:`read_image` reduces: the remainder cropped)."""
    return factor > 1 and (full[0], full[1] // factor, full[2] // factor) == tuple(int(s) for s in shape)


def _reduced(array: np.ndarray, shape: Sequence[int], factor: int, strokes: bool) -> np.ndarray:
    """A grid-less label or strokes read at ``factor`` times the image's in-plane size, reduced as
    :func:`read_image` reduces the image (``factor`` x ``factor`` blocks, the remainder cropped).

    A label block is heart when at least half of it is; a stroke block takes a class when any of its
    pixels has it and none has the other (thin strokes survive).  An array of another size is
    returned as it is, for the grid check to name.
    """
    if not _reduces_to(array.shape, shape, factor):
        return array
    z, y, x = (int(s) for s in shape)
    blocks = array[:, :y * factor, :x * factor].reshape(z, y, factor, x, factor)
    if not strokes:
        return (blocks.mean(axis=(2, 4), dtype=np.float32) >= 0.5).astype(np.uint8)
    heart, background = (blocks == 1).any(axis=(2, 4)), (blocks == 2).any(axis=(2, 4))
    return (heart & ~background).astype(np.uint8) + 2 * (background & ~heart).astype(np.uint8)


#: A ``.seg.nrrd`` with a 'background' segment looks like scribbles while its segments cover less than this share of
#: its voxels; a complete label (heart and the rest as 'background') covers them all.
STROKES_MAX_SHARE = 0.5


def scribbles_like(path: PathLike) -> Optional[str]:
    """Why a label file looks like scribbles rather than a label (None when it does not).

    A scribbles file given as a training label would teach background strokes as heart (every value > 0
    is heart), or a few strokes as the whole heart.

    Examples
    --------
    >>> from ScribbleSegLib.volume_io import write_labelmap
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "s.nrrd")
    >>> write_labelmap(path, np.array([[[0, 1], [2, 0]]], np.uint8), Geometry((1, 1, 1)))
    >>> scribbles_like(path)
    'its values are 0, 1 and 2, as those of scribbles are'
    """
    path = check_path(path)
    if not (path.is_file() or path.is_dir()):  # a folder of 2D label sections, too
        return None
    if is_segmentation_file(path):
        names = [n.lower() for n in _segment_names(path, {})]
        if "background" not in names:
            return None
        # A complete label may name its other voxels 'background' too: strokes cover a few per cent, it all.
        masks, _ = read_segmentation(path)
        covered = np.zeros(masks["background"].shape, bool)
        for mask in masks.values():
            covered |= mask > 0
        return "it has a 'background' segment, as scribbles have" if covered.mean() < STROKES_MAX_SHARE else None
    values, _ = _read_labelmap_file(path, binary=True, say=False)  # as the label is read (and warned about)
    if set(np.unique(values).tolist()) == {0, 1, 2}:
        return "its values are 0, 1 and 2, as those of scribbles are"
    return None


def read_label_volume(path: PathLike) -> Volume:
    """Read a label (0/1) on its own voxel grid.

    ``path`` is a labelmap file (values > 0 are heart) or a ``.seg.nrrd``
    with a segment named ``heart`` (any case), or with one segment, whatever its name.

    Returns
    -------
    Volume
        ``array`` ``(Z, Y, X)`` uint8, 1 for heart, with the file's geometry.

    Raises
    ------
    ScribbleSegError
        As :func:`read_label`, except for the grid checks.

    Examples
    --------
    >>> import tempfile
    >>> from ScribbleSegLib.volume_io import write_labelmap
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = Path(folder.name) / "label.nrrd"
    >>> write_labelmap(path, np.array([[[0, 2]]], np.uint8), Geometry((0.5, 0.5, 2.0)))
    >>> label = read_label_volume(path)
    >>> label.array.tolist(), label.geometry.spacing
    ([[[0, 1]]], (0.5, 0.5, 2.0))
    >>> folder.cleanup()
    """
    path = check_path(path)
    array, geometry = _read_label_file(path)
    return Volume(array, geometry or Geometry((1.0, 1.0, 1.0)))


def read_label(
    path: PathLike,
    shape: Sequence[int],
    geometry: Geometry,
    *,
    reference: str = "image",
    downsample: int = 1,
    downsample_hint: bool = False,
) -> np.ndarray:
    """Read a label onto an image's voxel grid.

    Parameters
    ----------
    path : str or Path
        A labelmap file (values > 0 are heart; negative or non-integer values
        are refused) or a ``.seg.nrrd`` with a segment named ``heart`` (any
        case), or with one segment, whatever its name.  A 2D labelmap file (one section), or a folder of them (one per
        section of the image, in natural order), takes the image's grid and
        must have its size.
    shape : sequence of 3 int
        The image's ``(Z, Y, X)``.
    geometry : Geometry
        The image's geometry.
    reference : str
        What owns ``shape`` and ``geometry``, for error messages.
    downsample : int
        The image was read with this ``downsample``: a 2D label file or folder
        at ``downsample`` times its in-plane size is reduced the same way (a
        block is heart when at least half of it is).
    downsample_hint : bool
        The reference may have been read with another ``downsample`` than
        the one given (a prediction, of an image read so): a 2D file at a whole
        multiple of its size is refused naming the ``downsample`` that reduces
        it.  Without, such a file is named as drawn on a larger image (a
        ``downsample`` that reads the image smaller reads the file no smaller).

    Returns
    -------
    numpy.ndarray
        ``(Z, Y, X)`` uint8, 1 for heart.

    Raises
    ------
    ScribbleSegError
        If the file is missing or unreadable, its values or segments are not
        as described, or its grid does not match the image.  A file on a box
        of the image's grid (cropped to what it marks, as Slicer saves
        segmentations and exports labelmaps, or extended with empty voxels) is
        placed onto the image's grid; one that marks voxels outside the image
        is refused.

    Examples
    --------
    >>> import tempfile
    >>> from ScribbleSegLib.volume_io import write_labelmap
    >>> folder = tempfile.TemporaryDirectory()
    >>> path, geometry = Path(folder.name) / "label.nrrd", Geometry((0.5, 0.5, 2.0))
    >>> write_labelmap(path, np.array([[[0, 1], [2, 0]]], np.uint8), geometry)
    >>> read_label(path, (1, 2, 2), geometry).tolist()  # values above 0 are heart
    [[[0, 1], [1, 0]]]
    >>> folder.cleanup()
    """
    path = check_path(path)
    shape, geometry = _check_grid(shape, geometry)
    array, own = _read_label_file(path)
    if own is None:
        array = _reduced(array, shape, int(downsample), strokes=False)
    return _onto_grid(array, own, shape, geometry, path, False, reference, downsample_hint)


def read_scribbles(path: PathLike, shape: Sequence[int], geometry: Geometry, *, reference: str = "image",
                   downsample: int = 1, finer_grids: bool = True, both_classes: bool = True,
                   outside_dropped: bool = False) -> np.ndarray:
    """Read scribbles onto an image's voxel grid.

    Parameters
    ----------
    path : str or Path
        A labelmap with values 0 (none), 1 (heart) and 2 (background) only, or
        a ``.seg.nrrd`` with segments named ``heart`` and ``background`` (any
        case; other segments are ignored).  Voxels in both segments count as
        not scribbled.  A 2D labelmap or a folder of them takes the image's
        grid, as in :func:`read_label`.
    shape, geometry, reference
        As in :func:`read_label`.
    downsample : int
        As in :func:`read_label`; a block of strokes takes a class when any of
        its pixels has it and none has the other, so thin strokes survive.
    finer_grids : bool
        Accept strokes drawn on a finer grid than the image's (see Raises).
    both_classes : bool
        Require heart and background strokes (False: any stroke will do, as
        for strokes that are only left out of a count).
    outside_dropped : bool
        Drop the strokes that lie outside the grid, with one note, instead of
        refusing them (strokes left out of a count on a box of the image,
        such as two files Slicer cropped).

    Returns
    -------
    numpy.ndarray
        ``(Z, Y, X)`` uint8: 0 none, 1 heart, 2 background.

    Raises
    ------
    ScribbleSegError
        As :func:`read_label`, and if there is no heart or no background voxel
        (with ``both_classes=False``: no stroke at all).
        Unlike a label, strokes may also be drawn on a finer grid than the
        image's (any origin and direction, such as Slicer's oversampled
        segmentations): each stroke voxel then marks the image voxel that
        holds its centre.

    Examples
    --------
    >>> import tempfile
    >>> from ScribbleSegLib.volume_io import write_labelmap
    >>> folder = tempfile.TemporaryDirectory()
    >>> path, geometry = Path(folder.name) / "strokes.nrrd", Geometry((0.02, 0.02, 0.1))
    >>> strokes = np.zeros((3, 8, 8), np.uint8); strokes[1, 3, 2:6] = 1; strokes[1, 0, :] = 2
    >>> write_labelmap(path, strokes, geometry)
    >>> bool(np.array_equal(read_scribbles(path, (3, 8, 8), geometry), strokes))
    True
    >>> folder.cleanup()
    """
    path = check_path(path)
    shape, geometry = _check_grid(shape, geometry)
    if not (path.is_file() or path.is_dir()):
        raise ScribbleSegError(f"{path}: no such file or folder")
    if is_segmentation_file(path):
        masks, own = read_segmentation(path)
        heart = _named_mask(masks, "heart", path, False) > 0
        background = _named_mask(masks, "background", path, False) > 0
        # A segment painted as strokes of another class was left out without a word.  Its name as the file spells
        # it (the header read again) only when there is one: not on every run's strokes.
        others = ([name for name in _segment_names(path, masks) if name.lower() not in ("heart", "background")]
                  if set(masks) - {"heart", "background"} else [])
        if others:
            logging.getLogger("ScribbleSegLib").warning(
                "%s: segment(s) %s are not strokes (only 'heart' and 'background' are) and are left out; to mark "
                "that tissue as not heart, paint it in 'background'", path, ", ".join(f"'{n}'" for n in others))
        array = heart.astype(np.uint8) + 2 * background.astype(np.uint8)
        both = heart & background
        array[both] = 0
        in_both = int(np.count_nonzero(both))
        overlapped = {name: mask.any() and not (mask & ~both).any()
                      for name, mask in (("heart", heart), ("background", background))}
        lost = {}
    else:
        overlapped, lost, in_both = {}, {}, 0
        values, own = _read_labelmap_file(path)
        # One pass over a stack-sized labelmap where its type allows (unsigned: only values above 2 are wrong).
        unexpected = values > 2 if values.dtype.kind == "u" else (values != 0) & (values != 1) & (values != 2)
        if unexpected.any():
            shown = ", ".join(f"{v:g}" for v in np.unique(values[unexpected])[:5])
            raise ScribbleSegError(
                f"{path}: scribble labelmap values must be 0 (none), 1 (heart) or 2 (background); found {shown}"
            )
        array = values.astype(np.uint8, copy=False)
        if own is None and int(downsample) > 1:
            drawn = {value: bool((array == value).any()) for value in (1, 2)}
            array = reduce_strokes(array, shape, downsample)
            lost = {name: drawn[value] and not (array == value).any() for value, name in ((1, "heart"),
                                                                                          (2, "background"))}
    array = _onto_grid(array, own, shape, geometry, path, finer_grids, reference, lost_ok=outside_dropped)
    if not both_classes:
        if not array.any():
            raise ScribbleSegError(f"{path}: the scribbles mark no voxel")
    else:
        _check_both_classes(array, path, overlapped, lost, downsample)
    if in_both:  # Slicer's "overwrite: none" keeps both segments there: say the strokes lost voxels
        logging.getLogger("ScribbleSegLib").warning(
            "%s: %d voxels are in both segments 'heart' and 'background' and count as not scribbled", path, in_both)
    return array


def _check_both_classes(array: np.ndarray, path: Path, overlapped: Dict[str, bool], lost: Dict[str, bool],
                        downsample: int) -> None:
    """Refuse scribbles without a heart or a background voxel, saying why when an overlap or a downsample
    took them."""
    from .checks import drawn_classes

    for name, drawn in zip(("heart", "background"), drawn_classes(array)):
        if not drawn:
            if overlapped.get(name):
                why = (f"every voxel of segment '{name}' is also in the other segment, and such voxels count as "
                       "not scribbled")
            elif lost.get(name):
                why = (f"its strokes were lost reducing it by downsample {int(downsample)}: a block that holds "
                       "both classes counts as not scribbled (draw them further apart, or use a smaller downsample)")
            else:
                # The network alone needs no strokes: say so to a user who has only one class to give.
                why = "scribble both heart and background (the network alone, method munet, needs no strokes)"
            raise ScribbleSegError(f"{path}: the scribbles have no {name} voxel; {why}")


def _check_grid(shape: Sequence[int], geometry: Geometry) -> Tuple[Tuple[int, int, int], Geometry]:
    """The target grid of :func:`read_label` / :func:`read_scribbles`, checked."""
    from .checks import check_shape

    shape = check_shape(shape, "shape")
    if not isinstance(geometry, Geometry):
        raise ScribbleSegError(f"geometry must be a Geometry, got {type(geometry).__name__}")
    return shape, geometry


#: :func:`_warn_cut_short`: a box face inside the reference across which a label marks at least this share of its
#: widest cross-section along that axis cuts through the target.  Slicer saves a segmentation cropped to what it
#: marks, so its faces in-plane touch the target only at its rim: a disk of radius 20 pixels marks 0.02 of its widest
#: row on its first, one of radius 5 pixels 0.09.
CUT_SHORT_SHARE = 0.5


def _warn_cut_short(array: np.ndarray, offset: Sequence[int], shape: Sequence[int], path: Path,
                    reference: str) -> None:
    """Warn of a label on a box of the reference's grid that ends inside the reference across the target
    (:data:`CUT_SHORT_SHARE`): a crop of the wrong size, whose target beyond the box is read as background."""
    faces = []
    for axis, (start, size, total) in enumerate(zip(offset, array.shape, shape)):
        if axis == 0 or size < 2:  # in-plane only: a target may begin and end abruptly from one section to the next
            continue
        counts = np.count_nonzero(np.moveaxis(array, axis, 0).reshape(size, -1), axis=1)
        widest = int(counts.max())
        for at, inside in ((0, start > 0), (size - 1, start + size < total)):
            if inside and widest and counts[at] >= CUT_SHORT_SHARE * widest:
                faces.append(f"{'the first' if at == 0 else 'the last'} {('row', 'column')[axis - 1]}")
    if faces:
        logging.getLogger("ScribbleSegLib").warning(
            "%s: covers %s voxels of the %s's %s and ends across what it marks (%s of its box): cut short? The "
            "%s's voxels beyond it are read as background", path, _size_text(array.shape), reference,
            _size_text(shape), " and ".join(faces), reference)


#: The volume formats whose 2D files state a grid (pixel size and origin) that :func:`_check_flat_grid` compares.
FLAT_GRID_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".nii", ".nii.gz")


def _check_flat_grid(path: Path, target: Geometry, reference: str) -> None:
    """Refuse a 2D file of a volume format whose stated pixel size or origin differs from the reference's in-plane
    grid: it is placed pixel for pixel, and strokes saved at twice the pixel size and 2 mm away were taken without
    a word (a 3D file so is refused).  A file or a reference that states no grid (1 mm pixels at 0) is not compared."""
    if path.is_dir() or not path.name.lower().endswith(FLAT_GRID_SUFFIXES) or states_no_grid(target):
        return
    info = _read_sitk(path, image_information_only=True)
    if info.GetDimension() != 2:
        return
    spacing, origin = tuple(info.GetSpacing()), tuple(info.GetOrigin())
    if spacing == (1.0, 1.0) and not any(origin):
        return
    pixel = min(target.spacing[:2])
    if np.allclose(spacing, target.spacing[:2], rtol=1e-3, atol=0) and \
            np.allclose(origin, target.origin[:2], rtol=0, atol=1e-3 * pixel):
        return
    raise ScribbleSegError(f"{path}: a 2D file on {spacing[0]:g} x {spacing[1]:g} mm pixels from ({origin[0]:g}, "
                           f"{origin[1]:g}) mm, the {reference} on {target.spacing[0]:g} x {target.spacing[1]:g} mm "
                           f"from ({target.origin[0]:g}, {target.origin[1]:g}) mm: drawn on another grid? Save it on "
                           f"the {reference}'s grid")


def _size_text(shape_zyx: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape_zyx[::-1])


def _origin_hint(own_shape: Sequence[int], own: Geometry, shape: Sequence[int], target: Geometry,
                 reference: str) -> str:
    """What to say when a file of the reference's size and voxels lies elsewhere: only its origin differs (strokes
    drawn on a 3D copy of a stack that is read here from a folder of sections, whose origin is 0), else ``""``."""
    if tuple(own_shape) != tuple(shape) or not np.allclose(own.spacing, target.spacing, rtol=1e-3, atol=0) \
            or not np.allclose(own.direction, target.direction, atol=1e-6):
        return ""
    moved = ", ".join(f"{b - a:.4g}" for a, b in zip(target.origin, own.origin))
    return (f"; it has the {reference}'s size and voxel size, but its origin lies ({moved}) mm from the "
            f"{reference}'s: was it drawn on another copy of the stack? (a folder of sections or a 2D file is "
            "read with its origin at 0)")


def _finer_label_hint(own: Geometry, target: Geometry, reference: str) -> str:
    """What to do with a label on a grid ``k`` times finer in-plane than the reference's (drawn on the stack before
    it was reduced), else ``""``: a label is not placed by centres, which would grow it."""
    factor = round(target.spacing[0] / own.spacing[0])
    if factor < 2 or not np.allclose(np.multiply(own.spacing, (factor, factor, 1)), target.spacing, rtol=1e-3, atol=0):
        return ""
    return (f" (it has {factor}x{factor} voxels in-plane to each of the {reference}'s: drawn on the stack at "
            f"{factor} times this resolution; give that stack read with downsample {factor}, which reduces the "
            f"label with it, or save the label on this {reference}'s grid)")


#: The note a label or strokes file that states no grid (:func:`states_no_grid`) of the reference's size gives
#: (arguments: the path, and the reference's name twice): it is read on the reference's voxels.
NO_GRID_NOTE = ("%s: states no voxel size (1 mm voxels at the origin, as a file saved without one holds) and has the "
                "%s's size: read on the %s's voxels")


def states_no_grid(geometry: Geometry) -> bool:
    """Whether ``geometry`` is what a file written without one states: 1 mm voxels, origin 0, axes as the array's.

    Examples
    --------
    >>> states_no_grid(Geometry((1.0, 1.0, 1.0))), states_no_grid(Geometry((0.02, 0.02, 0.04)))
    (True, False)
    """
    return (tuple(geometry.spacing) == (1.0, 1.0, 1.0) and not any(geometry.origin)
            and np.allclose(geometry.direction, np.eye(3).ravel()))


def _onto_grid(array: np.ndarray, own: Optional[Geometry], shape: Sequence[int], target: Geometry, path: Path,
               finer: bool, reference: str, downsample_hint: bool = False, lost_ok: bool = False) -> np.ndarray:
    """``array`` (on ``own``; None: a 2D file, on the target's grid) placed on the ``shape``/``target`` grid,
    or a one-line error (``downsample_hint``: as :func:`read_label` takes it).

    A box of the target's grid (a file cropped to what it marks, or padded with empty voxels) is placed as it
    is; with ``finer``, strokes on a finer grid mark the voxels that hold their centres
    (:mod:`ScribbleSegLib.grids`)."""
    shape = tuple(int(s) for s in shape)
    if own is None:
        if array.shape != shape:
            # A whole multiple of the reference's size.  Where the reference and this file are read with one
            # downsample (the image and its strokes), another downsample cannot match them: the file was drawn on
            # a larger image.  Only a reference read apart (a prediction) makes a downsample the answer.
            factor = array.shape[1] // shape[1] if shape[1] else 0
            hint = ""
            if _reduces_to(array.shape, shape, factor):
                hint = (f" ({factor} times its size in-plane: read it with downsample {factor})" if downsample_hint
                        else f" ({factor} times its size in-plane: drawn on, or saved from, an image {factor} times "
                             f"as large as the {reference} read here)")
            smaller = shape[1] // array.shape[1] if array.shape[1] else 0
            if not hint and not downsample_hint and _reduces_to(shape, array.shape, smaller):
                # Strokes drawn on a reduced copy of the image: the image read with that downsample matches them.
                hint = (f" (the {reference} is {smaller} times its size in-plane: drawn on a reduced copy? Read the "
                        f"{reference} with downsample {smaller})")
            if not hint and array.shape[0] == 1 < shape[0] and array.shape[1:] == shape[1:]:
                hint = (f" (one section for the {reference}'s {shape[0]}: give a volume, or a folder of one file per "
                        "section, blank where nothing is drawn)")
            if not hint and path.is_dir() and array.shape[1:] == shape[1:]:
                # Files for the stroked sections alone: the folder's files are numbered as the image's sections.
                hint = (f" (a folder holds one file per section of the {reference}: {shape[0]}, blank where "
                        f"nothing is drawn; it holds {array.shape[0]})")
            raise ScribbleSegError(f"{path}: has size {_size_text(array.shape)}, the {reference} "
                                   f"{_size_text(shape)}{hint}")
        _check_flat_grid(path, target, reference)
        return array
    if array.shape == shape and not target.mismatch(own, reference=reference):
        return array
    if array.shape == shape and states_no_grid(own):
        # A label or strokes array saved without a header's geometry (numpy through SimpleITK, many scripts) states
        # 1 mm voxels at the origin: of the image's size, it can only be on the image's voxels.
        logging.getLogger("ScribbleSegLib").info(NO_GRID_NOTE, path, reference, reference)
        return array
    if not grids.overlaps(target, shape, own, array.shape):
        raise ScribbleSegError(f"{path}: lies outside the {reference} (no voxel in common with its "
                               f"{_size_text(shape)} voxels){_origin_hint(array.shape, own, shape, target, reference)}")
    offset = grids.whole_voxel_offset(target, own)
    if offset is not None:
        placed, lost = grids.place(array, offset, shape)
        if not lost and not offset.any() and array.shape[1:] == shape[1:] and array.shape[0] != shape[0]:
            # The image's whole sections from its first, but another count of them: not a crop to what the strokes
            # mark (that would narrow the sections too) but a grid of another export of the stack, with a section
            # more or fewer, whose strokes then lie a section off past the difference.
            # A label shorter than the image leaves the sections past it as background (what training learns).
            rest = (f", and the {reference}'s sections {array.shape[0]}-{shape[0] - 1} past its last read as "
                    f"{'unstroked' if finer else 'background'}" if array.shape[0] < shape[0] else "")
            logging.getLogger("ScribbleSegLib").warning(
                "%s: has %d sections of the %s's size, the %s %d: placed from its first section%s; if it was drawn "
                "on another export of this stack (a section more or fewer), its %s lie off by as many sections",
                path, array.shape[0], reference, reference, shape[0], rest, "strokes" if finer else "marks")
        elif not finer and not lost:
            _warn_cut_short(array, offset, shape, path, reference)
    elif (finer and grids.finer_or_equal(target, own)) or grids.same_voxels_reordered(target, own):
        # (A label on the image's own voxels with an axis flipped or swapped is placed by centres too: exactly.)
        if array.shape == shape and not np.allclose(own.spacing, target.spacing, rtol=1e-3, atol=0):
            # A finer grid of the same size covers a smaller region: strokes drawn on this image whose header
            # lacks its spacing (read as 1 mm), or the other way round, would all crowd into a few voxels.
            # (With the spacing the same, only the direction differs: an axis flipped, say, and each stroke
            # voxel marks the image voxel at its centre.)
            sizes = [", ".join(f"{v:.4g}" for v in g.spacing) for g in (own, target)]
            raise ScribbleSegError(f"{path}: has the {reference}'s size ({_size_text(shape)}) but voxel size "
                                   f"({sizes[0]}) mm, the {reference} ({sizes[1]}) mm: one of the two files lacks "
                                   f"or misstates its spacing; give the {reference}'s voxel size (spacing)")
        if finer and states_no_grid(target) and not np.allclose(own.spacing, target.spacing, rtol=1e-3, atol=0):
            # An image that states no voxel size is read at 1 mm: a stack's strokes at 0.024 mm all fell into a
            # few pixels of a tile, which came out all heart.  Placing by position needs the image's real size.
            sizes = ", ".join(f"{v:.4g}" for v in own.spacing)
            raise ScribbleSegError(f"{path}: lies on a grid of ({sizes}) mm voxels, and the {reference} states no "
                                   f"voxel size (read at 1 mm): placed by position, the strokes would crowd into a "
                                   f"few of its voxels; give the {reference}'s voxel size (spacing), or draw the "
                                   f"strokes on the {reference} as read here")
        if not target.mismatch(Geometry(own.spacing, target.origin, own.direction), reference=reference):
            # The image's voxels, shifted by a part of one (a label so shifted is refused below): each stroke
            # voxel marks the image voxel that holds its centre, where a shift of a half is a guess either way.
            _, shift = grids.index_in(target, own)
            logging.getLogger("ScribbleSegLib").warning(
                "%s: lies off the %s's voxel grid by (%s) voxels; each of its voxels marks the %s voxel holding its "
                "centre", path, reference, ", ".join(f"{v:.3g}" for v in shift), reference)
        placed, lost = grids.strokes_by_centre(array, own, shape, target)
    else:
        difference = target.mismatch(Geometry(own.spacing, target.origin, own.direction), reference=reference)
        if not difference:  # the same spacing and direction, the origin between voxels
            _, shift = grids.index_in(target, own)
            difference = (f"is not on the {reference}'s voxel grid (origin shifted by "
                          f"({', '.join(f'{v:.3g}' for v in shift)}) voxels)")
            raise ScribbleSegError(f"{path}: {difference}")
        coarser = any(a > b * (1 + 1e-3) for a, b in zip(own.spacing, target.spacing))
        # The hint where the strokes' voxels are larger: with the spacing alike, a turned grid is the difference.
        hint = (" (strokes may be drawn on a finer grid, not a coarser one)" if coarser else "") if finer else \
            _finer_label_hint(own, target, reference)
        raise ScribbleSegError(f"{path}: does not match the {reference}: {difference}{hint}")
    if lost and lost_ok:
        logging.getLogger("ScribbleSegLib").info("%s: %d marked voxels lie outside the %s (%s voxels) and are left "
                                                 "out", path, lost, reference, _size_text(shape))
    elif lost:
        raise ScribbleSegError(f"{path}: has {lost} marked voxels outside the {reference} "
                               f"({_size_text(shape)} voxels)")
    return placed
