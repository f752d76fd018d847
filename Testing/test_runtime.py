"""runtime: work on a thread of its own while the caller goes on (beside), and on slabs in threads."""

import os
import threading

import pytest

from ScribbleSegLib import runtime
from ScribbleSegLib.errors import CancelledError, ScribbleSegError
from ScribbleSegLib.runtime import beside, in_threads, slabs


def test_the_work_beside_runs_on_another_thread_and_has_ended_after_the_body():
    seen = {}

    def work(cancel):
        seen["thread"] = threading.current_thread()
        seen["ended"] = True

    with beside(work):
        pass
    assert seen["ended"] and seen["thread"] is not threading.current_thread()


def test_an_error_in_the_body_cancels_the_work_and_waits_for_it():
    steps, started = [], threading.Event()

    def work(cancel):
        started.set()
        while True:  # runs until cancelled: the body's error must stop it
            cancel.check()
            steps.append(1)
            threading.Event().wait(0.001)

    with pytest.raises(ValueError, match="body"):
        with beside(work):
            started.wait()
            raise ValueError("body")
    count = len(steps)
    threading.Event().wait(0.02)
    assert len(steps) == count  # nothing runs after the error left the block


def test_an_error_of_the_work_is_raised_after_the_body():
    done = []

    def work(cancel):
        raise ScribbleSegError("the work failed")

    with pytest.raises(ScribbleSegError, match="the work failed"):
        with beside(work):
            done.append("body")
    assert done == ["body"]


def test_a_cancelled_body_raises_its_own_cancel():
    def work(cancel):
        cancel.check()

    with pytest.raises(CancelledError, match="stop"):
        with beside(work):
            raise CancelledError("stop")


def test_an_error_in_one_slab_thread_is_raised_after_the_running_slabs(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    done = []

    def work(z0, z1):
        if z0 == 2:
            raise ScribbleSegError("slab 2 failed")
        done.append(z0)

    with pytest.raises(ScribbleSegError, match="slab 2 failed"):
        in_threads(work, [(0, 1), (1, 2), (2, 3), (3, 4)])
    assert 0 in done and 1 in done


def test_slabs_cover_the_planes_once_in_steps_of_their_multiple(monkeypatch):
    monkeypatch.setattr(runtime, "SLAB_VOXELS", 100)
    assert list(slabs(7, 30)) == [(0, 3), (3, 6), (6, 7)]  # 3 planes of 30 voxels fit in 100
    assert list(slabs(7, 30, multiple=2)) == [(0, 2), (2, 4), (4, 6), (6, 7)]  # 4 would not: 2 planes
    assert list(slabs(3, 1000)) == [(0, 1), (1, 2), (2, 3)]  # at least one plane a slab


def test_an_error_on_the_calling_thread_stops_the_running_items_at_their_next_check():
    # A signal raised in the calling thread while it waits (SIGTERM, Ctrl-C) once let a large section run on to its
    # end, 35 s: the items check `stop`, which the calling thread cancels as it gives up.
    from ScribbleSegLib.progress import CancelToken, LinkedToken

    caller = CancelToken()
    stop = LinkedToken(caller)
    ended, running = {}, threading.Event()

    def work(item):
        if item == 0:
            running.wait(5)  # the calling thread gives up while item 1 runs
            return item
        running.set()
        for _ in range(1000):  # 10 s at most, if nothing stops it
            if stop.cancelled:
                ended[item] = "stopped"
                stop.check()
            threading.Event().wait(0.01)
        ended[item] = "ran to its end"

    def use(item, result):
        raise KeyboardInterrupt  # what the signal handler raises here

    with pytest.raises(KeyboardInterrupt):
        runtime.in_order(work, [0, 1], 2, use, stop)
    assert ended == {1: "stopped"} and not caller.cancelled
    caller.cancel()  # and the caller's own cancel reaches the items through it
    assert stop.cancelled
    with pytest.raises(CancelledError):
        LinkedToken(caller).check()


@pytest.mark.parametrize("given, read", [("CPU", "cpu"), ("Auto", "auto"), ("cuda:1", "cuda:1"), ("CUDA", "cuda"),
                                         ("tpu", None), ("cuda:x", None), ("", None)])
def test_a_device_name_is_read_alike_by_the_api_the_command_line_and_the_worker(tmp_path, given, read):
    # The API took "CPU" and "cuda:1"; the command line and the worker refused both.
    import argparse

    from ScribbleSegLib import worker
    from ScribbleSegLib.checks import check_device
    from ScribbleSegLib.commands.common import add_device_option

    parser = argparse.ArgumentParser()
    add_device_option(parser)
    request = {"task": "session", "image": "i.nrrd", "model": "i.nrrd", "device": given}
    (tmp_path / "i.nrrd").write_bytes(b"")
    if read is None:
        with pytest.raises(ScribbleSegError, match="expected one of auto, cpu, cuda or cuda:N"):
            check_device(given)
        with pytest.raises(SystemExit):
            parser.parse_args(["--device", given])
        with pytest.raises(ScribbleSegError, match="'device' must be one of auto, cpu, cuda or cuda:N"):
            worker.load_request(worker.write_request(tmp_path / "r.json", request))
    else:
        assert check_device(given) == read
        assert parser.parse_args(["--device", given]).device == read
        assert worker.load_request(worker.write_request(tmp_path / "r.json", request))["device"] == read


def test_a_pool_thread_runs_openmp_with_the_callers_thread_count():
    # A thread new to torch ran its first MKL products with OpenMP's default (one thread per core) under
    # torch_threads(1): predict_h on two threads gave results that differed in the last bit from run to run.
    import ctypes
    import torch  # noqa: F401  (loads torch's OpenMP)

    with open("/proc/self/maps") if os.path.exists("/proc/self/maps") else open(os.devnull) as maps:
        found = sorted({line.split()[-1] for line in maps if "libgomp" in line or "libiomp" in line})
    if not found:
        pytest.skip("torch here runs without a GNU or Intel OpenMP library to ask")
    openmp = ctypes.CDLL(found[0])
    with runtime.torch_threads(1):
        assert openmp.omp_get_max_threads() == 1
        with runtime.thread_pool(2) as pool:
            assert set(pool.map(lambda _: openmp.omp_get_max_threads(), range(4))) == {1}
