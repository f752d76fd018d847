"""session.Session: a warm volume and model give what pipeline.segment gives, running only adaptation + cut."""

import dataclasses

import numpy as np
import pytest

from ScribbleSegLib import pipeline, scribbles
from ScribbleSegLib.ddml import DDMLConfig
from ScribbleSegLib.errors import ScribbleSegError
from ScribbleSegLib.feature_reader import FeatureReader
from ScribbleSegLib.geometry import Volume
from ScribbleSegLib.session import Session
from conftest import tiny_case

FAST_DDML = DDMLConfig(steps=40, head_steps=40, pool_size=2000, batch_size=64)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("session")
    test, model = tiny_case(folder, (10, 48, 48), max_iters=20)
    scrib = scribbles.simulate_scribbles(test.label, seed=0, every=3)
    return folder, test, scrib, model


def _heart_strokes_on_a_new_section(test, scrib):
    """The strokes plus the whole heart of the first heart section without strokes, and that section."""
    more = scrib.copy()
    empty = [z for z in range(len(scrib)) if not scrib[z].any() and test.label[z].any()][0]
    more[empty][test.label[empty].astype(bool)] = 1
    return more, empty


def test_cached_features_stay_memory_mapped_and_are_read_from_the_file(case):
    """Read-only as they are, the cached features keep their mapping: the feature reader then reads the file,
    and the adaptation's passes do not take the whole feature file into the process's memory."""
    folder, test, _, model = case
    Session(test.image, model, cache_dir=folder / "cache")  # fills the cache
    session = Session(test.image, model, cache_dir=folder / "cache")
    assert session.features_cached
    assert isinstance(session.features, np.memmap) and not session.features.flags.writeable
    reader = FeatureReader(session.features)
    assert reader.path is not None
    rows = reader.rows(3, 5, 9)
    np.testing.assert_array_equal(rows, session.features[3, 5:9])
    assert rows.flags.writeable


def test_a_session_whose_cached_features_turn_out_damaged_computes_them_again(case, tmp_path, caplog):
    """Bytes damaged between the samples of the entry's checksum reach a warm session as values that are not
    numbers: the run removes the entry, computes the features again and gives the result of clean ones."""
    import json

    from ScribbleSegLib import feature_cache

    _, test, scrib, model = case
    clean = Session(test.image, model, cache_dir=tmp_path).run(scrib, ddml_config=FAST_DDML)
    session = Session(test.image, model, cache_dir=tmp_path)
    entry = feature_cache.entry_of(session.features)
    damaged = np.load(entry / "features.npy", mmap_mode="r+")
    damaged[...] = np.nan  # the session maps this file: it sees the damage
    damaged.flush()
    manifest = json.loads((entry / feature_cache.MANIFEST).read_text())
    manifest["files"]["features.npy"]["checksum"] = feature_cache.sampled_checksum(entry / "features.npy")
    (entry / feature_cache.MANIFEST).write_text(json.dumps(manifest))
    with caplog.at_level("WARNING", logger="ScribbleSegLib"):
        again = session.run(scrib, ddml_config=FAST_DDML)
    lines = [r.getMessage() for r in caplog.records if "feature cache" in r.getMessage()]
    assert len(lines) == 1 and entry.name in lines[0] and "not numbers" in lines[0], lines
    np.testing.assert_array_equal(again.labels, clean.labels)
    assert not again.features_cached and session.run(scrib, ddml_config=FAST_DDML).features_cached
    assert np.isfinite(session.features[:]).all() and (entry / "features.npy").is_file()  # stored anew


@pytest.mark.parametrize("method", ["full", "ddml", "munet"])
def test_a_session_run_equals_segment(case, method):
    folder, test, scrib, model = case
    session = Session(test.image, model, cache_dir=folder / "cache")
    kwargs = dict(method=method, ddml_config=FAST_DDML)
    # A numpy integer is a seed like any other (torch's generator takes only a Python int).
    warm = session.run(scrib, seed=np.int64(3), **kwargs)
    cold = pipeline.segment(test.image, scrib, model, cache_dir=folder / "cache", seed=3, **kwargs)
    assert warm.method == cold.method == method
    np.testing.assert_array_equal(warm.labels, cold.labels)
    np.testing.assert_allclose(warm.probability, cold.probability, atol=1e-6)
    np.testing.assert_allclose(warm.munet_probability, cold.munet_probability, atol=1e-6)
    assert warm.warnings == cold.warnings
    assert [(s.section, s.reason) for s in warm.suggestions] == [(s.section, s.reason) for s in cold.suggestions]
    assert warm.features_cached
    assert "M-Unet features" not in warm.timings and "load model" not in warm.timings
    if method == "full":
        assert {"DDML + head", "graph cut"} <= set(warm.timings) <= {
            "DDML + head", "graph cut", "training pixels", "DDML training", "head training", "probability"}


