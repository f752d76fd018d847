"""The paper's evaluation protocol on phantoms, shared by ``demo`` and ``bench``.

Harada et al. (EMBC 2019, §IV): 6 volumes (2 train, 2 validation, 2 test); on
each test volume three scribble patterns on every 10th heart section; the
metrics are counted over all voxels of a volume and averaged over volumes and
patterns.  Table I compares U-net, M-Unet, M-Unet+DDML and M-Unet+DDML+GC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import choices
from .metrics import evaluate, summarize

METHODS = ("U-net", "M-Unet", "M-Unet+DDML", "M-Unet+DDML+GC")

#: Table I of the paper: precision, recall, F1, IoU.
PAPER_TABLE_I = {
    "U-net": (0.810, 0.824, 0.810, 0.681),
    "M-Unet": (0.841, 0.960, 0.889, 0.807),
    "M-Unet+DDML": (0.874, 0.959, 0.910, 0.841),
    "M-Unet+DDML+GC": (0.983, 0.981, 0.982, 0.965),
}
METRICS = ("precision", "recall", "f1", "iou")
#: Table I's rows for the library's default adaptation and cut, beside the paper's method run with the
#: paper's settings (``METHODS``' last two rows).
DEFAULT_ADAPTED = "M-Unet+adaptation (default)"
DEFAULT_FINAL = "M-Unet+adaptation+GC (default)"
#: What ``evaluate_pattern`` run with the library's defaults gives under the paper's names: the rows' real names.
DEFAULT_ROWS = {"M-Unet+DDML": DEFAULT_ADAPTED, "M-Unet+DDML+GC": DEFAULT_FINAL}


@dataclass
class Outputs:
    """M-Unet and U-Net outputs of one volume, computed once and reused for every pattern.

    Examples
    --------
    ``munet`` holds the M-Unet's probability and its features (see :func:`compute_outputs`):

    >>> outputs = Outputs((np.zeros((4, 8, 8), np.float32), np.zeros((4, 8, 8, 32), np.float16)), None)
    >>> outputs.munet[1].shape[-1], outputs.unet_probability is None
    (32, True)
    """

    munet: Tuple[np.ndarray, np.ndarray]
    unet_probability: Optional[np.ndarray]


def make_volumes(n: int, seed: int = 0, shape: Optional[Sequence[int]] = None, family: str = "a") -> list:
    """Phantom volumes ``seed * 100 + i`` for i < n of a family, as ``scribbleseg phantom`` writes them.

    Examples
    --------
    >>> volumes = make_volumes(2, seed=1, shape=(4, 64, 64))
    >>> [v.image.shape for v in volumes], [v.info["seed"] for v in volumes]
    ([(4, 64, 64), (4, 64, 64)], [100, 101])
    """
    from . import phantom

    config = phantom.family_config(family, shape)
    return [phantom.make_phantom(seed=seed * 100 + i, config=config) for i in range(n)]


def rerun_case(shape: Sequence[int], seed: int = 7):
    """A phantom of ``shape`` and two scribble sets for timing a re-run: ``first`` (every 20th heart
    section) and ``more`` (``first`` plus strokes on every 10th), as the re-run benchmarks use them.

    Returns
    -------
    (phantom.Phantom, numpy.ndarray, numpy.ndarray)

    Examples
    --------
    >>> vol, first, more = rerun_case((8, 64, 64))
    >>> vol.label.shape, sorted(np.unique(first).tolist()), bool(np.all(more[first > 0] == first[first > 0]))
    ((8, 64, 64), [0, 1, 2], True)
    >>> bool(np.count_nonzero(more) > np.count_nonzero(first))
    True
    """
    from . import phantom, scribbles

    vol = phantom.make_phantom(seed=seed, config=phantom.PhantomConfig(shape=tuple(int(s) for s in shape)))
    first = scribbles.simulate_scribbles(vol.label, seed=0, every=20, tissue=vol.tissue > 0)
    more = np.maximum(first, scribbles.simulate_scribbles(vol.label, seed=1, every=choices.SCRIBBLE_EVERY,
                                                          tissue=vol.tissue > 0))
    return vol, first, more


def train_networks(train: Sequence, val: Sequence, out_dir, minutes: float, device: str = choices.DEFAULT_DEVICE,
                   seed: int = 0, progress=None, log=None, timed=None, max_iters: Optional[int] = None,
                   archs: Sequence[str] = ("munet", "unet"), options=None) -> Dict[str, object]:
    """Train the small M-Unet and the small plain U-Net on phantoms; return both loaded models.

    Each writes ``<arch>.model`` in ``out_dir``, trained for the small preset's
    steps (or ``max_iters``) within ``minutes``, with ``options``
    (:class:`~ScribbleSegLib.training.TrainOptions`, default its defaults).  ``log(message)`` is told when
    each training starts; ``timed(name)`` may give a context manager (e.g.
    :func:`measure.stage`) that wraps each training.
    """
    import contextlib
    from pathlib import Path

    from .model_file import load_model
    from .nets import ModelConfig
    from .training import train_model

    models = {}
    for arch in archs:
        name = {"munet": "M-Unet", "unet": "U-Net"}[arch]
        if log:
            log(f"training the small {name} (budget {minutes:g} min)")
        with (timed(f"train {name}") if timed else contextlib.nullcontext()):
            path = Path(out_dir) / f"{arch}.model"
            train_model([v.image for v in train], [v.label for v in train], path, ModelConfig.small(arch),
                        val_images=[v.image for v in val], val_labels=[v.label for v in val],
                        options=options, max_minutes=minutes, max_iters=max_iters, device=device, seed=seed,
                        progress=progress)
            models[arch] = load_model(path, device=device)
    return models


def compute_outputs(image: np.ndarray, munet, unet, device: str = choices.DEFAULT_DEVICE, progress=None,
                    scale: Tuple[float, float] = (1.0, 1.0),
                    orientations: int = choices.DEFAULT_ORIENTATIONS) -> Outputs:
    """Run both networks on a volume (the M-Unet's features are kept for DDML); ``unet`` may be None.

    ``scale`` resizes the sections to the networks' training pixel size (see :func:`pipeline.network_scale`);
    ``orientations`` are the M-Unet's test-time flips (:func:`pipeline.segment`).

    Examples
    --------
    >>> from ScribbleSegLib.model_file import load_model
    >>> from ScribbleSegLib.starter import starter_model_path
    >>> model = load_model(starter_model_path(), device="cpu")
    >>> outputs = compute_outputs(make_volumes(1, shape=(4, 64, 64))[0].image.array, model, None, device="cpu",
    ...                           orientations=1)
    >>> outputs.munet[0].shape, outputs.munet[1].shape, outputs.unet_probability is None
    ((4, 64, 64), (4, 64, 64, 32), True)
    """
    from .pipeline import compute_features

    prob, feats, _ = compute_features(image, munet, device=device, scale=scale, progress=progress,
                                      orientations=orientations)
    unet_prob = None if unet is None else compute_features(image, unet, device=device, scale=scale,
                                                           progress=progress)[0]
    return Outputs((prob, np.asarray(feats)), unet_prob)


def evaluate_pattern(volume, label: np.ndarray, scribbles: np.ndarray, munet, outputs: Outputs, *,
                     cut_params=None, ddml_config=None, seed: int = 0,
                     methods: Sequence[str] = METHODS) -> Tuple[Dict[str, dict], Optional[object]]:
    """Metrics of each method of Table I on one volume with one scribble pattern.

    Returns
    -------
    metrics : dict
        Method name -> :func:`metrics.evaluate` result.
    result : pipeline.SegmentResult or None
        The DDML (+ cut) segmentation, when one of those methods was asked for.

    Examples
    --------
    The networks' rows need only their outputs (no scribbles, no model):

    >>> label = np.zeros((1, 4, 4), np.uint8); label[0, :2] = 1
    >>> outputs = Outputs((label * 0.9, None), np.full(label.shape, 0.6))
    >>> metrics, result = evaluate_pattern(None, label, None, None, outputs, methods=("U-net", "M-Unet"))
    >>> round(metrics["U-net"]["iou"], 3), round(metrics["M-Unet"]["iou"], 3), result
    (0.5, 1.0, None)
    """
    from .pipeline import segment

    results: Dict[str, dict] = {}
    result = None
    if "U-net" in methods:
        results["U-net"] = evaluate(outputs.unet_probability > 0.5, label)
    if "M-Unet" in methods:
        results["M-Unet"] = evaluate(outputs.munet[0] > 0.5, label)
    if "M-Unet+DDML" in methods or "M-Unet+DDML+GC" in methods:
        method = "full" if "M-Unet+DDML+GC" in methods else "ddml"
        result = segment(volume, scribbles, munet, method=method, cut_params=cut_params,
                         ddml_config=ddml_config, seed=seed, features=outputs.munet)
        if "M-Unet+DDML" in methods:
            results["M-Unet+DDML"] = evaluate(result.probability > 0.5, label)
        if method == "full":
            results["M-Unet+DDML+GC"] = evaluate(result.labels, label)
            results["M-Unet+DDML+GC"]["timings"] = result.timings
    return results, result


def table_i(runs: List[Dict[str, dict]], with_paper: bool = True,
            labels: Optional[Dict[str, str]] = None) -> str:
    """A markdown Table I: mean (± std over volumes and patterns) of each metric per method.

    ``labels`` renames rows (e.g. :data:`DEFAULT_ROWS` when the DDML rows ran the library's
    defaults, not the paper's settings); the paper column stays the paper's method's.

    Examples
    --------
    >>> run = {"M-Unet": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "iou": 0.74}}
    >>> table_i([run], with_paper=False).splitlines()[-1]
    '| M-Unet | 0.900 | 0.800 | 0.850 | 0.740 |'
    """
    labels = labels or {}
    header = "| method | precision | recall | F1 | IoU |" + (" paper IoU |" if with_paper else "")
    lines = [header, "|---" * (5 + with_paper) + "|"]
    for method in METHODS:
        rows = [run[method] for run in runs if method in run]
        if not rows:
            continue
        s = summarize(rows)
        cells = [f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}" if len(rows) > 1 else f"{s[m]['mean']:.3f}"
                 for m in METRICS]
        paper = f" {PAPER_TABLE_I[method][3]:.3f} |" if with_paper else ""
        lines.append(f"| {labels.get(method, method)} | " + " | ".join(cells) + " |" + paper)
    return "\n".join(lines)


def heart_sections(label: np.ndarray) -> np.ndarray:
    """Indices of the sections that contain heart.

    Examples
    --------
    >>> label = np.zeros((6, 4, 4), np.uint8); label[1:4, 1, 1] = 1
    >>> heart_sections(label).tolist()
    [1, 2, 3]
    """
    return np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))


def pick_overlay_sections(label: np.ndarray, scribbles: Optional[np.ndarray], count: int = 6) -> List[int]:
    """Sections to show: scribbled ones first, then unscribbled heart sections spread evenly.

    Examples
    --------
    >>> label = np.zeros((6, 4, 4), np.uint8); label[1:4, 1, 1] = 1
    >>> strokes = np.zeros((6, 4, 4), np.uint8); strokes[2, 0, 0] = 1
    >>> pick_overlay_sections(label, strokes, count=2)  # the stroked section first
    [2, 3]
    """
    heart = heart_sections(label)
    scribbled = [] if scribbles is None else list(np.flatnonzero(scribbles.reshape(len(scribbles), -1).any(1)))
    chosen = scribbled[: count // 2]
    others = [z for z in heart if z not in scribbled]
    if others:
        step = max(1, len(others) // max(1, count - len(chosen)))
        chosen += others[step // 2::step][: count - len(chosen)]
    return sorted(int(z) for z in chosen)


# --------------------------------------------------------------------------------------------------
# Interactive rounds: the paper's user who "fixes the incorrect regions by adding annotations"

#: Corrective rounds after the first run, the sections corrected per round and the strokes per section.
ROUNDS = 3
CORRECTED_SECTIONS = 3
STROKES_PER_SECTION = 2
#: A drop of more than this IoU between consecutive rounds is flagged.
DROP_TOLERANCE = 0.01


@dataclass
class Round:
    """One run of the interactive loop on a volume.

    Attributes
    ----------
    adapted, final : dict
        :func:`metrics.evaluate` of ``h > 0.5`` and of the final labels.
    suggested : list of int
        Sections the run suggested for the next strokes (best first).
    worst : list of int
        The sections with the most wrong voxels by the truth (worst first), as many.
    suggestion_hits : int
        How many suggested sections are among the worst ``2 x len(suggested)`` by the truth.
    scribbled_voxels : int
    network_doubt : float
        The larger share of one class's stroked voxels that the network labels the other way
        (:func:`ScribbleSegLib.pipeline.network_doubt`).

    Examples
    --------
    >>> r = Round({"iou": 0.7}, {"iou": 0.9}, suggested=[4, 2], worst=[2, 5], suggestion_hits=1, scribbled_voxels=80)
    >>> r.final["iou"], r.network_doubt
    (0.9, 0.0)
    """

    adapted: dict
    final: dict
    suggested: List[int]
    worst: List[int]
    suggestion_hits: int
    scribbled_voxels: int
    network_doubt: float = 0.0


def run_rounds(volume, label: np.ndarray, scribbles: np.ndarray, model, features, *, rounds: int = ROUNDS,
               cut_params=None, ddml_config=None, seed: int = 0, method: str = choices.DEFAULT_METHOD,
               warm: bool = False) -> List[Round]:
    """Run, correct, run again: round 1 with ``scribbles``, then ``rounds - 1`` corrective rounds.

    ``volume`` is a :class:`~ScribbleSegLib.geometry.Volume` (its spacing shapes the strokes) or an
    array; ``features`` the M-Unet ``(probability, features)`` of it, computed once for all rounds.

    Each corrective round adds :func:`scribbles.corrective_scribbles` strokes (inside the largest
    wrong regions of the :data:`CORRECTED_SECTIONS` worst sections, never over earlier strokes)
    and runs again on the same features.  With ``warm``, each round's cut starts from the last
    round's and its DDML network from the last round's (a :class:`~ScribbleSegLib.graphcut.CutMemory`
    and a :class:`~ScribbleSegLib.ddml.AdaptMemory` kept across rounds, as the warm session of the
    Slicer module's worker keeps them); otherwise every round runs from scratch.  Every round takes the
    network's doubt of the rounds before where larger (:mod:`~ScribbleSegLib.stroke_history`), as the command
    line and a session do.

    Examples
    --------
    Two rounds on a small phantom, with made-up M-Unet outputs and a small DDML network:

    >>> from ScribbleSegLib.ddml import DDMLConfig
    >>> from ScribbleSegLib.model_file import load_model
    >>> from ScribbleSegLib.scribbles import simulate_scribbles
    >>> from ScribbleSegLib.starter import starter_model_path
    >>> vol = make_volumes(1, seed=3, shape=(4, 48, 48))[0]
    >>> strokes = simulate_scribbles(vol.label, seed=0, every=2, tissue=vol.tissue > 0)
    >>> feats = (np.random.default_rng(0).normal(size=(4, 48, 48, 32)) + 2 * vol.label[..., None]).astype(np.float16)
    >>> rounds = run_rounds(vol.image, vol.label, strokes, load_model(starter_model_path(), device="cpu"),
    ...                     (np.where(vol.label > 0, 0.7, 0.2).astype(np.float32), feats), rounds=2,
    ...                     ddml_config=DDMLConfig(hidden=(8,), out_dim=4, steps=10, batch_size=8, head_steps=5))
    >>> len(rounds), rounds[0].scribbled_voxels == int(np.count_nonzero(strokes))
    (2, True)
    >>> rounds[1].scribbled_voxels > rounds[0].scribbled_voxels  # the corrective strokes
    True
    """
    from .ddml import AdaptMemory
    from .graphcut import CutMemory
    from .pipeline import segment
    from .scribbles import corrective_scribbles, section_errors
    from .stroke_history import StrokeHistory

    out = []
    current = scribbles
    memory, adapt_memory = (CutMemory(), AdaptMemory()) if warm else (None, None)
    history = StrokeHistory()  # each round's strokes hold the last round's, as a user's do
    for r in range(int(rounds)):
        result = segment(volume, current, model, method=method, cut_params=cut_params, ddml_config=ddml_config,
                         seed=seed, features=features, suggest=CORRECTED_SECTIONS, cut_memory=memory,
                         adapt_memory=adapt_memory, history=history)
        errors = section_errors(label, result.labels)
        suggested = [s.section for s in result.suggestions]
        worst = [int(z) for z in np.argsort(-errors, kind="stable")[: 2 * max(1, len(suggested))] if errors[z] > 0]
        out.append(Round(evaluate(result.probability > 0.5, label), evaluate(result.labels, label), suggested,
                         worst[: len(suggested)], len(set(suggested) & set(worst)), int(np.count_nonzero(current)),
                         max(result.network_doubt)))
        if r + 1 < rounds:
            current = corrective_scribbles(label, result.labels, current, seed=1000 * seed + r,
                                           sections=CORRECTED_SECTIONS, strokes=STROKES_PER_SECTION,
                                           spacing=getattr(getattr(volume, "geometry", None), "spacing", None))
    return out


def rounds_table(runs: Dict[str, List[List[Round]]], names: Optional[Dict[str, List[str]]] = None) -> str:
    """Markdown: per protocol, the mean IoU of each round (adapted and final), drops and suggestion hits.

    Examples
    --------
    >>> first = Round({"iou": 0.7}, {"iou": 0.9}, [4, 2], [2, 5], 1, 80)
    >>> second = Round({"iou": 0.7}, {"iou": 0.85}, [1, 3], [1, 3], 2, 120)
    >>> print(rounds_table({"cold": [[first, second]]}).splitlines()[-1])
    | cold | 2 | 0.700 ± 0.000 | 0.850 ± 0.000 | 0.850 | 1 | 2/2 |
    """
    lines = ["| protocol | round | M-Unet+adaptation IoU | final IoU | min final IoU | drops > 0.01 | "
             "suggested among truth's worst |", "|---|---|---|---|---|---|---|"]
    for name, volume_runs in runs.items():
        if not volume_runs:
            continue
        n_rounds = len(volume_runs[0])
        for r in range(n_rounds):
            adapted = [run[r].adapted["iou"] for run in volume_runs]
            final = [run[r].final["iou"] for run in volume_runs]
            drops = sum(1 for run in volume_runs
                        if r > 0 and run[r].final["iou"] < run[r - 1].final["iou"] - DROP_TOLERANCE)
            hits = sum(run[r].suggestion_hits for run in volume_runs)
            total = sum(len(run[r].suggested) for run in volume_runs)
            lines.append(f"| {name} | {r + 1} | {np.mean(adapted):.3f} ± {np.std(adapted):.3f} | "
                         f"{np.mean(final):.3f} ± {np.std(final):.3f} | {np.min(final):.3f} | "
                         f"{drops if r else '–'} | {hits}/{total} |")
    return "\n".join(lines)
