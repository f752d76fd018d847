"""volume_io and its three modules (image_reading, label_reading, volume_writing): section folders, 3D files,
labels, scribbles, segmentations, writers and their errors."""

import logging
import threading
import tracemalloc

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from ScribbleSegLib import volume_io as vio
from ScribbleSegLib.errors import CancelledError, ScribbleSegError
from ScribbleSegLib.geometry import Geometry, Volume
from ScribbleSegLib.progress import CancelToken

SPACING = (0.02, 0.02, 0.01)
# A rotated, shifted grid, so that any axis-order or direction slip shows.
TILTED = Geometry((0.5, 0.25, 2.0), (10.0, -4.0, 3.5), (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))


def rgb_stack(shape=(4, 18, 26), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape + (3,), dtype=np.uint8)


def write_sections(folder, planes, suffix=".png", names=None, is_vector=True):
    folder.mkdir(exist_ok=True)
    for k, plane in enumerate(planes):
        name = names[k] if names else f"sec{k + 1}{suffix}"
        sitk.WriteImage(sitk.GetImageFromArray(plane, isVector=is_vector), str(folder / name))
    return folder


def one_line_error(excinfo, *needles):
    message = str(excinfo.value)
    assert len(message.splitlines()) == 1, message
    for needle in needles:
        assert str(needle) in message, message
    return message


def ball(shape=(6, 20, 24), center=(3, 10, 12), radius=5):
    z, y, x = np.indices(shape)
    return (((z - center[0]) * 2) ** 2 + (y - center[1]) ** 2 + (x - center[2]) ** 2 <= radius ** 2).astype(np.uint8)


# ---------------------------------------------------------------------------
# Section folders and 3D images
# ---------------------------------------------------------------------------


def test_list_section_files_natural_order_and_filter(tmp_path):
    for name in ["s10.png", "s2.PNG", "s1.tif", "S3.JPEG", "s4.tiff", "s5.jpg", ".s0.png", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "s6.png").mkdir()
    names = [p.name for p in vio.list_section_files(tmp_path)]
    assert names == ["s1.tif", "s2.PNG", "S3.JPEG", "s4.tiff", "s5.jpg", "s10.png"]


def test_section_names_with_a_decimal_point_are_listed_in_their_order(tmp_path):
    # "z1.png" against "z1.5.png": the extension's dot sorted after the number's, and z1.5 came before z1.
    names = ["z0.5.png", "z1.png", "z1.5.png", "z2.png", "z2.5.png", "z10.png"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in vio.list_section_files(tmp_path)] == names


def test_a_folder_with_one_section_in_two_formats_is_refused(tmp_path):
    # s1.png beside s1.tif made an 80-section stack of 40 sections, each twice, and took 40-section strokes into it.
    for name in ("s1.png", "s2.png", "s1.TIF"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ScribbleSegError, match=r"s1.png and s1.TIF are one section saved in two formats"):
        vio.list_section_files(tmp_path)


def test_a_file_without_a_number_among_numbered_sections_is_refused(tmp_path):
    # overview.png beside s1.png ... s8.png was stacked as section 0 without a word, and every section moved by one.
    for name in ("s1.png", "s2.png", "s10.png", "overview.png"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ScribbleSegError) as caught:
        vio.list_section_files(tmp_path)
    assert str(caught.value) == (f"{tmp_path}: overview.png has no section number, among files numbered as sections "
                                 "(s1.png, s2.png, ...); move it out of the folder")
    # Named without numbers at all, the sections keep their (name) order; one numbered file among others is no rule.
    for folder, names in (("words", ("apex.png", "base.png", "middle.png")), ("one", ("a.png", "b1.png"))):
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_bytes(b"")
        assert [p.name for p in vio.list_section_files(tmp_path / folder)] == sorted(names)


