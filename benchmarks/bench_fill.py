"""Black registration fill around aligned sections, grey glass and uneven light: does the result hold?

Aligning serial sections moves each one; registration tools fill what is uncovered with 0
(black).  This takes the bench's test volumes of a family, moves the edge of every section as
a registration would (a band along the top of 4-24 pixels and one along the right of 8-18
pixels, varying from section to section, 10-20 % of the pixels), fills it with black, with
white (glass), or leaves the volume as it was; it also darkens whole volumes as a scan whose
glass came out grey (every value times 0.95, 0.9 and 0.85: glass at about 242, 230 and 217), lights
them as a microscope camera with vignetting does (every value times 1 - k r^2, r the distance from the
centre, 1 at the corners; k = 0.25 and 0.4), and changes the exposure from section to section (times
1, 0.95, 0.9, 0.85 in turn) as a lamp or camera that drifts while a series is imaged, puts the
strongest vignetting and the black fill together, and casts the light yellow, blue or magenta.
Each stage runs with strokes on every 10th heart section (outside the fill), and the IoU of
each against the truth is printed::

    python benchmarks/bench_fill.py [--model starter] [--family a] [--volumes 4 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

FILLS = {"none": None, "white fill": 255, "black fill": 0}
#: Exposures of the grey-glass variants: every value times this.
EXPOSURES = (0.95, 0.9, 0.85)
#: Vignetting of the uneven-light variants: the corners get this much less light.
VIGNETTING = (0.25, 0.4)
#: Exposures of the sections of the drifting-exposure variant, in turn.
DRIFT = (1.0, 0.95, 0.9, 0.85)
#: Colour casts of the light (every channel times its factor): a yellow halogen lamp, a blue LED, and a
#: magenta cast, the hue of pale H&E tissue, which the glass is not told apart from.
CASTS = {"yellow light": (1.0, 0.96, 0.86), "blue light": (0.88, 0.95, 1.0), "magenta cast": (0.94, 0.90, 0.98)}


def lit(image: np.ndarray, vignetting: float = 0.0, drift=(1.0,)) -> np.ndarray:
    """``image`` ``(Z, Y, X, 3)`` uint8 times ``1 - vignetting r^2`` (r: 0 at the centre, 1 at the corners)
    and section z times ``drift[z % len(drift)]``."""
    z, y, x = image.shape[:3]
    yy, xx = np.mgrid[:y, :x].astype(np.float32)
    cy, cx = (y - 1) / 2, (x - 1) / 2
    light = 1 - vignetting * ((yy - cy) ** 2 + (xx - cx) ** 2) / (cy ** 2 + cx ** 2)
    out = np.empty_like(image)
    for k in range(z):
        np.clip(np.rint(image[k] * (light * np.float32(drift[k % len(drift)]))[..., None]), 0, 255,
                out=out[k], casting="unsafe")
    return out


def with_fill(image: np.ndarray, value) -> np.ndarray:
    """``image`` ``(Z, Y, X, 3)`` with a registration's uncovered edges set to ``value`` (None: unchanged)."""
    if value is None:
        return image
    filled = image.copy()
    for z in range(len(filled)):
        filled[z, :4 + 5 * (z % 5)] = value
        filled[z, :, filled.shape[2] - 8 - 5 * (z % 3):] = value
    return filled


def main(argv=None) -> int:
    from bench_other_target import model_and_volumes, print_table_head, stage_ious
    from ScribbleSegLib import scribbles

    args, model, volumes = model_and_volumes(__doc__.split("\n\n")[0], argv)
    print_table_head(args, ["variant", "share of the pixels filled"])
    for i in args.volumes:
        v = volumes[i]
        edge = with_fill(np.zeros(v.image.array.shape[:3] + (1,), np.uint8), 1)[..., 0] > 0
        strokes = scribbles.simulate_scribbles(v.label, seed=0, every=10, spacing=v.image.geometry.spacing)
        strokes[edge] = 0
        variants = [(name, with_fill(v.image.array, value), f"{edge.mean():.2f}" if value is not None else "0")
                    for name, value in FILLS.items()]
        variants += [(f"grey glass (x {k})", np.rint(v.image.array * np.float32(k)).astype(np.uint8), "0")
                     for k in EXPOSURES]
        variants += [(f"vignetting (corners x {1 - k:g})", lit(v.image.array, vignetting=k), "0") for k in VIGNETTING]
        variants += [("exposure drifting by section", lit(v.image.array, drift=DRIFT), "0")]
        variants += [(f"{name} {cast}", np.rint(v.image.array * np.float32(cast)).astype(np.uint8), "0")
                     for name, cast in CASTS.items()]
        variants += [(f"vignetting (corners x {1 - VIGNETTING[-1]:g}) and black fill",
                      with_fill(lit(v.image.array, vignetting=VIGNETTING[-1]), 0), f"{edge.mean():.2f}")]
        for name, image, share in variants:
            print(f"| {i} | {name} | {share} | {stage_ious(image, strokes, model, v)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
