"""Time of the scribble re-run's DDML part: pixel sampling, DDML + head training, h for every voxel.

Target (issue): after new scribbles, DDML + head + graph cut on a cached
100 x 512 x 512 volume with 32 float16 feature channels must take <= 30 s on a
2-core CPU.  This benchmark writes such a feature volume (1.7 GB) to a
memory-mapped file in a temporary folder, chunk by chunk, as the feature cache
holds it, with scribbles on every 10th section and a training-pixel bank, and
times each step of :func:`ScribbleSegLib.ddml.adapt` with the default
:class:`~ScribbleSegLib.ddml.DDMLConfig`:

* ``sample_pixels``, ``train_ddml``, ``train_head`` (one torch thread each, by design);
* ``predict_h`` with 1 and with 2 worker threads;
* for comparison, the same work with torch's intra-op threads instead: one DDML
  step (``ddml_loss`` forward + backward on a minibatch) and ``head(f(x))`` on
  8192-voxel chunks, at 1 and 2 intra-op threads.

``--busy`` runs the timings again while a second process keeps one core busy
(what another program, or Slicer's GUI, does to a 2-core machine).  ``--loss-every
N [N ...]`` also times ``train_ddml`` with its loss value kept every N-th step
(:data:`ScribbleSegLib.ddml.LOSS_EVERY`; 1 is every step, as before it existed), the
values in turn within each run, so that they share the machine's state.

Run from the repository root::

    python benchmarks/bench_ddml.py [--shape 100 512 512] [--channels 32] [--repeats 2] [--busy]
        [--loss-every 1 10]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# The library of this checkout, not an installed one (comparing commits runs this file from each).
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ScribbleSegLib import ddml, ddml_loss, h_evaluation  # noqa: E402
from ScribbleSegLib.runtime import torch_threads  # noqa: E402


def write_features(path: Path, shape, channels: int, seed: int = 0):
    """A float16 feature memmap: an ellipsoid 'heart' shifted in 8 channels, plus noise; and its truth."""
    rng = np.random.default_rng(seed)
    depth, rows, cols = shape
    features = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(depth, rows, cols, channels))
    yy, xx = np.ogrid[:rows, :cols]
    truth = np.zeros(shape, np.uint8)
    shift = np.zeros(channels, np.float32)
    shift[:8] = 1.0
    for z in range(depth):
        r = 1.0 - ((z - depth / 2) / (0.45 * depth)) ** 2
        if r > 0:
            truth[z] = ((yy - rows / 2) / (0.35 * rows)) ** 2 + ((xx - cols / 2) / (0.3 * cols)) ** 2 < r
        noise = rng.standard_normal((rows, cols, channels), dtype=np.float32)
        features[z] = noise + truth[z][..., None] * shift
    features.flush()
    return truth


def scribble(truth: np.ndarray, every: int = 10) -> np.ndarray:
    """Straight strokes through the heart and along the border on every ``every``-th section."""
    scribbles = np.zeros_like(truth)
    depth, rows, cols = truth.shape
    for z in range(every // 2, depth, every):
        if truth[z].any():
            r = rows // 2
            inside = np.flatnonzero(truth[z, r])
            scribbles[z, r - 1:r + 2, inside[len(inside) // 4]:inside[3 * len(inside) // 4]] = 1
        scribbles[z, 5:8, cols // 8:7 * cols // 8] = 2
        scribbles[z, rows - 8:rows - 5, cols // 8:7 * cols // 8] = 2
    return scribbles


def timed(fn, *args, **kwargs):
    """``fn``'s result, wall seconds and process CPU seconds (all threads)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t, time.process_time() - c


def _fmt(wall_cpu) -> str:
    return f"{wall_cpu[0]:.2f} ({wall_cpu[1]:.2f})"


