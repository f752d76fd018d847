"""The one place that names the choices and defaults shared by the CLI, the worker and the Slicer panel.

Methods, devices, architectures, network presets with their training budgets,
and the feature cache's folder and size cap are defined here once.  The DDML
and graph-cut hyper-parameters are not: their single source is
:class:`ScribbleSegLib.ddml.DDMLConfig` and
:class:`ScribbleSegLib.graphcut.GraphCutParams`.

This module imports only the standard library, so the command line's
``--help`` and the Slicer module can read it without loading torch.

Examples
--------
>>> from ScribbleSegLib import choices
>>> choices.METHODS
('munet', 'ddml', 'full')
>>> choices.PRESETS["paper"].max_iters
20000
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

METHODS: Tuple[str, ...] = ("munet", "ddml", "full")
"""Where a segmentation stops: M-Unet probability, DDML + head, or the 3D graph cut."""
DEFAULT_METHOD = "full"
#: The voxel sizes in mm a volume's geometry may have, per axis: far beyond any scan (an electron micrograph's pixel
#: is about 1e-6 mm), but inside what ITK can invert (a spacing of 1e-200 makes its matrix singular).
SPACING_RANGE: Tuple[float, float] = (1e-9, 1e9)

DEVICES: Tuple[str, ...] = ("auto", "cpu", "cuda")
"""Where torch runs; ``auto`` picks CUDA when torch sees a device. ``cuda:N`` names one GPU of several, and
case does not matter (:func:`ScribbleSegLib.checks.check_device`, read by the API, the command line and the worker)."""
DEFAULT_DEVICE = "auto"
#: The device names as the messages list them.
DEVICES_TEXT = ", ".join(DEVICES) + " or cuda:N"


def device_name(value: object) -> Optional[str]:
    """``value`` as a device name of :data:`DEVICES` or ``cuda:N``, in lower case; None if it is none.

    Examples
    --------
    >>> device_name("CUDA:1"), device_name("tpu")
    ('cuda:1', None)
    """
    name = value.lower() if isinstance(value, str) else ""
    return name if name in DEVICES or (name.startswith("cuda:") and name[5:].isdigit()) else None

PHANTOM_FAMILIES: Tuple[str, ...] = ("a", "b")
"""Phantom families (:data:`ScribbleSegLib.phantom.FAMILIES` holds their configs): ``a`` is the default,
``b`` another lab's stain, scale, anatomy and artefacts."""
DEFAULT_PHANTOM_FAMILY = "a"
#: A phantom's default shape ``(Z, Y, X)`` (``scribbleseg phantom``, ``phantom.PhantomConfig``); another size shows
#: the same embryo, its voxels scaled by this shape's smaller in-plane size over the other's.
PHANTOM_SHAPE: Tuple[int, int, int] = (64, 192, 192)
#: The Slicer module's sample phantom, ``(Z, Y, X)``: the full-size phantom the starter model learnt from
#: (a smaller one is the same embryo in coarser voxels, where the heart's outline costs more IoU).
SAMPLE_PHANTOM_SHAPE: Tuple[int, int, int] = PHANTOM_SHAPE
#: Surface file formats, by extension (``segment --surface``, ``surface.write_surface``, the panel's export).
SURFACE_FORMATS: Tuple[str, ...] = (".stl", ".vtp", ".obj")
#: Width and height in pixels of a surface's offscreen render (``segment --render``).
RENDER_SIZE: Tuple[int, int] = (800, 600)
SCRIBBLE_EVERY = 10
"""Simulated strokes go on every this many heart sections: in ``scribbleseg phantom``'s files, the bench's first
round, the demo and the protocol (:func:`ScribbleSegLib.scribbles.simulate_scribbles`)."""
SAMPLE_SCRIBBLE_EVERY = 8
"""The sample phantom's example strokes (the Slicer module's, the worker's ``phantom`` task): one section in 8, a
little denser than the bench's, so that the first result a new user sees comes from strokes they can find."""


