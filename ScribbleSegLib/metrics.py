"""Overlap metrics of a binary prediction against a binary label.

Counts are taken over all voxels of a volume (micro-averaged within the
volume), as in Harada et al.: precision = TP / (TP + FP), recall =
TP / (TP + FN), F1 = 2 TP / (2 TP + FP + FN) (the Dice coefficient) and
IoU = TP / (TP + FP + FN).  Across volumes, :func:`summarize` gives the mean
and standard deviation of each per-volume value.

Zero denominators: a metric whose denominator is zero is 1.0 when there is
nothing to get wrong (TP = FP = FN = 0, i.e. both prediction and label are
empty) and 0.0 otherwise (an empty prediction against a non-empty label has
precision 0, an empty label against a non-empty prediction has recall 0).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ScribbleSegError

METRICS = ("precision", "recall", "f1", "iou", "mean_section_f1")
"""The per-volume values that :func:`summarize` averages."""


def _mask(value, name: str) -> np.ndarray:
    """``value != 0`` for a ``(Z, Y, X)`` array of labels; anything else (a file name, a probability, NaN)
    is refused rather than scored: a string or a probability map would give a number without a word."""
    if not isinstance(value, np.ndarray):
        raise ScribbleSegError(f"{name} must be a (Z, Y, X) numpy array of labels (0 = not heart), "
                               f"got {type(value).__name__}")
    if value.ndim != 3 or 0 in value.shape:
        raise ScribbleSegError(f"{name} must be a non-empty (Z, Y, X) array, got shape {value.shape}")
    if value.dtype.kind not in "uibf":
        raise ScribbleSegError(f"{name} has dtype {value.dtype}, expected labels (integers or bool)")
    if value.dtype.kind == "f":
        if not np.isfinite(value).all():
            raise ScribbleSegError(f"{name} holds NaN or infinite values")
        if not np.array_equal(value, np.round(value)):
            raise ScribbleSegError(f"{name} holds values between whole numbers (a probability?); threshold it "
                                   f"first, e.g. {name} > 0.5")
    return value != 0


def _masks(pred: np.ndarray, label: np.ndarray, ignore: Optional[np.ndarray]):
    p = _mask(pred, "pred")
    l = _mask(label, "label")
    if p.shape != l.shape:
        raise ScribbleSegError(f"pred has shape {p.shape}, label {l.shape}")
    keep = None
    if ignore is not None:
        keep = ~_mask(ignore, "ignore")
        if keep.shape != l.shape:
            raise ScribbleSegError(f"ignore has shape {keep.shape}, label {l.shape}")
        p &= keep
        l &= keep
    return p, l, keep


def _counts_per_section(pred, label, ignore) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TP, FP, FN and counted voxels per first-axis section, as int64 arrays."""
    p, l, keep = _masks(pred, label, ignore)
    n = p.shape[0] if p.ndim else 1
    p = p.reshape(n, -1)
    l = l.reshape(n, -1)
    tp = np.count_nonzero(p & l, axis=1)
    fp = np.count_nonzero(p, axis=1) - tp
    fn = np.count_nonzero(l, axis=1) - tp
    counted = np.full(n, p.shape[1]) if keep is None else np.count_nonzero(keep.reshape(n, -1), axis=1)
    return tp.astype(np.int64), fp.astype(np.int64), fn.astype(np.int64), counted.astype(np.int64)


def confusion(pred: np.ndarray, label: np.ndarray, ignore: Optional[np.ndarray] = None) -> Tuple[int, int, int, int]:
    """Confusion counts of a binary prediction against a binary label.

    Parameters
    ----------
    pred, label : numpy.ndarray
        Arrays of the same shape; non-zero means foreground.
    ignore : numpy.ndarray, optional
        Mask of the same shape; non-zero voxels are left out of every count
        (for instance the scribbled voxels, which are hard constraints).

    Returns
    -------
    tuple of int
        ``(tp, fp, fn, tn)`` over the counted voxels.

    Examples
    --------
    >>> pred = np.zeros((1, 4, 4), np.uint8); pred[0, :2, :2] = 1
    >>> label = np.zeros((1, 4, 4), np.uint8); label[0, :2, :3] = 1
    >>> confusion(pred, label)
    (4, 0, 2, 10)
    """
    tp, fp, fn, counted = _counts_per_section(pred, label, ignore)
    tp, fp, fn, counted = (int(a.sum()) for a in (tp, fp, fn, counted))
    return tp, fp, fn, counted - tp - fp - fn


