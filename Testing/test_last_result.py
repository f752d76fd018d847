"""last_result: a run that leaves the model's bank out keeps the last result of its chain away from its new strokes."""

import copy
import logging

import numpy as np
import pytest

from ScribbleSegLib import choices, pipeline, stroke_history
from ScribbleSegLib.ddml import DDMLConfig
from ScribbleSegLib.errors import ScribbleSegError
from ScribbleSegLib.last_result import ANCHOR_REACHES, anchor_pixels, far_weights, keep_last, new_strokes
from ScribbleSegLib.stroke_history import StrokeHistory
from conftest import doubted_stack, tiny_case

FAST_DDML = DDMLConfig(steps=40, head_steps=40, pool_size=2000, batch_size=64)


def _logit(h):
    h = np.clip(h.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(h) - np.log1p(-h)


def test_keep_last_moves_the_log_odds_by_the_weight_far_from_the_new_strokes_and_not_on_them():
    rng = np.random.default_rng(0)
    h = rng.uniform(0.05, 0.95, (3, 20, 60)).astype(np.float32)
    last = (rng.uniform(size=h.shape) > 0.5).astype(np.uint8)
    new = np.zeros(h.shape, bool)
    new[1, 10, 5] = True
    moved = h.copy()
    keep_last(moved, last, new, (1.0, 1.0, 1.0), 0.5, 4.0)
    shift = (_logit(moved) - _logit(h)) * np.where(last > 0, 1, -1)  # towards the last label: positive
    assert shift.min() >= -1e-4 and shift.max() <= 0.5 + 1e-4
    assert abs(shift[1, 10, 5]) < 1e-4, "on the new stroke the adaptation's own h"
    assert shift[1, 10, 59] == pytest.approx(0.5, abs=1e-3), "far from it the whole weight"
    row = shift[1, 10, 5:40]
    assert (np.diff(row) >= -1e-4).all(), "the pull grows with the distance"
    assert row[4] == pytest.approx(0.5 * (1 - np.exp(-1)), abs=1e-3), "63 % of it at one reach"
    # Thick sections: the next section lies 4 pixels away, not 1.
    thick = h.copy()
    keep_last(thick, last, new, (4.0, 1.0, 1.0), 0.5, 4.0)
    pull = (_logit(thick) - _logit(h)) * np.where(last > 0, 1, -1)
    assert pull[0, 10, 5] == pytest.approx(0.5 * (1 - np.exp(-1)), abs=1e-3)
    assert shift[0, 10, 5] == pytest.approx(0.5 * (1 - np.exp(-0.25)), abs=1e-3)
    same = h.copy()
    keep_last(same, last, new, (1.0, 1.0, 1.0), 0.0, 4.0)
    assert np.array_equal(same, h), "no weight, no change"
    everywhere = h.copy()
    keep_last(everywhere, last, np.zeros_like(new), (1.0, 1.0, 1.0), 0.5, 4.0)  # the same strokes again
    full = (_logit(everywhere) - _logit(h)) * np.where(last > 0, 1, -1)
    assert np.allclose(full, 0.5, atol=1e-3)


def test_the_weights_box_holds_every_voxel_closer_than_five_reaches():
    new = np.zeros((5, 50, 50), bool)
    new[2, 25, 25] = True
    box, w = far_weights(new, (2.0, 1.0, 1.0), 3.0)
    assert w.shape == tuple(s.stop - s.start for s in box)
    assert box[1] == slice(10, 41) and box[0] == slice(0, 5), "15 pixels in-plane, 8 sections: clipped"
    assert w.max() < 1.0 and 1 - w.max() < 0.01


def test_new_strokes_are_those_the_last_run_did_not_have():
    last = np.zeros((2, 3, 3), np.uint8)
    last[0, 1, :] = 1
    now = last.copy()
    now[1, 2, 2] = 2
    run = stroke_history.StrokeRun.of(last, (0.9, 0.0))
    assert np.argwhere(new_strokes(now, run.voxels)).tolist() == [[1, 2, 2]]


def test_a_history_file_keeps_each_runs_result_and_reads_a_file_written_before_results_were_kept(tmp_path, caplog):
    path = tmp_path / stroke_history.HISTORY_FILE
    first = np.zeros((2, 5, 7), np.uint8)
    first[0, 1, 1:4] = 1
    first[1, 4, 2:6] = 2
    labels = np.zeros(first.shape, np.uint8)
    labels[0, :3, :4] = 1
    StrokeHistory(path).remember(first, (0.9, 0.1), labels=labels)
    more = first.copy()
    more[1, 0, 0] = 2
    last = StrokeHistory(path).last_result(more)
    assert last is not None and np.array_equal(last.result(), labels), "another process reads it back"
    assert StrokeHistory(path).last_result(np.zeros_like(first)) is None, "strokes that do not hold the run's"
    # A run remembered without labels (one that kept the bank) is no last result.
    StrokeHistory(path).remember(more, (0.2, 0.1))
    assert StrokeHistory(path).last_result(more) is None
    # A file of the version before: no label arrays; its runs still carry their doubt.
    stored = dict(np.load(path))
    del stored["labels"], stored["label_sizes"]
    with open(path, "wb") as handle:
        np.savez(handle, **stored)
    assert StrokeHistory(path).carried(more, (0.0, 0.0)) == (0.2, 0.1)
    assert StrokeHistory(path).last_result(more) is None
    # Labels of another size than their volume: the file is not what remember writes, and is dropped.
    StrokeHistory(path).remember(first, (0.9, 0.1), labels=labels)
    stored = dict(np.load(path))
    stored["labels"], stored["label_sizes"] = stored["labels"][:-1], stored["label_sizes"] - 1
    with open(path, "wb") as handle:
        np.savez(handle, **stored)
    with caplog.at_level(logging.WARNING):
        assert StrokeHistory(path).runs() == []
    assert "not usable" in caplog.text and not path.exists()


def test_keep_last_settings_are_checked():
    assert DDMLConfig().keep_last == choices.KEEP_LAST and DDMLConfig().keep_last_reach == choices.KEEP_LAST_REACH
    assert DDMLConfig().keep_last_pixels == choices.KEEP_LAST_PIXELS
    for bad in ({"keep_last": -0.1}, {"keep_last": float("nan")}, {"keep_last_reach": 0.0},
                {"keep_last_reach": "10"}, {"keep_last_pixels": 1.0}, {"keep_last_pixels": -0.5},
                {"keep_last_pixels": float("nan")}):
        with pytest.raises(ScribbleSegError, match="keep_last"):
            DDMLConfig(**bad)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("last")
    return tiny_case(folder, (6, 40, 40), max_iters=20)


def _contradicting(probability: np.ndarray):
    """Strokes the network contradicts (heart strokes where it says background and the other way), then the same
    with a few more: a chain of two rounds whose bank is left out."""
    heart, background = np.argwhere(probability > 0.6), np.argwhere(probability < 0.4)
    first = np.zeros(probability.shape, np.uint8)
    for z, y, x in heart[:20]:
        first[z, y, x] = 2
    for z, y, x in background[:20]:
        first[z, y, x] = 1
    more = first.copy()
    for z, y, x in heart[-5:]:
        more[z, y, x] = 2
    return first, more


def test_a_run_that_leaves_the_bank_out_keeps_the_last_result_away_from_its_new_strokes(case):
    test, model = case
    network = pipeline.segment(test.image, None, model, method="munet").probability
    first, more = _contradicting(network)
    assert min(pipeline.network_doubt(first, network)) > 0.9
    history = StrokeHistory()
    one = pipeline.segment(test.image, first, model, method="ddml", ddml_config=FAST_DDML, history=history)
    last = history.last_result(more)
    assert last is not None and np.array_equal(last.result(), one.labels), "the run's labels are kept"
    without = pipeline.segment(test.image, more, model, method="ddml", history=copy.deepcopy(history),
                               ddml_config=DDMLConfig(**{**FAST_DDML.__dict__, "keep_last": 0.0}))
    pull_only = DDMLConfig(**{**FAST_DDML.__dict__, "keep_last_pixels": 0.0})  # the pull alone: not trained on it
    kept = pipeline.segment(test.image, more, model, method="ddml", ddml_config=pull_only,
                            history=copy.deepcopy(history))
    towards = (_logit(kept.probability) - _logit(without.probability)) * np.where(one.labels > 0, 1, -1)
    new = new_strokes(more, last.voxels)
    assert towards.min() > -1e-3, "never away from the last result"
    assert towards.max() == pytest.approx(FAST_DDML.keep_last, abs=0.02), "the bank was all left out: share 1"
    assert towards[new].max() < 1e-3, "the new strokes' voxels as the adaptation has them"
    # The same strokes again (another method, other settings): nothing new to keep the rest away from.
    again = pipeline.segment(test.image, first, model, method="ddml", ddml_config=FAST_DDML,
                             history=copy.deepcopy(history))
    assert np.allclose(again.probability, one.probability, atol=1e-5)
    # Without a history (no cache, no session) nothing is kept: the same h as with the weight 0.
    alone = pipeline.segment(test.image, more, model, method="ddml", ddml_config=FAST_DDML)
    assert np.allclose(alone.probability, without.probability, atol=1e-5)


def test_a_run_that_keeps_the_bank_keeps_no_result(case):
    test, model = case
    network = pipeline.segment(test.image, None, model, method="munet").probability
    agreeing = np.zeros(network.shape, np.uint8)
    for z, y, x in np.argwhere(network > 0.6)[:20]:
        agreeing[z, y, x] = 1
    for z, y, x in np.argwhere(network < 0.4)[:20]:
        agreeing[z, y, x] = 2
    history = StrokeHistory()
    pipeline.segment(test.image, agreeing, model, method="ddml", ddml_config=FAST_DDML, history=history)
    assert len(history.runs()) == 1 and history.runs()[0].labels is None


def test_a_session_keeps_its_last_result_until_undo_forgets_it(case):
    from ScribbleSegLib.session import Session

    test, model = case
    session = Session(test.image, model)
    first, more = _contradicting(session.probability)
    session.run(first, method="ddml", ddml_config=FAST_DDML)
    assert session.history.last_result(more) is not None
    session.forget_runs()  # "Undo last run": the result the user sees is no longer that run's
    assert session.history.last_result(more) is None
    assert session.history.carried(more, (0.0, 0.0)) != (0.0, 0.0), "the doubt stays with the strokes"



def test_a_job_told_to_forget_drops_the_results_kept_in_its_cache_entry(case, tmp_path):
    # Slicer's one-shot worker (where the warm one cannot start) after "Undo last run": the cache entry's history
    # kept the undone run's result, and the next run held it away from its new strokes.
    import SimpleITK as sitk

    from ScribbleSegLib import jobs, volume_io

    test, model = case
    image = tmp_path / "image.nrrd"
    volume_io.write_rgb_volume(image, test.image)
    network = pipeline.segment(test.image, None, model, method="munet").probability
    first, more = _contradicting(network)
    for name, array in (("first", first), ("more", more)):
        volume_io.write_labelmap(tmp_path / f"{name}.nrrd", array, test.image.geometry)

    def run(strokes, forget=False, cache="cache"):
        out = tmp_path / f"{strokes}-{forget}-{cache}"
        job = jobs.SegmentFiles(image=str(image), model=str(model), labels=str(out) + ".nrrd",
                                probability=str(out) + "-h.nrrd", scribbles=str(tmp_path / f"{strokes}.nrrd"),
                                method="ddml", cache_dir=str(tmp_path / cache), ddml=dict(FAST_DDML.__dict__),
                                forget=forget)
        jobs.segment_files(job)
        return sitk.GetArrayFromImage(sitk.ReadImage(str(out) + "-h.nrrd"))

    run("first")
    entry, = [p.parent for p in (tmp_path / "cache").rglob(stroke_history.HISTORY_FILE)]
    assert StrokeHistory(entry / stroke_history.HISTORY_FILE).last_result(more) is not None
    afresh = run("more", cache="other")  # no history: nothing kept
    assert afresh.dtype == np.float32 and 0 <= afresh.min() < afresh.max() <= 1
    undone = run("more", forget=True)  # the round after an undo: as if the first run's result had not been kept
    assert np.allclose(undone, afresh, atol=1e-3)
    run("first")
    kept = run("more")
    assert np.abs(kept - afresh).max() > 0.01, "without forget the first run's result is kept"
    with pytest.raises(ScribbleSegError, match=r"^forget_results must be True or False, got 'yes'$"):
        pipeline.segment(test.image, first, model, method="ddml", forget_results="yes")


def test_anchor_pixels_come_from_the_last_result_far_from_the_new_strokes_and_off_every_stroke():
    rng = np.random.default_rng(1)
    shape = (3, 30, 80)
    # Each voxel's feature is its own flat index: the drawn voxels can be read back from the features.
    features = np.arange(np.prod(shape), dtype=np.float32).reshape(shape + (1,))
    last = (rng.uniform(size=shape) > 0.7).astype(np.uint8)
    scribbles = np.zeros(shape, np.uint8)
    scribbles[1, 15, 5:10] = 2  # the new strokes
    scribbles[0, 5, 60:70] = 1  # an earlier stroke
    new = new_strokes(scribbles, np.flatnonzero(scribbles == 1))
    x, y = anchor_pixels(features, scribbles, last, new, (1.0, 1.0, 1.0), 3.0, n=500, seed=4)
    drawn = x[:, 0].astype(np.int64)
    assert (y == 1).sum() == 500 and (y == 0).sum() == 500, "n of each class"
    assert np.array_equal(last.reshape(-1)[drawn], y), "labelled as the last result has them"
    assert len(np.unique(drawn)) == drawn.size and not scribbles.reshape(-1)[drawn].any()
    z, yy, xx = np.unravel_index(drawn, shape)
    near = np.sqrt((z - 1.0) ** 2 + (yy - 15.0) ** 2 + np.maximum(0, np.maximum(5 - xx, xx - 9)) ** 2)
    assert near.min() > ANCHOR_REACHES * 3.0 - 1e-6, "none within three reaches of a new stroke"
    again, _ = anchor_pixels(features, scribbles, last, new, (1.0, 1.0, 1.0), 3.0, n=500, seed=4)
    assert np.array_equal(again, x), "the same draw for the same seed"
    few, few_y = anchor_pixels(features, scribbles, np.zeros(shape, np.uint8), new, (1.0, 1.0, 1.0), 3.0, n=50)
    assert few.shape == (50, 1) and not few_y.any(), "a class the last result lacks gives no pixels"


def test_a_strokes_only_run_is_trained_on_the_last_result_too(case, monkeypatch):
    test, model = case
    network = pipeline.segment(test.image, None, model, method="munet").probability
    first, more = _contradicting(network)
    history = StrokeHistory()
    one = pipeline.segment(test.image, first, model, method="ddml", ddml_config=FAST_DDML, history=history)
    from ScribbleSegLib import ddml

    calls = []
    adapt = ddml.adapt

    def spy(features, scribbles, bank_features, bank_labels, **kwargs):
        calls.append((bank_features, bank_labels, kwargs["config"], kwargs["bank_network_logit"]))
        return adapt(features, scribbles, bank_features, bank_labels, **kwargs)

    monkeypatch.setattr(ddml, "adapt", spy)
    pipeline.segment(test.image, more, model, method="ddml", ddml_config=FAST_DDML, history=copy.deepcopy(history))
    (x, y, config, logit), = [call for call in calls if call[2].network_weight == 0]  # the strokes-only one
    assert config.scribble_share == pytest.approx(1 - FAST_DDML.keep_last_pixels) and logit is None
    assert len(x) == len(y) <= 2 * FAST_DDML.pool_size and set(np.unique(y)) == {0, 1} == set(np.unique(one.labels))
    calls.clear()
    pipeline.segment(test.image, more, model, method="ddml", history=copy.deepcopy(history),
                     ddml_config=DDMLConfig(**{**FAST_DDML.__dict__, "keep_last_pixels": 0.0}))
    (_, _, config, _), = [call for call in calls if call[2].network_weight == 0]
    assert config.scribble_share == 1.0, "the strokes alone, as before"
    calls.clear()
    pipeline.segment(test.image, first, model, method="ddml", ddml_config=FAST_DDML, history=copy.deepcopy(history))
    (_, _, config, _), = [call for call in calls if call[2].network_weight == 0]
    assert config.scribble_share == 1.0, "the same strokes again: nothing new, no last result to train on"


def test_within_the_doubts_interval_the_agreement_is_measured_without_the_last_results_pixels(monkeypatch,
                                                                                              adapt_shares):
    # The last result's pixels, which the network helped make, raised the strokes' adaptation's agreement with the
    # network: the share went back to the bank and a corrected gland fell from 0.84 to 0.44.
    image, feats, first, network, model = doubted_stack(40)  # a doubt of 0.6, in the interval
    more = first.copy()
    more[1, 35, 25:35] = 2
    small = dict(steps=5, head_steps=5, pool_size=64, batch_size=16, evaluation="exact", bank_agreement=(1.0, 1.0))
    history = StrokeHistory()
    pipeline.adapt_and_cut(image, (1, 1, 1), first, model, network, feats, method="ddml", suggest=0,
                           ddml_config=DDMLConfig(**small), history=history)
    assert history.last_result(more) is not None
    measured, shares = [], adapt_shares
    adapt_shares.clear()  # the first run's adaptations above are not this test's
    agreement = pipeline.network_agreement
    monkeypatch.setattr(pipeline, "network_agreement", lambda *a: measured.append(agreement(*a)) or measured[-1])
    for pixels in (0.0, 0.5):
        pipeline.adapt_and_cut(image, (1, 1, 1), more, model, network, feats, method="ddml", suggest=0,
                               ddml_config=DDMLConfig(**small, keep_last_pixels=pixels),
                               history=copy.deepcopy(history))
    assert len(measured) == 2 and measured[0] == pytest.approx(measured[1], abs=1e-6)
    assert shares[-1] == 0.5 and shares.count(1.0) == 2, "then the adaptation without the bank on the last result"
