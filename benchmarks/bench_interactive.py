"""Interactive speed and memory of a re-run (issue "Interactive speed").

One work folder holds a phantom (image, truth, two scribble sets: ``first`` on
every 20th heart section, ``more`` adding every 10th) and its cached M-Unet
features; later calls reuse them.  Each measurement runs in a fresh process so
that its peak RSS (``VmHWM``) is its own::

    python benchmarks/bench_interactive.py prepare --work /tmp/bi100 --shape 100 512 512
    python benchmarks/bench_interactive.py session --work /tmp/bi100      # warm Session: stages, peak RSS
    python benchmarks/bench_interactive.py cli --work /tmp/bi100          # scribbleseg segment, cached features
    python benchmarks/bench_interactive.py agree --work /tmp/bi100        # coarse-to-fine vs exact h: final labels
    python benchmarks/bench_interactive.py cut --work /tmp/bi100          # the re-run's cut: from scratch vs reused
    python benchmarks/bench_interactive.py cut --work /tmp/bi100 --full   # ... and against the full cut (the optimum)
    python benchmarks/bench_interactive.py steps --work /tmp/bi40         # DDML steps, warm-started f: time vs IoU
    python benchmarks/bench_interactive.py rounds --work /tmp/bi40 --seed-across 1 0.5  # corrective rounds: IoU

``session`` opens a :class:`~ScribbleSegLib.session.Session` on the cached
features, runs ``first`` once, ``more`` ``--repeats`` times and then ``--corrective``
runs that each add simulated corrective strokes (:func:`~ScribbleSegLib.scribbles.corrective_scribbles`
on the last result), and prints each run's stage times.  ``agree`` trains f and the head once per scribble pattern,
evaluates ``h`` both ways and cuts both, and prints the Dice of the final labels.
``cut`` adapts to ``first`` and ``more`` once, then times the cut of ``more``: from
scratch, and after the cut of ``first`` with a :class:`~ScribbleSegLib.graphcut.CutMemory`
(kept coarse weights; starting from the last labels by the library's rule, and always).
``steps`` is a proposal, not the library's behaviour: the re-run with ``more`` with
fewer DDML steps, and with ``f`` started from the weights the run with ``first``
learnt (patched in here; the library always starts ``f`` afresh), against the IoU
of the default.  ``rounds`` runs the interactive rounds of ``scribbleseg bench``
(:func:`~ScribbleSegLib.protocol.run_rounds`) on this phantom: the ``first`` strokes and
``--patterns`` more patterns of simulated strokes on every 10th heart section, once per
``--seed-across`` value (the stroke pull's reach across sections), and prints the final IoU by round.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ScribbleSegLib.commands.bench import SEED_ACROSSES

MODES = ("prepare", "session", "cli", "agree", "cut", "steps", "rounds")


def peak_rss_gib() -> float:
    """This process's peak resident set size (VmHWM) in GiB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM"))
    return int(line.split()[1]) / 2**20


def prepare(work: Path, shape, seed: int, model: str) -> None:
    from ScribbleSegLib import pipeline, protocol, volume_io

    work.mkdir(parents=True, exist_ok=True)
    if not (work / "image.nrrd").exists():
        t0 = time.perf_counter()
        vol, first, more = protocol.rerun_case(shape, seed)
        print(f"phantom {tuple(shape)}: {time.perf_counter() - t0:.1f} s")
        volume_io.write_labelmap(work / "first.nrrd", first, vol.image.geometry)
        volume_io.write_labelmap(work / "more.nrrd", more, vol.image.geometry)
        volume_io.write_labelmap(work / "truth.nrrd", vol.label, vol.image.geometry)
        volume_io.write_rgb_volume(work / "image.nrrd", vol.image)
        del vol
    image = volume_io.read_image(work / "image.nrrd")
    t0 = time.perf_counter()
    loaded = pipeline.as_model(model, "cpu")
    _, _, cached = _features(work, image, loaded, model)
    print(f"features ({'cached' if cached else 'computed'}): {time.perf_counter() - t0:.1f} s; "
          f"peak RSS {peak_rss_gib():.2f} GiB")


