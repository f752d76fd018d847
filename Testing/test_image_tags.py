"""A TIFF's pages and a JPEG's EXIF orientation (image_tags.py), and how read_image uses them."""

import struct
import tempfile
import zlib

import numpy as np
import pytest
import SimpleITK as sitk

from ScribbleSegLib import image_tags, volume_io
from ScribbleSegLib.errors import ScribbleSegError


def write_tiff(path, pages, big_endian=False, orientation=None):
    """An uncompressed grey TIFF of ``pages``: ``(array, subfile_type)``, each page one strip (our own writer:
    SimpleITK writes one size for all pages, and slide scanners' files hold several), with an orientation tag
    when given."""
    order = ">" if big_endian else "<"
    out = bytearray(b"MM\x00*" if big_endian else b"II*\x00") + bytes(4)
    link = 4  # where the offset of the next page goes
    for array, subfile in pages:
        height, width = array.shape
        data_at = len(out)
        out += array.astype(np.uint8).tobytes()
        if len(out) % 2:
            out += b"\x00"
        ifd_at = len(out)
        out[link:link + 4] = struct.pack(order + "I", ifd_at)
        tags = [(254, 4, subfile), (256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
                (273, 4, data_at), (277, 3, 1), (278, 4, height), (279, 4, width * height)]
        if orientation is not None:
            tags.insert(6, (274, 3, orientation))  # tags in ascending order, as TIFF requires
        out += struct.pack(order + "H", len(tags))
        for tag, kind, value in tags:
            packed = struct.pack(order + ("H" if kind == 3 else "I"), value).ljust(4, b"\x00")
            out += struct.pack(order + "HHI", tag, kind, 1) + packed
        link = len(out)
        out += bytes(4)
    path.write_bytes(bytes(out))
    return path


def with_exif_orientation(path, orientation):
    """Put an EXIF segment stating ``orientation`` right after a JPEG's start marker, as cameras write it."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1,
                                                                                    orientation, 0) + bytes(4)
    body = b"Exif\x00\x00" + tiff
    data = path.read_bytes()
    path.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + data[2:])
    return path


def grey(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width)).astype(np.uint8)


@pytest.mark.parametrize("big_endian", [False, True])
def test_the_pages_of_a_tiff_are_listed_in_either_byte_order(tmp_path, big_endian):
    path = write_tiff(tmp_path / "slide.tif", [(grey(30, 40), 0), (grey(8, 10), 1)], big_endian)
    grey_8bit = (1, 8, 1)  # one sample of 8 bits, unsigned
    assert image_tags.tiff_pages(path) == [image_tags.Page(40, 30, 0, pixel=grey_8bit),
                                           image_tags.Page(10, 8, 1, pixel=grey_8bit)]
    assert not image_tags.is_one_stack(image_tags.tiff_pages(path))


@pytest.mark.parametrize("orientation", sorted(image_tags.ITK_TIFF_READS))
def test_a_tiff_turned_by_its_orientation_tag_is_read_as_slicer_reads_it_with_one_warning(tmp_path, caplog,
                                                                                          orientation):
    image = grey(30, 40)
    path = write_tiff(tmp_path / "turned.tif", [(image, 0)], orientation=orientation)
    assert image_tags.tiff_pages(path)[0].orientation == orientation
    as_itk_reads = {"as stored": image, "mirrored left to right": image[:, ::-1],
                    "turned 180°": image[::-1, ::-1], "mirrored top to bottom": image[::-1]}
    expected = as_itk_reads[image_tags.ITK_TIFF_READS[orientation]]
    # The claim the warning makes about ITK (and so 3D Slicer), checked against ITK itself.
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[..., 0], expected)
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        volume = volume_io.read_image(path)
    assert np.array_equal(volume.array[0, ..., 0], expected)
    said = [r.getMessage() for r in caplog.records if "orientation" in r.getMessage()]
    assert len(said) == 1 and "turned.tif" in said[0] and image_tags.ITK_TIFF_READS[orientation] in said[0]


def test_a_tiff_its_orientation_tag_turns_only_by_flips_reads_without_a_warning(tmp_path, caplog):
    image = grey(30, 40)
    path = write_tiff(tmp_path / "flipped.tif", [(image, 0)], orientation=3)
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        volume = volume_io.read_image(path)
    assert np.array_equal(volume.array[0, ..., 0], image[::-1, ::-1])  # as viewers show it, and Slicer
    assert not [r for r in caplog.records if "orientation" in r.getMessage()]


def test_a_folder_of_tiff_sections_names_their_orientation_tags_once(tmp_path, caplog):
    folder = tmp_path / "stack"
    folder.mkdir()
    for i in range(3):
        write_tiff(folder / f"s{i}.tif", [(grey(30, 40, seed=i), 0)], orientation=6 if i else None)
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        volume_io.read_image(folder, spacing=(0.01, 0.01, 0.05))
    said = [r.getMessage() for r in caplog.records if "orientation" in r.getMessage()]
    assert len(said) == 1 and "2 of 3 sections" in said[0] and "s1.tif" in said[0]


def test_files_that_are_not_tiffs_or_are_damaged_give_none(tmp_path):
    path = write_tiff(tmp_path / "slide.tif", [(grey(30, 40), 0), (grey(8, 10), 1)])
    cut = tmp_path / "cut.tif"
    cut.write_bytes(path.read_bytes()[:-30])  # the second page's tags cut off
    loop = bytearray(path.read_bytes())
    loop[-4:] = loop[4:8]  # the second page points back at the first
    (tmp_path / "loop.tif").write_bytes(bytes(loop))
    (tmp_path / "text.tif").write_bytes(b"not an image at all")
    for name in ("cut.tif", "loop.tif", "text.tif"):
        assert image_tags.tiff_pages(tmp_path / name) is None, name
    assert image_tags.jpeg_orientation(path) is None


def test_a_tiff_with_a_thumbnail_is_read_as_its_first_page_with_one_note(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the first page's copy is made
    first = grey(30, 40)
    path = write_tiff(tmp_path / "with thumbnail.tif", [(first, 0), (grey(8, 10, seed=1), 1)])
    # Without the tags, ITK reads the thumbnail into a second "section" of the first page's size, or fails.
    with caplog.at_level("INFO", logger="ScribbleSegLib"):
        volume = volume_io.read_image(path)
    assert volume.shape == (1, 30, 40)
    np.testing.assert_array_equal(volume.array[0, ..., 0], first)
    notes = [r.getMessage() for r in caplog.records if "pages" in r.getMessage()]
    assert notes == [f"{path}: a TIFF of 2 pages of different sizes (a slide's pyramid or an image with its "
                     "thumbnail): reading its first page, 40x30, alone"]
    assert volume_io.image_file_grid(path)[0] == (1, 30, 40)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["with thumbnail.tif"]  # the page's copy is gone


def test_a_slide_whose_copy_would_not_fit_the_temporary_folder_is_one_line_before_any_copy(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = write_tiff(tmp_path / "slide.tif", [(grey(30, 40), 0), (grey(8, 10, seed=1), 1)])
    full = shutil.disk_usage(tmp_path)._replace(free=path.stat().st_size - 1)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: full)
    with pytest.raises(ScribbleSegError, match=f"slide.tif: reading its first page alone needs a 0.00 GiB copy in "
                                               f"the temporary folder {tmp_path}, which has 0.00 GiB free"):
        volume_io.read_image(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slide.tif"]


def test_a_tiff_stack_of_equal_pages_stays_a_stack(tmp_path):
    sections = [grey(12, 16, seed=s) for s in range(3)]
    path = write_tiff(tmp_path / "stack.tif", [(s, 0) for s in sections])
    assert image_tags.is_one_stack(image_tags.tiff_pages(path))
    volume = volume_io.read_image(path, spacing=(0.01, 0.01, 0.02))
    assert volume.shape == (3, 12, 16)
    np.testing.assert_array_equal(volume.array[2, ..., 0], sections[2])


@pytest.mark.parametrize("big_endian", [False, True])
def test_the_link_to_the_second_page_is_found_and_a_damaged_count_is_refused_without_reading_it(tmp_path,
                                                                                                 big_endian):
    path = write_tiff(tmp_path / "slide.tif", [(grey(30, 40), 0), (grey(8, 10), 1)], big_endian)
    at, size = image_tags.first_page_link(path)
    data = bytearray(path.read_bytes())
    assert size == 4 and any(data[at:at + size])  # it points at the second page
    data[at:at + size] = bytes(size)
    (tmp_path / "cut.tif").write_bytes(bytes(data))
    assert image_tags.tiff_pages(tmp_path / "cut.tif") == image_tags.tiff_pages(path)[:1]
    # A page that claims more tags than the file holds (up to 2^64 in a BigTIFF) is damaged, not read into memory.
    big = tmp_path / "big.tif"
    big.write_bytes(b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + struct.pack("<Q", 2 ** 62) + bytes(64))
    assert image_tags.tiff_pages(big) is None and image_tags.first_page_link(big) is None
    with pytest.raises(ScribbleSegError, match="big.tif: cannot be read as an image"):
        volume_io.read_image(big)
    damaged_png = tmp_path / "strokes.png"
    damaged_png.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I4s", 0xFFFFFFFF, b"IHDR") + bytes(20))
    assert image_tags.png_palette(damaged_png) is None


def test_a_stack_whose_second_section_is_cropped_by_a_pixel_is_refused(tmp_path):
    path = write_tiff(tmp_path / "two.tif", [(grey(30, 40), 0), (grey(30, 39), 0)])
    with pytest.raises(ScribbleSegError, match="two.tif: a TIFF stack of 2 pages whose page"):
        volume_io.read_image(path, spacing=(0.01, 0.01, 0.02))


def test_a_folder_of_turned_jpegs_warns_once(tmp_path, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(3):
        path = folder / f"s{k + 1}.jpg"
        sitk.WriteImage(sitk.GetImageFromArray(np.stack([grey(20, 30, seed=k)] * 3, -1), isVector=True), str(path))
        with_exif_orientation(path, 6)
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        volume = volume_io.read_image(folder, spacing=(0.01, 0.01, 0.02))
    assert volume.shape == (3, 20, 30)
    assert [r.getMessage() for r in caplog.records] == [
        f"{folder}: 3 of 3 sections state an EXIF orientation (s1.jpg: photo viewers show it turned 90° clockwise); "
        "they are read as stored, as 3D Slicer reads them, so strokes and labels must be drawn on them as stored"]


@pytest.mark.parametrize("orientation, words", [(6, "turned 90° clockwise"), (3, "turned 180°")])
def test_a_jpeg_turned_by_its_exif_orientation_is_read_as_stored_with_one_warning(tmp_path, caplog, orientation,
                                                                                 words):
    path = tmp_path / "photo.jpg"
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([grey(20, 30)] * 3, -1), isVector=True), str(path))
    with_exif_orientation(path, orientation)
    assert image_tags.jpeg_orientation(path) == orientation
    with caplog.at_level("INFO", logger="ScribbleSegLib"):
        volume = volume_io.read_image(path)
    assert volume.shape == (1, 20, 30)  # as stored, as Slicer shows it
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "photo.jpg" in warnings[0] and words in warnings[0], warnings
    with_exif_orientation(path, 1)  # a first EXIF segment that says "as stored"
    caplog.clear()
    with caplog.at_level("INFO", logger="ScribbleSegLib"):
        volume_io.read_image(path)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def write_palette_png(path, indices, palette, transparency=b""):
    """An indexed-colour PNG (colour type 3) of ``indices`` with ``palette`` ``(N, 3)``, as GIMP saves strokes;
    ``transparency``: the alpha of the first entries (a tRNS chunk), as GIMP saves a transparent background."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = indices.shape
    rows = b"".join(b"\x00" + indices[y].astype(np.uint8).tobytes() for y in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0))
                     + chunk(b"PLTE", np.asarray(palette, np.uint8).tobytes())
                     + (chunk(b"tRNS", transparency) if transparency else b"") + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("palette, transparency", [
    ([[0, 0, 0], [255, 0, 0], [0, 0, 255]] + [[0, 0, 0]] * 253, b""),  # padded to 256 with black, as PIL writes it
    ([[255, 255, 255], [255, 0, 0], [0, 255, 0]], b""),  # none on white
    ([[0, 0, 0], [255, 0, 0], [0, 0, 255]], b"\x00"),  # none transparent: ITK reads RGBA
    ([[0, 0, 0], [128, 128, 128], [255, 255, 255]], b""),  # a palette of greys: ITK reads grey values
])
def test_strokes_saved_as_a_palette_png_are_read_as_their_indices(tmp_path, palette, transparency):
    strokes = np.zeros((12, 16), np.uint8)
    strokes[2, 2:10], strokes[9, 4:14] = 1, 2
    path = write_palette_png(tmp_path / "strokes.png", strokes, palette, transparency)
    np.testing.assert_array_equal(image_tags.png_palette(path), np.asarray(palette, np.uint8))
    read = volume_io.read_scribbles(path, (1, 12, 16), volume_io.image_file_grid(path)[1])
    np.testing.assert_array_equal(read[0], strokes)


