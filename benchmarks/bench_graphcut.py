"""Full vs coarse-to-fine banded 3D graph cut: time, peak memory and agreement.

Synthetic cases like those of docs/method-and-libraries.md section 4: an
ellipsoid "heart", h = sigmoid(signed distance) + Gaussian noise, a two-colour
RGB image with Gaussian noise, seed lines on every 10th section.  "easy" is
h-noise 0.25 with gamma 1, "hard" h-noise 0.45 with gamma 3 (sigma 0.1,
delta 0.05).  Each (case, size, mode) runs in a fresh subprocess, so that the
peak resident memory (``VmHWM``) of one cut does not mix with another's.

    python benchmarks/bench_graphcut.py                       # both cases, 64x256x256 and 64x512x512
    python benchmarks/bench_graphcut.py --sizes 32x128x128 --cases hard --phantom-gammas ""

Columns: wall and CPU seconds of ``graph_cut`` alone; peak RSS of the whole
process, and the part above the RSS after loading the inputs (the cut's own
memory); Dice of banded against full, and of each against the ground truth.

A second table cuts the project's H&E phantom (``ScribbleSegLib.phantom``,
default 64x192x192, sections twice as thick as the pixels) with simulated
scribbles and an h made from its label (sigmoid of the signed distance,
smooth plus pixel noise, standing in for the network), for several gamma:
agreement of the banded with the full cut where the image has real texture.
It needs scipy (bench extra) for the distance transform.

A third table (``--pieces``) asks what the coarse-to-fine cut keeps away from the strokes: a large disc with a
heart stroke, and beside it a separate disc of radius R or an arm W pixels wide joined to it, with the same
contrast and ``h`` on every section, the library's default settings.  It gives the share of the small disc, and
of the arm's far half, that each cut keeps.

    python benchmarks/bench_graphcut.py --sizes "" --phantom-gammas "" --pieces
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

CASES = {"easy": {"h_noise": 0.25, "gamma": 1.0}, "hard": {"h_noise": 0.45, "gamma": 3.0}}
IMAGE_NOISE = 8.0  # grey levels, per channel
HEART_RGB, BACKGROUND_RGB = (200, 80, 120), (230, 190, 210)


def make_case(shape, h_noise: float, seed: int = 0):
    """h, image, scribbles and ground truth of an ellipsoid phantom of ``shape`` (Z, Y, X)."""
    rng = np.random.default_rng(seed)
    Z, Y, X = shape
    z, y, x = (np.arange(n, dtype=np.float32) for n in shape)
    r = np.sqrt(((z[:, None, None] - Z / 2) / (0.35 * Z)) ** 2 + ((y[None, :, None] - Y / 2) / (0.3 * Y)) ** 2
                + ((x[None, None, :] - X / 2) / (0.33 * X)) ** 2)
    truth = r < 1
    h = 1 / (1 + np.exp(-(1 - r) * (0.3 * min(shape))))
    h += rng.normal(0, h_noise, shape).astype(np.float32)
    np.clip(h, 0, 1, out=h)
    image = np.where(truth[..., None], np.float32(HEART_RGB), np.float32(BACKGROUND_RGB))
    image += rng.normal(0, IMAGE_NOISE, image.shape).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    scribbles = np.zeros(shape, np.uint8)
    for k in range(0, Z, 10):
        scribbles[k, Y // 2, X // 2 - X // 8: X // 2 + X // 8] = 1
        scribbles[k, 2, :] = 2
    return h.astype(np.float32), image, scribbles, truth


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """Peak RSS of this process since it started (``VmHWM``).

    ``getrusage().ru_maxrss`` is not used: Linux carries the parent's RSS at
    fork into the child's ``ru_maxrss`` across ``exec``, which would charge a
    worker with the memory of the benchmark process that started it.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(folder: str, mode: str, gamma: float) -> None:
    """Cut the case saved in ``folder`` in ``mode``; print one JSON line."""
    from ScribbleSegLib.graphcut import GraphCutParams, graph_cut

    h = np.load(os.path.join(folder, "h.npy"))
    image = np.load(os.path.join(folder, "image.npy"))
    scribbles = np.load(os.path.join(folder, "scribbles.npy"))
    base = current_rss()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    t0 = time.perf_counter()
    labels = graph_cut(h, image, scribbles, params=GraphCutParams(gamma=gamma), mode=mode)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    np.save(os.path.join(folder, f"labels_{mode}.npy"), labels)
    print(json.dumps({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime - cpu0,
                      "peak": peak_rss(), "base": base}))


def run_mode(folder: str, mode: str, gamma: float) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", folder, mode, str(gamma)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def phantom_table(gammas, seed: int) -> None:
    """Banded against full cut on the H&E phantom, one row per gamma."""
    from scipy import ndimage

    from ScribbleSegLib.graphcut import GraphCutParams, graph_cut
    from ScribbleSegLib.phantom import make_phantom
    from ScribbleSegLib.scribbles import simulate_scribbles

    phantom = make_phantom(seed)
    image, truth = phantom.image.array, phantom.label.astype(bool)
    spacing = phantom.image.geometry.spacing_zyx
    scribbles = simulate_scribbles(phantom.label, seed=seed)
    rng = np.random.default_rng(seed)
    signed = (ndimage.distance_transform_edt(truth, sampling=spacing)
              - ndimage.distance_transform_edt(~truth, sampling=spacing))
    smooth = ndimage.gaussian_filter(rng.normal(0, 1, truth.shape), (1, 4, 4))
    h = 1 / (1 + np.exp(-signed / 0.03)) + 0.12 * smooth / smooth.std() + rng.normal(0, 0.05, truth.shape)
    h = np.clip(h, 0, 1).astype(np.float32)
    print(f"\nH&E phantom seed {seed}, {'x'.join(map(str, truth.shape))}, spacing (z, y, x) {spacing} mm; "
          f"Dice of h > 0.5 against the truth {dice(h > 0.5, truth):.4f}\n")
    print("| gamma | full s | banded s | band vs full Dice | differing voxels | full vs truth | banded vs truth |")
    print("|---|---|---|---|---|---|---|")
    for gamma in gammas:
        params = GraphCutParams(gamma=gamma)
        t0 = time.perf_counter()
        full = graph_cut(h, image, scribbles, spacing, params, mode="full")
        t1 = time.perf_counter()
        banded = graph_cut(h, image, scribbles, spacing, params, mode="banded")
        t2 = time.perf_counter()
        print(f"| {gamma:g} | {t1 - t0:.2f} | {t2 - t1:.2f} | {dice(banded, full):.5f} "
              f"| {np.count_nonzero(banded != full)} | {dice(full, truth):.4f} | {dice(banded, truth):.4f} |",
              flush=True)


