"""The ``scribbleseg`` command line.

Each subcommand lives in ``ScribbleSegLib.commands.<name>`` and provides
``add_arguments(parser)`` and ``run(args) -> int``.  Command modules import
heavy packages inside ``run`` so that ``scribbleseg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import importlib
import logging
import os
import re
import signal
import sys
import threading
from typing import Dict, Iterator, List, NoReturn, Optional

from . import __version__
from .errors import ScribbleSegError

COMMANDS = {
    "demo": "make a phantom, train a small M-Unet, scribble, segment and print a Table I",
    "phantom": "write synthetic H&E serial-section volumes with labels and scribbles",
    "train": "train an M-Unet (or plain U-Net) on labelled volumes",
    "segment": "segment a volume from scribbles with a trained model",
    "evaluate": "compare a prediction with a label: precision, recall, F1, IoU",
    "bench": "reproduce the paper's evaluation on phantoms and write BENCHMARKS tables",
    "cache": "list or clear the cache of M-Unet features, or set its size cap",
}


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (the usage block stays one ``--help`` away).

    Examples
    --------
    >>> import io
    >>> parser = OneLineParser(prog="tool")
    >>> _ = parser.add_argument("--n", type=int)
    >>> with contextlib.redirect_stderr(io.StringIO()) as err:
    ...     try:
    ...         parser.parse_args(["--n", "x"])
    ...     except SystemExit as exit:
    ...         status = exit.code
    >>> status, err.getvalue()
    (2, "tool: error: argument --n: invalid int value: 'x' (see 'tool --help')\\n")
    """

    def error(self, message: str) -> NoReturn:
        text = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {text} (see '{self.prog} --help')\n")


def _one_line(message: str, flags: Dict[str, str]) -> str:
    """``message`` on one line, with the library's parameter names given as the command's flags.

    The library names its parameters (``max_minutes``); a command that takes one
    as a flag maps it in its module's ``PARAMETER_FLAGS`` (``"--max-minutes"``).
    """
    text = " ".join(str(message).split())
    for name, flag in flags.items():
        text = re.sub(rf"(?<![\w-]){re.escape(name)}(?!\w)", flag, text)
    return text


class _LogFormatter(logging.Formatter):
    def __init__(self, command: str, flags: Dict[str, str]) -> None:
        super().__init__()
        self.command = command
        self.flags = flags

    def format(self, record: logging.LogRecord) -> str:
        kind = "warning" if record.levelno >= logging.WARNING else "note"
        return f"scribbleseg {self.command}: {kind}: {_one_line(record.getMessage(), self.flags)}"


class _OwnLineHandler(logging.StreamHandler):
    """Each message on a line of its own while a progress bar is drawn on the same stream: in a terminal the bar
    is cleared and drawn again below it (``tqdm.write``); in a file (a batch job's log), where the bar's text stays,
    the message starts a new line instead of following that text, so that a search for ``^scribbleseg`` finds it."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm = getattr(sys.modules.get("tqdm"), "tqdm", None)  # not imported: no bar is drawn
        if tqdm is None or not any(not bar.disable for bar in list(getattr(tqdm, "_instances", ()))):
            super().emit(record)
            return
        try:
            message = self.format(record)
            if self.stream.isatty():
                tqdm.write(message, file=self.stream)
            else:
                self.stream.write(f"\n{message}\n")
                self.flush()
        except Exception:  # as StreamHandler.emit: a message that cannot be written never ends the run
            self.handleError(record)


class _FirstTimeOnly(logging.Filter):
    """Lets each message through once: a command that segments many volumes (``bench``) would otherwise say the
    same warning about its simulated strokes hundreds of times."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set = set()
        self.left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text in self.seen:
            self.left_out += 1
            return False
        self.seen.add(text)
        return True


