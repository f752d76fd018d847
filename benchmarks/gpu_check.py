"""GPU check in one command, for a session with a lent CUDA GPU (within 8 minutes).

Prints one table and writes it to ``--table``:

- the measured bf16 matrix-product peak (8192^3);
- M-Unet inference at 100x512x512 (the shipped starter model): time, voxels/s, and its share of
  that peak, FLOPs counted with ``torch.utils.flop_counter`` on a smaller volume;
- warm runs at 100x512x512 (:class:`ScribbleSegLib.session.Session` on ``cuda``: DDML + head trained on
  the GPU as replayed CUDA graphs, ``h`` from the features kept there, :mod:`ScribbleSegLib.gpu_adaptation`):
  first scribbles, more, two rounds of corrective strokes, and the last strokes again; stage times and IoU
  of each, and the same runs with the adaptation on the CPU (labels compared);
- the GPU against the CPU on one volume: M-Unet probability (bf16 autocast against float32) and the
  full run's labels;
- training steps/s of the paper preset, and that network's inference share of the peak.

Needs torch with CUDA, numpy, SimpleITK and PyMaxflow; the test suite also needs vtk, slicerio and pynrrd.
Each stage is timed on its own and a failed stage is a row, not the end of the check::

    sh benchmarks/gpu_check.sh                      # on the GPU machine
    python benchmarks/gpu_check.py --smoke          # tiny sizes on the CPU: tests this script only
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import pstats
import sys
import tempfile
import time
import traceback
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ScribbleSegLib import phantom, protocol, scribbles
from ScribbleSegLib.inference import predict_volume
from ScribbleSegLib.measure import machine_summary
from ScribbleSegLib.metrics import evaluate
from ScribbleSegLib.model_file import load_model
from ScribbleSegLib.nets import ModelConfig
from ScribbleSegLib.runtime import section_workers
from ScribbleSegLib.session import Session
from ScribbleSegLib.starter import resolve_model
from ScribbleSegLib.training import train_model

SIZES = {  # (re-run volume, FLOP-count volume, CPU-vs-GPU volume, training volume, paper inference, matmul n)
    "full": ((100, 512, 512), (4, 512, 512), (8, 256, 256), (24, 512, 512), (16, 512, 512), 8192),
    "smoke": ((6, 128, 128), (4, 64, 64), (4, 64, 64), (4, 128, 128), (4, 128, 128), 256),
}


class Table:
    """Rows printed as they come and written, as a Markdown table, to ``path`` after each one."""

    def __init__(self, path: Path) -> None:
        self.rows, self.path = [], path

    def add(self, name: str, value: str, note: str = "") -> None:
        self.rows.append((name, value, note))
        print(f"{name}: {value}  {note}", file=sys.stderr, flush=True)
        lines = ["| check | result | note |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in self.rows]
        self.path.write_text("\n".join(lines) + "\n")

    def stage(self, name: str, work) -> None:
        """``work()``; an exception becomes a row naming it (the check goes on to the next stage)."""
        t0 = time.perf_counter()
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - a benchmark reports and carries on
            traceback.print_exc()
            self.add(f"{name}: FAILED", f"{type(exc).__name__}", str(exc).splitlines()[0][:150] if str(exc) else "")
        print(f"[{name}: {time.perf_counter() - t0:.1f} s]", file=sys.stderr, flush=True)


def synced(device: str, fn):
    """``(fn(), seconds)``, the GPU's queue drained before the clock stops."""
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def gpu_peak(device: str) -> str:
    """``, GPU peak N GiB`` since the last reset of torch's peak statistics, and the sections run at once."""
    if device != "cuda":
        return ""
    workers = section_workers(torch.device(device), 512 * 512)
    return f", GPU peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB with {workers} sections at once"


@functools.lru_cache(maxsize=None)
def count_volume(shape: tuple) -> phantom.Phantom:
    """The phantom each network's FLOPs are counted on (made once for all of them)."""
    return phantom.make_phantom(seed=3, config=phantom.PhantomConfig(shape=shape))


