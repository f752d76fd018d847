"""A warm session: the model, one volume and its M-Unet features kept in memory between runs.

Each :meth:`Session.run` takes a new set of scribbles and runs only the
adaptation (DDML + head) and the graph cut; the M-Unet ran once, when the
session was opened.  Both go through :func:`ScribbleSegLib.pipeline.adapt_and_cut`:
the first run returns exactly what :func:`ScribbleSegLib.pipeline.segment` would
for the same arguments (same labels, probability, warnings and suggestions).
Later runs start the cut from the last one (``reuse_cut``,
:class:`ScribbleSegLib.graphcut.CutMemory`: kept coarse pair weights, exact; and
the last cut's band graph, grown around what changed and cut on from its last
flow, whose energy was closer to the exact optimum than a cut from scratch on
the benchmark volumes); ``reuse_cut=False``
makes every run equal to :func:`pipeline.segment`.  A run with the last run's
strokes and arguments returns the last result again at once.
Numpy in, numpy out, no Qt; the Slicer module's persistent worker
(``task: session`` in :mod:`ScribbleSegLib.worker`) is built on it::

    from ScribbleSegLib.session import Session
    session = Session(volume, "heart.model", cache_dir="cache")
    first = session.run(scribbles)
    scribbles[12, 40:60, 80] = 2          # another background stroke
    second = session.run(scribbles)       # adaptation + cut only
"""

from __future__ import annotations

import os
import time
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from . import choices, pipeline
from .checks import (check_instance, check_method, check_progress_cancel, check_scribbles, check_seed,
                     check_segment_args, check_suggest)
from .errors import DamagedFeatures, ScribbleSegError
from .feature_reader import read_only_view
from .geometry import Volume
from .progress import CancelToken, ProgressCallback
from .stroke_history import StrokeHistory


