"""Wall time and peak resident memory of a stage, for benchmarks."""

from __future__ import annotations

import contextlib
import platform
import threading
import time
from dataclasses import dataclass
from typing import Dict, Iterator


def current_rss() -> int:
    """Resident set size of this process in bytes (Linux ``/proc``; 0 elsewhere).

    Examples
    --------
    >>> current_rss() >= 0
    True
    """
    try:
        with open("/proc/self/statm") as f:
            import os

            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class StageRecord:
    """Seconds and peak RSS (bytes, whole process) of one stage.

    Examples
    --------
    A stage run again under the same name adds to its record:

    >>> records = {"load": StageRecord(seconds=2.0)}
    >>> with stage(records, "load"):
    ...     pass
    >>> records["load"].seconds >= 2.0, records["load"].peak_rss > 0
    (True, True)
    """

    seconds: float = 0.0
    peak_rss: int = 0


@contextlib.contextmanager
def stage(records: Dict[str, StageRecord], name: str, interval: float = 0.05) -> Iterator[StageRecord]:
    """Time the body and sample the process's RSS every ``interval`` s meanwhile.

    Examples
    --------
    >>> records = {}
    >>> with stage(records, "sum"):
    ...     total = sum(range(1000))
    >>> records["sum"].seconds >= 0, records["sum"].peak_rss > 0
    (True, True)
    """
    record = records.setdefault(name, StageRecord())
    peak = [current_rss()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval):
            peak[0] = max(peak[0], current_rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        yield record
    finally:
        done.set()
        sampler.join()
        record.seconds += time.perf_counter() - start
        record.peak_rss = max(record.peak_rss, peak[0], current_rss())


def machine_summary() -> str:
    """One line describing this machine: CPU model, cores, RAM, OS, Python and torch.

    Examples
    --------
    >>> import os
    >>> line = machine_summary()
    >>> f"{os.cpu_count()} cores" in line, f"Python {platform.python_version()}" in line, "\\n" in line
    (True, True, False)
    """
    import os

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    ram = ""
    try:
        with open("/proc/meminfo") as f:
            ram = f", {int(f.readline().split()[1]) / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    try:
        import torch

        torch_info = f", torch {torch.__version__}" + (
            f" on {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else " (CPU)")
    except ImportError:
        torch_info = ""
    return (f"{cpu}, {os.cpu_count()} cores{ram}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}{torch_info}")
