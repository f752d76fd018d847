"""What image files state in their own tags, read without an imaging library: a TIFF's pages, a JPEG's EXIF
orientation, a PNG's colour type and an indexed PNG's palette.

ITK reads every page of a multi-page TIFF as a section of one stack, sized like the first page.  A slide
scanner's file (Aperio ``.svs``, a pyramid TIFF) or an image saved with its thumbnail holds pages of other
sizes: ITK then reads garbage into the later "sections" or fails on a row it cannot find.  ITK also ignores
a JPEG's EXIF orientation, which photo viewers apply, and reads an indexed-colour PNG (as GIMP and labelling
tools save masks) as its palette's colours, not its indices.  :func:`tiff_pages`, :func:`jpeg_orientation`
and :func:`png_palette` read what the files state, so that :mod:`ScribbleSegLib.volume_io` can read the first
page alone, name an orientation it does not apply and take a palette PNG's indices back.  Each returns None
for a file that is not of its kind or is damaged where it looks: the reader then reports the file as it would
without them.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Dict, List, Optional, Tuple

import numpy as np

#: At most this many pages are listed (a loop in a damaged file's page chain ends there too).
MAX_PAGES = 4096
_WIDTH, _HEIGHT, _SUBFILE, _ORIENTATION = 256, 257, 254, 0x0112
_BITS_PER_SAMPLE, _SAMPLES_PER_PIXEL, _SAMPLE_FORMAT = 258, 277, 339
#: Bytes of a tag value by TIFF type: SHORT, LONG, LONG8 (BigTIFF); other types are not read.
_TYPE_SIZES = {3: 2, 4: 4, 16: 8}
#: What photo viewers do to show an image with EXIF orientation 2-8 (1 is as stored).
ORIENTATIONS = {2: "mirrored left to right", 3: "turned 180°", 4: "mirrored top to bottom",
                5: "mirrored and turned 90° anticlockwise", 6: "turned 90° clockwise",
                7: "mirrored and turned 90° clockwise", 8: "turned 90° anticlockwise"}
#: How ITK reads a TIFF page whose orientation tag turns it by 90° (5-8): libtiff's RGBA reader, which ITK
#: and so 3D Slicer use for such a page, applies the flip of the orientation but not its turn.  Values 2-4 it
#: applies as viewers do.
ITK_TIFF_READS = {5: "as stored", 6: "mirrored left to right", 7: "turned 180°", 8: "mirrored top to bottom"}


@dataclass(frozen=True)
class Page:
    """One page (image file directory) of a TIFF: its size, ``NewSubfileType`` (bit 0: a reduced-resolution
    copy of another page, as a thumbnail or a pyramid level is), ``Orientation`` (1-8 as in EXIF; 1 when
    not stated or out of range) and its pixel format, ``(samples per pixel, bits per sample, sample format)`` as
    stated (1, 1 and 1, unsigned, where not).

    Examples
    --------
    >>> Page(500, 300)  # nothing stated but the size
    Page(width=500, height=300, subfile_type=0, orientation=1, pixel=(1, 1, 1))
    >>> import tempfile, SimpleITK as sitk
    >>> tile = os.path.join(tempfile.mkdtemp(), "rgb.tif")
    >>> sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 5, 3), np.uint8), isVector=True), tile)
    >>> tiff_pages(Path(tile))[0].pixel  # three samples of 8 bits, unsigned
    (3, 8, 1)
    """

    width: int
    height: int
    subfile_type: int = 0
    orientation: int = 1
    pixel: Tuple[int, int, int] = (1, 1, 1)


class _Damaged(Exception):
    pass


#: What reading a damaged or unusual file's tags can raise: each means "not readable here", never a traceback.
_UNREADABLE = (OSError, struct.error, _Damaged, OverflowError, ValueError)


def _header(f: BinaryIO, base: int) -> Tuple[str, bool, int]:
    """``(byte order, BigTIFF, first page's offset)`` of the TIFF header at ``base``."""
    f.seek(base)
    head = f.read(16)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        order = "<" if head[:2] == b"II" else ">"
        return order, False, struct.unpack(order + "I", head[4:8])[0]
    if head[:4] in (b"II+\x00", b"MM\x00+") and len(head) == 16:
        order = "<" if head[:2] == b"II" else ">"
        return order, True, struct.unpack(order + "Q", head[8:16])[0]
    raise _Damaged


def _read_exactly(f: BinaryIO, count: int) -> bytes:
    """``count`` bytes from ``f``'s position; a count the file cannot hold (a damaged length, up to 2^64) is
    :class:`_Damaged` before any memory is taken for it."""
    at = f.tell()
    if count < 0 or count > os.fstat(f.fileno()).st_size - at:
        raise _Damaged
    data = f.read(count)
    if len(data) != count:
        raise _Damaged
    return data


def _pages(f: BinaryIO, base: int, wanted: Tuple[int, ...], limit: int,
           links: Optional[List[Tuple[int, int]]] = None) -> List[Dict[int, int]]:
    """The values of the ``wanted`` tags of each page (:func:`_entry_value`), following the page chain;
    ``links`` collects where each page's "next page" offset lies in the file, and its size in bytes."""
    order, big, offset = _header(f, base)
    count_format, entry_size, value_size, next_format = ("Q", 20, 8, "Q") if big else ("H", 12, 4, "I")
    pages, seen = [], set()
    while offset and len(pages) < limit:
        if offset in seen:
            raise _Damaged
        seen.add(offset)
        f.seek(base + offset)
        (count,) = struct.unpack(order + count_format, _read_exactly(f, struct.calcsize(count_format)))
        entries = _read_exactly(f, count * entry_size)
        if links is not None:
            links.append((f.tell(), struct.calcsize(next_format)))
        tail = _read_exactly(f, struct.calcsize(next_format))
        tags = {}
        for i in range(count):
            entry = entries[i * entry_size:(i + 1) * entry_size]
            (tag,) = struct.unpack(order + "H", entry[:2])
            if tag in wanted:
                value = _entry_value(f, base, order, entry, next_format)
                if value is not None:
                    tags[tag] = value
        pages.append(tags)
        (offset,) = struct.unpack(order + next_format, tail)
    return pages


#: TIFF types read beside SHORT, LONG and LONG8 (:data:`_TYPE_SIZES`): ASCII text and RATIONAL numbers.
_ASCII, _RATIONAL = 2, 5
#: A text tag longer than this is not read (an OME-XML description of thousands of planes, or a damaged
#: length): what it would tell is then not known, as for a file without it.
MAX_TEXT_BYTES = 1 << 22


def _entry_value(f: BinaryIO, base: int, order: str, entry: bytes, offset_format: str):
    """The value of one page entry: ASCII as ``str``, RATIONAL as ``float``, SHORT, LONG and LONG8 as ``int``
    (the first of several); None for another type, no value or a text over :data:`MAX_TEXT_BYTES`.  A value
    too long for the entry is read where the entry's offset (from ``base``) points."""
    value_size = struct.calcsize(offset_format)  # 4 in a TIFF, 8 in a BigTIFF, as its counts and offsets
    kind = struct.unpack(order + "H", entry[2:4])[0]
    (n,) = struct.unpack(order + offset_format, entry[4:4 + value_size])
    size = n * {_ASCII: 1, _RATIONAL: 8}.get(kind, _TYPE_SIZES.get(kind, 0))
    if size == 0 or size > MAX_TEXT_BYTES:
        return None
    field = entry[4 + value_size:]
    if size > value_size:
        f.seek(base + struct.unpack(order + offset_format, field)[0])
        field = _read_exactly(f, size)
    if kind == _ASCII:
        return field[:size].split(b"\x00", 1)[0].decode("utf-8", "replace")
    if kind == _RATIONAL:
        numerator, denominator = struct.unpack(order + "II", field[:8])
        return numerator / denominator if denominator else None
    return struct.unpack(order + {2: "H", 4: "I", 8: "Q"}[_TYPE_SIZES[kind]], field[:_TYPE_SIZES[kind]])[0]


def first_page_values(path: Path, wanted: Tuple[int, ...]) -> Optional[Dict[int, object]]:
    """The values of the ``wanted`` tags on a TIFF's first page (:func:`_entry_value`: ASCII as ``str``, RATIONAL
    as ``float``, SHORT, LONG and LONG8 as ``int``).  None for another or a damaged file.

    Examples
    --------
    >>> import tempfile, os, SimpleITK as sitk
    >>> tile = os.path.join(tempfile.mkdtemp(), "tile.tif")
    >>> sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 5), np.uint8)), tile)
    >>> first_page_values(Path(tile), (256, 257))
    {256: 5, 257: 3}
    """
    try:
        with open(path, "rb") as f:
            pages = _pages(f, 0, wanted, 1)
    except _UNREADABLE:
        return None
    return pages[0] if pages else None


def tiff_pages(path: Path) -> Optional[List[Page]]:
    """The pages of a TIFF file (any suffix: an Aperio ``.svs`` is one), or None for another or a damaged file.

    Examples
    --------
    >>> import tempfile, os, numpy as np, SimpleITK as sitk
    >>> tile = os.path.join(tempfile.mkdtemp(), "tile.tif")
    >>> sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 5), np.uint8)), tile)
    >>> tiff_pages(Path(tile))
    [Page(width=5, height=3, subfile_type=0, orientation=1, pixel=(1, 8, 1))]
    """
    try:
        with open(path, "rb") as f:
            pages = _pages(f, 0, (_WIDTH, _HEIGHT, _SUBFILE, _ORIENTATION, _BITS_PER_SAMPLE, _SAMPLES_PER_PIXEL,
                                  _SAMPLE_FORMAT), MAX_PAGES)
    except _UNREADABLE:
        return None
    if not pages or any(_WIDTH not in p or _HEIGHT not in p for p in pages):
        return None
    return [Page(p[_WIDTH], p[_HEIGHT], p.get(_SUBFILE, 0), p.get(_ORIENTATION) if p.get(_ORIENTATION) in
                 ORIENTATIONS else 1,
                 (p.get(_SAMPLES_PER_PIXEL, 1), p.get(_BITS_PER_SAMPLE, 1), p.get(_SAMPLE_FORMAT, 1)))
            for p in pages]


def is_one_stack(pages: List[Page]) -> bool:
    """Whether a TIFF's pages are sections of one stack: all of one size, none a reduced-resolution copy.

    Examples
    --------
    >>> is_one_stack([Page(5, 3), Page(5, 3)])
    True
    >>> is_one_stack([Page(500, 300), Page(125, 75, 1)])  # an image and its thumbnail
    False
    """
    return all((p.width, p.height) == (pages[0].width, pages[0].height) and not p.subfile_type & 1 for p in pages)


def is_one_image(pages: List[Page]) -> bool:
    """Whether a TIFF is one image with smaller copies beside it (a slide's pyramid, a thumbnail, a label or
    macro photo): every page after the first is marked as a reduced-resolution copy, or is at most half the first
    page's width and height.  A page a little smaller than the first is a section of a stack, cropped.

    Examples
    --------
    >>> is_one_image([Page(2220, 2967), Page(574, 768), Page(387, 463, 1), Page(1280, 431, 9)])  # an Aperio .svs
    True
    >>> is_one_image([Page(160, 160)] * 3 + [Page(40, 40, 1)])  # a stack with its thumbnail last
    False
    >>> is_one_image([Page(40, 30), Page(39, 30)])  # two sections, the second cropped
    False
    """
    first = pages[0]
    return len(pages) > 1 and all(p.subfile_type & 1 or (2 * p.width <= first.width and 2 * p.height <= first.height)
                                  for p in pages[1:])


def odd_pages(pages: List[Page]) -> Tuple[Tuple[int, int], List[int]]:
    """The size ``(width, height)`` most pages share, and the 1-based numbers of the pages of another size or
    marked as reduced-resolution copies.

    Examples
    --------
    >>> odd_pages([Page(160, 160)] * 3 + [Page(156, 160)] + [Page(160, 160)])
    ((160, 160), [4])
    >>> odd_pages([Page(40, 30), Page(400, 300)])  # a thumbnail first: as many pages of each size, the larger wins
    ((400, 300), [1])
    """
    sizes = [(p.width, p.height) for p in pages]
    full = [size for p, size in zip(pages, sizes) if not p.subfile_type & 1]
    # The size of most pages not marked as reduced copies; between as many, the larger (a thumbnail is smaller).
    common = max(set(sizes), key=lambda size: (full.count(size), sizes.count(size), size[0] * size[1],
                                               -sizes.index(size)))
    return common, [i + 1 for i, (p, size) in enumerate(zip(pages, sizes)) if size != common or p.subfile_type & 1]


def odd_pixel_pages(pages: List[Page]) -> List[int]:
    """The 1-based numbers of the pages whose pixel format differs from the first page's (a grey page among colour
    ones, a 16-bit page among 8-bit ones): ITK reads every page of a stack as it reads the first.

    Examples
    --------
    >>> odd_pixel_pages([Page(5, 3, pixel=(3, 8, 1)), Page(5, 3, pixel=(1, 8, 1)), Page(5, 3, pixel=(3, 8, 1))])
    [2]
    """
    return [i + 1 for i, page in enumerate(pages) if page.pixel != pages[0].pixel]


def first_page_link(path: Path) -> Optional[Tuple[int, int]]:
    """Where a TIFF's first page states the offset of the next page: ``(byte position, size in bytes)``, to
    overwrite with zeros in a copy that ITK then reads as the first page alone.  None for another or a damaged
    file.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "two.tif"
    >>> page = struct.pack("<H", 0) + struct.pack("<I", 8)  # no tags, then "next page at byte 8"
    >>> _ = path.write_bytes(b"II*\\x00" + struct.pack("<I", 8) + page)
    >>> first_page_link(path)  # the chain ends at the first page when these 4 bytes are 0
    (10, 4)
    """
    links: List[Tuple[int, int]] = []
    try:
        with open(path, "rb") as f:
            _pages(f, 0, (), 1, links)
    except _UNREADABLE:
        return None
    return links[0] if links else None


def jpeg_orientation(path: Path) -> Optional[int]:
    """The EXIF orientation (1-8) a JPEG file states, or None (no EXIF, no such tag, another or a damaged file).

    Examples
    --------
    >>> import tempfile, os, numpy as np, SimpleITK as sitk
    >>> photo = os.path.join(tempfile.mkdtemp(), "tile.jpg")
    >>> sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 5), np.uint8)), photo)
    >>> jpeg_orientation(Path(photo)) is None  # ITK writes no EXIF
    True
    """
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"\xff\xd8":
                return None
            while True:
                marker = f.read(2)
                if len(marker) != 2 or marker[0] != 0xFF or marker[1] in (0xD9, 0xDA):  # end, or the image data
                    return None
                (length,) = struct.unpack(">H", _read_exactly(f, 2))
                start = f.tell()
                if marker[1] == 0xE1 and f.read(6) == b"Exif\x00\x00":
                    pages = _pages(f, start + 6, (_ORIENTATION,), 1)
                    value = pages[0].get(_ORIENTATION) if pages else None
                    return value if value in range(1, 9) else None
                f.seek(start + length - 2)
    except _UNREADABLE:
        return None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: IHDR's colour type of an indexed-colour (palette) PNG.
_PNG_INDEXED = 3
#: The PNG colour type of grey with an alpha channel (:func:`png_colour_type`).
PNG_GREY_ALPHA = 4


#: The first bytes of the image formats ScribbleSeg reads, and the extensions each is read by.
SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG", (".png",)), (b"\xff\xd8\xff", "JPEG", (".jpg", ".jpeg")),
              (b"II*\x00", "TIFF", (".tif", ".tiff")), (b"MM\x00*", "TIFF", (".tif", ".tiff")),
              (b"NRRD", "NRRD", (".nrrd", ".nhdr")), (b"BM", "BMP", (".bmp",)))


