"""A proposal, measured: re-runs that start the DDML network ``f`` from the last run's, with fewer steps.

A warm session trains ``f`` afresh on every run (400 steps by default, most of a
40 x 256 x 256 re-run).  This runs the bench's interactive rounds
(:func:`ScribbleSegLib.protocol.run_rounds`: round 1 on every 10th heart section, then
corrective strokes) on the bench's validation volumes (2 and 3 of each family, with the
networks ``scribbleseg bench`` trained), once as the library does and once per
``--steps`` value with ``f`` of rounds 2 and later started from the previous round's
weights (its input standardisation redone on the new pool, as ``bench_interactive.py
steps`` does) and trained for that many steps: patched in here, the library does not
do it.  It prints the final IoU per round, mean over the 4
protocols, in-family and cross-family::

    python benchmarks/bench_warm_start.py --models scribbleseg-bench --cache /tmp/feat --steps 100 50
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@contextlib.contextmanager
def _warm_started(steps: int):
    """Within: every run after the first starts ``f`` from the last run's (``bench_interactive.warm_seeded``)
    and trains it for ``steps`` steps; the first run is the library's."""
    from bench_interactive import warm_seeded

    from ScribbleSegLib import ddml

    previous: dict = {}
    seeded, adapt = ddml._seeded, ddml.adapt

    def warm_adapt(*args, config=None, **kwargs):
        if "f" in previous:
            config = dataclasses.replace(config or ddml.DDMLConfig(), steps=steps)
        result = adapt(*args, config=config, **kwargs)
        previous["f"] = result.f
        return result

    ddml._seeded, ddml.adapt = warm_seeded(previous), warm_adapt
    try:
        yield
    finally:
        ddml._seeded, ddml.adapt = seeded, adapt


def main(argv=None) -> int:
    from bench_settings import _outputs

    from ScribbleSegLib import protocol, scribbles
    from ScribbleSegLib.model_file import load_model
    from ScribbleSegLib.phantom import FAMILIES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="folder with munet_<family>.model files")
    parser.add_argument("--cache", type=Path, help="folder for the networks' outputs per volume (bench_settings.py's)")
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 50], help="steps of a warm-started f")
    parser.add_argument("--volumes", type=int, nargs="+", default=[2, 3])
    args = parser.parse_args(argv)

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
                    t0 = time.perf_counter()
                    with contextlib.nullcontext() if steps is None else _warm_started(steps):
                        rounds = protocol.run_rounds(v.image, v.label, strokes, model, outputs)
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
