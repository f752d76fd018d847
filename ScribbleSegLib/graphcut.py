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
    banded again above (with a wider band, :data:`COARSE_BAND_RADIUS`). Then only the
    whole blocks within :data:`BAND_RADIUS` voxels (:data:`WIDE_BAND_RADIUS` on volumes of up to
    :data:`WIDE_BAND_MAX_VOXELS`) of the coarse boundary (and
    blocks holding both scribble classes, a heart that the coarse cut dropped around its own
    strokes, :func:`_heart_dropped_at_strokes`, and pieces that ``h`` calls heart apart from the
    heart the coarse cut kept, :func:`_pieces_dropped_apart`) are re-cut at full resolution; the other
    voxels keep the coarse label, and their pairs with band voxels become terminal
    capacities. Where the new boundary reaches voxels that no band held yet, the
    blocks around them join the band's graph, whose max-flow goes on from the last
    flow (BK's tree reuse), up to :data:`BAND_GROWTH_PASSES` times. With the 10-neighbourhood the band re-cut has
    the in-plane diagonals too (as the full cut); the coarse levels, which only place
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
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import threading
from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterator, Optional, Sequence, Tuple

import maxflow
import numpy as np

from . import choices, runtime
from .cut_scaling import colour_features, scaled_to_contrast, scaled_to_objects, section_sharpness
from .errors import ScribbleSegError
from .resources import available_memory  # noqa: F401  (part of this module's API: the cut's budget)
from .progress import CancelToken, ProgressCallback, check, report, sub_progress
from .runtime import in_order, in_threads, slab_threads, slabs
from .stroke_pull import ImageMeasures, image_key, measure_ways, pulled_to_seeds

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
# Cauchy-Crofton weights of the 8-neighbourhood (Boykov & Kolmogorov, ICCV 2003): pi/8 for the axis pairs
# and pi/(8 sqrt 2) for the diagonals, then scaled so that an axis-aligned boundary costs what it costs
# on the 4-neighbourhood; a boundary at 45 degrees then costs its Euclidean length too (not sqrt 2 more).
_CROFTON_AXIS = (math.pi / 8) / (math.pi / 8 + 2 * math.pi / (8 * math.sqrt(2)))
_CROFTON_DIAGONAL = (math.pi / (8 * math.sqrt(2))) / (math.pi / 8 + 2 * math.pi / (8 * math.sqrt(2)))
#: In-plane diagonal offsets (dy, dx) of the 8-neighbourhood, each pair counted once.
_DIAGONALS = ((1, 1), (1, -1))

#: Bytes per voxel of a 6-connected ``Graph[float]`` sized up front: a 48 B node and six 32 B arcs
#: (BK maxflow 3.04 in PyMaxflow 1.3.2).  A whole full cut of 64x512x512 measured 249 B/voxel.
GRAPH_BYTES_PER_VOXEL = 240
#: Bytes per voxel of a full cut: the graph, int64 node ids and the uint8 labels.
FULL_CUT_BYTES_PER_VOXEL = GRAPH_BYTES_PER_VOXEL + 8 + 1
#: Bytes per band voxel of the band re-cut: the graph and node ids.
BAND_BYTES_PER_VOXEL = GRAPH_BYTES_PER_VOXEL + 16
#: Bytes per voxel that the in-plane diagonals add to a graph: two more pairs, four arcs of 32 B.
DIAGONAL_BYTES_PER_VOXEL = 128


def _band_bytes_per_voxel(neighbourhood: int) -> int:
    return BAND_BYTES_PER_VOXEL + (DIAGONAL_BYTES_PER_VOXEL if neighbourhood == 10 else 0)


def _band_cut_bytes(nodes: int, neighbourhood: int) -> int:
    """Memory of a band re-cut of ``nodes`` voxels."""
    return nodes * _band_bytes_per_voxel(neighbourhood) + WORKING_BYTES
#: Working memory of the slab- and chunk-wise computations, independent of the volume size (generous).
WORKING_BYTES = 256 * 2**20
#: Threads that weigh a band chunk's groups of pairs while the calling thread adds them to the graph.  Each holds
#: a group's weights and indices meanwhile (two raised the cut's peak at 100x512x512 by 0.04 GiB), and more would
#: mostly wait: at 100x512x512 the additions took 0.20-0.28 s of the 0.55 s (BENCHMARKS.md, "Interactive speed"
#: item 48).
BAND_WEIGHING_THREADS = 2
#: Half-width of the band re-cut around the coarse boundary, in full-resolution voxels along the finest
#: axis; along thick sections the band reaches as far in millimetres, in fewer sections (at least one
#: block beyond the boundary's).
BAND_RADIUS = 3
#: The same on a level of at most :data:`WIDE_BAND_MAX_VOXELS` voxels, which :data:`AUTO_FULL_MAX_VOXELS` no
#: longer cuts in full: there the wider band costs a tenth more than the narrow one and keeps the rounds' mean
#: IoU within 0.001 of the full cut's, where the narrow one lost up to 0.0034 (BENCHMARKS.md, "Interactive
#: speed", item 60); on larger levels its cost grows with the boundary's area (+30 % at 100x512x512).
WIDE_BAND_RADIUS = 5
#: A full-resolution level of at most this many voxels is small (:func:`_small_level`): the old limit of the
#: full cut (:data:`AUTO_FULL_MAX_VOXELS`), below which a warm cut also re-cuts larger bands.
WIDE_BAND_MAX_VOXELS = 2**23
#: The same for a coarse level cut coarse-to-fine (see :data:`COARSE_FULL_MAX_VOXELS`), in its own voxels:
#: what its band misses, the band of every level above misses too.
COARSE_BAND_RADIUS = 6
#: Extra band re-cuts, each around where the boundary reached the edge of the previous band.
BAND_GROWTH_PASSES = 8
#: Fraction of the voxels assumed to fall in the band when estimating memory ahead of a cut
#: (:func:`estimate_banded_cut_bytes`); a cut itself checks the band its coarse cut places.
ASSUMED_BAND_FRACTION = 0.15
#: ``mode="auto"`` cuts volumes up to this many voxels in full (if the budget allows): the exact optimum,
#: where a coarse-to-fine cut can miss parts of it away from the coarse boundary.  Above it the full graph
#: (about 480 bytes per voxel with the diagonals, :func:`estimate_full_cut_bytes`: 1 GB at this size) costs
#: more than its exactness buys: at 40x256x256 the coarse-to-fine cut (with :data:`WIDE_BAND_RADIUS`) took
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

_HEART, _BACKGROUND, _BOTH = 1, 2, 3  # seed codes; _BOTH marks coarse blocks holding both classes


def _axis_share(axis: int, diagonals: bool) -> float:
    """Factor of an axis pair's weight: its Cauchy-Crofton share in-plane when the diagonals are pairs too."""
    return _CROFTON_AXIS if diagonals and axis > 0 else 1.0


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


class _Level:
    """One resolution level of the cut: data term, seeds and pair weights.

    ``h`` (float, in [0, 1]) and ``seeds`` (seed codes; ``_BOTH``: no
    constraint) are C-contiguous ``(Z, Y, X)`` arrays; ``spacing`` is in mm,
    ``(z, y, x)``; ``max_weights`` bounds the pair weights per axis.
    Subclasses give the weights of the pairs ``(v, v + e_axis)``.

    With ``transform`` (the log data term), ``h`` is the probability and the
    data term is ``transform(h)``: :meth:`data` computes it slab by slab, and
    the whole array (:attr:`h`) is only made when a band re-cut reads it by
    voxel index -- after the coarse cut, whose graph is the peak memory --,
    into ``out`` when given (``h`` itself when ``h`` is a copy of the cut's own:
    the data term then takes the probability's place).
    """

    def __init__(self, h: np.ndarray, seeds: np.ndarray, spacing: Sequence[float],
                 max_weights: Sequence[float], transform=None, out: Optional[np.ndarray] = None) -> None:
        self._raw, self._transform, self._out = h, transform, out
        self._h = None if transform is not None else h
        self.seeds = seeds
        self.spacing = tuple(float(s) for s in spacing)
        self.max_weights = tuple(float(w) for w in max_weights)

    @property
    def h(self) -> np.ndarray:
        """The data term of every voxel (made on first use when there is a ``transform``)."""
        if self._h is None:
            self._h = self._transform(self._raw) if self._out is None else self._transform(self._raw, out=self._out)
        return self._h

    def data(self, z0: int, z1: int) -> np.ndarray:
        """The data term of planes ``z0:z1``."""
        return self._h[z0:z1] if self._h is not None else self._transform(self._raw[z0:z1])

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(int(n) for n in self._raw.shape)

    @property
    def size(self) -> int:
        """Number of voxels."""
        return int(self._raw.size)

    @property
    def seed_capacity(self) -> float:
        """A finite capacity larger than any voxel's data term plus all its pair weights."""
        return 2.0 * (1.0 + 2.0 * sum(self.max_weights))

    def forward_weights(self, axis: int, z0: int, z1: int, every: int = 1) -> np.ndarray:
        """float64 weights of the pairs ``(v, v + e_axis)`` for the voxels ``v`` of planes ``z0:z1``.

        With ``every > 1``, only the last ``v`` of each run of ``every`` voxels
        along ``axis`` (counted from ``z0`` along z): one entry per run, where the
        pair leaves the run.  The weight is zero where ``v + e_axis`` lies
        outside the volume or ``v`` itself does (a short last run).
        """
        raise NotImplementedError

    def _empty_forward(self, axis: int, z0: int, z1: int, every: int) -> Tuple[np.ndarray, int, int]:
        """Zeros shaped for :meth:`forward_weights`, the index of its first ``v`` along ``axis``
        and the number of pairs that exist."""
        begin, end = (z0, z1) if axis == 0 else (0, self.shape[axis])
        shape = [z1 - z0, self.shape[1], self.shape[2]]
        shape[axis] = -(-(end - begin) // every)
        # The second voxel of a z pair may lie in the plane after the slab.
        pairs = len(range(begin + every, min(end + 1, self.shape[axis]), every))
        return np.zeros(shape), begin + every - 1, pairs

    def voxel_data(self, v: np.ndarray):
        """What :meth:`pair_weights` needs about the voxels at flat indices ``v`` (or ``None``)."""
        return None

    def pair_weights(self, axis: int, v: np.ndarray, u: np.ndarray, data_v=None, data_u=None) -> np.ndarray:
        """float64 weights of the pairs of flat voxel indices ``v`` and ``u = v +- e_axis``.

        ``data_v`` and ``data_u``, if given, are their :meth:`voxel_data`.
        """
        raise NotImplementedError


def _strided(axis: int, start: int, count: int, every: int, z0: int, z1: int) -> tuple:
    """Index tuple of planes ``z0:z1`` taking ``count`` indices from ``start`` by ``every`` along ``axis``."""
    index = [slice(z0, z1), slice(None), slice(None)]
    index[axis] = slice(start, start + count * every, every)
    return tuple(index)


class _ImageLevel(_Level):
    """The full-resolution level: pair weights from the colour contrast of the image (eq. 6)."""

    def __init__(self, h: np.ndarray, colour: np.ndarray, seeds: np.ndarray, spacing: Sequence[float],
                 params: GraphCutParams, transform=None, out: Optional[np.ndarray] = None) -> None:
        self.colour = colour  # (Z, Y, X, C), uint8 (read as value / 255) or float
        self.luminance = params.colour == "luminance" and colour.shape[3] == 3
        self.params = params
        self.scale = tuple(min(spacing) / s for s in spacing)
        self._kept = threading.local()  # per thread: ``slab``, the planes of :meth:`_planes`
        #: Per section, the factor of ``1 / sigma^2`` (:func:`cut_scaling.section_sharpness`), or None: 1 everywhere.
        self.sharpness: Optional[np.ndarray] = None
        super().__init__(h, seeds, spacing, [params.gamma * (1.0 + params.delta) * s for s in self.scale], transform,
                         out)

    def _features(self, block: np.ndarray) -> np.ndarray:
        return colour_features(block, self.luminance)

    def _planes(self, z0: int, z1: int) -> np.ndarray:
        """The colour features of planes ``z0:z1``, from the slab kept by the last call where it holds them.

        A slab's pairs along three axes and two diagonals all read its features (the z pairs first,
        with the plane after the slab): converting the colour once per slab instead of twice per
        direction.  The rgb features are elementwise, so the weights are the same bit for bit (the
        luminance's per-pixel dot product to float32 rounding).
        """
        kept = getattr(self._kept, "slab", None)  # each thread's own: threads compute different slabs
        if kept is None or not kept[0] <= z0 <= z1 <= kept[1]:
            kept = self._kept.slab = (z0, z1, self._features(self.colour[z0:z1]))
        return kept[2][z0 - kept[0]:z1 - kept[0]]

    def _contrast(self, xa: np.ndarray, xb: np.ndarray, axis: int, sharpness: Optional[np.ndarray] = None
                  ) -> np.ndarray:
        """``gamma * s_axis * (exp(-k ||xa - xb||^2 / sigma^2) + delta)`` as float64, ``k`` the pairs'
        ``sharpness`` (broadcast against the pairs; None: 1)."""
        d = xa - xb
        d2 = np.einsum("...c,...c->...", d, d)  # several times faster than square().sum(-1) for 3 channels
        d2 *= np.float32(-1.0 / self.params.sigma ** 2)
        if sharpness is not None:
            d2 *= sharpness
        w = np.exp(d2, out=d2).astype(np.float64)
        w += self.params.delta
        w *= self.params.gamma * self.scale[axis]
        return w

    def forward_weights(self, axis: int, z0: int, z1: int, every: int = 1) -> np.ndarray:
        out, first, pairs = self._empty_forward(axis, z0, z1, every)
        if pairs:
            # Planes lo:hi hold both voxels of every pair; indices below are relative to lo.
            lo, hi = (first, first + (pairs - 1) * every + 2) if axis == 0 else (z0, z1)
            x = self._planes(lo, hi)
            start = 0 if axis == 0 else first
            x_first = x[_strided(axis, start, pairs, every, 0, hi - lo)]
            x_second = x[_strided(axis, start + 1, pairs, every, 0, hi - lo)]
            sharpness = None
            if self.sharpness is not None:  # one value per plane of pairs
                planes = np.arange(first, first + pairs * every, every) if axis == 0 else np.arange(z0, z1)
                sharpness = self._pair_sharpness(planes, planes + 1 if axis == 0 else planes)[:, None, None]
            out[_strided(axis, 0, pairs, 1, 0, z1 - z0)] = self._contrast(x_first, x_second, axis, sharpness)
        return out

    def _pair_sharpness(self, za: np.ndarray, zb: np.ndarray) -> np.ndarray:
        """The ``sharpness`` of pairs between sections ``za`` and ``zb``: the sharper section's, so that a pair
        across a blurred section and a sharp one is weighed as the sharp section's pairs are."""
        return np.minimum(self.sharpness[za], self.sharpness[zb])

    def diagonal_weights(self, dy: int, dx: int, z0: int, z1: int) -> np.ndarray:
        """float64 weights of the in-plane diagonal pairs ``(v, v + (0, dy, dx))`` for planes ``z0:z1``.

        Zero where the second voxel lies outside the section.  Cauchy-Crofton weighted
        (see :data:`NEIGHBOURHOODS`); the in-plane spacing is square, so ``scale`` is that of x.
        """
        _, Y, X = self.shape
        out = np.zeros((z1 - z0, Y, X))
        ys = slice(0, Y - dy)
        xa, xb = (slice(0, X - dx), slice(dx, X)) if dx > 0 else (slice(-dx, X), slice(0, X + dx))
        x = self._planes(z0, z1)
        first, second = x[:, ys, xa], x[:, slice(dy, Y), xb]
        sharpness = None if self.sharpness is None else self.sharpness[z0:z1, None, None]
        out[:, ys, xa] = self._contrast(first, second, 2, sharpness) * _CROFTON_DIAGONAL
        return out

    def voxel_data(self, v: np.ndarray) -> np.ndarray:
        return self._features(self.colour.reshape(-1, self.colour.shape[3])[v])

    def pair_weights(self, axis: int, v: np.ndarray, u: np.ndarray, data_v=None, data_u=None) -> np.ndarray:
        x_v = self.voxel_data(v) if data_v is None else data_v
        x_u = self.voxel_data(u) if data_u is None else data_u
        plane = self.shape[1] * self.shape[2]
        sharpness = None if self.sharpness is None else self._pair_sharpness(v // plane, u // plane)
        return self._contrast(x_v, x_u, axis, sharpness)


class _CoarseLevel(_Level):
    """A downsampled level whose pair weights are stored, one float32 array per axis."""

    def __init__(self, h: np.ndarray, seeds: np.ndarray, spacing: Sequence[float],
                 weights: Sequence[np.ndarray]) -> None:
        self.weights = tuple(weights)
        super().__init__(h, seeds, spacing, [float(w.max()) for w in weights])

    def forward_weights(self, axis: int, z0: int, z1: int, every: int = 1) -> np.ndarray:
        out, first, pairs = self._empty_forward(axis, z0, z1, every)
        out[_strided(axis, 0, pairs, 1, 0, z1 - z0)] = self.weights[axis][_strided(axis, first, pairs, every, z0, z1)]
        return out

    def pair_weights(self, axis: int, v: np.ndarray, u: np.ndarray, data_v=None, data_u=None) -> np.ndarray:
        return self.weights[axis].reshape(-1)[np.minimum(v, u)].astype(np.float64)


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
    labels = _cut_from_memory(level, memory, budget, progress, cancel, keep) if warm else \
        _solve(level, mode, budget, progress, cancel, weights, keep=keep, stored=stored)
    if memory is not None:
        memory.remember(level, labels, keep[0] if keep else None)
    report(progress, "graph cut", 1.0, "done")
    return labels


#: :meth:`CutMemory.scratch` keeps an array of the volume's size between cuts up to this size (134 M voxels; the
#: paper's 1/8 scale, 222 M, would keep 0.9 GB in a warm worker while the user paints).
SCRATCH_MAX_BYTES = 512 * 2**20

#: Part of the key of the coarse pair weights kept in a cache entry (:class:`feature_cache.CutWeights`): raised
#: when what they are computed from changes (the image the cut sees, the weights' formula), so that no set made
#: before is read.
CUT_WEIGHTS_VERSION = 1


class _StoredWeights:
    """The first coarse level's pair weights of a cut whose image has a store (:class:`feature_cache.CutWeights`):
    read from it when the cut gets to its coarse level (:meth:`take`; the cut alone then holds them, no longer
    than its coarse level), or kept in it once the cut has computed them (:meth:`computed`).
    """

    def __init__(self, store, key: str, shape: Tuple[int, int, int]) -> None:
        self.store, self.key, self.shape = store, key, shape

    @classmethod
    def of(cls, level: _ImageLevel, store, weights: Optional[dict]) -> Optional["_StoredWeights"]:
        """For a cut of ``level``; None where it has no coarse level or ``weights`` (a :class:`CutMemory`'s) holds
        its coarse level's already."""
        f = _coarsen_factors(level.shape, level.spacing)
        if max(f) == 1 or (weights is not None and level.shape in weights):
            return None
        p = level.params
        key = hashlib.sha256(repr((CUT_WEIGHTS_VERSION, level.shape, level.spacing, f, p.gamma, p.sigma, p.delta,
                                   p.colour, p.section_focus)).encode()).hexdigest()[:32]
        return cls(store, key, tuple(-(-n // k) for n, k in zip(level.shape, f)))

    def take(self, kept: bool) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The weights the store holds for this cut, or None; ``kept``: a :class:`CutMemory` keeps them after the
        cut (a copy), else they are memory-mapped (a re-run from the command line read 79 MB of them into fresh
        memory at 100x512x512, 0.6 s on a VM)."""
        return self.store.load(self.key, self.shape, mapped=not kept)

    def computed(self, weights: Sequence[np.ndarray]) -> None:
        """Keep the weights the cut computed because :meth:`take` found none."""
        self.store.save(self.key, weights)


#: A warm cut (:class:`CutMemory`) re-cuts the voxels whose data term ``h'`` moved by more than this
#: since the last cut (with a band as wide as a coarse-to-fine cut's around them, :func:`_level_band_steps`).
REUSE_DATA_CHANGE = 0.05
#: ... when the change is against the voxel's last label and leaves it within this of favouring the other.
REUSE_MARGIN = 0.1
#: Without a kept band graph (after a full cut), it re-cuts a new band unless the band would hold more than
#: this fraction of the volume's blocks: then it cuts from scratch (with the kept coarse weights).  A band
#: re-cut costs several times more per voxel than a grid cut, and its max-flow grows faster than the band:
#: on a 100x512x512 phantom a band of 4.3% of the volume (the last boundary alone, 1.1 M voxels) took 10.2 s
#: where the cut from scratch, whose full-resolution band holds 0.69 M voxels, took 8.3 s (BENCHMARKS.md,
#: "Interactive speed", item 19).
REUSE_MAX_BAND = 0.025
#: The same limit on a small volume (cut in full, or of up to :data:`WIDE_BAND_MAX_VOXELS` voxels): its cut
#: from scratch saves little on a coarse level, so a band up to this fraction is still cheaper (40x256x256:
#: 0.4 s from the last labels, 1.0 s from scratch; BENCHMARKS.md).  It also bounds the kept graph of such a
#: volume (in place of :data:`REUSE_MAX_REGION`): a coarse-to-fine cut's band is a large share of a small
#: volume, and refusing it made each warm cut of 40x256x256 a cut from scratch ("Interactive speed", item 60).
REUSE_MAX_BAND_FULL = 0.3
#: A warm cut grows the last cut's band graph (:class:`_Region`) by the blocks around what changed outside
#: it, as long as the graph then holds at most this fraction of the volume's blocks (on a small volume,
#: :data:`REUSE_MAX_BAND_FULL`); beyond, a cut from scratch starts a smaller one.
#: The graph stays in memory between cuts (about 370 bytes per voxel with the diagonals): at 100x512x512 this
#: bounds it to about 0.6 GiB, where one warm cut after new strokes grew it from 2.8% to 3.9%
#: (BENCHMARKS.md, "Interactive speed", item 20).
REUSE_MAX_REGION = 0.06
#: ... and at most this many bytes of graph, which stay in memory between cuts (a paper-scale stack's band
#: would otherwise hold several GiB while the adaptation runs): a bigger band's graph is not kept.
REUSE_MAX_REGION_BYTES = 2**30


class CutMemory:
    """What a cut leaves for the next cut of the same image: coarse pair weights, labels, data term, seeds,
    and the graph of its full-resolution band.

    A warm session (:class:`ScribbleSegLib.session.Session`) keeps one.  The pair
    weights of the coarse levels of a coarse-to-fine cut depend only on the image,
    the spacing and the parameters: they are kept and reused as they are (the cut
    is the same, without recomputing the colour contrasts of every voxel pair).
    The next :func:`graph_cut` with it starts from the last labels and re-cuts at full
    resolution, with everything else fixed, the blocks within the band's radius (:func:`_level_band_steps`)
    of the last boundary, of voxels whose data term ``h'`` moved by more than
    :data:`REUSE_DATA_CHANGE` against their last label (and now favour the other label, or
    nearly: :data:`REUSE_MARGIN`), and of seeds against the last label or taken away (a seed
    on a voxel of its own label, or a data term that moved towards the label, cannot make
    the last labels worse than another labelling).  Where the new boundary reaches the edge
    of that band it grows, as in the banded cut (:data:`BAND_GROWTH_PASSES`).

    The band's graph (:class:`_Region`) is kept, solved, from one cut to the next: the
    next cut gives its voxels the new data term and seeds, adds the blocks around what
    changed outside it, and runs BK's max-flow from the last flow and search trees
    (Kohli and Torr 2005), so that only the change costs.  A cut from scratch (the first,
    or one whose band would exceed :data:`REUSE_MAX_REGION` of the volume, or
    :data:`REUSE_MAX_BAND_FULL` on a small volume) keeps its
    own full-resolution band's graph; none over :data:`REUSE_MAX_REGION_BYTES` is kept.  Like
    the banded cut this can miss parts of the optimum that move further than the band in
    one piece without touching its edge.  On
    the 100x512x512 benchmark volume the warm cut's energy lies 0.2 % above the optimum's, the
    coarse-to-fine cut's from scratch 0.05 %, and the two cuts' labels agree to Dice 0.992
    (BENCHMARKS.md, "Interactive speed", item 69).  It holds
    2 bytes per voxel (labels with seeds, and the data term in steps of 1/250), 4 more for the array a cut
    writes its data term into (:meth:`scratch`), 12 bytes
    per coarse voxel for the weights, and the band's graph (about 300-400 bytes per band
    voxel, :func:`_band_cut_bytes`).  Its :class:`stroke_pull.ImageMeasures` keep the image's contrast, the colour
    gradients of the stroked sections and the stroke pull's ways through them from one run to the next.

    Examples
    --------
    >>> memory = CutMemory()
    >>> memory.labels is None, memory.holds_labels
    (True, False)

    A cut with it leaves its labels and seeds (1 heart, 2 background) for the next:

    >>> h = np.full((2, 8, 8), 0.2, np.float32); h[:, 2:6, 2:6] = 0.8
    >>> image = np.full((2, 8, 8, 3), 200, np.uint8); image[:, 2:6, 2:6] = 90
    >>> scribbles = np.zeros((2, 8, 8), np.uint8); scribbles[0, 3, 3] = 1; scribbles[0, 0, 0] = 2
    >>> labels = graph_cut(h, image, scribbles, memory=memory)
    >>> memory.holds_labels, bool((memory.labels == labels).all())
    (True, True)
    >>> memory.seeds[0, 3, 3].item(), memory.seeds[0, 0, 0].item()
    (1, 2)
    """

    #: The data term is kept as ``round(h' * DATA_STEPS)`` in uint8: a step of 0.004, well below
    #: :data:`REUSE_DATA_CHANGE`, in a quarter of float32's memory.
    DATA_STEPS = 250

    def __init__(self) -> None:
        self.key: Optional[tuple] = None
        self._packed: Optional[np.ndarray] = None  # uint8: label in bit 0, seed code in bits 1-2
        self.data: Optional[np.ndarray] = None  # uint8 h' of the last cut, see DATA_STEPS
        self.coarse_weights: dict = {}  # level shape -> its coarse level's pair weights
        self.region: Optional[_Region] = None  # the last cut's full-resolution band graph, solved
        self.measures = ImageMeasures()  # the image's contrast and section gradients: they outlive the cut
        self._scratch: Optional[np.ndarray] = None  # float32, the volume's shape: see scratch()
        # Counts the cuts begun on this memory (a cut may change its band graph before it ends): a warm session
        # keeps its last result for a repeated run only while no cut has touched the memory since.
        self.generation = 0

    @property
    def labels(self) -> Optional[np.ndarray]:
        """The last cut's labels (uint8, 1 heart), or None."""
        return None if self._packed is None else self._packed & np.uint8(1)

    @property
    def holds_labels(self) -> bool:
        """Whether a last cut's labels are kept (:attr:`labels` unpacks them into a new array)."""
        return self._packed is not None

    @property
    def seeds(self) -> Optional[np.ndarray]:
        """The last cut's seed codes (uint8), or None."""
        return None if self._packed is None else self._packed >> np.uint8(1)

    def data_term(self, z0: int, z1: int) -> np.ndarray:
        """float32 data term ``h'`` of planes ``z0:z1`` of the last cut.

        Examples
        --------
        >>> h = np.full((2, 8, 8), 0.2, np.float32); h[:, 2:6, 2:6] = 0.8
        >>> image = np.full((2, 8, 8, 3), 200, np.uint8); image[:, 2:6, 2:6] = 90
        >>> scribbles = np.zeros((2, 8, 8), np.uint8); scribbles[0, 3, 3] = 1; scribbles[0, 0, 0] = 2
        >>> memory = CutMemory()
        >>> _ = graph_cut(h, image, scribbles, memory=memory)
        >>> part = memory.data_term(1, 2)
        >>> part.shape, part.dtype, bool(0 <= part.min() <= part.max() <= 1)
        ((1, 8, 8), dtype('float32'), True)
        """
        return self.data[z0:z1].astype(np.float32) * np.float32(1.0 / self.DATA_STEPS)

    def scratch(self, shape: Sequence[int]) -> Optional[np.ndarray]:
        """A float32 C-contiguous array of ``shape`` for a cut's pulled probability and data term, the same from
        cut to cut: each warm run would otherwise ask the system for a volume's worth of new memory, which
        costs from 0.1 to 0.5 s at 100x512x512 on the virtual machines of BENCHMARKS.md ("Interactive
        speed", item 63).  Its values are the last cut's until the next cut overwrites them.  None for a volume
        of more than :data:`SCRATCH_MAX_BYTES`: a warm worker would hold that much between runs.

        Examples
        --------
        >>> memory = CutMemory()
        >>> a = memory.scratch((2, 8, 8))
        >>> a.dtype, memory.scratch((2, 8, 8)) is a, memory.scratch((1000, 1000, 1000))  # 4 GB: too large
        (dtype('float32'), True, None)
        """
        shape = tuple(int(n) for n in shape)
        if self._scratch is None or self._scratch.shape != shape:
            self._scratch = None  # the old one goes before the new one is made
            if 4 * math.prod(shape) <= SCRATCH_MAX_BYTES:
                self._scratch = np.empty(shape, np.float32)
        return self._scratch

    def clear(self) -> None:
        """Forget the last cut: the next one starts from scratch.

        Examples
        --------
        >>> h = np.full((2, 8, 8), 0.2, np.float32); h[:, 2:6, 2:6] = 0.8
        >>> image = np.full((2, 8, 8, 3), 200, np.uint8); image[:, 2:6, 2:6] = 90
        >>> scribbles = np.zeros((2, 8, 8), np.uint8); scribbles[0, 3, 3] = 1; scribbles[0, 0, 0] = 2
        >>> memory = CutMemory()
        >>> _ = graph_cut(h, image, scribbles, memory=memory)
        >>> memory.clear()
        >>> memory.holds_labels, memory.key, memory.coarse_weights
        (False, None, {})
        """
        self.key = self._packed = self.data = self.region = None
        self.coarse_weights = {}

    def forget_labels(self) -> None:
        """Forget the last cut's labels and band, keep what depends on the image alone: the next cut starts
        from scratch, with the same labels as without a memory, but skips the coarse levels' weights.

        Examples
        --------
        >>> memory = CutMemory()
        >>> memory.coarse_weights[(2, 2, 2)] = "weights"
        >>> memory.forget_labels()
        >>> memory.labels is None, list(memory.coarse_weights)
        (True, [(2, 2, 2)])
        """
        self._packed = self.data = self.region = None

    @staticmethod
    def _key(level: "_ImageLevel", image: np.ndarray, mode: str) -> tuple:
        return (level.shape, level.spacing, level.params, mode) + image_key(image)

    def follow(self, level: "_ImageLevel", image: np.ndarray, mode: str) -> None:
        """Get ready for a cut of ``image``: forget everything if the last cut was of another image or
        with other parameters.

        Examples
        --------
        :func:`graph_cut` calls it; a cut of another image starts over:

        >>> h = np.full((2, 8, 8), 0.2, np.float32); h[:, 2:6, 2:6] = 0.8
        >>> image = np.full((2, 8, 8, 3), 200, np.uint8); image[:, 2:6, 2:6] = 90
        >>> scribbles = np.zeros((2, 8, 8), np.uint8); scribbles[0, 3, 3] = 1; scribbles[0, 0, 0] = 2
        >>> memory = CutMemory()
        >>> _ = graph_cut(h, image, scribbles, memory=memory)
        >>> key = memory.key
        >>> _ = graph_cut(h, image, scribbles, memory=memory)
        >>> memory.key == key
        True
        >>> image[1] = 150
        >>> _ = graph_cut(h, image, scribbles, memory=memory)
        >>> memory.key == key
        False
        """
        key = self._key(level, image, mode)
        if key != self.key:
            self.clear()
            self.key = key

    def remember(self, level: "_ImageLevel", labels: np.ndarray, region: Optional["_Region"] = None) -> None:
        """Keep this cut's labels, data term and seeds for the next, and the graph of its full-resolution band
        (unless it holds more than :data:`REUSE_MAX_REGION_BYTES`).

        Examples
        --------
        :func:`graph_cut` calls it; the data term is kept in uint8 steps of ``1 / DATA_STEPS``:

        >>> h = np.full((2, 8, 8), 0.2, np.float32); h[:, 2:6, 2:6] = 0.8
        >>> image = np.full((2, 8, 8, 3), 200, np.uint8); image[:, 2:6, 2:6] = 90
        >>> scribbles = np.zeros((2, 8, 8), np.uint8); scribbles[0, 3, 3] = 1; scribbles[0, 0, 0] = 2
        >>> memory = CutMemory()
        >>> _ = graph_cut(h, image, scribbles, memory=memory)
        >>> memory.data.dtype, bool(memory.data.max() <= CutMemory.DATA_STEPS), memory.holds_labels
        (dtype('uint8'), True, True)
        """
        self.region = region if region is not None and region.graph_bytes() <= REUSE_MAX_REGION_BYTES else None
        # Into the last cut's arrays where they fit (read before this, and handed out only as copies): no new memory.
        if self._packed is None or self._packed.shape != level.shape:
            self._packed = np.empty(level.shape, np.uint8)
            self.data = np.empty(level.shape, np.uint8)

        def slab(z0: int, z1: int) -> None:
            self._packed[z0:z1] = (labels[z0:z1] != 0) | (level.seeds[z0:z1] << np.uint8(1))
            self.data[z0:z1] = np.rint(level.data(z0, z1) * self.DATA_STEPS)

        in_threads(slab, list(slabs(level.shape[0], level.shape[1] * level.shape[2])))


def _changed_blocks(level: _Level, memory: CutMemory, labels: np.ndarray, f: Sequence[int],
                    boundary: bool = True) -> np.ndarray:
    """Blocks of ``f`` voxels holding the last boundary (unless not ``boundary``), a data term moved against
    the last label (``labels``: :attr:`CutMemory.labels`), a seed against it or a seed taken away."""
    shape = level.shape
    coarse_shape = tuple(-(-n // k) for n, k in zip(shape, f))
    blocks = np.zeros(coarse_shape, bool)

    def slab(z0: int, z1: int) -> None:
        if boundary:
            # One plane more each way, for the pairs across the slab's faces.
            a0, a1 = max(0, z0 - 1), min(shape[0], z1 + 1)
            part = labels[a0:a1]
            edge = np.zeros(part.shape, bool)
            for axis in range(3):
                lo, hi = _pair_slices(axis)
                change = part[lo] != part[hi]
                edge[lo] |= change
                edge[hi] |= change
            mask = edge[z0 - a0: z0 - a0 + (z1 - z0)]
        else:
            mask = np.zeros((z1 - z0,) + shape[1:], bool)
        # Only a data term that moved against the last label and now favours the other label, or nearly,
        # can make voxels flip: one that moved towards its label, or still clearly favours it, cannot
        # lower the energy by flipping (flipping also costs boundary).
        new, old = level.data(z0, z1), memory.data_term(z0, z1)
        heart = labels[z0:z1] == 1
        against = np.where(heart, old - new, new - old) > REUSE_DATA_CHANGE
        against &= np.where(heart, new < 0.5 + REUSE_MARGIN, new > 0.5 - REUSE_MARGIN)
        mask |= against
        # Likewise a new seed on a voxel of its own label cannot move anything (the last labels already meet it):
        # only a seed against the last label, or one taken away, can.
        seeds, last_seeds = level.seeds[z0:z1], memory._packed[z0:z1] >> np.uint8(1)
        mask |= (seeds == _HEART) & ~heart
        mask |= (seeds == _BACKGROUND) & heart
        mask |= (seeds == 0) & (last_seeds != 0)
        blocks[z0 // f[0]: -(-z1 // f[0])] |= _block_reduce(mask, f, "or").astype(bool)

    # Slabs start at multiples of f[0], so each writes its own blocks; numpy's passes release Python's lock.
    in_threads(slab, list(slabs(shape[0], shape[1] * shape[2], f[0])))
    return blocks


def _cut_from_memory(level: _ImageLevel, memory: CutMemory, budget: int, progress: Optional[ProgressCallback],
                     cancel: Optional[CancelToken], keep: list) -> np.ndarray:
    """The cut of ``level`` started from the last cut in ``memory`` (see :class:`CutMemory`); the graph
    it leaves is appended to ``keep``."""
    name = _fmt_shape(level.shape)
    f = _coarsen_factors(level.shape, level.spacing)
    if max(f) == 1:  # a volume too thin to group into blocks: cut it whole
        return _solve(level, "full", budget, progress, cancel)
    # Detached until this cut ends: a cut that fails or is cancelled half-way leaves no graph behind.
    region, memory.region = memory.region, None
    report(progress, "graph cut", 0.0, f"{name}: starting from the last cut")
    level.h  # the data term of every voxel, made once: the band's graph and the checks below all read it
    # With a kept graph, the last boundary lies inside it, but where its growth passes ran out (``pending``).
    labels = memory.labels  # a new array (unpacked), which the re-cut below changes in place
    changed = _changed_blocks(level, memory, labels, f, boundary=region is None)
    if region is not None and region.pending is not None:
        changed |= region.pending
    steps = _level_band_steps(level, f)
    mode = memory.key[3]
    full = mode == "full" or (mode == "auto" and _auto_cuts_full(level.shape, level.spacing, budget,
                                                                  _neighbourhood(level)))
    # A small volume's cut from scratch saves little on a coarse level: a larger band is still cheaper.
    small = full or _small_level(level.shape)
    if region is not None:
        # Only what changed outside the graph is new to it; inside, the new data term and seeds go in.
        band = _grow(changed & ~region.band.mask, steps) & ~region.band.mask
        added = int(np.count_nonzero(band))
        limit = REUSE_MAX_BAND_FULL if small else REUSE_MAX_REGION
        if (region.band.blocks.size + added <= limit * band.size and region.bytes_with(added) <= budget
                and region.graph_bytes(added) <= REUSE_MAX_REGION_BYTES):
            if region.neighbourhood != _neighbourhood(level):  # the last cut dropped the diagonals: as it did
                level.params = dataclasses.replace(level.params, neighbourhood=region.neighbourhood)
            region.refresh(level, cancel)
            keep.append(_recut_until_settled(level, labels, band, f, budget, progress, 0.0, 1.0, cancel, region))
            return labels
        del region  # the graph would grow too big: its memory goes before the cut from scratch
    else:
        band = _grow(changed, steps)
        if np.count_nonzero(band) <= (REUSE_MAX_BAND_FULL if small else REUSE_MAX_BAND) * band.size:
            keep.append(_recut_until_settled(level, labels, band, f, budget, progress, 0.0, 1.0, cancel))
            return labels
    # Most of the volume changed: a cut from scratch is then cheaper than a band this big.
    del labels
    return _solve(level, mode, budget, progress, cancel, memory.coarse_weights, keep=keep)


def _recut_until_settled(level: "_Level", labels: np.ndarray, band: np.ndarray, f, budget: int,
                         progress: Optional[ProgressCallback], low: float, high: float,
                         cancel: Optional[CancelToken], region: Optional[_Region] = None) -> _Region:
    """Re-cut ``band`` of ``labels`` in place, the rest fixed; where the new boundary reaches the band's edge,
    grow the band there and re-cut again (:data:`BAND_GROWTH_PASSES` times at most), on one graph.
    ``region``: a graph kept from an earlier cut of the same level (refreshed by the caller) to grow
    instead of a new one.  Progress runs from ``low`` to ``high``.  Returns the graph."""
    name = _fmt_shape(level.shape)
    if region is None:
        blocks = int(np.count_nonzero(band))
        nodes = blocks * int(np.prod(f))
        if _neighbourhood(level) == 10 and _band_cut_bytes(nodes, 10) > budget:
            # Decided once, on the band the coarse cut placed: every pass then minimises the same energy.
            # The 6-neighbourhood gives the same kind of result, with blockier in-plane outlines.
            _log.info("graph cut: the band of %d voxels of %s with in-plane diagonals needs about %s (budget %s); "
                      "using the 6-neighbourhood", nodes, name, _fmt_bytes(_band_cut_bytes(nodes, 10)),
                      _fmt_bytes(budget))
            level.params = dataclasses.replace(level.params, neighbourhood=6)
        region = _Region(level, f, budget, nodes)
    passes = 1 + BAND_GROWTH_PASSES
    for band_pass in range(passes):
        start = low + (high - low) * band_pass / passes
        report(progress, "graph cut", start, f"{name}: building the band's graph")
        region.add(level, labels, band, cancel)
        report(progress, "graph cut", start + 0.5 * (high - low) / passes,
               f"{name}: band of {region.nodes} voxels, max-flow")
        contact = region.solve(labels, cancel)
        region.pending = contact if contact.any() else None
        if region.pending is None:
            break
        # The boundary reached voxels no band held yet: re-cut around there too.
        band = _grow(contact, _level_band_steps(level, f))
    report(progress, "graph cut", high, f"{name}: band done")
    return region


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
    placed it (:func:`_recut_until_settled`)."""
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


def _fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(n) for n in shape)


def _fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


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
    appends its full-resolution band's graph (:class:`_Region`) to, for the next cut to grow.  ``stored``: where
    ``level``'s coarse pair weights are read from or kept (:class:`_StoredWeights`).
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


def _coarsen_factors(shape: Sequence[int], spacing: Sequence[float]) -> Tuple[int, int, int]:
    """Halve the axes whose spacing is within 1.5x of the finest, so thick sections stay whole."""
    finest = min(spacing)
    return tuple(2 if n >= 2 and s <= 1.5 * finest else 1 for n, s in zip(shape, spacing))


def _neighbourhood(level: "_Level") -> int:
    """6 or 10: the in-plane diagonals are pairs of the full-resolution level only (coarse levels have 6)."""
    return getattr(getattr(level, "params", None), "neighbourhood", 6)


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


def _pair_slices(axis: int) -> Tuple[tuple, tuple]:
    """Index tuples selecting the first and the second voxel of every pair along ``axis``."""
    lo, hi = [slice(None)] * 3, [slice(None)] * 3
    lo[axis], hi[axis] = slice(0, -1), slice(1, None)
    return tuple(lo), tuple(hi)


def _forward_structure(axis: int) -> np.ndarray:
    """A 3x3x3 structure linking each node to its next neighbour along ``axis``."""
    structure = np.zeros((3, 3, 3))
    centre = [1, 1, 1]
    centre[axis] = 2
    structure[tuple(centre)] = 1.0
    return structure


def _unary(h: np.ndarray, seeds: np.ndarray, capacity: float) -> Tuple[np.ndarray, np.ndarray]:
    """Source (cost of label 1) and sink (cost of label 0) capacities with the seeds added."""
    sink = h.astype(np.float64)
    source = 1.0 - sink
    sink[seeds == _HEART] += capacity
    source[seeds == _BACKGROUND] += capacity
    return source, sink


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


def _block_reduce(a: np.ndarray, f: Sequence[int], how: str) -> np.ndarray:
    """Combine the ``f[0] x f[1] x f[2]`` blocks of ``a``: ``mean`` (float32, edge-padded),
    ``sum`` or ``or`` (zero-padded)."""
    if how == "mean":
        a = a.astype(np.float32, copy=False)
    combine = np.bitwise_or if how == "or" else np.add
    for axis, k in enumerate(f):
        if k == 1:
            continue
        if a.shape[axis] % k:
            pad = [(0, 0)] * a.ndim
            pad[axis] = (0, -a.shape[axis] % k)
            a = np.pad(a, pad, mode="edge" if how == "mean" else "constant")
        parts = [a[(slice(None),) * axis + (slice(i, None, k),)] for i in range(k)]
        a = combine(parts[0], parts[1])
        for part in parts[2:]:
            combine(a, part, out=a)
    if how == "mean":
        a = a * np.float32(1.0 / np.prod(f))
    return a


def _downsample(level: _Level, f: Tuple[int, int, int], cancel: Optional[CancelToken],
                weights: Optional[Sequence[np.ndarray]] = None) -> _CoarseLevel:
    """``level`` on ``f`` blocks, with the energy of ``level`` restricted to block-constant labels.

    ``weights``: the coarse pair weights of an earlier call on the same image (they depend on
    nothing else), used instead of being computed again.

    On block-constant labels the data term of a block of ``n`` voxels is
    ``n |l - mean(h)|``, and the pair term across a block face is the sum of the
    fine pair weights crossing it.  Dividing both by ``n`` gives the coarse
    energy: its minimum is the best block-constant labelling of the fine energy
    (exactly so away from the blocks that the volume's edge cuts off).
    """
    coarse_shape = tuple(-(-n // k) for n, k in zip(level.shape, f))
    h = np.empty(coarse_shape, np.float32)
    seeds = np.empty(coarse_shape, np.uint8)
    known = weights is not None
    weights = list(weights) if known else [np.empty(coarse_shape, np.float32) for _ in range(3)]
    def slab(z0: int, z1: int) -> None:
        check(cancel)
        c0, c1 = z0 // f[0], -(-z1 // f[0])
        h[c0:c1] = _block_reduce(level.data(z0, z1), f, "mean")
        seeds[c0:c1] = _block_reduce(level.seeds[z0:z1], f, "or")
        for axis in range(0 if known else 3):
            # The pairs that leave each block through its far face along the axis.
            faces = level.forward_weights(axis, z0, z1, every=f[axis])
            across = tuple(1 if a == axis else k for a, k in enumerate(f))
            weights[axis][c0:c1] = _block_reduce(faces, across, "sum") / np.prod(f)

    in_threads(slab, list(slabs(level.shape[0], level.shape[1] * level.shape[2], f[0])))
    return _CoarseLevel(h, seeds, tuple(s * k for s, k in zip(level.spacing, f)), weights)


def _shift_or(mask: np.ndarray, axis: int) -> np.ndarray:
    """``mask`` grown by one voxel both ways along ``axis``."""
    lo, hi = _pair_slices(axis)
    out = mask.copy()
    out[lo] |= mask[hi]
    out[hi] |= mask[lo]
    return out


def _grow(mask: np.ndarray, steps: Sequence[int]) -> np.ndarray:
    """``mask`` grown by ``steps[a]`` voxels both ways along each axis ``a`` (a box)."""
    for axis, n in enumerate(steps):
        for _ in range(n):
            mask = _shift_or(mask, axis)
    return mask


def _band_steps(f: Sequence[int], radius: int, spacing: Optional[Sequence[float]] = None) -> list:
    """Blocks of ``f`` voxels to grow a band by, per axis, so that it reaches ``radius`` voxels further.

    With ``spacing``, ``radius`` counts voxels of the finest axis and the band reaches as far in
    millimetres along the others (``radius * min(spacing) / spacing_a`` voxels along axis ``a``),
    but at least one block beyond the blocks at the boundary.

    Examples
    --------
    >>> _band_steps((2, 2, 2), 6)
    [3, 3, 3]
    >>> _band_steps((1, 2, 2), 3, (0.015, 0.0075, 0.0075))  # sections twice as thick as the pixels
    [2, 2, 2]
    """
    if spacing is None:
        return [-(-radius // k) for k in f]
    finest = min(spacing)
    # The tolerance keeps a reach of exactly n voxels from rounding up to n + 1 blocks' worth.
    return [max(2, math.ceil(radius * finest / s / k - 1e-6)) for k, s in zip(f, spacing)]


def _level_band_steps(level: _Level, f: Sequence[int]) -> list:
    """:func:`_band_steps` of a level's band: :data:`BAND_RADIUS` at full resolution (:data:`WIDE_BAND_RADIUS`
    up to :data:`WIDE_BAND_MAX_VOXELS` voxels), as far in millimetres along thick sections;
    :data:`COARSE_BAND_RADIUS` voxels along every axis at a coarse level, whose band places every band above it
    (narrowing it along thick sections cost energy there: BENCHMARKS.md, "Interactive speed" item 18)."""
    if isinstance(level, _CoarseLevel):
        return _band_steps(f, COARSE_BAND_RADIUS)
    return _band_steps(f, WIDE_BAND_RADIUS if _small_level(level.shape) else BAND_RADIUS, level.spacing)


def _small_level(shape: Sequence[int]) -> bool:
    """Whether a full-resolution level of ``shape`` has at most :data:`WIDE_BAND_MAX_VOXELS` voxels."""
    return int(np.prod(shape, dtype=np.int64)) <= WIDE_BAND_MAX_VOXELS


def _coarse_band(labels: np.ndarray, seeds: np.ndarray, steps: Sequence[int]) -> np.ndarray:
    """Coarse blocks whose finer voxels are re-cut.

    Blocks next to a label change hold the fine voxels within one block of
    the boundary; growing them by ``steps[a] - 1`` blocks along axis ``a``
    (:func:`_band_steps`) widens that to the band's radius.  Blocks with both
    scribble classes are added, so that every scribble can be honoured.
    """
    band = seeds == _BOTH
    for axis in range(3):
        lo, hi = _pair_slices(axis)
        change = labels[lo] != labels[hi]
        band[lo] |= change
        band[hi] |= change
    return _grow(band, [n - 1 for n in steps])


#: A coarse cut has dropped the heart (:func:`_heart_dropped_at_strokes`) when what it left out around the heart
#: strokes is more than this many times all the heart it kept.
COARSE_DROP_RATIO = 1.0
#: The most steps of one block :func:`_heart_dropped_at_strokes` follows from the heart strokes.
COARSE_DROP_MAX_STEPS = 256


def _heart_dropped_at_strokes(labels: np.ndarray, h: np.ndarray, seeds: np.ndarray) -> Optional[np.ndarray]:
    """The coarse blocks of a heart the coarse cut dropped around its own strokes, or None where it did not.

    The blocks are those whose data term favours heart, that the coarse cut labelled background, and that connect
    (through such blocks, each touching the next at a face, an edge or a corner) to a block with heart strokes. A
    coarse level prices an outline at its block faces, not at the image edges the fine outline follows: with a
    strong boundary term (twice the default ``gamma``) it dropped whole hearts around their strokes that the full
    cut keeps (BENCHMARKS.md, "Interactive speed", item 61). Only where those blocks outnumber the heart it kept
    (:data:`COARSE_DROP_RATIO`) are they returned, for the band, so that the fine cut decides them; smaller trims
    stay as the coarse cut made them, as they are with the default ``gamma`` on the bench's volumes.

    Examples
    --------
    >>> labels = np.array([1, 0, 0, 0, 0, 0], np.uint8).reshape(1, 1, 6)  # the cut kept only the stroked block
    >>> h = np.array([0.9, 0.9, 0.9, 0.2, 0.9, 0.9], np.float32).reshape(1, 1, 6)
    >>> seeds = np.array([_HEART, 0, 0, 0, 0, 0], np.uint8).reshape(1, 1, 6)
    >>> _heart_dropped_at_strokes(labels, h, seeds).ravel().astype(int).tolist()  # the blob past the gap stays
    [0, 1, 1, 0, 0, 0]
    >>> _heart_dropped_at_strokes(np.array([1, 1, 1, 0, 0, 0], np.uint8).reshape(1, 1, 6), h, seeds) is None
    True
    """
    kept = np.count_nonzero(labels)
    candidates = (h > 0.5) & (labels == 0)
    reached = (seeds & _HEART) != 0
    if np.count_nonzero(candidates) <= COARSE_DROP_RATIO * kept or not reached.any():
        return None
    left_out = np.zeros(labels.shape, bool)
    for _ in range(COARSE_DROP_MAX_STEPS):
        reached = _grow(reached, (1, 1, 1)) & candidates & ~left_out
        if not reached.any():
            break
        left_out |= reached
    return left_out if np.count_nonzero(left_out) > COARSE_DROP_RATIO * kept else None


def _pieces_dropped_apart(labels: np.ndarray, h: np.ndarray) -> Optional[np.ndarray]:
    """The coarse blocks of pieces that the data term calls heart, that the coarse cut left out, and that touch no
    block it kept (a piece: blocks each touching the next at a face, an edge or a corner); None without any.

    A coarse level prices an outline at its block faces, not at the edges the fine outline follows, so it drops
    a piece of tissue apart from the rest that the full cut keeps: on ``benchmarks/bench_graphcut.py --pieces``
    a disc of radius 4-16 px with ``h`` 0.7-0.9 beside a stroked one, on every section (BENCHMARKS.md, "3D graph
    cut: full vs coarse-to-fine banded").  Such a piece lies away from the coarse boundary, so no band reached it;
    in the band, the fine cut decides it as the full cut would.  Pieces joined to kept heart are left as the coarse
    cut made them: where a network over-segments, the heart it adds lies next to the heart, and re-cutting it
    there cost the bench's validation (BENCHMARKS.md, "Interactive speed", item 61).

    Examples
    --------
    >>> labels = np.array([1, 1, 0, 0, 0, 0, 0], np.uint8).reshape(1, 1, 7)
    >>> h = np.array([0.9, 0.9, 0.8, 0.2, 0.9, 0.9, 0.2], np.float32).reshape(1, 1, 7)
    >>> _pieces_dropped_apart(labels, h).ravel().astype(int).tolist()  # not the block next to the kept heart
    [0, 0, 0, 0, 1, 1, 0]
    >>> _pieces_dropped_apart(labels, np.where(h > 0.5, 0.2, h).astype(np.float32)) is None
    True
    """
    import SimpleITK as sitk  # only here: a cut without such pieces does not need it

    left_out = (h > 0.5) & (labels == 0)
    if not left_out.any():
        return None
    pieces = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(left_out.view(np.uint8)), True))
    touching = np.unique(pieces[_grow(labels > 0, (1, 1, 1)) & left_out])
    apart = left_out & ~np.isin(pieces, touching)
    return apart if apart.any() else None


def _upsample(coarse: np.ndarray, f: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    out = np.empty(tuple(shape), np.uint8)
    for z0, z1 in slabs(shape[0], shape[1] * shape[2], f[0]):
        block = coarse[z0 // f[0]: -(-z1 // f[0])].repeat(f[0], 0).repeat(f[1], 1).repeat(f[2], 2)
        out[z0:z1] = block[: z1 - z0, : shape[1], : shape[2]]
    return out


class _Band:
    """The full-resolution voxels of a growing set of coarse blocks, numbered as graph nodes.

    Node ``rank * P + local`` is the voxel at C-order position ``local`` inside
    the ``rank``-th block added, ``P`` being the voxels per block; the nodes of
    voxels that a block at the volume's edge lacks exist but stay unconnected.
    """

    def __init__(self, mask: np.ndarray, f: Sequence[int], shape: Sequence[int]) -> None:
        self.f, self.shape = tuple(f), tuple(shape)
        self.mask = np.zeros(mask.shape, bool)
        self.blocks = np.empty(0, np.int64)
        # Each block's rank plus one (0: not in the band), in zeros the system hands out untouched: only the pages
        # of the band's blocks are ever written, where a filled array would touch the whole grid (52 MB of int64
        # at 100x512x512, 0.2-0.5 s of fresh memory on the virtual machines of BENCHMARKS.md, item 63).
        self._rank1 = np.zeros(mask.size, np.int32)
        self.per_block = int(np.prod(self.f))
        self.extend(mask)

    @property
    def nodes(self) -> int:
        return self.blocks.size * self.per_block

    def rank(self, blocks: np.ndarray) -> np.ndarray:
        """The rank (int64) of each of ``blocks`` (flat indices into :attr:`mask`) in the band, -1 where not in it."""
        return self._rank1[blocks].astype(np.int64) - 1

    def extend(self, mask: np.ndarray) -> int:
        """Add the blocks of ``mask`` not held yet, after the others; returns the rank of the first added."""
        new = np.flatnonzero(mask & ~self.mask)
        first = self.blocks.size
        self._rank1[new] = np.arange(first + 1, first + 1 + new.size)
        self.blocks = np.concatenate([self.blocks, new])
        self.mask.reshape(-1)[new] = True
        return first

    def chunks(self, first: int = 0) -> Iterator["_BandChunk"]:
        """The band blocks from rank ``first`` on, about ``runtime.SLAB_VOXELS`` voxels at a time."""
        step = max(1, runtime.SLAB_VOXELS // self.per_block)
        for b0 in range(first, self.blocks.size, step):
            yield _BandChunk(self, b0, min(self.blocks.size, b0 + step))


class _BandChunk:
    """Band blocks ``b0:b1`` as ``(blocks, f[0], f[1], f[2])`` arrays of voxels.

    Pairs inside a block are slices of these arrays; only the pairs through a
    block's faces need the neighbouring blocks.
    """

    def __init__(self, band: _Band, b0: int, b1: int) -> None:
        self.band = band
        self.blocks = band.blocks[b0:b1]
        self.coords = []  # z, y, x of every voxel, clipped into the volume
        self.valid = np.ones((b1 - b0,) + band.f, bool)  # the voxels that the volume has
        for axis, c in enumerate(np.unravel_index(self.blocks, band.mask.shape)):
            k, n = band.f[axis], band.shape[axis]
            offsets = [1, 1, 1, 1]
            offsets[axis + 1] = k
            coord = c[:, None, None, None] * k + np.arange(k).reshape(offsets)
            self.valid &= coord < n
            self.coords.append(np.minimum(coord, n - 1))
        self.flat = (self.coords[0] * band.shape[1] + self.coords[1]) * band.shape[2] + self.coords[2]
        self.ids = (np.arange(b0, b1)[:, None] * band.per_block + np.arange(band.per_block)).reshape(self.valid.shape)

    @staticmethod
    def inner_pairs(axis: int) -> Tuple[tuple, tuple]:
        """Index tuples of the first and the second voxels of the pairs inside the blocks along ``axis``."""
        lo, hi = [slice(None)] * 4, [slice(None)] * 4
        lo[axis + 1], hi[axis + 1] = slice(0, -1), slice(1, None)
        return tuple(lo), tuple(hi)

    def face_pairs(self, ids: bool = True) -> Iterator[tuple]:
        """The pairs through the blocks' faces, per axis and step +-1: :meth:`face_pair` of each."""
        for axis in range(3):
            for step in (1, -1):
                yield self.face_pair(axis, step, ids)

    def face_pair(self, axis: int, step: int, ids: bool = True) -> tuple:
        """The pairs through the blocks' faces along ``axis`` with step ``step`` (+-1).

        Returns ``(axis, step, face, sel, u, u_block, u_ids)``: ``face`` indexes
        the voxels on that face of every block; ``sel`` (shaped like them) marks
        those whose neighbour lies in the volume; ``u`` (flat voxel indices) and
        ``u_block`` (flat block indices) are the neighbours and their blocks
        (the voxel itself where not ``sel``); ``u_ids`` are the neighbours' node
        ids, -1 where not ``sel`` or their block is not in the band (``None``
        unless ``ids``).
        """
        band = self.band
        strides = (band.shape[1] * band.shape[2], band.shape[2], 1)
        block_strides = (band.mask.shape[1] * band.mask.shape[2], band.mask.shape[2], 1)
        k = band.f[axis]
        local_stride = band.per_block // int(np.prod(band.f[:axis + 1]))
        face = [slice(None)] * 4
        face[axis + 1] = k - 1 if step > 0 else 0
        face = tuple(face)
        moved = self.coords[axis][face] + step
        sel = (moved >= 0) & (moved < band.shape[axis]) & self.valid[face]
        u = self.flat[face] + sel * (step * strides[axis])
        u_block = self.blocks[:, None, None] + sel * (step * block_strides[axis])
        u_ids = None
        if ids:
            # The neighbour sits on the opposite face of its block.
            rank = np.where(sel, band.rank(u_block), -1)
            local = self.ids[face] % band.per_block - step * (k - 1) * local_stride
            u_ids = np.where(rank >= 0, rank * band.per_block + local, -1)
        return axis, step, face, sel, u, u_block, u_ids

    def diagonal_pairs(self) -> Iterator[tuple]:
        """The in-plane diagonal pairs of every voxel, per offset (all four, so that each voxel sees all):
        :meth:`diagonal_pair` of each."""
        for dy, dx in _DIAGONALS + tuple((-dy, -dx) for dy, dx in _DIAGONALS):
            yield self.diagonal_pair(dy, dx)

    def diagonal_pair(self, dy: int, dx: int) -> tuple:
        """The in-plane diagonal pairs of every voxel with offset ``(dy, dx)``.

        Returns ``(forward, sel, u, u_ids)``: ``forward`` is true for the offsets of
        :data:`_DIAGONALS` (a pair between two band voxels is added once, from
        those); ``sel`` marks the voxels the volume has whose neighbour it has too;
        ``u`` are the neighbours' flat indices (clipped into the volume where not
        ``sel``) and ``u_ids`` their node ids, -1 where not ``sel`` or outside the band.
        """
        band = self.band
        _, Y, X = band.shape
        fz, fy, fx = band.f
        _, BY, BX = band.mask.shape
        z = self.coords[0]
        y, x = self.coords[1] + dy, self.coords[2] + dx
        sel = self.valid & (y >= 0) & (y < Y) & (x >= 0) & (x < X)
        y, x = np.clip(y, 0, Y - 1), np.clip(x, 0, X - 1)
        rank = np.where(sel, band.rank(((z // fz) * BY + y // fy) * BX + x // fx), -1)
        local = ((z % fz) * fy + y % fy) * fx + x % fx
        u_ids = np.where(rank >= 0, rank * band.per_block + local, -1)
        return (dy, dx) in _DIAGONALS, sel, (z * Y + y) * X + x, u_ids


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


def _part(data: Optional[np.ndarray], index: tuple) -> Optional[np.ndarray]:
    """``data[index]``, or ``None`` for a level without per-voxel data."""
    return None if data is None else data[index]


class _Region:
    """A max-flow graph over a growing band of a level's full-resolution voxels, the others fixed.

    The band voxels are the nodes; their pairs with voxels outside the band become terminal
    capacities from the fixed label there (a band voxel pays the pair weight for taking the other
    label).  Blocks can be added after a max-flow (:meth:`add`: the pairs with the voxels held before
    become edges, and those voxels give back the capacity they had for them) and the data term and
    seeds of the held voxels changed (:meth:`refresh`).  Every :meth:`solve` after the first then
    starts from the last flow and search trees instead of from nothing (BK's tree reuse: Kohli and
    Torr, "Efficiently solving dynamic Markov random fields using graph cuts", ICCV 2005): the
    growth passes of a cut, and a warm session's next cut (:class:`CutMemory`), cost what changed.
    Each solve minimises the energy over the band voxels exactly, the rest fixed.
    """

    def __init__(self, level: _Level, f: Sequence[int], budget: int, nodes: int = 0) -> None:
        self.shape = level.shape
        self.band = _Band(np.zeros(tuple(-(-n // k) for n, k in zip(self.shape, f)), bool), f, self.shape)
        self.neighbourhood = _neighbourhood(level)
        self.budget = budget
        # Room for ``nodes`` voxels and their pairs up front: it grows by reallocating beyond.
        self.graph = maxflow.Graph[float](nodes, (5 if self.neighbourhood == 10 else 3) * nodes)
        self.data = np.empty(0, np.float32)  # per node: the data term its terminal capacities hold
        self.seeds = np.empty(0, np.uint8)  # per node: its seed code (0 for the voxels a block lacks)
        self.solved = False
        self._marked: list = []  # node ids changed since the last max-flow
        self._chunks: list = []  # the band's chunks, made once (their voxel indices cost to compute)
        self._edges: dict = {}  # chunk index -> its pairs to blocks outside the band (:meth:`_edge_pairs`)
        #: Blocks outside the band that the boundary touched when the growth passes ran out, or None.
        self.pending: Optional[np.ndarray] = None

    @property
    def nodes(self) -> int:
        return self.band.nodes

    def bytes_with(self, blocks: int) -> int:
        """Memory of a cut of this graph with ``blocks`` more blocks (with :data:`WORKING_BYTES`)."""
        return _band_cut_bytes(self.nodes + blocks * self.band.per_block, self.neighbourhood)

    def graph_bytes(self, blocks: int = 0) -> int:
        """Memory of the graph itself with ``blocks`` more blocks."""
        return (self.nodes + blocks * self.band.per_block) * _band_bytes_per_voxel(self.neighbourhood)

    def _node_data(self, level: _Level, chunk: "_BandChunk") -> Tuple[np.ndarray, np.ndarray]:
        """The data term and seed code of a chunk's voxels (0 for the voxels the volume lacks)."""
        data = np.where(chunk.valid, level.h.reshape(-1)[chunk.flat], np.float32(0))
        seeds = np.where(chunk.valid, level.seeds.reshape(-1)[chunk.flat], np.uint8(0))
        return data.astype(np.float32, copy=False), seeds.astype(np.uint8, copy=False)

    def _capacities(self, level: _Level, data: np.ndarray, seeds: np.ndarray, valid: np.ndarray):
        """Source and sink capacities of voxels from their data term and seeds (none for the voxels the
        volume lacks)."""
        source, sink = _unary(data, seeds, level.seed_capacity)
        source[~valid] = sink[~valid] = 0.0
        return source, sink

    def add(self, level: _Level, labels: np.ndarray, mask: np.ndarray,
            cancel: Optional[CancelToken] = None) -> None:
        """Hold the voxels of the blocks of ``mask`` too, with ``labels`` fixed outside the band."""
        new_blocks = int(np.count_nonzero(mask & ~self.band.mask))
        if not new_blocks:
            return
        needed = self.bytes_with(new_blocks)
        if needed > self.budget:
            raise ScribbleSegError(
                f"graph cut: the band around the coarse boundary of {_fmt_shape(self.shape)} voxels has "
                f"{self.nodes + new_blocks * self.band.per_block} voxels and needs about {_fmt_bytes(needed)}, "
                f"more than the memory budget of {_fmt_bytes(self.budget)}; downsample the volume or free memory")
        graph = self.graph
        held = self.nodes  # the nodes before this call
        first = self.band.extend(mask)
        graph.add_nodes(self.nodes - held)
        diagonals = self.neighbourhood == 10
        flat_labels = labels.reshape(-1)
        datas, seed_codes = [self.data], [self.seeds]
        for chunk in self.band.chunks(first):
            check(cancel)
            self._chunks.append(chunk)
            data_term, seed_code = self._node_data(level, chunk)
            datas.append(data_term.reshape(-1))
            seed_codes.append(seed_code.reshape(-1))
            source, sink = self._capacities(level, data_term, seed_code, chunk.valid)
            data = level.voxel_data(chunk.flat)

            def link(index, w, forward, u, u_ids) -> tuple:
                """Pairs of the voxels ``chunk.flat[index]`` with ``u``: an edge where ``u`` is in the band
                (added from the forward side between two new blocks), else the fixed neighbour's label in
                the data term.  Returns what :func:`insert` adds to the graph and the terminal capacities."""
                in_band = u_ids >= 0
                older = in_band & (u_ids < held)
                edge = in_band if forward else older
                edges = chunk.ids[index][edge], u_ids[edge], w[edge]
                paid = None
                if older.any():
                    # The held voxel paid w for taking the other label than this one: it is a node now.
                    heart = flat_labels[chunk.flat[index][older]] == 1
                    paid = u_ids[older], -w[older] * ~heart, -w[older] * heart
                w[in_band] = 0.0
                heart = flat_labels[u] == 1
                return edges, paid, index, w * heart, w * ~heart

            def pairs(group: tuple) -> tuple:
                """One group of the chunk's pairs, weighed (numpy alone: it runs on a worker thread)."""
                check(cancel)
                kind, a, b = group
                if kind == "inner":
                    lo, hi = chunk.inner_pairs(a)
                    w = level.pair_weights(a, chunk.flat[lo], chunk.flat[hi], _part(data, lo), _part(data, hi))
                    w *= (chunk.valid[lo] & chunk.valid[hi]) * _axis_share(a, diagonals)  # none with voxels it lacks
                    return (chunk.ids[lo], chunk.ids[hi], w), None, None, None, None
                if kind == "face":
                    axis, step, face, sel, u, _, u_ids = chunk.face_pair(a, b)
                    w = level.pair_weights(axis, chunk.flat[face], u, _part(data, face))
                    w *= sel * _axis_share(axis, diagonals)
                    return link(face, w, step == 1, u, u_ids)
                forward, sel, u, u_ids = chunk.diagonal_pair(a, b)
                w = level.pair_weights(2, chunk.flat, u, data) * _CROFTON_DIAGONAL
                w *= sel
                return link((slice(None),) * 4, w, forward, u, u_ids)

            def insert(group: tuple, made: tuple) -> None:
                """Add a group's pairs to the graph, in the groups' order (so the same graph, to the bit, as
                one thread builds)."""
                (a, b, w), paid, index, to_sink, to_source = made
                graph.add_edges(a, b, w, w)
                if paid is not None:
                    graph.add_grid_tedges(*paid)
                    self._marked.append(paid[0])
                if index is not None:
                    sink[index] += to_sink
                    source[index] += to_source

            groups = [("inner", axis, 0) for axis in range(3) if self.band.f[axis] > 1]
            groups += [("face", axis, step) for axis in range(3) for step in (1, -1)]
            if diagonals:
                groups += [("diagonal", dy, dx) for dy, dx in _DIAGONALS + tuple((-dy, -dx) for dy, dx in _DIAGONALS)]
            # The weights on worker threads (numpy's passes release Python's lock), the graph on this one.
            in_order(pairs, groups, slab_threads(min(len(groups), BAND_WEIGHING_THREADS)), insert)
            graph.add_grid_tedges(chunk.ids, source, sink)
            self._marked.append(chunk.ids.reshape(-1))
        self.data, self.seeds = np.concatenate(datas), np.concatenate(seed_codes)

    def refresh(self, level: _Level, cancel: Optional[CancelToken] = None) -> int:
        """Give the held voxels ``level``'s data term and seeds; returns how many changed."""
        changed_count = 0
        for chunk in self._chunks:
            check(cancel)
            ids = chunk.ids.reshape(-1)
            part = slice(int(ids[0]), int(ids[-1]) + 1)
            data_term, seed_code = (a.reshape(-1) for a in self._node_data(level, chunk))
            changed = (data_term != self.data[part]) | (seed_code != self.seeds[part])
            if not changed.any():
                continue
            valid = chunk.valid.reshape(-1)[changed]
            new = self._capacities(level, data_term[changed], seed_code[changed], valid)
            old = self._capacities(level, self.data[part][changed], self.seeds[part][changed], valid)
            self.graph.add_grid_tedges(ids[changed], new[0] - old[0], new[1] - old[1])
            self._marked.append(ids[changed])
            self.data[part], self.seeds[part] = data_term, seed_code
            changed_count += int(np.count_nonzero(changed))
        return changed_count

    def solve(self, labels: np.ndarray, cancel: Optional[CancelToken] = None) -> np.ndarray:
        """Minimise the energy over the band voxels of ``labels`` (in place), the others fixed.

        Returns the coarse blocks outside the band next to a band voxel of the other label after
        the cut: where the boundary lies on the band's edge and may want to move further.
        """
        check(cancel)
        if self.solved and self._marked:
            self.graph.mark_grid_nodes(np.concatenate(self._marked))
        self._marked = []
        self.graph.maxflow(reuse_trees=self.solved)
        flat_labels = labels.reshape(-1)
        contact = np.zeros(self.band.mask.size, bool)
        outside = ~self.band.mask.reshape(-1)
        for index, chunk in enumerate(self._chunks):
            voxels = chunk.flat[chunk.valid]
            segments = self.graph.get_grid_segments(chunk.ids[chunk.valid]).astype(np.uint8)
            if self.solved and np.array_equal(segments, flat_labels[voxels]):
                # Contact comes from a label that moved (or a first cut): the band's edge held still here.
                continue
            flat_labels[voxels] = segments
            for v, u, u_block in self._edge_pairs(index, chunk, outside):
                touch = outside[u_block] & (flat_labels[u] != flat_labels[v])
                contact[u_block[touch]] = True
        self.solved = True
        return contact.reshape(self.band.mask.shape)

    def _edge_pairs(self, index: int, chunk: "_BandChunk", outside: np.ndarray) -> list:
        """The pairs through the faces of the chunk's blocks that lead out of the band, as first asked (``outside``:
        the blocks outside it then): per face, the flat voxel indices ``v`` in the chunk and ``u`` beyond, and
        ``u``'s blocks.  The band only grows, so these hold every pair that leads out of it later too (the caller
        checks ``outside`` again); kept, they spare each later max-flow the faces of the whole chunk."""
        kept = self._edges.get(index)
        if kept is None:
            kept = []
            for _, _, face, sel, u, u_block, _ in chunk.face_pairs(ids=False):
                leaves = sel & outside[u_block]
                kept.append((chunk.flat[face][leaves], u[leaves], u_block[leaves]))
            self._edges[index] = kept
        return kept
