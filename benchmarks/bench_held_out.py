"""The bench's networks on a phantom family that no default was chosen on: a third lab, held out.

``scribbleseg bench`` chooses its settings on the validation volumes of families ``a`` and ``b``
(:data:`ScribbleSegLib.phantom.FAMILIES`) and reports the test volumes of the same two.  This
script makes volumes of a third family (:func:`held_out_config`) that differs from both the way another
lab would: a lower scan magnification (0.025 mm pixels, the embryo 0.8 times as large in pixels,
so the network sees it resampled up to its own pixel size), thicker sections (0.05 mm), other
stain vectors at a paler strength (0.75 and 0.7 of the reference), a liver and body wall that look
even more like myocardium, stronger striation, fainter grain and fewer nuclei, more lost sections
and misalignment, other artefacts.  It runs the bench's interactive rounds on them with the networks
that ``scribbleseg bench`` (or ``benchmarks/train_bench_networks.py``) trained on ``a`` and ``b``,
and prints the same table as ``benchmarks/bench_settings.py --rounds``::

    python benchmarks/bench_held_out.py --models scribbleseg-bench [--volumes 4 5] [--patterns 2] \\
        [--cache DIR] [--settings '{"name": "across 0.25", "cut": {"seed_across": 0.25}}']

Nothing in the library reads this family: it is a check of the defaults where they were not tuned,
not a place to tune them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

#: The held-out family's name in the tables and cache files.
NAME = "c"


def held_out_config():
    """The :class:`~ScribbleSegLib.phantom.PhantomConfig` of the held-out family (see the module docstring)."""
    from ScribbleSegLib.phantom import PhantomConfig

    return PhantomConfig(spacing=(0.025, 0.025, 0.05), zoom=0.8, nucleus_px=0.9, mimicry=0.9,
                         pericardial_space=0.15, hematoxylin_od=(0.62, 0.74, 0.26), eosin_od=(0.10, 0.96, 0.26),
                         intensity=(0.75, 0.7), striation=1.6, grain=0.7, nuclear_density=0.8, tears=2, folds=3,
                         skipped_sections=3, misalignment_px=2.0, noise=0.025, bubbles=2, debris=15)


def main(argv=None) -> int:
    from bench_settings import candidates_of, rounds_table

    from ScribbleSegLib import choices
    from ScribbleSegLib.phantom import FAMILIES, make_phantom

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="folder with munet_<family>.model files")
    parser.add_argument("--settings", nargs="*", default=[],
                        help='candidates, each a JSON object {"name": ..., "ddml": {...}, "cut": {...}}')
    parser.add_argument("--volumes", type=int, nargs="+", default=[4, 5], help="phantom seeds of the held-out family")
    parser.add_argument("--patterns", type=int, default=2, help="scribble patterns per volume")
    parser.add_argument("--cache", type=Path, help="folder for the networks' outputs per volume")
    parser.add_argument("--rounds", type=int, default=3, help="interactive rounds per run (bench: 3)")
    parser.add_argument("--warm", action="store_true",
                        help="each round's cut and DDML network start from the last round's")
    parser.add_argument("--orientations", type=int, default=choices.DEFAULT_ORIENTATIONS, choices=choices.ORIENTATIONS,
                        help="test-time flips of the M-Unet (give each its own --cache folder)")
    args = parser.parse_args(argv)
    config = held_out_config()
    volumes = {i: make_phantom(seed=i, config=config) for i in args.volumes}
    print(f"Held-out family {NAME!r}, phantom seeds {args.volumes}, {args.patterns} scribble pattern(s), "
          f"{args.rounds} rounds; networks from {args.models}.\n")
    return rounds_table(args, candidates_of(args, parser), tuple(FAMILIES), {NAME: volumes})


if __name__ == "__main__":
    sys.exit(main())
