"""The process that does the heavy work for the Slicer module, and the client that runs it.

PyMaxflow holds the GIL for a whole graph cut and torch can keep every core
busy, so the Slicer module never computes in its own process.  It writes the
inputs and a JSON request into a temporary folder and runs::

    PythonSlicer -m ScribbleSegLib.worker REQUEST.json --control-stdin

The worker answers with one JSON object per line on stdout::

    {"event": "started", "protocol": 1, "task": "segment", "pid": 4242}
    {"event": "progress", "stage": "graph cut", "fraction": 0.4, "message": "..."}
    {"event": "log", "level": "info", "message": "..."}
    {"event": "done", "outputs": {...}, "metrics": {...}, "timings": {...}}
    {"event": "error", "kind": "input", "message": "..."}

Exactly one ``done`` or ``error`` ends a run.  ``kind`` is ``input`` (bad
input or settings, the message names the file or option), ``cancelled``,
``memory`` (out of RAM or GPU memory) or ``internal`` (a bug; the traceback
is in the log).  Everything else the process prints, Python tracebacks and
native libraries included, goes to stderr, which the client passes on as log
lines, so nothing can corrupt the stdout protocol; a broken worker command line is
an ``input`` error event too.  Exit status: 0 done, 2 bad input, 3 cancelled, 1 anything else.

With ``--control-stdin`` a line ``cancel`` on stdin, or stdin closing (the
parent died), cancels the run at its next check.  A graph cut cannot be
interrupted, so the client kills the whole process tree when the worker does
not stop soon enough (:meth:`WorkerProcess.kill`).

Requests (relative paths are relative to the request file's folder)::

    {"protocol": 1, "task": "segment",
     "image": "image.nrrd", "scribbles": "scribbles.nrrd", "model": "/models/heart.model",
     "method": "full",                          # munet | ddml | full
     "cut": {"gamma": 1.0},                     # optional GraphCutParams fields (null: off, where optional)
     "ddml": {"steps": 400},                    # optional DDMLConfig fields
     "device": "auto", "seed": 0, "cache_dir": "/cache/features",   # cache_dir may be null
     "orientations": 1,                         # optional test-time flips of the M-Unet: 1, 2 or 4
     "scan_pixel": [0.00025, 0.00025],          # optional: the scan's pixel X Y in mm where the image states none
     "outputs": {"labels": "labels.nrrd", "probability": "probability.nrrd"}}   # probability optional

    {"protocol": 1, "task": "train",
     "images": ["img0.nrrd", ...], "labels": ["lab0.nrrd", ...], "output": "new.model",
     "arch": "munet", "preset": "small", "max_minutes": 10,   # max_iters, max_minutes: default the preset's
     "val_images": [], "val_labels": [], "device": "auto", "seed": 0,
     "init": "/models/parent.model",            # optional: fine-tune this model ("starter": the shipped one)
     "max_iters": 300,                          # optional step budget (default: the preset's, 300 with init;
                                                # max_minutes: the preset's, none with init)
     "names": ["Embryo 7"]}                     # optional: how the model's provenance names the volumes

A segmentation runs :func:`ScribbleSegLib.jobs.segment_files`, the same path
from files to results as ``scribbleseg segment``: every output is checked before
any work and written at the end, all or none.

    {"protocol": 1, "task": "phantom", "seed": 0, "shape": [64, 192, 192], "every": 8,
     "outputs": {"image": "image.nrrd", "label": "label.seg.nrrd", "scribbles": "scribbles.seg.nrrd"}}

    {"protocol": 1, "task": "devices"}

A persistent worker keeps the model, the volume and its M-Unet features warm
(:class:`ScribbleSegLib.session.Session`) and runs one segmentation per line
it reads on stdin::

    {"protocol": 1, "task": "session", "image": "image.nrrd", "model": "/models/heart.model",
     "device": "auto", "cache_dir": "/cache/features", "orientations": 1}   # orientations, scan_pixel optional

It answers ``started``, progress, then ``{"event": "ready", "metrics": {...},
"timings": {...}}`` once the features are there (or ``error`` and exits).  Each
further stdin line is a run, one JSON object with the fields of a ``segment``
request except ``image``/``model``/``device``/``cache_dir``/``orientations``/``scan_pixel`` (paths relative
to the session request's folder), and an optional ``id`` echoed in its events::

    {"id": 1, "scribbles": "scribbles2.nrrd", "method": "full", "ddml": {}, "cut": {}, "seed": 0,
     "outputs": {"labels": "labels2.nrrd"}}

A run starts from the last run's DDML network and cut (:class:`~ScribbleSegLib.session.Session`), and a run
with the last run's strokes and options writes that run's result again at once;
``"forget": true`` makes it start as the first run did (the panel sends it after "Undo last run"); so does
the run after one cancelled while its results were written (a cancel sent during the cut is taken there).

Each run ends with exactly one ``done`` or ``error`` (with its ``id``).  A bad
run (``input``) or a ``cancel`` line (``cancelled``) leaves the session
running; ``memory`` and ``internal`` errors end it (exit 1).  A line ``quit``
ends it after the runs already sent (exit 0); stdin closing (the parent is
gone) ends it: at once while idle (exit 0), else with each run in progress or queued
answered ``cancelled`` (exit 3).
:class:`SessionProcess` is the parent's side.

:class:`WorkerProcess` is the parent's side: it starts the worker in its own
process group, reads both streams on background threads and hands the events
to whoever polls it (the Slicer module polls from a Qt timer), and can cancel
or kill the run.  It uses only the standard library.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import logging
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, NoReturn, Optional, Sequence, TextIO, Union

from . import choices
from .errors import CancelledError, ScribbleSegError
from .fileio import signals_raise
from .progress import CancelToken

PROTOCOL = 1
"""Version of the request and event format; a request with another version is refused."""

TASKS = ("segment", "train", "phantom", "devices", "session")
METHODS = choices.METHODS
DEVICES = choices.DEVICES

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 3

_PROGRESS_INTERVAL = 0.1  # seconds between two progress lines of one stage

Event = Dict[str, Any]


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------


def write_request(path: Union[str, os.PathLike], request: Dict[str, Any]) -> Path:
    """Write ``request`` as the JSON file the worker reads; add the protocol version.

    Examples
    --------
    >>> import tempfile
    >>> path = write_request(Path(tempfile.mkdtemp()) / "r.json", {"task": "devices"})
    >>> json.loads(path.read_text(encoding="utf-8"))
    {'protocol': 1, 'task': 'devices'}
    """
    path = Path(path)
    path.write_text(json.dumps({"protocol": PROTOCOL, **request}, indent=1), encoding="utf-8")
    return path


def load_request(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read and check a request file; resolve relative paths against its folder.

    Returns
    -------
    dict
        The request with every path made absolute and optional fields filled in.

    Raises
    ------
    ScribbleSegError
        With one line naming the request file and the field that is wrong.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> outputs = {"image": "i.nrrd", "label": "l.seg.nrrd", "scribbles": "s.seg.nrrd"}
    >>> request = load_request(write_request(folder / "r.json", {"task": "phantom", "outputs": outputs}))
    >>> request["every"], request["outputs"]["image"] == str(folder.resolve() / "i.nrrd")
    (8, True)
    >>> load_request(write_request(folder / "r.json", {"task": "phantom", "seed": -1}))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: ...r.json: 'seed' must be a non-negative integer, got -1
    """
    path = Path(path)
    try:
        request = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScribbleSegError(f"{path}: cannot read the request ({exc.strerror or exc})") from None
    except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
        raise ScribbleSegError(f"{path}: is not valid JSON ({_json_problem(exc)})") from None
    if not isinstance(request, dict):
        raise ScribbleSegError(f"{path}: the request must be a JSON object")
    checker = _RequestChecker(path, request)
    if "protocol" not in request:  # a request written by hand, not by write_request
        raise ScribbleSegError(f"{path}: 'protocol' is missing (this ScribbleSegLib reads protocol {PROTOCOL}; "
                               "write_request adds it)")
    if request.get("protocol") != PROTOCOL:
        raise ScribbleSegError(
            f"{path}: protocol {request.get('protocol')!r} is not supported by this ScribbleSegLib "
            f"(expected {PROTOCOL}); the module and the library come from different versions"
        )
    task = checker.choice("task", TASKS)
    if task == "segment":
        checked = checker.segment()
    elif task == "train":
        checked = checker.train()
    elif task == "phantom":
        checked = checker.phantom()
    elif task == "session":
        checked = checker.session()
    else:
        checked = {"protocol": PROTOCOL, "task": task}
    checker.refuse_unknown({"segment": SEGMENT_OUTPUTS, "phantom": PHANTOM_OUTPUTS}.get(task, ()))
    return checked


