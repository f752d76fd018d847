"""Memory checks before big allocations: refuse with one line instead of a traceback or the OOM killer.

The estimates are upper bounds of the peak of each step, measured with
``tracemalloc`` on small inputs (see the constants).  The memory available is
:func:`available_memory` (``MemAvailable`` on Linux, less under a control group's
memory limit).

Examples
--------
>>> require_memory(1, "a tiny array")
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional, Sequence, Tuple

from .errors import ScribbleSegError

PHANTOM_BYTES_PER_VOXEL = 32
"""Peak bytes per voxel of ``phantom.make_phantom``, which makes per-voxel work a slab of sections at a
time (maximum RSS: 30.7 at 250x712x1250, 42.1 at 16x1024x1024 with the fixed part below; the commands
are in BENCHMARKS.md, "Interactive speed", item 5)."""
PHANTOM_FIXED_BYTES = 2**29
"""... plus the slab temporaries, whatever the volume's size (at most 0.2-0.5 GB measured)."""

RGB_BYTES_PER_VOXEL = 3


def available_memory(proc: str = "/proc") -> int:
    """Bytes of memory available to a new allocation without swapping (best effort).

    Linux: ``MemAvailable`` of ``/proc/meminfo``, or less where the process's
    control group has a memory limit (a container, a Slurm job, ``systemd-run -p
    MemoryMax``): there the kernel kills the process at the group's limit,
    whatever the machine has free (see :func:`cgroup_available_memory`).
    Windows: ``GlobalMemoryStatusEx``; elsewhere half the physical memory.

    Parameters
    ----------
    proc : str
        Where procfs is mounted (tests point it at a fake tree).

    Examples
    --------
    >>> available_memory() > 0
    True
    """
    free = None
    try:
        with open(os.path.join(proc, "meminfo")) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if free is not None:
        group = cgroup_available_memory(proc)
        return free if group is None else min(free, group)
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


#: A cgroup v1 limit at or above this means "no limit" (the kernel writes 2**63 rounded to a page).
_NO_LIMIT = 2**60


def cgroup_available_memory(proc: str = "/proc") -> Optional[int]:
    """Bytes left under the memory limit of this process's control group, or ``None`` without a limit.

    The limit minus what the group uses, not counting its file cache (which the
    kernel writes back and drops before it kills; shared memory is not file
    cache): a run that has just written gigabytes of cached features has that
    much cache charged to its group.  Both cgroup versions are read, through
    ``proc/self/cgroup`` and ``proc/self/mountinfo``; for cgroup v2 every
    ancestor group's ``memory.max`` counts, for v1 the
    ``hierarchical_memory_limit``.

    Parameters
    ----------
    proc : str
        Where procfs is mounted (tests point it at a fake tree).

    Examples
    --------
    >>> left = cgroup_available_memory()
    >>> left is None or left >= 0
    True
    """
    lefts = []
    for version, folder, mount_point in cgroup_memory_folders(proc):
        left = _cgroup2_left(folder, mount_point) if version == 2 else _cgroup1_left(folder)
        if left is not None:
            lefts.append(left)
    return min(lefts) if lefts else None


def cgroup_memory_folders(proc: str = "/proc") -> List[Tuple[int, str, str]]:
    """``(version, group folder, mount point)`` of this process's memory control groups (Linux).

    Read from ``proc/self/cgroup`` and ``proc/self/mountinfo``; empty where there
    are none (or elsewhere than Linux).  Benchmarks put a child process in a
    sub-group of these to give it a memory limit.

    Examples
    --------
    >>> all(version in (1, 2) for version, _, _ in cgroup_memory_folders())
    True
    """
    try:
        with open(os.path.join(proc, "self", "cgroup")) as f:
            groups = [line.rstrip("\n").split(":", 2) for line in f if line.count(":") >= 2]
        with open(os.path.join(proc, "self", "mountinfo")) as f:
            mounts = [line.split() for line in f]
    except OSError:
        return []
    v2 = next((path for hier, ctrl, path in groups if hier == "0" and ctrl == ""), None)
    v1 = next((path for _, ctrl, path in groups if "memory" in ctrl.split(",")), None)
    found = []
    for fields in mounts:
        if "-" not in fields:
            continue
        tail = fields[fields.index("-") + 1:]
        fstype, options = tail[0], (tail[2] if len(tail) > 2 else "")
        root, point = fields[3], fields[4]
        if fstype == "cgroup2" and v2 is not None:
            found.append((2, _group_dir(point, root, v2), point))
        elif fstype == "cgroup" and v1 is not None and "memory" in options.split(","):
            found.append((1, _group_dir(point, root, v1), point))
    return found


def _group_dir(point: str, root: str, path: str) -> str:
    """The group's folder under a cgroup mount whose root is ``root`` (a container sees only its part)."""
    rel = os.path.relpath(path, root) if path == root or path.startswith(root.rstrip("/") + "/") else path
    rel = "" if rel == "." else rel.lstrip("/")
    return os.path.join(point, rel)


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (cgroup v2): no limit


def _stats(path: str) -> dict:
    """The ``name value`` lines of a cgroup ``memory.stat`` file ({} if unreadable)."""
    stats = {}
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if value.strip().isdigit():
                    stats[name] = int(value)
    except OSError:
        pass
    return stats


def _cgroup2_left(folder: str, mount_point: str) -> Optional[int]:
    lefts = []
    while True:
        limit = _read_int(os.path.join(folder, "memory.max"))
        used = _read_int(os.path.join(folder, "memory.current"))
        if limit is not None and used is not None:
            stats = _stats(os.path.join(folder, "memory.stat"))
            lefts.append(max(0, limit - used + stats.get("file", 0) - stats.get("shmem", 0)))
        if os.path.normpath(folder) == os.path.normpath(mount_point) or folder in ("", "/"):
            break
        folder = os.path.dirname(folder.rstrip("/"))
    return min(lefts) if lefts else None


def _cgroup1_left(folder: str) -> Optional[int]:
    stats = _stats(os.path.join(folder, "memory.stat"))
    limit = stats.get("hierarchical_memory_limit") or _read_int(os.path.join(folder, "memory.limit_in_bytes"))
    used = _read_int(os.path.join(folder, "memory.usage_in_bytes"))
    if not limit or limit >= _NO_LIMIT or used is None:
        return None
    return max(0, limit - used + stats.get("total_cache", 0) - stats.get("total_shmem", 0))


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
    require_memory(voxels(shape) * PHANTOM_BYTES_PER_VOXEL + PHANTOM_FIXED_BYTES, f"{what} {shape_text}",
                   "choose a smaller shape")
