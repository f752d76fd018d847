"""Optical density of 8-bit RGB values (Beer-Lambert), and whether they hold colour at all, in numpy only.

Kept apart from :mod:`stain` (which needs torch) so that making a phantom,
which renders stains through these two functions, never imports torch: the
Slicer module makes its sample phantom before PyTorch is installed.  Reading
a folder of sections asks :func:`is_grey` too, without torch.
"""

from __future__ import annotations

import numpy as np

#: Background light intensity; the +1 offset keeps log() finite at I = 0.
I0 = 256.0


def rgb_to_od(rgb: np.ndarray) -> np.ndarray:
    """Optical density of 8-bit RGB values (any shape ending in 3), float32 >= 0.

    Examples
    --------
    >>> od = rgb_to_od(np.array([[255, 255, 255], [128, 64, 200]], np.uint8))
    >>> od.dtype, [round(float(v), 3) for v in od[1]], bool(od[0].max() == 0)
    (dtype('float32'), [0.685, 1.371, 0.242], True)
    """
    return (-np.log((np.asarray(rgb, dtype=np.float32) + 1.0) / I0)).astype(np.float32)


def od_to_rgb(od: np.ndarray) -> np.ndarray:
    """8-bit RGB values of optical densities (inverse of :func:`rgb_to_od`).

    Examples
    --------
    >>> od_to_rgb(rgb_to_od(np.array([128, 64, 200], np.uint8))).tolist()
    [128, 64, 200]
    """
    rgb = I0 * np.exp(-np.asarray(od, dtype=np.float32)) - 1.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


#: Tissue pixels whose channels differ by this many levels or fewer on average are grey (a JPEG of a grey scan
#: keeps 1-2 levels of chroma noise; the palest real H&E tissue differs by tens).
GREY_SPREAD = 4


def is_grey(pixels: np.ndarray) -> bool:
    """Whether tissue pixels (N, 3) uint8 hold no colour: their channels' spread is :data:`GREY_SPREAD` or less.

    Examples
    --------
    >>> is_grey(np.array([[120, 121, 119], [80, 80, 81]], np.uint8)), is_grey(np.array([[150, 60, 170]], np.uint8))
    (True, False)
    """
    return float(np.mean(np.ptp(np.asarray(pixels).astype(np.int16), axis=1))) <= GREY_SPREAD
