"""stroke_history: the network's doubt that earlier strokes showed stays with the strokes that add to them."""

import logging

import numpy as np
import pytest

from ScribbleSegLib import pipeline, stroke_history
from ScribbleSegLib.ddml import DDMLConfig
from ScribbleSegLib.session import Session
from ScribbleSegLib.stroke_history import StrokeHistory
from conftest import record_keyword, tiny_case

FAST_DDML = DDMLConfig(steps=40, head_steps=40, pool_size=2000, batch_size=64)


def _strokes(shape=(3, 8, 8)):
    s = np.zeros(shape, np.uint8)
    s[1, 2, 1:5] = 1
    s[1, 6, 1:5] = 2
    return s


def test_strokes_that_hold_an_earlier_runs_take_its_larger_doubt_class_by_class():
    history = StrokeHistory()
    first = _strokes()
    assert history.carried(first, (0.1, 0.2)) == (0.1, 0.2)  # nothing before
    history.remember(first, (0.3, 0.9))
    more = first.copy()
    more[2, 6, 1:7] = 2
    assert history.carried(more, (0.5, 0.4)) == (0.5, 0.9)
    history.remember(more, (0.5, 0.9))
    assert len(history.runs()) == 1, "the chain's latest run replaces the runs it holds"
    erased = more.copy()
    erased[1, 6, 1] = 0  # one voxel of the first strokes taken back: they start afresh
    assert history.carried(erased, (0.1, 0.4)) == (0.1, 0.4)
    relabelled = more.copy()
    relabelled[1, 6, 1] = 1  # or drawn as the other class
    assert history.carried(relabelled, (0.1, 0.4)) == (0.1, 0.4)
    assert history.carried(more[:2], (0.1, 0.4)) == (0.1, 0.4), "another volume's strokes"


def test_interleaved_chains_each_follow_their_own_and_the_oldest_go_first():
    history = StrokeHistory()
    patterns = []
    for k in range(stroke_history.KEPT_RUNS + 1):
        s = np.zeros((2, 4, 16), np.uint8)
        s[0, 0, k] = 1
        s[0, 3, k] = 2
        patterns.append(s)
        history.remember(s, (0.0, k / 10))
    assert len(history.runs()) == stroke_history.KEPT_RUNS
    first_again = patterns[0].copy()
    first_again[1, 1, 0] = 2
    assert history.carried(first_again, (0.0, 0.0)) == (0.0, 0.0), "the oldest was dropped"
    later = patterns[3].copy()
    later[1, 1, 0] = 2
    assert history.carried(later, (0.0, 0.0)) == (0.0, 0.3)


def test_a_history_file_keeps_runs_between_processes_and_a_damaged_one_is_dropped(tmp_path, caplog):
    path = tmp_path / stroke_history.HISTORY_FILE
    first = _strokes()
    StrokeHistory(path).remember(first, (0.25, 0.75))
    more = first.copy()
    more[0, 0, 0] = 1
    assert StrokeHistory(path).carried(more, (0.0, 0.5)) == (0.25, 0.75)
    stored = dict(np.load(path))
    stored["voxels"] = stored["voxels"][::-1].copy()  # indices out of order: not what remember writes
    with open(path, "wb") as handle:
        np.savez(handle, **stored)
    with caplog.at_level(logging.WARNING):
        assert StrokeHistory(path).carried(more, (0.0, 0.5)) == (0.0, 0.5)
    assert "not usable" in caplog.text and not path.exists()
    path.write_bytes(b"not a numpy file")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert StrokeHistory(path).runs() == [] and not path.exists()
    # In our words: numpy's own said to load the file unsafely ("allow_pickle=True").
    assert "are not usable (not a NumPy file); removed" in caplog.text and "allow_pickle" not in caplog.text
    # Cut short, or a byte changed inside: a broken zip, which failed every later run on the image.
    StrokeHistory(path).remember(first, (0.25, 0.75))
    whole = path.read_bytes()
    path.write_bytes(whole[:100])
    assert StrokeHistory(path).runs() == [] and not path.exists()
    for at in range(0, len(whole), 7):  # any byte changed: the runs it still holds, or none; never an error
        path.write_bytes(whole[:at] + bytes([whole[at] ^ 0xFF]) + whole[at + 1:])
        runs = StrokeHistory(path).runs()
        assert runs == [] or len(runs) == 1


