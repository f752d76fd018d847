"""M-Unet against the plain U-Net on phantom volumes (paper Table I, first two rows).

Trains the small (or paper) M-Unet and U-Net on phantom volumes with seeds 0
and 1, validates (early stopping) on seeds 2 and 3, and reports the IoU of
``probability > 0.5`` on seeds 4 and 5, with the training and inference times.
Both networks get the same number of steps (the training default, the small
preset's, or ``--iters``), each capped at ``--minutes``; a short cap instead compares them
at equal time, where the cheaper U-Net takes about 2.6x as many steps.
The paper reports IoU 0.681 for the U-Net and 0.807 for the M-Unet on real
mouse-embryo sections.

Run from the repository root::

    python benchmarks/bench_munet_vs_unet.py [--minutes 10] [--iters N] [--config small|paper]
        [--archs munet unet] [--set KEY=VALUE ...] [--seed 0] [--device auto] [--out DIR]

``--set`` overrides a field of the model config (``--set width=8 --set patch=96``)
for tuning; ``--out`` keeps the model files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ScribbleSegLib import phantom
from ScribbleSegLib.inference import predict_volume
from ScribbleSegLib.metrics import evaluate
from ScribbleSegLib.model_file import load_model
from ScribbleSegLib.nets import ModelConfig
from ScribbleSegLib.progress import TqdmProgress
from ScribbleSegLib.training import train_model


def _override(config: ModelConfig, items) -> ModelConfig:
    changes = {}
    for item in items:
        key, value = item.split("=", 1)
        changes[key] = json.loads(value)
    return dataclasses.replace(config, **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="time cap of each network's training")
    parser.add_argument("--iters", type=int, default=None, help="steps per network (default: the small preset's)")
    parser.add_argument("--config", choices=("small", "paper"), default="small")
    parser.add_argument("--archs", nargs="+", default=["munet", "unet"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--out", default=None, help="folder to keep the model files in")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    vols = {s: phantom.make_phantom(seed=s) for s in range(6)}
    print(f"phantoms 0-5 {vols[0].image.shape}: {time.perf_counter() - t0:.1f} s", flush=True)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_munet_"))
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for arch in args.archs:
        config = _override(ModelConfig.preset(args.config, arch), args.set)
        path = out / f"{arch}.model"
        t = time.perf_counter()
        train_model([vols[0].image, vols[1].image], [vols[0].label, vols[1].label], path, config,
                    val_images=[vols[2].image, vols[3].image], val_labels=[vols[2].label, vols[3].label],
                    max_minutes=args.minutes, max_iters=args.iters, device=args.device, seed=args.seed,
                    progress=TqdmProgress(disable=args.quiet))
        train_s = time.perf_counter() - t
        model = load_model(path, device=args.device)
        rec = model.meta["training"]
        ious, infer_s = [], 0.0
        for s in (4, 5):
            t = time.perf_counter()
            prob, _ = predict_volume(model, vols[s].image)
            infer_s += time.perf_counter() - t
            ious.append(evaluate(prob > 0.5, vols[s].label)["iou"])
        results[arch] = {"iou": [round(float(i), 4) for i in ious], "mean_iou": round(float(np.mean(ious)), 4),
                         "train_s": round(train_s, 1), "steps": rec["steps"], "stopped_by": rec["stopped_by"],
                         "best_step": rec["best_step"], "best_val_loss": rec["best_val_loss"],
                         "infer_s_per_volume": round(infer_s / 2, 1), "config": config.to_dict()}
        print(f"{arch}: IoU {results[arch]['iou']} (mean {results[arch]['mean_iou']}), "
              f"train {train_s:.0f} s ({rec['steps']} steps, {rec['stopped_by']}, best at {rec['best_step']}), "
              f"inference {infer_s / 2:.1f} s/volume", flush=True)
    print(json.dumps({"command_args": vars(args), "threads": torch.get_num_threads(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