def test_a_folder_whose_names_give_one_number_twice_is_refused(tmp_path):
    # img_10 and img_010 sort as one number: either order would be a guess at which section comes first.
    for name in ("img_9.png", "img_10.png", "img_010.png", "img_11.png"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.list_section_files(tmp_path)
    one_line_error(excinfo, str(tmp_path), "img_010.png and img_10.png give the same section number")
    (tmp_path / "img_010.png").unlink()
    assert [p.name for p in vio.list_section_files(tmp_path)] == ["img_9.png", "img_10.png", "img_11.png"]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_folder_of_rgb_sections_reads_in_natural_order(tmp_path, suffix):
    stack = rgb_stack((11, 9, 13))
    # Written as s1 .. s11, so plain string order (s1, s10, s11, s2, ...) would scramble them.
    write_sections(tmp_path / "sec", stack, suffix)
    volume = vio.read_image(tmp_path / "sec", spacing=SPACING)
    assert volume.array.dtype == np.uint8 and volume.array.shape == (11, 9, 13, 3)
    np.testing.assert_array_equal(volume.array, stack)
    assert volume.geometry == Geometry(SPACING)


def test_jpeg_sections_read_close_to_the_original(tmp_path):
    stack = np.zeros((2, 16, 24, 3), np.uint8)
    stack[..., 0], stack[..., 1], stack[..., 2] = 200, 120, 60
    write_sections(tmp_path / "sec", stack, ".jpg")
    volume = vio.read_image(tmp_path / "sec", spacing=SPACING)
    assert volume.array.shape == stack.shape
    assert np.abs(volume.array.astype(int) - stack).max() <= 4


def test_folder_and_nrrd_of_the_same_data_load_the_same(tmp_path):
    stack = rgb_stack((5, 12, 20))
    folder_volume = vio.read_image(write_sections(tmp_path / "sec", stack), spacing=SPACING)
    vio.write_rgb_volume(tmp_path / "v.nrrd", Volume(stack, Geometry(SPACING)))
    file_volume = vio.read_image(tmp_path / "v.nrrd")
    np.testing.assert_array_equal(folder_volume.array, file_volume.array)
    assert folder_volume.geometry == file_volume.geometry
    # Downsampled, both paths agree too.
    a = vio.read_image(tmp_path / "sec", spacing=SPACING, downsample=3)
    b = vio.read_image(tmp_path / "v.nrrd", downsample=3)
    np.testing.assert_array_equal(a.array, b.array)
    assert a.geometry == b.geometry


def test_rgb_nrrd_is_a_colour_vector_volume_and_keeps_geometry(tmp_path):
    stack = rgb_stack((3, 7, 9))
    vio.write_rgb_volume(tmp_path / "v.nrrd", Volume(stack, TILTED))
    header = (tmp_path / "v.nrrd").read_bytes()[:600].decode("latin-1")
    assert "kinds: vector domain domain domain" in header
    assert "encoding: gzip" in header
    volume = vio.read_image(tmp_path / "v.nrrd")
    np.testing.assert_array_equal(volume.array, stack)
    assert not TILTED.mismatch(volume.geometry, rtol=1e-9)


def test_an_rgb_file_is_read_without_a_copy_and_its_pixels_outlive_the_reader(tmp_path):
    import gc

    stack = rgb_stack((3, 7, 9))
    vio.write_rgb_volume(tmp_path / "v.nrrd", Volume(stack, TILTED))
    array = vio.read_image(tmp_path / "v.nrrd").array
    # The reader's own buffer, held by the array: nothing else refers to the image now.
    assert not array.flags.owndata and array.flags.writeable
    gc.collect()
    _ = [np.full(stack.shape, 7, np.uint8) for _ in range(8)]  # memory a freed buffer would be reused for
    np.testing.assert_array_equal(array, stack)
    array[0, 0, 0] = 0  # the pipeline may write to what it read; the file stays as it was
    np.testing.assert_array_equal(vio.read_image(tmp_path / "v.nrrd").array, stack)


def test_a_geometry_whose_direction_is_no_rotation_is_refused_when_made():
    # A singular direction was taken: surfaces came out as one point, a labelmap write raised ITK's own error and a
    # segmentation was written that would not read back.
    with pytest.raises(ScribbleSegError, match=r"^direction must hold the axes' direction cosines .*determinant 0$"):
        Geometry((0.06, 0.06, 0.12), direction=(0.0,) * 9)
    with pytest.raises(ScribbleSegError, match="column lengths 1, 1.41, 1"):  # skewed: an axis scaled
        Geometry((0.06, 0.06, 0.12), direction=(1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    flipped = Geometry((0.06, 0.06, 0.12), direction=(-1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0))
    assert flipped.direction[0] == -1.0
    with pytest.raises(ScribbleSegError, match=r"^scan_pixel must be None or two pixel sizes"):
        Volume(np.zeros((1, 2, 2, 3), np.uint8), flipped, scan_pixel=(np.nan, np.nan))


def test_grey_and_rgba_sections_become_rgb(tmp_path):
    grey = np.random.default_rng(1).integers(0, 256, (2, 8, 10), dtype=np.uint8)
    write_sections(tmp_path / "grey", grey, is_vector=False)
    volume = vio.read_image(tmp_path / "grey", spacing=SPACING)
    np.testing.assert_array_equal(volume.array, np.repeat(grey[..., None], 3, axis=3))

    rgba = np.random.default_rng(2).integers(0, 256, (2, 8, 10, 4), dtype=np.uint8)
    rgba[:, :5, :, 3] = 255  # an alpha opaque over most of the tissue, partly transparent at its edges
    write_sections(tmp_path / "rgba", rgba)
    volume = vio.read_image(tmp_path / "rgba", spacing=SPACING)
    # As the sections show on white: colour times alpha, white times the rest.
    alpha = rgba[..., 3:].astype(float) / 255
    np.testing.assert_array_equal(volume.array, np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha)))
    opaque = rgba.copy()
    opaque[..., 3] = 255
    write_sections(tmp_path / "opaque", opaque)
    np.testing.assert_array_equal(vio.read_image(tmp_path / "opaque", spacing=SPACING).array, rgba[..., :3])


@pytest.mark.parametrize("components", [2, 4])
def test_a_last_component_that_is_no_transparency_is_refused_in_one_line(tmp_path, components):
    """Two colour channels saved as 2 components were read as grey and alpha without a word (63 % of the volume
    called heart); a fourth channel that is a stain, not an alpha, the same way."""
    stack = rgb_stack((2, 12, 20))
    channels = stack[..., :2] if components == 2 else np.concatenate([stack, stack[..., 1:2]], axis=3)
    image = sitk.GetImageFromArray(channels, isVector=True)
    image.SetSpacing(SPACING)
    sitk.WriteImage(image, str(tmp_path / "channels.nrrd"))
    with pytest.raises(ScribbleSegError, match=f"channels.nrrd: has {components} components per pixel, read as "
                       r".* and alpha, but the last is no transparency \(\d+ of its \d+ pixels are") as error:
        vio.read_image(tmp_path / "channels.nrrd")
    assert "\n" not in str(error.value)


def test_transparent_glass_stored_black_reads_as_white_glass(tmp_path):
    # Registration software pads aligned sections with transparent pixels, often black beneath.
    stack = rgb_stack((2, 12, 20))
    rgba = np.concatenate([stack, np.full(stack.shape[:3] + (1,), 255, np.uint8)], axis=3)
    rgba[:, :, :5] = 0  # transparent black glass on the left
    write_sections(tmp_path / "sec", rgba)
    volume = vio.read_image(tmp_path / "sec", spacing=SPACING)
    assert (volume.array[:, :, :5] == 255).all()
    np.testing.assert_array_equal(volume.array[:, :, 5:], stack[:, :, 5:])
    image = sitk.GetImageFromArray(rgba, isVector=True)  # a 3D RGBA file the same way
    image.SetSpacing(SPACING)
    sitk.WriteImage(image, str(tmp_path / "rgba.nrrd"))
    np.testing.assert_array_equal(vio.read_image(tmp_path / "rgba.nrrd").array, volume.array)


def test_sixteen_bit_transparent_glass_reads_as_white_glass_as_eight_bit_does(tmp_path):
    # A 16-bit RGBA export kept its transparent glass black: the alpha of all but 8-bit images was dropped.
    stack = rgb_stack((2, 12, 20))
    rgba = np.concatenate([stack, np.full(stack.shape[:3] + (1,), 255, np.uint8)], axis=3)
    rgba[:, :, :5] = 0  # transparent black glass on the left
    rgba[:, :, 5, 3] = 128  # a half-transparent column
    write_sections(tmp_path / "eight", rgba)
    write_sections(tmp_path / "sixteen", rgba.astype(np.uint16) * 257)
    eight = vio.read_image(tmp_path / "eight", spacing=SPACING).array
    sixteen = vio.read_image(tmp_path / "sixteen", spacing=SPACING).array
    assert (sixteen[:, :, :5] == 255).all()
    np.testing.assert_allclose(sixteen, eight, atol=1)  # the same picture, to a rounding of the half-transparent
    image = sitk.GetImageFromArray(rgba.astype(np.uint16) * 257, isVector=True)  # one 3D 16-bit RGBA file
    image.SetSpacing(SPACING)
    sitk.WriteImage(image, str(tmp_path / "rgba16.nrrd"))
    np.testing.assert_array_equal(vio.read_image(tmp_path / "rgba16.nrrd").array, sixteen)


def test_sixteen_bit_sections_map_from_the_full_scale_of_their_bit_depth(tmp_path):
    # A 16-bit export of an 8-bit scan (value x 257) reads as the 8-bit scan did: stretched from its own darkest
    # to its brightest value, it had scored 0.801 against 0.818.
    eight = rgb_stack((2, 4, 6))
    write_sections(tmp_path / "sec16", eight.astype(np.uint16) * 257)
    np.testing.assert_array_equal(vio.read_image(tmp_path / "sec16", spacing=SPACING).array, eight)
    # A 12-bit camera's values in 16 bits (up to 4095): 0..4095 maps to 0..255, the same for the whole stack.
    planes = np.zeros((2, 4, 6), np.uint16)
    planes[0] = 1000
    planes[1] = 3000
    planes[1, 0, 0] = 4095
    write_sections(tmp_path / "sec12", planes, is_vector=False)
    volume = vio.read_image(tmp_path / "sec12", spacing=SPACING)
    assert volume.array[0, 0, 0, 0] == round(1000 / 4095 * 255)
    assert volume.array[1, 1, 1, 0] == round(3000 / 4095 * 255)
    assert volume.array[1, 0, 0, 0] == 255


def test_scalar_float_volume_rescales_from_min_max(tmp_path, caplog):
    data = np.linspace(-1.0, 3.0, 2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    data[0, 0, 1] = np.nan
    data[0, 0, 2] = np.inf
    image = sitk.GetImageFromArray(data)
    image.SetSpacing((0.3, 0.3, 1.5))
    sitk.WriteImage(image, str(tmp_path / "f.nrrd"))
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        volume = vio.read_image(tmp_path / "f.nrrd")
    assert volume.array.shape == (2, 3, 5, 3)
    assert volume.array[0, 0, 0, 0] == 0 and volume.array[-1, -1, -1, 0] == 255
    assert volume.array[0, 0, 1, 0] == 0 and volume.array[0, 0, 2, 0] == 255  # NaN, +inf
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'f.nrrd'}: 2 NaN or infinite values, read as the darkest (NaN, -inf) or brightest (+inf) value"]
    assert volume.geometry.spacing == (0.3, 0.3, 1.5)


@pytest.mark.parametrize("kind", ["float within [0, 1]", "float within [0, 255]", "int16 without negatives"])
def test_a_float_image_within_0_1_and_a_signed_one_without_negatives_read_as_the_same_scan_in_8_bits(tmp_path, kind):
    # They were stretched from their darkest pixel (here 31/255) to black: other colours than the 8-bit scan's.
    eight = np.random.default_rng(2).integers(31, 250, (2, 5, 6, 3)).astype(np.uint8)
    data = {"float within [0, 1]": eight / np.float32(255), "float within [0, 255]": eight.astype(np.float32),
            "int16 without negatives": eight.astype(np.int16)}[kind]
    sitk.WriteImage(sitk.GetImageFromArray(data, isVector=True), str(tmp_path / "v.nrrd"))
    np.testing.assert_array_equal(vio.read_image(tmp_path / "v.nrrd").array, eight)


def test_a_float_image_or_folder_without_one_finite_value_is_refused(tmp_path, caplog):
    image = sitk.GetImageFromArray(np.full((2, 3, 5), np.nan, np.float32))
    sitk.WriteImage(image, str(tmp_path / "nan.nrrd"))
    with caplog.at_level("WARNING", logger="ScribbleSegLib"), pytest.raises(ScribbleSegError) as excinfo:
        vio.read_image(tmp_path / "nan.nrrd")
    one_line_error(excinfo, "nan.nrrd", "no finite value")
    assert caplog.records == []  # the error alone, no warning about the NaN values before it
    folder = tmp_path / "sections"
    folder.mkdir()
    for k in range(2):
        sitk.WriteImage(sitk.GetImageFromArray(np.full((3, 5), np.nan, np.float32)), str(folder / f"{k}.tif"))
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_image(folder, spacing=(0.3, 0.3, 1.5))
    one_line_error(excinfo, "sections", "no section holds a finite value")
    # One section of NaN among finite ones is read (as the darkest value), with the warning.
    sitk.WriteImage(sitk.GetImageFromArray(np.linspace(0, 1, 15, dtype=np.float32).reshape(3, 5)),
                    str(folder / "1.tif"))
    assert vio.read_image(folder, spacing=(0.3, 0.3, 1.5)).array[0].max() == 0


def test_sections_without_a_spacing_are_refused_naming_the_parameter(tmp_path, capsys):
    from ScribbleSegLib import cli

    folder = tmp_path / "sections"
    folder.mkdir()
    for k in range(2):
        sitk.WriteImage(sitk.GetImageFromArray(rgb_stack((1, 8, 8))[0], isVector=True), str(folder / f"{k}.png"))
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_image(folder)
    one_line_error(excinfo, "sections", "needs the voxel spacing X Y Z in mm (spacing)")
    assert "--" not in str(excinfo.value)  # the library names its parameter; the command line, its flag
    (tmp_path / "s.nrrd").write_bytes(b"")
    assert cli.main(["segment", "--image", str(folder), "--scribbles", str(tmp_path / "s.nrrd"), "--model",
                     "starter", "--out", str(tmp_path / "o.seg.nrrd"), "--quiet"]) == 2
    assert "needs the voxel spacing X Y Z in mm (--spacing)" in capsys.readouterr().err
    # The command imports torch on a thread while it reads; let it end here, not inside a later test's count.
    for thread in threading.enumerate():
        if thread.name == "scribbleseg-imports":
            thread.join()


def test_spacing_given_overrides_a_files_spacing_only(tmp_path):
    vio.write_rgb_volume(tmp_path / "v.nrrd", Volume(rgb_stack((2, 4, 4)), TILTED))
    volume = vio.read_image(tmp_path / "v.nrrd", spacing=(1.0, 1.0, 3.0))
    assert volume.geometry.spacing == (1.0, 1.0, 3.0)
    np.testing.assert_allclose(volume.geometry.origin, TILTED.origin)
    np.testing.assert_allclose(volume.geometry.direction, TILTED.direction)


def test_downsample_is_an_area_average_with_the_remainder_cropped(tmp_path):
    stack = rgb_stack((3, 10, 13))  # 10 x 13 at factor 4 -> 2 x 3, dropping 2 rows and 1 column
    write_sections(tmp_path / "sec", stack)
    volume = vio.read_image(tmp_path / "sec", spacing=SPACING, downsample=4)
    expected = stack[:, :8, :12].reshape(3, 2, 4, 3, 4, 3).astype(float).mean(axis=(2, 4))
    assert volume.array.shape == (3, 2, 3, 3)
    np.testing.assert_array_equal(volume.array, np.floor(expected + 0.5).astype(np.uint8))
    assert volume.geometry == Geometry(SPACING).scaled((4, 4, 1))
    # The first output voxel's centre is the centre of its 4 x 4 block.
    np.testing.assert_allclose(volume.geometry.origin, (1.5 * SPACING[0], 1.5 * SPACING[1], 0.0))


@pytest.mark.parametrize("factor", [2, 17])  # 17: block sums overflow uint16
def test_downsample_rounds_halves_up_for_grey_and_large_factors(tmp_path, factor):
    grey = np.random.default_rng(4).integers(0, 256, (2, 2 * factor, 3 * factor), dtype=np.uint8)
    # First block: floor(n / 2) ones, the rest zeros -> mean exactly 0.5 for factor 2, just under for 17.
    block = np.zeros(factor * factor, np.uint8)
    block[: factor * factor // 2] = 1
    grey[0, :factor, :factor] = block.reshape(factor, factor)
    write_sections(tmp_path / "sec", grey, is_vector=False)
    volume = vio.read_image(tmp_path / "sec", spacing=SPACING, downsample=factor)
    expected = grey.reshape(2, 2, factor, 3, factor).astype(float).mean(axis=(2, 4))
    np.testing.assert_array_equal(volume.array[..., 1], np.floor(expected + 0.5))
    assert volume.array[0, 0, 0, 0] == (1 if (factor * factor) % 2 == 0 else 0)


def test_downsampled_folder_read_holds_no_full_resolution_stack(tmp_path):
    stack = rgb_stack((12, 128, 128))
    write_sections(tmp_path / "sec", stack)
    tracemalloc.start()
    try:
        volume = vio.read_image(tmp_path / "sec", spacing=SPACING, downsample=8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert volume.array.shape == (12, 16, 16, 3)
    # numpy allocations stay near the small output plus one section's reduction, far below the full stack.
    assert peak < stack.nbytes / 4


def test_progress_and_cancel(tmp_path):
    write_sections(tmp_path / "sec", rgb_stack((4, 6, 6)))
    seen = []
    vio.read_image(tmp_path / "sec", spacing=SPACING, progress=lambda s, f, m: seen.append((s, f)))
    assert seen[-1] == ("read", 1.0) and len(seen) == 4
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        vio.read_image(tmp_path / "sec", spacing=SPACING, cancel=token)


# ---------------------------------------------------------------------------
# Bad images
# ---------------------------------------------------------------------------


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_image(tmp_path, spacing=SPACING)
    one_line_error(excinfo, tmp_path, "no section images")


def test_sections_of_different_sizes_name_the_file_and_both_sizes(tmp_path):
    planes = [np.zeros((8, 10, 3), np.uint8), np.zeros((8, 10, 3), np.uint8), np.zeros((9, 10, 3), np.uint8)]
    write_sections(tmp_path / "sec", planes)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_image(tmp_path / "sec", spacing=SPACING)
    one_line_error(excinfo, "sec3.png", "10x9", "10x8")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_truncated_section_is_refused(tmp_path, suffix):
    write_sections(tmp_path / "sec", rgb_stack((2, 32, 32)), suffix)
    damaged = tmp_path / "sec" / f"sec2{suffix}"
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_image(tmp_path / "sec", spacing=SPACING)
    one_line_error(excinfo, damaged)


def test_not_an_image(tmp_path):
    (tmp_path / "v.nrrd").write_text("this is not an image")
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_image(tmp_path / "v.nrrd")
    one_line_error(excinfo, tmp_path / "v.nrrd", "cannot be read")


@pytest.mark.parametrize("spacing", [None, (0.1, 0.1), (0.1, 0.0, 0.1), (0.1, -1, 0.1), (0.1, float("nan"), 1)])
def test_folder_needs_positive_spacing(tmp_path, spacing):
    write_sections(tmp_path / "sec", rgb_stack((2, 4, 4)))
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_image(tmp_path / "sec", spacing=spacing)
    one_line_error(excinfo, tmp_path / "sec", "spacing")


@pytest.mark.parametrize("factor", [0, -2, 1.5, "two", None])
def test_bad_downsample_factor(tmp_path, factor):
    write_sections(tmp_path / "sec", rgb_stack((2, 4, 4)))
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_image(tmp_path / "sec", spacing=SPACING, downsample=factor)
    one_line_error(excinfo, "downsample")


def test_downsample_larger_than_the_sections(tmp_path):
    write_sections(tmp_path / "sec", rgb_stack((2, 4, 4)))
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_image(tmp_path / "sec", spacing=SPACING, downsample=8)
    one_line_error(excinfo, tmp_path / "sec", "4x4")


def test_missing_image(tmp_path):
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_image(tmp_path / "nothing.nrrd")
    one_line_error(excinfo, "nothing.nrrd")


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------


def test_labelmap_and_probability_round_trip(tmp_path):
    labels = ball()
    vio.write_labelmap(tmp_path / "l.nrrd", labels, TILTED)
    image = sitk.ReadImage(str(tmp_path / "l.nrrd"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), labels)
    np.testing.assert_array_equal(vio.read_label(tmp_path / "l.nrrd", labels.shape, TILTED), labels)

    prob = np.random.default_rng(3).random(labels.shape).astype(np.float32)
    vio.write_probability(tmp_path / "p.nrrd", prob, TILTED)
    image = sitk.ReadImage(str(tmp_path / "p.nrrd"))
    assert image.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), prob)
    assert not TILTED.mismatch(Geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection()), rtol=1e-9)


@pytest.mark.parametrize("name", ["lab.png", "lab.JPG", "lab.bmp"])
def test_a_volume_written_to_a_one_image_format_is_refused_not_cut_to_its_first_section(tmp_path, name):
    # ITK wrote section 0 alone to lab.png, without a word: the other sections were lost.
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[2, 2:6, 2:6] = 1
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.write_labelmap(tmp_path / name, labels, Geometry((0.5, 0.5, 2.0)))
    one_line_error(excinfo, name, "holds one section, the volume has 4", ".nrrd", "write_tile_mask")
    assert list(tmp_path.iterdir()) == []
    vio.write_labelmap(tmp_path / "one.png", labels[2:3], Geometry((0.5, 0.5, 2.0)))  # one section: as before
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "one.png"))).sum() == 16


def test_probability_with_nan_writes_nothing(tmp_path):
    prob = np.zeros((2, 3, 4), np.float32)
    prob[1, 1, 1] = np.nan
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.write_probability(tmp_path / "p.nrrd", prob, Geometry(SPACING))
    one_line_error(excinfo, "p.nrrd", "NaN")
    assert list(tmp_path.iterdir()) == []


