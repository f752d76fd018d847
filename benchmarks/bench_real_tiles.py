"""Real H&E tiles with expert outlines, through the command line: does each stage improve on the one before?

The protocol of the issue "Scribbles that carry the result" on real tiles: a small M-Unet trained on a few
tiles with their masks (``scribbleseg train``), strokes drawn on held-out tiles
(:func:`scribbles.simulate_scribbles`, a few strokes per class), and each stage of ``scribbleseg segment``
(``--method munet``, ``ddml``, ``full``) scored by ``scribbleseg evaluate --ignore-scribbles``.  Every step
is the command a user would type, in a subprocess.

The tiles are not in this repository.  Any folder of images with a folder of masks of the same stems works
(a mask > 127 in any channel is the target; JPEG masks are read so too, and written here as PNG labels, since
the command line refuses JPEG labels).  BENCHMARKS.md used the 14 MoNuSeg 2018 test tiles (1000x1000, 40x,
nuclei outlined by pathologists) as stored in ``mini_test/`` of the GitHub repository
sarah-antillia/Tiled-ImageMask-Dataset-MoNuSeg::

    python benchmarks/bench_real_tiles.py --images mini_test/images --masks mini_test/masks --work /tmp/real

and 22 GlaS 2015 test tiles (775x522, 20x, colon glands outlined by pathologists) as stored in
``projects/TensorflowSlightlyFlexibleUNet/GlaS-MICCAI2015/mini_test/`` of
sarah-antillia/Tensorflow-Image-Segmentation-Augmented-GlaS-MICCAI2015, with ``--pixel-um 0.62``, and the 10
OCDC tiles (640x640, oral squamous cell carcinoma regions outlined in H&E, all from one slide) as stored in
``projects/TensorflowSlightlyFlexibleUNet/OCDC/mini_test/`` of sarah-antillia/Tensorflow-Image-Segmentation-OCDC,
with ``--pixel-um 0.5`` (a 20x scan assumed: the repository states no pixel size): a region (tissue) target, as
an organ is, where the other two are objects.  A fourth, also a region: the first 14 CAMELYON tiles (512x512,
lymph-node metastases; masks blurred by the repository, thresholded here) in name order, as stored in
``projects/TensorflowSlightlyFlexibleUNet/Camelyon-Resampled/mini_test/`` of
sarah-antillia/Tensorflow-Image-Segmentation-Augmented-CAMELYON-Resampled, with ``--pixel-um 1.0`` (assumed
from the lymphocytes' size: the repository states none).

Tiles are taken in name order: ``--train`` for training, ``--val`` for validation, the rest for testing.
``--segment-args`` adds options to every ``full`` run (``"--gamma 4"``), and then only the ``full`` runs
are made again, into their own folder, with the network and the other stages reused.  ``--rounds R`` then
adds corrective strokes to each run's cut, round by round, as ``scribbleseg bench`` does; with ``--session`` the
rounds run through a warm session, as the Slicer panel's worker runs them, not a command each.  ``--model starter``
runs the shipped heart model instead of a trained one: a user's first strokes on a target it was not
trained for.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STAGES = ("munet", "ddml", "full")
NAMES = {"munet": "M-Unet", "ddml": "+ adaptation", "full": "+ cut"}


def cli(*args: str) -> str:
    """Run ``scribbleseg ARGS`` as a user would; its stdout, or a SystemExit with its last error line."""
    done = subprocess.run([sys.executable, "-m", "ScribbleSegLib", *args], capture_output=True, text=True,
                          cwd=ROOT)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise SystemExit(f"scribbleseg {' '.join(args[:3])} ...: {last}")
    return done.stdout


def prepare(images: Path, masks: Path, work: Path, seeds: int) -> List[str]:
    """PNG images, binary PNG labels and stroke files of seeds ``0..seeds-1`` in ``work``; the tiles' names."""
    import SimpleITK as sitk

    from ScribbleSegLib import scribbles

    names = []
    for image in sorted(p for p in images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif",
                                                                              ".tiff")):
        found = [m for m in masks.glob(image.stem + ".*")]
        if not found:
            continue
        names.append(image.stem)
        if (work / f"{image.stem}_s{seeds - 1}.png").exists():
            continue
        rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(image)))
        if rgb.ndim == 2:  # a grey tile
            rgb = np.repeat(rgb[..., None], 3, axis=-1)
        rgb = rgb[..., :3]
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(found[0])))
        # Any channel: data sets colour-code their classes (one class red, another green).
        label = ((mask.max(axis=-1) if mask.ndim == 3 else mask) > 127).astype(np.uint8)
        sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(work / f"{image.stem}.png"))
        sitk.WriteImage(sitk.GetImageFromArray(label), str(work / f"{image.stem}_label.png"))
        for seed in range(seeds):
            strokes = scribbles.simulate_scribbles(label[None], seed=seed, every=1)[0]
            sitk.WriteImage(sitk.GetImageFromArray(strokes), str(work / f"{image.stem}_s{seed}.png"))
    return names


