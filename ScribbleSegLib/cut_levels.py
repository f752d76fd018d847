"""The levels of the 3D graph cut (:mod:`ScribbleSegLib.graphcut`): a volume at one resolution, as the cut sees it.

A level holds the data term ``h`` and the seeds of its voxels and gives the weights of their neighbour pairs:
:class:`_ImageLevel` at full resolution, from the colour contrast of the image (eq. 6), and :class:`_CoarseLevel`
for a downsampled level of a coarse-to-fine cut, whose pair weights are stored (:func:`cut_band._downsample`).
The full cut and the band re-cut build their graphs from them alike.

Here too are the small pieces that every part of the cut shares: the seed codes, the Cauchy-Crofton weights of the
in-plane diagonals, the index tuples of a grid's pairs, a voxel's terminal capacities (:func:`_unary`) and the
shapes and sizes the cut's messages name.  They lie below the cut's other modules, which all import them:
:mod:`ScribbleSegLib.graphcut` (the entry points and the planning), :mod:`ScribbleSegLib.cut_band` (the
coarse-to-fine band) and :mod:`ScribbleSegLib.cut_memory` (a warm cut's memory).
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

import numpy as np

from .cut_scaling import colour_features

if TYPE_CHECKING:  # types only: graphcut imports this module
    from .graphcut import GraphCutParams

# Cauchy-Crofton weights of the 8-neighbourhood (Boykov & Kolmogorov, ICCV 2003): pi/8 for the axis pairs
# and pi/(8 sqrt 2) for the diagonals, then scaled so that an axis-aligned boundary costs what it costs
# on the 4-neighbourhood; a boundary at 45 degrees then costs its Euclidean length too (not sqrt 2 more).
_CROFTON_AXIS = (math.pi / 8) / (math.pi / 8 + 2 * math.pi / (8 * math.sqrt(2)))
_CROFTON_DIAGONAL = (math.pi / (8 * math.sqrt(2))) / (math.pi / 8 + 2 * math.pi / (8 * math.sqrt(2)))
#: In-plane diagonal offsets (dy, dx) of the 8-neighbourhood, each pair counted once.
_DIAGONALS = ((1, 1), (1, -1))

_HEART, _BACKGROUND, _BOTH = 1, 2, 3  # seed codes; _BOTH marks coarse blocks holding both classes


def _axis_share(axis: int, diagonals: bool) -> float:
    """Factor of an axis pair's weight: its Cauchy-Crofton share in-plane when the diagonals are pairs too."""
    return _CROFTON_AXIS if diagonals and axis > 0 else 1.0


def _neighbourhood(level: "_Level") -> int:
    """6 or 10: the in-plane diagonals are pairs of the full-resolution level only (coarse levels have 6)."""
    return getattr(getattr(level, "params", None), "neighbourhood", 6)


def _pair_slices(axis: int) -> Tuple[tuple, tuple]:
    """Index tuples selecting the first and the second voxel of every pair along ``axis``."""
    lo, hi = [slice(None)] * 3, [slice(None)] * 3
    lo[axis], hi[axis] = slice(0, -1), slice(1, None)
    return tuple(lo), tuple(hi)


def _unary(h: np.ndarray, seeds: np.ndarray, capacity: float) -> Tuple[np.ndarray, np.ndarray]:
    """Source (cost of label 1) and sink (cost of label 0) capacities with the seeds added."""
    sink = h.astype(np.float64)
    source = 1.0 - sink
    sink[seeds == _HEART] += capacity
    source[seeds == _BACKGROUND] += capacity
    return source, sink


def _fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(n) for n in shape)


def _fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