def test_a_probability_map_outside_0_to_1_writes_nothing(tmp_path):
    # A logit map (5.0) was written as a probability without a word; a float's rounding past 1 is not refused.
    prob = np.zeros((2, 3, 4), np.float32)
    prob[1, 1, 1] = 5.0
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.write_probability(tmp_path / "p.nrrd", prob, Geometry(SPACING))
    one_line_error(excinfo, "p.nrrd", "holds values from 0 to 5, outside 0 to 1; nothing written")
    assert list(tmp_path.iterdir()) == []
    prob[1, 1, 1] = np.float32(1.0) + np.float32(2 ** -23)
    vio.write_probability(tmp_path / "p.nrrd", prob, Geometry(SPACING))


def test_rgb_writer_refuses_other_arrays(tmp_path):
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.write_rgb_volume(tmp_path / "v.nrrd", Volume(rgb_stack().astype(np.float32), Geometry(SPACING)))
    one_line_error(excinfo, "v.nrrd", "uint8")
    # An array without its geometry: a traceback from inside the writer before.
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.write_rgb_volume(tmp_path / "v.nrrd", rgb_stack())
    one_line_error(excinfo, "v.nrrd", "volume must be a Volume (the RGB array and its geometry), got an array of "
                   "shape")
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.write_rgb_volume(tmp_path / "v.nrrd", Volume(rgb_stack()[..., 0], Geometry(SPACING)))
    one_line_error(excinfo, "v.nrrd", "(Z, Y, X, 3)")
    assert list(tmp_path.iterdir()) == []


def test_writing_into_a_missing_folder_fails_cleanly(tmp_path):
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.write_labelmap(tmp_path / "nope" / "l.nrrd", ball(), Geometry(SPACING))
    one_line_error(excinfo, "nope")
    assert list(tmp_path.iterdir()) == []


def test_segmentation_round_trip_through_slicerio(tmp_path):
    heart = ball()
    background = np.zeros_like(heart)
    background[:, :3, :] = 1
    overlap = np.zeros_like(heart)
    overlap[2:4, 8:12, 10:14] = 1  # inside the heart: slicerio must put it in a second layer
    path = tmp_path / "s.seg.nrrd"
    vio.write_segmentation(path, [("heart", heart, vio.HEART_COLOR), ("background", background, vio.BACKGROUND_COLOR),
                                  ("Core", overlap, (0.1, 0.9, 0.3))], TILTED)
    raw = slicerio.read_segmentation(str(path))
    assert [s["name"] for s in raw["segments"]] == ["heart", "background", "Core"]
    assert [s["color"] for s in raw["segments"]] == [list(vio.HEART_COLOR), list(vio.BACKGROUND_COLOR), [0.1, 0.9, 0.3]]
    np.testing.assert_allclose(raw["ijkToLPS"], TILTED.ijk_to_lps(), atol=1e-12)
    np.testing.assert_array_equal(slicerio.segment_mask(raw, "heart"), heart.transpose(2, 1, 0) > 0)

    # The layers, label values and extents are those slicerio.add_segment gives (the writer does its work itself).
    reference = slicerio.create_segmentation(heart.shape[::-1], TILTED.ijk_to_lps())
    for name, mask, color in (("heart", heart, vio.HEART_COLOR), ("background", background, vio.BACKGROUND_COLOR),
                              ("Core", overlap, (0.1, 0.9, 0.3))):
        slicerio.add_segment(reference, mask.transpose(2, 1, 0) != 0, {"id": name, "name": name})
    assert [(s["layer"], s["labelValue"], s["extent"]) for s in raw["segments"]] == \
        [(s["layer"], s["labelValue"], s["extent"]) for s in reference["segments"]]
    assert raw["segments"][2]["layer"] == 1  # the overlapping segment did take a second layer
    np.testing.assert_array_equal(raw["voxels"], reference["voxels"])

    masks, geometry = vio.read_segmentation(path)
    assert set(masks) == {"heart", "background", "core"}
    for name, mask in (("heart", heart), ("background", background), ("core", overlap)):
        assert masks[name].dtype == np.uint8
        np.testing.assert_array_equal(masks[name], mask)
    assert not TILTED.mismatch(geometry, rtol=1e-9)


def test_an_empty_segment_is_written_as_slicerio_writes_it(tmp_path):
    path = tmp_path / "s.seg.nrrd"
    vio.write_segmentation(path, [("heart", np.zeros((4, 5, 6), np.uint8), vio.HEART_COLOR)], Geometry(SPACING))
    reference = slicerio.create_segmentation((6, 5, 4), Geometry(SPACING).ijk_to_lps())
    expected = slicerio.add_segment(reference, np.zeros((6, 5, 4), bool), {"id": "heart"})
    (segment,) = slicerio.read_segmentation(str(path))["segments"]
    assert (segment["layer"], segment["labelValue"], segment["extent"]) == \
        (expected["layer"], expected["labelValue"], expected["extent"]) == (0, 1, [0, -1, 0, -1, 0, -1])


def test_segmentation_writer_refuses_bad_requests(tmp_path):
    g = Geometry(SPACING)
    with pytest.raises(ScribbleSegError):
        vio.write_segmentation(tmp_path / "s.nrrd", [("heart", ball(), vio.HEART_COLOR)], g)
    with pytest.raises(ScribbleSegError):
        vio.write_segmentation(tmp_path / "s.seg.nrrd", [("heart", ball(), vio.HEART_COLOR),
                                                         ("Heart", ball(), vio.HEART_COLOR)], g)
    with pytest.raises(ScribbleSegError):
        vio.write_segmentation(tmp_path / "s.seg.nrrd", [("heart", ball(), (1.0, 2.0, 0.0))], g)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# Labels and scribbles
# ---------------------------------------------------------------------------


def test_label_from_labelmap_and_segmentation(tmp_path):
    heart = ball()
    values = heart * 3  # any positive value is heart
    vio.write_labelmap(tmp_path / "l.nrrd", values, TILTED)
    np.testing.assert_array_equal(vio.read_label(tmp_path / "l.nrrd", heart.shape, TILTED), heart)

    vio.write_segmentation(tmp_path / "l.seg.nrrd", [("Heart", heart, vio.HEART_COLOR)], TILTED)
    label = vio.read_label(tmp_path / "l.seg.nrrd", heart.shape, TILTED)
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, heart)

    volume = vio.read_label_volume(tmp_path / "l.seg.nrrd")
    np.testing.assert_array_equal(volume.array, heart)
    assert not TILTED.mismatch(volume.geometry, rtol=1e-9)


def test_a_label_segmentation_gives_its_heart_segment_or_its_only_segment(tmp_path):
    heart = ball()
    only = tmp_path / "gland.seg.nrrd"
    vio.write_segmentation(only, [("Gland", heart, vio.HEART_COLOR)], TILTED)
    np.testing.assert_array_equal(vio.read_label(only, heart.shape, TILTED), heart)
    np.testing.assert_array_equal(vio.read_label_volume(only).array, heart)

    two = tmp_path / "two.seg.nrrd"
    vio.write_segmentation(two, [("Gland", heart, vio.HEART_COLOR), ("Lumen", 1 - heart, (0.5, 0.5, 0.5))], TILTED)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_label(two, heart.shape, TILTED)
    one_line_error(excinfo, "two.seg.nrrd", "no segment named 'heart'", "(segments: 'Gland', 'Lumen')",
                   "only segment")


def _renamed_segments(path, names):
    """``path``'s segments renamed in its header, written UTF-8 as Slicer writes names."""
    data = path.read_bytes()
    end = data.index(b"\n\n")
    head = data[:end]
    for old, new in names.items():
        head = head.replace(f"_Name:={old}\n".encode(), f"_Name:={new}\n".encode("utf-8"))
    path.write_bytes(head + data[end:])


def test_segment_names_beyond_ascii_are_read_as_slicer_writes_them(tmp_path):
    # The NRRD reader dropped every non-ASCII character: both segments were named '' and merged, and evaluate
    # scored the heart and the lung together as the heart.
    heart = ball()
    lung = np.zeros_like(heart)
    lung[0, :2, :2] = 1
    two = tmp_path / "two.seg.nrrd"
    vio.write_segmentation(two, [("Gland", heart, vio.HEART_COLOR), ("Lumen", lung, (0.5, 0.5, 0.5))], TILTED)
    _renamed_segments(two, {"Gland": "Сердце", "Lumen": "Лёгкое"})
    masks, _ = vio.read_segmentation(two)
    assert list(masks) == ["сердце", "лёгкое"]
    np.testing.assert_array_equal(masks["сердце"], heart)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_label(two, heart.shape, TILTED)
    one_line_error(excinfo, "two.seg.nrrd", "no segment named 'heart'", "(segments: 'Сердце', 'Лёгкое')")
    # A heart named in another script is still the file's only segment, and a 'Heart' next to it is found.
    _renamed_segments(two, {"Лёгкое": "Heart"})
    np.testing.assert_array_equal(vio.read_label(two, heart.shape, TILTED), lung)


def test_segments_whose_names_differ_only_in_case_are_read_as_one_with_a_warning(tmp_path, caplog):
    # 'heart' beside 'Heart': both were read as heart strokes without a word, and the result moved with them.
    first, second, background = (np.zeros((3, 8, 8), np.uint8) for _ in range(3))
    first[1, 2, 2:5], second[1, 5, 2:5], background[1, 7, :] = 1, 1, 1
    path = tmp_path / "strokes.seg.nrrd"
    geometry = Geometry((0.5, 0.5, 1.0))
    vio.write_segmentation(path, [("heart", first, vio.HEART_COLOR), ("other", second, (1.0, 0.5, 0.0)),
                                  ("background", background, (0.0, 0.0, 1.0))], geometry)
    _renamed_segments(path, {"other": "Heart"})  # as Slicer lets one name two segments; our writer does not
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        strokes = vio.read_scribbles(path, (3, 8, 8), geometry)
    np.testing.assert_array_equal(strokes == 1, (first | second) > 0)
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert line == (f"{path}: segments 'heart' and 'Heart' are read as one (names are matched ignoring case); "
                    "rename or remove the one that is not meant")
    caplog.clear()
    vio.write_segmentation(path, [("heart", first, vio.HEART_COLOR), ("background", background, (0.0, 0.0, 1.0))],
                           geometry)
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        vio.read_scribbles(path, (3, 8, 8), geometry)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize("value, needle", [(-1.0, "negative"), (0.5, "non-integer values (values in [0, 1]: a "
                                                                  "probability? give the segmentation itself"),
                                           (2.5, "non-integer values")])
def test_label_values_are_checked(tmp_path, value, needle):
    data = ball().astype(np.float32)
    data[0, 0, 0] = value
    image = sitk.GetImageFromArray(data)
    sitk.WriteImage(image, str(tmp_path / "l.nrrd"))
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_label(tmp_path / "l.nrrd", data.shape, Geometry((1.0, 1.0, 1.0)))
    one_line_error(excinfo, "l.nrrd", needle)


def test_scribbles_from_labelmap_and_segmentation(tmp_path, caplog):
    heart = ball()
    background = np.zeros_like(heart)
    background[:, :2, :] = 1
    scribbles = heart + 2 * background
    vio.write_labelmap(tmp_path / "s.nrrd", scribbles, TILTED)
    np.testing.assert_array_equal(vio.read_scribbles(tmp_path / "s.nrrd", heart.shape, TILTED), scribbles)

    both = np.zeros_like(heart)
    both[3, 10, 12] = 1  # painted in both segments: counts as not scribbled
    vio.write_segmentation(tmp_path / "s.seg.nrrd", [("HEART", heart, vio.HEART_COLOR),
                                                     ("Background", background | both, vio.BACKGROUND_COLOR),
                                                     ("notes", heart, (1.0, 1.0, 0.0))], TILTED)
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        read = vio.read_scribbles(tmp_path / "s.seg.nrrd", heart.shape, TILTED)
    # A segment of another name is left out, and said so (a 'liver' painted as "not heart" was dropped silently).
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records][0] == (
        "segment(s) 'notes' are not strokes (only 'heart' and 'background' are) and are left out; to mark that "
        "tissue as not heart, paint it in 'background'")
    expected = scribbles.copy()
    expected[3, 10, 12] = 0
    np.testing.assert_array_equal(read, expected)


def test_scribble_values_outside_0_1_2_are_refused(tmp_path):
    scribbles = ball()
    scribbles[0, 0, :2] = 2
    scribbles[0, 1, 0] = 7
    vio.write_labelmap(tmp_path / "s.nrrd", scribbles, TILTED)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_scribbles(tmp_path / "s.nrrd", scribbles.shape, TILTED)
    one_line_error(excinfo, "s.nrrd", "7")


@pytest.mark.parametrize("missing", ["heart", "background"])
def test_scribbles_need_heart_and_background(tmp_path, missing):
    heart = ball()
    background = np.zeros_like(heart)
    background[:, :2, :] = 1
    masks = {"heart": heart, "background": background}
    masks[missing] = np.zeros_like(heart)
    vio.write_segmentation(tmp_path / "s.seg.nrrd", [(n, m, (0.5, 0.5, 0.5)) for n, m in masks.items()], TILTED)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_scribbles(tmp_path / "s.seg.nrrd", heart.shape, TILTED)
    one_line_error(excinfo, "s.seg.nrrd", missing)


