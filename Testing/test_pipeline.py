"""pipeline.segment and `scribbleseg segment` end to end on a tiny phantom with a tiny model."""

import logging
import threading

import numpy as np
import pytest

from ScribbleSegLib import cli, pipeline, scribbles, volume_io
from ScribbleSegLib.errors import ScribbleSegError
from ScribbleSegLib.geometry import Volume
from conftest import tiny_case


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    test, model = tiny_case(folder, (12, 48, 48), max_iters=30)
    scrib = scribbles.simulate_scribbles(test.label, seed=0, every=4)
    return folder, test, scrib, model


def test_methods_and_seeds(case):
    _, test, scrib, model = case
    full = pipeline.segment(test.image, scrib, model, method="full")
    assert full.labels.shape == test.label.shape and full.labels.dtype == np.uint8
    assert (full.labels[scrib == 1] == 1).all() and (full.labels[scrib == 2] == 0).all()
    assert full.probability.min() >= 0 and full.probability.max() <= 1
    ddml = pipeline.segment(test.image, scrib, model, method="ddml")
    np.testing.assert_array_equal(ddml.labels, ddml.probability > 0.5)
    munet = pipeline.segment(test.image, None, model, method="munet")
    np.testing.assert_array_equal(munet.labels, munet.munet_probability > 0.5)
    again = pipeline.segment(test.image, scrib, model, method="ddml", seed=np.int64(0))  # a numpy seed too
    np.testing.assert_allclose(again.probability, ddml.probability, atol=1e-6)
    np.testing.assert_allclose(munet.munet_probability, full.munet_probability, atol=1e-6)


def test_progress_runs_from_0_to_1_within_each_stage_as_the_readme_says(case):
    _, test, scrib, model = case
    calls = []
    pipeline.segment(test.image, scrib, model,
                     progress=lambda stage, fraction, message: calls.append((stage, fraction)))
    stages = list(dict.fromkeys(stage for stage, _ in calls))
    assert {"M-Unet inference", "metric learning", "head", "graph cut"} <= set(stages), stages
    for stage in stages:
        fractions = [f for s, f in calls if s == stage]
        assert all(0.0 <= f <= 1.0 for f in fractions), (stage, fractions)
        assert fractions[-1] == 1.0 and min(fractions) < 0.5, (stage, fractions)


def test_the_cut_is_measured_beside_the_adaptation_and_cuts_as_it_would_alone(case, monkeypatch):
    from ScribbleSegLib import graphcut

    _, test, scrib, model = case
    threads = []
    original = graphcut.measure_ahead

    def measured(*args):
        threads.append(threading.current_thread())
        original(*args)

    monkeypatch.setattr(graphcut, "measure_ahead", measured)
    full = pipeline.segment(test.image, scrib, model, method="full")
    assert threads and threads[0] is not threading.current_thread()
    alone = graphcut.graph_cut(full.probability, test.image.array, scrib, spacing_zyx=test.image.geometry.spacing_zyx)
    np.testing.assert_array_equal(full.labels, alone)
    pipeline.segment(test.image, scrib, model, method="ddml")
    assert len(threads) == 1  # nothing to measure without a cut


def test_a_stack_whose_cut_cannot_fit_is_refused_before_the_network_runs(case, monkeypatch):
    from ScribbleSegLib import graphcut
    from ScribbleSegLib.session import Session

    _, test, scrib, model = case
    ran = []

    def network(*args, **kwargs):
        ran.append(1)
        raise RuntimeError("the network ran")

    monkeypatch.setattr(pipeline, "compute_features", network)
    monkeypatch.setattr(graphcut, "available_memory", lambda: 2**16)  # 64 KiB free: no cut of 12x48x48 fits
    for run in (lambda: pipeline.segment(test.image, scrib, model, method="full"), lambda: Session(test.image, model)):
        with pytest.raises(ScribbleSegError, match="graph cut: .* more than the memory budget"):
            run()
    assert ran == []  # refused before the network
    with pytest.raises(RuntimeError, match="the network ran"):  # no cut, no check: on to the network
        pipeline.segment(test.image, scrib, model, method="ddml")
    assert ran == [1]