class _Level:
    """One resolution level of the cut: data term, seeds and pair weights.

    ``h`` (float, in [0, 1]) and ``seeds`` (seed codes; ``_BOTH``: no
    constraint) are C-contiguous ``(Z, Y, X)`` arrays; ``spacing`` is in mm,
    ``(z, y, x)``; ``max_weights`` bounds the pair weights per axis.
    Subclasses give the weights of the pairs ``(v, v + e_axis)``.

    With ``transform`` (the log data term), ``h`` is the probability and the
    data term is ``transform(h)``: :meth:`data` computes it slab by slab, and
    the whole array (:attr:`h`) is only made when a band re-cut reads it by
    voxel index -- after the coarse cut, whose graph is the peak memory --,
    into ``out`` when given (``h`` itself when ``h`` is a copy of the cut's own:
    the data term then takes the probability's place).
    """

    def __init__(self, h: np.ndarray, seeds: np.ndarray, spacing: Sequence[float],
                 max_weights: Sequence[float], transform=None, out: Optional[np.ndarray] = None) -> None:
        self._raw, self._transform, self._out = h, transform, out
        self._h = None if transform is not None else h
        self.seeds = seeds
        self.spacing = tuple(float(s) for s in spacing)
        self.max_weights = tuple(float(w) for w in max_weights)

    @property
    def h(self) -> np.ndarray:
        """The data term of every voxel (made on first use when there is a ``transform``)."""
        if self._h is None:
            self._h = self._transform(self._raw) if self._out is None else self._transform(self._raw, out=self._out)
        return self._h

    def data(self, z0: int, z1: int) -> np.ndarray:
        """The data term of planes ``z0:z1``."""
        return self._h[z0:z1] if self._h is not None else self._transform(self._raw[z0:z1])

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(int(n) for n in self._raw.shape)

    @property
    def size(self) -> int:
        """Number of voxels."""
        return int(self._raw.size)

    @property
    def seed_capacity(self) -> float:
        """A finite capacity larger than any voxel's data term plus all its pair weights."""
        return 2.0 * (1.0 + 2.0 * sum(self.max_weights))

    def forward_weights(self, axis: int, z0: int, z1: int, every: int = 1) -> np.ndarray:
        """float64 weights of the pairs ``(v, v + e_axis)`` for the voxels ``v`` of planes ``z0:z1``.

        With ``every > 1``, only the last ``v`` of each run of ``every`` voxels
        along ``axis`` (counted from ``z0`` along z): one entry per run, where the
        pair leaves the run.  The weight is zero where ``v + e_axis`` lies
        outside the volume or ``v`` itself does (a short last run).
        """
        raise NotImplementedError

    def _empty_forward(self, axis: int, z0: int, z1: int, every: int) -> Tuple[np.ndarray, int, int]:
        """Zeros shaped for :meth:`forward_weights`, the index of its first ``v`` along ``axis``
        and the number of pairs that exist."""
        begin, end = (z0, z1) if axis == 0 else (0, self.shape[axis])
        shape = [z1 - z0, self.shape[1], self.shape[2]]
        shape[axis] = -(-(end - begin) // every)
        # The second voxel of a z pair may lie in the plane after the slab.
        pairs = len(range(begin + every, min(end + 1, self.shape[axis]), every))
        return np.zeros(shape), begin + every - 1, pairs

    def voxel_data(self, v: np.ndarray):
        """What :meth:`pair_weights` needs about the voxels at flat indices ``v`` (or ``None``)."""
        return None

    def pair_weights(self, axis: int, v: np.ndarray, u: np.ndarray, data_v=None, data_u=None) -> np.ndarray:
        """float64 weights of the pairs of flat voxel indices ``v`` and ``u = v +- e_axis``.

        ``data_v`` and ``data_u``, if given, are their :meth:`voxel_data`.
        """
        raise NotImplementedError


def _strided(axis: int, start: int, count: int, every: int, z0: int, z1: int) -> tuple:
    """Index tuple of planes ``z0:z1`` taking ``count`` indices from ``start`` by ``every`` along ``axis``."""
    index = [slice(z0, z1), slice(None), slice(None)]
    index[axis] = slice(start, start + count * every, every)
    return tuple(index)


class _ImageLevel(_Level):
    """The full-resolution level: pair weights from the colour contrast of the image (eq. 6)."""

    def __init__(self, h: np.ndarray, colour: np.ndarray, seeds: np.ndarray, spacing: Sequence[float],
                 params: GraphCutParams, transform=None, out: Optional[np.ndarray] = None) -> None:
        self.colour = colour  # (Z, Y, X, C), uint8 (read as value / 255) or float
        self.luminance = params.colour == "luminance" and colour.shape[3] == 3
        self.params = params
        self.scale = tuple(min(spacing) / s for s in spacing)
        self._kept = threading.local()  # per thread: ``slab``, the planes of :meth:`_planes`
        #: Per section, the factor of ``1 / sigma^2`` (:func:`cut_scaling.section_sharpness`), or None: 1 everywhere.
        self.sharpness: Optional[np.ndarray] = None
        super().__init__(h, seeds, spacing, [params.gamma * (1.0 + params.delta) * s for s in self.scale], transform,
                         out)

    def _features(self, block: np.ndarray) -> np.ndarray:
        return colour_features(block, self.luminance)

    def _planes(self, z0: int, z1: int) -> np.ndarray:
        """The colour features of planes ``z0:z1``, from the slab kept by the last call where it holds them.

        A slab's pairs along three axes and two diagonals all read its features (the z pairs first,
        with the plane after the slab): converting the colour once per slab instead of twice per
        direction.  The rgb features are elementwise, so the weights are the same bit for bit (the
        luminance's per-pixel dot product to float32 rounding).
        """
        kept = getattr(self._kept, "slab", None)  # each thread's own: threads compute different slabs
        if kept is None or not kept[0] <= z0 <= z1 <= kept[1]:
            kept = self._kept.slab = (z0, z1, self._features(self.colour[z0:z1]))
        return kept[2][z0 - kept[0]:z1 - kept[0]]

    def _contrast(self, xa: np.ndarray, xb: np.ndarray, axis: int, sharpness: Optional[np.ndarray] = None
                  ) -> np.ndarray:
        """``gamma * s_axis * (exp(-k ||xa - xb||^2 / sigma^2) + delta)`` as float64, ``k`` the pairs'
        ``sharpness`` (broadcast against the pairs; None: 1)."""
        d = xa - xb
        d2 = np.einsum("...c,...c->...", d, d)  # several times faster than square().sum(-1) for 3 channels
        d2 *= np.float32(-1.0 / self.params.sigma ** 2)
        if sharpness is not None:
            d2 *= sharpness
        w = np.exp(d2, out=d2).astype(np.float64)
        w += self.params.delta
        w *= self.params.gamma * self.scale[axis]
        return w

    def forward_weights(self, axis: int, z0: int, z1: int, every: int = 1) -> np.ndarray:
        out, first, pairs = self._empty_forward(axis, z0, z1, every)
        if pairs:
            # Planes lo:hi hold both voxels of every pair; indices below are relative to lo.
            lo, hi = (first, first + (pairs - 1) * every + 2) if axis == 0 else (z0, z1)
            x = self._planes(lo, hi)
            start = 0 if axis == 0 else first
            x_first = x[_strided(axis, start, pairs, every, 0, hi - lo)]
            x_second = x[_strided(axis, start + 1, pairs, every, 0, hi - lo)]
            sharpness = None
            if self.sharpness is not None:  # one value per plane of pairs
                planes = np.arange(first, first + pairs * every, every) if axis == 0 else np.arange(z0, z1)
                sharpness = self._pair_sharpness(planes, planes + 1 if axis == 0 else planes)[:, None, None]
            out[_strided(axis, 0, pairs, 1, 0, z1 - z0)] = self._contrast(x_first, x_second, axis, sharpness)
        return out

    def _pair_sharpness(self, za: np.ndarray, zb: np.ndarray) -> np.ndarray:
        """The ``sharpness`` of pairs between sections ``za`` and ``zb``: the sharper section's, so that a pair
        across a blurred section and a sharp one is weighed as the sharp section's pairs are."""
        return np.minimum(self.sharpness[za], self.sharpness[zb])

    def diagonal_weights(self, dy: int, dx: int, z0: int, z1: int) -> np.ndarray:
        """float64 weights of the in-plane diagonal pairs ``(v, v + (0, dy, dx))`` for planes ``z0:z1``.

        Zero where the second voxel lies outside the section.  Cauchy-Crofton weighted
        (see :data:`graphcut.NEIGHBOURHOODS`); the in-plane spacing is square, so ``scale`` is that of x.
        """
        _, Y, X = self.shape
        out = np.zeros((z1 - z0, Y, X))
        ys = slice(0, Y - dy)
        xa, xb = (slice(0, X - dx), slice(dx, X)) if dx > 0 else (slice(-dx, X), slice(0, X + dx))
        x = self._planes(z0, z1)
        first, second = x[:, ys, xa], x[:, slice(dy, Y), xb]
        sharpness = None if self.sharpness is None else self.sharpness[z0:z1, None, None]
        out[:, ys, xa] = self._contrast(first, second, 2, sharpness) * _CROFTON_DIAGONAL
        return out

    def voxel_data(self, v: np.ndarray) -> np.ndarray:
        return self._features(self.colour.reshape(-1, self.colour.shape[3])[v])

    def pair_weights(self, axis: int, v: np.ndarray, u: np.ndarray, data_v=None, data_u=None) -> np.ndarray:
        x_v = self.voxel_data(v) if data_v is None else data_v
        x_u = self.voxel_data(u) if data_u is None else data_u
        plane = self.shape[1] * self.shape[2]
        sharpness = None if self.sharpness is None else self._pair_sharpness(v // plane, u // plane)
        return self._contrast(x_v, x_u, axis, sharpness)


class _CoarseLevel(_Level):
    """A downsampled level whose pair weights are stored, one float32 array per axis."""

    def __init__(self, h: np.ndarray, seeds: np.ndarray, spacing: Sequence[float],
                 weights: Sequence[np.ndarray]) -> None:
        self.weights = tuple(weights)
        super().__init__(h, seeds, spacing, [float(w.max()) for w in weights])

    def forward_weights(self, axis: int, z0: int, z1: int, every: int = 1) -> np.ndarray:
        out, first, pairs = self._empty_forward(axis, z0, z1, every)
        out[_strided(axis, 0, pairs, 1, 0, z1 - z0)] = self.weights[axis][_strided(axis, first, pairs, every, z0, z1)]
        return out

    def pair_weights(self, axis: int, v: np.ndarray, u: np.ndarray, data_v=None, data_u=None) -> np.ndarray:
        return self.weights[axis].reshape(-1)[np.minimum(v, u)].astype(np.float64)
