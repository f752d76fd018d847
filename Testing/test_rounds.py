"""Interactive rounds: corrective strokes, suggestions of where to look, scribble warnings, scale."""

import dataclasses
import json
import types

import numpy as np
import pytest

from ScribbleSegLib import (choices, ddml, graphcut, inference, phantom, pipeline, protocol, scribbles,
                            stroke_warnings, suggest)
from ScribbleSegLib.errors import ScribbleSegError
from conftest import doubted_stack


def _square_case():
    label = np.zeros((4, 40, 40), np.uint8)
    label[:, 10:30, 10:30] = 1
    prediction = label.copy()
    prediction[1, 10:30, 10:18] = 0  # missed heart on section 1 (160 voxels)
    prediction[2, 2:8, 2:30] = 1  # false heart on section 2 (168 voxels)
    return label, prediction


def test_corrective_strokes_go_inside_the_wrong_regions_and_keep_the_old_ones():
    label, prediction = _square_case()
    previous = np.zeros_like(label)
    previous[0, 15, 15:20] = scribbles.HEART
    previous[3, 35, 5:30] = scribbles.BACKGROUND
    new = scribbles.corrective_scribbles(label, prediction, previous, seed=3, sections=2, strokes=2)
    assert np.array_equal(new[previous > 0], previous[previous > 0]), "earlier strokes are kept"
    added = (new > 0) & (previous == 0)
    assert added[1].any() and added[2].any(), "both wrong sections got a stroke"
    assert not added[0].any() and not added[3].any(), "sections without errors get none"
    # Heart strokes only in missed heart, background strokes only in false heart: never against the truth.
    assert (label[added & (new == scribbles.HEART)] == 1).all()
    assert (prediction[added & (new == scribbles.HEART)] == 0).all()
    assert (label[added & (new == scribbles.BACKGROUND)] == 0).all()
    assert (prediction[added & (new == scribbles.BACKGROUND)] == 1).all()
    assert np.array_equal(new, scribbles.corrective_scribbles(label, prediction, previous, seed=3, sections=2,
                                                              strokes=2)), "deterministic for a seed"


def test_corrective_strokes_pick_the_worst_sections_and_skip_tiny_regions():
    label, prediction = _square_case()
    errors = scribbles.section_errors(label, prediction)
    assert errors.tolist() == [0, 160, 168, 0]
    one = scribbles.corrective_scribbles(label, prediction, np.zeros_like(label), sections=1)
    assert np.flatnonzero(one.reshape(4, -1).any(1)).tolist() == [2]
    tiny = label.copy()
    tiny[1, 0, 0] = 1  # one wrong pixel: too small to scribble in
    assert not scribbles.corrective_scribbles(label, tiny, np.zeros_like(label)).any()
    with pytest.raises(ScribbleSegError, match="shape"):
        scribbles.corrective_scribbles(label, prediction[:2], np.zeros_like(label))


def test_suggestions_rank_unsure_and_far_sections_first():
    h = np.zeros((9, 16, 16), np.float32)
    labels = np.zeros((9, 16, 16), np.uint8)
    network = np.zeros_like(h)
    for z in range(1, 8):  # a heart on sections 1-7, sure everywhere...
        h[z, 4:12, 4:12], labels[z, 4:12, 4:12], network[z, 4:12, 4:12] = 0.95, 1, 0.95
    h[4, 4:12, 4:12] = 0.55  # ...but unsure on section 4
    network[6, 4:12, 4:12] = 0.1  # and the network disagreed with the result on section 6
    strokes = np.zeros_like(labels)
    strokes[4, 8, 8], strokes[6, 8, 8], strokes[4, 0, 0] = 1, 1, 2
    ranked = suggest.suggest_sections(h, labels, network, strokes, count=2)
    assert [s.section for s in ranked] == [6, 4]
    assert ranked[0].reason == "changed a lot" and ranked[1].reason == "unsure"
    assert "section 6" in ranked[0].describe()
    # Far from every stroke, a section outranks an equally unsure one on a scribbled section.
    h[1, 4:12, 4:12] = 0.55
    top = suggest.suggest_sections(h, labels, network, strokes, count=1)[0]
    assert top.section == 1 and top.reason == "far from any stroke" and top.distance == 3
    assert type(top.score) is float  # not a numpy float, shown as np.float64(...) in a notebook
    assert suggest.suggest_sections(h, labels, network, strokes, count=0) == []
    # A tile (one section) has no other section to look at: the API and the worker said "section 0".
    assert suggest.suggest_sections(h[4:5], labels[4:5], network[4:5], strokes[4:5]) == []
    with pytest.raises(ScribbleSegError, match="shape"):
        suggest.section_scores(h, labels[:3], network, strokes)


def test_scribble_warnings_name_one_section_touching_and_far_strokes():
    s = np.zeros((6, 60, 60), np.uint8)
    s[2, 20, 20:30] = 1
    s[2, 24, 5:55] = 2
    (one,) = pipeline.scribble_warnings(s)
    assert one.startswith("all strokes lie on section 2") and "\n" not in one
    s[4, 21, 20:30] = 2  # background right beside the heart stroke's neighbour row, another section
    s[4, 20, 20:30] = 1
    warnings = pipeline.scribble_warnings(s)
    assert any("touch on 1 section(s) (first: 4)" in w for w in warnings)
    assert not any("all strokes" in w for w in warnings)
    far = np.zeros((4, 200, 200), np.uint8)
    far[1, 10, 10:14] = 1
    far[2, 190, 150:190] = 2
    assert any("far from the heart strokes" in w for w in pipeline.scribble_warnings(far))
    # No pixel size stated (1 mm pixels, a PNG): the distance in pixels, not "mm"; with one, in mm.
    said = [w for w in pipeline.scribble_warnings(far) if "far from" in w][0]
    assert "(nearest 226 pixels)" in said, said
    said = [w for w in pipeline.scribble_warnings(far, (0.05, 0.01, 0.01)) if "far from" in w][0]
    assert "(nearest 2.26 mm)" in said, said
    near = far.copy()
    near[1, 14, 10:14] = 2
    assert not any("far from" in w for w in pipeline.scribble_warnings(near))


