"""``scribbleseg bench``: the paper's evaluation on two phantom families, in-family and cross-family.

Protocol (Harada et al., §IV, on each family): 6 phantom volumes, 2 to train the
networks, 2 to validate, 2 to test; three scribble patterns per test volume on
every 10th heart section.  Two families (:data:`ScribbleSegLib.phantom.FAMILIES`)
differ the way two labs do (stain, scale, anatomy, textures, artefacts); the
networks trained on one family are tested on its own test volumes (in-family)
and on the other family's (cross-family), both ways.

- **Settings** (DDML variant, graph-cut gamma, data term, neighbourhood and
  stroke pull) are chosen on the validation volumes of all four protocols
  together: the mean of the in-family and the cross-family IoU, so a default
  never holds only where it was tuned.  Round 1 ranks them; the best few are run
  over the interactive rounds, and the best mean over the rounds wins among
  those that never dropped, with a reach across sections with which no
  candidate dropped (:func:`pick_over_rounds`).  The paper's own method
  (DDML + head alone, linear data term) gets its gamma on the same volumes and
  is reported beside it.
- **Table I** per protocol: U-net, M-Unet, M-Unet+DDML and +GC with the paper's
  settings, and the adaptation and cut with the chosen defaults.
- **Rounds**: round 1 with the sparse strokes, then corrective rounds
  (:func:`ScribbleSegLib.protocol.run_rounds`); IoU per round and volume, drops
  flagged, and how often the suggested sections are among the truth's worst.
- **Fig. 7**: IoU with 1 to 6 annotated sections, per protocol (one pattern).
- **Peers** (optional): scikit-image's random walker and an ilastik-style
  random forest on the in-family test volumes of the first family.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from .. import choices
from .common import (EXPERIMENT_PARAMETER_FLAGS, add_experiment_options, check_device_flag, check_phantom_shape,
                     output_folder_kept_on_success)

# The library's parameters this command takes as flags: its messages are shown with the flags' names.
PARAMETER_FLAGS = EXPERIMENT_PARAMETER_FLAGS
#: It segments hundreds of volumes with simulated strokes: each library warning is shown the first time only.
WARNINGS_ONCE = True

SECTION_START = "<!-- scribbleseg bench: start -->"
SECTION_END = "<!-- scribbleseg bench: end -->"

#: DDML variants tried on validation: the paper's (its head as trained), with the network as an anchor, with more
#: scribble pixels; all but the paper's with the library's head bias (``DDMLConfig.head_bias``).
DDML_VARIANTS = ({"scribble_share": 0.05, "network_weight": 0.0, "head_bias": "balanced"},
                 {"scribble_share": 0.05, "network_weight": 0.5},
                 {"scribble_share": 0.3, "network_weight": 0.0}, {"scribble_share": 0.3, "network_weight": 0.5})
#: Graph-cut settings tried on validation: (gamma, data term, neighbourhood).  The paper's method is
#: judged on the linear, 6-neighbourhood ones.
CUT_GRID = ((8.0, "linear", 6), (16.0, "linear", 6), (32.0, "linear", 6), (4.0, "log", 6), (8.0, "log", 6),
            (8.0, "linear", 10), (16.0, "linear", 10), (4.0, "log", 10), (8.0, "log", 10))
#: Stroke pulls (:attr:`~ScribbleSegLib.graphcut.GraphCutParams.seed_reach`, in-plane pixels, with the library's
#: ``seed_weight`` and ``seed_edges``) tried with every cut of CUT_GRID; the paper's method has none.
SEED_REACHES = (0.0, 4.0, 8.0)
#: How far a pull reaches across sections (:attr:`~ScribbleSegLib.graphcut.GraphCutParams.seed_across`): round 1
#: ranks with the first; each candidate with a pull is then run over the rounds with every one of these, since
#: the pull across sections matters where corrective strokes go (near an organ's ends), not in round 1.
SEED_ACROSSES = (1.0, 0.5)
#: The best candidates of round 1 that are run again over the interactive rounds, where the choice is made:
#: a default must serve the corrective rounds too, and never let a correct stroke lower the result.
ROUND_CANDIDATES = 3
#: How much better over the rounds (mean IoU) another candidate must be than the library's own defaults for the
#: bench to choose it.  The validation runs are few (one scribble pattern on 2 volumes per protocol): a candidate
#: that won there by less has come out below the defaults on more patterns and on the test volumes
#: (BENCHMARKS.md, "How long the small M-Unet trains"), and the bench's Table I should describe the defaults that
#: ``segment``, the worker and the panel use unless validation shows a clear gain.
DEFAULTS_MARGIN = 0.005
#: Test scribble patterns (seeds); validation uses 100 + the first of them.
PATTERNS = (0, 1, 2)
#: Phantom volumes per family: 2 to train the networks, 2 to validate, 2 to test.
VOLUMES_PER_FAMILY = 6
#: ``--train-minutes``: a cap, not the budget: the small preset's steps (or early stopping) end each training
#: first on a 2-core CPU (up to 26 min there), so the networks (and every number after them) do not depend on
#: how busy the machine is.
TRAIN_MINUTES_CAP = 40.0


def model_path(out, arch: str, family: str) -> Path:
    """Where the bench keeps (and ``--reuse-models`` finds) a family's network: ``out/<arch>_<family>.model``.

    Examples
    --------
    >>> model_path("scribbleseg-bench", "munet", "b").as_posix()
    'scribbleseg-bench/munet_b.model'
    """
    return Path(out) / f"{arch}_{family}.model"


def train_family(vols, family: str, out, minutes: float, device: str = choices.DEFAULT_DEVICE, seed: int = 0,
                 max_iters: Optional[int] = None, archs=("munet", "unet"), progress=None, log=None,
                 timed=None, options=None) -> Dict[str, Path]:
    """Train one family's networks as the bench does; return ``{arch: out/<arch>_<family>.model}``.

    ``vols`` are the family's :data:`VOLUMES_PER_FAMILY` phantoms: the first two train, the next two
    validate (early stopping).  Training runs in a folder of its own inside ``out``, so two families
    can train at once into the same ``out`` (``benchmarks/train_bench_networks.py``).  The other
    arguments are those of :func:`ScribbleSegLib.protocol.train_networks`.

    Examples
    --------
    >>> train_family(vols["a"], "a", out, 40.0)  # doctest: +SKIP
    {'munet': PosixPath('.../munet_a.model'), 'unet': PosixPath('.../unet_a.model')}
    """
    import tempfile

    from .. import protocol

    paths = {arch: model_path(out, arch, family) for arch in archs}
    with tempfile.TemporaryDirectory(dir=out) as work:
        protocol.train_networks(vols[:2], vols[2:4], work, minutes, device, seed, progress=progress, log=log,
                                timed=timed, max_iters=max_iters, archs=archs, options=options)
        for arch, path in paths.items():
            (Path(work) / f"{arch}.model").replace(path)
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["--no-peers"])
    >>> args.out, args.train_minutes, args.no_peers, args.reuse_models, args.update
    ('scribbleseg-bench', 40.0, True, False, None)
    """
    add_experiment_options(parser, "scribbleseg-bench", TRAIN_MINUTES_CAP)
    parser.add_argument("--no-peers", action="store_true", help="skip the random walker and random forest")
    parser.add_argument("--reuse-models", action="store_true",
                        help="load munet_F.model / unet_F.model from --out when they are there instead of training "
                             "(they must come from an earlier bench run with the same --seed and --shape: checked "
                             "against the voxels they learnt from)")
    parser.add_argument("--update", metavar="BENCHMARKS.md",
                        help=f"replace the section between '{SECTION_START}' and '{SECTION_END}' in this "
                             "markdown file with the results")


