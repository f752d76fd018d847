"""Exceptions that carry a message meant for the user."""

import signal


class ScribbleSegError(Exception):
    """A problem with the user's input or environment.

    The message is one line that names the file (or option) and the problem.
    The command line prints it as ``scribbleseg: error: <message>`` and exits
    with status 2, without a traceback.

    Examples
    --------
    >>> try:
    ...     raise ScribbleSegError("stack.nrrd: not a 3D image")
    ... except ScribbleSegError as error:
    ...     print(error)
    stack.nrrd: not a 3D image
    """


class DamagedFeatures(ScribbleSegError):
    """The M-Unet features hold values that are not numbers where a run reads them: a feature cache entry
    damaged between the samples of its checksum (the run removes it and computes the features again,
    :func:`ScribbleSegLib.pipeline.heal_features`), or features a caller passed.

    Examples
    --------
    >>> error = DamagedFeatures("cached features hold values that are not numbers")
    >>> isinstance(error, ScribbleSegError), str(error)  # shown to the user like any other
    (True, 'cached features hold values that are not numbers')
    """


class CancelledError(ScribbleSegError):
    """The user cancelled a long-running call through its cancel token.

    Examples
    --------
    >>> str(CancelledError()), isinstance(CancelledError(), ScribbleSegError)
    ('cancelled by the user', True)
    """

    def __init__(self, message: str = "cancelled by the user") -> None:
        super().__init__(message)


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived while a run was writing or computing (see ``fileio.signals_raise``).

    A ``KeyboardInterrupt``, so that every cleanup that handles Ctrl-C handles
    it too; ``exit_status`` is the shell's convention, 128 + the signal number.

    Examples
    --------
    >>> import signal
    >>> stop = Interrupted(signal.SIGTERM)
    >>> str(stop), stop.exit_status, isinstance(stop, KeyboardInterrupt)
    ('stopped by SIGTERM (signal 15)', 143, True)
    """

    def __init__(self, signum: int) -> None:
        try:
            name = f"{signal.Signals(signum).name} (signal {int(signum)})"
        except ValueError:
            name = f"signal {int(signum)}"
        super().__init__(f"stopped by {name}")
        self.signum = int(signum)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum
