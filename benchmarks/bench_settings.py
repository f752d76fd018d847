"""Candidate settings on the bench's validation volumes, in-family and cross-family.

Runs the pipeline with each candidate setting (``DDMLConfig`` and ``GraphCutParams``
fields, as a job file gives them) on the validation volumes of ``scribbleseg
bench`` (volumes 2 and 3 of each phantom family) with the networks it trained,
for every protocol (networks of family F on volumes of family G) and scribble
pattern (round 1: every 10th heart section), and prints the IoU of each stage
(M-Unet ``p > 1/2``, adapted ``h > 1/2``, the cut) as the mean over the four
protocols, in-family and cross-family.  This is how a default is checked before
it changes; the test volumes (4 and 5) stay out of it::

    python benchmarks/bench_settings.py --models scribbleseg-bench \\
        --settings '{"name": "100 steps", "ddml": {"steps": 100}}' '{"name": "gamma 12", "cut": {"gamma": 12}}'

The defaults are always run first.  ``--cache DIR`` keeps the networks' outputs per
volume (``<model family>_<volume family><index>.npz``), so a second run skips the
M-Unet (a cache folder holds one ``--orientations``).  ``--rounds R`` runs the
bench's interactive rounds (round 1, then corrective strokes on the worst sections,
:func:`ScribbleSegLib.protocol.run_rounds`) and prints the adapted and final IoU of
every round, the largest drop between rounds and the largest share of one class's strokes that the
network labels the other way in any round (``pipeline.network_doubt``); with ``--warm`` each round's
cut and DDML network start from the last round's, as in the warm session that the Slicer module runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STAGES = ("M-Unet", "+ adaptation", "+ cut")


def _outputs(volume, model, cache: Path, name: str, orientations: int = 1):
    """The M-Unet's probability and features of a volume, from ``cache`` when there."""
    from ScribbleSegLib import protocol
    from ScribbleSegLib.pipeline import network_scale

    path = None if cache is None else cache / f"{name}.npz"
    if path is not None and path.exists():
        with np.load(path) as stored:
            return stored["prob"], stored["feats"]
    scale = network_scale(volume.image.geometry.spacing[:2], model)
    prob, feats = protocol.compute_outputs(volume.image.array, model, None, scale=scale,
                                           orientations=orientations).munet
    prob, feats = np.asarray(prob), np.asarray(feats)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, prob=prob, feats=feats)
    return prob, feats


def candidates_of(args, parser) -> list:
    """``[(name, DDMLConfig, GraphCutParams)]``: the defaults, then each ``--settings`` candidate."""
    from ScribbleSegLib.ddml import DDMLConfig
    from ScribbleSegLib.graphcut import GraphCutParams
    from ScribbleSegLib.jobs import replace_fields

    candidates = [("defaults", DDMLConfig(), GraphCutParams())]
    for text in args.settings:
        spec = json.loads(text)
        unknown = set(spec) - {"name", "ddml", "cut"}
        if unknown or "name" not in spec:
            parser.error(f"--settings {text!r}: expected {{\"name\": ..., \"ddml\": {{...}}, \"cut\": {{...}}}}")
        candidates.append((spec["name"], replace_fields(DDMLConfig(), spec.get("ddml", {}), "ddml"),
                           replace_fields(GraphCutParams(), spec.get("cut", {}), "cut")))
    return candidates


def _rounds(args, candidates) -> int:
    """The interactive rounds of every candidate on the bench's own families, in-family and cross-family."""
    from ScribbleSegLib import protocol
    from ScribbleSegLib.phantom import FAMILIES

    families = tuple(FAMILIES)
    vols = {f: protocol.make_volumes(max(args.volumes) + 1, args.seed, None, f) for f in families}
    print(f"{_volumes(args.volumes)} {args.volumes} of each family, {args.patterns} scribble pattern(s), "
          f"{args.rounds} rounds; networks from {args.models}.\n")
    return rounds_table(args, candidates, families, {f: {i: vols[f][i] for i in args.volumes} for f in families})


def rounds_table(args, candidates, trains, tests: Dict[str, Dict[int, object]]) -> int:
    """Run the interactive rounds of every candidate with the networks of ``trains`` (``munet_<family>.model`` in
    ``args.models``) on ``tests`` (family -> {index: phantom}) and print, per candidate and protocol, the mean
    M-Unet, adapted and final IoU of every round, the largest drop between rounds and the largest network doubt.

    ``args`` gives ``models``, ``cache``, ``patterns``, ``rounds``, ``warm`` and ``orientations`` (this script's
    options); ``benchmarks/bench_held_out.py`` calls it with a family the bench never sees.
    """
    from ScribbleSegLib import protocol, scribbles
    from ScribbleSegLib.metrics import evaluate
    from ScribbleSegLib.model_file import load_model

    runs: Dict[tuple, List[List[float]]] = {}
    for train in trains:
        model = load_model(args.models / f"munet_{train}.model", device="cpu")
        for test, volumes in tests.items():
            for i, v in volumes.items():
                features = _outputs(v, model, args.cache, f"{train}_{test}{i}", args.orientations)
                munet = evaluate(features[0] > 0.5, v.label)["iou"]
                for pattern in range(args.patterns):
                    s = scribbles.simulate_scribbles(v.label, seed=pattern, every=10, tissue=v.tissue > 0,
                                                     spacing=v.image.geometry.spacing)
                    for name, config, cut in candidates:
                        run = protocol.run_rounds(v.image, v.label, s, model, features, rounds=args.rounds,
                                                  cut_params=cut, ddml_config=config, warm=args.warm)
                        runs.setdefault((name, f"{train}→{test}"), []).append(
                            [munet] + [r.adapted["iou"] for r in run] + [r.final["iou"] for r in run]
                            + [r.network_doubt for r in run])
            print(f"{train}→{test} done", file=sys.stderr, flush=True)
    rounds = range(1, args.rounds + 1)
    print("| setting | protocol | M-Unet | " + " | ".join(f"adapted r{r}" for r in rounds) + " | "
          + " | ".join(f"final r{r}" for r in rounds) + " | largest drop | largest network doubt |")
    print("|---|---|---|" + "---|" * (2 * args.rounds + 2))
    final = slice(1 + args.rounds, 1 + 2 * args.rounds)
    for name, _, _ in candidates:
        means = []
        for protocol_name in (f"{a}→{b}" for a in trains for b in tests):
            table = np.array(runs[(name, protocol_name)])
            means.append(table[:, :final.stop].mean(axis=0))
            drop = -float(np.min(np.diff(table[:, final], axis=1)))
            # The network's disagreement with any round's strokes (choices.NETWORK_DOUBT warns above it).
            doubt = float(table[:, final.stop:].max())
            print(f"| {name} | {protocol_name} | " + " | ".join(f"{x:.4f}" for x in means[-1])
                  + f" | {drop:+.3f} | {doubt:.3f} |")
        print(f"| {name} | mean | " + " | ".join(f"{x:.4f}" for x in np.mean(means, axis=0)) + " | | |")
    return 0