@dataclass
class Selection:
    """What the validation volumes chose (:func:`_choose_settings`).

    Attributes
    ----------
    ddml, cut
        The chosen DDML settings and graph cut.
    key, paper_key
        ``(DDML variant as JSON, gamma, data term, neighbourhood, seed_reach, seed_across)`` of the chosen
        settings and of the paper's method (its variant, the linear data term, the 6-neighbourhood, no pull).
    scores
        Round 1 per key: ``(mean of in-family and cross-family IoU, in-family, cross-family)``.
    rounds
        Per key judged over the rounds: ``{"iou", "in_family", "cross_family"}`` (means over the rounds),
        ``"per_round"`` (the mean of in-family and cross-family per round), ``"round_1"`` (as in ``scores``)
        and ``"largest_drop"``.
    defaults
        The key of the library's defaults (:func:`defaults_key`), always among ``rounds`` when not ``None``.
    """

    ddml: object
    cut: object
    key: tuple
    paper_key: tuple
    scores: Dict[tuple, tuple]
    rounds: Dict[tuple, dict]
    defaults: Optional[tuple] = None


def _cut_of(key: tuple):
    from ..graphcut import GraphCutParams

    return GraphCutParams(gamma=key[1], data_term=key[2], neighbourhood=key[3], seed_reach=key[4],
                          seed_across=key[5])


def _key_fields(key: tuple) -> dict:
    """A settings key as named fields (for ``results.json``)."""
    import json

    return {"ddml": json.loads(key[0]), "gamma": key[1], "data_term": key[2], "neighbourhood": key[3],
            "seed_reach": key[4], "seed_across": key[5]}


def defaults_key() -> Optional[tuple]:
    """The settings key of the library's defaults (``DDMLConfig()``, ``GraphCutParams()``), ``None`` if not in the grid.

    The bench always runs this key over the rounds, so that Table I can say how the defaults fare and a
    candidate replaces them only by a clear margin (:data:`DEFAULTS_MARGIN`).

    Examples
    --------
    >>> key = defaults_key()
    >>> key is not None and key[1:] == (8.0, "log", 10, 8.0, 0.5)
    True
    """
    import dataclasses
    import json

    from ..ddml import DDMLConfig
    from ..graphcut import GraphCutParams

    own, cut = DDMLConfig(), GraphCutParams()
    variants = [v for v in DDML_VARIANTS if dataclasses.replace(own, **v) == own]
    key_cut = (float(cut.gamma), cut.data_term, cut.neighbourhood, float(cut.seed_reach), float(cut.seed_across))
    in_grid = (key_cut[:3] in CUT_GRID and key_cut[3] in SEED_REACHES
               and (key_cut[3] == 0 or key_cut[4] in SEED_ACROSSES))
    if not variants or not in_grid:
        return None
    if key_cut[3] == 0:  # without a pull the reach across sections does nothing; round 1 keys carry the first
        key_cut = key_cut[:4] + (SEED_ACROSSES[0],)
    return (json.dumps(variants[0]),) + key_cut


