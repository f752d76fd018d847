"""A classifier of each pixel's own colour, trained on the strokes, for runs that leave the model's bank out.

Where the strokes mark another target than the model's (``DDMLConfig.bank_doubt``), the adaptation learns
from the strokes alone, on the network's features.  Those features were learnt for the model's target and
may hardly tell the strokes' target from its surroundings: with the heart model and strokes on real nuclei,
a linear classifier of the features at the strokes reached IoU 0.27-0.37, one of the pixel's stain colour
0.57-0.64 (BENCHMARKS.md, "Real H&E tiles with pathologists' outlines").  So such a run blends
``h`` with a logistic regression of each pixel's optical density and its optical density blurred over a few
pixels, fitted to the stroked pixels (:func:`fit`, :func:`blend_into`).

Examples
--------
>>> image = np.full((1, 8, 8, 3), 220, np.uint8); image[0, 2:6, 2:6] = (90, 40, 140)  # a dark purple square
>>> strokes = np.zeros((1, 8, 8), np.uint8); strokes[0, 3, 3:5] = 1; strokes[0, 0, :] = 2
>>> h = np.full((1, 8, 8), 0.5, np.float32)
>>> blend_into(h, image, fit(image, strokes), 1.0)
>>> bool(h[0, 4, 4] > 0.9 and h[0, 7, 7] < 0.1)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .optical_density import rgb_to_od
from .progress import CancelToken, check

#: The blur (pixels) of the second half of the colour features: a pixel's neighbourhood, about a nucleus's
#: chromatin grain, so that one pixel's noise does not decide alone.
BLUR_PX = 2.0
#: Ridge penalty of the logistic regression, on standardized features: keeps it finite when the strokes'
#: colours do not overlap.
RIDGE = 1e-2
#: Newton steps of the fit (7 parameters: it has converged long before).
STEPS = 25
#: At most this many stroked pixels per class go into the fit (evenly spaced): enough for 7 parameters.
MOST_PIXELS = 20000


@dataclass(frozen=True)
class ColourModel:
    """A fitted logistic regression of :func:`colour_features`: standardization and weights.

    Examples
    --------
    >>> image = np.zeros((1, 4, 4, 3), np.uint8); image[..., 0] = 200; image[:, :, 2:] = (40, 40, 200)
    >>> strokes = np.zeros((1, 4, 4), np.uint8); strokes[0, 0, 0] = 1; strokes[0, 0, 3] = 2
    >>> model = fit(image, strokes)
    >>> model.mean.shape, model.weights.shape, model.weights.dtype, type(model.bias)  # one weight per feature
    ((6,), (6,), dtype('float32'), <class 'float'>)
    """

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float


def _blur(plane: np.ndarray, sigma: float) -> np.ndarray:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(plane, np.float32))
    return sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, float(sigma)))


def colour_features(section: np.ndarray) -> np.ndarray:
    """``(Y, X, 6)`` float32: a section's optical density per channel, and the same blurred by :data:`BLUR_PX`.

    Examples
    --------
    >>> colour_features(np.full((4, 5, 3), 255, np.uint8)).shape
    (4, 5, 6)
    """
    od = rgb_to_od(section[..., :3])
    if min(od.shape[:2]) < 4:  # SimpleITK's recursive Gaussian needs a few pixels along each axis
        blurred = np.broadcast_to(od.mean(axis=(0, 1)), od.shape)
    else:
        blurred = np.stack([_blur(od[..., c], BLUR_PX) for c in range(3)], -1)
    return np.concatenate([od, blurred], -1).astype(np.float32)


def fit(image: np.ndarray, scribbles: np.ndarray, cancel: Optional[CancelToken] = None) -> Optional[ColourModel]:
    """A logistic regression of :func:`colour_features` fitted to the stroked pixels, the classes weighed
    equally; None without strokes of both classes.

    Parameters
    ----------
    image : numpy.ndarray
        ``(Z, Y, X, 3)`` uint8 RGB.
    scribbles : numpy.ndarray
        ``(Z, Y, X)`` uint8: 1 target, 2 background.
    cancel : CancelToken, optional
        Checked before each stroked section.

    Examples
    --------
    >>> image = np.zeros((1, 4, 4, 3), np.uint8); image[..., 0] = 200; image[:, :, 2:] = (40, 40, 200)
    >>> strokes = np.zeros((1, 4, 4), np.uint8); strokes[0, 0, 0] = 1; strokes[0, 0, 3] = 2
    >>> model = fit(image, strokes)  # red is the target, blue the background
    >>> h = np.full((1, 4, 4), 0.5, np.float32)
    >>> blend_into(h, image, model, weight=0.5)
    >>> bool(h[0, 0, 0] > 0.7), bool(h[0, 0, 3] < 0.3)
    (True, True)
    >>> fit(image, np.where(strokes == 2, 0, strokes).astype(np.uint8)) is None  # one class only
    True
    """
    stroked = np.flatnonzero(scribbles.reshape(len(scribbles), -1).max(axis=1))
    counts = [np.bincount(scribbles[z].ravel(), minlength=3)[1:3] for z in stroked]
    totals = np.sum(counts, axis=0) if counts else np.zeros(2, int)
    if not totals.all():
        return None
    # At most MOST_PIXELS per class, evenly spaced over the strokes: the features of only those are made.
    keep = [max(1, -(-int(n) // MOST_PIXELS)) for n in totals]
    xs, ys = [], []
    for z in stroked:
        check(cancel)
        features = colour_features(image[z])
        for value, step in zip((1, 2), keep):
            ys_, xs_ = np.nonzero(scribbles[z] == value)
            xs.append(features[ys_[::step], xs_[::step]])
            ys.append(np.full(len(xs[-1]), value == 1))
    x, y = np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(np.float64)
    mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-3)
    a = np.column_stack([(x - mean) / scale, np.ones(len(x))])
    # Each class weighs half, however many pixels its strokes cover.
    weight = np.where(y > 0, 0.5 / y.sum(), 0.5 / (len(y) - y.sum()))
    beta = np.zeros(a.shape[1])
    ridge = np.diag([RIDGE] * (a.shape[1] - 1) + [0.0])
    for _ in range(STEPS):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ beta, -30, 30)))
        gradient = a.T @ (weight * (p - y)) + ridge @ beta
        hessian = (a * (weight * p * (1 - p))[:, None]).T @ a + ridge
        beta -= np.linalg.solve(hessian, gradient)
    return ColourModel(mean.astype(np.float32), scale.astype(np.float32), beta[:-1].astype(np.float32),
                       float(beta[-1]))


def blend_into(h: np.ndarray, image: np.ndarray, model: Optional[ColourModel], weight: float,
               cancel: Optional[CancelToken] = None) -> None:
    """``h = (1 - weight) h + weight p_colour`` in place, section by section; nothing when ``model`` is None.

    Parameters
    ----------
    h : numpy.ndarray
        ``(Z, Y, X)`` float32, changed in place.
    image : numpy.ndarray
        ``(Z, Y, X, 3)`` uint8 RGB.
    model : ColourModel or None
        :func:`fit`'s.
    weight : float
        In [0, 1].
    cancel : CancelToken, optional
        Checked before each section.

    Examples
    --------
    >>> h = np.full((1, 2, 2), 0.5, np.float32)
    >>> blend_into(h, np.zeros((1, 2, 2, 3), np.uint8), None, 0.5)  # no colour model: h as it was
    >>> h.tolist()
    [[[0.5, 0.5], [0.5, 0.5]]]
    """
    if model is None or weight <= 0:
        return
    w = np.float32(weight)
    for z in range(h.shape[0]):
        check(cancel)
        logit = ((colour_features(image[z]) - model.mean) / model.scale) @ model.weights + np.float32(model.bias)
        h[z] *= 1 - w
        h[z] += w / (1.0 + np.exp(-np.clip(logit, -30, 30)))