def test_scribble_warnings_name_an_antialiased_brush_that_rims_background_strokes_with_heart():
    # An editor's antialiased brush painting 2 on 0 leaves 1s along each stroke's edge, read as heart strokes.
    s = np.zeros((3, 60, 60), np.uint8)
    s[1, 8, 10:50] = 1
    s[1, 30:33, 5:55] = 2
    assert not any("antialiased" in w for w in pipeline.scribble_warnings(s))
    rimmed = s.copy()
    rimmed[1, 29, 5:55] = rimmed[1, 33, 5:55] = 1  # the rim: 100 heart pixels beside the background stroke
    (warning,) = [w for w in pipeline.scribble_warnings(rimmed) if "antialiased" in w]
    assert warning.startswith("71% of the heart stroke pixels lie right beside background strokes")


def test_a_section_filled_with_heart_strokes_and_a_heart_that_fills_the_volume_are_named():
    # A fill tool's section of 1s made a phantom's result 99.6 % heart (IoU 0.07), with a warning that blamed the
    # model; the filled section and the size of the result are named now.
    s = np.zeros((4, 30, 30), np.uint8)
    s[0, 10:20, 10] = 1
    s[0, 2, 2:28] = 2
    assert not any("fill" in w for w in pipeline.scribble_warnings(s))
    s[2] = 1
    s[2, 0, :3] = 2
    (warning,) = [w for w in pipeline.scribble_warnings(s) if "fill" in w]
    assert warning.startswith("heart strokes cover 100% of section 2: a fill rather than strokes?")
    # Background strokes over a section that holds heart strokes: a fill, or a canvas saved as 2 (a palette in
    # another order gave the heart strokes alone as the result, IoU 0); over a section without heart, no warning.
    s = np.zeros((4, 30, 30), np.uint8)
    s[1] = s[3] = 2
    s[1, 10:20, 10] = s[3, 5, 5:9] = 1
    s[0] = 2
    (warning,) = [w for w in pipeline.scribble_warnings(s) if "background strokes cover" in w]
    assert warning.startswith("background strokes cover 99% of section 1 (and 1 more section(s)): a fill, or an "
                              "empty canvas saved as background (2)?")
    s[1, 5:25, 5:25] = 1
    s[3] = 0
    s[3, 5, 5] = 1
    assert not [w for w in pipeline.scribble_warnings(s) if "background strokes cover" in w]
    labels = np.ones((4, 30, 30), np.uint8)
    network = np.zeros((4, 30, 30), np.float32)
    network[:, 10:20, 10:20] = 0.9
    assert pipeline.result_size_warning(labels, network) == (
        "the heart covers 100% of the volume (the network alone: 11%): check the heart strokes (a section filled "
        "as heart, heart painted on background, the two classes swapped)")
    labels[:, :10] = 0
    assert pipeline.result_size_warning(labels, network) is None



def test_network_doubt_counts_the_strokes_the_network_labels_the_other_way_on_stroked_sections_only(monkeypatch):
    from ScribbleSegLib import choices

    monkeypatch.setattr(choices, "NETWORK_DOUBT", 0.5)
    s = np.zeros((5, 8, 10), np.uint8)
    s[1, 2, :] = 1  # 10 heart-stroke voxels
    s[3, 6, :4] = 2  # 4 background-stroke voxels
    network = np.full(s.shape, 0.9, np.float32)
    network[1, 2, :5] = 0.2  # the network calls half of the heart strokes background
    network[3, 6, 0] = 0.3

    class Sections:  # records which sections are read
        def __init__(self, array):
            self.array, self.read = array, []

        def __getitem__(self, index):
            self.read.append(np.asarray(index).tolist())
            return self.array[index]

    recorded = Sections(network)
    assert pipeline.network_doubt(s, recorded) == pytest.approx((0.5, 0.75))
    assert recorded.read == [[1, 3]]
    (line,) = pipeline.network_warnings(pipeline.network_doubt(s, network))  # 3 of 4 background strokes: heart
    assert line.startswith("the model's network calls 75% of the background strokes heart") and "\n" not in line
    assert "training pixels were left out" not in line
    # A model trained for the target that over-segments this image does the same: the line does not say
    # that it was not trained for it.
    assert "not trained" not in line and "other images" in line
    assert "training pixels were left out" in pipeline.network_warnings((0.0, 0.75), bank_left_out=True)[0]
    network[3, 6, :] = 0.3
    # 1/2 of the heart strokes is not over NETWORK_DOUBT
    assert pipeline.network_warnings(pipeline.network_doubt(s, network)) == []
    network[1, 2, 5] = 0.2
    assert "60% of the heart strokes background" in pipeline.network_warnings(pipeline.network_doubt(s, network))[0]
    assert pipeline.network_doubt(np.zeros_like(s), network) == (0.0, 0.0)
    only_heart = np.where(s == 1, s, 0).astype(np.uint8)
    assert pipeline.network_doubt(only_heart, network)[1] == 0.0


