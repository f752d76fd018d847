"""``scribbleseg bench``: the paper's evaluation (Table I, Fig. 7) on phantoms, with two peer tools.

Protocol (Harada et al., §IV): 6 phantom volumes, 2 to train the networks, 2 to
choose the graph-cut parameters (gamma, sigma, delta) and the DDML settings,
2 to test; three scribble patterns per test volume on every 10th heart section.
Table I is the mean (± std) over test volumes and patterns; Fig. 7 is the IoU
with 1 to 6 annotated sections.  scikit-image's random walker and an
ilastik-style random forest run on the same volumes and scribbles.
"""

from __future__ import annotations

import argparse
import time

from .common import add_experiment_options, make_output_folder

SECTION_START = "<!-- scribbleseg bench: start -->"
SECTION_END = "<!-- scribbleseg bench: end -->"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    add_experiment_options(parser, "scribbleseg-bench", 6.0)
    parser.add_argument("--no-peers", action="store_true", help="skip the random walker and random forest")
    parser.add_argument("--update", metavar="BENCHMARKS.md",
                        help=f"replace the section between '{SECTION_START}' and '{SECTION_END}' in this "
                             "markdown file with the results")


def _tune(val, val_scribbles, outputs, munet, seed, log):
    """Choose DDML settings, then gamma/sigma/delta, by mean IoU on the validation volumes."""
    import dataclasses
    import itertools

    import numpy as np

    from ..ddml import DDMLConfig
    from ..graphcut import GraphCutParams, graph_cut
    from ..metrics import evaluate
    from ..pipeline import segment

    base = DDMLConfig()
    candidates = [base] + [dataclasses.replace(base, **change) for change in DDML_VARIANTS]
    best_cfg, best_iou, hs = base, -1.0, None
    for cfg in candidates:
        runs = [(v, s, segment(v.image, s, munet, method="ddml", ddml_config=cfg, seed=seed,
                               features=outputs[id(v)].munet).probability)
                for v in val for s in val_scribbles[id(v)]]
        iou = float(np.mean([evaluate(h > 0.5, v.label)["iou"] for v, s, h in runs]))
        log(f"  DDML {_diff(cfg, base) or 'defaults'}: validation IoU {iou:.3f}")
        if iou > best_iou:
            best_cfg, best_iou, hs = cfg, iou, runs
    base_cut = GraphCutParams()
    best_cut, best_iou = base_cut, -1.0
    for g, s_, d in itertools.product(*CUT_GRID):
        params = dataclasses.replace(base_cut, gamma=base_cut.gamma * g, sigma=base_cut.sigma * s_,
                                     delta=base_cut.delta * d)
        iou = float(np.mean([evaluate(graph_cut(h, v.image.array, s, v.image.geometry.spacing_zyx, params),
                                      v.label)["iou"] for v, s, h in hs]))
        if iou > best_iou:
            best_cut, best_iou = params, iou
    log(f"  graph cut: gamma {best_cut.gamma:g}, sigma {best_cut.sigma:g}, delta {best_cut.delta:g} "
        f"-> validation IoU {best_iou:.3f}")
    return best_cfg, best_cut


#: DDML variants tried on the validation volumes (changes to the defaults).
DDML_VARIANTS = ({"scribble_share": 0.2}, {"scribble_share": 0.5}, {"tau": 3.0})
#: Factors applied to the default gamma, sigma and delta on the validation volumes.
CUT_GRID = ((0.25, 0.5, 1.0, 2.0), (0.5, 0.75, 1.0, 1.5), (0.5, 1.0, 2.0))


