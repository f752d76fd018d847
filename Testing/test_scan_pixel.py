"""The scan's pixel size that ImageJ, OME and Aperio TIFFs state in their description (scan_pixel.py), and how
reading, segmenting and training use it."""

import logging
import struct
from fractions import Fraction

import numpy as np
import pytest
import SimpleITK as sitk

from ScribbleSegLib import cli, image_tags, phantom, pipeline, scan_pixel, training, volume_io
from ScribbleSegLib.errors import ScribbleSegError
from ScribbleSegLib.geometry import Volume

ASCII, SHORT, LONG, RATIONAL = 2, 3, 4, 5


def write_tiff(path, pages, description=None, resolution=None, unit=None, big_endian=False):
    """An uncompressed TIFF of ``pages`` ``(Y, X, 3)`` RGB or ``(Y, X)`` grey uint8 arrays, each one strip, with an
    image description and resolution tags (pixels per unit, and the ResolutionUnit tag) on each page when given: our
    own writer, as SimpleITK writes neither a description nor a unit other than the inch and the centimetre."""
    order = ">" if big_endian else "<"
    out = bytearray(b"MM\x00*" if big_endian else b"II*\x00") + bytes(4)
    link = 4  # where the offset of the next page goes

    def pack(kind, values):
        if kind == ASCII:
            return values.encode("utf-8") + b"\x00"
        if kind == RATIONAL:
            return b"".join(struct.pack(order + "II", v.numerator, v.denominator)
                            for v in (Fraction(x).limit_denominator(10**6) for x in values))
        return b"".join(struct.pack(order + ("H" if kind == SHORT else "I"), v) for v in values)

    for array in pages:
        height, width = array.shape[:2]
        samples = 1 if array.ndim == 2 else 3  # a (Y, X) page is grey
        data_at = len(out)
        out += array.astype(np.uint8).tobytes()
        tags = [(256, LONG, [width]), (257, LONG, [height]), (258, SHORT, [8] * samples), (259, SHORT, [1]),
                (262, SHORT, [2 if samples == 3 else 1]), (273, LONG, [data_at])]
        if description is not None:
            tags.append((270, ASCII, description))
        tags += [(277, SHORT, [samples]), (278, LONG, [height]), (279, LONG, [array.size]), (284, SHORT, [1])]
        if resolution is not None:
            tags += [(282, RATIONAL, [resolution]), (283, RATIONAL, [resolution])]
        if unit is not None:
            tags.append((296, SHORT, [unit]))
        payloads = [pack(kind, values) for _, kind, values in tags]
        extra_at = len(out)
        for payload in payloads:  # values over 4 bytes lie before the page's entries
            if len(payload) > 4:
                out += payload + b"\x00" * (len(payload) % 2)
        if len(out) % 2:
            out += b"\x00"
        ifd_at = len(out)
        out[link:link + 4] = struct.pack(order + "I", ifd_at)
        out += struct.pack(order + "H", len(tags))
        for (tag, kind, values), payload in zip(tags, payloads):
            count = len(payload) if kind == ASCII else len(values)
            if len(payload) > 4:
                field = struct.pack(order + "I", extra_at)
                extra_at += len(payload) + len(payload) % 2
            else:
                field = payload.ljust(4, b"\x00")
            out += struct.pack(order + "HHI", tag, kind, count) + field
        link = len(out)
        out += bytes(4)
    path.write_bytes(bytes(out))
    return path


def tissue(height=40, width=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3)).astype(np.uint8)


IMAGEJ = "ImageJ=1.54f\nimages=3\nslices=3\nunit={unit}\nspacing=5.0\nloop=false\n"
OME = ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
       '<Image ID="Image:0"><Pixels DimensionOrder="XYCZT" ID="Pixels:0" PhysicalSizeX="{x}" '
       'PhysicalSizeXUnit="{unit}" PhysicalSizeY="{x}" PhysicalSizeYUnit="{unit}" SizeC="3" SizeT="1" SizeX="48" '
       'SizeY="40" SizeZ="1" Type="uint8"></Pixels></Image></OME>')


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("unit", ["micron", "\\u00B5m", "um", "µm"])
def test_an_imagej_stack_states_its_voxel_in_micrometres(tmp_path, unit, big_endian):
    # Fiji writes 2 pixels per micrometre in the resolution tags with no unit there (ITK then reads 1 mm pixels),
    # and the unit and the distance between sections in the description.
    path = write_tiff(tmp_path / "stack.tif", [tissue(seed=k) for k in range(3)], IMAGEJ.format(unit=unit), 2.0, 1,
                      big_endian)
    assert image_tags.first_page_values(path, (282, 296)) == {282: 2.0, 296: 1}
    assert scan_pixel.stated_pixel(path) == scan_pixel.StatedPixel(0.0005, 0.0005, 0.005, "ImageJ")