def _family_means(per_protocol: Dict[tuple, List[float]]) -> Tuple[float, float, float]:
    """``(mean of the two, in-family, cross-family)`` of per-protocol IoU lists keyed by (train, test)."""
    import numpy as np

    inside = float(np.mean([np.mean(x) for (t, o), x in per_protocol.items() if t == o]))
    across = float(np.mean([np.mean(x) for (t, o), x in per_protocol.items() if t != o]))
    return 0.5 * (inside + across), inside, across


def _choose_settings(vols, models, outputs, val, seed: int, log) -> Selection:
    """Choose the DDML variant and the cut on the validation runs ``val`` = ``[(train, test, index, strokes)]``.

    Round 1 ranks every DDML variant x cut x stroke pull; the :data:`ROUND_CANDIDATES` best are run over
    the interactive rounds (those with a pull with each of :data:`SEED_ACROSSES`), and the one with the
    best mean over the rounds wins among those whose final IoU never fell by more than
    :data:`~ScribbleSegLib.protocol.DROP_TOLERANCE` between two rounds (the smallest such fall if none),
    leaving out a reach across sections with which any candidate fell by more (:func:`pick_over_rounds`).
    """
    import dataclasses
    import json

    import numpy as np

    from .. import protocol
    from ..ddml import DDMLConfig
    from ..graphcut import graph_cut
    from ..metrics import evaluate
    from ..pipeline import segment

    scores = {}
    for variant in DDML_VARIANTS:
        cfg = dataclasses.replace(DDMLConfig(), **variant)
        hs = [(t, o, i, s, segment(vols[o][i].image, s, models[t]["munet"], method="ddml", ddml_config=cfg,
                                   seed=seed, features=outputs[t, o, i].munet, suggest=0).probability)
              for t, o, i, s in val]
        for (gamma, term, nb), reach in ((c, r) for c in CUT_GRID for r in SEED_REACHES):
            key = (json.dumps(variant), gamma, term, nb, reach, SEED_ACROSSES[0])
            per_pair: Dict[tuple, List[float]] = {}
            for t, o, i, s, h in hs:
                v = vols[o][i]
                labels = graph_cut(h, v.image.array, s, v.image.geometry.spacing_zyx, _cut_of(key))
                per_pair.setdefault((t, o), []).append(evaluate(labels, v.label)["iou"])
            scores[key] = _family_means(per_pair)
        top = max((k for k in scores if k[0] == json.dumps(variant)), key=lambda k: scores[k][0])
        log(f"  DDML {variant}: best cut gamma {top[1]:g}, {top[2]}, neighbourhood {top[3]}, seed reach {top[4]:g}: "
            f"validation IoU {scores[top][0]:.3f} (in-family {scores[top][1]:.3f}, cross-family {scores[top][2]:.3f})")
    paper_key = max((k for k in scores if json.loads(k[0]) == DDML_VARIANTS[0] and k[2] == "linear" and k[3] == 6
                     and k[4] == 0), key=lambda k: scores[k][0])
    log(f"  paper's method: gamma {paper_key[1]:g}, IoU {scores[paper_key][0]:.3f}")

    rounds = {}
    ranked = sorted(scores, key=lambda k: -scores[k][0])[:ROUND_CANDIDATES]
    candidates = [k[:5] + (a,) for k in ranked for a in (SEED_ACROSSES if k[4] > 0 else SEED_ACROSSES[:1])]
    own = defaults_key()
    if own is not None and own not in candidates:
        candidates.append(own)
    for key in candidates:
        cfg = dataclasses.replace(DDMLConfig(), **json.loads(key[0]))
        per_round: List[Dict[tuple, List[float]]] = [{} for _ in range(protocol.ROUNDS)]
        drops = []
        for t, o, i, s in val:
            v = vols[o][i]
            run = protocol.run_rounds(v.image, v.label, s, models[t]["munet"], outputs[t, o, i].munet,
                                      cut_params=_cut_of(key), ddml_config=cfg, seed=seed)
            for r, result in enumerate(run):
                per_round[r].setdefault((t, o), []).append(result.final["iou"])
            drops += [a.final["iou"] - b.final["iou"] for a, b in zip(run[:-1], run[1:])]
        means = [_family_means(x) for x in per_round]
        rounds[key] = {"iou": float(np.mean([m[0] for m in means])), "in_family": float(np.mean([m[1] for m in means])),
                       "cross_family": float(np.mean([m[2] for m in means])),
                       "per_round": [m[0] for m in means], "round_1": means[0],
                       "largest_drop": float(max(drops, default=0.0))}
        log(f"  rounds with DDML {json.loads(key[0])}, gamma {key[1]:g}, {key[2]}, neighbourhood {key[3]}, seed reach "
            f"{key[4]:g} (across {key[5]:g}): " + " / ".join(f"{x:.3f}" for x in rounds[key]["per_round"])
            + f", largest drop {rounds[key]['largest_drop']:.3f}")
    best = pick_over_rounds(rounds, shared=_across, keep=own, margin=DEFAULTS_MARGIN)
    log(f"chosen: DDML {json.loads(best[0])}, gamma {best[1]:g} ({best[2]}, neighbourhood {best[3]}, seed reach "
        f"{best[4]:g}, across {best[5]:g}); validation IoU over the rounds {rounds[best]['iou']:.3f}")
    return Selection(dataclasses.replace(DDMLConfig(), **json.loads(best[0])), _cut_of(best), best, paper_key,
                     scores, rounds, own)


