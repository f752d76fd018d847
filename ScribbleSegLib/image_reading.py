"""Reading images: a folder of 2D section files or a 3D file, as RGB volumes.

Images come from a folder of 2D section files (PNG/TIFF/JPEG, natural sort
order, spacing given by the user) or from any 3D file SimpleITK reads (NRRD,
NIfTI, MHA; RGB vector or scalar).  They are returned as ``(Z, Y, X, 3)``
uint8 RGB :class:`~ScribbleSegLib.geometry.Volume` objects: a transparency
laid over white, wider pixel types brought to 8 bits, the voxel size a TIFF
states in its description kept beside the grid.  What a file is (a section,
a segmentation) is told here too, for the label reader and the image reader
alike.  :mod:`ScribbleSegLib.volume_io` gathers this module's public
functions with those of :mod:`~ScribbleSegLib.label_reading` and
:mod:`~ScribbleSegLib.volume_writing`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from . import image_tags, scan_pixel
from .errors import ScribbleSegError
from .fileio import PathLike, check_path, mixed_case_nifti, native_stderr_held
from .geometry import UNKNOWN_PIXEL, Geometry, Volume
from .optical_density import is_grey
from .progress import CancelToken, ProgressCallback, check, report
SECTION_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
"""File name endings (case-insensitive) of section images in a folder."""


# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------


def list_section_files(folder: PathLike) -> List[Path]:
    """The section image files of ``folder`` in natural sort order.

    Files ending in ``.png``, ``.tif``, ``.tiff``, ``.jpg`` or ``.jpeg`` (any
    case) are listed; hidden files (names starting with ``.``) and sub-folders
    are skipped.  Natural order compares runs of digits as numbers, so
    ``s2.png`` comes before ``s10.png``.

    Raises
    ------
    ScribbleSegError
        If ``folder`` is not an existing folder, or holds two files of one name in two formats (``s1.png`` and
        ``s1.tif``: a folder exported again in another format), which would make each section two, two
        files whose names differ only in how a number is written (``s10.png`` and ``s010.png``), or a file
        without a number among numbered ones (``overview.png`` beside ``s1.png`` and ``s2.png``).

    Examples
    --------
    >>> folder = tempfile.TemporaryDirectory()
    >>> for name in ("s10.png", "s2.png", ".hidden.png", "notes.txt"):
    ...     _ = (Path(folder.name) / name).write_bytes(b"")
    >>> [p.name for p in list_section_files(folder.name)]
    ['s2.png', 's10.png']
    >>> folder.cleanup()
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ScribbleSegError(f"{folder}: is not a folder of section images")
    files = [
        p for p in folder.iterdir()
        if not p.name.startswith(".") and p.suffix.lower() in SECTION_SUFFIXES and p.is_file()
    ]
    keyed = sorted((_natural_key(p), p) for p in files)
    files = [p for _, p in keyed]
    seen: Dict[str, Path] = {}
    for p in files:
        other = seen.setdefault(p.stem.lower(), p)
        if other is not p:
            raise ScribbleSegError(f"{folder}: {other.name} and {p.name} are one section saved in two formats (a "
                                   "folder exported twice?); keep one format")
    for (key_a, a), (key_b, b) in zip(keyed, keyed[1:]):
        if key_a[0] == key_b[0]:
            # img_10 and img_010: the numbers cannot say which section comes first, and any order would be a guess.
            raise ScribbleSegError(f"{folder}: {a.name} and {b.name} give the same section number, so which comes "
                                   "first is not known (one section saved twice?); rename or remove one")
    numbered = [p for p in files if re.search(r"\d", p.stem)]
    unnumbered = [p.name for p in files if not re.search(r"\d", p.stem)]
    if len(numbered) >= 2 and unnumbered:
        # An overview or a stray export among s1.png, s2.png, ... was stacked first, and every section moved by one.
        raise ScribbleSegError(f"{folder}: {_first_of(unnumbered, 3)} {'has' if len(unnumbered) == 1 else 'have'} "
                               f"no section number, among files numbered as sections ({numbered[0].name}, "
                               f"{numbered[1].name}, ...); move {'it' if len(unnumbered) == 1 else 'them'} out of the "
                               "folder")
    return files


def _first_of(items: Sequence, shown: int) -> str:
    """The first ``shown`` of ``items``, comma-separated, and how many more there are.

    Examples
    --------
    >>> _first_of([4, 5, 9, 12], 3)
    '4, 5, 9 and 1 more'
    """
    return ", ".join(map(str, items[:shown])) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _name_numbers(files: Sequence[Path]) -> Optional[Tuple[List[List[str]], List[int]]]:
    """The files' names split at their digit runs (numbers at odd positions), and the positions of the numbers
    that differ between them; None for fewer than 3 files or names of different patterns."""
    parts = [re.split(r"(\d+)", Path(f).stem) for f in files]
    if len(parts) < 3 or len({len(p) for p in parts}) != 1:
        return None
    return parts, [i for i in range(1, len(parts[0]), 2) if len({int(p[i]) for p in parts}) > 1]


def missing_section_numbers(files: Sequence[Path]) -> List[int]:
    """The numbers a folder's section files skip, in their step: ``[]`` when the files' names do not differ in
    one number alone, that number runs without a gap, or it skips more numbers than there are files (then it
    is not a section's number: a date, a slide's identifier).

    The step is the smallest difference between consecutive numbers, so sections kept at every 5th number
    (0, 5, 10, ...) skip nothing.

    Examples
    --------
    >>> missing_section_numbers([Path(f"s{i}.png") for i in (1, 2, 3, 6, 7)])
    [4, 5]
    >>> missing_section_numbers([Path(f"cut_{i:03d}.tif") for i in (0, 5, 15)])
    [10]
    >>> missing_section_numbers([Path(f"scan_{d}.png") for d in (20240101, 20240315, 20250101)])
    []
    """
    split = _name_numbers(files)
    if split is None:
        return []
    parts, varying = split
    texts_alike = all(len({p[i].lower() for p in parts}) == 1 for i in range(0, len(parts[0]), 2))
    if len(varying) != 1 or not texts_alike:
        return []
    numbers = sorted(int(p[varying[0]]) for p in parts)
    step = min(b - a for a, b in zip(numbers, numbers[1:]))
    if step < 1 or (numbers[-1] - numbers[0]) // step + 1 - len(numbers) > len(numbers):
        return []
    return [n for a, b in zip(numbers, numbers[1:]) for n in range(a + step, b, step)]


def section_order_question(files: Sequence[Path]) -> Optional[str]:
    """Why the natural order of a folder's section files may not be the sections' order, or None.

    Files whose names differ in more than one number are ordered by the first that differs.  When their last
    varying number alone differs in every file (a section number given across the whole stack) and orders them
    otherwise, the names put a date, a slide or a batch first, and the first number may not be the sections'.
    Names whose last number starts again (``slide1_sec1`` ... ``slide2_sec1``) give no question.

    Examples
    --------
    >>> dated = [Path(f"emb_2024-05-{z % 3 + 1:02d}_sec{z}.png") for z in range(6)]
    >>> section_order_question(sorted(dated, key=_natural_key))
    'ordered by the first number that differs (emb_2024-05-01_sec0.png, emb_2024-05-01_sec3.png, ...); their \
last number alone differs in every file and would order them otherwise (sec0, sec1, sec2, ...)'
    >>> section_order_question([Path(f"slide{s}_sec{z}.png") for s in (1, 2) for z in (1, 2, 3)]) is None
    True
    """
    split = _name_numbers(files)
    if split is None:
        return None
    parts, varying = split
    if len(varying) < 2:
        return None
    last = [int(p[varying[-1]]) for p in parts]
    if len(set(last)) != len(last) or last == sorted(last):
        return None
    named = ", ".join(Path(f).name for f in files[:2])
    shown = np.argsort(last, kind="stable")[:3]
    by_last = [parts[i][varying[-1] - 1].lstrip("_-. ") + str(last[i]) for i in shown]
    return (f"ordered by the first number that differs ({named}, ...); their last number alone differs in every file "
            f"and would order them otherwise ({', '.join(by_last)}, ...)")


def _natural_key(path: Path) -> Tuple:
    # The name without its extension: in "z1.png" against "z1.5.png" the extension's dot came after "z1" and
    # sorted "z1.5" first.
    parts = re.split(r"(\d+)", path.stem)
    # Even positions are text, odd positions digit runs, so the tuples always compare like with like.
    key = tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts))
    return key, path.suffix.lower(), path.name