def test_scribbles_lost_to_an_overlap_or_a_downsample_say_so(tmp_path):
    heart = ball()
    background = np.zeros_like(heart)
    background[:, :2, :] = 1
    vio.write_segmentation(tmp_path / "s.seg.nrrd", [("heart", heart, vio.HEART_COLOR),
                                                     ("background", background | heart, vio.BACKGROUND_COLOR)],
                           TILTED)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_scribbles(tmp_path / "s.seg.nrrd", heart.shape, TILTED)
    one_line_error(excinfo, "s.seg.nrrd", "no heart voxel", "also in the other segment")
    # 2D strokes at 4 times the image's size, each heart stroke next to a background one: every block holds both.
    strokes = np.zeros((24, 24), np.uint8)
    strokes[5, 4] = 1
    strokes[5, 5] = 2
    strokes[20, 20] = 2
    write_sections(tmp_path / "strokes", [strokes], is_vector=False)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_scribbles(tmp_path / "strokes", (1, 6, 6), TILTED, downsample=4)
    one_line_error(excinfo, "strokes", "no heart voxel", "downsample 4")


def test_a_segmentation_given_as_the_image_is_refused(tmp_path):
    vio.write_segmentation(tmp_path / "label.seg.nrrd", [("heart", ball(), vio.HEART_COLOR)], TILTED)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_image(tmp_path / "label.seg.nrrd")
    one_line_error(excinfo, "label.seg.nrrd", "is a segmentation", "give the image")


def test_strokes_in_both_segments_are_left_out_with_one_warning(tmp_path, caplog):
    # Slicer's Segment Editor with "overwrite: none" lets a background stroke cross a heart stroke.
    heart = ball()
    background = np.zeros_like(heart)
    background[:, :2, :] = 1
    crossing = np.argwhere(heart)[:3]
    background[tuple(crossing.T)] = 1
    vio.write_segmentation(tmp_path / "s.seg.nrrd", [("heart", heart, vio.HEART_COLOR),
                                                     ("background", background, vio.BACKGROUND_COLOR)], TILTED)
    with caplog.at_level(logging.WARNING, logger="ScribbleSegLib"):
        got = vio.read_scribbles(tmp_path / "s.seg.nrrd", heart.shape, TILTED)
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 's.seg.nrrd'}: 3 voxels are in both segments 'heart' and 'background' and count as not "
        "scribbled"]
    assert (got[tuple(crossing.T)] == 0).all()
    assert np.count_nonzero(got == 1) == np.count_nonzero(heart) - 3


def test_scribble_segmentation_without_background_segment(tmp_path):
    vio.write_segmentation(tmp_path / "s.seg.nrrd", [("Heart", ball(), vio.HEART_COLOR),
                                                     ("Tissue BG", 1 - ball(), vio.BACKGROUND_COLOR)], TILTED)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_scribbles(tmp_path / "s.seg.nrrd", ball().shape, TILTED)
    # The segments as the file spells them, for the user to find them in Slicer.
    one_line_error(excinfo, "s.seg.nrrd", "has no segment named 'background' (segments: 'Heart', 'Tissue BG')")


def crop_geometry(geometry, offset_zyx):
    """Geometry of the sub-grid starting at voxel ``offset_zyx`` of ``geometry``."""
    start = geometry.ijk_to_lps() @ np.array(list(offset_zyx[::-1]) + [1.0])
    return Geometry(geometry.spacing, tuple(start[:3]), geometry.direction)


def test_cropped_segmentation_is_padded_onto_the_image_grid(tmp_path):
    heart = ball()
    background = np.zeros_like(heart)
    background[1:5, 16:18, 4:20] = 1
    # What Slicer saves: only the box holding the segments, with its own origin.
    lo, hi = (1, 5, 4), (6, 18, 20)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    vio.write_segmentation(tmp_path / "s.seg.nrrd", [("heart", heart[box], vio.HEART_COLOR),
                                                     ("background", background[box], vio.BACKGROUND_COLOR)],
                           crop_geometry(TILTED, lo))
    np.testing.assert_array_equal(vio.read_label(tmp_path / "s.seg.nrrd", heart.shape, TILTED), heart)
    np.testing.assert_array_equal(vio.read_scribbles(tmp_path / "s.seg.nrrd", heart.shape, TILTED),
                                  heart + 2 * background)


def test_segmentation_larger_than_the_image_is_cropped_if_empty_outside(tmp_path):
    heart = ball()
    bigger = np.zeros((8, 24, 30), np.uint8)
    bigger[1:7, 2:22, 3:27] = heart
    path = tmp_path / "l.seg.nrrd"
    vio.write_segmentation(path, [("heart", bigger, vio.HEART_COLOR)], crop_geometry(TILTED, (-1, -2, -3)))
    np.testing.assert_array_equal(vio.read_label(path, heart.shape, TILTED), heart)

    bigger[0, 0, 0] = 1
    vio.write_segmentation(path, [("heart", bigger, vio.HEART_COLOR)], crop_geometry(TILTED, (-1, -2, -3)))
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_label(path, heart.shape, TILTED)
    one_line_error(excinfo, "l.seg.nrrd", "outside")


def test_segmentation_off_the_voxel_grid_is_refused(tmp_path):
    heart = ball()
    path = tmp_path / "l.seg.nrrd"
    vio.write_segmentation(path, [("heart", heart[:, :10], vio.HEART_COLOR)], crop_geometry(TILTED, (0, 0.5, 0)))
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_label(path, heart.shape, TILTED)
    one_line_error(excinfo, "l.seg.nrrd", "voxel grid")


def test_labelmap_geometry_must_match_and_its_box_lie_within_the_image(tmp_path):
    heart = ball()
    vio.write_labelmap(tmp_path / "l.nrrd", heart, Geometry((1.0, 1.0, 2.0)))
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_label(tmp_path / "l.nrrd", heart.shape, Geometry((1.0, 1.0, 3.0)))
    one_line_error(excinfo, "l.nrrd", "spacing")
    # A box of the image's grid (Slicer exports labelmaps cropped to their segments by default) is placed.
    wider = vio.read_label(tmp_path / "l.nrrd", (6, 20, 25), Geometry((1.0, 1.0, 2.0)))
    np.testing.assert_array_equal(wider[..., :24], heart)
    assert not wider[..., 24].any()
    with pytest.raises(ScribbleSegError) as excinfo:  # ... but not one that marks voxels beyond the image
        vio.read_label(tmp_path / "l.nrrd", (6, 20, 12), Geometry((1.0, 1.0, 2.0)))
    one_line_error(excinfo, "l.nrrd", "marked voxels outside the image", "12x20x6")


def test_labelmap_scribbles_cropped_to_their_strokes_are_placed(tmp_path):
    # What Slicer's ExportSegmentsToLabelmapNode writes by default: the box the segments fill.
    strokes = np.zeros((6, 20, 24), np.uint8)
    strokes[2, 5:9, 6] = 1
    strokes[3, 15, 10:20] = 2
    lo, hi = (2, 5, 6), (4, 16, 20)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    vio.write_labelmap(tmp_path / "s.nrrd", strokes[box], crop_geometry(TILTED, lo))
    np.testing.assert_array_equal(vio.read_scribbles(tmp_path / "s.nrrd", strokes.shape, TILTED), strokes)


def test_a_labelmap_origin_off_by_single_precision_is_on_the_grid(tmp_path):
    # NIfTI stores the origin in single precision: far from 0 and with 2 um pixels, that is a few thousandths
    # of a voxel off.
    image = Geometry((0.002, 0.002, 0.01), (300.123456, -250.456789, 120.789012))
    moved = Geometry(image.spacing, (300.123456 + 1.4e-5, -250.456789, 120.789012 - 3e-5))
    label = ball()
    vio.write_labelmap(tmp_path / "l.nrrd", label, moved)
    np.testing.assert_array_equal(vio.read_label(tmp_path / "l.nrrd", label.shape, image), label)


def test_strokes_a_part_of_a_voxel_off_the_image_grid_are_placed_with_one_warning(tmp_path, caplog):
    # A label so shifted is refused; strokes were placed by their centres without a word.
    strokes = np.zeros((6, 20, 24), np.uint8)
    strokes[2, 5:9, 6] = 1
    strokes[3, 15, 10:20] = 2
    axes = np.asarray(TILTED.direction).reshape(3, 3) * np.asarray(TILTED.spacing)
    shifted = Geometry(TILTED.spacing, tuple(np.asarray(TILTED.origin) + axes @ (0.3, 0.0, 0.0)), TILTED.direction)
    vio.write_labelmap(tmp_path / "s.nrrd", strokes, shifted)
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        np.testing.assert_array_equal(vio.read_scribbles(tmp_path / "s.nrrd", strokes.shape, TILTED), strokes)
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 's.nrrd'}: lies off the image's voxel grid by (0.3, 0, 0) voxels; each of its voxels marks "
        "the image voxel holding its centre"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):  # on the grid: nothing to say
        vio.write_labelmap(tmp_path / "s.nrrd", strokes, TILTED)
        vio.read_scribbles(tmp_path / "s.nrrd", strokes.shape, TILTED)
    assert not caplog.records


@pytest.mark.parametrize("factor", [2, 3])
def test_strokes_on_a_finer_grid_mark_the_voxels_holding_their_centres(tmp_path, factor):
    # Slicer's oversampled segmentations: a finer grid over the same space, in any direction.
    image = Geometry((0.5, 0.5, 2.0), (10.0, -4.0, 3.5), TILTED.direction)
    shape = (6, 20, 24)
    fine_spacing = (0.5 / factor, 0.5 / factor, 2.0)
    # The fine grid's voxel 0 shares its corner with the image's voxel 0.
    corner = np.asarray(TILTED.direction).reshape(3, 3) @ (0.5 * (np.asarray(fine_spacing) - image.spacing))
    fine = Geometry(fine_spacing, tuple(np.asarray(image.origin) + corner), image.direction)
    strokes = np.zeros((6, 20 * factor, 24 * factor), np.uint8)
    strokes[2, 5 * factor:9 * factor, 6 * factor] = 1  # one thin line of fine voxels: rows 5-8, column 6
    strokes[3, 15 * factor + 1, 10 * factor:20 * factor] = 2
    vio.write_segmentation(tmp_path / "s.seg.nrrd", [("heart", strokes == 1, vio.HEART_COLOR),
                                                     ("background", strokes == 2, vio.BACKGROUND_COLOR)], fine)
    got = vio.read_scribbles(tmp_path / "s.seg.nrrd", shape, image)
    expected = np.zeros(shape, np.uint8)
    expected[2, 5:9, 6] = 1
    expected[3, 15, 10:20] = 2
    np.testing.assert_array_equal(got, expected)
    # A label (the truth) is not resampled, nor are strokes on a coarser grid.
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_label(tmp_path / "s.seg.nrrd", shape, image)
    one_line_error(excinfo, "s.seg.nrrd", "spacing")
    coarse = Geometry((1.0, 1.0, 2.0), image.origin, image.direction)
    vio.write_labelmap(tmp_path / "c.nrrd", expected[:, :10, :12], coarse)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_scribbles(tmp_path / "c.nrrd", shape, image)
    one_line_error(excinfo, "c.nrrd", "spacing", "not a coarser one")


def _two_strokes() -> np.ndarray:
    """A heart stroke on section 1 and a background stroke on section 2 of a 4x16x16 grid."""
    strokes = np.zeros((4, 16, 16), np.uint8)
    strokes[1, 3:6, 3] = 1
    strokes[2, 12, 8:14] = 2
    return strokes


def test_strokes_of_the_image_size_on_a_finer_grid_mean_a_missing_spacing_not_a_finer_grid(tmp_path):
    # An image whose header lacks its spacing is read at 1 mm: strokes drawn on it in Slicer, with the real
    # 0.06 mm, would crowd into a corner and lose a class. Say what is wrong instead.
    strokes = _two_strokes()
    vio.write_labelmap(tmp_path / "s.nrrd", strokes, Geometry((0.06, 0.06, 0.12)))
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_scribbles(tmp_path / "s.nrrd", strokes.shape, Geometry((1.0, 1.0, 1.0)))
    one_line_error(excinfo, "s.nrrd", "has the image's size (16x16x4) but voxel size (0.06, 0.06, 0.12) mm",
                   "the image (1, 1, 1) mm", "(spacing)")
    np.testing.assert_array_equal(vio.read_scribbles(tmp_path / "s.nrrd", strokes.shape,
                                                     Geometry((0.06, 0.06, 0.12))), strokes)


def test_strokes_of_another_size_on_an_image_that_states_no_voxel_size_are_refused(tmp_path):
    # A stack's strokes (16 sections at 0.024 mm) given for a PNG tile read at 1 mm: placed by position they all fell
    # into a few pixels of the tile, and the run went on to a tile all heart.
    strokes = _two_strokes()
    vio.write_labelmap(tmp_path / "s.nrrd", strokes, Geometry((0.024, 0.024, 0.048)))
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_scribbles(tmp_path / "s.nrrd", (1, 64, 64), Geometry((1.0, 1.0, 1.0)))
    one_line_error(excinfo, "s.nrrd", "lies on a grid of (0.024, 0.024, 0.048) mm voxels, and the image states no "
                   "voxel size", "give the image's voxel size (spacing)")
    # The same strokes on an image with its voxel size, twice as coarse: placed by their centres, as before.
    placed = vio.read_scribbles(tmp_path / "s.nrrd", (2, 8, 8), Geometry((0.048, 0.048, 0.096)))
    assert np.argwhere(placed == 1).tolist() == [[0, 2, 2]]
    assert np.argwhere(placed == 2).tolist() == [[1, 6, 4], [1, 6, 5], [1, 6, 6]]


