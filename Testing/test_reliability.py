"""Nothing lost: outputs never touch inputs, faults leave no trace, every failure is one line (issue 9).

Each test drives a failure a user met or could meet -- an output that is an
input, a damaged cache, a full disk, a kill while writing, a huge shape, a bad
option, a wrong API argument -- and checks the contract: non-zero exit, one
line naming the file or option, inputs byte-identical, nothing left behind.
"""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ScribbleSegLib import choices, cli, feature_cache, fileio, phantom, pipeline, scribbles, volume_io
from ScribbleSegLib.errors import ScribbleSegError
from ScribbleSegLib.nets import ModelConfig
from ScribbleSegLib.training import train_model

TINY_NET = ModelConfig(patch=16, width=4, depth=2, aggregator=(8,), feature_channels=8)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reliability")
    cfg = phantom.PhantomConfig(shape=(8, 40, 40))
    made = phantom.make_phantom(seed=3, config=cfg)
    model = train_model([made.image], [made.label], folder / "tiny.model", TINY_NET, max_iters=10, seed=0)
    strokes = scribbles.simulate_scribbles(made.label, seed=0, every=2)
    image = folder / "image.nrrd"
    volume_io.write_rgb_volume(image, made.image)
    scrib = folder / "scribbles.seg.nrrd"
    volume_io.write_segmentation(scrib, [("heart", strokes == 1, volume_io.HEART_COLOR),
                                         ("background", strokes == 2, volume_io.BACKGROUND_COLOR)],
                                 made.image.geometry)
    return {"folder": folder, "image": image, "scribbles": scrib, "model": Path(model), "phantom": made,
            "strokes": strokes}


def digest(paths):
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def inputs_of(case):
    return [case["image"], case["scribbles"], case["model"]]


def run_cli(capsys, args):
    status = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err.strip()


def segment_args(case, out, *extra, cache=None):
    args = ["segment", "--image", case["image"], "--scribbles", case["scribbles"], "--model", case["model"],
            "--out", out, "--quiet", "--device", "cpu"]
    args += ["--cache-dir", cache] if cache else ["--no-cache"]
    return args + list(extra)


def leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir() if fileio.is_temp_name(p.name))


def assert_one_line_error(status, err, *words):
    assert status != 0
    # A run that fails late may have said what it did first: the tiny phantom's end sections hold too little
    # tissue for a stain fit of their own, a note. The failure itself is one line.
    assert len([line for line in err.splitlines() if ": note: " not in line]) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert str(word) in err, err


# ---------------------------------------------------------------------------
# An output can destroy an input
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["scribbles", "image", "model"])
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(case, capsys, which):
    before = digest(inputs_of(case))
    status, _, err = run_cli(capsys, segment_args(case, case[which]))
    assert_one_line_error(status, err, case[which], "--out", f"--{which}")
    assert digest(inputs_of(case)) == before
    assert leftovers(case["folder"]) == []


def test_an_output_that_is_the_same_file_under_another_name_is_refused(case, capsys, tmp_path):
    link = tmp_path / "also_scribbles.seg.nrrd"
    os.link(case["scribbles"], link)
    before = digest(inputs_of(case))
    status, _, err = run_cli(capsys, segment_args(case, link))
    assert_one_line_error(status, err, link, "--scribbles")
    assert digest(inputs_of(case)) == before


def test_an_output_that_ends_in_a_slash_is_refused(case, capsys, tmp_path):
    # pathlib drops the slash: the run wrote a file of that name and printed the path with the slash.
    status, _, err = run_cli(capsys, segment_args(case, f"{tmp_path / 'o.seg.nrrd'}/"))
    assert_one_line_error(status, err, "o.seg.nrrd/ (--out): ends in a slash")
    assert list(tmp_path.iterdir()) == []

def test_an_output_name_that_ends_in_a_space_is_named_so(case, capsys, tmp_path):
    # "o.png  (--out): expected a file name ending in .png" hid the space that made it wrong.
    status, _, err = run_cli(capsys, segment_args(case, f"{tmp_path / 'o.seg.nrrd'} "))
    assert_one_line_error(status, err, "o.seg.nrrd ' (--out): the file name starts or ends with a space")
    assert list(tmp_path.iterdir()) == []


def test_two_outputs_on_one_file_are_refused_before_any_work(case, capsys, tmp_path):
    out = tmp_path / "o.nrrd"
    status, _, err = run_cli(capsys, segment_args(case, out, "--probability", out))
    assert_one_line_error(status, err, out, "--out", "--probability")
    assert list(tmp_path.iterdir()) == []


def test_an_output_inside_an_input_folder_of_sections_is_refused(case, capsys, tmp_path):
    sections = tmp_path / "sections"
    sections.mkdir()
    for k in range(4):
        (sections / f"s{k}.png").write_bytes(b"not read: the output check comes first")
    status, _, err = run_cli(capsys, ["segment", "--image", sections, "--spacing", 1, 1, 1, "--model",
                                      case["model"], "--method", "munet", "--out", sections / "o.nrrd",
                                      "--render", sections / "r.png", "--no-cache", "--quiet"])
    assert_one_line_error(status, err, "inside the input folder")
    assert sorted(p.name for p in sections.iterdir()) == [f"s{k}.png" for k in range(4)]


def test_a_cache_folder_inside_an_input_folder_of_sections_is_refused(case, capsys, tmp_path):
    # The cache's entry went into the folder of sections, though an output there was refused.
    sections = tmp_path / "sections"
    sections.mkdir()
    for k in range(4):
        (sections / f"s{k}.png").write_bytes(b"not read: the cache check comes first")
    for cache in (sections, sections / "cache"):
        status, _, err = run_cli(capsys, ["segment", "--image", sections, "--spacing", 1, 1, 1, "--model",
                                          case["model"], "--method", "munet", "--out", tmp_path / "o.nrrd",
                                          "--cache-dir", cache, "--quiet"])
        assert_one_line_error(status, err, "--cache-dir", "inside the input folder", "--image")
    assert sorted(p.name for p in sections.iterdir()) == [f"s{k}.png" for k in range(4)]
    assert not (tmp_path / "o.nrrd").exists()



def test_a_model_that_is_a_folder_is_named_so_even_when_it_holds_the_output(case, capsys, tmp_path):
    # The folder check of the outputs came first, and blamed the output for lying inside "the input folder".
    status, _, err = run_cli(capsys, ["segment", "--image", case["image"], "--model", tmp_path, "--method", "munet",
                                      "--out", tmp_path / "o.nrrd", "--no-cache", "--quiet"])
    assert_one_line_error(status, err, f"{tmp_path}: is a folder, not a model file (--model)")
    assert list(tmp_path.iterdir()) == []

@pytest.mark.parametrize("given", ["blank", "mask"])
def test_train_refuses_a_blank_image_or_a_mask_given_as_the_image(capsys, tmp_path, given):
    # segment refused both; train made a model from them, with a stain warning that named no file.
    import SimpleITK as sitk

    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 10:24] = 255
    image = np.full((32, 32, 3), 255, np.uint8) if given == "blank" else np.repeat(mask[..., None], 3, axis=2)
    sitk.WriteImage(sitk.GetImageFromArray(image, isVector=True), str(tmp_path / "image.png"))
    sitk.WriteImage(sitk.GetImageFromArray(mask), str(tmp_path / "mask.png"))
    status, _, err = run_cli(capsys, ["train", "--images", tmp_path / "image.png", "--labels", tmp_path / "mask.png",
                                      "--out", tmp_path / "m.model", "--max-iters", 1, "--device", "cpu", "--quiet"])
    assert_one_line_error(status, err, "image.png", "no tissue" if given == "blank" else
                          "a labelmap or a mask, not stained sections (give the stained sections)")
    assert not (tmp_path / "m.model").exists()