def every_nth(every: int) -> str:
    """How messages and tables say "on every ``every``-th heart section".

    Examples
    --------
    >>> every_nth(10), every_nth(2), every_nth(1)
    ('every 10th', 'every 2nd', 'every')
    """
    if every == 1:
        return "every"
    suffix = "th" if every % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(every % 10, "th")
    return f"every {every}{suffix}"

CUT_NEIGHBOURHOODS: Tuple[int, ...] = (6, 10)
"""Graph-cut neighbourhoods (see :class:`ScribbleSegLib.graphcut.GraphCutParams`)."""
CUT_DATA_TERMS: Tuple[str, ...] = ("linear", "log")
"""Graph-cut data terms: the paper's ``|l - h|`` or the clipped log-likelihood ratio."""
# The graph cut's defaults, here so that the command line's --help can name them without loading the cut.
# gamma 8 with the log data term and the 10-neighbourhood were chosen by `scribbleseg bench` on the validation
# volumes of two phantom families, in-family and cross-family together; sigma and delta earlier, on the first
# family's validation volumes (BENCHMARKS.md).
DEFAULT_GAMMA = 8.0
"""Weight of the boundary term (:attr:`ScribbleSegLib.graphcut.GraphCutParams.gamma`), before the cut scales it to
the objects (:mod:`ScribbleSegLib.cut_scaling`)."""
DEFAULT_SIGMA = 0.1
"""Colour-contrast scale of the boundary term, in RGB units scaled to [0, 1], before the cut scales it to the
image."""
DEFAULT_DELTA = 0.05
"""Constant added to the contrast weight."""
DEFAULT_CUT_DATA_TERM = "log"
"""The data term of :data:`CUT_DATA_TERMS` the cut uses by default."""
DEFAULT_CUT_NEIGHBOURHOOD = 10
"""The neighbourhood of :data:`CUT_NEIGHBOURHOODS` the cut uses by default."""
DEFAULT_SEED_REACH = 8.0
"""In-plane pixels over which each stroke pulls the graph cut's data term towards its label
(:attr:`ScribbleSegLib.graphcut.GraphCutParams.seed_reach`); 0 turns the pull off.  Chosen with
:data:`DEFAULT_SEED_WEIGHT` and :data:`DEFAULT_SEED_EDGES` on the bench's validation volumes over the
interactive rounds (BENCHMARKS.md)."""
DEFAULT_SEED_ACROSS = 0.5
"""How far the stroke pull reaches across sections, as a share of its in-plane reach
(:attr:`ScribbleSegLib.graphcut.GraphCutParams.seed_across`): 1 as far as in-plane (by the sections' real
spacing), 0.5 half as far, 0 the stroke's own section only.  Chosen by ``scribbleseg bench`` over the
interactive rounds: with 1 a candidate's result fell between two rounds on validation (BENCHMARKS.md)."""
DEFAULT_SEED_WEIGHT = 30.0
"""How many times a stroke outweighs the network's ``h`` on its own voxels in the stroke pull
(:attr:`ScribbleSegLib.graphcut.GraphCutParams.seed_weight`); the weight falls off with the distance.  Chosen
on the bench's validation volumes over the interactive rounds (BENCHMARKS.md, "Strokes that claim the
tissue they lie in")."""
DEFAULT_SEED_EDGES = 3.0
"""How much colour edges lengthen the stroke pull's way through the tissue
(:attr:`ScribbleSegLib.graphcut.GraphCutParams.seed_edges`): 0 measures straight-line distance; 3 makes
each step as long as ``1 + 3 g / g_median`` steps, ``g`` the colour gradient there.  Chosen with
:data:`DEFAULT_SEED_WEIGHT` (BENCHMARKS.md)."""

