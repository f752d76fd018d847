"""A warm graph cut's memory: what one cut of an image leaves for the next (:class:`CutMemory`).

A warm session (:class:`ScribbleSegLib.session.Session`) cuts the same image again whenever the strokes change.
:class:`CutMemory` keeps from one :func:`ScribbleSegLib.graphcut.graph_cut` to the next the coarse levels' pair
weights, the last labels, data term and seeds, and the graph of the last full-resolution band;
:func:`_cut_from_memory` starts the next cut from them and re-cuts only around the last boundary and where the
data term or the seeds changed against it (:func:`_changed_blocks`), on that band graph
(:class:`ScribbleSegLib.cut_band._Region`).  :class:`_StoredWeights` reads the first coarse level's pair weights
from a cache entry on disk, or keeps them there, for the next run of another process.

``graphcut.CutMemory`` is the public name of :class:`CutMemory`.  This module does not import
:mod:`ScribbleSegLib.graphcut`: where starting from the last cut would cost more than a cut from scratch,
:func:`_cut_from_memory` says so (None) and :func:`ScribbleSegLib.graphcut.graph_cut` cuts from scratch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Optional, Sequence, Tuple

import numpy as np

from .cut_band import (_Region, _block_reduce, _coarsen_factors, _grow, _level_band_steps, _recut_until_settled,
                       _small_level)
from .cut_levels import _BACKGROUND, _HEART, _ImageLevel, _Level, _fmt_shape, _neighbourhood, _pair_slices
from .progress import CancelToken, ProgressCallback, report
from .runtime import in_threads, slabs
from .stroke_pull import ImageMeasures, image_key

#: :meth:`CutMemory.scratch` keeps an array of the volume's size between cuts up to this size (134 M voxels; the
#: paper's 1/8 scale, 222 M, would keep 0.9 GB in a warm worker while the user paints).
SCRATCH_MAX_BYTES = 512 * 2**20

#: Part of the key of the coarse pair weights kept in a cache entry (:class:`feature_cache.CutWeights`): raised
#: when what they are computed from changes (the image the cut sees, the weights' formula), so that no set made
#: before is read.
CUT_WEIGHTS_VERSION = 1

#: A warm cut (:class:`CutMemory`) re-cuts the voxels whose data term ``h'`` moved by more than this
#: since the last cut (with a band as wide as a coarse-to-fine cut's around them, :func:`cut_band._level_band_steps`).
REUSE_DATA_CHANGE = 0.05
#: ... when the change is against the voxel's last label and leaves it within this of favouring the other.
REUSE_MARGIN = 0.1
#: Without a kept band graph (after a full cut), it re-cuts a new band unless the band would hold more than
#: this fraction of the volume's blocks: then it cuts from scratch (with the kept coarse weights).  A band
#: re-cut costs several times more per voxel than a grid cut, and its max-flow grows faster than the band:
#: on a 100x512x512 phantom a band of 4.3% of the volume (the last boundary alone, 1.1 M voxels) took 10.2 s
#: where the cut from scratch, whose full-resolution band holds 0.69 M voxels, took 8.3 s (BENCHMARKS.md,
#: "Interactive speed", item 19).
REUSE_MAX_BAND = 0.025
#: The same limit on a small volume (cut in full, or of up to :data:`cut_band.WIDE_BAND_MAX_VOXELS` voxels): its cut
#: from scratch saves little on a coarse level, so a band up to this fraction is still cheaper (40x256x256:
#: 0.4 s from the last labels, 1.0 s from scratch; BENCHMARKS.md).  It also bounds the kept graph of such a
#: volume (in place of :data:`REUSE_MAX_REGION`): a coarse-to-fine cut's band is a large share of a small
#: volume, and refusing it made each warm cut of 40x256x256 a cut from scratch ("Interactive speed", item 60).
REUSE_MAX_BAND_FULL = 0.3
#: A warm cut grows the last cut's band graph (:class:`cut_band._Region`) by the blocks around what changed outside
#: it, as long as the graph then holds at most this fraction of the volume's blocks (on a small volume,
#: :data:`REUSE_MAX_BAND_FULL`); beyond, a cut from scratch starts a smaller one.
#: The graph stays in memory between cuts (about 370 bytes per voxel with the diagonals): at 100x512x512 this
#: bounds it to about 0.6 GiB, where one warm cut after new strokes grew it from 2.8% to 3.9%
#: (BENCHMARKS.md, "Interactive speed", item 20).
REUSE_MAX_REGION = 0.06
#: ... and at most this many bytes of graph, which stay in memory between cuts (a paper-scale stack's band
#: would otherwise hold several GiB while the adaptation runs): a bigger band's graph is not kept.
REUSE_MAX_REGION_BYTES = 2**30


class _StoredWeights:
    """The first coarse level's pair weights of a cut whose image has a store (:class:`feature_cache.CutWeights`):
    read from it when the cut gets to its coarse level (:meth:`take`; the cut alone then holds them, no longer
    than its coarse level), or kept in it once the cut has computed them (:meth:`computed`).
    """

    def __init__(self, store, key: str, shape: Tuple[int, int, int]) -> None:
        self.store, self.key, self.shape = store, key, shape

    @classmethod
    def of(cls, level: _ImageLevel, store, weights: Optional[dict]) -> Optional["_StoredWeights"]:
        """For a cut of ``level``; None where it has no coarse level or ``weights`` (a :class:`CutMemory`'s) holds
        its coarse level's already."""
        f = _coarsen_factors(level.shape, level.spacing)
        if max(f) == 1 or (weights is not None and level.shape in weights):
            return None
        p = level.params
        key = hashlib.sha256(repr((CUT_WEIGHTS_VERSION, level.shape, level.spacing, f, p.gamma, p.sigma, p.delta,
                                   p.colour, p.section_focus)).encode()).hexdigest()[:32]
        return cls(store, key, tuple(-(-n // k) for n, k in zip(level.shape, f)))

    def take(self, kept: bool) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The weights the store holds for this cut, or None; ``kept``: a :class:`CutMemory` keeps them after the
        cut (a copy), else they are memory-mapped (a re-run from the command line read 79 MB of them into fresh
        memory at 100x512x512, 0.6 s on a VM)."""
        return self.store.load(self.key, self.shape, mapped=not kept)

    def computed(self, weights: Sequence[np.ndarray]) -> None:
        """Keep the weights the cut computed because :meth:`take` found none."""
        self.store.save(self.key, weights)


class CutMemory:
    """What a cut leaves for the next cut of the same image: coarse pair weights, labels, data term, seeds,
    and the graph of its full-resolution band.

    A warm session (:class:`ScribbleSegLib.session.Session`) keeps one.  The pair
    weights of the coarse levels of a coarse-to-fine cut depend only on the image,
    the spacing and the parameters: they are kept and reused as they are (the cut
    is the same, without recomputing the colour contrasts of every voxel pair).
    The next :func:`graphcut.graph_cut` with it starts from the last labels and re-cuts at full
    resolution, with everything else fixed, the blocks within the band's radius (:func:`cut_band._level_band_steps`)
    of the last boundary, of voxels whose data term ``h'`` moved by more than
    :data:`REUSE_DATA_CHANGE` against their last label (and now favour the other label, or
    nearly: :data:`REUSE_MARGIN`), and of seeds against the last label or taken away (a seed
    on a voxel of its own label, or a data term that moved towards the label, cannot make
    the last labels worse than another labelling).  Where the new boundary reaches the edge
    of that band it grows, as in the banded cut (:data:`cut_band.BAND_GROWTH_PASSES`).

    The band's graph (:class:`cut_band._Region`) is kept, solved, from one cut to the next: the
    next cut gives its voxels the new data term and seeds, adds the blocks around what
    changed outside it, and runs BK's max-flow from the last flow and search trees
    (Kohli and Torr 2005), so that only the change costs.  A cut from scratch (the first,
    or one whose band would exceed :data:`REUSE_MAX_REGION` of the volume, or
    :data:`REUSE_MAX_BAND_FULL` on a small volume) keeps its
    own full-resolution band's graph; none over :data:`REUSE_MAX_REGION_BYTES` is kept.  Like
    the banded cut this can miss parts of the optimum that move further than the band in
    one piece without touching its edge.  On
    the 100x512x512 benchmark volume the warm cut's energy lies 0.2 % above the optimum's, the
    coarse-to-fine cut's from scratch 0.05 %, and the two cuts' labels agree to Dice 0.992
    (BENCHMARKS.md, "Interactive speed", item 69).  It holds
    2 bytes per voxel (labels with seeds, and the data term in steps of 1/250), 4 more for the array a cut
    writes its data term into (:meth:`scratch`), 12 bytes
    per coarse voxel for the weights, and the band's graph (about 300-400 bytes per band
    voxel, :func:`cut_band._band_cut_bytes`).  Its :class:`stroke_pull.ImageMeasures` keep the image's contrast,
    the colour gradients of the stroked sections and the stroke pull's ways through them from one run to the next.

    Examples
    --------
    >>> memory = CutMemory()
    >>> memory.labels is None, memory.holds_labels
    (True, False)

    A cut with it leaves its labels and seeds (1 heart, 2 background) for the next:

    >>> from ScribbleSegLib.graphcut import graph_cut
    >>> h = np.full((2, 8, 8), 0.2, np.float32); h[:, 2:6, 2:6] = 0.8
    >>> image = np.full((2, 8, 8, 3), 200, np.uint8); image[:, 2:6, 2:6] = 90
    >>> scribbles = np.zeros((2, 8, 8), np.uint8); scribbles[0, 3, 3] = 1; scribbles[0, 0, 0] = 2
    >>> labels = graph_cut(h, image, scribbles, memory=memory)
    >>> memory.holds_labels, bool((memory.labels == labels).all())
    (True, True)
    >>> memory.seeds[0, 3, 3].item(), memory.seeds[0, 0, 0].item()
    (1, 2)
    """

    #: The data term is kept as ``round(h' * DATA_STEPS)`` in uint8: a step of 0.004, well below
    #: :data:`REUSE_DATA_CHANGE`, in a quarter of float32's memory.
    DATA_STEPS = 250

    def __init__(self) -> None:
        self.key: Optional[tuple] = None
        self._packed: Optional[np.ndarray] = None  # uint8: label in bit 0, seed code in bits 1-2
        self.data: Optional[np.ndarray] = None  # uint8 h' of the last cut, see DATA_STEPS
        self.coarse_weights: dict = {}  # level shape -> its coarse level's pair weights
        self.region: Optional[_Region] = None  # the last cut's full-resolution band graph, solved
        self.measures = ImageMeasures()  # the image's contrast and section gradients: they outlive the cut
        self._scratch: Optional[np.ndarray] = None  # float32, the volume's shape: see scratch()
        # Counts the cuts begun on this memory (a cut may change its band graph before it ends): a warm session
        # keeps its last result for a repeated run only while no cut has touched the memory since.
        self.generation = 0

    @property
    def labels(self) -> Optional[np.ndarray]:
        """The last cut's labels (uint8, 1 heart), or None."""
        return None if self._packed is None else self._packed & np.uint8(1)

    @property
    def holds_labels(self) -> bool:
        """Whether a last cut's labels are kept (:attr:`labels` unpacks them into a new array)."""
        return self._packed is not None

    @property
    def seeds(self) -> Optional[np.ndarray]:
        """The last cut's seed codes (uint8), or None."""
        return None if self._packed is None else self._packed >> np.uint8(1)

    def data_term(self, z0: int, z1: int) -> np.ndarray:
        """float32 data term ``h'`` of planes ``z0:z1`` of the last cut.

        Examples
        --------
        >>> from ScribbleSegLib.graphcut import graph_cut
        >>> h = np.full((2, 8, 8), 0.2, np.float32); h[:, 2:6, 2:6] = 0.8
        >>> image = np.full((2, 8, 8, 3), 200, np.uint8); image[:, 2:6, 2:6] = 90
        >>> scribbles = np.zeros((2, 8, 8), np.uint8); scribbles[0, 3, 3] = 1; scribbles[0, 0, 0] = 2
        >>> memory = CutMemory()
        >>> _ = graph_cut(h, image, scribbles, memory=memory)
        >>> part = memory.data_term(1, 2)
        >>> part.shape, part.dtype, bool(0 <= part.min() <= part.max() <= 1)
        ((1, 8, 8), dtype('float32'), True)
        """
        return self.data[z0:z1].astype(np.float32) * np.float32(1.0 / self.DATA_STEPS)

    def scratch(self, shape: Sequence[int]) -> Optional[np.ndarray]:
        """A float32 C-contiguous array of ``shape`` for a cut's pulled probability and data term, the same from
        cut to cut: each warm run would otherwise ask the system for a volume's worth of new memory, which
        costs from 0.1 to 0.5 s at 100x512x512 on the virtual machines of BENCHMARKS.md ("Interactive
        speed", item 63).  Its values are the last cut's until the next cut overwrites them.  None for a volume
        of more than :data:`SCRATCH_MAX_BYTES`: a warm worker would hold that much between runs.

        Examples
        --------
        >>> memory = CutMemory()
        >>> a = memory.scratch((2, 8, 8))
        >>> a.dtype, memory.scratch((2, 8, 8)) is a, memory.scratch((1000, 1000, 1000))  # 4 GB: too large
        (dtype('float32'), True, None)
        """
        shape = tuple(int(n) for n in shape)
        if self._scratch is None or self._scratch.shape != shape:
            self._scratch = None  # the old one goes before the new one is made
            if 4 * math.prod(shape) <= SCRATCH_MAX_BYTES:
                self._scratch = np.empty(shape, np.float32)
        return self._scratch

    def clear(self) -> None:
        """Forget the last cut: the next one starts from scratch.

        Examples
        --------
        >>> from ScribbleSegLib.graphcut import graph_cut
        >>> h = np.full((2, 8, 8), 0.2, np.float32); h[:, 2:6, 2:6] = 0.8
        >>> image = np.full((2, 8, 8, 3), 200, np.uint8); image[:, 2:6, 2:6] = 90
        >>> scribbles = np.zeros((2, 8, 8), np.uint8); scribbles[0, 3, 3] = 1; scribbles[0, 0, 0] = 2
        >>> memory = CutMemory()
        >>> _ = graph_cut(h, image, scribbles, memory=memory)
        >>> memory.clear()
        >>> memory.holds_labels, memory.key, memory.coarse_weights
        (False, None, {})
        """
        self.key = self._packed = self.data = self.region = None
        self.coarse_weights = {}

    def forget_labels(self) -> None:
        """Forget the last cut's labels and band, keep what depends on the image alone: the next cut starts
        from scratch, with the same labels as without a memory, but skips the coarse levels' weights.

        Examples
        --------
        >>> memory = CutMemory()
        >>> memory.coarse_weights[(2, 2, 2)] = "weights"
        >>> memory.forget_labels()
        >>> memory.labels is None, list(memory.coarse_weights)
        (True, [(2, 2, 2)])
        """
        self._packed = self.data = self.region = None

    @staticmethod
    def _key(level: "_ImageLevel", image: np.ndarray, mode: str) -> tuple:
        return (level.shape, level.spacing, level.params, mode) + image_key(image)

    def follow(self, level: "_ImageLevel", image: np.ndarray, mode: str) -> None:
        """Get ready for a cut of ``image``: forget everything if the last cut was of another image or
        with other parameters.

        Examples
        --------
        :func:`graphcut.graph_cut` calls it; a cut of another image starts over:

        >>> from ScribbleSegLib.graphcut import graph_cut
        >>> h = np.full((2, 8, 8), 0.2, np.float32); h[:, 2:6, 2:6] = 0.8
        >>> image = np.full((2, 8, 8, 3), 200, np.uint8); image[:, 2:6, 2:6] = 90
        >>> scribbles = np.zeros((2, 8, 8), np.uint8); scribbles[0, 3, 3] = 1; scribbles[0, 0, 0] = 2
        >>> memory = CutMemory()
        >>> _ = graph_cut(h, image, scribbles, memory=memory)
        >>> key = memory.key
        >>> _ = graph_cut(h, image, scribbles, memory=memory)
        >>> memory.key == key
        True
        >>> image[1] = 150
        >>> _ = graph_cut(h, image, scribbles, memory=memory)
        >>> memory.key == key
        False
        """
        key = self._key(level, image, mode)
        if key != self.key:
            self.clear()
            self.key = key

    def remember(self, level: "_ImageLevel", labels: np.ndarray, region: Optional["_Region"] = None) -> None:
        """Keep this cut's labels, data term and seeds for the next, and the graph of its full-resolution band
        (unless it holds more than :data:`REUSE_MAX_REGION_BYTES`).

        Examples
        --------
        :func:`graphcut.graph_cut` calls it; the data term is kept in uint8 steps of ``1 / DATA_STEPS``:

        >>> from ScribbleSegLib.graphcut import graph_cut
        >>> h = np.full((2, 8, 8), 0.2, np.float32); h[:, 2:6, 2:6] = 0.8
        >>> image = np.full((2, 8, 8, 3), 200, np.uint8); image[:, 2:6, 2:6] = 90
        >>> scribbles = np.zeros((2, 8, 8), np.uint8); scribbles[0, 3, 3] = 1; scribbles[0, 0, 0] = 2
        >>> memory = CutMemory()
        >>> _ = graph_cut(h, image, scribbles, memory=memory)
        >>> memory.data.dtype, bool(memory.data.max() <= CutMemory.DATA_STEPS), memory.holds_labels
        (dtype('uint8'), True, True)
        """
        self.region = region if region is not None and region.graph_bytes() <= REUSE_MAX_REGION_BYTES else None
        # Into the last cut's arrays where they fit (read before this, and handed out only as copies): no new memory.
        if self._packed is None or self._packed.shape != level.shape:
            self._packed = np.empty(level.shape, np.uint8)
            self.data = np.empty(level.shape, np.uint8)

        def slab(z0: int, z1: int) -> None:
            self._packed[z0:z1] = (labels[z0:z1] != 0) | (level.seeds[z0:z1] << np.uint8(1))
            self.data[z0:z1] = np.rint(level.data(z0, z1) * self.DATA_STEPS)

        in_threads(slab, list(slabs(level.shape[0], level.shape[1] * level.shape[2])))


def _changed_blocks(level: _Level, memory: CutMemory, labels: np.ndarray, f: Sequence[int],
                    boundary: bool = True) -> np.ndarray:
    """Blocks of ``f`` voxels holding the last boundary (unless not ``boundary``), a data term moved against
    the last label (``labels``: :attr:`CutMemory.labels`), a seed against it or a seed taken away."""
    shape = level.shape
    coarse_shape = tuple(-(-n // k) for n, k in zip(shape, f))
    blocks = np.zeros(coarse_shape, bool)

    def slab(z0: int, z1: int) -> None:
        if boundary:
            # One plane more each way, for the pairs across the slab's faces.
            a0, a1 = max(0, z0 - 1), min(shape[0], z1 + 1)
            part = labels[a0:a1]
            edge = np.zeros(part.shape, bool)
            for axis in range(3):
                lo, hi = _pair_slices(axis)
                change = part[lo] != part[hi]
                edge[lo] |= change
                edge[hi] |= change
            mask = edge[z0 - a0: z0 - a0 + (z1 - z0)]
        else:
            mask = np.zeros((z1 - z0,) + shape[1:], bool)
        # Only a data term that moved against the last label and now favours the other label, or nearly,
        # can make voxels flip: one that moved towards its label, or still clearly favours it, cannot
        # lower the energy by flipping (flipping also costs boundary).
        new, old = level.data(z0, z1), memory.data_term(z0, z1)
        heart = labels[z0:z1] == 1
        against = np.where(heart, old - new, new - old) > REUSE_DATA_CHANGE
        against &= np.where(heart, new < 0.5 + REUSE_MARGIN, new > 0.5 - REUSE_MARGIN)
        mask |= against
        # Likewise a new seed on a voxel of its own label cannot move anything (the last labels already meet it):
        # only a seed against the last label, or one taken away, can.
        seeds, last_seeds = level.seeds[z0:z1], memory._packed[z0:z1] >> np.uint8(1)
        mask |= (seeds == _HEART) & ~heart
        mask |= (seeds == _BACKGROUND) & heart
        mask |= (seeds == 0) & (last_seeds != 0)
        blocks[z0 // f[0]: -(-z1 // f[0])] |= _block_reduce(mask, f, "or").astype(bool)

    # Slabs start at multiples of f[0], so each writes its own blocks; numpy's passes release Python's lock.
    in_threads(slab, list(slabs(shape[0], shape[1] * shape[2], f[0])))
    return blocks


def _cut_from_memory(level: _ImageLevel, memory: CutMemory, budget: int, full: bool,
                     progress: Optional[ProgressCallback], cancel: Optional[CancelToken], keep: list
                     ) -> Optional[np.ndarray]:
    """The cut of ``level`` started from the last cut in ``memory`` (see :class:`CutMemory`); the graph
    it leaves is appended to ``keep``.  ``full``: whether a cut from scratch would cut ``level`` in full.

    None where cutting from scratch is better (a volume too thin to group into blocks, or a band that would hold
    too much of it): the caller (:func:`ScribbleSegLib.graphcut.graph_cut`) then cuts from scratch, with the
    memory's coarse weights.
    """
    name = _fmt_shape(level.shape)
    f = _coarsen_factors(level.shape, level.spacing)
    if max(f) == 1:  # a volume too thin to group into blocks: the caller cuts it whole
        return None
    # Detached until this cut ends: a cut that fails or is cancelled half-way leaves no graph behind.
    region, memory.region = memory.region, None
    report(progress, "graph cut", 0.0, f"{name}: starting from the last cut")
    level.h  # the data term of every voxel, made once: the band's graph and the checks below all read it
    # With a kept graph, the last boundary lies inside it, but where its growth passes ran out (``pending``).
    labels = memory.labels  # a new array (unpacked), which the re-cut below changes in place
    changed = _changed_blocks(level, memory, labels, f, boundary=region is None)
    if region is not None and region.pending is not None:
        changed |= region.pending
    steps = _level_band_steps(level, f)
    # A small volume's cut from scratch saves little on a coarse level: a larger band is still cheaper.
    small = full or _small_level(level.shape)
    if region is not None:
        # Only what changed outside the graph is new to it; inside, the new data term and seeds go in.
        band = _grow(changed & ~region.band.mask, steps) & ~region.band.mask
        added = int(np.count_nonzero(band))
        limit = REUSE_MAX_BAND_FULL if small else REUSE_MAX_REGION
        if (region.band.blocks.size + added <= limit * band.size and region.bytes_with(added) <= budget
                and region.graph_bytes(added) <= REUSE_MAX_REGION_BYTES):
            if region.neighbourhood != _neighbourhood(level):  # the last cut dropped the diagonals: as it did
                level.params = dataclasses.replace(level.params, neighbourhood=region.neighbourhood)
            region.refresh(level, cancel)
            keep.append(_recut_until_settled(level, labels, band, f, budget, progress, 0.0, 1.0, cancel, region))
            return labels
        del region  # the graph would grow too big: its memory goes before the cut from scratch
    else:
        band = _grow(changed, steps)
        if np.count_nonzero(band) <= (REUSE_MAX_BAND_FULL if small else REUSE_MAX_BAND) * band.size:
            keep.append(_recut_until_settled(level, labels, band, f, budget, progress, 0.0, 1.0, cancel))
            return labels
    # Most of the volume changed: a cut from scratch is then cheaper than a band this big.
    return None