def test_train_refuses_a_model_named_as_another_output_and_the_starter_as_its_out(case, capsys, tmp_path):
    from ScribbleSegLib.starter import resolve_model

    label = tmp_path / "label.nrrd"
    volume_io.write_labelmap(label, case["phantom"].label, case["phantom"].image.geometry)
    train = ["train", "--images", case["image"], "--labels", label, "--max-iters", 1, "--quiet"]
    status, _, err = run_cli(capsys, train + ["--out", tmp_path / "heart.seg.nrrd"])
    assert_one_line_error(status, err, "heart.seg.nrrd (--out): ends in .seg.nrrd", "heart.model")
    starter = resolve_model("starter")
    before = hashlib.sha256(starter.read_bytes()).hexdigest()
    status, _, err = run_cli(capsys, train + ["--init", "starter", "--out", starter])
    assert_one_line_error(status, err, "(--out): is the input --init starter")
    assert hashlib.sha256(starter.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["label.nrrd"]

def test_train_says_when_it_replaced_a_model_at_its_out(case, capsys, tmp_path):
    # An hour's training wrote over the model at --out without a word: the same name, another network.
    label = tmp_path / "label.nrrd"
    volume_io.write_labelmap(label, case["phantom"].label, case["phantom"].image.geometry)
    train = ["train", "--images", case["image"], "--labels", label, "--max-iters", 1, "--quiet", "--device", "cpu",
             "--out", tmp_path / "m.model"]
    status, out, _ = run_cli(capsys, train)
    assert status == 0 and out.strip() == f"wrote {tmp_path / 'm.model'}"
    status, out, _ = run_cli(capsys, train)
    assert status == 0 and out.strip() == f"wrote {tmp_path / 'm.model'} (in place of the model that was there)"

def test_train_refuses_to_replace_a_file_that_is_not_a_model(case, capsys, tmp_path):
    # Notes, a table or a manifest given as --out were replaced by the model, "in place of the model that was there".
    label = tmp_path / "label.nrrd"
    volume_io.write_labelmap(label, case["phantom"].label, case["phantom"].image.geometry)
    notes = tmp_path / "notes.txt"
    notes.write_text("important")
    status, _, err = run_cli(capsys, ["train", "--images", case["image"], "--labels", label, "--max-iters", 1,
                                      "--quiet", "--device", "cpu", "--out", notes])
    assert_one_line_error(status, err, "notes.txt (--out): holds a file that is not a ScribbleSeg model",
                          "give another path, or remove the file")
    assert notes.read_text() == "important"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["label.nrrd", "notes.txt"]


def test_train_names_the_image_a_label_out_of_order_was_given_for_and_warns_of_repeated_images(case, capsys,
                                                                                               tmp_path):
    made = case["phantom"]
    label = tmp_path / "label.nrrd"
    volume_io.write_labelmap(label, made.label, made.image.geometry)
    crop = volume_io.Volume(made.image.array[:, :32, :40].copy(), made.image.geometry)
    volume_io.write_rgb_volume(tmp_path / "crop.nrrd", crop)
    volume_io.write_labelmap(tmp_path / "crop_label.nrrd", made.label[:, :32, :40], made.image.geometry)
    # The labels swapped: the first image's label lies outside the crop, and the error said so without the image.
    status, _, err = run_cli(capsys, ["train", "--images", case["image"], tmp_path / "crop.nrrd", "--labels",
                                      tmp_path / "crop_label.nrrd", label, "--out", tmp_path / "m.model",
                                      "--max-iters", 1, "--quiet"])
    assert_one_line_error(status, err, f"(the label given for {tmp_path / 'crop.nrrd'})")
    # An image twice, and the validation image among the training ones: trained, with a line for each.
    status, _, err = run_cli(capsys, ["train", "--images", case["image"], case["image"], "--labels", label, label,
                                      "--val-images", case["image"], "--val-labels", label, "--out",
                                      tmp_path / "m.model", "--max-iters", 1, "--quiet", "--device", "cpu"])
    assert status == 0, err
    assert f"{case['image']} is given twice in --images: it weighs twice in the training" in err
    assert f"{case['image']} is in --val-images and in --images: validation on a training image" in err


def test_a_read_only_output_file_is_refused_before_any_work_and_kept(case, capsys, tmp_path, monkeypatch):
    # The atomic rename replaces a file whatever its mode; a result someone made read-only is one to keep.
    def no_computation(*args, **kwargs):
        raise AssertionError("segment ran although an output was read-only")

    monkeypatch.setattr(pipeline, "segment", no_computation)
    kept = tmp_path / "kept.seg.nrrd"
    kept.write_bytes(b"an earlier result")
    kept.chmod(0o444)
    status, _, err = run_cli(capsys, segment_args(case, kept))
    assert_one_line_error(status, err, kept, "--out", "read-only")
    assert kept.read_bytes() == b"an earlier result"
    assert [p.name for p in tmp_path.iterdir()] == ["kept.seg.nrrd"]
    assert fileio.check_output_path(tmp_path / "new.seg.nrrd").name == "new.seg.nrrd"  # a new file is fine


def test_bad_output_extension_fails_before_the_computation(case, capsys, tmp_path, monkeypatch):
    def no_computation(*args, **kwargs):
        raise AssertionError("segment ran although an output was bad")

    monkeypatch.setattr(pipeline, "segment", no_computation)
    status, _, err = run_cli(capsys, segment_args(case, tmp_path / "out.seg.nrrd", "--probability",
                                                  tmp_path / "p.xyz"))
    assert_one_line_error(status, err, "p.xyz", "--probability")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, words", [(".nrrd", "nothing before its extension"),
                                         (".seg.nrrd", "nothing before its extension"),
                                         (".NII.GZ", "nothing before its extension"),
                                         ("out.nii.GZ", "NIfTI readers refuse an extension in mixed case")])
def test_an_output_name_writers_cannot_take_fails_before_the_computation(case, capsys, tmp_path, monkeypatch, name,
                                                                         words):
    # These passed the check and failed only after the whole run: ".nrrd" alone has no extension to the writers.
    monkeypatch.setattr(pipeline, "segment", lambda *a, **k: pytest.fail("segment ran although an output was bad"))
    status, _, err = run_cli(capsys, segment_args(case, tmp_path / name))
    assert_one_line_error(status, err, name, "--out", words)
    assert list(tmp_path.iterdir()) == []


def test_outputs_and_inputs_with_capital_extensions_are_written_and_read(tmp_path):
    # ITK knows its extensions in lower case only: out.MHA was written as a header and a hidden data file beside
    # it, out.NII was refused after the whole run, and an input IMG.MHA read as "unsupported format".
    labels = np.zeros((2, 3, 4), np.uint8)
    labels[1, 1, 1:3] = 1
    geometry = volume_io.Geometry((0.5, 0.5, 2.0))
    for name in ("out.MHA", "out.NII", "out.NII.GZ", "out.Nrrd"):
        volume_io.write_labelmap(tmp_path / name, labels, geometry)
        assert volume_io.read_label_volume(tmp_path / name).array.tolist() == labels.tolist(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.MHA", "out.NII", "out.NII.GZ", "out.Nrrd"]
    (tmp_path / "out.NII.GZ").rename(tmp_path / "out.nii.GZ")  # the NIfTI library's own refusal, in one line
    with pytest.raises(ScribbleSegError, match=r"out.nii.GZ: the NIfTI reader refuses .* rename it to .nii.gz"):
        volume_io.read_label_volume(tmp_path / "out.nii.GZ")
    image = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 3), dtype=np.uint8)
    volume_io.write_rgb_volume(tmp_path / "IMG.MHA", volume_io.Volume(image, geometry))
    read = volume_io.read_image(tmp_path / "IMG.MHA")
    assert read.array.tolist() == image.tolist()
    assert np.allclose(read.geometry.spacing, (0.5, 0.5, 2.0))


def test_a_volume_output_named_like_a_segmentation_is_refused(case, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "segment", lambda *a, **k: pytest.fail("segment ran although an output was bad"))
    status, _, err = run_cli(capsys, segment_args(case, tmp_path / "out.seg.nrrd", "--probability",
                                                  tmp_path / "p.seg.nrrd"))
    assert_one_line_error(status, err, "p.seg.nrrd", "--probability", "segmentation")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("colour", [255, 0, 128])
def test_a_blank_scan_is_refused_with_one_line(case, capsys, tmp_path, colour):
    made = case["phantom"]
    blank = tmp_path / "blank.nrrd"
    volume_io.write_rgb_volume(blank, type(made.image)(np.full_like(made.image.array, colour), made.image.geometry))
    args = segment_args(case, tmp_path / "out.seg.nrrd")
    args[args.index("--image") + 1] = blank
    status, _, err = run_cli(capsys, args)
    assert_one_line_error(status, err, "blank.nrrd", f"every voxel has the same colour ({colour}, {colour}, "
                                                     f"{colour})")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.nrrd"]


@pytest.mark.parametrize("where", ["flag", "header"])
def test_a_voxel_size_itk_cannot_invert_is_refused_with_one_line(case, capsys, tmp_path, where):
    # A spacing of 1e-200 mm made ITK's direction matrix singular: a traceback from SimpleITK.
    args = segment_args(case, tmp_path / "out.seg.nrrd")
    if where == "flag":
        args += ["--spacing", "1e-200", "0.03", "0.03"]
        words = ["argument --spacing", "expected a voxel size from 1e-09 to 1e+09 mm, got '1e-200'"]
    else:
        made = case["phantom"]
        tiny = tmp_path / "tiny.nrrd"
        image = sitk.GetImageFromArray(made.image.array, isVector=True)
        image.SetSpacing((1e-12, 1e-12, 1e-12))
        sitk.WriteImage(image, str(tiny))
        args[args.index("--image") + 1] = tiny
        words = ["tiny.nrrd", "spacing must lie between 1e-09 and 1e+09 mm"]
    try:
        status, _, err = run_cli(capsys, args)
    except SystemExit as stop:  # argparse refuses a flag's value itself
        status, err = stop.code, capsys.readouterr().err.strip()
    assert_one_line_error(status, err, *words)
    assert not (tmp_path / "out.seg.nrrd").exists()


