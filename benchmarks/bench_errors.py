"""Where the remaining error is: the heart's ends, its outline, or whole regions.

For each protocol of ``scribbleseg bench`` (train family -> test family), runs the
default pipeline once with the round-1 strokes (every 10th heart section) on the
test volumes and splits the wrong voxels of the M-Unet (``p > 0.5``), the adapted
``h > 0.5`` and the final cut with :func:`ScribbleSegLib.metrics.error_regions`:
``ends`` (sections within 10 % of either end of the heart, or outside it),
``boundary`` (a 2-pixel in-plane band around the true outline) and
``elsewhere``, with the IoU each would give if that part were fixed.  It uses the
networks that ``scribbleseg bench --out DIR`` trained::

    python benchmarks/bench_errors.py --models scribbleseg-bench [--volumes 4 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from ScribbleSegLib import protocol, scribbles
    from ScribbleSegLib.metrics import ERROR_REGIONS, error_regions, evaluate
    from ScribbleSegLib.model_file import load_model
    from ScribbleSegLib.phantom import FAMILIES
    from ScribbleSegLib.pipeline import network_scale, segment

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="folder with munet_<family>.model files")
    parser.add_argument("--volumes", type=int, nargs="+", default=[4, 5], help="phantom indices (bench: 4 5 test)")
    parser.add_argument("--pattern", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="phantom seed of the set (bench: 0)")
    args = parser.parse_args(argv)

    families = tuple(FAMILIES)
    vols = {f: protocol.make_volumes(max(args.volumes) + 1, args.seed, None, f) for f in families}
    print("| protocol | stage | IoU | wrong voxels | ends | boundary | elsewhere | IoU if ends fixed | "
          "if boundary fixed | if elsewhere fixed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for train in families:
        model = load_model(args.models / f"munet_{train}.model", device="cpu")
        for test in families:
            rows = {}
            for i in args.volumes:
                v = vols[test][i]
                scale = network_scale(v.image.geometry.spacing[:2], model)
                features = protocol.compute_outputs(v.image.array, model, None, scale=scale).munet
                s = scribbles.simulate_scribbles(v.label, seed=args.pattern, every=10, tissue=v.tissue > 0,
                                                 spacing=v.image.geometry.spacing)
                result = segment(v.image, s, model, features=features, suggest=0)
                for stage, pred in (("M-Unet", result.munet_probability > 0.5),
                                    ("+ adaptation", result.probability > 0.5), ("+ cut", result.labels)):
                    parts = error_regions(pred, v.label)
                    rows.setdefault(stage, []).append((evaluate(pred, v.label)["iou"], parts))
            for stage, runs in rows.items():
                wrong = np.mean([sum(p[n]["voxels"] for n in ERROR_REGIONS) for _, p in runs])
                share = " | ".join(f"{100 * np.mean([p[n]['share'] for _, p in runs]):.0f} %" for n in ERROR_REGIONS)
                fixed = " | ".join(f"{np.mean([p[n]['iou_if_fixed'] for _, p in runs]):.3f}" for n in ERROR_REGIONS)
                print(f"| {train}→{test} | {stage} | {np.mean([iou for iou, _ in runs]):.3f} | {wrong:.0f} | "
                      f"{share} | {fixed} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
