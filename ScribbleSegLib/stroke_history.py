"""The strokes of earlier runs on an image, and how much of them the network contradicted.

A round of corrective strokes adds strokes to the last ones, and the strokes go where the last *result* was wrong,
not where the network is.  Where the adaptation without the model's training pixels (its bank) fixed what the
network got wrong, the corrective strokes land where the network is right, and the share of the strokes that the
network contradicts (:func:`ScribbleSegLib.pipeline.network_doubt`) falls: the run then kept more of the bank,
and the result fell back (a real gland tile: 0.749 to 0.575 in its third round; BENCHMARKS.md, "The doubt of
earlier strokes kept over the rounds").  What the first strokes showed about the network still holds, so a run
whose strokes hold an earlier run's strokes (every voxel that run stroked, stroked alike) takes the larger doubt
of the two, class by class.  Other strokes, or strokes with one of them erased, start afresh.

The history lives in the image's feature cache entry when the M-Unet's outputs came from one (the command line:
each round is a process of its own), else in the caller's :class:`StrokeHistory` (a warm session, the bench's
rounds).  It keeps :data:`KEPT_RUNS` runs, the latest of each chain of rounds, so rounds of several stroke patterns
run in turn on one image each follow their own.  A run that left the model's bank out keeps its result's labels
too (:meth:`StrokeHistory.last_result`): the next run of its chain keeps them away from its new strokes
(:mod:`ScribbleSegLib.last_result`).  A run that cut keeps the factor its cut scaled ``gamma`` by to the objects
(:meth:`StrokeHistory.cut_scale`): the next run of its chain cuts with no weaker a boundary term.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .checks import stroked_sections

log = logging.getLogger(__name__)

#: How many earlier runs an image's history keeps (the latest of each chain of rounds, the oldest dropped first).
KEPT_RUNS = 8
#: The file of an image's history in its feature cache entry.
HISTORY_FILE = "stroke-history.npz"


@dataclass(frozen=True)
class StrokeRun:
    """The strokes of one run, as flat voxel indices (increasing) and their codes (1 heart, 2 background), the
    ``(heart, background)`` doubt the run went by, its result's labels where kept (bits, :meth:`result`), and the
    factor its cut scaled ``gamma`` by to the objects, where it did (``cut_scale``: :meth:`StrokeHistory.cut_scale`).

    Examples
    --------
    >>> scribbles = np.zeros((2, 2, 3), np.uint8); scribbles[1, 0, 1] = 1; scribbles[1, 1, 2] = 2
    >>> run = StrokeRun.of(scribbles, (0.1, 0.4))
    >>> run.voxels.tolist(), run.codes.tolist(), run.doubt
    ([7, 11], [1, 2], (0.1, 0.4))
    >>> more = scribbles.copy(); more[0, 0, 0] = 2
    >>> run.held_by(more), run.held_by(np.zeros_like(scribbles))  # more strokes hold it; erased ones do not
    (True, False)
    """

    shape: Tuple[int, int, int]
    voxels: np.ndarray
    codes: np.ndarray
    doubt: Tuple[float, float]
    labels: Optional[np.ndarray] = None
    cut_scale: Optional[float] = None

    @classmethod
    def of(cls, scribbles: np.ndarray, doubt: Sequence[float], labels: Optional[np.ndarray] = None,
           cut_scale: Optional[float] = None) -> "StrokeRun":
        rows = scribbles.reshape(scribbles.shape[0], -1)
        # The stroked sections first: a stack's strokes lie on a few (a run kept in 12 ms, not 44, at 100x512x512).
        parts = [np.flatnonzero(rows[z]) + z * rows.shape[1] for z in stroked_sections(scribbles)]
        voxels = np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)
        bits = None if labels is None else np.packbits(labels.reshape(-1) > 0)
        return cls(tuple(int(k) for k in scribbles.shape), voxels, scribbles.reshape(-1)[voxels].astype(np.uint8),
                   (float(doubt[0]), float(doubt[1])), bits, None if cut_scale is None else float(cut_scale))

    def result(self) -> Optional[np.ndarray]:
        """The run's result as uint8 labels of its shape (1 target), or None where it was not kept.

        Examples
        --------
        >>> labels = np.zeros((1, 2, 3), np.uint8); labels[0, 1, 1:] = 1
        >>> StrokeRun.of(np.ones((1, 2, 3), np.uint8), (0.0, 0.0), labels).result().tolist()
        [[[0, 0, 0], [0, 1, 1]]]
        """
        if self.labels is None:
            return None
        count = int(np.prod(self.shape))
        return np.unpackbits(self.labels, count=count).reshape(self.shape)

    def held_by(self, scribbles: np.ndarray) -> bool:
        """Whether ``scribbles`` stroke every voxel of this run alike (they may stroke more)."""
        if tuple(scribbles.shape) != self.shape:
            return False
        return bool(np.array_equal(scribbles.reshape(-1)[self.voxels], self.codes))


class StrokeHistory:
    """Earlier runs' strokes on one image and the doubt each went by: :meth:`carried` and :meth:`remember`.

    Parameters
    ----------
    path : path, optional
        The file that keeps the history between processes (:meth:`at`); None: in memory only.

    Examples
    --------
    >>> history = StrokeHistory()
    >>> first = np.zeros((1, 2, 4), np.uint8); first[0, 0, :2] = 1; first[0, 1, :2] = 2
    >>> history.remember(first, (0.0, 0.9))
    >>> more = first.copy(); more[0, 1, 2:] = 2  # corrective strokes where the network is right
    >>> history.carried(more, (0.0, 0.5))
    (0.0, 0.9)
    >>> other = np.zeros_like(first); other[0, 0, 3] = 1; other[0, 1, 3] = 2
    >>> history.carried(other, (0.0, 0.5))
    (0.0, 0.5)
    """

    def __init__(self, path: Optional[Path] = None) -> None:
        self.path = None if path is None else Path(path)
        self._runs: Optional[List[StrokeRun]] = None if self.path is not None else []  # a file's: read on first use

    @classmethod
    def at(cls, features: np.ndarray) -> Optional["StrokeHistory"]:
        """The history kept in the feature cache entry that ``features`` were read from, or None.

        Examples
        --------
        >>> StrokeHistory.at(np.zeros((1, 2, 2, 4), np.float32)) is None  # features computed, not read from a cache
        True
        """
        from .feature_cache import entry_of

        entry = entry_of(features)
        return None if entry is None else cls(entry / HISTORY_FILE)

    def runs(self) -> List[StrokeRun]:
        """The runs kept, oldest first (read from :attr:`path` once, if there is one).

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = Path(folder) / HISTORY_FILE
        ...     StrokeHistory(path).remember(np.ones((1, 2, 2), np.uint8), (0.25, 0.5))
        ...     [run.doubt for run in StrokeHistory(path).runs()]  # another process reads it back
        [(0.25, 0.5)]
        """
        if self._runs is None:
            self._runs = self._read()
        return list(self._runs)

    def carried(self, scribbles: np.ndarray, doubt: Sequence[float]) -> Tuple[float, float]:
        """``doubt`` of ``scribbles``, raised class by class to that of each earlier run whose strokes they hold."""
        heart, background = float(doubt[0]), float(doubt[1])
        for run in self.runs():
            if run.held_by(scribbles):
                heart, background = max(heart, run.doubt[0]), max(background, run.doubt[1])
        return heart, background

    def cut_scale(self, scribbles: np.ndarray) -> Optional[float]:
        """The largest factor by which the cut of an earlier run whose strokes ``scribbles`` hold scaled ``gamma`` to
        the objects (:func:`ScribbleSegLib.cut_scaling.object_scale`), or None where none of them did.

        Examples
        --------
        >>> history = StrokeHistory()
        >>> first = np.zeros((1, 1, 4), np.uint8); first[0, 0, 0] = 1; first[0, 0, 3] = 2
        >>> history.remember(first, (0.0, 0.0), cut_scale=0.707)
        >>> more = first.copy(); more[0, 0, 1] = 2
        >>> history.cut_scale(more), history.cut_scale(np.zeros_like(first))
        (0.707, None)
        """
        scales = [run.cut_scale for run in self.runs() if run.cut_scale is not None and run.held_by(scribbles)]
        return max(scales) if scales else None

    def last_result(self, scribbles: np.ndarray) -> Optional[StrokeRun]:
        """The latest kept run whose strokes ``scribbles`` hold and whose result was kept (:meth:`remember`'s
        ``labels``): the round before this one in a chain of rounds; None if there is none.

        Examples
        --------
        >>> history = StrokeHistory()
        >>> first = np.zeros((1, 1, 4), np.uint8); first[0, 0, 0] = 1; first[0, 0, 3] = 2
        >>> history.remember(first, (0.9, 0.0), labels=np.array([[[1, 1, 0, 0]]], np.uint8))
        >>> more = first.copy(); more[0, 0, 1] = 2
        >>> history.last_result(more).result().tolist(), history.last_result(np.zeros_like(first)) is None
        ([[[1, 1, 0, 0]]], True)
        """
        held = [run for run in self.runs() if run.labels is not None and run.held_by(scribbles)]
        return held[-1] if held else None

    def remember(self, scribbles: np.ndarray, doubt: Sequence[float], labels: Optional[np.ndarray] = None,
                 cut_scale: Optional[float] = None) -> None:
        """Keep this run in place of the earlier runs its strokes hold (the chain goes on), the oldest beyond
        :data:`KEPT_RUNS` dropped, with its result's ``labels`` where given (:meth:`last_result`) and the factor its
        cut scaled ``gamma`` by (:meth:`cut_scale`).  A file that cannot be written is one warning; the run is not
        affected.

        Examples
        --------
        >>> history = StrokeHistory()
        >>> first = np.zeros((1, 1, 3), np.uint8); first[0, 0, 0] = 1
        >>> history.remember(first, (0.2, 0.0))
        >>> more = first.copy(); more[0, 0, 2] = 2
        >>> history.remember(more, (0.1, 0.3))  # holds the first run's strokes: takes its place
        >>> [run.doubt for run in history.runs()]
        [(0.1, 0.3)]
        """
        runs = [run for run in self.runs() if not run.held_by(scribbles)]
        self._write((runs + [StrokeRun.of(scribbles, doubt, labels, cut_scale)])[-KEPT_RUNS:])

    def forget_results(self) -> None:
        """Drop every run's kept labels and cut scale, keeping its strokes and doubt: after "undo", the last result
        the user saw is not the last run's, and no later run may keep it (:meth:`last_result`) or the scale it was
        cut at (:meth:`cut_scale`).

        Examples
        --------
        >>> history = StrokeHistory()
        >>> strokes = np.ones((1, 1, 2), np.uint8)
        >>> history.remember(strokes, (0.9, 0.0), labels=np.ones((1, 1, 2), np.uint8), cut_scale=0.5)
        >>> history.forget_results()
        >>> history.last_result(strokes), history.cut_scale(strokes), history.carried(strokes, (0.0, 0.0))
        (None, None, (0.9, 0.0))
        """
        runs = self.runs()
        if any(run.labels is not None or run.cut_scale is not None for run in runs):
            self._write([dataclasses.replace(run, labels=None, cut_scale=None) for run in runs])

    def _write(self, runs: List[StrokeRun]) -> None:
        """Keep ``runs``, in the file too where there is one (a file that cannot be written is one warning)."""
        self._runs = runs
        if self.path is None:
            return
        from .errors import ScribbleSegError
        from .fileio import atomic_output, signals_held

        try:
            kept = [r.labels if r.labels is not None else np.empty(0, np.uint8) for r in runs]
            expected = sum(9 * r.voxels.size + 64 for r in runs) + sum(k.size for k in kept) + 4096
            with atomic_output(self.path, expected_bytes=expected) as tmp:
                # A signal inside zipfile's writer left its archive to fail again when collected ("Exception
                # ignored ... seek of closed file", exit status 1): held until the file is whole.
                with signals_held(), open(tmp, "wb") as handle:
                    np.savez(handle, shapes=np.array([r.shape for r in runs], np.int64),
                             sizes=np.array([r.voxels.size for r in runs], np.int64),
                             voxels=np.concatenate([r.voxels for r in runs]).astype(np.int64),
                             codes=np.concatenate([r.codes for r in runs]),
                             doubts=np.array([r.doubt for r in runs], np.float64),
                             label_sizes=np.array([k.size for k in kept], np.int64), labels=np.concatenate(kept),
                             cut_scales=np.array([np.nan if r.cut_scale is None else r.cut_scale for r in runs],
                                                 np.float64))
        except (OSError, ScribbleSegError) as exc:
            log.warning("feature cache: the strokes of this run were not kept in %s (%s); a later run that adds to "
                        "them takes its own doubt of the network", self.path.parent, exc)

    def _read(self) -> List[StrokeRun]:
        """The runs in :attr:`path`; none if it is missing, and none (the file removed) if it does not hold what
        :meth:`remember` writes."""
        if not self.path.is_file():
            return []
        try:
            with np.load(self.path, allow_pickle=False) as stored:
                shapes, sizes, voxels = stored["shapes"], stored["sizes"], stored["voxels"]
                codes, doubts = stored["codes"], stored["doubts"]
                # A history written before results were kept has none.
                kept = (stored["label_sizes"], stored["labels"]) if "labels" in stored.files else None
                # ... nor the cut's scale.
                scales = stored["cut_scales"] if "cut_scales" in stored.files else None
            return _runs_of(shapes, sizes, voxels, codes, doubts, kept, scales)
        # A file cut short or with bytes changed fails in zipfile (np.savez's container) in as many ways as it can
        # be damaged (BadZipFile, NotImplementedError for a changed version, ...); the history only refines the
        # doubt, so any failure to read it drops it rather than every later run on the image.
        except Exception as exc:  # noqa: BLE001
            from .fileio import unreadable_reason

            log.warning("feature cache: the strokes of earlier runs in %s are not usable (%s); removed",
                        self.path.parent, unreadable_reason(exc))
            with contextlib.suppress(OSError):
                self.path.unlink()
            return []


def _runs_of(shapes: np.ndarray, sizes: np.ndarray, voxels: np.ndarray, codes: np.ndarray,
             doubts: np.ndarray, kept: Optional[Tuple[np.ndarray, np.ndarray]] = None,
             scales: Optional[np.ndarray] = None) -> List[StrokeRun]:
    """The runs of a history file's arrays, checked; ValueError if they do not fit together.  ``kept``: the sizes
    of the runs' packed result labels (0: none kept) and those labels, one after the other; ``scales``: each run's
    cut scale (NaN: none)."""
    n = len(sizes)
    if scales is None:
        scales = np.full(n, np.nan)
    valid = np.isnan(scales) | ((scales > 0) & (scales <= 1)) if scales.dtype == np.float64 else None
    if scales.shape != (n,) or valid is None or not valid.all():
        raise ValueError("its cut scales do not fit its runs")
    results: List[Optional[np.ndarray]] = [None] * n
    if kept is not None:
        label_sizes, labels = kept
        if (label_sizes.shape != (n,) or label_sizes.dtype != np.int64 or labels.dtype != np.uint8
                or (label_sizes < 0).any() or int(label_sizes.sum()) != labels.size):
            raise ValueError("its result labels do not fit together")
        ends = np.cumsum(label_sizes)
        for i, (size, end) in enumerate(zip(label_sizes, ends)):
            if size and size != -(-int(np.prod(shapes[i])) // 8):
                raise ValueError("it holds result labels of another size than their volume")
            results[i] = labels[int(end) - int(size):int(end)] if size else None
    if (shapes.shape != (n, 3) or doubts.shape != (n, 2) or voxels.dtype != np.int64 or codes.dtype != np.uint8
            or sizes.dtype != np.int64 or (sizes < 0).any() or int(sizes.sum()) != voxels.size
            or voxels.size != codes.size or (shapes <= 0).any()):
        raise ValueError("its arrays do not fit together")
    if not ((doubts >= 0) & (doubts <= 1)).all() or not np.isin(codes, (1, 2)).all():
        raise ValueError("it holds doubts or stroke codes out of range")
    runs, start = [], 0
    for shape, size, doubt, result, scale in zip(shapes, sizes, doubts, results, scales):
        end = start + int(size)
        part = voxels[start:end]
        if part.size and (part[0] < 0 or part[-1] >= int(np.prod(shape)) or (np.diff(part) <= 0).any()):
            raise ValueError("it holds voxels out of their volume")
        runs.append(StrokeRun(tuple(int(s) for s in shape), part, codes[start:end], (float(doubt[0]), float(doubt[1])),
                              result, None if np.isnan(scale) else float(scale)))
        start = end
    return runs
