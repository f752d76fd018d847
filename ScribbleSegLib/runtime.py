"""Torch runtime helpers: device choice and intra-op thread control."""

from __future__ import annotations

import contextlib
from typing import Iterator

from .choices import DEVICES
from .errors import ScribbleSegError

__all__ = ["DEVICES", "resolve_device", "torch_threads"]


def resolve_device(name: str = "auto"):
    """Return the ``torch.device`` for ``auto``, ``cpu`` or ``cuda`` (or ``cuda:N``).

    Raises
    ------
    ScribbleSegError
        If CUDA is asked for and torch sees no CUDA device, or the name is unknown.
    """
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ScribbleSegError(
                f"device {name}: this torch ({torch.__version__}) sees no CUDA device; use cpu or auto"
            )
        return torch.device(name)
    raise ScribbleSegError(f"device {name}: unknown device, expected one of {', '.join(DEVICES)}")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the body with ``n`` torch intra-op threads, restoring the old count after.

    Small-tensor loops (stain fitting, DDML steps on a few thousand pixels) run
    many times faster with one thread than with two on a 2-core machine.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)