def test_what_ome_and_aperio_descriptions_state_is_read_in_their_units(tmp_path):
    for unit, mm in (("µm", 0.00025), ("nm", 0.00025)):
        x = 0.25 if unit == "µm" else 250
        path = write_tiff(tmp_path / f"ome_{unit}.ome.tif", [tissue()], OME.format(x=x, unit=unit))
        stated = scan_pixel.stated_pixel(path)
        assert stated.source == "OME" and stated.x == pytest.approx(mm) and stated.y == pytest.approx(mm)
        assert stated.z is None
    path = write_tiff(tmp_path / "slide.svs", [tissue()], "Aperio Image Library v12.0.15\n48x40 -> 48x40 - "
                      "|AppMag = 40|StripeWidth = 2040|MPP = 0.2520|Filename = 1")
    assert scan_pixel.stated_pixel(path) == scan_pixel.StatedPixel(0.000252, 0.000252, None, "Aperio")


@pytest.mark.parametrize("description, resolution, unit", [
    (IMAGEJ.format(unit="pixel"), 1.0, 1),  # ImageJ's "no calibration"
    (IMAGEJ.format(unit="micron"), None, None),  # no resolution tags
    ("Aperio Image Library |MPP = 5000|", None, None),  # 5 mm pixels: no scan's
    ("Created with GIMP", None, None),
    (None, 2.0, 1),
])
def test_a_description_that_states_no_usable_pixel_size_gives_none(tmp_path, description, resolution, unit):
    path = write_tiff(tmp_path / "tile.tif", [tissue()], description, resolution, unit)
    assert scan_pixel.stated_pixel(path) is None


def test_a_damaged_description_gives_none_not_an_error(tmp_path):
    path = write_tiff(tmp_path / "tile.tif", [tissue()], IMAGEJ.format(unit="micron"), 2.0, 1)
    data = bytearray(path.read_bytes())
    at = data.index(struct.pack("<HH", 270, ASCII))  # the description's entry: its offset beyond the file
    data[at + 8:at + 12] = struct.pack("<I", len(data) + 100)
    path.write_bytes(bytes(data))
    assert scan_pixel.stated_pixel(path) is None
    assert scan_pixel.stated_pixel(tmp_path / "missing.tif") is None


def test_a_tile_is_read_on_itks_grid_with_the_stated_scan_pixel_beside_it(tmp_path):
    path = write_tiff(tmp_path / "tile.tif", [tissue()], IMAGEJ.format(unit="micron"), 2.0, 1)
    volume = volume_io.read_image(path)
    assert volume.geometry.spacing == (1.0, 1.0, 1.0)  # the grid 3D Slicer loads and strokes are drawn on
    assert volume.scan_pixel == pytest.approx((0.0005, 0.0005))
    assert volume.scan_spacing == pytest.approx((0.0005, 0.0005, 1.0))
    assert volume_io.read_image(path, downsample=2).scan_pixel == pytest.approx((0.001, 0.001))
    assert volume_io.read_image(path, spacing=(0.01, 0.01, 0.02)).scan_pixel is None  # a given spacing rules
    # A size ITK reads itself (the centimetre as unit) stands: nothing is stated apart from the grid.
    cm = write_tiff(tmp_path / "cm.tif", [tissue()], IMAGEJ.format(unit="micron"), 40000.0, 3)
    read = volume_io.read_image(cm)
    assert read.geometry.spacing[:2] == pytest.approx((0.00025, 0.00025)) and read.scan_pixel is None