def write_grey_alpha_png(path, grey, alpha):
    """A grey PNG with an alpha channel (colour type 4), as GIMP saves a mask with transparency."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = grey.shape
    pixels = np.stack([grey, alpha], axis=-1).astype(np.uint8)
    rows = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 4, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def test_a_grey_png_with_an_alpha_channel_is_read_as_gimp_saves_masks_strokes_and_images(tmp_path):
    # ITK cannot read a grey PNG with alpha (GIMP's export of a mask or a stroke layer): it was refused, and the
    # advice to save it as RGBA then met the refusal of an RGBA overlay.
    strokes = np.zeros((12, 16), np.uint8)
    strokes[3, 4:12], strokes[9, 2:14] = 1, 2
    drawn = np.where(strokes > 0, 255, 0).astype(np.uint8)  # the stroke layer: empty pixels transparent
    path = write_grey_alpha_png(tmp_path / "strokes.png", strokes, drawn)
    assert image_tags.png_colour_type(path) == image_tags.PNG_GREY_ALPHA
    grey = tmp_path / "grey.png"
    sitk.WriteImage(sitk.GetImageFromArray(strokes), str(grey))
    assert image_tags.png_colour_type(grey) == 0 and image_tags.png_colour_type(tmp_path / "none.png") is None
    grid = volume_io.image_file_grid(grey)[1]
    np.testing.assert_array_equal(volume_io.read_scribbles(path, (1, 12, 16), grid)[0], strokes)
    np.testing.assert_array_equal(volume_io.read_label(path, (1, 12, 16), grid)[0], strokes > 0)
    # An image with alpha shows on white, as an RGBA one does; its size and pixel size read as ITK reads them.
    shade = np.full((12, 16), 90, np.uint8)
    image = volume_io.read_image(write_grey_alpha_png(tmp_path / "image.png", shade, 255 - drawn))
    assert image.array.shape == (1, 12, 16, 3)
    assert (image.array[0][strokes == 0] == 90).all() and (image.array[0][strokes > 0] == 255).all()
    assert volume_io.image_file_grid(path)[0] == (1, 12, 16)
    # Values under its transparent pixels make it an overlay: refused in one line, as an RGBA one is.
    overlay = write_grey_alpha_png(tmp_path / "overlay.png", np.full_like(strokes, 2), drawn)
    with pytest.raises(ScribbleSegError) as caught:
        volume_io.read_scribbles(overlay, (1, 12, 16), grid)
    message = str(caught.value)
    assert message.startswith(f"{overlay}: its transparency varies") and "\n" not in message
    # A damaged one is named as such.
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ScribbleSegError, match="grey PNG with an alpha channel, damaged or truncated"):
        volume_io.read_image(damaged)


def test_a_palette_png_whose_first_colours_repeat_is_refused_as_strokes(tmp_path):
    strokes = np.zeros((12, 16), np.uint8)
    strokes[2, 2:10], strokes[9, 4:14] = 1, 2
    path = write_palette_png(tmp_path / "strokes.png", strokes, [[0, 0, 0], [255, 0, 0], [255, 0, 0]])
    with pytest.raises(ScribbleSegError, match="strokes.png: an indexed-colour PNG whose colours do not tell"):
        volume_io.read_scribbles(path, (1, 12, 16), volume_io.image_file_grid(path)[1])


def test_a_colour_png_that_is_not_indexed_is_still_refused_as_strokes(tmp_path):
    colours = np.zeros((12, 16, 3), np.uint8)
    colours[2, 2:10] = (255, 0, 0)
    path = tmp_path / "painted.png"
    sitk.WriteImage(sitk.GetImageFromArray(colours, isVector=True), str(path))
    assert image_tags.png_palette(path) is None
    with pytest.raises(ScribbleSegError, match="painted.png: is a colour image whose channels differ"):
        volume_io.read_scribbles(path, (1, 12, 16), volume_io.image_file_grid(path)[1])


@pytest.mark.parametrize("odd_at, words", [(2, "page 3 differs from the others' 16x12"),
                                           (4, "page 5 differs from the others' 16x12"),
                                           (0, "page 1 differs from the others' 16x12")])
def test_a_tiff_stack_with_a_page_of_another_size_is_refused_naming_the_page(tmp_path, odd_at, words):
    # Read as its first page, a 4-section stack with a cropped section or a thumbnail became one section (exit 0).
    pages = [(grey(12, 16, seed=s), 0) for s in range(4)]
    pages.insert(odd_at, (grey(12, 14), 0) if odd_at == 2 else (grey(3, 4), 1))
    path = write_tiff(tmp_path / "stack.tif", pages)
    with pytest.raises(ScribbleSegError, match=f"stack.tif: a TIFF stack of 5 pages whose {words}"):
        volume_io.read_image(path, spacing=(0.01, 0.01, 0.02))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.tif"]


def test_a_tiff_with_its_thumbnail_first_names_the_thumbnail_as_the_odd_page(tmp_path):
    path = write_tiff(tmp_path / "thumb first.tif", [(grey(3, 4), 0), (grey(12, 16), 0)])
    with pytest.raises(ScribbleSegError, match="2 pages whose page 1 differs from the others' 16x12"):
        volume_io.read_image(path)


def test_a_tiff_stack_read_without_a_spacing_says_its_sections_lie_1_mm_apart(tmp_path, caplog):
    stack = sitk.GetImageFromArray(np.stack([np.stack([grey(12, 16, seed=s)] * 3, -1) for s in range(3)]),
                                   isVector=True)
    stack.SetSpacing((0.024, 0.024, 0.048))  # TIFF keeps the pixel size, not the distance between pages
    sitk.WriteImage(stack, str(tmp_path / "stack.tif"))
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        volume = volume_io.read_image(tmp_path / "stack.tif")
    assert volume.shape == (3, 12, 16) and volume.geometry.spacing[2] == 1.0
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'stack.tif'}: a TIFF states no distance between its sections; they are read 1 mm apart "
        "(give the spacing)"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        volume = volume_io.read_image(tmp_path / "stack.tif", spacing=(0.024, 0.024, 0.048))
    assert volume.geometry.spacing == pytest.approx((0.024, 0.024, 0.048)) and not caplog.records


def test_palette_strokes_whose_empty_canvas_is_not_index_0_are_refused(tmp_path):
    # An editor numbered its palette red (heart), green (background), black (nothing): read as indices, the whole
    # canvas became background strokes and the real background strokes heart, and the run gave IoU 0 without a word.
    strokes = np.full((12, 16), 2, np.uint8)
    strokes[2, 2:10], strokes[9, 4:14] = 0, 1
    path = write_palette_png(tmp_path / "strokes.png", strokes, [[255, 0, 0], [0, 255, 0], [0, 0, 0]])
    with pytest.raises(ScribbleSegError) as caught:
        volume_io.read_scribbles(path, (1, 12, 16), volume_io.image_file_grid(path)[1])
    message = str(caught.value)
    assert message.startswith(f"{path}: an indexed-colour PNG whose index 2 (#000000) covers 91% of it")
    assert "canvas at index 0" in message and "\n" not in message
    # Strokes that cover much of a small image, on a canvas of index 0, are read as before.
    strokes = np.zeros((12, 16), np.uint8)
    strokes[:5], strokes[8:] = 1, 2
    path = write_palette_png(tmp_path / "wide.png", strokes, [[0, 0, 0], [255, 0, 0], [0, 255, 0]])
    np.testing.assert_array_equal(volume_io.read_scribbles(path, (1, 12, 16), volume_io.image_file_grid(path)[1])[0],
                                  strokes)