def _diff(cfg, base) -> str:
    import dataclasses

    return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items() if getattr(base, k) != v)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    import json
    import shlex
    import sys
    from pathlib import Path

    import numpy as np

    from .. import protocol, scribbles
    from ..errors import ScribbleSegError
    from ..measure import machine_summary, stage
    from ..metrics import evaluate, summarize
    from ..pipeline import segment
    from ..progress import TqdmProgress

    if args.update and not Path(args.update).is_file():
        raise ScribbleSegError(f"--update {args.update}: no such file")
    if not args.no_peers:
        from ..baselines import _require

        _require("skimage")
        _require("sklearn")
    out = make_output_folder(args.out)
    command = "scribbleseg bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    started = time.perf_counter()
    bar = TqdmProgress(disable=args.quiet)
    records = {}

    def log(message: str) -> None:
        bar.close()
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    log("phantoms: 2 train, 2 validation, 2 test")
    with stage(records, "phantoms (6 volumes)"):
        vols = protocol.make_volumes(6, args.seed, args.shape)
    train, val, test = vols[:2], vols[2:4], vols[4:]
    models = protocol.train_networks(train, val, out, args.train_minutes, args.device, args.seed, progress=bar,
                                     log=log, timed=lambda name: stage(records, name))

    log("M-Unet and U-Net inference on the validation and test volumes")
    with stage(records, "inference (4 volumes, both networks)"):
        outputs = {id(v): protocol.compute_outputs(v.image.array, models["munet"], models["unet"],
                                                   device=args.device, progress=bar) for v in val + test}
    val_scribbles = {id(v): [scribbles.simulate_scribbles(v.label, seed=100 + p, every=10, tissue=v.tissue > 0) for p in range(3)]
                     for v in val}
    log("choosing DDML settings and gamma/sigma/delta on the validation volumes")
    with stage(records, "tuning on validation"):
        ddml_config, cut_params = _tune(val, val_scribbles, outputs, models["munet"], args.seed, log)

    log("Table I: 2 test volumes x 3 scribble patterns, every 10th heart section")
    runs, peer_runs, pattern_timings = [], [], []
    with stage(records, "Table I (6 runs of DDML + head + cut)"):
        test_scribbles = {id(v): [scribbles.simulate_scribbles(v.label, seed=p, every=10, tissue=v.tissue > 0) for p in range(3)]
                          for v in test}
        for v in test:
            for s in test_scribbles[id(v)]:
                metrics, result = protocol.evaluate_pattern(v.image, v.label, s, models["munet"], outputs[id(v)],
                                                            cut_params=cut_params, ddml_config=ddml_config,
                                                            seed=args.seed)
                runs.append(metrics)
                pattern_timings.append(result.timings)

    log("Fig. 7: IoU with 1 to 6 annotated sections")
    fig7 = {}
    with stage(records, "Fig. 7 (36 runs)"):
        for n in range(1, 7):
            ious = {"M-Unet+DDML": [], "M-Unet+DDML+GC": []}
            for v in test:
                for p in range(3):
                    s = scribbles.simulate_scribbles(v.label, seed=p, n_sections=n, tissue=v.tissue > 0)
                    result = segment(v.image, s, models["munet"], cut_params=cut_params, ddml_config=ddml_config,
                                     seed=args.seed, features=outputs[id(v)].munet)
                    ious["M-Unet+DDML"].append(evaluate(result.probability > 0.5, v.label)["iou"])
                    ious["M-Unet+DDML+GC"].append(evaluate(result.labels, v.label)["iou"])
            fig7[n] = {k: (float(np.mean(x)), float(np.std(x))) for k, x in ious.items()}
            log(f"  {n} section(s): IoU {fig7[n]['M-Unet+DDML+GC'][0]:.3f} ± {fig7[n]['M-Unet+DDML+GC'][1]:.3f}")

    if not args.no_peers:
        from ..baselines import forest_segment, random_walker_segment

        for name, fn in (("random walker (scikit-image)", random_walker_segment),
                         ("random forest on multiscale features (ilastik-style)", forest_segment)):
            log(f"peer: {name}")
            rows = []
            with stage(records, f"peer: {name} (6 runs)"):
                for v in test:
                    for s in test_scribbles[id(v)]:
                        labels = (fn(v.image.array, s, v.image.geometry.spacing_zyx) if fn is random_walker_segment
                                  else fn(v.image.array, s, seed=args.seed))
                        rows.append(evaluate(labels, v.label))
            peer_runs.append((name, summarize(rows)))

    table = protocol.table_i(runs)
    md = _report(command, machine_summary(), table, fig7, peer_runs, records, pattern_timings, ddml_config,
                 cut_params, time.perf_counter() - started)
    (out / "bench.md").write_text(md)
    (out / "results.json").write_text(json.dumps({"table_i": runs, "fig7": fig7,
                                                  "peers": peer_runs}, indent=1, default=float))
    _plot_fig7(fig7, out / "fig7.png")
    if args.update:
        _update_section(Path(args.update), md)
    print(md)
    print(f"wrote {out}/bench.md, results.json, fig7.png" + (f"; updated {args.update}" if args.update else ""))
    return 0