def pick_over_rounds(rounds: Dict[tuple, dict], shared: Optional[Callable[[tuple], object]] = None,
                     keep: Optional[tuple] = None, margin: float = 0.0) -> tuple:
    """The key with the best mean IoU over the rounds among those that never dropped by more than the tolerance.

    ``rounds`` maps each candidate to ``{"iou": mean over the rounds, "largest_drop": ...}``; when every
    candidate dropped by more than :data:`~ScribbleSegLib.protocol.DROP_TOLERANCE`, the smallest drop wins.

    ``shared`` maps a key to a setting that candidates share (the bench: the stroke pull's reach across
    sections), or to ``None`` where the key has none.  A shared value with which any candidate dropped
    by more than the tolerance is ruled out for every candidate: the drop shows what that value risks on
    stacks the validation does not hold, not only with the other settings of that candidate.  If that
    leaves no steady candidate, the rule is not applied.

    ``keep`` (the library's defaults) wins over a better candidate unless that one is better by more than
    ``margin``, as long as ``keep`` itself passes both rules above.

    Examples
    --------
    >>> pick_over_rounds({"a": {"iou": 0.90, "largest_drop": 0.02}, "b": {"iou": 0.88, "largest_drop": 0.0}})
    'b'
    >>> rounds = {("x", 1): {"iou": 0.90, "largest_drop": 0.0}, ("y", 1): {"iou": 0.91, "largest_drop": 0.02},
    ...           ("x", 0.5): {"iou": 0.89, "largest_drop": 0.0}}
    >>> pick_over_rounds(rounds, shared=lambda key: key[1])
    ('x', 0.5)
    >>> pick_over_rounds({"own": {"iou": 0.880, "largest_drop": 0.0}, "new": {"iou": 0.883, "largest_drop": 0.0}},
    ...                  keep="own", margin=0.005)
    'own'
    """
    from ..protocol import DROP_TOLERANCE

    steady = [k for k in rounds if rounds[k]["largest_drop"] <= DROP_TOLERANCE]
    if not steady:
        return min(rounds, key=lambda k: rounds[k]["largest_drop"])
    if shared is not None:
        risky = {shared(k) for k in rounds if rounds[k]["largest_drop"] > DROP_TOLERANCE} - {None}
        steady = [k for k in steady if shared(k) not in risky] or steady
    best = max(steady, key=lambda k: rounds[k]["iou"])
    if keep in steady and rounds[best]["iou"] <= rounds[keep]["iou"] + margin:
        return keep
    return best


def _across(key: tuple) -> Optional[float]:
    """A settings key's reach across sections, ``None`` without a pull (where it has no effect)."""
    return key[5] if key[4] > 0 else None


def _name(train: str, test: str) -> str:
    return f"{train}→{test} ({'in-family' if train == test else 'cross-family'})"


def run(args: argparse.Namespace) -> int:
    """Run the command.

    Examples
    --------
    A run that could not make its phantoms is refused before any work:

    >>> from ScribbleSegLib.errors import ScribbleSegError
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> try:
    ...     run(parser.parse_args(["--no-peers", "--shape", "2", "64", "64"]))
    ... except ScribbleSegError as error:
    ...     print(error)
    --shape 2 64 64: phantom shape 2 64 64 is too small: at least 4 sections of 16x16 pixels
    """
    check_phantom_shape(args.shape)
    check_device_flag(args.device)
    # Everything the run could only find wrong at its end, or after its phantoms, is checked first.
    with output_folder_kept_on_success(args.out) as out:
        if args.update:
            check_update(args.update, [out / name for name in REPORT_FILES])
        if not args.no_peers:  # after the options' own checks: a bad --shape was told to install the extra
            _require_peers()
        reused = _reused_models(args.reuse_models, out, args.device)
        return _run(args, out, reused)


def _require_peers() -> None:
    """Refuse a run with the peer tools where their packages (the ``bench`` extra) are missing."""
    from ..baselines import _require
    from ..errors import ScribbleSegError

    try:
        _require("skimage")
        _require("sklearn")
    except ScribbleSegError as exc:  # the bench runs without the peers too
        raise ScribbleSegError(f"{exc}; or leave the peer tools out with --no-peers") from None


def _reused_models(reuse: bool, out: Path, device: str) -> dict:
    """``{family: {arch: model}}`` of the families whose networks ``--reuse-models`` finds in ``out``."""
    from ..errors import ScribbleSegError
    from ..model_file import load_model
    from ..phantom import FAMILIES

    found = {}
    for f in FAMILIES if reuse else ():
        paths = {arch: model_path(out, arch, f) for arch in ("munet", "unet")}
        if all(p.is_file() for p in paths.values()):
            try:
                found[f] = {arch: load_model(p, device=device) for arch, p in paths.items()}
            except ScribbleSegError as exc:
                raise ScribbleSegError(f"--reuse-models: {exc}") from None
    return found