def pieces_case(kind: str, size: int, h_piece: float, noise: int, sections: int = 8):
    """``h``, image, strokes and the mask to score of a large disc with a stroke and a piece without one: a
    separate disc of radius ``size`` (``kind`` "disc") or an arm ``size`` pixels wide joined to the large disc
    ("arm", scored on its far half)."""
    rows, columns = 96, 160
    yy, xx = np.mgrid[:rows, :columns]
    large = (yy - rows // 2) ** 2 + (xx - 40) ** 2 < 26 ** 2
    if kind == "disc":
        piece = scored = (yy - rows // 2) ** 2 + (xx - 110) ** 2 < size ** 2
    else:
        piece = (abs(yy - rows // 2) < size / 2) & (xx >= 60) & (xx < 140)
        scored = piece & (xx >= 100)
    rng = np.random.default_rng(0)
    grey = np.where(large | piece, 190, 130)[None, ..., None].repeat(sections, 0).repeat(3, -1)
    image = np.clip(grey + rng.integers(-noise, noise + 1, grey.shape), 0, 255).astype(np.uint8)
    h = np.where(large, 0.85, np.where(piece, h_piece, 0.1)).astype(np.float32)[None].repeat(sections, 0)
    strokes = np.zeros(h.shape, np.uint8)
    strokes[:, rows // 2, 34:46] = 1
    strokes[:, 2, :] = 2
    return h, image, strokes, scored


def pieces_table() -> None:
    from ScribbleSegLib.graphcut import GraphCutParams, graph_cut

    print("\n| piece | size px | h on it | image noise | kept by the full cut | kept by the banded cut |")
    print("|---|---|---|---|---|---|")
    for kind, sizes in (("disc", (4, 6, 9, 12, 16)), ("arm", (4, 8, 12, 16))):
        for size in sizes:
            for h_piece in (0.7, 0.9):
                for noise in (8, 30):
                    h, image, strokes, scored = pieces_case(kind, size, h_piece, noise)
                    kept = [graph_cut(h, image, strokes, params=GraphCutParams(), mode=mode)[:, scored].mean()
                            for mode in ("full", "banded")]
                    print(f"| {kind} | {size} | {h_piece} | {noise} | {kept[0]:.2f} | {kept[1]:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64x256x256,64x512x512", help="comma-separated ZxYxX sizes")
    parser.add_argument("--cases", default="easy,hard", help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phantom-gammas", default="0.5,1,2,4",
                        help="gammas for the H&E phantom table; empty to skip it")
    parser.add_argument("--pieces", action="store_true",
                        help="also the table of pieces away from the strokes that each cut keeps")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], float(args.worker[2]))
        return

    if args.sizes:
        print("| case | grid (ZxYxX) | mode | wall s | CPU s | peak RSS GiB | cut's own GiB | band vs full Dice "
              "| Dice vs truth |")
        print("|---|---|---|---|---|---|---|---|---|")
    for case in (args.cases.split(",") if args.sizes else []):
        setting = CASES[case]
        for size in args.sizes.split(","):
            shape = tuple(int(n) for n in size.lower().split("x"))
            with tempfile.TemporaryDirectory() as folder:
                h, image, scribbles, truth = make_case(shape, setting["h_noise"], args.seed)
                for name, array in (("h", h), ("image", image), ("scribbles", scribbles)):
                    np.save(os.path.join(folder, f"{name}.npy"), array)
                del h, image, scribbles
                results = {mode: run_mode(folder, mode, setting["gamma"]) for mode in ("full", "banded")}
                labels = {mode: np.load(os.path.join(folder, f"labels_{mode}.npy")) for mode in results}
            agreement = dice(labels["banded"], labels["full"])
            for mode, r in results.items():
                print(f"| {case} | {size} | {mode} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['peak'] / 2**30:.2f} "
                      f"| {(r['peak'] - r['base']) / 2**30:.2f} | {agreement:.5f} | {dice(labels[mode], truth):.4f} |",
                      flush=True)
            full, band = results["full"], results["banded"]
            own = (full["peak"] - full["base"]) / (band["peak"] - band["base"])
            print(f"|  |  | full / banded | {full['wall'] / band['wall']:.1f}x | {full['cpu'] / band['cpu']:.1f}x "
                  f"| {full['peak'] / band['peak']:.1f}x | {own:.1f}x |  |  |", flush=True)
    if args.phantom_gammas:
        phantom_table([float(g) for g in args.phantom_gammas.split(",")], args.seed)
    if args.pieces:
        pieces_table()


if __name__ == "__main__":
    main()
