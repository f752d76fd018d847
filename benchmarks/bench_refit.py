"""The network's own 1x1 output layer refit to this volume's strokes, anchored to its trained weights.

An experiment for the issue "Scribbles that carry the result" (BENCHMARKS.md, "The strokes' lesson kept
near them, or refit into the network's output layer"). The M-Unet's probability is ``sigmoid(w . x + b)``
of its features ``x``; this refits ``(w, b)`` by Newton's method on the scribbled voxels of the bench's
validation volumes (round 1, pattern 0; up to 20 000 voxels per class, the classes weighted equally) with
an L2 pull ``lambda / 2 ||(w, b) - (w0, b0)||^2`` towards the trained weights (L2-SP), and prints the IoU of
the refit layer's ``logit > 0`` beside the network's own::

    python benchmarks/bench_refit.py --models /work/net3k --cache /work/c/val

Losses: ``ce`` (cross-entropy on the strokes), ``ce+bank`` (the same plus the model's training-pixel bank,
weighted as much as the strokes), ``hinge`` (squared hinge with margin 2 in logit: a stroke voxel the
network already gets right by that margin pulls nothing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LAMBDAS = (1.0, 0.1, 0.01)
LOSSES = ("ce", "ce+bank", "hinge")
MARGIN = 2.0


def _stroke_rows(feats, scribbles, rng, n=20000):
    flat, rows = scribbles.reshape(-1), feats.reshape(-1, feats.shape[-1])
    xs, ys, ws = [], [], []
    for label, code in ((1, 1), (0, 2)):
        idx = np.flatnonzero(flat == code)
        idx = np.sort(rng.choice(idx, min(n, idx.size), replace=False))
        xs.append(rows[idx].astype(np.float64))
        ys.append(np.full(idx.size, label))
        ws.append(np.full(idx.size, 0.5 / idx.size))
    return xs, ys, ws


def refit(feats, scribbles, model, lam: float, loss: str, seed: int = 0, n: int = 20000) -> np.ndarray:
    """``(w, b)`` of the refit output layer (Newton's method from the trained weights)."""
    w0 = np.concatenate([model.net.head.weight.detach().numpy().reshape(-1),
                         model.net.head.bias.detach().numpy().reshape(-1)]).astype(np.float64)
    rng = np.random.default_rng(seed)
    xs, ys, ws = _stroke_rows(feats, scribbles, rng, n)
    if loss == "ce+bank":
        for label in (1, 0):
            idx = rng.choice(np.flatnonzero(model.bank_labels == label), n, replace=False)
            xs.append(model.bank_features[idx].astype(np.float64))
            ys.append(np.full(n, label))
            ws.append(np.full(n, 0.5 / n))
    X = np.concatenate(xs)
    X = np.concatenate([X, np.ones((len(X), 1))], axis=1)
    y, a = np.concatenate(ys).astype(np.float64), np.concatenate(ws)
    theta, eye = w0.copy(), np.eye(len(w0))
    for _ in range(50):
        if loss == "hinge":
            sign = 2 * y - 1
            m = MARGIN - sign * (X @ theta)
            on = m > 0
            g = -X[on].T @ (a[on] * 2 * m[on] * sign[on]) + lam * (theta - w0)
            H = (X[on] * (2 * a[on])[:, None]).T @ X[on] + lam * eye
        else:
            s = 1 / (1 + np.exp(-(X @ theta)))
            g = X.T @ (a * (s - y)) + lam * (theta - w0)
            H = (X * (a * s * (1 - s))[:, None]).T @ X + lam * eye
        step = np.linalg.solve(H, g)
        theta -= step
        if np.abs(step).max() < 1e-7:
            break
    return theta


def main(argv=None) -> int:
    from ScribbleSegLib import protocol, scribbles as scr
    from ScribbleSegLib.metrics import evaluate
    from ScribbleSegLib.model_file import load_model

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_settings import _outputs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="folder with munet_<family>.model files")
    parser.add_argument("--cache", type=Path, help="the networks' outputs per volume (bench_settings.py --cache)")
    args = parser.parse_args(argv)
    np.seterr(over="ignore")
    print("| network → volume | heart / background stroke voxels the network gets wrong | network | "
          + " | ".join(f"{loss} λ {lam:g}" for loss in LOSSES for lam in LAMBDAS) + " |")
    print("|---|---|---|" + "---|" * (len(LOSSES) * len(LAMBDAS)))
    for train in ("a", "b"):
        model = load_model(args.models / f"munet_{train}.model", device="cpu")
        for test in ("a", "b"):
            vols = protocol.make_volumes(4, 0, None, test)
            for i in (2, 3):
                v = vols[i]
                prob, feats = _outputs(v, model, args.cache, f"{train}_{test}{i}")
                s = scr.simulate_scribbles(v.label, seed=0, every=10, tissue=v.tissue > 0,
                                           spacing=v.image.geometry.spacing)
                wrong = (float(((prob < 0.5) & (s == 1)).sum() / (s == 1).sum()),
                         float(((prob > 0.5) & (s == 2)).sum() / (s == 2).sum()))
                cells = [evaluate(prob > 0.5, v.label)["iou"]]
                for loss in LOSSES:
                    for lam in LAMBDAS:
                        theta = refit(feats, s, model, lam, loss)
                        logit = feats.astype(np.float32) @ theta[:-1].astype(np.float32) + np.float32(theta[-1])
                        cells.append(evaluate(logit > 0, v.label)["iou"])
                print(f"| {train}→{test} {i} | {wrong[0]:.3f} / {wrong[1]:.3f} | "
                      + " | ".join(f"{c:.4f}" for c in cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
