"""Memory checks before big allocations: refuse with one line instead of a traceback or the OOM killer.

The estimates are upper bounds of the peak of each step, measured with
``tracemalloc`` on small inputs (see the constants).  The memory available is
:func:`available_memory` (``MemAvailable`` on Linux).

Examples
--------
>>> require_memory(1, "a tiny array")
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from .errors import ScribbleSegError

PHANTOM_BYTES_PER_VOXEL = 140
"""Peak bytes per voxel of ``phantom.make_phantom`` (measured: 124-136 on 16x64x64 and 32x128x128)."""

RGB_BYTES_PER_VOXEL = 3


def available_memory() -> int:
    """Bytes of memory available to a new allocation without swapping (best effort).

    Linux: ``MemAvailable`` of ``/proc/meminfo``; Windows:
    ``GlobalMemoryStatusEx``; elsewhere half the physical memory.

    Examples
    --------
    >>> available_memory() > 0
    True
    """
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if os.name == "nt":
        import ctypes

        class _MemoryStatus(ctypes.Structure):
            _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                        ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                        ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                        ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                        ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

        status = _MemoryStatus()
        status.dwLength = ctypes.sizeof(_MemoryStatus)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
            return int(status.ullAvailPhys)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def release_free_memory() -> None:
    """Give memory that the C allocator keeps after frees back to the operating system (glibc only).

    Worker threads' allocator arenas keep what they freed; after a pass of the
    adaptation over a whole volume that is 0.1-0.2 GB of resident memory which the
    graph cut, the peak of a run, would otherwise stack on top of.  Elsewhere a no-op.

    Examples
    --------
    >>> release_free_memory()
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): nothing to trim this way
        pass


def _gb(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GB" if nbytes >= 2**30 / 10 else f"{nbytes / 2**20:.0f} MB"


def require_memory(nbytes: int, what: str, hint: str = "", available: Optional[int] = None) -> None:
    """Raise :class:`ScribbleSegError` if ``nbytes`` cannot fit in the memory available now.

    Parameters
    ----------
    nbytes : int
        The estimated peak of the step.
    what : str
        The start of the message: what needs the memory (names the file or parameter).
    hint : str
        What the user can do instead, appended after a semicolon.
    available : int, optional
        Override of :func:`available_memory` (tests).

    Examples
    --------
    >>> require_memory(10, "x", available=100)
    >>> require_memory(3 * 2**30, "x", available=2**30)
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: x needs about 3.0 GB of memory, 1.0 GB available
    """
    free = available_memory() if available is None else int(available)
    if nbytes > free:
        raise ScribbleSegError(f"{what} needs about {_gb(nbytes)} of memory, {_gb(free)} available"
                               + (f"; {hint}" if hint else ""))


def voxels(shape: Sequence[int]) -> int:
    """Number of voxels of a shape (Python ints: no overflow for absurd sizes).

    Examples
    --------
    >>> voxels((5000, 5000, 5000))
    125000000000
    """
    total = 1
    for size in shape:
        total *= int(size)
    return total


def check_phantom_memory(shape: Sequence[int], what: str = "phantom shape") -> None:
    """Refuse a phantom whose generation would not fit in memory.

    Examples
    --------
    >>> check_phantom_memory((8, 32, 32))
    """
    shape_text = " ".join(str(int(s)) for s in shape)
    require_memory(voxels(shape) * PHANTOM_BYTES_PER_VOXEL, f"{what} {shape_text}",
                   "choose a smaller shape")