def test_second_run_reuses_cached_features(case, tmp_path):
    _, test, scrib, model = case
    first = pipeline.segment(test.image, scrib, model, cache_dir=tmp_path)
    more = scrib.copy()
    more[test.label.astype(bool) & (scrib == 0)] = 0  # same scribbles; a re-run after edits
    second = pipeline.segment(test.image, more, model, cache_dir=tmp_path)
    assert not first.features_cached and second.features_cached
    np.testing.assert_array_equal(first.munet_probability, second.munet_probability)
    np.testing.assert_array_equal(first.labels, second.labels)


@pytest.fixture
def network_says_grey(monkeypatch):
    """The network's run logs a grey scan's stain warning, as a grey image's does."""
    from ScribbleSegLib import inference

    real = inference.predict_volume

    def predicting(*args, **kwargs):
        logging.getLogger("ScribbleSegLib.stain").warning("stain normalization: the tissue shows no colour")
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "predict_volume", predicting)


def test_what_computing_the_features_said_is_said_again_when_they_are_reused(case, tmp_path, network_says_grey,
                                                                             caplog):
    # A grey scan's stain warning came with the first run only: a re-run with another gamma reused the features
    # and said nothing.
    _, test, scrib, model = case
    said = []
    for _ in range(2):
        caplog.clear()
        with caplog.at_level("WARNING", logger="ScribbleSegLib"):
            pipeline.compute_features(test.image.array, pipeline.as_model(model, "cpu"), model_path=model,
                                      cache_dir=tmp_path)
        said.append([r.getMessage() for r in caplog.records if "no colour" in r.getMessage()])
    assert said == [["stain normalization: the tissue shows no colour"],
                    ["stain normalization: the tissue shows no colour (said when these cached features were "
                     "computed)"]]


def test_what_computing_the_features_said_is_in_the_runs_warnings(case, tmp_path, network_says_grey):
    # A grey image's stain warning went to the log only: result.warnings (and a session's) stayed empty, so a notebook
    # that reads them saw nothing; from the cache too.
    from ScribbleSegLib.session import Session

    _, test, scrib, model = case
    for cache_dir in (None, tmp_path, tmp_path):  # computed, computed into the cache, read from it
        result = pipeline.segment(test.image, scrib, model, method="ddml", cache_dir=cache_dir)
        said = [w for w in result.warnings if "no colour" in w]
        assert len(said) == 1, result.warnings
    assert said[0].endswith("(said when these cached features were computed)")
    session = Session(test.image, model)
    assert [w for w in session.warnings if "no colour" in w] == ["stain normalization: the tissue shows no colour"]
    assert any("no colour" in w for w in session.run(scrib, method="ddml").warnings)