def test_a_stack_whose_description_states_its_voxel_names_the_spacing_to_give(tmp_path, caplog):
    path = write_tiff(tmp_path / "stack.tif", [tissue(seed=k) for k in range(3)], IMAGEJ.format(unit="micron"),
                      2.0, 1)
    with caplog.at_level(logging.WARNING, logger="ScribbleSegLib"):
        volume = volume_io.read_image(path)
    assert volume.shape == (3, 40, 48) and volume.scan_pixel == pytest.approx((0.0005, 0.0005))
    lines = [r.getMessage() for r in caplog.records if "sections" in r.getMessage()]
    assert len(lines) == 1 and "states 0.5 x 0.5 x 5 um voxels" in lines[0]
    assert lines[0].endswith("(give the spacing 0.0005 0.0005 0.005 to use that voxel size)")


def test_training_records_the_stated_scan_pixel_as_the_models_pixel_size():
    grid = phantom.make_phantom(seed=0, config=phantom.PhantomConfig(shape=(4, 32, 32))).image
    stated = Volume(grid.array, grid.geometry, (0.0005, 0.0005))
    assert training._voxel_size([stated]) == pytest.approx((0.0005, 0.0005, grid.geometry.spacing[2]))
    assert training._voxel_size([grid]) == pytest.approx(grid.geometry.spacing)


def test_segment_command_runs_a_fiji_tile_at_the_scale_its_description_states(tmp_path, capsys):
    # A Fiji tile stating twice the starter model's pixel size: the network is resampled as it is for the same
    # tile given that size as its spacing, without the "no pixel size" warning, and the result stays on the
    # file's own grid (as 3D Slicer loads it).
    model = pipeline.as_model("starter", "cpu")
    pixel_um = 2 * model.voxel_size[0] * 1000
    section = phantom.make_phantom(seed=3, config=phantom.PhantomConfig(shape=(4, 64, 64))).image.array[2]
    write_tiff(tmp_path / "tile.tif", [section], IMAGEJ.format(unit="micron"), 1.0 / pixel_um, 1)
    sitk.WriteImage(sitk.GetImageFromArray(section, isVector=True), str(tmp_path / "tile.png"))
    common = ["segment", "--model", "starter", "--method", "munet", "--no-cache"]
    assert cli.main(common + ["--image", str(tmp_path / "tile.tif"), "--out", str(tmp_path / "stated.seg.nrrd"),
                              "--probability", str(tmp_path / "stated.nrrd")]) == 0
    captured = capsys.readouterr()
    assert "no pixel size" not in captured.err and "Traceback" not in captured.err, captured.err
    notes = [line for line in captured.err.splitlines() if "tile.tif: " in line]
    assert len(notes) == 1 and notes[0].endswith(f"its ImageJ description states {pixel_um:g} x {pixel_um:g} um "
                                                 "pixels, the size the network's scale reads"), notes
    heart = [line.split() for line in captured.out.splitlines() if line.startswith("heart: ")][0]
    assert heart[4] == "mm^2" and float(heart[3]) == pytest.approx(int(heart[1]) * (pixel_um / 1000) ** 2, rel=1e-3)
    assert cli.main(common + ["--image", str(tmp_path / "tile.png"), "--out", str(tmp_path / "given.seg.nrrd"),
                              "--probability", str(tmp_path / "given.nrrd"),
                              "--spacing", str(pixel_um / 1000), str(pixel_um / 1000), "1"]) == 0
    stated, given = (sitk.ReadImage(str(tmp_path / name)) for name in ("stated.nrrd", "given.nrrd"))
    assert stated.GetSpacing() == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(stated), sitk.GetArrayFromImage(given), atol=1e-5)
    own = volume_io.read_image(tmp_path / "tile.png")
    scale_off = pipeline.network_scale(pipeline.scale_pixel(own, own.geometry, None), model, [])
    assert scale_off == (1.0, 1.0)  # without the description the tile would run at its own scale