def _check_reused(reused: dict, vols: dict) -> None:
    """Refuse ``--reuse-models`` networks that learnt from other phantoms than this run's training volumes (another
    ``--seed`` or ``--shape``): the tables were computed with them without a word.  Each model's provenance keeps
    the hashes of the voxels it learnt from (``data_sha256``); a model without them is named in a warning."""
    from ..errors import ScribbleSegError
    from ..model_file import array_sha256

    for f, archs in reused.items():
        expected = [array_sha256(v.image.array) for v in vols[f][:2]]
        for arch, model in archs.items():
            learnt = [d.get("image") for d in model.provenance.get("data_sha256") or [] if isinstance(d, dict)]
            name = model_path("", arch, f).name
            if not learnt:
                logging.getLogger("ScribbleSegLib").warning(
                    "--reuse-models: %s states no training volumes to check against this run's phantoms", name)
            elif learnt != expected:
                raise ScribbleSegError(f"--reuse-models: {name} learnt from other phantoms than this run's training "
                                       "volumes (an earlier bench with another --seed or --shape); give that run's "
                                       "--seed and --shape, or train again without --reuse-models")


def _run(args: argparse.Namespace, out: Path, reused: dict) -> int:
    import dataclasses
    import json
    import shlex
    import sys

    import numpy as np

    from .. import protocol, scribbles
    from ..ddml import DDMLConfig
    from ..fileio import atomic_output
    from ..graphcut import GraphCutParams
    from ..measure import machine_summary, stage
    from ..metrics import evaluate
    from ..model_file import load_model
    from ..phantom import FAMILIES
    from ..pipeline import network_scale, segment
    from ..progress import TqdmProgress

    command = "scribbleseg bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    started = time.perf_counter()
    bar = TqdmProgress(disable=args.quiet)
    records: dict = {}

    def log(message: str) -> None:
        bar.close()
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    families = list(FAMILIES)
    log(f"phantoms: families {', '.join(families)}, 2 train, 2 validation, 2 test each")
    with stage(records, f"phantoms ({6 * len(families)} volumes)"):
        vols = {f: protocol.make_volumes(VOLUMES_PER_FAMILY, args.seed, args.shape, f) for f in families}

    _check_reused(reused, vols)
    models = {}
    for f in families:
        if f in reused:
            log(f"family {f}: reusing {model_path(out, 'munet', f).name} and {model_path(out, 'unet', f).name}")
            models[f] = reused[f]
            continue
        paths = train_family(vols[f], f, out, args.train_minutes, args.device, args.seed, progress=bar, log=log,
                             timed=lambda name, f=f: stage(records, f"{name} (family {f})"))
        # Loaded again from their final names, so that each model's path is where its file is.
        models[f] = {arch: load_model(p, device=args.device) for arch, p in paths.items()}

    pairs = [(t, o) for t in families for o in families]
    log("M-Unet and U-Net inference: validation and test volumes of every protocol")
    outputs = {}
    with stage(records, f"inference ({len(pairs)} protocols x 4 volumes)"):
        for t, o in pairs:
            for i in range(2, 6):
                v = vols[o][i]
                scale = network_scale(v.image.geometry.spacing[:2], models[t]["munet"])
                outputs[t, o, i] = protocol.compute_outputs(v.image.array, models[t]["munet"],
                                                            models[t]["unet"] if i >= 4 else None,
                                                            device=args.device, progress=bar, scale=scale)

    def strokes(v, seed, **kw):
        return scribbles.simulate_scribbles(v.label, seed=seed, tissue=v.tissue > 0,
                                            spacing=v.image.geometry.spacing, **kw)

    # --- settings on validation -------------------------------------------------------------------
    log("choosing the settings on the validation volumes of all protocols")
    val = [(t, o, i, strokes(vols[o][i], 100 + PATTERNS[0], every=choices.SCRIBBLE_EVERY)) for t, o in pairs
           for i in (2, 3)]
    with stage(records, "choosing settings on validation"):
        selection = _choose_settings(vols, models, outputs, val, args.seed, log)
    chosen_ddml, chosen_cut = selection.ddml, selection.cut
    paper_ddml = DDMLConfig.paper()
    paper_cut = GraphCutParams.paper(gamma=selection.paper_key[1])

    # --- Table I ------------------------------------------------------------------------------------
    log(f"Table I: every protocol, 2 test volumes x 3 patterns, {choices.every_nth(choices.SCRIBBLE_EVERY)} heart "
        "section")
    tables, timings = {}, []
    with stage(records, "Table I"):
        for t, o in pairs:
            runs = []
            for i in (4, 5):
                v, outs = vols[o][i], outputs[t, o, i]
                for p in PATTERNS:
                    s = strokes(v, p, every=choices.SCRIBBLE_EVERY)
                    row, result = protocol.evaluate_pattern(v.image, v.label, s, models[t]["munet"], outs,
                                                            cut_params=paper_cut, ddml_config=paper_ddml,
                                                            seed=args.seed)
                    ours = segment(v.image, s, models[t]["munet"], cut_params=chosen_cut, ddml_config=chosen_ddml,
                                   seed=args.seed, features=outs.munet, suggest=0)
                    row[protocol.DEFAULT_ADAPTED] = evaluate(ours.probability > 0.5, v.label)
                    row[protocol.DEFAULT_FINAL] = evaluate(ours.labels, v.label)
                    runs.append(row)
                    timings.append(ours.timings)
            tables[t, o] = runs
            log(f"  {_name(t, o)}: " + ", ".join(
                f"{m} {np.mean([r[m]['iou'] for r in runs]):.3f}" for m in runs[0]))

    # --- rounds ---------------------------------------------------------------------------------------
    log(f"interactive rounds: {protocol.ROUNDS} rounds, {protocol.CORRECTED_SECTIONS} sections corrected per round")
    rounds_ours, rounds_paper = {}, {}
    with stage(records, "interactive rounds"):
        for t, o in pairs:
            name = _name(t, o)
            rounds_ours[name], rounds_paper[name] = [], []
            for i in (4, 5):
                v, outs = vols[o][i], outputs[t, o, i]
                for p in PATTERNS:
                    s = strokes(v, p, every=choices.SCRIBBLE_EVERY)
                    rounds_ours[name].append(protocol.run_rounds(v.image, v.label, s, models[t]["munet"], outs.munet,
                                                                 cut_params=chosen_cut, ddml_config=chosen_ddml,
                                                                 seed=args.seed))
                    if p == PATTERNS[0]:
                        rounds_paper[name].append(protocol.run_rounds(
                            v.image, v.label, s, models[t]["munet"], outs.munet, cut_params=paper_cut,
                            ddml_config=paper_ddml, seed=args.seed))
            final = [run[-1].final["iou"] for run in rounds_ours[name]]
            log(f"  {name}: round {protocol.ROUNDS} IoU {np.mean(final):.3f} (min {np.min(final):.3f})")

    # --- Fig. 7 ---------------------------------------------------------------------------------------
    log("Fig. 7: 1 to 6 annotated sections (one pattern)")
    fig7 = {}
    with stage(records, "Fig. 7"):
        for t, o in pairs:
            rows = {}
            for n in range(1, 7):
                ious = {"adapted": [], "final": []}
                for i in (4, 5):
                    v, outs = vols[o][i], outputs[t, o, i]
                    s = strokes(v, PATTERNS[0], n_sections=n)
                    result = segment(v.image, s, models[t]["munet"], cut_params=chosen_cut, ddml_config=chosen_ddml,
                                     seed=args.seed, features=outs.munet, suggest=0)
                    ious["adapted"].append(evaluate(result.probability > 0.5, v.label)["iou"])
                    ious["final"].append(evaluate(result.labels, v.label)["iou"])
                rows[n] = {k: (float(np.mean(x)), float(np.std(x))) for k, x in ious.items()}
            fig7[_name(t, o)] = rows

    peer_runs = []
    if not args.no_peers:
        from ..baselines import forest_segment, random_walker_segment
        from ..metrics import summarize

        f = families[0]
        for name, fn in (("random walker (scikit-image)", random_walker_segment),
                         ("random forest on multiscale features (ilastik-style)", forest_segment)):
            log(f"peer: {name}")
            rows = []
            with stage(records, f"peer: {name}"):
                for i in (4, 5):
                    v = vols[f][i]
                    for p in PATTERNS:
                        s = strokes(v, p, every=choices.SCRIBBLE_EVERY)
                        labels = (fn(v.image.array, s, v.image.geometry.spacing_zyx) if fn is random_walker_segment
                                  else fn(v.image.array, s, seed=args.seed))
                        rows.append(evaluate(labels, v.label))
            peer_runs.append((name, summarize(rows)))

    md = _report(command, machine_summary(), tables, rounds_ours, rounds_paper, fig7, peer_runs, records, timings,
                 selection, paper_cut, time.perf_counter() - started)
    results = json.dumps({
        "table_i": {_name(*k): v for k, v in tables.items()},
        "rounds": {k: [[dataclasses.asdict(r) for r in run] for run in v] for k, v in rounds_ours.items()},
        "rounds_paper": {k: [[dataclasses.asdict(r) for r in run] for run in v] for k, v in rounds_paper.items()},
        "fig7": fig7, "peers": peer_runs,
        "validation": [{**_key_fields(k), "iou": v[0], "in_family": v[1], "cross_family": v[2]}
                       for k, v in selection.scores.items()],
        "validation_rounds": [{**_key_fields(k), **v} for k, v in selection.rounds.items()]},
        indent=1, default=float)
    for name, text in (("bench.md", md), ("results.json", results)):
        with atomic_output(out / name) as tmp:
            tmp.write_text(text)
    _plot_fig7(fig7, out / "fig7.png")
    if args.update:
        _update_section(Path(args.update), md)
    print(md)
    print(f"wrote {out}/bench.md, results.json, fig7.png" + (f"; updated {args.update}" if args.update else ""))
    return 0


