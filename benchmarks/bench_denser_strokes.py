"""Correct strokes added on more sections: does the result ever fall?

The interactive rounds (``bench_rounds.py``) add corrective strokes where the last result was
wrong; a user may as well add ordinary strokes on more sections.  This script strokes every
``--every[0]``-th heart section of each phantom (as ``scribbleseg bench``'s round 1), then adds
strokes on every ``--every[1]``-th, ``--every[2]``-th, ... heart section, on the sections not stroked
yet (the earlier strokes stay as they are: each set holds the one before), and segments with each
set on the same network outputs.  Prints the final IoU per set, volume and pattern, and flags a
fall of more than 0.01 from one set to the next::

    python benchmarks/bench_denser_strokes.py [--model starter] [--families a b] [--volumes 0 1] \\
        [--seed 9] [--patterns 0 1] [--every 10 2 1] [--shape Z Y X] [--seed-reach PIXELS]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: A fall larger than this from one set of strokes to the next is flagged (the issue's limit).
LARGEST_FALL = 0.01


def added_on_new_sections(strokes: np.ndarray, more: np.ndarray) -> np.ndarray:
    """``strokes`` with ``more``'s strokes on the sections ``strokes`` leaves empty."""
    out = strokes.copy()
    empty = ~strokes.reshape(len(strokes), -1).any(axis=1)
    out[empty] = more[empty]
    return out


def main(argv=None) -> int:
    from ScribbleSegLib import metrics, pipeline, protocol, scribbles
    from ScribbleSegLib.graphcut import GraphCutParams
    from ScribbleSegLib.phantom import FAMILIES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="starter", help="model file (default: the shipped starter model)")
    parser.add_argument("--families", nargs="+", default=["a", "b"], choices=tuple(FAMILIES))
    parser.add_argument("--volumes", type=int, nargs="+", default=[0, 1], help="phantom indices")
    parser.add_argument("--seed", type=int, default=9, help="phantom seed of the set (bench: 0)")
    parser.add_argument("--patterns", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--every", type=int, nargs="+", default=[10, 2, 1],
                        help="stroke every N-th heart section, then add every M-th, ... (default 10 2 1)")
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"))
    parser.add_argument("--seed-reach", type=float, default=None, help="GraphCutParams.seed_reach (0: no pull)")
    args = parser.parse_args(argv)
    if len(args.every) < 2 or any(n < 1 for n in args.every):
        parser.error("--every needs two or more positive numbers")

    model = pipeline.as_model(args.model, "cpu")
    params = GraphCutParams()
    if args.seed_reach is not None:
        params = dataclasses.replace(params, seed_reach=args.seed_reach)
    started = time.perf_counter()
    chains, flagged = [], 0
    for family in args.families:
        volumes = protocol.make_volumes(max(args.volumes) + 1, args.seed, args.shape, family)
        for index in args.volumes:
            volume = volumes[index]
            scale = pipeline.network_scale(volume.image.geometry.spacing[:2], model)
            outputs = protocol.compute_outputs(volume.image.array, model, None, scale=scale).munet
            truth = volume.label > 0
            for pattern in args.patterns:
                strokes, ious = None, []
                for step, every in enumerate(args.every):
                    more = scribbles.simulate_scribbles(volume.label, seed=pattern + 10 * step, every=every,
                                                        spacing=volume.image.geometry.spacing)
                    strokes = more if strokes is None else added_on_new_sections(strokes, more)
                    result = pipeline.segment(volume.image, strokes, model, method="full", features=outputs,
                                              cut_params=params)
                    ious.append(metrics.evaluate(result.labels, truth)["iou"])
                fall = max([0.0] + [a - b for a, b in zip(ious, ious[1:])])
                flagged += fall > LARGEST_FALL
                chains.append(ious)
                print(f"{family}{index} pattern {pattern}: " + " -> ".join(f"{v:.4f}" for v in ious)
                      + (f"  FALL {fall:.4f}" if fall > LARGEST_FALL else ""), flush=True)
    means = np.mean(chains, axis=0)
    sets = " -> ".join(f"every {n}: {m:.4f}" for n, m in zip(args.every, means))
    largest = max(max([0.0] + [a - b for a, b in zip(c, c[1:])]) for c in chains)
    print(f"mean {sets}; largest fall {largest:.4f}; falls over {LARGEST_FALL}: {flagged} of {len(chains)} "
          f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
