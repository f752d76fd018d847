"""Re-run after new scribbles: warm session (persistent worker) vs cold (``scribbleseg segment``).

Makes a phantom, writes it and two scribble sets (``first``, then ``more`` on
more sections) as files, then measures, each in its own process:

1. ``scribbleseg segment`` with ``first`` and a feature cache: the cold first run
   (M-Unet inference included);
2. ``scribbleseg segment`` with ``more``: a cold re-run (process start, torch
   import, model load, cached features, DDML + head, cut, writing);
3. the persistent worker (``task: session``, :class:`ScribbleSegLib.worker.SessionProcess`):
   opening (features from the cache), then a run with ``first`` and one with
   ``more``: the warm re-run, from sending the run line to its ``done`` event
   (reading the scribbles and writing the labels included).

Prints wall times, stage times and each process's peak RSS (VmHWM)::

    python benchmarks/bench_session.py --shape 40 256 256
    python benchmarks/bench_session.py --shape 100 512 512 --model ScribbleSegLib/models/starter.model
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ScribbleSegLib import protocol, volume_io, worker
from ScribbleSegLib.measure import machine_summary
from ScribbleSegLib.metrics import evaluate
from ScribbleSegLib.starter import resolve_model

# Runs the CLI and prints the process's peak RSS (kB) on stderr as the last line.
_CLI = ("import os, sys\nfrom ScribbleSegLib import cli\nstatus = cli.main(sys.argv[1:])\n"
        "hwm = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
        "print('VmHWM', hwm, file=sys.stderr, flush=True)\nsys.stdout.flush()\nos._exit(status)\n")


def _peak_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1])


def cli_run(folder: Path, model: str, scribble_file: Path, out: str) -> tuple:
    args = [sys.executable, "-c", _CLI, "segment", "--image", str(folder / "image.nrrd"), "--scribbles",
            str(scribble_file), "--model", model, "--out", str(folder / out), "--cache-dir",
            str(folder / "cache"), "--device", "cpu", "--quiet"]
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"scribbleseg segment failed (status {done.returncode}): {done.stderr[-2000:]}")
    peak = int(done.stderr.strip().splitlines()[-1].split()[1])
    return wall, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="starter", help="model file (default: the shipped starter model)")
    parser.add_argument("--shape", type=int, nargs=3, default=(40, 256, 256), metavar=("Z", "Y", "X"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=2, help="warm re-runs with 'more' (the best is reported)")
    args = parser.parse_args()
    model = str(resolve_model(args.model))

    print(machine_summary())
    t0 = time.perf_counter()
    vol, first, more = protocol.rerun_case(args.shape, args.seed)
    print(f"phantom {tuple(args.shape)}: {time.perf_counter() - t0:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        volume_io.write_rgb_volume(folder / "image.nrrd", vol.image)
        for name, strokes in (("first", first), ("more", more)):
            volume_io.write_labelmap(folder / f"{name}.nrrd", strokes, vol.image.geometry)
        truth, geometry = vol.label, vol.image.geometry
        del vol

        wall, peak = cli_run(folder, model, folder / "first.nrrd", "cold_first.nrrd")
        print(f"cold first run (CLI, M-Unet inference + cache): {wall:.1f} s, peak RSS {peak / 2**20:.2f} GiB")
        wall, peak = cli_run(folder, model, folder / "more.nrrd", "cold_more.nrrd")
        print(f"cold re-run (CLI, cached features): {wall:.1f} s, peak RSS {peak / 2**20:.2f} GiB")
        shape = truth.shape

        request = worker.write_request(folder / "session.json", {
            "task": "session", "image": "image.nrrd", "model": model, "device": "cpu", "cache_dir": "cache"})
        process = worker.SessionProcess(request)
        t0 = time.perf_counter()
        process.start()
        ready = process.wait_ready(timeout=3600)
        if ready is None:
            raise SystemExit(process.failure_message())
        print(f"session open (start, import, read, model, cached features): {time.perf_counter() - t0:.1f} s")
        runs = [("first", "warm_first.nrrd")] + [("more", f"warm_more{i}.nrrd") for i in range(args.repeats)]
        best = None
        for name, out in runs:
            t0 = time.perf_counter()
            run_id = process.send({"scribbles": f"{name}.nrrd", "outputs": {"labels": out}})
            done = process.wait_run(run_id, timeout=3600)
            wall = time.perf_counter() - t0
            if done is None or done["event"] != "done":
                raise SystemExit(str(done) if done else process.failure_message())
            stages = ", ".join(f"{k} {v:.2f} s" for k, v in done["timings"].items())
            labels = volume_io.read_label(done["outputs"]["labels"], shape, geometry)
            iou = evaluate(labels, truth)["iou"]
            print(f"warm run ({name}): {wall:.2f} s send->done ({stages}); IoU {iou:.3f}")
            if name == "more":
                best = wall if best is None else min(best, wall)
        try:  # the worker's own peak (it is the child itself: no launcher here), read before it exits
            peak = _peak_kb(process.pid)
        except OSError:
            peak = 0
        process.close()
        process.wait(timeout=600)
        cold = volume_io.read_label(folder / "cold_more.nrrd", shape, geometry)
        warm = volume_io.read_label(folder / "warm_more0.nrrd", shape, geometry)
        print(f"warm re-run best of {args.repeats}: {best:.2f} s; session worker peak RSS {peak / 2**20:.2f} GiB; "
              f"warm labels == cold labels: {bool(np.array_equal(cold, warm))}")


if __name__ == "__main__":
    main()