def test_a_re_run_reads_the_cuts_coarse_weights_from_the_cache(case, tmp_path, monkeypatch):
    from ScribbleSegLib import cut_levels, graphcut
    from ScribbleSegLib.session import Session

    _, test, scrib, model = case
    monkeypatch.setattr(graphcut, "AUTO_FULL_MAX_VOXELS", 1000)  # a coarse-to-fine cut, as a large stack gets
    first = pipeline.segment(test.image, scrib, model, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*/cut-weights-*.npy"))) == 1

    def no_colour_contrasts(*args, **kwargs):
        raise AssertionError("the coarse pair weights were computed again")

    monkeypatch.setattr(cut_levels._ImageLevel, "forward_weights", no_colour_contrasts)
    again = pipeline.segment(test.image, scrib, model, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.labels, first.labels)
    warm = Session(test.image, model, cache_dir=tmp_path).run(scrib)  # a new session's first cut reads them too
    np.testing.assert_array_equal(warm.labels, first.labels)
    with pytest.raises(AssertionError, match="computed again"):  # other settings: other weights
        pipeline.segment(test.image, scrib, model, cache_dir=tmp_path, cut_params=graphcut.GraphCutParams(delta=0.1))


def test_orientations_have_their_own_cache_entry_and_bad_ones_are_refused(case, tmp_path):
    _, test, scrib, model = case
    flipped = pipeline.segment(test.image, None, model, method="munet", cache_dir=tmp_path, orientations=2)
    plain = pipeline.segment(test.image, None, model, method="munet", cache_dir=tmp_path)
    again = pipeline.segment(test.image, None, model, method="munet", cache_dir=tmp_path, orientations=2)
    assert not flipped.features_cached and not plain.features_cached and again.features_cached
    np.testing.assert_array_equal(again.munet_probability, flipped.munet_probability)
    assert not np.allclose(plain.munet_probability, flipped.munet_probability, atol=1e-4)
    with pytest.raises(ScribbleSegError, match="orientations must be one of 1, 2, 4, got 3"):
        pipeline.segment(test.image, scrib, model, orientations=3)


def test_bad_inputs(case):
    _, test, scrib, model = case
    with pytest.raises(ScribbleSegError, match="method"):
        pipeline.segment(test.image, scrib, model, method="magic")
    with pytest.raises(ScribbleSegError, match="shape"):
        pipeline.segment(test.image, scrib[:-1], model)
    only_heart = np.where(scrib == 2, 0, scrib).astype(np.uint8)
    with pytest.raises(ScribbleSegError):
        pipeline.segment(test.image, only_heart, model)


def test_arguments_of_the_wrong_kind_are_one_line_errors_naming_the_parameter(case):
    import threading

    from ScribbleSegLib.ddml import DDMLConfig
    from ScribbleSegLib.geometry import Geometry, Volume

    _, test, scrib, model = case
    calls = {
        "image.geometry": lambda: pipeline.segment(Volume(test.image.array, (0.01, 0.01, 0.05)), scrib, model),
        "progress": lambda: pipeline.segment(test.image, scrib, model, progress=5),
        "cancel": lambda: pipeline.segment(test.image, scrib, model, cancel=threading.Event()),
        "DDML steps": lambda: pipeline.segment(test.image, scrib, model, ddml_config=DDMLConfig(steps=2.5)),
        "DDML lr": lambda: DDMLConfig(lr="fast"),
        "spacing": lambda: Geometry("abc"),
        "origin": lambda: Geometry((1, 1, 1), None),
    }
    for name, call in calls.items():
        with pytest.raises(ScribbleSegError) as excinfo:
            call()
        message = str(excinfo.value)
        assert message.startswith(name) and len(message.splitlines()) == 1, message


def test_segment_command_writes_every_output(case, tmp_path, capsys):
    folder, test, scrib, model = case
    image = tmp_path / "image.nrrd"
    volume_io.write_rgb_volume(image, test.image)
    scrib_path = tmp_path / "scribbles.seg.nrrd"
    volume_io.write_segmentation(scrib_path, [("Heart", scrib == 1, volume_io.HEART_COLOR),
                                              ("background", scrib == 2, volume_io.BACKGROUND_COLOR)],
                                 test.image.geometry)
    out = tmp_path / "out.seg.nrrd"
    args = ["segment", "--image", str(image), "--scribbles", str(scrib_path), "--model", str(model),
            "--out", str(out), "--probability", str(tmp_path / "p.nrrd"), "--surface", str(tmp_path / "s.vtp"),
            "--render", str(tmp_path / "r.png"), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert cli.main(args) == 0
    masks, geometry = volume_io.read_segmentation(out)
    assert set(masks) == {"heart"}
    assert geometry.mismatch(test.image.geometry) == ""
    for name in ("p.nrrd", "s.vtp", "r.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "features computed" in capsys.readouterr().out
    assert cli.main(args) == 0
    assert "reused from cache" in capsys.readouterr().out


def test_segment_command_takes_a_stack_of_section_images_with_scribbles_as_sections(case, tmp_path):
    # A lab's stack as it often comes: one PNG per section for the image and one for the strokes. The
    # strokes' folder takes the image's grid and gives the same result as the strokes in one labelmap file.
    import SimpleITK as sitk

    _, test, scrib, model = case
    spacing = [str(s) for s in test.image.geometry.spacing]
    for name, planes, vector in (("image", test.image.array, True), ("strokes", scrib, False)):
        (tmp_path / name).mkdir()
        for z, plane in enumerate(planes):
            sitk.WriteImage(sitk.GetImageFromArray(plane, isVector=vector), str(tmp_path / name / f"s{z + 1}.png"))
    read = volume_io.read_image(tmp_path / "image", spacing=test.image.geometry.spacing)
    volume_io.write_labelmap(tmp_path / "strokes.nrrd", scrib, read.geometry)
    outputs = {}
    for strokes in ("strokes", "strokes.nrrd"):
        out = tmp_path / f"{strokes.split('.')[0]}_{len(outputs)}.seg.nrrd"
        assert cli.main(["segment", "--image", str(tmp_path / "image"), "--spacing", *spacing, "--scribbles",
                         str(tmp_path / strokes), "--model", str(model), "--method", "ddml", "--out", str(out),
                         "--no-cache", "--quiet"]) == 0
        outputs[strokes] = volume_io.read_segmentation(out)[0]["heart"]
    assert outputs["strokes"].any()
    np.testing.assert_array_equal(outputs["strokes"], outputs["strokes.nrrd"])
    # The stack read at half size: the full-size strokes follow it.
    out = tmp_path / "half.seg.nrrd"
    assert cli.main(["segment", "--image", str(tmp_path / "image"), "--spacing", *spacing, "--downsample", "2",
                     "--scribbles", str(tmp_path / "strokes"), "--model", str(model), "--method", "ddml",
                     "--out", str(out), "--no-cache", "--quiet"]) == 0
    half = volume_io.read_segmentation(out)[0]["heart"]
    assert half.shape == (scrib.shape[0], scrib.shape[1] // 2, scrib.shape[2] // 2) and half.any()


def test_segment_command_refuses_bad_output_before_work(case, tmp_path, capsys):
    folder, test, scrib, model = case
    image = tmp_path / "image.nrrd"
    volume_io.write_rgb_volume(image, test.image)
    status = cli.main(["segment", "--image", str(image), "--model", str(model), "--method", "munet",
                       "--out", str(tmp_path / "missing" / "o.seg.nrrd"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "missing" in err


def test_segment_command_suggests_sections_and_warns_in_one_line(case, tmp_path, capsys):
    folder, test, scrib, model = case
    image = tmp_path / "image.nrrd"
    volume_io.write_rgb_volume(image, test.image)
    one = np.zeros_like(scrib)
    z = int(np.flatnonzero(scrib.reshape(len(scrib), -1).any(1))[0])
    one[z] = scrib[z]  # every stroke on one section: the run goes on, with one warning
    path = tmp_path / "one.nrrd"
    volume_io.write_labelmap(path, one, test.image.geometry)
    status = cli.main(["segment", "--image", str(image), "--scribbles", str(path), "--model", str(model),
                       "--out", str(tmp_path / "o.nrrd"), "--suggest", "2", "--no-cache", "--quiet"])
    captured = capsys.readouterr()
    assert status == 0
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and f"all strokes lie on section {z}" in warnings[0]
    assert "Traceback" not in captured.err
    lines = captured.out.splitlines()
    assert sum(line.startswith("look next at section") for line in lines) == 1
    assert sum(line.strip().startswith("then section") for line in lines) == 1


def test_segment_command_names_the_file_of_a_suggested_section_of_a_folder(case, tmp_path, capsys):
    import SimpleITK as sitk

    _, test, scrib, model = case
    folder = tmp_path / "sections"
    folder.mkdir()
    for z, section in enumerate(test.image.array):  # numbered from 1, as scanners and people number them
        sitk.WriteImage(sitk.GetImageFromArray(section, isVector=True), str(folder / f"cut_{z + 1}.png"))
    strokes = tmp_path / "strokes"
    strokes.mkdir()
    for z, section in enumerate(scrib):
        sitk.WriteImage(sitk.GetImageFromArray(section), str(strokes / f"cut_{z + 1}.png"))
    sx, sy, sz = test.image.geometry.spacing
    status = cli.main(["segment", "--image", str(folder), "--scribbles", str(strokes), "--model", str(model),
                       "--spacing", str(sx), str(sy), str(sz), "--out", str(tmp_path / "o.nrrd"), "--suggest", "2",
                       "--no-cache", "--quiet"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    looks = [line.strip() for line in captured.out.splitlines() if line.strip().startswith(("look next", "then"))]
    assert len(looks) == 2
    for line in looks:
        section = int(line.split("section ")[1].split()[0])
        assert line.endswith(f"; file cut_{section + 1}.png")
    # So do the warnings that give a section by its index: strokes on one section only.
    one = tmp_path / "one"
    one.mkdir()
    z = int(np.flatnonzero(scrib.reshape(len(scrib), -1).any(1))[0])
    for k, section in enumerate(scrib):
        sitk.WriteImage(sitk.GetImageFromArray(section * (k == z)), str(one / f"cut_{k + 1}.png"))
    status = cli.main(["segment", "--image", str(folder), "--scribbles", str(one), "--model", str(model),
                       "--spacing", str(sx), str(sy), str(sz), "--out", str(tmp_path / "o1.nrrd"), "--no-cache",
                       "--quiet"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert f"all strokes lie on section {z} (file cut_{z + 1}.png);" in captured.err


def test_segment_command_on_a_tile_gives_an_area_and_no_section_to_look_at(case, tmp_path, capsys):
    import SimpleITK as sitk

    _, test, scrib, model = case
    z = int(np.flatnonzero(scrib.reshape(len(scrib), -1).any(1))[0])
    sitk.WriteImage(sitk.GetImageFromArray(test.image.array[z], isVector=True), str(tmp_path / "tile.png"))
    sitk.WriteImage(sitk.GetImageFromArray(scrib[z]), str(tmp_path / "strokes.png"))
    status = cli.main(["segment", "--image", str(tmp_path / "tile.png"), "--scribbles", str(tmp_path / "strokes.png"),
                       "--model", str(model), "--out", str(tmp_path / "o.seg.nrrd"), "--spacing", "0.02", "0.02",
                       "0.05", "--no-cache", "--quiet"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    heart = [line for line in captured.out.splitlines() if line.startswith("heart: ")]
    voxels = int(heart[0].split()[1])
    assert len(heart) == 1 and f"{voxels * 0.02 * 0.02:.4g} mm^2" in heart[0] and "mm^3" not in heart[0]
    assert "look next" not in captured.out


def test_a_blank_array_is_refused_by_the_api_as_a_blank_file_is():
    # pipeline.segment and Session ran the network on a white array: the file reader alone refused one.
    from ScribbleSegLib.session import Session

    for image in (np.full((4, 32, 32, 3), 255, np.uint8), np.full((4, 32, 32), 200, np.uint8)):
        colour = ", ".join([str(int(image.flat[0]))] * 3)
        for run in (lambda: pipeline.segment(image, None, "starter", method="munet", spacing=(0.01, 0.01, 0.02)),
                    lambda: Session(image, "starter", spacing=(0.01, 0.01, 0.02))):
            with pytest.raises(ScribbleSegError, match=rf"^image: every voxel has the same colour \({colour}\)"):
                run()


def test_a_pixel_size_typed_in_micrometres_is_named_as_such_not_as_missing():
    # --spacing 9.2 9.2 10 (micrometres) was told "the stack has no pixel size ... (give the spacing)".
    class Model:
        voxel_size = (0.0075, 0.0075, 0.015)

    # Whole micrometres (40 for 40 um) were told the same: a downsample of a file without one reads the same.
    for spacing, words in (((9.2, 9.2), "pixel size 9.2 mm is coarser than any scan's"),
                           ((40.0, 40.0), "pixel size 40 mm is what a file that states none gives when read with "
                                          "downsample 40, or a spacing in micrometres (40 um is 0.04 mm)"),
                           ((1.0, 1.0), "the image states no pixel size"), (None, "the image states no pixel size")):
        warnings = []
        assert pipeline.network_scale(spacing, Model(), warnings) == (1.0, 1.0)
        assert len(warnings) == 1 and words in warnings[0], warnings
    warnings = []
    pipeline.network_scale((9.2, 9.2), Model(), warnings)
    assert warnings[0].endswith("(the spacing is in mm: 9.2 um is 0.0092 mm)")
    # Micrometres given as mm below 1 (0.62 for 0.62 um) to train and segment alike matched the model's: no word.
    warnings = []
    assert pipeline.network_scale((0.62, 0.62), type("M", (), {"voxel_size": (0.62, 0.62, 0.62)})(), warnings) == (
        1.0, 1.0)
    assert warnings == ["the image's pixel size 0.62 mm is coarser than a slide scanner's: was the spacing given in "
                        "micrometres? It is in mm (0.62 um is 0.00062 mm)"]


def test_sections_typed_in_micrometres_are_asked_about_in_a_run_and_a_session():
    # --spacing 0.015 0.015 5 (5 um between sections) ran without a word: the cut linked sections 5 mm apart and the
    # heart came out a thousand times too large.
    from ScribbleSegLib.phantom import PhantomConfig, make_phantom
    from ScribbleSegLib.session import Session

    image = make_phantom(0, PhantomConfig(shape=(4, 48, 48))).image.array
    words = ("the sections lie 5 mm apart, farther than serial sections for a 3D reconstruction: was the spacing "
             "given in micrometres? It is in mm (5 um is 0.005 mm)")
    for spacing, said in (((0.015, 0.015, 5.0), True), ((0.015, 0.015, 0.03), False), ((1.0, 1.0, 5.0), False)):
        result = pipeline.segment(image, None, "starter", method="munet", spacing=spacing)
        session = Session(image, "starter", spacing=spacing)
        for warnings in (result.warnings, session.warnings):
            assert any(words in line for line in warnings) == said, (spacing, warnings)
    # One section has no neighbours to be far from.
    assert pipeline.segment(image[:1], None, "starter", method="munet", spacing=(0.015, 0.015, 5.0)).warnings == [
        line for line in pipeline.segment(image[:1], None, "starter", method="munet",
                                          spacing=(0.015, 0.015, 0.03)).warnings]


def test_a_pixel_far_from_the_models_in_one_axis_is_named_with_both_sizes():
    # 0.06 x 0.6 mm was told "the image's pixel size 0.06 mm is far from the model's", which it is not.
    class Model:
        voxel_size = (0.06, 0.06, 0.12)

    warnings = []
    assert pipeline.network_scale((0.06, 0.6), Model(), warnings) == (1.0, 1.0)
    assert "the image's pixel size 0.06 x 0.6 mm is far from the model's 0.06 mm" in warnings[-1], warnings


def test_sections_the_network_sees_little_of_get_one_warning(caplog):
    # 8x64-pixel sections ran with no word (the network's IoU 0.86 there), 4x4 ones came out empty.
    import types

    model = types.SimpleNamespace(voxel_size=(0.02, 0.02, 0.04), config=types.SimpleNamespace(patch=64))
    for section, spacing, warned in (((8, 64), (0.02, 0.02), "the sections are 64x8 pixels at the network's pixel "
                                      "size, under half its 64-pixel patch: it sees little around each pixel, and its "
                                      "output may be poor (its sections stored along another axis of the file?)"),
                                     ((60, 60), (0.01, 0.01), "the sections are 30x30 pixels at the network's pixel "
                                      "size, under half its 64-pixel patch: it sees little around each pixel, and its "
                                      "output may be poor (a stack downsampled too far?)"),  # halved to the model's
                                     ((40, 200), (0.02, 0.02), None), ((8, 64), None, "64x8 pixels")):
        warnings = []
        with caplog.at_level("WARNING", logger="ScribbleSegLib"):
            caplog.clear()
            pipeline.logged_network_scale(spacing, model, warnings, section)
        small = [w for w in warnings if "network's pixel size" in w]
        if warned is None:
            assert small == [], small
        else:
            assert len(small) == 1 and warned in small[0], warnings
            assert small[0] in [r.getMessage() for r in caplog.records]


def test_segment_command_on_a_tile_without_a_spacing_runs_at_its_own_scale_and_gives_no_mm(case, tmp_path, capsys):
    # A PNG tile states no pixel size: without --spacing it is read at 1 mm per pixel, the network runs at the
    # tile's own scale (no resampling to the model's 0.02 mm), and one warning says so; the labels are those of
    # the same tile given the model's own spacing, which needs no resampling either.
    import SimpleITK as sitk

    _, test, scrib, model = case
    z = int(np.flatnonzero(scrib.reshape(len(scrib), -1).any(1))[0])
    sitk.WriteImage(sitk.GetImageFromArray(test.image.array[z], isVector=True), str(tmp_path / "tile.png"))
    sitk.WriteImage(sitk.GetImageFromArray(scrib[z]), str(tmp_path / "strokes.png"))
    common = ["segment", "--image", str(tmp_path / "tile.png"), "--scribbles", str(tmp_path / "strokes.png"),
              "--model", str(model), "--no-cache", "--quiet"]
    status = cli.main(common + ["--out", str(tmp_path / "own.nrrd")])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    scale = [line for line in captured.err.splitlines() if "pixel size" in line or "mm pixels" in line]
    assert len(scale) == 2 and "note: " in scale[0], captured.err
    assert "warning: the image states no pixel size" in scale[1], captured.err  # a tile is no stack
    assert "Traceback" not in captured.err
    # Its heart in voxels only: "2913 voxels, 2913 mm^2" gave the pixel count as an area.
    heart = [line for line in captured.out.splitlines() if line.startswith("heart: ")]
    assert len(heart) == 1 and "mm^" not in heart[0] and "states no pixel size" in heart[0], heart
    assert int(heart[0].split()[1]) > 0
    spacing = pipeline.as_model(model, "cpu").voxel_size
    assert cli.main(common + ["--out", str(tmp_path / "given.nrrd"), "--spacing", *map(str, spacing)]) == 0
    own, given = (volume_io.read_label_volume(tmp_path / name) for name in ("own.nrrd", "given.nrrd"))
    assert own.geometry.spacing == (1.0, 1.0, 1.0) and own.array.any()
    np.testing.assert_array_equal(own.array, given.array)


def test_a_run_whose_network_contradicts_the_strokes_warns_leaves_the_bank_out_and_finishes(case, adapt_shares):
    from ScribbleSegLib import ddml

    _, test, scrib, model = case
    prob, feats, _ = pipeline.compute_features(test.image.array, pipeline.as_model(model, "cpu"))
    shares = adapt_shares
    unaware = np.zeros_like(prob)  # a network that sees no heart anywhere: another organ than its own
    result = pipeline.segment(test.image, scrib, model, features=(unaware, feats))
    assert len(result.warnings) == 1 and "training pixels were left out" in result.warnings[0]
    assert result.warnings[0].startswith("the model's network calls 100% of the heart strokes background")
    assert (result.labels[scrib == 1] == 1).all() and shares == [1.0]
    paper = pipeline.segment(test.image, scrib, model, features=(unaware, feats), ddml_config=ddml.DDMLConfig.paper())
    assert len(paper.warnings) == 1 and "left out" not in paper.warnings[0] and shares[1] == 0.05
    agreeing = np.where(scrib == 1, 1.0, 0.0).astype(np.float32)
    assert pipeline.segment(test.image, scrib, model, features=(agreeing, feats)).warnings == []
    assert shares[2] == ddml.DDMLConfig().scribble_share


def test_a_stack_far_from_the_models_pixel_size_leaves_the_bank_out_though_the_network_agrees(case, adapt_shares):
    # A model that learnt another magnification reads neither its target nor its training pixels' look: the
    # starter (heart) model on real tiles 18-71 times finer kept its bank where the strokes agreed with it by
    # chance, and scored far below the same strokes without it.
    from ScribbleSegLib import ddml
    from ScribbleSegLib.geometry import Geometry

    _, test, scrib, model = case
    loaded = pipeline.as_model(model, "cpu")
    prob, feats, _ = pipeline.compute_features(test.image.array, loaded)
    agreeing = np.where(scrib == 1, 1.0, 0.0).astype(np.float32)
    shares = adapt_shares
    pixel, own = loaded.voxel_size[0], ddml.DDMLConfig().scribble_share
    for factor, expected in ((1.0, own), (1 / 40, 1.0), (1 / 2, own)):
        spacing = (pixel * factor, pixel * factor, test.image.geometry.spacing[2])
        image = Volume(test.image.array, Geometry(spacing))
        shares.clear()
        result = pipeline.segment(image, scrib, loaded, features=(agreeing, feats), method="ddml")
        assert shares == [expected], (factor, shares)
        assert not any("network calls" in w for w in result.warnings)  # the strokes agree with the network
    # The paper's settings never leave the bank out.
    shares.clear()
    image = Volume(test.image.array, Geometry((pixel / 40, pixel / 40, test.image.geometry.spacing[2])))
    pipeline.segment(image, scrib, loaded, features=(agreeing, feats), method="ddml",
                     ddml_config=ddml.DDMLConfig.paper())
    assert shares == [0.05]


def test_segment_returns_suggestions_and_warnings(case):
    _, test, scrib, model = case
    result = pipeline.segment(test.image, scrib, model, suggest=2)
    assert len(result.suggestions) == 2 and result.suggestions[0].score >= result.suggestions[1].score
    assert result.warnings == []
    bare = pipeline.segment(test.image.array, None, model, method="munet")
    assert any("no pixel size" in w for w in bare.warnings)


def test_bare_arrays_in_x_y_z_order_run_with_one_warning_naming_the_transpose(case):
    _, test, scrib, model = case
    image_xyz, scrib_xyz = np.transpose(test.image.array, (2, 1, 0, 3)), np.transpose(scrib, (2, 1, 0))
    swapped = pipeline.segment(image_xyz, scrib_xyz, model, method="ddml")
    order = [w for w in swapped.warnings if "(X, Y, Z)" in w]
    assert len(order) == 1 and "np.transpose(scribbles, (2, 1, 0))" in order[0] and "\n" not in order[0]
    right = pipeline.segment(test.image.array, scrib, model, method="ddml")
    assert not any("(X, Y, Z)" in w for w in right.warnings)
    # A Volume's axis order is its file's: strokes on side planes are taken as drawn, without the warning.
    volume = Volume(image_xyz, test.image.geometry)
    assert not any("(X, Y, Z)" in w for w in pipeline.segment(volume, scrib_xyz, model, method="ddml").warnings)


def test_axis_order_warning_needs_strokes_across_many_sections_on_few_columns():
    s = np.zeros((40, 30, 20), np.uint8)
    s[5:35, 10, 4] = 1  # across 30 indices of the first axis, on 1 of the last
    s[5:35, 20, 12] = 2
    assert "2 indices" in pipeline.axis_order_warning(s)
    s[5:35, 25, 0:8] = 2  # 9 of the last axis's indices now: 30 < 4 * 9
    assert pipeline.axis_order_warning(s) is None
    short = np.zeros((40, 30, 20), np.uint8)
    short[5:11, 10, 4] = 1  # a stroke across 6 sections only
    assert pipeline.axis_order_warning(short) is None
    # Sections first, strokes on every 5th section: the usual (Z, Y, X) pattern, never named.
    usual = np.zeros((20, 64, 64), np.uint8)
    usual[::5, 30, 10:50] = 1
    usual[::5, 10, 10:50] = 2
    assert pipeline.axis_order_warning(usual) is None


def test_the_adaptation_gets_the_networks_logits_of_the_models_training_pixels(case, monkeypatch):
    from ScribbleSegLib import ddml
    from ScribbleSegLib.model_file import bank_network_logit, load_model

    _, test, scrib, path = case
    model = load_model(path, device="cpu")
    shifts, given = [], []
    real = ddml.adapt

    def recording(*args, bank_network_logit=None, **kwargs):
        given.append(bank_network_logit)
        result = real(*args, bank_network_logit=bank_network_logit, **kwargs)
        shifts.append(result.head_shift)
        return result

    monkeypatch.setattr(ddml, "adapt", recording)
    pipeline.segment(test.image, scrib, model, method="ddml")
    np.testing.assert_array_equal(given[0], bank_network_logit(model))
    assert shifts[0] != 0.0  # the default moves the head to the network's odds
    pipeline.segment(test.image, scrib, model, method="ddml", ddml_config=ddml.DDMLConfig.paper())
    assert shifts[1] == 0.0


def test_the_cut_sees_the_glass_made_white_as_the_network_does(case):
    # A grey glass (every value x 0.85): the network sees the image with its glass made white, and so does the cut.
    from ScribbleSegLib.graphcut import GraphCutParams, graph_cut
    from ScribbleSegLib.white_point import glass_white, white_glass

    _, test, scrib, model = case
    grey = np.rint(test.image.array * np.float32(0.85)).astype(np.uint8)
    evened = white_glass(grey, glass_white(grey))
    assert evened is not grey and evened.max() == 255
    result = pipeline.segment(grey, scrib, model, spacing=test.image.geometry.spacing, suggest=0)
    expected = graph_cut(result.probability, evened, scrib, spacing_zyx=test.image.geometry.spacing_zyx,
                         params=GraphCutParams())
    np.testing.assert_array_equal(result.labels, expected)


def test_a_run_refused_for_its_model_gives_no_warning_about_its_strokes(tmp_path, caplog):
    # The strokes' warnings came first, then the refusal of a model file that does not exist.
    image = np.random.default_rng(0).integers(60, 220, (3, 16, 16, 3), dtype=np.uint8)
    strokes = np.zeros((3, 16, 16), np.uint8)
    strokes[1, 4, 4:8], strokes[1, 12, 4:8] = 1, 2  # on one section: a warning, were the run to go on
    with caplog.at_level("WARNING", logger="ScribbleSegLib"), pytest.raises(ScribbleSegError, match="no such model"):
        pipeline.segment(image, strokes, tmp_path / "missing.model", spacing=(0.02, 0.02, 0.04))
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