def test_an_interrupt_while_the_history_is_written_waits_until_the_file_is_whole(tmp_path, monkeypatch):
    # A signal inside zipfile's writer left its archive to fail again when collected ("seek of closed file").
    import signal

    finished = []
    real_savez = np.savez

    def savez_interrupted(handle, **arrays):
        signal.raise_signal(signal.SIGINT)
        real_savez(handle, **arrays)
        finished.append(True)

    monkeypatch.setattr(stroke_history.np, "savez", savez_interrupted)
    path = tmp_path / stroke_history.HISTORY_FILE
    with pytest.raises(KeyboardInterrupt):
        StrokeHistory(path).remember(_strokes(), (0.25, 0.75))
    assert finished == [True] and list(tmp_path.iterdir()) == []


def test_a_history_that_cannot_be_written_is_one_warning(tmp_path, caplog):
    blocker = tmp_path / "a file"
    blocker.write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        StrokeHistory(blocker / stroke_history.HISTORY_FILE).remember(_strokes(), (0.0, 0.5))
    assert len(caplog.records) == 1 and "were not kept" in caplog.text


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("history")
    return (folder,) + tiny_case(folder, (8, 40, 40), max_iters=20)


def _doubted_then_corrected(probability: np.ndarray):
    """Background strokes that the network calls heart, with a heart stroke it agrees with; then the same plus
    background strokes where the network agrees (what corrective strokes after a good result look like).  Voxels
    far from 1/2, so that the network's outputs computed on another path (a cache entry, a session), which may differ
    in the last bit, label them alike."""
    heart, background = np.argwhere(probability > 0.6), np.argwhere(probability < 0.4)
    first = np.zeros(probability.shape, np.uint8)
    for z, y, x in heart[:12]:
        first[z, y, x] = 2
    z, y, x = heart[-1]
    first[z, y, x] = 1
    more = first.copy()
    for z, y, x in background[:60]:
        more[z, y, x] = 2
    return first, more


def test_corrective_strokes_where_the_network_is_right_keep_the_doubt_of_the_cli_path_and_a_session(case, caplog):
    folder, test, model = case
    network = pipeline.segment(test.image, None, model, method="munet").probability
    first, more = _doubted_then_corrected(network)
    own_first, own_more = pipeline.network_doubt(first, network), pipeline.network_doubt(more, network)
    assert own_first[1] > 0.9 and own_more[1] < own_first[1] - 0.5  # the strokes alone would lower it a lot
    cache = folder / "cache"
    runs = [pipeline.segment(test.image, s, model, method="ddml", cache_dir=cache, ddml_config=FAST_DDML)
            for s in (first, more)]
    assert runs[0].network_doubt == own_first
    assert runs[1].network_doubt == own_first, "the entry's history, as a later process reads it"
    assert any("of an earlier run that these strokes add to" in w for w in runs[1].warnings)
    assert len(list(cache.rglob(stroke_history.HISTORY_FILE))) == 1
    # Without a cache entry, a warm session keeps the history itself.
    session = Session(test.image, model)
    assert session.run(first, method="ddml", ddml_config=FAST_DDML).network_doubt == own_first
    assert session.run(more, method="ddml", ddml_config=FAST_DDML).network_doubt == own_first
    # Without either, each run goes by its own strokes.
    assert pipeline.segment(test.image, more, model, method="ddml", ddml_config=FAST_DDML).network_doubt == own_more


