"""The band of the coarse-to-fine graph cut: its blocks, how it grows, and its max-flow graph.

A coarse-to-fine cut (``mode="banded"``; the module docstring of :mod:`ScribbleSegLib.graphcut` tells it whole)
cuts the volume on blocks of voxels (:func:`_coarsen_factors`, :func:`_downsample`) and re-cuts at full resolution
only a band of whole blocks around the coarse boundary (:func:`_coarse_band`), with the heart a coarse cut drops
around its strokes (:func:`_heart_dropped_at_strokes`) and the pieces it drops apart from the heart it keeps
(:func:`_pieces_dropped_apart`).  Here is that band: its blocks numbered as graph nodes (:class:`_Band`,
:class:`_BandChunk`), the graph over them, which grows where the new boundary reaches the band's edge and runs its
max-flow on from the last flow (:class:`_Region`, :func:`_recut_until_settled`), and what it costs in memory.
A warm cut (:mod:`ScribbleSegLib.cut_memory`) re-cuts the same way, on the band graph kept from the last cut.

The function that runs a coarse-to-fine cut (``graphcut._cut_banded``) stays in :mod:`ScribbleSegLib.graphcut`
with the planning it calls for the coarse level (which may itself be cut coarse-to-fine), so that this module does
not import that one.  The band's notes go to the logger of :mod:`ScribbleSegLib.graphcut`, as all the cut's do.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Iterator, Optional, Sequence, Tuple

import maxflow
import numpy as np

from . import runtime
from .cut_levels import (_BOTH, _CROFTON_DIAGONAL, _DIAGONALS, _HEART, _CoarseLevel, _Level, _axis_share,
                         _fmt_bytes, _fmt_shape, _neighbourhood, _pair_slices, _unary)
from .errors import ScribbleSegError
from .progress import CancelToken, ProgressCallback, check, report
from .runtime import in_order, in_threads, slab_threads, slabs

#: Bytes per voxel of a 6-connected ``Graph[float]`` sized up front: a 48 B node and six 32 B arcs
#: (BK maxflow 3.04 in PyMaxflow 1.3.2).  A whole full cut of 64x512x512 measured 249 B/voxel.
GRAPH_BYTES_PER_VOXEL = 240
#: Bytes per band voxel of the band re-cut: the graph and node ids.
BAND_BYTES_PER_VOXEL = GRAPH_BYTES_PER_VOXEL + 16
#: Bytes per voxel that the in-plane diagonals add to a graph: two more pairs, four arcs of 32 B.
DIAGONAL_BYTES_PER_VOXEL = 128
#: Working memory of the slab- and chunk-wise computations, independent of the volume size (generous).
WORKING_BYTES = 256 * 2**20
#: Threads that weigh a band chunk's groups of pairs while the calling thread adds them to the graph.  Each holds
#: a group's weights and indices meanwhile (two raised the cut's peak at 100x512x512 by 0.04 GiB), and more would
#: mostly wait: at 100x512x512 the additions took 0.20-0.28 s of the 0.55 s (BENCHMARKS.md, "Interactive speed"
#: item 48).
BAND_WEIGHING_THREADS = 2
#: Half-width of the band re-cut around the coarse boundary, in full-resolution voxels along the finest
#: axis; along thick sections the band reaches as far in millimetres, in fewer sections (at least one
#: block beyond the boundary's).
BAND_RADIUS = 3
#: The same on a level of at most :data:`WIDE_BAND_MAX_VOXELS` voxels, which :data:`graphcut.AUTO_FULL_MAX_VOXELS` no
#: longer cuts in full: there the wider band costs a tenth more than the narrow one and keeps the rounds' mean
#: IoU within 0.001 of the full cut's, where the narrow one lost up to 0.0034 (BENCHMARKS.md, "Interactive
#: speed", item 60); on larger levels its cost grows with the boundary's area (+30 % at 100x512x512).
WIDE_BAND_RADIUS = 5
#: A full-resolution level of at most this many voxels is small (:func:`_small_level`): the old limit of the
#: full cut (:data:`graphcut.AUTO_FULL_MAX_VOXELS`), below which a warm cut also re-cuts larger bands.
WIDE_BAND_MAX_VOXELS = 2**23
#: The same for a coarse level cut coarse-to-fine (see :data:`graphcut.COARSE_FULL_MAX_VOXELS`), in its own voxels:
#: what its band misses, the band of every level above misses too.
COARSE_BAND_RADIUS = 6
#: Extra band re-cuts, each around where the boundary reached the edge of the previous band.
BAND_GROWTH_PASSES = 8

# The band's notes go to the graph cut's logger, with the rest of the cut's (as before the cut was split).
_log = logging.getLogger("ScribbleSegLib.graphcut")


def _band_bytes_per_voxel(neighbourhood: int) -> int:
    return BAND_BYTES_PER_VOXEL + (DIAGONAL_BYTES_PER_VOXEL if neighbourhood == 10 else 0)


def _band_cut_bytes(nodes: int, neighbourhood: int) -> int:
    """Memory of a band re-cut of ``nodes`` voxels."""
    return nodes * _band_bytes_per_voxel(neighbourhood) + WORKING_BYTES


def _coarsen_factors(shape: Sequence[int], spacing: Sequence[float]) -> Tuple[int, int, int]:
    """Halve the axes whose spacing is within 1.5x of the finest, so thick sections stay whole."""
    finest = min(spacing)
    return tuple(2 if n >= 2 and s <= 1.5 * finest else 1 for n, s in zip(shape, spacing))


def _block_reduce(a: np.ndarray, f: Sequence[int], how: str) -> np.ndarray:
    """Combine the ``f[0] x f[1] x f[2]`` blocks of ``a``: ``mean`` (float32, edge-padded),
    ``sum`` or ``or`` (zero-padded)."""
    if how == "mean":
        a = a.astype(np.float32, copy=False)
    combine = np.bitwise_or if how == "or" else np.add
    for axis, k in enumerate(f):
        if k == 1:
            continue
        if a.shape[axis] % k:
            pad = [(0, 0)] * a.ndim
            pad[axis] = (0, -a.shape[axis] % k)
            a = np.pad(a, pad, mode="edge" if how == "mean" else "constant")
        parts = [a[(slice(None),) * axis + (slice(i, None, k),)] for i in range(k)]
        a = combine(parts[0], parts[1])
        for part in parts[2:]:
            combine(a, part, out=a)
    if how == "mean":
        a = a * np.float32(1.0 / np.prod(f))
    return a


def _downsample(level: _Level, f: Tuple[int, int, int], cancel: Optional[CancelToken],
                weights: Optional[Sequence[np.ndarray]] = None) -> _CoarseLevel:
    """``level`` on ``f`` blocks, with the energy of ``level`` restricted to block-constant labels.

    ``weights``: the coarse pair weights of an earlier call on the same image (they depend on
    nothing else), used instead of being computed again.

    On block-constant labels the data term of a block of ``n`` voxels is
    ``n |l - mean(h)|``, and the pair term across a block face is the sum of the
    fine pair weights crossing it.  Dividing both by ``n`` gives the coarse
    energy: its minimum is the best block-constant labelling of the fine energy
    (exactly so away from the blocks that the volume's edge cuts off).
    """
    coarse_shape = tuple(-(-n // k) for n, k in zip(level.shape, f))
    h = np.empty(coarse_shape, np.float32)
    seeds = np.empty(coarse_shape, np.uint8)
    known = weights is not None
    weights = list(weights) if known else [np.empty(coarse_shape, np.float32) for _ in range(3)]
    def slab(z0: int, z1: int) -> None:
        check(cancel)
        c0, c1 = z0 // f[0], -(-z1 // f[0])
        h[c0:c1] = _block_reduce(level.data(z0, z1), f, "mean")
        seeds[c0:c1] = _block_reduce(level.seeds[z0:z1], f, "or")
        for axis in range(0 if known else 3):
            # The pairs that leave each block through its far face along the axis.
            faces = level.forward_weights(axis, z0, z1, every=f[axis])
            across = tuple(1 if a == axis else k for a, k in enumerate(f))
            weights[axis][c0:c1] = _block_reduce(faces, across, "sum") / np.prod(f)

    in_threads(slab, list(slabs(level.shape[0], level.shape[1] * level.shape[2], f[0])))
    return _CoarseLevel(h, seeds, tuple(s * k for s, k in zip(level.spacing, f)), weights)


def _shift_or(mask: np.ndarray, axis: int) -> np.ndarray:
    """``mask`` grown by one voxel both ways along ``axis``."""
    lo, hi = _pair_slices(axis)
    out = mask.copy()
    out[lo] |= mask[hi]
    out[hi] |= mask[lo]
    return out


def _grow(mask: np.ndarray, steps: Sequence[int]) -> np.ndarray:
    """``mask`` grown by ``steps[a]`` voxels both ways along each axis ``a`` (a box)."""
    for axis, n in enumerate(steps):
        for _ in range(n):
            mask = _shift_or(mask, axis)
    return mask


def _band_steps(f: Sequence[int], radius: int, spacing: Optional[Sequence[float]] = None) -> list:
    """Blocks of ``f`` voxels to grow a band by, per axis, so that it reaches ``radius`` voxels further.

    With ``spacing``, ``radius`` counts voxels of the finest axis and the band reaches as far in
    millimetres along the others (``radius * min(spacing) / spacing_a`` voxels along axis ``a``),
    but at least one block beyond the blocks at the boundary.

    Examples
    --------
    >>> _band_steps((2, 2, 2), 6)
    [3, 3, 3]
    >>> _band_steps((1, 2, 2), 3, (0.015, 0.0075, 0.0075))  # sections twice as thick as the pixels
    [2, 2, 2]
    """
    if spacing is None:
        return [-(-radius // k) for k in f]
    finest = min(spacing)
    # The tolerance keeps a reach of exactly n voxels from rounding up to n + 1 blocks' worth.
    return [max(2, math.ceil(radius * finest / s / k - 1e-6)) for k, s in zip(f, spacing)]


def _level_band_steps(level: _Level, f: Sequence[int]) -> list:
    """:func:`_band_steps` of a level's band: :data:`BAND_RADIUS` at full resolution (:data:`WIDE_BAND_RADIUS`
    up to :data:`WIDE_BAND_MAX_VOXELS` voxels), as far in millimetres along thick sections;
    :data:`COARSE_BAND_RADIUS` voxels along every axis at a coarse level, whose band places every band above it
    (narrowing it along thick sections cost energy there: BENCHMARKS.md, "Interactive speed" item 18)."""
    if isinstance(level, _CoarseLevel):
        return _band_steps(f, COARSE_BAND_RADIUS)
    return _band_steps(f, WIDE_BAND_RADIUS if _small_level(level.shape) else BAND_RADIUS, level.spacing)


def _small_level(shape: Sequence[int]) -> bool:
    """Whether a full-resolution level of ``shape`` has at most :data:`WIDE_BAND_MAX_VOXELS` voxels."""
    return int(np.prod(shape, dtype=np.int64)) <= WIDE_BAND_MAX_VOXELS


def _coarse_band(labels: np.ndarray, seeds: np.ndarray, steps: Sequence[int]) -> np.ndarray:
    """Coarse blocks whose finer voxels are re-cut.

    Blocks next to a label change hold the fine voxels within one block of
    the boundary; growing them by ``steps[a] - 1`` blocks along axis ``a``
    (:func:`_band_steps`) widens that to the band's radius.  Blocks with both
    scribble classes are added, so that every scribble can be honoured.
    """
    band = seeds == _BOTH
    for axis in range(3):
        lo, hi = _pair_slices(axis)
        change = labels[lo] != labels[hi]
        band[lo] |= change
        band[hi] |= change
    return _grow(band, [n - 1 for n in steps])


#: A coarse cut has dropped the heart (:func:`_heart_dropped_at_strokes`) when what it left out around the heart
#: strokes is more than this many times all the heart it kept.
COARSE_DROP_RATIO = 1.0
#: The most steps of one block :func:`_heart_dropped_at_strokes` follows from the heart strokes.
COARSE_DROP_MAX_STEPS = 256


def _heart_dropped_at_strokes(labels: np.ndarray, h: np.ndarray, seeds: np.ndarray) -> Optional[np.ndarray]:
    """The coarse blocks of a heart the coarse cut dropped around its own strokes, or None where it did not.

    The blocks are those whose data term favours heart, that the coarse cut labelled background, and that connect
    (through such blocks, each touching the next at a face, an edge or a corner) to a block with heart strokes. A
    coarse level prices an outline at its block faces, not at the image edges the fine outline follows: with a
    strong boundary term (twice the default ``gamma``) it dropped whole hearts around their strokes that the full
    cut keeps (BENCHMARKS.md, "Interactive speed", item 61). Only where those blocks outnumber the heart it kept
    (:data:`COARSE_DROP_RATIO`) are they returned, for the band, so that the fine cut decides them; smaller trims
    stay as the coarse cut made them, as they are with the default ``gamma`` on the bench's volumes.

    Examples
    --------
    >>> labels = np.array([1, 0, 0, 0, 0, 0], np.uint8).reshape(1, 1, 6)  # the cut kept only the stroked block
    >>> h = np.array([0.9, 0.9, 0.9, 0.2, 0.9, 0.9], np.float32).reshape(1, 1, 6)
    >>> seeds = np.array([_HEART, 0, 0, 0, 0, 0], np.uint8).reshape(1, 1, 6)
    >>> _heart_dropped_at_strokes(labels, h, seeds).ravel().astype(int).tolist()  # the blob past the gap stays
    [0, 1, 1, 0, 0, 0]
    >>> _heart_dropped_at_strokes(np.array([1, 1, 1, 0, 0, 0], np.uint8).reshape(1, 1, 6), h, seeds) is None
    True
    """
    kept = np.count_nonzero(labels)
    candidates = (h > 0.5) & (labels == 0)
    reached = (seeds & _HEART) != 0
    if np.count_nonzero(candidates) <= COARSE_DROP_RATIO * kept or not reached.any():
        return None
    left_out = np.zeros(labels.shape, bool)
    for _ in range(COARSE_DROP_MAX_STEPS):
        reached = _grow(reached, (1, 1, 1)) & candidates & ~left_out
        if not reached.any():
            break
        left_out |= reached
    return left_out if np.count_nonzero(left_out) > COARSE_DROP_RATIO * kept else None


def _pieces_dropped_apart(labels: np.ndarray, h: np.ndarray) -> Optional[np.ndarray]:
    """The coarse blocks of pieces that the data term calls heart, that the coarse cut left out, and that touch no
    block it kept (a piece: blocks each touching the next at a face, an edge or a corner); None without any.

    A coarse level prices an outline at its block faces, not at the edges the fine outline follows, so it drops
    a piece of tissue apart from the rest that the full cut keeps: on ``benchmarks/bench_graphcut.py --pieces``
    a disc of radius 4-16 px with ``h`` 0.7-0.9 beside a stroked one, on every section (BENCHMARKS.md, "3D graph
    cut: full vs coarse-to-fine banded").  Such a piece lies away from the coarse boundary, so no band reached it;
    in the band, the fine cut decides it as the full cut would.  Pieces joined to kept heart are left as the coarse
    cut made them: where a network over-segments, the heart it adds lies next to the heart, and re-cutting it
    there cost the bench's validation (BENCHMARKS.md, "Interactive speed", item 61).

    Examples
    --------
    >>> labels = np.array([1, 1, 0, 0, 0, 0, 0], np.uint8).reshape(1, 1, 7)
    >>> h = np.array([0.9, 0.9, 0.8, 0.2, 0.9, 0.9, 0.2], np.float32).reshape(1, 1, 7)
    >>> _pieces_dropped_apart(labels, h).ravel().astype(int).tolist()  # not the block next to the kept heart
    [0, 0, 0, 0, 1, 1, 0]
    >>> _pieces_dropped_apart(labels, np.where(h > 0.5, 0.2, h).astype(np.float32)) is None
    True
    """
    import SimpleITK as sitk  # only here: a cut without such pieces does not need it

    left_out = (h > 0.5) & (labels == 0)
    if not left_out.any():
        return None
    pieces = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(left_out.view(np.uint8)), True))
    touching = np.unique(pieces[_grow(labels > 0, (1, 1, 1)) & left_out])
    apart = left_out & ~np.isin(pieces, touching)
    return apart if apart.any() else None


def _upsample(coarse: np.ndarray, f: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    out = np.empty(tuple(shape), np.uint8)
    for z0, z1 in slabs(shape[0], shape[1] * shape[2], f[0]):
        block = coarse[z0 // f[0]: -(-z1 // f[0])].repeat(f[0], 0).repeat(f[1], 1).repeat(f[2], 2)
        out[z0:z1] = block[: z1 - z0, : shape[1], : shape[2]]
    return out


class _Band:
    """The full-resolution voxels of a growing set of coarse blocks, numbered as graph nodes.

    Node ``rank * P + local`` is the voxel at C-order position ``local`` inside
    the ``rank``-th block added, ``P`` being the voxels per block; the nodes of
    voxels that a block at the volume's edge lacks exist but stay unconnected.
    """

    def __init__(self, mask: np.ndarray, f: Sequence[int], shape: Sequence[int]) -> None:
        self.f, self.shape = tuple(f), tuple(shape)
        self.mask = np.zeros(mask.shape, bool)
        self.blocks = np.empty(0, np.int64)
        # Each block's rank plus one (0: not in the band), in zeros the system hands out untouched: only the pages
        # of the band's blocks are ever written, where a filled array would touch the whole grid (52 MB of int64
        # at 100x512x512, 0.2-0.5 s of fresh memory on the virtual machines of BENCHMARKS.md, item 63).
        self._rank1 = np.zeros(mask.size, np.int32)
        self.per_block = int(np.prod(self.f))
        self.extend(mask)

    @property
    def nodes(self) -> int:
        return self.blocks.size * self.per_block

    def rank(self, blocks: np.ndarray) -> np.ndarray:
        """The rank (int64) of each of ``blocks`` (flat indices into :attr:`mask`) in the band, -1 where not in it."""
        return self._rank1[blocks].astype(np.int64) - 1

    def extend(self, mask: np.ndarray) -> int:
        """Add the blocks of ``mask`` not held yet, after the others; returns the rank of the first added."""
        new = np.flatnonzero(mask & ~self.mask)
        first = self.blocks.size
        self._rank1[new] = np.arange(first + 1, first + 1 + new.size)
        self.blocks = np.concatenate([self.blocks, new])
        self.mask.reshape(-1)[new] = True
        return first

    def chunks(self, first: int = 0) -> Iterator["_BandChunk"]:
        """The band blocks from rank ``first`` on, about ``runtime.SLAB_VOXELS`` voxels at a time."""
        step = max(1, runtime.SLAB_VOXELS // self.per_block)
        for b0 in range(first, self.blocks.size, step):
            yield _BandChunk(self, b0, min(self.blocks.size, b0 + step))


class _BandChunk:
    """Band blocks ``b0:b1`` as ``(blocks, f[0], f[1], f[2])`` arrays of voxels.

    Pairs inside a block are slices of these arrays; only the pairs through a
    block's faces need the neighbouring blocks.
    """

    def __init__(self, band: _Band, b0: int, b1: int) -> None:
        self.band = band
        self.blocks = band.blocks[b0:b1]
        self.coords = []  # z, y, x of every voxel, clipped into the volume
        self.valid = np.ones((b1 - b0,) + band.f, bool)  # the voxels that the volume has
        for axis, c in enumerate(np.unravel_index(self.blocks, band.mask.shape)):
            k, n = band.f[axis], band.shape[axis]
            offsets = [1, 1, 1, 1]
            offsets[axis + 1] = k
            coord = c[:, None, None, None] * k + np.arange(k).reshape(offsets)
            self.valid &= coord < n
            self.coords.append(np.minimum(coord, n - 1))
        self.flat = (self.coords[0] * band.shape[1] + self.coords[1]) * band.shape[2] + self.coords[2]
        self.ids = (np.arange(b0, b1)[:, None] * band.per_block + np.arange(band.per_block)).reshape(self.valid.shape)

    @staticmethod
    def inner_pairs(axis: int) -> Tuple[tuple, tuple]:
        """Index tuples of the first and the second voxels of the pairs inside the blocks along ``axis``."""
        lo, hi = [slice(None)] * 4, [slice(None)] * 4
        lo[axis + 1], hi[axis + 1] = slice(0, -1), slice(1, None)
        return tuple(lo), tuple(hi)

    def face_pairs(self, ids: bool = True) -> Iterator[tuple]:
        """The pairs through the blocks' faces, per axis and step +-1: :meth:`face_pair` of each."""
        for axis in range(3):
            for step in (1, -1):
                yield self.face_pair(axis, step, ids)

    def face_pair(self, axis: int, step: int, ids: bool = True) -> tuple:
        """The pairs through the blocks' faces along ``axis`` with step ``step`` (+-1).

        Returns ``(axis, step, face, sel, u, u_block, u_ids)``: ``face`` indexes
        the voxels on that face of every block; ``sel`` (shaped like them) marks
        those whose neighbour lies in the volume; ``u`` (flat voxel indices) and
        ``u_block`` (flat block indices) are the neighbours and their blocks
        (the voxel itself where not ``sel``); ``u_ids`` are the neighbours' node
        ids, -1 where not ``sel`` or their block is not in the band (``None``
        unless ``ids``).
        """
        band = self.band
        strides = (band.shape[1] * band.shape[2], band.shape[2], 1)
        block_strides = (band.mask.shape[1] * band.mask.shape[2], band.mask.shape[2], 1)
        k = band.f[axis]
        local_stride = band.per_block // int(np.prod(band.f[:axis + 1]))
        face = [slice(None)] * 4
        face[axis + 1] = k - 1 if step > 0 else 0
        face = tuple(face)
        moved = self.coords[axis][face] + step
        sel = (moved >= 0) & (moved < band.shape[axis]) & self.valid[face]
        u = self.flat[face] + sel * (step * strides[axis])
        u_block = self.blocks[:, None, None] + sel * (step * block_strides[axis])
        u_ids = None
        if ids:
            # The neighbour sits on the opposite face of its block.
            rank = np.where(sel, band.rank(u_block), -1)
            local = self.ids[face] % band.per_block - step * (k - 1) * local_stride
            u_ids = np.where(rank >= 0, rank * band.per_block + local, -1)
        return axis, step, face, sel, u, u_block, u_ids

    def diagonal_pairs(self) -> Iterator[tuple]:
        """The in-plane diagonal pairs of every voxel, per offset (all four, so that each voxel sees all):
        :meth:`diagonal_pair` of each."""
        for dy, dx in _DIAGONALS + tuple((-dy, -dx) for dy, dx in _DIAGONALS):
            yield self.diagonal_pair(dy, dx)

    def diagonal_pair(self, dy: int, dx: int) -> tuple:
        """The in-plane diagonal pairs of every voxel with offset ``(dy, dx)``.

        Returns ``(forward, sel, u, u_ids)``: ``forward`` is true for the offsets of
        :data:`_DIAGONALS` (a pair between two band voxels is added once, from
        those); ``sel`` marks the voxels the volume has whose neighbour it has too;
        ``u`` are the neighbours' flat indices (clipped into the volume where not
        ``sel``) and ``u_ids`` their node ids, -1 where not ``sel`` or outside the band.
        """
        band = self.band
        _, Y, X = band.shape
        fz, fy, fx = band.f
        _, BY, BX = band.mask.shape
        z = self.coords[0]
        y, x = self.coords[1] + dy, self.coords[2] + dx
        sel = self.valid & (y >= 0) & (y < Y) & (x >= 0) & (x < X)
        y, x = np.clip(y, 0, Y - 1), np.clip(x, 0, X - 1)
        rank = np.where(sel, band.rank(((z // fz) * BY + y // fy) * BX + x // fx), -1)
        local = ((z % fz) * fy + y % fy) * fx + x % fx
        u_ids = np.where(rank >= 0, rank * band.per_block + local, -1)
        return (dy, dx) in _DIAGONALS, sel, (z * Y + y) * X + x, u_ids


def _recut_until_settled(level: "_Level", labels: np.ndarray, band: np.ndarray, f, budget: int,
                         progress: Optional[ProgressCallback], low: float, high: float,
                         cancel: Optional[CancelToken], region: Optional[_Region] = None) -> _Region:
    """Re-cut ``band`` of ``labels`` in place, the rest fixed; where the new boundary reaches the band's edge,
    grow the band there and re-cut again (:data:`BAND_GROWTH_PASSES` times at most), on one graph.
    ``region``: a graph kept from an earlier cut of the same level (refreshed by the caller) to grow
    instead of a new one.  Progress runs from ``low`` to ``high``.  Returns the graph."""
    name = _fmt_shape(level.shape)
    if region is None:
        blocks = int(np.count_nonzero(band))
        nodes = blocks * int(np.prod(f))
        if _neighbourhood(level) == 10 and _band_cut_bytes(nodes, 10) > budget:
            # Decided once, on the band the coarse cut placed: every pass then minimises the same energy.
            # The 6-neighbourhood gives the same kind of result, with blockier in-plane outlines.
            _log.info("graph cut: the band of %d voxels of %s with in-plane diagonals needs about %s (budget %s); "
                      "using the 6-neighbourhood", nodes, name, _fmt_bytes(_band_cut_bytes(nodes, 10)),
                      _fmt_bytes(budget))
            level.params = dataclasses.replace(level.params, neighbourhood=6)
        region = _Region(level, f, budget, nodes)
    passes = 1 + BAND_GROWTH_PASSES
    for band_pass in range(passes):
        start = low + (high - low) * band_pass / passes
        report(progress, "graph cut", start, f"{name}: building the band's graph")
        region.add(level, labels, band, cancel)
        report(progress, "graph cut", start + 0.5 * (high - low) / passes,
               f"{name}: band of {region.nodes} voxels, max-flow")
        contact = region.solve(labels, cancel)
        region.pending = contact if contact.any() else None
        if region.pending is None:
            break
        # The boundary reached voxels no band held yet: re-cut around there too.
        band = _grow(contact, _level_band_steps(level, f))
    report(progress, "graph cut", high, f"{name}: band done")
    return region


def _part(data: Optional[np.ndarray], index: tuple) -> Optional[np.ndarray]:
    """``data[index]``, or ``None`` for a level without per-voxel data."""
    return None if data is None else data[index]


class _Region:
    """A max-flow graph over a growing band of a level's full-resolution voxels, the others fixed.

    The band voxels are the nodes; their pairs with voxels outside the band become terminal
    capacities from the fixed label there (a band voxel pays the pair weight for taking the other
    label).  Blocks can be added after a max-flow (:meth:`add`: the pairs with the voxels held before
    become edges, and those voxels give back the capacity they had for them) and the data term and
    seeds of the held voxels changed (:meth:`refresh`).  Every :meth:`solve` after the first then
    starts from the last flow and search trees instead of from nothing (BK's tree reuse: Kohli and
    Torr, "Efficiently solving dynamic Markov random fields using graph cuts", ICCV 2005): the
    growth passes of a cut, and a warm session's next cut (:class:`cut_memory.CutMemory`), cost what changed.
    Each solve minimises the energy over the band voxels exactly, the rest fixed.
    """

    def __init__(self, level: _Level, f: Sequence[int], budget: int, nodes: int = 0) -> None:
        self.shape = level.shape
        self.band = _Band(np.zeros(tuple(-(-n // k) for n, k in zip(self.shape, f)), bool), f, self.shape)
        self.neighbourhood = _neighbourhood(level)
        self.budget = budget
        # Room for ``nodes`` voxels and their pairs up front: it grows by reallocating beyond.
        self.graph = maxflow.Graph[float](nodes, (5 if self.neighbourhood == 10 else 3) * nodes)
        self.data = np.empty(0, np.float32)  # per node: the data term its terminal capacities hold
        self.seeds = np.empty(0, np.uint8)  # per node: its seed code (0 for the voxels a block lacks)
        self.solved = False
        self._marked: list = []  # node ids changed since the last max-flow
        self._chunks: list = []  # the band's chunks, made once (their voxel indices cost to compute)
        self._edges: dict = {}  # chunk index -> its pairs to blocks outside the band (:meth:`_edge_pairs`)
        #: Blocks outside the band that the boundary touched when the growth passes ran out, or None.
        self.pending: Optional[np.ndarray] = None

    @property
    def nodes(self) -> int:
        return self.band.nodes

    def bytes_with(self, blocks: int) -> int:
        """Memory of a cut of this graph with ``blocks`` more blocks (with :data:`WORKING_BYTES`)."""
        return _band_cut_bytes(self.nodes + blocks * self.band.per_block, self.neighbourhood)

    def graph_bytes(self, blocks: int = 0) -> int:
        """Memory of the graph itself with ``blocks`` more blocks."""
        return (self.nodes + blocks * self.band.per_block) * _band_bytes_per_voxel(self.neighbourhood)

    def _node_data(self, level: _Level, chunk: "_BandChunk") -> Tuple[np.ndarray, np.ndarray]:
        """The data term and seed code of a chunk's voxels (0 for the voxels the volume lacks)."""
        data = np.where(chunk.valid, level.h.reshape(-1)[chunk.flat], np.float32(0))
        seeds = np.where(chunk.valid, level.seeds.reshape(-1)[chunk.flat], np.uint8(0))
        return data.astype(np.float32, copy=False), seeds.astype(np.uint8, copy=False)

    def _capacities(self, level: _Level, data: np.ndarray, seeds: np.ndarray, valid: np.ndarray):
        """Source and sink capacities of voxels from their data term and seeds (none for the voxels the
        volume lacks)."""
        source, sink = _unary(data, seeds, level.seed_capacity)
        source[~valid] = sink[~valid] = 0.0
        return source, sink

    def add(self, level: _Level, labels: np.ndarray, mask: np.ndarray,
            cancel: Optional[CancelToken] = None) -> None:
        """Hold the voxels of the blocks of ``mask`` too, with ``labels`` fixed outside the band."""
        new_blocks = int(np.count_nonzero(mask & ~self.band.mask))
        if not new_blocks:
            return
        needed = self.bytes_with(new_blocks)
        if needed > self.budget:
            raise ScribbleSegError(
                f"graph cut: the band around the coarse boundary of {_fmt_shape(self.shape)} voxels has "
                f"{self.nodes + new_blocks * self.band.per_block} voxels and needs about {_fmt_bytes(needed)}, "
                f"more than the memory budget of {_fmt_bytes(self.budget)}; downsample the volume or free memory")
        graph = self.graph
        held = self.nodes  # the nodes before this call
        first = self.band.extend(mask)
        graph.add_nodes(self.nodes - held)
        diagonals = self.neighbourhood == 10
        flat_labels = labels.reshape(-1)
        datas, seed_codes = [self.data], [self.seeds]
        for chunk in self.band.chunks(first):
            check(cancel)
            self._chunks.append(chunk)
            data_term, seed_code = self._node_data(level, chunk)
            datas.append(data_term.reshape(-1))
            seed_codes.append(seed_code.reshape(-1))
            source, sink = self._capacities(level, data_term, seed_code, chunk.valid)
            data = level.voxel_data(chunk.flat)

            def link(index, w, forward, u, u_ids) -> tuple:
                """Pairs of the voxels ``chunk.flat[index]`` with ``u``: an edge where ``u`` is in the band
                (added from the forward side between two new blocks), else the fixed neighbour's label in
                the data term.  Returns what :func:`insert` adds to the graph and the terminal capacities."""
                in_band = u_ids >= 0
                older = in_band & (u_ids < held)
                edge = in_band if forward else older
                edges = chunk.ids[index][edge], u_ids[edge], w[edge]
                paid = None
                if older.any():
                    # The held voxel paid w for taking the other label than this one: it is a node now.
                    heart = flat_labels[chunk.flat[index][older]] == 1
                    paid = u_ids[older], -w[older] * ~heart, -w[older] * heart
                w[in_band] = 0.0
                heart = flat_labels[u] == 1
                return edges, paid, index, w * heart, w * ~heart

            def pairs(group: tuple) -> tuple:
                """One group of the chunk's pairs, weighed (numpy alone: it runs on a worker thread)."""
                check(cancel)
                kind, a, b = group
                if kind == "inner":
                    lo, hi = chunk.inner_pairs(a)
                    w = level.pair_weights(a, chunk.flat[lo], chunk.flat[hi], _part(data, lo), _part(data, hi))
                    w *= (chunk.valid[lo] & chunk.valid[hi]) * _axis_share(a, diagonals)  # none with voxels it lacks
                    return (chunk.ids[lo], chunk.ids[hi], w), None, None, None, None
                if kind == "face":
                    axis, step, face, sel, u, _, u_ids = chunk.face_pair(a, b)
                    w = level.pair_weights(axis, chunk.flat[face], u, _part(data, face))
                    w *= sel * _axis_share(axis, diagonals)
                    return link(face, w, step == 1, u, u_ids)
                forward, sel, u, u_ids = chunk.diagonal_pair(a, b)
                w = level.pair_weights(2, chunk.flat, u, data) * _CROFTON_DIAGONAL
                w *= sel
                return link((slice(None),) * 4, w, forward, u, u_ids)

            def insert(group: tuple, made: tuple) -> None:
                """Add a group's pairs to the graph, in the groups' order (so the same graph, to the bit, as
                one thread builds)."""
                (a, b, w), paid, index, to_sink, to_source = made
                graph.add_edges(a, b, w, w)
                if paid is not None:
                    graph.add_grid_tedges(*paid)
                    self._marked.append(paid[0])
                if index is not None:
                    sink[index] += to_sink
                    source[index] += to_source

            groups = [("inner", axis, 0) for axis in range(3) if self.band.f[axis] > 1]
            groups += [("face", axis, step) for axis in range(3) for step in (1, -1)]
            if diagonals:
                groups += [("diagonal", dy, dx) for dy, dx in _DIAGONALS + tuple((-dy, -dx) for dy, dx in _DIAGONALS)]
            # The weights on worker threads (numpy's passes release Python's lock), the graph on this one.
            in_order(pairs, groups, slab_threads(min(len(groups), BAND_WEIGHING_THREADS)), insert)
            graph.add_grid_tedges(chunk.ids, source, sink)
            self._marked.append(chunk.ids.reshape(-1))
        self.data, self.seeds = np.concatenate(datas), np.concatenate(seed_codes)

    def refresh(self, level: _Level, cancel: Optional[CancelToken] = None) -> int:
        """Give the held voxels ``level``'s data term and seeds; returns how many changed."""
        changed_count = 0
        for chunk in self._chunks:
            check(cancel)
            ids = chunk.ids.reshape(-1)
            part = slice(int(ids[0]), int(ids[-1]) + 1)
            data_term, seed_code = (a.reshape(-1) for a in self._node_data(level, chunk))
            changed = (data_term != self.data[part]) | (seed_code != self.seeds[part])
            if not changed.any():
                continue
            valid = chunk.valid.reshape(-1)[changed]
            new = self._capacities(level, data_term[changed], seed_code[changed], valid)
            old = self._capacities(level, self.data[part][changed], self.seeds[part][changed], valid)
            self.graph.add_grid_tedges(ids[changed], new[0] - old[0], new[1] - old[1])
            self._marked.append(ids[changed])
            self.data[part], self.seeds[part] = data_term, seed_code
            changed_count += int(np.count_nonzero(changed))
        return changed_count

    def solve(self, labels: np.ndarray, cancel: Optional[CancelToken] = None) -> np.ndarray:
        """Minimise the energy over the band voxels of ``labels`` (in place), the others fixed.

        Returns the coarse blocks outside the band next to a band voxel of the other label after
        the cut: where the boundary lies on the band's edge and may want to move further.
        """
        check(cancel)
        if self.solved and self._marked:
            self.graph.mark_grid_nodes(np.concatenate(self._marked))
        self._marked = []
        self.graph.maxflow(reuse_trees=self.solved)
        flat_labels = labels.reshape(-1)
        contact = np.zeros(self.band.mask.size, bool)
        outside = ~self.band.mask.reshape(-1)
        for index, chunk in enumerate(self._chunks):
            voxels = chunk.flat[chunk.valid]
            segments = self.graph.get_grid_segments(chunk.ids[chunk.valid]).astype(np.uint8)
            if self.solved and np.array_equal(segments, flat_labels[voxels]):
                # Contact comes from a label that moved (or a first cut): the band's edge held still here.
                continue
            flat_labels[voxels] = segments
            for v, u, u_block in self._edge_pairs(index, chunk, outside):
                touch = outside[u_block] & (flat_labels[u] != flat_labels[v])
                contact[u_block[touch]] = True
        self.solved = True
        return contact.reshape(self.band.mask.shape)

    def _edge_pairs(self, index: int, chunk: "_BandChunk", outside: np.ndarray) -> list:
        """The pairs through the faces of the chunk's blocks that lead out of the band, as first asked (``outside``:
        the blocks outside it then): per face, the flat voxel indices ``v`` in the chunk and ``u`` beyond, and
        ``u``'s blocks.  The band only grows, so these hold every pair that leads out of it later too (the caller
        checks ``outside`` again); kept, they spare each later max-flow the faces of the whole chunk."""
        kept = self._edges.get(index)
        if kept is None:
            kept = []
            for _, _, face, sel, u, u_block, _ in chunk.face_pairs(ids=False):
                leaves = sel & outside[u_block]
                kept.append((chunk.flat[face][leaves], u[leaves], u_block[leaves]))
            self._edges[index] = kept
        return kept