def test_a_tile_result_is_written_as_a_png_mask_and_a_stack_result_is_refused_before_the_work(case, capsys,
                                                                                              tmp_path):
    made, strokes = case["phantom"], case["strokes"]
    z = int(np.argmax((strokes == 1).any(axis=(1, 2)) & (strokes == 2).any(axis=(1, 2))))
    tile, tile_strokes = tmp_path / "tile.png", tmp_path / "strokes.png"
    sitk.WriteImage(sitk.GetImageFromArray(made.image.array[z], isVector=True), str(tile))
    sitk.WriteImage(sitk.GetImageFromArray(strokes[z]), str(tile_strokes))
    args = segment_args(case, tmp_path / "mask.png")
    args[args.index("--image") + 1], args[args.index("--scribbles") + 1] = tile, tile_strokes
    status, out, err = run_cli(capsys, args)
    assert status == 0, err
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "mask.png")))
    assert mask.shape == strokes.shape[1:] and set(np.unique(mask)) <= {0, 255}
    assert (mask[strokes[z] == 1] == 255).all() and (mask[strokes[z] == 2] == 0).all()  # the strokes are seeds
    # A stack's result cannot go into a PNG: refused once the image is read, before the network runs.
    stack = segment_args(case, tmp_path / "stack.png")
    status, _, err = run_cli(capsys, stack)
    assert_one_line_error(status, err, "stack.png (--out): a PNG holds one section, and the image has 8")
    assert not (tmp_path / "stack.png").exists()
    # A tile read with --downsample would give a mask smaller than the tile, which a PNG cannot say.
    status, _, err = run_cli(capsys, args[:args.index("--out") + 1] + [tmp_path / "half.png"]
                             + args[args.index("--out") + 2:] + ["--downsample", "2"])
    assert_one_line_error(status, err, "half.png (--out): a PNG mask of a tile read with --downsample 2")
    assert not (tmp_path / "half.png").exists()


def test_a_labelmap_given_as_the_image_is_refused_with_one_line(case, capsys, tmp_path):
    args = segment_args(case, tmp_path / "out.seg.nrrd")
    strokes = tmp_path / "strokes.nrrd"  # the scribbles as a plain labelmap: values 0, 1, 2
    volume_io.write_labelmap(strokes, volume_io.read_scribbles(case["scribbles"], case["phantom"].label.shape,
                                                               case["phantom"].image.geometry),
                             case["phantom"].image.geometry)
    args[args.index("--image") + 1] = strokes
    status, _, err = run_cli(capsys, args)
    assert_one_line_error(status, err, "strokes.nrrd", "the grey values 0, 1, 2", "not stained sections")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["strokes.nrrd"]


