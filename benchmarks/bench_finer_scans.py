"""Stacks scanned at a finer pixel than the model's: the M-Unet on them shrunk to the model's scale, or at their own.

Each phantom (families a and b) is cut to the 3 sections around its largest heart section and enlarged in-plane by
each factor (bilinear for the image, nearest for the label), its spacing divided by the factor: a scan at a higher
magnification, with its pixel size stated right.  ``pipeline.segment(method="munet")`` runs on it twice: as the
library does (shrunk to the model's pixel size up to ``network_scale.MAX_SHRINK`` times finer) and with
``MAX_SHRINK`` set to 1 (the network at the stack's own scale, as it ran beyond 4 times before).

Usage::

    python benchmarks/bench_finer_scans.py --factors 5 8 --seeds 7
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ScribbleSegLib import metrics, network_scale, phantom, pipeline
from ScribbleSegLib.geometry import Geometry, Volume
from ScribbleSegLib.model_file import load_model
from ScribbleSegLib.starter import resolve_model


def enlarged(array: np.ndarray, factor: int, smooth: bool) -> np.ndarray:
    """``(Z, Y, X[, 3])`` uint8 enlarged in-plane by ``factor``."""
    t = torch.from_numpy(array).float()
    t = t.permute(0, 3, 1, 2) if array.ndim == 4 else t[:, None]
    if smooth:
        t = torch.nn.functional.interpolate(t, scale_factor=factor, mode="bilinear", align_corners=False)
    else:
        t = torch.nn.functional.interpolate(t, scale_factor=factor, mode="nearest")
    t = t.permute(0, 2, 3, 1) if array.ndim == 4 else t[:, 0]
    return t.round().clamp(0, 255).to(torch.uint8).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[5, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7])
    parser.add_argument("--shape", type=int, nargs=3, default=[6, 160, 160])
    args = parser.parse_args()
    model = load_model(resolve_model("starter"), device="cpu")
    shrink = network_scale.MAX_SHRINK
    print("| family | seed | finer by | section (px) | shrunk to the model's scale | at its own scale |")
    print("|---|---|---|---|---|---|")
    for family in phantom.FAMILIES:
        for seed in args.seeds:
            made = phantom.make_phantom(seed=seed, config=phantom.family_config(family, args.shape))
            middle = int(made.label.reshape(len(made.label), -1).sum(axis=1).argmax())
            part = slice(max(0, middle - 1), middle + 2)
            sx, sy, sz = made.image.geometry.spacing
            for factor in args.factors:
                image = enlarged(made.image.array[part], factor, smooth=True)
                label = enlarged(made.label[part].astype(np.uint8), factor, smooth=False)
                volume = Volume(image, Geometry((sx / factor, sy / factor, sz)))
                cells = []
                for limit in (shrink, 1.0):
                    network_scale.MAX_SHRINK = limit
                    start = time.perf_counter()
                    result = pipeline.segment(volume, None, model, method="munet", device="cpu")
                    cells.append(f"{metrics.evaluate(result.labels, label)['iou']:.3f} "
                                 f"({time.perf_counter() - start:.1f} s)")
                network_scale.MAX_SHRINK = shrink
                print(f"| {family} | {seed} | {factor} | {image.shape[1]} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
