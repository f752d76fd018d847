"""metrics: confusion counts, scores with guarded denominators, per-section F1, summaries."""

import numpy as np
import pytest

from ScribbleSegLib import metrics
from ScribbleSegLib.errors import ScribbleSegError


def volume(*sections):
    return np.array(sections, dtype=np.uint8)


# Two 2x3 sections.  Section 0: label 3 voxels, prediction 2 of them + 1 wrong.  Section 1: label empty,
# prediction 1 voxel.
LABEL = volume([[1, 1, 1], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]])
PRED = volume([[1, 1, 0], [1, 0, 0]], [[0, 0, 0], [0, 0, 1]])


def test_confusion_counts_by_hand():
    assert metrics.confusion(PRED, LABEL) == (2, 2, 1, 7)


def test_confusion_treats_any_nonzero_as_foreground():
    assert metrics.confusion(PRED * 255, LABEL.astype(bool)) == (2, 2, 1, 7)


def test_evaluate_by_hand():
    r = metrics.evaluate(PRED, LABEL)
    assert (r["tp"], r["fp"], r["fn"], r["tn"], r["voxels"], r["ignored"]) == (2, 2, 1, 7, 12, 0)
    assert r["precision"] == pytest.approx(2 / 4)
    assert r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(4 / 7)
    assert r["iou"] == pytest.approx(2 / 5)
    assert r["f1"] == pytest.approx(2 * r["iou"] / (1 + r["iou"]))
    # Section 0: tp 2, fp 1, fn 1 -> 2/3; section 1: only a false positive -> 0.
    assert r["sections"] == [0, 1]
    assert r["section_f1"] == pytest.approx([2 / 3, 0.0])
    assert r["mean_section_f1"] == pytest.approx(1 / 3)


def test_ignore_leaves_voxels_out_of_every_count():
    ignore = np.zeros_like(LABEL, dtype=bool)
    ignore[1, 1, 2] = True  # the lone false positive in section 1
    ignore[0, 0, 0] = True  # a true positive
    r = metrics.evaluate(PRED, LABEL, ignore=ignore)
    assert (r["tp"], r["fp"], r["fn"], r["tn"], r["voxels"], r["ignored"]) == (1, 1, 1, 7, 10, 2)
    assert r["sections"] == [0]  # section 1 has no foreground left
    assert r["section_f1"] == pytest.approx([0.5])


def test_sections_empty_in_both_are_not_scored():
    label = np.zeros((5, 4, 4), np.uint8)
    label[2, 1:3, 1:3] = 1
    r = metrics.evaluate(label, label)
    assert r["sections"] == [2] and r["section_f1"] == [1.0]
    assert r["f1"] == r["precision"] == r["recall"] == r["iou"] == 1.0


def test_empty_versus_empty_is_perfect():
    empty = np.zeros((3, 4, 4), np.uint8)
    r = metrics.evaluate(empty, empty)
    assert (r["precision"], r["recall"], r["f1"], r["iou"]) == (1.0, 1.0, 1.0, 1.0)
    assert r["sections"] == [] and r["mean_section_f1"] == 1.0


def test_zero_denominators_with_errors_score_zero():
    empty = np.zeros((2, 3, 3), np.uint8)
    full = np.ones((2, 3, 3), np.uint8)
    missed = metrics.evaluate(empty, full)  # nothing predicted
    assert (missed["precision"], missed["recall"], missed["f1"], missed["iou"]) == (0.0, 0.0, 0.0, 0.0)
    spurious = metrics.evaluate(full, empty)  # nothing to find
    assert (spurious["precision"], spurious["recall"], spurious["f1"], spurious["iou"]) == (0.0, 0.0, 0.0, 0.0)
    assert spurious["mean_section_f1"] == 0.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ScribbleSegError, match=r"pred has shape \(2, 3, 3\), label \(2, 3, 4\)"):
        metrics.confusion(np.zeros((2, 3, 3)), np.zeros((2, 3, 4)))
    with pytest.raises(ScribbleSegError, match="ignore must be a non-empty"):
        metrics.evaluate(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)), ignore=np.zeros((2, 3)))


@pytest.mark.parametrize("pred, words", [
    ("pred.nrrd", "pred must be a (Z, Y, X) numpy array of labels"),  # two strings once scored IoU 1.0
    (np.full((2, 3, 3), 0.3), "a probability?"),  # every p > 0 once counted as heart
    (np.full((2, 3, 3), np.nan), "NaN"),
    (np.zeros((3, 3), np.uint8), "non-empty (Z, Y, X)"),
])
def test_what_is_not_a_label_is_refused_not_scored(pred, words):
    with pytest.raises(ScribbleSegError) as excinfo:
        metrics.evaluate(pred, np.zeros((2, 3, 3), np.uint8))
    assert words in str(excinfo.value)


def test_summarize_mean_and_population_std():
    results = [{"f1": 0.5, "iou": 1 / 3}, {"f1": 0.9, "iou": 0.9 / 1.1}, {"f1": 0.7}]
    s = metrics.summarize(results, keys=("f1", "iou", "precision"))
    assert s["f1"]["mean"] == pytest.approx(0.7)
    assert s["f1"]["std"] == pytest.approx(np.sqrt((0.04 + 0.04 + 0) / 3))
    assert s["f1"]["n"] == 3 and s["iou"]["n"] == 2
    assert "precision" not in s


def test_summarize_of_evaluate_results():
    r = metrics.evaluate(PRED, LABEL)
    s = metrics.summarize([r, r])
    assert set(s) == set(metrics.METRICS)
    assert s["f1"] == {"mean": pytest.approx(4 / 7), "std": 0.0, "n": 2}
    with pytest.raises(ValueError):
        metrics.summarize([])


def test_error_regions_split_ends_outline_and_missed_regions():
    from ScribbleSegLib.metrics import error_regions

    label = np.zeros((20, 16, 16), np.uint8)
    label[5:15, 4:12, 4:12] = 1
    pred = label.copy()
    pred[5] = 0                      # the first section: an end
    pred[10, 4, 4:12] = 0            # one outline row
    pred[9, 0:2, 14:16] = 1          # a false region far from the outline
    r = error_regions(pred, label)
    assert (r["ends"]["voxels"], r["boundary"]["voxels"], r["elsewhere"]["voxels"]) == (64, 8, 4)
    assert abs(sum(part["share"] for part in r.values()) - 1) < 1e-9
    # Fixing the false region removes it from the union: TP 568 of union 644 -> 568 / 640.
    assert abs(r["elsewhere"]["iou_if_fixed"] - 568 / 640) < 1e-9
    assert abs(r["ends"]["iou_if_fixed"] - 632 / 644) < 1e-9


def test_end_sections_are_outside_the_object_or_within_a_share_of_its_extent():
    from ScribbleSegLib.metrics import end_sections

    label = np.zeros((30, 4, 4), np.uint8)
    label[10:30, 1:3, 1:3] = 1  # 20 sections, to the volume's last
    assert np.flatnonzero(~end_sections(label, 0.1)).tolist() == list(range(12, 28))
    assert np.flatnonzero(~end_sections(label, 0.0)).tolist() == list(range(10, 30))
    assert end_sections(np.zeros((3, 2, 2)), 0.1).all()