def test_an_empty_result_is_written_and_its_surface_left_out_with_one_warning(case, tmp_path, caplog):
    from types import SimpleNamespace

    from ScribbleSegLib import jobs

    made = case["phantom"]
    job = jobs.SegmentFiles(image=str(case["image"]), model=str(case["model"]), labels=str(tmp_path / "o.seg.nrrd"),
                            method="munet", surface=str(tmp_path / "o.stl"), render=str(tmp_path / "o.png"),
                            names={"surface": "--surface", "render": "--render"})
    empty = np.zeros(made.label.shape, np.uint8)
    result = SimpleNamespace(labels=empty, probability=np.zeros(empty.shape, np.float32))
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        written = jobs.write_results(job, result, made.image.geometry, {})
    assert written == {"labels": str(tmp_path / "o.seg.nrrd")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.seg.nrrd"]
    assert [r.getMessage() for r in caplog.records] == [
        "the result has no heart voxel: no surface to write (--surface, --render)"]
    # An earlier run's surface and picture at those paths go with the new result: they are not this one's.
    (tmp_path / "o.stl").write_bytes(b"an earlier surface")
    (tmp_path / "o.png").write_bytes(b"an earlier picture")
    caplog.clear()
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        jobs.write_results(job, result, made.image.geometry, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.seg.nrrd"]
    assert [r.getMessage() for r in caplog.records] == [
        "the result has no heart voxel: no surface to write (--surface, --render); removed the earlier "
        f"{tmp_path / 'o.stl'}, {tmp_path / 'o.png'}"]


@pytest.mark.parametrize("spacing, downsample", [((0.3, 0.3, 0.9), 1), (None, 2), ((0.3, 0.3, 0.9), 4)])
def test_scribbles_drawn_on_the_image_file_follow_its_spacing_and_downsample(case, spacing, downsample):
    from ScribbleSegLib import jobs

    job = jobs.SegmentFiles(image=str(case["image"]), model=str(case["model"]), labels="o.seg.nrrd",
                            scribbles=str(case["scribbles"]), spacing=spacing, downsample=downsample)
    image = jobs.read_job_image(job, {})
    assert image.geometry != case["phantom"].image.geometry  # the file's grid is not the image as read
    got = jobs.read_job_scribbles(job, image, {})
    np.testing.assert_array_equal(got, volume_io.reduce_strokes(case["strokes"], image.shape, downsample))
    # Scribbles on neither grid are still refused with the first error.
    other = volume_io.Geometry((0.7, 0.7, 0.7), (0.0, 0.0, 0.0))
    volume_io.write_labelmap(case["folder"] / "elsewhere.nrrd", case["strokes"], other)
    elsewhere = jobs.SegmentFiles(**{**job.__dict__, "scribbles": str(case["folder"] / "elsewhere.nrrd")})
    with pytest.raises(ScribbleSegError, match="elsewhere.nrrd: (does not match the image|has .* outside the image)"):
        jobs.read_job_scribbles(elsewhere, image, {})


def test_strokes_drawn_in_slicer_on_a_tile_follow_the_spacing_it_is_read_with(case, tmp_path):
    """Slicer loads a 2D tile (PNG) with the file's pixel size (1 mm here) and 1 mm between sections; strokes
    drawn on it there, saved as a 3D .seg.nrrd, are placed on the tile read with its real spacing."""
    from ScribbleSegLib import jobs

    made, z = case["phantom"], 3
    sitk.WriteImage(sitk.GetImageFromArray(made.image.array[z], isVector=True), str(tmp_path / "tile.png"))
    strokes = case["strokes"][z:z + 1]
    slicer_grid = volume_io.Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    volume_io.write_segmentation(tmp_path / "strokes.seg.nrrd", [
        ("heart", strokes == 1, volume_io.HEART_COLOR), ("background", strokes == 2, volume_io.BACKGROUND_COLOR)],
        slicer_grid)
    job = jobs.SegmentFiles(image=str(tmp_path / "tile.png"), model=str(case["model"]), labels="o.seg.nrrd",
                            scribbles=str(tmp_path / "strokes.seg.nrrd"), spacing=(0.02, 0.02, 0.05))
    image = jobs.read_job_image(job, {})
    assert image.shape == (1,) + made.image.shape[1:] and image.geometry.spacing == (0.02, 0.02, 0.05)
    np.testing.assert_array_equal(jobs.read_job_scribbles(job, image, {}), strokes)
    # A training label drawn there too (its 'heart' segment).
    from ScribbleSegLib.training_files import read_training_pair

    _, label = read_training_pair(tmp_path / "tile.png", tmp_path / "strokes.seg.nrrd", spacing=(0.02, 0.02, 0.05))
    np.testing.assert_array_equal(label, strokes == 1)
    # Strokes on another grid are still refused with the first error.
    volume_io.write_labelmap(tmp_path / "elsewhere.nrrd", strokes, volume_io.Geometry((0.7, 0.7, 0.7)))
    elsewhere = jobs.SegmentFiles(**{**job.__dict__, "scribbles": str(tmp_path / "elsewhere.nrrd")})
    with pytest.raises(ScribbleSegError, match="elsewhere.nrrd: does not match the image"):
        jobs.read_job_scribbles(elsewhere, image, {})


def test_train_refuses_an_output_that_is_a_training_image(case, capsys):
    before = digest(inputs_of(case))
    status, _, err = run_cli(capsys, ["train", "--images", case["image"], "--labels", case["scribbles"],
                                      "--out", case["image"], "--quiet"])
    assert_one_line_error(status, err, case["image"], "--out")
    assert digest(inputs_of(case)) == before


# ---------------------------------------------------------------------------
# Outputs are written all together, or not at all
# ---------------------------------------------------------------------------


def test_a_failure_while_writing_the_last_output_leaves_no_output(case, capsys, tmp_path, monkeypatch):
    from ScribbleSegLib import surface

    def broken_render(poly, path, **kwargs):
        Path(path).write_bytes(b"half a png")
        raise ScribbleSegError(f"{path}: vtk could not write the PNG")

    monkeypatch.setattr(surface, "render_surface_png", broken_render)
    out = tmp_path / "out.seg.nrrd"
    status, _, err = run_cli(capsys, segment_args(case, out, "--probability", tmp_path / "p.nrrd",
                                                  "--render", tmp_path / "r.png"))
    assert_one_line_error(status, err, tmp_path / "r.png")
    assert "scribbleseg-tmp" not in err  # the message names the target, not the temporary
    assert list(tmp_path.iterdir()) == []


def test_sigterm_during_the_computation_removes_every_temporary(case, capsys, tmp_path, monkeypatch):
    real_segment = pipeline.segment

    def segment_then_terminated(*args, **kwargs):
        result = real_segment(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives here; the handler raises at the next bytecode
        return result

    monkeypatch.setattr(pipeline, "segment", segment_then_terminated)
    status, _, err = run_cli(capsys, segment_args(case, tmp_path / "out.seg.nrrd", "--probability",
                                                  tmp_path / "p.nrrd"))
    assert status == 128 + signal.SIGTERM and "interrupted" in err
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored after the run


def test_a_signal_during_a_held_import_arrives_when_the_import_is_whole():
    # VTK's imports run with signals held: a KeyboardInterrupt inside a module's initialisation left it half
    # made, and the run crashed later (a segmentation fault, temporaries left behind).
    from ScribbleSegLib.errors import Interrupted

    # The held signal goes to the handler that was in place: here Python's own for SIGINT.  Set, not assumed:
    # a shell starts a background job (`pytest &`, nohup) with SIGINT ignored, and Python keeps it ignored.
    before_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    before_term = signal.getsignal(signal.SIGTERM)
    try:
        done = []
        with pytest.raises(KeyboardInterrupt):
            with fileio.signals_held():
                os.kill(os.getpid(), signal.SIGINT)
                done.append("the body ran to its end")
        assert done == ["the body ran to its end"]
        with pytest.raises(Interrupted) as excinfo:
            with fileio.signals_raise(), fileio.signals_held():
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("again")
        assert done[-1] == "again" and excinfo.value.exit_status == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) == before_term
    finally:
        signal.signal(signal.SIGINT, before_int)


def test_a_held_signal_that_was_ignored_stays_ignored():
    before_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        done = []
        with fileio.signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("the body ran to its end")
        assert done == ["the body ran to its end"]
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before_int)


def test_temporaries_a_killed_run_left_are_swept_by_the_next_run(case, capsys, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.seg.nrrd{fileio.TEMP_TAG}{dead.pid}-0a1b2c3d.seg.nrrd"
    stale.write_bytes(b"partial")
    live = tmp_path / f".other.nrrd{fileio.TEMP_TAG}{os.getpid()}-0a1b2c3d.nrrd"
    live.write_bytes(b"being written by a live run")
    foreign = tmp_path / ".out.seg.nrrd.someone-elses.tmp"
    foreign.write_bytes(b"not ours")
    status, _, err = run_cli(capsys, segment_args(case, tmp_path / "out.seg.nrrd"))
    assert status == 0, err
    assert not stale.exists() and live.exists() and foreign.exists()


def test_temporaries_another_machine_made_in_a_shared_folder_are_swept_only_when_a_day_old(tmp_path):
    # Its process id means nothing here: a live run on another node of the cluster must keep its file.
    ours = fileio.temp_path(tmp_path / "o.nrrd").name
    other = "0" * 8 if fileio._HOST != "0" * 8 else "1" * 8
    assert fileio.is_temp_name(ours) and f"{fileio.TEMP_TAG}{fileio._HOST}-{os.getpid()}-" in ours
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = {"ours_dead": f".a.nrrd{fileio.TEMP_TAG}{fileio._HOST}-{dead.pid}-0a1b2c3d.nrrd",
             "theirs_fresh": f".b.nrrd{fileio.TEMP_TAG}{other}-{dead.pid}-0a1b2c3d.nrrd",
             "theirs_old": f".c.nrrd{fileio.TEMP_TAG}{other}-{os.getpid()}-0a1b2c3d.nrrd"}
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
    two_days_ago = time.time() - 2 * fileio.FOREIGN_TEMP_AGE_SECONDS
    os.utime(tmp_path / names["theirs_old"], (two_days_ago, two_days_ago))
    removed = {p.name for p in fileio.sweep_stale_temps(tmp_path)}
    assert removed == {names["ours_dead"], names["theirs_old"]}
    assert (tmp_path / names["theirs_fresh"]).exists()


def test_sigkill_while_writing_leaves_only_temporaries_and_no_target(case, tmp_path):
    # A child writes through atomic_output and is killed before the rename: the target never appears,
    # and what it left is recognisable and swept afterwards.
    code = ("import os, signal, sys; from ScribbleSegLib.fileio import atomic_output\n"
            "with atomic_output(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'x' * 1000)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    target = tmp_path / "out.nrrd"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code, str(target)], env=env)
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists() and len(leftovers(tmp_path)) == 1
    assert fileio.sweep_stale_temps(tmp_path) and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------
# The feature cache heals itself
# ---------------------------------------------------------------------------


def only_entry(cache):
    entries = [p for p in Path(cache).iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(entries) == 1
    return entries[0]


def not_numbers_between_the_samples(path):
    """Fill an entry's array with NaN and record the new checksum: damage that falls between the sampled
    blocks of a large file, which the manifest's checksum does not see."""
    array = np.load(path, mmap_mode="r+")
    array[...] = np.nan
    array.flush()
    del array
    manifest = path.parent / feature_cache.MANIFEST
    meta = json.loads(manifest.read_text())
    meta["files"][path.name]["checksum"] = feature_cache.sampled_checksum(path)
    manifest.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", ["truncate", "overwrite", "delete", "manifest", "version", "nan features",
                                    "nan probability", "nan features ddml"])
def test_a_damaged_cache_entry_is_recomputed_with_one_warning(case, capsys, tmp_path, damage):
    cache = tmp_path / "cache"
    out = tmp_path / "out.seg.nrrd"
    method = ["--method", "ddml"] if damage.endswith("ddml") else []  # the method whose suggestions met NaN
    status, _, _ = run_cli(capsys, segment_args(case, out, *method, cache=cache))
    assert status == 0
    first = volume_io.read_segmentation(out)[0]["heart"]
    features = only_entry(cache) / "features.npy"
    if damage == "truncate":
        with open(features, "r+b") as f:
            f.truncate(features.stat().st_size // 2)
    elif damage == "overwrite":
        with open(features, "r+b") as f:  # same size, different bytes at the end
            f.seek(-64, os.SEEK_END)
            f.write(b"\xff" * 64)
    elif damage == "delete":
        features.unlink()
    elif damage.startswith("nan"):
        not_numbers_between_the_samples(features.parent / f"{damage.split()[1]}.npy")
    elif damage == "version":  # another version's manifest (a shared cache) was read as this one's
        meta = json.loads((features.parent / "meta.json").read_text())
        (features.parent / "meta.json").write_text(json.dumps({**meta, "version": 99}))
    else:
        (features.parent / "meta.json").write_text("{not json")
    status, stdout, err = run_cli(capsys, segment_args(case, out, *method, cache=cache))
    assert status == 0, err
    assert "features computed" in stdout
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "damaged" in warnings[0], err
    np.testing.assert_array_equal(volume_io.read_segmentation(out)[0]["heart"], first)
    status, stdout, err = run_cli(capsys, segment_args(case, out, *method, cache=cache))
    assert status == 0 and "reused from cache" in stdout and "warning" not in err


def test_a_cache_folder_that_is_a_file_means_a_run_without_cache(case, capsys, tmp_path):
    cache = tmp_path / "cache"
    cache.write_bytes(b"a file, not a folder")
    status, stdout, err = run_cli(capsys, segment_args(case, tmp_path / "out.seg.nrrd", cache=cache))
    assert status == 0
    assert [line for line in err.splitlines() if "warning" in line] == [
        f"scribbleseg segment: warning: feature cache: {cache} is not a folder; running without the cache"]
    assert cache.read_bytes() == b"a file, not a folder"


def test_a_cache_folder_that_cannot_be_created_means_a_run_without_cache(case, capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    status, _, err = run_cli(capsys, segment_args(case, tmp_path / "out.seg.nrrd", cache=blocker / "cache"))
    assert status == 0
    assert f"{blocker / 'cache'} cannot be created (" in err and "running without the cache" in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_folder_means_a_run_without_cache(case, capsys, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        status, _, err = run_cli(capsys, segment_args(case, tmp_path / "out.seg.nrrd", cache=cache))
    finally:
        cache.chmod(0o755)
    assert status == 0 and "is not writable; running without the cache" in err


def test_a_cache_that_refuses_the_entry_means_a_run_without_cache(case, capsys, tmp_path, monkeypatch):
    # Any refusal of the optional cache (a rename the file system will not do) ended the run.
    from ScribbleSegLib import feature_cache as cache_module

    real_replace = os.replace
    cache = tmp_path / "cache"

    def refuse(source, target):
        if Path(target).parent == cache:  # the entry's rename into place; its own files are written as ever
            raise PermissionError(13, "Permission denied")
        real_replace(source, target)

    monkeypatch.setattr(cache_module.os, "replace", refuse)
    out = tmp_path / "out.seg.nrrd"
    status, stdout, err = run_cli(capsys, segment_args(case, out, cache=cache))
    assert status == 0 and out.is_file(), err
    assert "could not store the features (Permission denied); running without the cache" in err


def test_stale_cache_temporaries_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".{'a' * 32}{fileio.TEMP_TAG}{dead.pid}-00000000"
    stale.mkdir()
    (stale / "features.npy").write_bytes(b"partial")
    live = tmp_path / f".{'b' * 32}{fileio.TEMP_TAG}{os.getpid()}-00000000"
    live.mkdir()
    assert feature_cache.open_cache(tmp_path) is not None
    assert not stale.exists() and live.exists()


def store(cache, key, voxels=15_000):
    """An entry of about 6 bytes per voxel (float32 probability, one float16 feature)."""
    with cache.new_entry(key, {"shape": [1, 1, voxels, 3]}) as tmp:
        np.save(tmp / "probability.npy", np.zeros((1, 1, voxels), np.float32))
        np.save(tmp / "features.npy", np.zeros((1, 1, voxels, 1), np.float16))


def test_the_size_cap_evicts_the_least_recently_used_entries(tmp_path):
    cache = feature_cache.FeatureCache(tmp_path, max_bytes=250_000)
    keys = [f"{k:032x}" for k in range(4)]
    for number, key in enumerate(keys[:2]):
        store(cache, key)
        os.utime(tmp_path / key / "meta.json", (1000 + number, 1000 + number))
    assert cache.load(keys[0]) is not None  # key 0 is now the most recently used
    store(cache, keys[2])
    assert sorted(e.key for e in cache.entries()) == [keys[0], keys[2]]
    assert cache.size() <= cache.max_bytes


def test_cache_command_lists_caps_and_clears(tmp_path, capsys):
    cache = feature_cache.FeatureCache(tmp_path / "c", max_bytes=10**9)
    for k in range(3):
        store(cache, f"{k:032x}")
    other = tmp_path / "c" / "notes.txt"
    other.write_text("the user's own file")
    status, out, _ = run_cli(capsys, ["cache", "list", "--cache-dir", tmp_path / "c"])
    assert status == 0 and "3 entries" in out and "damaged" not in out
    # A damaged entry was listed as any other: only the next run that needed it found out.
    with open(tmp_path / "c" / f"{1:032x}" / "features.npy", "r+b") as f:
        f.truncate(1000)
    status, out, _ = run_cli(capsys, ["cache", "list", "--cache-dir", tmp_path / "c"])
    damaged = [line for line in out.splitlines() if "damaged" in line]
    assert status == 0 and len(damaged) == 1 and damaged[0].startswith(f"{1:032x}")
    assert "damaged: features.npy has 1000 bytes, the manifest says" in damaged[0]
    status, out, err = run_cli(capsys, ["cache", "--max-gb", 0.0001, "--cache-dir", tmp_path / "c"])
    assert status == 0 and "1 entry" in out.splitlines()[-1]
    assert "evicted 2 least recently used entries" in out and "evicted" not in err  # said once, not twice
    assert feature_cache.FeatureCache(tmp_path / "c").max_bytes == int(0.0001 * 2**30)  # kept for later runs
    status, out, _ = run_cli(capsys, ["cache", "clear", "--cache-dir", tmp_path / "c"])
    assert status == 0 and "removed 1 entry" in out and "size cap" not in out
    assert feature_cache.FeatureCache(tmp_path / "c").entries() == [] and other.exists()
    # clear with --max-gb keeps that cap for later runs, and says so (it said only what it removed).
    status, out, _ = run_cli(capsys, ["cache", "clear", "--max-gb", 3, "--cache-dir", tmp_path / "c"])
    assert status == 0 and out.strip().endswith("removed 0 entries, 0 MB freed; size cap 3 GB kept for later runs")
    assert feature_cache.FeatureCache(tmp_path / "c").max_bytes == 3 * 2**30


def test_cache_command_on_an_empty_folder_name_a_damaged_manifest_and_entries_it_cannot_remove(
        tmp_path, capsys, monkeypatch):
    # An empty --cache-dir (an unset shell variable) is refused: it must not mean the default cache.
    monkeypatch.setenv("SCRIBBLESEG_CACHE_DIR", str(tmp_path / "default"))
    store(feature_cache.FeatureCache(tmp_path / "default"), "0" * 32)
    for command in (["cache", "clear", "--cache-dir", ""], ["segment", "--cache-dir", " "]):
        with pytest.raises(SystemExit) as refused:
            cli.main(command)
        assert_one_line_error(refused.value.code, capsys.readouterr().err.strip(), "--cache-dir", "empty path")
    assert [e.key for e in feature_cache.FeatureCache(tmp_path / "default").entries()] == ["0" * 32]
    # A manifest whose shape is not a list is listed with "?".
    cache = feature_cache.FeatureCache(tmp_path / "c")
    store(cache, "1" * 32)
    manifest = cache.entries()[0].path / feature_cache.MANIFEST
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "shape": None}))
    status, out, err = run_cli(capsys, ["cache", "--cache-dir", tmp_path / "c"])
    assert status == 0 and "image ?" in out and err == ""
    # Entries that cannot be removed (a folder this user cannot write) are not counted as removed.
    monkeypatch.setattr(feature_cache.shutil, "rmtree", lambda path, ignore_errors=False: None)
    status, out, err = run_cli(capsys, ["cache", "clear", "--cache-dir", tmp_path / "c"])
    assert_one_line_error(status, err, "removed 0 entries", "1 could not be removed")
    assert len(cache.entries()) == 1


def test_a_cache_cap_no_disk_holds_is_refused_and_a_bad_stored_one_never_breaks_a_run(tmp_path, capsys,
                                                                                      monkeypatch, caplog):
    folder = tmp_path / "c"
    with pytest.raises(SystemExit) as refused:  # argparse's way: status 2 and one line
        cli.main(["cache", "--max-gb", "1e308", "--cache-dir", str(folder)])
    assert_one_line_error(refused.value.code, capsys.readouterr().err.strip(), "--max-gb", "up to")
    assert not (folder / feature_cache.SETTINGS).exists()
    with pytest.raises(ScribbleSegError, match="max_gb must be a positive number"):
        feature_cache.FeatureCache(folder).set_cap_gb(float("inf"))
    # A cap stored by hand (or by an older version) that no disk holds: the default, one warning, and the
    # commands that list, clear and repair the cache still work.
    folder.mkdir()
    default = int(choices.DEFAULT_CACHE_MAX_GB * 2**30)
    for stored in ('{"max_gb": 1e308}', '{"max_gb": "abc"}', "not json"):
        (folder / feature_cache.SETTINGS).write_text(stored)
        with caplog.at_level("WARNING", logger="ScribbleSegLib"):
            caplog.clear()
            assert feature_cache.FeatureCache(folder).max_bytes == default
        assert "using the default" in caplog.text
    status, out, _ = run_cli(capsys, ["cache", "list", "--cache-dir", folder])
    assert status == 0 and "0 entries" in out
    status, _, _ = run_cli(capsys, ["cache", "--max-gb", "5", "--cache-dir", folder])
    assert status == 0 and feature_cache.FeatureCache(folder).max_bytes == 5 * 2**30
    # The variable, when set to something no disk holds: the default, with a warning.
    monkeypatch.setenv("SCRIBBLESEG_CACHE_MAX_GB", "inf")
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        caplog.clear()
        assert feature_cache.FeatureCache(folder).max_bytes == default
    assert "SCRIBBLESEG_CACHE_MAX_GB" in caplog.text


# ---------------------------------------------------------------------------
# A full disk
# ---------------------------------------------------------------------------


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_writer_that_hits_enospc_gives_one_line_and_no_file(tmp_path):
    with pytest.raises(fileio.DiskFullError, match=r"^disk full writing .*x\.bin \(3\.0 MB needed, [\d.]+ MB free\)$"):
        with fileio.atomic_output(tmp_path / "x.bin", expected_bytes=3 << 20) as tmp:
            tmp.write_bytes(b"partial")
            enospc()
    assert list(tmp_path.iterdir()) == []


def test_a_writer_that_fails_silently_on_a_full_disk_is_caught(tmp_path, monkeypatch):
    # SimpleITK wrote a truncated .nii and returned normally: the free space left is the sign.
    monkeypatch.setattr(fileio, "free_bytes", lambda folder: 1000)
    with pytest.raises(fileio.DiskFullError, match="disk full writing"):
        with fileio.atomic_output(tmp_path / "x.nii") as tmp:
            tmp.write_bytes(b"truncated")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(signal, "raise_signal"), reason="needs signal.raise_signal")
def test_an_interrupt_while_a_set_of_outputs_is_renamed_into_place_waits_for_the_whole_set(tmp_path, monkeypatch):
    # Ctrl-C between two renames left the new labels beside the last run's probability.
    targets = {"a": tmp_path / "a.txt", "b": tmp_path / "b.txt"}
    for path in targets.values():
        path.write_text("old")
    real_replace = os.replace

    def replace_then_interrupt(source, target):
        real_replace(source, target)
        if Path(target) == targets["a"]:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        with fileio.OutputSet(targets) as out:
            for key in targets:
                with out.writing(key) as tmp:
                    tmp.write_text("new")
            monkeypatch.setattr(fileio.os, "replace", replace_then_interrupt)
            out.commit()
    assert [path.read_text() for path in targets.values()] == ["new", "new"]


def test_the_program_ignores_a_ctrl_c_once_its_command_is_done(monkeypatch):
    # Torch's exit-time clean-up printed a KeyboardInterrupt traceback after "wrote ...".
    from ScribbleSegLib import cli

    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(cli, "main", lambda: 0)
    monkeypatch.setattr(cli, "_exit", sys.exit)  # the real one ends this process (see the test below)
    try:
        with pytest.raises(SystemExit) as stop:
            cli.run()
        assert stop.value.code == 0 and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_the_program_ends_with_its_status_after_the_exit_callbacks_and_all_its_output(tmp_path):
    # The program skips the interpreter's module teardown (0.3-0.4 s with torch): what an exit owes the user
    # must still happen.  In a process of its own: the program ends the process it runs in.
    marker = tmp_path / "callback-ran"
    script = f"""
import atexit, sys, tempfile, threading, time
from pathlib import Path
from ScribbleSegLib import cli
atexit.register(Path({str(marker)!r}).write_text, "yes")
held = tempfile.TemporaryDirectory(dir={str(tmp_path)!r}, prefix="temporary")  # removed at exit
late = threading.Thread(target=lambda: (time.sleep(0.3), print("thread done")))
from concurrent.futures import ThreadPoolExecutor
pool = ThreadPoolExecutor(1)  # left open: its workers end with the exit's thread hooks, or never

def main():
    pool.submit(int).result()
    late.start()
    sys.stdout.write("x" * 100000 + "\\n")  # buffered: it reaches the pipe only when flushed
    print("to stderr", file=sys.stderr)
    return 3

cli.main = main
cli.run()
"""
    buffered = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=buffered)
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == ["x" * 100000, "thread done"]
    assert done.stderr == "to stderr\n"
    assert marker.read_text() == "yes"
    assert not list(tmp_path.glob("temporary*")), "the temporary folder was left behind"


