"""How far each network's threshold is from the best one, in-family and cross-family.

For the M-Unet of each phantom family (``munet_<family>.model`` in ``--models``, from
``train_bench_networks.py`` or ``scribbleseg bench``) on volumes of each family, this pools
the voxels of ``--volumes`` and prints the IoU, precision and recall of ``p > 1/2``, and the
shift of the heart logit (``sigmoid(logit + offset) > 1/2``, offsets -2 .. 2 in steps of
0.05) with the best IoU.  If the best offsets of a network agree in-family and cross-family,
a threshold calibrated on the network's own validation volumes would carry over to other
stacks; if they do not, it would not.  ``--cache`` is shared with ``bench_settings.py``
(the networks' outputs per volume)::

    python benchmarks/bench_threshold.py --models /work/net3k --cache /tmp/feat --volumes 2 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

OFFSETS = np.round(np.arange(-40, 41) * 0.05, 2)


def counts(prob: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(3, len(OFFSETS))``: true positives, false positives and heart voxels for every offset."""
    p = np.clip(prob.astype(np.float64), 1e-6, 1 - 1e-6)
    logit = np.log(p / (1 - p))
    heart, background = np.sort(logit[truth]), np.sort(logit[~truth])
    tp = heart.size - np.searchsorted(heart, -OFFSETS, side="right")
    fp = background.size - np.searchsorted(background, -OFFSETS, side="right")
    return np.stack([tp, fp, np.full(OFFSETS.size, heart.size)])


def main(argv=None) -> int:
    from bench_settings import _outputs

    from ScribbleSegLib.commands.bench import model_path
    from ScribbleSegLib.model_file import load_model
    from ScribbleSegLib.phantom import FAMILIES
    from ScribbleSegLib.protocol import make_volumes

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="folder with munet_<family>.model files")
    parser.add_argument("--cache", type=Path, help="folder for the networks' outputs per volume (bench_settings.py's)")
    parser.add_argument("--volumes", type=int, nargs="+", default=[2, 3],
                        help="phantom indices (bench: 2 3 validation)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed of the set (bench: 0)")
    args = parser.parse_args(argv)

    vols = {f: make_volumes(max(args.volumes) + 1, args.seed, None, f) for f in FAMILIES}
    zero = int(np.flatnonzero(OFFSETS == 0)[0])
    print(f"Volumes {args.volumes} of each family; networks from {args.models}.\n")
    print("| network → volumes | IoU at 1/2 | precision | recall | best offset | its IoU |")
    print("|---|---|---|---|---|---|")
    for train in FAMILIES:
        model = load_model(model_path(args.models, "munet", train), device="cpu")
        for test in FAMILIES:
            total = sum(counts(_outputs(vols[test][i], model, args.cache, f"{train}_{test}{i}")[0],
                               vols[test][i].label > 0) for i in args.volumes)
            iou = total[0] / (total[2] + total[1])
            best = int(np.argmax(iou))
            precision = total[0, zero] / max(1, total[0, zero] + total[1, zero])
            print(f"| {train} → {test} | {iou[zero]:.4f} | {precision:.3f} | {total[0, zero] / total[2, zero]:.3f} | "
                  f"{OFFSETS[best]:+.2f} | {iou[best]:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
