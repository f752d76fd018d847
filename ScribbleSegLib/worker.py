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
     "forget": false,                           # optional: true after "Undo last run" (see a session's runs)
     "outputs": {"labels": "labels.nrrd", "probability": "probability.nrrd"}}   # probability optional

    {"protocol": 1, "task": "train",
     "images": ["img0.nrrd", ...], "labels": ["lab0.nrrd", ...], "output": "new.model",
     "arch": "munet", "preset": "small", "max_minutes": 10,   # max_iters, max_minutes: default the preset's
     "val_images": [], "val_labels": [], "device": "auto", "seed": 0,
     "init": "/models/parent.model",            # optional: fine-tune this model ("starter": the shipped one)
     "max_iters": 300,                          # optional step budget (default: the preset's, 300 with init;
                                                # max_minutes: the preset's, 15 with init)
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
answered ``cancelled`` (exit 3), also while the session still opens (the session's own
``error`` first).  A file of run lines given as stdin therefore ends with ``quit``.
:class:`SessionProcess` is the parent's side.

:class:`WorkerProcess` is the parent's side: it starts the worker in its own
process group, reads both streams on background threads and hands the events
to whoever polls it (the Slicer module polls from a Qt timer), and can cancel
or kill the run.  It uses only the standard library.

This module is the worker's own side: :func:`main`, the tasks, the session's
runs and :class:`Emitter`.  The parent's side (:class:`WorkerProcess`,
:class:`SessionProcess`, :func:`parse_line`) is in
:mod:`ScribbleSegLib.worker_process`; the request files and their checks
(:func:`write_request`, :func:`load_request`, :func:`load_run`), the protocol
version and the exit statuses are in :mod:`ScribbleSegLib.worker_requests`.
Neither imports this module, and this module re-exports their public names.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import queue
import sys
import threading
import time
import traceback
from typing import Any, Dict, List, NoReturn, Optional, Sequence, TextIO

from . import choices
from .errors import CancelledError, ScribbleSegError
from .fileio import signals_raise
from .progress import CancelToken
from .worker_process import SessionProcess, WorkerProcess, parse_line
from .worker_requests import (DEVICES, EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_DONE, EXIT_FAILED, METHODS, PROTOCOL,
                              Event, _is_run_id, load_request, load_run, write_request)

__all__ = [
    # The worker's own side
    "Emitter", "run_request", "main", "PARENT_GONE",
    # From worker_requests
    "PROTOCOL", "METHODS", "DEVICES", "EXIT_DONE", "EXIT_FAILED", "EXIT_BAD_INPUT", "EXIT_CANCELLED",
    "write_request", "load_request", "load_run",
    # From worker_process
    "WorkerProcess", "SessionProcess", "parse_line",
]

_PROGRESS_INTERVAL = 0.1  # seconds between two progress lines of one stage


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
    >>> from pathlib import Path
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
        forget=request.get("forget", False), **extra)


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


def _run_id(line: str) -> Any:
    """The ``id`` of a run line, None if it has none or is not a JSON object."""
    try:
        run = json.loads(line)
    except (ValueError, RecursionError):
        return None
    run_id = run.get("id") if isinstance(run, dict) else None
    return run_id if _is_run_id(run_id) else None  # an id that cannot key the parent's answers is not echoed


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
    try:
        session = open_session(_job(request), progress=emitter.progress, cancel=reader.token)
    except CancelledError:
        if not reader.closed.is_set():
            raise  # a "cancel" line: the opening itself was cancelled, as main() reports it
        # stdin closed while the session opened: the session's answer, then each run sent meanwhile gets its own
        # (they went unanswered, the session's error "cancelled by the user").
        emitter.emit("error", kind="cancelled", message=PARENT_GONE)
        return _parent_gone(reader, emitter, reader.runs.get())
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
            run = load_run(line, request)  # its "forget": session_files lets the session start afresh
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


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every output is closed by now; skipping the interpreter's teardown (seconds with torch loaded)
    # lets the parent see the end of the run at once.
    os._exit(status)