def score(work: Path, out: Path, name: str, seed: int, model, method: str, spacing: Sequence[str],
          extra: Sequence[str], strokes: Optional[Path] = None, result: Optional[Path] = None) -> Dict[str, float]:
    """Segment one tile with one stroke pattern and one method, and score it without the voxels of the
    pattern's first strokes (``strokes``: this round's, by default the first)."""
    first = work / f"{name}_s{seed}.png"
    strokes = strokes or first
    result = result or out / f"{name}_s{seed}_{method}.seg.nrrd"
    cli("segment", "--image", str(work / f"{name}.png"), "--spacing", *spacing, "--scribbles", str(strokes),
        "--model", str(model), "--method", method, "--out", str(result), "--cache-dir", str(work / "cache"),
        "--quiet", *extra)
    return json.loads(cli("evaluate", "--prediction", str(result), "--label", str(work / f"{name}_label.png"),
                          "--ignore-scribbles", str(first), "--json"))


def next_strokes(label: np.ndarray, last: np.ndarray, strokes: np.ndarray, seed: int, r: int,
                 per_round: int) -> np.ndarray:
    """Round ``r``'s strokes: ``per_round`` more inside the largest wrong regions of the ``last`` result."""
    from ScribbleSegLib import scribbles

    return scribbles.corrective_scribbles(label, last, strokes, seed=seed * 100 + r, sections=1, strokes=per_round)


def session_rounds(work: Path, name: str, seed: int, model, spacing: Sequence[str], rounds: int,
                   per_round: int) -> List[float]:
    """IoU of rounds 1..``rounds`` of one tile and stroke pattern through a warm
    :class:`~ScribbleSegLib.session.Session` (what the Slicer panel's worker runs: each round's cut and DDML
    network start from the last round's), the strokes drawn as :func:`corrective_rounds` draws them, scored as
    ``evaluate --ignore-scribbles`` scores."""
    import SimpleITK as sitk

    from ScribbleSegLib import image_reading
    from ScribbleSegLib.metrics import evaluate
    from ScribbleSegLib.session import Session

    image = image_reading.read_image(work / f"{name}.png", spacing=tuple(float(v) for v in spacing))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(work / f"{name}_label.png")))[None]
    first = sitk.GetArrayFromImage(sitk.ReadImage(str(work / f"{name}_s{seed}.png")))[None]
    session = Session(image, str(model), device="cpu", cache_dir=work / "cache")
    strokes = first
    last = np.array(session.run(strokes.copy()).labels)
    ious = [evaluate(last, label, ignore=first > 0)["iou"]]
    for r in range(2, rounds + 1):
        strokes = next_strokes(label, last, strokes, seed, r, per_round)
        last = np.array(session.run(strokes.copy()).labels)
        ious.append(evaluate(last, label, ignore=first > 0)["iou"])
    return ious