def test_strokes_on_the_same_voxels_with_an_axis_flipped_are_read_onto_the_image(tmp_path):
    # The same grid written with x running the other way (direction -1, origin at the far end): every stroke
    # voxel is an image voxel. It was once refused as a missing spacing, naming two equal spacings.
    strokes = _two_strokes()
    image = Geometry((0.06, 0.06, 0.12), (1.0, 2.0, 3.0))
    flipped = Geometry(image.spacing, (1.0 + 0.06 * 15, 2.0, 3.0), (-1, 0, 0, 0, 1, 0, 0, 0, 1))
    vio.write_labelmap(tmp_path / "s.nrrd", strokes[..., ::-1].copy(), flipped)
    np.testing.assert_array_equal(vio.read_scribbles(tmp_path / "s.nrrd", strokes.shape, image), strokes)
    # A label on those voxels is placed exactly too: the same voxels in another order, nothing resampled.
    np.testing.assert_array_equal(vio.read_label(tmp_path / "s.nrrd", strokes.shape, image), strokes > 0)
    # On another spacing with a flipped axis it would be resampled: refused, naming the spacing.
    coarser = Geometry((0.12, 0.06, 0.12), (1.0 + 0.12 * 7, 2.0, 3.0), (-1, 0, 0, 0, 1, 0, 0, 0, 1))
    vio.write_labelmap(tmp_path / "c.nrrd", strokes[:, :, ::2], coarser)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_label(tmp_path / "c.nrrd", strokes.shape, image)
    one_line_error(excinfo, "c.nrrd", "spacing (0.12, 0.06, 0.12) differs")


def test_a_file_that_lies_outside_the_image_says_so(tmp_path):
    far = Geometry(TILTED.spacing, tuple(np.asarray(TILTED.origin) + 1000.3), TILTED.direction)
    vio.write_labelmap(tmp_path / "s.nrrd", 1 + ball(), far)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_scribbles(tmp_path / "s.nrrd", (6, 20, 24), TILTED)
    one_line_error(excinfo, "s.nrrd", "lies outside the image")


def test_segmentation_with_another_spacing_is_refused(tmp_path):
    heart = ball()
    vio.write_segmentation(tmp_path / "l.seg.nrrd", [("heart", heart, vio.HEART_COLOR)], Geometry((1.0, 1.0, 2.0)))
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_label(tmp_path / "l.seg.nrrd", heart.shape, Geometry((0.5, 0.5, 2.0)), reference="label")
    one_line_error(excinfo, "l.seg.nrrd", "spacing", "label's")