def test_an_interrupted_program_ends_without_waiting_for_a_thread_that_never_ends(tmp_path):
    # A signal that came while the main thread held importlib's lock left the thread importing torch beside the
    # reading waiting for it forever, and the exit waited for that thread (a SIGHUP 0.5 s into a segment).
    marker = tmp_path / "callback-ran"
    script = f"""
import atexit, sys, threading
from pathlib import Path
from ScribbleSegLib import cli
atexit.register(Path({str(marker)!r}).write_text, "yes")
stuck = threading.Thread(target=threading.Event().wait)  # not a daemon: an exit that waits for it never ends

def main():
    stuck.start()
    print("interrupted", file=sys.stderr)
    return 129

cli.main = main
cli.run()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 129 and done.stderr == "interrupted\n"
    assert marker.read_text() == "yes"


def test_a_profiler_still_gets_the_programs_statistics(tmp_path):
    # cProfile writes its statistics after the program returns: the program's quick exit must leave it that.
    stats = tmp_path / "program.prof"
    done = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(stats), "-m", "ScribbleSegLib", "cache",
                           "list", "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert stats.is_file() and stats.stat().st_size > 0


def test_a_file_that_fits_but_leaves_too_little_free_says_what_it_needs(tmp_path, monkeypatch):
    # A 0.7 MB file on a 1.6 MB disk was refused as "0.7 MB needed, 1.6 MB free": the margin kept free counts in
    # what it needs, as the check before the work counts it.
    import re

    monkeypatch.setattr(fileio, "free_bytes", lambda folder: 900_000)
    with pytest.raises(fileio.DiskFullError) as error:
        with fileio.atomic_output(tmp_path / "x.stl") as tmp:
            tmp.write_bytes(b"x" * 700_000)
    needed, free = (float(v) for v in re.search(r"\(([\d.]+) MB needed, ([\d.]+) MB free\)", str(error.value)).groups())
    assert needed > free
    assert list(tmp_path.iterdir()) == []


def test_a_missing_folder_is_not_a_full_disk(tmp_path):
    # Its free space cannot be known: the check before the work leaves it to the write, which says what it is.
    fileio.check_free_space({tmp_path / "gone" / "x.nrrd": 1 << 20})
    with pytest.raises(ScribbleSegError, match="does not exist|no longer exists") as error:
        with fileio.atomic_output(tmp_path / "gone" / "x.nrrd", expected_bytes=1 << 20) as tmp:
            tmp.write_bytes(b"x")
    assert "disk full" not in str(error.value)


def test_a_writer_on_a_file_system_gone_read_only_gives_one_line_and_cleanup_never_hides_it(tmp_path, monkeypatch):
    # A disk error or an NFS server turns the file system read-only mid-run: writing and removing both fail.
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    with pytest.raises(ScribbleSegError, match=r"^.*x\.nrrd: cannot write \(Read-only file system\)$"):
        with fileio.atomic_output(tmp_path / "x.nrrd") as tmp:
            tmp.write_bytes(b"partial")
            monkeypatch.setattr(Path, "unlink", read_only)
            read_only()
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] != ["x.nrrd"]  # no target: only the temporary that could not go


def test_a_file_system_error_anywhere_in_a_command_is_one_line_naming_the_file(case, capsys, tmp_path,
                                                                                monkeypatch):
    def io_error(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", str(case["image"]))

    monkeypatch.setattr(pipeline, "segment", io_error)
    status, _, err = run_cli(capsys, segment_args(case, tmp_path / "o.seg.nrrd"))
    assert status == 2
    assert err.splitlines()[-1] == f"scribbleseg segment: error: {case['image']}: Input/output error"
    assert list(tmp_path.iterdir()) == []


def test_an_output_folder_removed_during_the_run_is_said_so_not_a_full_disk(tmp_path):
    folder = tmp_path / "usb"
    folder.mkdir()
    for fail in (True, False):  # the writer fails, or it "succeeds" into a folder that is gone
        with pytest.raises(ScribbleSegError, match=r"x\.nrrd: the output folder .*usb no longer exists$"):
            with fileio.atomic_output(folder / "x.nrrd") as tmp:
                tmp.write_bytes(b"partial")
                tmp.unlink()
                folder.rmdir()
                if fail:
                    raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(tmp))
        folder.mkdir()


def test_a_long_output_name_gets_a_temporary_that_fits_and_a_too_long_one_is_refused(tmp_path):
    name = "h" * 240 + ".seg.nrrd"  # valid (249 bytes) but too long once tagged in full
    tmp = fileio.temp_path(tmp_path / name)
    assert len(tmp.name.encode()) <= fileio.NAME_MAX_BYTES and tmp.name.endswith(".seg.nrrd")
    assert fileio.is_temp_name(tmp.name)
    with fileio.atomic_output(tmp_path / name) as tmp:
        tmp.write_bytes(b"ok")
    assert [p.name for p in tmp_path.iterdir()] == [name]
    with pytest.raises(ScribbleSegError, match=r"the file name is too long \(265 bytes; at most 255\)"):
        fileio.check_output_path(tmp_path / ("h" * 256 + ".seg.nrrd"))


def test_an_output_folder_that_is_a_file_is_named_so(tmp_path):
    # It was called missing, although it is there: a file.
    (tmp_path / "afile").write_text("kept")
    with pytest.raises(ScribbleSegError, match=r"the output folder .*afile is a file, not a folder"):
        fileio.check_output_path(tmp_path / "afile" / "x.seg.nrrd", "--out")
    with pytest.raises(ScribbleSegError, match=r"the output folder .*missing does not exist"):
        fileio.check_output_path(tmp_path / "missing" / "x.seg.nrrd", "--out")
    assert (tmp_path / "afile").read_text() == "kept"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_an_output_that_is_a_named_pipe_is_refused_and_kept(tmp_path):
    # The atomic rename put a regular file in its place (and as root, `--out /dev/null` would replace /dev/null).
    pipe = tmp_path / "fifo.model"
    os.mkfifo(pipe)
    with pytest.raises(ScribbleSegError, match=r"fifo.model \(--out\): is a device, a named pipe or a socket"):
        fileio.check_outputs({"--out": pipe})
    with pytest.raises(ScribbleSegError, match="is a device, a named pipe or a socket"):
        with fileio.atomic_output(pipe) as tmp:
            tmp.write_bytes(b"model")
    assert not pipe.is_file() and pipe.exists() and [p.name for p in tmp_path.iterdir()] == ["fifo.model"]


def test_an_output_named_by_a_link_is_written_to_the_file_the_link_names(tmp_path):
    # The rename replaced the link with a file and left the model it named as it was.
    (tmp_path / "models").mkdir()
    target = tmp_path / "models" / "v1.model"
    target.write_bytes(b"old")
    link = tmp_path / "current.model"
    link.symlink_to(Path("models") / "v1.model")
    with fileio.atomic_output(link) as tmp:
        tmp.write_bytes(b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
    seg_link = tmp_path / "heart.seg.nrrd"
    seg_link.symlink_to(Path("models") / "v1.seg.nrrd")  # dangling: written where it points, as `>` writes
    with fileio.OutputSet({"seg": seg_link}) as outputs:
        outputs.path("seg").write_bytes(b"seg")
        outputs.commit()
    assert seg_link.is_symlink() and (tmp_path / "models" / "v1.seg.nrrd").read_bytes() == b"seg"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["v1.model", "v1.seg.nrrd"]


def test_segment_refuses_before_computing_when_the_outputs_cannot_fit(case, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "free_bytes", lambda folder: 4096)
    status, _, err = run_cli(capsys, segment_args(case, tmp_path / "o.nrrd", "--probability", tmp_path / "p.nrrd"))
    assert_one_line_error(status, err, "disk full writing", "o.nrrd", "p.nrrd", "MB needed", "MB free")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def full_disk(tmp_path):
    """A 256 kB tmpfs (root only), filled to the last byte; skipped where it cannot be mounted."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        # Leave 12 kB: enough to start each file, never enough to finish it.
        (mount / "filler").write_bytes(b"\0" * (fileio.free_bytes(mount) - 12 * 1024))
        yield mount
    finally:
        import gc

        gc.collect()  # a writer's file left open would keep the tmpfs busy
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("writer", ["labelmap.nii", "labelmap.nrrd", "probability.nrrd", "segmentation.seg.nrrd",
                                    "model", "surface.stl", "render.png"])
