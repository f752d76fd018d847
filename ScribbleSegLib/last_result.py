"""The last result kept away from the new strokes, in runs that leave the model's bank out.

Where the strokes mark another target than the model's (``DDMLConfig.bank_doubt``), ``h`` comes from a classifier
trained on the strokes alone (:func:`ScribbleSegLib.ddml.adapt` with the bank left out).  It is global: each
corrective stroke moves its decision over every pixel that looks alike, and where ``h`` lies close to 1/2 over a
whole region, correct strokes on one part of the image flipped regions far from them.  With the starter model on
real oral carcinoma tiles, 6 of 15 runs fell by more than 0.01 between two rounds of correct strokes, one by 0.12
(BENCHMARKS.md, "The last result kept away from the new strokes").

A user who adds strokes to a result has looked at it: where they drew nothing new, they let it stand.  So a run
whose strokes add to those of the last run of its chain moves the log-odds of ``h`` towards that run's result
(:meth:`ScribbleSegLib.stroke_history.StrokeHistory.last_result`) by ``weight * (1 - exp(-d / reach))`` logits,
``d`` the distance to the nearest new stroke in pixels (:func:`keep_last`).  Near the new strokes ``h`` is the
adaptation's own; far from them a confident change of the adaptation still goes through, a small one does not.

A pull on ``h`` cannot stop a confident change, and the strokes alone made confident ones: background strokes in a
false nuclei region taught the classifier that the paler true nuclei all over the tile were background.  So the
classifier is also trained on the last result itself (:func:`anchor_pixels`): its pixels far from the new strokes
take the bank's place in the pool (``DDMLConfig.keep_last_pixels``), and the classifier has to tell the stroked
pixels from the ones the user let stand instead of moving its threshold over the whole image.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

#: Beyond this many ``reach`` from the nearest new stroke the weight is taken as whole (1 - e^-5 = 0.993): the
#: distances are computed in a box around the new strokes only.
BOX_REACHES = 5.0
#: ``h`` is clipped this far from 0 and 1 before its log-odds are taken (a float32 ``h`` of exactly 0 or 1).
H_MARGIN = 1e-6
#: The last result's training pixels lie farther than this many ``reach`` from every new stroke (:func:`anchor_pixels`):
#: the pull of :func:`keep_last` is 95 % whole there; closer, the last result is what the new strokes correct.
ANCHOR_REACHES = 3.0
#: Added to the run's seed for :func:`anchor_pixels`' draws: a stream of their own, apart from the pool's.
ANCHOR_STREAM = 7


def new_strokes(scribbles: np.ndarray, last_voxels: np.ndarray) -> np.ndarray:
    """The stroked voxels of ``scribbles`` that the last run had not stroked (``last_voxels``: its flat indices).

    Examples
    --------
    >>> scribbles = np.zeros((1, 2, 3), np.uint8); scribbles[0, 0, :2] = 1; scribbles[0, 1, 2] = 2
    >>> new_strokes(scribbles, np.array([0, 1])).astype(int).tolist()
    [[[0, 0, 0], [0, 0, 1]]]
    """
    new = scribbles.reshape(-1) != 0
    new[np.asarray(last_voxels, np.int64)] = False
    return new.reshape(scribbles.shape)


def far_weights(new: np.ndarray, spacing_zyx: Sequence[float], reach: float) -> Tuple[Optional[tuple], np.ndarray]:
    """``1 - exp(-d / reach)`` in a box around the ``new`` strokes, ``d`` the distance to the nearest one in pixels
    of the finer in-plane size (sections as far apart as ``spacing_zyx`` says).

    Returns ``(box, weights)``: the box as slices of the volume and its float32 weights; beyond the box the weight
    is 1.  ``(None, empty)`` where there are no new strokes: 1 everywhere.

    Examples
    --------
    >>> new = np.zeros((1, 1, 40), bool); new[0, 0, 0] = True
    >>> box, w = far_weights(new, (1.0, 1.0, 1.0), 4.0)
    >>> box, w.shape, [round(float(w[0, 0, x]), 3) for x in (0, 4, 19)]
    ((slice(0, 1, None), slice(0, 1, None), slice(0, 21, None)), (1, 1, 21), [0.0, 0.632, 0.991])
    """
    from .stroke_pull import distance_map

    where = np.nonzero(new)
    if not where[0].size:
        return None, np.ones((0, 0, 0), np.float32)
    pixel = float(min(spacing_zyx[1], spacing_zyx[2]))
    sizes = [max(1, int(np.ceil(BOX_REACHES * reach * pixel / float(s)))) for s in spacing_zyx]
    box = tuple(slice(max(0, int(w.min()) - k), min(n, int(w.max()) + k + 1))
                for w, k, n in zip(where, sizes, new.shape))
    d = distance_map(new[box], spacing_zyx, pixel)
    return box, (-np.expm1(-d / np.float32(reach))).astype(np.float32, copy=False)


def keep_last(h: np.ndarray, last: np.ndarray, new: np.ndarray, spacing_zyx: Sequence[float], weight: float,
              reach: float, far: Optional[Tuple[Optional[tuple], np.ndarray]] = None) -> None:
    """Move ``h`` towards the ``last`` labels away from the ``new`` strokes, in place.

    ``logit h += weight * (2 last - 1) * (1 - exp(-d / reach))``, ``d`` the distance of each voxel to the nearest
    new stroke in pixels (:func:`far_weights`; everywhere the whole ``weight`` where nothing is new).

    Parameters
    ----------
    h : numpy.ndarray
        ``(Z, Y, X)`` float32 probability, changed in place.
    last : numpy.ndarray
        ``(Z, Y, X)`` labels of the last result (1 target).
    new : numpy.ndarray
        ``(Z, Y, X)`` bool: the strokes the last run did not have (:func:`new_strokes`).
    spacing_zyx : sequence of 3 float
        The voxel size, array-axis order.
    weight : float
        Logits, at most: 0 leaves ``h`` as it is.
    reach : float
        Pixels: where the pull of the last result is 63 % of ``weight``.
    far : tuple, optional
        ``far_weights(new, spacing_zyx, reach)``, where the caller has it already.

    Examples
    --------
    >>> h = np.full((1, 1, 30), 0.45, np.float32)  # a shade below 1/2 everywhere
    >>> last = np.ones((1, 1, 30), np.uint8)  # the last result: all target
    >>> new = np.zeros((1, 1, 30), bool); new[0, 0, 0] = True  # one new stroke, at the left
    >>> keep_last(h, last, new, (1.0, 1.0, 1.0), 0.5, 4.0)
    >>> [bool(h[0, 0, x] > 0.5) for x in (0, 2, 29)]  # the last result stands away from the new stroke
    [False, False, True]
    """
    if weight <= 0:
        return
    box, far = far if far is not None else far_weights(new, spacing_zyx, reach)
    w = np.float32(weight)
    for z in range(h.shape[0]):
        plane = np.clip(h[z], H_MARGIN, 1 - H_MARGIN)
        logit = np.log(plane) - np.log1p(-plane)
        pull = np.where(last[z] > 0, w, -w).astype(np.float32)
        if box is not None and box[0].start <= z < box[0].stop:
            pull[box[1], box[2]] *= far[z - box[0].start]
        logit += pull
        h[z] = 1.0 / (1.0 + np.exp(-logit))


def anchor_pixels(features: np.ndarray, scribbles: np.ndarray, last: np.ndarray, new: np.ndarray,
                  spacing_zyx: Sequence[float], reach: float, n: int, seed: int = 0,
                  far: Optional[Tuple[Optional[tuple], np.ndarray]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Training pixels from the ``last`` result: features and labels of up to ``n`` voxels of each class, drawn at
    random from the unstroked voxels farther than :data:`ANCHOR_REACHES` ``reach`` from every ``new`` stroke.

    They take the model's bank's place in a run that leaves the bank out (:func:`ScribbleSegLib.ddml.adapt`'s
    ``bank_features`` and ``bank_labels``; ``DDMLConfig.keep_last_pixels``).

    Parameters
    ----------
    features : numpy.ndarray
        ``(Z, Y, X, C)`` M-Unet features (a memmap is fine: only the drawn voxels are read).
    scribbles : numpy.ndarray
        ``(Z, Y, X)`` uint8 strokes of this run (0 none).
    last, new : numpy.ndarray
        ``(Z, Y, X)`` the last result's labels (1 target) and the new strokes (:func:`new_strokes`).
    spacing_zyx : sequence of 3 float
        The voxel size, array-axis order.
    reach : float
        Pixels (``DDMLConfig.keep_last_reach``).
    n : int
        At most this many voxels of each class.
    seed : int
    far : tuple, optional
        ``far_weights(new, spacing_zyx, reach)``, where the caller has it already (:func:`keep_last` uses the same).

    Returns
    -------
    x : numpy.ndarray
        float32 ``(m, C)``, the target's voxels first.
    y : numpy.ndarray
        uint8 ``(m,)``: 1 target, 0 background.

    Examples
    --------
    >>> features = np.arange(40, dtype=np.float32).reshape(1, 1, 40, 1)
    >>> last = np.zeros((1, 1, 40), np.uint8); last[0, 0, 30:] = 1
    >>> scribbles = np.zeros((1, 1, 40), np.uint8); scribbles[0, 0, 0] = 2; scribbles[0, 0, 39] = 1
    >>> new = scribbles > 0; new[0, 0, 39] = False  # the background stroke at 0 is new
    >>> x, y = anchor_pixels(features, scribbles, last, new, (1.0, 1.0, 1.0), 2.0, n=3)
    >>> y.tolist(), bool(x[:3].min() >= 30 and x[3:].min() > 6)  # none within 6 pixels of the new stroke
    ([1, 1, 1, 0, 0, 0], True)
    """
    from .feature_reader import FeatureReader

    box, weights = far if far is not None else far_weights(new, spacing_zyx, reach)
    far = scribbles == 0
    if box is not None:
        far[box] &= weights > -np.expm1(-ANCHOR_REACHES)
    rng = np.random.default_rng(seed + ANCHOR_STREAM)
    xs, ys = [], []
    for label in (1, 0):
        voxels = np.flatnonzero(far.reshape(-1) & ((last.reshape(-1) > 0) == bool(label)))
        if voxels.size:  # sorted: a memmap read in order
            voxels = np.sort(rng.choice(voxels, size=min(n, voxels.size), replace=False))
        xs.append(np.asarray(FeatureReader(features).voxels(voxels), np.float32).reshape(voxels.size,
                                                                                        features.shape[-1]))
        ys.append(np.full(voxels.size, label, np.uint8))
    return np.concatenate(xs), np.concatenate(ys)
