#!/bin/sh
# GPU check in one command (a machine with a CUDA GPU; within 8 minutes):
#   sh benchmarks/gpu_check.sh [MODEL]        (default: the shipped starter model)
# Prints one table: measured bf16 matmul peak, M-Unet inference throughput and its share of that peak
# (FLOPs counted with torch.utils.flop_counter), training steps/s of the paper preset, DDML + head,
# and the warm re-run (session.Session on cuda) at 100x512x512.  Not run yet: no GPU was lent when written.
set -e
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 480 python3 - "${1:-starter}" <<'PY'
import sys, tempfile, time
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from ScribbleSegLib import phantom, scribbles
from ScribbleSegLib.inference import predict_volume
from ScribbleSegLib.measure import machine_summary
from ScribbleSegLib.model_file import load_model
from ScribbleSegLib.nets import ModelConfig
from ScribbleSegLib.session import Session
from ScribbleSegLib.starter import resolve_model
from ScribbleSegLib.training import train_model

assert torch.cuda.is_available(), "no CUDA GPU"
rows = []
def row(name, value, note=""):
    rows.append((name, value, note)); print(f"{name}: {value} {note}", file=sys.stderr, flush=True)
def timed(fn, sync=True):
    t0 = time.perf_counter(); out = fn()
    if sync: torch.cuda.synchronize()
    return out, time.perf_counter() - t0

print(machine_summary(), "|", torch.cuda.get_device_name(0))
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
for _ in range(3): a @ b
_, t = timed(lambda: [a @ b for _ in range(50)])
peak = 50 * 2 * 8192 ** 3 / t
row("bf16 matmul peak (measured)", f"{peak / 1e12:.0f} TFLOP/s", "8192^3, 50 products")
del a, b

model_path = str(resolve_model(sys.argv[1]))
model = load_model(model_path, device="cuda")
small = phantom.make_phantom(seed=3, config=phantom.PhantomConfig(shape=(4, 512, 512)))
predict_volume(model, small.image, device="cuda")  # warm-up
with FlopCounterMode(display=False) as counter:
    predict_volume(model, small.image, device="cuda")
flops_per_voxel = counter.get_total_flops() / small.label.size
vol = phantom.make_phantom(seed=7, config=phantom.PhantomConfig(shape=(100, 512, 512)))
(prob, feats), t = timed(lambda: predict_volume(model, vol.image, device="cuda"))
rate = vol.label.size / t
row("inference 100x512x512", f"{t:.1f} s", f"{rate / 1e6:.1f} M voxels/s")
row("inference share of bf16 peak", f"{100 * rate * flops_per_voxel / peak:.1f} %",
    f"{flops_per_voxel / 1e3:.0f} kFLOP/voxel counted")

train = phantom.make_phantom(seed=1, config=phantom.PhantomConfig(shape=(24, 512, 512)))
with tempfile.TemporaryDirectory() as tmp:
    for iters in (5, 65):  # the difference removes the set-up (stain, bank)
        _, t_iters = timed(lambda: train_model([train.image], [train.label], f"{tmp}/p.model",
                                               ModelConfig.preset("paper"), max_iters=iters, device="cuda"))
        if iters == 5: t5 = t_iters
row("training, paper preset", f"{60 / (t_iters - t5):.2f} steps/s", "60 steps, set-up excluded")

strokes = scribbles.simulate_scribbles(vol.label, seed=0, every=10, tissue=vol.tissue > 0)
session, t = timed(lambda: Session(vol.image, model, device="cuda", features=(prob, feats)))
result, t = timed(lambda: session.run(strokes))
result, t = timed(lambda: session.run(strokes, seed=1))
row("DDML + head (adapt, 100x512x512)", f"{result.timings['DDML + head']:.2f} s", "ddml.adapt runs on the CPU")
row("graph cut 100x512x512", f"{result.timings['graph cut']:.2f} s")
row("warm re-run 100x512x512 (Session.run)", f"{t:.2f} s", "target <= 0.5 s")

print("\n| check | result | note |\n|---|---|---|")
for name, value, note in rows:
    print(f"| {name} | {value} | {note} |")
PY