def _read(work: Path, name: str, image):
    from ScribbleSegLib import volume_io

    if name == "truth":
        return volume_io.read_label(work / f"{name}.nrrd", image.shape, image.geometry)
    return volume_io.read_scribbles(work / f"{name}.nrrd", image.shape, image.geometry)


def _features(work: Path, image, loaded, model: str):
    """``(probability, features, cached)`` of the M-Unet on ``image``, from the work folder's cache when it has them."""
    from ScribbleSegLib import pipeline

    return pipeline.compute_features(image.array, loaded, model_path=model, cache_dir=work / "cache", device="cpu",
                                     scale=pipeline.network_scale(image.geometry.spacing[:2], loaded))


def session(work: Path, model: str, repeats: int, evaluation: str, corrective: int = 0) -> None:
    import dataclasses

    from ScribbleSegLib import volume_io
    from ScribbleSegLib.ddml import DDMLConfig
    from ScribbleSegLib.metrics import evaluate
    from ScribbleSegLib.scribbles import corrective_scribbles
    from ScribbleSegLib.session import Session

    image = volume_io.read_image(work / "image.nrrd")
    truth = _read(work, "truth", image)
    config = DDMLConfig()
    if evaluation and hasattr(config, "evaluation"):
        config = dataclasses.replace(config, evaluation=evaluation)
    t0 = time.perf_counter()
    s = Session(image, model, device="cpu", cache_dir=work / "cache")
    print(f"session open: {time.perf_counter() - t0:.2f} s (features cached: {s.features_cached}); "
          f"peak RSS so far {peak_rss_gib():.2f} GiB")
    runs = ["first"] + ["more"] * repeats + ["corrective"] * corrective
    labels = strokes = None  # the first run reads its strokes; each corrective run adds to the last run's
    for k, name in enumerate(runs):
        if name == "corrective":  # the user's next strokes, inside the largest wrong regions of the worst sections
            strokes = corrective_scribbles(truth, labels, strokes, seed=k, spacing=image.geometry.spacing)
        else:
            strokes = _read(work, name, image)
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        result = s.run(strokes, ddml_config=config)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        stages = ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items())
        label = "more, the strokes of the run before" if name == "more" and runs[k - 1] == "more" else name
        print(f"warm run ({label}): {wall:.2f} s wall, {cpu:.2f} s CPU ({stages}); "
              f"IoU {evaluate(result.labels, truth)['iou']:.4f}; peak RSS {peak_rss_gib():.2f} GiB")
        labels = result.labels
        del result  # the persistent worker writes a run's outputs and drops them before the next run
    print(json.dumps({"peak_rss_gib": round(peak_rss_gib(), 3)}))


def cli(work: Path, model: str, evaluation: str, first_run: bool = False, orientations: int = 1) -> None:
    cache = work / ("cache_first_run" if first_run else "cache")
    if first_run:  # an empty cache: the M-Unet runs (and its features are cached)
        import shutil

        shutil.rmtree(cache, ignore_errors=True)
    args = [sys.executable, "-m", "ScribbleSegLib", "segment", "--image", str(work / "image.nrrd"),
            "--scribbles", str(work / ("first.nrrd" if first_run else "more.nrrd")), "--model", model,
            "--out", str(work / "cli_more.seg.nrrd"), "--cache-dir", str(cache), "--device", "cpu", "--quiet"]
    if evaluation:
        args += ["--h-evaluation", evaluation]
    if orientations != 1:  # the M-Unet's test-time flips (their features have their own cache entry)
        args += ["--orientations", str(orientations)]
    # /usr/bin/time -v gives the child's maximum resident set size.
    timed = ["/usr/bin/time", "-v"] + args if os.path.exists("/usr/bin/time") else args
    t0 = time.perf_counter()
    done = subprocess.run(timed, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"scribbleseg segment failed (status {done.returncode}): {done.stderr[-3000:]}")
    peak = next((line.split(":")[1].strip() for line in done.stderr.splitlines()
                 if "Maximum resident set size" in line), "?")
    cpu = sum(float(line.split(":")[1]) for line in done.stderr.splitlines()
              if line.strip().startswith(("User time", "System time")))
    stages = next((line for line in done.stderr.splitlines() if line.startswith("time:")), "")
    print(f"CLI {'first run (M-Unet inference)' if first_run else 're-run (cached features)'}: {wall:.2f} s wall, "
          f"{cpu:.2f} s CPU; {stages}; peak RSS "
          f"{int(peak) / 2**20 if peak != '?' else float('nan'):.2f} GiB")