def _ratio(numerator: int, denominator: int, errors: int) -> float:
    if denominator:
        return numerator / denominator
    return 0.0 if errors else 1.0


def scores(tp: int, fp: int, fn: int) -> Dict[str, float]:
    """Precision, recall, F1 and IoU from counts, with the module's zero-denominator rule.

    Examples
    --------
    >>> {name: round(value, 3) for name, value in scores(tp=4, fp=0, fn=2).items()}
    {'precision': 1.0, 'recall': 0.667, 'f1': 0.8, 'iou': 0.667}
    >>> scores(tp=-1, fp=2, fn=3)
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: tp, fp and fn must be counts (whole numbers >= 0), got -1, 2, 3
    """
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0 for n in (tp, fp, fn)):
        raise ScribbleSegError(f"tp, fp and fn must be counts (whole numbers >= 0), got {tp!r}, {fp!r}, {fn!r}")
    errors = fp + fn
    return {
        "precision": _ratio(tp, tp + fp, errors),
        "recall": _ratio(tp, tp + fn, errors),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, errors),
        "iou": _ratio(tp, tp + fp + fn, errors),
    }


def evaluate(pred: np.ndarray, label: np.ndarray, ignore: Optional[np.ndarray] = None) -> Dict[str, object]:
    """Volume metrics and per-section F1 of a prediction against a label.

    Parameters
    ----------
    pred, label : numpy.ndarray
        ``(Z, Y, X)`` arrays; non-zero means foreground (heart).
    ignore : numpy.ndarray, optional
        Voxels left out of every count (see :func:`confusion`).

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1``, ``iou`` (floats, see the module
        notes for zero denominators); ``tp``, ``fp``, ``fn``, ``tn`` and
        ``voxels`` (counted voxels) as ints; ``ignored`` (voxels left out);
        ``sections`` (indices of the sections where the label or the
        prediction has foreground among the counted voxels -- only those
        sections are scored, since an empty-vs-empty section says nothing
        about the boundary), ``section_f1`` (their F1, same order) and
        ``mean_section_f1`` (their mean; 1.0 when there is none, matching the
        empty-vs-empty rule).

    Examples
    --------
    >>> pred = np.zeros((1, 4, 4), np.uint8); pred[0, :2, :2] = 1
    >>> label = np.zeros((1, 4, 4), np.uint8); label[0, :2, :3] = 1
    >>> m = evaluate(pred, label)
    >>> m["precision"], round(m["recall"], 3), round(m["iou"], 3), m["tp"], m["fn"]
    (1.0, 0.667, 0.667, 4, 2)
    """
    tp_z, fp_z, fn_z, counted_z = _counts_per_section(pred, label, ignore)
    tp, fp, fn, counted = (int(a.sum()) for a in (tp_z, fp_z, fn_z, counted_z))
    result: Dict[str, object] = dict(scores(tp, fp, fn))
    scored = np.flatnonzero(tp_z + fp_z + fn_z)
    section_f1 = [2 * int(tp_z[k]) / int(2 * tp_z[k] + fp_z[k] + fn_z[k]) for k in scored]
    total = int(np.asarray(label).size)
    result.update(
        tp=tp, fp=fp, fn=fn, tn=counted - tp - fp - fn, voxels=counted, ignored=total - counted,
        sections=[int(k) for k in scored], section_f1=section_f1,
        mean_section_f1=float(np.mean(section_f1)) if section_f1 else 1.0,
    )
    return result


def summarize(results: Sequence[Dict[str, object]], keys: Sequence[str] = METRICS) -> Dict[str, Dict[str, float]]:
    """Mean and standard deviation of each metric over several volumes.

    Parameters
    ----------
    results : sequence of dict
        Outputs of :func:`evaluate`, one per volume.
    keys : sequence of str
        The metrics to summarize; those missing from every result are skipped.

    Returns
    -------
    dict
        ``{metric: {"mean": m, "std": s, "n": count}}``; ``std`` is the
        population standard deviation (0 for a single volume).

    Raises
    ------
    ValueError
        If ``results`` is empty.

    Examples
    --------
    >>> summarize([{"iou": 0.75}, {"iou": 0.85}], keys=("iou",))["iou"]["n"]
    2
    """
    if not results:
        raise ValueError("summarize needs at least one result")
    summary: Dict[str, Dict[str, float]] = {}
    for key in keys:
        values: List[float] = [float(r[key]) for r in results if key in r]
        if values:
            summary[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}
    return summary


#: Where :func:`error_regions` puts each wrong voxel.
ERROR_REGIONS = ("ends", "boundary", "elsewhere")