def load_run(line: str, session_request: Dict[str, Any]) -> Dict[str, Any]:
    """Read and check one run line of a session (see the module docstring).

    Returns
    -------
    dict
        The run as a ``segment`` request (the session's image, model, device and
        cache), with every path made absolute and ``id`` (None if not given).

    Raises
    ------
    ScribbleSegError
        With one line naming the run and the field that is wrong.

    Examples
    --------
    >>> load_run("{", {"path": "s.json"})
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: run line: is not valid JSON (Expecting property name ...)
    """
    if not line.lstrip().startswith(("{", "[")):  # a word: a misspelt command rather than broken JSON
        shown = line.strip()[:40]
        raise ScribbleSegError(f"run line {shown!r}: not a run (a JSON object), 'cancel' or 'quit'")
    try:
        run = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise ScribbleSegError(f"run line: is not valid JSON ({_json_problem(exc)})") from None
    if not isinstance(run, dict):
        raise ScribbleSegError("run line: must be a JSON object")
    run_id = run.get("id")
    if not _is_run_id(run_id):
        raise ScribbleSegError(f"run line: 'id' must be an integer or a string, got {run_id!r}")
    label = "run" if run_id is None else f"run {run_id}"
    forget = run.pop("forget", False)
    if not isinstance(forget, bool):  # "no" would be taken as true
        raise ScribbleSegError(f"{label}: 'forget' must be true or false, got {forget!r}")
    fixed = {k: session_request[k] for k in SESSION_FIELDS if k in session_request}
    stray = sorted(set(run) & {*SESSION_FIELDS, "task"})
    if stray:
        verb = "belongs" if len(stray) == 1 else "belong"
        raise ScribbleSegError(f"{label}: {', '.join(stray)} {verb} to the session request, not to a run")
    checker = _RequestChecker(Path(session_request["path"]), {**run, **fixed}, label=label)
    checked = checker.segment()
    checker.refuse_unknown(SEGMENT_OUTPUTS)
    checked["id"], checked["forget"] = run_id, forget
    return checked


#: Fields every request or run line may hold besides its task's (``path``: where a session request was read).
FRAMING_FIELDS = frozenset({"protocol", "task", "id", "path"})

#: The outputs a segment request (or a session's run) names, and a phantom request.
SEGMENT_OUTPUTS = ("labels", "probability")
PHANTOM_OUTPUTS = ("image", "label", "scribbles")

#: Fields of a session request that its runs take from it (a run line must not give them).
SESSION_FIELDS = ("image", "model", "device", "cache_dir", "orientations", "scan_pixel")


