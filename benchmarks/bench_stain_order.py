"""Which fitted stain vector is haematoxylin: rules for ordering the two, against the truth.

Stain normalization maps each fitted stain onto the model's reference stain of the same rank, so a fit whose
two vectors are ranked the wrong way round renders haematoxylin as eosin and eosin as haematoxylin: the network
then sees another tissue (a JPEG-compressed phantom stack gave the M-Unet IoU 0 where its PNG copy gave 0.81).
This script fits stains the way :func:`ScribbleSegLib.stain_volume.normalize_volume` does (the volume's stain from a
strided copy of up to 16 sections, then each section on its own) on

- phantom stacks of the families ``a``, ``b`` and the held-out ``c`` (``benchmarks/bench_held_out.py``), each
  as made (lossless), and through JPEG at quality 75 and 50 (Pillow's default 4:2:0 chroma subsampling, as most
  scanners and exports write it): the truth is the phantom's own stain vectors;
- real H&E tiles with nuclei outlined (``--tiles IMAGES MASKS``, e.g. MoNuSeg's): the truth is the fitted stain
  whose concentration is higher inside the nuclei than outside, relative to its mean;

and counts, for each rule, the fits it ranks the wrong way round, with the smallest margin of those it ranks
right (the rule's score of the haematoxylin minus that of the eosin vector, on its own scale)::

    python benchmarks/bench_stain_order.py --seeds 0 1 2 3 --tiles /tmp/mo/mini_test/images /tmp/mo/mini_test/masks
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

RUIFROK = np.array([[0.650, 0.704, 0.286], [0.072, 0.990, 0.105]])
RUIFROK /= np.linalg.norm(RUIFROK, axis=1, keepdims=True)

#: Each rule gives a score per fitted vector; the larger is called haematoxylin.
RULES = {
    "red - blue (before)": lambda s: s[:, 0] - s[:, 2],
    "red / green": lambda s: s[:, 0] / np.maximum(s[:, 1], 1e-6),
    "towards Ruifrok's H, from his E": lambda s: s @ (RUIFROK[0] - RUIFROK[1]),
}


def library_rule():
    """The library's own rule, as a score (its order: the first row is called haematoxylin)."""
    from ScribbleSegLib import stain

    def score(s):
        ordered = stain.order_stains(s)
        return np.array([1.0, 0.0]) if np.allclose(ordered[0], s[0]) else np.array([0.0, 1.0])
    return score


