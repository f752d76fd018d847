"""A paper-scale stack end to end through the CLI: time and peak memory per stage, under a memory limit.

The paper segments stacks of about 250 sections of 712 x 1250 pixels (its images at
1/8 scale).  ``prepare`` makes a phantom of that size; ``run`` segments it with
``scribbleseg segment`` (first run: M-Unet inference, adaptation, cut, surface)
in a child process, optionally inside a memory control group of ``--limit-gib``
(root and a cgroup v1 or v2 memory controller needed; the library then budgets
as on a machine of that size, see ``resources.available_memory``), and prints
each stage's time (the CLI's own ``time:`` line) and the child's resident memory
sampled every 0.1 s while each stage's progress bar was the last one shown, with
the child's true peak (``ru_maxrss``)::

    python benchmarks/bench_paper_scale.py prepare --work /tmp/paper
    python benchmarks/bench_paper_scale.py run --work /tmp/paper --limit-gib 16            # first run
    python benchmarks/bench_paper_scale.py run --work /tmp/paper --limit-gib 16 --rerun    # cached features

``prepare`` makes the phantom at full size (``phantom.make_phantom``: about 32 bytes
per voxel, ``resources.PHANTOM_BYTES_PER_VOXEL``) unless ``--factor F`` asks for one
made at 1/F of the rows and columns and resampled up section by section (linear for
the image, nearest for the labels), as the first measurement was made.  Scribbles:
every 10th heart section (``scribbles.simulate_scribbles``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PAPER_SHAPE = (250, 712, 1250)
#: A progress bar's text starts with its stage's name and a colon (``ScribbleSegLib.progress``).
_BAR = re.compile(r"^\s*([A-Za-z][A-Za-z0-9 +\-]*?):\s+\d+%")


def _upsample_sections(array: np.ndarray, shape, linear: bool) -> np.ndarray:
    """Each section resized to ``shape[1:]`` (bilinear or nearest), section by section."""
    import torch
    import torch.nn.functional as F

    out = np.empty(tuple(shape) + array.shape[3:], array.dtype)
    for z in range(array.shape[0]):
        section = torch.from_numpy(np.ascontiguousarray(array[z])).float()
        section = section.permute(2, 0, 1)[None] if section.ndim == 3 else section[None, None]
        if linear:
            big = F.interpolate(section, size=tuple(shape[1:]), mode="bilinear", align_corners=False)
        else:
            big = F.interpolate(section, size=tuple(shape[1:]), mode="nearest")
        big = big[0].permute(1, 2, 0) if array.ndim == 4 else big[0, 0]
        out[z] = big.round().clamp(0, 255).numpy().astype(array.dtype)
    return out


def prepare(work: Path, shape, factor: int, seed: int) -> None:
    from ScribbleSegLib import phantom, scribbles, volume_io
    from ScribbleSegLib.geometry import Geometry, Volume

    work.mkdir(parents=True, exist_ok=True)
    small = (shape[0], shape[1] // factor, shape[2] // factor)
    t0 = time.perf_counter()
    vol = phantom.make_phantom(seed=seed, config=phantom.PhantomConfig(shape=small))
    print(f"phantom {small}: {time.perf_counter() - t0:.1f} s, peak RSS {_peak_gib():.2f} GiB", flush=True)
    t0 = time.perf_counter()
    sx, sy, sz = vol.image.geometry.spacing
    geometry = Geometry(spacing=(sx * small[2] / shape[2], sy * small[1] / shape[1], sz))
    if factor == 1:
        image, label, tissue = vol.image.array, vol.label, vol.tissue > 0
    else:
        image = _upsample_sections(vol.image.array, shape, linear=True)
        label = _upsample_sections(vol.label, shape, linear=False)
        tissue = _upsample_sections((vol.tissue > 0).astype(np.uint8), shape, linear=False) > 0
    del vol
    print(f"resampled to {tuple(shape)} ({image.shape[0] * image.shape[1] * image.shape[2] / 1e6:.0f} M voxels, "
          f"spacing {tuple(round(s, 5) for s in geometry.spacing)} mm): {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    strokes = scribbles.simulate_scribbles(label, seed=0, every=10, tissue=tissue, spacing=geometry.spacing)
    del tissue
    volume_io.write_labelmap(work / "truth.nrrd", label, geometry)
    volume_io.write_labelmap(work / "scribbles.nrrd", strokes, geometry)
    volume_io.write_rgb_volume(work / "image.nrrd", Volume(image, geometry))
    print(f"scribbles and files: {time.perf_counter() - t0:.1f} s; peak RSS {_peak_gib():.2f} GiB", flush=True)


def _peak_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _limited_group(limit_gib: Optional[float]) -> Optional[Path]:
    """A new memory control group under this process's own with the limit, or ``None`` (with a line why)."""
    from ScribbleSegLib.resources import cgroup_memory_folders

    if not limit_gib:
        return None
    for version, folder, _ in cgroup_memory_folders():
        limit_file = "memory.limit_in_bytes" if version == 1 else "memory.max"
        if not os.path.exists(os.path.join(folder, limit_file)):
            continue
        group = Path(folder) / f"scribbleseg-bench-{os.getpid()}"
        try:
            group.mkdir()
            (group / limit_file).write_text(str(int(limit_gib * 2**30)))
            return group
        except OSError as exc:
            print(f"no memory limit applied: {group}: {exc}")
            return None
    print("no memory limit applied: no writable memory control group (needs root and a memory controller)")
    return None


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))
    except (OSError, StopIteration, ValueError):
        return 0


