"""The one path from files to results, shared by ``scribbleseg segment`` and the Slicer worker.

:func:`segment_files` does, in this order:

1. check the settings and every output before reading anything: extension,
   folder exists and is writable, no output is an input (or lies in an input
   folder) or another output -- same path or same file;
2. read the inputs (memory checked first) and load the model;
3. check the free space against the outputs' expected sizes;
4. compute (:func:`ScribbleSegLib.pipeline.segment`);
5. write every output to a temporary beside its target and rename them
   together at the end (:class:`~ScribbleSegLib.fileio.OutputSet`).  Any
   error, a full disk, a cancel, SIGINT or SIGTERM removes the temporaries;
   the targets are untouched until the last output is written.

:func:`open_session` does step 2 once and computes the M-Unet features
(:class:`ScribbleSegLib.session.Session`); :func:`session_files` then does
steps 1, 3, 4 (adaptation and cut only) and 5 for each new set of scribbles.

Messages name the inputs and outputs the way the caller does (``--out`` on
the command line, ``outputs.labels`` in a worker request) through
:attr:`SegmentFiles.names`.

Examples
--------
>>> job = SegmentFiles(image="image.nrrd", model="heart.model", labels="out.seg.nrrd", method="munet")
>>> job.outputs()
{'labels': 'out.seg.nrrd'}
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import math
import numbers
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from . import choices
from .errors import CancelledError, ScribbleSegError
from .progress import CancelToken, ProgressCallback, check, report

VOLUME_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha")
"""Single-file formats an output volume can be written in (``.mhd``/``.nhdr`` pairs cannot be renamed atomically)."""
TILE_LABEL_SUFFIXES = (".png",)
"""Formats of a one-section (tile) result: a mask of 0 and 255, as image viewers and tile tools show masks."""
LABEL_SUFFIXES = (".seg.nrrd",) + VOLUME_SUFFIXES + TILE_LABEL_SUFFIXES
SURFACE_SUFFIXES = choices.SURFACE_FORMATS
RENDER_SUFFIXES = (".png",)
RENDER_SIZE = choices.RENDER_SIZE

OUTPUT_SUFFIXES = {"labels": LABEL_SUFFIXES, "probability": VOLUME_SUFFIXES, "surface": SURFACE_SUFFIXES,
                   "render": RENDER_SUFFIXES}


@dataclass
class SegmentFiles:
    """A segmentation job on files.

    Attributes
    ----------
    image : str
        3D image file or folder of sections.
    model : str
        Model file.
    labels : str
        Output segmentation: ``.seg.nrrd`` (segment ``heart``) or a labelmap
        (``.nrrd``, ``.nii``, ``.nii.gz``, ``.mha``), or for a one-section image a
        ``.png`` mask of 0 and 255.
    scribbles : str, optional
        Labelmap or ``.seg.nrrd``; needed unless ``method`` is ``munet``.
    probability, surface, render : str, optional
        Further outputs: the final probability volume, the closed surface
        (``.stl``/``.vtp``/``.obj``), an offscreen PNG render of it.
    method, device, seed : see :func:`ScribbleSegLib.pipeline.segment`
    spacing, downsample : see :func:`ScribbleSegLib.volume_io.read_image`
    cache_dir : str, optional
        Feature cache folder; None: no cache.
    cut, ddml : dict
        Fields of ``GraphCutParams`` / ``DDMLConfig`` that replace their defaults.
    names : dict
        How the caller names each field in messages (``{"labels": "--out"}``);
        fields not in it are named as they are.
    suggest : int
        How many sections to suggest for the next strokes (in ``metrics["suggestions"]``).
    orientations : int
        Test-time flips of the M-Unet (``choices.ORIENTATIONS``, :func:`pipeline.segment`).
    scan_pixel : sequence of 2 float, optional
        The scan's pixel size ``(x, y)`` in mm at full resolution, for the network's scale where the image's
        grid has none (``Volume.scan_pixel``) and its file states none: the Slicer module gives what the file
        its volume was loaded from states (:func:`ScribbleSegLib.scan_pixel.stated_pixel`), as the file itself
        gives it here.  Not used with ``spacing``.
    forget : bool
        The user took back the last run (Slicer's "Undo last run"): the results that earlier runs kept with their
        strokes are dropped before this run (``pipeline.segment``'s ``forget_results``), as a warm session's
        :meth:`~ScribbleSegLib.session.Session.forget_runs` drops them.

    Examples
    --------
    >>> job = SegmentFiles(image="stack.nrrd", model="starter", labels="heart.seg.nrrd", scribbles="strokes.nrrd",
    ...                    surface="heart.stl", cut={"gamma": 4.0})
    >>> job.outputs()
    {'labels': 'heart.seg.nrrd', 'surface': 'heart.stl'}
    >>> job.name("labels"), SegmentFiles(**{**job.__dict__, "names": {"labels": "--out"}}).name("labels")
    ('labels', '--out')
    """

    image: str
    model: str
    labels: str
    scribbles: Optional[str] = None
    probability: Optional[str] = None
    surface: Optional[str] = None
    render: Optional[str] = None
    method: str = choices.DEFAULT_METHOD
    spacing: Optional[Sequence[float]] = None
    downsample: int = 1
    device: str = choices.DEFAULT_DEVICE
    seed: int = 0
    cache_dir: Optional[str] = None
    cut: Dict[str, float] = field(default_factory=dict)
    ddml: Dict[str, float] = field(default_factory=dict)
    names: Dict[str, str] = field(default_factory=dict)
    suggest: int = choices.DEFAULT_SUGGESTIONS
    orientations: int = choices.DEFAULT_ORIENTATIONS
    scan_pixel: Optional[Sequence[float]] = None
    forget: bool = False

    def name(self, key: str) -> str:
        """How messages name field ``key``."""
        return self.names.get(key, key)

    def outputs(self) -> Dict[str, str]:
        """The outputs given, by field."""
        return {k: getattr(self, k) for k in OUTPUT_SUFFIXES if getattr(self, k)}

    def inputs(self) -> Dict[str, str]:
        """The inputs given, by field (the model resolved: ``starter`` is the shipped starter model).

        Examples
        --------
        >>> found = SegmentFiles(image="stack.nrrd", model="starter", labels="heart.seg.nrrd").inputs()
        >>> found["image"], Path(found["model"]).name  # no scribbles given: none listed
        ('stack.nrrd', 'starter.model')
        """
        from .starter import resolve_model

        found = {k: getattr(self, k) for k in ("image", "scribbles") if getattr(self, k)}
        found["model"] = str(resolve_model(self.model))
        return found


@dataclass
class SegmentFilesResult:
    """What :func:`segment_files` returns.

    Attributes
    ----------
    outputs : dict
        Field -> path of every file written.
    metrics : dict
        Heart voxels and volume, shape, whether features came from the cache, method.
    timings : dict
        Seconds per stage.
    """

    outputs: Dict[str, str]
    metrics: Dict[str, Any]
    timings: Dict[str, float]


def replace_fields(defaults: Any, values: Dict[str, Any], name: str) -> Any:
    """``dataclasses.replace(defaults, **values)`` with one-line errors naming ``name``.

    Examples
    --------
    >>> from ScribbleSegLib.choices import Preset
    >>> replace_fields(Preset("x", 1, None), {"max_iters": 5}, "preset").max_iters
    5
    """
    if not isinstance(values, dict):  # a GraphCutParams itself, say: it goes to pipeline.segment as it is
        raise ScribbleSegError(f"{name} must be a dict of setting -> value, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(defaults)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ScribbleSegError(f"{name}: unknown settings {unknown}; known: {sorted(fields)}")
    values = dict(values)  # a copy: tuple settings are converted in it
    for key, value in values.items():
        if value is None and "Optional" in str(fields[key].type):  # e.g. cut.reference_radius: null turns it off
            continue
        # "request field 'cut.gamma'" (not "request field 'cut'.gamma"), "graph cut options.gamma" as before
        setting = f"{name[:-1]}.{key}'" if name.endswith("'") else f"{name}.{key}"
        if isinstance(getattr(defaults, key), str):  # a choice (data_term, evaluation): the class checks it
            if not isinstance(value, str):
                raise ScribbleSegError(f"{setting} must be a string, got {value!r}")
        elif isinstance(getattr(defaults, key), tuple):  # sizes (ddml.hidden): a list of numbers in JSON
            if not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise ScribbleSegError(f"{setting} must be a list of numbers, got {value!r}")
            values[key] = tuple(value)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ScribbleSegError(f"{setting} must be a number, got {value!r}")
        elif isinstance(getattr(defaults, key), int) and not isinstance(getattr(defaults, key), bool):
            # A count (ddml.steps, batch_size): JSON may give 400.0, never 2.5 or 1e400.
            if not (isinstance(value, int) or (math.isfinite(value) and float(value).is_integer())):
                raise ScribbleSegError(f"{setting} must be a whole number, got {value!r}")
            values[key] = int(value)
    try:
        return dataclasses.replace(defaults, **values)
    except (TypeError, ValueError, ScribbleSegError) as exc:  # the class's own checks, named by where they came from
        raise ScribbleSegError(f"{name}: {exc}") from None


def settings(job: SegmentFiles):
    """``(GraphCutParams, DDMLConfig)`` of a job (None where it sets nothing).

    Examples
    --------
    >>> settings(SegmentFiles(image="i", model="m", labels="o.nrrd"))
    (None, None)
    """
    cut_params = ddml_config = None
    if job.cut:
        from .graphcut import GraphCutParams

        cut_params = replace_fields(GraphCutParams(), job.cut, job.name("cut"))
    if job.ddml:
        from .ddml import DDMLConfig

        ddml_config = replace_fields(DDMLConfig(), job.ddml, job.name("ddml"))
    return cut_params, ddml_config


def _missing(value, key: str, job: "SegmentFiles") -> str:
    """The one line for an input that does not exist; a model named as the shipped one in another case
    (``Starter``) is told the name.

    Examples
    --------
    >>> _missing("Starter", "model", SegmentFiles(image="stack.nrrd", model="Starter", labels="out.seg.nrrd"))
    "Starter: no such file or folder (model; the shipped model is 'starter', in lower case)"
    """
    from .starter import starter_name_hint

    hint = starter_name_hint(value) if key == "model" else ""
    return f"{value}: no such file or folder ({job.name(key)}{hint})"


def check_job(job: SegmentFiles) -> None:
    """Every check that needs no input read: settings, input paths, and all outputs.

    Raises
    ------
    ScribbleSegError
        One line naming the option (or file) and the problem.

    Examples
    --------
    >>> import os, tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> image, strokes = os.path.join(folder.name, "stack.nrrd"), os.path.join(folder.name, "strokes.nrrd")
    >>> for path in (image, strokes):
    ...     open(path, "wb").close()  # only their names are checked here
    >>> try:
    ...     check_job(SegmentFiles(image=image, model="starter", labels=image, scribbles=strokes,
    ...                            names={"labels": "--out"}))
    ... except ScribbleSegError as error:
    ...     print(str(error).replace(folder.name, "<folder>"))
    <folder>/stack.nrrd (--out): is the input image; choose another output file, inputs are never overwritten
    >>> folder.cleanup()
    """
    from .checks import check_device, check_orientations, check_seed
    from .fileio import check_outputs

    if not isinstance(job, SegmentFiles):
        raise ScribbleSegError(f"job must be a SegmentFiles, got {type(job).__name__}")
    if not isinstance(job.names, dict):
        raise ScribbleSegError(f"names must be a dict of field -> name in messages, got {type(job.names).__name__}")
    for key in ("image", "model", "labels", "scribbles", "probability", "surface", "render"):
        value = getattr(job, key)
        required = key in ("image", "model", "labels")
        if (value is None and required) or (value is not None and not isinstance(value, (str, os.PathLike))):
            # An array here means the in-memory API: say which one.
            raise ScribbleSegError(f"{job.name(key)} must be a file or folder name (arrays go to pipeline.segment), "
                                   f"got {type(value).__name__}")
    if job.method not in choices.METHODS:
        raise ScribbleSegError(f"{job.name('method')} {job.method!r}: expected one of {', '.join(choices.METHODS)}")
    if job.method != "munet" and not job.scribbles:
        raise ScribbleSegError(f"{job.name('method')} {job.method} needs {job.name('scribbles')}")
    expected = {"device": "one of " + choices.DEVICES_TEXT, "seed": "an integer from 0 to 2^63 - 1",
                "orientations": "one of " + ", ".join(map(str, choices.ORIENTATIONS))}
    for key, checker in (("device", check_device), ("seed", check_seed), ("orientations", check_orientations)):
        try:
            checker(getattr(job, key))
        except ScribbleSegError:
            raise ScribbleSegError(f"{job.name(key)} {getattr(job, key)!r}: expected {expected[key]}") from None
    if job.device.lower().startswith("cuda"):
        from .runtime import resolve_device

        try:
            resolve_device(job.device)
        except ScribbleSegError as exc:
            raise ScribbleSegError(f"{job.name('device')} {str(exc).split(' ', 1)[1]}") from None
    if job.scan_pixel is not None and not is_positive_pair(job.scan_pixel):
        raise ScribbleSegError(f"{job.name('scan_pixel')} must be two positive numbers X Y in mm, got "
                               f"{job.scan_pixel!r}")
    for key, value in job.inputs().items():
        if not Path(value).exists():
            raise ScribbleSegError(_missing(value, key, job))
        if key == "model" and Path(value).is_dir():  # before the outputs: one inside it is not the mistake
            raise ScribbleSegError(f"{value}: is a folder, not a model file ({job.name(key)})")
    check_outputs({job.name(k): v for k, v in job.outputs().items()},
                  {job.name(k): v for k, v in job.inputs().items()},
                  suffixes={job.name(k): OUTPUT_SUFFIXES[k] for k in job.outputs()})
    _check_replaced_segmentation(job)
    _check_replaced_images(job)
    _check_cache_outside_inputs(job)


def _check_cache_outside_inputs(job: SegmentFiles) -> None:
    """The feature cache writes an entry per image: never into a folder of sections that is an input."""
    if not job.cache_dir:
        return
    from .fileio import lies_inside

    cache = Path(job.cache_dir)
    for key, value in job.inputs().items():
        source = Path(value)
        if source.is_dir() and lies_inside(cache, source):
            raise ScribbleSegError(f"{cache} ({job.name('cache_dir')}): lies inside the input folder {source} "
                                   f"({job.name(key)}); the cache writes there, and inputs are never modified: give "
                                   "another cache folder")


def _check_replaced_segmentation(job: SegmentFiles) -> None:
    """A ``.seg.nrrd`` already at the labels output must be what a run writes, one ``heart`` segment: a
    stroke file or a segmentation of several segments given as the output was replaced without a word."""
    path = job.labels
    if not path or not Path(path).is_file():
        return
    from .image_reading import is_segmentation_file
    from .label_reading import segment_names

    names = segment_names(path) if is_segmentation_file(path) else None
    if names is not None and [n.lower() for n in names] != ["heart"]:
        shown = ", ".join(f"'{n}'" for n in names) or "none"
        raise ScribbleSegError(f"{path}: holds a segmentation with the segments {shown} ({job.name('labels')}); a "
                               "run writes one 'heart' segment and replaces only such a file: give another path, or "
                               "remove the file")


def _check_replaced_images(job: SegmentFiles) -> None:
    """A file already at the labels or probability output must not hold a colour image: a run writes one value a
    voxel there, and an H&E scan given as the output (a copy of the stack, a tile beside it) was replaced by a mask
    without a word.  A file that does not read as an image, or reads as one value a voxel, is replaced as before."""
    from .image_reading import is_segmentation_file, stated_components

    for key in ("labels", "probability"):
        path = getattr(job, key)
        if not path or not Path(path).is_file() or is_segmentation_file(path):  # segmentations: the check above
            continue
        channels = stated_components(path)
        if channels is not None and channels > 1:
            raise ScribbleSegError(f"{path}: holds an image of {channels} channels, a scan rather than a result "
                                   f"({job.name(key)}); a run writes one value a voxel there and replaces only such "
                                   "a file: give another path, or remove the file")


def is_positive_pair(values) -> bool:
    """Whether ``values`` are two positive finite numbers (``SegmentFiles.scan_pixel``; the worker's requests).

    Examples
    --------
    >>> is_positive_pair([0.00025, 0.00025]), is_positive_pair((1, -1)), is_positive_pair(["0.5", 1])
    (True, False, False)
    """
    try:
        return len(values) == 2 and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                        and math.isfinite(v) and v > 0 for v in values)
    except TypeError:  # no length
        return False


def expected_bytes(job: SegmentFiles, shape_zyx: Sequence[int]) -> Dict[str, int]:
    """The most each output can take on disk (uncompressed sizes; the surface is not known in advance).

    Examples
    --------
    >>> expected_bytes(SegmentFiles(image="i", model="m", labels="o.nrrd", probability="p.nrrd"), (2, 3, 4))
    {'labels': 24, 'probability': 96}
    """
    z, y, x = (int(s) for s in shape_zyx)
    sizes = {"labels": z * y * x, "probability": 4 * z * y * x, "render": RENDER_SIZE[0] * RENDER_SIZE[1] * 3}
    return {k: sizes[k] for k in job.outputs() if k in sizes}


def segment_files(job: SegmentFiles, *, progress: Optional[ProgressCallback] = None,
                  cancel: Optional[CancelToken] = None) -> SegmentFilesResult:
    """Run a segmentation job from input files to output files (see the module docstring).

    Parameters
    ----------
    job : SegmentFiles
    progress, cancel
        See :mod:`ScribbleSegLib.progress`.

    Returns
    -------
    SegmentFilesResult

    Raises
    ------
    ScribbleSegError
        Bad input, settings or output, not enough memory or disk
        (:class:`~ScribbleSegLib.fileio.DiskFullError`); nothing is written then.
    CancelledError
        If ``cancel`` was set; nothing is written.

    Examples
    --------
    >>> segment_files(SegmentFiles(image="missing.nrrd", model="m", labels="o.nrrd", method="munet"))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: missing.nrrd: no such file or folder (image)
    """
    from . import pipeline
    from .fileio import signals_raise

    check_job(job)
    cut_params, ddml_config = settings(job)
    timings: Dict[str, float] = {}
    with signals_raise():
        import_in_background()
        image = read_job_image(job, timings, progress=progress, cancel=cancel)
        scribbles = read_job_scribbles(job, image, timings)
        from .model_file import load_model  # not at the top: there it would wait for the thread instead of reading

        model = load_model(job.inputs()["model"], device=job.device)
        check_job_space(job, image.shape)
        check(cancel)

        result = pipeline.segment(image, scribbles, model, method=job.method, cut_params=cut_params,
                                  ddml_config=ddml_config, device=job.device, cache_dir=job.cache_dir,
                                  seed=job.seed, suggest=job.suggest, progress=progress, cancel=cancel,
                                  orientations=job.orientations, forget_results=job.forget)
        return _write_and_report(job, result, image, scribbles, timings, progress, cancel)


#: What a segmentation job imports only to compute: torch (2-3 s on a 2-core CPU) and the modules built on it.
HEAVY_MODULES = ("ScribbleSegLib.model_file", "ScribbleSegLib.ddml", "ScribbleSegLib.inference")


def import_in_background() -> threading.Thread:
    """Start importing :data:`HEAVY_MODULES` on a thread of their own, and return it.

    A job reads its input files first, mostly in SimpleITK, which releases Python's lock:
    the imports then run beside the reading instead of after it (0.9 s less on a 2-core CPU
    for a 100x512x512 image).  An import that fails here fails again, with its message, where
    the job imports the module itself.
    """
    def load() -> None:
        for name in HEAVY_MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001  (reported by the job's own import)
                return

    thread = threading.Thread(target=load, name="scribbleseg-imports")
    thread.start()
    return thread


def _write_and_report(job: SegmentFiles, result, image, scribbles, timings: Dict[str, float],
                      progress: Optional[ProgressCallback], cancel: Optional[CancelToken]) -> "SegmentFilesResult":
    """The end of every segmentation job (one-shot or session run): write all outputs, then report."""
    timings.update(result.timings)
    check(cancel)
    written = write_results(job, result, image.geometry, timings, progress=progress, cancel=cancel)
    return SegmentFilesResult(written, result_metrics(result, image.shape, image.scan_spacing, scribbles,
                                                      image.geometry.direction), timings)


def read_job_image(job: SegmentFiles, timings: Dict[str, float], *, progress: Optional[ProgressCallback] = None,
                   cancel: Optional[CancelToken] = None):
    """Read the job's image as a :class:`~ScribbleSegLib.geometry.Volume` (memory checked first; a blank scan,
    one colour throughout, is refused: :func:`~ScribbleSegLib.volume_io.check_not_blank`).

    Adds the seconds spent to ``timings["read"]``.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from ScribbleSegLib.geometry import Geometry, Volume
    >>> from ScribbleSegLib.volume_io import write_rgb_volume
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     job = SegmentFiles(image=os.path.join(folder, "blank.nrrd"), model="starter", labels="heart.nrrd")
    ...     write_rgb_volume(job.image, Volume(np.full((2, 8, 8, 3), 240, np.uint8), Geometry((0.5, 0.5, 2.0))))
    ...     read_job_image(job, {})
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: /.../blank.nrrd: every voxel has the same colour (240, 240, 240): \
there is no tissue to segment (an empty or blank scan?)
    """
    from . import volume_io

    t0 = time.perf_counter()
    report(progress, "read", 0.0, "reading the image")
    image = volume_io.check_not_blank(volume_io.read_image(job.image, spacing=job.spacing,
                                                           downsample=job.downsample, progress=progress,
                                                           cancel=cancel), job.image)
    if job.scan_pixel is not None and job.spacing is None and image.scan_pixel is None \
            and tuple(image.geometry.spacing[:2]) == volume_io.UNKNOWN_PIXEL:
        # The grid states no pixel size (the NRRD the Slicer module writes of a TIFF it loaded on 1 mm pixels).
        image.scan_pixel = tuple(float(v) * job.downsample for v in job.scan_pixel)
    timings["read"] = timings.get("read", 0.0) + time.perf_counter() - t0
    return image


def read_job_scribbles(job: SegmentFiles, image, timings: Dict[str, float]):
    """The job's scribbles on ``image``'s grid (geometry checked), or None for ``munet``.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from ScribbleSegLib.geometry import Geometry, Volume
    >>> from ScribbleSegLib.volume_io import write_labelmap
    >>> image = Volume(np.zeros((2, 8, 8, 3), np.uint8), Geometry((0.5, 0.5, 2.0)))
    >>> strokes = np.zeros((2, 8, 8), np.uint8); strokes[0, 3, 3] = 1; strokes[1, 0, 0] = 2
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     job = SegmentFiles(image="stack.nrrd", model="starter", labels="heart.nrrd",
    ...                        scribbles=os.path.join(folder, "strokes.nrrd"))
    ...     write_labelmap(job.scribbles, strokes, image.geometry)
    ...     np.array_equal(read_job_scribbles(job, image, {}), strokes)
    True
    >>> read_job_scribbles(dataclasses.replace(job, method="munet"), image, {}) is None  # the M-Unet reads none
    True
    """
    from . import volume_io

    t0 = time.perf_counter()
    scribbles = None
    if job.scribbles and job.method != "munet":
        # With the image's spacing or size changed as it was read, strokes on a finer grid could as well be on
        # the file's own grid: that reading comes first, and theirs only after it.
        changed = bool(job.spacing) or job.downsample > 1
        try:
            scribbles = volume_io.read_scribbles(job.scribbles, image.shape, image.geometry,
                                                 downsample=job.downsample, finer_grids=not changed)
        except ScribbleSegError:
            if not changed:
                raise
            scribbles = _scribbles_on_file_grid(job, image)
            if scribbles is None:  # strokes on a finer grid than the image as read, or that reading's error
                scribbles = volume_io.read_scribbles(job.scribbles, image.shape, image.geometry,
                                                     downsample=job.downsample)
    timings["read"] = timings.get("read", 0.0) + time.perf_counter() - t0
    return scribbles


def _scribbles_on_file_grid(job: SegmentFiles, image):
    """Scribbles drawn on the image file as its header states it (its voxel size, full size in-plane), when
    ``spacing`` or ``downsample`` changed how the image was read: placed on the image as read, reduced as the
    image was.  None when they are not on that grid (the caller then reports the first error)."""
    from . import volume_io

    strokes = volume_io.marks_on_file_grid(job.scribbles, job.image, image.shape, spacing=job.spacing,
                                           downsample=job.downsample, strokes=True)
    if strokes is None:
        return None
    for value, name in ((1, "heart"), (2, "background")):
        if not (strokes == value).any():
            raise ScribbleSegError(f"{job.scribbles}: the scribbles have no {name} voxel left after reducing them "
                                   f"by {job.name('downsample')} {job.downsample}: a block that "
                                   "holds both classes counts as not scribbled")
    return strokes


def check_job_space(job: SegmentFiles, shape_zyx: Sequence[int]) -> None:
    """Refuse the job before computing when its outputs cannot hold its result: a PNG for more than one section,
    or disks without room for them.

    Examples
    --------
    >>> check_job_space(SegmentFiles(image="stack.nrrd", model="starter", labels="heart.png"), (2, 8, 8))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: heart.png (labels): a PNG holds one section, and the image has 2; \
write .seg.nrrd or .nrrd
    """
    from .fileio import check_free_space

    targets = job.outputs()
    if str(targets["labels"]).lower().endswith(TILE_LABEL_SUFFIXES):
        if int(shape_zyx[0]) != 1:
            raise ScribbleSegError(f"{targets['labels']} ({job.name('labels')}): a PNG holds one section, and the "
                                   f"image has {int(shape_zyx[0])}; write .seg.nrrd or .nrrd")
        if job.downsample > 1:  # a PNG states no pixel size: the reduced mask would not lie on the tile
            raise ScribbleSegError(f"{targets['labels']} ({job.name('labels')}): a PNG mask of a tile read with "
                                   f"{job.name('downsample')} {job.downsample} would be {job.downsample} times "
                                   "smaller than the tile and not lie on it; write .nrrd, which keeps its pixel size")
    check_free_space({targets[k]: n for k, n in expected_bytes(job, shape_zyx).items()})


def write_results(job: SegmentFiles, result, geometry, timings: Dict[str, float], *,
                  progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None
                  ) -> Dict[str, str]:
    """Write every output of ``job`` from a :class:`~ScribbleSegLib.pipeline.SegmentResult`, all or none;
    return field -> path of each written (a surface and its picture are left out, with a warning, when the
    result has no heart voxel).

    Examples
    --------
    >>> import numpy as np, tempfile, types
    >>> from ScribbleSegLib.geometry import Geometry
    >>> from ScribbleSegLib.volume_io import read_label_volume
    >>> labels = np.zeros((2, 8, 8), np.uint8); labels[:, 2:6, 2:6] = 1
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     job = SegmentFiles(image="stack.nrrd", model="starter", labels=os.path.join(folder, "heart.nrrd"))
    ...     written = write_results(job, types.SimpleNamespace(labels=labels), Geometry((0.5, 0.5, 2.0)), {})
    ...     list(written), int(read_label_volume(written["labels"]).array.sum()), os.listdir(folder)
    (['labels'], 32, ['heart.nrrd'])
    """
    from . import volume_io
    from .fileio import OutputSet

    t0 = time.perf_counter()
    targets = job.outputs()
    meshes = [k for k in ("surface", "render") if k in targets]
    stale: List[Path] = []
    if meshes and not result.labels.any():
        # An empty result is still a result: written, with one line on what could not be made of it.  A surface
        # or picture an earlier run left at those paths would sit beside it as if it were this one's: it goes
        # when the rest is written.
        stale = [Path(targets[k]) for k in meshes if Path(targets[k]).is_file()]
        gone = f"; removed the earlier {', '.join(map(str, stale))}" if stale else ""
        logging.getLogger("ScribbleSegLib").warning(
            "the result has no heart voxel: no surface to write (%s)%s", ", ".join(job.name(k) for k in meshes), gone)
        targets = {k: v for k, v in targets.items() if k not in meshes}
    with OutputSet(targets) as out:
        report(progress, "write", 0.0, "writing the results")
        with out.writing("labels") as tmp:
            if str(targets["labels"]).lower().endswith(".seg.nrrd"):
                volume_io.write_segmentation(tmp, [("heart", result.labels, volume_io.HEART_COLOR)], geometry)
            elif str(targets["labels"]).lower().endswith(TILE_LABEL_SUFFIXES):
                volume_io.write_tile_mask(tmp, result.labels, geometry)
            else:
                volume_io.write_labelmap(tmp, result.labels, geometry)
        if "probability" in targets:
            with out.writing("probability") as tmp:
                volume_io.write_probability(tmp, result.probability, geometry)
        if "surface" in targets or "render" in targets:
            from . import surface

            poly = surface.labelmap_to_surface(result.labels, geometry, cancel=cancel)
            if "surface" in targets:
                with out.writing("surface") as tmp:
                    surface.write_surface(tmp, poly)
            if "render" in targets:
                with out.writing("render") as tmp:
                    surface.render_surface_png(poly, tmp, size=RENDER_SIZE)
        check(cancel)  # the last moment a cancel still leaves everything as it was
        out.commit()
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    report(progress, "write", 1.0, "done")
    timings["write"] = time.perf_counter() - t0
    return {k: str(v) for k, v in targets.items()}


def result_metrics(result, shape_zyx: Sequence[int], spacing: Sequence[float], scribbles,
                   direction: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """The ``metrics`` of a :class:`SegmentFilesResult` (heart voxels and volume, suggestions, warnings, ...);
    ``spacing`` ``(x, y, z)`` mm is the scan's (``Volume.scan_spacing``), ``direction`` the grid's axes (row-major
    3x3, ``Geometry.direction``; None: orthogonal), whose skew makes a voxel smaller than its sides' product.

    Examples
    --------
    >>> import numpy as np, types
    >>> labels = np.zeros((2, 8, 8), np.uint8); labels[:, 2:6, 2:6] = 1  # 32 heart voxels of 0.5 mm3
    >>> result = types.SimpleNamespace(labels=labels, features_cached=False, method="full", suggestions=[],
    ...                                warnings=[])
    >>> metrics = result_metrics(result, (2, 8, 8), (0.5, 0.5, 2.0), None)
    >>> metrics["heart_voxels"], metrics["heart_volume_mm3"], metrics["heart_area_mm2"], "scribbled_voxels" in metrics
    (32, 16.0, 8.0, False)
    >>> metrics["pixel_size_stated"], result_metrics(result, (2, 8, 8), (1.0, 1.0, 1.0), None)["pixel_size_stated"]
    (True, False)
    """
    import numpy as np

    from .geometry import UNKNOWN_PIXEL

    voxels = int(np.count_nonzero(result.labels))
    sx, sy, sz = spacing
    axes = np.eye(3) if direction is None else np.asarray(direction, float).reshape(3, 3)
    solid, flat = abs(float(np.linalg.det(axes))), float(np.linalg.norm(np.cross(axes[:, 0], axes[:, 1])))
    metrics: Dict[str, Any] = {
        "heart_voxels": voxels,
        "heart_volume_mm3": voxels * sx * sy * sz * solid,
        "heart_area_mm2": voxels * sx * sy * flat,  # what a tile (one section) has; over a stack, the sections' sum
        # 1 x 1 mm is what a file that states no pixel size is read at (a PNG): its mm are the pixels' count.
        "pixel_size_stated": (float(sx), float(sy)) != UNKNOWN_PIXEL,
        "shape_zyx": list(shape_zyx),
        "features_cached": bool(result.features_cached),
        "method": result.method,
    }
    if result.suggestions:
        metrics["suggestions"] = [s.as_dict() for s in result.suggestions]
    if result.warnings:
        metrics["warnings"] = list(result.warnings)
    if scribbles is not None:
        metrics["scribbled_voxels"] = {"heart": int(np.count_nonzero(scribbles == 1)),
                                       "background": int(np.count_nonzero(scribbles == 2))}
    return metrics


def open_session(job: SegmentFiles, *, progress: Optional[ProgressCallback] = None,
                 cancel: Optional[CancelToken] = None):
    """Read the job's image and model and compute (or reuse) its M-Unet features: a warm session.

    Only the image, model, device, spacing, downsample and cache settings of ``job``
    are used; each :func:`session_files` call then brings its own scribbles and outputs.

    Returns
    -------
    ScribbleSegLib.session.Session
        With ``timings["read"]`` added.

    Examples
    --------
    >>> open_session(SegmentFiles(image="no-such-stack.nrrd", model="starter", labels="heart.nrrd"))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: no-such-stack.nrrd: no such file or folder (image)
    """
    from .checks import check_device
    from .fileio import signals_raise

    try:
        check_device(job.device)
    except ScribbleSegError:
        raise ScribbleSegError(f"{job.name('device')} {job.device!r}: expected one of "
                               + choices.DEVICES_TEXT) from None
    for key, value in job.inputs().items():
        if key != "scribbles" and not Path(value).exists():
            raise ScribbleSegError(_missing(value, key, job))
    timings: Dict[str, float] = {}
    with signals_raise():
        import_in_background()
        image = read_job_image(job, timings, progress=progress, cancel=cancel)
        from .model_file import load_model  # not at the top: there it would wait for the thread instead of reading
        from .session import Session

        model = load_model(job.inputs()["model"], device=job.device)
        session = Session(image, model, device=job.device, cache_dir=job.cache_dir, progress=progress,
                          cancel=cancel, orientations=job.orientations)
    session.timings.update(timings)
    return session


def session_files(session, job: SegmentFiles, *, progress: Optional[ProgressCallback] = None,
                  cancel: Optional[CancelToken] = None) -> SegmentFilesResult:
    """:func:`segment_files` on a warm session: read the scribbles, adapt, cut, write (all or none).

    A run cancelled after the session made its result (while it writes) leaves the session to start its next run
    as the first did (:meth:`~ScribbleSegLib.session.Session.forget_runs`), not from the run no one saw.

    ``job.image`` and ``job.model`` name the session's inputs (outputs must not
    overwrite them); the image is not read again and the M-Unet does not run.

    Returns
    -------
    SegmentFilesResult
        ``timings`` holds this run's stages.

    Examples
    --------
    The job is checked before the session is asked anything:

    >>> session_files(None, SegmentFiles(image="stack.nrrd", model="starter", labels="heart.nrrd"))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: method full needs scribbles
    """
    from .fileio import signals_raise

    check_job(job)
    cut_params, ddml_config = settings(job)
    timings: Dict[str, float] = {}
    image = session.volume
    with signals_raise():
        scribbles = read_job_scribbles(job, image, timings)
        check_job_space(job, image.shape)
        check(cancel)
        if job.forget:  # the user took back the last run: this one starts as the first did
            session.forget_runs()
        result = session.run(scribbles, method=job.method, cut_params=cut_params, ddml_config=ddml_config,
                             seed=job.seed, suggest=job.suggest, progress=progress, cancel=cancel)
        try:
            return _write_and_report(job, result, image, scribbles, timings, progress, cancel)
        except CancelledError:
            # Cancelled once the run was made (a cancel sent during the cut is taken here): the session's DDML
            # network and cut are this run's, which the user never saw; the next run starts as the first did.
            session.forget_runs()
            raise