def agree(work: Path, model: str, patterns: int) -> None:
    from ScribbleSegLib import ddml, h_evaluation, pipeline, scribbles as scr, volume_io
    from ScribbleSegLib.graphcut import graph_cut
    from ScribbleSegLib.metrics import evaluate

    image = volume_io.read_image(work / "image.nrrd")
    truth = _read(work, "truth", image)
    loaded = pipeline.as_model(model, "cpu")
    prob, feats, _ = _features(work, image, loaded, model)
    config = ddml.DDMLConfig()
    w = np.float32(config.network_weight)
    for pattern in range(patterns):
        every = (20, 10, 5)[pattern % 3]
        strokes = scr.simulate_scribbles(truth, seed=pattern, every=every)
        x, y, _ = ddml.sample_pixels(feats, strokes, loaded.bank_features, loaded.bank_labels, config.pool_size,
                                     seed=pattern, scribble_share=config.scribble_share)
        f = ddml.train_ddml(x, y, config, seed=pattern)
        head = ddml.train_head(f, x, y, config, seed=pattern)
        out = {}
        for evaluation in ("exact", "coarse"):
            t0 = time.perf_counter()
            stats = {}
            h = h_evaluation.predict_h(feats, f, head, evaluation=evaluation, scribbles=strokes,
                                       network_probability=prob, stats=stats)
            t_h = time.perf_counter() - t0
            if evaluation == "coarse":
                print(f"  coarse evaluated {stats['evaluated'] / h.size:.1%} of the voxels")
            h = (1 - w) * h + w * prob
            labels = graph_cut(h, image.array, strokes, spacing_zyx=image.geometry.spacing_zyx)
            out[evaluation] = (h, labels, t_h)
        (he, le, te), (hc, lc, tc) = out["exact"], out["coarse"]
        inter = np.count_nonzero(le & lc)
        dice = 2 * inter / max(1, np.count_nonzero(le) + np.count_nonzero(lc))
        print(f"pattern {pattern} (every {every}th): h max |diff| {float(np.abs(he - hc).max()):.4f}, "
              f"voxels |diff| > 0.05: {np.count_nonzero(np.abs(he - hc) > 0.05)}; labels Dice {dice:.5f}, "
              f"differing voxels {np.count_nonzero(le != lc)}; IoU exact {evaluate(le, truth)['iou']:.4f} "
              f"coarse {evaluate(lc, truth)['iou']:.4f}; predict_h exact {te:.2f} s, coarse {tc:.2f} s")