def end_sections(label: np.ndarray, end_fraction: float = 0.1) -> np.ndarray:
    """The sections where an object tapers off: outside the first-axis extent of ``label`` (non-zero =
    object), or within ``end_fraction`` of that extent from either end.

    Returns a boolean array of one value per section (all True when ``label`` is empty).

    Examples
    --------
    >>> label = np.zeros((20, 4, 4), np.uint8); label[5:15, 1:3, 1:3] = 1
    >>> np.flatnonzero(~end_sections(label))
    array([ 6,  7,  8,  9, 10, 11, 12, 13])
    """
    t = np.asarray(label) != 0
    sections = np.nonzero(t.reshape(t.shape[0], -1).any(axis=1))[0]
    ends = np.ones(t.shape[0], bool)
    if sections.size:
        reach = int(end_fraction * (sections[-1] - sections[0] + 1))
        ends[sections[0] + reach: sections[-1] - reach + 1] = False
    return ends


def grow_mask(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` (2D bool) grown by ``steps`` pixels in the 4-neighbourhood; nothing comes in from outside.

    ``~grow_mask(~mask, n)`` shrinks it (with the outside counted as inside).

    Examples
    --------
    >>> grow_mask(np.eye(3, dtype=bool)[:1], 1).astype(int).tolist()
    [[1, 1, 0]]
    """
    out = mask.copy()
    for _ in range(int(steps)):
        step = out.copy()
        step[1:] |= out[:-1]
        step[:-1] |= out[1:]
        step[:, 1:] |= out[:, :-1]
        step[:, :-1] |= out[:, 1:]
        out = step
    return out


def error_regions(pred: np.ndarray, label: np.ndarray, end_fraction: float = 0.1,
                  band: int = 2) -> Dict[str, Dict[str, float]]:
    """Split the wrong voxels of a prediction by where they lie, and say what fixing each part would give.

    ``ends``: sections outside the label's first-axis extent or within ``end_fraction`` of
    it from either end (where an organ tapers off); ``boundary``: elsewhere, within
    ``band`` pixels in-plane of the label's outline (an inner or outer 2-D band);
    ``elsewhere``: the rest (whole regions missed or added).

    Parameters
    ----------
    pred, label : numpy.ndarray
        ``(Z, Y, X)``, non-zero = object.
    end_fraction : float
        Share of the label's section range counted as its ends, at each end.
    band : int
        Half-width in pixels of the in-plane outline band.

    Returns
    -------
    dict
        For each name in :data:`ERROR_REGIONS`: ``{"voxels": n, "share": n / all wrong,
        "iou_if_fixed": IoU with these voxels set right}``.

    Examples
    --------
    >>> label = np.zeros((20, 16, 16), np.uint8); label[5:15, 4:12, 4:12] = 1
    >>> pred = label.copy(); pred[5] = 0; pred[10, 4, 4:12] = 0
    >>> r = error_regions(pred, label)
    >>> r["ends"]["voxels"], r["boundary"]["voxels"], r["elsewhere"]["voxels"]
    (64, 8, 0)
    >>> round(r["ends"]["iou_if_fixed"], 3)
    0.988
    """
    p = np.asarray(pred) != 0
    t = np.asarray(label) != 0
    if p.shape != t.shape or p.ndim != 3:
        raise ValueError(f"pred and label must be 3-D arrays of one shape, got {p.shape} and {t.shape}")
    wrong = p ^ t
    ends = end_sections(t, end_fraction)
    outline = np.zeros_like(t)
    for z in np.nonzero(~ends)[0]:
        # The heart grown by `band` pixels, less the heart shrunk by `band`: what the grown background does not
        # reach (nothing comes in from outside the image, so a heart at its edge is not shrunk from there).
        outline[z] = grow_mask(t[z], band) & grow_mask(~t[z], band)
    parts = {"ends": wrong & ends[:, None, None]}
    parts["boundary"] = wrong & outline & ~parts["ends"]
    parts["elsewhere"] = wrong & ~outline & ~parts["ends"]
    total = max(1, int(np.count_nonzero(wrong)))
    tp, union = int(np.count_nonzero(p & t)), int(np.count_nonzero(p | t))
    out = {}
    for name in ERROR_REGIONS:
        mask = parts[name]
        fn = int(np.count_nonzero(mask & t))  # fixing a missed voxel adds it to TP; a false one leaves the union
        fp = int(np.count_nonzero(mask & ~t))
        n = fn + fp
        out[name] = {"voxels": n, "share": n / total,
                     "iou_if_fixed": (tp + fn) / (union - fp) if union - fp else 1.0}
    return out