def test_a_session_on_a_stack_far_from_the_models_pixel_size_leaves_the_bank_out_as_segment_does(case,
                                                                                                 adapt_shares):
    from ScribbleSegLib.geometry import Geometry

    folder, test, scrib, model = case
    pixel = pipeline.as_model(model, "cpu").voxel_size[0]
    far = Volume(test.image.array, Geometry((pixel / 40, pixel / 40, test.image.geometry.spacing[2])))
    warm = Session(far, model, cache_dir=folder / "cache").run(scrib, method="ddml", ddml_config=FAST_DDML)
    cold = pipeline.segment(far, scrib, model, cache_dir=folder / "cache", method="ddml", ddml_config=FAST_DDML)
    assert adapt_shares == [1.0, 1.0]
    np.testing.assert_allclose(warm.probability, cold.probability, atol=1e-6)


def test_a_warm_session_trains_the_strokes_own_adaptation_afresh_in_every_run(case, tmp_path):
    # Started from the last run's f, a strokes-only classifier kept what the last strokes had taught it: a real gland
    # run fell from 0.666 to 0.527 with correct strokes where the command line's run, from scratch, gave 0.642.
    from ScribbleSegLib.geometry import Geometry

    folder, test, scrib, model = case
    more, _ = _heart_strokes_on_a_new_section(test, scrib)
    pixel = pipeline.as_model(model, "cpu").voxel_size[0]
    far = Volume(test.image.array, Geometry((pixel / 40, pixel / 40, test.image.geometry.spacing[2])))  # no bank
    config = dataclasses.replace(FAST_DDML, warm_steps=12)
    session = Session(far, model, cache_dir=folder / "cache")
    session.run(scrib, method="ddml", ddml_config=config)
    warm = session.run(more, method="ddml", ddml_config=config)
    assert session.adapt_memory.f is None  # nothing kept for the next run to start from
    # The command line's two runs (each a process of its own, the chain kept in the cache entry) give the same.
    cache = tmp_path / "cache"
    pipeline.segment(far, scrib, model, cache_dir=cache, method="ddml", ddml_config=config)
    cold = pipeline.segment(far, more, model, cache_dir=cache, method="ddml", ddml_config=config)
    np.testing.assert_allclose(warm.probability, cold.probability, atol=1e-6)


def test_new_scribbles_change_the_result_and_the_features_stay(case):
    _, test, scrib, model = case
    session = Session(test.image, model)
    features = session.features
    first = session.run(scrib, ddml_config=FAST_DDML)
    # Heart strokes on a section that had none: the cut must follow the new seeds there.
    more, empty = _heart_strokes_on_a_new_section(test, scrib)
    second = session.run(more, ddml_config=FAST_DDML)
    assert session.features is features
    assert (second.labels[empty][test.label[empty].astype(bool)] == 1).all()
    assert not np.allclose(first.probability, second.probability, atol=1e-4), "the adaptation did not rerun"
    # A result shares the session's network outputs, read-only: a change to it cannot reach the next run.
    assert np.shares_memory(second.munet_probability, session.probability)
    with pytest.raises(ValueError, match="read-only"):
        second.munet_probability[...] = 0
    with pytest.raises(ValueError, match="read-only"):
        session.run(None, method="munet").probability[...] = 0


def test_a_later_run_starts_its_cut_from_the_last_one_and_agrees_with_a_fresh_cut(case):
    _, test, scrib, model = case
    warm, fresh = Session(test.image, model), Session(test.image, model, reuse_cut=False)
    assert fresh.cut_memory is None
    for session in (warm, fresh):
        session.run(scrib, ddml_config=FAST_DDML)
    assert warm.cut_memory.labels is not None
    more, empty = _heart_strokes_on_a_new_section(test, scrib)
    a, b = warm.run(more, ddml_config=FAST_DDML), fresh.run(more, ddml_config=FAST_DDML)
    np.testing.assert_allclose(a.probability, b.probability, atol=1e-6)  # only the cut differs in how it starts
    assert np.array_equal(warm.cut_memory.labels, a.labels)
    overlap = 2 * np.count_nonzero(a.labels & b.labels) / (np.count_nonzero(a.labels) + np.count_nonzero(b.labels))
    assert overlap >= 0.99
    assert (a.labels[empty][test.label[empty].astype(bool)] == 1).all()  # the new seeds hold