def corrective_rounds(work: Path, out: Path, name: str, seed: int, model, spacing: Sequence[str],
                      extra: Sequence[str], rounds: int, per_round: int) -> List[float]:
    """IoU of rounds 2..``rounds`` of one tile and stroke pattern: each round adds ``per_round`` strokes inside
    the largest wrong regions of the last round's cut (:func:`scribbles.corrective_scribbles`, earlier strokes
    kept) and runs the cut again.  Round 1 is the ``full`` run already made."""
    import SimpleITK as sitk

    from ScribbleSegLib import volume_io

    label = sitk.GetArrayFromImage(sitk.ReadImage(str(work / f"{name}_label.png")))[None]
    strokes = sitk.GetArrayFromImage(sitk.ReadImage(str(work / f"{name}_s{seed}.png")))[None]
    result = out / f"{name}_s{seed}_full.seg.nrrd"
    ious = []
    for r in range(2, rounds + 1):
        last = volume_io.read_label_volume(result).array.reshape(label.shape)
        strokes = next_strokes(label, last, strokes, seed, r, per_round)
        path = out / f"{name}_s{seed}_r{r}.png"
        sitk.WriteImage(sitk.GetImageFromArray(strokes[0]), str(path))
        result = out / f"{name}_s{seed}_r{r}_full.seg.nrrd"
        ious.append(score(work, out, name, seed, model, "full", spacing, extra, strokes=path, result=result)["iou"])
    return ious


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="folder of RGB tiles")
    parser.add_argument("--masks", type=Path, required=True, help="folder of masks with the tiles' stems")
    parser.add_argument("--work", type=Path, required=True, help="folder for labels, strokes, model and results")
    parser.add_argument("--train", type=int, default=4, help="tiles to train on (the first in name order)")
    parser.add_argument("--val", type=int, default=1, help="tiles for validation (the next ones)")
    parser.add_argument("--seeds", type=int, default=3, help="stroke patterns per test tile")
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget (scribbleseg train)")
    parser.add_argument("--pixel-um", type=float, default=0.25, help="the tiles' pixel size (0.25: a 40x scan)")
    parser.add_argument("--model", default=None,
                        help="a model to use instead of training one ('starter': the shipped heart model)")
    parser.add_argument("--segment-args", default="", help="options added to every full run, e.g. '--gamma 4'")
    parser.add_argument("--rounds", type=int, default=1,
                        help="interactive rounds: each after the first adds corrective strokes and cuts again")
    parser.add_argument("--per-round", type=int, default=4, help="corrective strokes per tile and round")
    parser.add_argument("--session", action="store_true",
                        help="with --rounds: run the rounds through a warm Session (the Slicer panel's worker) "
                             "instead of a command per round")
    args = parser.parse_args(argv)
    if args.session and args.segment_args:  # before any work
        raise SystemExit("--session runs the library's defaults: it takes no --segment-args")

    args.work.mkdir(parents=True, exist_ok=True)
    names = prepare(args.images, args.masks, args.work, args.seeds)
    train, val, test = (names[:args.train], names[args.train:args.train + args.val],
                        names[args.train + args.val:])
    if not train or not test:
        raise SystemExit(f"{len(names)} tiles with masks: too few for {args.train} training tiles and a test")
    spacing = [f"{args.pixel_um / 1000:g}"] * 2 + [f"{4 * args.pixel_um / 1000:g}"]
    model = args.model or args.work / "tiles.model"
    if args.model is None and not model.exists():
        start = time.perf_counter()
        cli("train", "--images", *(str(args.work / f"{n}.png") for n in train),
            "--labels", *(str(args.work / f"{n}_label.png") for n in train),
            *(["--val-images", *(str(args.work / f"{n}.png") for n in val),
               "--val-labels", *(str(args.work / f"{n}_label.png") for n in val)] if val else []),
            "--spacing", *spacing, "--max-minutes", f"{args.minutes:g}", "--out", str(model), "--quiet")
        print(f"trained on {', '.join(train)} in {time.perf_counter() - start:.0f} s")
    extra = shlex.split(args.segment_args)
    base = args.work / ("results" if args.model is None else f"results {Path(args.model).name}")
    out = Path(f"{base} {' '.join(extra)}") if extra else base
    if extra and not all((base / f"{n}_{m}.json").exists() for n in test for m in STAGES[:2]):
        raise SystemExit(f"--segment-args reuses the other stages of a run without it: run that first ({base})")
    out.mkdir(exist_ok=True)
    results: Dict[str, Dict[str, List[dict]]] = {}
    for name in test:
        results[name] = {}
        for method in STAGES:
            seeds = range(1) if method == "munet" else range(args.seeds)  # the network does not see the strokes
            if extra and method != "full":
                got = [json.loads(line) for line in (base / f"{name}_{method}.json").read_text().splitlines()]
            else:
                got = [score(args.work, out, name, s, model, method, spacing, extra if method == "full" else [])
                       for s in seeds]
                (out / f"{name}_{method}.json").write_text("\n".join(json.dumps(r) for r in got))
            results[name][method] = got

    with_args = f"; full runs with {args.segment_args}" if extra else ""
    print(f"{len(test)} test tiles, {args.seeds} stroke patterns each{with_args}")
    print("| tile | " + " | ".join(NAMES[m] for m in STAGES) + " |")
    print("|---|" + "---|" * len(STAGES))
    for name in test:
        print(f"| {name} | " + " | ".join(f"{statistics.mean(r['iou'] for r in results[name][m]):.4f}"
                                          for m in STAGES) + " |")
    means = {m: statistics.mean(statistics.mean(r["iou"] for r in results[n][m]) for n in test) for m in STAGES}
    pooled = {}
    for m in STAGES:
        tp = sum(r["tp"] for n in test for r in results[n][m])
        pooled[m] = tp / (tp + sum(r["fp"] + r["fn"] for n in test for r in results[n][m]))
    print("| mean over tiles | " + " | ".join(f"{means[m]:.4f}" for m in STAGES) + " |")
    print("| pooled voxels | " + " | ".join(f"{pooled[m]:.4f}" for m in STAGES) + " |")
    for before, after in zip(STAGES, STAGES[1:]):
        falls = sum(statistics.mean(r["iou"] for r in results[n][after])
                    < statistics.mean(r["iou"] for r in results[n][before]) - 0.01 for n in test)
        print(f"{NAMES[after]} below {NAMES[before]} by more than 0.01: {falls} of {len(test)} tiles")
    if args.rounds > 1:
        # One row per tile and pattern: the cut's IoU by round, round 1 being the full run above.
        named = [(n, s) for n in test for s in range(args.seeds)]
        if args.session:  # round 1 too: the session's own first run (the command line's, to the bit, so far)
            runs = [session_rounds(args.work, n, s, model, spacing, args.rounds, args.per_round) for n, s in named]
        else:
            runs = [[results[n]["full"][s]["iou"]] + corrective_rounds(args.work, out, n, s, model, spacing, extra,
                                                                        args.rounds, args.per_round)
                    for n, s in named]
        drops = [max(a - b for a, b in zip(run, run[1:])) for run in runs]
        print(f"\nInteractive rounds{' through a warm session' if args.session else ''} ({args.per_round} corrective "
              "strokes per tile and round, inside the largest wrong regions; IoU without the first strokes' voxels):")
        print("| round | mean IoU | lowest |\n|---|---|---|")
        for r in range(args.rounds):
            print(f"| {r + 1} | {statistics.mean(run[r] for run in runs):.4f} | {min(run[r] for run in runs):.4f} |")
        print(f"runs whose IoU fell by more than 0.01 between two rounds: {sum(d > 0.01 for d in drops)} of "
              f"{len(runs)} (largest fall {max(drops):+.4f})")
        for (n, s), run, drop in zip(named, runs, drops):
            if drop > 0.01:  # which runs fell, for the reader who looks at them again
                print(f"fell by {drop:.4f}: {n} pattern {s}, rounds {' / '.join(f'{v:.4f}' for v in run)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