H_EVALUATIONS: Tuple[str, ...] = ("coarse", "exact")
"""How ``h = head(f(x))`` is evaluated over the volume (:func:`ScribbleSegLib.h_evaluation.predict_h`): ``coarse``
evaluates it on an in-plane grid of every few pixels, interpolates, and evaluates exactly wherever the
interpolation could matter (near 0.5, where it varies, near the network's boundary, near scribbles);
``exact`` evaluates every voxel.  Read through ``DDMLConfig.evaluation``."""
DEFAULT_H_EVALUATION = "coarse"

HEAD_BIASES: Tuple[str, ...] = ("balanced", "network")
"""Where the adaptation's head puts its threshold (:attr:`ScribbleSegLib.ddml.DDMLConfig.head_bias`).
``balanced``: as trained on the class-balanced pool, the paper's head, which weighs a missed heart pixel like a
false one, the odds of a stack that is half heart; on stacks that are mostly background it claims doubtful
tissue for the heart.  ``network``: the head's bias moved so that, on the model's training pixels (its bank),
it calls as many of them heart as the network itself does: the network learnt the real odds from whole
patches, and the head keeps its lean (:func:`ScribbleSegLib.ddml.network_rate_shift`)."""
DEFAULT_HEAD_BIAS = "network"

NETWORK_DOUBT = 0.5
"""Share of one class's stroked voxels that the network labels the other way
(:func:`ScribbleSegLib.pipeline.network_doubt`) above which a run says that the model was likely not
trained for what the strokes mark, and by default (``DDMLConfig.bank_doubt``) starts to leave the model's
training pixels out of the adaptation (wholly from :data:`BANK_LEFT_OUT_DOUBT`).  Heart strokes on the bench's
phantoms stay far below it, also with a model trained on the other family; strokes on other organs with the
heart's starter model go far above it (BENCHMARKS.md, "Strokes on another organ than the model's")."""

BANK_LEFT_OUT_DOUBT = 0.7
"""Doubt (:func:`ScribbleSegLib.pipeline.network_doubt`) from which a run leaves the model's training pixels
out of its adaptation altogether (``DDMLConfig.bank_doubt_full``), unless the network agrees with the strokes
(:data:`BANK_AGREEMENT`).  Between :data:`NETWORK_DOUBT` and this, ``h`` blends the adaptation with them and the
one without, in proportion: corrective strokes go where the network is wrong, so they raise the doubt of a
model trained for the target too, and a switch at one value made nuclei and glands fall by up to 0.44 IoU in a
round.  Strokes on other organs than the starter model's heart start at 0.70 (BENCHMARKS.md, "The bank left out
in proportion to the doubt")."""

BANK_AGREEMENT: Tuple[float, float] = (0.25, 0.35)
"""How far the network's own labels agree, over the whole stack, with those of the adaptation to the strokes
alone (their IoU, :func:`ScribbleSegLib.pipeline.network_agreement`) for the doubt's interval to move up by
:data:`BANK_AGREEMENT_SHIFT`: not at all at or below the first value, wholly at or above the second, in
proportion between (``DDMLConfig.bank_agreement``).  The doubt, read on the strokes, cannot tell a model trained
for another target from one whose errors corrective strokes point out; where the network's labels agree with
the strokes' adaptation over the whole image, it is the latter.  On real colon glands a network trained for
them agreed at 0.29-0.82 and the heart's starter model at 0.05-0.74 (under 0.3 in 36 of 42 runs); on real
nuclei a network trained for them at 0.17-0.66 and the starter model at 0.00-0.47 (BENCHMARKS.md, "The bank
left out by the network's agreement with the strokes")."""

BANK_AGREEMENT_SHIFT = 0.2
"""How far up the doubt's interval (:data:`NETWORK_DOUBT` to :data:`BANK_LEFT_OUT_DOUBT`) moves where the
network agrees with the strokes (:data:`BANK_AGREEMENT`; ``DDMLConfig.bank_agreement_shift``): a model trained
for colon glands kept its training pixels better in all 17 of its runs with a doubt of 0.5-0.7 and left them
out better in 39 of 41 runs from 0.69 on, where it over-segments tiles unlike its training."""

