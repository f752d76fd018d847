"""A proposal, measured: the M-Unet's outputs smoothed across neighbouring sections.

The network sees one section at a time.  This reads the networks' outputs of the
bench's validation volumes from a ``bench_settings.py --cache`` folder and writes a
second such folder in which the logits and the features are smoothed across sections
with the weights 1/4, 1/2, 1/4 (the end sections kept), so that
``bench_settings.py --cache`` on it gives every stage's IoU with them (the library does
not do this).  It prints the M-Unet's IoU (``p > 1/2``) per volume before and after::

    python benchmarks/bench_settings.py --models scribbleseg-bench --cache /tmp/feat
    python benchmarks/bench_across_sections.py --cache /tmp/feat --out /tmp/feat-sections
    python benchmarks/bench_settings.py --models scribbleseg-bench --cache /tmp/feat-sections
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def _across_sections(a: np.ndarray) -> np.ndarray:
    out = a.astype(np.float32)
    out[1:-1] = 0.25 * a[:-2] + 0.5 * a[1:-1] + 0.25 * a[2:]
    return out


def main(argv=None) -> int:
    from ScribbleSegLib import protocol
    from ScribbleSegLib.metrics import evaluate
    from ScribbleSegLib.phantom import FAMILIES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True, help="bench_settings.py's --cache folder (read)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the changed outputs (written)")
    parser.add_argument("--volumes", type=int, nargs="+", default=[2, 3], help="phantom indices (bench: 2 3)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed of the set (bench: 0)")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    families = tuple(FAMILIES)
    vols = {f: protocol.make_volumes(max(args.volumes) + 1, args.seed, None, f) for f in families}
    for train in families:
        for test in families:
            for i in args.volumes:
                name, v, t0 = f"{train}_{test}{i}", vols[test][i], time.perf_counter()
                with np.load(args.cache / f"{name}.npz") as stored:
                    prob, feats = stored["prob"], stored["feats"]
                logit, new_feats = _across_sections(_logit(prob)), _across_sections(feats)
                new_prob = (1 / (1 + np.exp(-logit))).astype(np.float32)
                np.savez(args.out / f"{name}.npz", prob=new_prob, feats=new_feats.astype(np.float16))
                print(f"{name}: M-Unet IoU {evaluate(prob > 0.5, v.label)['iou']:.4f} -> "
                      f"{evaluate(new_prob > 0.5, v.label)['iou']:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
