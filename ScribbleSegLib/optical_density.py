"""Optical density of 8-bit RGB values (Beer-Lambert), in numpy only.

Kept apart from :mod:`stain` (which needs torch) so that making a phantom,
which renders stains through these two functions, never imports torch: the
Slicer module makes its sample phantom before PyTorch is installed.
"""

from __future__ import annotations

import numpy as np

#: Background light intensity; the +1 offset keeps log() finite at I = 0.
I0 = 256.0


def rgb_to_od(rgb: np.ndarray) -> np.ndarray:
    """Optical density of 8-bit RGB values (any shape ending in 3), float32 >= 0."""
    return (-np.log((np.asarray(rgb, dtype=np.float32) + 1.0) / I0)).astype(np.float32)


def od_to_rgb(od: np.ndarray) -> np.ndarray:
    """8-bit RGB values of optical densities (inverse of :func:`rgb_to_od`)."""
    rgb = I0 * np.exp(-np.asarray(od, dtype=np.float32)) - 1.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
