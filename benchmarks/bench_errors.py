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

A second table splits the final result's pixels of the true outline's two 1-pixel
rings (the outline's own pixels and those just outside; the heart's ends left out)
by whether the cut can see the outline there: *an edge* where the colour contrast
across the outline, in the cut's own terms (``exp(-d^2 / sigma^2)`` of the colour
difference ``d`` to the neighbour across it, ``sigma`` as the cut scales it to the
image), is below 1/2 for some neighbour; *no edge* where the heart meets tissue
of its own colour.  It prints how many ring pixels of each kind the result gets
wrong, and the IoU if the rings were right.

A third table says what the outline's pixels weigh at the phantoms' scale: per
family, the IoU of the truth against itself with its whole outline moved by one
pixel in-plane (grown or shrunk in the 4-neighbourhood), and per protocol the final
result's mean in-plane outline distance to the truth (px, both ways).
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
    from ScribbleSegLib import cut_scaling, graphcut, protocol, scribbles
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
    rings, distances = {}, {}
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
                sigma = cut_scaling.scaled_to_contrast(graphcut.GraphCutParams(), v.image.array).sigma
                rings.setdefault(f"{train}→{test}", []).append(outline_rings(result.labels, v.label, v.image.array,
                                                                             sigma, result.probability))
                distances.setdefault(f"{train}→{test}", []).append(outline_distance(result.labels, v.label))
            for stage, runs in rows.items():
                wrong = np.mean([sum(p[n]["voxels"] for n in ERROR_REGIONS) for _, p in runs])
                share = " | ".join(f"{100 * np.mean([p[n]['share'] for _, p in runs]):.0f} %" for n in ERROR_REGIONS)
                fixed = " | ".join(f"{np.mean([p[n]['iou_if_fixed'] for _, p in runs]):.3f}" for n in ERROR_REGIONS)
                print(f"| {train}→{test} | {stage} | {np.mean([iou for iou, _ in runs]):.3f} | {wrong:.0f} | "
                      f"{share} | {fixed} |", flush=True)
    print("\nThe final result on the true outline's two 1-pixel rings (means over the volumes):\n")
    print("| protocol | ring pixels | with an edge | wrong there | of those, adapted h against the truth | "
          "without an edge | wrong there | share of all wrong voxels in the rings | IoU | "
          "IoU if the rings were right |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, runs in rings.items():
        mean = {k: np.mean([r[k] for r in runs]) for k in runs[0]}
        print(f"| {name} | {mean['ring']:.0f} | {mean['edge']:.0f} | {100 * mean['edge_wrong']:.1f} % | "
              f"{100 * mean['edge_wrong_h']:.0f} % | "
              f"{mean['flat']:.0f} | {100 * mean['flat_wrong']:.1f} % | {100 * mean['share']:.0f} % | "
              f"{mean['iou']:.3f} | {mean['iou_rings_right']:.3f} |")
    print("\nWhat one pixel of outline weighs (means over the volumes; the final result's outline distance in px):\n")
    print("| family | heart voxels | outline pixels per 100 heart voxels | IoU, outline 1 px out | 1 px in | "
          "final result's mean outline distance |")
    print("|---|---|---|---|---|---|")
    for test in families:
        slips = [one_pixel_slips(vols[test][i].label) for i in args.volumes]
        mean = {k: np.mean([r[k] for r in slips]) for k in slips[0]}
        own = ", ".join(f"{name} {np.mean(d):.2f}" for name, d in distances.items() if name.endswith(test))
        print(f"| {test} | {mean['voxels']:.0f} | {100 * mean['outline'] / mean['voxels']:.1f} | "
              f"{mean['iou_out']:.3f} | {mean['iou_in']:.3f} | {own} |")
    return 0


def _in_plane_shell(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` with a 4-neighbour in their section outside it (its in-plane outline)."""
    inner = mask.copy()
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    inner[:, :, 1:] &= mask[:, :, :-1]
    inner[:, :, :-1] &= mask[:, :, 1:]
    return mask & ~inner


def one_pixel_slips(label: np.ndarray) -> dict:
    """Heart voxels, in-plane outline pixels, and the IoU of the truth with its outline one pixel out or in."""
    t = np.asarray(label) != 0
    shell = _in_plane_shell(t)
    grown = t | _in_plane_shell(~t)  # the background's outline: the pixels just outside the heart
    shrunk = t & ~shell
    return {"voxels": int(t.sum()), "outline": int(shell.sum()),
            "iou_out": float(t.sum() / grown.sum()), "iou_in": float(shrunk.sum() / t.sum())}


def outline_distance(pred: np.ndarray, label: np.ndarray) -> float:
    """Mean in-plane distance (px) from each outline pixel of ``pred`` to the true outline and back, over
    the sections where both hold heart."""
    import SimpleITK as sitk

    def to_outline(shell2d):
        image = sitk.GetImageFromArray(shell2d.astype(np.uint8))
        return np.abs(sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(image, insideIsPositive=False,
                                                                           squaredDistance=False)))

    p, t = np.asarray(pred) != 0, np.asarray(label) != 0
    sp, st = _in_plane_shell(p), _in_plane_shell(t)
    found = []
    for z in np.flatnonzero(p.any(axis=(1, 2)) & t.any(axis=(1, 2))):
        found += [to_outline(st[z])[sp[z]], to_outline(sp[z])[st[z]]]
    return float(np.concatenate(found).mean()) if found else float("nan")


def outline_rings(pred: np.ndarray, label: np.ndarray, image: np.ndarray, sigma: float, h: np.ndarray) -> dict:
    """The true outline's inner and outer 1-pixel rings in-plane (the heart's ends left out, as
    ``error_regions`` counts them): how many pixels lie on a colour edge the cut sees, how many of each
    kind ``pred`` gets wrong, and at how many of the wrong ones on an edge the adapted ``h`` (the cut's data
    term before the strokes' pull) already favours the wrong label."""
    from ScribbleSegLib import cut_scaling
    from ScribbleSegLib.metrics import end_sections

    p, t = np.asarray(pred) != 0, np.asarray(label) != 0
    x = cut_scaling.colour_features(np.asarray(image), False)
    ring = np.zeros_like(t)
    edge = np.zeros_like(t)
    for axis in (1, 2):  # the 4 in-plane neighbours: pairs across the true outline
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        across = t[a] != t[b]
        seen = across & (np.exp(-np.square(x[a] - x[b]).sum(-1) / sigma ** 2) < 0.5)
        for side in (a, b):
            ring[side] |= across
            edge[side] |= seen
    ring &= ~end_sections(t)[:, None, None]  # the heart's ends: not outline error (error_regions)
    edge &= ring
    flat = ring & ~edge
    wrong = p != t
    right = np.where(ring, t, p)
    return {"ring": int(ring.sum()), "edge": int(edge.sum()), "flat": int(flat.sum()),
            "edge_wrong": float((wrong & edge).sum() / max(1, edge.sum())),
            "edge_wrong_h": float(((np.asarray(h) > 0.5) != t)[wrong & edge].mean()) if (wrong & edge).any() else 0.0,
            "flat_wrong": float((wrong & flat).sum() / max(1, flat.sum())),
            "share": float((wrong & ring).sum() / max(1, wrong.sum())),
            "iou": float((p & t).sum() / max(1, (p | t).sum())),
            "iou_rings_right": float((right & t).sum() / max(1, (right | t).sum()))}


if __name__ == "__main__":
    sys.exit(main())