DOUBTED_NETWORK_SHARE: Tuple[float, float] = (0.45, 0.6)
"""Where the strokes contradict the network and the adaptation leaves the bank out, the share of the stack that
adaptation calls target up to which the network's probability is blended in at ``DDMLConfig.doubted_network_weight``,
and from which it is not blended at all (in proportion between; ``DDMLConfig.doubted_network_share``).  A network
trained for another target calls nearly everything background: blended in, that says the target is rare, which
helps on nuclei (a fifth of a tile) and the phantom's small organs, and held carcinoma and glands (half a tile and
more) under 1/2, where correct strokes then made the cut drop whole regions.  The adaptation to the strokes alone
calls up to twice the target there is (0.15-0.48 of nuclei tiles that hold 0.10-0.26), hence limits about a half
(BENCHMARKS.md, "A third real target")."""

KEEP_LAST = 0.25
"""Logits by which a run that leaves the bank out moves ``h`` towards the last result of its chain of strokes, away
from its new strokes (``DDMLConfig.keep_last``, :mod:`ScribbleSegLib.last_result`), times the share of ``h`` without
the bank.  Chosen with :data:`KEEP_LAST_REACH` on the starter model's rounds on real oral carcinoma tiles (0.125,
0.25, 0.5 and 1 logits, reach 10-30 pixels), then measured on colon glands and nuclei (BENCHMARKS.md, "The last
result kept away from the new strokes")."""

KEEP_LAST_REACH = 10.0
"""Pixels from the nearest new stroke at which :data:`KEEP_LAST`'s pull is 63 % whole (``DDMLConfig.keep_last_reach``):
``1 - exp(-d / reach)``."""

KEEP_LAST_PIXELS = 0.25
"""Share of each class of a strokes-only adaptation's training pool drawn from the last result of its chain of strokes,
from pixels beyond ``last_result.ANCHOR_REACHES`` reaches of the new strokes, where the model's bank would be
(``DDMLConfig.keep_last_pixels``): the strokes alone taught a classifier that flipped whole regions far from them.
Measured on the starter model's rounds on real carcinoma, gland and nuclei tiles (BENCHMARKS.md, "The last result as
training pixels")."""

ORIENTATIONS: Tuple[int, ...] = (1, 2, 4)
"""Test-time flips of the M-Unet (:func:`ScribbleSegLib.inference.predict_volume`): each section as it is
(1), also flipped left-right (2), and also top-bottom and both (4); the logits and features are averaged.
Each costs one more run of the network."""
DEFAULT_ORIENTATIONS = 1

DEFAULT_SUGGESTIONS = 3
"""How many sections a run suggests for the next strokes (``segment --suggest``, ``pipeline.segment(suggest=)``,
a worker request's ``suggest``); the panel asks for its own number (``LOOP_SUGGESTIONS``)."""

SESSION_REUSES_CUT = True
"""Whether a warm :class:`ScribbleSegLib.session.Session` starts each cut from its last one
(:class:`ScribbleSegLib.graphcut.CutMemory`) instead of cutting from scratch."""

WARM_DDML_STEPS = 100
"""Adam steps of a warm session's DDML training when it starts from its last run's ``f``
(``DDMLConfig.warm_steps``, :class:`ScribbleSegLib.ddml.AdaptMemory`); 0 trains every run from scratch."""

ARCHITECTURES: Tuple[str, ...] = ("munet", "unet")
"""Multi-field-of-view U-Net (the paper's M-Unet) or a plain U-Net."""
DEFAULT_ARCHITECTURE = "munet"


