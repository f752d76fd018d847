"""The parent's side of the worker: start it on a request file, collect its events, cancel or kill it.

:class:`WorkerProcess` runs one request (``python -m ScribbleSegLib.worker``) in
its own process group, reads both streams on background threads and hands the
events to whoever polls it (the Slicer module polls from a Qt timer), and can
cancel or kill the run; :class:`SessionProcess` drives a persistent worker
(``task: session``) that takes one run after another.  The events are described
in :mod:`ScribbleSegLib.worker`, which re-exports both classes.  Slicer's own
process imports this module: it needs only the standard library and the
torch-free :mod:`~ScribbleSegLib.worker_requests`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, TextIO, Union

from .worker_requests import EXIT_CANCELLED, Event, _is_run_id


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
        self._killed = False  # kill() was called: a signal that ends it is ours, not the system's

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
        self._killed = True

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
            if self._killed:  # this object's kill(): a Cancel that the worker did not heed in time, not memory
                status = f"killed by {name}, as asked"
            else:
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

        The worker's ``cancel`` line cancels the newest run (:mod:`ScribbleSegLib.worker`): while that run still waits
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
