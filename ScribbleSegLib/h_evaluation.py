"""``h = head(f(x))`` over a volume: at every voxel, or coarse-to-fine (:func:`predict_h`).

After :func:`ScribbleSegLib.ddml.train_ddml` and :func:`~ScribbleSegLib.ddml.train_head`, the adapted
networks are evaluated on every voxel's M-Unet features (26 M voxels at 100x512x512), read from the
feature cache in slabs of rows (:class:`~ScribbleSegLib.feature_reader.FeatureReader`: file reads that
keep the cache out of the process's resident memory), on one thread per core.  The layers are fused for
the CPU (:func:`fused_layers`), and ``evaluation="coarse"`` evaluates a grid first, and exactly only
where the cut could see the difference (BENCHMARKS.md, "Interactive speed" item 1).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, List, Optional, Tuple

import numpy as np
import torch

from . import choices
from .errors import ScribbleSegError
from .feature_reader import FeatureReader
from .progress import CancelToken, ProgressCallback, check, report
from .resources import release_free_memory
from .runtime import thread_pool, torch_threads

if TYPE_CHECKING:  # types only: ddml imports this module
    from .ddml import DDMLNet, Head

#: In-plane step, in pixels, of the grid on which ``evaluation="coarse"`` evaluates ``h`` first.
COARSE_STRIDE = 4
#: A grid cell (the pixels between four neighbouring grid points) is evaluated exactly when the head's
#: output varies by more than this across its corners: the interpolation may be off inside it.
COARSE_RANGE = 0.05
#: ... or when a corner, or the network's probability anywhere in the cell, lies within this of 0.5
#: (or the cell straddles 0.5): there the cut is most sensitive to the data term.
COARSE_MARGIN = 0.3
#: ... or when the network's probability varies by more than this inside the cell: detail (a thin
#: wall, an edge) that the grid may have stepped over.
NETWORK_RANGE = 0.05


def fused_layers(f: DDMLNet, head: Head) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """``(W, b)`` of every layer for :func:`_evaluate`, which applies a sigmoid after each.

    The input standardisation is folded into the first layer, and every tanh is written as
    ``tanh(u) = 2 sigmoid(2u) - 1`` with the factors folded into the weights: a layer computes
    ``2u`` for the sigmoid, and the next one takes ``2 s - 1`` as its input.  torch's sigmoid
    is several times cheaper than its tanh on a CPU, and the tanh layers were most of evaluating
    ``h`` (BENCHMARKS.md, "Interactive speed" item 8); the result differs from ``head(f(x))``
    by float32 rounding only.

    Examples
    --------
    >>> from ScribbleSegLib.ddml import DDMLNet, Head
    >>> f, head = DDMLNet(4, (8,), 2), Head(2)
    >>> [tuple(w.shape) for w, _ in fused_layers(f, head)]
    [(8, 4), (2, 8), (1, 2)]
    """
    weights = [layer.weight.detach().double() for layer in f.layers] + [head.linear.weight.detach().double()]
    biases = [layer.bias.detach().double() for layer in f.layers] + [head.linear.bias.detach().double()]
    inv_std, mean = f.inv_std.double(), f.mean.double()
    layers = []
    for k, (w, b) in enumerate(zip(weights, biases)):
        if k == 0:  # standardised input: w ((x - mean) inv_std) + b
            w = w * inv_std[None, :]
            b = b - w @ mean
        else:  # input 2 s - 1, s the sigmoid of the layer before
            b = b - w.sum(dim=1)
            w = 2 * w
        if k < len(weights) - 1:  # tanh(u) from sigmoid(2u); the head's sigmoid takes u itself
            w, b = 2 * w, 2 * b
        layers.append((w.float().contiguous(), b.float().contiguous()))
    return layers


def _evaluate(x: np.ndarray, out: np.ndarray, layers, chunk: int) -> None:
    """Write ``head(f(x))`` of the rows of ``x`` ``(N, C)`` into ``out`` ``(N,)`` float32 (``layers``:
    :func:`fused_layers`)."""
    if not x.flags.writeable:  # a read-only memmap; torch wants writable memory
        x = x.copy()
    x_t = torch.from_numpy(np.ascontiguousarray(x))
    out_t = torch.from_numpy(out)
    with torch.inference_mode():
        for start in range(0, len(x_t), chunk):
            a = x_t[start:start + chunk].to(torch.float32)
            for w, b in layers[:-1]:
                a = torch.addmm(b, a, w.T)
                torch.sigmoid(a, out=a)  # tanh, folded into the weights (fused_layers)
            w, b = layers[-1]
            torch.sigmoid(torch.addmm(b, a, w.T).reshape(-1), out=out_t[start:start + len(a)])


def _grid(n: int, stride: int) -> np.ndarray:
    """Every ``stride``-th index of ``range(n)``, and the last one."""
    grid = np.arange(0, n, stride)
    return grid if grid[-1] == n - 1 else np.append(grid, n - 1)


def _cells(n: int, grid: np.ndarray) -> np.ndarray:
    """The grid cell ``[grid[i], grid[i + 1])`` of every index of ``range(n)`` (the last cell holds the end)."""
    return np.minimum(np.searchsorted(grid, np.arange(n), side="right") - 1, len(grid) - 2)


def _interpolation(n: int, grid: np.ndarray, at: Optional[np.ndarray] = None) -> np.ndarray:
    """``(n, len(grid))`` float32 matrix of linear interpolation from ``grid`` to ``range(n)``, or to the
    ``n`` positions ``at`` (increasing, within the grid)."""
    index = np.arange(n)
    cell = _cells(n, grid) if at is None else np.minimum(np.searchsorted(grid, at, side="right") - 1, len(grid) - 2)
    position = index if at is None else at
    t = ((position - grid[cell]) / (grid[cell + 1] - grid[cell])).astype(np.float32)
    matrix = np.zeros((n, len(grid)), np.float32)
    matrix[index, cell] = 1 - t
    matrix[index, cell + 1] = t
    return matrix


def _every_other(n: int) -> np.ndarray:
    """Indices ``0, 2, 4, ...`` of ``range(n)``, and the last one."""
    return _grid(n, 2)


def _bilinear(values: np.ndarray, ys: np.ndarray, xs: np.ndarray, rows: np.ndarray, cols: np.ndarray,
              out: Optional[np.ndarray] = None) -> np.ndarray:
    """``values`` ``(len(ys), len(xs))`` on the grid ``ys x xs``, interpolated bilinearly at ``rows x cols``."""
    # Through torch, which runs on this thread alone: numpy's BLAS would start its own threads in every
    # worker, and on 2 cores those spin against each other (predict_h took twice as long).
    with torch.inference_mode():
        result = torch.from_numpy(_interpolation(len(rows), ys, rows)) @ torch.from_numpy(values)
        result = torch.matmul(result, torch.from_numpy(_interpolation(len(cols), xs, cols)).T,
                              out=None if out is None else torch.from_numpy(out))
    return result.numpy() if out is None else out


def _near_half(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Cells whose values between ``low`` and ``high`` come within :data:`COARSE_MARGIN` of 0.5."""
    return (high > 0.5 - COARSE_MARGIN) & (low < 0.5 + COARSE_MARGIN)


