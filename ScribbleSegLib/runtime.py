"""Runtime helpers: the torch device and its intra-op threads, and work on threads (sections, slabs, beside)."""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Optional, Sequence, Tuple

from .choices import DEVICES, DEVICES_TEXT, device_name
from .errors import CancelledError, ScribbleSegError
from .progress import CancelToken

__all__ = ["DEVICES", "GPU_MEMORY_PER_SECTION_GIB", "GPU_SECTION_WORKERS", "MAX_SLAB_THREADS",
           "PARALLEL_SECTION_MAX_PIXELS", "SLAB_VOXELS", "beside", "in_order", "in_threads", "resolve_device",
           "section_workers", "slabs", "thread_pool", "torch_threads"]

#: Sections of at most this many pixels run two at a time on a 2-core CPU (:func:`section_workers`);
#: larger ones one at a time, so that the memory of a run stays that of one section.
PARALLEL_SECTION_MAX_PIXELS = 2 ** 24
#: Sections at once beside a GPU (:func:`section_workers`), on a machine of at least twice as many cores.
GPU_SECTION_WORKERS = 4
#: Free GPU memory each of those sections needs, in GiB: one batch of four 1024-pixel tiles through the paper
#: preset's network peaked at 6.9 GiB in float32 on a CPU (BENCHMARKS.md, "Interactive speed", item 37).
#: A GPU with less free memory than two sections' runs one at a time, as before.
GPU_MEMORY_PER_SECTION_GIB = 8
#: Voxels of one slab of a pass over a volume (:func:`slabs`): its temporaries stay small beside the volume.
SLAB_VOXELS = 2**20
#: Threads that work on a volume's slabs at once (:func:`in_threads`); each slab's temporaries are about
#: :data:`SLAB_VOXELS` voxels of float64.
MAX_SLAB_THREADS = 4


