"""Strokes on another organ than the model's: what the result is, and whether the run says so.

The starter model, and every model ``scribbleseg train`` makes from traced hearts,
knows the heart.  A user may paint strokes on another organ with it.  For each
target tissue of the phantom (the heart, and the liver, the lung and the neural
tube, which no model here was trained for), this runs the default pipeline on
the bench's test volumes of a family with strokes on every 10th section of the
target (:func:`ScribbleSegLib.scribbles.simulate_scribbles`, as the bench draws
them for the heart), and prints the share of each class's strokes that the
network labels the other way (:func:`ScribbleSegLib.pipeline.network_doubt`),
whether the run warned (:data:`ScribbleSegLib.choices.NETWORK_DOUBT`), and the
IoU of each stage against the target, with the default settings (which leave the
model's training pixels out of the adaptation above that doubt,
``DDMLConfig.bank_doubt``) and, for the last two stages, with the bank always kept
(``bank_doubt=None``, as before)::

    python benchmarks/bench_other_target.py [--model starter] [--family a] [--volumes 4 5]

With ``--nuclei`` it strokes the nuclei of ``bench_nuclei.py``'s synthetic H&E tiles instead (tiles 10-12
of four of its conditions), which the heart model calls background, and prints the adapted stage and the
cut with the network's probability weighed as the default weighs it where the strokes contradict the
network (``DDMLConfig.doubted_network_weight``), as before it (0.5, the weight elsewhere) and not at all::

    python benchmarks/bench_other_target.py --nuclei
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def targets() -> dict:
    """Target name -> the phantom's tissue codes that make it up."""
    from ScribbleSegLib.phantom import HEART_TISSUES, Tissue

    return {"heart": HEART_TISSUES, "liver": (Tissue.LIVER, Tissue.LIVER_BLOOD, Tissue.HEMATOPOIETIC),
            "lung": (Tissue.LUNG,), "neural tube": (Tissue.NEURAL,)}


def model_and_volumes(description: str, argv=None, nuclei_option: bool = False):
    """``(args, model, volumes)`` of a script that runs a model on the bench's volumes of one family:
    its ``--model``, ``--family``, ``--volumes`` and ``--seed``, the loaded model (on the CPU) and the
    phantom volumes up to the last one asked for.  The runs' warnings are silenced."""
    from ScribbleSegLib import pipeline, protocol
    from ScribbleSegLib.phantom import FAMILIES
    from ScribbleSegLib.starter import resolve_model

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="starter", help="model file (default: the shipped starter model)")
    parser.add_argument("--family", default="a", choices=tuple(FAMILIES), help="phantom family of the volumes")
    parser.add_argument("--volumes", type=int, nargs="+", default=[4, 5], help="phantom indices (bench: 4 5 test)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed of the set (bench: 0)")
    if nuclei_option:
        parser.add_argument("--nuclei", action="store_true", help="stroke the nuclei of bench_nuclei.py's tiles")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    model = pipeline.as_model(str(resolve_model(args.model)), "cpu")
    if getattr(args, "nuclei", False):
        return args, model, None
    return args, model, protocol.make_volumes(max(args.volumes) + 1, args.seed, None, args.family)


def nuclei(model) -> None:
    """The ``--nuclei`` table: IoU pooled over tiles 10-12 of each condition, per weight of the network."""
    from bench_nuclei import OTHER_STAIN, PURPLE_STAIN, make_tile
    from ScribbleSegLib import pipeline, protocol, scribbles
    from ScribbleSegLib.ddml import DDMLConfig

    weights = {f"default ({DDMLConfig().doubted_network_weight:g})": DDMLConfig(),
               "0.5 (as before)": DDMLConfig(doubted_network_weight=0.5),
               "0": DDMLConfig(doubted_network_weight=0.0)}
    print("Strokes on the nuclei of bench_nuclei.py's tiles 10-12 in each condition; IoU pooled over them.\n")
    print("| condition | network doubt (heart / background strokes) | M-Unet | "
          + " | ".join(f"+ adaptation, {w} | + cut, {w}" for w in weights) + " |")
    print("|---|---|---|" + "---|---|" * len(weights))
    for name, m, stain in (("training stain, 1x", 1, None), ("other stain, 1x", 1, OTHER_STAIN),
                           ("training stain, 2x", 2, None), ("purple stain, 1x", 1, PURPLE_STAIN)):
        sums: dict = {}
        doubts = []

        def add(key, labels, truth):
            s = sums.setdefault(key, np.zeros(2))
            s += (np.count_nonzero(labels & truth), np.count_nonzero(labels | truth))

        for seed in range(10, 13):
            volume, truth = make_tile(seed, m, stain, 256)
            outputs = protocol.compute_outputs(volume.array, model, None,
                                               scale=pipeline.network_scale(volume.geometry.spacing[:2], model)).munet
            strokes = scribbles.simulate_scribbles(truth, seed=seed, every=1, spacing=volume.geometry.spacing)
            doubts.append(pipeline.network_doubt(strokes, outputs[0]))
            add("M-Unet", outputs[0] > 0.5, truth > 0)
            for w, config in weights.items():
                r = pipeline.segment(volume, strokes, model, features=outputs, ddml_config=config, suggest=0)
                add(("adaptation", w), r.probability > 0.5, truth > 0)
                add(("cut", w), r.labels > 0, truth > 0)
        low = np.min(doubts, axis=0)
        cells = [sums["M-Unet"]] + [sums[stage, w] for w in weights for stage in ("adaptation", "cut")]
        print(f"| {name} | {low[0]:.2f}+ / {low[1]:.2f}+ | " + " | ".join(f"{c[0] / c[1]:.3f}" for c in cells)
              + " |", flush=True)


