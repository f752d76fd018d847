"""Overlay pictures of sections: prediction, ground truth and scribbles on the image, and heat maps."""

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
    """Pixels of a 2D mask that have a 4-neighbour outside it.

    Examples
    --------
    >>> square = np.zeros((5, 5), bool); square[1:4, 1:4] = True
    >>> boundary(square).astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0],
           [0, 1, 0, 1, 0],
           [0, 1, 1, 1, 0],
           [0, 0, 0, 0, 0]])
    """
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

    Examples
    --------
    >>> section = overlay_section(np.full((4, 4, 3), 200, np.uint8), prediction=np.eye(4, dtype=np.uint8))
    >>> section.shape, section.dtype
    ((4, 4, 3), dtype('uint8'))
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
    """Write a grid of overlaid sections ``sections`` of a ``(Z, Y, X, 3)`` volume to a PNG.

    Examples
    --------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "overlay.png")
    >>> image = np.full((3, 8, 8, 3), 200, np.uint8); prediction = np.zeros((3, 8, 8), np.uint8)
    >>> write_overlay_png(path, image, [0, 2], prediction=prediction)
    >>> import SimpleITK as sitk; sitk.ReadImage(path).GetSize()  # 3 columns of 8 pixels, 4 apart; the third white
    (32, 8)
    """
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


#: Anchors of the heat colour map (blue, cyan, green, yellow, red at 0, 1/4, 1/2, 3/4, 1): the look of
#: Slicer's "ColdToHotRainbow" table, which the panel uses for its heat map.
HEAT_ANCHORS_RGB = np.array([[0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0], [255, 0, 0]], np.float32)


def heat_colors(probability: np.ndarray) -> np.ndarray:
    """Heat colours of probabilities in [0, 1]: blue (0) through green (0.5) to red (1).

    Examples
    --------
    >>> heat_colors(np.array([0.0, 0.5, 1.0])).tolist()
    [[0, 0, 255], [0, 255, 0], [255, 0, 0]]
    """
    p = np.clip(np.asarray(probability, np.float32), 0.0, 1.0) * (len(HEAT_ANCHORS_RGB) - 1)
    low = np.minimum(np.floor(p).astype(int), len(HEAT_ANCHORS_RGB) - 2)
    t = (p - low)[..., None]
    rgb = (1 - t) * HEAT_ANCHORS_RGB[low] + t * HEAT_ANCHORS_RGB[low + 1]
    return np.round(rgb).astype(np.uint8)


def heat_map_section(rgb: np.ndarray, probability: np.ndarray, opacity: float = 0.5, lower: float = 0.05,
                     truth: Optional[np.ndarray] = None) -> np.ndarray:
    """One section with its heart probability blended on in heat colours, as the panel shows it.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(Y, X, 3)`` uint8.
    probability : numpy.ndarray
        ``(Y, X)`` in [0, 1].
    opacity : float
        Weight of the heat colour.
    lower : float
        Probabilities below it are not coloured (the panel's threshold).
    truth : numpy.ndarray, optional
        ``(Y, X)`` mask, outlined.

    Examples
    --------
    >>> out = heat_map_section(np.full((1, 2, 3), 100, np.uint8), np.array([[0.0, 1.0]]), opacity=1.0)
    >>> out[0, 0].tolist(), out[0, 1].tolist()
    ([100, 100, 100], [255, 0, 0])
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity!r}")
    out = rgb.astype(np.float32)
    shown = np.asarray(probability) >= lower
    out[shown] = (1 - opacity) * out[shown] + opacity * heat_colors(probability[shown])
    if truth is not None:
        out[boundary(truth.astype(bool))] = TRUTH_RGB
    return np.clip(out, 0, 255).astype(np.uint8)


def write_heat_map_png(path: Union[str, os.PathLike], image: np.ndarray, probability: np.ndarray,
                       sections: Sequence[int], truth: Optional[np.ndarray] = None, opacity: float = 0.5,
                       columns: int = 3) -> None:
    """Write a grid of sections of a ``(Z, Y, X, 3)`` volume with the heat map of ``(Z, Y, X)`` probabilities.

    Examples
    --------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "heat.png")
    >>> write_heat_map_png(path, np.full((1, 8, 8, 3), 200, np.uint8), np.full((1, 8, 8), 0.9, np.float32), [0])
    >>> import SimpleITK as sitk; sitk.ReadImage(path).GetSize()
    (8, 8)
    """
    tiles = [heat_map_section(image[z], probability[z], opacity, truth=None if truth is None else truth[z])
             for z in sections]
    _write_grid(path, tiles, columns)


def _write_grid(path: Union[str, os.PathLike], tiles: Sequence[np.ndarray], columns: int) -> None:
    import SimpleITK as sitk

    rows = -(-len(tiles) // columns)
    h, w = tiles[0].shape[:2]
    gap = 4
    grid = np.full((rows * (h + gap) - gap, min(columns, len(tiles)) * (w + gap) - gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
    with atomic_output(path) as tmp:
        sitk.WriteImage(sitk.GetImageFromArray(grid, isVector=True), str(tmp))