@dataclass(frozen=True)
class Preset:
    """A network size with the training budget it is meant for.

    Attributes
    ----------
    name : str
        ``ModelConfig.preset`` name.
    max_iters : int
        Optimisation steps.
    max_minutes : float or None
        Wall-clock budget of the optimisation (None: only ``max_iters``).

    Examples
    --------
    >>> PRESETS["small"]
    Preset(name='small', max_iters=3000, max_minutes=30.0)
    >>> PRESETS["paper"].max_minutes is None  # the paper's size: its steps alone
    True
    """

    name: str
    max_iters: int
    max_minutes: Optional[float]


PRESETS: Dict[str, Preset] = {
    # small trains on a CPU in under half an hour; paper is the published size, for a GPU. The small
    # preset's 3000 steps (early stopping ends most runs sooner) gave a better M-Unet and final result than
    # 1000 on the bench's validation volumes (BENCHMARKS.md, "How long the small M-Unet trains").
    "small": Preset("small", max_iters=3000, max_minutes=30.0),
    "paper": Preset("paper", max_iters=20000, max_minutes=None),
}
DEFAULT_PRESET = "small"

TRAIN_LR = 1e-3
"""Adam learning rate of a training from scratch (the paper's)."""
TRAIN_BATCH = 8
"""Patches per training step (the paper's)."""
FINETUNE_LR = 3e-4
"""Default Adam learning rate when fine-tuning: a third of training's, so a few volumes nudge rather than
overwrite what the parent learnt."""
FINETUNE_ITERS = 300
"""Default step budget when fine-tuning (3.5 minutes of the small preset on a shared 2-core CPU, BENCHMARKS.md)."""
FINETUNE_MINUTES = 15.0
"""Default time budget when fine-tuning: a cap for slow machines (the step budget ends the run on most)."""


def training_budget(preset: Optional[str] = None, fine_tune: bool = False, *, max_iters: Optional[int] = None,
                    max_minutes: Optional[float] = None,
                    lr: Optional[float] = None) -> Tuple[int, Optional[float], float]:
    """A training's step budget, time budget and learning rate: each the value given, else its default.

    The one rule the command line, the worker and the Slicer panel read: a training from scratch takes its
    preset's budgets (:data:`PRESETS`) at :data:`TRAIN_LR`; a fine-tune (``fine_tune``, whose network is its
    parent's) :data:`FINETUNE_ITERS` steps within :data:`FINETUNE_MINUTES` at :data:`FINETUNE_LR`.

    Parameters
    ----------
    preset : str, optional
        A :data:`PRESETS` name (default :data:`DEFAULT_PRESET`); not used for a fine-tune.
    fine_tune : bool
        Whether the training starts from an existing model.
    max_iters, max_minutes, lr : optional
        Values given by the user: kept as they are.

    Returns
    -------
    tuple
        ``(max_iters, max_minutes, lr)``; ``max_minutes`` None: no time budget.

    Examples
    --------
    >>> training_budget("small")
    (3000, 30.0, 0.001)
    >>> training_budget(fine_tune=True), training_budget(fine_tune=True, max_minutes=10)
    ((300, 15.0, 0.0003), (300, 10, 0.0003))
    """
    if fine_tune:
        defaults = (FINETUNE_ITERS, FINETUNE_MINUTES, FINETUNE_LR)
    else:
        chosen = PRESETS[preset or DEFAULT_PRESET]
        defaults = (chosen.max_iters, chosen.max_minutes, TRAIN_LR)
    given = (max_iters, max_minutes, lr)
    return tuple(default if value is None else value for value, default in zip(given, defaults))  # type: ignore

# The panel's interactive loop (ScribbleSegLib.loop; ScribbleSeg.py keeps literal copies, checked by tests).
LOOP_SUGGESTIONS = 5
"""How many sections the panel lists to look at next (after the heat map and after each run)."""
UNDO_DEPTH = 5
"""How many runs on one volume the panel keeps for "Undo last run"."""
HEAT_MAP_OPACITY = 0.5
"""Default opacity of the heat map over the section images."""
HEAT_MAP_KEY = "h"
"""Key that shows or hides the heat map (free in Slicer's slice views and Segment Editor)."""
NEXT_SECTION_KEY = "n"
"""Key that jumps to the next suggested section."""