def read_image(
    path: PathLike,
    spacing: Optional[Sequence[float]] = None,
    downsample: int = 1,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> Volume:
    """Read an RGB volume from a folder of sections or a 3D image file.

    Parameters
    ----------
    path : str or Path
        A folder of section images (see :func:`list_section_files`), all of
        the same size, a 3D file SimpleITK reads (NRRD, NIfTI, MHA, ...), or a
        2D image file, read as a one-section volume (a tile).
    spacing : sequence of 3 float, optional
        Voxel size ``(x, y, z)`` in mm.  Required for a folder and a 2D file
        (sections carry no usable spacing); for a 3D file it overrides the file's spacing and
        keeps its origin and direction.  Given at full resolution.
    downsample : int
        In-plane (x and y) reduction factor.  Each output pixel is the mean of
        a ``downsample`` x ``downsample`` block, rounded to the nearest
        integer (halves up); rows and columns that do not fill a whole block
        are cropped at the far edge.  The geometry follows
        :meth:`Geometry.scaled <ScribbleSegLib.geometry.Geometry.scaled>`.
    progress, cancel
        Progress callback (stage ``"read"``, one report per section) and
        cancel token, see :mod:`ScribbleSegLib.progress`.

    Returns
    -------
    Volume
        ``array`` is ``(Z, Y, X, 3)`` uint8 RGB.  Grey images are replicated
        to the three channels; an 8-bit alpha channel is applied over white
        (transparent glass reads as white glass), a wider one dropped.  Pixel types other
        than 8-bit unsigned are mapped linearly to 0..255: 16-bit (or 10-, 12-,
        14-bit) images from the full scale of their bit depth, signed ones
        without a negative value too, float images within [0, 1] from that
        range (1 is white); other float or signed images from their darkest to
        their brightest value (for a folder, over all sections, found in a
        first pass).  NaN and -inf read as the darkest value, +inf as the
        brightest, with a warning.

    Raises
    ------
    ScribbleSegError
        With one line naming the file: missing path, empty folder, sections of
        different sizes or pixel types, unreadable or truncated file, a file
        of other than 2 or 3 dimensions, missing or non-positive spacing, a
        ``downsample`` that is not a positive integer or exceeds the section.

    Notes
    -----
    A folder is read section by section into a preallocated output, so peak
    memory is about the output plus one full-resolution section: a stack
    larger than memory can be read at a reduced ``downsample``.  A 3D file is
    read whole by SimpleITK, then converted plane by plane.

    Examples
    --------
    >>> from ScribbleSegLib.volume_io import write_rgb_volume
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = Path(folder.name) / "image.nrrd"
    >>> write_rgb_volume(path, Volume(np.full((3, 8, 8, 3), 200, np.uint8), Geometry((0.02, 0.02, 0.1))))
    >>> image = read_image(path)
    >>> image.shape, image.geometry.spacing
    ((3, 8, 8), (0.02, 0.02, 0.1))
    >>> folder.cleanup()
    """
    path = check_path(path)
    factor = _check_downsample(downsample, path)
    if path.is_dir():
        if spacing is None:
            raise ScribbleSegError(f"{path}: a folder of sections needs the voxel spacing X Y Z in mm (spacing)"
                                   + _stated_spacing_hint(path))
        return _read_folder(path, _check_spacing(spacing, path), factor, progress, cancel)
    if not path.exists():
        raise ScribbleSegError(f"{path}: no such file or folder")
    if path.is_file() and is_segmentation_file(path):
        # It reads as a volume of small numbers, and the network would segment its segments without a word.
        raise ScribbleSegError(f"{path}: is a segmentation (segments, not stained sections); give the image it "
                               "was drawn on")
    return _read_volume_file(path, None if spacing is None else _check_spacing(spacing, path), factor,
                             progress, cancel)


#: A scan whose voxels hold at most this many colours is no stain (:func:`check_not_blank`): a blank scan, or a
#: labelmap or mask given as the image.  Stained tissue holds thousands.
MAX_BLANK_COLOURS = 3


def _colour_codes(block: np.ndarray) -> np.ndarray:
    """One integer per voxel of a ``(..., 3)`` uint8 block: its colour."""
    block = block.reshape(-1, block.shape[-1]).astype(np.uint32)
    return (block[:, 0] << 16) | (block[:, 1] << 8) | block[:, 2]


def check_not_blank(volume: Volume, path: PathLike, instead: str = "the image the strokes were drawn on") -> Volume:
    """``volume`` as it is, or a one-line error naming ``path`` if its voxels hold no more than
    :data:`MAX_BLANK_COLOURS` colours; a labelmap's error asks for ``instead``.

    A white, black or grey scan holds no tissue, nor does a labelmap given as the image; the network would still
    call some of it heart, and a run would end as if it had found one.

    Examples
    --------
    >>> check_not_blank(Volume(np.full((1, 4, 4, 3), 255, np.uint8), Geometry((1.0, 1.0, 1.0))), "white.png")
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: white.png: every voxel has the same colour (255, 255, 255): there is no \
tissue to segment (an empty or blank scan?)
    """
    array = volume.array
    # A strided look decides almost every real stack at once; only a look with few colours reads the whole volume.
    sample = array[::max(1, array.shape[0] // 8), ::7, ::7]
    if len(np.unique(_colour_codes(sample))) > MAX_BLANK_COLOURS:
        return volume
    seen: set = set()
    flat = array.reshape(-1, array.shape[-1])
    for start in range(0, len(flat), 1 << 22):  # in blocks: no full-size copy
        seen.update(np.unique(_colour_codes(flat[start:start + (1 << 22)])).tolist())
        if len(seen) > MAX_BLANK_COLOURS:
            return volume
    if len(seen) == 1:
        colour = ", ".join(str(int(v)) for v in flat[0])
        raise ScribbleSegError(f"{path}: every voxel has the same colour ({colour}): there is no tissue to segment "
                               "(an empty or blank scan?)")
    greys = sorted(code & 255 for code in seen if code >> 16 == (code >> 8) & 255 == code & 255)
    shown = (f"the grey values {', '.join(map(str, greys))}" if len(greys) == len(seen)
             else f"{len(seen)} colours")
    raise ScribbleSegError(f"{path}: every voxel holds one of {shown}: a labelmap or a mask, not stained sections "
                           f"(give {instead})")


def _check_spacing(spacing: Sequence[float], path: Path) -> Tuple[float, float, float]:
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ScribbleSegError(f"{path}: spacing must be three positive numbers X Y Z in mm, got {spacing!r}")
    return values


def _check_downsample(downsample: int, path: Path) -> int:
    try:
        whole = not isinstance(downsample, bool) and int(downsample) == downsample >= 1
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise ScribbleSegError(f"{path}: downsample must be a positive integer, got {downsample!r}")
    return int(downsample)


def _read_sitk(path: Path, image_information_only: bool = False, name_orientation: bool = True):
    """Read ``path`` with SimpleITK, turning its exceptions into one-line errors.

    A TIFF that is one image with smaller copies of it (a slide scanner's pyramid, an image with its thumbnail)
    is read as its first page, with a note; a TIFF stack with a page of another size is refused, naming the page.
    A JPEG's EXIF orientation is named in a warning (unless ``name_orientation`` is False: a folder names its
    sections' once), not applied (:mod:`image_tags`); so is a TIFF's orientation tag where ITK applies it in part.
    """
    if not path.is_file():
        raise ScribbleSegError(f"{path}: no such file")
    log = logging.getLogger("ScribbleSegLib")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        _check_jpeg_complete(path)
        turned = image_tags.jpeg_orientation(path) if name_orientation else None
        if turned in image_tags.ORIENTATIONS and not image_information_only:
            log.warning("%s: its EXIF orientation has photo viewers show it %s; it is read as stored, as 3D Slicer "
                        "reads it, so strokes and labels must be drawn on it as stored", path,
                        image_tags.ORIENTATIONS[turned])
    pages = _tiff_pages(path)
    if pages is not None and name_orientation and not image_information_only:
        _name_tiff_orientation(path, pages[0].orientation)
    if pages is not None and not image_tags.is_one_stack(pages):
        if not image_tags.is_one_image(pages):
            # Sections of one stack with a page of another size (a cropped section, a thumbnail among them):
            # read as a stack it would hold garbage, read as its first page it would lose the stack.
            (width, height), odd = image_tags.odd_pages(pages)
            named = _first_of(odd, 3)
            raise ScribbleSegError(f"{path}: a TIFF stack of {len(pages)} pages whose page{'s' * (len(odd) > 1)} "
                                   f"{named} differ{'s' * (len(odd) == 1)} from the others' {width}x{height} (another "
                                   "size, or a reduced-resolution copy); save the sections at one size, without "
                                   "thumbnails")
        # Before the copy: a whole-slide scan's first page can be far larger than the memory.
        _require_memory(4 * pages[0].width * pages[0].height, path, f"its first page ({pages[0].width}x"
                        f"{pages[0].height})")
        if not image_information_only:
            log.info("%s: a TIFF of %d pages of different sizes (a slide's pyramid or an image with its thumbnail): "
                     "reading its first page, %dx%d, alone", path, len(pages), pages[0].width, pages[0].height)
        with _first_page_file(path) as first:
            return _read_with_sitk(first, path, image_information_only)
    odd = image_tags.odd_pixel_pages(pages) if pages is not None else []
    if odd:
        samples, bits, _ = pages[0].pixel
        named = _first_of(odd, 3)
        plural = len(odd) > 1
        raise ScribbleSegError(f"{path}: a TIFF stack whose page{'s' * plural} {named} hold{'' if plural else 's'} "
                               f"another pixel format than its first page's ({samples} x {bits}-bit samples): it "
                               "would be read as the first page's format; save the sections in one format")
    return _read_with_sitk(path, path, image_information_only)


def _tiff_pages(path: Path) -> Optional[List[image_tags.Page]]:
    """:func:`image_tags.tiff_pages` of a file that may be a TIFF (any suffix, an ``.svs`` say); None without a look
    for the formats that never are."""
    return None if path.suffix.lower() in (".nrrd", ".nhdr", ".mha", ".mhd") else image_tags.tiff_pages(path)


@contextlib.contextmanager
def _first_page_file(path: Path) -> Iterator[Path]:
    """A temporary copy of a TIFF whose page chain ends at its first page (``image_tags.first_page_link``), made
    on disk without holding the file in memory, and removed after."""
    import shutil

    link = image_tags.first_page_link(path)
    if link is None:  # tiff_pages read the same chain: the file changed in between
        raise ScribbleSegError(f"{path}: cannot be read as an image (its TIFF pages changed while it was read)")
    # The whole file is copied (the first page's strips may lie anywhere in it): a slide can be gigabytes.
    folder = tempfile.gettempdir()
    size, free = path.stat().st_size, shutil.disk_usage(folder).free
    if size > free:
        raise ScribbleSegError(f"{path}: reading its first page alone needs a {size / 2 ** 30:.2f} GiB copy in the "
                               f"temporary folder {folder}, which has {free / 2 ** 30:.2f} GiB free (set TMPDIR to "
                               "a folder with room)")
    handle, name = tempfile.mkstemp(suffix=".tif", prefix="scribbleseg-page-")
    try:
        try:
            with os.fdopen(handle, "r+b") as f, open(path, "rb") as source:
                shutil.copyfileobj(source, f, 1 << 20)
                f.seek(link[0])
                f.write(bytes(link[1]))
        except OSError as exc:  # the temporary folder full, say: the input is what the user knows
            raise ScribbleSegError(f"{path}: cannot copy its first page to a temporary file ({exc.strerror or exc})"
                                   ) from None
        yield Path(name)
    finally:
        os.unlink(name)


#: ITK's reader for each extension, given to it where the file's extension is not in lower case: ITK picks its
#: readers by extension in lower case only, and refused ``VOL.MHA`` as an unsupported format.
SITK_READERS = {".mha": "MetaImageIO", ".mhd": "MetaImageIO", ".nii": "NiftiImageIO", ".nii.gz": "NiftiImageIO",
                ".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO", ".png": "PNGImageIO", ".jpg": "JPEGImageIO",
                ".jpeg": "JPEGImageIO", ".tif": "TIFFImageIO", ".tiff": "TIFFImageIO", ".bmp": "BMPImageIO"}


def _reader_for_case(file: Path) -> Optional[str]:
    """The ITK reader to name for a file whose extension has capitals (:data:`SITK_READERS`), else None."""
    name = file.name
    for suffix, reader in SITK_READERS.items():
        if name.lower().endswith(suffix) and not name.endswith(suffix) and len(name) > len(suffix):
            return reader
    return None


def _read_with_sitk(file: Path, path: Path, image_information_only: bool):
    """Read ``file`` (``path`` itself or a copy of its first page) with SimpleITK; errors name ``path``."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(file))
    nifti = mixed_case_nifti(file.name)
    if nifti is not None:
        raise ScribbleSegError(f"{path}: the NIfTI reader refuses an extension in mixed case; rename it to {nifti}")
    named = _reader_for_case(file)
    if named is not None:
        reader.SetImageIO(named)
    try:
        # A reader complains on stderr about the file it reads (libtiff's "Bogus StripByteCounts", "TIFFFillStrip:
        # Read error ..."): read anyway, or reported in our one line, and theirs would be stray lines around it.
        with native_stderr_held(keep=False):
            if image_information_only:
                reader.ReadImageInformation()
                return reader
            return reader.Execute()
    except RuntimeError as exc:
        if image_tags.png_colour_type(file) == image_tags.PNG_GREY_ALPHA:
            # GIMP and labelling tools save masks and stroke layers with transparency so.
            return _read_grey_alpha_png(file, path, image_information_only)
        spacing = _refused_spacing(str(exc))
        if spacing is not None:
            # Told "damaged or truncated", a user looked for the fault in the data; a given spacing cannot help,
            # as the reader refuses the file before one could replace its own.
            raise ScribbleSegError(f"{path}: its header states a voxel spacing of {spacing}, which the image reader "
                                   "refuses (a spacing must be above 0); correct the spacing in the file's header "
                                   "and save it again") from None
        misnamed = image_tags.misnamed_format(file)
        if misnamed is not None:  # "damaged" sent the user looking for a fault in a good file
            raise ScribbleSegError(f"{path}: holds a {misnamed[0]} image, but its name's extension says otherwise, and "
                                   f"the reader goes by the name; rename it to end in {misnamed[1]}") from None
        raise ScribbleSegError(
            f"{path}: cannot be read as an image (unsupported format, damaged or truncated file)"
        ) from None


def _refused_spacing(message: str) -> Optional[str]:
    """The spacing an ITK reader's error names as the reason it refused a file's header, or None.

    Examples
    --------
    >>> _refused_spacing("ITK ERROR: ... Refusing to change spacing from [1, 1, 1] to [0.024, 0.024, 0]")
    '(0.024, 0.024, 0)'
    >>> _refused_spacing("[nrrd] _nrrdFieldCheck_spacings: axis 1 spacing (0) invalid"), _refused_spacing("other")
    ('0 on axis 1', None)
    """
    found = re.search(r"Refusing to change spacing from \[[^\]]*\] to \[([^\]]*)\]", message)
    if found:
        return f"({found.group(1)})"
    found = re.search(r"axis (\d+) spacing \(([^)]*)\) invalid", message)
    return f"{found.group(2)} on axis {found.group(1)}" if found else None


def _read_grey_alpha_png(file: Path, path: Path, image_information_only: bool):
    """A grey PNG with an alpha channel, which ITK cannot read, through a temporary copy that it can
    (:func:`image_tags.grey_alpha_as_readable_png`): a 2-component image, grey and alpha, of the file's bit depth
    and pixel size (only the reader of the copy for ``image_information_only``: its size and pixel size)."""
    readable = image_tags.grey_alpha_as_readable_png(file)
    if readable is None:
        raise ScribbleSegError(f"{path}: cannot be read as an image (a grey PNG with an alpha channel, damaged or "
                               "truncated)")
    handle, name = tempfile.mkstemp(suffix=".png", prefix="scribbleseg-grey-alpha-")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(readable)
        copy = _read_with_sitk(Path(name), path, image_information_only)
    finally:
        os.unlink(name)
    if image_information_only:
        return copy
    packed = sitk.GetArrayViewFromImage(copy)
    if packed.dtype == np.uint16:  # 8-bit grey-alpha read as 16-bit grey: 256 grey + alpha
        pixels = np.stack([packed >> 8, packed & 0xFF], axis=-1).astype(np.uint8)
    else:  # 16-bit grey-alpha read as 8-bit RGBA: the grey's two bytes, then the alpha's
        wide = packed.astype(np.uint16)
        pixels = np.stack([(wide[..., 0] << 8) | wide[..., 1], (wide[..., 2] << 8) | wide[..., 3]], axis=-1)
    image = sitk.GetImageFromArray(pixels, isVector=True)
    image.CopyInformation(copy)
    return image


def _check_jpeg_complete(path: Path) -> None:
    # libjpeg only warns about a truncated file and fills the rest with grey, so look for the end marker.
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 4096))
        tail = f.read()
    if b"\xff\xd9" not in tail:
        raise ScribbleSegError(f"{path}: truncated JPEG file (no end-of-image marker)")


def _channel_view(plane: np.ndarray, components: int, path: Path) -> np.ndarray:
    """``(Y, X, 1)`` grey or ``(Y, X, 3)`` RGB view of a plane with 1-4 components; an 8-bit plane keeps its
    alpha as a last channel (``(Y, X, 2)`` or ``(Y, X, 4)``) for :func:`_over_white`, a wider one is shown on
    white here (:func:`_wide_over_white`)."""
    if components == 1:
        return plane[..., None]
    if components in (2, 4):  # grey + alpha, RGBA
        _check_alpha(plane[..., -1], components, path)
        return plane if plane.dtype == np.uint8 else _wide_over_white(plane)
    if components == 3:
        return plane
    hint = ""
    if plane.ndim == 4 and plane.shape[0] in (3, 4):
        # numpy's (3, Z, Y, X), channels first, written as vectors of its last axis: 3 "sections" of 160 components.
        hint = (f" (an array of ({plane.shape[0]}, Z, Y, X), its colour channels first, written as vectors of its "
                "last axis? Save it with the channels last, (Z, Y, X, 3), as an RGB image)")
    raise ScribbleSegError(f"{path}: has {components} components per pixel; expected grey, RGB or RGBA{hint}")


def _check_alpha(alpha: np.ndarray, components: int, path: Path) -> None:
    """Refuse a last component that is no transparency: more than half of its pixels partly transparent.

    An image of 2 or 4 components is read as grey or RGB with alpha.  A real alpha is opaque over the tissue and
    transparent, or the same throughout, around it; two colour channels saved as 2 components (R and G of a
    scan) were read as grey and alpha without a word, and the result called 63 % of the volume heart.

    Examples
    --------
    >>> _check_alpha(np.array([[0, 255, 255, 128]], np.uint8), 2, Path("edge.nrrd"))  # one pixel partly
    >>> _check_alpha(np.array([[30, 90, 200, 140]], np.uint8), 2, Path("rg.nrrd"))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: rg.nrrd: has 2 components per pixel, read as grey and alpha, but the \
last is no transparency (4 of its 4 pixels are partly transparent); save the image as RGB or grey
    """
    if alpha.size == 0 or alpha.min() == alpha.max():
        return
    scale = _value_range(alpha)
    if scale is None:
        return
    # Section by section: a 3D file's alpha is the whole stack, whose masks would be stacks of bytes.
    sections = alpha if alpha.ndim == 3 else alpha[None]
    partly = sum(int(np.count_nonzero((section > 0) & (section < scale[1]))) for section in sections)
    if 2 * partly > alpha.size:
        colours = "grey" if components == 2 else "RGB"
        raise ScribbleSegError(f"{path}: has {components} components per pixel, read as {colours} and alpha, but the "
                               f"last is no transparency ({partly} of its {alpha.size} pixels are partly "
                               "transparent); save the image as RGB or grey")


def _over_white(plane: np.ndarray) -> np.ndarray:
    """An 8-bit ``(Y, X, C + 1)`` plane with alpha, as it shows on white: ``(Y, X, C)`` uint8.

    Registration and slide software export sections with the glass around them transparent, often black
    beneath: read as it is stored, that glass would be black.  A plane that is transparent throughout says
    nothing with its alpha (a writer that left it at 0), and is read as stored.

    Examples
    --------
    >>> _over_white(np.array([[[0, 0, 0, 0], [200, 100, 50, 255], [0, 0, 0, 128]]], np.uint8)).tolist()
    [[[255, 255, 255], [200, 100, 50], [127, 127, 127]]]
    """
    colour, alpha = plane[..., :-1], plane[..., -1:]
    if alpha.min() == 255 or alpha.max() == 0:
        return colour
    a = alpha.astype(np.uint16)
    return ((colour * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def _wide_over_white(plane: np.ndarray) -> np.ndarray:
    """A plane with alpha wider than 8 bits (``(..., C + 1)``, a 16-bit RGBA export, say), as it shows on white, in
    its own type: ``(..., C)``.  White and opaque are the full scale of the colours' and the alpha's bit depth
    (:func:`_value_range`); as in :func:`_over_white`, an alpha opaque or transparent throughout is read as stored.
    Section by section, so that a stack's float copy is one section's.

    Examples
    --------
    >>> rgba = np.array([[[10000, 20000, 40000, 65535], [0, 0, 0, 0], [0, 0, 0, 32768]]], np.uint16)
    >>> _wide_over_white(rgba).tolist()
    [[[10000, 20000, 40000], [65535, 65535, 65535], [32767, 32767, 32767]]]
    """
    colour, alpha = plane[..., :-1], plane[..., -1:]
    opaque = _value_range(alpha)
    if opaque is None or alpha.min() >= opaque[1] or alpha.max() <= 0:
        return colour
    white = np.float32(_value_range(colour)[1])
    out = np.empty(colour.shape, colour.dtype)
    for index in np.ndindex(colour.shape[:-3]):  # each section of a stack
        a = alpha[index].astype(np.float32) / np.float32(opaque[1])
        shown = colour[index] * a + white * (1 - a)
        out[index] = np.rint(shown) if out.dtype.kind in "ui" else shown
    return out


def _check_pixel_type(array: np.ndarray, path: Path) -> None:
    if array.dtype.kind not in "uif":
        raise ScribbleSegError(f"{path}: pixel type {array.dtype} is not supported; expected integer or float")


#: Bit depths a scanner or camera stores in unsigned integers wider than 8 bits: the full scale of the smallest
#: that holds an image's largest value is what it maps to 0..255 (:func:`_value_range`).
BIT_DEPTHS = (8, 10, 12, 14, 16, 32)


def _value_range(array: np.ndarray, path: Optional[Path] = None) -> Optional[Tuple[float, float]]:
    """The values of ``array`` that map to 0 and 255 (None if it has no finite value).

    Unsigned integers map from 0 to the full scale of their bit depth (:data:`BIT_DEPTHS`: 12-bit data stored in
    16 bits maps from 0..4095): a brightfield scan's light is an absolute quantity, and stretching its darkest
    value to black changed the optical densities the stain normalization reads (a 16-bit stack scored 0.801
    against 0.818 for the same stack in 8 bits).  So do signed integers without a negative value, and floats
    within [0, 1] map from that range (an image saved as ``im2double`` or ``img_as_float`` does, 1 for white),
    floats within [0, 255] from 0..255 (8-bit values converted to float unscaled: stretched, a scan whose darkest
    value was 35 read it as black).
    Other signed integers and floats, whose scale is not known, map from their finite minimum and maximum; a
    float ``array`` of ``path`` with NaN or infinite values gets one warning (they are read as the range's ends:
    NaN and -inf as the darkest, +inf as the brightest).

    Examples
    --------
    >>> _value_range(np.array([0, 4000], np.uint16)), _value_range(np.array([5, 60000], np.uint16))
    ((0.0, 4095.0), (0.0, 65535.0))
    >>> _value_range(np.array([0.12, 0.9], np.float32)), _value_range(np.array([-3, 7], np.int16))
    ((0.0, 1.0), (-3.0, 7.0))
    >>> _value_range(np.array([35.0, 240.0])), _value_range(np.array([35.0, 4000.0]))
    ((0.0, 255.0), (35.0, 4000.0))
    """
    if array.dtype.kind in "ui" and (array.dtype.kind == "u" or not array.size or int(array.min()) >= 0):
        top = int(array.max()) if array.size else 0
        bits = next((b for b in BIT_DEPTHS if top < 2 ** b), 8 * array.dtype.itemsize)
        return 0.0, float(2 ** bits - 1)
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.any():
            return None
        bad = int(finite.size - np.count_nonzero(finite))
        if bad and path is not None:
            logging.getLogger("ScribbleSegLib").warning(
                "%s: %d NaN or infinite values, read as the darkest (NaN, -inf) or brightest (+inf) value", path, bad)
        low, high = float(array[finite].min()), float(array[finite].max())
        if 0.0 <= low and high <= 1.0:
            return 0.0, 1.0
        return (0.0, 255.0) if 0.0 <= low and high <= 255.0 else (low, high)
    return float(array.min()), float(array.max())


def _block_mean(plane: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor`` x ``factor`` blocks of a ``(Y, X, C)`` plane, the remainder cropped.

    uint8 input gives uint8 means rounded to nearest (halves up); other input gives float64.
    """
    y = plane.shape[0] // factor * factor
    x = plane.shape[1] // factor * factor
    if plane.dtype == np.uint8:
        accumulator = np.uint16 if factor * factor * 255 <= np.iinfo(np.uint16).max else np.uint32
    else:
        accumulator = np.float64
    # Whole rows first, then columns of the row sums: contiguous adds, several times faster
    # than one reduction over a strided 5-D view of the section.
    rows = plane[0:y:factor, :x].astype(accumulator)
    for i in range(1, factor):
        rows += plane[i:y:factor, :x]
    blocks = rows[:, 0::factor].copy()
    for j in range(1, factor):
        blocks += rows[:, j::factor]
    count = factor * factor
    if plane.dtype == np.uint8:
        return ((blocks + count // 2) // count).astype(np.uint8)
    return blocks / count


def _to_rgb8(plane: np.ndarray, factor: int, value_range: Optional[Tuple[float, float]]) -> np.ndarray:
    """``(Y, X, C)`` plane (C = 1 or 3) -> ``(Y // f, X // f, 3)`` uint8, block-averaged and rescaled.

    ``value_range`` is None for uint8 input, else the ``(min, max)`` mapped to 0 and 255.
    """
    if plane.shape[2] in (2, 4):  # with its alpha (8-bit only, _channel_view)
        plane = _over_white(plane)
    if factor > 1:
        plane = _block_mean(plane, factor)
    if value_range is None:
        out = plane
    else:
        lo, hi = value_range
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        scaled = (np.asarray(plane, dtype=np.float32) - np.float32(lo)) * np.float32(scale)
        out = np.clip(np.rint(np.nan_to_num(scaled, nan=0.0)), 0, 255).astype(np.uint8)
    if out.shape[2] == 1:
        out = np.broadcast_to(out, out.shape[:2] + (3,))
    return out


def _read_folder(folder: Path, spacing: Tuple[float, float, float], factor: int,
                 progress: Optional[ProgressCallback], cancel: Optional[CancelToken]) -> Volume:
    files = list_section_files(folder)
    if not files:
        raise ScribbleSegError(
            f"{folder}: contains no section images ({', '.join(s.lstrip('.') for s in SECTION_SUFFIXES)})"
        )
    image, plane = _read_section(files[0])
    (height, width), dtype = plane.shape[:2], plane.dtype
    del image, plane
    _name_orientations(folder, files)
    question = section_order_question(files)
    if question:
        # Names with a date first (Embryo3_2024-05-02_sec7.png): sorted by the date, the sections were shuffled
        # without a word.
        logging.getLogger("ScribbleSegLib").warning(
            "%s: the section files are %s; if that number is the section's, rename the files so that it comes first",
            folder, question)
    missing = missing_section_numbers(files)
    if missing:
        # Labs leave out damaged sections; stacked evenly, the rest close up and the organ comes out shorter.
        shown = _first_of(missing, 5)
        logging.getLogger("ScribbleSegLib").warning(
            "%s: the section numbers skip %s (of %s to %s); the %d sections are stacked %g mm apart with no gap "
            "there, so the stack is shorter than the tissue was", folder, shown, files[0].name, files[-1].name,
            len(files), spacing[2])
    out_y, out_x = height // factor, width // factor
    if out_y == 0 or out_x == 0:
        raise ScribbleSegError(f"{folder}: downsample {factor} is larger than the sections ({width}x{height})")

    value_range = None
    if dtype != np.uint8:
        value_range = _folder_value_range(files, (height, width), dtype, progress, cancel)
        progress_start = 0.5
    else:
        progress_start = 0.0

    # The output plus one full-resolution section (decoded, and converted to float when not uint8).
    _require_memory(len(files) * out_y * out_x * 3 + height * width * 3 * (1 if dtype == np.uint8 else 9),
                    folder, f"{len(files)} sections of {width}x{height}")
    out = np.empty((len(files), out_y, out_x, 3), dtype=np.uint8)
    grey = []
    for k, file in enumerate(files):
        check(cancel)
        image, plane = _read_section(file)
        _check_section(file, plane, files[0], (height, width), dtype)
        components = image.GetNumberOfComponentsPerPixel()
        out[k] = _to_rgb8(_channel_view(plane, components, file), factor, value_range)
        if components <= 2 or _grey_content(out[k]):
            grey.append(file.name)
        del image, plane
        report(progress, "read", progress_start + (1.0 - progress_start) * (k + 1) / len(files),
               f"section {k + 1}/{len(files)}")
    if grey and len(grey) < len(files):
        # A stained stack scanned in colour with a few grey images among it: a mask saved beside the sections,
        # or a scan in another mode. Each is read as grey tissue, which the network has never seen.
        shown = _first_of(grey, 3)
        logging.getLogger("ScribbleSegLib").warning(
            "%s: %d of %d sections are grey, the others in colour (%s): are they sections of this stack?",
            folder, len(grey), len(files), shown)
    geometry = Geometry(spacing)
    if factor > 1:
        geometry = geometry.scaled((factor, factor, 1))
    return Volume(out, geometry)


def _grey_content(section: np.ndarray) -> bool:
    """Whether an RGB section (Y, X, 3) uint8 shows grey tissue: a grey scan saved in colour.

    Its pixels darker than glass and lighter than black fill (a strided sample) are grey
    (:func:`~ScribbleSegLib.optical_density.is_grey`); a section of glass alone is not.
    """
    sample = section[::4, ::4].reshape(-1, 3)
    level = sample.mean(axis=1)
    tissue = sample[(level < 220) & (level > 10)]
    return len(tissue) >= 64 and is_grey(tissue)


def _tiff_turn(path: Path) -> int:
    """The orientation tag (5-8) of a TIFF section that ITK reads otherwise than viewers show it; 1 for any other
    file."""
    pages = _tiff_pages(path) if path.suffix.lower() in (".tif", ".tiff") else None
    return pages[0].orientation if pages and pages[0].orientation in image_tags.ITK_TIFF_READS else 1


def _name_tiff_orientation(path: Path, orientation: int) -> None:
    """A warning for a TIFF whose orientation tag turns it by 90°: ITK, and so 3D Slicer, flips it without the
    turn, so strokes drawn in a viewer that turns it would not lie on it."""
    if orientation in image_tags.ITK_TIFF_READS:
        logging.getLogger("ScribbleSegLib").warning(
            "%s: its TIFF orientation tag has viewers show it %s; 3D Slicer (ITK) reads it %s, and so is it read "
            "here, so strokes and labels must be drawn on it as 3D Slicer shows it", path,
            image_tags.ORIENTATIONS[orientation], image_tags.ITK_TIFF_READS[orientation])


def _name_orientations(folder: Path, files: List[Path]) -> None:
    """One warning for the JPEG sections of a folder that state an EXIF orientation (each file would say it once,
    a phone's photos every one of them), and one for its TIFF sections whose orientation tag ITK reads in part."""
    turned = [(f, image_tags.jpeg_orientation(f)) for f in files if f.suffix.lower() in (".jpg", ".jpeg")]
    turned = [(f, o) for f, o in turned if o in image_tags.ORIENTATIONS]
    if turned:
        logging.getLogger("ScribbleSegLib").warning(
            "%s: %d of %d sections state an EXIF orientation (%s: photo viewers show it %s); they are read as "
            "stored, as 3D Slicer reads them, so strokes and labels must be drawn on them as stored", folder,
            len(turned), len(files), turned[0][0].name, image_tags.ORIENTATIONS[turned[0][1]])
    tiffs = [(f, _tiff_turn(f)) for f in files]
    tiffs = [(f, o) for f, o in tiffs if o != 1]
    if tiffs:
        logging.getLogger("ScribbleSegLib").warning(
            "%s: %d of %d sections have a TIFF orientation tag (%s: viewers show it %s; 3D Slicer (ITK) reads it "
            "%s); they are read as 3D Slicer reads them, so strokes and labels must be drawn on them as 3D Slicer "
            "shows them", folder, len(tiffs), len(files), tiffs[0][0].name, image_tags.ORIENTATIONS[tiffs[0][1]],
            image_tags.ITK_TIFF_READS[tiffs[0][1]])


class _ImagePixels:
    """What :func:`numpy.asarray` makes an array of: a SimpleITK image's pixel buffer, which this object keeps
    alive as the array's ``base``."""

    def __init__(self, image) -> None:
        self.image = image  # the array's memory: freed with the last array that uses it
        interface = dict(sitk.GetArrayViewFromImage(image).__array_interface__)
        # The view is read-only because it borrows the buffer; an array that holds the image may write to it.
        interface["data"] = (interface["data"][0], False)
        self.__array_interface__ = interface


def _pixels_of(image) -> np.ndarray:
    """A writable ``(Z, Y, X[, C])`` array over ``image``'s own pixel buffer, which stays alive as long as the
    array or a view of it does: the pixels without a copy.

    Examples
    --------
    >>> a = _pixels_of(sitk.GetImageFromArray(np.arange(6, dtype=np.uint8).reshape(1, 2, 3)))
    >>> a += 1
    >>> a.tolist()
    [[[1, 2, 3], [4, 5, 6]]]
    """
    return np.asarray(_ImagePixels(image))


def _read_section(file: Path):
    """The SimpleITK image of one section and a ``(Y, X[, C])`` numpy view of it."""
    image = _read_sitk(file, name_orientation=False)
    if image.GetDimension() == 3 and image.GetSize()[2] == 1:
        image = image[:, :, 0]
    if image.GetDimension() != 2:
        raise ScribbleSegError(
            f"{file}: has {image.GetSize()[2]} pages; each section must be a single 2D image"
        )
    # Keep `image` alive as long as the view is used: the view shares its buffer.
    return image, sitk.GetArrayViewFromImage(image)


def _check_section(file: Path, plane: np.ndarray, first: Path, size_yx: Tuple[int, int], dtype) -> None:
    if plane.shape[:2] != size_yx:
        raise ScribbleSegError(
            f"{file}: size {plane.shape[1]}x{plane.shape[0]} differs from {first.name}'s "
            f"{size_yx[1]}x{size_yx[0]}; all sections must have the same size"
        )
    if plane.dtype != dtype:
        raise ScribbleSegError(f"{file}: pixel type {plane.dtype} differs from {first.name}'s {dtype}")
    _check_pixel_type(plane, file)


def _folder_value_range(files: List[Path], size_yx: Tuple[int, int], dtype,
                        progress: Optional[ProgressCallback], cancel: Optional[CancelToken]) -> Tuple[float, float]:
    lo, hi = np.inf, -np.inf
    for k, file in enumerate(files):
        check(cancel)
        image, plane = _read_section(file)
        _check_section(file, plane, files[0], size_yx, dtype)
        channels = _channel_view(plane, image.GetNumberOfComponentsPerPixel(), file)
        section = _value_range(channels, file)
        if section is not None:
            lo, hi = min(lo, section[0]), max(hi, section[1])
        del image, plane
        report(progress, "read", 0.5 * (k + 1) / len(files), f"intensity range, section {k + 1}/{len(files)}")
    if lo > hi:
        raise ScribbleSegError(f"{files[0].parent}: no section holds a finite value (all NaN or infinite)")
    return lo, hi


def _require_memory(nbytes: int, path: Path, what: str, whole_file: bool = False) -> None:
    """Refuse a read that would not fit in memory.  ``whole_file``: one file read whole, which a downsample does not
    make smaller (only a folder of sections is read section by section, downsampled as it goes)."""
    from .resources import require_memory

    advice = ("save it as a folder of sections, one image per section, and read that downsampled, or read it on a "
              "larger machine") if whole_file else "read it downsampled or on a larger machine"
    require_memory(nbytes, f"{path}: reading {what}", advice)


def _file_read_bytes(path: Path) -> Tuple[int, str]:
    """Peak bytes of reading a 3D file (SimpleITK's image plus the uint8 RGB output) and its size in words."""
    info = _read_sitk(path, image_information_only=True)
    size = [int(s) for s in info.GetSize()]
    voxels = 1
    for s in size:
        voxels *= s
    pixel = sitk.GetPixelIDValueAsString(info.GetPixelID())
    component_bytes = 8 if "64" in pixel or "double" in pixel else 4 if "32" in pixel or "float" in pixel \
        else 2 if "16" in pixel else 1
    return voxels * (info.GetNumberOfComponents() * component_bytes + 3), "x".join(map(str, size))


#: The note a 2D file read without a spacing gives (arguments: the path, its pixel size in mm as x and y, and
#: whether the file stated it).
TILE_GRID_NOTE = "%s: one 2D section, no spacing given: read on a grid of %g x %g mm pixels, %s"


#: A grey 3D image 3 or 4 pixels wide whose other two sizes are at least this is an RGB(A) image whose channels were
#: stored as an axis (:func:`_read_volume_file`): no stack has sections 3 pixels wide.
CHANNELS_AS_AXIS_MIN = 16


#: :func:`_channels_first_share`: pixels whose 3 values differ by at least this much show colour (H&E tissue), and
#: a grey stack whose middle section is the darkest of the three in more than :data:`CHANNELS_FIRST_SHARE` of them
#: is an RGB image's channels (H&E's green is its darkest channel in tissue: 0.96 of such pixels on a phantom tile,
#: 0.23-0.35 for three neighbouring sections of a grey stack).
CHANNELS_FIRST_SPREAD = 15
CHANNELS_FIRST_SHARE = 0.8
#: ... and such pixels cover at least this share of the image (a grey stack of glass alone says nothing).
CHANNELS_FIRST_COLOURED = 0.1


def _channels_first_share(view: np.ndarray) -> Optional[float]:
    """The share of coloured pixels whose second section is the darkest of the first three, where a grey stack of 3
    or 4 sections looks like an H&E image's channels stored first (:data:`CHANNELS_FIRST_SHARE`); None otherwise.

    Examples
    --------
    >>> rgb = np.zeros((3, 20, 20), np.uint8); rgb[0], rgb[1], rgb[2] = 200, 120, 180  # pink: green darkest
    >>> _channels_first_share(rgb)
    1.0
    >>> _channels_first_share(np.stack([rgb[1], rgb[0], rgb[2]])) is None  # the middle one the brightest
    True
    """
    planes = np.asarray(view[:3, ::4, ::4], np.int32)  # every 4th pixel says as much
    coloured = planes.max(axis=0) - planes.min(axis=0) >= CHANNELS_FIRST_SPREAD
    count = int(np.count_nonzero(coloured))
    if count < CHANNELS_FIRST_COLOURED * coloured.size:
        return None
    share = np.count_nonzero(coloured & (planes[1] < np.minimum(planes[0], planes[2]))) / count
    return float(share) if share > CHANNELS_FIRST_SHARE else None


def _read_volume_file(path: Path, spacing: Optional[Tuple[float, float, float]], factor: int,
                      progress: Optional[ProgressCallback], cancel: Optional[CancelToken]) -> Volume:
    nbytes, size_text = _file_read_bytes(path)
    _require_memory(nbytes, path, f"a {size_text} volume", whole_file=True)
    image = _read_sitk(path)
    stated = _stated_pixel(path, image) if spacing is None else None
    if image.GetDimension() == 2:
        # One section (a tile): a one-section volume.  Without a spacing it lies on the grid Slicer loads it on
        # (image_file_grid: the file's pixel size, 1 mm between sections), so strokes drawn there line up.  A 2D
        # file's pixel size is rarely the scan's (a PNG states 1 mm); the pipeline checks it against the model's
        # before it resamples (pipeline.network_scale) and says so when it cannot.
        if spacing is None:
            sx, sy = image.GetSpacing()
            # A PNG or JPEG states no pixel size, and ITK gives it 1 mm: a note that called that "the file's
            # pixel size" went before a warning that the stack has none.
            if stated is not None:  # the grid 3D Slicer loads, and the scan's pixel size beside it
                size = _voxel_words(dataclasses.replace(stated, z=None))
                why = (f"as 3D Slicer reads it; its {stated.source} description states {size} pixels, the size the "
                       "network's scale reads")
            else:
                # A PNG's pHYs density (96 dpi from an image editor) is not read by ITK: "states none" was untrue.
                why = ("as the image reader finds none in its file" if (sx, sy) == UNKNOWN_PIXEL
                       else "its file's pixel size")
            logging.getLogger("ScribbleSegLib").info(TILE_GRID_NOTE, path, sx, sy, why)
        image = sitk.JoinSeries(image)
    elif image.GetDimension() == 4 and image.GetNumberOfComponentsPerPixel() == 1 and image.GetSize()[3] in (3, 4):
        # nibabel's (X, Y, Z, 3) of an RGB stack: three grey volumes to ITK, not one in colour.
        volumes, size = image.GetSize()[3], "x".join(map(str, image.GetSize()[:3]))
        raise ScribbleSegError(
            f"{path}: a 4D image of {volumes} volumes of {size} voxels: the colour channels stored as a 4th axis (as "
            "nibabel writes an RGB array)? Save it as an RGB image (a vector pixel: isVector=True in SimpleITK's "
            "GetImageFromArray, or NIfTI's RGB24 type)")
    elif image.GetDimension() != 3:
        raise ScribbleSegError(f"{path}: is a {image.GetDimension()}D image; expected a 3D volume or a 2D section")
    elif image.GetNumberOfComponentsPerPixel() == 1 and (channels := scan_pixel.channels_as_pages(path)):
        # ITK reads each channel page as a grey section: 3 times the sections, each of one colour, segmented anyway.
        raise ScribbleSegError(
            f"{path}: its description states {channels} colour channels stored as pages of their own "
            f"({image.GetSize()[2]} pages, a composite or hyperstack); save the stack as RGB (Fiji: Image > Color > "
            "Stack to RGB) and read that")
    elif image.GetNumberOfComponentsPerPixel() == 1 and image.GetSize()[0] in (3, 4) \
            and min(image.GetSize()[1:]) >= CHANNELS_AS_AXIS_MIN:
        # numpy's (height, width, 3) written as a 3D grey image: each row a section of 3 pixels, segmented anyway.
        width, height, depth = image.GetSize()
        raise ScribbleSegError(
            f"{path}: a grey volume {width} pixels wide ({width}x{height}x{depth}): the colour channels of an image of "
            f"{height}x{depth} pixels stored as its last axis? Save it as an RGB image (a vector pixel: isVector=True "
            "in SimpleITK's GetImageFromArray)")
    elif image.GetNumberOfComponentsPerPixel() == 1 and image.GetSize()[2] in (3, 4) \
            and min(image.GetSize()[:2]) >= CHANNELS_AS_AXIS_MIN \
            and (share := _channels_first_share(sitk.GetArrayViewFromImage(image))) is not None:
        # numpy's (3, height, width) written as a grey stack: 3 "sections", each a colour, segmented anyway.
        width, height, depth = image.GetSize()
        raise ScribbleSegError(
            f"{path}: a grey stack of {depth} sections of {width}x{height} that differ as the colour channels of an "
            f"H&E image do (the second the darkest in {share:.0%} of the pixels where they differ): an RGB image "
            "stored channels first? Save it as an RGB image (a vector pixel: isVector=True in SimpleITK's "
            "GetImageFromArray, after moving the channels last)")
    elif spacing is None and _tiff_pages(path) is not None:
        # TIFF has a pixel size but no distance between pages: ITK reads the sections 1 mm apart, which gave a
        # heart 20 times its volume and a surface 40 mm tall without a word.
        if stated is not None and stated.z is not None:
            # The description states the voxel, but the grid is ITK's (3D Slicer's): the spacing moves it there.
            logging.getLogger("ScribbleSegLib").warning(
                "%s: its %s description states %g x %g x %g um voxels, which 3D Slicer does not read; the sections "
                "are read %g mm apart (give the spacing %g %g %g to use that voxel size)", path, stated.source,
                stated.x * 1e3, stated.y * 1e3, stated.z * 1e3, image.GetSpacing()[2], stated.x, stated.y, stated.z)
        else:
            logging.getLogger("ScribbleSegLib").warning(
                "%s: a TIFF states no distance between its sections; they are read %g mm apart (give the spacing)",
                path, image.GetSpacing()[2])
    geometry = _geometry_of(image, path)
    units = nrrd_space_units(path) if spacing is None else []
    factors = [scan_pixel.UNITS_MM.get(u.lower(), 1.0) for u in units or []]
    if any(f != 1.0 for f in factors):
        # ITK reads a NRRD's spacing as mm whatever its "space units": 15 um voxels came out 15 mm, a heart of
        # 2.7e8 mm^3, and the network ran at the wrong scale with a warning that asked about a file stating none.
        own = image.GetSpacing()[:3]
        shown = " x ".join(f"{v:g}" for v in own)
        logging.getLogger("ScribbleSegLib").warning(
            "%s: its header states its voxel size in %s (%s), which the image reader takes as mm: read as %s mm "
            "voxels (give the spacing %s to use the stated size)", path, "/".join(dict.fromkeys(units)), shown,
            shown, " ".join(f"{v * f:g}" for v, f in zip(own, factors)))
    if spacing is not None:
        own = geometry.spacing
        # Volume formats only: a PNG's or TIFF's pixel size comes from its print resolution (72 dpi) as often as
        # from a scanner, and a tile's note for every tile of a training would say nothing.
        volume_format = path.name.lower().endswith((".nrrd", ".nhdr", ".mha", ".mhd", ".nii", ".nii.gz"))
        if volume_format and not np.allclose(own, spacing, rtol=0.01, atol=0) and not np.allclose(own, 1.0):
            # One spacing for several files (a training's folders and 3D files) replaced each file's own, silently.
            # In-plane 1.5 times or more off the file's, the network's scale and every area follow the given one:
            # a warning, as likely a slip as a correction.
            far = max(max(a / b, b / a) for a, b in zip(own[:2], spacing[:2])) >= 1.5
            logging.getLogger("ScribbleSegLib").log(
                logging.WARNING if far else logging.INFO,
                "%s: its own voxel size (%s) mm is replaced by the spacing given (%s)%s", path,
                ", ".join(f"{v:.4g}" for v in own), ", ".join(f"{v:.4g}" for v in spacing),
                "; the network's scale and the areas follow the spacing given" if far else "")
        geometry = Geometry(spacing, geometry.origin, geometry.direction)
    view = sitk.GetArrayViewFromImage(image)
    _check_pixel_type(view, path)
    channels = _channel_view(view, image.GetNumberOfComponentsPerPixel(), path)
    depth, height, width = channels.shape[:3]
    if height // factor == 0 or width // factor == 0:
        raise ScribbleSegError(f"{path}: downsample {factor} is larger than the sections ({width}x{height})")
    value_range = None if channels.dtype == np.uint8 else _value_range(channels, path)
    if channels.dtype != np.uint8 and value_range is None:
        raise ScribbleSegError(f"{path}: holds no finite value (all NaN or infinite)")
    if factor == 1 and channels.dtype == np.uint8 and channels.shape[3] == 3:
        # Already what the pipeline takes: the reader's own buffer, not a copy of it (a copy of a 100x512x512
        # stack is 79 MB of fresh memory, whose first touch cost 0.6 s on a VM).
        out = _pixels_of(image)
        report(progress, "read", 1.0, f"section {depth}/{depth}")
    else:
        out = np.empty((depth, height // factor, width // factor, 3), dtype=np.uint8)
        for k in range(depth):
            check(cancel)
            out[k] = _to_rgb8(channels[k], factor, value_range)
            report(progress, "read", (k + 1) / depth, f"section {k + 1}/{depth}")
    if factor > 1:
        geometry = geometry.scaled((factor, factor, 1))
    return Volume(out, geometry, None if stated is None else (stated.x * factor, stated.y * factor))


def stated_section_voxel(folder: PathLike) -> Optional[scan_pixel.StatedPixel]:
    """The voxel size that every section of a folder states alike in its description (the TIFFs of a Fiji image
    sequence: :func:`ScribbleSegLib.scan_pixel.stated_pixel`), or None: none states one, or no folder of sections.

    Raises
    ------
    ScribbleSegError
        When the sections state different sizes, or some state one and others none (naming two of them): the
        folder then has no one voxel size to take.

    Examples
    --------
    >>> import tempfile
    >>> stated_section_voxel(tempfile.mkdtemp()) is None  # an empty folder
    True
    """
    try:
        files = list_section_files(folder)
    except ScribbleSegError:
        return None
    first = None
    for index, path in enumerate(files):
        stated = scan_pixel.stated_pixel(path)
        if index == 0:
            first = stated
        elif not _same_voxel(stated, first):
            raise ScribbleSegError(f"{folder}: its sections state different voxel sizes: {_voxel_words(first)} in "
                                   f"{files[0].name}, {_voxel_words(stated)} in {path.name}")
    return first


def _same_voxel(a: Optional[scan_pixel.StatedPixel], b: Optional[scan_pixel.StatedPixel]) -> bool:
    if a is None or b is None:
        return a is b
    if (a.z is None) != (b.z is None):
        return False
    pairs = [(a.x, b.x), (a.y, b.y)] + ([(a.z, b.z)] if a.z is not None else [])
    return all(abs(p - q) <= 1e-3 * max(p, q) for p, q in pairs)  # the same calibration, as rationals round it


def _voxel_words(stated: Optional[scan_pixel.StatedPixel]) -> str:
    if stated is None:
        return "none"
    size = f"{stated.x * 1e3:g} x {stated.y * 1e3:g}" + ("" if stated.z is None else f" x {stated.z * 1e3:g}")
    return f"{size} um"


def _stated_spacing_hint(folder: Path) -> str:
    """What the sections of a folder state of their voxel size, as the words that end the error of a folder
    read without a spacing; "" when they state none."""
    try:
        stated = stated_section_voxel(folder)
    except ScribbleSegError as error:
        return "; " + str(error).split(": ", 1)[1]
    if stated is None:
        return ""
    if stated.z is None:
        return (f"; its sections' {stated.source} descriptions state {_voxel_words(stated)} pixels: give the spacing "
                f"{stated.x:g} {stated.y:g} Z, Z the distance between sections")
    return (f"; its sections' {stated.source} descriptions state {_voxel_words(stated)} voxels: give the spacing "
            f"{stated.x:g} {stated.y:g} {stated.z:g}")


def nrrd_space_units(path: PathLike) -> Optional[List[str]]:
    """The ``space units`` a NRRD header states, one per axis (``["microns", "microns", "microns"]``), or None:
    another file, or no such field.

    Examples
    --------
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = Path(folder.name) / "stack.nhdr"
    >>> _ = path.write_text('NRRD0004\\ntype: uint8\\nspace units: "microns" "microns" "microns"\\n\\n')
    >>> nrrd_space_units(path), nrrd_space_units(Path(folder.name) / "none.nrrd")
    (['microns', 'microns', 'microns'], None)
    >>> folder.cleanup()
    """
    path = Path(path)
    if not path.name.lower().endswith((".nrrd", ".nhdr")) or not path.is_file():
        return None
    lines = nrrd_header_lines(path, NRRD_HEADER_MAX_BYTES)
    if not lines or not lines[0].startswith(b"NRRD"):
        return None
    for line in lines:
        if line.lower().startswith(b"space units:"):
            return [u.decode("utf-8", "replace") for u in re.findall(rb'"([^"]*)"', line)] or None
    return None


#: How much of a NRRD's start :func:`nrrd_space_units` reads: its header, which ends at the first blank line.
NRRD_HEADER_MAX_BYTES = 64 * 1024


def nrrd_header_lines(path: PathLike, max_bytes: int) -> List[bytes]:
    """The lines of a NRRD file's header, as bytes: up to its first empty line, within its first ``max_bytes``.

    Examples
    --------
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = Path(folder.name) / "stack.nhdr"
    >>> _ = path.write_bytes(b"NRRD0004\\r\\ntype: uint8\\r\\n\\r\\ndata")
    >>> nrrd_header_lines(path, 1024)
    [b'NRRD0004', b'type: uint8']
    >>> folder.cleanup()
    """
    with open(path, "rb") as handle:
        head = handle.read(max_bytes)
    end = min((i for i in (head.find(b"\n\n"), head.find(b"\r\n\r\n")) if i >= 0), default=len(head))
    return head[:end].splitlines()


def _stated_pixel(path: Path, image) -> Optional[scan_pixel.StatedPixel]:
    """The scan's pixel size a TIFF's description states (:func:`scan_pixel.stated_pixel`), where ITK read the file
    on :data:`UNKNOWN_PIXEL` pixels (a size ITK read from the resolution tags stands).  Only the first page's
    header is read: :func:`_tiff_pages` walks every page of a stack."""
    return scan_pixel.stated_pixel(path) if tuple(image.GetSpacing()[:2]) == UNKNOWN_PIXEL else None


def image_file_grid(path: PathLike) -> Optional[Tuple[Tuple[int, int, int], Geometry]]:
    """The voxel grid an image file's header states, ``((Z, Y, X), geometry)``, before any ``spacing`` or
    ``downsample`` of :func:`read_image`; None where there is none to read.

    A 2D file (a tile) is one section on the grid Slicer (through ITK) loads it on: the file's pixel size,
    1 mm between sections, origin 0 along them; strokes drawn on it in Slicer lie on that grid.  A folder of
    sections is its sections on the grid of its first file the same way: Slicer loads a folder of PNG or TIFF
    files (Add Data, an image series) through ITK's series reader, which takes the first file's pixel size and
    origin and, where the files hold no position, 1 mm between sections.

    Examples
    --------
    >>> import tempfile, os
    >>> image_file_grid(tempfile.mkdtemp()) is None  # an empty folder
    True
    >>> folder = tempfile.mkdtemp()
    >>> for name in ("s1.png", "s2.png"):
    ...     sitk.WriteImage(sitk.Image(5, 3, sitk.sitkUInt8), os.path.join(folder, name))
    >>> shape, geometry = image_file_grid(os.path.join(folder, "s1.png"))
    >>> shape, geometry.spacing, geometry.origin
    ((1, 3, 5), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    >>> image_file_grid(folder)[0]
    (2, 3, 5)
    """
    path = check_path(path)
    sections = 1
    if path.is_dir():
        try:
            files = list_section_files(path)
        except ScribbleSegError:  # the caller reads the folder and reports this itself
            return None
        if not files:
            return None
        path, sections = files[0], len(files)
    reader = _read_sitk(path, image_information_only=True)
    if reader.GetDimension() == 2:
        (sx, sy), (ox, oy), d = reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()
        try:
            geometry = Geometry((sx, sy, 1.0), (ox, oy, 0.0), (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0))
        except ScribbleSegError:  # a header no grid can be made of: the caller reports its own error
            return None
        return (sections, int(reader.GetSize()[1]), int(reader.GetSize()[0])), geometry
    if sections > 1:  # a folder of 3D files is refused where it is read
        return None
    if reader.GetDimension() != 3:
        return None
    size = tuple(int(n) for n in reversed(reader.GetSize()))
    return size, _geometry_of(reader, path)


def _geometry_of(image, path: Path) -> Geometry:
    try:
        return Geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    except ScribbleSegError as exc:
        raise ScribbleSegError(f"{path}: {exc}") from None


def is_section_file(path: PathLike) -> bool:
    """Whether ``path`` holds a single 2D section (a tile), which takes the grid of the image it goes with.

    Examples
    --------
    >>> import tempfile, SimpleITK as sitk
    >>> path = Path(tempfile.mkdtemp()) / "tile.png"
    >>> sitk.WriteImage(sitk.Image(8, 8, sitk.sitkUInt8), str(path))
    >>> is_section_file(path)
    True
    """
    return _read_sitk(Path(path), image_information_only=True).GetDimension() == 2


def takes_image_grid(path: PathLike) -> bool:
    """Whether a label or scribble ``path`` has no grid of its own: a 2D section file, or a folder of them.

    Examples
    --------
    >>> import tempfile
    >>> takes_image_grid(tempfile.mkdtemp())  # a folder of label sections
    True
    """
    path = check_path(path)
    return path.is_dir() or is_section_file(path)


def stated_components(path: PathLike) -> Optional[int]:
    """The values a voxel that the image file at ``path`` states in its header (3 for RGB), or None where it does not
    read as an image.  Only the header is read.

    Examples
    --------
    >>> import os, tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "tile.png")
    >>> sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 3), np.uint8), isVector=True), path)
    >>> stated_components(path), stated_components(os.path.join(folder.name, "none.png"))
    (3, None)
    >>> folder.cleanup()
    """
    try:
        return int(_read_sitk(Path(path), image_information_only=True, name_orientation=False).GetNumberOfComponents())
    except ScribbleSegError:
        return None


def is_segmentation_file(path: PathLike) -> bool:
    """Whether ``path`` is a Slicer segmentation: a NRRD with ``Segment*`` fields.

    A file named ``*.seg.nrrd`` is one unless its header reads and holds no segment (a plain labelmap saved
    under that name, which is read as a labelmap); one whose header does not read is left to the
    segmentation reader, whose message says so.

    Examples
    --------
    >>> from ScribbleSegLib.volume_io import write_labelmap, write_segmentation
    >>> folder = tempfile.TemporaryDirectory()
    >>> seg, plain = Path(folder.name) / "result.seg.nrrd", Path(folder.name) / "labels.nrrd"
    >>> write_segmentation(seg, [("heart", np.ones((1, 2, 2), np.uint8), (1.0, 0.0, 0.0))], Geometry((1.0, 1.0, 1.0)))
    >>> write_labelmap(plain, np.ones((1, 2, 2), np.uint8), Geometry((1.0, 1.0, 1.0)))
    >>> is_segmentation_file(seg), is_segmentation_file(plain)
    (True, False)
    >>> folder.cleanup()
    """
    path = check_path(path)
    if path.is_dir():
        return False
    name = path.name.lower()
    if not name.endswith(".nrrd"):
        return False
    try:
        reader = _read_sitk(path, image_information_only=True)
    except ScribbleSegError:
        if name.endswith(".seg.nrrd"):
            return True
        raise
    return any(key.startswith("Segment0_") for key in reader.GetMetaDataKeys())