def test_the_cut_scale_of_a_chain_is_its_largest_and_a_file_keeps_it(tmp_path):
    path = tmp_path / stroke_history.HISTORY_FILE
    first = _strokes()
    history = StrokeHistory(path)
    history.remember(first, (0.0, 0.0), cut_scale=0.5)
    more = first.copy()
    more[2, 6, 1:7] = 2
    assert StrokeHistory(path).cut_scale(more) == 0.5, "another process reads it back"
    history.remember(more, (0.0, 0.0), cut_scale=0.707)
    assert StrokeHistory(path).cut_scale(more) == 0.707
    erased = more.copy()
    erased[1, 6, 1] = 0  # strokes that no longer hold the chain's start afresh
    assert StrokeHistory(path).cut_scale(erased) is None
    history.remember(erased, (0.0, 0.0))  # a run that did not scale its cut (another method, the paper's settings)
    assert StrokeHistory(path).cut_scale(erased) is None
    # A history written before the scale was kept has none; one holding a scale out of (0, 1] is dropped.
    stored = dict(np.load(path))
    del stored["cut_scales"]
    with open(path, "wb") as handle:
        np.savez(handle, **stored)
    assert len(StrokeHistory(path).runs()) == 2 and StrokeHistory(path).cut_scale(more) is None
    stored["cut_scales"] = np.array([0.5, 2.0])
    with open(path, "wb") as handle:
        np.savez(handle, **stored)
    assert StrokeHistory(path).runs() == [] and not path.exists()


def test_a_round_cuts_with_no_weaker_boundary_term_than_the_round_it_adds_to(case, monkeypatch):
    from ScribbleSegLib import cut_scaling, graphcut

    folder, test, model = case
    network = pipeline.segment(test.image, None, model, method="munet").probability
    first = np.zeros(network.shape, np.uint8)
    for code, where in ((1, network > 0.6), (2, network < 0.4)):
        z, y, x = np.argwhere(where)[:10].T
        first[z, y, x] = code
    more = first.copy()
    z, y, x = np.argwhere((network < 0.4) & (first == 0))[:20].T
    more[z, y, x] = 2
    # The factor h's objects call for, run by run (the measure itself is cut_scaling's, tested there).
    factors = iter([0.5, 0.25, 1.0, 0.25, 0.5, 0.25, 0.25, 0.125])
    measured = cut_scaling.object_scale
    many = iter([False] * 7 + [True])
    monkeypatch.setattr(cut_scaling, "object_scale", lambda params, h: (
        cut_scaling.ObjectScale(next(factors), next(many), "stated by the test") if params.reference_objects is not None
        else measured(params, h)))
    gammas = record_keyword(monkeypatch, graphcut, "graph_cut", "params", lambda params: params.gamma)
    gamma = graphcut.GraphCutParams().gamma
    cache = folder / "scale-cache"
    for strokes in (first, more, more):  # the command line: each round a process, the history in the cache entry
        pipeline.segment(test.image, strokes, model, cache_dir=cache, ddml_config=FAST_DDML)
    pipeline.segment(test.image, more, model, ddml_config=FAST_DDML)  # no history: the factor as it comes
    session = Session(test.image, model)
    most = more.copy()
    z, y, x = np.argwhere((network < 0.4) & (more == 0))[:2].T
    most[z[0], y[0], x[0]] = 2
    mostly = most.copy()
    mostly[z[1], y[1], x[1]] = 2
    session.run(first, ddml_config=FAST_DDML)
    session.run(more, ddml_config=FAST_DDML)
    session.forget_runs()  # "Undo last run": the next run's cut scales as a first run's does
    session.run(most, ddml_config=FAST_DDML)
    session.run(mostly, ddml_config=FAST_DDML)  # many objects side by side: their count's factor as it comes
    assert gammas == [0.5 * gamma, 0.5 * gamma, gamma, 0.25 * gamma, 0.5 * gamma, 0.5 * gamma, 0.25 * gamma,
                      0.125 * gamma]