def _report(command, machine, tables, rounds_ours, rounds_paper, fig7, peer_runs, records, timings,
            selection: Selection, paper_cut, total) -> str:
    import dataclasses
    import datetime
    import json

    import numpy as np

    from .. import protocol
    from ..metrics import summarize

    chosen_ddml, chosen_cut, scores, best, paper_key = (selection.ddml, selection.cut, selection.scores,
                                                        selection.key, selection.paper_key)

    def settings(key):
        return (f"DDML {json.loads(key[0])}, graph cut gamma {key[1]:g} with the {key[2]} data term, the "
                f"{key[3]}-neighbourhood and seed reach {key[4]:g}"
                + (f" ({key[5]:g} of it across sections)" if key[4] > 0 else ""))

    lines = [SECTION_START, "## Table I, rounds and Fig. 7 on two phantom families (`scribbleseg bench`)", "",
             f"- Command: `{command}`", f"- Machine: {machine}",
             f"- Date: {datetime.date.today().isoformat()}; total time {total / 60:.1f} min",
             "- Protocols: networks trained on family F are tested on F's test volumes (in-family) and on the "
             "other family's (cross-family); 2 test volumes × 3 scribble patterns on "
             f"{choices.every_nth(choices.SCRIBBLE_EVERY)} heart section; "
             "metrics over all voxels.", "",
             f"Settings chosen on the validation volumes of all four protocols (the mean of in-family and "
             f"cross-family IoU): round 1 ranks every DDML variant, cut and seed reach; the {ROUND_CANDIDATES} best "
             f"are run over the {protocol.ROUNDS} interactive rounds (those with a pull with its reach across "
             f"sections {' and '.join(f'{a:g}' for a in SEED_ACROSSES)} times the in-plane one), and the best "
             f"mean over the rounds wins among those whose final IoU never fell by more than "
             f"{protocol.DROP_TOLERANCE:g} between rounds, leaving out a reach across sections with which any "
             f"candidate fell by more. The library's defaults are always run over the rounds and stay unless "
             f"another candidate is better over the rounds by more than {DEFAULTS_MARGIN:g}: "
             + ("they stay." if best == selection.defaults else
                "they are not in the bench's grid." if selection.defaults is None else
                "another candidate won, so the rows marked (default) below use the chosen settings, not the "
                "library's."), "",
             "| settings | round 1 (in-family, cross-family) | rounds " + " / ".join(
                 str(r + 1) for r in range(protocol.ROUNDS)) + " | mean over rounds | largest drop |",
             "|---|---|---|---|---|"]
    for key, r in selection.rounds.items():
        mark = (" (library defaults)" if key == selection.defaults else "") + (" **(chosen)**" if key == best else "")
        first = r["round_1"]
        lines.append(f"| {settings(key)}{mark} | {first[0]:.3f} ({first[1]:.3f}, {first[2]:.3f}) | "
                     + " / ".join(f"{x:.3f}" for x in r["per_round"])
                     + f" | {r['iou']:.3f} | {r['largest_drop']:+.3f} |")
    lines += ["", f"The paper's method (DDML + head alone, share 0.05, linear data term, 6-neighbourhood, no pull) "
              f"got gamma {paper_key[1]:g} on the same volumes in round 1: {scores[paper_key][0]:.3f} "
              f"({scores[paper_key][1]:.3f}, {scores[paper_key][2]:.3f}).", ""]
    methods = list(protocol.METHODS) + [protocol.DEFAULT_ADAPTED, protocol.DEFAULT_FINAL]
    lines += ["### Table I (IoU, mean ± std over 2 volumes × 3 patterns; the first four rows use the paper's "
              "settings)", "", "| method | " + " | ".join(_name(*k) for k in tables) + " | paper |",
              "|---" * (len(tables) + 2) + "|"]
    for m in methods:
        cells = []
        for runs in tables.values():
            x = [r[m]["iou"] for r in runs if m in r]
            cells.append(f"{np.mean(x):.3f} ± {np.std(x):.3f}" if x else "–")
        paper = f"{protocol.PAPER_TABLE_I[m][3]:.3f}" if m in protocol.PAPER_TABLE_I else "–"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {paper} |")
    lines += ["", "Precision / recall of the final result (default settings): " + "; ".join(
        f"{_name(*k)} {summarize([r[protocol.DEFAULT_FINAL] for r in runs])['precision']['mean']:.3f} / "
        f"{summarize([r[protocol.DEFAULT_FINAL] for r in runs])['recall']['mean']:.3f}"
        for k, runs in tables.items()) + ".", ""]
    lines += [f"### Interactive rounds (default settings; round 1: {choices.every_nth(choices.SCRIBBLE_EVERY)} heart "
              "section; each later round adds "
              f"{protocol.STROKES_PER_SECTION} corrective strokes on each of the {protocol.CORRECTED_SECTIONS} worst "
              "sections, inside the largest wrong regions)", "", protocol.rounds_table(rounds_ours), "",
              "Per volume and pattern (final IoU by round):", ""]
    for name, runs in rounds_ours.items():
        lines.append(f"- {name}: " + "; ".join(" → ".join(f"{r.final['iou']:.3f}" for r in run) for run in runs))
    lines += ["", "The paper's settings on the same rounds (pattern 0 only):", "", protocol.rounds_table(rounds_paper),
              "", "\"Suggested among truth's worst\": the sections the run suggested for the next strokes "
              f"({protocol.CORRECTED_SECTIONS} per run) that are among the {2 * protocol.CORRECTED_SECTIONS} sections "
              "with the most wrong voxels by the truth.", ""]
    lines += ["### Fig. 7: IoU vs number of annotated sections (default settings, pattern 0, mean ± std over 2 "
              "volumes)", "", "| sections | " + " | ".join(f"{k} adapted / final" for k in fig7) + " |",
              "|---" * (len(fig7) + 1) + "|"]
    for n in range(1, 7):
        lines.append(f"| {n} | " + " | ".join(
            f"{rows[n]['adapted'][0]:.3f} / {rows[n]['final'][0]:.3f} ± {rows[n]['final'][1]:.3f}"
            for rows in fig7.values()) + " |")
    lines += ["", "The plot of this table is `fig7.png` in the bench's output folder.", ""]
    if peer_runs:
        lines += ["### Peer tools (first family's in-family test volumes, same scribbles)", "",
                  "| tool | precision | recall | F1 | IoU |", "|---|---|---|---|---|"]
        for name, s in peer_runs:
            lines.append(f"| {name} | " + " | ".join(f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}"
                                                      for m in ("precision", "recall", "f1", "iou")) + " |")
        lines.append("")
    lines += [f"Full settings: DDML {dataclasses.asdict(chosen_ddml)}; graph cut {dataclasses.asdict(chosen_cut)}; "
              f"paper's cut {dataclasses.asdict(paper_cut)}.", "",
              "### Time and peak memory per stage", "", "| stage | time | peak RSS (process) |", "|---|---|---|"]
    for name, rec in records.items():
        lines.append(f"| {name} | {rec.seconds:.1f} s | {rec.peak_rss / 2**30:.2f} GiB |")
    if timings:
        keys = timings[0].keys()
        means = ", ".join(f"{k} {np.mean([t[k] for t in timings]):.2f} s" for k in keys)
        lines += ["", f"Per segmentation with cached features (mean of the Table I runs, default settings): {means}."]
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

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, rows in fig7.items():
        ns = sorted(rows)
        ax.errorbar(ns, [rows[n]["final"][0] for n in ns], yerr=[rows[n]["final"][1] for n in ns], marker="o",
                    capsize=3, label=name)
    ax.set_xlabel("annotated sections")
    ax.set_ylabel("IoU (final)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


#: The report files ``--out`` receives besides the models.
REPORT_FILES = ("bench.md", "results.json", "fig7.png")


def check_update(path, outputs) -> None:
    """Refuse an ``--update`` file the run could only fail on at its end: not a text file, its markers not a
    pair in order, in a folder that cannot be written, or one of the run's own ``outputs``.

    Examples
    --------
    >>> import tempfile
    >>> from ScribbleSegLib.errors import ScribbleSegError
    >>> path = Path(tempfile.mkdtemp()) / "BENCHMARKS.md"
    >>> _ = path.write_text(f"# Results\\n{SECTION_START}\\nold results\\n{SECTION_END}\\n")
    >>> check_update(path, [path.parent / "bench.md"])  # fine: nothing happens
    >>> _ = path.write_text(f"# Results\\n{SECTION_START}\\nold results\\n")
    >>> try:
    ...     check_update(path, [path.parent / "bench.md"])
    ... except ScribbleSegError as error:
    ...     print(str(error).replace(str(path.parent), "FOLDER"))
    --update FOLDER/BENCHMARKS.md: has only one of the bench section markers
    """
    from ..errors import ScribbleSegError
    from ..fileio import check_outputs

    path = Path(path)
    if not path.is_file():
        raise ScribbleSegError(f"--update {path}: no such file" if not path.exists() else
                               f"--update {path}: is not a file")
    _updated_text(_read_update(path), "", path)
    check_outputs({"--update": path, **{f"the report {p.name}": p for p in outputs}})


def _read_update(path: Path) -> str:
    from ..errors import ScribbleSegError

    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ScribbleSegError(f"--update {path}: is not a UTF-8 text file") from None
    except OSError as exc:
        raise ScribbleSegError(f"--update {path}: cannot be read ({exc.strerror or exc})") from None


def _updated_text(text: str, md: str, path: Path) -> str:
    """``text`` with the bench's section (between its markers) replaced by ``md``, or ``md`` appended."""
    from ..errors import ScribbleSegError

    start, end = text.find(SECTION_START), text.find(SECTION_END)
    if start < 0 and end < 0:
        return text.rstrip("\n") + "\n\n" + md
    if start < 0 or end < 0:
        raise ScribbleSegError(f"--update {path}: has only one of the bench section markers")
    if end < start:
        raise ScribbleSegError(f"--update {path}: its bench section's end marker comes before its start marker")
    return text[:start] + md.rstrip("\n") + text[end + len(SECTION_END):]


def _update_section(path, md: str) -> None:
    from ..fileio import atomic_output

    path = Path(path)
    new = _updated_text(_read_update(path), md, path)
    with atomic_output(path) as tmp:
        tmp.write_text(new)