class _RequestChecker:
    """Field checks that name the request file and the field."""

    def __init__(self, path: Path, request: Dict[str, Any], label: Optional[str] = None) -> None:
        self.path = path
        self.request = request
        self.base = path.resolve().parent
        self.label = label or str(path)
        self.run_line = "task" not in request  # a session's run line: the session request holds the task
        self.read = set(FRAMING_FIELDS)  # the fields looked at; any other is refused

    def fail(self, field: str, problem: str) -> ScribbleSegError:
        return ScribbleSegError(f"{self.label}: '{field}' {problem}")

    def refuse_unknown(self, outputs: Sequence[str] = ()) -> None:
        """Refuse a field no check looked at (and, with ``outputs``, an output not among them): a misspelt
        field must not leave its setting at the default without a word."""
        unknown = sorted(set(self.request) - self.read)
        if unknown:
            # A run line's own fields leave out the session's.
            known = self.read - FRAMING_FIELDS - (set(SESSION_FIELDS) if self.run_line else set())
            fields = (f"the fields are {', '.join(sorted(known))}" if known else
                      "it takes none besides 'protocol' and 'task'")
            raise self.fail(unknown[0], f"is not a field of a {'run' if self.run_line else self.request['task']} "
                                        f"request (misspelt?); {fields}")
        given = self.request.get("outputs") or {}
        unknown = sorted(set(given) - set(outputs)) if outputs else []
        if unknown:
            raise self.fail(f"outputs.{unknown[0]}", f"is not an output of this request (misspelt?); the outputs "
                                                    f"are {', '.join(outputs)}")

    def value(self, field: str, default: Any = ..., types: tuple = ()) -> Any:
        self.read.add(field)
        if field not in self.request or self.request[field] is None:
            if default is ...:
                raise self.fail(field, "is missing")
            return default
        value = self.request[field]
        if types and (not isinstance(value, types) or isinstance(value, bool) and bool not in types):
            raise self.fail(field, f"must be {' or '.join(t.__name__ for t in types)}, got {value!r}")
        return value

    def choice(self, field: str, choices: Sequence[str], default: Any = ...) -> str:
        value = self.value(field, default, (str,))
        if value not in choices:
            raise self.fail(field, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def path_value(self, value: Any, field: str, must_exist: bool) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(field, f"must be a file name, got {value!r}")
        resolved = self.base / value
        if must_exist and not resolved.exists():
            kind = "run" if self.run_line else "request"
            raise ScribbleSegError(f"{resolved}: no such file or folder ({kind} field '{field}')")
        return str(resolved)

    def input_path(self, field: str, default: Any = ...) -> Optional[str]:
        value = self.value(field, default)
        return None if value is None else self.path_value(value, field, must_exist=True)

    def model_path(self) -> str:
        """The ``model`` field as a file: ``starter`` is the shipped starter model, as on the command line."""
        if self.value("model") == "starter":
            from .starter import resolve_model

            return str(resolve_model("starter"))
        return self.input_path("model")

    def path_list(self, field: str, default: Any = ...) -> List[str]:
        values = self.value(field, default, (list,))
        return [self.path_value(v, f"{field}[{i}]", must_exist=True) for i, v in enumerate(values)]

    def settings_dict(self, field: str) -> Dict[str, Optional[Union[int, float, str]]]:
        """A dict of JSON scalars; each field's type and value are checked by ``jobs.settings``, as for
        job files (numbers; strings for choices such as ``cut.data_term``; null for optional settings)."""
        values = self.value(field, {}, (dict,))
        for key, value in values.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, str))):
                raise self.fail(f"{field}.{key}", f"must be a number or a string, got {value!r}")
        return dict(values)

    def orientations(self) -> int:
        # Not checks.check_orientations: Slicer's own process imports this module, which must not pull numpy in.
        value = self.value("orientations", choices.DEFAULT_ORIENTATIONS, (int,))
        if value not in choices.ORIENTATIONS:
            raise self.fail("orientations", f"must be one of {', '.join(map(str, choices.ORIENTATIONS))}, "
                                            f"got {value!r}")
        return value

    def scan_pixel(self) -> Optional[List[float]]:
        """The optional ``scan_pixel``: two positive numbers, the scan's pixel size X Y in mm."""
        from .jobs import is_positive_pair

        value = self.value("scan_pixel", None, (list,))
        if value is not None and not is_positive_pair(value):
            raise self.fail("scan_pixel", f"must be two positive numbers X Y in mm, got {value!r}")
        return None if value is None else [float(v) for v in value]

    def seed(self) -> int:
        seed = self.value("seed", 0, (int,))
        if seed < 0:
            raise self.fail("seed", f"must be a non-negative integer, got {seed!r}")
        return seed

    def device(self) -> str:
        return self.choice("device", DEVICES, choices.DEFAULT_DEVICE)

    def common(self, task: str) -> Dict[str, Any]:
        return {"protocol": PROTOCOL, "task": task, "device": self.device(), "seed": self.seed()}

    def segment(self) -> Dict[str, Any]:
        method = self.choice("method", METHODS, choices.DEFAULT_METHOD)
        inputs = {
            "image": self.input_path("image"),
            "scribbles": self.input_path("scribbles", None if method == "munet" else ...),
            "model": self.model_path(),
        }
        outputs = self.value("outputs", types=(dict,))
        if not outputs.get("labels"):
            raise self.fail("outputs.labels", "is missing")
        cache_dir = self.value("cache_dir", None, (str,))
        suggest = self.value("suggest", choices.DEFAULT_SUGGESTIONS, (int,))
        if suggest < 0:
            raise self.fail("suggest", f"must be a non-negative integer, got {suggest!r}")
        return {
            **self.common("segment"),
            **inputs,
            "method": method,
            "suggest": suggest,
            "cut": self.settings_dict("cut"),
            "ddml": self.settings_dict("ddml"),
            "cache_dir": None if cache_dir is None else self.path_value(cache_dir, "cache_dir", must_exist=False),
            "orientations": self.orientations(),
            "scan_pixel": self.scan_pixel(),
            "outputs": {
                "labels": self.path_value(outputs["labels"], "outputs.labels", must_exist=False),
                "probability": (self.path_value(outputs["probability"], "outputs.probability", must_exist=False)
                                if outputs.get("probability") else None),
            },
        }

    def session(self) -> Dict[str, Any]:
        if self.request.get("seed") is not None:  # each run line has its own; one here would be ignored
            raise self.fail("seed", "belongs to each run line, not to the session request")
        self.read.add("seed")
        cache_dir = self.value("cache_dir", None, (str,))
        return {
            "protocol": PROTOCOL, "task": "session", "device": self.device(),
            "image": self.input_path("image"),
            "model": self.model_path(),
            "cache_dir": None if cache_dir is None else self.path_value(cache_dir, "cache_dir", must_exist=False),
            "orientations": self.orientations(),
            "scan_pixel": self.scan_pixel(),
            "path": str(self.path.resolve()),
        }

    def phantom(self) -> Dict[str, Any]:
        seed = self.seed()
        shape = self.value("shape", None, (list,))
        if shape is not None and (len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape)):
            raise self.fail("shape", f"must be three positive integers Z Y X, got {shape!r}")
        every = self.value("every", choices.SAMPLE_SCRIBBLE_EVERY, (int,))
        if every < 1:
            raise self.fail("every", f"must be a positive integer, got {every!r}")
        outputs = self.value("outputs", types=(dict,))
        paths = {}
        for key, suffix in zip(PHANTOM_OUTPUTS, (".nrrd", ".seg.nrrd", ".seg.nrrd")):
            path = self.path_value(outputs.get(key), f"outputs.{key}", must_exist=False)
            if not path.lower().endswith(suffix):
                raise self.fail(f"outputs.{key}", f"must end in {suffix}")
            paths[key] = path
        return {"protocol": PROTOCOL, "task": "phantom", "seed": seed,
                "shape": shape, "every": every, "outputs": paths}

    def train(self) -> Dict[str, Any]:
        images, labels = self.path_list("images"), self.path_list("labels")
        if not images or len(images) != len(labels):
            raise self.fail("labels", f"must name one label per image ({len(images)} images, {len(labels)} labels)")
        val_images, val_labels = self.path_list("val_images", []), self.path_list("val_labels", [])
        if len(val_images) != len(val_labels):
            raise self.fail("val_labels", "must name one label per validation image")
        preset = self.choice("preset", tuple(choices.PRESETS), choices.DEFAULT_PRESET)
        max_minutes = self.value("max_minutes", None, (int, float))
        if max_minutes is not None and not (math.isfinite(max_minutes) and max_minutes > 0):
            # JSON's Infinity would run the whole training, then fail to be stored in the model's record.
            raise self.fail("max_minutes", f"must be a positive finite number, got {max_minutes!r}")
        init = self.value("init", None, (str,))
        if init is not None and init != "starter":
            init = self.path_value(init, "init", must_exist=True)
        given = [field for field in ("arch", "preset") if self.request.get(field) is not None]
        if init is not None and given:  # as the command line: a fine-tune keeps its parent's network
            raise self.fail(given[0], "cannot be given with 'init': a fine-tuned model keeps its parent's "
                                      "architecture and size")
        max_iters = self.value("max_iters", None, (int,))
        if max_iters is not None and max_iters < 1:
            raise self.fail("max_iters", f"must be a positive integer, got {max_iters!r}")
        # The budgets not given: the preset's, or a fine-tune's own (as on the command line).
        max_iters, max_minutes, _ = choices.training_budget(preset, init is not None, max_iters=max_iters,
                                                            max_minutes=max_minutes)
        names = self.value("names", None, (list,))
        if names is not None and (len(names) != len(images) or not all(isinstance(n, str) for n in names)):
            raise self.fail("names", "must give one name (a string) per image")
        from .fileio import check_outputs

        output = self.path_value(self.value("output"), "output", must_exist=False)
        # Before any work: the model must not replace a training file, the parent model or this request.
        inputs = {"the request": str(self.path), "'init'": init}
        for field, paths in (("images", images), ("labels", labels), ("val_images", val_images),
                             ("val_labels", val_labels)):
            inputs.update({f"'{field}[{k}]'": v for k, v in enumerate(paths)})
        try:
            check_outputs({"'output'": output}, {k: v for k, v in inputs.items() if v != "starter"})
        except ScribbleSegError as exc:
            raise ScribbleSegError(f"{self.label}: {exc}") from None
        return {
            **self.common("train"),
            "images": images, "labels": labels, "val_images": val_images, "val_labels": val_labels,
            "output": output,
            "arch": self.choice("arch", choices.ARCHITECTURES, choices.DEFAULT_ARCHITECTURE),
            "preset": preset,
            "max_minutes": None if max_minutes is None else float(max_minutes),
            "max_iters": max_iters, "init": init, "names": names,
        }


