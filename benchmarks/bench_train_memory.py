"""Peak memory of one training step on the CPU against ``training.step_bytes``'s estimate.

Each batch size runs in a fresh process, so that its peak resident set size (``VmHWM``) is its own: the rise of
the peak over one Adam step of the network (``--preset``, the M-Unet) on random patches, next to the estimate
that ``scribbleseg train`` checks against the free memory before it starts::

    python benchmarks/bench_train_memory.py --batches 8 32 [--preset small] [--threads]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def peak_bytes() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1]) * 1024


def one_step(batch: int, preset: str, threads: bool) -> None:
    """One training step of ``batch`` random patches; prints the peak's rise and the estimate (MiB)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from ScribbleSegLib import multifov, training
    from ScribbleSegLib.nets import ModelConfig, build_net

    config = ModelConfig.preset(preset, "munet")
    options = training.TrainOptions(batch=batch, augment=False)
    estimate = training.step_bytes(config, options)
    torch.manual_seed(0)
    net = build_net(config).train()
    geom = multifov.patch_geometry(config)
    inputs = [torch.rand(batch, 3, *w.size) for w in geom.windows]
    targets = [torch.rand(batch, 1, config.patch, config.patch) for _ in range(config.fov_count)]
    optimiser = torch.optim.Adam(net.parameters())
    before = peak_bytes()
    pool = ThreadPoolExecutor(2) if threads else None
    training.backward_step(net, inputs, targets, geom, config, pool)
    optimiser.step()
    rise = peak_bytes() - before
    print(f"batch {batch}: peak rose {rise / 2**20:.0f} MiB; step_bytes {estimate / 2**20:.0f} MiB "
          f"({estimate / rise:.2f} x)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--threads", action="store_true", help="the experts on two threads, as training on a CPU")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.one:
        one_step(args.one, args.preset, args.threads)
        return 0
    for batch in args.batches:
        subprocess.run([sys.executable, __file__, "--one", str(batch), "--preset", args.preset]
                       + (["--threads"] if args.threads else []), check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