def _report(command, machine, table, fig7, peer_runs, records, pattern_timings, ddml_config, cut_params,
            total) -> str:
    import dataclasses
    import datetime

    import numpy as np

    lines = [SECTION_START, "## Table I and Fig. 7 on the phantom (`scribbleseg bench`)", "",
             f"- Command: `{command}`", f"- Machine: {machine}",
             f"- Date: {datetime.date.today().isoformat()}; total time {total / 60:.1f} min", "",
             "### Table I (2 test volumes × 3 scribble patterns, every 10th heart section; metrics over all voxels)",
             "", table, ""]
    if peer_runs:
        lines += ["### Peer tools on the same test volumes and scribbles", "",
                  "| tool | precision | recall | F1 | IoU |", "|---|---|---|---|---|"]
        for name, s in peer_runs:
            lines.append(f"| {name} | " + " | ".join(f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}"
                                                      for m in ("precision", "recall", "f1", "iou")) + " |")
        lines.append("")
    lines += ["### Fig. 7: IoU vs number of annotated sections (mean ± std over 2 volumes × 3 patterns)", "",
              "| sections | M-Unet+DDML | M-Unet+DDML+GC |", "|---|---|---|"]
    for n, row in fig7.items():
        lines.append(f"| {n} | " + " | ".join(f"{row[k][0]:.3f} ± {row[k][1]:.3f}"
                                              for k in ("M-Unet+DDML", "M-Unet+DDML+GC")) + " |")
    lines += ["", "The plot of this table is `fig7.png` in the bench's output folder.", "",
              f"Settings chosen on the validation volumes: graph cut {dataclasses.asdict(cut_params)}; "
              f"DDML {dataclasses.asdict(ddml_config)}.", "",
              "### Time and peak memory per stage", "", "| stage | time | peak RSS (process) |", "|---|---|---|"]
    for name, rec in records.items():
        lines.append(f"| {name} | {rec.seconds:.1f} s | {rec.peak_rss / 2**30:.2f} GiB |")
    if pattern_timings:
        keys = pattern_timings[0].keys()
        lines += ["", "Per segmentation with cached features (mean of the Table I runs): " + ", ".join(
            f"{k} {np.mean([t[k] for t in pattern_timings]):.2f} s" for k in keys) + "."]
    lines.append(SECTION_END)
    return "\n".join(lines) + "\n"


def _plot_fig7(fig7, path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    from ..fileio import atomic_output

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ns = sorted(fig7)
    for key, colour in (("M-Unet+DDML", "tab:blue"), ("M-Unet+DDML+GC", "tab:red")):
        ax.errorbar(ns, [fig7[n][key][0] for n in ns], yerr=[fig7[n][key][1] for n in ns], marker="o",
                    capsize=3, color=colour, label=key)
    ax.set_xlabel("annotated sections")
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _update_section(path, md: str) -> None:
    from ..errors import ScribbleSegError
    from ..fileio import atomic_output

    text = path.read_text()
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        tail = rest.split(SECTION_END, 1)[1]
        new = head + md.rstrip("\n") + tail
    elif SECTION_START in text or SECTION_END in text:
        raise ScribbleSegError(f"--update {path}: has only one of the bench section markers")
    else:
        new = text.rstrip("\n") + "\n\n" + md
    with atomic_output(path) as tmp:
        tmp.write_text(new)