def test_a_segment_job_given_the_scan_pixel_runs_at_that_scale_on_a_grid_without_one(tmp_path):
    # What the Slicer module sends: the volume as an NRRD on 1 mm pixels, and the size its TIFF stated.
    from ScribbleSegLib.geometry import Geometry
    from ScribbleSegLib.jobs import SegmentFiles, segment_files

    model = pipeline.as_model("starter", "cpu")
    pixel = 2 * model.voxel_size[0]
    section = phantom.make_phantom(seed=3, config=phantom.PhantomConfig(shape=(4, 64, 64))).image.array[2]
    volume_io.write_rgb_volume(tmp_path / "image.nrrd", Volume(section[None], Geometry((1.0, 1.0, 1.0))))
    runs = {}
    for name, extra in (("stated", {"scan_pixel": [pixel, pixel]}), ("given", {"spacing": (pixel, pixel, 1.0)}),
                        ("none", {})):
        done = segment_files(SegmentFiles(image=str(tmp_path / "image.nrrd"), model="starter", method="munet",
                                          labels=str(tmp_path / f"{name}.nrrd"),
                                          probability=str(tmp_path / f"{name}_p.nrrd"), **extra))
        runs[name] = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"{name}_p.nrrd")))
        assert any("no pixel size" in w for w in done.metrics.get("warnings", [])) == (name == "none")
    np.testing.assert_allclose(runs["stated"], runs["given"], atol=1e-5)
    assert np.abs(runs["stated"] - runs["none"]).max() > 0.05  # the scale changed the network's output


def test_a_bad_scan_pixel_is_refused_naming_the_field(tmp_path):
    from ScribbleSegLib import worker
    from ScribbleSegLib.errors import ScribbleSegError
    from ScribbleSegLib.jobs import SegmentFiles, check_job

    image = write_tiff(tmp_path / "tile.tif", [tissue()])
    with pytest.raises(ScribbleSegError, match=r"^scan_pixel must be two positive numbers X Y in mm, got \(1, -1\)"):
        check_job(SegmentFiles(image=str(image), model="starter", labels=str(tmp_path / "o.nrrd"), method="munet",
                               scan_pixel=(1, -1)))
    request = {"task": "segment", "image": "tile.tif", "model": "starter", "method": "munet", "device": "cpu",
               "cache_dir": None, "outputs": {"labels": "o.nrrd"}}
    path = worker.write_request(tmp_path / "r.json", {**request, "scan_pixel": [0.00025, 0.00025]})
    assert worker.load_request(path)["scan_pixel"] == [0.00025, 0.00025]
    assert worker.load_request(worker.write_request(tmp_path / "r.json", request))["scan_pixel"] is None
    for bad in ([0.00025], [0.00025, 0], ["a", 1], [True, 1]):
        path = worker.write_request(tmp_path / "r.json", {**request, "scan_pixel": bad})
        with pytest.raises(ScribbleSegError, match="'scan_pixel' must be two positive numbers X Y in mm"):
            worker.load_request(path)