def cut(work: Path, model: str, profile: bool = False, full: bool = False) -> None:
    from ScribbleSegLib import cut_memory, graphcut, volume_io
    from ScribbleSegLib.session import Session

    image = volume_io.read_image(work / "image.nrrd")
    s = Session(image, model, device="cpu", cache_dir=work / "cache", reuse_cut=False)
    strokes = {name: _read(work, name, image) for name in ("first", "more")}
    h = {name: s.run(strokes[name], method="ddml").probability for name in strokes}
    del s

    def timed(name, memory=None):
        t0, cpu0 = time.perf_counter(), time.process_time()
        labels = graphcut.graph_cut(h[name], image.array, strokes[name], spacing_zyx=image.geometry.spacing_zyx,
                                    memory=memory)
        return labels, time.perf_counter() - t0, time.process_time() - cpu0

    def dice(a, b):
        return 2 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))

    def energy(labels):
        return graphcut.energy(labels, h["more"], image.array, strokes["more"], image.geometry.spacing_zyx)

    if profile:  # where the time of a cut from scratch goes, by function of the cut's modules
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
    fresh, wall, cpu = timed("more")
    if profile:
        profiler.disable()
    print(f"cut of 'more' from scratch: {wall:.2f} s wall, {cpu:.2f} s CPU; energy {energy(fresh):.1f}")
    if full:  # the exact optimum, for how far the coarse-to-fine cut is from it
        t0 = time.perf_counter()
        best = graphcut.graph_cut(h["more"], image.array, strokes["more"], spacing_zyx=image.geometry.spacing_zyx,
                                  mode="full", memory_budget=int(0.9 * graphcut.available_memory()))
        optimum = energy(best)
        print(f"full cut of 'more': {time.perf_counter() - t0:.2f} s wall; energy {optimum:.1f}; the cut from "
              f"scratch has {100 * (energy(fresh) - optimum) / optimum:+.3f}% energy, Dice {dice(fresh, best):.5f} "
              f"against it")
        del best
    if profile:
        stats = pstats.Stats(profiler)
        for (path, _, function), (_, _, own, total, _) in sorted(stats.stats.items(), key=lambda i: -i[1][3]):
            if Path(path).name in ("graphcut.py", "cut_levels.py", "cut_band.py", "cut_memory.py") and total >= 0.1:
                print(f"  {Path(path).stem}.{function}: {total:.2f} s (own {own:.2f} s)")
    defaults = cut_memory.REUSE_MAX_BAND, cut_memory.REUSE_MAX_BAND_FULL, cut_memory.REUSE_MAX_REGION
    for label, limits in (("library's rule", defaults), ("always from the last labels", (1.0, 1.0, 1.0)),
                          ("coarse weights only", (0.0, 0.0, 0.0))):
        cut_memory.REUSE_MAX_BAND, cut_memory.REUSE_MAX_BAND_FULL, cut_memory.REUSE_MAX_REGION = limits
        memory = graphcut.CutMemory()
        timed("first", memory)
        labels, wall, cpu = timed("more", memory)
        print(f"cut of 'more' after 'first' ({label}): {wall:.2f} s wall, {cpu:.2f} s CPU; Dice vs scratch "
              f"{dice(labels, fresh):.5f}, {np.count_nonzero(labels != fresh)} voxels differ; energy "
              f"{energy(labels):.1f}; memory holds "
              f"{(memory._packed.nbytes + memory.data.nbytes) / 2**20:.0f} MiB + coarse "
              f"weights {sum(w.nbytes for ws in memory.coarse_weights.values() for w in ws) / 2**20:.0f} MiB")
    cut_memory.REUSE_MAX_BAND, cut_memory.REUSE_MAX_BAND_FULL, cut_memory.REUSE_MAX_REGION = defaults
    print(json.dumps({"peak_rss_gib": round(peak_rss_gib(), 3)}))


def steps(work: Path, model: str, seeds: int) -> None:
    import copy
    import dataclasses

    from ScribbleSegLib import ddml, volume_io
    from ScribbleSegLib.metrics import evaluate
    from ScribbleSegLib.session import Session

    image = volume_io.read_image(work / "image.nrrd")
    truth = _read(work, "truth", image)
    first, more = _read(work, "first", image), _read(work, "more", image)
    s = Session(image, model, device="cpu", cache_dir=work / "cache", reuse_cut=False)
    base = ddml.DDMLConfig()
    original = ddml._seeded
    previous = {}
    seeded_warm = warm_seeded(previous)

    rows = {}
    for seed in range(seeds):
        previous.clear()
        ddml._seeded = original
        captured = {}
        real_adapt = ddml.adapt

        def capture(*args, **kwargs):
            result = real_adapt(*args, **kwargs)
            captured["f"] = copy.deepcopy(result.f)
            return result

        ddml.adapt = capture
        s.run(first, seed=seed)
        ddml.adapt = real_adapt
        for label, n, warm in (("default (400 steps)", base.steps, False), ("200 steps", 200, False),
                               ("100 steps", 100, False), ("50 steps", 50, False),
                               ("100 steps, f warm-started", 100, True), ("50 steps, f warm-started", 50, True),
                               ("0 steps (previous f), head retrained", 0, True)):
            previous.clear()
            if warm:
                previous["f"] = captured["f"]
            ddml._seeded = seeded_warm if warm else original
            t0 = time.perf_counter()
            result = s.run(more, seed=seed, ddml_config=dataclasses.replace(base, steps=n))
            ddml._seeded = original
            rows.setdefault(label, []).append((evaluate(result.labels, truth)["iou"], result.timings["DDML training"],
                                               time.perf_counter() - t0))
    for label, values in rows.items():
        iou, train, total = (np.array(v) for v in zip(*values))
        print(f"{label}: IoU {iou.mean():.4f} (per seed {' '.join(f'{x:.4f}' for x in iou)}); DDML training "
              f"{train.mean():.2f} s; run {total.mean():.2f} s")