@pytest.mark.parametrize("reader", [vio.read_label, vio.read_scribbles])
def test_missing_or_damaged_label_files(tmp_path, reader):
    with pytest.raises(ScribbleSegError) as excinfo:
        reader(tmp_path / "missing.seg.nrrd", (2, 2, 2), Geometry(SPACING))
    one_line_error(excinfo, "missing.seg.nrrd")
    vio.write_segmentation(tmp_path / "s.seg.nrrd", [("heart", ball(), vio.HEART_COLOR)], Geometry(SPACING))
    data = (tmp_path / "s.seg.nrrd").read_bytes()
    (tmp_path / "s.seg.nrrd").write_bytes(data[:-40])
    with pytest.raises(ScribbleSegError) as excinfo:
        reader(tmp_path / "s.seg.nrrd", ball().shape, Geometry(SPACING))
    one_line_error(excinfo, "s.seg.nrrd", "cannot be read")
    # Cut inside its header: the parser's own words ("not enough values to unpack") are not shown.
    header_end = data.index(b"\n\n")
    (tmp_path / "s.seg.nrrd").write_bytes(data[:data.index(b"\n", header_end // 2) + 4])
    with pytest.raises(ScribbleSegError) as excinfo:
        reader(tmp_path / "s.seg.nrrd", ball().shape, Geometry(SPACING))
    assert str(excinfo.value) == f"{tmp_path / 's.seg.nrrd'}: cannot be read as a segmentation (a damaged or " \
                                 "truncated file)"
    (tmp_path / "s.seg.nrrd").write_bytes(b"")  # empty: the parser's StopIteration came out as a traceback
    with pytest.raises(ScribbleSegError) as excinfo:
        reader(tmp_path / "s.seg.nrrd", ball().shape, Geometry(SPACING))
    one_line_error(excinfo, "s.seg.nrrd", "cannot be read as a segmentation")


@pytest.mark.parametrize("field, value", [("kinds", b"space domain domain"), ("space", b"scanner-xyz")])
def test_a_segmentation_header_field_slicerio_refuses_is_named_not_called_damaged(tmp_path, field, value):
    vio.write_segmentation(tmp_path / "s.seg.nrrd", [("heart", ball(), vio.HEART_COLOR)], Geometry(SPACING))
    data = (tmp_path / "s.seg.nrrd").read_bytes()
    start = data.index(b"\n" + field.encode() + b": ") + len(field) + 3
    (tmp_path / "s.seg.nrrd").write_bytes(data[:start] + value + data[data.index(b"\n", start):])
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_scribbles(tmp_path / "s.seg.nrrd", ball().shape, Geometry(SPACING))
    one_line_error(excinfo, "s.seg.nrrd", "cannot be read as a segmentation", f"{field} field")
    assert "damaged" not in str(excinfo.value)


# --- one 2D section (a tile) as a one-section volume -------------------------------------------------------
def test_a_2d_section_file_is_a_one_section_volume(tmp_path, caplog):
    plane = rgb_stack((1, 18, 26))[0]
    sitk.WriteImage(sitk.GetImageFromArray(plane, isVector=True), str(tmp_path / "tile.png"))
    # Without a spacing: on the grid Slicer loads it on (the file's pixel size, 1 mm for a PNG), said in one note.
    with caplog.at_level(logging.INFO, logger="ScribbleSegLib"):
        own = vio.read_image(tmp_path / "tile.png")
    assert own.shape == (1, 18, 26)
    assert (own.shape, own.geometry) == vio.image_file_grid(tmp_path / "tile.png")
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and "tile.png" in notes[0] and "no spacing given" in notes[0] and "1 x 1 mm" in notes[0]
    volume = vio.read_image(tmp_path / "tile.png", spacing=(0.00025, 0.00025, 0.001))
    assert volume.shape == (1, 18, 26)
    np.testing.assert_array_equal(volume.array[0], plane)
    assert volume.geometry.spacing == (0.00025, 0.00025, 0.001)
    assert vio.is_section_file(tmp_path / "tile.png")


def test_2d_labels_and_scribbles_take_the_image_grid(tmp_path):
    geometry = Geometry((0.00025, 0.00025, 0.001), (5.0, -3.0, 1.0))
    label = np.zeros((18, 26), np.uint8)
    label[4:10, 5:12] = 255
    sitk.WriteImage(sitk.GetImageFromArray(label), str(tmp_path / "label.png"))
    got = vio.read_label(tmp_path / "label.png", (1, 18, 26), geometry)
    np.testing.assert_array_equal(got[0], label > 0)
    strokes = np.zeros((18, 26), np.uint8)
    strokes[6, 6:10], strokes[15, 2:20] = 1, 2
    sitk.WriteImage(sitk.GetImageFromArray(strokes), str(tmp_path / "strokes.png"))
    np.testing.assert_array_equal(vio.read_scribbles(tmp_path / "strokes.png", (1, 18, 26), geometry)[0], strokes)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_label(tmp_path / "label.png", (1, 20, 26), geometry)
    one_line_error(excinfo, "label.png", "26x18x1", "26x20x1")
    vio.write_labelmap(tmp_path / "label.nrrd", (got > 0).astype(np.uint8), geometry)
    assert vio.is_section_file(tmp_path / "strokes.png") and not vio.is_section_file(tmp_path / "label.nrrd")


def test_a_png_tiles_note_does_not_say_its_file_states_no_pixel_size(tmp_path, caplog):
    # ITK does not read a PNG's pHYs density (96 dpi, which image editors write): the note said the file
    # "states none" of a file that states one.
    import struct
    import zlib

    sitk.WriteImage(sitk.GetImageFromArray(rgb_stack((1, 6, 8))[0], isVector=True), str(tmp_path / "t.png"))
    data = (tmp_path / "t.png").read_bytes()
    body = b"pHYs" + struct.pack(">IIB", 3780, 3780, 1)  # 3780 pixels per metre: 96 dpi
    chunk = struct.pack(">I", 9) + body + struct.pack(">I", zlib.crc32(body))
    (tmp_path / "t.png").write_bytes(data[:33] + chunk + data[33:])  # after the signature and IHDR
    with caplog.at_level("INFO", logger="ScribbleSegLib"):
        assert vio.read_image(tmp_path / "t.png").geometry.spacing == (1.0, 1.0, 1.0)
    note = [r.getMessage() for r in caplog.records if "one 2D section" in r.getMessage()]
    assert len(note) == 1 and note[0].endswith("as the image reader finds none in its file"), note


def test_folders_of_2d_labels_and_scribbles_take_the_image_grid(tmp_path):
    # One label (and one stroke) image per section of the image, in natural order, as a stack of sections
    # comes: the folder takes the image's grid.
    geometry = Geometry((0.00025, 0.00025, 0.004), (5.0, -3.0, 1.0))
    label = ball((3, 18, 26), (1, 9, 13), 6)
    names = ["m1.png", "m2.png", "m10.png"]
    write_sections(tmp_path / "labels", label * 255, names=names, is_vector=False)
    np.testing.assert_array_equal(vio.read_label(tmp_path / "labels", label.shape, geometry), label)
    strokes = np.zeros_like(label)
    strokes[1, 9, 10:16], strokes[2, 1, :] = 1, 2
    write_sections(tmp_path / "strokes", strokes, names=names, is_vector=False)
    np.testing.assert_array_equal(vio.read_scribbles(tmp_path / "strokes", label.shape, geometry), strokes)
    vio.write_labelmap(tmp_path / "label.nrrd", label, geometry)
    assert vio.takes_image_grid(tmp_path / "labels") and vio.takes_image_grid(tmp_path / "labels" / "m1.png")
    assert not vio.takes_image_grid(tmp_path / "label.nrrd")
    # Too few sections, a section of another size, an empty folder, an RGB section: one line naming the file.
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_label(tmp_path / "labels", (4, 18, 26), geometry)
    one_line_error(excinfo, "labels", "26x18x3", "26x18x4", "one file per section of the image: 4", "it holds 3")
    write_sections(tmp_path / "odd", [label[0], label[1, :17]], is_vector=False)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_label(tmp_path / "odd", (2, 18, 26), geometry)
    one_line_error(excinfo, "sec2.png", "26x17x1", "sec1.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_scribbles(tmp_path / "empty", label.shape, geometry)
    one_line_error(excinfo, "empty", "no section images")
    write_sections(tmp_path / "rgb", rgb_stack((1, 18, 26)))
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_label(tmp_path / "rgb", (1, 18, 26), geometry)
    one_line_error(excinfo, "sec1.png", "several colours")


def test_2d_labels_and_strokes_at_full_size_follow_a_downsampled_image(tmp_path):
    # A stack read with downsample 2: its full-size label and stroke sections are reduced the same way
    # (2x2 blocks, the odd last row and column cropped): a label block is heart when at least half of it
    # is, a stroke block takes a class when any pixel has it and none has the other.
    geometry = Geometry((0.0005, 0.0005, 0.004))
    label = np.zeros((2, 9, 11), np.uint8)
    label[0, 0:2, 0:2] = 1  # a whole block: heart
    label[0, 2, 2:4] = 1  # half a block: heart
    label[0, 4, 4] = 1  # a quarter: not
    label[1, 8, :] = 1  # the cropped row: gone
    write_sections(tmp_path / "labels", label * 255, is_vector=False)
    got = vio.read_label(tmp_path / "labels", (2, 4, 5), geometry, downsample=2)
    expected = np.zeros((2, 4, 5), np.uint8)
    expected[0, 0, 0] = expected[0, 1, 1] = 1
    np.testing.assert_array_equal(got, expected)
    strokes = np.zeros((2, 9, 11), np.uint8)
    strokes[0, 1, 0:6] = 1  # a one-pixel line: blocks (0, 0..2)
    strokes[1, 5, 0:10] = 2  # blocks (2, 0..4)
    strokes[1, 4, 8] = 1  # shares block (2, 4) with the background line: unscribbled
    write_sections(tmp_path / "strokes", strokes, is_vector=False)
    got = vio.read_scribbles(tmp_path / "strokes", (2, 4, 5), geometry, downsample=2)
    expected = np.zeros((2, 4, 5), np.uint8)
    expected[0, 0, 0:3] = 1
    expected[1, 2, 0:4] = 2
    np.testing.assert_array_equal(got, expected)
    # Already at the image's size: read as it is; at another size: one line with both sizes.
    np.testing.assert_array_equal(vio.read_label(tmp_path / "labels", (2, 9, 11), geometry, downsample=2), label)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_label(tmp_path / "labels", (2, 3, 5), geometry, downsample=2)
    one_line_error(excinfo, "labels", "11x9x2", "5x3x2")


def test_a_black_and_white_jpeg_label_reads_as_its_mask_and_other_jpeg_labels_are_refused(tmp_path, caplog):
    # Saved as JPEG, a 0/255 mask comes back with small values beside every edge, which "> 0" would read as
    # heart: it is read as more than half white, with one warning, for a single section and in a folder (public
    # data sets ship masks so).  A mask of 0 and 1, or scribbles, cannot be told from the noise: refused.
    mask = ball((1, 32, 32), (0, 15, 17), 9) * 255
    write_sections(tmp_path / "labels", mask, ".jpg", is_vector=False)
    halo = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "labels" / "sec1.jpg"))) > 0
    assert halo.sum() > (mask > 0).sum()  # what reading it as "> 0" would have given
    geometry = Geometry((0.00025, 0.00025, 0.001))
    for path in (tmp_path / "labels" / "sec1.jpg", tmp_path / "labels"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="ScribbleSegLib"):
            got = vio.read_label(path, mask.shape, geometry)
        assert (got != (mask > 0)).sum() <= 4  # the mask, up to a pixel or so where the ringing is strongest
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and "JPEG" in said[0] and "sec1.jpg" in said[0]
    write_sections(tmp_path / "ones", (mask > 0).astype(np.uint8), ".jpg", is_vector=False)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_label(tmp_path / "ones" / "sec1.jpg", mask.shape, geometry)
    one_line_error(excinfo, "sec1.jpg", "JPEG", "black-and-white", "PNG")
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_scribbles(tmp_path / "labels" / "sec1.jpg", mask.shape, geometry)
    one_line_error(excinfo, "sec1.jpg", "JPEG", "PNG")


def test_a_plain_labelmap_named_like_a_segmentation_reads_as_a_labelmap(tmp_path):
    """A labelmap saved as ``*.seg.nrrd`` holds no segment fields: it reads as the labelmap it is, not as a
    segmentation without a 'heart' segment; a real ``.seg.nrrd`` still reads by its segments, and one whose
    header does not read gets the segmentation reader's message."""
    geometry = Geometry((0.5, 0.5, 1.0))
    label = np.zeros((3, 8, 8), np.uint8)
    label[1, 2:5, 2:6] = 1
    plain = sitk.GetImageFromArray(label)
    plain.SetSpacing(geometry.spacing)
    sitk.WriteImage(plain, str(tmp_path / "plain.seg.nrrd"), True)
    assert not vio.is_segmentation_file(tmp_path / "plain.seg.nrrd")
    np.testing.assert_array_equal(vio.read_label(tmp_path / "plain.seg.nrrd", label.shape, geometry), label)
    vio.write_segmentation(tmp_path / "real.seg.nrrd", [("heart", label, vio.HEART_COLOR)], geometry)
    assert vio.is_segmentation_file(tmp_path / "real.seg.nrrd")
    (tmp_path / "cut.seg.nrrd").write_bytes((tmp_path / "real.seg.nrrd").read_bytes()[:40])
    assert vio.is_segmentation_file(tmp_path / "cut.seg.nrrd")
    with pytest.raises(ScribbleSegError, match="cut.seg.nrrd"):
        vio.read_label(tmp_path / "cut.seg.nrrd", label.shape, geometry)


def test_a_grey_mask_saved_as_rgb_or_rgba_reads_as_its_grey(tmp_path):
    # Image editors and slide viewers often save a black-and-white mask with three (or four) equal channels.
    geometry = Geometry((0.00025, 0.00025, 0.001))
    label = np.zeros((18, 26), np.uint8)
    label[4:10, 5:12] = 255
    strokes = np.zeros((18, 26), np.uint8)
    strokes[6, 6:10], strokes[15, 2:20] = 1, 2
    for name, planes in (("rgb", 3), ("rgba", 4)):
        for what, plane in (("label", label), ("strokes", strokes)):
            colour = np.repeat(plane[..., None], planes, axis=-1)
            if planes == 4:
                colour[..., 3] = 255  # opaque
            sitk.WriteImage(sitk.GetImageFromArray(colour, isVector=True), str(tmp_path / f"{what}_{name}.png"))
        np.testing.assert_array_equal(vio.read_label(tmp_path / f"label_{name}.png", (1, 18, 26), geometry)[0],
                                      label > 0)
        np.testing.assert_array_equal(
            vio.read_scribbles(tmp_path / f"strokes_{name}.png", (1, 18, 26), geometry)[0], strokes)
    # One colour on black (a palette PNG of one class): a label reads it as where it is not black; strokes in
    # colour could mean anything, and several colours in a label too: refused with one line each, as an
    # overlay whose transparency marks the mask.
    coded = np.zeros((18, 26, 3), np.uint8)
    coded[4:10, 5:12] = (128, 0, 0)
    sitk.WriteImage(sitk.GetImageFromArray(coded, isVector=True), str(tmp_path / "coded.png"))
    np.testing.assert_array_equal(vio.read_label(tmp_path / "coded.png", (1, 18, 26), geometry)[0], label > 0)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_scribbles(tmp_path / "coded.png", (1, 18, 26), geometry)
    one_line_error(excinfo, "coded.png", "channels differ", "1 heart, 2 background")
    two_classes = coded.copy()
    two_classes[12:14, 2:6] = (0, 128, 0)
    overlay = np.zeros((18, 26, 4), np.uint8)
    overlay[4:10, 5:12] = 255
    overlay[..., :3] += 40  # under its transparent pixels too (white on transparent, 0 under it, is a mask)
    two = np.zeros((18, 26, 2), np.uint8)
    for name, array, words in (("classes.png", two_classes, "several colours"), ("overlay.png", overlay,
                                                                                  "transparency"),
                               ("two.nrrd", two, "2 components per pixel")):
        sitk.WriteImage(sitk.GetImageFromArray(array, isVector=True), str(tmp_path / name))
        with pytest.raises(ScribbleSegError) as excinfo:
            vio.read_label(tmp_path / name, (1, 18, 26), geometry)
        one_line_error(excinfo, name, words)
    # A white mask on transparent pixels that hold 0 (a mask layer saved with its empty pixels transparent).
    layer = np.zeros((18, 26, 4), np.uint8)
    layer[4:10, 5:12] = 255
    sitk.WriteImage(sitk.GetImageFromArray(layer, isVector=True), str(tmp_path / "layer.png"))
    np.testing.assert_array_equal(vio.read_label(tmp_path / "layer.png", (1, 18, 26), geometry)[0], label > 0)


def test_a_folder_mixing_grey_and_colour_sections_is_read_with_one_warning(tmp_path, caplog):
    stack = rgb_stack((4, 12, 20))
    folder = write_sections(tmp_path / "sec", stack)
    sitk.WriteImage(sitk.GetImageFromArray(stack[2, ..., 0]), str(folder / "sec3.png"))  # a grey image among them
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        volume = vio.read_image(folder, spacing=SPACING)
    assert volume.array.shape == stack.shape
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "1 of 4 sections are grey" in lines[0] and "sec3.png" in lines[0], lines
    caplog.clear()
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        vio.read_image(write_sections(tmp_path / "all_grey", stack[..., 0], is_vector=False), spacing=SPACING)
    assert not caplog.records  # a grey stack is what it is


def test_a_grey_section_saved_in_colour_among_colour_ones_gets_the_same_warning(tmp_path, caplog):
    # Three equal channels: a grey scan exported as RGB. It had no warning, where the same scan saved with one channel
    # had one; a section of glass alone (no tissue to be grey) gets none.
    stack = rgb_stack((4, 40, 40))
    stack[2] = stack[2, ..., :1]
    stack[3] = 245
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        vio.read_image(write_sections(tmp_path / "sec", stack), spacing=SPACING)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "1 of 4 sections are grey" in lines[0] and "sec3.png" in lines[0], lines


def test_strokes_on_a_grid_with_a_section_more_or_fewer_than_the_image_are_placed_with_one_warning(tmp_path,
                                                                                                   caplog):
    # A folder exported again with a section missing: strokes on the old export's full grid were placed as a
    # crop, and lay a section off after the missing one, without a word.
    geometry = Geometry(SPACING)
    strokes = np.zeros((6, 8, 10), np.uint8)
    strokes[1, 2, 2:8], strokes[3, 6, 1:9] = 1, 2
    vio.write_labelmap(tmp_path / "full.nrrd", strokes, geometry)
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        placed = vio.read_scribbles(tmp_path / "full.nrrd", (5, 8, 10), geometry)
    np.testing.assert_array_equal(placed, strokes[:5])
    assert len(caplog.records) == 1 and "has 6 sections of the image's size, the image 5" in caplog.records[0].message
    caplog.clear()
    # A label with fewer sections than the image: the sections past it are background to whatever reads it.
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        placed = vio.read_label(tmp_path / "full.nrrd", (8, 8, 10), geometry)
    np.testing.assert_array_equal(placed[:6], strokes > 0)
    assert not placed[6:].any()
    said = caplog.records[0].message
    assert "the image's sections 6-7 past its last read as background" in said and "its marks lie off" in said
    caplog.clear()
    crop = Geometry(SPACING, origin=(2 * SPACING[0], 1 * SPACING[1], 1 * SPACING[2]))
    vio.write_labelmap(tmp_path / "crop.nrrd", strokes[1:4, 1:7, 2:9], crop)  # cropped to what it marks
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        vio.read_scribbles(tmp_path / "crop.nrrd", (5, 8, 10), geometry)
    assert not caplog.records


def test_a_2d_file_twice_the_images_size_is_named_as_drawn_on_a_larger_image(tmp_path):
    # Image and strokes are read with one downsample, so another downsample cannot make them match: the message
    # said "read it with downsample 2", and each try with it asked for twice as much again.
    strokes = np.zeros((16, 20), np.uint8)
    strokes[2, 2:9], strokes[12, 2:9] = 1, 2
    sitk.WriteImage(sitk.GetImageFromArray(strokes), str(tmp_path / "strokes.png"))
    grid = Geometry((0.5, 0.5, 1.0))
    for read in (vio.read_scribbles, vio.read_label):
        with pytest.raises(ScribbleSegError) as info:
            read(tmp_path / "strokes.png", (1, 8, 10), grid)
        assert "2 times its size in-plane: drawn on, or saved from, an image 2 times as large" in str(info.value)
        assert "downsample" not in str(info.value)
    # A reference read apart from the file (a prediction of an image read with a downsample): that one is the answer.
    with pytest.raises(ScribbleSegError, match="read it with downsample 2"):
        vio.read_label(tmp_path / "strokes.png", (1, 8, 10), grid, downsample_hint=True)


def test_a_2d_file_smaller_than_the_image_or_one_section_for_a_stack_is_told_what_matches(tmp_path):
    # Strokes drawn on a copy of a tile reduced 4 times, and one strokes file for a stack: "has size 750x750x1,
    # the image 3000x3000x1" said nothing of what to do, where the image read with downsample 4 takes them.
    strokes = np.zeros((8, 10), np.uint8)
    strokes[2, 2:9], strokes[6, 2:9] = 1, 2
    sitk.WriteImage(sitk.GetImageFromArray(strokes), str(tmp_path / "strokes.png"))
    with pytest.raises(ScribbleSegError) as info:
        vio.read_scribbles(tmp_path / "strokes.png", (1, 32, 40), Geometry((0.5, 0.5, 1.0)))
    assert "the image is 4 times its size in-plane: drawn on a reduced copy? Read the image with downsample 4" \
        in str(info.value)
    with pytest.raises(ScribbleSegError) as info:
        vio.read_scribbles(tmp_path / "strokes.png", (5, 8, 10), Geometry((0.5, 0.5, 1.0)))
    assert "one section for the image's 5: give a volume, or a folder of one file per section" in str(info.value)


def test_a_label_of_the_images_size_saved_without_a_geometry_is_read_on_the_images_voxels(tmp_path, caplog):
    # A label saved from numpy through SimpleITK states 1 mm voxels at the origin: "does not match the image:
    # spacing (1, 1, 1) differs" refused it, and no option could make it fit.
    label = np.zeros((3, 8, 10), np.uint8)
    label[1, 2:6, 3:7], label[2, 7, :] = 1, 2  # strokes of both classes (a label reads > 0 as heart)
    sitk.WriteImage(sitk.GetImageFromArray(label), str(tmp_path / "bare.nrrd"))
    image = Geometry((0.03, 0.03, 0.06), origin=(1.0, 2.0, 3.0))
    with caplog.at_level("INFO", logger="ScribbleSegLib"):
        np.testing.assert_array_equal(vio.read_label(tmp_path / "bare.nrrd", (3, 8, 10), image), label > 0)
        np.testing.assert_array_equal(vio.read_scribbles(tmp_path / "bare.nrrd", (3, 8, 10), image), label)
    assert "states no voxel size" in caplog.text and "read on the image's voxels" in caplog.text
    # A geometry of its own that differs (another voxel size, or the same shape elsewhere) is still refused.
    vio.write_labelmap(tmp_path / "other.nrrd", label, Geometry((0.5, 0.5, 1.0), origin=image.origin))
    with pytest.raises(ScribbleSegError, match="does not match the image"):
        vio.read_label(tmp_path / "other.nrrd", (3, 8, 10), image)
    with pytest.raises(ScribbleSegError):
        vio.read_label(tmp_path / "bare.nrrd", (3, 8, 11), image)


def test_a_folder_whose_section_numbers_skip_some_says_which(tmp_path, caplog):
    # Labs leave out damaged sections: stacked evenly, the others close up without a word.
    stack = rgb_stack((6, 8, 10))
    names = [f"Section {n:03d}.PNG" for n in (1, 2, 4, 5, 6, 9)]
    write_sections(tmp_path / "gaps", stack, names=names)
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        volume = vio.read_image(tmp_path / "gaps", spacing=SPACING)
    assert volume.array.shape[0] == 6
    message, = [r.getMessage() for r in caplog.records]
    assert "skip 3, 7, 8 (of Section 001.PNG to Section 009.PNG)" in message and "0.01 mm apart" in message
    # Every 5th section kept, numbered so: nothing skipped.
    caplog.clear()
    write_sections(tmp_path / "every5", stack, names=[f"s{n}.png" for n in range(0, 30, 5)])
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        vio.read_image(tmp_path / "every5", spacing=SPACING)
    assert not caplog.records


def test_a_truncated_tiff_is_one_line_without_the_readers_own_complaints(tmp_path, capfd):
    # libtiff printed "TIFFReadDirectory: Warning, Bogus ..." and "TIFFFillStrip: Read error ..." on stderr before
    # our one line.
    from PIL import Image

    Image.fromarray(rgb_stack((1, 64, 64))[0]).save(tmp_path / "tile.tif")
    whole = (tmp_path / "tile.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(whole[:-100])
    capfd.readouterr()
    with pytest.raises(ScribbleSegError, match="cut.tif: cannot be read as an image"):
        vio.read_image(tmp_path / "cut.tif")
    assert capfd.readouterr().err == ""
    # Read from several threads at once, fd 2 ends where it was (interleaved redirections would leave it on a
    # closed file, and every later message lost).
    import os
    import threading

    def read_some():
        for _ in range(5):
            with pytest.raises(ScribbleSegError):
                vio.read_image(tmp_path / "cut.tif")

    threads = [threading.Thread(target=read_some) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    os.write(2, b"still here\n")
    assert capfd.readouterr().err == "still here\n"


def test_an_rgb_tile_stored_channels_first_is_refused_and_a_grey_stack_of_3_is_not(tmp_path):
    # numpy's (3, height, width) saved as a grey volume was read as 3 grey sections, each a colour channel, and
    # segmented with only "tissue shows no colour" said.
    from ScribbleSegLib.phantom import PhantomConfig, make_phantom

    rgb = make_phantom(0, PhantomConfig(shape=(6, 64, 64))).image.array
    first = np.ascontiguousarray(rgb[3].transpose(2, 0, 1))  # the channels as the first axis
    sitk.WriteImage(sitk.GetImageFromArray(first), str(tmp_path / "chw.nrrd"))
    with pytest.raises(ScribbleSegError) as caught:
        vio.read_image(tmp_path / "chw.nrrd")
    assert str(caught.value).startswith(f"{tmp_path / 'chw.nrrd'}: a grey stack of 3 sections of 64x64 that differ as "
                                        "the colour channels of an H&E image do")
    grey = np.rint(rgb[2:5].mean(axis=-1)).astype(np.uint8)  # three neighbouring sections in grey
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(tmp_path / "grey.nrrd"))
    assert vio.read_image(tmp_path / "grey.nrrd").shape == (3, 64, 64)


def test_a_label_cropped_across_its_target_is_named_and_one_cropped_to_it_is_not(tmp_path, caplog):
    # A label saved on 100x100 of a 128x128 stack's pixels, through the heart, trained its cut-off heart as background
    # without a word (evaluate said the box differed).  Slicer crops a segmentation to what it marks: no word there.
    y, x = np.mgrid[:40, :48]
    disk = ((y - 20) ** 2 + (x - 24) ** 2 <= 12 ** 2).astype(np.uint8)
    full = np.stack([disk, disk])
    geometry = Geometry(SPACING)
    for name, box, said in (("across.nrrd", (slice(None), slice(0, 20), slice(None)), True),
                            ("around.nrrd", (slice(None), slice(8, 33), slice(12, 37)), False)):
        part = full[box]
        written = sitk.GetImageFromArray(part)
        written.SetSpacing(SPACING)
        written.SetOrigin(tuple(float(b.start or 0) * s for b, s in zip(box[::-1], SPACING)))
        sitk.WriteImage(written, str(tmp_path / name))
        caplog.clear()
        with caplog.at_level("WARNING", logger="ScribbleSegLib"):
            label = vio.read_label(tmp_path / name, full.shape, geometry)
        np.testing.assert_array_equal(label[box], part)
        messages = [r.getMessage() for r in caplog.records]
        assert messages == ([f"{tmp_path / name}: covers 48x20x2 voxels of the image's 48x40x2 and ends across what "
                             "it marks (the last row of its box): cut short? The image's voxels beyond it are read as "
                             "background"] if said else []), messages


def test_2d_strokes_that_state_another_grid_than_the_tiles_are_refused(tmp_path):
    # A 2D NRRD of strokes at twice the tile's pixel size and 2 mm away was placed pixel for pixel without a word,
    # where the same strokes in a 3D file of one section were refused.
    tile = sitk.GetImageFromArray(rgb_stack((1, 12, 16))[0], isVector=True)
    tile.SetSpacing((0.015, 0.015))
    sitk.WriteImage(tile, str(tmp_path / "tile.nrrd"))
    image = vio.read_image(tmp_path / "tile.nrrd")
    strokes = np.zeros((12, 16), np.uint8)
    strokes[2:4, 2:6], strokes[8:10, 8:14] = 1, 2
    for name, spacing, origin, refused in (("same.nrrd", (0.015, 0.015), (0.0, 0.0), False),
                                           ("none.mha", (1.0, 1.0), (0.0, 0.0), False),
                                           ("moved.nrrd", (0.03, 0.03), (2.0, 2.0), True)):
        written = sitk.GetImageFromArray(strokes)
        written.SetSpacing(spacing)
        written.SetOrigin(origin)
        sitk.WriteImage(written, str(tmp_path / name))
        if not refused:
            np.testing.assert_array_equal(vio.read_scribbles(tmp_path / name, image.shape, image.geometry)[0], strokes)
            continue
        with pytest.raises(ScribbleSegError) as caught:
            vio.read_scribbles(tmp_path / name, image.shape, image.geometry)
        assert str(caught.value) == (f"{tmp_path / name}: a 2D file on 0.03 x 0.03 mm pixels from (2, 2) mm, the "
                                     "image on 0.015 x 0.015 mm from (0, 0) mm: drawn on another grid? Save it on the "
                                     "image's grid")


def test_a_nrrd_that_states_its_voxels_in_microns_says_it_is_read_as_mm(tmp_path, caplog):
    # ITK reads a NRRD's spacing as mm whatever its space units: 15 um voxels were read as 15 mm without a word,
    # the heart came out at 2.7e8 mm^3, and the only warning asked whether the file stated no pixel size.
    import nrrd

    header = {"type": "uint8", "dimension": 4, "space": "left-posterior-superior",
              "kinds": ["vector", "domain", "domain", "domain"], "encoding": "gzip",
              "space directions": np.vstack([[np.nan] * 3, np.diag([15.0, 15.0, 30.0])]), "space origin": np.zeros(3)}
    stack = rgb_stack((2, 8, 10))
    for name, units, said in (("um.nrrd", ["microns"] * 3, True), ("mm.nrrd", ["mm"] * 3, False),
                              ("none.nrrd", None, False)):
        nrrd.write(str(tmp_path / name), stack.transpose(3, 2, 1, 0),
                   dict(header, **({"space units": units} if units else {})))
        caplog.clear()
        with caplog.at_level("WARNING", logger="ScribbleSegLib"):
            volume = vio.read_image(tmp_path / name)
        assert volume.geometry.spacing == (15.0, 15.0, 30.0)  # the grid the reader (and Slicer) loads stays
        messages = [r.getMessage() for r in caplog.records]
        assert messages == ([f"{tmp_path / name}: its header states its voxel size in microns (15 x 15 x 30), which "
                             "the image reader takes as mm: read as 15 x 15 x 30 mm voxels (give the spacing 0.015 "
                             "0.015 0.03 to use the stated size)"] if said else []), messages
    # A spacing given replaces the file's, and nothing is said of its units.
    caplog.clear()
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        vio.read_image(tmp_path / "um.nrrd", spacing=(0.015, 0.015, 0.03))
    assert not any("microns" in r.getMessage() for r in caplog.records)


def test_a_segmentation_saved_by_slicer_4_10_reads_each_segment_from_its_own_layer(tmp_path):
    # Before Slicer 4.11 a .seg.nrrd held each segment in a layer of its own and stated no Segment<i>_Layer:
    # every segment was read from the first layer, so a label's heart was another segment's voxels.
    import nrrd

    tissue, heart = np.zeros((2, 6, 8, 4), np.uint8)  # (layer, x, y, z), as Slicer writes it
    tissue[1:5, 1:7, :] = 1
    heart[2:4, 3:5, 1:3] = 1
    header = {"type": "uint8", "dimension": 4, "space": "left-posterior-superior", "kinds": ["list"] + ["domain"] * 3,
              "space directions": np.vstack([[np.nan] * 3, np.diag([0.5, 0.5, 2.0])]),
              "space origin": np.zeros(3), "encoding": "gzip"}
    for i, name in enumerate(("Tissue", "Heart")):
        header.update({f"Segment{i}_ID": f"Segment_{i + 1}", f"Segment{i}_Name": name,
                       f"Segment{i}_Color": "0.5 0.5 0.5", f"Segment{i}_Extent": "0 5 0 7 0 3"})
    nrrd.write(str(tmp_path / "old.seg.nrrd"), np.stack([tissue, heart]), header)
    masks, _ = vio.read_segmentation(tmp_path / "old.seg.nrrd")
    np.testing.assert_array_equal(masks["heart"], heart.transpose(2, 1, 0))
    np.testing.assert_array_equal(masks["tissue"], tissue.transpose(2, 1, 0))
    label = vio.read_label(tmp_path / "old.seg.nrrd", (4, 8, 6), Geometry((0.5, 0.5, 2.0)))
    assert label.sum() == heart.sum()


def test_a_mask_folder_whose_numbers_skip_one_says_so_once(tmp_path, caplog):
    # sec06 missing and sec12 added: 12 files still, and every mask from section 6 on lay a section off, silently.
    masks = (np.arange(12)[:, None, None] == np.arange(12)[None, :, None]).repeat(5, axis=2).astype(np.uint8) * 255
    names = [f"sec{k:02d}.png" for k in range(13) if k != 6]
    write_sections(tmp_path / "masks", masks, names=names, is_vector=False)
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        label = vio.read_label(tmp_path / "masks", (12, 12, 5), Geometry(SPACING))
        assert vio.scribbles_like(tmp_path / "masks") is None  # evaluate's second look says nothing again
    assert label.shape == (12, 12, 5)
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'masks'}: the section numbers skip 6 (of sec00.png to sec12.png); each file is the section of "
        "its place in the folder, so those after the gap lie a section off if a file is missing there (keep one file "
        "per section, blank where nothing is marked)"]