def test_a_later_run_trains_f_on_from_the_last_one_unless_warm_steps_is_0(case):
    folder, test, scrib, model = case
    more, empty = _heart_strokes_on_a_new_section(test, scrib)
    warm_config = dataclasses.replace(FAST_DDML, warm_steps=12)
    session = Session(test.image, model, cache_dir=folder / "cache")
    assert session.adapt_memory.f is None
    session.run(scrib, ddml_config=warm_config)
    first_f = session.adapt_memory.f
    assert len(first_f.loss_history) == 5  # 40 steps from scratch: 0, 10, 20, 30, 39
    second = session.run(more, ddml_config=warm_config)
    assert session.adapt_memory.f is not first_f and len(session.adapt_memory.f.loss_history) == 3  # 12: 0, 10, 11
    assert (second.labels[empty][test.label[empty].astype(bool)] == 1).all()
    # warm_steps 0 and no kept cut: every run is pipeline.segment's, whatever came before.
    cold_config = dataclasses.replace(FAST_DDML, warm_steps=0)
    cold_session = Session(test.image, model, cache_dir=folder / "cache", reuse_cut=False)
    cold_session.run(scrib, ddml_config=cold_config)
    again = cold_session.run(more, ddml_config=cold_config, seed=5)
    fresh = pipeline.segment(test.image, more, model, cache_dir=folder / "cache", ddml_config=cold_config, seed=5)
    np.testing.assert_allclose(again.probability, fresh.probability, atol=1e-6)
    np.testing.assert_array_equal(again.labels, fresh.labels)


def test_run_again_with_the_same_strokes_gives_the_same_result_at_once(case):
    """Pressing Run twice must give one answer: f and the cut start from the last run's, so running the same
    strokes again would move the outline; the last result comes back instead (its arrays read-only)."""
    _, test, scrib, model = case
    config = dataclasses.replace(FAST_DDML, warm_steps=12)
    session = Session(test.image, model)
    strokes = scrib.copy()
    first = session.run(strokes, ddml_config=config)
    kept_f = session.adapt_memory.f
    labels, probability = first.labels.copy(), first.probability.copy()
    for array in (first.labels, first.probability):
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 0
    strokes[...] = 0  # the caller's strokes are its own: the session kept a copy
    again = session.run(scrib.copy(), ddml_config=config)
    assert session.adapt_memory.f is kept_f  # nothing was trained
    np.testing.assert_array_equal(again.labels, labels)
    np.testing.assert_array_equal(again.probability, probability)
    assert again.timings == {} and again.features_cached
    assert again.warnings == first.warnings
    assert [s.section for s in again.suggestions] == [s.section for s in first.suggestions]
    # A run cancelled before its cut leaves f and the cut as they were: the last result still stands.
    from ScribbleSegLib.errors import CancelledError
    from ScribbleSegLib.progress import CancelToken

    more, _ = _heart_strokes_on_a_new_section(test, scrib)
    cancelled = CancelToken()
    cancelled.cancel()
    with pytest.raises(CancelledError):
        session.run(more, ddml_config=config, cancel=cancelled)
    again = session.run(scrib, ddml_config=config)
    assert again.timings == {} and session.adapt_memory.f is kept_f
    np.testing.assert_array_equal(again.labels, labels)
    # One that failed after its cut began may have changed the cut's memory: a repeat runs.
    def fail_after_the_cut(stage, fraction, message):
        if stage == "graph cut" and fraction == 1.0:
            raise RuntimeError("a failure after the cut")

    with pytest.raises(RuntimeError, match="after the cut"):
        session.run(more, ddml_config=config, progress=fail_after_the_cut)
    assert session.run(scrib, ddml_config=config).timings
    # Another seed, or one stroke more, is a new run.
    assert session.run(scrib, ddml_config=config, seed=1).timings
    assert session.run(more, ddml_config=config).timings
    assert session.adapt_memory.f is not kept_f


