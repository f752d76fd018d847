"""Overlay pictures of sections: prediction, ground truth and scribbles on the image."""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import numpy as np

from .fileio import atomic_output

#: RGB colours of the overlay (uint8).
PREDICTION_RGB = np.array([255, 40, 40], np.uint8)
TRUTH_RGB = np.array([20, 200, 60], np.uint8)
HEART_SCRIBBLE_RGB = np.array([255, 220, 0], np.uint8)
BACKGROUND_SCRIBBLE_RGB = np.array([0, 120, 255], np.uint8)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of a 2D mask that have a 4-neighbour outside it."""
    mask = mask.astype(bool)
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def overlay_section(rgb: np.ndarray, prediction: Optional[np.ndarray] = None, truth: Optional[np.ndarray] = None,
                    scribbles: Optional[np.ndarray] = None, alpha: float = 0.35) -> np.ndarray:
    """One section with the prediction tinted, the truth outlined and the scribbles drawn.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(Y, X, 3)`` uint8.
    prediction, truth : numpy.ndarray, optional
        ``(Y, X)`` masks.
    scribbles : numpy.ndarray, optional
        ``(Y, X)`` uint8, 1 heart, 2 background.
    """
    out = rgb.astype(np.float32)
    if prediction is not None:
        p = prediction.astype(bool)
        out[p] = (1 - alpha) * out[p] + alpha * PREDICTION_RGB
        out[boundary(p)] = PREDICTION_RGB
    if truth is not None:
        out[boundary(truth.astype(bool))] = TRUTH_RGB
    if scribbles is not None:
        out[scribbles == 1] = HEART_SCRIBBLE_RGB
        out[scribbles == 2] = BACKGROUND_SCRIBBLE_RGB
    return np.clip(out, 0, 255).astype(np.uint8)


def write_overlay_png(path: Union[str, os.PathLike], image: np.ndarray, sections: Sequence[int],
                      prediction: Optional[np.ndarray] = None, truth: Optional[np.ndarray] = None,
                      scribbles: Optional[np.ndarray] = None, columns: int = 3) -> None:
    """Write a grid of overlaid sections ``sections`` of a ``(Z, Y, X, 3)`` volume to a PNG."""
    import SimpleITK as sitk

    tiles = [overlay_section(image[z],
                             None if prediction is None else prediction[z],
                             None if truth is None else truth[z],
                             None if scribbles is None else scribbles[z]) for z in sections]
    rows = -(-len(tiles) // columns)
    h, w = tiles[0].shape[:2]
    gap = 4
    grid = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
    with atomic_output(path) as tmp:
        sitk.WriteImage(sitk.GetImageFromArray(grid, isVector=True), str(tmp))