@contextlib.contextmanager
def _library_log_to_stderr(command: str, flags: Dict[str, str], once: bool = False) -> Iterator[None]:
    """Show the library's warnings (a damaged cache entry, ...) as one line each on stderr; with ``once``, each
    message the first time only, and at the end how many repeats were left out."""
    logger = logging.getLogger("ScribbleSegLib")
    handler = _OwnLineHandler(sys.stderr)
    handler.setFormatter(_LogFormatter(command, flags))
    first_time = _FirstTimeOnly() if once else None
    if first_time is not None:
        handler.addFilter(first_time)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
        if first_time is not None and first_time.left_out:
            print(f"scribbleseg {command}: note: {first_time.left_out} repeats of the lines above were left out",
                  file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered.

    Examples
    --------
    >>> args = build_parser().parse_args(["evaluate", "--prediction", "p.seg.nrrd", "--label", "l.seg.nrrd"])
    >>> args.command, args._module.__name__
    ('evaluate', 'ScribbleSegLib.commands.evaluate')
    """
    parser = OneLineParser(
        prog="scribbleseg",
        description="Scribble-guided 3D segmentation of histological section stacks "
        "(M-Unet + DDML + 3D graph cut).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f".commands.{name}", __package__)
        p = sub.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".")
        module.add_arguments(p)
        p.set_defaults(_module=module, _parser=p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; return the exit status.

    Every failure the user can act on ends with one line on stderr and a
    non-zero status: 2 for bad input (argparse included), a full disk or a file the system would not
    read or write, 1 for out of memory, 128 + N for signal N (130 for Ctrl-C; 141 when the reader of the output went
    away, as for SIGPIPE).

    Examples
    --------
    >>> import io
    >>> with contextlib.redirect_stderr(io.StringIO()) as err:
    ...     status = main(["evaluate", "--prediction", "/no/such/p.seg.nrrd", "--label", "/no/such/l.seg.nrrd"])
    >>> status, err.getvalue()
    (2, 'scribbleseg evaluate: error: /no/such/p.seg.nrrd: no such file or folder (--prediction)\\n')
    """
    from .errors import Interrupted
    from .fileio import signals_raise

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse would name the top-level command; the subcommand's usage is the one that helps
        args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
    prefix = f"scribbleseg {args.command}"
    flags = getattr(args._module, "PARAMETER_FLAGS", {})
    try:
        once = getattr(args._module, "WARNINGS_ONCE", False)
        with _library_log_to_stderr(args.command, flags, once), signals_raise():
            return int(args._module.run(args) or 0)
    except ScribbleSegError as exc:
        print(f"{prefix}: error: {_one_line(str(exc), flags)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        # What the command keeps of an interrupted run, where it is worth saying (a training's hours).
        # A command may say more of this run (``args.interrupted_note``): what it had written when the signal came.
        note = getattr(args, "interrupted_note", getattr(args._module, "INTERRUPTED_NOTE", ""))
        print(f"{prefix}: interrupted{note}", file=sys.stderr)
        return exc.exit_status if isinstance(exc, Interrupted) else 130
    except BrokenPipeError:
        # The reader of our output went away (``| head``): nothing left to tell it. Point stdout at
        # /dev/null, or the interpreter's own flush at exit fails once more, and end as a shell's
        # commands do on SIGPIPE.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + int(getattr(signal, "SIGPIPE", 13))  # no SIGPIPE on Windows
    except MemoryError:
        print(f"{prefix}: error: out of memory; use a smaller volume (--downsample) or a larger machine",
              file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            print(f"{prefix}: error: disk full writing {exc.filename or 'a file'} ({exc.strerror})", file=sys.stderr)
            return 2
        if exc.filename is None or not exc.strerror:
            raise  # not a file's problem the user can act on: keep the whole story
        # A file system that went read-only, an I/O error, a file that vanished: the file and the reason.
        print(f"{prefix}: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2


def run() -> None:
    """The ``scribbleseg`` program: :func:`main`, then exit with its status.

    A Ctrl-C once the command is done, while the interpreter shuts torch down, is ignored: it printed
    "Exception ignored in atexit callback ... KeyboardInterrupt" after the result was written and said so.
    """
    status = main()
    with contextlib.suppress(ValueError):  # only the main thread sets handlers
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit(status)


def _exit(status: int) -> NoReturn:
    """End the process with ``status`` once the command is done, without the interpreter's teardown of its
    modules: with torch loaded that took 0.3-0.4 s of every command on a 2-core machine (BENCHMARKS.md,
    "Interactive speed", item 65).  What an exit owes the user still happens first: the other threads are
    waited for, the exit-time callbacks run (logging's flush, temporary folders' clean-up), and stdout and
    stderr are flushed.  Where the interpreter offers no way to run those callbacks, or a profiler or debugger
    watches (``python -m cProfile -m ScribbleSegLib ...`` writes its statistics after the program returns), it
    exits as usual."""
    # CPython's own steps of an exit, in its order: the threads' exit hooks (a thread pool still open lets its
    # workers go there, else joining them never ends) and their end, then the exit callbacks.
    run_callbacks = getattr(atexit, "_run_exitfuncs", None)
    end_threads = getattr(threading, "_shutdown", None)
    if None in (run_callbacks, end_threads) or sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(status)
    if status <= 128:
        # Not after a signal: one that came while the main thread held importlib's lock left it held, and the
        # thread importing torch beside the reading (jobs.import_in_background) waited for it forever, and the
        # exit for that thread (SIGHUP 0.3-0.5 s into a segment: 2 runs of about 280). The work is over anyway.
        end_threads()
    run_callbacks()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):  # a reader gone, a stream closed or None
            stream.flush()
    os._exit(status)


if __name__ == "__main__":  # pragma: no cover
    run()