class Session:
    """The model, a volume and its M-Unet outputs, kept warm for repeated runs.

    Parameters
    ----------
    image : Volume or numpy.ndarray
        ``(Z, Y, X, 3)`` uint8 RGB or ``(Z, Y, X)`` grey, as a :class:`Volume`
        or a bare array with ``spacing`` (as for :func:`pipeline.segment`).
        The session keeps this array, not a copy (a volume can take GBs): do
        not change it while the session is open.  Its M-Unet outputs were
        computed once; another image needs another session.
    model : path or SegModel
        A model file or a loaded model.
    spacing : tuple of 3 float, optional
        ``(x, y, z)`` mm when ``image`` is a bare array.
    device : {"auto", "cpu", "cuda"}
    cache_dir : path, optional
        Feature cache folder (with a model *file*): a new session on a volume seen
        before reads its features from there.
    features : (probability, features), optional
        M-Unet outputs already computed for this image with this model.
    progress, cancel
        See :mod:`ScribbleSegLib.progress`; they cover the M-Unet.
    reuse_cut : bool
        Start each run's graph cut from the previous run's (default
        :data:`ScribbleSegLib.choices.SESSION_REUSES_CUT`); False: every cut from scratch.
        Each run's DDML network ``f`` with the model's training pixels starts from the previous run's in any case,
        unless its ``DDMLConfig.warm_steps`` is 0 (:class:`ScribbleSegLib.ddml.AdaptMemory`); the adaptation that
        leaves them out trains from scratch in every run.
    orientations : {1, 2, 4}
        Test-time flips of the M-Unet (see :func:`pipeline.segment`).

    Attributes
    ----------
    array : numpy.ndarray
        The volume, ``(Z, Y, X, 3)`` uint8.
    geometry : Geometry
    model : SegModel
        The loaded model.
    probability, features : numpy.ndarray
        The M-Unet outputs (``features`` may be memory-mapped from the cache), as read-only views: each
        run's ``munet_probability`` is ``probability``.
    features_cached : bool
        Whether the M-Unet outputs came from the cache (or ``features``).
    warnings : list of str
        Warnings about the volume itself (pixel size far from the model's, ...);
        every run's result repeats them after its own scribble warnings.
    timings : dict
        Seconds spent opening the session: ``load model``, ``M-Unet features``, and on a GPU
        ``features to GPU``.
    resident : gpu_adaptation.Resident or None
        On a GPU, the M-Unet outputs kept there for every run's ``h``
        (:func:`ScribbleSegLib.pipeline.to_gpu`); None on a CPU.
    cut_memory : graphcut.CutMemory or None
        The last cut, which the next run's cut starts from (None without ``reuse_cut``).
    adapt_memory : ddml.AdaptMemory
        The last run's DDML network ``f``, which the next run's starts from.
    history : stroke_history.StrokeHistory
        The earlier runs' strokes, for the network's doubt of a run that adds to them (with features from a
        cache entry, the entry's history is used instead, as by the command line).

    Raises
    ------
    ScribbleSegError
        On bad arguments, and, before the M-Unet runs, when a graph cut of the volume could not fit in the
        memory available (:func:`graphcut.check_cut_fits`).

    Examples
    --------
    >>> Session(np.arange(384, dtype=np.uint8).reshape(2, 8, 8, 3), None)
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: model is None: pass a model file or a model from model_file.load_model
    """

    def __init__(self, image: Union[Volume, np.ndarray], model, *,
                 spacing: Optional[Tuple[float, float, float]] = None, device: str = choices.DEFAULT_DEVICE,
                 cache_dir: Optional[Union[str, os.PathLike]] = None,
                 features: Optional[Tuple[np.ndarray, np.ndarray]] = None,
                 progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
                 reuse_cut: bool = choices.SESSION_REUSES_CUT,
                 orientations: int = choices.DEFAULT_ORIENTATIONS) -> None:
        self.array, self.geometry, _ = check_segment_args(
            image, None, model, spacing=spacing, method="munet", cut_params=None, ddml_config=None,
            device=device, cache_dir=cache_dir, seed=0, features=features, orientations=orientations)
        # The scan's pixel size its file states apart from its grid (Volume.scan_pixel); a given spacing replaces it.
        self.scan_pixel = image.scan_pixel if isinstance(image, Volume) and spacing is None else None
        self._bare = not isinstance(image, Volume)  # no file states its axis order (pipeline.run_warnings)
        check_progress_cancel(progress, cancel)
        if not isinstance(reuse_cut, (bool, np.bool_)):  # "no" would be taken as True
            raise ScribbleSegError(f"reuse_cut must be True or False, got {reuse_cut!r}")
        from .graphcut import check_cut_fits

        # Its runs cut (method "full" by default): a stack whose cut cannot fit is refused before the network runs.
        check_cut_fits(self.array.shape[:3], self.geometry.spacing_zyx)
        self.device = device
        self.timings: Dict[str, float] = {}
        self.warnings: List[str] = []
        t0 = time.perf_counter()
        self.model = pipeline.as_model(model, device)
        self.model_path = getattr(self.model, "path", None)  # its file ("starter" resolved), for the cache key
        self.timings["load model"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._compute = None  # how to compute the features again when their cache entry turns out damaged
        pixel = pipeline.scale_pixel(image, self.geometry, spacing)
        self._far_scale = pipeline.far_from_model(pixel, self.model)
        if features is not None:
            (self.probability, self.features), self.features_cached = features, True
        else:
            scale = pipeline.logged_network_scale(pixel, self.model, self.warnings, self.array.shape[1:3],
                                                  self.geometry.spacing_zyx, self.array.shape[0])

            def compute(progress=progress, cancel=cancel):
                return pipeline.compute_features(self.array, self.model, model_path=self.model_path,
                                                 cache_dir=cache_dir, device=device, scale=scale, progress=progress,
                                                 cancel=cancel, orientations=orientations)

            self._compute = compute
            with pipeline.warnings_kept(self.warnings):  # what computing them says holds for every run
                self.probability, self.features, self.features_cached = compute()
        self._hold(self.probability, self.features)
        self.timings["M-Unet features"] = time.perf_counter() - t0
        from .ddml import AdaptMemory

        self.adapt_memory = AdaptMemory()
        self.history = StrokeHistory()
        self._last: Optional[Tuple[tuple, Optional[np.ndarray], pipeline.SegmentResult]] = None
        self.cut_memory = None
        if reuse_cut:
            from .graphcut import CutMemory

            self.cut_memory = CutMemory()

    def _hold(self, probability: np.ndarray, features: np.ndarray) -> None:
        """Keep the M-Unet outputs for every run."""
        # Every run's result holds the probability (``munet_probability``): read-only views keep a change made to
        # a result from reaching the next run.
        self.probability, self.features = read_only_view(probability), read_only_view(features)
        # On a GPU the features stay there for every run's h (None on a CPU, or where they would not fit).
        self.resident = pipeline.to_gpu(self.probability, self.features, self.model, self.timings)

    def forget_runs(self) -> None:
        """Let the next run start as the first did: its DDML network ``f`` from random weights and its cut from
        scratch, as if no run had come before (what the image alone gives, the features and the cut's coarse
        weights, is kept).  For a run after "undo", whose last run the user took back.  The network's doubt that
        earlier strokes showed stays with those strokes (:attr:`history`): strokes that hold them take it still;
        the results kept with them go (``DDMLConfig.keep_last``: the result the user sees is not the last run's), and
        so do the scales their cuts took (:meth:`StrokeHistory.cut_scale`).

        Examples
        --------
        >>> from ScribbleSegLib.ddml import AdaptMemory
        >>> session = Session.__new__(Session)
        >>> session.adapt_memory, session.cut_memory, session.history = AdaptMemory(), None, StrokeHistory()
        >>> session.features = np.zeros((1, 2, 2, 3), np.float16)
        >>> session.forget_runs()
        >>> session.adapt_memory.f is None
        True
        """
        self.adapt_memory.clear()
        self._last = None
        for history in (self.history, StrokeHistory.at(self.features)):  # features from a cache entry use its own
            if history is not None:
                history.forget_results()
        if self.cut_memory is not None:
            self.cut_memory.forget_labels()

    @property
    def shape(self) -> Tuple[int, int, int]:
        """``(Z, Y, X)`` of the volume."""
        return tuple(int(s) for s in self.array.shape[:3])

    @property
    def volume(self) -> Volume:
        """The volume with its geometry."""
        return Volume(self.array, self.geometry, self.scan_pixel)

    def run(self, scribbles: Optional[np.ndarray], *, method: str = choices.DEFAULT_METHOD, cut_params=None,
            ddml_config=None, seed: int = 0, suggest: int = choices.DEFAULT_SUGGESTIONS,
            progress: Optional[ProgressCallback] = None,
            cancel: Optional[CancelToken] = None) -> pipeline.SegmentResult:
        """Segment with a new set of scribbles: DDML + head and the graph cut only.

        Parameters
        ----------
        scribbles : numpy.ndarray or None
            uint8 ``(Z, Y, X)``: 0 none, 1 heart, 2 background.  Not needed for ``munet``.
        method, cut_params, ddml_config, seed, suggest, progress, cancel
            See :func:`ScribbleSegLib.pipeline.segment`.

        Returns
        -------
        SegmentResult
            What :func:`pipeline.segment` returns for the same volume, model and
            arguments; ``features_cached`` is True (nothing was computed; False
            after features whose cache entry turned out damaged were computed
            again) and ``timings`` holds this run's stages only.  With ``reuse_cut``, the cut of
            a later run starts from the previous run's, and with ``DDMLConfig.warm_steps``
            (by default) its DDML network too (see :class:`Session`).  A run whose strokes
            add to an earlier run's takes the network's doubt of that run where larger
            (:attr:`history`), as :func:`pipeline.segment` does with a cache entry.
            Its ``labels`` and ``probability`` are read-only (copy them to change them).  A run with the last
            run's strokes and arguments returns that run's result again, at once (``timings`` empty): pressing
            Run twice gives one answer.

        Examples
        --------
        >>> from ScribbleSegLib.phantom import PhantomConfig, make_phantom
        >>> from ScribbleSegLib.scribbles import simulate_scribbles
        >>> phantom = make_phantom(0, PhantomConfig(shape=(4, 64, 64)))
        >>> session = Session(phantom.image, "starter")  # the M-Unet runs here, once
        >>> strokes = simulate_scribbles(phantom.label, seed=0, every=2)
        >>> first = session.run(strokes)  # DDML + head and the cut
        >>> first.labels.shape, first.labels.dtype, first.labels.flags.writeable
        ((4, 64, 64), dtype('uint8'), False)
        >>> session.run(strokes.copy()).timings  # the same strokes again: the last result, at once
        {}
        """
        method = check_method(method)
        scribbles = check_scribbles(scribbles, self.shape, method)
        check_seed(seed)
        check_suggest(suggest)
        check_progress_cancel(progress, cancel)
        if cut_params is not None:
            from .graphcut import GraphCutParams

            check_instance(cut_params, "cut_params", GraphCutParams)
        if ddml_config is not None:
            from .ddml import DDMLConfig

            check_instance(ddml_config, "ddml_config", DDMLConfig)
        # The same strokes and arguments as the last run: its result again.  Running them again would not give it:
        # f and the cut start from the last run's, so a repeated Run would move the outline by a few voxels.
        key = (method, cut_params, ddml_config, int(seed), suggest)
        if self._last is not None and self._last[0] == key and _same_strokes(self._last[1], scribbles):
            return _again(self._last[2])
        warnings = pipeline.run_warnings(scribbles, method, self.geometry.spacing_zyx, self._bare) + list(self.warnings)

        def run(cached: bool = True) -> pipeline.SegmentResult:
            return pipeline.adapt_and_cut(self.array, self.geometry.spacing_zyx, scribbles, self.model,
                                          self.probability, self.features, method=method, cut_params=cut_params,
                                          ddml_config=ddml_config, seed=seed, suggest=suggest, features_cached=cached,
                                          timings={}, warnings=list(warnings), progress=progress, cancel=cancel,
                                          cut_memory=self.cut_memory, resident=self.resident,
                                          adapt_memory=self.adapt_memory, history=self.history,
                                          far_scale=self._far_scale)

        state = _memory_state(self)
        try:
            try:
                result = run()
            except DamagedFeatures:
                if self._compute is None or not pipeline.heal_features(self.features):
                    raise
                # Their cache entry is gone: the network runs again and stores them anew.  The last run's f and cut
                # are as the failed run found them (AdaptMemory.kept_if_done; the cut never began).
                self.probability = self.features = self.resident = None
                probability, features, _ = self._compute(progress, cancel)
                self._hold(probability, features)
                result = run(cached=False)
        except BaseException:
            # A run that failed or was cancelled before its cut leaves f as it found it, and the last result stands
            # for a repeat; one that began its cut may have changed the cut's memory, and a repeat must run.
            if _memory_state(self) != state:
                self._last = None
            raise
        # The result's arrays are read-only (as munet_probability always was): kept for a repeat without a copy,
        # which cost 0.2-0.4 s and 0.25 GiB at 100x512x512.  The strokes are copied into the last ones' buffer.
        for array in (result.labels, result.probability):
            array.flags.writeable = False
        self._last = (key, _kept_strokes(self._last, scribbles), result)
        return result


def _memory_state(session: "Session") -> tuple:
    """What a run starts from: the DDML network ``f`` (an object a finished run replaces) and the cut memory's
    count of cuts begun."""
    cuts = None if session.cut_memory is None else session.cut_memory.generation
    return session.adapt_memory.f, cuts  # compared by identity (a module has no == of its own)


def _same_strokes(last: Optional[np.ndarray], scribbles: Optional[np.ndarray]) -> bool:
    """Whether two runs' strokes are the same (None: a run without strokes)."""
    if last is None or scribbles is None:
        return last is None and scribbles is None
    return np.array_equal(last, scribbles)


def _kept_strokes(last: Optional[tuple], scribbles: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """A copy of ``scribbles`` (the caller may change them in place), into the last run's copy where it fits."""
    if scribbles is None:
        return None
    kept = None if last is None else last[1]
    if kept is None or kept.shape != scribbles.shape or kept.dtype != scribbles.dtype:
        return scribbles.copy()
    np.copyto(kept, scribbles)
    return kept


def _again(result: pipeline.SegmentResult) -> pipeline.SegmentResult:
    """The last run's result for a repeat: its (read-only) arrays, nothing timed, nothing computed."""
    import dataclasses

    return dataclasses.replace(result, warnings=list(result.warnings), suggestions=list(result.suggestions),
                               timings={}, features_cached=True)