def run(work: Path, model: str, limit_gib: Optional[float], rerun: bool) -> int:
    from ScribbleSegLib import volume_io
    from ScribbleSegLib.metrics import evaluate

    cache = work / "cache"
    if not rerun:
        shutil.rmtree(cache, ignore_errors=True)
    args = [sys.executable, "-m", "ScribbleSegLib", "segment", "--image", str(work / "image.nrrd"),
            "--scribbles", str(work / "scribbles.nrrd"), "--model", model, "--out", str(work / "result.seg.nrrd"),
            "--surface", str(work / "heart.vtp"), "--cache-dir", str(cache), "--device", "cpu"]
    group = _limited_group(limit_gib)

    def enter_group() -> None:
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    t0 = time.perf_counter()
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=enter_group,
                             cwd=str(ROOT))
    stage = ["start"]
    lines: List[str] = []
    order: List[str] = ["start"]

    def follow(stream) -> None:
        """Track the last progress bar shown and keep the other lines, from a child's output stream."""
        text = ""
        for chunk in iter(lambda: stream.read1(4096), b""):
            text += chunk.decode(errors="replace")
            parts = re.split(r"[\r\n]", text)
            text = parts.pop()
            for part in parts:
                m = _BAR.match(part)
                if m:
                    if m.group(1) != stage[0]:
                        stage[0] = m.group(1)
                        order.append(stage[0])
                elif part.strip():
                    lines.append(part)
        if text.strip():
            lines.append(text)

    readers = [threading.Thread(target=follow, args=(stream,), daemon=True) for stream in (child.stderr, child.stdout)]
    for reader in readers:
        reader.start()
    peaks: Dict[str, int] = {}
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        peaks[stage[0]] = max(peaks.get(stage[0], 0), _rss(child.pid))
        time.sleep(0.1)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    for reader in readers:
        reader.join(timeout=5)
    if group is not None:
        failcnt = (group / "memory.failcnt").read_text().strip() if (group / "memory.failcnt").exists() else "?"
        try:
            group.rmdir()
        except OSError:
            pass
    print("\n".join(lines))
    print(f"\nscribbleseg segment ({'re-run, cached features' if rerun else 'first run'}): exit "
          f"{child.returncode}, {wall:.1f} s wall, {usage.ru_utime + usage.ru_stime:.1f} s CPU, peak RSS "
          f"{usage.ru_maxrss / 2**20:.2f} GiB" + (f" (limit {limit_gib:g} GiB, reached {failcnt} times: the kernel "
                                                   "then reclaims file cache, and kills only when that is not "
                                                   "enough)" if group is not None else " (no limit)"))
    print("| stage (progress bar) | peak RSS sampled (GiB) |\n|---|---|")
    for name in order:
        if name in peaks:
            print(f"| {name} | {peaks[name] / 2**30:.2f} |")
    if child.returncode != 0:
        return child.returncode
    image = volume_io.read_image(work / "image.nrrd")
    truth = volume_io.read_label(work / "truth.nrrd", image.shape, image.geometry)
    result = volume_io.read_label(work / "result.seg.nrrd", image.shape, image.geometry)
    print(f"IoU {evaluate(result, truth)['iou']:.4f}; surface {(work / 'heart.vtp').stat().st_size / 2**20:.1f} MiB; "
          f"feature cache {sum(p.stat().st_size for p in cache.rglob('*') if p.is_file()) / 2**30:.1f} GiB on disk")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("prepare", "run"))
    parser.add_argument("--work", type=Path, required=True, help="folder for the stack, the cache and the results")
    parser.add_argument("--shape", type=int, nargs=3, default=PAPER_SHAPE, metavar=("Z", "Y", "X"))
    parser.add_argument("--factor", type=int, default=1,
                        help="make the phantom at 1/factor of rows and columns and resample it up (default: 1)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model", default="starter")
    parser.add_argument("--limit-gib", type=float, default=None, help="memory limit of the run's control group")
    parser.add_argument("--rerun", action="store_true", help="keep the feature cache of the previous run")
    args = parser.parse_args(argv)
    if args.mode == "prepare":
        prepare(args.work, args.shape, args.factor, args.seed)
        return 0
    return run(args.work, args.model, args.limit_gib, args.rerun)


if __name__ == "__main__":
    sys.exit(main())