def test_strokes_the_network_contradicts_leave_out_the_bank_and_weigh_the_network_less(monkeypatch):
    s = np.zeros((2, 8, 8), np.uint8)
    s[0, 1, :] = 1
    s[1, 6, :] = 2
    network = np.full(s.shape, 0.1, np.float32)  # every heart stroke on what the network calls background
    used = []

    class Seen(Exception):
        pass

    def adapt(features, scribbles, bank_features, bank_labels, config, **kwargs):
        used.append(config)
        raise Seen

    monkeypatch.setattr(ddml, "adapt", adapt)
    image = np.zeros(s.shape + (3,), np.uint8)
    model = types.SimpleNamespace(bank_features=None, bank_labels=None)
    for config in (ddml.DDMLConfig(), ddml.DDMLConfig(network_weight=0.1), ddml.DDMLConfig(doubted_network_weight=0.0)):
        with pytest.raises(Seen):
            pipeline.adapt_and_cut(image, (1, 1, 1), s, model, network, None, method="ddml", ddml_config=config)
        # The network goes into that h after it, by how much of the stack it calls target (the test below).
        assert (used[-1].scribble_share, used[-1].network_weight) == (1.0, 0.0)
    network[:] = 0.2  # the network agrees with the strokes
    network[s == 1] = 0.9
    with pytest.raises(Seen):
        pipeline.adapt_and_cut(image, (1, 1, 1), s, model, network, None, method="ddml")
    assert used[-1] == ddml.DDMLConfig()  # no doubt: as configured
    with pytest.raises(ScribbleSegError, match="doubted_network_weight"):
        ddml.DDMLConfig(doubted_network_weight=1.5)


def test_the_network_weighs_less_where_the_strokes_adaptation_calls_much_of_the_stack_target(monkeypatch):
    # A heart model on oral carcinoma (two thirds of a tile): its probability, 0.04 over the carcinoma, held h under
    # 1/2 there, and correct background strokes then made the cut drop whole regions (BENCHMARKS.md, "A third real
    # target").  Nuclei, a fifth of a tile, keep the full weight.
    s = np.zeros((1, 10, 10), np.uint8)
    s[0, 1, :] = 1
    s[0, 8, :] = 2
    network = np.full(s.shape, 0.04, np.float32)  # every heart stroke on what the network calls background

    def run(called_target: int, **settings):
        def adapt(features, scribbles, bank_features, bank_labels, config, **kwargs):
            h = np.full(s.shape, 0.2, np.float32)
            h.reshape(-1)[:called_target] = 0.8
            return types.SimpleNamespace(h=h, timings={})

        monkeypatch.setattr(ddml, "adapt", adapt)
        config = ddml.DDMLConfig(**{"doubted_colour_weight": 0.0, "doubted_network_share": (0.3, 0.5), **settings})
        result = pipeline.adapt_and_cut(np.zeros(s.shape + (3,), np.uint8), (1, 1, 1), s, model, network, None,
                                        method="ddml", ddml_config=config, suggest=0)
        return result.probability.reshape(-1)

    model = types.SimpleNamespace(bank_features=None, bank_labels=None)
    for called, weight in ((20, 0.25), (30, 0.25), (40, 0.125), (50, 0.0), (80, 0.0)):
        h = run(called)
        np.testing.assert_allclose(h[0], (1 - weight) * 0.8 + weight * 0.04, atol=1e-6, err_msg=f"{called}%")
        np.testing.assert_allclose(h[-1], (1 - weight) * 0.2 + weight * 0.04, atol=1e-6, err_msg=f"{called}%")
    np.testing.assert_allclose(run(80, doubted_network_share=None)[0], 0.75 * 0.8 + 0.25 * 0.04, atol=1e-6)
    np.testing.assert_allclose(run(20, doubted_network_share=(0.1, 0.1))[0], 0.8, atol=1e-6)
    assert ddml.DDMLConfig().doubted_network_share == choices.DOUBTED_NETWORK_SHARE
    assert ddml.DDMLConfig(doubted_network_share=[0.2, 0.6]).doubted_network_share == (0.2, 0.6)  # as JSON gives it
    for bad in ((0.6, 0.2), (0.1,), "0.3", (0.1, 1.5)):
        with pytest.raises(ScribbleSegError, match="doubted_network_share"):
            ddml.DDMLConfig(doubted_network_share=bad)


def _doubted_run():
    """A run on a small random stack whose network calls 6 of the 10 heart-stroke voxels background (doubt 0.6,
    between ``bank_doubt`` and ``bank_doubt_full``): ``run(**DDMLConfig fields)`` gives its ``ddml`` result."""
    image, feats, s, network, model = doubted_stack(12)
    small = dict(steps=5, head_steps=5, pool_size=64, batch_size=16, evaluation="exact")

    def run(**settings):
        return pipeline.adapt_and_cut(image, (1, 1, 1), s, model, network, feats, method="ddml", suggest=0,
                                      ddml_config=ddml.DDMLConfig(**small, **settings))
    return run


def test_a_doubt_between_the_two_limits_blends_the_adaptations_with_and_without_the_bank_in_proportion():
    # Corrective heart strokes on what a nuclei network missed raised its doubt past 0.5, and the switch that left
    # the bank out took a tile from 0.69 to 0.25 IoU: between bank_doubt and bank_doubt_full h moves in proportion.
    run = _doubted_run()

    def h(**settings):
        settings.setdefault("bank_agreement", None)  # the interval as it is (the agreement's move: the test below)
        return run(**settings).probability

    kept, without = h(bank_doubt=None), h(bank_doubt=0.5, bank_doubt_full=0.5)
    assert np.abs(kept - without).max() > 0.05  # the two differ: the blend below is not trivially met
    np.testing.assert_allclose(h(bank_doubt=0.5, bank_doubt_full=0.7), 0.5 * kept + 0.5 * without, atol=1e-5)
    np.testing.assert_allclose(h(bank_doubt=0.4, bank_doubt_full=0.9), 0.6 * kept + 0.4 * without, atol=1e-5)
    np.testing.assert_array_equal(h(bank_doubt=0.6), kept)  # at the start, and below it: the bank as usual
    np.testing.assert_array_equal(h(bank_doubt=0.3, bank_doubt_full=0.55), without)  # past the end: left out
    line = pipeline.network_warnings((0.6, 0.0), 0.5)[0]
    assert "left out of 50% of the adaptation" in line
    assert ddml.DDMLConfig().bank_doubt_full == choices.BANK_LEFT_OUT_DOUBT > ddml.DDMLConfig().bank_doubt
    for bad in ({"bank_doubt": 0.6, "bank_doubt_full": 0.5}, {"bank_doubt_full": 1.5}, {"bank_doubt_full": None}):
        with pytest.raises(ScribbleSegError, match="bank_doubt_full"):
            ddml.DDMLConfig(**bad)