def print_table_head(args, columns) -> None:
    """The line naming the model, family and volumes of a script of :func:`model_and_volumes` whose runs
    stroke every 10th heart section, and the head of its table: ``volume``, ``columns``, the three stages."""
    print(f"Model {args.model}; family {args.family}, volumes {args.volumes}; strokes on every 10th heart section.\n")
    names = ["volume", *columns, "M-Unet", "+ adaptation", "+ cut"]
    print("| " + " | ".join(names) + " |")
    print("|" + "---|" * len(names))


def stage_ious(image: np.ndarray, strokes: np.ndarray, model, volume) -> str:
    """The IoU of the M-Unet, the adapted stage and the cut of ``image`` with ``strokes`` against
    ``volume``'s truth, as table cells (``0.8173 | 0.8265 | 0.9006``)."""
    from ScribbleSegLib import pipeline
    from ScribbleSegLib.metrics import evaluate

    result = pipeline.segment(image, strokes, model, spacing=volume.image.geometry.spacing, device="cpu")
    return " | ".join(f"{evaluate(labels, volume.label)['iou']:.4f}" for labels in
                      (result.munet_probability > 0.5, result.probability > 0.5, result.labels))


def main(argv=None) -> int:
    from ScribbleSegLib import pipeline, scribbles
    from ScribbleSegLib.ddml import DDMLConfig
    from ScribbleSegLib.metrics import evaluate

    # The runs' warnings are the table's "warned" column.
    args, model, volumes = model_and_volumes(__doc__.split("\n\n")[0], argv, nuclei_option=True)
    if args.nuclei:
        nuclei(model)
        return 0
    print(f"Model {args.model}; family {args.family}, volumes {args.volumes}; strokes on every 10th section of "
          "the target.\n")
    print("| target | volume | target's share of the voxels | network doubt (heart / background strokes) | warned | "
          "M-Unet | + adaptation | + cut | + adaptation, bank kept | + cut, bank kept |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    kept = DDMLConfig(bank_doubt=None)
    for i in args.volumes:
        v = volumes[i]
        scale = pipeline.network_scale(v.image.geometry.spacing[:2], model)
        features = pipeline.compute_features(v.image.array, model, device="cpu", scale=scale)[:2]
        for name, codes in targets().items():
            truth = np.isin(v.tissue, codes).astype(np.uint8)
            strokes = scribbles.simulate_scribbles(truth, seed=0, every=10, tissue=v.tissue > 0,
                                                   spacing=v.image.geometry.spacing)
            doubt = pipeline.network_doubt(strokes, features[0])
            result = pipeline.segment(v.image, strokes, model, features=features, suggest=0)
            warned = any(w.startswith("the model's network calls") for w in result.warnings)
            as_before = pipeline.segment(v.image, strokes, model, features=features, suggest=0, ddml_config=kept)
            stages = (result.munet_probability > 0.5, result.probability > 0.5, result.labels,
                      as_before.probability > 0.5, as_before.labels)
            ious = [evaluate(stage, truth)["iou"] for stage in stages]
            print(f"| {name} | {i} | {truth.mean():.4f} | {doubt[0]:.2f} / {doubt[1]:.2f} | "
                  f"{'yes' if warned else 'no'} | " + " | ".join(f"{x:.3f}" for x in ious) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
