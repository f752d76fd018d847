"""Torch runtime helpers: device choice and intra-op thread control."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from .choices import DEVICES
from .errors import ScribbleSegError

__all__ = ["DEVICES", "PARALLEL_SECTION_MAX_PIXELS", "resolve_device", "section_workers", "torch_threads"]

#: Sections of at most this many pixels run two at a time on a 2-core CPU (:func:`section_workers`);
#: larger ones one at a time, so that the memory of a run stays that of one section.
PARALLEL_SECTION_MAX_PIXELS = 2 ** 24


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


def section_workers(device, section_pixels: int) -> int:
    """How many sections a per-section job (the network, stain normalization) runs at once.

    On a CPU of two cores, two sections, each on a thread of its own with one torch
    thread: convolutions and large tensor operations release Python's lock, so the two
    run side by side without the spinning that two intra-op threads cost on a busy
    machine (:func:`inference.cpu_threads`).  The outputs are those of one section at a
    time, bit for bit.  Elsewhere one: a GPU takes the sections in turn, and more cores
    are torch's intra-op threads' to use.  Sections over :data:`PARALLEL_SECTION_MAX_PIXELS`
    run one at a time.  ``device``: a ``torch.device`` or its type (``"cpu"``).
    """
    kind = getattr(device, "type", device)
    if kind != "cpu" or section_pixels > PARALLEL_SECTION_MAX_PIXELS:
        return 1
    return 2 if (os.cpu_count() or 1) == 2 else 1
