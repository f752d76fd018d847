"""Interactive rounds on phantoms with a given model: does every correct stroke help?

Round 1 uses the sparse strokes of the paper's protocol (every ``--every``-th heart
section); every later round adds corrective strokes inside the largest wrong regions
of the worst sections (:func:`ScribbleSegLib.scribbles.corrective_scribbles`) and runs
again on the same features.  Prints the IoU of every round per volume and pattern,
flags any drop of more than 0.01, and says how often the suggested sections were among
the truth's worst.  ``scribbleseg bench`` runs the same rounds in its four protocols;
this script is for one model and one family, e.g. a model of your own::

    python benchmarks/bench_rounds.py --model scribbleseg-bench/munet_a.model --family b \\
        [--volumes 4 5] [--patterns 0 1 2] [--rounds 3] [--gamma G] [--data-term linear|log] [--paper]
        [--shape Z Y X]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from ScribbleSegLib import protocol, scribbles
    from ScribbleSegLib.ddml import DDMLConfig
    from ScribbleSegLib.graphcut import GraphCutParams
    from ScribbleSegLib.model_file import load_model
    from ScribbleSegLib.phantom import FAMILIES
    from ScribbleSegLib.pipeline import network_scale

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model file (or 'starter')")
    parser.add_argument("--family", default="a", choices=tuple(FAMILIES))
    parser.add_argument("--volumes", type=int, nargs="+", default=[4, 5], help="phantom indices (bench: 4 5 test)")
    parser.add_argument("--patterns", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=protocol.ROUNDS)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="phantom seed of the set (bench: 0)")
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="phantom shape (default the family's; e.g. 32 128 128 for a coarser one)")
    parser.add_argument("--gamma", type=float, default=None)
    parser.add_argument("--data-term", choices=("linear", "log"), default=None)
    parser.add_argument("--paper", action="store_true", help="the paper's adaptation (DDMLConfig.paper())")
    args = parser.parse_args(argv)

    from ScribbleSegLib.starter import resolve_model

    model = load_model(resolve_model(args.model), device="cpu")
    cut = GraphCutParams()
    cut = dataclasses.replace(cut, **{k: v for k, v in (("gamma", args.gamma), ("data_term", args.data_term))
                                     if v is not None})
    ddml = DDMLConfig.paper() if args.paper else DDMLConfig()
    vols = protocol.make_volumes(max(args.volumes) + 1, args.seed, args.shape, args.family)
    started = time.perf_counter()
    runs = []
    for i in args.volumes:
        v = vols[i]
        outputs = protocol.compute_outputs(v.image.array, model, None,
                                           scale=network_scale(v.image.geometry.spacing[:2], model))
        for p in args.patterns:
            s = scribbles.simulate_scribbles(v.label, seed=p, every=args.every, tissue=v.tissue > 0,
                                             spacing=v.image.geometry.spacing)
            run = protocol.run_rounds(v.image, v.label, s, model, outputs.munet, rounds=args.rounds,
                                      cut_params=cut, ddml_config=ddml)
            runs.append(run)
            flags = ["DROP" if r and run[r].final["iou"] < run[r - 1].final["iou"] - protocol.DROP_TOLERANCE else ""
                     for r in range(len(run))]
            print(f"volume {i} pattern {p}: " + " -> ".join(f"{x.final['iou']:.3f}{' ' + f if f else ''}"
                                                           for x, f in zip(run, flags)), flush=True)
    print()
    print(protocol.rounds_table({f"{Path(args.model).name} on family {args.family}": runs}))
    print(f"\n{len(runs)} runs of {args.rounds} rounds in {time.perf_counter() - started:.0f} s; cut {cut}; "
          f"DDML share {ddml.scribble_share}, network weight {ddml.network_weight}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
