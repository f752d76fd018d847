"""A proposal, measured: re-runs that start the DDML network ``f`` from the last run's, with fewer steps.

A warm session trains ``f`` afresh on every run (400 steps by default, most of a
40 x 256 x 256 re-run).  This runs the bench's interactive rounds
(:func:`ScribbleSegLib.protocol.run_rounds`: round 1 on every 10th heart section, then
corrective strokes) on the bench's validation volumes (2 and 3 of each family, with the
networks ``scribbleseg bench`` trained), once as the library does and once per
``--steps`` value with ``f`` of rounds 2 and later started from the previous round's
``f`` (weights and input standardisation) and trained for that many steps: patched in
here, the library does not do it.  It prints the final IoU per round, mean over the 4
protocols, in-family and cross-family::

    python benchmarks/bench_warm_start.py --models scribbleseg-bench --cache /tmp/feat --steps 100 50
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


def _warm_trainer(ddml, steps: int, last: dict):
    """A ``train_ddml`` that starts from ``last["f"]`` (when set) and takes ``steps`` steps."""
    import torch

    from ScribbleSegLib.runtime import torch_threads

    cold = ddml.train_ddml

    def train(x, y, config=None, seed=0, progress=None, cancel=None):
        config = config or ddml.DDMLConfig()
        if last.get("f") is None:
            last["f"] = cold(x, y, config, seed, progress, cancel)
            return last["f"]
        xt, yt = ddml._tensors(x, y)
        f = ddml._seeded(seed, lambda: ddml.DDMLNet(xt.shape[1], config.hidden, config.out_dim))
        f.load_state_dict(last["f"].state_dict())
        f.requires_grad_(True)
        optimizer = ddml._Adam(f.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        generator = torch.Generator().manual_seed(seed)
        by_class = [torch.nonzero(yt == c).reshape(-1) for c in (0, 1)]
        half = config.batch_size // 2
        terms = ddml._pair_terms(torch.arange(2 * half) >= half, config.tau, torch.float32)
        f.train()
        with torch_threads(1):
            for _ in range(steps):
                batch = torch.cat([idx[torch.randint(len(idx), (half,), generator=generator)] for idx in by_class])
                loss = ddml._pair_loss(f(xt[batch]), *terms, config.beta)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                f.loss_history.append(float(loss.detach()))
        f.eval()
        f.requires_grad_(False)
        last["f"] = f
        return f

    return train


def main(argv=None) -> int:
    from bench_settings import _outputs

    from ScribbleSegLib import ddml, protocol, scribbles
    from ScribbleSegLib.model_file import load_model
    from ScribbleSegLib.phantom import FAMILIES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="folder with munet_<family>.model files")
    parser.add_argument("--cache", type=Path, help="folder for the networks' outputs per volume (bench_settings.py's)")
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 50], help="steps of a warm-started f")
    parser.add_argument("--volumes", type=int, nargs="+", default=[2, 3])
    args = parser.parse_args(argv)

    cold = ddml.train_ddml
    modes = [("library (cold, 400 steps)", None)] + [(f"warm start, {n} steps", n) for n in args.steps]
    results = {name: {} for name, _ in modes}
    volumes = {f: protocol.make_volumes(max(args.volumes) + 1, 0, None, f) for f in FAMILIES}
    for train in FAMILIES:
        model = load_model(args.models / f"munet_{train}.model", device="cpu")
        for test in FAMILIES:
            for i in args.volumes:
                v = volumes[test][i]
                outputs = _outputs(v, model, args.cache, f"{train}_{test}{i}")
                strokes = scribbles.simulate_scribbles(v.label, seed=0, every=10, tissue=v.tissue > 0,
                                                       spacing=v.image.geometry.spacing)
                for name, steps in modes:
                    ddml.train_ddml = cold if steps is None else _warm_trainer(ddml, steps, {})
                    try:
                        t0 = time.perf_counter()
                        rounds = protocol.run_rounds(v.image, v.label, strokes, model, outputs)
                    finally:
                        ddml.train_ddml = cold
                    ious = [r.final["iou"] for r in rounds]
                    results[name].setdefault(train + test, []).append(ious)
                    print(f"{train}→{test} volume {i}, {name}: final IoU by round "
                          f"{' / '.join(f'{x:.4f}' for x in ious)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print("\n| f in rounds 2+ | mean of 4 protocols, rounds 1 / 2 / 3 | in-family | cross-family |\n|---|---|---|---|")
    for name, by_protocol in results.items():
        def mean(keys):
            return np.mean([np.mean(by_protocol[k], axis=0) for k in keys], axis=0)
        cells = [mean(list(by_protocol)), mean([k for k in by_protocol if k[0] == k[1]]),
                 mean([k for k in by_protocol if k[0] != k[1]])]
        print(f"| {name} | " + " | ".join(" / ".join(f"{x:.4f}" for x in c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
