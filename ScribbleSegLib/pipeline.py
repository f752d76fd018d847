"""The whole job on arrays: M-Unet features -> DDML + head -> 3D graph cut.

Numpy in, numpy out; usable from a notebook, Slicer's Python console, the
command line and the Slicer worker process::

    from ScribbleSegLib import pipeline
    result = pipeline.segment(volume, scribbles, "heart.model", cache_dir="cache")
    result.labels            # uint8 (Z, Y, X), 1 = heart
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
from .geometry import UNKNOWN_PIXEL, Volume, micrometres_question
from .progress import CancelToken, ProgressCallback, check, report

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


#: Stacks whose pixels are more than this many times coarser than the model's are not enlarged to its scale:
#: the network's time and memory would grow with the square of the factor.
MAX_RESAMPLING = 4.0

#: Stacks whose pixels are up to this many times finer than the model's are shrunk to its scale (cheaper than
#: running at their own): a scan at a higher magnification than the training data's.  A missing or mistyped
#: spacing (1 mm, micrometres as mm) is caught before.  Measured: 5 and 8 times finer phantoms,
#: M-Unet IoU 0.89-0.91 shrunk against 0.44-0.47 at their own scale (BENCHMARKS.md, "Stacks scanned finer than
#: the model").
MAX_SHRINK = 16.0


#: In-plane pixels longer than this many times their width are not a scan's (see :func:`network_scale`).
NON_SQUARE_PIXELS = 1.5


#: Densities that image editors, screens and printers write into a PNG's or JPEG's header (dots per inch).
PRINT_DENSITIES_DPI = (72, 96, 100, 120, 144, 150, 200, 240, 300, 600, 1200)


def print_resolution(pixel_mm: float) -> Optional[int]:
    """The dots per inch that a pixel size is, when it is one of :data:`PRINT_DENSITIES_DPI`, else None.

    A PNG or JPEG saved by an image editor states such a density, and ITK reads it as the pixel size (96 dpi:
    0.265 mm); no slide scanner's pixel is that coarse.

    Examples
    --------
    >>> print_resolution(25.4 / 96), print_resolution(0.00025), print_resolution(0.03)
    (96, None, None)
    """
    for dpi in PRINT_DENSITIES_DPI:
        if abs(pixel_mm * dpi - 25.4) < 1e-3 * 25.4:  # a PNG stores whole pixels per metre: 0.26458 mm
            return dpi
    return None


def network_scale(spacing_xy: Optional[Sequence[float]], model, warnings: Optional[List[str]] = None,
                  section_yx: Optional[Sequence[int]] = None) -> Tuple[float, float]:
    """``(y, x)`` factors that bring the stack's pixels to the model's training pixel size.

    A stack without a spacing (``None``, or 1 mm per pixel or coarser: what a file format states when it
    stores none, as a 2D tile read without a spacing has, also read downsampled), or with one more than
    :data:`MAX_RESAMPLING` times coarser or :data:`MAX_SHRINK` times finer than the model's, runs at its own
    pixel scale, and a one-line warning goes to ``warnings``; so do pixels over :data:`NON_SQUARE_PIXELS` times
    longer than wide.  A pixel coarser than 1 mm but not of whole millimetres is named with what it would be in
    micrometres, the likeliest mistake in a given spacing.  A stack more than :data:`MAX_SHRINK` times finer
    is told the ``downsample`` that brings it near the model's scale, unless its sections (``section_yx``, in
    pixels, when given) would then be under half the network's patch (:data:`SMALL_SECTION_SHARE`): a 1000-pixel
    tile at 40x, 71 times finer than the starter model, is not told to become 14 pixels wide.

    Examples
    --------
    >>> from ScribbleSegLib.model_file import load_model
    >>> from ScribbleSegLib.starter import starter_model_path
    >>> model = load_model(starter_model_path())
    >>> x, y = model.voxel_size[:2]  # the model's training pixel, (x, y) in mm
    >>> network_scale((x, y), model)
    (1.0, 1.0)
    >>> network_scale((2 * x, 2 * y), model)  # pixels twice as coarse: the sections are enlarged twice
    (2.0, 2.0)
    >>> warnings = []
    >>> network_scale(None, model, warnings), len(warnings)  # no spacing: its own scale, and a warning
    ((1.0, 1.0), 1)
    """
    from .inference import network_scale as factors

    if spacing_xy is not None and warnings is not None:
        x, y = (float(v) for v in spacing_xy[:2])
        if max(x / y, y / x) > NON_SQUARE_PIXELS:
            # Sections are scanned with square pixels: a file whose sections lie along another of its axes, or a
            # spacing typed as Z Y X, shows up as long pixels (and the network runs on cross-sections).
            warnings.append(f"the sections' pixels are not square ({x:g} x {y:g} mm): does the file hold its sections "
                            "along another axis, or was the spacing given in another order than X Y Z?")
        question = micrometres_question(min(x, y))
        if question:
            # 0.62 for 0.62 um, given to train and segment alike, ran without a word: the areas and volumes came out
            # a million times too large (a model trained so records it, so nothing else looked wrong).
            warnings.append(f"the image's pixel size {question}")
    model_xy = tuple(float(v) for v in getattr(model, "voxel_size", (1.0, 1.0, 1.0))[:2])
    if model_xy == UNKNOWN_PIXEL:  # a model that never knew its training pixel size
        return 1.0, 1.0
    # 1 mm per pixel is what a file states when it stores no pixel size; read with downsample N it becomes N mm.
    # No microscope scans sections at 1 mm per pixel or coarser: such a size is not known either.
    pixel = None if spacing_xy is None else min(float(v) for v in spacing_xy[:2])
    if pixel is None or pixel >= UNKNOWN_PIXEL[0]:
        # Whole millimetres are what a file without a pixel size states (1 mm), read with downsample N (N mm).
        if warnings is not None and (pixel is None or pixel == UNKNOWN_PIXEL[0]):
            warnings.append(f"the image states no pixel size; the model was trained at {model_xy[0]:g} mm per pixel, "
                            "so results may be poor if the scales differ (give the spacing, in mm)")
        elif warnings is not None and pixel == round(pixel):
            # N mm: a file without one read with downsample N, or a spacing typed in whole micrometres (40 for
            # 40 um), which was told "the image states no pixel size" though one was given.
            warnings.append(f"the image's pixel size {pixel:g} mm is what a file that states none gives when read "
                            f"with downsample {pixel:g}, or a spacing in micrometres ({pixel:g} um is "
                            f"{pixel / 1000:g} mm): it runs at its own scale; the model was trained at "
                            f"{model_xy[0]:g} mm per pixel (give the spacing, in mm)")
        elif warnings is not None:
            # A spacing typed in micrometres (9.2 for 9.2 um) was told "the image states no pixel size".
            warnings.append(f"the image's pixel size {pixel:g} mm is coarser than any scan's, so it runs at its own "
                            f"scale; the model was trained at {model_xy[0]:g} mm per pixel (the spacing is in mm: "
                            f"{pixel:g} um is {pixel / 1000:g} mm)")
        return 1.0, 1.0
    scale = factors(spacing_xy, model_xy)
    if max(scale) > MAX_RESAMPLING or 1.0 / min(scale) > MAX_SHRINK:
        if warnings is not None:
            dpi = print_resolution(float(spacing_xy[0]))
            finer = round(model_xy[0] / float(spacing_xy[0]))
            # A stack scanned finer than the model: read downsampled, the network sees it near its own scale.
            closer = ""
            if finer > MAX_SHRINK:
                small = None
                if section_yx is not None:  # each axis at its own scale (a spacing typed wrong shrinks one only)
                    rows, cols = int(section_yx[0] * scale[0]), int(section_yx[1] * scale[1])
                    small = _narrow_for_patch(model, rows, cols)
                closer = (f"; at the model's scale its sections would be {cols}x{rows} pixels, too few for the "
                          "network to read" if small else
                          f"; read downsampled by {finer} (downsample {finer}), the stack would be near the model's "
                          "scale")
            why = (f"it is {dpi} dots per inch, a print size that the image's file states, not the scan's: give the "
                   "scan's pixel size (spacing)" if dpi else
                   "is the spacing right? If it is, the model learnt another magnification: the network alone will "
                   "be poor and the strokes must carry the result; a model trained on images like these serves "
                   f"best{closer}")
            warnings.append(f"the image's pixel size {float(spacing_xy[0]):g} mm is far from the model's "
                            f"{model_xy[0]:g} mm; not resampling ({why})")
        return 1.0, 1.0
    return scale


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
        meta = {"model": str(model_path), "shape": list(image.shape), "warnings": []}
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
            history=None) -> SegmentResult:
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
    if method == "full":
        from .graphcut import check_cut_fits

        # Now, before the network and the adaptation run: a stack whose cut cannot fit is refused before that work.
        check_cut_fits(array.shape[:3], geometry.spacing_zyx, cut_params)
    warnings = run_warnings(scribbles, method, geometry.spacing_zyx, bare=not isinstance(image, Volume))

    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    loaded = as_model(model, device)
    model_path = getattr(loaded, "path", None)  # the file it came from ("starter" resolved), for the cache key
    timings["load model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if features is not None:
        # The caller's arrays: the result holds the probability, and a change made to it must not reach them.
        (prob, feats), cached = (read_only_view(features[0]), read_only_view(features[1])), True
    else:
        scale = logged_network_scale(scale_pixel(image, geometry, spacing), loaded, warnings, array.shape[1:3])
        # What the network's run says (a grey image, a stain that could not be fitted; or said again from the
        # cache) is this run's to report as well: the caller of the API sees ``warnings``, not the log.
        with warnings_kept(warnings):
            prob, feats, cached = compute_features(array, loaded, model_path=model_path, cache_dir=cache_dir,
                                                   device=device, scale=scale, progress=progress, cancel=cancel,
                                                   orientations=orientations)
    timings["M-Unet features"] = time.perf_counter() - t0

    def finish(prob, feats, cached):
        return adapt_and_cut(array, geometry.spacing_zyx, scribbles, loaded, prob, feats, method=method,
                             cut_params=cut_params, ddml_config=ddml_config, seed=seed, suggest=suggest,
                             features_cached=cached, timings=timings, warnings=list(warnings), progress=progress,
                             cancel=cancel, cut_memory=cut_memory, adapt_memory=adapt_memory, history=history,
                             resident=None if method == "munet" else to_gpu(prob, feats, loaded, timings))

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


def run_warnings(scribbles: Optional[np.ndarray], method: str, spacing_zyx: Sequence[float],
                 bare: bool = False) -> List[str]:
    """The scribble warnings of one run (:func:`scribble_warnings`), each logged; none for ``munet``.

    ``bare``: the image came as a bare array, whose axis order no file states, so strokes that
    look drawn on the array's last axis are named too (:func:`axis_order_warning`).

    Examples
    --------
    >>> run_warnings(None, "munet", (1.0, 1.0, 1.0))
    []
    """
    warnings: List[str] = []
    if scribbles is not None and method != "munet":
        order = axis_order_warning(scribbles) if bare else None
        warnings += ([order] if order else []) + scribble_warnings(scribbles, spacing_zyx)
        for line in warnings:
            log.warning(line)
    return warnings


def scale_pixel(image, geometry, spacing) -> Optional[Tuple[float, float]]:
    """The in-plane pixel size ``(x, y)`` in mm that the network's scale reads (:func:`network_scale`).

    A given ``spacing``'s; a :class:`Volume`'s grid's, or the scan's pixel size that its file states apart
    from the grid (``Volume.scan_pixel``: an ImageJ, OME or Aperio TIFF read on ITK's 1 mm pixels); None for
    an array without a spacing.

    Examples
    --------
    >>> from ScribbleSegLib.geometry import Geometry
    >>> tile = Volume(np.zeros((1, 4, 4, 3), np.uint8), Geometry((1.0, 1.0, 1.0)), scan_pixel=(0.00025, 0.00025))
    >>> scale_pixel(tile, tile.geometry, None)
    (0.00025, 0.00025)
    >>> scale_pixel(tile.array, tile.geometry, None) is None
    True
    """
    if spacing is None and not isinstance(image, Volume):
        return None
    return image.scan_spacing[:2] if spacing is None else tuple(float(v) for v in geometry.spacing[:2])


#: Sections narrower than this share of the network's patch (``ModelConfig.patch``), in either axis at its pixel
#: size, get a warning: the network sees little around each pixel (8x64-pixel sections scored 0.86 with the
#: network, 4x4 ones came out empty, in a new-user pass of 2026-12-06).
SMALL_SECTION_SHARE = 0.5


def _narrow_for_patch(model, rows: float, cols: float) -> Optional[int]:
    """The network's patch in pixels (``ModelConfig.patch``) when sections of ``rows`` x ``cols`` pixels at its
    pixel size are narrower than :data:`SMALL_SECTION_SHARE` of it, else None (also for a model without one)."""
    patch = getattr(getattr(model, "config", None), "patch", None)
    return patch if patch and min(rows, cols) < SMALL_SECTION_SHARE * patch else None


def logged_network_scale(spacing_xy: Optional[Sequence[float]], model, warnings: List[str],
                         section_yx: Optional[Sequence[int]] = None) -> Tuple[float, float]:
    """:func:`network_scale`, logging the warnings it appends to ``warnings``; with the sections' size
    ``section_yx`` in pixels, also one for sections that the network, at its pixel size, sees little of
    (:data:`SMALL_SECTION_SHARE` of its patch).

    Examples
    --------
    >>> class Model: voxel_size = (1.0, 1.0, 1.0)
    >>> logged_network_scale((0.5, 0.5), Model(), [])
    (1.0, 1.0)
    """
    before = len(warnings)
    scale = network_scale(spacing_xy, model, warnings, section_yx)
    if section_yx is not None:
        rows, cols = (max(1, round(n * f)) for n, f in zip(section_yx, scale))
        patch = _narrow_for_patch(model, rows, cols)
        if patch:
            warnings.append(f"the sections are {cols}x{rows} pixels at the network's pixel size, under half its "
                            f"{patch}-pixel patch: it sees little around each pixel, and its output may be poor "
                            "(a stack downsampled too far?)")
    for line in warnings[before:]:
        log.warning(line)
    return scale


def adapt_and_cut(array: np.ndarray, spacing_zyx: Sequence[float], scribbles: Optional[np.ndarray], model,
                  prob: np.ndarray, feats: np.ndarray, *, method: str = choices.DEFAULT_METHOD, cut_params=None,
                  ddml_config=None, seed: int = 0, suggest: int = choices.DEFAULT_SUGGESTIONS,
                  features_cached: bool = True,
                  timings: Optional[Dict[str, float]] = None, warnings: Optional[List[str]] = None,
                  progress: Optional[ProgressCallback] = None,
                  cancel: Optional[CancelToken] = None, cut_memory=None, resident=None,
                  adapt_memory=None, history=None) -> SegmentResult:
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
        the network (:func:`network_doubt`) of the two, and a finished run is added to it.  Features read from a
        cache entry use the entry's history instead (each command-line round is a process of its own); None and
        no entry: the strokes' own doubt.

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
    doubted = dataclasses.replace(config, scribble_share=1.0,
                                  network_weight=min(config.network_weight, config.doubted_network_weight))
    share = bank_left_out_share(max(doubt), config)  # the interval as it is
    # (An h that is the network's alone has no strokes' labels to read back.)
    agreeing = config.bank_agreement is not None and config.bank_agreement_shift > 0 and doubted.network_weight < 1
    both = _in_doubt_interval(max(doubt), config) and (agreeing or 0.0 < share < 1.0)
    share = 0.5 if both else share
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
    # A warm session's next run starts its f from this run's only if this run finishes (cancelled in h or the
    # cut, it would otherwise start from an f whose result the user never saw).
    with adapt_memory.kept_if_done() if adapt_memory is not None else contextlib.nullcontext():
        with ahead:
            bank_logit = bank_network_logit(model)

            def adapted_with(settings, weight: float, remembered: bool):
                """The adaptation with ``settings``, or None where it weighs nothing; a warm session's ``f``
                follows the ``remembered`` one."""
                if weight <= 0:
                    return None
                return adapt(feats, scribbles, model.bank_features, model.bank_labels, config=settings, seed=seed,
                             network_probability=prob, bank_network_logit=bank_logit, progress=progress,
                             cancel=cancel, device=getattr(model, "device", None), resident=resident,
                             memory=adapt_memory if remembered else None)

            # The warm session's f follows the adaptation that weighs most (within the doubt's interval, the one
            # with the bank: which weighs most is known only after both).
            kept = adapted_with(config, 1.0 - share, share < 0.5 or both)
            without = adapted_with(doubted, share, share >= 0.5 and not both)
            t1 = time.perf_counter()  # a wait for the work beside counts in the cut's time: it is the cut's work
        for part in (kept, without):
            if part is not None:
                check_h_finite(part.h, feats)
        if both:
            # Before the colour goes into the h without the bank: the agreement reads the strokes' adaptation alone.
            share = bank_left_out_share(max(doubt), config, network_agreement(without.h, prob, doubted.network_weight)
                                        if agreeing else None)
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
        timings["DDML + head"] = t1 - t0
        steps: Dict[str, float] = {}
        for part in (kept, without):  # their steps (both, summed), for benchmarks and the worker's report
            for key, seconds in (part.timings.items() if part is not None else ()):
                steps[key] = steps.get(key, 0.0) + seconds
        timings.update(steps)
        if method == "ddml":
            labels = (h > 0.5).astype(np.uint8)
        else:
            check(cancel)
            labels = graph_cut(h, measures.evened(array), scribbles, spacing_zyx=spacing_zyx, params=cut_params,
                               progress=progress, cancel=cancel, memory=cut_memory, measures=measures)
            timings["graph cut"] = time.perf_counter() - t1
        if history is not None:  # a finished run only: a cancelled one leaves the history as it found it
            history.remember(scribbles, doubt)
    from .suggest import suggest_sections

    line = result_size_warning(labels, prob)
    if line is not None:
        log.warning(line)
        warnings.append(line)
    suggestions = suggest_sections(h, labels, prob, scribbles, count=suggest)
    return SegmentResult(labels, h, prob, method, features_cached, timings, warnings, suggestions, doubt)


#: :func:`result_size_warning` speaks when the heart covers more than this share of the volume.
FILLED_RESULT_SHARE = 0.9


def result_size_warning(labels: np.ndarray, network_probability: np.ndarray) -> Optional[str]:
    """A warning when the heart covers nearly the whole volume, which strokes by mistake give (a section filled as
    heart, the two classes swapped); None otherwise.

    Examples
    --------
    >>> labels = np.ones((2, 4, 4), np.uint8); labels[0, 0, 0] = 0
    >>> result_size_warning(labels, np.zeros((2, 4, 4), np.float32))[:36]
    'the heart covers 97% of the volume ('
    >>> result_size_warning(np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4), np.float32)) is None
    True
    """
    share = float(np.count_nonzero(labels)) / max(1, labels.size)
    if share <= FILLED_RESULT_SHARE:
        return None
    network = float(np.count_nonzero(np.asarray(network_probability) > 0.5)) / max(1, labels.size)
    return (f"the heart covers {share:.0%} of the volume (the network alone: {network:.0%}): check the heart strokes "
            "(a section filled as heart, heart painted on background, the two classes swapped)")


#: In-plane pixels of the strokes' bounding box above which the heart-to-background distance of
#: :func:`scribble_warnings` is measured on in-plane blocks (max-pooled) instead of pixels.
WARNING_DISTANCE_PIXELS = 1 << 18


#: :func:`axis_order_warning` speaks when strokes cross at least this many of the first axis's indices ...
ORDER_MIN_CROSSED = 8
#: ... and this many times as many as they lie on along the last axis.
ORDER_RATIO = 4


def axis_order_warning(scribbles: np.ndarray) -> Optional[str]:
    """A warning when bare arrays look ``(X, Y, Z)`` instead of ``(Z, Y, X)``, else None.

    Strokes are drawn on sections, so in a ``(Z, Y, X)`` array they lie on a few indices of the
    first axis and run across many of the last.  Arrays from a library that orders axes
    ``(X, Y, Z)`` (nibabel, ITK's ``GetArrayFromImage`` transposed by hand) show the reverse: strokes
    on a few indices of the last axis, across many of the first, which is then longer than the
    last (a stack has fewer sections than pixels across).  Nothing in an array says its order, and
    such a run would segment the wrong planes without a word; strokes drawn on side planes of a
    stack with more sections than columns look the same, so this is a warning, not an error.

    Examples
    --------
    >>> s = np.zeros((60, 40, 10), np.uint8); s[10:50, 20, 3] = 1; s[10:50, 30, 3] = 2
    >>> axis_order_warning(s).startswith("the strokes lie on 1 index of the arrays' last axis")
    True
    >>> axis_order_warning(np.transpose(s, (2, 1, 0))) is None
    True
    """
    n_first, _, n_last = scribbles.shape
    if n_first <= n_last:
        return None
    crossed = int(np.count_nonzero(scribbles.any(axis=(1, 2))))
    on_last = int(np.count_nonzero(scribbles.any(axis=(0, 1))))
    if crossed < ORDER_MIN_CROSSED or crossed < ORDER_RATIO * on_last:
        return None
    return (f"the strokes lie on {on_last} {'index' if on_last == 1 else 'indices'} of the arrays' last axis and "
            f"cross {crossed} of the first: are the image and scribbles (X, Y, Z)? They must be (Z, Y, X), sections "
            "first: np.transpose(image, (2, 1, 0, 3)) and np.transpose(scribbles, (2, 1, 0))")


#: :func:`scribble_warnings` names an antialiased brush when more than this share of the heart stroke pixels have a
#: background stroke pixel beside them (a rim of 1s around strokes of 2); strokes drawn apart that meet somewhere
#: have a few.
ANTIALIASED_SHARE = 0.3

#: :func:`scribble_warnings` names a fill when heart strokes cover at least this share of a section.
FILLED_SECTION_SHARE = 0.9


def scribble_warnings(scribbles: np.ndarray, spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0)) -> List[str]:
    """One-line warnings about scribbles that leave much to the network (the run still goes on).

    A section (nearly) filled with heart strokes; strokes on one section only; heart and background strokes that
    touch; background strokes only far from the heart strokes (nothing tells the heart from the tissue around it).
    Everything but finding the stroked sections looks only at those sections, inside the strokes'
    bounding box, so a re-run of a large stack does not pay for whole-volume arrays here.

    Examples
    --------
    >>> s = np.zeros((3, 20, 20), np.uint8); s[1, 5, 5:8] = 1; s[1, 15, 5:8] = 2
    >>> scribble_warnings(s)[0].startswith("all strokes lie on section 1")
    True
    """
    warnings = []
    n = scribbles.shape[0]
    sections = np.flatnonzero(scribbles.reshape(n, -1).any(axis=1))
    if sections.size == 0:
        return warnings
    if sections.size == 1 and n > 1:
        warnings.append(f"all strokes lie on section {int(sections[0])}; the other sections follow the network "
                        "alone: add strokes on a few more sections")
    # The stroked sections only, cropped to the strokes' box: the rest holds no stroke.
    stack = scribbles[sections]
    rows = np.flatnonzero(stack.any(axis=(0, 2)))
    cols = np.flatnonzero(stack.any(axis=(0, 1)))
    box = stack[:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    heart, background = box == 1, box == 2
    # Every heart stroke lies in the box: its count there over the whole section's size.
    shares = heart.reshape(len(sections), -1).sum(axis=1) / float(scribbles[0].size)
    filled = np.flatnonzero(shares >= FILLED_SECTION_SHARE)
    if filled.size:
        # A fill tool rather than a brush: every voxel of the section, glass and other tissue too, is heart then,
        # and the cut spreads it (a section filled so made 99.6 % of a phantom heart, IoU 0.07).
        warnings.insert(0, f"heart strokes cover {shares[filled[0]]:.0%} of section {int(sections[filled[0]])}" + (
            f" (and {filled.size - 1} more section(s))" if filled.size > 1 else "")
            + ": a fill rather than strokes? Every voxel they cover is taken as heart; paint heart inside the "
              "heart only")
    touching = np.zeros(box.shape[0], bool)
    beside = np.zeros(box.shape, bool)  # heart stroke pixels with a background stroke pixel as a 4-neighbour
    for axis in (1, 2):
        for a, b in ((heart, background), (background, heart)):
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(0, -1), slice(1, None)
            pair = a[tuple(lo)] & b[tuple(hi)]
            touching |= pair.reshape(box.shape[0], -1).any(axis=1)
            beside[tuple(lo if a is heart else hi)] |= pair
    heart_pixels = int(np.count_nonzero(heart))
    if heart_pixels and np.count_nonzero(beside) > ANTIALIASED_SHARE * heart_pixels:
        # An image editor's antialiased brush painting 2 on 0 leaves a rim of 1s: the background strokes' edges read
        # as heart strokes, and the result follows them (a gland tile fell from 0.525 to 0.452).
        warnings.append(f"{np.count_nonzero(beside) / heart_pixels:.0%} of the heart stroke pixels lie right beside "
                        "background strokes: an antialiased brush gives each background stroke a rim of heart (1) "
                        "pixels, and strokes drawn along each other leave nothing between them to the image; draw "
                        "them apart, without antialiasing (a pencil tool)")
    if touching.any():
        warnings.append(f"heart and background strokes touch on {int(touching.sum())} section(s) (first: "
                        f"{int(sections[np.flatnonzero(touching)[0]])}); the boundary there is taken as drawn")
    if heart.any() and background.any():
        nearest = _nearest_distance(heart, background, sections, spacing_zyx)
        _, ys, xs = np.nonzero(heart)
        extent = max(float((ys.max() - ys.min() + 1) * spacing_zyx[1]), float((xs.max() - xs.min() + 1)
                                                                              * spacing_zyx[2]))
        if nearest > max(extent, 10 * float(min(spacing_zyx))):
            warnings.append(f"the background strokes are all far from the heart strokes (nearest {nearest:.3g} mm); "
                            "draw background next to the heart, where it touches other tissue")
    return warnings


def network_doubt(scribbles: np.ndarray, network_probability: np.ndarray) -> Tuple[float, float]:
    """How much of the strokes the network labels the other way: ``(heart, background)`` shares.

    The share of the heart-stroke voxels with a network probability below 1/2, and of the
    background-stroke voxels above it (0 for a class without strokes).  Only the stroked sections
    are read, so a re-run of a large stack does not pay for whole-volume arrays.

    Parameters
    ----------
    scribbles : numpy.ndarray
        uint8 ``(Z, Y, X)``: 0 none, 1 heart, 2 background.
    network_probability : numpy.ndarray
        float ``(Z, Y, X)``: the M-Unet's heart probability (a memmap is fine).

    Returns
    -------
    tuple of 2 float
        Each in [0, 1].

    Examples
    --------
    >>> s = np.zeros((2, 4, 4), np.uint8); s[1, 0, :] = 1; s[1, 3, :] = 2
    >>> p = np.zeros((2, 4, 4), np.float32); p[1, 0, :2] = 0.9
    >>> network_doubt(s, p)
    (0.5, 0.0)
    """
    n = scribbles.shape[0]
    sections = np.flatnonzero(scribbles.reshape(n, -1).any(axis=1))
    if sections.size == 0:
        return 0.0, 0.0
    stack = np.asarray(scribbles[sections])
    network = np.asarray(network_probability[sections])
    shares = []
    for code, wrong in ((1, network < 0.5), (2, network > 0.5)):
        drawn = stack == code
        total = int(np.count_nonzero(drawn))
        shares.append(np.count_nonzero(wrong & drawn) / total if total else 0.0)
    return float(shares[0]), float(shares[1])


def bank_left_out_share(doubt: float, config, agreement: Optional[float] = None) -> float:
    """How much of ``h`` comes from the adaptation without the model's training pixels (0 to 1).

    0 up to ``config.bank_doubt`` (None: always 0), 1 from ``config.bank_doubt_full`` on, in proportion
    between (:class:`~ScribbleSegLib.ddml.DDMLConfig`).  Given the ``agreement`` of the network with the strokes
    (:func:`network_agreement`), both limits move up by ``config.bank_agreement_shift`` times how far it lies from
    the first value of ``config.bank_agreement`` to the second (0 below, 1 above).

    Parameters
    ----------
    doubt : float
        The larger of the run's two :func:`network_doubt` shares.
    config : DDMLConfig
    agreement : float, optional
        None: the limits as they are.

    Examples
    --------
    >>> from ScribbleSegLib.ddml import DDMLConfig
    >>> [round(bank_left_out_share(d, DDMLConfig()), 2) for d in (0.3, 0.6, 0.9)]
    [0.0, 0.5, 1.0]
    >>> [round(bank_left_out_share(d, DDMLConfig(), agreement=0.5), 2) for d in (0.6, 0.8, 0.9)]
    [0.0, 0.5, 1.0]
    >>> [round(bank_left_out_share(0.8, DDMLConfig(), agreement=a), 2) for a in (0.1, 0.3, 0.5)]
    [1.0, 1.0, 0.5]
    """
    if config.bank_doubt is None or doubt <= config.bank_doubt:
        return 0.0
    start, end = config.bank_doubt, config.bank_doubt_full
    if agreement is not None and config.bank_agreement is not None:
        low, high = config.bank_agreement
        agrees = 1.0 if agreement >= high else 0.0 if agreement <= low else (agreement - low) / (high - low)
        start, end = start + agrees * config.bank_agreement_shift, end + agrees * config.bank_agreement_shift
    if doubt >= end:  # also a switch at one value (bank_doubt_full == bank_doubt)
        return 1.0
    return 0.0 if doubt <= start else float((doubt - start) / (end - start))


def _in_doubt_interval(doubt: float, config) -> bool:
    """Whether ``doubt`` lies where :func:`bank_left_out_share` may be strictly between 0 and 1."""
    shift = config.bank_agreement_shift if config.bank_agreement is not None else 0.0
    return config.bank_doubt is not None and config.bank_doubt < doubt < config.bank_doubt_full + shift


def network_agreement(h: np.ndarray, network_probability: np.ndarray, network_weight: float) -> float:
    """IoU of the network's labels with those of an adaptation to the strokes alone, over the whole stack.

    ``h`` is that adaptation's result with the network blended in at ``network_weight``
    (``h = (1 - w) head + w p``); the head's own labels are read back from it.  A model trained for
    what the strokes mark labels much of the image as the strokes' adaptation does, also where
    corrective strokes contradict it; one trained for another target does not, wherever the strokes lie
    (BENCHMARKS.md, "The bank left out by the network's agreement with the strokes").  1 where neither
    labels anything.

    Parameters
    ----------
    h : numpy.ndarray
        ``(Z, Y, X)`` float: the adaptation's ``h`` (before any other blend).
    network_probability : numpy.ndarray
        ``(Z, Y, X)`` float: the M-Unet's probability (a memmap is fine).
    network_weight : float
        In [0, 1): the weight ``h`` was blended with.

    Returns
    -------
    float

    Examples
    --------
    >>> p = np.array([[[0.9, 0.9, 0.1, 0.1]]], np.float32)
    >>> network_agreement(np.array([[[0.8, 0.2, 0.2, 0.1]]], np.float32), p, 0.0)
    0.5
    >>> network_agreement(0.75 * np.array([[[0.1, 0.1, 0.9, 0.9]]], np.float32) + 0.25 * p, p, 0.25)
    0.0
    """
    if not 0.0 <= network_weight < 1.0:
        raise ScribbleSegError(f"network_weight must be in [0, 1), got {network_weight!r}")
    both = either = 0
    w = np.float32(network_weight)
    for z in range(h.shape[0]):  # section by section: no full-size temporaries
        network = np.asarray(network_probability[z], np.float32)
        head = h[z] - w * network > np.float32(0.5) * (1 - w)  # (h - w p) / (1 - w) > 1/2
        network = network > 0.5
        both += int(np.count_nonzero(head & network))
        either += int(np.count_nonzero(head | network))
    return 1.0 if either == 0 else both / either


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


def network_warnings(doubt: Tuple[float, float], bank_left_out: float = 0.0,
                     own: Optional[Tuple[float, float]] = None) -> List[str]:
    """A one-line warning when the network labels most of the strokes of one class the other way.

    That is what strokes on a target that the model was not trained for look like (another organ
    than the model's heart, or an image far from anything it has seen): the adaptation then has to
    learn the target from the strokes.  Most of the background strokes called heart is also what a
    model trained for the target does where it over-segments an image: that line names both.
    :func:`adapt_and_cut` logs it and adds it to the run's warnings.

    Parameters
    ----------
    doubt : tuple of 2 float
        :func:`network_doubt` of the run's strokes; a share over
        :data:`~ScribbleSegLib.choices.NETWORK_DOUBT` warns.
    bank_left_out : float
        How much of the run's ``h`` came from an adaptation without the model's training pixels
        (:func:`bank_left_out_share`); the line says so.
    own : tuple of 2 float, optional
        :func:`network_doubt` of this run's strokes where ``doubt`` was carried from an earlier run's
        (:mod:`~ScribbleSegLib.stroke_history`); the line then gives both shares.  None: ``doubt`` is its own.

    Returns
    -------
    list of str
        Empty, or one line naming the class and the share.

    Examples
    --------
    >>> network_warnings((1.0, 0.1))[0].startswith("the model's network calls 100% of the heart strokes background")
    True
    >>> network_warnings((0.2, 0.5))
    []
    >>> network_warnings((0.2, 0.8))[0].startswith("the model's network calls 80% of the background strokes heart")
    True
    >>> network_warnings((0.2, 0.8), own=(0.2, 0.6))[0].startswith(
    ...     "the model's network calls 60% of the background strokes heart (80% of those of an earlier run")
    True
    """
    left_out = ("" if not bank_left_out else
                " (its training pixels were left out of the adaptation, and its probability counts less)"
                if bank_left_out >= 1 else
                f" (its training pixels were left out of {bank_left_out:.0%} of the adaptation, and its probability "
                "counts less there)")
    own = doubt if own is None else own

    def carried(k: int) -> str:
        """The earlier run's share of class ``k`` where the doubt was carried from it."""
        return f" ({doubt[k]:.0%} of those of an earlier run that these strokes add to)" if doubt[k] > own[k] else ""

    if doubt[0] > choices.NETWORK_DOUBT:
        return [f"the model's network calls {own[0]:.0%} of the heart strokes background{carried(0)}: it was likely "
                f"not trained for what they mark{left_out}, and away from the strokes the result may be poor; "
                "train a model on stacks where it is traced"]
    if doubt[1] > choices.NETWORK_DOUBT:
        # Also what a model trained for this target does where it over-segments an image unlike its training
        # (BENCHMARKS.md, "Colon glands"): the line names both readings.
        return [f"the model's network calls {own[1]:.0%} of the background strokes heart{carried(1)}: it finds the "
                f"target far beyond the strokes, as a model trained for another target or on other images does"
                f"{left_out}; check the result away from the strokes"]
    return []


def _nearest_distance(heart: np.ndarray, background: np.ndarray, sections: np.ndarray,
                      spacing_zyx: Sequence[float]) -> float:
    """Distance (mm) from the background strokes to the nearest heart stroke.

    ``heart`` and ``background`` are ``(S, Y, X)`` masks of the stroked sections ``sections`` (their
    indices, increasing), cropped alike.  Exact: each heart section's in-plane distance map, combined
    with the distance between sections (``d^2 = d_plane^2 + dz^2``); pairs of sections further apart
    than the nearest distance found so far are skipped.  Boxes over :data:`WARNING_DISTANCE_PIXELS` pixels
    a section are max-pooled in-plane by ``k`` first, which is within ``k`` pixels of the exact distance.
    """
    from .stroke_pull import plane_distance  # the stroke pull's in-plane distance map (SimpleITK's Maurer)

    k = max(1, int(np.ceil(np.sqrt(heart[0].size / WARNING_DISTANCE_PIXELS))))
    spacing = [float(s) for s in spacing_zyx]
    if k > 1:
        z, y, x = heart.shape
        pad = ((0, 0), (0, -y % k), (0, -x % k))
        heart, background = (np.pad(m, pad).reshape(z, (y + pad[1][1]) // k, k, (x + pad[2][1]) // k, k)
                             .any(axis=(2, 4)) for m in (heart, background))
        spacing[1:] = [s * k for s in spacing[1:]]
    drawn = [i for i in range(len(sections)) if background[i].any()]
    best = math.inf
    for i in np.flatnonzero(heart.reshape(len(sections), -1).any(axis=1)):
        gaps = sorted(((abs(int(sections[j]) - int(sections[i])) * spacing[0], j) for j in drawn))
        if gaps[0][0] >= best:
            continue
        plane = plane_distance(heart[i], spacing, 1.0)  # in mm: pixels of size 1
        for gap, j in gaps:
            if gap >= best:
                break  # the rest are further apart than the nearest pair found
            best = min(best, math.hypot(float(plane[background[j]].min()), gap))
    return best
