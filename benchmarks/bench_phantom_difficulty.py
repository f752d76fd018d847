"""How hard is the phantom for a colour/texture pixel classifier trained on scribbles?

Harada et al. motivate their method by the heart's boundary being ambiguous in
colour and texture.  This benchmark checks that the default phantom has the
same property: a random forest trained on the simulated scribbles of a volume,
with per-pixel colour and a few smoothed-colour and texture features (a
within-section field of view of a few nuclei), predicts the whole volume; its
IoU with the ground truth should fall well short of what a network that sees
the anatomy reaches.  It also reports the best IoU any threshold on a single
colour channel (R, G, B or grey) can reach, the threshold and its direction
chosen with the ground truth (an upper bound for thresholding).

Needs the bench extra (scikit-learn).  Run from the repository root::

    python benchmarks/bench_phantom_difficulty.py [--volumes 6] [--seed 0] [--patterns 1] [--shape Z Y X]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import SimpleITK as sitk

from ScribbleSegLib import phantom, scribbles

SIGMAS = (1.0, 2.5, 6.0)


def _blur(stack: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of every section of a (Z, Y, X) float stack, in pixels."""
    image = sitk.GetImageFromArray(stack.astype(np.float32))
    for direction in (0, 1):
        image = sitk.RecursiveGaussian(image, sigma, False, sitk.RecursiveGaussianImageFilter.ZeroOrder, direction)
    return sitk.GetArrayFromImage(image)


def pixel_features(rgb: np.ndarray) -> np.ndarray:
    """(Z, Y, X, F) float32: colour, smoothed colour and local contrast at a few scales, per section."""
    rgb = rgb.astype(np.float32) / 255.0
    grey = rgb.mean(axis=-1)
    features = [rgb[..., c] for c in range(3)]
    for sigma in SIGMAS:
        features += [_blur(rgb[..., c], sigma) for c in range(3)]
        mean = _blur(grey, sigma)
        features.append(np.sqrt(np.maximum(_blur(grey * grey, sigma) - mean * mean, 0)))  # local std: texture
    gy, gx = np.gradient(_blur(grey, 1.0), axis=(1, 2))
    features.append(np.hypot(gy, gx))
    return np.stack(features, axis=-1)


def iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    p, t = prediction.astype(bool), truth.astype(bool)
    union = np.logical_or(p, t).sum()
    return float(np.logical_and(p, t).sum() / union) if union else 1.0


def best_threshold_iou(channel: np.ndarray, truth: np.ndarray) -> float:
    """Best IoU of ``channel > t`` or ``channel < t`` over all 8-bit thresholds t."""
    truth = truth.astype(bool).ravel()
    hist_in = np.bincount(channel.ravel()[truth], minlength=256)
    hist_all = np.bincount(channel.ravel(), minlength=256)
    n_in = truth.sum()
    best = 0.0
    for counts_in, counts_all in ((hist_in, hist_all), (hist_in[::-1], hist_all[::-1])):
        tp = np.cumsum(counts_in)  # predicted = values up to t (or down to t, reversed)
        predicted = np.cumsum(counts_all)
        best = max(best, float(np.max(tp / np.maximum(predicted + n_in - tp, 1))))
    return best


def forest_iou(image: np.ndarray, label: np.ndarray, scribble: np.ndarray, seed: int) -> float:
    from sklearn.ensemble import RandomForestClassifier

    feats = pixel_features(image)
    flat = feats.reshape(-1, feats.shape[-1])
    idx = np.flatnonzero(scribble.ravel())
    forest = RandomForestClassifier(n_estimators=50, min_samples_leaf=2, n_jobs=2, random_state=seed)
    forest.fit(flat[idx], scribble.ravel()[idx] == scribbles.HEART)
    prob = np.concatenate([forest.predict_proba(flat[s:s + 500_000])[:, 1] for s in range(0, len(flat), 500_000)])
    return iou(prob.reshape(label.shape) > 0.5, label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volumes", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0, help="volumes use seeds seed*100 + i, as scribbleseg bench")
    parser.add_argument("--patterns", type=int, default=1, help="scribble patterns per volume")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"))
    args = parser.parse_args()
    config = phantom.PhantomConfig() if args.shape is None else phantom.PhantomConfig(shape=tuple(args.shape))

    forest, channel = [], []
    print(f"phantom {config.shape}, scribbles on every 10th heart section, {args.patterns} pattern(s) per volume")
    print("volume  seconds  heart-sections  forest-IoU  best-channel-IoU (R G B grey)")
    for v in range(args.volumes):
        t0 = time.perf_counter()
        ph = phantom.make_phantom(seed=args.seed * 100 + v, config=config)
        made = time.perf_counter() - t0
        img, lab = ph.image.array, ph.label
        per_channel = [best_threshold_iou(img[..., c], lab) for c in range(3)]
        per_channel.append(best_threshold_iou(img.mean(-1).round().astype(np.uint8), lab))
        channel.append(max(per_channel))
        ious = []
        for p in range(args.patterns):
            s = scribbles.simulate_scribbles(lab, seed=p, every=10, tissue=ph.tissue > 0)
            ious.append(forest_iou(img, lab, s, seed=p))
        forest += ious
        n_heart = int(lab.reshape(len(lab), -1).any(1).sum())
        print(f"{v:6d}  {made:7.2f}  {n_heart:14d}  {np.mean(ious):10.3f}  "
              + " ".join(f"{x:.3f}" for x in per_channel))
    print(f"forest IoU: {np.mean(forest):.3f} ± {np.std(forest):.3f} (mean ± std over {len(forest)} runs)")
    print(f"best single-channel threshold IoU: {np.mean(channel):.3f} ± {np.std(channel):.3f}")


if __name__ == "__main__":
    main()