def test_a_folder_read_without_a_spacing_names_the_one_its_sections_state(tmp_path, capsys):
    # A Fiji image sequence: each section a TIFF whose description states the calibration of the stack.
    from ScribbleSegLib.errors import ScribbleSegError

    folder = tmp_path / "sections"
    folder.mkdir()
    for k in range(3):
        write_tiff(folder / f"s{k}.tif", [tissue(seed=k)], IMAGEJ.format(unit="micron"), 2.0, 1)
    with pytest.raises(ScribbleSegError, match=r"needs the voxel spacing X Y Z in mm \(spacing\); its sections' "
                       r"ImageJ descriptions state 0.5 x 0.5 x 5 um voxels: give the spacing 0.0005 0.0005 0.005$"):
        volume_io.read_image(folder)
    assert cli.main(["segment", "--image", str(folder), "--model", "starter", "--method", "munet",
                     "--out", str(tmp_path / "o.seg.nrrd"), "--quiet"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give the spacing 0.0005 0.0005 0.005" in err[0], err
    for k in range(3):  # sections that state no distance between them: Z is left to the user
        write_tiff(folder / f"s{k}.tif", [tissue(seed=k)], "ImageJ=1.54f\nunit=micron\n", 2.0, 1)
    with pytest.raises(ScribbleSegError, match=r"descriptions state 0.5 x 0.5 um pixels: give the spacing 0.0005 "
                                               r"0.0005 Z, Z the distance between sections$"):
        volume_io.read_image(folder)
    plain = tmp_path / "plain"
    plain.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(tissue(), isVector=True), str(plain / "s0.png"))
    with pytest.raises(ScribbleSegError, match=r"needs the voxel spacing X Y Z in mm \(spacing\)$"):
        volume_io.read_image(plain)
    # Sections scanned at another magnification, or a section with no statement: no one size to name.
    write_tiff(folder / "s2.tif", [tissue(seed=2)], "ImageJ=1.54f\nunit=micron\n", 4.0, 1)
    with pytest.raises(ScribbleSegError, match=r"\(spacing\); its sections state different voxel sizes: 0.5 x 0.5 "
                                               r"um in s0.tif, 0.25 x 0.25 um in s2.tif$"):
        volume_io.read_image(folder)
    sitk.WriteImage(sitk.GetImageFromArray(tissue(), isVector=True), str(folder / "s3.png"))
    (folder / "s2.tif").unlink()
    with pytest.raises(ScribbleSegError, match=r"0.5 x 0.5 um in s0.tif, none in s3.png$"):
        volume_io.read_image(folder)


def test_a_bigtiff_first_page_description_is_read(tmp_path):
    # BigTIFF (Bio-Formats writes OME-TIFFs over 4 GB so): 8-byte counts and offsets in 20-byte entries.
    text = OME.format(x=0.5, unit="µm").encode("utf-8") + b"\x00"
    header = b"II+\x00" + struct.pack("<HHQ", 8, 0, 16)
    entries = [struct.pack("<HHQQ", 256, 4, 1, 48), struct.pack("<HHQQ", 270, ASCII, len(text), 16 + 8 + 2 * 20 + 8)]
    path = tmp_path / "big.ome.tif"
    path.write_bytes(header + struct.pack("<Q", len(entries)) + b"".join(entries) + bytes(8) + text)
    assert image_tags.first_page_values(path, (256, 270)) == {256: 48, 270: text[:-1].decode("utf-8")}
    assert scan_pixel.stated_pixel(path) == scan_pixel.StatedPixel(0.0005, 0.0005, None, "OME")


@pytest.mark.parametrize("description", [
    "ImageJ=1.54f\nimages=6\nchannels=3\nslices=2\nhyperstack=true\nmode=composite\nunit=micron\nspacing=5.0\n",
    OME.format(x=0.5, unit="µm").replace('SizeZ="1"', 'SizeZ="2"')])
def test_a_stack_whose_colour_channels_are_pages_of_their_own_is_refused_in_one_line(tmp_path, description):
    # ITK read each channel page as a grey section: 3 times the sections, segmented anyway.
    from ScribbleSegLib import volume_io

    rgb = [tissue(seed=k) for k in range(2)]
    path = tmp_path / "composite.tif"
    write_tiff(path, [section[..., c] for section in rgb for c in range(3)], description, 2.0, 1)
    assert scan_pixel.channels_as_pages(path) == 3
    with pytest.raises(ScribbleSegError) as excinfo:
        volume_io.read_image(path, spacing=(0.0005, 0.0005, 0.005))
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message and "3 colour channels stored as pages" in message
    assert "6 pages" in message and "Stack to RGB" in message
    # The same sections as RGB pages with the same description: read as they are.
    write_tiff(path, rgb, description, 2.0, 1)
    assert scan_pixel.channels_as_pages(path) is None
    assert volume_io.read_image(path, spacing=(0.0005, 0.0005, 0.005)).array.shape == (2, 40, 48, 3)


def test_a_tiff_stack_with_a_page_of_another_pixel_format_is_refused_in_one_line(tmp_path):
    # ITK read the grey page with the first page's RGB layout: garbage for that section, without a word.
    from ScribbleSegLib import volume_io

    pages = [tissue(seed=k) for k in range(4)]
    path = tmp_path / "stack.tif"
    write_tiff(path, pages[:2] + [pages[2][..., 0]] + pages[3:])
    with pytest.raises(ScribbleSegError) as excinfo:
        volume_io.read_image(path, spacing=(0.001, 0.001, 0.005))
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message and "page 3 holds another pixel format" in message
    assert "(3 x 8-bit samples)" in message
    write_tiff(path, pages)
    assert volume_io.read_image(path, spacing=(0.001, 0.001, 0.005)).array.shape == (4, 40, 48, 3)
