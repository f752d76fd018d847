"""Argument checks of the Python API: one clear sentence naming the parameter, never a stray numpy error.

Library messages name parameters (``method``, ``scribbles``); the command
line and the worker name their own options and request fields.

Examples
--------
>>> import numpy as np
>>> check_method("full")
'full'
>>> check_array(np.zeros((2, 3, 4), np.uint8), "scribbles", ndim=3).shape
(2, 3, 4)
"""

from __future__ import annotations

import math
import os
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from . import choices
from .errors import ScribbleSegError


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def check_method(method: Any) -> str:
    """``method`` as one of :data:`~ScribbleSegLib.choices.METHODS`.

    Examples
    --------
    >>> check_method("magic")
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: method 'magic': expected one of munet, ddml, full
    """
    if not isinstance(method, str) or method not in choices.METHODS:
        raise ScribbleSegError(f"method {method!r}: expected one of {', '.join(choices.METHODS)}")
    return method


def check_device(device: Any) -> str:
    """``device`` as ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` in any case, returned in lower case.

    Examples
    --------
    >>> check_device("cuda:1"), check_device("CPU")
    ('cuda:1', 'cpu')
    """
    name = choices.device_name(device)
    if name is None:
        raise ScribbleSegError(f"device {device!r}: expected one of {choices.DEVICES_TEXT}")
    return name


def check_orientations(orientations: Any) -> int:
    """One of ``choices.ORIENTATIONS`` (test-time flips of the M-Unet), as an int.

    Examples
    --------
    >>> check_orientations(4)
    4
    """
    if isinstance(orientations, bool) or not isinstance(orientations, (int, np.integer)) or \
            orientations not in choices.ORIENTATIONS:
        raise ScribbleSegError(f"orientations must be one of {', '.join(map(str, choices.ORIENTATIONS))}, "
                               f"got {orientations!r}")
    return int(orientations)


