"""Progress reporting and cancellation for long-running calls.

Every long call in ScribbleSegLib takes ``progress`` and ``cancel`` keyword
arguments.  ``progress`` is any callable ``progress(stage, fraction, message)``
with ``fraction`` in [0, 1] within ``stage`` (each stage of a call, such as
``"M-Unet inference"`` then ``"graph cut"``, runs from 0 to 1 again: a bar
for the whole call weighs the stages itself); ``cancel`` is a
:class:`CancelToken`.  Neither
touches Qt, so the same calls serve the command line (tqdm), the Slicer worker
process (progress lines on stdout) and notebooks.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

from .errors import CancelledError

ProgressCallback = Callable[[str, float, str], None]


class CancelToken:
    """A thread-safe flag that asks a running call to stop at its next check.

    Examples
    --------
    >>> token = CancelToken()
    >>> check(token)  # not set: goes on
    >>> token.cancel()
    >>> check(token)
    Traceback (most recent call last):
        ...
    ScribbleSegLib.errors.CancelledError: cancelled by the user
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the running call to stop."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether cancellation was asked for."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`CancelledError` if cancellation was asked for."""
        if self.cancelled:
            raise CancelledError()


class LinkedToken(CancelToken):
    """A :class:`CancelToken` that is also cancelled when its ``parent`` is (a caller's token, or None).

    For work on other threads that must stop both when the caller cancels and when the calling thread
    itself gives up (an error, or a signal raised there): that thread cancels this token, and the
    caller's is left as it was.

    Examples
    --------
    >>> parent = CancelToken()
    >>> child = LinkedToken(parent)
    >>> parent.cancel()
    >>> child.cancelled
    True
    """

    def __init__(self, parent: Optional[CancelToken] = None) -> None:
        super().__init__()
        self._parent = parent

    @property
    def cancelled(self) -> bool:
        return self._event.is_set() or (self._parent is not None and self._parent.cancelled)


def report(progress: Optional[ProgressCallback], stage: str, fraction: float, message: str = "") -> None:
    """Call ``progress`` if given, clamping ``fraction`` to [0, 1].

    Examples
    --------
    >>> seen = []
    >>> report(lambda stage, fraction, message: seen.append((stage, fraction, message)), "graph cut", 1.5, "done")
    >>> report(None, "graph cut", 0.5)  # no callback: nothing
    >>> seen
    [('graph cut', 1.0, 'done')]
    """
    if progress is not None:
        progress(stage, min(1.0, max(0.0, float(fraction))), message)


def check(cancel: Optional[CancelToken]) -> None:
    """Raise :class:`CancelledError` if ``cancel`` is set; ``None`` never cancels.

    Examples
    --------
    >>> token = CancelToken()
    >>> check(token); check(None)  # not cancelled: nothing happens
    >>> token.cancel()
    >>> check(token)
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.CancelledError: ...
    """
    if cancel is not None:
        cancel.check()


def sub_progress(progress: Optional[ProgressCallback], start: float, end: float) -> Optional[ProgressCallback]:
    """Map a callee's [0, 1] progress onto [start, end] of the caller's stage.

    Examples
    --------
    >>> seen = []
    >>> second_half = sub_progress(lambda stage, fraction, message: seen.append(fraction), 0.5, 1.0)
    >>> second_half("graph cut", 0.5, "")
    >>> seen
    [0.75]
    """
    if progress is None:
        return None

    def inner(stage: str, fraction: float, message: str = "") -> None:
        progress(stage, start + (end - start) * fraction, message)

    return inner


class TqdmProgress:
    """A progress callback that draws one tqdm bar per stage on stderr.

    Examples
    --------
    The bar counts in thousandths of the stage, and a new stage starts a new bar
    (``disable=True`` draws nothing):

    >>> bar = TqdmProgress(disable=True)
    >>> bar("graph cut", 0.4567, "slice 3"); first = bar._bar
    >>> bar("write", 0.1)
    >>> first.n, bar._bar.n, bar._bar is first
    (457, 100, False)
    >>> bar.close()
    """

    def __init__(self, disable: bool = False) -> None:
        self._bar = None
        self._stage: Optional[str] = None
        self._disable = disable

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        from tqdm import tqdm

        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = tqdm(total=1000, desc=stage, unit="‰", disable=self._disable,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}")
        self._bar.n = int(round(1000 * fraction))
        if message:
            self._bar.set_postfix_str(message, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        """Finish the current bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
