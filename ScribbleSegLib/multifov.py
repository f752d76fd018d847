"""Multi-field-of-view geometry shared by training and inference.

An M-Unet looks at one point of a section at ``n_fov`` magnifications: level
``k`` is the section area-averaged by ``2**k``, and every expert sees a window
of its level.  Expert outputs are cropped, upsampled by ``2**k`` and aligned on
the full-magnification region that the aggregating CNN works on.

Two layouts use the same arithmetic (:class:`FovGeometry`):

* a training *patch*: every expert sees ``patch x patch`` pixels centred on one
  point (Tokunaga et al., CVPR 2019), so the lower magnifications see 2x and 4x
  more tissue around the same full-magnification patch;
* an inference *tile*: a core of full-magnification pixels, and for each level a
  window that adds the network's whole receptive field (the *halo*) around it.
  Tile origins are multiples of :attr:`FovGeometry.align`, so every pooling grid
  lines up with the section's, and the core of a tile is exactly what the
  network would give for the whole section at once: tiles meet without seams.

Coordinates are ``(y, x)`` in pixels of a level, relative to an anchor (the
patch centre or the tile origin, divided by ``2**k`` on level ``k``).  Reading
past the section border reflects it, so small sections and the wide outer fields
of view need no special case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

Pair = Tuple[int, int]

#: Stride of the weighting CNN's feature cells, in pixels of its level.
WEIGHT_STRIDE = 4
#: Receptive-field radius of the weighting CNN, in pixels of its level (a multiple of WEIGHT_STRIDE).
WEIGHT_RADIUS = 16


# --------------------------------------------------------------------------- pyramid

def downsample2(image: np.ndarray, rows_per_block: int = 512) -> np.ndarray:
    """Area-average 2x2 downsampling of a ``(H, W)`` or ``(H, W, C)`` uint8 array.

    An odd last row or column is paired with its mirror image (the pixel before
    it), as the reflecting border of :func:`crop` would.  The result has
    ``ceil(H / 2) x ceil(W / 2)`` pixels, rounded to uint8; the work is done in
    row blocks so that memory stays near the size of the output.

    Examples
    --------
    >>> downsample2(np.array([[0, 2, 10], [4, 6, 20]], np.uint8))  # the odd column with its mirror: 38 / 4
    array([[ 3, 10]], dtype=uint8)
    """
    image = np.asarray(image)
    h, w = image.shape[:2]
    oh, ow = (h + 1) // 2, (w + 1) // 2
    out = np.empty((oh, ow) + image.shape[2:], dtype=np.uint8)
    cols = _pair_indices(w)
    for r0 in range(0, oh, rows_per_block):
        r1 = min(oh, r0 + rows_per_block)
        rows = _pair_indices(h)[2 * r0:2 * r1]
        block = image[rows][:, cols].astype(np.float32)
        block = block.reshape((r1 - r0, 2, ow, 2) + image.shape[2:]).mean(axis=(1, 3))
        out[r0:r1] = np.rint(block)
    return out


def _pair_indices(n: int) -> np.ndarray:
    idx = np.arange(2 * ((n + 1) // 2))
    if n % 2:
        idx[-1] = max(n - 2, 0)
    return idx


def build_pyramid(section: np.ndarray, n_levels: int) -> List[np.ndarray]:
    """Levels ``0 .. n_levels-1`` of a section: level 0 is ``section`` itself (no copy).

    Examples
    --------
    >>> section = np.zeros((5, 7, 3), np.uint8)
    >>> levels = build_pyramid(section, 3)
    >>> [level.shape for level in levels], levels[0] is section
    ([(5, 7, 3), (3, 4, 3), (2, 2, 3)], True)
    """
    levels = [np.asarray(section)]
    for _ in range(1, n_levels):
        levels.append(downsample2(levels[-1]))
    return levels


def reflect_indices(start: int, size: int, n: int) -> np.ndarray:
    """Indices ``start .. start+size-1`` folded into ``[0, n)`` by mirror reflection (no edge repeat).

    Examples
    --------
    >>> reflect_indices(-2, 7, 4).tolist()  # two before the start and one past the end, mirrored
    [2, 1, 0, 1, 2, 3, 2]
    """
    idx = np.arange(start, start + size)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def crop(array: np.ndarray, start: Pair, size: Pair) -> np.ndarray:
    """``array[y0:y0+h, x0:x0+w]`` for any ``start``, reflecting past the borders.

    Examples
    --------
    >>> crop(np.arange(4)[None], (0, -2), (1, 7)).tolist()
    [[2, 1, 0, 1, 2, 3, 2]]
    """
    (y0, x0), (h, w) = start, size
    if 0 <= y0 and y0 + h <= array.shape[0] and 0 <= x0 and x0 + w <= array.shape[1]:
        return array[y0:y0 + h, x0:x0 + w]
    rows = reflect_indices(y0, h, array.shape[0])
    cols = reflect_indices(x0, w, array.shape[1])
    return array[rows[:, None], cols[None, :]]


# --------------------------------------------------------------------------- geometry

@dataclass(frozen=True)
class Window:
    """A window of pyramid level ``level``: ``start`` and ``size`` in that level's pixels.

    Examples
    --------
    Level 1 of a 4x8 section is 2x4; a window two of its pixels left of the anchor:

    >>> levels = build_pyramid(np.arange(32, dtype=np.uint8).reshape(4, 8) * 8, 2)
    >>> extract(levels, [Window(1, (0, -2), (1, 3))], anchor=(0, 4))[0].tolist()
    [[36, 52, 68]]
    """

    level: int
    start: Pair
    size: Pair


@dataclass(frozen=True)
class Alignment:
    """How to put a low-resolution map onto the aggregation region.

    Crop ``[start, start+size)`` of the map, upsample it ``factor`` times
    (bilinear, half-pixel centres), then crop ``[offset, offset+out_size)``.

    Examples
    --------
    The 1/4-magnification expert of a 64-pixel training patch: 18 pixels of its map,
    upsampled to 72, give the 64 kept after an offset of 4:

    >>> from ScribbleSegLib.nets import ModelConfig
    >>> patch_geometry(ModelConfig(patch=64)).experts[2]
    Alignment(start=(23, 23), size=(18, 18), factor=4, offset=(4, 4), out_size=(64, 64))
    """

    start: Pair
    size: Pair
    factor: int
    offset: Pair
    out_size: Pair


@dataclass(frozen=True)
class FovGeometry:
    """Where each network input comes from and how the outputs line up.

    Attributes
    ----------
    windows : tuple of Window
        One input window per expert (level ``k`` for expert ``k``), then, when
        the model weights its experts, the weighting CNN's window.
    experts : tuple of Alignment
        Puts each expert's output onto the aggregation region.
    weights : Alignment or None
        Puts the weighting CNN's cell map onto the aggregation region (tiles);
        ``None`` for a patch, whose weights are one number per expert.
    weight_crop : (start, size) or None
        Cells of the weighting CNN's output that the box mean runs over (tiles).
    box : int
        Side, in cells, of the box mean that gives a cell its weights: the cells
        of one training patch.
    core : (start, size)
        The part of the aggregation region that is kept.
    align : int
        Tile origins must be multiples of this (full-magnification pixels).

    Examples
    --------
    >>> from ScribbleSegLib.nets import ModelConfig
    >>> geom = patch_geometry(ModelConfig(patch=64, n_fov=3))
    >>> [w.level for w in geom.windows], geom.core, geom.align, geom.weights
    ([0, 1, 2], ((0, 0), (64, 64)), 4, None)
    """

    windows: Tuple[Window, ...]
    experts: Tuple[Alignment, ...]
    weights: Optional[Alignment]
    weight_crop: Optional[Tuple[Pair, Pair]]
    box: int
    core: Tuple[Pair, Pair]
    align: int


def _floor_to(v: int, q: int) -> int:
    return (v // q) * q


def _ceil_to(v: int, q: int) -> int:
    return -((-v) // q) * q


def weight_level(n_fov: int) -> int:
    """The level the weighting CNN looks at: the middle field of view (10x of 20x/10x/5x).

    Examples
    --------
    >>> weight_level(3), weight_level(1)  # one field of view: its own
    (1, 0)
    """
    return min(1, n_fov - 1)


def patch_geometry(config) -> FovGeometry:
    """Layout of a training patch centred on a point (a multiple of ``2**(n_fov-1)``).

    Examples
    --------
    Every expert sees ``patch x patch`` pixels of its own level around the centre:

    >>> from ScribbleSegLib.nets import ModelConfig
    >>> geom = patch_geometry(ModelConfig(patch=64, n_fov=3, weighting=True))
    >>> [(w.level, w.start, w.size) for w in geom.windows]  # three experts, then the weighting CNN
    [(0, (-32, -32), (64, 64)), (1, (-32, -32), (64, 64)), (2, (-32, -32), (64, 64)), (1, (-32, -32), (64, 64))]
    """
    p = config.patch
    half = p // 2
    n_fov = config.n_fov if config.arch == "munet" else 1
    windows = [Window(k, (-half, -half), (p, p)) for k in range(n_fov)]
    experts = []
    for k in range(n_fov):
        f = 2 ** k
        if f == 1:
            experts.append(Alignment((0, 0), (p, p), 1, (0, 0), (p, p)))
            continue
        # The centre p/f pixels of level k, plus one for the bilinear stencil, cover the level-0 patch.
        lo = half - half // f - 1
        n = p // f + 2
        experts.append(Alignment((lo, lo), (n, n), f, (f, f), (p, p)))
    if config.arch == "munet" and config.weighting:
        windows.append(Window(weight_level(n_fov), (-half, -half), (p, p)))
    return FovGeometry(tuple(windows), tuple(experts), None, None, p // WEIGHT_STRIDE,
                       ((0, 0), (p, p)), 2 ** (n_fov - 1))


def tile_alignment(config) -> int:
    """Tile origins that keep every pooling grid in step with the section's.

    Examples
    --------
    >>> from ScribbleSegLib.nets import ModelConfig
    >>> [tile_alignment(c) for c in (ModelConfig(), ModelConfig(arch="unet"), ModelConfig.paper())]
    [16, 4, 64]
    """
    n_fov = config.n_fov if config.arch == "munet" else 1
    a = 2 ** (n_fov - 1) * 2 ** (config.depth - 1)
    if config.arch == "munet" and config.weighting:
        a = max(a, WEIGHT_STRIDE * 2 ** weight_level(n_fov))
    return a


def tile_geometry(config, core: Pair, expert_radius: int, aggregator_radius: int) -> FovGeometry:
    """Layout of an inference tile whose core is ``core`` = ``(h, w)`` full-magnification pixels.

    Parameters
    ----------
    config : nets.ModelConfig
    core : (int, int)
        Size of the kept output, multiples of :func:`tile_alignment`.
    expert_radius : int
        Receptive-field radius of an expert U-Net, in pixels of its level.
    aggregator_radius : int
        Receptive-field radius of the aggregating CNN (0 for a plain U-Net).

    Examples
    --------
    A 32-pixel core with a 2-pixel aggregator margin; each expert's window adds its radius of 23 on its level,
    rounded out to its pooling grid:

    >>> from ScribbleSegLib.nets import ModelConfig
    >>> geom = tile_geometry(ModelConfig(n_fov=3, depth=3), (32, 32), expert_radius=23, aggregator_radius=2)
    >>> geom.core, [(w.start[0], w.size[0]) for w in geom.windows]
    (((2, 2), (32, 32)), [(-28, 88), (-28, 72), (-28, 64)])
    """
    n_fov = config.n_fov if config.arch == "munet" else 1
    q = 2 ** (config.depth - 1)
    m = aggregator_radius
    windows, experts = [], []
    out_size = (core[0] + 2 * m, core[1] + 2 * m)
    for k in range(n_fov):
        f = 2 ** k
        pad = 1 if f > 1 else 0
        starts, sizes, crops, crop_sizes, offsets = [], [], [], [], []
        for c in core:
            n0 = (-m) // f - pad
            n1 = -((-(c + m)) // f) + pad
            a = _floor_to(n0 - expert_radius, q)
            b = _ceil_to(n1 + expert_radius, q)
            starts.append(a)
            sizes.append(b - a)
            crops.append(n0 - a)
            crop_sizes.append(n1 - n0)
            offsets.append(-m - n0 * f)
        windows.append(Window(k, tuple(starts), tuple(sizes)))
        experts.append(Alignment(tuple(crops), tuple(crop_sizes), f, tuple(offsets), out_size))
    weights = weight_crop = None
    box = config.patch // WEIGHT_STRIDE
    if config.arch == "munet" and config.weighting:
        lw = weight_level(n_fov)
        fw = WEIGHT_STRIDE * 2 ** lw
        starts, sizes, crops, crop_sizes, offsets, cells = [], [], [], [], [], []
        for c in core:
            c0 = (-m) // fw - 1
            c1 = -((-(c + m)) // fw) + 1
            e0, e1 = c0 - box // 2, c1 + box - box // 2 - 1
            a = WEIGHT_STRIDE * e0 - WEIGHT_RADIUS
            starts.append(a)
            sizes.append(WEIGHT_STRIDE * e1 + WEIGHT_RADIUS - a)
            cells.append((WEIGHT_RADIUS // WEIGHT_STRIDE, e1 - e0))
            crops.append(0)
            crop_sizes.append(c1 - c0)
            offsets.append(-m - c0 * fw)
        windows.append(Window(lw, tuple(starts), tuple(sizes)))
        weight_crop = ((cells[0][0], cells[1][0]), (cells[0][1], cells[1][1]))
        weights = Alignment(tuple(crops), tuple(crop_sizes), fw, tuple(offsets), out_size)
    return FovGeometry(tuple(windows), tuple(experts), weights, weight_crop, box,
                       ((m, m), tuple(core)), tile_alignment(config))


def extract(pyramid: Sequence[np.ndarray], windows: Sequence[Window], anchor: Pair) -> List[np.ndarray]:
    """Crop every window of a geometry around ``anchor`` (full-magnification pixels).

    Examples
    --------
    >>> from ScribbleSegLib.nets import ModelConfig
    >>> geom = patch_geometry(ModelConfig(patch=64, n_fov=3))
    >>> crops = extract(build_pyramid(np.zeros((100, 120, 3), np.uint8), 3), geom.windows, anchor=(50, 60))
    >>> [c.shape for c in crops]  # past the section's border, reflected
    [(64, 64, 3), (64, 64, 3), (64, 64, 3)]
    """
    out = []
    for win in windows:
        f = 2 ** win.level
        start = (anchor[0] // f + win.start[0], anchor[1] // f + win.start[1])
        out.append(crop(pyramid[win.level], start, win.size))
    return out
