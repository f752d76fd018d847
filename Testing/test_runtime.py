"""runtime.beside: work on a thread of its own while the caller goes on."""

import threading

import pytest

from ScribbleSegLib.errors import CancelledError, ScribbleSegError
from ScribbleSegLib.runtime import beside


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
