"""The worker process started the way the module starts it: through PythonSlicer, in Slicer's environment.

The pytest suite runs the same worker with a plain Python; this test checks what only Slicer has:
the PythonSlicer launcher, the path to ScribbleSegLib, and that a cancel ends the launcher's children.
"""

import os
import time
import unittest

import slicer

import ScribbleSeg


def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


class ScribbleSegWorkerTest(unittest.TestCase):
    def setUp(self):
        self.logic = ScribbleSeg.ScribbleSegLogic()

    def tearDown(self):
        self.logic.cleanup()

    def test_a_bad_request_comes_back_as_one_line(self):
        self.assertTrue(os.path.basename(ScribbleSeg.pythonExecutable()).startswith("PythonSlicer"))
        folder = self.logic._jobFolder()
        job = self.logic._startJob("segment", folder, {"image": "missing.nrrd"}).wait()
        self.assertFalse(job.succeeded)
        self.assertIn("missing.nrrd: no such file", job.errorMessage)
        self.assertEqual(len(job.errorMessage.splitlines()), 1)
        self.assertFalse(os.path.exists(folder), "the job's temporary folder is removed")

    @unittest.skipUnless(ScribbleSeg.ScribbleSegLogic.torchInstalled(), "needs PyTorch")
    def test_devices_lists_the_cpu(self):
        job = self.logic.detectDevices().wait()
        self.assertTrue(job.succeeded, job.errorMessage)
        self.assertEqual(job.result["outputs"]["devices"][0]["id"], "cpu")

    @unittest.skipUnless(ScribbleSeg.ScribbleSegLogic.torchInstalled() and os.name == "posix", "needs PyTorch, POSIX")
    def test_cancel_ends_the_worker_under_the_launcher(self):
        events = []
        outputs = {key: os.path.join(slicer.app.temporaryPath, f"ScribbleSegWorkerTest-{name}")
                   for key, name in (("image", "image.nrrd"), ("label", "label.seg.nrrd"),
                                     ("scribbles", "scribbles.seg.nrrd"))}
        job = self.logic._startJob("phantom", self.logic._jobFolder(),
                                   {"seed": 0, "shape": [96, 384, 384], "outputs": outputs}, onEvent=events.append)
        deadline = time.monotonic() + 60
        while not any(e["event"] == "started" for e in events) and time.monotonic() < deadline:
            slicer.app.processEvents()
            time.sleep(0.02)
        workerPid = next(e["pid"] for e in events if e["event"] == "started")
        job.cancel()
        job.wait()
        self.assertTrue(job.cancelled)
        self.assertFalse(job.succeeded)
        deadline = time.monotonic() + 10
        while _alive(workerPid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(_alive(workerPid))
        self.assertFalse(any(os.path.exists(p) for p in outputs.values()))