def flops_per_voxel(model, shape: tuple, device: str) -> float:
    """The network's FLOPs per voxel, counted on :func:`count_volume` after a warm-up pass, one section at a
    time on this thread (the counter is per thread: it would miss the sections that a 2-core CPU runs on
    threads of their own)."""
    volume = count_volume(shape)
    predict_volume(model, volume.image, device=device)  # warm-up: kernels chosen, memory taken
    with mock.patch("ScribbleSegLib.inference.section_workers", return_value=1), \
            FlopCounterMode(display=False) as counter:
        predict_volume(model, volume.image, device=device)
    total = counter.get_total_flops()
    if total <= 0:
        raise RuntimeError("the FLOP counter saw no products (sections on other threads?)")
    return total / volume.label.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="starter", help="model file (default: the shipped starter model)")
    parser.add_argument("--table", default="gpu_check.md", help="where the table is written")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, to test this script")
    parser.add_argument("--profile", help="write a profile of one more corrective run (cProfile, cumulative) here")
    args = parser.parse_args()
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA GPU (use --smoke to test the script on a CPU)")
    big, count_shape, compare_shape, train_shape, paper_shape, n = SIZES["smoke" if args.smoke else "full"]
    table = Table(Path(args.table))
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none (smoke)"
    print(f"{machine_summary()} | GPU {gpu} | CUDA {torch.version.cuda}", flush=True)
    state = {}

    def matmul_peak():
        a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        b = torch.randn_like(a)
        for _ in range(3):
            a @ b
        repeats = 20
        _, t = synced(device, lambda: [a @ b for _ in range(repeats)])
        state["peak"] = repeats * 2 * n ** 3 / t
        table.add("bf16 matmul peak (measured)", f"{state['peak'] / 1e12:.0f} TFLOP/s", f"{n}^3, {repeats} products")

    def phantoms():
        t0 = time.perf_counter()
        state["vol"], state["first"], state["more"] = protocol.rerun_case(big, seed=7)
        table.add(f"phantom {'x'.join(map(str, big))} + strokes (CPU)", f"{time.perf_counter() - t0:.1f} s")

    def starter_inference():
        model = load_model(str(resolve_model(args.model)), device=device)
        state["model"] = model
        per_voxel = flops_per_voxel(model, count_shape, device)
        vol = state["vol"]
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        state["features"], t = synced(device, lambda: predict_volume(model, vol.image, device=device))
        rate = vol.label.size / t
        memory = gpu_peak(device)
        table.add(f"starter inference {'x'.join(map(str, big))}", f"{t:.2f} s",
                  f"{rate / 1e6:.1f} M voxels/s{memory}")
        # The same sections one at a time (the default before runtime.GPU_SECTION_WORKERS): speed and outputs.
        part = vol.image.array[:max(1, len(vol.image.array) // 5)]
        with mock.patch("ScribbleSegLib.inference.section_workers", return_value=1):
            (p1, f1), t1 = synced(device, lambda: predict_volume(model, part, device=device))
        (p2, f2), t2 = synced(device, lambda: predict_volume(model, part, device=device))
        table.add(f"starter inference {len(part)} sections, one at a time / default", f"{t1:.2f} s / {t2:.2f} s",
                  f"outputs identical: {bool(np.array_equal(p1, p2) and np.array_equal(f1, f2))}")
        table.add("starter inference share of bf16 peak", f"{100 * rate * per_voxel / state['peak']:.2f} %",
                  f"{per_voxel / 1e3:.1f} kFLOP/voxel counted")

    @functools.lru_cache(maxsize=None)
    def cpu_model():
        """The same model on the CPU, loaded once for the stages that compare with it."""
        return load_model(str(resolve_model(args.model)), device="cpu")

    def rerun():
        vol = state["vol"]
        spacing = vol.image.geometry.spacing
        sessions = {"GPU": Session(vol.image, state["model"], device=device, features=state["features"]),
                    "CPU": Session(vol.image, cpu_model(), device="cpu", features=state["features"])}
        # The runs of a user: first strokes, more strokes, then two rounds of corrective strokes drawn on the
        # GPU session's last result, each new to the session; then the last strokes once more, unchanged
        # (the session returns its last result at once).  The CPU session runs the same strokes.
        names = ["first scribbles", "more scribbles", "corrective strokes 1", "corrective strokes 2",
                 "the same strokes again"]
        runs = {name: {} for name in names}
        strokes = None
        for k, name in enumerate(names):
            if name == "first scribbles":
                strokes = state["first"]
            elif name == "more scribbles":
                strokes = state["more"]
            elif name.startswith("corrective"):
                strokes = scribbles.corrective_scribbles(vol.label, runs[names[k - 1]]["GPU"][0].labels, strokes,
                                                         seed=k, spacing=spacing)
            for side, session in sessions.items():
                runs[name][side] = synced(device if side == "GPU" else "cpu", lambda: session.run(strokes))
        resident = "features kept on the GPU" if sessions["GPU"].resident is not None else "features on the CPU"
        table.add("features to the GPU, at the session's start",
                  f"{sessions['GPU'].timings.get('features to GPU', 0.0):.2f} s", resident)
        for name in names:
            (gpu, t_gpu), (cpu, t_cpu) = runs[name]["GPU"], runs[name]["CPU"]
            stages = ", ".join(f"{k} {v:.3f} s" for k, v in gpu.timings.items() if k != "DDML + head")
            cpu_stages = ", ".join(f"{k} {cpu.timings[k]:.3f} s" for k in ("DDML training", "probability",
                                                                              "graph cut") if k in cpu.timings)
            target = "; target <= 0.5 s" if name.startswith(("more", "corrective")) else ""
            table.add(f"Session.run {'x'.join(map(str, big))}, {name}", f"{t_gpu:.2f} s",
                      f"{stages}; IoU {evaluate(gpu.labels, vol.label)['iou']:.3f}{target}")
            table.add(f"... adaptation on the CPU instead, {name}", f"{t_cpu:.2f} s",
                      f"{cpu_stages}; labels against the GPU's: Dice {evaluate(gpu.labels, cpu.labels)['f1']:.4f}; "
                      f"largest h difference {float(np.abs(gpu.probability - cpu.probability).max()):.4f}")
        if args.profile:  # one more round of corrective strokes, profiled
            strokes = scribbles.corrective_scribbles(vol.label, runs[names[-1]]["GPU"][0].labels, strokes,
                                                     seed=len(names), spacing=spacing)
            profiler = cProfile.Profile()
            profiler.runcall(sessions["GPU"].run, strokes)
            with open(args.profile, "w") as out:
                pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(50)

    def gpu_vs_cpu():
        vol = phantom.make_phantom(seed=5, config=phantom.PhantomConfig(shape=compare_shape))
        strokes = scribbles.simulate_scribbles(vol.label, seed=0, every=3, tissue=vol.tissue > 0)
        cpu_prob, _ = predict_volume(cpu_model(), vol.image, device="cpu")
        dev_prob, _ = predict_volume(state["model"], vol.image, device=device)
        diff = np.abs(cpu_prob.astype(np.float32) - dev_prob.astype(np.float32))
        agree = evaluate((dev_prob > 0.5).astype(np.uint8), (cpu_prob > 0.5).astype(np.uint8))["f1"]
        table.add("M-Unet probability, GPU (bf16) vs CPU (float32)", f"largest difference {diff.max():.4f}",
                  f"mean {diff.mean():.5f}; Dice of p > 0.5: {agree:.4f}")
        cpu = Session(vol.image, cpu_model(), device="cpu").run(strokes).labels
        dev = Session(vol.image, state["model"], device=device).run(strokes).labels
        table.add("full run labels, GPU vs CPU", f"Dice {evaluate(dev, cpu)['f1']:.4f}",
                  f"IoU to truth: GPU {evaluate(dev, vol.label)['iou']:.3f}, CPU {evaluate(cpu, vol.label)['iou']:.3f}")

    def paper_training():
        vol = phantom.make_phantom(seed=1, config=phantom.PhantomConfig(shape=train_shape))
        preset = "small" if args.smoke else "paper"
        short, long = (1, 3) if args.smoke else (5, 45)
        with tempfile.TemporaryDirectory() as tmp:
            times = {}
            for iters in (short, long):  # the difference removes the set-up (stain, bank, validation)
                _, times[iters] = synced(device, lambda: train_model(
                    [vol.image], [vol.label], f"{tmp}/p.model", ModelConfig.preset(preset), max_iters=iters,
                    device=device))
            table.add(f"training, {preset} preset", f"{(long - short) / (times[long] - times[short]):.2f} steps/s",
                      f"{long - short} steps, set-up excluded; {short} steps with set-up {times[short]:.1f} s")
            model = load_model(f"{tmp}/p.model", device=device)
        per_voxel = flops_per_voxel(model, count_shape, device)
        vol = phantom.make_phantom(seed=4, config=phantom.PhantomConfig(shape=paper_shape))
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        _, t = synced(device, lambda: predict_volume(model, vol.image, device=device))
        rate = vol.label.size / t
        table.add(f"{preset}-preset inference {'x'.join(map(str, paper_shape))}", f"{t:.2f} s",
                  f"{rate / 1e6:.2f} M voxels/s; {100 * rate * per_voxel / state['peak']:.1f} % of the bf16 peak "
                  f"({per_voxel / 1e6:.3f} MFLOP/voxel){gpu_peak(device)}")

    for name, work in (("matmul", matmul_peak), ("phantom", phantoms), ("inference", starter_inference),
                       ("re-run", rerun), ("GPU vs CPU", gpu_vs_cpu), ("training", paper_training)):
        table.stage(name, work)
    print("\n" + table.path.read_text(), flush=True)


if __name__ == "__main__":
    main()
