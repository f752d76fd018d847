"""Exceptions that carry a message meant for the user."""


class ScribbleSegError(Exception):
    """A problem with the user's input or environment.

    The message is one line that names the file (or option) and the problem.
    The command line prints it as ``scribbleseg: error: <message>`` and exits
    with status 2, without a traceback.
    """


class CancelledError(ScribbleSegError):
    """The user cancelled a long-running call through its cancel token."""

    def __init__(self, message: str = "cancelled by the user") -> None:
        super().__init__(message)