def test_a_folder_of_jpeg_masks_is_warned_about_once_though_evaluate_reads_it_twice(tmp_path, caplog):
    masks = np.zeros((3, 16, 16), np.uint8)
    masks[:, 4:12, 4:12] = 255
    write_sections(tmp_path / "masks", masks, suffix=".jpg", is_vector=False)
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        vio.read_label(tmp_path / "masks", (3, 16, 16), Geometry(SPACING))
        vio.scribbles_like(tmp_path / "masks")
    assert len(caplog.records) == 1 and "label sections are JPEG" in caplog.records[0].getMessage()


def test_a_grey_image_given_as_a_label_is_refused_and_a_blurred_mask_is_not(tmp_path):
    # A grey H&E tile as --label or a training label was read "at half its largest value" with a warning about a
    # blurred mask: evaluate scored it (IoU 0.07) and train trained on its glass as the target, exit 0.
    rng = np.random.default_rng(0)
    grey = np.clip(rng.normal(190, 30, (2, 40, 40)), 1, 255).astype(np.uint8)  # a scan: glass and tissue, no 0
    write_sections(tmp_path / "grey", grey, is_vector=False)
    with pytest.raises(ScribbleSegError) as caught:
        vio.read_label(tmp_path / "grey", grey.shape, Geometry(SPACING))
    assert str(caught.value).startswith(f"{tmp_path / 'grey'}: ") and str(caught.value).endswith(
        "are 0: an image rather than a mask; give the mask (0 outside the target)")
    # A target blurred over nearly all its voxels (a wide blur: 255 at its middle, falling to its edge) is still a
    # mask, 0 outside it: read at half its largest value.
    y, x = np.mgrid[:40, :40]
    fall = np.clip(255 * (1 - np.hypot(y - 20, x - 20) / 14), 0, 255).astype(np.uint8)
    soft = np.stack([fall, fall])
    assert np.count_nonzero((soft > 0) & (soft < 255)) > 0.9 * np.count_nonzero(soft) and (soft == 0).mean() > 0.3
    write_sections(tmp_path / "wide", soft, is_vector=False)
    np.testing.assert_array_equal(vio.read_label(tmp_path / "wide", soft.shape, Geometry(SPACING)), soft > 127)