def jpeg(volume: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    out = np.empty_like(volume)
    for z, section in enumerate(volume):
        buffer = io.BytesIO()
        Image.fromarray(section).save(buffer, "JPEG", quality=quality)
        out[z] = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return out


def fits(volume: np.ndarray) -> list:
    """The volume's fit and each section's, as normalize_volume makes them (unit rows, in the fit's order)."""
    from ScribbleSegLib import stain, stain_volume
    from ScribbleSegLib.errors import ScribbleSegError

    settings = stain_volume._settings(stain.VahadaneNormalizer())
    chosen = [volume[i] for i in stain_volume.spread(16, len(volume))]
    out = []
    for sections, every in ((chosen, True), *(([s], False) for s in volume)):
        try:
            fitted = stain_volume._fit_sections(sections, settings, 4, 50_000, 0, every_pixel_if_few=every)
            out.append(fitted.stain_matrix)
        except ScribbleSegError:
            pass  # too little tissue, or one stain: the library does not rank these
    return out


def truth_by_vectors(fitted: np.ndarray, h: np.ndarray, e: np.ndarray) -> int:
    """Index of the fitted row that is haematoxylin: the assignment with the larger sum of cosines."""
    straight = fitted[0] @ h + fitted[1] @ e
    crossed = fitted[1] @ h + fitted[0] @ e
    return 0 if straight >= crossed else 1


def tally(table: dict, condition: str, fitted: np.ndarray, truth: int, rules: dict) -> None:
    for name, rule in rules.items():
        score = rule(fitted)
        row = table.setdefault((condition, name), {"fits": 0, "wrong": 0, "margin": np.inf})
        row["fits"] += 1
        margin = float(score[truth] - score[1 - truth])
        if margin <= 0:
            row["wrong"] += 1
        else:
            row["margin"] = min(row["margin"], margin)


def main(argv=None) -> int:
    from ScribbleSegLib.phantom import family_config, make_phantom
    from bench_held_out import held_out_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="phantom seeds per family")
    parser.add_argument("--shape", type=int, nargs=3, default=[8, 384, 384], help="phantom shape Z Y X")
    parser.add_argument("--qualities", type=int, nargs="*", default=[75, 50], help="JPEG qualities")
    parser.add_argument("--tiles", type=Path, nargs=2, metavar=("IMAGES", "MASKS"),
                        help="folders of real H&E tiles and their nuclei masks (same names, masks > 127)")
    args = parser.parse_args(argv)

    import dataclasses

    rules = {**RULES, "library (now)": library_rule()}
    configs = {"a": family_config("a"), "b": family_config("b"), "c": held_out_config()}
    table: dict = {}
    for family, config in configs.items():
        config = dataclasses.replace(config, shape=tuple(args.shape))
        for seed in args.seeds:
            ph = make_phantom(seed, config)
            h, e = (np.asarray(ph.info["stains"][k], float) for k in ("hematoxylin", "eosin"))
            # The whole field, and a third of it around the heart (a lab that crops its scans to the organ).
            _, ys, xs = np.nonzero(ph.label)
            side = min(ph.label.shape[1:]) // 3
            y0, x0 = (int(np.clip(c.mean() - side / 2, 0, n - side)) for c, n in zip((ys, xs), ph.label.shape[1:]))
            for view, whole in (("whole", ph.image.array), ("heart crop", ph.image.array[:, y0:y0 + side,
                                                                                        x0:x0 + side])):
                for quality in [None, *args.qualities]:
                    volume = whole if quality is None else jpeg(whole, quality)
                    condition = f"phantom {family}, {view}, " + ("lossless" if quality is None else f"JPEG q{quality}")
                    for fitted in fits(volume):
                        tally(table, condition, fitted, truth_by_vectors(fitted, h / np.linalg.norm(h),
                                                                         e / np.linalg.norm(e)), rules)
                # One section scanned grey (a greyscale export among colour ones), lossless.
                greyed = whole.copy()
                middle = len(greyed) // 2
                greyed[middle] = np.round(greyed[middle].astype(float) @ [0.299, 0.587, 0.114])[..., None]
                for fitted in fits(greyed)[:1]:  # the volume's fit; the grey section's own is refused
                    tally(table, f"phantom {family}, {view}, one section grey", fitted,
                          truth_by_vectors(fitted, h / np.linalg.norm(h), e / np.linalg.norm(e)), rules)
            print(f"family {family} seed {seed} done", file=sys.stderr)
    if args.tiles:
        from PIL import Image

        images, masks = args.tiles
        for path in sorted(images.iterdir()):
            mask_path = next((p for p in masks.iterdir() if p.stem == path.stem), None)
            if mask_path is None:
                continue
            rgb = np.asarray(Image.open(path).convert("RGB"))
            nuclei = np.asarray(Image.open(mask_path).convert("L")) > 127
            for quality in [None, *args.qualities]:
                tile = rgb if quality is None else jpeg(rgb[None], quality)[0]
                condition = "real tiles, " + ("as stored" if quality is None else f"JPEG q{quality} again")
                for fitted in fits(tile[None]):
                    conc = _concentrations(tile, fitted)
                    inside = conc[nuclei].mean(axis=0) / conc.reshape(-1, 2).mean(axis=0)
                    tally(table, condition, fitted, int(np.argmax(inside)), rules)
    print("| fits of | rule | fits | ranked wrong | smallest margin of the right ones |")
    print("|---|---|---|---|---|")
    for (condition, name), row in table.items():
        print(f"| {condition} | {name} | {row['fits']} | {row['wrong']} | {row['margin']:.3f} |")
    return 0


def _concentrations(rgb: np.ndarray, stains: np.ndarray) -> np.ndarray:
    """Non-negative least-squares concentrations (Y, X, 2) of ``rgb`` in ``stains``."""
    import torch

    from ScribbleSegLib import stain

    s = torch.as_tensor(stains, dtype=torch.float32)
    pixels = torch.from_numpy(rgb.reshape(-1, 3).copy())
    conc = stain._solve_concentrations(stain._stain_projection(pixels, s), s @ s.T, 0.0)
    return conc.numpy().reshape(rgb.shape[:-1] + (2,))


if __name__ == "__main__":
    raise SystemExit(main())
