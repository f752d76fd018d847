"""Labels and strokes drawn on one voxel grid, placed on another.

Slicer saves a segmentation, and by default exports a labelmap
(``ExportSegmentsToLabelmapNode``'s ``EXTENT_UNION_OF_EFFECTIVE_SEGMENTS``),
cropped to the box its segments fill: the same voxels as the image's, with
another origin and size.  A segmentation can also be drawn on a finer grid than
the image (Slicer's oversampling).  These functions relate two grids and move
arrays between them; :mod:`ScribbleSegLib.volume_io` reads the files and words
the errors.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from .geometry import Geometry

GRID_TOLERANCE_VOXELS = 0.01
"""How far (in voxels) a grid may be from whole voxels of another and still count as the same grid.

Slicer writes segment offsets, and NIfTI its origin, in single precision; a hundredth of a voxel is far
above that noise."""


def _axes(geometry: Geometry) -> np.ndarray:
    """The 3x3 matrix taking ``(i, j, k)`` index steps to LPS mm."""
    return np.asarray(geometry.direction, dtype=float).reshape(3, 3) * np.asarray(geometry.spacing)[None, :]


def index_in(target: Geometry, own: Geometry) -> Tuple[np.ndarray, np.ndarray]:
    """The affine map from ``own``'s voxel indices to ``target``'s, as ``(matrix, offset)`` in ``(i, j, k)``.

    Examples
    --------
    >>> m, o = index_in(Geometry((1.0, 1.0, 1.0)), Geometry((0.5, 0.5, 1.0), (2.0, 0.0, 0.0)))
    >>> np.diag(m).tolist(), o.tolist()
    ([0.5, 0.5, 1.0], [2.0, 0.0, 0.0])
    """
    inverse = np.linalg.inv(_axes(target))
    return inverse @ _axes(own), inverse @ (np.asarray(own.origin) - np.asarray(target.origin))


def whole_voxel_offset(target: Geometry, own: Geometry) -> Optional[np.ndarray]:
    """Where ``own``'s voxel ``(0, 0, 0)`` lies on ``target``'s grid, as whole voxels ``(z, y, x)``, or None.

    None when ``own`` is not a box of ``target``'s grid: another spacing or
    direction, or an origin off its voxels by more than
    :data:`GRID_TOLERANCE_VOXELS`.

    Examples
    --------
    >>> image = Geometry((0.5, 0.5, 2.0))
    >>> whole_voxel_offset(image, Geometry((0.5, 0.5, 2.0), (1.0, 1.5, 4.0))).tolist()
    [2, 3, 2]
    >>> whole_voxel_offset(image, Geometry((0.5, 0.5, 2.0), (0.25, 0.0, 0.0))) is None
    True
    """
    if target.mismatch(Geometry(own.spacing, target.origin, own.direction)):
        return None
    _, offset = index_in(target, own)
    whole = np.rint(offset)
    if np.any(np.abs(offset - whole) > GRID_TOLERANCE_VOXELS):
        return None
    return whole[::-1].astype(int)


def place(array: np.ndarray, offset_zyx: Sequence[int], shape: Sequence[int]) -> Tuple[np.ndarray, int]:
    """``array`` put into a zero array of ``shape`` with its voxel 0 at ``offset_zyx``.

    Returns
    -------
    placed : numpy.ndarray
        ``shape``, the dtype of ``array``.
    lost : int
        Non-zero voxels of ``array`` that fall outside ``shape``.

    Examples
    --------
    >>> placed, lost = place(np.ones((1, 2, 2), np.uint8), (0, 1, 1), (1, 2, 3))
    >>> placed.tolist(), lost
    ([[[0, 0, 0], [0, 1, 1]]], 2)
    """
    shape = tuple(int(s) for s in shape)
    offset = np.asarray(offset_zyx, dtype=int)
    lo = np.maximum(0, -offset)
    hi = np.minimum(array.shape[:3], np.asarray(shape) - offset)
    out = np.zeros(shape + tuple(array.shape[3:]), dtype=array.dtype)
    kept = 0
    if np.all(hi > lo):
        src = tuple(slice(a, b) for a, b in zip(lo, hi))
        dst = tuple(slice(a + o, b + o) for a, b, o in zip(lo, hi, offset))
        out[dst] = array[src]
        kept = np.count_nonzero(out)
    return out, int(np.count_nonzero(array)) - int(kept)


def union_box(shape_a: Sequence[int], shape_b: Sequence[int], offset_b: Sequence[int]
              ) -> Tuple[Tuple[int, int, int], np.ndarray, np.ndarray]:
    """The smallest box of one grid holding box ``a`` (at 0) and box ``b`` (at ``offset_b``), all ``(z, y, x)``.

    Returns ``(shape, offset of a, offset of b)`` in the union box.

    Examples
    --------
    >>> shape, a, b = union_box((4, 10, 10), (2, 5, 5), (-1, 8, 0))
    >>> shape, a.tolist(), b.tolist()
    ((5, 13, 10), [1, 0, 0], [0, 8, 0])
    """
    a_hi = np.asarray(shape_a, dtype=int)
    b_lo = np.asarray(offset_b, dtype=int)
    b_hi = b_lo + np.asarray(shape_b, dtype=int)
    lo = np.minimum(0, b_lo)
    hi = np.maximum(a_hi, b_hi)
    return tuple(int(s) for s in hi - lo), -lo, b_lo - lo


def box_geometry(geometry: Geometry, offset_zyx: Sequence[int]) -> Geometry:
    """The geometry of the box of ``geometry``'s grid that starts at voxel ``offset_zyx``.

    Examples
    --------
    >>> box_geometry(Geometry((0.5, 0.5, 2.0)), (1, 0, -2)).origin
    (-1.0, 0.0, 2.0)
    """
    start = _axes(geometry) @ np.asarray(list(offset_zyx)[::-1], dtype=float) + np.asarray(geometry.origin)
    return Geometry(geometry.spacing, tuple(start), geometry.direction)


def overlaps(target: Geometry, shape: Sequence[int], own: Geometry, own_shape: Sequence[int]) -> bool:
    """Whether the box of ``own_shape`` voxels on ``own`` and that of ``shape`` on ``target`` share any space.

    Examples
    --------
    >>> g = Geometry((1.0, 1.0, 1.0))
    >>> overlaps(g, (4, 4, 4), Geometry((1.0, 1.0, 1.0), (3.5, 0.0, 0.0)), (2, 2, 2))
    True
    >>> overlaps(g, (4, 4, 4), Geometry((1.0, 1.0, 1.0), (50.0, 0.0, 0.0)), (2, 2, 2))
    False
    """
    matrix, offset = index_in(target, own)
    corners = np.array([[i, j, k] for i in (-0.5, own_shape[2] - 0.5) for j in (-0.5, own_shape[1] - 0.5)
                        for k in (-0.5, own_shape[0] - 0.5)])
    ijk = corners @ matrix.T + offset
    lo, hi = ijk.min(axis=0), ijk.max(axis=0)
    limit = np.asarray(shape[::-1], dtype=float) - 0.5
    return bool(np.all(hi > -0.5) and np.all(lo < limit))


def finer_or_equal(target: Geometry, own: Geometry) -> bool:
    """Whether each voxel of ``own`` spans at most one voxel of ``target`` along each of its axes.

    Then a stroke drawn on ``own`` stays unbroken when each of its voxels marks
    the ``target`` voxel that holds its centre (:func:`strokes_by_centre`).

    Examples
    --------
    >>> image = Geometry((0.5, 0.5, 2.0))
    >>> finer_or_equal(image, Geometry((0.25, 0.25, 2.0))), finer_or_equal(image, Geometry((1.0, 1.0, 2.0)))
    (True, False)
    """
    matrix, _ = index_in(target, own)
    return bool(np.all(np.abs(matrix).sum(axis=1) <= 1.0 + GRID_TOLERANCE_VOXELS))


def same_voxels_reordered(target: Geometry, own: Geometry) -> bool:
    """Whether ``own`` holds ``target``'s voxels with its axes flipped or swapped: each of its voxels is one of
    ``target``'s, so a label on it can be placed exactly (:func:`strokes_by_centre`).

    Examples
    --------
    >>> image = Geometry((0.5, 0.5, 2.0))
    >>> flipped = Geometry((0.5, 0.5, 2.0), (4.5, 0.0, 0.0), (-1, 0, 0, 0, 1, 0, 0, 0, 1))  # x runs the other way
    >>> same_voxels_reordered(image, flipped), same_voxels_reordered(image, Geometry((0.25, 0.5, 2.0)))
    (True, False)
    """
    matrix, offset = index_in(target, own)
    whole = np.rint(matrix)
    return bool(np.allclose(matrix, whole, atol=GRID_TOLERANCE_VOXELS)
                and (np.abs(whole).sum(axis=0) == 1).all() and (np.abs(whole).sum(axis=1) == 1).all()
                and np.allclose(offset, np.rint(offset), atol=GRID_TOLERANCE_VOXELS))


def strokes_by_centre(strokes: np.ndarray, own: Geometry, shape: Sequence[int], target: Geometry
                      ) -> Tuple[np.ndarray, int]:
    """Strokes (1 heart, 2 background) on ``own``'s grid, put on ``target``'s by their voxel centres.

    Each stroke voxel marks the ``target`` voxel that holds its centre; a voxel
    marked by both classes counts as not scribbled, as in a segmentation whose
    two segments overlap.  Meant for a grid at least as fine as the target's
    (:func:`finer_or_equal`), where strokes stay unbroken.

    Returns
    -------
    placed : numpy.ndarray
        ``shape`` uint8.
    lost : int
        Stroke voxels whose centre lies outside ``shape``.

    Examples
    --------
    >>> fine = np.zeros((1, 4, 4), np.uint8); fine[0, 0, :2] = 1; fine[0, 3, 2:] = 2
    >>> placed, lost = strokes_by_centre(fine, Geometry((0.5, 0.5, 1.0), (-0.25, -0.25, 0.0)), (1, 2, 2),
    ...                                  Geometry((1.0, 1.0, 1.0)))
    >>> placed.tolist(), lost
    ([[[1, 0], [0, 2]]], 0)
    """
    shape = tuple(int(s) for s in shape)
    matrix, offset = index_in(target, own)
    marks = []
    lost = 0
    for value in (1, 2):
        kji = np.argwhere(strokes == value)
        ijk = np.rint(kji[:, ::-1] @ matrix.T + offset).astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < np.asarray(shape[::-1])), axis=1)
        lost += int(np.count_nonzero(~inside))
        mask = np.zeros(shape, bool)
        mask[ijk[inside, 2], ijk[inside, 1], ijk[inside, 0]] = True
        marks.append(mask)
    heart, background = marks
    placed = (heart & ~background).astype(np.uint8) + 2 * (background & ~heart).astype(np.uint8)
    return placed, lost
