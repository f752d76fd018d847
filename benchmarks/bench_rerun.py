"""Re-run after new scribbles: DDML + head + graph cut on cached M-Unet features.

Makes a phantom of the given size (default 100x512x512), segments it once
with ``pipeline.segment`` and a feature cache (M-Unet inference included), then
adds scribbles on more sections and segments again: the second run reads the
cached features and runs only DDML, the head and the cut.  Prints the stage
times of both runs and the process's peak RSS.

    python benchmarks/bench_rerun.py --model scribbleseg-bench/munet.model
"""

from __future__ import annotations

import argparse
import tempfile
import time

from ScribbleSegLib import pipeline, protocol
from ScribbleSegLib.measure import machine_summary
from ScribbleSegLib.metrics import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model file (e.g. from scribbleseg bench)")
    parser.add_argument("--shape", type=int, nargs=3, default=(100, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    print(machine_summary())
    t0 = time.perf_counter()
    vol, first, more = protocol.rerun_case(args.shape, args.seed)
    print(f"phantom {tuple(args.shape)}: {time.perf_counter() - t0:.1f} s")
    with tempfile.TemporaryDirectory() as cache:
        for name, scrib in (("first run (M-Unet inference + cache)", first), ("re-run, more scribbles", more)):
            t0 = time.perf_counter()
            result = pipeline.segment(vol.image, scrib, args.model, cache_dir=cache, device="cpu")
            total = time.perf_counter() - t0
            stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
            iou = evaluate(result.labels, vol.label)["iou"]
            print(f"{name}: {total:.1f} s ({stages}); features cached: {result.features_cached}; IoU {iou:.3f}")
    with open("/proc/self/status") as f:
        peak = next(line for line in f if line.startswith("VmHWM"))
    print("peak RSS", peak.split(":", 1)[1].strip())


if __name__ == "__main__":
    main()