def _busy_cells(corners: np.ndarray) -> np.ndarray:
    """Cells of a grid of values ``(Gy, Gx)`` where interpolation may be off: the corners vary by more than
    :data:`COARSE_RANGE` or come near 0.5 (:func:`_near_half`)."""
    four = np.stack([corners[:-1, :-1], corners[1:, :-1], corners[:-1, 1:], corners[1:, 1:]])
    low, high = four.min(axis=0), four.max(axis=0)
    return (high - low > COARSE_RANGE) | _near_half(low, high)


def _grid_values(block: np.ndarray, ys: np.ndarray, xs: np.ndarray, detail: np.ndarray, layers, chunk: int
                 ) -> Tuple[np.ndarray, int]:
    """``h`` at the grid points ``ys x xs`` of a block of rows ``(R, X, C)``: on every other grid point first,
    then at the rest only within the cells of that sparser grid where interpolating could be off: where its
    values vary or come near 0.5 (:func:`_busy_cells`) or a finer cell holds ``detail`` (the network's edges and
    the strokes: :func:`_coarse_to_fine`), grown by one cell.  Elsewhere (most of a section: glass and tissue
    far from the heart) the grid's values are interpolated; the cells there are interpolated by
    :func:`_coarse_to_fine` too, so their ``h`` is the sparser grid's interpolation.

    Returns ``(values (len(ys), len(xs)) float32, grid points evaluated)``.
    """
    channels = block.shape[2]
    sub_y, sub_x = _every_other(len(ys)), _every_other(len(xs))
    on_grid = np.empty((len(ys), len(xs)), np.float32)
    if len(sub_y) < 3 or len(sub_x) < 3:  # a sparser grid of one cell saves nothing: every point
        _evaluate(block[ys][:, xs].reshape(-1, channels), on_grid.reshape(-1), layers, chunk)
        return on_grid, on_grid.size
    sparse = np.empty((len(sub_y), len(sub_x)), np.float32)
    _evaluate(block[ys[sub_y]][:, xs[sub_x]].reshape(-1, channels), sparse.reshape(-1), layers, chunk)
    busy = _busy_cells(sparse)
    # The finer cells' detail, per sparser cell: finer cell i lies in sparser cell c when sub[c] <= i < sub[c + 1].
    busy |= np.logical_or.reduceat(np.logical_or.reduceat(detail, sub_y[:-1], axis=0), sub_x[:-1], axis=1)
    busy = _grow_cells(busy)
    _bilinear(sparse, ys[sub_y], xs[sub_x], ys, xs, out=on_grid)
    need = busy[_cells(len(ys), sub_y)][:, _cells(len(xs), sub_x)]
    need[np.ix_(sub_y, sub_x)] = False
    on_grid[np.ix_(sub_y, sub_x)] = sparse  # exact already (the product rounds)
    py, px = np.nonzero(need)
    if py.size:
        values = np.empty(py.size, np.float32)
        _evaluate(block.reshape(-1, channels).take(ys[py] * block.shape[1] + xs[px], axis=0), values, layers,
                  chunk)
        on_grid[py, px] = values
    return on_grid, sparse.size + py.size


