"""Time and memory of the scribble warnings that every run computes (``pipeline.scribble_warnings``).

Reads a work folder's image (for the grid and spacing) and strokes, and times the
warnings twice, printing the peak RSS they add on top of reading::

    python benchmarks/bench_scribble_warnings.py /tmp/w100 more.nrrd          # bench_interactive.py prepare
    python benchmarks/bench_scribble_warnings.py /work/paper1 scribbles.nrrd  # bench_paper_scale.py prepare
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from ScribbleSegLib import pipeline, volume_io

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path, help="folder with image.nrrd and the strokes")
    parser.add_argument("strokes", help="the strokes' file name in that folder")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    image = volume_io.read_image(args.work / "image.nrrd")
    strokes = volume_io.read_scribbles(args.work / args.strokes, image.shape, image.geometry)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        found = pipeline.scribble_warnings(strokes, image.geometry.spacing_zyx)
        added = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20
        print(f"{args.work} {'x'.join(map(str, image.shape))}: scribble_warnings {time.perf_counter() - t0:.2f} s, "
              f"peak RSS +{added:.2f} GiB over reading, {len(found)} warning(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