def test_a_mask_with_soft_edges_is_read_at_half_its_white_and_coded_classes_are_named(tmp_path, caplog):
    # A mask resized with bilinear interpolation, read as "> 0", made the heart 12 % larger without a word.
    hard = np.zeros((2, 40, 40), np.uint8)
    hard[:, 10:30, 10:30] = 255
    blurred = [sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(plane.astype(np.float32)),
                                                                      1.5)) for plane in hard]
    soft = np.clip(np.rint(blurred), 0, 255).astype(np.uint8)
    write_sections(tmp_path / "soft", soft, is_vector=False)
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        label = vio.read_label(tmp_path / "soft", hard.shape, Geometry(SPACING))
    assert abs(int(label.sum()) - int((hard > 0).sum())) <= 0.02 * (hard > 0).sum()  # the edge, not a halo
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "a resized or blurred mask?" in messages[0] and str(tmp_path / "soft") in messages[0]
    # Classes coded by value (organs 100 and 200) all count, with one warning that says so; a plain 0/255 mask, and
    # 0/1/2 (which scribbles_like names as scribbles), say nothing here.
    coded = np.zeros((2, 40, 40), np.uint8)
    coded[:, :10] = 100
    coded[:, 30:] = 200
    for name, array, said in (("coded", coded, "holds the label values 100, 200: every one counts as heart"),
                              ("hard", hard, None), ("strokes", coded // 100, None)):
        write_sections(tmp_path / name, array, is_vector=False)
        caplog.clear()
        with caplog.at_level("WARNING", logger="ScribbleSegLib"):
            got = vio.read_label(tmp_path / name, array.shape, Geometry(SPACING))
        np.testing.assert_array_equal(got, (array > 0).astype(np.uint8))
        assert [r.getMessage() for r in caplog.records] == ([] if said is None else [
            f"{tmp_path / name}: {said} (keep the heart's value alone, or give a .seg.nrrd with a 'heart' segment)"])


@pytest.mark.parametrize("channels", [3, 4])
def test_an_rgb_image_saved_with_its_channels_as_an_axis_is_refused_in_one_line(tmp_path, channels):
    # numpy's (height, width, 3) written as a plain 3D image: 40 sections of 50x3 grey pixels, segmented anyway.
    rgb = (np.random.default_rng(0).random((40, 50, channels)) * 255).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(rgb), str(tmp_path / "flat.nrrd"))
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_image(tmp_path / "flat.nrrd")
    message = str(excinfo.value)
    assert "\n" not in message and "flat.nrrd: a grey volume" in message and f"{channels} pixels wide" in message
    assert "image of 50x40 pixels" in message and "Save it as an RGB image" in message
    # The same pixels as an RGB image, and a narrow stack that is not such an image, are read.
    sitk.WriteImage(sitk.GetImageFromArray(rgb[..., :3], isVector=True), str(tmp_path / "rgb.nrrd"))
    assert vio.read_image(tmp_path / "rgb.nrrd").array.shape == (1, 40, 50, 3)
    sitk.WriteImage(sitk.GetImageFromArray(rgb[:8, :8]), str(tmp_path / "small.nrrd"))
    assert vio.read_image(tmp_path / "small.nrrd").array.shape == (8, 8, channels, 3)


@pytest.mark.parametrize("segments, words", [
    (np.zeros((2, 3, 4), np.uint8), "got an array of shape (2, 3, 4)"),
    ({"heart": np.zeros((2, 3, 4), np.uint8)}, "got dict"),
    (("heart", np.zeros((2, 3, 4), np.uint8), vio.HEART_COLOR), "got a tuple of 3 of str"),
    ([("heart", np.zeros((2, 3, 4), np.uint8))], "got a list of 1 of tuple"),
], ids=["bare labels", "dict", "one triple", "no colour"])
def test_segments_not_given_as_triples_are_refused_in_one_line(tmp_path, segments, words):
    # numpy's "truth value of an array is ambiguous" or "not enough values to unpack" said nothing of what was wanted.
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.write_segmentation(tmp_path / "s.seg.nrrd", segments, Geometry(SPACING))
    one_line_error(excinfo, "s.seg.nrrd", "segments must be a list of (name, mask, colour) triples", words)
    assert not list(tmp_path.iterdir())


def test_a_probability_or_a_bad_colour_as_a_segment_is_refused(tmp_path):
    # A float probability was written as a segment that holds every voxel above 0; a colour of None raised TypeError.
    probability = np.full((2, 3, 4), 0.2, np.float32)
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.write_segmentation(tmp_path / "s.seg.nrrd", [("heart", probability, vio.HEART_COLOR)], Geometry(SPACING))
    one_line_error(excinfo, "must be an integer or boolean mask, got float32", "threshold it first")
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.write_segmentation(tmp_path / "s.seg.nrrd", [("heart", probability > 0.5, None)], Geometry(SPACING))
    one_line_error(excinfo, "colour must be three numbers in [0, 1], got None")


def test_a_file_function_given_no_file_name_says_which_parameter(tmp_path):
    # pathlib's "expected str, bytes or os.PathLike object, not ndarray" came from read_image(array), a notebook slip.
    labels = np.zeros((2, 3, 4), np.uint8)
    for call in (lambda: vio.read_image(rgb_stack()), lambda: vio.read_label(None, (2, 3, 4), Geometry(SPACING)),
                 lambda: vio.read_scribbles(labels, (2, 3, 4), Geometry(SPACING)),
                 lambda: vio.write_labelmap(None, labels, Geometry(SPACING)),
                 lambda: vio.write_labelmap(labels, tmp_path / "o.nrrd", Geometry(SPACING))):
        with pytest.raises(ScribbleSegError) as excinfo:
            call()
        one_line_error(excinfo, "path must be a file or folder name (str or os.PathLike), got")


def test_a_spacing_given_for_a_file_with_its_own_is_noted(tmp_path, caplog):
    # One spacing for a training's folders and 3D files replaced an NRRD's own voxel size without a word; a file
    # that states none (1 mm) or the same one gets no note.
    stack = rgb_stack((3, 12, 16))
    vio.write_rgb_volume(tmp_path / "own.nrrd", Volume(stack, Geometry((0.0231, 0.0231, 0.045))))
    vio.write_rgb_volume(tmp_path / "none.nrrd", Volume(stack, Geometry((1.0, 1.0, 1.0))))
    with caplog.at_level("INFO", logger="ScribbleSegLib"):
        vio.read_image(tmp_path / "own.nrrd", spacing=(0.03, 0.03, 0.06))
        vio.read_image(tmp_path / "own.nrrd", spacing=(0.0231, 0.0231, 0.045))
        vio.read_image(tmp_path / "none.nrrd", spacing=(0.03, 0.03, 0.06))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"{tmp_path / 'own.nrrd'}: its own voxel size (0.0231, 0.0231, 0.045) mm is replaced by the "
                     "spacing given (0.03, 0.03, 0.06)"], lines
    assert caplog.records[0].levelname == "INFO"
    # Twice the file's pixel: the network's scale follows it, as likely a slip as a correction, so a warning.
    caplog.clear()
    with caplog.at_level("INFO", logger="ScribbleSegLib"):
        vio.read_image(tmp_path / "own.nrrd", spacing=(0.0462, 0.0462, 0.045))
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "the network's scale and the areas follow the spacing given" in caplog.records[0].getMessage()


def test_strokes_of_other_values_on_a_folder_read_with_a_spacing_get_one_refusal_not_a_label_warning(tmp_path,
                                                                                                      caplog):
    # A folder read with a spacing first tries the strokes on the folder's own grid; that try read them as a label
    # and warned "holds the label values 128, 255: every one counts as heart" before the refusal said otherwise.
    images, strokes = tmp_path / "images", tmp_path / "strokes"
    images.mkdir()
    strokes.mkdir()
    for z in range(2):
        sitk.WriteImage(sitk.GetImageFromArray(np.full((8, 8, 3), 200, np.uint8), isVector=True),
                        str(images / f"s{z}.png"))
        marks = np.zeros((8, 8), np.uint8)
        marks[2, 2:6], marks[6, 2:6] = 128, 255
        sitk.WriteImage(sitk.GetImageFromArray(marks), str(strokes / f"s{z}.png"))
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        assert vio.marks_on_file_grid(strokes, images, (2, 8, 8), spacing=(0.02, 0.02, 0.04), strokes=True) is None
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize("spacing, stated", [("0.5 0.5 0", "(0.5, 0.5, 0)"), ("0 0 0", "(0, 0, 0)")])
def test_a_header_with_a_zero_spacing_is_named_not_called_damaged(tmp_path, spacing, stated):
    # ITK refuses such a header; the message said "damaged or truncated file", and a given spacing cannot help.
    path = tmp_path / "zero.mha"
    header = (f"ObjectType = Image\nNDims = 3\nDimSize = 4 4 2\nElementSpacing = {spacing}\nElementType = MET_UCHAR\n"
              "ElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + bytes(32))
    for spacing_given in (None, (0.5, 0.5, 1.0)):
        with pytest.raises(ScribbleSegError) as excinfo:
            vio.read_image(path, spacing=spacing_given)
        one_line_error(excinfo, "zero.mha", f"its header states a voxel spacing of {stated}, which the image reader "
                       "refuses", "correct the spacing in the file's header")


def test_rgb_stored_with_its_channels_first_is_named(tmp_path):
    # numpy's (3, Z, Y, X) written as an image reads as 3 sections of X components: "has 40 components" alone.
    path = tmp_path / "first.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((3, 2, 6, 40), 100, np.uint8)), str(path))
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_image(path)
    one_line_error(excinfo, "first.nrrd", "has 40 components per pixel", "its colour channels first",
                   "(Z, Y, X, 3)")


def test_rgb_stored_as_a_fourth_axis_is_named(tmp_path):
    # nibabel's (X, Y, Z, 3) of an RGB stack: ITK reads a 4D grey image, which was refused as "a 4D image" alone.
    path = tmp_path / "rgb4d.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((3, 2, 6, 5), 100, np.uint8), isVector=False), str(path))
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_image(path)
    one_line_error(excinfo, "rgb4d.nii.gz", "a 4D image of 3 volumes of 5x6x2 voxels: the colour channels stored as "
                   "a 4th axis", "Save it as an RGB image")


def test_section_files_named_with_a_date_first_are_read_with_a_warning_on_their_order(tmp_path, caplog):
    # Embryo3_2024-05-02_sec7.png: sorted by the date first, the sections were shuffled without a word.
    for name, numbers in (("dated", [f"emb_2024-05-{z % 3 + 1:02d}_sec{z}" for z in range(6)]),
                          ("slides", [f"slide{s}_sec{z}" for s in (1, 2) for z in (1, 2, 3)])):
        folder = tmp_path / name
        folder.mkdir()
        for z, stem in enumerate(numbers):
            sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 4, 3), 100 + z, np.uint8), isVector=True),
                            str(folder / f"{stem}.png"))
        caplog.clear()
        with caplog.at_level("WARNING", logger="ScribbleSegLib"):
            vio.read_image(folder, spacing=(0.02, 0.02, 0.04))
        lines = [r.getMessage() for r in caplog.records if "ordered by the first number" in r.getMessage()]
        if name == "dated":
            assert lines == [f"{folder}: the section files are ordered by the first number that differs "
                             "(emb_2024-05-01_sec0.png, emb_2024-05-01_sec3.png, ...); their last number alone "
                             "differs in every file and would order them otherwise (sec0, sec1, sec2, ...); if that "
                             "number is the section's, rename the files so that it comes first"]
        else:
            assert lines == []


def test_strokes_on_a_turned_grid_of_the_same_spacing_are_refused_without_a_finer_grid_hint(tmp_path):
    # The refusal of strokes on the image's spacing but another direction said "(strokes may be drawn on a finer
    # grid, not a coarser one)", which has nothing to do with a turn.
    strokes = _two_strokes()
    vio.write_labelmap(tmp_path / "s.nrrd", strokes, Geometry((0.06, 0.06, 0.12)))
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    turned = Geometry((0.06, 0.06, 0.12), (0.0, 0.0, 0.0), (c, -s, 0, s, c, 0, 0, 0, 1))
    with pytest.raises(ScribbleSegError) as excinfo:
        vio.read_scribbles(tmp_path / "s.nrrd", strokes.shape, turned)
    one_line_error(excinfo, "s.nrrd", "does not match the image: direction differs from the image's")
    assert "coarser" not in str(excinfo.value)


def test_an_image_of_another_format_than_its_extension_is_named_not_called_damaged(tmp_path):
    # A JPEG saved as .png was refused as "unsupported format, damaged or truncated file": the file was good.
    jpeg = tmp_path / "tile.jpg"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((16, 16, 3), 120, np.uint8), isVector=True), str(jpeg))
    misnamed = tmp_path / "tile.png"
    misnamed.write_bytes(jpeg.read_bytes())
    with pytest.raises(ScribbleSegError, match=r"tile\.png: holds a JPEG image, .* rename it to end in \.jpg"):
        vio.read_image(misnamed)
    png = tmp_path / "whole.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((16, 16, 3), 120, np.uint8), isVector=True), str(png))
    damaged = tmp_path / "cut.png"
    damaged.write_bytes(png.read_bytes()[:40])  # a PNG cut short is still called damaged
    with pytest.raises(ScribbleSegError, match="damaged or truncated"):
        vio.read_image(damaged)