def resolve_device(name: str = "auto"):
    """Return the ``torch.device`` for ``auto``, ``cpu`` or ``cuda`` (or ``cuda:N``).

    Raises
    ------
    ScribbleSegError
        If CUDA is asked for and torch sees no CUDA device, or the name is unknown.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    given = (name or "auto").lower()
    name = device_name(given)
    if name is None:  # "cudax" reached torch.device where CUDA was there, and failed in it
        raise ScribbleSegError(f"device {given}: unknown device, expected one of {DEVICES_TEXT}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():  # cuda or cuda:N
        raise ScribbleSegError(f"device {name}: this torch ({torch.__version__}) sees no CUDA device; use cpu or auto")
    return torch.device(name)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the body with ``n`` torch intra-op threads, restoring the old count after.

    Small-tensor loops (stain fitting, DDML steps on a few thousand pixels) run
    many times faster with one thread than with two on a 2-core machine.

    Examples
    --------
    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
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
    machine (:func:`inference.cpu_threads`).  Other CPUs: one, and torch's intra-op
    threads take the cores.  Beside a GPU, :data:`GPU_SECTION_WORKERS` (at most half the
    cores): there the network's share of a 512x512 section is under a millisecond and the
    host's (stain normalization, the pyramid and crops, copying the outputs) about 90 ms,
    so sections on threads of their own keep the GPU fed (1.7x on an H200 with 16 cores,
    ``benchmarks/gpu_check.py``); each needs :data:`GPU_MEMORY_PER_SECTION_GIB` of the GPU's
    free memory.  The outputs are those of one section at a time, bit for bit.  Sections over
    :data:`PARALLEL_SECTION_MAX_PIXELS` run one at a time.
    ``device``: a ``torch.device`` or its type (``"cpu"``, ``"cuda"``).

    Examples
    --------
    >>> section_workers("cpu", 2**25), section_workers("cuda", 2**25)  # over PARALLEL_SECTION_MAX_PIXELS
    (1, 1)
    >>> section_workers("cpu", 512 * 512) == (2 if os.cpu_count() == 2 else 1)  # two on a CPU of two cores
    True
    """
    kind = getattr(device, "type", device)
    cores = os.cpu_count() or 1
    if section_pixels > PARALLEL_SECTION_MAX_PIXELS:
        return 1
    if kind != "cpu":
        return max(1, min(GPU_SECTION_WORKERS, cores // 2, _gpu_free_gib(device) // GPU_MEMORY_PER_SECTION_GIB))
    return 2 if cores == 2 else 1


def _gpu_free_gib(device) -> int:
    """Whole GiB free on ``device``'s GPU; 0 where torch cannot say (one section at a time then)."""
    import torch

    try:
        free, _ = torch.cuda.mem_get_info(device if isinstance(device, torch.device) else torch.device(device))
    except (RuntimeError, AssertionError, ValueError, TypeError):  # no CUDA build, no such device
        return 0
    return int(free // 2**30)


def thread_pool(workers: int) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads that run torch with as many intra-op threads as the calling thread does.

    A thread new to torch ran its first matrix products (MKL) with OpenMP's own count, one per core,
    whatever :func:`torch_threads` had set: the first slabs of a run then rounded otherwise than the rest, so
    that the same call gave results that differed in the last bit from one run to the next (``h`` of a
    64x96x96 phantom on two threads: a few voxels by up to 1e-8).  Create the pool inside
    :func:`torch_threads`.

    Examples
    --------
    >>> with thread_pool(2) as pool:
    ...     list(pool.map(abs, [-1, -2]))
    [1, 2]
    """
    torch = sys.modules.get("torch")  # numpy-only work does not import torch for this
    if torch is None:
        return ThreadPoolExecutor(max_workers=workers)
    return ThreadPoolExecutor(max_workers=workers, initializer=torch.set_num_threads,
                              initargs=(torch.get_num_threads(),))


def in_order(work: Callable, items: Iterable, workers: int, use: Optional[Callable] = None,
             stop: Optional[CancelToken] = None) -> None:
    """``use(item, work(item))`` for every item, in the items' order, with ``work`` on ``workers`` threads.

    ``work`` runs at most ``workers`` items ahead of ``use``, which runs on the calling thread
    (so that it may report progress, or add to something only one thread may touch); with one
    worker, both run here, one item after the other.  ``work`` must write disjoint outputs.
    An error or a cancel in either is raised here, after the items running have ended; the
    items not started are dropped, so nothing writes after this returns.  ``stop``, a token that
    ``work`` checks, is cancelled when the calling thread raises (a signal arrives there while it
    waits): the running items then end at their next check instead of running to their end.

    Examples
    --------
    >>> squares = []
    >>> in_order(lambda x: x * x, range(5), 2, lambda x, y: squares.append((x, y)))
    >>> squares
    [(0, 0), (1, 1), (2, 4), (3, 9), (4, 16)]
    """
    if workers <= 1:
        for item in items:
            result = work(item)
            if use is not None:
                use(item, result)
        return
    pending: collections.deque = collections.deque()

    def use_first() -> None:
        item, future = pending.popleft()
        result = future.result()
        if use is not None:
            use(item, result)

    pool = thread_pool(workers)
    try:
        for item in items:
            pending.append((item, pool.submit(work, item)))
            if len(pending) > workers:
                use_first()
        while pending:
            use_first()
    except BaseException:
        if stop is not None:
            stop.cancel()
        raise
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True)


@contextlib.contextmanager
def beside(work: Callable[[CancelToken], None]) -> Iterator[None]:
    """Run ``work(cancel)`` on a thread of its own while the body runs, and wait for it at the end.

    For work that the body's result will need but that does not need the body: on a CPU whose
    other core the body leaves idle (one torch thread), it then costs little wall time.  ``work`` must
    check its :class:`~ScribbleSegLib.progress.CancelToken` between steps: when the body raises,
    ``work`` is cancelled and waited for before the error goes on, so that nothing runs after.
    An error of ``work`` is raised after the body.

    Examples
    --------
    >>> done = []
    >>> with beside(lambda cancel: done.append("ahead")):
    ...     done.append("body")
    >>> sorted(done)
    ['ahead', 'body']
    """
    cancel = CancelToken()
    errors: list = []

    def run() -> None:
        try:
            work(cancel)
        except BaseException as error:  # noqa: BLE001  (raised on the caller's thread below)
            errors.append(error)

    thread = threading.Thread(target=run, name="scribbleseg-beside", daemon=True)
    thread.start()
    try:
        yield
    except BaseException:
        cancel.cancel()
        thread.join()
        raise
    thread.join()
    if errors and not isinstance(errors[0], CancelledError):
        raise errors[0]


def slabs(n: int, plane: int, multiple: int = 1) -> Iterator[Tuple[int, int]]:
    """``(z0, z1)`` ranges over ``n`` planes of ``plane`` voxels, about :data:`SLAB_VOXELS` voxels each and starting
    at multiples of ``multiple``.

    Examples
    --------
    >>> list(slabs(5, SLAB_VOXELS // 2))
    [(0, 2), (2, 4), (4, 5)]
    """
    step = max(1, SLAB_VOXELS // max(1, plane * multiple)) * multiple
    for z0 in range(0, n, step):
        yield z0, min(n, z0 + step)


def in_threads(work: Callable[[int, int], None], ranges: Sequence[Tuple[int, int]]) -> None:
    """``work(z0, z1)`` for every range (a slab, :func:`slabs`), on up to :data:`MAX_SLAB_THREADS` threads, one
    per core.

    The work must write disjoint parts of its outputs.  numpy's elementwise kernels release
    Python's lock, so on 2 cores two slabs compute side by side.  An error (or a cancel) in
    one slab is raised here after the slabs already running have ended.

    Examples
    --------
    >>> out = [0] * 6
    >>> in_threads(lambda z0, z1: out.__setitem__(slice(z0, z1), [z0] * (z1 - z0)), [(0, 3), (3, 6)])
    >>> out
    [0, 0, 0, 3, 3, 3]
    """
    in_order(lambda r: work(*r), ranges, slab_threads(len(ranges)))


def slab_threads(items: int) -> int:
    """Threads for ``items`` independent pieces of numpy work: one per core, at most :data:`MAX_SLAB_THREADS`.

    Examples
    --------
    >>> 1 <= slab_threads(2) <= 2
    True
    """
    return max(1, min(MAX_SLAB_THREADS, os.cpu_count() or 1, items))
