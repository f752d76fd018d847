"""3D graph cut of Harada et al. (EMBC 2019), eq. 4-6, with PyMaxflow.

The cut minimises, over binary labels ``l`` (1 heart, 0 other),

    E(l) = sum_v |l_v - h_v|
           + gamma * sum_{(v, v')} s_vv' |l_v - l_v'| [exp(-||x_v - x_v'||^2 / sigma^2) + delta]

over the 6-connected neighbour pairs ``(v, v')`` of the voxel grid, with the
scribbles as hard constraints.  ``h`` is the heart probability of the network
and ``x`` the colour of the image (see :class:`GraphCutParams`).

Spacing weight ``s``
    A neighbour pair along array axis ``a`` (spacing ``d_a`` mm) shares a face of
    area ``V / d_a``, ``V`` being the voxel volume.  Dividing the continuous energy
    ``integral |l - h| dV + gamma' * area(boundary)`` by ``V`` leaves the per-voxel
    data term of eq. 5 and a weight ``1 / d_a`` per cut face; multiplying by the
    finest spacing ``d_min`` gives

        s_a = d_min / d_a,

    which is 1 on isotropic grids (the paper's eq. 6 unchanged) and makes the
    boundary term measure surface area in mm^2 on anisotropic ones: pairs across
    thick sections weigh less, so a section boundary costs what its area says.
    ``gamma`` stays in units of the finest voxel.

Graph
    Label 1 is the sink side.  Each voxel gets source capacity ``1 - h`` (the cost
    of label 1) and sink capacity ``h`` (the cost of label 0); a heart scribble adds
    a large finite capacity ``K`` to the sink side, a background scribble to the
    source side.  ``K`` exceeds a voxel's data term plus all its pair weights, so
    every minimum honours every scribble, while staying finite (a node with
    infinite capacity to both terminals makes BK's flow infinite).  Pair weights go
    in with one ``add_grid_edges`` call per axis and z-slab on a ``Graph[float]``
    (``Graph[int]`` would truncate the capacities).  The cut value equals ``E``.

Memory and the coarse-to-fine banded cut
    A full cut needs about 240 bytes of graph per voxel (BK: 48 B per node, 32 B per
    arc, two arcs per pair, allocated up front). The banded cut cuts a coarse volume
    of 2x2x2 blocks (2x2 in-plane only while the sections are thicker than the
    pixels) whose energy is that of eq. 4-6 restricted to block-constant labels: the
    block mean of ``h`` and, per block face, the sum of the pair weights crossing
    it. The coarse volume is cut the same way: in full up to :data:`COARSE_FULL_MAX_VOXELS`,
    banded again above (with a wider band, :data:`cut_band.COARSE_BAND_RADIUS`). Then only the
    whole blocks within :data:`cut_band.BAND_RADIUS` voxels (:data:`cut_band.WIDE_BAND_RADIUS` on volumes of up to
    :data:`cut_band.WIDE_BAND_MAX_VOXELS`) of the coarse boundary (and
    blocks holding both scribble classes, a heart that the coarse cut dropped around its own
    strokes, :func:`cut_band._heart_dropped_at_strokes`, and pieces that ``h`` calls heart apart from the
    heart the coarse cut kept, :func:`cut_band._pieces_dropped_apart`) are re-cut at full resolution; the other
    voxels keep the coarse label, and their pairs with band voxels become terminal
    capacities. Where the new boundary reaches voxels that no band held yet, the
    blocks around them join the band's graph, whose max-flow goes on from the last
    flow (BK's tree reuse), up to :data:`cut_band.BAND_GROWTH_PASSES` times. With the 10-neighbourhood the band
    re-cut has the in-plane diagonals too (as the full cut); the coarse levels, which only place
    the band, have the 6 axis pairs, whose summed face weights approximate the
    diagonals' share of a block face. Every re-cut minimises the energy over its
    voxels exactly, so the energy only goes down. What the banded cut can miss are
    parts of the full optimum away from the coarse boundary: specks smaller than a
    block (which a weak boundary term lets through on noisy data), a stretch of
    boundary that moves further than the band in one piece without touching the
    band's edge first, and the far part of a thin arm joined to the heart (4-16 px
    wide on ``benchmarks/bench_graphcut.py --pieces``, where the full cut keeps it).
    On the benchmark volumes it agreed with the full cut to Dice 0.999 or better
    (benchmarks/bench_graphcut.py); on the 100x512x512 H&E phantom of
    BENCHMARKS.md ("Interactive speed", ``bench_interactive.py cut --full``) 0.9935, with 0.08% more
    energy. Peak memory is the coarse graph
    or the band graph, whichever is larger, plus about one byte per voxel. Every cut
    checks its memory estimate against the budget before it starts, and the band
    re-cut checks its actual size again.

PyMaxflow holds the GIL during graph building and max-flow, and the max-flow
itself cannot be cancelled: callers that must stay responsive (the Slicer
module) run the cut in a subprocess.

Two parts of the cut live in modules of their own: how ``gamma`` and ``sigma`` are
scaled to the objects and the image (:mod:`ScribbleSegLib.cut_scaling`), and the
strokes' pull on ``h`` with what it keeps of the image (:mod:`ScribbleSegLib.stroke_pull`).
This module holds the entry points, the input checks, the memory estimates and the planning
(full or coarse-to-fine, level by level), the full cut and the run of a coarse-to-fine cut
(``_cut_banded``); the rest of the cut lies below it, in modules that do not import this one:
the levels with their data term and pair weights (:mod:`ScribbleSegLib.cut_levels`), the
coarse-to-fine cut's band and its graph (:mod:`ScribbleSegLib.cut_band`), and a warm cut's
memory (:mod:`ScribbleSegLib.cut_memory`; :class:`CutMemory` is part of this module's API).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Optional, Sequence, Tuple

import maxflow
import numpy as np

from . import choices, runtime
from .cut_band import (DIAGONAL_BYTES_PER_VOXEL, GRAPH_BYTES_PER_VOXEL, WORKING_BYTES, _band_bytes_per_voxel,
                       _coarse_band, _coarsen_factors, _downsample, _grow, _heart_dropped_at_strokes,
                       _level_band_steps, _pieces_dropped_apart, _recut_until_settled, _upsample)
from .cut_levels import (_BACKGROUND, _DIAGONALS, _HEART, _ImageLevel, _Level, _axis_share, _fmt_bytes, _fmt_shape,
                         _neighbourhood, _pair_slices, _unary)
from .cut_memory import CutMemory, _StoredWeights, _cut_from_memory  # CutMemory: part of this module's API
from .cut_scaling import scaled_to_contrast, scaled_to_objects, section_sharpness
from .errors import ScribbleSegError
from .resources import available_memory  # noqa: F401  (part of this module's API: the cut's budget)
from .progress import CancelToken, ProgressCallback, check, report, sub_progress
from .runtime import in_threads, slabs
from .stroke_pull import ImageMeasures, measure_ways, pulled_to_seeds

#: Default boundary weight gamma (:data:`ScribbleSegLib.choices.DEFAULT_GAMMA`, where its choice is told).
DEFAULT_GAMMA = choices.DEFAULT_GAMMA
#: Default colour-contrast scale sigma, in RGB units scaled to [0, 1].
DEFAULT_SIGMA = choices.DEFAULT_SIGMA
#: Default constant delta added to the contrast weight.
DEFAULT_DELTA = choices.DEFAULT_DELTA
#: Default object radius (in-plane pixels, see :func:`cut_scaling.object_radius`) at and above which ``gamma``
#: applies as given.  gamma 8 was chosen on phantom hearts of radius 16-25 px; on objects of radius ~10 px (nuclei on
#: 40x H&E tiles) it erased whole objects the network had found (``benchmarks/bench_nuclei.py``).
DEFAULT_REFERENCE_RADIUS = 16.0
#: Default unsure share (see :func:`cut_scaling.unsure_share`) at and above which ``gamma`` applies as given.
#: On the 48 runs of the bench's validation and test hearts (both families, in- and cross-family, 3 stroke
#: patterns) the adapted ``h`` had shares of 0.236-0.600, and 0.2 leaves every one of them as it was; on the
#: nuclei tiles of ``benchmarks/bench_nuclei.py``, where the network places each outline to within a pixel,
#: 0.11-0.14 at 1x and 0.18-0.20 at 2x (BENCHMARKS.md, "Nuclei on H&E tiles").
DEFAULT_REFERENCE_UNSURE = 0.2
#: Default effective number of objects per section (see :func:`cut_scaling.object_count`) at and below which
#: ``gamma`` applies as given.  The phantom hearts on which gamma 8 was chosen have 1.05-1.70 (the adapted ``h`` of
#: round 1 on families a, b and the held-out c, the starter and the bench's networks); the nuclei tiles of
#: ``benchmarks/bench_nuclei.py`` 8-27, where gamma 8 joins neighbours and erases whole nuclei (BENCHMARKS.md,
#: "Many objects side by side").
DEFAULT_REFERENCE_OBJECTS = 4.0
#: Default RMS colour difference of in-plane neighbours (RGB in [0, 1], see :func:`cut_scaling.image_contrast`)
#: at and above which ``sigma`` applies as given: just under the 0.0855-0.120 of the bench's phantom stacks on
#: which sigma 0.1 was chosen.  Nuclei tiles at 2x magnification measured 0.049 (``benchmarks/bench_nuclei.py``).
DEFAULT_REFERENCE_CONTRAST = 0.085
#: Default share of the stack's median fine detail below which a section counts as out of focus and gets a
#: ``sigma`` of its own (:attr:`GraphCutParams.section_focus`).  On the phantom stacks as made (families a, b and the
#: held-out c) every section's detail is at least 0.973 of the median; a section blurred by a Gaussian of 0.8 pixels
#: has 0.87-0.90, of 1.5 pixels 0.76-0.81 (BENCHMARKS.md, "Sections out of focus").
DEFAULT_SECTION_FOCUS = 0.92
#: Keyword arguments of :class:`GraphCutParams` that use gamma, sigma and ``h`` as given instead of scaling
#: gamma and sigma to the objects and the image and pulling ``h`` towards the strokes: the paper's energy,
#: and sweeps or tests of the formula itself.
AS_GIVEN = MappingProxyType({"reference_radius": None, "reference_unsure": None, "reference_objects": None,
                             "reference_contrast": None, "section_focus": None, "seed_reach": 0.0})
#: Default :attr:`GraphCutParams.seed_reach` in in-plane pixels (see its docstring).
DEFAULT_SEED_REACH = choices.DEFAULT_SEED_REACH
#: Default :attr:`GraphCutParams.seed_across` (see its docstring).
DEFAULT_SEED_ACROSS = choices.DEFAULT_SEED_ACROSS
#: Default :attr:`GraphCutParams.seed_weight` (see its docstring).
DEFAULT_SEED_WEIGHT = choices.DEFAULT_SEED_WEIGHT
#: Default :attr:`GraphCutParams.seed_edges` (see its docstring).
DEFAULT_SEED_EDGES = choices.DEFAULT_SEED_EDGES
#: Ways of forming the colour x_v of a voxel.
COLOURS = ("rgb", "luminance")
#: Data terms: the paper's ``|l - h|`` (eq. 5), or the log-likelihood ratio ``-log h`` vs ``-log(1 - h)``.
DATA_TERMS = choices.CUT_DATA_TERMS
#: The log data term clips the logit of h to +-LOGIT_CLIP (h in [0.018, 0.982]): a voxel's vote is
#: bounded, so a scribble's hard seed and the boundary term can still overrule a confident error.
LOGIT_CLIP = 4.0
#: Cut modes of :func:`graph_cut`.
MODES = ("auto", "full", "banded")
#: Neighbourhoods: 6 (the paper's grid: 4 in-plane neighbours and 2 across sections) or 10 (8 in-plane
#: neighbours, diagonals included, and 2 across sections).
NEIGHBOURHOODS = choices.CUT_NEIGHBOURHOODS

#: Bytes per voxel of a full cut: the graph (:data:`cut_band.GRAPH_BYTES_PER_VOXEL`), int64 node ids and the uint8
#: labels.
FULL_CUT_BYTES_PER_VOXEL = GRAPH_BYTES_PER_VOXEL + 8 + 1
#: Fraction of the voxels assumed to fall in the band when estimating memory ahead of a cut
#: (:func:`estimate_banded_cut_bytes`); a cut itself checks the band its coarse cut places.
ASSUMED_BAND_FRACTION = 0.15
#: ``mode="auto"`` cuts volumes up to this many voxels in full (if the budget allows): the exact optimum,
#: where a coarse-to-fine cut can miss parts of it away from the coarse boundary.  Above it the full graph
#: (about 480 bytes per voxel with the diagonals, :func:`estimate_full_cut_bytes`: 1 GB at this size) costs
#: more than its exactness buys: at 40x256x256 the coarse-to-fine cut (with :data:`cut_band.WIDE_BAND_RADIUS`) took
#: about half the time and a re-run half the peak memory, and over the bench's rounds at 64x192x192 each round's
#: mean IoU stayed within 0.001 of the full cut's or above it (BENCHMARKS.md, "Interactive speed", item 60).
#: 2D tiles up to 1448x1448 pixels stay exact.
AUTO_FULL_MAX_VOXELS = 2**21
#: A coarse level, which only places the band of the level above it, is cut in full up to this many
#: voxels and coarse-to-fine itself above.  The full cut of the 100x256x256 coarse level of a 100x512x512
#: stack was most of a re-run's cut; since the band re-cuts grow where the boundary leaves the band and
#: have the diagonals, cutting that level coarse-to-fine too costs little energy (BENCHMARKS.md,
#: "Interactive speed").
COARSE_FULL_MAX_VOXELS = 2**21
#: Default memory budget: this fraction of the memory available when the cut starts.
BUDGET_FRACTION = 0.75

_log = logging.getLogger(__name__)

#: Largest value of any graph-cut setting: far above any useful one, and far below where the capacities made
#: of them (``gamma * delta``, pair weights) overflow.
MAX_SETTING = 1e6
#: Smallest ``sigma``: colour differences come in steps of 1/255, and below this every pair weight is 0.
MIN_SIGMA = 1e-4


@dataclass(frozen=True)
class GraphCutParams:
    """Parameters of the energy, eq. 4-6.

    Parameters
    ----------
    gamma : float
        Weight of the boundary term against the data term ``|l - h|``.
    sigma : float
        Colour-contrast scale: a neighbour pair whose colours differ by ``sigma``
        (Euclidean distance of RGB scaled to [0, 1], or of luminance in [0, 1])
        costs ``exp(-1) + delta`` instead of ``1 + delta`` when cut.
    delta : float
        Constant part of the boundary weight; keeps the surface smooth where the
        colour contrast is high.
    colour : {"rgb", "luminance"}
        How ``x_v`` is formed from an RGB image: the RGB triple scaled to [0, 1]
        (``||x_v - x_v'||^2`` summed over the three channels), or the BT.601
        luminance.  Grey images are used as they are.
    neighbourhood : {6, 10}
        6: each voxel's 4 in-plane and 2 cross-section neighbours (the paper's
        grid; the boundary is measured in the L1 metric in-plane, so round
        outlines come out blocky).  10 (the default): the in-plane diagonals too, with
        Cauchy-Crofton weights, so in-plane outlines follow the tissue at any
        angle.  Needs square in-plane pixels (else the 6-neighbourhood is used, with
        a logged note).  A coarse-to-fine cut has the diagonals in its
        full-resolution band; its coarse levels, which only place the band, have 6.
        Where the memory budget cannot hold them (a full cut: by its estimate; a
        coarse-to-fine cut: by the band the coarse cut placed), the cut uses 6,
        with a logged note.
    data_term : {"linear", "log"}
        ``linear`` is eq. 5, ``|l - h|``: a confident wrong ``h`` costs as little to
        overrule as an unsure one.  ``log`` uses the log-likelihood ratio, clipped
        at :data:`LOGIT_CLIP`: the cost of label 1 minus that of label 0 is
        ``-clip(logit h) / LOGIT_CLIP`` instead of ``1 - 2h`` (both span [-1, 1]),
        so moderately sure voxels weigh less than in eq. 5 and the boundary term
        decides more of them.  It is applied as ``h' = 1/2 + clip(logit h) /
        (2 LOGIT_CLIP)`` in eq. 5.
    reference_radius : float or None
        Scale the boundary term to the objects' size: when the in-plane radius
        ``R`` of ``h > 1/2`` (:func:`cut_scaling.object_radius`) is below this many pixels,
        ``gamma`` is multiplied by ``R / reference_radius`` (in quarter-octave
        steps, at least :data:`cut_scaling.MIN_GAMMA_FACTOR`).  The boundary term grows with an
        object's outline and the data term with its area, so a ``gamma`` that
        cleans up a large organ erases small objects whole; scaling it with ``R``
        keeps the trade-off the same at every size.  ``None`` (the paper) uses
        ``gamma`` as given.
    reference_unsure : float or None
        Scale the boundary term to how sure ``h`` is of the outlines: when the
        voxels with ``h`` in :data:`cut_scaling.UNSURE_RANGE` number fewer than this share of
        the voxels with ``h > 1/2`` (:func:`cut_scaling.unsure_share`), ``gamma`` is
        multiplied by their share / ``reference_unsure`` as well (the product of
        both factors in quarter-octave steps, at least :data:`cut_scaling.MIN_GAMMA_FACTOR`).
        The boundary term is there to decide where ``h`` cannot; where ``h``
        already places every outline to within a pixel it has nothing to decide,
        and its pull towards shorter outlines only shrinks the objects and cuts
        off their corners.  ``None`` (the paper) leaves ``gamma`` to the radius.
    reference_objects : float or None
        Scale the boundary term to how many objects lie side by side: when ``h > 1/2``
        has more than this many objects per section (:func:`cut_scaling.object_count`,
        pieces counted by their share of the area, so specks hardly count), ``gamma`` is
        multiplied by ``reference_objects`` / their number as well (the product of all
        factors in quarter-octave steps, at least :data:`cut_scaling.MIN_GAMMA_FACTOR` times
        ``reference_objects`` / their number, and at least
        :data:`cut_scaling.MANY_OBJECTS_MIN_GAMMA_FACTOR`).
        ``gamma`` was chosen on one organ per section, where the boundary term closes
        holes, removes islands and moves one outline onto the organ's edge.  Among
        dozens of nuclei it also joins neighbours a few pixels apart and erases whole
        ones the network found.  ``None`` (the paper) leaves ``gamma`` to the other factors.
    reference_contrast : float or None
        Scale ``sigma`` to the image's contrast: when the RMS colour difference
        of in-plane neighbours (:func:`cut_scaling.image_contrast`, in the space of
        ``colour``) is below this, ``sigma`` is multiplied by contrast /
        ``reference_contrast`` (quarter-octave steps, at least
        :data:`cut_scaling.MIN_SIGMA_FACTOR`).  ``sigma`` says what colour difference counts
        as an edge; a softer image (higher magnification, blur, a paler stain)
        has smaller differences at the same edges, and with ``sigma`` as given its
        boundaries cost as much as flat tissue.  ``None`` (the paper) uses
        ``sigma`` as given.
    section_focus : float or None
        Scale ``sigma`` further in a section out of focus: where a section's fine detail
        (its colour differences of near pixels against those of pixels further apart) is
        below this share of the stack's median, its in-plane pairs take ``sigma`` times its
        contrast over that of the sharp sections beside it
        (:func:`cut_scaling.section_sharpness`; quarter-octave steps, at least
        :data:`cut_scaling.MIN_SIGMA_FACTOR`).  A section out of focus now and then is common
        in a real series; with the stack's ``sigma`` its edges cost what flat tissue costs,
        and the cut there leans on ``h`` and on the sections beside it.  A pair across two
        sections takes the sharper one's ``sigma``.  ``None`` (the paper) uses one ``sigma``
        for every section.
    seed_reach : float
        In-plane pixels over which a stroke pulls the data term towards its label
        (:func:`stroke_pull.pulled_to_seeds`): a stroke then speaks for the tissue around it,
        not only for the voxels it covers.  Its weight halves every ``reach * ln 2``
        pixels of the way and stops after ``3 * reach``.  0 (the paper) leaves ``h``
        as it is.  The default, 8, was chosen with ``seed_weight`` and
        ``seed_edges`` on the bench's validation volumes (BENCHMARKS.md).
    seed_across : float
        How far the pull reaches across sections, as a share of ``seed_reach``:
        1 as far as in-plane (by the sections' real spacing), 0.5 half as far,
        0 the stroke's own section only.  Tissue changes across sections more
        than within one where an organ ends, and a background stroke there can
        pull the sections beside it off the organ.  The default, 0.5, is what
        ``scribbleseg bench`` chose over the interactive rounds (BENCHMARKS.md).
    seed_weight : float
        How many times a stroke outweighs ``h`` on its own voxels.  1 makes
        them equal, so a stroke tips only the voxels where ``h`` was unsure; the
        default, 30, lets a stroke drawn in tissue the network gets wrong claim the
        tissue around it, as far as ``seed_edges`` lets the pull go.
    seed_edges : float
        How much colour edges lengthen the pull's way (:func:`stroke_pull.pulled_to_seeds`):
        0 measures the straight-line distance; with the default, 3, each step
        counts ``1 + 3 g / g_median`` steps, ``g`` the colour gradient where it is
        taken (about 4 in textured tissue, many more across an edge).  So a strong
        pull fills the tissue a stroke lies in and fades at its edges.  With a
        weight of 30, a straight-line pull reaching 8 pixels claimed the
        neighbouring tissue too (BENCHMARKS.md).

    Examples
    --------
    >>> GraphCutParams().gamma, GraphCutParams().neighbourhood
    (8.0, 10)
    >>> paper = GraphCutParams.paper()
    >>> paper.data_term, paper.neighbourhood, paper.seed_reach
    ('linear', 6, 0.0)
    """

    gamma: float = DEFAULT_GAMMA
    sigma: float = DEFAULT_SIGMA
    delta: float = DEFAULT_DELTA
    colour: str = "rgb"
    data_term: str = choices.DEFAULT_CUT_DATA_TERM
    neighbourhood: int = choices.DEFAULT_CUT_NEIGHBOURHOOD
    reference_radius: Optional[float] = DEFAULT_REFERENCE_RADIUS
    reference_unsure: Optional[float] = DEFAULT_REFERENCE_UNSURE
    reference_objects: Optional[float] = DEFAULT_REFERENCE_OBJECTS
    reference_contrast: Optional[float] = DEFAULT_REFERENCE_CONTRAST
    section_focus: Optional[float] = DEFAULT_SECTION_FOCUS
    seed_reach: float = DEFAULT_SEED_REACH
    seed_across: float = DEFAULT_SEED_ACROSS
    seed_weight: float = DEFAULT_SEED_WEIGHT
    seed_edges: float = DEFAULT_SEED_EDGES

    @classmethod
    def paper(cls, gamma: float = DEFAULT_GAMMA) -> "GraphCutParams":
        """The paper's energy: eq. 5's linear data term on the 6-neighbourhood, ``gamma`` as given.

        Examples
        --------
        >>> GraphCutParams.paper().data_term
        'linear'
        """
        return cls(gamma=gamma, data_term="linear", neighbourhood=6, **AS_GIVEN)

    def __post_init__(self) -> None:
        for name, low, strict in (("gamma", 0.0, False), ("sigma", 0.0, True), ("delta", 0.0, False)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
                    and math.isfinite(value) and (value > low if strict else value >= low)):
                relation = "positive" if strict else "non-negative"
                raise ScribbleSegError(f"graph cut: {name} must be a finite {relation} number, got {value!r}")
        if self.colour not in COLOURS:
            raise ScribbleSegError(f"graph cut: colour must be one of {', '.join(COLOURS)}, got {self.colour!r}")
        if self.neighbourhood not in NEIGHBOURHOODS:
            raise ScribbleSegError(f"graph cut: neighbourhood must be one of {', '.join(map(str, NEIGHBOURHOODS))}, "
                                   f"got {self.neighbourhood!r}")
        if self.data_term not in DATA_TERMS:
            raise ScribbleSegError(f"graph cut: data_term must be one of {', '.join(DATA_TERMS)}, "
                                   f"got {self.data_term!r}")
        for name, unit in (("seed_reach", " of pixels"), ("seed_across", ""), ("seed_edges", ""),
                           ("seed_weight", "")):
            r = getattr(self, name)
            if not (isinstance(r, (int, float, np.floating, np.integer)) and math.isfinite(r) and r >= 0):
                raise ScribbleSegError(f"graph cut: {name} must be a finite non-negative number{unit}, got {r!r}")
        if not self.seed_weight > 0:
            raise ScribbleSegError(f"graph cut: seed_weight must be positive, got {self.seed_weight!r}")
        for name, unit in (("reference_radius", "pixels"), ("reference_unsure", "voxels per object voxel"),
                           ("reference_objects", "objects per section"), ("reference_contrast", "colour units")):
            r = getattr(self, name)
            if r is not None and not (isinstance(r, (int, float, np.floating, np.integer)) and math.isfinite(r)
                                      and r > 0):
                raise ScribbleSegError(f"graph cut: {name} must be a positive number of {unit} or None, got {r!r}")
        r = self.section_focus
        if r is not None and not (isinstance(r, (int, float, np.floating, np.integer)) and 0 < r <= 1):
            raise ScribbleSegError(f"graph cut: section_focus must be a share in (0, 1] of the stack's median fine "
                                   f"detail, or None, got {r!r}")
        # Finite is not enough: the capacities are products and squares of these (gamma * delta, sigma^2), and
        # beyond these bounds they overflow or vanish, and the max-flow never ends or divides by zero.
        for name in ("gamma", "sigma", "delta", "seed_reach", "seed_across", "seed_edges", "seed_weight",
                     "reference_radius", "reference_unsure", "reference_objects", "reference_contrast"):
            value = getattr(self, name)
            if value is not None and value > MAX_SETTING:
                raise ScribbleSegError(f"graph cut: {name} must be at most {MAX_SETTING:g}, got {value!r}")
        if self.sigma < MIN_SIGMA:
            raise ScribbleSegError(f"graph cut: sigma must be at least {MIN_SIGMA:g} (colours differ in steps of "
                                   f"1/255), got {self.sigma!r}")


# ----------------------------------------------------------------------------------------------
# Public API


def graph_cut(h: np.ndarray, image: np.ndarray, scribbles: np.ndarray,
              spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0), params: Optional[GraphCutParams] = None,
              mode: str = "auto", memory_budget: Optional[int] = None,
              progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
              memory: Optional["CutMemory"] = None, measures: Optional["ImageMeasures"] = None) -> np.ndarray:
    """Segment the heart by minimising eq. 4-6 with the scribbles as hard seeds.

    Parameters
    ----------
    h : numpy.ndarray
        ``(Z, Y, X)`` float heart probability in [0, 1] (the data term).
    image : numpy.ndarray
        ``(Z, Y, X, 3)`` RGB or ``(Z, Y, X)`` grey; uint8, or float scaled to [0, 1].
    scribbles : numpy.ndarray
        ``(Z, Y, X)`` uint8: 0 none, 1 heart, 2 background.  Both classes must occur.
    spacing_zyx : tuple of 3 float
        Voxel size in mm in array-axis order; weights the pairs (module docstring).
    params : GraphCutParams, optional
        ``gamma``, ``sigma``, ``delta`` and the colour mode; defaults if omitted.
    mode : {"auto", "full", "banded"}
        ``full`` cuts the whole grid at once; ``banded`` cuts a downsampled volume
        and re-cuts a band around its boundary at full resolution; ``auto`` cuts in
        full when the volume has at most :data:`AUTO_FULL_MAX_VOXELS` voxels and
        fits the memory budget, banded otherwise.
    memory_budget : int, optional
        Bytes the cut may use; default :data:`BUDGET_FRACTION` of the memory
        available now (see :func:`available_memory`).
    progress, cancel
        See :mod:`ScribbleSegLib.progress`.  Cancellation is honoured between
        stages and slabs, not inside a max-flow.
    memory : CutMemory, optional
        What the previous cut of the same image (same spacing and parameters)
        left: this cut then starts from its labels and re-cuts only around its
        boundary and where the data term or the seeds changed (see
        :class:`CutMemory`); it is updated with this cut.  None: a cut from scratch.
    measures : ImageMeasures, optional
        What is known of the image and the strokes (:func:`measure_ahead`), used
        and filled by this cut; ``memory`` has its own, which takes precedence.

    Returns
    -------
    numpy.ndarray
        ``(Z, Y, X)`` uint8 labels, 1 heart and 0 other.

    Raises
    ------
    ScribbleSegError
        On inconsistent shapes, NaN or out-of-range ``h``, scribble values other
        than 0/1/2, scribbles lacking one class, or when the cut would need more
        memory than the budget (``mode="full"``: use ``banded``; otherwise the
        volume must be downsampled).

    Examples
    --------
    A dark square that ``h`` calls heart, one stroke of each class:

    >>> h = np.full((2, 8, 8), 0.2, np.float32); h[:, 2:6, 2:6] = 0.8
    >>> image = np.full((2, 8, 8, 3), 200, np.uint8); image[:, 2:6, 2:6] = 90
    >>> scribbles = np.zeros((2, 8, 8), np.uint8); scribbles[0, 3, 3] = 1; scribbles[0, 0, 0] = 2
    >>> labels = graph_cut(h, image, scribbles)
    >>> labels.dtype, int(labels.sum()), bool(labels[:, 2:6, 2:6].all())
    (dtype('uint8'), 32, True)
    """
    from .checks import check_instance, check_progress_cancel

    check_instance(params, "params", GraphCutParams)
    check_instance(memory, "memory", CutMemory)
    check_progress_cancel(progress, cancel)
    params = params if params is not None else GraphCutParams()
    _check_mode(mode)
    known = memory.measures if memory is not None else measures
    level = _top_level(h, image, scribbles, spacing_zyx, params, known,
                       memory.scratch(np.shape(h)) if memory is not None else None)
    _check_seed_classes(scribbles)
    budget = _budget(memory_budget)
    neighbourhood, problem = _usable_neighbourhood(level.shape, level.spacing, params.neighbourhood, mode, budget)
    if problem:
        _log.info("graph cut: %s; using the 6-neighbourhood", problem)
        level.params = dataclasses.replace(level.params, neighbourhood=neighbourhood)
    report(progress, "graph cut", 0.0, f"{_fmt_shape(level.shape)} voxels")
    weights = None
    if memory is not None:
        memory.follow(level, image, mode)
        memory.generation += 1
        weights = memory.coarse_weights
    warm = memory is not None and memory.holds_labels
    store = None if warm or known is None else known.weights_store
    stored = _StoredWeights.of(level, store, weights) if store is not None else None
    keep = [] if memory is not None else None  # the full-resolution band's graph, for the next cut
    labels = None
    if warm:
        full = mode == "full" or (mode == "auto" and _auto_cuts_full(level.shape, level.spacing, budget,
                                                                      _neighbourhood(level)))
        labels = _cut_from_memory(level, memory, budget, full, progress, cancel, keep)  # None: cut from scratch
    if labels is None:
        labels = _solve(level, mode, budget, progress, cancel, weights, keep=keep, stored=stored)
    if memory is not None:
        memory.remember(level, labels, keep[0] if keep else None)
    report(progress, "graph cut", 1.0, "done")
    return labels


def energy(labels: np.ndarray, h: np.ndarray, image: np.ndarray, scribbles: np.ndarray,
           spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0), params: Optional[GraphCutParams] = None) -> float:
    """Energy E of eq. 4-6 for a labelling, with the spacing weights of :func:`graph_cut`.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(Z, Y, X)`` labels, nonzero for heart.
    h, image, scribbles, spacing_zyx, params
        As for :func:`graph_cut` (scribbles may hold one class or none here).

    Returns
    -------
    float
        The energy, or ``inf`` if a scribbled voxel has the other label.  For
        labellings that honour the scribbles it equals the value of the minimum
        cut that :func:`graph_cut` computes; it works on whole-volume arrays and is
        meant for tests and debugging on small volumes.

    Examples
    --------
    >>> h = np.full((2, 8, 8), 0.2, np.float32); h[:, 2:6, 2:6] = 0.8
    >>> image = np.full((2, 8, 8, 3), 200, np.uint8); image[:, 2:6, 2:6] = 90
    >>> scribbles = np.zeros((2, 8, 8), np.uint8); scribbles[0, 3, 3] = 1; scribbles[0, 0, 0] = 2
    >>> labels = graph_cut(h, image, scribbles)
    >>> worse = labels.copy(); worse[:, 2, 2:6] = 0  # one row of the square taken away
    >>> bool(energy(labels, h, image, scribbles) < energy(worse, h, image, scribbles))
    True
    >>> energy(1 - labels, h, image, scribbles)  # against the strokes
    inf
    """
    params = params if params is not None else GraphCutParams()
    level = _top_level(h, image, scribbles, spacing_zyx, params)
    fg = np.asarray(labels) != 0
    if fg.shape != level.shape:
        raise ScribbleSegError(f"graph cut: labels have shape {fg.shape}, h has {level.shape}")
    if np.any(fg & (level.seeds == _BACKGROUND)) or np.any(~fg & (level.seeds == _HEART)):
        return math.inf
    total = float(np.abs(fg - level.h.astype(np.float64)).sum())
    diagonals = params.neighbourhood == 10
    for axis in range(3):
        lo, hi = _pair_slices(axis)
        weights = level.forward_weights(axis, 0, level.shape[0])
        weights *= _axis_share(axis, diagonals)
        total += float(weights[lo][fg[lo] != fg[hi]].sum())
    if diagonals:
        _, Y, X = level.shape
        for dy, dx in _DIAGONALS:
            weights = level.diagonal_weights(dy, dx, 0, level.shape[0])
            xa, xb = (slice(0, X - dx), slice(dx, X)) if dx > 0 else (slice(-dx, X), slice(0, X + dx))
            cut = fg[:, 0:Y - dy, xa] != fg[:, dy:Y, xb]
            total += float(weights[:, 0:Y - dy, xa][cut].sum())
    return total


def estimate_full_cut_bytes(shape: Sequence[int], neighbourhood: int = 6) -> int:
    """Bytes a full cut of a ``(Z, Y, X)`` volume needs beyond its inputs.

    About :data:`FULL_CUT_BYTES_PER_VOXEL` per voxel (:data:`DIAGONAL_BYTES_PER_VOXEL`
    more with the in-plane diagonals) plus a fixed :data:`WORKING_BYTES` for the
    slab-wise weights.

    Examples
    --------
    >>> round(estimate_full_cut_bytes((100, 512, 512)) / 2**30, 2)
    6.33
    """
    per_voxel = FULL_CUT_BYTES_PER_VOXEL + (DIAGONAL_BYTES_PER_VOXEL if neighbourhood == 10 else 0)
    return int(np.prod([int(n) for n in shape], dtype=np.int64)) * per_voxel + WORKING_BYTES


def estimate_banded_cut_bytes(shape: Sequence[int], spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0),
                              band_fraction: float = ASSUMED_BAND_FRACTION,
                              memory_budget: Optional[int] = None, neighbourhood: int = 6) -> int:
    """Bytes a coarse-to-fine banded cut of a ``(Z, Y, X)`` volume needs beyond its inputs.

    Parameters
    ----------
    shape : tuple of 3 int
    spacing_zyx : tuple of 3 float
        Decides which axes are downsampled (see the module docstring).
    band_fraction : float
        Assumed fraction of voxels in the band at every level (the true band is
        only known after the coarse cut, and is checked again then).
    memory_budget : int, optional
        The budget :func:`graph_cut` would use; it decides, as there, whether the
        coarse level is itself cut in full or banded.  ``None``: unlimited.
    neighbourhood : {6, 10}
        With 10, the band's graph has the in-plane diagonals too (:data:`DIAGONAL_BYTES_PER_VOXEL`).

    Examples
    --------
    >>> banded, full = estimate_banded_cut_bytes((100, 512, 512)), estimate_full_cut_bytes((100, 512, 512))
    >>> bool(banded < full / 4)
    True
    """
    budget = math.inf if memory_budget is None else memory_budget
    return _banded_bytes(tuple(int(n) for n in shape), tuple(float(s) for s in spacing_zyx), band_fraction, budget,
                         neighbourhood)


# ----------------------------------------------------------------------------------------------
# Input checks


def _top_level(h, image, scribbles, spacing_zyx, params: GraphCutParams,
               measures: Optional[ImageMeasures] = None, scratch: Optional[np.ndarray] = None) -> _ImageLevel:
    """Check the inputs and wrap them (without copying) as the full-resolution level; ``measures``: what is
    known of the image from earlier cuts; ``scratch``: a float32 array of ``h``'s shape for the level's data
    term (a :class:`CutMemory`'s, kept from run to run), or None for a new one."""
    h = np.asarray(h)
    if h.ndim != 3 or h.size == 0:
        raise ScribbleSegError(f"graph cut: h must be a non-empty (Z, Y, X) array, got shape {h.shape}")
    if not np.issubdtype(h.dtype, np.floating):
        raise ScribbleSegError(f"graph cut: h must be a float array of probabilities, got {h.dtype}")
    # A NaN makes the minimum NaN and an infinity makes an end infinite: no separate pass for them.
    low, high = float(h.min()), float(h.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ScribbleSegError(f"graph cut: h (the heart probability) contains {_count_nonfinite(h)} "
                               "NaN or infinite values")
    if low < 0.0 or high > 1.0:
        raise ScribbleSegError(f"graph cut: h must lie in [0, 1], got values in [{low:g}, {high:g}]")
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., None]
    if image.ndim != 4 or image.shape[:3] != h.shape or image.shape[3] not in (1, 3):
        if image.ndim == 4 and image.shape[3] in (1, 3) and image.shape[:3] == np.shape(scribbles):
            # The image and the scribbles agree: h is the one of another volume.
            raise ScribbleSegError(f"graph cut: h has shape {h.shape}, the image and the scribbles "
                                   f"{image.shape[:3]}")
        raise ScribbleSegError(f"graph cut: image must be {h.shape + (3,)} RGB or {h.shape} grey, "
                               f"got shape {np.shape(image)}")
    if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
        raise ScribbleSegError(f"graph cut: image must be uint8 or float in [0, 1], got {image.dtype}")
    if image.dtype != np.uint8:
        # A float copy of a uint8 image (0-255) would make sigma 255 times too fine a colour step, silently.
        low, high = float(image.min()), float(image.max())
        if not (math.isfinite(low) and math.isfinite(high)) or low < 0.0 or high > 1.0:
            raise ScribbleSegError(f"graph cut: a float image must lie in [0, 1], got values in [{low:g}, {high:g}]"
                                   " (a 0-255 image: pass it as uint8)")
    scribbles = np.asarray(scribbles)
    if scribbles.shape != h.shape:
        raise ScribbleSegError(f"graph cut: scribbles have shape {scribbles.shape}, h has {h.shape}")
    if not np.issubdtype(scribbles.dtype, np.integer) or int(scribbles.min()) < 0 or int(scribbles.max()) > 2:
        raise ScribbleSegError("graph cut: scribbles must hold 0 (none), 1 (heart) and 2 (background) only")
    try:
        spacing = tuple(float(s) for s in spacing_zyx)
    except (TypeError, ValueError):
        spacing = ()
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ScribbleSegError(f"graph cut: spacing must be three positive numbers in mm, got {spacing_zyx!r}")
    params = scaled_to_contrast(scaled_to_objects(params, h), image, measures)
    given = h
    if params.seed_reach > 0:
        h = pulled_to_seeds(h, scribbles, spacing, params.seed_reach, params.seed_across, weight=params.seed_weight,
                            image=image, edges=params.seed_edges, measures=measures, out=scratch)
    # The log data term goes where the pulled copy is (the probability is not read again once it is made), else
    # into the scratch array: one volume-sized array fewer, and a warm session's runs touch no new memory for it.
    out = (h if h is not given else scratch) if params.data_term == "log" else None
    # The band re-cut reads the arrays through flat indices: make them C-contiguous (a no-op as a rule).
    level = _ImageLevel(np.ascontiguousarray(h), np.ascontiguousarray(image),
                        np.ascontiguousarray(scribbles, dtype=np.uint8), spacing, params,
                        log_data_term if params.data_term == "log" else None, out)
    if params.section_focus is not None:
        level.sharpness = (measures.sharpness(image, params.colour, params.section_focus) if measures is not None
                           else section_sharpness(image, params.colour, params.section_focus))
    return level


def measure_ahead(image: np.ndarray, scribbles: np.ndarray, spacing_zyx: Sequence[float],
                  params: Optional[GraphCutParams], measures: ImageMeasures,
                  cancel: Optional[CancelToken] = None) -> None:
    """Fill ``measures`` with what a :func:`graph_cut` of ``image`` with ``scribbles`` and ``params`` will ask of
    it: the image's contrast and the stroke pull's ways through each stroked section.

    None of it depends on ``h``: :func:`ScribbleSegLib.pipeline.adapt_and_cut` runs this on a thread of its own
    while the adaptation trains, and hands ``measures`` to the cut.  ``cancel`` is checked between sections.

    Examples
    --------
    >>> image = np.zeros((1, 16, 16, 3), np.uint8); image[:, :, 8:] = 200
    >>> scribbles = np.zeros((1, 16, 16), np.uint8); scribbles[0, 4, 2] = 1; scribbles[0, 4, 12] = 2
    >>> measures = ImageMeasures()
    >>> measure_ahead(image, scribbles, (1.0, 1.0, 1.0), GraphCutParams(), measures)
    >>> h = np.full((1, 16, 16), 0.4, np.float32); h[:, :, 8:] = 0.6
    >>> labels = graph_cut(h, image, scribbles, measures=measures)  # measures nothing of the image again
    >>> bool((labels == graph_cut(h, image, scribbles)).all())
    True
    """
    params = params if params is not None else GraphCutParams()
    image = np.asarray(image)
    image = image[..., None] if image.ndim == 3 else image
    if params.reference_contrast is not None:
        measures.contrast(image, params.colour)
    if params.section_focus is not None:
        measures.sharpness(image, params.colour, params.section_focus)
    if params.seed_reach > 0 and params.seed_edges > 0:
        measure_ways(image, scribbles, spacing_zyx, params.seed_reach, params.seed_edges, measures, cancel)


def log_data_term(h: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``h' = 1/2 + clip(logit h, +-LOGIT_CLIP) / (2 LOGIT_CLIP)``: eq. 5 with ``h'`` is the log data term.

    Written into ``out`` (float32, ``h``'s shape, C-contiguous; ``h`` itself works) when given, else into a new array.

    Examples
    --------
    >>> import numpy as np
    >>> log_data_term(np.array([0.5, 0.982, 0.0], np.float32)).round(3).tolist()
    [0.5, 1.0, 0.0]
    """
    eps = np.float32(1.0 / (1.0 + math.exp(LOGIT_CLIP)))
    h = np.asarray(h)
    if out is None:
        out = np.empty(h.shape, np.float32)
    elif out.shape != h.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ScribbleSegError(f"log_data_term: out must be C-contiguous float32 of shape {h.shape}")
    flat_in, flat_out = h.reshape(-1), out.reshape(-1)

    def slab(start: int, stop: int) -> None:
        p = np.clip(flat_in[start:stop].astype(np.float32), eps, 1 - eps)  # a copy: ``out`` may be ``h``
        # One log of the odds, not log(p) - log1p(-p): the logarithm is most of the cost (BENCHMARKS.md,
        # "Interactive speed" item 12), and p is at least eps from 0 and 1, so the odds lose no precision.
        logit = np.subtract(np.float32(1.0), p)
        np.divide(p, logit, out=logit)
        np.log(logit, out=logit)
        np.clip(logit, -LOGIT_CLIP, LOGIT_CLIP, out=logit)
        logit *= np.float32(1.0 / (2 * LOGIT_CLIP))
        logit += np.float32(0.5)
        flat_out[start:stop] = logit

    # In slabs, one thread per core: whole-volume temporaries (five of them) would add 0.5 GB at 100x512x512.
    in_threads(slab, [(start, min(flat_in.size, start + runtime.SLAB_VOXELS))
                       for start in range(0, flat_in.size, runtime.SLAB_VOXELS)])
    return out


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ScribbleSegError(f"graph cut: mode must be one of {', '.join(MODES)}, got {mode!r}")


def _usable_neighbourhood(shape: Sequence[int], spacing: Sequence[float], neighbourhood: int, mode: str,
                          budget: int) -> Tuple[int, str]:
    """``(neighbourhood, why it fell back or "")``: the 10-neighbourhood falls back to 6 where its in-plane
    diagonals cannot be used (:func:`_diagonal_problem`); 6 gives the same kind of result, with blockier
    in-plane outlines."""
    problem = _diagonal_problem(shape, spacing, mode, budget) if neighbourhood == 10 else ""
    return (6 if problem else neighbourhood), problem


def _diagonal_problem(shape: Sequence[int], spacing: Sequence[float], mode: str, budget: int) -> str:
    """Why the 10-neighbourhood cannot be used here ("" if it can): it needs square in-plane pixels, and
    ``mode="full"`` a full cut with the diagonals that fits the budget.  ``auto`` cuts in full only where the
    diagonals fit, and coarse-to-fine otherwise, where the band's true size decides once the coarse cut has
    placed it (:func:`cut_band._recut_until_settled`)."""
    sy, sx = spacing[1], spacing[2]
    if abs(sy - sx) > 0.01 * max(sy, sx):
        return f"in-plane diagonals need square pixels, not {sx:g} x {sy:g} mm"
    if mode == "full" and (needed := estimate_full_cut_bytes(shape, 10)) > budget:
        return (f"a full cut of {_fmt_shape(shape)} voxels with in-plane diagonals needs about "
                f"{_fmt_bytes(needed)} (budget {_fmt_bytes(budget)})")
    return ""


def _count_nonfinite(a: np.ndarray) -> int:
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def _check_seed_classes(scribbles: np.ndarray) -> None:
    from .checks import drawn_classes

    has = drawn_classes(scribbles)
    if not all(has):
        missing = " and ".join(name for name, present in zip(("heart (1)", "background (2)"), has) if not present)
        raise ScribbleSegError(f"graph cut: the scribbles have no {missing} voxels; "
                               "scribble both the heart and the background")


def _budget(memory_budget: Optional[int]) -> int:
    if memory_budget is None:
        return int(available_memory() * BUDGET_FRACTION)
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, float, np.integer, np.floating)) \
            or not memory_budget > 0:  # not "> 0" alone: NaN and a string fail it differently
        raise ScribbleSegError(f"graph cut: memory budget must be a positive number of bytes, got {memory_budget!r}")
    return int(min(memory_budget, 2**62))


# ----------------------------------------------------------------------------------------------
# Planning


def _solve(level: _Level, mode: str, budget: int,
           progress: Optional[ProgressCallback], cancel: Optional[CancelToken],
           weights: Optional[dict] = None, full_max: Optional[int] = None,
           keep: Optional[list] = None, stored: Optional[_StoredWeights] = None) -> np.ndarray:
    """Cut ``level`` in ``mode``, after checking the memory estimate against ``budget``.

    ``weights`` (level shape -> pair weights of its coarse level) is read and filled by a
    coarse-to-fine cut, so that the next cut of the same image skips computing them.
    ``full_max``: the most voxels ``mode="auto"`` cuts in full (default :data:`AUTO_FULL_MAX_VOXELS`;
    :data:`COARSE_FULL_MAX_VOXELS` for a coarse level).  ``keep``: a list that a coarse-to-fine cut
    appends its full-resolution band's graph (:class:`cut_band._Region`) to, for the next cut to grow.
    ``stored``: where ``level``'s coarse pair weights are read from or kept (:class:`cut_memory._StoredWeights`).
    """
    if _cut_mode(level.shape, level.spacing, _neighbourhood(level), mode, budget, full_max) == "banded":
        return _cut_banded(level, budget, progress, cancel, weights, keep, stored)
    return _cut_full(level, progress, cancel)


def _cut_mode(shape: Sequence[int], spacing: Sequence[float], neighbourhood: int, mode: str, budget: int,
              full_max: Optional[int] = None) -> str:
    """``"full"`` or ``"banded"``: how a cut of a ``shape`` volume in ``mode`` runs; raises if what it needs
    before any band is placed does not fit ``budget`` (``full_max`` as in :func:`_solve`)."""
    if mode == "auto":
        mode = "full" if _auto_cuts_full(shape, spacing, budget, neighbourhood, full_max) else "banded"
    if mode == "banded" and any(f > 1 for f in _coarsen_factors(shape, spacing)):
        # Refused here only if what must fit before the band is placed does not: the kept arrays and the coarse
        # level's cut.  The band's true size is known once the coarse cut has placed it, and checked then
        # (_recut_until_settled drops the diagonals if they do not fit, _Region.add refuses a band that does not):
        # the assumed band (ASSUMED_BAND_FRACTION) refused a 250x712x1250 stack within 16 GiB (BENCHMARKS.md,
        # "Interactive speed", item 34).
        before_band = _banded_bytes(shape, spacing, 0.0, budget, 6)
        if before_band > budget:
            raise ScribbleSegError(
                f"graph cut: even the coarse levels of a coarse-to-fine cut of {_fmt_shape(shape)} voxels need "
                f"about {_fmt_bytes(before_band)}, more than the memory budget of {_fmt_bytes(budget)}; "
                "downsample the volume or free memory")
        return "banded"
    full_bytes = estimate_full_cut_bytes(shape, neighbourhood)
    if full_bytes > budget:
        raise ScribbleSegError(
            f"graph cut: a full cut of {_fmt_shape(shape)} voxels needs about {_fmt_bytes(full_bytes)}, "
            f"more than the memory budget of {_fmt_bytes(budget)}; use the banded (coarse-to-fine) cut")
    return "full"


def check_cut_fits(shape: Sequence[int], spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0),
                   params: Optional[GraphCutParams] = None, mode: str = "auto",
                   memory_budget: Optional[int] = None) -> None:
    """Raise the error :func:`graph_cut` would raise, for memory, before it cuts a ``(Z, Y, X)`` volume of ``shape``.

    A job calls this before the network and the adaptation run (minutes, or hours on a large stack): a stack
    whose cut cannot fit is then refused before that work, not after it.  The budget is taken from the memory
    available now, as :func:`graph_cut` takes it when it starts; the cut, which runs later with less memory
    free, still checks again, and so does a band once it is placed.

    Examples
    --------
    >>> check_cut_fits((100, 512, 512), (0.01, 0.002, 0.002), memory_budget=2**32)  # fits: returns None
    >>> try:
    ...     check_cut_fits((2000, 4096, 4096), memory_budget=2**32)
    ... except ScribbleSegError as error:
    ...     print(str(error).split(" need ")[0])
    graph cut: even the coarse levels of a coarse-to-fine cut of 2000x4096x4096 voxels
    """
    params = params if params is not None else GraphCutParams()
    _check_mode(mode)
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing_zyx)
    budget = _budget(memory_budget)
    neighbourhood, _ = _usable_neighbourhood(shape, spacing, params.neighbourhood, mode, budget)
    _cut_mode(shape, spacing, neighbourhood, mode, budget)


def _auto_cuts_full(shape, spacing, budget: float, neighbourhood: int = 6,
                    full_max: Optional[int] = None) -> bool:
    """Whether ``mode="auto"`` cuts a volume in full: it has at most ``full_max`` voxels (default
    :data:`AUTO_FULL_MAX_VOXELS`) and fits the budget, or cannot be coarsened."""
    full_max = AUTO_FULL_MAX_VOXELS if full_max is None else full_max
    voxels = int(np.prod(shape, dtype=np.int64))
    return ((estimate_full_cut_bytes(shape, neighbourhood) <= budget and voxels <= full_max)
            or max(_coarsen_factors(shape, spacing)) == 1)


def _coarse_bytes(shape, spacing, band_fraction: float, budget: float) -> int:
    """Estimated bytes of the cut of a coarse level (full, or coarse-to-fine again)."""
    if _auto_cuts_full(shape, spacing, budget, 6, COARSE_FULL_MAX_VOXELS):
        return estimate_full_cut_bytes(shape)
    return _banded_bytes(shape, spacing, band_fraction, budget)


def _banded_bytes(shape, spacing, band_fraction: float, budget: float, neighbourhood: int = 6) -> int:
    f = _coarsen_factors(shape, spacing)
    if max(f) == 1:  # nothing to downsample: the banded cut is a full cut
        return estimate_full_cut_bytes(shape, neighbourhood)
    coarse_shape = tuple(-(-n // k) for n, k in zip(shape, f))
    coarse_spacing = tuple(s * k for s, k in zip(spacing, f))
    voxels = int(np.prod(shape, dtype=np.int64))
    coarse_voxels = int(np.prod(coarse_shape, dtype=np.int64))
    # Kept throughout: the labels (1 B/voxel) and the coarse h, pair weights, seeds and labels.
    kept = voxels + coarse_voxels * (4 + 12 + 1 + 1)
    coarse = _coarse_bytes(coarse_shape, coarse_spacing, band_fraction, budget)
    band = int(band_fraction * voxels) * _band_bytes_per_voxel(neighbourhood) + WORKING_BYTES
    return kept + max(coarse, band)


# ----------------------------------------------------------------------------------------------
# Full cut


def _forward_structure(axis: int) -> np.ndarray:
    """A 3x3x3 structure linking each node to its next neighbour along ``axis``."""
    structure = np.zeros((3, 3, 3))
    centre = [1, 1, 1]
    centre[axis] = 2
    structure[tuple(centre)] = 1.0
    return structure


def _cut_full(level: _Level, progress: Optional[ProgressCallback], cancel: Optional[CancelToken]) -> np.ndarray:
    Z, Y, X = level.shape
    name = _fmt_shape(level.shape)
    diagonals = _neighbourhood(level) == 10
    pairs = (Z - 1) * Y * X + Z * (Y - 1) * X + Z * Y * (X - 1) + (2 * Z * (Y - 1) * (X - 1) if diagonals else 0)
    graph = maxflow.Graph[float](Z * Y * X, pairs)
    ids = graph.add_grid_nodes((Z, Y, X))
    structures = [_forward_structure(axis) for axis in range(3)]
    for z0, z1 in slabs(Z, Y * X):
        check(cancel)
        for axis in range(3):
            # The z pairs leaving the slab need the ids of the next plane.
            z_end = min(Z, z1 + 1) if axis == 0 else z1
            weights = level.forward_weights(axis, z0, z_end)
            weights *= _axis_share(axis, diagonals)
            graph.add_grid_edges(ids[z0:z_end], weights=weights, structure=structures[axis], symmetric=True)
        if diagonals:
            for dy, dx in _DIAGONALS:
                structure = np.zeros((3, 3, 3))
                structure[1, 1 + dy, 1 + dx] = 1.0
                graph.add_grid_edges(ids[z0:z1], weights=level.diagonal_weights(dy, dx, z0, z1),
                                     structure=structure, symmetric=True)
        source, sink = _unary(level.data(z0, z1), level.seeds[z0:z1], level.seed_capacity)
        graph.add_grid_tedges(ids[z0:z1], source, sink)
        report(progress, "graph cut", 0.5 * z1 / Z, f"{name}: building the graph")
    check(cancel)
    report(progress, "graph cut", 0.5, f"{name}: max-flow")
    graph.maxflow()
    labels = np.empty((Z, Y, X), np.uint8)
    for z0, z1 in slabs(Z, Y * X):
        labels[z0:z1] = graph.get_grid_segments(ids[z0:z1])
    report(progress, "graph cut", 1.0, f"{name}: done")
    return labels


# ----------------------------------------------------------------------------------------------
# Coarse-to-fine banded cut


def _cut_banded(level: _Level, budget: int, progress: Optional[ProgressCallback],
                cancel: Optional[CancelToken], weights: Optional[dict] = None,
                keep: Optional[list] = None, stored: Optional[_StoredWeights] = None) -> np.ndarray:
    name = _fmt_shape(level.shape)
    f = _coarsen_factors(level.shape, level.spacing)
    report(progress, "graph cut", 0.0, f"{name}: downsampling by {_fmt_shape(f)}")
    known = None if weights is None else weights.get(level.shape)
    if known is None and stored is not None:
        known = stored.take(kept=weights is not None)
    coarse = _downsample(level, f, cancel, known)
    if known is None and stored is not None:
        stored.computed(coarse.weights)
    del known
    if weights is not None:
        weights[level.shape] = coarse.weights
    coarse_labels = _solve(coarse, "auto", budget, sub_progress(progress, 0.0, 0.5), cancel, weights,
                           COARSE_FULL_MAX_VOXELS)
    steps = _level_band_steps(level, f)
    band = _coarse_band(coarse_labels, coarse.seeds, steps)
    dropped = _heart_dropped_at_strokes(coarse_labels, coarse.h, coarse.seeds)
    if dropped is not None:
        _log.info("graph cut: the coarse cut of %s left out more heart around the heart strokes than it kept; "
                  "the band takes it in", _fmt_shape(coarse.shape))
        band |= _grow(dropped, [n - 1 for n in steps])
    apart = _pieces_dropped_apart(coarse_labels, coarse.h)
    if apart is not None:
        band |= _grow(apart, [n - 1 for n in steps])
    del coarse  # only its labels and the band are needed from here on
    labels = _upsample(coarse_labels, f, level.shape)
    del coarse_labels
    region = _recut_until_settled(level, labels, band, f, budget, progress, 0.5, 1.0, cancel)
    if keep is not None:
        keep.append(region)
    del region
    report(progress, "graph cut", 1.0, f"{name}: done")
    return labels