def intraop_comparison(features, f, head, config: ddml.DDMLConfig, x, y):
    """ms per DDML step and s per volume of head(f(x)) with torch's own 1 or 2 intra-op threads."""
    rows = {}
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y.astype(np.int64))
    probe = ddml.DDMLNet(x.shape[1], config.hidden, config.out_dim)
    optimizer = torch.optim.Adam(probe.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(0)
    slab = torch.from_numpy(np.array(features[0], dtype=np.float16).reshape(-1, features.shape[-1]))
    for threads in (1, 2):
        with torch_threads(threads):
            times = []
            for step in range(60):
                batch = torch.randint(len(xt), (config.batch_size,), generator=generator)
                t = time.perf_counter()
                loss = ddml_loss.ddml_loss(probe(xt[batch]), yt[batch], config.tau, config.beta)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if step >= 10:
                    times.append(time.perf_counter() - t)
            t = time.perf_counter()
            with torch.inference_mode():
                for start in range(0, len(slab), 8192):
                    head(f(slab[start:start + 8192].float()))
            per_section = time.perf_counter() - t
        rows[threads] = (1e3 * float(np.median(times)), per_section * features.shape[0])
    return rows


def loss_every_comparison(x, y, config, values, label: str) -> None:
    """``train_ddml``'s time with the loss value kept every N-th step, for each N in turn."""
    kept = ddml.LOSS_EVERY
    try:
        for n in values:
            ddml.LOSS_EVERY = n
            _, wall, cpu = timed(ddml.train_ddml, x, y, config)
            print(f"[{label}]   train_ddml with the loss kept every {n} step(s): {wall:.2f} s ({cpu:.2f} s CPU)")
    finally:
        ddml.LOSS_EVERY = kept


def run_once(features, scribbles, bank, bank_labels, config, label: str, loss_every=()):
    (x, y, _), *t_sample = timed(ddml.sample_pixels, features, scribbles, bank, bank_labels, config.pool_size,
                                 seed=0, scribble_share=config.scribble_share)
    f, *t_ddml = timed(ddml.train_ddml, x, y, config)
    head, *t_head = timed(ddml.train_head, f, x, y, config)
    h1, *t_pred1 = timed(h_evaluation.predict_h, features, f, head, workers=1)
    h2, *t_pred2 = timed(h_evaluation.predict_h, features, f, head, workers=2)
    assert np.array_equal(h1, h2)
    total = [a + b + c + d for a, b, c, d in zip(t_sample, t_ddml, t_head, t_pred2)]
    print(f"[{label}] wall (CPU) seconds: sample_pixels {_fmt(t_sample)} | train_ddml {_fmt(t_ddml)} "
          f"= {1e3 * t_ddml[0] / max(1, config.steps):.1f} ms/step | train_head {_fmt(t_head)} | "
          f"predict_h 1 worker {_fmt(t_pred1)}, 2 workers {_fmt(t_pred2)} | re-run total (2 workers) {_fmt(total)}")
    if loss_every:
        loss_every_comparison(x, y, config, loss_every, label)
    rows = intraop_comparison(features, f, head, config, x, y)
    for threads, (step_ms, volume_s) in rows.items():
        print(f"[{label}]   torch intra-op {threads} thread(s): DDML step {step_ms:.1f} ms, "
              f"head(f(x)) over the volume {volume_s:.2f} s")
    return h2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(100, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--busy", action="store_true", help="also time with another process keeping a core busy")
    parser.add_argument("--loss-every", type=int, nargs="+", default=[], metavar="N",
                        help="also time train_ddml with its loss kept every N-th step, each N in turn")
    args = parser.parse_args(argv)

    config = ddml.DDMLConfig()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads by default, "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}; config {config}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.npy"
        truth, t_write, _ = timed(write_features, path, tuple(args.shape), args.channels)
        features = np.load(path, mmap_mode="r")
        scribbles = scribble(truth)
        rng = np.random.default_rng(1)
        bank_labels = (np.arange(20000) % 2).astype(np.uint8)
        bank = (rng.standard_normal((20000, args.channels)) + np.where(bank_labels[:, None] == 1, 1.0, 0.0)
                * (np.arange(args.channels) < 8)).astype(np.float16)
        print(f"features {features.shape} float16 = {features.nbytes / 2**30:.2f} GiB written in {t_write:.1f} s; "
              f"scribbled voxels: heart {(scribbles == 1).sum()}, background {(scribbles == 2).sum()}")
        # torch imports its compiler stack on the first optimizer of a process (~1-2 s):
        # a one-time cost that the Slicer worker pays once per session, not per run.
        _, t_first, _ = timed(ddml.train_ddml, bank[:64].astype(np.float32), bank_labels[:64],
                              ddml.DDMLConfig(steps=1, batch_size=8))
        print(f"first train_ddml call of the process (one-time imports): {t_first:.2f} s")
        h = None
        for repeat in range(args.repeats):
            h = run_once(features, scribbles, bank, bank_labels, config, f"run #{repeat + 1}", args.loss_every)
        if args.busy:
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                for repeat in range(args.repeats):
                    run_once(features, scribbles, bank, bank_labels, config, f"busy core #{repeat + 1}")
            finally:
                busy.kill()
                busy.wait()
        accuracy = ((h > 0.5) == truth).mean()
        print(f"voxel accuracy of h > 0.5 against the synthetic truth: {accuracy:.4f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {peak:.2f} GiB (the memmap's pages count when resident)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
