"""Peak memory and time of reading a folder of large sections downsampled.

Writes ``--sections`` random RGB TIFF sections of ``--height`` x ``--width``
into a temporary folder, then reads them with ``volume_io.read_image`` at
``--downsample`` in a fresh process and prints the wall time, the peak
resident memory of that process, and the size the stack would have at full
resolution.  Peak memory should stay near one full-resolution section plus
the downsampled output, whatever the number of sections.

    python benchmarks/bench_volume_io.py --sections 30 --height 5700 --width 10000 --downsample 8
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

CHILD = """
import resource, sys, time
from ScribbleSegLib import volume_io
t = time.perf_counter()
v = volume_io.read_image(sys.argv[1], spacing=(0.0092, 0.0092, 0.005), downsample=int(sys.argv[2]))
dt = time.perf_counter() - t
print(f"{dt:.2f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.3f} {v.array.nbytes / 2**30:.4f}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", type=int, default=30)
    parser.add_argument("--height", type=int, default=5700)
    parser.add_argument("--width", type=int, default=10000)
    parser.add_argument("--downsample", type=int, default=8)
    parser.add_argument("--suffix", default=".tif", choices=[".tif", ".png", ".jpg"])
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        base = rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
        for k in range(args.sections):
            plane = np.roll(base, k, axis=1)
            sitk.WriteImage(sitk.GetImageFromArray(plane, isVector=True), str(Path(folder) / f"s{k}{args.suffix}"))
        del base, plane
        out = subprocess.run([sys.executable, "-c", CHILD, folder, str(args.downsample)],
                             capture_output=True, text=True, check=True).stdout.split()
        seconds, peak_gib, output_gib = map(float, out)
    full_gib = args.sections * args.height * args.width * 3 / 2**30
    section_gib = args.height * args.width * 3 / 2**30
    print(f"{args.sections} sections {args.width}x{args.height} RGB {args.suffix}, downsample {args.downsample}: "
          f"{seconds:.1f} s ({seconds / args.sections:.2f} s/section), peak RSS {peak_gib:.2f} GiB; "
          f"full-resolution stack {full_gib:.2f} GiB, one section {section_gib:.2f} GiB, output {output_gib:.3f} GiB")


if __name__ == "__main__":
    main()