# ---------------------------------------------------------------------------
# The worker's side
# ---------------------------------------------------------------------------


class Emitter:
    """Writes protocol events as JSON lines, one stage's progress at most every 0.1 s.

    A stage's first progress line and its end (fraction 1) always pass.

    Examples
    --------
    >>> import io
    >>> stream = io.StringIO()
    >>> emitter = Emitter(stream)
    >>> emitter.emit("log", level="info", message="device: cpu")
    >>> emitter.progress("graph cut", 0.25, "cutting")
    >>> emitter.progress("graph cut", 1.0)
    >>> print(stream.getvalue(), end="")
    {"event": "log", "level": "info", "message": "device: cpu"}
    {"event": "progress", "stage": "graph cut", "fraction": 0.25, "message": "cutting"}
    {"event": "progress", "stage": "graph cut", "fraction": 1.0, "message": ""}
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._stage: Optional[str] = None
        self._last = 0.0

    def emit(self, event: str, **fields: Any) -> None:
        """Write one event line and flush it."""
        line = json.dumps({"event": event, **fields}, default=str)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def progress(self, stage: str, fraction: float, message: str = "") -> None:
        """A :data:`~ScribbleSegLib.progress.ProgressCallback` that emits ``progress`` events."""
        now = time.monotonic()
        if stage == self._stage and fraction < 1.0 and now - self._last < _PROGRESS_INTERVAL:
            return
        self._stage, self._last = stage, now
        self.emit("progress", stage=stage, fraction=round(float(fraction), 4), message=message)


class _EventLogHandler(logging.Handler):
    """Forwards log records (and captured warnings) as ``log`` events."""

    def __init__(self, emitter: Emitter) -> None:
        super().__init__(logging.INFO)
        self._emitter = emitter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._emitter.emit("log", level=record.levelname.lower(), message=self.format(record))
        except Exception:  # a logging handler must never raise
            self.handleError(record)


def _watch_stdin(token: CancelToken) -> None:
    """Cancel on a ``cancel`` line or when stdin closes (the parent is gone)."""
    try:
        for line in sys.stdin:
            if line.strip() == "cancel":
                break
    except (OSError, ValueError):
        pass
    token.cancel()


def _protocol_stream() -> TextIO:
    """Keep a private copy of stdout for the protocol and send fd 1 to stderr.

    Anything else written to stdout -- a ``print`` in a library, output of
    native code -- then lands on stderr and cannot break a protocol line.
    """
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", encoding="utf-8", buffering=1)


def run_request(request: Dict[str, Any], emitter: Emitter, cancel: Optional[CancelToken] = None) -> Event:
    """Run a checked request (:func:`load_request`); return the ``done`` event's fields.

    Examples
    --------
    A request the checks pass that the task refuses before any work (:func:`main` makes it an ``error`` event):

    >>> import io, tempfile
    >>> outputs = {"image": "i.nrrd", "label": "l.seg.nrrd", "scribbles": "s.seg.nrrd"}
    >>> path = write_request(Path(tempfile.mkdtemp()) / "r.json", {"task": "phantom", "shape": [2, 8, 8],
    ...                                                              "outputs": outputs})
    >>> run_request(load_request(path), Emitter(io.StringIO()))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: request field 'shape': phantom shape 2 8 8 is too small: ...
    """
    task = request["task"]
    if task == "segment":
        return _segment(request, emitter, cancel)
    if task == "train":
        return _train(request, emitter, cancel)
    if task == "phantom":
        return _phantom(request, emitter, cancel)
    return _devices()


def _describe_device(name: str) -> str:
    from .runtime import resolve_device

    device = resolve_device(name)
    if device.type == "cuda":
        import torch

        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.1f} GB)"
    return str(device)


def _job(request: Dict[str, Any], field: str = "request field"):
    """The :class:`~ScribbleSegLib.jobs.SegmentFiles` of a checked segment request (or session run)."""
    from .jobs import SegmentFiles

    outputs = request.get("outputs") or {"labels": "", "probability": None}
    names = {key: f"{field} '{key}'" for key in ("image", "scribbles", "model", "cut", "ddml", "method", "device",
                                                  "orientations")}
    names.update(labels=f"{field} 'outputs.labels'", probability=f"{field} 'outputs.probability'")
    extra = {"suggest": request["suggest"]} if "suggest" in request else {}  # a checked request has it
    return SegmentFiles(
        image=request["image"], model=request["model"], labels=outputs["labels"], scribbles=request.get("scribbles"),
        probability=outputs["probability"], method=request.get("method", choices.DEFAULT_METHOD),
        # A session request has no seed (each run line gives its own).
        device=request["device"], seed=request.get("seed", 0), cache_dir=request["cache_dir"],
        cut=request.get("cut", {}), ddml=request.get("ddml", {}), names=names,
        orientations=request.get("orientations", choices.DEFAULT_ORIENTATIONS), scan_pixel=request.get("scan_pixel"),
        **extra)


def _segment(request: Dict[str, Any], emitter: Emitter, cancel: Optional[CancelToken]) -> Event:
    from .jobs import segment_files

    job = _job(request)
    emitter.emit("log", level="info", message=f"device: {_describe_device(request['device'])}")
    done = segment_files(job, progress=emitter.progress, cancel=cancel)
    return {"outputs": done.outputs, "metrics": done.metrics, "timings": done.timings}


def _train(request: Dict[str, Any], emitter: Emitter, cancel: Optional[CancelToken]) -> Event:
    from .nets import ModelConfig
    from .training_files import train_from_files

    emitter.emit("log", level="info", message=f"device: {_describe_device(request['device'])}")

    init = request.get("init")
    if init is not None:
        from .starter import resolve_model

        init = str(resolve_model(init))
        emitter.emit("log", level="info", message=f"fine-tuning {init}")
    emitter.progress("read", 0.0, f"reading {len(request['images'])} training volume(s)")
    started = time.perf_counter()
    # A fine-tuned model keeps its parent's architecture: no config then.
    config = None if init is not None else ModelConfig.preset(request["preset"], request["arch"])
    provenance = {"command": "ScribbleSeg worker (3D Slicer)"}
    if request.get("names"):
        provenance["volumes"] = list(request["names"])
    # The command line's path from files to a model (a bad label is named by its file, as there).
    train_from_files(request["images"], request["labels"], request["output"], config,
                     val_images=request["val_images"], val_labels=request["val_labels"], init=init,
                     max_minutes=request["max_minutes"], max_iters=request.get("max_iters"),
                     device=request["device"], seed=request["seed"], provenance=provenance,
                     progress=emitter.progress, cancel=cancel)
    return {"outputs": {"model": request["output"]},
            "metrics": {"volumes": len(request["images"]), "validation_volumes": len(request["val_images"]),
                        "fine_tuned_from": init},
            "timings": {"train": time.perf_counter() - started}}


def _phantom(request: Dict[str, Any], emitter: Emitter, cancel: Optional[CancelToken]) -> Event:
    import numpy as np

    from . import phantom, scribbles, volume_io
    from .progress import check

    from .fileio import OutputSet, check_outputs
    from .resources import check_phantom_memory

    config = phantom.PhantomConfig()
    if request["shape"] is not None:
        config = dataclasses.replace(config, shape=tuple(request["shape"]))
    try:
        config.validate()
    except ScribbleSegError as exc:  # a shape too small for the embryo: named as the request's field
        raise ScribbleSegError(f"request field 'shape': {exc}") from None
    check_phantom_memory(config.shape, "request field 'shape'")
    check_outputs({f"request field 'outputs.{k}'": v for k, v in request["outputs"].items()})
    emitter.progress("phantom", 0.0, "making the phantom")
    made = phantom.make_phantom(seed=request["seed"], config=config)
    check(cancel)
    emitter.progress("phantom", 0.6, "simulating scribbles")
    strokes = scribbles.simulate_scribbles(made.label, seed=request["seed"], every=request["every"],
                                           spacing=made.image.geometry.spacing,
                                           tissue=made.tissue != phantom.Tissue.EMPTY)
    check(cancel)
    emitter.progress("write", 0.8, "writing the phantom")
    outputs = request["outputs"]
    geometry = made.image.geometry
    with OutputSet(outputs) as out:  # the three files together, or none (a cancel, a full disk)
        with out.writing("image") as tmp:
            volume_io.write_rgb_volume(tmp, made.image)
        with out.writing("label") as tmp:
            volume_io.write_segmentation(tmp, [("heart", made.label, volume_io.HEART_COLOR)], geometry)
        with out.writing("scribbles") as tmp:
            volume_io.write_segmentation(tmp, [("heart", strokes == 1, volume_io.HEART_COLOR),
                                               ("background", strokes == 2, volume_io.BACKGROUND_COLOR)], geometry)
        check(cancel)
        out.commit()
    emitter.progress("write", 1.0, "done")
    return {"outputs": dict(outputs),
            "metrics": {"shape_zyx": list(made.image.shape), "heart_voxels": int(np.count_nonzero(made.label)),
                        "scribbled_sections": int(np.count_nonzero(strokes.reshape(len(strokes), -1).any(1)))},
            "timings": {}}


def _devices() -> Event:
    import platform

    import torch

    devices = [{"id": "cpu", "name": platform.processor() or platform.machine() or "CPU",
                "memory_gb": None, "threads": torch.get_num_threads()}]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            devices.append({"id": f"cuda:{index}", "name": props.name,
                            "memory_gb": round(props.total_memory / 2**30, 1)})
    return {"outputs": {"torch": torch.__version__, "cuda": torch.version.cuda, "devices": devices},
            "metrics": {}, "timings": {}}


def _json_problem(exc: Exception) -> str:
    """What json.loads found wrong (its RecursionError's text says nothing about the JSON)."""
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _run_id(line: str) -> Any:
    """The ``id`` of a run line, None if it has none or is not a JSON object."""
    try:
        run = json.loads(line)
    except (ValueError, RecursionError):
        return None
    run_id = run.get("id") if isinstance(run, dict) else None
    return run_id if _is_run_id(run_id) else None  # an id that cannot key the parent's answers is not echoed


def _is_run_id(value: Any) -> bool:
    """Whether ``value`` can be a run's ``id`` (None: not given)."""
    return value is None or (isinstance(value, (int, str)) and not isinstance(value, bool))


class _RunReader:
    """Reads a session's stdin on a thread: run lines into a queue, ``cancel`` cancels the newest run.

    Each run gets its own :class:`CancelToken` when its line arrives, so a
    ``cancel`` sent right after a run always reaches that run.
    """

    def __init__(self) -> None:
        self.runs: "queue.Queue[Optional[tuple]]" = queue.Queue()
        self.token = CancelToken()  # the session's opening, then the newest run
        # Every token handed out: stdin closing cancels the run in progress, which is not the newest when
        # another is queued behind it.
        self._tokens: List[CancelToken] = [self.token]
        self.closed = threading.Event()
        self.failure: Optional[str] = None  # why reading stopped, when the parent did not close stdin

    def start(self) -> None:
        threading.Thread(target=self._read, name="run-reader", daemon=True).start()

    def _read(self) -> None:
        # Bytes, decoded line by line: a line that is not UTF-8 is one bad run (its JSON fails), not the end.
        source = getattr(sys.stdin, "buffer", None)
        lines = (raw.decode("utf-8", errors="replace") for raw in source) if source is not None else sys.stdin
        try:
            for line in lines:
                text = line.strip()
                if text == "cancel":
                    self.token.cancel()
                elif text == "quit":
                    self.runs.put(None)
                    return
                elif text:
                    self.token = CancelToken()
                    self._tokens = [t for t in self._tokens if not t.cancelled] + [self.token]
                    self.runs.put((text, self.token))
        except (OSError, ValueError):
            pass
        except MemoryError:  # a line larger than memory: the session cannot read on, and must say so
            self.failure = "out of memory reading a run line: send runs as short JSON lines"
        self.closed.set()  # the parent is gone (or unreadable): stop now, whichever run is in progress
        for token in self._tokens:
            token.cancel()
        self.runs.put(None)


def _serve_session(request: Dict[str, Any], emitter: Emitter) -> int:
    """Open a warm session, announce ``ready``, then run each stdin line; return the exit status."""
    from .jobs import open_session, session_files

    reader = _RunReader()
    reader.start()
    emitter.emit("log", level="info", message=f"device: {_describe_device(request['device'])}")
    session = open_session(_job(request), progress=emitter.progress, cancel=reader.token)
    emitter.emit("ready", metrics={"shape_zyx": list(session.shape), "features_cached": session.features_cached,
                                   "warnings": list(session.warnings)},
                 timings=session.timings)
    while True:
        item = reader.runs.get()
        if reader.failure is not None:
            emitter.emit("error", kind="memory", message=reader.failure)
            return EXIT_FAILED
        if item is None:
            return EXIT_DONE
        if reader.closed.is_set():  # runs queued when the parent went: each gets its answer, unrun
            return _parent_gone(reader, emitter, item)
        line, token = item
        run_id = _run_id(line)
        try:
            run = load_run(line, request)
            if run["forget"]:
                session.forget_runs()
            files = session_files(session, _job(run, "run field"), progress=emitter.progress, cancel=token)
            done = {"outputs": files.outputs, "metrics": files.metrics, "timings": files.timings}
        except CancelledError as exc:
            if reader.closed.is_set():  # stdin closed: not the user's cancel, and the session ends
                return _parent_gone(reader, emitter, item)
            emitter.emit("error", id=run_id, kind="cancelled", message=str(exc))
            continue
        except ScribbleSegError as exc:
            emitter.emit("error", id=run_id, kind="input", message=str(exc))
            continue
        except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM/SIGHUP: this run's answer, then the session ends
            emitter.emit("error", id=run_id, kind="cancelled", message=_stopped(exc))
            return EXIT_CANCELLED
        except BaseException as exc:  # the session's state is unknown now: end it, the parent restarts one
            traceback.print_exc()
            kind = "memory" if _is_out_of_memory(exc) else "internal"
            message = (f"out of memory ({type(exc).__name__}): use the CPU device, or load the volume downsampled"
                       if kind == "memory" else f"{type(exc).__name__}: {exc}")
            emitter.emit("error", id=run_id, kind=kind, message=message)
            return EXIT_FAILED
        emitter.emit("done", id=run_id, **done)


#: The answer of a run that stdin's closing cancelled, or that was still queued then.
PARENT_GONE = "cancelled: stdin closed (the parent is gone)"


def _parent_gone(reader: _RunReader, emitter: Emitter, item: Optional[tuple]) -> int:
    """Answer ``item`` and every run still queued as cancelled by stdin's closing; return the exit status of a
    session whose runs were cancelled (a session ended by stdin while idle exits 0)."""
    while item is not None:
        emitter.emit("error", id=_run_id(item[0]), kind="cancelled", message=PARENT_GONE)
        item = reader.runs.get()
    return EXIT_CANCELLED


def _stopped(exc: KeyboardInterrupt) -> str:
    """The message of a run stopped by a signal (``Interrupted`` names it; a plain Ctrl-C says nothing)."""
    return str(exc) or "stopped by an interrupt (SIGINT)"


def _is_out_of_memory(exc: BaseException) -> bool:
    # torch.cuda.OutOfMemoryError, without importing torch here.
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


class _ProtocolParser(argparse.ArgumentParser):
    """An argument parser whose errors are one protocol ``error`` line (exit 2): the parent reads events,
    and argparse's usage text would reach it only as stray log lines."""

    def error(self, message: str) -> NoReturn:  # noqa: D102
        Emitter(sys.stdout).emit("error", kind="input", message=f"worker command line: {message}")
        raise SystemExit(EXIT_BAD_INPUT)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one request; return the exit status (see the module docstring).

    Examples
    --------
    A broken command line is one ``error`` line on stdout and exit status 2:

    >>> try:
    ...     main(["request.json", "--no-such-option"])
    ... except SystemExit as stop:
    ...     print("exit status", stop.code)
    {"event": "error", "kind": "input", "message": "worker command line: unrecognized arguments: --no-such-option"}
    exit status 2
    """
    parser = _ProtocolParser(
        prog="python -m ScribbleSegLib.worker",
        description="Run one ScribbleSeg request and report progress as JSON lines on stdout.",
    )
    parser.add_argument("request", help="JSON request file")
    parser.add_argument("--control-stdin", action="store_true",
                        help="cancel on a 'cancel' line on stdin or when stdin closes")
    args = parser.parse_args(argv)

    emitter = Emitter(_protocol_stream())
    handler = _EventLogHandler(emitter)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    logging.captureWarnings(True)
    token = CancelToken()
    try:
        with signals_raise():
            request = load_request(args.request)
            emitter.emit("started", protocol=PROTOCOL, task=request["task"], pid=os.getpid())
            if request["task"] == "session":
                return _serve_session(request, emitter)
            if args.control_stdin:
                threading.Thread(target=_watch_stdin, args=(token,), name="cancel-watcher", daemon=True).start()
            done = run_request(request, emitter, token)
    except CancelledError as exc:
        emitter.emit("error", kind="cancelled", message=str(exc))
        return EXIT_CANCELLED
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM/SIGHUP through signals_raise: temporaries are gone
        emitter.emit("error", kind="cancelled", message=_stopped(exc))
        return EXIT_CANCELLED
    except ScribbleSegError as exc:
        emitter.emit("error", kind="input", message=str(exc))
        return EXIT_BAD_INPUT
    except BaseException as exc:  # report everything, even KeyboardInterrupt, as one protocol line
        traceback.print_exc()
        if _is_out_of_memory(exc):
            emitter.emit("error", kind="memory",
                         message=f"out of memory ({type(exc).__name__}): use the CPU device, "
                                 "or load the volume downsampled")
        else:
            emitter.emit("error", kind="internal", message=f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED
    emitter.emit("done", **done)
    return EXIT_DONE


# ---------------------------------------------------------------------------
# The parent's side
# ---------------------------------------------------------------------------


def parse_line(line: str, stream: str = "stdout") -> Event:
    """Turn one output line into an event; anything that is not a protocol event becomes a ``log`` event.

    Examples
    --------
    >>> parse_line('{"event": "progress", "fraction": 0.5}')
    {'event': 'progress', 'fraction': 0.5}
    >>> parse_line("Traceback (most recent call last):", "stderr")
    {'event': 'log', 'level': 'stderr', 'message': 'Traceback (most recent call last):'}
    """
    text = line.rstrip("\r\n")
    if stream == "stdout" and text.startswith("{"):
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            return event
    return {"event": "log", "level": "info" if stream == "stdout" else "stderr", "message": text}


class WorkerProcess:
    """Run the worker on a request file in a child process and collect its events.

    The child gets its own process group (session on POSIX), so :meth:`kill`
    ends it and everything it started -- Slicer's ``PythonSlicer`` is a
    launcher whose child is the real interpreter.  Output is read on
    background threads; :meth:`poll` returns what arrived, without blocking,
    so a GUI can call it from a timer.

    Parameters
    ----------
    request : path
        The request file (see :func:`write_request`).
    python : str, optional
        The interpreter to run (``PythonSlicer`` inside Slicer); default ``sys.executable``.
    pythonpath : sequence of str
        Folders put in front of ``PYTHONPATH``.  The folder that holds this
        ``ScribbleSegLib`` always follows them, so the child runs the same
        package as its parent, installed or not (a source checkout, Slicer's
        module folder).
    env : dict, optional
        Base environment (default ``os.environ``).
    cwd : path, optional
        Working folder of the child (default: the request's folder).
    tail : int
        How many output lines to keep for :meth:`failure_message`.

    Examples
    --------
    Before :meth:`start`, nothing runs:

    >>> process = WorkerProcess("r.json", python="PythonSlicer")
    >>> process.args
    ['PythonSlicer', '-m', 'ScribbleSegLib.worker', 'r.json', '--control-stdin']
    >>> process.pid, process.running, process.finished, process.poll()
    (None, False, False, [])
    """

    def __init__(self, request: Union[str, os.PathLike], *, python: Optional[str] = None,
                 pythonpath: Sequence[str] = (), env: Optional[Dict[str, str]] = None,
                 cwd: Optional[Union[str, os.PathLike]] = None, tail: int = 40) -> None:
        self.request = Path(request)
        self.python = python or sys.executable
        own_root = str(Path(__file__).resolve().parent.parent)
        self.pythonpath = [str(p) for p in pythonpath]
        if own_root not in self.pythonpath:
            self.pythonpath.append(own_root)
        self.env = dict(os.environ if env is None else env)
        self.cwd = str(cwd) if cwd is not None else str(self.request.resolve().parent)
        self.result: Optional[Event] = None
        self.error: Optional[Event] = None
        self.returncode: Optional[int] = None
        self.lines: Deque[str] = collections.deque(maxlen=tail)
        self.last_progress: Optional[Event] = None  # the last progress event: where a crash found the work
        self._proc: Optional[subprocess.Popen] = None
        self._queue: "queue.Queue[tuple]" = queue.Queue()
        self._open_streams = 0
        self._finished = False

    @property
    def args(self) -> List[str]:
        """The command line of the child."""
        return [self.python, "-m", "ScribbleSegLib.worker", str(self.request), "--control-stdin"]

    @property
    def pid(self) -> Optional[int]:
        """Process id of the child once started."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        """Started and not yet finished (see :attr:`finished`)."""
        return self._proc is not None and not self._finished

    @property
    def finished(self) -> bool:
        """The child has exited and :meth:`poll` has returned all its events."""
        return self._finished

    def start(self) -> None:
        """Start the child; return at once."""
        if self._proc is not None:
            raise RuntimeError("this worker process was already started")
        env = dict(self.env)
        env["PYTHONPATH"] = os.pathsep.join(self.pythonpath + [p for p in [env.get("PYTHONPATH")] if p])
        env["PYTHONIOENCODING"] = "utf-8"
        env["PYTHONUNBUFFERED"] = "1"
        kwargs: Dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            kwargs["start_new_session"] = True
        self._proc = subprocess.Popen(
            self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=self.cwd, env=env, text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        self._open_streams = 2
        for name, stream in (("stdout", self._proc.stdout), ("stderr", self._proc.stderr)):
            threading.Thread(target=self._read, args=(name, stream), name=f"worker-{name}", daemon=True).start()

    def _read(self, name: str, stream: TextIO) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in stream:
                self._queue.put((name, line))
        self._queue.put((name, None))

    def poll(self) -> List[Event]:
        """Events that arrived since the last call; the last one is ``{"event": "exit", ...}``."""
        events: List[Event] = []
        if self._proc is None or self._finished:
            return events
        while True:
            try:
                name, line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._open_streams -= 1
                continue
            event = parse_line(line, name)
            if event["event"] == "log":
                self.lines.append(event.get("message", ""))
            elif event["event"] == "progress":
                self.last_progress = event
            if event["event"] == "done":
                self.result = event
            elif event["event"] == "error":
                self.error = event
            events.append(event)
        if self._open_streams == 0 and self._proc.poll() is not None:
            self.returncode = self._proc.returncode
            self._finished = True
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
            events.append({"event": "exit", "returncode": self.returncode})
        return events

    def wait(self, on_event: Optional[Callable[[Event], None]] = None, timeout: Optional[float] = None,
             interval: float = 0.05) -> int:
        """Poll until the child finishes; pass each event to ``on_event``; return the exit status.

        Raises
        ------
        TimeoutError
            If ``timeout`` seconds pass first (the child keeps running).
        RuntimeError
            If the worker was never started (waiting for it would never end).
        """
        self._check_started()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._finished:
            for event in self.poll():
                if on_event is not None:
                    on_event(event)
            if self._finished:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the worker did not finish within {timeout} s")
            time.sleep(interval)
        return int(self.returncode)

    def _check_started(self) -> None:
        if self._proc is None:
            raise RuntimeError(f"{type(self).__name__}: start() it before waiting for it")

    def cancel(self) -> None:
        """Ask the worker to stop at its next check (it then reports ``cancelled``)."""
        self._send_cancel(close=True)

    def _send_cancel(self, close: bool) -> None:
        """Write ``cancel`` to a running worker's stdin (and close it: a one-shot worker reads nothing more)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._proc.stdin.write("cancel\n")
            self._proc.stdin.flush()
            if close:
                self._proc.stdin.close()

    def kill(self) -> None:
        """Kill the child and everything it started, at once."""
        if self._proc is None or self._finished:
            return
        if os.name == "nt":
            if self._proc.poll() is not None:
                return  # Windows reuses process ids at once: never taskkill an exited child's id
            # taskkill /T ends the launcher's children too; Popen.kill() would leave them running.
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._proc.pid)], capture_output=True,
                           creationflags=subprocess.CREATE_NO_WINDOW, check=False)
        else:
            # The group outlives its leader: kill it even if the launcher itself has exited.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    def failure_message(self) -> str:
        """A message for the user when the run did not end with ``done``."""
        if self.error is not None:
            return str(self.error.get("message", "the worker failed"))
        last = "\n".join([line for line in self.lines if line.strip()][-12:])
        if self._proc is None:
            return "The ScribbleSeg worker process was never started."
        status = "still running" if self.returncode is None else f"exit status {self.returncode}"
        if self.returncode is not None and self.returncode < 0:  # POSIX: killed by a signal
            name = _signal_name(-self.returncode)
            status = f"killed by {name}" + (", as the system kills a process when memory runs out"
                                            if name == "SIGKILL" else "")
        where = ""
        if self.last_progress is not None:
            stage = self.last_progress.get("stage", "")
            message = self.last_progress.get("message", "")
            where = f" It was at: {stage}" + (f" ({message})" if message else "") + "."
        return (f"The ScribbleSeg worker process stopped without a result ({status}).{where}"
                + (f" Its last output:\n{last}" if last else " It printed nothing."))