def test_every_writer_reports_a_full_disk_in_one_line_and_leaves_nothing(case, full_disk, writer, monkeypatch,
                                                                        capfd):
    monkeypatch.setattr(fileio, "check_free_space", lambda needs: None)  # reach the write itself
    made = case["phantom"]
    geometry = made.image.geometry
    path = full_disk / writer
    noise = np.random.default_rng(0).random(made.label.shape)  # does not compress to nothing
    before = sorted(p.name for p in full_disk.iterdir())
    with pytest.raises(fileio.DiskFullError) as error:
        if writer.startswith("labelmap"):
            volume_io.write_labelmap(path, (noise * 255).astype(np.uint8), geometry)
        elif writer.startswith("probability"):
            volume_io.write_probability(path, noise.astype(np.float32), geometry)
        elif writer.startswith("segmentation"):
            volume_io.write_segmentation(path, [("heart", noise > 0.5, volume_io.HEART_COLOR)], geometry)
        elif writer == "model":
            from ScribbleSegLib.model_file import load_model, save_model

            loaded = load_model(case["model"], device="cpu")
            save_model(path, loaded.net, loaded.config, bank_features=np.zeros((20000, 8), np.float16),
                       bank_labels=np.zeros(20000, np.uint8))
        else:
            from ScribbleSegLib import surface

            poly = surface.labelmap_to_surface((noise > 0.5).astype(np.uint8), geometry, smoothing=0)
            if writer.startswith("surface"):
                surface.write_surface(path, poly)
            else:
                surface.render_surface_png(poly, path, size=(1600, 1200))
    message = str(error.value)
    assert message.startswith(f"disk full writing {path} (") and message.endswith(" MB free)")
    if os.path.isdir("/proc/self/fd"):  # no handle left open on the failed file
        open_files = [os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")]
        assert not [f for f in open_files if f.startswith(str(full_disk))]
    assert "\n" not in message
    err = capfd.readouterr().err
    assert "NWAD" not in err and "libpng" not in err  # NIfTI's and libpng's own complaints are held back
    assert "ERR|" not in err and "vtk" not in err  # and vtk's logger and output window too
    assert "0.0 MB needed" not in message  # a size not known in advance is not made up
    assert sorted(p.name for p in full_disk.iterdir()) == before


# ---------------------------------------------------------------------------
# Memory, options, the API
# ---------------------------------------------------------------------------


def test_a_huge_phantom_is_refused_before_allocating(capsys, tmp_path):
    status, _, err = run_cli(capsys, ["phantom", "--out", tmp_path / "p", "--shape", 5000, 5000, 5000])
    assert_one_line_error(status, err, "--shape 5000 5000 5000", "memory")
    assert not (tmp_path / "p").exists()


def test_reading_a_volume_that_cannot_fit_is_refused(case, monkeypatch):
    from ScribbleSegLib import resources

    monkeypatch.setattr(resources, "available_memory", lambda: 1000)
    with pytest.raises(ScribbleSegError, match=r"image\.nrrd: reading a 40x40x8 volume needs about .* of memory"):
        volume_io.read_image(case["image"])
    # A file is read whole, downsampled or not: the advice names what does help (it said "read it downsampled").
    with pytest.raises(ScribbleSegError, match="save it as a folder of sections") as refused:
        volume_io.read_image(case["image"], downsample=4)
    assert "read it downsampled or" not in str(refused.value)


@pytest.mark.parametrize("args, words", [
    (["demo", "--train-minutes", "-1"], ["--train-minutes", "positive"]),
    (["phantom", "--out", "x", "--volumes", "0"], ["--volumes"]),
    (["segment", "--image", "i"], ["required", "--model"]),
    (["segment", "--image", "i", "--model", "m", "--out", "o", "--method", "magic"], ["--method", "magic"]),
    (["segment", "--image", "i", "--model", "m", "--out", "o", "--sigma", "0"], ["--sigma"]),
    (["train", "--images", "a", "--labels", "b", "--out", "m", "--max-iters", "-5"], ["--max-iters"]),
    (["cache", "--max-gb", "-1"], ["--max-gb"]),
    (["cache", "--max-gb", "1e308"], ["--max-gb", "up to"]),
    (["segment", "--image", "i", "--model", "m", "--out", "o", "--seed", str(2**64)], ["--seed", "2^63"]),
    (["phantom", "--out", "x", "--seed", str(2**63)], ["--seed"]),
    (["nosuchcommand"], ["nosuchcommand"]),
])
def test_option_errors_are_one_line_at_once(args, words, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "ScribbleSegLib", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert_one_line_error(done.returncode, done.stderr.strip(), "error", *words)
    assert list(tmp_path.iterdir()) == []  # nothing made: not even the demo's folder


def test_help_still_prints_the_usage():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "ScribbleSegLib", "segment", "--help"], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0 and done.stdout.startswith("usage: scribbleseg segment")
    assert "--probability" in done.stdout


@pytest.mark.parametrize("change, words", [
    (lambda a: dict(a, scribbles=a["scribbles"].tolist()), "scribbles must be a numpy array, got list"),
    (lambda a: dict(a, model=None), "model is None"),
    (lambda a: dict(a, image=a["image"][:0]), "image is empty"),
    (lambda a: dict(a, image=a["image"].astype(np.float32)),
     "image has dtype float32, expected uint8 (0-255): scale it to 0-255"),
    (lambda a: dict(a, image=[[1]]), "image must be a numpy array, got list"),
    (lambda a: dict(a, scribbles=a["scribbles"] * 3), "scribbles must hold 0 (none), 1 (heart) and 2"),
    (lambda a: dict(a, scribbles=a["scribbles"][1:]), "scribbles have shape"),
    (lambda a: dict(a, method="magic"), "method 'magic': expected one of munet, ddml, full"),
    (lambda a: dict(a, seed=-1), "seed must be an integer from 0 to 2^63 - 1"),
    (lambda a: dict(a, seed=2**64), "seed must be an integer from 0 to 2^63 - 1"),
    (lambda a: dict(a, spacing=(1, 0, 1)), "spacing must be three positive numbers"),
    (lambda a: dict(a, spacing=(1e-200, 1, 1)), "spacing must lie between 1e-09 and 1e+09 mm"),
    (lambda a: dict(a, suggest=-1), "suggest must be a non-negative integer, got -1"),
    (lambda a: dict(a, suggest=2.5), "suggest must be a non-negative integer, got 2.5"),
    (lambda a: dict(a, image=a["image"][0], scribbles=a["scribbles"][0]), "looks like one RGB section"),
    (lambda a: dict(a, cut_params={"gamma": 1}), "cut_params must be a GraphCutParams or None, got dict"),
    (lambda a: dict(a, model=42), "model must be a model file or a model from model_file.load_model, got int"),
    (lambda a: dict(a, scribbles=a["scribbles"] > 0), "scribbles are bool (a mask)"),
    (lambda a: dict(a, scribbles=np.where(a["scribbles"] == 2, 0, a["scribbles"])),
     "scribbles have no background (2) voxel; method 'full' needs heart and background strokes"),
    (lambda a: dict(a, features=(np.full(a["scribbles"].shape, 2.0, np.float32),
                                 np.zeros(a["scribbles"].shape + (4,), np.float16))),
     "features[0] (probability) must be finite and in [0, 1]"),
    (lambda a: dict(a, features=(np.full(a["scribbles"].shape, 0.5, ">f4"),
                                 np.zeros(a["scribbles"].shape + (4,), np.float16))),
     "features[0] (probability) must be in this machine's byte order"),
    (lambda a: dict(a, scribbles=a["scribbles"].astype(np.float32)), "scribbles has dtype float32, expected integers"),
    (lambda a: dict(a, spacing="123"), "spacing must be three positive numbers (x, y, z) in mm, got '123'"),
    (lambda a: dict(a, spacing=("0.03", "0.03", "0.06")), "spacing must be three positive numbers (x, y, z) in mm"),
    (lambda a: dict(a, spacing=(True, 1, 1)), "spacing must be three positive numbers (x, y, z) in mm, got (True"),
    (lambda a: dict(a, cache_dir=""), "cache_dir must be a folder name or None, got ''"),
    (lambda a: dict(a, progress=lambda stage: None), "progress must take three arguments (stage, fraction, message)"),
    (lambda a: dict(a, device=None), "device None: expected one of auto, cpu, cuda"),
])
def test_the_api_raises_one_clear_sentence(case, change, words, monkeypatch):
    # Every one of these is refused before the model is loaded or the network runs.
    monkeypatch.setattr(pipeline, "as_model", lambda *a, **k: pytest.fail("the model was loaded"))
    made = case["phantom"]
    arguments = change({"image": made.image.array, "scribbles": case["strokes"], "model": case["model"],
                        "method": "full", "seed": 0, "spacing": None, "cut_params": None})
    with pytest.raises(ScribbleSegError) as error:
        pipeline.segment(arguments.pop("image"), arguments.pop("scribbles"), arguments.pop("model"), **arguments)
    assert words in str(error.value) and "\n" not in str(error.value) and "--" not in str(error.value)


def test_the_starter_model_is_taken_by_name_in_the_api_and_a_result_never_aliases_the_features(case):
    from ScribbleSegLib.model_file import load_model

    assert load_model("starter", device="cpu").path.name == "starter.model"
    with pytest.raises(ScribbleSegError, match=r"path must be a model file name \(or 'starter'\), got NoneType"):
        load_model(None)
    for device in (5, None, ""):  # as segment and Session refuse them, not a bare AttributeError or "auto"
        with pytest.raises(ScribbleSegError, match=f"device {device!r}: expected one of auto, cpu, cuda"):
            load_model("starter", device=device)
    made = case["phantom"]
    loaded = load_model(case["model"], device="cpu")
    probability, features = pipeline.compute_features(made.image.array, loaded)[:2]
    probability = np.array(probability)  # the caller's own, writable
    result = pipeline.segment(made.image.array, None, loaded, method="munet", features=(probability, features),
                              suggest=0)
    assert not result.probability.flags.writeable and np.shares_memory(result.probability, probability)
    assert probability.flags.writeable, "the caller's array keeps its flags"


def test_the_lower_level_steps_name_their_parameters(case):
    from ScribbleSegLib import ddml, inference

    made = case["phantom"]
    features = np.zeros(case["strokes"].shape + (4,), np.float32)
    with pytest.raises(ScribbleSegError, match="^scribbles must be a numpy array, got list$"):
        ddml.adapt(features, case["strokes"].tolist(), None, None)
    with pytest.raises(ScribbleSegError, match="^config must be a DDMLConfig or None, got dict$"):
        ddml.adapt(features, case["strokes"], None, None, config={"steps": 3})
    with pytest.raises(ScribbleSegError, match=r"^model must be a loaded model \(model_file.load_model"):
        inference.predict_volume(str(case["model"]), made.image.array)


def test_read_scribbles_with_a_wrong_grid_is_refused(case):
    made = case["phantom"]
    with pytest.raises(ScribbleSegError, match=r"shape must be three positive integers \(Z, Y, X\), got \(8, 40\)"):
        volume_io.read_scribbles(case["scribbles"], (8, 40), made.image.geometry)
    with pytest.raises(ScribbleSegError, match="geometry must be a Geometry, got tuple"):
        volume_io.read_scribbles(case["scribbles"], made.label.shape, (1.0, 1.0, 1.0))


def test_sample_pixels_takes_its_default_share_from_ddml_config():
    import inspect

    from ScribbleSegLib import ddml

    features = np.random.default_rng(0).random((2, 30, 30, 4)).astype(np.float32)
    strokes = np.zeros((2, 30, 30), np.uint8)
    strokes[0, :10] = 1
    strokes[1, :10] = 2
    bank = np.random.default_rng(1).random((400, 4)).astype(np.float32)
    bank_labels = np.repeat([0, 1], 200).astype(np.uint8)
    assert inspect.signature(ddml.sample_pixels).parameters["scribble_share"].default is None
    _, _, source = ddml.sample_pixels(features, strokes, bank, bank_labels, n=400, seed=0)
    share = float(np.mean(source == ddml.SOURCE_SCRIBBLE))
    assert share == pytest.approx(ddml.DDMLConfig().scribble_share, abs=0.01)


def test_worker_segment_refuses_an_output_that_is_an_input(case, tmp_path):
    from ScribbleSegLib import worker

    path = worker.write_request(tmp_path / "r.json", {
        "task": "segment", "image": str(case["image"]), "scribbles": str(case["scribbles"]),
        "model": str(case["model"]), "device": "cpu", "cache_dir": None,
        "outputs": {"labels": str(case["scribbles"])}})
    before = digest(inputs_of(case))
    with pytest.raises(ScribbleSegError, match="outputs.labels.*is the input request field 'scribbles'"):
        worker.run_request(worker.load_request(path), worker.Emitter(open(os.devnull, "w")))
    assert digest(inputs_of(case)) == before


def test_manifest_of_a_cache_entry_records_sizes_and_checksums(tmp_path):
    cache = feature_cache.FeatureCache(tmp_path)
    store(cache, "c" * 32, 500)
    manifest = json.loads((tmp_path / ("c" * 32) / "meta.json").read_text())
    for name in feature_cache.FILES:
        path = tmp_path / ("c" * 32) / name
        assert manifest["files"][name] == {"size": path.stat().st_size,
                                           "checksum": feature_cache.sampled_checksum(path)}


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this system")
def test_a_signal_ignored_as_the_program_starts_stays_ignored(tmp_path):
    # `nohup scribbleseg train ...` was stopped when its terminal closed: the handlers replaced nohup's ignore.
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with fileio.signals_raise():
            signal.raise_signal(signal.SIGHUP)  # raised Interrupted before
        with fileio.signals_held():
            signal.raise_signal(signal.SIGHUP)
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    except KeyboardInterrupt as stopped:  # pytest would end the whole run on it
        pytest.fail(f"an ignored SIGHUP stopped the body: {stopped}")
    finally:
        signal.signal(signal.SIGHUP, previous)
    with pytest.raises(KeyboardInterrupt):  # not ignored: still stops the body
        with fileio.signals_raise():
            signal.raise_signal(signal.SIGHUP)


def test_a_cache_folder_given_with_a_tilde_is_in_the_home_folder(tmp_path, capsys, monkeypatch):
    # SCRIBBLESEG_CACHE_DIR="~/x" (quoted: the shell leaves it) made a folder named "~" in the working folder.
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    monkeypatch.setenv("SCRIBBLESEG_CACHE_DIR", "~/features")
    assert choices.default_cache_dir() == home / "features"
    status, out, _ = run_cli(capsys, ["cache", "list", "--cache-dir", "~/other"])
    assert status == 0 and str(home / "other") in out, out
    assert list(work.iterdir()) == []


def test_cache_list_names_the_models_whole_path_and_the_networks_scale(case, capsys, tmp_path, monkeypatch):
    # `cache list` named the model as typed in another folder ("../m1.model"), and two entries of one image read at
    # two pixel sizes looked alike.
    from ScribbleSegLib.model_file import load_model

    cache = tmp_path / "cache"
    monkeypatch.chdir(case["folder"])
    model = case["model"].name  # typed relative to the folder it was run in
    pixel = load_model(case["model"]).voxel_size[0]
    for spacing in (None, pixel / 2):  # the second's sections are shrunk by half for the network
        extra = ["--method", "munet"] + ([] if spacing is None else ["--spacing", spacing, spacing, 0.04])
        args = segment_args(case, tmp_path / "out.seg.nrrd", *extra, cache=cache)
        args[args.index("--model") + 1] = model
        assert run_cli(capsys, args)[0] == 0
    monkeypatch.chdir(tmp_path)
    status, out, _ = run_cli(capsys, ["cache", "list", "--cache-dir", cache])
    lines = [line for line in out.splitlines() if "last used" in line]
    assert status == 0 and len(lines) == 2, out
    assert all(f"model {case['model']}" in line for line in lines), out
    assert sum("(network scale 0.5x0.5)" in line for line in lines) == 1, out
