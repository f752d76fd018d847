"""Nuclei on H&E tiles: does each stage (M-Unet, adaptation, cut) improve on the one before?

The heart phantoms are one anatomy at one scale.  This benchmark checks the
stages on another target: nuclei on synthetic 40x H&E tiles (one section per
tile), the way the issue "Scribbles that carry the result" measured real tiles:
a small M-Unet trained on 4 tiles (2 more for validation), scribbles
(:func:`scribbles.simulate_scribbles`, strokes in a few nuclei and around
them) on held-out tiles.  Test tiles come in the training stain and in another
(a bluer haematoxylin, an orange eosin, other strengths), at the training
magnification and at twice it (the same tissue with nuclei twice as large in
pixels: the network sees it resampled to its own pixel size, the cut at full
resolution), in the training stain as 1024x1024 tiles with as many nuclei
as a 256x256 one (they cover about 1 % of it: a stain normalization must read
how dark the nuclei are, not how much of the tissue they cover), and in a
purple stain whose two vectors a fit finds as close as a real purple tile's
(cosine 0.983: the normalization must still tell them apart).  Prints pooled
IoU per stage, for the default settings, for the default cut without the stroke
pull (``seed_reach`` 0), with ``gamma`` and ``sigma`` as given
(``graphcut.AS_GIVEN``: not scaled to the objects and the image, no pull) and
for the paper's settings::

    python benchmarks/bench_nuclei.py [--model nuclei.model] [--tiles 4] \\
        [--cut '{"name": "gamma 4", "cut": {"gamma": 4}}']

``--model`` reuses (or writes, if missing) the trained network.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Stain of the "other" test tiles: optical-density vectors and strengths (haematoxylin, eosin).
OTHER_STAIN = {"h": (0.56, 0.72, 0.41), "e": (0.21, 0.80, 0.56), "k": (0.85, 1.3)}
#: Stain of the "purple" test tiles: vectors at cosine 0.966, which a fit on these tiles finds at 0.983-0.984, as
#: close as it finds a real purple H&E tile's (0.983-0.985; BENCHMARKS.md, "Stain vectors that real H&E brings close").
PURPLE_STAIN = {"h": (0.518, 0.750, 0.411), "e": (0.286, 0.805, 0.520)}
#: Pixel size (mm) of a tile at the training magnification (0.25 um, a 40x scan).
PIXEL_MM = 0.00025


def make_tile(seed: int, magnification: int = 1, stain: Optional[Dict] = None, size: int = 256):
    """A synthetic H&E tile with nuclei: (Volume of one section, uint8 (1, Y, X) nuclei mask).

    Eosin stroma with fibres and pale spaces; nuclei as dark ellipses of radius
    6-13 px (a third vesicular: pale centre, dark rim) with chromatin texture and a
    faint haematoxylin halo; red blood cells and dark debris as confounders.
    ``magnification`` 2 draws the same kind of tissue with every length doubled
    in pixels and half the pixel size.
    """
    from ScribbleSegLib import phantom
    from ScribbleSegLib.geometry import Geometry, Volume

    m = int(magnification)
    rng = np.random.default_rng([seed, 77])
    Y = X = size * m
    yy, xx = np.mgrid[0:Y, 0:X].astype(np.float32)

    def noise(sigma: float) -> np.ndarray:
        return phantom._smooth_noise(rng, (1, Y, X), (0, sigma * m, sigma * m))[0]

    label = np.zeros((Y, X), bool)
    eosin = 0.45 + 0.12 * noise(12)
    angle = rng.uniform(0, np.pi)
    fibres = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 2 * np.pi / (9 * m) + 3 * noise(25))
    eosin *= 1 + 0.25 * fibres * (noise(30) > 0)
    eosin *= 1 + 0.3 * noise(2)
    haem = 0.06 + 0.03 * noise(10)
    spaces = noise(18) > 1.3
    eosin[spaces] *= 0.1
    haem[spaces] *= 0.1
    for _ in range(int(rng.integers(35, 70)) * m * m):
        cy, cx = rng.uniform(0, Y), rng.uniform(0, X)
        if spaces[int(cy), int(cx)]:
            continue
        a = rng.uniform(6, 13) * m
        b = a * rng.uniform(0.55, 1.0)
        t = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (np.cos(t) * dx + np.sin(t) * dy) / a
        v = (-np.sin(t) * dx + np.cos(t) * dy) / b
        r = np.sqrt(u * u + v * v) * (1 + 0.08 * np.sin(3 * np.arctan2(v, u) + rng.uniform(0, 6)))
        inside = r < 1
        label |= inside
        vesicular = rng.random() < 0.3
        density = rng.uniform(0.5, 1.1)
        profile = density * (0.45 + 0.55 * np.clip((r - 0.6) / 0.4, 0, 1)) if vesicular else np.full_like(r, density)
        haem[inside] = np.maximum(haem[inside], profile[inside])
        eosin[inside] *= 0.5
        haem[(r >= 1) & (r < 1.8)] += 0.08
    haem *= 1 + 0.35 * noise(1.2) * (haem > 0.3)
    for _ in range(int(rng.integers(5, 20)) * m * m):
        cy, cx, rr = rng.uniform(0, Y), rng.uniform(0, X), rng.uniform(4, 6) * m
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < rr * rr) & ~label
        eosin[disc], haem[disc] = 1.1, 0.1
    for _ in range(int(rng.integers(0, 6)) * m * m):
        cy, cx, rr = rng.uniform(0, Y), rng.uniform(0, X), rng.uniform(1.5, 3) * m
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < rr * rr) & ~label
        haem[disc], eosin[disc] = 0.9, 0.6
    stain = stain or {}
    h_od = np.array(stain.get("h", phantom.HEMATOXYLIN_OD), np.float32)
    e_od = np.array(stain.get("e", phantom.EOSIN_OD), np.float32)
    h_od /= np.linalg.norm(h_od)
    e_od /= np.linalg.norm(e_od)
    k = stain.get("k", (1.0, 1.0))
    conc = [phantom._blur_sections((c * s)[None], 0.7 * m)[0] for c, s in ((haem, k[0]), (eosin, k[1]))]
    od = conc[0][..., None] * h_od + conc[1][..., None] * e_od + 0.03
    rgb = np.clip(255 * np.exp(-1.6 * od) + rng.normal(0, 3, (Y, X, 3)), 0, 255).astype(np.uint8)
    pixel = PIXEL_MM / m
    return Volume(rgb[None], Geometry((pixel, pixel, 4 * PIXEL_MM))), label[None].astype(np.uint8)


def train(path: Path, minutes: Optional[float]) -> None:
    from ScribbleSegLib.nets import ModelConfig
    from ScribbleSegLib.training import train_model

    tiles = [make_tile(i) for i in range(6)]
    train_model([v for v, _ in tiles[:4]], [lab for _, lab in tiles[:4]], path, ModelConfig.small("munet"),
                val_images=[v for v, _ in tiles[4:]], val_labels=[lab for _, lab in tiles[4:]],
                max_minutes=minutes, device="cpu", seed=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("nuclei.model"),
                        help="trained M-Unet to reuse; trained on 4 tiles and written here if missing")
    parser.add_argument("--train-minutes", type=float, default=None, help="training budget (default: the preset's)")
    parser.add_argument("--tiles", type=int, default=4, help="test tiles per condition")
    parser.add_argument("--first-tile", type=int, default=10,
                        help="seed of the first test tile (default 10; the network trains on tiles 0-5)")
    parser.add_argument("--cut", nargs="*", default=[], metavar="JSON",
                        help='more rows: the default adaptation with another cut, each {"name": ..., "cut": {...}} '
                             '(GraphCutParams fields, as bench_settings.py takes them)')
    args = parser.parse_args(argv)

    from ScribbleSegLib import cut_scaling, ddml, graphcut, pipeline, protocol, scribbles
    from ScribbleSegLib.jobs import replace_fields
    from ScribbleSegLib.model_file import load_model

    started = time.perf_counter()
    if not args.model.is_file():
        print(f"training the small M-Unet on 4 tiles -> {args.model}", flush=True)
        train(args.model, args.train_minutes)
    model = load_model(args.model, device="cpu")
    settings: Dict[str, Tuple] = {
        "default": (ddml.DDMLConfig(), graphcut.GraphCutParams()),
        "default without the stroke pull": (ddml.DDMLConfig(), graphcut.GraphCutParams(seed_reach=0.0)),
        "default, gamma and sigma as given": (ddml.DDMLConfig(), graphcut.GraphCutParams(**graphcut.AS_GIVEN)),
        "paper": (ddml.DDMLConfig.paper(), graphcut.GraphCutParams.paper()),
    }
    for text in args.cut:
        spec = json.loads(text)
        if set(spec) != {"name", "cut"}:
            parser.error(f"--cut {text!r}: expected {{\"name\": ..., \"cut\": {{...}}}}")
        settings[spec["name"]] = (ddml.DDMLConfig(), replace_fields(graphcut.GraphCutParams(), spec["cut"], "cut"))
    sums: Dict[Tuple[str, str], np.ndarray] = {}
    conditions = [(f"{stain_name}, {m}x magnification", m, stain, 256)
                  for m in (1, 2) for stain_name, stain in (("training stain", None), ("other stain", OTHER_STAIN))]
    conditions.append(("training stain, 1x, 1024x1024 tile with few nuclei", 1, None, 1024))
    conditions.append(("purple stain, 1x", 1, PURPLE_STAIN, 256))
    for name, m, stain, size in conditions:
        radii, contrasts, counts = [], [], []
        for seed in range(args.first_tile, args.first_tile + args.tiles):
            volume, truth = make_tile(seed, m, stain, size)
            outputs = protocol.compute_outputs(volume.array, model, None,
                                               scale=pipeline.network_scale(volume.geometry.spacing[:2], model)).munet
            strokes = scribbles.simulate_scribbles(truth, seed=seed, every=1, spacing=volume.geometry.spacing)
            t = truth > 0

            def add(stage: str, labels: np.ndarray) -> None:
                s = sums.setdefault((name, stage), np.zeros(2))
                s += ((t & labels).sum(), (t | labels).sum())

            add("M-Unet", outputs[0] > 0.5)
            for label, (cfg, cut) in settings.items():
                r = pipeline.segment(volume, strokes, model, features=outputs, ddml_config=cfg, cut_params=cut,
                                     suggest=0)
                if label in ("default", "paper"):  # the other rows differ from the default in the cut only
                    add(f"+ adaptation ({label})", r.probability > 0.5)
                add(f"+ cut ({label})", r.labels > 0)
                if label == "default":
                    radii.append(cut_scaling.object_radius(r.probability > 0.5))
                    counts.append(cut_scaling.object_count(r.probability))
                    contrasts.append(cut_scaling.image_contrast(volume.array))
        print(f"{name}: object radius of h > 0.5 {np.mean(radii):.1f} px, objects per section "
              f"{min(counts):.1f}-{max(counts):.1f}, image contrast {np.mean(contrasts):.3f}", flush=True)
    stages = list(dict.fromkeys(stage for _, stage in sums))
    print("\n| stage | " + " | ".join(name for name, *_ in conditions) + " |")
    print("|---|" + "---|" * len(conditions))
    for stage in stages:
        cells = [sums[name, stage][0] / sums[name, stage][1] for name, *_ in conditions]
        print(f"| {stage} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    print(f"\n{args.tiles} test tiles per condition, IoU pooled over them; {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
