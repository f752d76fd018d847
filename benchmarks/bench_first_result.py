"""Time to a first result in Slicer: the worker run on the sample phantom with the starter model.

What the tutorial does (README, "Tutorial: the synthetic phantom"): the panel's
"Create a synthetic test volume" makes phantom seed 0 at the module's
``SAMPLE_PHANTOM_SHAPE`` with example scribbles (the worker's ``phantom`` task), and
Apply runs the worker's ``segment`` task with the default settings and the
starter model (no model chosen).  This script runs the same two worker
requests headless, as child processes started the way the module starts them
(``python -m ScribbleSegLib.worker REQUEST --control-stdin``), and prints the
wall time from starting the segment process to its ``done`` event (process
start and imports included), for a first run (features computed) and a second
run (features cached), and the IoU against the phantom's truth.  Then it
times "Add this volume to the model": a ``train`` request that fine-tunes the
starter model on the phantom and the first run's labels (``--finetune-steps``
steps each; 3 is what the self-test does, 300 what the panel does).

Run from the repository root::

    python benchmarks/bench_first_result.py [--shape 64 192 192] [--seed 0] [--model PATH] [--out DIR]
        [--finetune-steps 3 300]
"""

from __future__ import annotations

import argparse
import ast
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def module_constant(name: str):
    """A constant of ScribbleSeg.py (it cannot be imported without Slicer)."""
    tree = ast.parse((ROOT / "ScribbleSeg" / "ScribbleSeg.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(name)


def run(request_path: Path) -> tuple:
    from ScribbleSegLib import worker

    process = worker.WorkerProcess(request_path)
    started = time.perf_counter()
    process.start()
    stages = {}
    status = process.wait(on_event=lambda e: stages.setdefault(e.get("stage"), time.perf_counter() - started)
                          if e["event"] == "progress" else None, timeout=1800)
    elapsed = time.perf_counter() - started
    if status != worker.EXIT_DONE:
        raise SystemExit(f"{request_path.name}: {process.failure_message()}")
    return elapsed, process.result, stages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=list(module_constant("SAMPLE_PHANTOM_SHAPE")))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="default: the starter model")
    parser.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--finetune-steps", type=int, nargs="*", default=[3, 300],
                        help="step budgets of the fine-tuning runs (default: 3 300; none: skip)")
    args = parser.parse_args()

    from ScribbleSegLib import starter, volume_io, worker
    from ScribbleSegLib.metrics import evaluate

    model = starter.resolve_model(args.model)
    folder = Path(args.out or tempfile.mkdtemp(prefix="scribbleseg-first-result-"))
    folder.mkdir(exist_ok=True)
    outputs = {"image": "image.nrrd", "label": "label.seg.nrrd", "scribbles": "scribbles.seg.nrrd"}
    request = worker.write_request(folder / "phantom.json", {"task": "phantom", "seed": args.seed,
                                                             "shape": args.shape, "outputs": outputs})
    phantom_s, _done, _stages = run(request)
    print(f"phantom {'x'.join(map(str, args.shape))} seed {args.seed}: {phantom_s:.1f} s", flush=True)
    image = volume_io.read_image(folder / "image.nrrd")
    truth = volume_io.read_label(folder / "label.seg.nrrd", image.shape, image.geometry)
    for name in ("first", "second"):
        request = worker.write_request(folder / f"{name}.json", {
            "task": "segment", "image": "image.nrrd", "scribbles": "scribbles.seg.nrrd", "model": str(model),
            "method": "full", "device": "cpu", "cache_dir": "cache",
            "outputs": {"labels": f"{name}_labels.nrrd", "probability": None}})
        elapsed, done, stages = run(request)
        labels = volume_io.read_label(folder / f"{name}_labels.nrrd", image.shape, image.geometry)
        iou = evaluate(labels > 0, truth > 0)["iou"]
        timings = ", ".join(f"{k} {v:.1f} s" for k, v in done["timings"].items())
        print(f"{name} run ({'features cached' if done['metrics']['features_cached'] else 'features computed'}): "
              f"{elapsed:.1f} s from process start to result; IoU {iou:.3f}; stages: {timings}", flush=True)
    for steps in args.finetune_steps:
        request = worker.write_request(folder / f"finetune{steps}.json", {
            "task": "train", "images": ["image.nrrd"], "labels": ["first_labels.nrrd"],
            "output": f"finetuned{steps}.model", "init": str(model), "max_iters": steps, "max_minutes": 60,
            "names": [f"Phantom{args.seed}"], "device": "cpu", "seed": 0})
        elapsed, done, _stages = run(request)
        print(f"add this volume to the model, {steps} steps: {elapsed:.1f} s from process start to the model file",
              flush=True)
    print(f"model {model} ({model.stat().st_size / 2**20:.2f} MiB); files in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