def test_the_stroke_distance_looks_only_in_the_strokes_box_and_blocks_stay_close(monkeypatch):
    """The far-strokes distance is exact across sections, and pools large boxes in-plane: same verdicts, and a
    distance within a block of the exact one."""
    spacing = (0.02, 0.01, 0.01)
    s = np.zeros((9, 300, 320), np.uint8)
    s[3, 100:103, 100:140] = 1
    s[6, 180:183, 30:260] = 2  # nearest heart voxel: 78 rows and 3 sections away
    exact = float(np.hypot(78 * 0.01, 3 * 0.02))
    sections = np.arange(9)  # every section passed, stroked or not
    heart, background = s == 1, s == 2
    assert stroke_warnings._nearest_distance(heart, background, sections, spacing) == pytest.approx(exact, abs=1e-6)
    s[8, 0, 0] = 1  # a heart stroke further away changes nothing
    assert stroke_warnings._nearest_distance(s == 1, background, sections, spacing) == pytest.approx(exact, abs=1e-6)
    s[8, 0, 0] = 0
    monkeypatch.setattr(stroke_warnings, "WARNING_DISTANCE_PIXELS", 2000)  # blocks of 7 x 7 pixels here
    pooled = stroke_warnings._nearest_distance(heart, background, sections, spacing)
    assert pooled != pytest.approx(exact, abs=1e-6) and abs(pooled - exact) <= 7 * 0.01 * np.sqrt(2)
    assert any("far from the heart strokes" in w for w in pipeline.scribble_warnings(s, spacing))
    s[6, 104, 100:140] = 2
    assert not any("far from" in w for w in pipeline.scribble_warnings(s, spacing))

def test_network_scale_resamples_only_stacks_with_a_known_nearby_pixel_size():
    model = dataclasses.make_dataclass("M", [("voxel_size", tuple)])((0.02, 0.02, 0.04))
    warnings = []
    assert pipeline.network_scale((0.0154, 0.0154), model, warnings) == pytest.approx((0.77, 0.77))
    assert pipeline.network_scale((0.0201, 0.0199), model, warnings) == (1.0, 1.0) and warnings == []
    assert pipeline.network_scale(None, model, warnings) == (1.0, 1.0)
    assert pipeline.network_scale((0.5, 0.5), model, warnings) == (1.0, 1.0)
    # 1 mm per pixel is what a file states when it stores no pixel size (a PNG tile): not known either, nor
    # 2 mm, the same tile read with downsample 2.
    assert pipeline.network_scale((1.0, 1.0), model, warnings) == (1.0, 1.0)
    assert pipeline.network_scale((2.0, 2.0), model, warnings) == (1.0, 1.0)
    # 0.5 mm is asked about as micrometres (a 20x scan's pixel) and is far from the model's.
    assert len(warnings) == 5 and "no pixel size" in warnings[0] and "given in micrometres" in warnings[1]
    assert "far from the model's" in warnings[2] and warnings[3] == warnings[0]
    # 2 mm may as well be 2 um typed as 2: both are named, not "no pixel size".
    assert "pixel size 2 mm is what a file that states none gives when read with downsample 2" in warnings[4]
    assert "(2 um is 0.002 mm)" in warnings[4]
    # Long pixels: sections held along another axis of the file, or a spacing typed Z Y X.
    warnings.clear()
    assert pipeline.network_scale((0.048, 0.024), model, warnings) == pytest.approx((1.2, 2.4))
    assert warnings == ["the sections' pixels are not square (0.048 x 0.024 mm): does the file hold its sections "
                        "along another axis, or was the spacing given in another order than X Y Z?"]
    # A scan 5 times finer than the model is shrunk to its scale (at its own, the network scored 0.44-0.47 where
    # shrunk it scored 0.89-0.91); one over 16 times finer is not, and the warning says which downsample would
    # bring it near the model's scale (none for one coarser: reading it finer would not).
    warnings.clear()
    assert pipeline.network_scale((0.004, 0.004), model, warnings) == pytest.approx((0.2, 0.2)) and not warnings
    assert pipeline.network_scale((0.001, 0.001), model, warnings) == (1.0, 1.0)
    assert len(warnings) == 1 and "far from the model's" in warnings[0] and "(downsample 20)" in warnings[0]
    warnings.clear()
    assert pipeline.network_scale((0.1, 0.1), model, warnings) == (1.0, 1.0)
    assert len(warnings) == 1 and "far from the model's" in warnings[0] and "downsample" not in warnings[0]
    # ... unless the sections would then be too small for the network's patch: a 40x tile was told to become 14
    # pixels wide.
    with_patch = types.SimpleNamespace(voxel_size=model.voxel_size, config=types.SimpleNamespace(patch=64))
    warnings.clear()
    assert pipeline.network_scale((0.001, 0.001), with_patch, warnings, (1000, 1200)) == (1.0, 1.0)
    assert "(downsample 20)" in warnings[0]
    assert pipeline.network_scale((0.001, 0.001), with_patch, warnings, (500, 600)) == (1.0, 1.0)
    assert "downsample" not in warnings[1] and "its sections would be 30x25 pixels, too few" in warnings[1]
    # Each axis at its own scale: a spacing typed wrong on one axis shrinks that one only (was "0x0").
    warnings.clear()
    assert pipeline.network_scale((1e-5, 0.0343), with_patch, warnings, (112, 112)) == (1.0, 1.0)
    assert "its sections would be 0x192 pixels, too few" in warnings[-1]
    # A spacing of a billionth of a millimetre is far from any model's, not a division by zero.
    warnings.clear()
    assert pipeline.network_scale((1e-9, 1e-9), with_patch, warnings, (112, 112)) == (1.0, 1.0)
    assert len(warnings) == 1 and "far from the model's" in warnings[0]



