"""The graph cut's boundary term scaled to what it segments: ``gamma`` to the objects, ``sigma`` to the image.

``gamma`` and ``sigma`` were chosen on phantom hearts (one organ per section, objects of radius 16-25 px,
RMS colour difference of in-plane neighbours 0.0855-0.120).  Smaller objects, many objects side by side,
an ``h`` with a thin band of doubt, or an image with softer edges make the same values erase objects the network found
(BENCHMARKS.md, "Nuclei on H&E tiles").  :func:`scaled_to_objects` and :func:`scaled_to_contrast`
scale them down, in quarter-octave steps and never up, by the references of
:class:`ScribbleSegLib.graphcut.GraphCutParams`; :func:`ScribbleSegLib.graphcut.graph_cut` applies both
once per cut, and :func:`section_sharpness` scales ``sigma`` further in sections out of focus.  A run of
:func:`ScribbleSegLib.pipeline.adapt_and_cut` scales ``gamma`` itself (:func:`object_scale`,
:func:`with_object_scale`), so that a round of corrective strokes cuts with no weaker a boundary term than the
round it adds to (:meth:`ScribbleSegLib.stroke_history.StrokeHistory.cut_scale`).
The measures they read, :func:`object_radius`, :func:`unsure_share`, :func:`object_count`,
:func:`image_contrast` and :func:`section_differences`, are functions over arrays of their own.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import TYPE_CHECKING, NamedTuple, Optional, Tuple

import numpy as np

from .runtime import slabs

if TYPE_CHECKING:  # types only: the cut imports this module
    from .graphcut import GraphCutParams
    from .stroke_pull import ImageMeasures

_log = logging.getLogger(__name__)

#: ``h`` strictly between these counts as unsure in :func:`unsure_share`.
UNSURE_RANGE = (0.1, 0.9)
#: The boundary weight is never scaled below this fraction of ``gamma`` ...
MIN_GAMMA_FACTOR = 0.25
#: ... but where more than ``reference_objects`` objects lie side by side, below ``MIN_GAMMA_FACTOR`` times
#: ``reference_objects`` / their number, and never below this: on real H&E tiles of nuclei the cut at 1/4 still
#: joined neighbours and erased small nuclei (BENCHMARKS.md, "Real H&E tiles with pathologists' outlines").
MANY_OBJECTS_MIN_GAMMA_FACTOR = 0.125
#: The contrast scale is never scaled below this fraction of ``sigma``.
MIN_SIGMA_FACTOR = 0.25
#: :func:`image_contrast` reads at most this many sections, evenly spaced.
CONTRAST_SECTIONS = 16
#: :func:`object_count` reads at most this many sections, evenly spaced.
OBJECT_SECTIONS = 16
#: A section out of focus (:func:`section_sharpness`) is compared with the sharp sections at most this many
#: sections away.
SECTION_NEIGHBOURS = 2
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luma weights


def colour_features(block: np.ndarray, luminance: bool) -> np.ndarray:
    """``x_v`` of eq. 6 for a block of pixels: float32 colour in [0, 1] (uint8 read as value / 255),
    or its BT.601 luminance as one channel.

    Examples
    --------
    >>> colour_features(np.array([[255, 0, 0]], np.uint8), luminance=False).tolist()
    [[1.0, 0.0, 0.0]]
    >>> round(float(colour_features(np.array([[255, 0, 0]], np.uint8), luminance=True)[0, 0]), 3)
    0.299
    """
    x = block.astype(np.float32)
    if block.dtype == np.uint8:
        x *= np.float32(1.0 / 255.0)
    if luminance:
        x = (x @ LUMA)[..., None]
    return x


def _outline_counts(h: np.ndarray, threshold: Optional[float],
                    unsure: Optional[Tuple[float, float]] = None) -> Tuple[int, int, int]:
    """``(area, edges, unsure)``: voxels of the mask, its 4-neighbour outline edges, and voxels of ``h`` in ``unsure``.

    The mask is ``h > threshold`` (``h`` as booleans without one), formed slab by slab: no full-size
    copy of a large probability volume.  ``unsure`` counts 0 without a range.
    """
    area, edges, unsure_count = 0, 0, 0
    for z0, z1 in slabs(h.shape[0], h.shape[1] * h.shape[2]):
        block = np.asarray(h[z0:z1])
        m = block > threshold if threshold is not None else block.astype(bool, copy=False)
        area += int(np.count_nonzero(m))
        edges += int(np.count_nonzero(m[:, 1:] != m[:, :-1])) + int(np.count_nonzero(m[:, :, 1:] != m[:, :, :-1]))
        if unsure is not None:
            # Two counts instead of a combined mask: one temporary fewer on a large volume.
            unsure_count += int(np.count_nonzero(block > unsure[0])) - int(np.count_nonzero(block >= unsure[1]))
    return area, edges, unsure_count


def _radius(area: int, edges: int) -> float:
    """``2 A / P`` with the outline length ``P`` = edges * pi / 4 (see :func:`object_radius`)."""
    return 2.0 * area / (edges * math.pi / 4) if area and edges else math.inf


def _share(area: int, unsure: int) -> float:
    """Unsure voxels per object voxel (see :func:`unsure_share`); ``inf`` without objects."""
    return unsure / area if area else math.inf


def object_radius(mask: np.ndarray, threshold: Optional[float] = None) -> float:
    """Mean in-plane radius ``2 A / P`` of the objects in a ``(Z, Y, X)`` mask, in pixels.

    ``A`` is the mask's area summed over the sections and ``P`` its outline
    length: the 4-neighbour boundary edges times pi/4, which is the Euclidean
    length on average over orientations.  A disc of radius ``r`` gives about
    ``r``; many small objects give a small radius even when they cover much of
    the section.  ``inf`` for an empty mask or one without outline.  With
    ``threshold``, the mask is ``mask > threshold``, formed slab by slab (no
    full-size copy of a large probability volume).

    Examples
    --------
    >>> yy, xx = np.mgrid[:64, :64]
    >>> round(object_radius(((yy - 32) ** 2 + (xx - 32) ** 2 < 20 ** 2)[None]))
    20
    """
    return _radius(*_outline_counts(mask, threshold)[:2])


def unsure_share(h: np.ndarray) -> float:
    """Voxels with ``h`` in :data:`UNSURE_RANGE`, per voxel with ``h > 1/2``.

    How wide a band of doubt ``h`` leaves around its objects, relative to
    their size: a network that places every outline to within a pixel leaves
    a thin band (a small share), a blurred or noisy ``h`` a wide one, and doubt
    away from the objects (tissue the network half believes) adds to it.
    ``inf`` when no voxel has ``h > 1/2``.

    Examples
    --------
    >>> h = np.zeros((1, 1, 10), np.float32); h[0, 0, 2:6] = 0.95; h[0, 0, 6] = 0.4
    >>> unsure_share(h)  # 1 unsure voxel, 4 object voxels
    0.25
    """
    area, _, unsure = _outline_counts(h, 0.5, UNSURE_RANGE)
    return _share(area, unsure)


def object_count(h: np.ndarray, threshold: float = 0.5) -> float:
    """Effective number of objects per section of ``h > threshold``: ``(sum A)^2 / sum A^2`` over the areas ``A``
    of its 4-connected pieces in a section, averaged over the sections with any.

    One organ per section gives about 1, whatever specks of noise lie beside it (a
    piece counts by its share of the area); a tile of 30 nuclei of similar size about
    30.  At most :data:`OBJECT_SECTIONS` evenly spaced sections are read.  0 when no
    read section has an object.

    Examples
    --------
    >>> mask = np.zeros((1, 32, 32), np.float32)
    >>> mask[0, 2:12, 2:12] = mask[0, 20:30, 20:30] = 1  # two equal squares
    >>> object_count(mask)
    2.0
    >>> mask[0, 14, 14] = 1  # a speck beside them hardly counts
    >>> round(object_count(mask), 2)
    2.02
    """
    import SimpleITK as sitk

    total, sections = 0.0, 0
    for z in _sections(h.shape[0], OBJECT_SECTIONS):
        mask = np.asarray(h[z]) > threshold
        if not mask.any():
            continue
        pieces = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.view(np.uint8))))
        areas = np.bincount(pieces.ravel())[1:].astype(np.float64)
        total += float(areas.sum() ** 2 / np.square(areas).sum())
        sections += 1
    return total / sections if sections else 0.0


class ObjectScale(NamedTuple):
    """What :func:`object_scale` found: ``factor`` (None: ``gamma`` as given), whether ``h`` holds more objects per
    section than ``reference_objects`` (``many``: the factor then follows their count), and the measures (``why``)."""

    factor: Optional[float]
    many: bool
    why: str


def object_scale(params: "GraphCutParams", h: np.ndarray) -> ObjectScale:
    """The factor :func:`scaled_to_objects` multiplies ``gamma`` by for ``h``, and what it found there.

    The factor is None where ``params`` leave ``gamma`` as given (every ``reference_*`` of the objects None), 1 where
    ``h`` is empty.  :func:`ScribbleSegLib.pipeline.adapt_and_cut` reads it to keep a chain of rounds' boundary term
    from weakening (:func:`with_object_scale`).

    Examples
    --------
    >>> from ScribbleSegLib.graphcut import GraphCutParams
    >>> yy, xx = np.mgrid[:64, :64]
    >>> soft = (1 / (1 + np.exp(np.sqrt((yy - 32.0) ** 2 + (xx - 32.0) ** 2) - 8)))[None].astype(np.float32)
    >>> object_scale(GraphCutParams(), soft)[:2], object_scale(GraphCutParams.paper(), soft)[:2]
    ((0.5, False), (None, False))
    """
    if params.reference_radius is None and params.reference_unsure is None and params.reference_objects is None:
        return ObjectScale(None, False, "")
    if not h.size:
        return ObjectScale(1.0, False, "")
    area, edges, unsure = _outline_counts(h, 0.5, UNSURE_RANGE)
    radius, share = _radius(area, edges), _share(area, unsure)
    ratio = 1.0
    if params.reference_radius is not None:
        ratio *= min(1.0, radius / float(params.reference_radius))
    if params.reference_unsure is not None:
        ratio *= min(1.0, share / float(params.reference_unsure))
    count = object_count(h) if params.reference_objects is not None and area else 0.0
    lowest = MIN_GAMMA_FACTOR
    if count:
        ratio *= min(1.0, float(params.reference_objects) / count)
        # The floor lowers with the count as the factor does, so that one object more changes it by little.
        lowest = max(MANY_OBJECTS_MIN_GAMMA_FACTOR, MIN_GAMMA_FACTOR * min(1.0, params.reference_objects / count))
    return ObjectScale(_quarter_octave(ratio, lowest), bool(count and count > float(params.reference_objects)),
                       f"objects of radius {radius:.1f} px, unsure share {share:.3f}, {count:.1f} objects per section")


def scaled_to_objects(params: "GraphCutParams", h: np.ndarray) -> "GraphCutParams":
    """``params`` with ``gamma`` scaled to the objects in ``h``: their size, and how sure ``h`` is of them.

    The factor is ``min(1, R / reference_radius) * min(1, u / reference_unsure) *
    min(1, reference_objects / n)`` for the radius ``R`` of ``h > 1/2``
    (:func:`object_radius`), the unsure share ``u`` of ``h`` (:func:`unsure_share`)
    and the objects per section ``n`` (:func:`object_count`), a ``None`` reference
    leaving its part at 1, rounded to a quarter octave (so that a re-run with slightly
    different ``h`` keeps its cut memory), between :data:`MIN_GAMMA_FACTOR` and 1
    (the lower bound times ``reference_objects / n`` where ``n`` is above ``reference_objects``, down to
    :data:`MANY_OBJECTS_MIN_GAMMA_FACTOR`): :func:`object_scale`.

    Examples
    --------
    >>> from ScribbleSegLib.graphcut import GraphCutParams
    >>> yy, xx = np.mgrid[:64, :64]
    >>> r = np.sqrt((yy - 32.0) ** 2 + (xx - 32.0) ** 2)
    >>> soft = (1 / (1 + np.exp(r - 8)))[None].astype(np.float32)  # radius 8, doubt 2 px either side
    >>> scaled_to_objects(GraphCutParams(), soft).gamma  # the radius's factor 1/2 only
    4.0
    >>> crisp = (r < 8)[None].astype(np.float32)  # the same disc without doubt
    >>> scaled_to_objects(GraphCutParams(), crisp).gamma == GraphCutParams().gamma * MIN_GAMMA_FACTOR
    True
    """
    scale = object_scale(params, h)
    return params if scale.factor is None else _scaled_by(params, "gamma", scale.factor, scale.why)


def with_object_scale(params: "GraphCutParams", factor: float, why: str = "") -> "GraphCutParams":
    """``params`` with ``gamma`` times ``factor`` (at most 1) and the objects' references off, so that the cut
    scales it no further: the scale a caller chose (:func:`object_scale`, or more) for one cut.

    Examples
    --------
    >>> from ScribbleSegLib.graphcut import GraphCutParams
    >>> fixed = with_object_scale(GraphCutParams(gamma=8.0), 0.5)
    >>> fixed.gamma, fixed.reference_radius, scaled_to_objects(fixed, np.zeros((1, 4, 4), np.float32)).gamma
    (4.0, None, 4.0)
    """
    return dataclasses.replace(_scaled_by(params, "gamma", min(1.0, factor), why), reference_radius=None,
                               reference_unsure=None, reference_objects=None)


def _quarter_octave(ratio: float, lowest: float) -> float:
    """``min(1, ratio)`` rounded to a power of 2**(1/4), at least ``lowest``: the steps every scaling of this module
    takes, so that a re-run with slightly different measures keeps the same weights (and its cut memory).

    Examples
    --------
    >>> _quarter_octave(0.6, 0.25), _quarter_octave(0.01, 0.25), _quarter_octave(3.0, 0.25)
    (0.5946035575013605, 0.25, 1.0)
    """
    if ratio >= 1.0:
        return 1.0
    return min(1.0, max(lowest, 2.0 ** (round(4 * math.log2(max(ratio, 1e-6))) / 4)))


def _sections(count: int, most: int) -> range:
    """Indices of at most about ``most`` evenly spaced sections of ``count``: every ``ceil(count / most)``-th."""
    return range(0, count, max(1, -(-count // most)))


def _scaled_down(params: "GraphCutParams", name: str, ratio: float, lowest: float,
                 why: str, floor: float = 0.0) -> "GraphCutParams":
    """``params`` with field ``name`` times ``min(1, ratio)`` rounded to a power of 2**(1/4), at least ``lowest``;
    the scaled value is at least ``floor``."""
    return _scaled_by(params, name, _quarter_octave(ratio, lowest), why, floor)


def _scaled_by(params: "GraphCutParams", name: str, factor: float, why: str,
               floor: float = 0.0) -> "GraphCutParams":
    """``params`` with field ``name`` times ``factor`` (none where it is 1 or more), at least ``floor``."""
    if factor >= 1.0:
        return params
    _log.debug("graph cut: %s: %s %g x %.3g", why, name, getattr(params, name), factor)
    return dataclasses.replace(params, **{name: max(floor, getattr(params, name) * factor)})


def image_contrast(image: np.ndarray, colour: str = "rgb") -> float:
    """RMS colour difference of in-plane neighbour pairs, as the boundary term sees the colours.

    ``image`` is ``(Z, Y, X, 3)`` RGB or ``(Z, Y, X[, 1])`` grey, uint8 (read as
    value / 255) or float in [0, 1]; ``colour`` as :attr:`GraphCutParams.colour`.
    At most :data:`CONTRAST_SECTIONS` evenly spaced sections are read.

    Examples
    --------
    >>> stripes = np.zeros((1, 8, 8, 3), np.uint8)
    >>> stripes[:, :, ::2] = 255
    >>> round(image_contrast(stripes), 3)  # half the pairs differ by sqrt(3)
    1.225
    """
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., None]
    total, count = 0.0, 0
    for z in _sections(image.shape[0], CONTRAST_SECTIONS):
        x = colour_features(image[z], colour == "luminance" and image.shape[-1] == 3)
        total, count = _squared_differences(x, 1, total, count)
    return math.sqrt(total / count) if count else 0.0


def _squared_differences(x: np.ndarray, step: int, total: float = 0.0, count: int = 0) -> Tuple[float, int]:
    """``(total, count)`` with the sum and the number of the squared colour differences of the pixels ``step``
    apart along the columns and the rows of ``x`` ``(Y, X, C)`` added."""
    for d in (x[step:] - x[:-step], x[:, step:] - x[:, :-step]):
        total += float(np.square(d, dtype=np.float64).sum())
        count += d.shape[0] * d.shape[1]
    return total, count


def section_differences(image: np.ndarray, colour: str = "rgb") -> np.ndarray:
    """Each section's RMS colour difference of in-plane pixels 2 and 4 apart: float64 ``(Z, 2)``.

    As :func:`image_contrast` sees the colours, on the grid of every other row and column (a
    quarter of the pixels): neighbours there are 2 pixels apart, and the pixels one step further
    4 apart.  Out of focus, a section loses its fine detail first: its first column falls against
    its second (:func:`section_sharpness`).  ``image`` as for :func:`image_contrast`.

    Examples
    --------
    >>> stripes = np.zeros((2, 16, 16), np.uint8)  # grey
    >>> stripes[:, :, ::4] = 255  # on the grid, every other column: half the pairs 2 apart differ by 1
    >>> stripes[1] = 128  # a flat section
    >>> section_differences(stripes).round(3).tolist()
    [[0.707, 0.0], [0.0, 0.0]]
    """
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., None]
    out = np.zeros((image.shape[0], 2))
    for z in range(image.shape[0]):
        x = colour_features(image[z, ::2, ::2], colour == "luminance" and image.shape[-1] == 3)
        for k, step in enumerate((1, 2)):
            total, count = _squared_differences(x, step)
            out[z, k] = math.sqrt(total / count) if count else 0.0
    return out


def section_sharpness(image: np.ndarray, colour: str, focus: float) -> Optional[np.ndarray]:
    """Per section, the factor of ``1 / sigma^2`` that scales ``sigma`` to a section out of focus.

    A section counts as out of focus where its fine detail, the ratio of its two columns of
    :func:`section_differences`, is below ``focus`` times the stack's median ratio: blur lowers the
    differences of near pixels more than those of pixels further apart, whatever the share of tissue
    in the section or the strength of its stain.  Its ``sigma`` is then scaled as :func:`scaled_to_contrast`
    scales it to a whole image: by its contrast (differences 2 pixels apart) over the median contrast of the
    sharp sections within :data:`SECTION_NEIGHBOURS` of it, which hold nearly the same tissue (of all sharp
    sections where none is that near), in quarter-octave steps, at least :data:`MIN_SIGMA_FACTOR`.  Its edges
    are softer, and with the stack's ``sigma`` they would cost what flat tissue costs.  Returns float32 ``(Z,)``,
    ``1 / factor^2`` per section, or None where no section is out of focus.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> stack = rng.integers(0, 256, (5, 32, 32, 1)).repeat(2, 1).repeat(2, 2).astype(np.uint8)  # 2 px grain
    >>> soft = stack.astype(np.float32)
    >>> soft[2] = (soft[2] + np.roll(soft[2], 2, 0) + np.roll(soft[2], 2, 1) + np.roll(soft[2], 2, (0, 1))) / 4
    >>> stack[2] = soft[2].astype(np.uint8)  # section 2 blurred
    >>> section_sharpness(stack, "rgb", 0.92).round(2).tolist()
    [1.0, 1.0, 8.0, 1.0, 1.0]
    >>> section_sharpness(stack[[0, 1, 3, 4]], "rgb", 0.92) is None
    True
    """
    differences = section_differences(image, colour)
    near, far = differences[:, 0], differences[:, 1]
    detail = np.divide(near, far, out=np.ones_like(near), where=far > 0)
    soft = detail < focus * float(np.median(detail))
    if not soft.any():
        return None
    sharp = np.flatnonzero(~soft)
    factor = np.ones(len(near))
    for z in np.flatnonzero(soft):
        around = sharp[np.abs(sharp - z) <= SECTION_NEIGHBOURS]
        reference = float(np.median(near[around if around.size else sharp]))
        if reference > 0:
            factor[z] = _quarter_octave(near[z] / reference, MIN_SIGMA_FACTOR)
    return (1.0 / factor ** 2).astype(np.float32)


def scaled_to_contrast(params: "GraphCutParams", image: np.ndarray,
                       measures: Optional["ImageMeasures"] = None) -> "GraphCutParams":
    """``params`` with ``sigma`` scaled to the contrast of ``image`` (see ``reference_contrast``).

    The factor is ``image_contrast / reference_contrast`` rounded to a quarter
    octave, between :data:`MIN_SIGMA_FACTOR` and 1.  ``measures`` keeps the contrast for the next call.

    Examples
    --------
    >>> from ScribbleSegLib.graphcut import GraphCutParams
    >>> flat = np.full((1, 8, 8, 3), 128, np.uint8)
    >>> scaled_to_contrast(GraphCutParams(), flat).sigma == GraphCutParams().sigma * MIN_SIGMA_FACTOR
    True
    """
    if params.reference_contrast is None:
        return params
    contrast = (measures.contrast(image, params.colour) if measures is not None
                else image_contrast(image, params.colour))
    from .graphcut import MIN_SIGMA

    # A sigma given near its lower bound stays at the bound: the scaled one is the cut's own choice.
    return _scaled_down(params, "sigma", contrast / float(params.reference_contrast), MIN_SIGMA_FACTOR,
                        f"image contrast {contrast:.3f}", floor=MIN_SIGMA)