DEFAULT_CACHE_MAX_GB = 20.0
"""Size cap of the feature cache; least-recently-used entries are evicted beyond it.

One 100x512x512 volume's features take about 1.7 GB (32 float16 channels),
so the default keeps about ten volumes warm."""
MAX_CACHE_GB = 1e6
"""The largest size cap a cache accepts (a petabyte): a bigger one is a typo, and an infinite one has no bytes."""

MAX_PHANTOM_VOLUMES = 10000
"""The most volumes one phantom set holds (``scribbleseg phantom --volumes``, ``phantom.write_phantom_set``): its
file names and manifest are made before any volume, and a count far beyond this is a typo that exhausted the
memory before the free space was checked (100 million volumes did)."""

MAX_SEED = 2**63 - 1
"""The largest seed: torch's generators take 64-bit seeds, and the same seed must work everywhere."""


def default_cache_dir() -> Path:
    """The per-user cache of M-Unet features.

    ``$SCRIBBLESEG_CACHE_DIR`` if set (``~`` its owner's home), else ``$XDG_CACHE_HOME/scribbleseg/features``
    (``~/.cache/scribbleseg/features``).  The command line uses this folder
    (``segment``, ``cache``) and so does the Slicer module (not Slicer's own cache
    folder, which Slicer 5.12+ prunes at every start); a worker request names its
    own (``cache_dir``; none: no cache).

    Examples
    --------
    >>> default_cache_dir().name
    'features'
    """
    own = os.environ.get("SCRIBBLESEG_CACHE_DIR")
    if own:
        # A quoted "~/x" reaches us unexpanded: it made a folder named "~" in the working folder.
        return Path(own).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "scribbleseg" / "features"


def sample_data_dir() -> Path:
    """Where the Slicer module keeps the phantoms it makes as sample data: ``$XDG_DATA_HOME/scribbleseg/phantoms``
    (``~/.local/share/scribbleseg/phantoms``).

    Data, not a cache: a scene saved with a phantom refers to its files, and Slicer's own cache folder is pruned
    at every start from Slicer 5.12 on (``vtkCacheManager::PruneCache``), which could delete them.

    Examples
    --------
    >>> sample_data_dir().parts[-2:]
    ('scribbleseg', 'phantoms')
    """
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "scribbleseg" / "phantoms"


def cache_cap_problem(max_gb: float) -> Optional[str]:
    """Why ``max_gb`` cannot be a cache's size cap in GB (it must be a positive number up to
    :data:`MAX_CACHE_GB`), or None when it can.

    Examples
    --------
    >>> cache_cap_problem(20) is None, cache_cap_problem(float("inf"))
    (True, 'must be a positive number of GB up to 1e+06, got inf')
    """
    try:
        value = float(max_gb)
    except (TypeError, ValueError):
        value = math.nan
    if math.isfinite(value) and 0 < value <= MAX_CACHE_GB:
        return None
    return f"must be a positive number of GB up to {MAX_CACHE_GB:g}, got {max_gb!r}"


def default_cache_max_gb() -> float:
    """The cache's size cap in GB: ``$SCRIBBLESEG_CACHE_MAX_GB`` if set to a valid cap
    (:func:`cache_cap_problem`), else the default (with a warning when it is set to something else).

    Examples
    --------
    >>> default_cache_max_gb() > 0
    True
    """
    text = os.environ.get("SCRIBBLESEG_CACHE_MAX_GB", "")
    if not text:
        return DEFAULT_CACHE_MAX_GB
    problem = cache_cap_problem(text.strip())
    if problem is not None:
        logging.getLogger("ScribbleSegLib").warning("$SCRIBBLESEG_CACHE_MAX_GB %s; using %g GB", problem,
                                                    DEFAULT_CACHE_MAX_GB)
        return DEFAULT_CACHE_MAX_GB
    return float(text)