def _signal_name(number: int) -> str:
    """``SIGKILL`` for 9 (where the platform names it), else ``signal N``.

    Examples
    --------
    >>> _signal_name(9) if hasattr(signal, "SIGKILL") else "SIGKILL"
    'SIGKILL'
    """
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _json_value(value: Any) -> Any:
    """A run field's value as JSON holds it: a path as its text, a numpy number or array as Python's.

    Examples
    --------
    >>> import numpy as np
    >>> json.dumps({"scribbles": Path("s.nrrd"), "seed": np.int64(3)}, default=_json_value)
    '{"scribbles": "s.nrrd", "seed": 3}'
    """
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise ValueError(f"a run field holds {type(value).__name__} {value!r}, which a run line cannot carry")


class SessionProcess(WorkerProcess):
    """The parent's side of a persistent worker (``task: session``): start once, send runs.

    Start it on a session request (:func:`write_request`), :meth:`poll` or
    :meth:`wait_ready` for ``ready``, then :meth:`send` each run and
    :meth:`wait_run` (or poll) for its ``done``/``error``.  :meth:`cancel` asks
    the current run to stop and keeps the session; :meth:`kill` ends it at once
    (a graph cut cannot be interrupted otherwise); :meth:`close` ends it after
    the runs sent.  After a crash, :meth:`failure_message` names the last
    output lines; the caller starts a new session.

    Attributes
    ----------
    ready : dict or None
        The ``ready`` event once the features are there.
    runs : dict
        ``id`` -> the ``done`` or ``error`` event that ended that run.

    Examples
    --------
    >>> session = SessionProcess("session.json", python="PythonSlicer")
    >>> session.ready, session.runs, session.poll()
    (None, {}, [])
    """

    def __init__(self, request: Union[str, os.PathLike], **kwargs: Any) -> None:
        super().__init__(request, **kwargs)
        self.ready: Optional[Event] = None
        self.runs: Dict[Any, Event] = {}
        self._pending: set = set()  # ids sent and not answered yet
        self._next_id = 1
        self._run_stopped: Optional[Event] = None  # the last run that a cancel or a signal stopped

    def poll(self) -> List[Event]:
        """Events that arrived since the last call (see :meth:`WorkerProcess.poll`)."""
        events = super().poll()
        for event in events:
            if event["event"] == "ready":
                self.ready = event
            elif event["event"] in ("done", "error") and "id" in event:
                self.runs[event["id"]] = event
                self._pending.discard(event["id"])
                if event.get("kind") in ("input", "cancelled"):
                    # A run's bad input or cancel leaves the session running: it is that run's answer, not the
                    # process's failure, which failure_message must name if the process stops later.
                    self.error = None
                self._run_stopped = event if event.get("kind") == "cancelled" else None
        return events

    def failure_message(self) -> str:
        """A message for the user when the session ended without ``done``: a signal that stopped it during a
        run is named as the worker named it (it answers that run, then ends with the cancelled status)."""
        if (self.error is None and self.returncode == EXIT_CANCELLED and self._run_stopped is not None
                and self._run_stopped.get("message")):
            return str(self._run_stopped["message"])
        return super().failure_message()

    def send(self, run: Dict[str, Any]) -> Any:
        """Send one run (the fields of a run line); return its ``id`` (given, or numbered here).

        Raises
        ------
        RuntimeError
            If the session is not running.
        ValueError
            If the run's ``id`` is neither an integer nor a string (it keys the run's events), is the id of a run
            sent and not answered yet (the two answers would be one), or a field holds what a run line cannot
            carry (paths and numpy numbers are sent as text and numbers); nothing is sent and no id is used then.
            An id whose run was answered may be given again: its old answer is dropped.

        Examples
        --------
        >>> session = SessionProcess("session.json")
        >>> session.send({"id": 1.5, "scribbles": "s.nrrd"})
        Traceback (most recent call last):
        ...
        ValueError: a run's id must be an integer or a string, got 1.5
        >>> session.send({"scribbles": "s.nrrd"})
        Traceback (most recent call last):
        ...
        RuntimeError: the ScribbleSeg session is not running
        """
        run = dict(run)
        if not _is_run_id(run.get("id")):
            raise ValueError(f"a run's id must be an integer or a string, got {run['id']!r}")
        given = run.get("id")
        if given is not None and given in self._pending:
            raise ValueError(f"run id {given!r} is still running: give each run its own id")
        if self._proc is None or self._proc.poll() is not None or self._proc.stdin.closed:
            raise RuntimeError("the ScribbleSeg session is not running")
        if given is None:
            # Not an id the caller gave earlier: its answer, or the answer still to come, is that run's.
            while self._next_id in self.runs or self._next_id in self._pending:
                self._next_id += 1
            run["id"] = self._next_id
        # Before anything changes: a value JSON cannot hold fails here, with the session as it was.
        line = json.dumps(run, default=_json_value) + "\n"
        if given is None:
            self._next_id += 1
        self.result = self.error = None
        try:
            self._proc.stdin.write(line)
            self._proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"the ScribbleSeg session is not running ({exc})") from None
        self.runs.pop(run["id"], None)  # an earlier run's answer under a reused id is not this run's
        self._pending.add(run["id"])
        return run["id"]

    def cancel(self) -> None:
        """Ask the newest run sent to stop at its next check; the session stays.

        The worker's ``cancel`` line cancels the newest run (module docstring): while that run still waits
        behind an earlier one, the earlier one runs on to its end.
        """
        self._send_cancel(close=False)

    def close(self) -> None:
        """End the session after the runs already sent."""
        if self._proc is None or self._proc.poll() is not None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._proc.stdin.write("quit\n")
            self._proc.stdin.flush()

    def _wait_for(self, done: Callable[[], bool], on_event: Optional[Callable[[Event], None]],
                  timeout: Optional[float], interval: float) -> None:
        self._check_started()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done() and not self._finished:
            for event in self.poll():
                if on_event is not None:
                    on_event(event)
            if done() or self._finished:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the ScribbleSeg session did not answer within {timeout} s")
            time.sleep(interval)

    def wait_ready(self, on_event: Optional[Callable[[Event], None]] = None, timeout: Optional[float] = None,
                   interval: float = 0.05) -> Optional[Event]:
        """Poll until ``ready`` (returned) or the end of the process (None: see :meth:`failure_message`)."""
        self._wait_for(lambda: self.ready is not None, on_event, timeout, interval)
        return self.ready

    def wait_run(self, run_id: Any, on_event: Optional[Callable[[Event], None]] = None,
                 timeout: Optional[float] = None, interval: float = 0.05) -> Optional[Event]:
        """Poll until run ``run_id`` ends; return its ``done``/``error`` event, or None if the process ended."""
        self._wait_for(lambda: run_id in self.runs, on_event, timeout, interval)
        return self.runs.get(run_id)


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every output is closed by now; skipping the interpreter's teardown (seconds with torch loaded)
    # lets the parent see the end of the run at once.
    os._exit(status)