def _reduce_cells(a: np.ndarray, grid: np.ndarray, axis: int, op: np.ufunc) -> np.ndarray:
    """``op`` (``np.minimum`` or ``np.maximum``) of ``a`` over the cells ``[grid[i], grid[i+1])`` of a
    :func:`_grid` (two points at least) along ``axis`` (0 or 1), the last cell running to the end.

    The cells of a :func:`_grid` are of one width but the last: along rows those are reduced as a reshaped
    block, which is several times faster than ``op.reduceat`` (most of the coarse evaluation's own time);
    along columns by ``op`` over the cells' ``width`` strided views, which is some 15 times faster than a
    reduction over a last axis only ``width`` long.
    """
    regular = len(grid) - 2
    width = int(grid[1] - grid[0])
    start = regular * width
    if axis == 0:
        blocks = op.reduce(a[:start].reshape(regular, width, *a.shape[1:]), axis=1)
        return np.concatenate([blocks, op.reduce(a[start:], axis=0, keepdims=True)])
    blocks = a[:, 0:start:width].copy()
    for k in range(1, width):
        op(blocks, a[:, k:start:width], out=blocks)
    return np.concatenate([blocks, op.reduce(a[:, start:], axis=1, keepdims=True)], axis=1)


def _cell_range(a: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Minimum and maximum of ``a`` ``(R, X)`` over the grid cells ``[ys[i], ys[i+1]) x [xs[j], xs[j+1])``
    (the last cell of each axis runs to the end)."""
    return tuple(_reduce_cells(_reduce_cells(a, ys, 0, op), xs, 1, op) for op in (np.minimum, np.maximum))


def _grow_cells(flags: np.ndarray) -> np.ndarray:
    """``flags`` grown by one cell in the 8-neighbourhood."""
    out = flags.copy()
    out[1:] |= flags[:-1]
    out[:-1] |= flags[1:]
    grown = out.copy()
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    return grown


def _coarse_to_fine(block: np.ndarray, network: Optional[np.ndarray], scribbles: Optional[np.ndarray],
                    layers, chunk: int, stride: int) -> Tuple[np.ndarray, int]:
    """``h`` of a block of rows ``(R, X, C)``: on the grid, interpolated, exact where it could matter.

    Returns ``(h (R, X) float32, voxels evaluated)``.
    """
    rows, cols, channels = block.shape
    ys, xs = _grid(rows, stride), _grid(cols, stride)
    h = np.empty((rows, cols), np.float32)
    if len(ys) < 2 or len(xs) < 2:  # a block one pixel thin: nothing to interpolate
        _evaluate(block.reshape(-1, channels), h.reshape(-1), layers, chunk)
        return h, h.size
    # Detail the grid may step over: the network's edges and thin walls, and the strokes.
    detail = np.zeros((len(ys) - 1, len(xs) - 1), bool)
    if network is not None:
        low, high = _cell_range(network, ys, xs)
        detail |= (high - low > NETWORK_RANGE) | _near_half(low, high)
    if scribbles is not None:
        detail |= _reduce_cells(_reduce_cells(scribbles, ys, 0, np.maximum), xs, 1, np.maximum) > 0
    on_grid, evaluated = _grid_values(block, ys, xs, detail, layers, chunk)
    _bilinear(on_grid, ys, xs, np.arange(rows), np.arange(cols), out=h)
    # One more cell around each: a boundary that runs along a cell's edge shows in its neighbours.
    exact = _grow_cells(_busy_cells(on_grid) | detail)
    mask = exact[_cells(rows, ys)][:, _cells(cols, xs)]
    h[np.ix_(ys, xs)] = on_grid  # the grid itself is exact already (the product rounds)
    mask[np.ix_(ys, xs)] = False
    # By flat index: block[mask] and h[mask] = ... took several times as long as take and put.
    picked = np.flatnonzero(mask)
    if picked.size:
        values = np.empty(picked.size, np.float32)
        _evaluate(block.reshape(-1, channels).take(picked, axis=0), values, layers, chunk)
        h.reshape(-1)[picked] = values
    return h, evaluated + picked.size


def predict_h(features: np.ndarray, f: DDMLNet, head: Head, chunk: int = 8192, workers: Optional[int] = None,
              progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None, *,
              evaluation: Optional[str] = None, scribbles: Optional[np.ndarray] = None,
              network_probability: Optional[np.ndarray] = None, stats: Optional[dict] = None) -> np.ndarray:
    """``h = head(f(x))`` over the volume: at every voxel, or coarse-to-fine.

    Reads ``features`` in slabs of rows (about 256 k voxels each; a
    memory-mapped feature cache with file reads, so it never enters the
    process's resident memory) and evaluates each slab in chunks of ``chunk``
    voxels.  Slabs are shared among ``workers`` threads that each run torch with
    one intra-op thread: on a 2-core CPU as fast as torch's two intra-op threads
    when the machine is idle, and 4-20x faster when another process keeps a core
    busy (see ``benchmarks/bench_ddml.py``).

    ``evaluation="coarse"`` evaluates each section on a grid of every
    :data:`COARSE_STRIDE`-th pixel and row, interpolates linearly in-plane, and
    evaluates exactly every grid cell (grown by one cell) where the
    interpolation could change the cut: where the head's output varies across
    the cell (:data:`COARSE_RANGE`) or comes near 0.5 (:data:`COARSE_MARGIN`),
    where the network's probability does either (``network_probability``: an
    edge or a thin wall the grid may step over), and where there are
    scribbles.  The grid itself is found the same way from every other grid
    point: its other points are evaluated only within the cells of that sparser
    grid where any of this holds, grown by one cell.  On the benchmark volumes
    the final labels after the cut agree with ``exact`` to Dice >= 0.999
    (BENCHMARKS.md, "Interactive speed", items 1 and 66).

    Parameters
    ----------
    features : numpy.ndarray
        ``(Z, Y, X, C)`` float16 or float32, possibly a memmap.
    f : DDMLNet
    head : Head
    chunk : int
        Voxels per matrix product.
    workers : int, optional
        Threads; default ``min(os.cpu_count(), 8)``.
    progress, cancel
        See :mod:`ScribbleSegLib.progress`.
    evaluation : {"coarse", "exact"}, optional
        Default :data:`ScribbleSegLib.choices.DEFAULT_H_EVALUATION` (``DDMLConfig.evaluation``).
    scribbles : numpy.ndarray, optional
        ``(Z, Y, X)`` scribbles (nonzero: drawn); ``coarse`` evaluates exactly around them.
    network_probability : numpy.ndarray, optional
        ``(Z, Y, X)`` the network's probability; ``coarse`` uses it to find detail.
    stats : dict, optional
        Filled with ``evaluated``: the number of voxels at which ``f`` and the head ran.

    Returns
    -------
    numpy.ndarray
        float32 ``(Z, Y, X)`` in [0, 1].

    Examples
    --------
    >>> from ScribbleSegLib.ddml import DDMLConfig, train_ddml, train_head
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(64, 4)).astype(np.float32), np.arange(64) % 2
    >>> config = DDMLConfig(hidden=(8,), out_dim=4, steps=2, batch_size=8, head_steps=2)
    >>> f = train_ddml(x, y, config); head = train_head(f, x, y, config)
    >>> features = rng.normal(size=(2, 16, 16, 4)).astype(np.float16)
    >>> coarse = predict_h(features, f, head, evaluation="coarse")
    >>> exact = predict_h(features, f, head, evaluation="exact")
    >>> coarse.shape, bool(np.abs(coarse - exact).max() < 0.05)
    ((2, 16, 16), True)
    """
    if features.ndim != 4:
        raise ScribbleSegError(f"features must be (Z, Y, X, C), got shape {features.shape}")
    channels = features.shape[3]
    if channels != f.in_dim:
        raise ScribbleSegError(f"the volume's features have {channels} channels, the DDML network expects {f.in_dim}")
    evaluation = choices.DEFAULT_H_EVALUATION if evaluation is None else evaluation
    if evaluation not in choices.H_EVALUATIONS:
        raise ScribbleSegError(f"evaluation must be one of {', '.join(choices.H_EVALUATIONS)}, got {evaluation!r}")
    depth, rows, cols = features.shape[:3]
    for name, guide in (("scribbles", scribbles), ("network_probability", network_probability)):
        if guide is not None and tuple(np.shape(guide)) != (depth, rows, cols):
            raise ScribbleSegError(f"{name} has shape {tuple(np.shape(guide))}, the features "
                                   f"{(depth, rows, cols)}")
    chunk = max(1, int(chunk))
    workers = max(1, int(workers or min(os.cpu_count() or 1, 8)))
    h = np.empty((depth, rows, cols), dtype=np.float32)
    coarse = evaluation == "coarse"
    # Slabs of whole sections, or of rows of one section when sections are big (whole grid cells when coarse).
    rows_per_slab = max(1, min(rows, (1 << 18) // max(1, cols)))
    if coarse:
        rows_per_slab = max(COARSE_STRIDE, rows_per_slab - rows_per_slab % COARSE_STRIDE)
    slabs = [(z, y0, min(rows, y0 + rows_per_slab)) for z in range(depth) for y0 in range(0, rows, rows_per_slab)]
    layers = fused_layers(f, head)
    reader = FeatureReader(features)

    def run(slab) -> int:
        z, y0, y1 = slab
        check(cancel)
        if not coarse:
            block = reader.rows(z, y0, y1)
            _evaluate(block.reshape(-1, channels), h[z, y0:y1].reshape(-1), layers, chunk)
            return block.shape[0] * cols
        # One more row: the grid row where the next slab starts closes this slab's last cells.
        end = min(rows, y1 + 1)
        guide = None if network_probability is None else np.asarray(network_probability[z, y0:end], np.float32)
        drawn = None if scribbles is None else np.asarray(scribbles[z, y0:end])
        block_h, evaluated = _coarse_to_fine(reader.rows(z, y0, end), guide, drawn, layers, chunk, COARSE_STRIDE)
        h[z, y0:y1] = block_h[: y1 - y0]
        return evaluated

    evaluated = 0
    with torch_threads(1):
        pool = thread_pool(workers)
        try:
            for done, count in enumerate(pool.map(run, slabs), start=1):
                evaluated += count
                if done % max(1, len(slabs) // 100) == 0 or done == len(slabs):
                    z = slabs[done - 1][0]
                    report(progress, "probability", done / len(slabs), f"section {z + 1}/{depth}")
                check(cancel)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    if stats is not None:
        stats["evaluated"] = evaluated
    release_free_memory()  # the threads' freed buffers: the cut, the peak of a run, comes next
    return h