def _volumes(indices) -> str:
    """What the phantom indices are in the bench: its validation volumes (2 and 3), or others (its test
    volumes are 4 and 5)."""
    return "Validation volumes" if sorted(indices) == [2, 3] else "Volumes"


def main(argv=None) -> int:
    from ScribbleSegLib import choices, scribbles
    from ScribbleSegLib.metrics import confusion, scores
    from ScribbleSegLib.model_file import load_model
    from ScribbleSegLib.phantom import FAMILIES
    from ScribbleSegLib.pipeline import segment
    from ScribbleSegLib.protocol import make_volumes

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="folder with munet_<family>.model files")
    parser.add_argument("--settings", nargs="*", default=[],
                        help='candidates, each a JSON object {"name": ..., "ddml": {...}, "cut": {...}}')
    parser.add_argument("--volumes", type=int, nargs="+", default=[2, 3],
                        help="phantom indices (bench: 2 3 validation)")
    parser.add_argument("--patterns", type=int, default=2, help="scribble patterns per volume")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed of the set (bench: 0)")
    parser.add_argument("--cache", type=Path, help="folder for the networks' outputs per volume")
    parser.add_argument("--rounds", type=int, default=1, help="interactive rounds per run (bench: 3)")
    parser.add_argument("--warm", action="store_true",
                        help="with --rounds: each round's cut and DDML network start from the last round's, as in a "
                             "warm session")
    parser.add_argument("--orientations", type=int, default=choices.DEFAULT_ORIENTATIONS, choices=choices.ORIENTATIONS,
                        help="test-time flips of the M-Unet (give each its own --cache folder)")
    args = parser.parse_args(argv)
    if args.rounds > 1:
        return _rounds(args, candidates_of(args, parser))

    candidates = candidates_of(args, parser)

    families = tuple(FAMILIES)
    vols = {f: make_volumes(max(args.volumes) + 1, args.seed, None, f) for f in families}
    iou: Dict[tuple, List[float]] = {}
    for train in families:
        model = load_model(args.models / f"munet_{train}.model", device="cpu")
        for test in families:
            protocol_name = f"{train}→{test}"
            for i in args.volumes:
                v = vols[test][i]
                features = _outputs(v, model, args.cache, f"{train}_{test}{i}", args.orientations)
                truth = v.label > 0
                for pattern in range(args.patterns):
                    s = scribbles.simulate_scribbles(v.label, seed=pattern, every=10, tissue=v.tissue > 0,
                                                     spacing=v.image.geometry.spacing)
                    for name, config, cut in candidates:
                        r = segment(v.image, s, model, features=features, ddml_config=config, cut_params=cut,
                                    suggest=0)
                        for stage, pred in zip(STAGES, (r.munet_probability > 0.5, r.probability > 0.5,
                                                        r.labels > 0)):
                            tp, fp, fn, _ = confusion(pred, truth)
                            iou.setdefault((name, stage, protocol_name), []).append(scores(tp, fp, fn)["iou"])
            print(f"{protocol_name} done", file=sys.stderr, flush=True)

    protocols = [f"{a}→{b}" for a in families for b in families]
    in_family = [p for p in protocols if p[0] == p[-1]]
    cross = [p for p in protocols if p[0] != p[-1]]

    def mean(name, stage, which):
        return float(np.mean([np.mean(iou[(name, stage, p)]) for p in which]))

    print(f"{_volumes(args.volumes)} {args.volumes} of each family, {args.patterns} scribble pattern(s), round 1 "
          f"(every 10th heart section); networks from {args.models}.\n")
    print("| setting | stage | mean of 4 protocols | in-family | cross-family | " + " | ".join(protocols) + " |")
    print("|---|---|---|---|---|" + "---|" * len(protocols))
    for name, _, _ in candidates:
        for stage in STAGES:
            cells = [mean(name, stage, protocols), mean(name, stage, in_family), mean(name, stage, cross)]
            cells += [mean(name, stage, [p]) for p in protocols]
            print(f"| {name} | {stage} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