def test_after_forget_runs_the_next_run_is_a_first_run(case):
    """After "undo" the panel's next run must not start from the run taken back: forget_runs makes it the
    same as a first run (pipeline.segment), with the image's coarse weights kept."""
    folder, test, scrib, model = case
    more, empty = _heart_strokes_on_a_new_section(test, scrib)
    config = dataclasses.replace(FAST_DDML, warm_steps=12)
    session = Session(test.image, model, cache_dir=folder / "cache")
    session.run(scrib, ddml_config=config)
    session.run(more, ddml_config=config)  # the run the user takes back
    assert session.adapt_memory.f is not None and session.cut_memory.labels is not None
    weights = dict(session.cut_memory.coarse_weights)
    session.forget_runs()
    assert session.adapt_memory.f is None and session.cut_memory.labels is None
    assert session.cut_memory.coarse_weights == weights
    again = session.run(scrib, ddml_config=config, seed=4)
    assert len(session.adapt_memory.f.loss_history) == 5  # all 40 steps from scratch, not 12 from the last f
    first = pipeline.segment(test.image, scrib, model, cache_dir=folder / "cache", ddml_config=config, seed=4)
    np.testing.assert_allclose(again.probability, first.probability, atol=1e-6)
    np.testing.assert_array_equal(again.labels, first.labels)


def test_warnings_about_the_volume_repeat_in_every_run(case):
    _, test, scrib, model = case
    far = dataclasses.replace(test.image.geometry, spacing=(0.4, 0.4, 1.0))  # over 4x the model's pixel size
    volume = Volume(test.image.array, far)
    session = Session(volume, model)
    assert session.warnings and "not resampling" in session.warnings[0]
    single = np.zeros_like(scrib)
    single[4] = scrib[4]
    result = session.run(single, ddml_config=FAST_DDML)
    cold = pipeline.segment(volume, single, model, ddml_config=FAST_DDML)
    assert result.warnings == cold.warnings
    assert result.warnings[0].startswith("all strokes lie on section 4")
    assert result.warnings[-1] == session.warnings[0]


def test_a_session_on_bare_arrays_in_x_y_z_order_warns_in_each_run(case):
    _, test, scrib, model = case
    session = Session(np.transpose(test.image.array, (2, 1, 0, 3)), model)
    result = session.run(np.transpose(scrib, (2, 1, 0)), method="ddml", ddml_config=FAST_DDML)
    assert sum("(X, Y, Z)" in w for w in result.warnings) == 1
    right = Session(test.image.array, model).run(scrib, method="ddml", ddml_config=FAST_DDML)
    assert not any("(X, Y, Z)" in w for w in right.warnings)


def test_bad_runs_are_one_line_errors_and_the_session_survives(case):
    _, test, scrib, model = case
    session = Session(test.image, model)
    with pytest.raises(ScribbleSegError, match="shape"):
        session.run(scrib[:-1])
    with pytest.raises(ScribbleSegError, match="method"):
        session.run(scrib, method="magic")
    with pytest.raises(ScribbleSegError, match="scribbles have no background"):
        session.run(np.where(scrib == 2, 0, scrib).astype(np.uint8), ddml_config=FAST_DDML)
    assert session.run(scrib, ddml_config=FAST_DDML).labels.shape == session.shape
    with pytest.raises(ScribbleSegError, match="reuse_cut must be True or False, got 'no'"):
        Session(test.image, model, reuse_cut="no")


@pytest.mark.parametrize("stage", ["probability", "graph cut"])
def test_a_run_cancelled_after_its_training_leaves_the_next_run_as_it_would_be(case, stage):
    """The DDML network a cancelled run trained is not where the next run starts: Cancel, then Run, gives what
    Run alone gives (the Slicer panel's worker goes on after a cancel)."""
    from ScribbleSegLib.errors import CancelledError
    from ScribbleSegLib.progress import CancelToken

    folder, test, scrib, model = case
    more, _ = _heart_strokes_on_a_new_section(test, scrib)
    plain = Session(test.image, model, cache_dir=folder / "cache")
    plain.run(scrib, ddml_config=FAST_DDML)
    expected = plain.run(more, ddml_config=FAST_DDML)
    session = Session(test.image, model, cache_dir=folder / "cache")
    session.run(scrib, ddml_config=FAST_DDML)
    token = CancelToken()
    with pytest.raises(CancelledError):
        session.run(more, ddml_config=FAST_DDML, cancel=token,
                    progress=lambda name, fraction, message: name == stage and token.cancel())
    again = session.run(more, ddml_config=FAST_DDML)
    np.testing.assert_allclose(again.probability, expected.probability, atol=1e-6)
    np.testing.assert_array_equal(again.labels, expected.labels)
