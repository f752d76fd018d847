"""Train the networks of ``scribbleseg bench`` for one phantom family, as the bench does.

The bench trains its four networks (the small M-Unet and U-Net of each family) one after
the other.  This script trains those of one family with the same volumes, seed and
preset (:func:`ScribbleSegLib.commands.bench.train_family`), so that two families can train
at once on two cores (each training uses one intra-op thread there), and names the files
as the bench's ``--reuse-models`` reads them (``munet_<family>.model``,
``unet_<family>.model``).  ``--iters`` sets another step budget, for studies of how long
the networks should train (the default is the small preset's), and ``--options`` other
training options (:class:`ScribbleSegLib.training.TrainOptions`, e.g. the augmentation).

Run from the repository root::

    python benchmarks/train_bench_networks.py --family a --out DIR [--iters N] [--minutes 40]
        [--archs munet unet] [--seed 0] [--device auto] [--options JSON]

then ``scribbleseg bench --out DIR --reuse-models`` (with the same ``--seed``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> None:
    from ScribbleSegLib import choices, protocol
    from ScribbleSegLib.commands import bench
    from ScribbleSegLib.phantom import FAMILIES
    from ScribbleSegLib.training import TrainOptions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True, choices=tuple(FAMILIES))
    parser.add_argument("--out", type=Path, required=True, help="folder for <arch>_<family>.model")
    parser.add_argument("--iters", type=int, default=None, help="steps per network (default: the small preset's)")
    parser.add_argument("--minutes", type=float, default=bench.TRAIN_MINUTES_CAP,
                        help="time cap per network (default: the bench's, %(default)s)")
    parser.add_argument("--archs", nargs="+", default=list(choices.ARCHITECTURES), choices=choices.ARCHITECTURES)
    parser.add_argument("--seed", type=int, default=0, help="the bench's --seed (phantoms and training)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--options", type=json.loads, default=None, metavar="JSON",
                        help="TrainOptions fields to change, e.g. '{\"scale_jitter\": 0.25}' (default: none)")
    args = parser.parse_args(argv)
    options = dataclasses.replace(TrainOptions(), **args.options) if args.options else None

    args.out.mkdir(parents=True, exist_ok=True)
    vols = protocol.make_volumes(bench.VOLUMES_PER_FAMILY, args.seed, None, args.family)
    started = time.perf_counter()
    bench.train_family(vols, args.family, args.out, args.minutes, args.device, args.seed, max_iters=args.iters,
                       archs=args.archs, options=options,
                       log=lambda message: print(f"family {args.family}: {message}", flush=True))
    print(f"family {args.family}: {', '.join(args.archs)} in {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
