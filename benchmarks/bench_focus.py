"""Sections out of focus and JPEG-compressed scans: does the result hold?

Real series are seldom as sharp as the phantoms: a section is out of focus now and then, a
scanner is softer, and whole-slide images are stored as JPEG.  This takes the bench's test
volumes of a family and blurs every 3rd section (Gaussian, sigma 1.5 pixels), blurs every
section (sigma 1), or stores every section as JPEG (quality 60 and 80); each stage runs with
strokes on every 10th heart section and the IoU of each against the truth is printed::

    python benchmarks/bench_focus.py [--model starter] [--family a] [--volumes 4 5]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def blurred(image: np.ndarray, sigma: float, every: int = 1) -> np.ndarray:
    """``image`` ``(Z, Y, X, 3)`` uint8 with every ``every``-th section blurred by a Gaussian of ``sigma`` pixels."""
    import SimpleITK as sitk

    out = image.copy()
    for z in range(0, len(image), every):
        section = sitk.GetImageFromArray(image[z].astype(np.float32), isVector=True)
        smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(section, sigma))
        out[z] = np.clip(np.rint(smooth), 0, 255).astype(np.uint8)
    return out


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` ``(Z, Y, X, 3)`` uint8 with every section written as a JPEG of ``quality`` and read back."""
    import SimpleITK as sitk

    out = np.empty_like(image)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "section.jpg")
        for z in range(len(image)):
            sitk.WriteImage(sitk.GetImageFromArray(image[z], isVector=True), path, True, quality)
            out[z] = sitk.GetArrayFromImage(sitk.ReadImage(path))
    return out


VARIANTS = {
    "as made": lambda a: a,
    "every 3rd section blurred (sigma 1.5)": lambda a: blurred(a, 1.5, every=3),
    "every section blurred (sigma 1)": lambda a: blurred(a, 1.0),
    "JPEG quality 80": lambda a: jpeg(a, 80),
    "JPEG quality 60": lambda a: jpeg(a, 60),
}


def main(argv=None) -> int:
    from bench_other_target import model_and_volumes, print_table_head, stage_ious
    from ScribbleSegLib import scribbles

    args, model, volumes = model_and_volumes(__doc__.split("\n\n")[0], argv)
    print_table_head(args, ["variant"])
    for i in args.volumes:
        v = volumes[i]
        strokes = scribbles.simulate_scribbles(v.label, seed=0, every=10, spacing=v.image.geometry.spacing)
        for name, make in VARIANTS.items():
            print(f"| {i} | {name} | {stage_ious(make(v.image.array), strokes, model, v)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