def check_seed(seed: Any) -> int:
    """A seed: an integer from 0 to :data:`~ScribbleSegLib.choices.MAX_SEED`.

    Examples
    --------
    >>> check_seed(3)
    3
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= choices.MAX_SEED:
        raise ScribbleSegError(f"seed must be an integer from 0 to 2^63 - 1, got {seed!r}")
    return int(seed)


def check_progress_cancel(progress: Any, cancel: Any) -> None:
    """A progress callback (callable or None) and a cancel token (a :class:`~ScribbleSegLib.progress.CancelToken`
    or None).

    Examples
    --------
    >>> check_progress_cancel(print, None)
    >>> check_progress_cancel(lambda stage: None, None)
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: progress must take three arguments (stage, fraction, message)
    >>> check_progress_cancel(None, True)
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: cancel must be a CancelToken (ScribbleSegLib.progress) or None, got bool
    """
    from .progress import CancelToken

    if progress is not None and not callable(progress):
        raise ScribbleSegError(f"progress must be a callable (stage, fraction, message) or None, got "
                               f"{_type_name(progress)}")
    if progress is not None:
        import inspect

        try:  # a callable of the wrong arity would fail at its first report, deep inside a run
            inspect.signature(progress).bind("stage", 0.0, "message")
        except TypeError:
            raise ScribbleSegError("progress must take three arguments (stage, fraction, message)") from None
        except ValueError:  # no signature to read (some builtins): it is called as it is
            pass
    if cancel is not None and not isinstance(cancel, CancelToken):
        raise ScribbleSegError(f"cancel must be a CancelToken (ScribbleSegLib.progress) or None, got "
                               f"{_type_name(cancel)}")


def check_count(value: Any, name: str) -> int:
    """A count: a non-negative integer (``-1`` would slice from the end, ``2.5`` be cut to 2, silently).

    Examples
    --------
    >>> check_count(3, "sections")
    3
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ScribbleSegError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def check_whole(value: Any, name: str, minimum: int = 1, unit: str = "") -> int:
    """A whole number of at least ``minimum`` (not a float: 2.5 sections, an infinite pixel budget).

    Examples
    --------
    >>> check_whole(3, "max_iters")
    3
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ScribbleSegError(f"{name} must be a whole number of at least {minimum}{unit}, got {value!r}")
    return int(value)


def check_suggest(suggest: Any) -> int:
    """How many sections to suggest: a non-negative integer.

    Examples
    --------
    >>> check_suggest(3)
    3
    """
    return check_count(suggest, "suggest")


def check_width(width: Any, name: str = "width") -> float:
    """A brush width in pixels: a positive finite number.

    Examples
    --------
    >>> check_width(5)
    5.0
    """
    try:
        value = float(width)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(width, bool) or not (math.isfinite(value) and value > 0):
        raise ScribbleSegError(f"{name} must be a positive number of pixels, got {width!r}")
    return value


def check_spacing(spacing: Any, name: str = "spacing") -> Optional[Tuple[float, float, float]]:
    """``None`` or three positive finite numbers (x, y, z) in mm.

    Examples
    --------
    >>> check_spacing((1, 1, 2))
    (1.0, 1.0, 2.0)
    """
    if spacing is None:
        return None
    try:
        if isinstance(spacing, (str, bytes)):  # "123" would read as (1, 2, 3)
            raise TypeError
        # Numbers only: ("0.03", ...) or (True, 1, 1) read as numbers were a slip passed on without a word.
        if not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                   for v in spacing):
            raise TypeError
        values = tuple(float(v) for v in spacing)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ScribbleSegError(f"{name} must be three positive numbers (x, y, z) in mm, got {spacing!r}")
    return values  # type: ignore[return-value]


def check_shape(shape: Any, name: str = "shape") -> Tuple[int, int, int]:
    """Three positive integers ``(Z, Y, X)``.

    Examples
    --------
    >>> check_shape([4, 5, 6])
    (4, 5, 6)
    """
    try:
        values = tuple(shape)
    except TypeError:
        values = ()
    if len(values) != 3 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                                   for v in values):
        raise ScribbleSegError(f"{name} must be three positive integers (Z, Y, X), got {shape!r}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def check_array(value: Any, name: str, ndim: Sequence[int] = (3,), kinds: str = "uib",
                shape: Optional[Sequence[int]] = None) -> np.ndarray:
    """A numpy array with one of the dimensions in ``ndim``, no empty axis, a dtype kind in ``kinds``.

    Parameters
    ----------
    value : numpy.ndarray
        Lists and other sequences are refused: the API takes arrays, so that a
        wrong argument order cannot pass silently.
    name : str
        The parameter's name, for the message.
    ndim : int or sequence of int
    kinds : str
        numpy dtype kinds accepted (``u`` unsigned, ``i`` signed, ``b`` bool, ``f`` float).
    shape : sequence of int, optional
        The first three axes must be this.

    Examples
    --------
    >>> check_array([1, 2], "scribbles")
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: scribbles must be a numpy array, got list
    """
    ndims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if not isinstance(value, np.ndarray):
        raise ScribbleSegError(f"{name} must be a numpy array, got {_type_name(value)}")
    if value.ndim not in ndims:
        raise ScribbleSegError(f"{name} must have {' or '.join(map(str, ndims))} dimensions, got shape {value.shape}")
    if 0 in value.shape:
        raise ScribbleSegError(f"{name} is empty (shape {value.shape})")
    if value.dtype.kind not in kinds:
        words = {"u": "unsigned integers", "i": "signed integers", "b": "booleans", "f": "floats"}
        # Named by what they are, not by numpy's kind letters ("expected ui" said nothing).
        expected = {"uib": "integers", "ui": "integers", "u": "uint8", "uibf": "numbers",
                    "f": "floats"}.get(kinds) or " or ".join(words.get(k, k) for k in kinds)
        raise ScribbleSegError(f"{name} has dtype {value.dtype}, expected {expected}")
    if shape is not None and tuple(value.shape[:3]) != tuple(shape):
        raise ScribbleSegError(f"{name} have shape {tuple(value.shape[:3])}, the image {tuple(shape)}")
    return value


def check_image(image: Any, spacing: Any = None):
    """The ``(array, geometry)`` of a :class:`~ScribbleSegLib.geometry.Volume` or a bare array.

    The array must be uint8, ``(Z, Y, X)`` grey or ``(Z, Y, X, 3)`` RGB, with
    at least one voxel.

    Examples
    --------
    >>> array, geometry = check_image(np.zeros((2, 8, 8, 3), np.uint8), (1, 1, 2))
    >>> geometry.spacing
    (1.0, 1.0, 2.0)
    """
    from .geometry import Geometry, Volume, check_geometry

    if isinstance(image, Volume):
        array, geometry = image.array, image.geometry
        check_geometry(geometry, "image.geometry")
        if spacing is not None:
            raise ScribbleSegError("spacing is given twice: the image is a Volume with its own geometry")
    else:
        array = image
        geometry = Geometry(check_spacing(spacing) or (1.0, 1.0, 1.0))
    if isinstance(array, np.ndarray) and array.dtype != np.uint8 and array.dtype.kind in "uif":
        # A float or 16-bit array (skimage's img_as_float, a TIFF read as it is): say how to get a uint8 one.
        raise ScribbleSegError(f"image has dtype {array.dtype}, expected uint8 (0-255): scale it to 0-255 and "
                               "pass .astype(np.uint8), or read the file with volume_io.read_image, which does")
    array = check_array(array, "image", ndim=(3, 4), kinds="u")
    if array.ndim == 4 and array.shape[3] != 3:
        raise ScribbleSegError(f"image must be (Z, Y, X) or (Z, Y, X, 3), got shape {array.shape}")
    if array.ndim == 3 and array.shape[2] == 3:
        # Read as (Z, Y, X) this would be a grey volume 3 pixels wide: surely one RGB section instead.
        raise ScribbleSegError(f"image of shape {array.shape} looks like one RGB section; pass it as "
                               f"(1, Y, X, 3) (image[None]), or a grey volume as (Z, Y, X)")
    return array, geometry


def check_scribbles(scribbles: Any, shape: Sequence[int], method: str) -> Optional[np.ndarray]:
    """Scribbles for ``method``: None only for ``munet``, else an integer ``(Z, Y, X)`` array of 0, 1, 2, with
    heart and background strokes for the methods that learn from them.

    Checked before any work, so that a missing class is said at once, not after the network has run.

    Examples
    --------
    >>> check_scribbles(None, (1, 2, 2), "munet") is None
    True
    >>> check_scribbles(np.array([[[1, 0], [0, 2]]], np.uint8), (1, 2, 2), "full").shape
    (1, 2, 2)
    """
    if scribbles is None:
        if method != "munet":
            raise ScribbleSegError(f"method {method!r} needs scribbles (a (Z, Y, X) array: 1 heart, 2 background)")
        return None
    if isinstance(scribbles, np.ndarray) and scribbles.dtype.kind == "b":  # a mask: which class would True be?
        raise ScribbleSegError("scribbles are bool (a mask); give an integer array with 1 for heart and 2 for "
                               "background strokes")
    scribbles = check_array(scribbles, "scribbles", ndim=3, kinds="ui", shape=shape)
    # not np.unique: a large stack's re-run skips its sort; an unsigned array's minimum is 0 without a pass
    low, high = 0 if scribbles.dtype.kind == "u" else int(scribbles.min()), int(scribbles.max())
    if low < 0 or high > 2:
        values = np.unique(scribbles)
        shown = ", ".join(str(v) for v in values if v not in (0, 1, 2))[:60]
        raise ScribbleSegError(f"scribbles must hold 0 (none), 1 (heart) and 2 (background) only; found {shown}")
    if method != "munet":
        for value, name, drawn in zip((1, 2), ("heart", "background"), drawn_classes(scribbles)):
            if not drawn:
                raise ScribbleSegError(f"scribbles have no {name} ({value}) voxel; method {method!r} needs heart "
                                       "and background strokes")
    return scribbles


def stroked_sections(scribbles: np.ndarray) -> np.ndarray:
    """Indices of the sections of ``(Z, Y, X)`` ``scribbles`` that hold a stroke.

    Examples
    --------
    >>> stroked_sections(np.array([[[0, 0]], [[0, 2]]], np.uint8)).tolist()
    [1]
    """
    scribbles = np.asarray(scribbles)
    return np.flatnonzero(scribbles.reshape(scribbles.shape[0], -1).any(axis=1))


def drawn_classes(scribbles: np.ndarray) -> Tuple[bool, bool]:
    """Whether ``(Z, Y, X)`` scribbles hold a heart (1) and a background (2) voxel.

    Strokes lie on a few sections: each class is looked for on the stroked sections only, after one pass over
    the volume that finds them, not over the whole stack once per class.

    Examples
    --------
    >>> drawn_classes(np.array([[[1, 0]], [[0, 0]]], np.uint8))
    (True, False)
    """
    scribbles = np.asarray(scribbles)
    return tuple(any(bool(np.any(scribbles[k] == value)) for k in stroked_sections(scribbles)) for value in (1, 2))


def check_model(model: Any) -> None:
    """A model file path or a loaded :class:`~ScribbleSegLib.model_file.SegModel`.

    Examples
    --------
    >>> check_model(None)
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: model is None: pass a model file or a model from model_file.load_model
    """
    if model is None:
        raise ScribbleSegError("model is None: pass a model file or a model from model_file.load_model")
    if isinstance(model, (str, os.PathLike)):
        if not str(model):
            raise ScribbleSegError("model is an empty file name")
        return
    if not all(hasattr(model, a) for a in ("net", "config", "bank_features", "bank_labels")):
        raise ScribbleSegError(f"model must be a model file or a model from model_file.load_model, "
                               f"got {_type_name(model)}")


def check_instance(value: Any, name: str, cls: type) -> None:
    """``None`` or an instance of ``cls``.

    Examples
    --------
    >>> check_instance(None, "cut_params", int)
    """
    if value is not None and not isinstance(value, cls):
        raise ScribbleSegError(f"{name} must be a {cls.__name__} or None, got {_type_name(value)}")


def check_features(features: Any, shape: Sequence[int]) -> None:
    """``None`` or ``(probability (Z, Y, X), features (Z, Y, X, C))`` for an image of ``shape``.

    Examples
    --------
    >>> check_features(None, (1, 2, 2))
    >>> check_features((np.zeros((1, 2, 2), ">f4"), np.zeros((1, 2, 2, 3), "f4")), (1, 2, 2))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: features[0] (probability) must be in this machine's byte order (torch \
reads no other); got big-endian >f4: pass .astype(np.float32)
    """
    if features is None:
        return
    if not isinstance(features, (tuple, list)) or len(features) != 2:
        raise ScribbleSegError(f"features must be a (probability, features) pair, got {_type_name(features)}")
    probability = check_array(features[0], "features[0] (probability)", ndim=3, kinds="f", shape=shape)
    feats = check_array(features[1], "features[1] (features)", ndim=4, kinds="f", shape=shape)
    for name, array in (("features[0] (probability)", probability), ("features[1] (features)", feats)):
        if not array.dtype.isnative:  # copied here, a memory-mapped file of GBs would be read whole
            order = "big" if array.dtype.byteorder == ">" else "little"
            raise ScribbleSegError(f"{name} must be in this machine's byte order (torch reads no other); got "
                                   f"{order}-endian {array.dtype.str}: pass .astype(np.{array.dtype.name})")
    # Section by section: a memory-mapped (Z, Y, X, C) file may not fit in memory whole.
    for z in range(probability.shape[0]):
        plane = probability[z]
        if not np.isfinite(plane).all() or plane.min() < 0 or plane.max() > 1:
            raise ScribbleSegError(f"features[0] (probability) must be finite and in [0, 1]; section {z} is not")
        if not np.isfinite(feats[z]).all():
            raise ScribbleSegError(f"features[1] (features) must be finite; section {z} holds NaN or infinite "
                                   "values")


def check_segment_args(image: Any, scribbles: Any, model: Any, *, spacing: Any, method: Any, cut_params: Any,
                       ddml_config: Any, device: Any, cache_dir: Any, seed: Any, features: Any,
                       orientations: Any = choices.DEFAULT_ORIENTATIONS):
    """Every check of :func:`ScribbleSegLib.pipeline.segment`; returns ``(array, geometry, scribbles)``.

    The array is RGB (a grey image is repeated into three channels).

    Examples
    --------
    >>> array, geometry, s = check_segment_args(np.arange(16, dtype=np.uint8).reshape(1, 4, 4), None, "m.model",
    ...     spacing=None,
    ...     method="munet", cut_params=None, ddml_config=None, device="cpu", cache_dir=None, seed=0,
    ...     features=None)
    >>> array.shape
    (1, 4, 4, 3)
    """
    method = check_method(method)
    array, geometry = check_image(image, spacing)
    if features is None:  # the network would run on it: a blank scan is refused as from a file
        from .geometry import Volume
        from .volume_io import check_not_blank

        rgb = array if array.ndim == 4 else np.broadcast_to(array[..., None], array.shape + (3,))
        check_not_blank(Volume(rgb, geometry), "image")
    scribbles = check_scribbles(scribbles, array.shape[:3], method)
    check_model(model)
    check_device(device)
    check_seed(seed)
    check_orientations(orientations)
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise ScribbleSegError(f"cache_dir must be a folder name or None, got {_type_name(cache_dir)}")
    if cache_dir is not None and not os.fspath(cache_dir):  # "" is the current folder to pathlib: not meant
        raise ScribbleSegError("cache_dir must be a folder name or None, got ''")
    if cut_params is not None:
        from .graphcut import GraphCutParams

        check_instance(cut_params, "cut_params", GraphCutParams)
    if ddml_config is not None:
        from .ddml import DDMLConfig

        check_instance(ddml_config, "ddml_config", DDMLConfig)
    check_features(features, array.shape[:3])
    if array.ndim == 3:  # greyscale volume: the network expects RGB
        array = np.repeat(array[..., None], 3, axis=-1)
    return array, geometry, scribbles
