"""The whole job on arrays: M-Unet features -> DDML + head -> 3D graph cut.

Numpy in, numpy out; usable from a notebook, Slicer's Python console, the
command line and the Slicer worker process::

    from ScribbleSegLib import pipeline
    result = pipeline.segment(volume, scribbles, "heart.model", cache_dir="cache")
    result.labels            # uint8 (Z, Y, X), 1 = heart

This module holds the run itself (:func:`segment`, :func:`compute_features`, :func:`adapt_and_cut`,
:class:`SegmentResult`) and its glue.  The rest lives in modules of their own, which do not import this one; the
public functions that callers use are re-exported here (``__all__``), their constants and private helpers not:

- :mod:`~ScribbleSegLib.network_scale`: the scale the network runs a stack at (``network_scale``,
  ``logged_network_scale``, ``scale_pixel``, ``far_from_model``; its limits, such as ``MAX_SHRINK``, are read there
  only);
- :mod:`~ScribbleSegLib.stroke_warnings`: the run's warnings about its strokes and its result (``run_warnings``,
  ``scribble_warnings``, ``axis_order_warning``, ``result_size_warning``);
- :mod:`~ScribbleSegLib.network_doubt`: how far the network is trusted against the strokes (``network_doubt``,
  ``bank_left_out_share``, ``network_agreement``, ``network_warnings``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import choices, feature_cache
from .checks import check_model, check_progress_cancel, check_segment_args, check_suggest
from .errors import DamagedFeatures, ScribbleSegError
from .feature_reader import read_only_view
from .geometry import Volume
from .network_doubt import (_in_doubt_interval, bank_left_out_share, blend_network, doubted_network_weight,
                            network_agreement, network_doubt, network_warnings)
from .network_scale import far_from_model, logged_network_scale, network_scale, scale_pixel
from .progress import CancelToken, ProgressCallback, check, report
from .stroke_warnings import axis_order_warning, result_size_warning, run_warnings, scribble_warnings

__all__ = [
    "METHODS", "SegmentResult", "adapt_and_cut", "as_model", "check_h_finite", "compute_features", "heal_features",
    "segment", "to_gpu", "warnings_kept",
    # Re-exported from the modules above.
    "axis_order_warning", "bank_left_out_share", "far_from_model", "logged_network_scale", "network_agreement",
    "network_doubt", "network_scale", "network_warnings", "result_size_warning", "run_warnings", "scale_pixel",
    "scribble_warnings",
]

log = logging.getLogger(__name__)

METHODS = choices.METHODS


def check_h_finite(h: np.ndarray, feats: np.ndarray) -> None:
    """Raise :class:`DamagedFeatures` if ``h`` holds a NaN or an infinity, naming where ``feats`` came from.

    Examples
    --------
    >>> check_h_finite(np.array([0.5, np.nan], np.float32), np.zeros((1, 1, 2, 3), np.float16))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.DamagedFeatures: the M-Unet features give the heart probability values that are not numbers
    """
    # One sum sees a NaN or an infinity anywhere: 0.02 s at 100x512x512, where np.isfinite would allocate a mask.
    if math.isfinite(float(np.sum(h, dtype=np.float64))):
        return
    raise DamagedFeatures(f"{feature_cache.features_origin(feats)} give the heart probability values that are "
                          "not numbers")


def heal_features(feats: np.ndarray) -> bool:
    """Remove the cache entry ``feats`` were read from, after they turned out to hold values that are not
    numbers (:class:`~ScribbleSegLib.errors.DamagedFeatures`; one warning); False if they come from no cache
    entry (nothing to compute again).

    Examples
    --------
    >>> heal_features(np.zeros((1, 1, 2, 3), np.float16))
    False
    """
    entry = feature_cache.entry_of(feats)
    if entry is None:
        return False
    feature_cache.discard_entry(entry, "its features hold values that are not numbers")
    return True


@dataclass
class SegmentResult:
    """What :func:`segment` returns.

    Attributes
    ----------
    labels : numpy.ndarray
        uint8 ``(Z, Y, X)``, 1 = heart: the M-Unet probability thresholded at 0.5
        (``munet``), the adapted probability ``h`` thresholded at 0.5 (``ddml``),
        or the graph cut (``full``).
    probability : numpy.ndarray
        float32 ``(Z, Y, X)``: ``h`` for ``ddml``/``full``, the M-Unet probability for ``munet``.
    munet_probability : numpy.ndarray
        float32 ``(Z, Y, X)``: the M-Unet probability, whatever the method.
    method : str
    features_cached : bool
        Whether the M-Unet outputs came from the cache.
    timings : dict
        Seconds per stage.
    warnings : list of str
        One line each: what the user should know about this run (spacing far from the
        model's, scribbles that give little to learn from, ...).
    suggestions : list of Suggestion
        Sections where another stroke would help most, best first (see :mod:`suggest`).
    network_doubt : tuple of 2 float
        The doubt the run went by: :func:`network_doubt` of its strokes, or an earlier run's where larger and its
        strokes hold that run's (:mod:`~ScribbleSegLib.stroke_history`); ``(0, 0)`` for ``munet``, which has none.
    """

    labels: np.ndarray
    probability: np.ndarray
    munet_probability: np.ndarray
    method: str
    features_cached: bool = False
    timings: Dict[str, float] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    suggestions: list = field(default_factory=list)
    network_doubt: Tuple[float, float] = (0.0, 0.0)


def as_model(model, device: str = choices.DEFAULT_DEVICE):
    """Return a loaded model: ``model`` itself, or the model file it names.

    Examples
    --------
    >>> as_model(None)
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: model is None: pass a model file or a model from model_file.load_model
    """
    check_model(model)
    if isinstance(model, (str, os.PathLike)):
        from .model_file import load_model

        return load_model(model, device=device)
    return model


def compute_features(image: np.ndarray, model, *, model_path: Optional[Union[str, os.PathLike]] = None,
                     cache_dir: Optional[Union[str, os.PathLike]] = None, device: str = choices.DEFAULT_DEVICE,
                     scale: Tuple[float, float] = (1.0, 1.0),
                     progress: Optional[ProgressCallback] = None,
                     cancel: Optional[CancelToken] = None,
                     orientations: int = choices.DEFAULT_ORIENTATIONS) -> Tuple[np.ndarray, np.ndarray, bool]:
    """M-Unet probability and features of a volume, from the cache when possible.

    Parameters
    ----------
    image : numpy.ndarray
        ``(Z, Y, X, 3)`` uint8.
    model : SegModel
        A loaded model (:func:`model_file.load_model`).
    model_path : path, optional
        The model's file; together with ``cache_dir`` it enables the cache.
    cache_dir : path, optional
        Folder of cached outputs (see :mod:`feature_cache`).
    scale : (float, float)
        ``(y, x)`` resize factors of the sections before the network.  The default (1, 1) runs it on the
        sections as they are; :func:`segment` uses ``network_scale(spacing[:2], model)`` (:func:`network_scale`:
        the volume's pixel size against the model's), and features meant for ``segment(features=...)`` must
        be computed with that scale too.
    orientations : int
        Test-time flips averaged (``choices.ORIENTATIONS``, :func:`inference.predict_volume`);
        part of the cache key.

    Returns
    -------
    probability : numpy.ndarray
        float32 ``(Z, Y, X)``.
    features : numpy.ndarray
        float16 ``(Z, Y, X, C)``, memory-mapped when it comes from the cache.
    cached : bool
        True if nothing was computed.

    Examples
    --------
    >>> from ScribbleSegLib.phantom import PhantomConfig, make_phantom
    >>> from ScribbleSegLib.starter import starter_model_path
    >>> image = make_phantom(0, PhantomConfig(shape=(4, 64, 64))).image.array
    >>> probability, features, cached = compute_features(image, as_model(starter_model_path()))
    >>> probability.shape, probability.dtype, features.shape, features.dtype, cached
    ((4, 64, 64), dtype('float32'), (4, 64, 64, 32), dtype('float16'), False)
    """
    from .checks import check_array
    from .fileio import DiskFullError
    from .inference import IN_MEMORY_FEATURE_BYTES, predict_volume
    from .resources import require_memory, voxels

    image = check_array(image, "image", ndim=(3, 4), kinds="u")  # a list or a float volume: one line, not deep inside
    n = voxels(image.shape[:3])
    feature_bytes = n * int(getattr(model, "feature_channels", 0) or 0) * 2
    # The probability is always in memory; the features are when small (else a file on disk).
    in_memory = n * 4 + (feature_bytes if feature_bytes <= IN_MEMORY_FEATURE_BYTES else 0)
    require_memory(in_memory, f"holding the M-Unet outputs of a {'x'.join(map(str, image.shape[:3]))} volume",
                   "read the volume downsampled")

    def uncached():
        prob, feats = predict_volume(model, image, device=device, scale=scale, progress=progress,
                                     cancel=cancel, orientations=orientations)
        return prob, feats, False

    cache = feature_cache.open_cache(cache_dir) if model_path is not None else None
    if cache is None:
        return uncached()
    scale = tuple(float(f) for f in scale)
    extra = ("" if scale == (1.0, 1.0) else f"scale={scale}") + (
        "" if orientations == 1 else f"orientations={int(orientations)}")
    key = feature_cache.cache_key(image, model_path, extra)
    hit = cache.load(key)
    if hit is not None:
        # What computing them said (a grey image, a stain that could not be fitted) holds for them still.
        for line in cache.stored_warnings(key):
            log.warning("%s (said when these cached features were computed)", line)
        report(progress, "M-Unet features", 1.0, "reused cached features")
        return hit[0], hit[1], True
    problem = cache.make_room(feature_bytes + n * 4)
    if problem is not None:
        feature_cache.log.warning("feature cache: %s: %s; running without the cache", cache.folder, problem)
        return uncached()
    try:
        # The model's whole path and the network's scale: `cache list` named "../m1.model" (as typed in another
        # folder) and showed two entries of one image read at two pixel sizes alike.
        meta = {"model": os.path.abspath(str(model_path)), "shape": list(image.shape), "scale": list(scale),
                "warnings": []}
        with cache.new_entry(key, meta) as tmp, warnings_kept(meta["warnings"]):
            prob, feats = predict_volume(model, image, device=device, feature_path=tmp / "features.npy",
                                         scale=scale, progress=progress, cancel=cancel, orientations=orientations)
            np.save(tmp / "probability.npy", np.asarray(prob, dtype=np.float32))
            if isinstance(feats, np.memmap):
                feats.flush()
            del feats
    except DiskFullError as exc:
        feature_cache.log.warning("feature cache: %s; running without the cache", exc)
        return uncached()
    except OSError as exc:  # the cache folder is optional: what it refuses must not end the run
        feature_cache.log.warning("feature cache: %s could not store the features (%s); running without the cache",
                                  cache.folder, exc.strerror or exc)
        return uncached()
    hit = cache.load(key)
    if hit is None:  # removed meanwhile by another run's eviction or by hand: the numbers are gone
        feature_cache.log.warning("feature cache: the entry just stored in %s is gone; computing again "
                                  "without the cache", cache.folder)
        return uncached()
    return hit[0], hit[1], False


@contextlib.contextmanager
def warnings_kept(into: List[str]):
    """The library's warnings during the body, as their text, appended to ``into`` (they are still shown).

    Examples
    --------
    >>> said = []
    >>> with warnings_kept(said):
    ...     logging.getLogger("ScribbleSegLib.stain").warning("the tissue shows no colour")
    >>> said
    ['the tissue shows no colour']
    """
    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            into.append(record.getMessage())

    handler = Keep(logging.WARNING)
    library = logging.getLogger("ScribbleSegLib")
    library.addHandler(handler)
    try:
        yield
    finally:
        library.removeHandler(handler)


def segment(image: Union[Volume, np.ndarray], scribbles: Optional[np.ndarray], model, *,
            spacing: Optional[Tuple[float, float, float]] = None, method: str = choices.DEFAULT_METHOD,
            cut_params=None, ddml_config=None, device: str = choices.DEFAULT_DEVICE,
            cache_dir: Optional[Union[str, os.PathLike]] = None, seed: int = 0,
            features: Optional[Tuple[np.ndarray, np.ndarray]] = None, suggest: int = choices.DEFAULT_SUGGESTIONS,
            progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
            orientations: int = choices.DEFAULT_ORIENTATIONS, cut_memory=None, adapt_memory=None,
            history=None, forget_results: bool = False) -> SegmentResult:
    """Segment the heart in a volume from scribbles.

    Parameters
    ----------
    image : Volume or numpy.ndarray
        ``(Z, Y, X, 3)`` uint8 RGB or ``(Z, Y, X)`` grey, as a :class:`Volume`
        or a bare array with ``spacing``.
    scribbles : numpy.ndarray or None
        uint8 ``(Z, Y, X)``: 0 none, 1 heart, 2 background.  Not needed for ``munet``.
    model : path or SegModel
        A model file (loaded without executing code) or a loaded model.
    spacing : tuple of 3 float, optional
        ``(x, y, z)`` mm when ``image`` is a bare array; default isotropic 1.
    method : {"munet", "ddml", "full"}
        Where to stop: the M-Unet probability, DDML + head, or the graph cut.
    cut_params : graphcut.GraphCutParams, optional
    ddml_config : ddml.DDMLConfig, optional
    device : {"auto", "cpu", "cuda"}
        Where the M-Unet and the adaptation run (a loaded ``model`` runs where it was loaded); on a GPU the
        M-Unet's outputs are kept there for ``h`` when they fit (:func:`to_gpu`).
    cache_dir : path, optional
        With a model *file*, caches the M-Unet outputs so that a re-run with new
        scribbles runs only DDML, the head and the cut.
    seed : int
        Seed of the DDML and head training.
    features : (probability, features), optional
        M-Unet outputs already computed for this image with this model (see
        :func:`compute_features`, with ``scale=network_scale(spacing[:2], model)``:
        the scale this call would use); evaluation loops pass them to try many
        scribble patterns on one volume.
    suggest : int
        How many sections to suggest for the next strokes (:mod:`suggest`).
    progress, cancel
        See :mod:`ScribbleSegLib.progress`.
    orientations : {1, 2, 4}
        Test-time flips of the M-Unet (``choices.ORIENTATIONS``): the network also sees
        each section flipped, and its outputs are averaged; 2 or 4 times its time.
    cut_memory : graphcut.CutMemory, optional
        The last cut of this image, to start the cut from (see :func:`adapt_and_cut`); a warm
        :class:`~ScribbleSegLib.session.Session` keeps one.  None: a cut from scratch.
    adapt_memory : ddml.AdaptMemory, optional
        The last run's DDML network, to start this run's from (see :func:`adapt_and_cut`); a warm
        session keeps one.  None: trained from scratch.
    history : stroke_history.StrokeHistory, optional
        Earlier runs' strokes on this image, for features that did not come from a cache entry (which keeps
        its own): see :func:`adapt_and_cut`.  A warm session keeps one.
    forget_results : bool
        Drop the results that earlier runs kept with their strokes (``history``'s and the cache entry's
        :meth:`~ScribbleSegLib.stroke_history.StrokeHistory.forget_results`) before this run: the user took back
        the last run, so the result they see is not the one kept (``DDMLConfig.keep_last``).

    Returns
    -------
    SegmentResult

    Raises
    ------
    ScribbleSegError
        On bad arguments; for ``method="full"``, before the M-Unet runs, when the graph cut of the volume
        could not fit in the memory available (:func:`graphcut.check_cut_fits`).

    Examples
    --------
    A small phantom, strokes on every 5th heart section, the shipped starter model:

    >>> from ScribbleSegLib.metrics import evaluate
    >>> from ScribbleSegLib.phantom import PhantomConfig, make_phantom
    >>> from ScribbleSegLib.scribbles import simulate_scribbles
    >>> phantom = make_phantom(seed=3, config=PhantomConfig(shape=(16, 96, 96)))
    >>> result = segment(phantom.image, simulate_scribbles(phantom.label, every=5), "starter")
    >>> result.labels.shape, result.method, bool(evaluate(result.labels, phantom.label)["iou"] > 0.6)
    ((16, 96, 96), 'full', True)
    """
    array, geometry, scribbles = check_segment_args(
        image, scribbles, model, spacing=spacing, method=method, cut_params=cut_params, ddml_config=ddml_config,
        device=device, cache_dir=cache_dir, seed=seed, features=features, orientations=orientations)
    check_suggest(suggest)
    check_progress_cancel(progress, cancel)
    if not isinstance(forget_results, bool):
        raise ScribbleSegError(f"forget_results must be True or False, got {forget_results!r}")
    if method == "full":
        from .graphcut import check_cut_fits

        # Now, before the network and the adaptation run: a stack whose cut cannot fit is refused before that work.
        check_cut_fits(array.shape[:3], geometry.spacing_zyx, cut_params)
    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    loaded = as_model(model, device)
    model_path = getattr(loaded, "path", None)  # the file it came from ("starter" resolved), for the cache key
    timings["load model"] = time.perf_counter() - t0
    # After the model: a run refused for a missing model file or device had warned about its strokes first.
    warnings = run_warnings(scribbles, method, geometry.spacing_zyx, bare=not isinstance(image, Volume))

    t0 = time.perf_counter()
    pixel = scale_pixel(image, geometry, spacing)
    far_scale = far_from_model(pixel, loaded)
    if features is not None:
        # The caller's arrays: the result holds the probability, and a change made to it must not reach them.
        (prob, feats), cached = (read_only_view(features[0]), read_only_view(features[1])), True
    else:
        scale = logged_network_scale(pixel, loaded, warnings, array.shape[1:3], geometry.spacing_zyx,
                                     array.shape[0])
        # What the network's run says (a grey image, a stain that could not be fitted; or said again from the
        # cache) is this run's to report as well: the caller of the API sees ``warnings``, not the log.
        with warnings_kept(warnings):
            prob, feats, cached = compute_features(array, loaded, model_path=model_path, cache_dir=cache_dir,
                                                   device=device, scale=scale, progress=progress, cancel=cancel,
                                                   orientations=orientations)
    timings["M-Unet features"] = time.perf_counter() - t0

    def finish(prob, feats, cached):
        if forget_results:
            from .stroke_history import StrokeHistory

            for kept in (history, StrokeHistory.at(feats)):
                if kept is not None:
                    kept.forget_results()
        return adapt_and_cut(array, geometry.spacing_zyx, scribbles, loaded, prob, feats, method=method,
                             cut_params=cut_params, ddml_config=ddml_config, seed=seed, suggest=suggest,
                             features_cached=cached, timings=timings, warnings=list(warnings), progress=progress,
                             cancel=cancel, cut_memory=cut_memory, adapt_memory=adapt_memory, history=history,
                             resident=None if method == "munet" else to_gpu(prob, feats, loaded, timings),
                             far_scale=far_scale)

    try:
        return finish(prob, feats, cached)
    except DamagedFeatures:
        if features is not None or not heal_features(feats):
            raise
    # The entry is gone: the network runs again and stores them anew (a warm session's last f is as the failed
    # run found it: AdaptMemory.kept_if_done).
    del prob, feats
    t0 = time.perf_counter()
    prob, feats, cached = compute_features(array, loaded, model_path=model_path, cache_dir=cache_dir, device=device,
                                           scale=scale, progress=progress, cancel=cancel, orientations=orientations)
    timings["M-Unet features"] += time.perf_counter() - t0
    return finish(prob, feats, cached)


def to_gpu(prob: np.ndarray, feats: np.ndarray, model, timings: Dict[str, float]):
    """The M-Unet outputs on the model's GPU for the adaptation (:func:`ScribbleSegLib.gpu_adaptation.upload`),
    or None on a CPU; the time it took goes into ``timings["features to GPU"]`` when it ran.

    Examples
    --------
    >>> p, x = np.zeros((1, 2, 2), np.float32), np.zeros((1, 2, 2, 4), np.float16)
    >>> to_gpu(p, x, None, {}) is None
    True
    """
    from .gpu_adaptation import is_gpu, upload

    device = getattr(model, "device", None)
    if not is_gpu(device):
        return None
    t0 = time.perf_counter()
    resident = upload(prob, feats, device)
    timings["features to GPU"] = time.perf_counter() - t0
    return resident


def _kept_result(history, scribbles: np.ndarray, spacing_zyx: Sequence[float], reach: float):
    """``(labels, new strokes, their far_weights)`` of the last run of the chain that ``scribbles`` continue
    (:meth:`~ScribbleSegLib.stroke_history.StrokeHistory.last_result`), or None where there is none or nothing is
    new.  The distances to the new strokes are computed once, for both the pull and the training pixels."""
    from .last_result import far_weights, new_strokes

    run = history.last_result(scribbles) if history is not None else None
    if run is None:
        return None
    new = new_strokes(scribbles, run.voxels)
    return (run.result(), new, far_weights(new, spacing_zyx, reach)) if new.any() else None


def _last_pixels(feats: np.ndarray, scribbles: np.ndarray, last: Optional[tuple], spacing_zyx: Sequence[float],
                 config, seed: int, timings: Dict[str, float]):
    """The last result's training pixels for the adaptation without the bank (``DDMLConfig.keep_last_pixels``,
    :func:`~ScribbleSegLib.last_result.anchor_pixels`): up to ``pool_size`` of each class, of which the pool draws
    its share; None where there is no last result."""
    if last is None or config.keep_last_pixels <= 0:
        return None
    from .last_result import anchor_pixels

    t0 = time.perf_counter()
    pixels = anchor_pixels(feats, scribbles, last[0], last[1], spacing_zyx, config.keep_last_reach,
                           config.pool_size, seed, far=last[2])
    timings["last result"] += time.perf_counter() - t0
    return pixels


def adapt_and_cut(array: np.ndarray, spacing_zyx: Sequence[float], scribbles: Optional[np.ndarray], model,
                  prob: np.ndarray, feats: np.ndarray, *, method: str = choices.DEFAULT_METHOD, cut_params=None,
                  ddml_config=None, seed: int = 0, suggest: int = choices.DEFAULT_SUGGESTIONS,
                  features_cached: bool = True,
                  timings: Optional[Dict[str, float]] = None, warnings: Optional[List[str]] = None,
                  progress: Optional[ProgressCallback] = None,
                  cancel: Optional[CancelToken] = None, cut_memory=None, resident=None,
                  adapt_memory=None, history=None, far_scale: bool = False) -> SegmentResult:
    """Features -> DDML + head -> graph cut -> suggestions: the part of a run after the M-Unet.

    The one code path shared by :func:`segment` and :class:`ScribbleSegLib.session.Session`;
    the arguments are already checked (:func:`ScribbleSegLib.checks.check_segment_args`).

    Parameters
    ----------
    array : numpy.ndarray
        ``(Z, Y, X, 3)`` uint8 RGB (the cut's colour term, with its glass made white as the network saw it:
        :meth:`stroke_pull.ImageMeasures.evened`).
    spacing_zyx : tuple of 3 float
        Voxel size in mm, array-axis order.
    scribbles : numpy.ndarray or None
        uint8 ``(Z, Y, X)``; None only for ``munet``.
    model : SegModel
        The loaded model (its training-pixel bank).
    prob, feats : numpy.ndarray
        The M-Unet probability ``(Z, Y, X)`` and features ``(Z, Y, X, C)`` (:func:`compute_features`).
    method, cut_params, ddml_config, seed, suggest
        See :func:`segment`.
    features_cached : bool
        Goes to :attr:`SegmentResult.features_cached`.
    timings, warnings
        Filled further and returned in the result (new ones if None).
    progress, cancel
        See :mod:`ScribbleSegLib.progress`.
    cut_memory : graphcut.CutMemory, optional
        The last cut of this volume, to start the cut from (a warm session's); None: a cut from scratch.
    resident : gpu_adaptation.Resident, optional
        ``prob`` and ``feats`` on the model's GPU (:func:`to_gpu`): ``h`` is computed there.  The
        adaptation trains on the model's device in any case.
    adapt_memory : ddml.AdaptMemory, optional
        The last run's DDML network, to start this run's from (a warm session's; see
        ``DDMLConfig.warm_steps``); None: trained from scratch.
    history : stroke_history.StrokeHistory, optional
        Earlier runs' strokes on this image: a run whose strokes hold an earlier run's takes the larger doubt of
        the network (:func:`network_doubt`) of the two, and a finished run is added to it (with its labels where it
        left the bank out: the next run of the chain keeps them away from its new strokes, ``DDMLConfig.keep_last``).
        Features read from a cache entry use the entry's history instead (each command-line round is a process of
        its own); None and no entry: the strokes' own doubt, and no last result.
    far_scale : bool
        The stack's pixel size is far from the model's (:func:`network_scale.far_from_model`): the model's
        training pixels are left out of the adaptation whatever the doubt, where ``DDMLConfig.bank_doubt`` lets
        them be left out at all.

    Returns
    -------
    SegmentResult

    Examples
    --------
    >>> p = np.array([[[0.2, 0.9]]], np.float32)
    >>> adapt_and_cut(np.zeros((1, 1, 2, 3), np.uint8), (1, 1, 1), None, None, p, None, method="munet").labels
    array([[[0, 1]]], dtype=uint8)
    """
    timings = {} if timings is None else timings
    warnings = [] if warnings is None else warnings
    if method == "munet":
        from .suggest import network_suggestions

        # Ranked from the network alone, as the panel's heat map ranks them before any run.
        return SegmentResult((prob > 0.5).astype(np.uint8), prob, prob, method, features_cached, timings, warnings,
                             network_suggestions(prob, scribbles, suggest))
    check(cancel)

    from .ddml import DDMLConfig, adapt
    from .graphcut import graph_cut, measure_ahead
    from .model_file import bank_network_logit
    from .stroke_pull import ImageMeasures
    from .stroke_history import StrokeHistory
    from .runtime import beside

    # Strokes that the network mostly contradicts may mark another target than the model's: say so, and
    # (DDMLConfig.bank_doubt) adapt also without its training pixels, whose labels are the model's target's, and
    # blend that in as far as the doubt goes (bank_left_out_share): corrective strokes raise the doubt of a model
    # trained for the target too, and a switch at one value made a round fall far.
    config = ddml_config or DDMLConfig()
    # Corrective strokes go where the last result was wrong, which may be where the network is right: the doubt
    # the earlier strokes showed stays (stroke_history).
    own_doubt = network_doubt(scribbles, prob)
    history = StrokeHistory.at(feats) or history
    doubt = own_doubt if history is None else history.carried(scribbles, own_doubt)
    # Within the doubt's interval (moved up by as much as DDMLConfig.bank_agreement_shift) both adapt, and the
    # network's agreement with the strokes' own adaptation, known after, moves the interval (bank_left_out_share):
    # where the network's labels agree with the strokes' over the whole image, corrective strokes raised the doubt.
    # The adaptation without the bank leaves the network out of its h: how much of the network goes in depends on
    # how much of the image that h calls target (doubted_network_weight), known after it.
    doubted_cap = min(config.network_weight, config.doubted_network_weight)
    doubted = dataclasses.replace(config, scribble_share=1.0, network_weight=0.0)
    share = bank_left_out_share(max(doubt), config)  # the interval as it is
    # (An h that is the network's alone has no strokes' labels to read back.)
    agreeing = config.bank_agreement is not None and config.bank_agreement_shift > 0 and doubted_cap < 1
    both = _in_doubt_interval(max(doubt), config) and (agreeing or 0.0 < share < 1.0)
    share = 0.5 if both else share
    if far_scale and config.bank_doubt is not None:
        # A model that learnt another magnification reads neither its target nor its training pixels' look here:
        # with the starter (heart) model on real tiles 18-71 times finer, runs whose doubt kept the bank scored
        # far below the same strokes without it (BENCHMARKS.md, "A fourth real target, lymph-node metastases").
        share, both = 1.0, False
    # What the cut measures on the image and the strokes alone (the stroke pull's ways through the stroked
    # sections, the image's contrast) does not need h: it runs beside the adaptation, on the core that the
    # adaptation's training leaves idle.  The cut sees the image with its glass made white, as the network did:
    # light that drifts from section to section or a grey glass otherwise reads as edges between the sections
    # and as a softer contrast within them (BENCHMARKS.md, "The cut on the image the network saw").
    measures, ahead = None, contextlib.nullcontext()
    if method == "full":
        measures = cut_memory.measures if cut_memory is not None else ImageMeasures()
        # The cut's coarse pair weights of this image, kept in its feature cache entry: a re-run reads them.
        measures.weights_store = feature_cache.CutWeights.of(feats)
        ahead = beside(lambda token: measure_ahead(measures.evened(array), scribbles, spacing_zyx, cut_params,
                                                   measures, token))
    t0 = time.perf_counter()
    # The last result of this chain of strokes, where a run leaves the bank out: (its labels, the new strokes, their
    # distances).  Only for strokes added to the last run's: the same strokes again (another method, other
    # settings) start afresh.
    last = (_kept_result(history, scribbles, spacing_zyx, config.keep_last_reach)
            if share > 0 and config.keep_last > 0 else None)
    if last is not None:
        timings["last result"] = time.perf_counter() - t0
    # A warm session's next run starts its f from this run's only if this run finishes (cancelled in h or the
    # cut, it would otherwise start from an f whose result the user never saw).
    with adapt_memory.kept_if_done() if adapt_memory is not None else contextlib.nullcontext():
        with ahead:
            bank_logit = bank_network_logit(model)

            def adapted_with(settings, weight: float, remembered: bool, bank=None):
                """The adaptation with ``settings``, or None where it weighs nothing; a warm session's ``f``
                follows the ``remembered`` one.  ``bank``: training pixels ``(x, y)`` in the model's bank's place
                (the network's logits of them unknown)."""
                if weight <= 0:
                    return None
                bank_x, bank_y, logit = (model.bank_features, model.bank_labels, bank_logit) if bank is None else (
                    *bank, None)
                return adapt(feats, scribbles, bank_x, bank_y, config=settings, seed=seed,
                             network_probability=prob, bank_network_logit=logit, progress=progress,
                             cancel=cancel, device=getattr(model, "device", None), resident=resident,
                             memory=adapt_memory if remembered else None)

            # A warm session's f follows the adaptation with the model's bank.  The strokes' own adaptation (the
            # bank left out) trains afresh in every run, as on the command line: started from the last run's f, it
            # kept what the last strokes had taught it, and a real gland run fell from 0.666 to 0.527 with correct
            # strokes where the same run from scratch gave 0.642 (BENCHMARKS.md, "The strokes' own adaptation
            # trained afresh in a warm session").
            kept = adapted_with(config, 1.0 - share, True)
            anchor = _last_pixels(feats, scribbles, last, spacing_zyx, config, seed, timings)
            anchored = (None if anchor is None else
                        dataclasses.replace(doubted, scribble_share=1.0 - config.keep_last_pixels))
            # Within the doubt's interval the share follows how far the strokes' own adaptation agrees with the
            # network: measured without the last result's pixels, which the network helped make (with them, the
            # agreement rose and took a corrected gland back to the bank: 0.84 IoU fell to 0.44).
            without = adapted_with(doubted if both or anchored is None else anchored, share, False,
                                   None if both else anchor)
            if both:
                # Before the colour goes into the h without the bank: the agreement reads the strokes' adaptation.
                check_h_finite(without.h, feats)
                share = bank_left_out_share(max(doubt), config, network_agreement(without.h, prob, 0.0)
                                            if agreeing else None)
                if anchored is not None and share > 0:
                    without = adapted_with(anchored, share, False, anchor)
            t1 = time.perf_counter()  # a wait for the work beside counts in the cut's time: it is the cut's work
        for part in (kept, without):
            if part is not None:
                check_h_finite(part.h, feats)
        if without is not None:
            blend_network(without.h, prob, doubted_network_weight(without.h, config))
        for line in network_warnings(doubt, share, own_doubt):
            log.warning(line)
            warnings.append(line)
        if without is not None and config.doubted_colour_weight > 0:
            # The features were learnt for the model's target: the pixel's own colour, as the strokes show it,
            # on the image the cut sees (glass made white: light that drifts would move the colours).
            from . import stroke_colour

            t2 = time.perf_counter()
            seen = (measures or ImageMeasures()).evened(array)
            stroke_colour.blend_into(without.h, seen, stroke_colour.fit(seen, scribbles, cancel),
                                     config.doubted_colour_weight, cancel)
            timings["stroke colour"] = time.perf_counter() - t2
            t1 += timings["stroke colour"]
        h = _blend_h(kept, without, share)
        # A classifier of the strokes alone moves its decision over the whole image with each stroke: where the user
        # drew nothing new, the last result they saw holds, unless the adaptation is sure (last_result).
        if last is not None:
            from .last_result import keep_last

            t2 = time.perf_counter()
            keep_last(h, last[0], last[1], spacing_zyx, config.keep_last * share, config.keep_last_reach,
                      far=last[2])
            timings["last result"] += time.perf_counter() - t2
            t1 += time.perf_counter() - t2
        timings["DDML + head"] = t1 - t0
        steps: Dict[str, float] = {}
        for part in (kept, without):  # their steps (both, summed), for benchmarks and the worker's report
            for key, seconds in (part.timings.items() if part is not None else ()):
                steps[key] = steps.get(key, 0.0) + seconds
        timings.update(steps)
        if method == "ddml":
            labels, scale = (h > 0.5).astype(np.uint8), None
        else:
            check(cancel)
            params, scale = _chain_cut_params(cut_params, h, history, scribbles)
            labels = graph_cut(h, measures.evened(array), scribbles, spacing_zyx=spacing_zyx, params=params,
                               progress=progress, cancel=cancel, memory=cut_memory, measures=measures)
            timings["graph cut"] = time.perf_counter() - t1
        if history is not None:  # a finished run only: a cancelled one leaves the history as it found it
            # The result too where the next run may keep it (a run that leaves the bank out).
            history.remember(scribbles, doubt, labels if share > 0 and config.keep_last > 0 else None, scale)
    from .suggest import suggest_sections

    line = result_size_warning(labels, prob)
    if line is not None:
        log.warning(line)
        warnings.append(line)
    suggestions = suggest_sections(h, labels, prob, scribbles, count=suggest)
    return SegmentResult(labels, h, prob, method, features_cached, timings, warnings, suggestions, doubt)


def _chain_cut_params(cut_params, h: np.ndarray, history, scribbles: np.ndarray):
    """The cut's parameters for ``h``, with ``gamma`` scaled to its objects (:func:`cut_scaling.object_scale`) but
    by no less than the cut of an earlier run whose strokes ``scribbles`` hold (:meth:`StrokeHistory.cut_scale`),
    and that factor (None where the parameters leave ``gamma`` as given).

    A round's corrective strokes can leave ``h`` less sure and more ragged than the round before (background
    strokes in false target that looks like the target strain the adaptation); its objects then measure smaller,
    and the weaker boundary term gave up what the last round's cut held: a real gland tile fell from 0.666 to 0.602
    IoU, 0.642 with the first round's factor (BENCHMARKS.md, "The cut's scale kept over a chain of rounds").  The
    objects are the same in every round; only ``h``'s view of them moves.  A factor that rises is taken as it comes,
    and so is one that follows the count of many objects side by side (``reference_objects``): strokes that part
    touching nuclei raise their count, and with the earlier factor kept two nuclei tiles lost 0.02-0.04.
    """
    from .cut_scaling import object_scale, with_object_scale
    from .graphcut import GraphCutParams

    params = cut_params if cut_params is not None else GraphCutParams()
    factor, many, why = object_scale(params, h)
    if factor is None:
        return params, None
    before = history.cut_scale(scribbles) if history is not None and not many else None
    if before is not None and before > factor:
        why, factor = f"{why}; {before:.3g} kept from the earlier run these strokes add to", before
    return with_object_scale(params, factor, why), factor


def _blend_h(kept, without, share: float) -> np.ndarray:
    """``h`` of the adaptation with the bank (``kept``) and without it (``without``), ``share`` of the latter;
    either may be None where it weighs nothing.  In place in ``without.h``, section by section."""
    if without is None:
        return kept.h
    if kept is None:
        return without.h
    h, w = without.h, np.float32(share)
    for z in range(h.shape[0]):
        h[z] *= w
        h[z] += (1 - w) * kept.h[z]
    return h