def misnamed_format(path: Path) -> Optional[Tuple[str, str]]:
    """``(format, extension)`` where the file's first bytes are those of another format than its extension names
    (a JPEG saved as ``.png``: the reader chosen by the name refused it as damaged), else None.

    Examples
    --------
    >>> import tempfile, os
    >>> tile = Path(tempfile.mkdtemp()) / "tile.png"
    >>> _ = tile.write_bytes(bytes([0xFF, 0xD8, 0xFF, 0xE0]) + bytes(16))  # a JPEG's first bytes
    >>> misnamed_format(tile)
    ('JPEG', '.jpg')
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return None
    name = path.name.lower()
    for signature, kind, suffixes in SIGNATURES:
        if head.startswith(signature):
            return None if name.endswith(suffixes) else (kind, suffixes[0])
    return None


def png_colour_type(path: Path) -> Optional[int]:
    """A PNG's colour type (0 grey, 2 RGB, 3 indexed, 4 grey with alpha, 6 RGBA), or None for another or a
    damaged file.

    ITK cannot read a grey PNG with an alpha channel (type :data:`PNG_GREY_ALPHA`), which GIMP and labelling
    tools save for masks with transparency: the reader names the type instead of calling the file damaged.

    Examples
    --------
    >>> import tempfile, os, SimpleITK as sitk
    >>> grey = os.path.join(tempfile.mkdtemp(), "grey.png")
    >>> sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 5), np.uint8)), grey)
    >>> png_colour_type(Path(grey))
    0
    """
    try:
        with open(path, "rb") as f:
            if f.read(8) != _PNG_SIGNATURE:
                return None
            length, kind = struct.unpack(">I4s", _read_exactly(f, 8))
            data = _read_exactly(f, length)
            return int(data[9]) if kind == b"IHDR" and length >= 10 else None
    except _UNREADABLE:
        return None


#: Chunks a grey PNG with alpha keeps in :func:`grey_alpha_as_readable_png`: the image and its pixel size (pHYs,
#: and sCAL, where ITK writes and reads it).
_GREY_ALPHA_KEPT_CHUNKS = (b"IHDR", b"pHYs", b"sCAL", b"IDAT", b"IEND")


def grey_alpha_as_readable_png(path: Path) -> Optional[bytes]:
    """A PNG that ITK reads, of the same bytes as the grey PNG with an alpha channel at ``path``, or None (another
    kind of PNG or file, or damaged).

    ITK cannot read a grey PNG with alpha (:data:`PNG_GREY_ALPHA`).  Its rows hold two samples per pixel, grey then
    alpha; 16-bit grey holds two bytes per pixel too, and 8-bit RGBA four, as 16-bit grey with alpha does.  PNG
    filters and interlacing work on whole bytes and pixels, so the same compressed rows are an image of that type
    with its header changed: 8-bit grey-alpha reads as 16-bit grey ``256 grey + alpha``, 16-bit as RGBA whose
    first two channels are the grey's bytes and last two the alpha's.  Only the header, the pixel size, the data
    and the end are kept (another chunk may not fit the other type).

    Examples
    --------
    >>> import tempfile, os, zlib, SimpleITK as sitk
    >>> def chunk(kind, data):
    ...     return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    >>> rows = b"\\x00" + bytes([7, 255, 9, 0])  # one row of two pixels: (grey 7, opaque), (grey 9, transparent)
    >>> la = os.path.join(tempfile.mkdtemp(), "la.png")
    >>> _ = open(la, "wb").write(_PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 8, 4, 0, 0, 0))
    ...                          + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    >>> copy = la + ".grey16.png"
    >>> _ = open(copy, "wb").write(grey_alpha_as_readable_png(Path(la)))
    >>> [divmod(int(v), 256) for v in sitk.GetArrayFromImage(sitk.ReadImage(copy)).ravel()]
    [(7, 255), (9, 0)]
    """
    import zlib

    try:
        with open(path, "rb") as f:
            if f.read(8) != _PNG_SIGNATURE:
                return None
            out = [_PNG_SIGNATURE]
            while True:
                length, kind = struct.unpack(">I4s", _read_exactly(f, 8))
                data = _read_exactly(f, length)
                f.seek(4, 1)  # the chunk's CRC (made anew below)
                if kind == b"IHDR":
                    if length != 13:
                        return None
                    width, height, depth, colour, method, filtering, interlace = struct.unpack(">IIBBBBB", data)
                    if colour != PNG_GREY_ALPHA or depth not in (8, 16):
                        return None
                    data = struct.pack(">IIBBBBB", width, height, 16 if depth == 8 else 8, 0 if depth == 8 else 6,
                                       method, filtering, interlace)
                if kind in _GREY_ALPHA_KEPT_CHUNKS:
                    out.append(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)))
                if kind == b"IEND":
                    return b"".join(out)
    except _UNREADABLE:
        return None


def png_palette(path: Path) -> Optional[np.ndarray]:
    """The palette ``(N, 3)`` uint8 of an indexed-colour PNG, or None (another kind of PNG or file, or damaged).

    Examples
    --------
    >>> import tempfile, os, SimpleITK as sitk
    >>> grey = os.path.join(tempfile.mkdtemp(), "grey.png")
    >>> sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 5), np.uint8)), grey)
    >>> png_palette(Path(grey)) is None  # a grey PNG has none
    True
    """
    try:
        with open(path, "rb") as f:
            if f.read(8) != _PNG_SIGNATURE:
                return None
            indexed = False
            while True:
                length, kind = struct.unpack(">I4s", _read_exactly(f, 8))
                data = _read_exactly(f, length)
                f.seek(4, 1)  # the chunk's CRC
                if kind == b"IHDR":
                    indexed = len(data) >= 10 and data[9] == _PNG_INDEXED
                    if not indexed:
                        return None
                elif kind == b"PLTE":
                    if not indexed or length % 3 or not length:
                        return None
                    return np.frombuffer(data, np.uint8).reshape(-1, 3).copy()
                elif kind in (b"IDAT", b"IEND"):  # the palette comes before the image data, or not at all
                    return None
    except _UNREADABLE:
        return None


def palette_indices(colours: np.ndarray, palette: np.ndarray) -> Optional[np.ndarray]:
    """The palette index of each RGB colour ``(..., 3)``, or None when a colour is not in the palette.

    A colour that stands in the palette twice takes its first index: writers pad a short palette with black to
    256 entries, and the pixels use the first.

    Examples
    --------
    >>> palette = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    >>> palette_indices(np.array([[[255, 0, 0], [0, 0, 0], [0, 0, 255]]], np.uint8), palette).tolist()
    [[1, 0, 2]]
    """
    def code(rgb: np.ndarray) -> np.ndarray:
        return (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]

    codes = code(np.asarray(palette, np.uint8))
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    pixels = code(np.asarray(colours, np.uint8))
    used, inverse = np.unique(pixels, return_inverse=True)
    at = np.searchsorted(ordered, used)
    if (at >= len(ordered)).any() or (ordered[np.minimum(at, len(ordered) - 1)] != used).any():
        return None
    return order[at][inverse].reshape(pixels.shape).astype(np.uint8)