def warm_seeded(previous: dict):
    """A stand-in for ``ddml._seeded`` under which a new DDML network ``f`` starts from ``previous["f"]``'s
    weights when there is one (its input standardisation is redone on the new pool): how a warm-started
    re-run is measured here and in ``bench_warm_start.py``; the library always starts ``f`` afresh."""
    from ScribbleSegLib import ddml

    original = ddml._seeded

    def seeded(seed, build):
        made = original(seed, build)
        if isinstance(made, ddml.DDMLNet) and "f" in previous:
            state = {k: v for k, v in previous["f"].state_dict().items() if k not in ("mean", "inv_std")}
            made.load_state_dict(state, strict=False)
            made.requires_grad_(True)
        return made

    return seeded


def rounds(work: Path, model: str, patterns: int, acrosses) -> None:
    from ScribbleSegLib import pipeline, protocol, scribbles as scr, volume_io
    from ScribbleSegLib.graphcut import GraphCutParams

    image = volume_io.read_image(work / "image.nrrd")
    truth = (_read(work, "truth", image) > 0).astype(np.uint8)
    loaded = pipeline.as_model(model, "cpu")
    outputs = _features(work, image, loaded, model)[:2]
    sets = [("first", _read(work, "first", image))] + [
        (f"pattern {k}", scr.simulate_scribbles(truth, seed=k, every=10, spacing=image.geometry.spacing))
        for k in range(1, patterns + 1)]
    for name, strokes in sets:
        for across in acrosses:
            run = protocol.run_rounds(image, truth, strokes, loaded, outputs,
                                      cut_params=GraphCutParams(seed_across=across))
            print(f"{name}, seed_across {across:g}: final IoU by round "
                  + " / ".join(f"{r.final['iou']:.4f}" for r in run), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--work", required=True, type=Path, help="folder of the phantom, scribbles and cache")
    parser.add_argument("--model", default="starter", help="model file (default: the shipped starter model)")
    parser.add_argument("--shape", type=int, nargs=3, default=(100, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--corrective", type=int, default=0,
                        help="session: runs after the 'more' ones, each adding simulated corrective strokes "
                             "(2 on each of the 3 worst sections, as the interactive rounds of the bench)")
    parser.add_argument("--patterns", type=int, default=3,
                        help="scribble patterns (agree; rounds: beside `first`) or seeds (steps)")
    parser.add_argument("--first-run", action="store_true", help="cli: with an empty cache (M-Unet included)")
    parser.add_argument("--orientations", type=int, default=1, help="cli: the M-Unet's test-time flips (1, 2 or 4)")
    parser.add_argument("--evaluation", default="", help="h evaluation (coarse or exact; default: the library's)")
    parser.add_argument("--profile", action="store_true", help="cut: where the cut from scratch spends its time")
    parser.add_argument("--full", action="store_true", help="cut: against the full cut too (about 380 B/voxel)")
    parser.add_argument("--seed-across", type=float, nargs="+", default=list(SEED_ACROSSES),
                        help="rounds: the stroke pull's reach across sections to compare (default: the bench's)")
    args = parser.parse_args()
    from ScribbleSegLib.measure import machine_summary
    from ScribbleSegLib.starter import resolve_model

    model = str(resolve_model(args.model))
    print(machine_summary())
    if args.mode == "prepare":
        prepare(args.work, args.shape, args.seed, model)
    elif args.mode == "session":
        session(args.work, model, args.repeats, args.evaluation, args.corrective)
    elif args.mode == "cli":
        cli(args.work, model, args.evaluation, args.first_run, args.orientations)
    elif args.mode == "cut":
        cut(args.work, model, args.profile, args.full)
    elif args.mode == "steps":
        steps(args.work, model, args.patterns)
    elif args.mode == "rounds":
        rounds(args.work, model, args.patterns, args.seed_across)
    else:
        agree(args.work, model, args.patterns)


if __name__ == "__main__":
    main()