def test_a_pixel_size_that_is_a_print_density_is_named_so(tmp_path, capsys):
    # A PNG saved at 96 dpi states 0.26458 mm pixels (whole pixels per metre), which ITK reads as the tile's pixel
    # size: the warning says what it is and which flag gives the scan's.
    import SimpleITK as sitk

    from ScribbleSegLib import cli, phantom

    vol = phantom.make_phantom(0, phantom.PhantomConfig(shape=(4, 48, 48)))
    tile = sitk.GetImageFromArray(vol.image.array[0], isVector=True)
    tile.SetSpacing((25.4 / 96, 25.4 / 96))
    sitk.WriteImage(tile, str(tmp_path / "tile.png"))
    model = dataclasses.make_dataclass("M", [("voxel_size", tuple)])((0.02, 0.02, 0.04))
    warnings = []
    assert pipeline.network_scale(sitk.ReadImage(str(tmp_path / "tile.png")).GetSpacing(), model, warnings) == (1, 1)
    assert len(warnings) == 1 and "it is 96 dots per inch" in warnings[0]
    assert cli.main(["segment", "--image", str(tmp_path / "tile.png"), "--model", "starter", "--method", "munet",
                     "--out", str(tmp_path / "o.png"), "--no-cache", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "96 dots per inch" in err and "(--spacing)" in err

def test_rescaled_inference_runs_the_network_at_the_model_scale_and_returns_the_stack_grid():
    import torch

    from ScribbleSegLib.model_file import SegModel
    from ScribbleSegLib.nets import ModelConfig, build_net

    torch.manual_seed(0)
    config = ModelConfig(patch=16, width=4, depth=2, aggregator=(8,), feature_channels=8)
    model = SegModel(config=config, net=build_net(config).eval(), stain=None, voxel_size=(0.02, 0.02, 0.04),
                     bank_features=np.zeros((0, 8), np.float32), bank_labels=np.zeros(0, np.uint8),
                     device=torch.device("cpu"))
    image = np.random.default_rng(1).integers(0, 256, (2, 40, 52, 3), dtype=np.uint8)
    prob, feats = inference.predict_volume(model, image, scale=(0.5, 0.5))
    assert prob.shape == (2, 40, 52) and feats.shape == (2, 40, 52, 8)
    small = torch.nn.functional.interpolate(torch.from_numpy(image[0]).permute(2, 0, 1)[None].float(),
                                            size=(20, 26), mode="bilinear", align_corners=False, antialias=True)
    small = small.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    p_small, _ = inference.predict_volume(model, small[None])
    back = torch.nn.functional.interpolate(torch.from_numpy(p_small)[None], size=(40, 52), mode="bilinear",
                                           align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(prob[0], back, atol=1e-5)
    # The band-wise resize used for huge sections gives the same features as the whole-section one.
    part = inference._resize_rows(torch.from_numpy(feats[0][::2, ::2].astype(np.float32)).permute(2, 0, 1)[None],
                                  0, 20, 40, 5, 17, 52)
    whole = inference._resize(torch.from_numpy(feats[0][::2, ::2].astype(np.float32)).permute(2, 0, 1)[None],
                              (40, 52))[0, :, 5:17]
    np.testing.assert_allclose(part.numpy(), whole.numpy(), atol=1e-4)
    with pytest.raises(ScribbleSegError, match="scale"):
        inference.predict_volume(model, image, scale=(0.0, 1.0))


def test_log_data_term_keeps_h_order_and_half_and_clips():
    h = np.array([0.0, 0.01, 0.3, 0.5, 0.7, 0.99, 1.0], np.float32)
    t = graphcut.log_data_term(h)
    assert np.all(np.diff(t) >= 0) and t[3] == pytest.approx(0.5)
    assert t[0] == 0.0 and t[-1] == pytest.approx(1.0)
    # The cost difference of the two labels is the clipped log-likelihood ratio (scaled).
    assert 1 - 2 * t[4] == pytest.approx(-np.log(0.7 / 0.3) / graphcut.LOGIT_CLIP, rel=1e-5)
    with pytest.raises(ScribbleSegError, match="data_term"):
        graphcut.GraphCutParams(data_term="quadratic")


def test_log_data_term_equals_its_formula_in_double_precision():
    h = np.concatenate([np.linspace(0, 1, 100001), np.geomspace(1e-9, 1e-2, 2000), 1 - np.geomspace(1e-7, 1e-2, 2000)])
    clip = graphcut.LOGIT_CLIP
    p = np.clip(h, 1 / (1 + np.exp(clip)), 1 - 1 / (1 + np.exp(clip)))
    expected = 0.5 + np.clip(np.log(p) - np.log1p(-p), -clip, clip) / (2 * clip)
    np.testing.assert_allclose(graphcut.log_data_term(h.astype(np.float32)), expected, atol=1e-6)


def test_the_log_term_cut_is_the_exact_minimum_of_its_energy():
    from itertools import product

    rng = np.random.default_rng(4)
    shape = (2, 2, 3)
    h = rng.random(shape).astype(np.float32)
    image = rng.integers(0, 256, shape + (3,)).astype(np.uint8)
    seeds = np.zeros(shape, np.uint8)
    seeds[0, 0, 0], seeds[1, 1, 2] = 1, 2
    params = graphcut.GraphCutParams(**graphcut.AS_GIVEN, gamma=0.6, sigma=0.3, delta=0.1, data_term="log")
    best = min(graphcut.energy(np.array(bits, np.uint8).reshape(shape), h, image, seeds, params=params)
               for bits in product((0, 1), repeat=h.size))
    labels = graphcut.graph_cut(h, image, seeds, params=params, mode="full")
    assert graphcut.energy(labels, h, image, seeds, params=params) == pytest.approx(best, abs=1e-5)
    # It is the linear term's energy with h replaced by log_data_term(h).
    linear = dataclasses.replace(params, data_term="linear")
    assert graphcut.energy(labels, h, image, seeds, params=params) == pytest.approx(
        graphcut.energy(labels, graphcut.log_data_term(h), image, seeds, params=linear), abs=1e-6)


def test_network_weight_blends_the_network_probability_into_h():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(2, 12, 12, 6)).astype(np.float16)
    s = np.zeros((2, 12, 12), np.uint8)
    s[0, :3], s[1, -3:] = 1, 2
    network = rng.random((2, 12, 12)).astype(np.float32)
    cfg = ddml.DDMLConfig(steps=5, head_steps=5, pool_size=64, batch_size=16, network_weight=0.0)
    alone = ddml.adapt(feats, s, None, None, cfg).h
    blended = ddml.adapt(feats, s, None, None, dataclasses.replace(cfg, network_weight=0.25),
                         network_probability=network).h
    np.testing.assert_allclose(blended, 0.75 * alone + 0.25 * network, atol=1e-6)
    np.testing.assert_array_equal(ddml.adapt(feats, s, None, None, dataclasses.replace(cfg, network_weight=0.25)).h,
                                  alone)  # without the network's probability: DDML + head alone
    with pytest.raises(ScribbleSegError, match="network_probability has shape"):
        ddml.adapt(feats, s, None, None, dataclasses.replace(cfg, network_weight=0.25),
                   network_probability=network[:1])
    with pytest.raises(ScribbleSegError, match="network_weight"):
        ddml.DDMLConfig(network_weight=1.5)
    assert ddml.DDMLConfig.paper().network_weight == 0.0 and ddml.DDMLConfig.paper().scribble_share == 0.05
    assert ddml.DDMLConfig.paper().bank_doubt is None and ddml.DDMLConfig(bank_doubt=None).bank_doubt is None
    for bad in (1.5, -0.1, "half"):
        with pytest.raises(ScribbleSegError, match="bank_doubt"):
            ddml.DDMLConfig(bank_doubt=bad)


def test_phantom_families_differ_in_stain_scale_and_artefacts():
    a = phantom.make_phantom(seed=3, config=phantom.family_config("a", (16, 64, 64)))
    b = phantom.make_phantom(seed=3, config=phantom.family_config("b", (16, 64, 64)))
    assert b.label.mean() > 1.5 * a.label.mean(), "family b shows the heart bigger in pixels"
    assert b.image.geometry.spacing[0] < a.image.geometry.spacing[0], "with finer pixels"
    tissue_a, tissue_b = a.tissue > 0, b.tissue > 0
    assert abs(a.image.array[tissue_a].mean(0) - b.image.array[tissue_b].mean(0)).max() > 8, "another stain"
    assert b.info["bubbles"] and b.info["debris"] and len(b.info["tears"]) > len(a.info["tears"])
    with pytest.raises(ScribbleSegError, match="family"):
        phantom.family_config("c")


def test_rounds_run_and_report_on_a_tiny_case(monkeypatch):
    from ScribbleSegLib.nets import ModelConfig
    from ScribbleSegLib.training import train_model

    cfg = phantom.PhantomConfig(shape=(12, 48, 48))
    train, test = phantom.make_phantom(seed=1, config=cfg), phantom.make_phantom(seed=2, config=cfg)
    import tempfile
    from pathlib import Path

    from ScribbleSegLib.model_file import load_model

    with tempfile.TemporaryDirectory() as folder:
        path = train_model([train.image], [train.label], Path(folder) / "tiny.model",
                           ModelConfig(patch=16, width=4, depth=2, aggregator=(8,), feature_channels=8),
                           max_iters=20, seed=0)
        model = load_model(path, device="cpu")
    outputs = protocol.compute_outputs(test.image.array, model, None)
    start = scribbles.simulate_scribbles(test.label, seed=0, every=4)
    fast = dataclasses.replace(ddml.DDMLConfig(), steps=20, head_steps=20, pool_size=500, batch_size=32)
    runs = protocol.run_rounds(test.image, test.label, start, model, outputs.munet, rounds=3, ddml_config=fast)
    assert len(runs) == 3
    assert runs[2].scribbled_voxels > runs[1].scribbled_voxels > runs[0].scribbled_voxels, "strokes were added"
    assert all(0 <= r.final["iou"] <= 1 and len(r.suggested) <= protocol.CORRECTED_SECTIONS for r in runs)
    table = protocol.rounds_table({"tiny": [runs]})
    assert table.count("| tiny |") == 3
    # Warm: every round's cut and DDML network are handed the memory of the rounds before (one CutMemory, one
    # AdaptMemory), as a session does.
    from ScribbleSegLib import graphcut, pipeline

    memories, adapt_memories, started_from = [], [], []
    real = pipeline.segment

    def recording(*args, **kwargs):
        memories.append(kwargs.get("cut_memory"))
        adapt_memories.append(kwargs.get("adapt_memory"))
        started_from.append(adapt_memories[-1].f)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "segment", recording)
    warm = protocol.run_rounds(test.image, test.label, start, model, outputs.munet, rounds=3, ddml_config=fast,
                               warm=True)
    assert isinstance(memories[0], graphcut.CutMemory) and all(m is memories[0] for m in memories)
    assert memories[0].labels is not None and len(warm) == 3
    assert warm[0].final == runs[0].final  # the first round has nothing to start from: the same cut
    assert isinstance(adapt_memories[0], ddml.AdaptMemory) and all(m is adapt_memories[0] for m in adapt_memories)
    assert started_from[0] is None and started_from[1] is not None and started_from[2] is not started_from[1]


def test_the_phantom_families_are_the_ones_the_choices_name():
    from ScribbleSegLib import choices

    assert tuple(phantom.FAMILIES) == choices.PHANTOM_FAMILIES
    assert choices.DEFAULT_PHANTOM_FAMILY in phantom.FAMILIES


def test_the_bench_picks_over_the_rounds_and_skips_settings_that_drop():
    from ScribbleSegLib.commands.bench import pick_over_rounds

    rounds = {"high but drops": {"iou": 0.93, "largest_drop": 0.02}, "steady": {"iou": 0.90, "largest_drop": 0.01},
              "steady, lower": {"iou": 0.89, "largest_drop": -0.01}}
    assert pick_over_rounds(rounds) == "steady"
    del rounds["steady"], rounds["steady, lower"]
    rounds["drops more"] = {"iou": 0.95, "largest_drop": 0.05}
    assert pick_over_rounds(rounds) == "high but drops", "when every candidate drops, the smallest drop wins"


def test_the_bench_rules_out_a_reach_across_sections_with_which_any_candidate_dropped():
    from ScribbleSegLib.commands.bench import _across, pick_over_rounds

    def key(gamma, reach, across):
        return ("{}", gamma, "log", 10, reach, across)

    rounds = {key(8, 4, 1.0): {"iou": 0.872, "largest_drop": -0.001},
              key(16, 4, 1.0): {"iou": 0.867, "largest_drop": 0.016},
              key(8, 4, 0.5): {"iou": 0.871, "largest_drop": -0.003},
              key(16, 4, 0.5): {"iou": 0.868, "largest_drop": 0.002}}
    assert pick_over_rounds(rounds) == key(8, 4, 1.0), "without the rule: the best steady candidate"
    assert pick_over_rounds(rounds, shared=_across) == key(8, 4, 0.5), "gamma 16 dropped with across 1"
    # Without a pull the reach across sections does nothing, so such a candidate is neither ruled out by
    # nor rules out the value its key carries.
    rounds[key(8, 0, 1.0)] = {"iou": 0.875, "largest_drop": 0.0}
    assert pick_over_rounds(rounds, shared=_across) == key(8, 0, 1.0)
    rounds[key(8, 0, 1.0)]["largest_drop"] = 0.02
    rounds[key(16, 4, 1.0)]["largest_drop"] = 0.0
    assert pick_over_rounds(rounds, shared=_across) == key(8, 4, 1.0)
    # If every steady candidate shares a risky value, the rule gives way to the plain one.
    only = {key(8, 4, 1.0): {"iou": 0.87, "largest_drop": 0.0}, key(16, 4, 1.0): {"iou": 0.88, "largest_drop": 0.02}}
    assert pick_over_rounds(only, shared=_across) == key(8, 4, 1.0)


def test_the_bench_keeps_the_library_defaults_unless_a_candidate_wins_by_the_margin():
    from ScribbleSegLib.commands.bench import _across, pick_over_rounds

    def key(gamma, across):
        return ("{}", gamma, "log", 10, 4.0, across)

    own = key(8, 0.5)
    rounds = {own: {"iou": 0.870, "largest_drop": 0.0}, key(16, 0.5): {"iou": 0.874, "largest_drop": 0.0}}
    assert pick_over_rounds(rounds, shared=_across) == key(16, 0.5), "without keep: the best"
    assert pick_over_rounds(rounds, shared=_across, keep=own, margin=0.005) == own, "0.004 is within the margin"
    rounds[key(16, 0.5)]["iou"] = 0.876
    assert pick_over_rounds(rounds, shared=_across, keep=own, margin=0.005) == key(16, 0.5), "0.006 beats it"
    # Defaults that fell by more than the tolerance, or share a reach across sections with which a candidate
    # fell, are not kept.
    rounds[key(16, 0.5)]["iou"] = 0.872
    rounds[own]["largest_drop"] = 0.02
    assert pick_over_rounds(rounds, shared=_across, keep=own, margin=0.005) == key(16, 0.5)
    rounds[own]["largest_drop"] = 0.0
    rounds[key(16, 1.0)] = {"iou": 0.860, "largest_drop": 0.0}
    rounds[key(12, 0.5)] = {"iou": 0.850, "largest_drop": 0.03}
    assert pick_over_rounds(rounds, shared=_across, keep=own, margin=0.005) == key(16, 1.0)


def test_the_bench_runs_the_library_defaults_over_the_rounds():
    from ScribbleSegLib.commands import bench
    from ScribbleSegLib.ddml import DDMLConfig
    from ScribbleSegLib.graphcut import GraphCutParams

    key = bench.defaults_key()
    assert key is not None, "the library's defaults must be among the settings the bench judges"
    assert json.loads(key[0]) in bench.DDML_VARIANTS and key[1:4] in bench.CUT_GRID
    assert bench._cut_of(key) == GraphCutParams()
    assert dataclasses.replace(DDMLConfig(), **json.loads(key[0])) == DDMLConfig()


def test_the_bench_chooses_its_settings_over_the_rounds_on_a_tiny_case(monkeypatch):
    from ScribbleSegLib.commands import bench
    from ScribbleSegLib.nets import ModelConfig
    from ScribbleSegLib.training import train_model

    cfg = phantom.PhantomConfig(shape=(12, 48, 48))
    volumes = [phantom.make_phantom(seed=s, config=cfg) for s in (1, 2, 3)]
    import tempfile
    from pathlib import Path

    from ScribbleSegLib.model_file import load_model

    with tempfile.TemporaryDirectory() as folder:
        path = train_model([volumes[0].image], [volumes[0].label], Path(folder) / "tiny.model",
                           ModelConfig(patch=16, width=4, depth=2, aggregator=(8,), feature_channels=8),
                           max_iters=20, seed=0)
        models = {"a": {"munet": load_model(path, device="cpu")}}
    # One model, an "in-family" and a "cross-family" volume; small DDML and grids keep it quick.
    vols = {"a": {2: volumes[1]}, "b": {2: volumes[2]}}
    outputs = {("a", o, 2): protocol.compute_outputs(vols[o][2].image.array, models["a"]["munet"], None)
               for o in ("a", "b")}
    val = [("a", o, 2, scribbles.simulate_scribbles(vols[o][2].label, seed=0, every=4)) for o in ("a", "b")]
    monkeypatch.setattr(bench, "DDML_VARIANTS", ({"steps": 20, "head_steps": 20, "pool_size": 500, "batch_size": 32},))
    monkeypatch.setattr(bench, "CUT_GRID", ((8.0, "linear", 6), (8.0, "log", 10)))
    monkeypatch.setattr(bench, "SEED_REACHES", (0.0, 2.0))
    monkeypatch.setattr(bench, "SEED_ACROSSES", (1.0, 0.0))
    monkeypatch.setattr(bench, "ROUND_CANDIDATES", 3)  # of 4, so at least one with a pull
    own = (json.dumps(bench.DDML_VARIANTS[0]), 8.0, "linear", 6, 2.0, 0.0)  # stands in for the library's defaults
    monkeypatch.setattr(bench, "defaults_key", lambda: own)
    selection = bench._choose_settings(vols, models, outputs, val, 0, lambda message: None)
    assert len(selection.scores) == 4 and all(k[5] == 1.0 for k in selection.scores), "round 1: the first across"
    ranked = sorted(selection.scores, key=lambda k: -selection.scores[k][0])[:3]
    # The best of round 1 go on to the rounds, those with a pull also with the other reach across sections,
    # and the library's defaults always.
    expected = set(ranked) | {k[:5] + (0.0,) for k in ranked if k[4] > 0} | {own}
    assert set(selection.rounds) == expected and len(expected) > 3
    assert selection.defaults == own
    assert selection.key == bench.pick_over_rounds(selection.rounds, shared=bench._across, keep=own,
                                                   margin=bench.DEFAULTS_MARGIN)
    assert (selection.cut.gamma, selection.cut.data_term, selection.cut.neighbourhood,
            selection.cut.seed_reach, selection.cut.seed_across) == selection.key[1:]
    assert selection.ddml.steps == 20
    assert selection.paper_key[2:] == ("linear", 6, 0.0, 1.0), "the paper's method has no pull"
    for key, r in selection.rounds.items():
        assert len(r["per_round"]) == protocol.ROUNDS and 0 <= r["iou"] <= 1
        assert abs(r["per_round"][0] - r["round_1"][0]) < 1e-9
        if key in selection.scores:
            assert abs(r["per_round"][0] - selection.scores[key][0]) < 1e-6, "round 1 is the run that was ranked"
        assert abs(r["iou"] - np.mean(r["per_round"])) < 1e-9


def test_the_networks_agreement_with_the_strokes_moves_the_doubts_interval_up(monkeypatch):
    # Corrective strokes raise the doubt of a network trained for the target as much as strokes on another target
    # do; how far the network's labels agree with the strokes' own adaptation over the whole image tells them apart.
    run = _doubted_run()
    seen = []
    measure = pipeline.network_agreement
    monkeypatch.setattr(pipeline, "network_agreement", lambda *a: seen.append(measure(*a)) or seen[-1])

    kept = run(bank_doubt=None).probability
    without = run(bank_doubt=0.5, bank_doubt_full=0.5, bank_agreement=None).probability
    assert np.abs(kept - without).max() > 0.05 and not seen  # outside the interval nothing is measured
    result = run(bank_agreement=(1.0, 1.0))  # no agreement reaches 1: the interval as it is (0.5 to 0.7)
    agreement = seen[-1]
    assert 0.0 < agreement < 1.0
    np.testing.assert_allclose(result.probability, 0.5 * kept + 0.5 * without, atol=1e-5)
    assert "left out of 50% of the adaptation" in result.warnings[-1]
    result = run(bank_agreement=(0.0, 0.0))  # any agreement: the interval moves up by 0.2, to 0.7 to 0.9
    np.testing.assert_array_equal(result.probability, kept)
    assert "left out" not in result.warnings[-1]
    result = run(bank_agreement=(0.0, 0.0), bank_agreement_shift=0.05)  # to 0.55 to 0.75
    np.testing.assert_allclose(result.probability, 0.75 * kept + 0.25 * without, atol=1e-5)
    # Half way from the first value to the second: half the shift (0.6 to 0.8, the doubt at its start).
    result = run(bank_agreement=(agreement / 2, agreement * 1.5))
    np.testing.assert_allclose(result.probability, kept, atol=1e-5)
    result = run(bank_agreement=(agreement / 2, agreement * 1.5), bank_doubt_full=0.6)  # 0.6 to 0.7
    np.testing.assert_array_equal(result.probability, kept)
    result = run(bank_doubt=0.3, bank_doubt_full=0.5)  # past the end (the agreement here is too low to move it)
    np.testing.assert_array_equal(result.probability, without)
    # h the network's alone: no strokes' labels to read back, the interval as it is (no error).
    result = run(network_weight=1.0, doubted_network_weight=1.0)
    assert "left out of 50% of the adaptation" in result.warnings[-1]
    assert ddml.DDMLConfig().bank_agreement == choices.BANK_AGREEMENT
    assert ddml.DDMLConfig().bank_agreement_shift == choices.BANK_AGREEMENT_SHIFT > 0
    for bad in (-0.1, 1.5, None):
        with pytest.raises(ScribbleSegError, match="bank_agreement_shift"):
            ddml.DDMLConfig(bank_agreement_shift=bad)
    for bad in ((0.4, 0.3), (0.1,), (-0.1, 0.2), (0.2, 1.5), "ab", (True, 0.5)):
        with pytest.raises(ScribbleSegError, match="bank_agreement"):
            ddml.DDMLConfig(bank_agreement=bad)
    assert ddml.DDMLConfig(bank_agreement=[0.1, 0.2]).bank_agreement == (0.1, 0.2)  # as JSON gives it
