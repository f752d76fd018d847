"""loop: the panel's interactive loop (history and undo, what changed, volumes, suggestions, jumps)."""

import doctest

import numpy as np
import pytest

from ScribbleSegLib import choices, loop
from ScribbleSegLib.errors import ScribbleSegError
from ScribbleSegLib.suggest import REASONS


def test_the_examples_in_the_docstrings_hold():
    failures, tried = doctest.testmod(loop)
    assert tried >= 10 and failures == 0


def _labels(*voxels, shape=(3, 4, 4)):
    out = np.zeros(shape, np.uint8)
    for z, y, x in voxels:
        out[z, y, x] = 1
    return out


# Undo


def test_undo_goes_back_to_the_previous_run_and_not_beyond():
    history = loop.RunHistory(depth=3)
    runs = [_labels((0, 0, 0)), _labels((0, 0, 0), (1, 1, 1)), _labels((2, 2, 2))]
    for labels in runs:
        history.push(labels)
    np.testing.assert_array_equal(history.current, runs[2])
    np.testing.assert_array_equal(history.undo(), runs[1])
    np.testing.assert_array_equal(history.undo(), runs[0])
    assert not history.can_undo and len(history) == 1
    with pytest.raises(ScribbleSegError, match="no earlier run"):
        history.undo()


def test_the_history_keeps_copies_and_drops_the_oldest_run():
    history = loop.RunHistory(depth=2)
    labels = _labels((0, 0, 0))
    history.push(labels)
    labels[1, 1, 1] = 1  # the caller reuses its array: the history must not change
    assert int(history.current.sum()) == 1
    history.push(_labels((1, 1, 1)))
    history.push(_labels((2, 2, 2)))
    assert len(history) == 2
    np.testing.assert_array_equal(history.undo(), _labels((1, 1, 1)))
    assert not history.can_undo


def test_the_history_belongs_to_one_volume():
    history = loop.RunHistory()
    history.push(_labels())
    with pytest.raises(ScribbleSegError, match="do not belong to this volume"):
        history.push(np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ScribbleSegError, match="at least 2"):
        loop.RunHistory(depth=1)
    history.clear()
    assert history.current is None and history.previous is None


# What changed


def test_changed_labels_mark_added_and_removed_voxels():
    before = _labels((0, 0, 0), (1, 1, 1))
    after = _labels((1, 1, 1), (2, 3, 3))
    changed = loop.changed_labels(before, after)
    assert changed[2, 3, 3] == loop.ADDED and changed[0, 0, 0] == loop.REMOVED
    assert changed[1, 1, 1] == 0, "heart in both runs is not a change"
    assert np.count_nonzero(changed) == 2
    first = loop.changed_labels(None, after)
    assert np.count_nonzero(first == loop.ADDED) == 2 and not (first == loop.REMOVED).any()
    with pytest.raises(ScribbleSegError, match="differ in shape"):
        loop.changed_labels(np.zeros((1, 1, 1)), after)


def test_heart_volume_and_its_change_for_the_status_line():
    labels = np.ones((2, 5, 4), np.uint8)  # 40 voxels
    assert loop.heart_volume_mm3(labels, (0.5, 0.25, 2.0)) == pytest.approx(10.0)
    text = loop.describe_change(10.0, 8.0, 12)
    assert text.startswith("heart 10 mm³") and "+2 mm³" in text and "+25.0%" in text and "12 voxels changed" in text
    assert "-" in loop.describe_change(6.0, 8.0) and "since the previous run" not in loop.describe_change(6.0)
    assert "%" not in loop.describe_change(1.0, 0.0), "no percentage of an empty result"


# Where to look next


def test_heat_map_suggestions_rank_unsure_sections_far_from_strokes_first():
    probability = np.zeros((8, 10, 10), np.float32)
    probability[1:7, 2:8, 2:8] = 0.95  # confident heart
    probability[5, 2:8, 2:8] = 0.55  # unsure section
    scribbles = np.zeros((8, 10, 10), np.uint8)
    scribbles[1, 4, 4] = 1
    found = loop.heat_map_suggestions(probability, scribbles, count=3)
    assert len(found) == 3
    assert found[0]["section"] == 5 and found[0]["reason"] in REASONS.values()
    assert [s["score"] for s in found] == sorted((s["score"] for s in found), reverse=True)
    assert all(s["text"].startswith(f"section {s['section']} ") for s in found)
    assert 0 < len(loop.heat_map_suggestions(probability)) <= choices.LOOP_SUGGESTIONS


def test_suggestion_rows_name_the_section_and_the_reason():
    from ScribbleSegLib.suggest import Suggestion

    assert loop.suggestion_row({"section": 7, "reason": "far from any stroke"}) == "Section 7: far from any stroke"
    assert loop.suggestion_row(Suggestion(3, 1.0, "unsure", 10, 2, 4)) == "Section 3: unsure"


def test_a_section_centre_follows_the_ijk_to_ras_matrix():
    # LPS-style volume: I runs to -R, J to -A, sections along +S, with an origin.
    matrix = np.array([[-0.5, 0, 0, 100.0], [0, -0.25, 0, 50.0], [0, 0, 3.0, -10.0], [0, 0, 0, 1]])
    r, a, s = loop.section_center_ras(matrix, (6, 21, 41), 4)
    assert (r, a, s) == pytest.approx((100.0 - 0.5 * 20, 50.0 - 0.25 * 10, -10.0 + 3.0 * 4))
    # An oblique stack: the section axis tilted in R.
    tilted = np.array([[1.0, 0, 0.5, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    assert loop.section_center_ras(tilted, (3, 3, 3), 2) == pytest.approx((2.0, 1.0, 2.0))
    with pytest.raises(ScribbleSegError, match="outside the volume"):
        loop.section_center_ras(matrix, (6, 21, 41), 6)


def test_the_next_section_key_cycles_through_the_list():
    visited = []
    row = None
    for _press in range(5):
        row = loop.next_suggestion(row, 3)
        visited.append(row)
    assert visited == [0, 1, 2, 0, 1]
    assert loop.next_suggestion(7, 3) == 0, "a row that is gone starts over"
    assert loop.next_suggestion(0, 0) is None


def test_heat_map_suggestions_spread_over_the_stack():
    probability = np.zeros((40, 8, 8), np.float32)
    probability[5:35, 2:6, 2:6] = 0.9
    probability[18:23, 2:6, 2:6] = 0.55  # five unsure neighbours: one of them is listed
    probability[30, 2:6, 2:6] = 0.6
    found = [s["section"] for s in loop.heat_map_suggestions(probability, count=3)]
    assert found[0] in range(18, 23) and 30 in found
    assert min(abs(a - b) for i, a in enumerate(found) for b in found[i + 1:]) >= 40 // 6
    with pytest.raises(ScribbleSegError, match="count"):
        loop.heat_map_suggestions(probability, count=-1)
