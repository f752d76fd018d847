"""The strokes' pull on the data term: each stroke speaks for the tissue it lies in.

:func:`pulled_to_seeds` moves the heart probability ``h`` towards each stroke's label near the
strokes (``GraphCutParams.seed_reach``), along the shortest ways through the stroked section's
tissue, which colour edges lengthen (``seed_edges``), so that a stroke drawn in tissue the network
gets wrong claims that tissue and not its neighbours.  :class:`ImageMeasures` keeps what this needs
of the image and the strokes alone (the section gradients and the ways, and the image's contrast for
:mod:`ScribbleSegLib.cut_scaling`) from one cut to the next.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Optional, Sequence, Tuple

import numpy as np

from .checks import stroked_sections
from .cut_scaling import image_contrast, section_sharpness
from .errors import ScribbleSegError
from .progress import CancelToken, check
from .runtime import in_threads

_log = logging.getLogger(__name__)

#: Scale in pixels of the Gaussian that smooths a section before its colour gradient is taken for the pull's
#: way through the tissue (:func:`pulled_to_seeds`): texture finer than this does not count as an edge.
SEED_EDGE_SMOOTHING = 1.0
#: :func:`pulled_to_seeds` stops at this many ``reach`` from a stroke (its weight there: exp(-3) = 0.05).
SEED_REACH_CUTOFF = 3.0
#: :class:`ImageMeasures` keeps at most this many bytes of section gradients (1 MiB per 512x512 section) and
#: stroke-pull ways; beyond, the ones used longest ago go first.
MEASURES_MAX_BYTES = 256 * 2**20


def distance_map(mask: np.ndarray, spacing: Sequence[float], pixel: float) -> np.ndarray:
    """Distance of each voxel of the 2-D or 3-D ``mask`` to its nearest ``True`` voxel, in pixels of size ``pixel``;
    ``spacing`` is the voxel size in the mask's axis order (SimpleITK's Maurer distance).

    Examples
    --------
    >>> mask = np.zeros((2, 1, 3), bool); mask[0, 0, 0] = True
    >>> distance_map(mask, (2.0, 1.0, 1.0), 1.0).astype(float).round(2).tolist()  # sections 2 pixels apart
    [[[0.0, 1.0, 2.0]], [[2.0, 2.24, 2.83]]]
    """
    import SimpleITK as sitk  # only here: the rest of the cut does not need it

    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing([float(s) for s in reversed(tuple(spacing))])
    d = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False,
                                                            useImageSpacing=True))
    return np.maximum(d, 0.0) / pixel


def plane_distance(mask: np.ndarray, spacing_zyx: Sequence[float], pixel: float) -> np.ndarray:
    """Distance of each pixel of the ``(Y, X)`` ``mask`` to its nearest ``True`` pixel, in pixels of size ``pixel``.

    Examples
    --------
    >>> mask = np.zeros((1, 6), bool); mask[0, 0] = True
    >>> plane_distance(mask, (1.0, 0.5, 0.5), 0.5).round(2).tolist()  # 0.5 mm pixels
    [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]]
    """
    return distance_map(mask, spacing_zyx[1:], pixel)


def _section_gradient(section: np.ndarray, spacing: Sequence[float]) -> Tuple[np.ndarray, float]:
    """The colour gradient ``g`` of a ``(Y, X, C)`` section (root sum of squares over the channels, float32)
    after a Gaussian of :data:`SEED_EDGE_SMOOTHING` pixels, and its median; ``spacing`` is the ``(x, y)`` pixel
    size in pixels of the finer axis.  A section under 4 pixels on a side (too small for the recursive Gaussian)
    has no gradient: zeros, median 0, and the pull's way through it is straight."""
    import SimpleITK as sitk

    if min(section.shape[:2]) < 4:
        return np.zeros(section.shape[:2], np.float32), 0.0
    x = section.astype(np.float32)
    if section.dtype == np.uint8:
        x *= np.float32(1.0 / 255.0)
    g2 = np.zeros(section.shape[:2], np.float32)
    gradient = sitk.GradientMagnitudeRecursiveGaussianImageFilter()
    gradient.SetSigma(SEED_EDGE_SMOOTHING)
    # One thread: as fast as two on a 512x512 section, and it leaves the other core to the adaptation that
    # runs beside it (measure_ahead).  Each image line is filtered on its own, so the result is the same.
    gradient.SetNumberOfThreads(1)
    for c in range(section.shape[2]):
        channel = sitk.GetImageFromArray(np.ascontiguousarray(x[..., c]))
        channel.SetSpacing(list(spacing))
        g2 += sitk.GetArrayFromImage(gradient.Execute(channel)) ** 2
    g = np.sqrt(g2)
    return g, float(np.median(g))


def _edge_speed(gradient: Tuple[np.ndarray, float], edges: float, box: Tuple[slice, slice]) -> np.ndarray:
    """The speed ``1 / (1 + edges g / g_median)`` within ``box`` of a section, float32, from its
    :func:`_section_gradient` ``(g, g_median)``."""
    g, median = gradient
    # The median of the whole section: its own contrast, so that stain strength and magnification do not
    # change the scale, and strokes elsewhere do not change the way here.
    return (1.0 / (1.0 + edges * g[box] / (median + 1e-6))).astype(np.float32)


#: :meth:`ImageMeasures.evened` copies an image only when the copy takes at most this share of the memory available.
EVEN_MEMORY_SHARE = 0.25


class ImageMeasures:
    """What the cut measures on an image and its strokes alone, kept between cuts of the same image.

    A warm session's :class:`CutMemory` holds one: its runs then compute the
    image's contrast (:func:`image_contrast`) and its sections' (:func:`cut_scaling.section_sharpness`) once,
    the colour gradient of a
    stroked section once per section, and the stroke pull's ways through a section
    (:func:`pulled_to_seeds`) once per section and set of strokes on it, not on every run.
    :func:`measure_ahead` fills one while the adaptation runs (:func:`ScribbleSegLib.pipeline.adapt_and_cut`).
    The values are the ones computed without it.  It forgets everything when handed another image, and
    keeps at most :data:`MEASURES_MAX_BYTES` of gradients and ways.

    Examples
    --------
    >>> image = np.zeros((2, 8, 8, 3), np.uint8); image[:, :, 4:] = 200
    >>> measures = ImageMeasures()
    >>> measures.contrast(image, "rgb") == image_contrast(image, "rgb")
    True
    """

    def __init__(self, max_bytes: int = MEASURES_MAX_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self.key: Optional[tuple] = None
        self._contrast: dict = {}  # colour mode -> contrast
        self._sharpness: dict = {}  # (colour mode, focus) -> per-section factor of 1 / sigma^2, or None
        self._gradients: dict = {}  # (section, spacing) -> (g, median), oldest first
        self._ways: dict = {}  # section -> (key, (box, planes)) of its last strokes, oldest first
        self._evened: Optional[tuple] = None  # (key of the image as given, the image with its glass made white)
        #: Where the cut's coarse pair weights of this image are kept between processes (a
        #: :class:`feature_cache.CutWeights` of the image's cache entry), or None.
        self.weights_store = None

    def follow(self, image: np.ndarray) -> None:
        """Forget everything unless ``image`` is the image measured so far.

        Examples
        --------
        >>> image, other = np.zeros((1, 8, 8, 3), np.uint8), np.full((1, 8, 8, 3), 9, np.uint8)
        >>> measures = ImageMeasures()
        >>> measures.follow(image); measures.key == image_key(image)
        True
        >>> measures.follow(other); measures.key == image_key(other)  # another image: what was kept is gone
        True
        """
        key = image_key(image)
        if key != self.key:
            self.key, self._contrast, self._sharpness, self._gradients, self._ways = key, {}, {}, {}, {}

    def evened(self, image: np.ndarray) -> np.ndarray:
        """``image`` ``(Z, Y, X, 3)`` uint8 with its glass made white as the network sees it
        (:func:`white_point.white_glass` with the stack's glass colour), computed once; ``image`` itself when no
        section changes (:func:`white_point.glass_is_white`, on a sample of the sections), when it is not RGB,
        or when a copy would take more than :data:`EVEN_MEMORY_SHARE` of the memory available (a stack near
        the machine's limit is cut as it is rather than not at all).  Kept apart from the measures, which
        follow the evened image.

        Examples
        --------
        >>> grey = np.full((2, 16, 16, 3), 225, np.uint8); grey[:, 4:12, 4:12] = (150, 60, 170)  # grey glass
        >>> measures = ImageMeasures()
        >>> evened = measures.evened(grey)
        >>> evened[0, 0, 0].tolist(), measures.evened(grey) is evened  # white glass, computed once
        ([255, 255, 255], True)
        >>> white = np.where(grey == 225, 255, grey).astype(np.uint8)
        >>> measures.evened(white) is white  # its glass is white already: no copy
        True
        """
        from .resources import available_memory
        from .white_point import glass_is_white, glass_white, white_glass

        key = image_key(image)
        if self._evened is None or self._evened[0] != key:
            evened = image
            if image.ndim == 4 and image.shape[-1] == 3 and image.dtype == np.uint8:
                white = glass_white(image)
                if not glass_is_white(image, white):
                    if image.nbytes <= EVEN_MEMORY_SHARE * available_memory():
                        evened = white_glass(image, white)
                    else:
                        _log.info("the cut sees the image's glass as it is: a copy with white glass would not fit")
            self._evened = (key, evened)
        return self._evened[1]

    def contrast(self, image: np.ndarray, colour: str) -> float:
        """:func:`image_contrast` of ``image``, computed once."""
        self.follow(image)
        if colour not in self._contrast:
            self._contrast[colour] = image_contrast(image, colour)
        return self._contrast[colour]

    def sharpness(self, image: np.ndarray, colour: str, focus: float) -> Optional[np.ndarray]:
        """:func:`cut_scaling.section_sharpness` of ``image``, computed once.

        Examples
        --------
        >>> image = np.zeros((3, 8, 8, 3), np.uint8); image[:, :, 4:] = 200
        >>> ImageMeasures().sharpness(image, "rgb", 0.92) is None  # no section softer than the others
        True
        """
        self.follow(image)
        key = (colour, float(focus))
        if key not in self._sharpness:
            self._sharpness[key] = section_sharpness(image, colour, focus)
        return self._sharpness[key]

    def gradient(self, image: np.ndarray, z: int, spacing: Sequence[float]) -> Tuple[np.ndarray, float]:
        """:func:`_section_gradient` of section ``z`` of ``image`` (``(Z, Y, X, C)``), computed once.

        Examples
        --------
        >>> image = np.zeros((2, 8, 8, 3), np.uint8); image[:, :, 4:] = 200  # an edge between columns 3 and 4
        >>> measures = ImageMeasures()
        >>> g, median = measures.gradient(image, 1, (1.0, 1.0))
        >>> g[3].astype(float).round(1).tolist(), measures.gradient(image, 1, (1.0, 1.0))[0] is g
        ([0.0, 0.0, 0.2, 0.5, 0.5, 0.2, 0.0, 0.0], True)
        """
        self.follow(image)
        key = (int(z), tuple(float(s) for s in spacing))
        found = self._gradients.pop(key, None)  # re-inserted below: the newest last
        if found is None:
            found = _section_gradient(image[z], spacing)
        self._gradients[key] = found
        self._trim()
        return found

    def ways(self, image: np.ndarray, strokes: np.ndarray, z: int, spacing: Sequence[float], edges: float,
             cutoff: float, grow: int) -> tuple:
        """:func:`_geodesic_planes` of the ``(Y, X)`` ``strokes`` on section ``z`` of ``image``, computed once
        per set of strokes on the section (a section's other strokes replace them).

        Examples
        --------
        >>> image = np.zeros((2, 16, 16, 3), np.uint8); image[:, :, 8:] = 200
        >>> strokes = np.zeros((16, 16), np.uint8); strokes[4, 2] = 1; strokes[4, 12] = 2
        >>> measures = ImageMeasures()
        >>> ways = measures.ways(image, strokes, 1, (1.0, 1.0), 4.0, 6.0, 6)
        >>> measures.ways(image, strokes, 1, (1.0, 1.0), 4.0, 6.0, 6) is ways  # the same strokes: kept
        True
        >>> strokes[5, 2] = 1; measures.ways(image, strokes, 1, (1.0, 1.0), 4.0, 6.0, 6) is ways
        False
        """
        self.follow(image)
        key = (tuple(float(s) for s in spacing), float(edges), float(cutoff), int(grow),
               hashlib.blake2b(np.ascontiguousarray(strokes, np.uint8).tobytes(), digest_size=16).digest())
        kept = self._ways.pop(int(z), None)
        if kept is None or kept[0] != key:
            kept = (key, _geodesic_planes(strokes, self.gradient(image, z, spacing), spacing, edges, cutoff, grow))
        self._ways[int(z)] = kept
        self._trim()
        return kept[1]

    def _trim(self) -> None:
        """Drop the gradients, then the ways, used longest ago while they hold more than :attr:`max_bytes` (the
        newest of each kind stays): a run reuses the ways, and a gradient only serves new strokes on its section."""
        def held() -> int:
            return (sum(g.nbytes for g, _ in self._gradients.values())
                    + sum(p.nbytes for _, (_, planes) in self._ways.values() for p in planes if p is not None))

        while held() > self.max_bytes:
            kind = self._gradients if len(self._gradients) > 1 else self._ways
            if len(kind) <= 1:
                return
            del kind[next(iter(kind))]


def measure_ways(image: np.ndarray, scribbles: np.ndarray, spacing_zyx: Sequence[float], reach: float, edges: float,
                 measures: ImageMeasures, cancel: Optional[CancelToken] = None) -> None:
    """Fill ``measures`` with the ways through each stroked section that :func:`pulled_to_seeds` with the same
    arguments and ``measures`` will ask for; ``cancel`` is checked between sections.

    Examples
    --------
    >>> image = np.zeros((2, 16, 16, 3), np.uint8); image[:, :, 8:] = 200
    >>> scribbles = np.zeros((2, 16, 16), np.uint8); scribbles[1, 4, 2] = 1; scribbles[1, 4, 12] = 2
    >>> measures = ImageMeasures()
    >>> measure_ways(image, scribbles, (1.0, 1.0, 1.0), 2.0, 4.0, measures)
    >>> h = np.full((2, 16, 16), 0.4, np.float32)
    >>> kept = pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 2.0, image=image, edges=4.0, measures=measures)
    >>> bool((kept == pulled_to_seeds(h, scribbles, (1.0, 1.0, 1.0), 2.0, image=image, edges=4.0)).all())
    True
    """
    image = np.asarray(image)
    image = image[..., None] if image.ndim == 3 else image
    _, cutoff, grow, spacing = _pull_geometry(spacing_zyx, reach)
    for k in stroked_sections(scribbles):
        check(cancel)
        measures.ways(image, scribbles[k], int(k), spacing, edges, cutoff, grow)


def image_key(image: np.ndarray) -> tuple:
    """An image by identity and a sample of its values: a session keeps one array for all its runs.

    Examples
    --------
    >>> image = np.zeros((2, 4, 4, 3), np.uint8)
    >>> image_key(image) == image_key(image), image_key(image) == image_key(image.copy())  # another array
    (True, False)
    """
    image = np.asarray(image)
    sample = image.reshape(-1)[:: max(1, image.size // 4096)]
    return image.__array_interface__["data"][0], image.dtype.str, image.shape, hash(sample.tobytes())


def _plane_geodesic(mask: np.ndarray, speed: np.ndarray, spacing: Sequence[float], cutoff: float) -> np.ndarray:
    """Length in pixels of the shortest way from each pixel to the ``(Y, X)`` ``mask`` at ``speed`` (fast
    marching, ``spacing`` as for :func:`_edge_speed`); ``inf`` beyond ``cutoff``, 0 on the mask."""
    import SimpleITK as sitk

    # Every way in from outside meets the mask at its edge: the march starts there and stays out of the
    # mask's inside (speed near 0), so that a stroke painted over a whole region costs no more than its outline.
    inside = mask.copy()
    inside[1:] &= mask[:-1]
    inside[:-1] &= mask[1:]
    inside[:, 1:] &= mask[:, :-1]
    inside[:, :-1] &= mask[:, 1:]
    image = sitk.GetImageFromArray(np.where(inside, np.float32(1e-6), speed))
    image.SetSpacing(list(spacing))
    marching = sitk.FastMarchingImageFilter()
    ys, xs = np.nonzero(mask & ~inside)
    marching.SetTrialPoints([[int(x), int(y)] for y, x in zip(ys, xs)])
    marching.SetStoppingValue(float(cutoff) + 1.0)
    arrival = sitk.GetArrayFromImage(marching.Execute(image))  # float64: unreached pixels hold a huge value
    arrival[mask] = 0.0
    return np.where(arrival <= cutoff + 1.0, arrival, np.inf).astype(np.float32)


def _geodesic_planes(strokes: np.ndarray, gradient: Tuple[np.ndarray, float], spacing: Sequence[float],
                     edges: float, cutoff: float, grow: int) -> Tuple[Tuple[slice, slice], list]:
    """Squared geodesic distances to the heart and to the background strokes of one ``(Y, X)`` section's
    ``strokes`` through the section of :func:`_section_gradient` ``gradient`` (``spacing`` as there), ``inf``
    beyond ``cutoff``: ``(box, [heart, background])``, each plane over ``box`` (the strokes' own box grown by
    ``grow`` pixels, the cutoff, which no way within the cutoff leaves), None where a class has no stroke."""
    box = _grown_box(strokes > 0, grow)
    speed = _edge_speed(gradient, edges, box)
    planes = []
    for value in (1, 2):
        m = strokes[box] == value
        planes.append(_plane_geodesic(m, speed, spacing, cutoff) ** 2 if m.any() else None)
    return box, planes


def _grown_box(mask: np.ndarray, grow: int) -> Tuple[slice, slice]:
    """The box of the ``True`` pixels of the ``(Y, X)`` ``mask`` grown by ``grow`` pixels, within the plane."""
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (slice(max(0, ys[0] - grow), min(mask.shape[0], ys[-1] + grow + 1)),
            slice(max(0, xs[0] - grow), min(mask.shape[1], xs[-1] + grow + 1)))


def _union_box(boxes: Sequence[Tuple[slice, slice]]) -> Tuple[slice, slice]:
    """The smallest box holding all of ``boxes``."""
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in (0, 1))


def _box_shape(box: Tuple[slice, slice]) -> Tuple[int, int]:
    return tuple(b.stop - b.start for b in box)


def _within(box: Tuple[slice, slice], outer: Tuple[slice, slice]) -> Tuple[slice, slice]:
    """``box`` as a slice of an array over ``outer``, which holds it."""
    return tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, outer))


def _pull_geometry(spacing_zyx: Sequence[float], reach: float) -> Tuple[float, float, int, Tuple[float, float]]:
    """``(pixel, cutoff, grow, spacing)`` of :func:`pulled_to_seeds`: the finer in-plane spacing, the pull's
    cutoff and its whole pixels, and the ``(x, y)`` pixel size in pixels of the finer axis."""
    pixel = float(min(spacing_zyx[1], spacing_zyx[2]))
    cutoff = SEED_REACH_CUTOFF * reach
    return pixel, cutoff, int(math.ceil(cutoff)), (float(spacing_zyx[2]) / pixel, float(spacing_zyx[1]) / pixel)


def pulled_to_seeds(h: np.ndarray, scribbles: np.ndarray, spacing_zyx: Sequence[float], reach: float,
                    across: float = 1.0, *, weight: float = 1.0, image: Optional[np.ndarray] = None,
                    edges: float = 0.0, measures: Optional[ImageMeasures] = None,
                    out: Optional[np.ndarray] = None) -> np.ndarray:
    """The heart probability pulled towards each stroke's label near the strokes.

    A voxel at distance ``d`` (in in-plane pixels; across sections by the
    sections' real spacing) from the nearest heart stroke and ``d'`` from the
    nearest background stroke gets ``(h + w) / (1 + w + w')`` with ``w =
    weight exp(-d / reach)`` and ``w' = weight exp(-d' / reach)``, each 0 beyond
    :data:`SEED_REACH_CUTOFF` ``* reach``.  So a stroke weighs ``weight`` times as
    much as the network on its own voxels, half that ``reach * ln 2`` pixels from
    it, and nothing beyond a few ``reach``; the cut's contrast term still decides
    where the boundary goes.  Strokes lie on sections, so the distance is
    computed in the plane of each stroked section (within the strokes' bounding
    box) and combined across the sections within reach: ``d^2 = min_k (d_k^2 +
    dz_k^2)``, with ``dz_k`` the distance to section ``k`` divided by ``across``.

    With ``edges > 0`` the in-plane distance is the length of the shortest way
    through ``image``, where a step counts ``1 + edges g / g_median`` (``g``:
    the colour gradient of the section, smoothed over
    :data:`SEED_EDGE_SMOOTHING` pixels; ``g_median`` its median): a geodesic
    distance (fast marching), so that the pull fills the tissue a stroke lies in
    and fades at its edges.

    Parameters
    ----------
    h : numpy.ndarray
        ``(Z, Y, X)`` heart probability in [0, 1].
    scribbles : numpy.ndarray
        ``(Z, Y, X)``: 0 none, 1 heart, 2 background.
    spacing_zyx : tuple of 3 float
        Voxel size in array-axis order.
    reach : float
        In in-plane pixels (of the finer in-plane spacing); 0 returns ``h``.
    across : float
        The reach across sections as a share of ``reach``; 0 pulls each
        stroke's own section only.
    weight : float
        A stroke's weight against ``h`` on its own voxels (positive).
    image : numpy.ndarray, optional
        ``(Z, Y, X)`` or ``(Z, Y, X, C)`` the image; needed when ``edges > 0``.
    edges : float
        How much colour edges lengthen the way (0: straight-line distance).
    measures : ImageMeasures, optional
        Where the section gradients of ``image`` and the ways through them are kept from one call to the next.
    out : numpy.ndarray, optional
        C-contiguous float32 array of ``h``'s shape (not ``h``) to write the result into.

    Returns
    -------
    numpy.ndarray
        ``out``, or a new float32 array (``h`` itself when nothing is pulled).

    Examples
    --------
    >>> h = np.full((1, 1, 5), 0.4, np.float32); s = np.zeros((1, 1, 5), np.uint8); s[0, 0, 0] = 1
    >>> np.round(pulled_to_seeds(h, s, (1.0, 1.0, 1.0), 2.0)[0, 0], 2)
    array([0.7 , 0.63, 0.56, 0.51, 0.47], dtype=float32)
    """
    if not weight > 0 or not edges >= 0:
        raise ScribbleSegError(f"pulled_to_seeds: weight must be positive and edges non-negative, got {weight!r} "
                               f"and {edges!r}")
    if edges > 0 and (image is None or np.shape(image)[:3] != np.shape(scribbles)):
        raise ScribbleSegError(f"pulled_to_seeds: edges > 0 needs the image of the scribbles' shape "
                               f"{np.shape(scribbles)}, got {None if image is None else np.shape(image)}")
    if out is not None and (out.shape != np.shape(h) or out.dtype != np.float32 or not out.flags.c_contiguous
                            or np.shares_memory(out, h)):
        raise ScribbleSegError(f"pulled_to_seeds: out must be a C-contiguous float32 array of shape {np.shape(h)} "
                               "apart from h")
    if reach <= 0 or not np.any(scribbles):
        return h
    pixel, cutoff, grow, spacing = _pull_geometry(spacing_zyx, reach)
    # One section, in in-plane pixels, stretched by 1 / across (infinitely far when across is 0).
    step = float(spacing_zyx[0]) / pixel / across if across > 0 else math.inf
    margin = int(cutoff / step)  # sections within reach (0 when the step is infinite)
    depth = scribbles.shape[0]
    stroked = stroked_sections(scribbles)
    if edges > 0:
        image = np.asarray(image)
        image = image[..., None] if image.ndim == 3 else image
    # Per stroked section: the box of its strokes grown by the cutoff, and the squared in-plane distance over it
    # to each class's strokes (None: no stroke of that class).  No way within the cutoff leaves the box, so the
    # pull is worked out over the boxes alone: elsewhere it adds nothing.
    planes = {}
    for k in stroked:
        if edges > 0:
            planes[int(k)] = (measures.ways(image, scribbles[k], int(k), spacing, edges, cutoff, grow)
                              if measures is not None else
                              _geodesic_planes(scribbles[k], _section_gradient(image[k], spacing), spacing, edges,
                                               cutoff, grow))
        else:
            box = _grown_box(scribbles[k] > 0, grow)
            masks = [scribbles[k][box] == value for value in (1, 2)]
            planes[int(k)] = box, [plane_distance(m, spacing_zyx, pixel) ** 2 if m.any() else None for m in masks]
    if out is None:
        out = np.array(h, dtype=np.float32)
    else:
        np.copyto(out, h)

    def pull(z: int, _: int) -> None:
        near = [k for k in planes if abs(k - z) <= margin]
        weights = []  # per class: (box, w) or None
        for c in (0, 1):
            found = [(planes[k][0], planes[k][1][c], k) for k in near if planes[k][1][c] is not None]
            if not found:
                weights.append(None)
                continue
            box = _union_box([b for b, _, _ in found])
            d2 = np.full(_box_shape(box), np.inf, np.float32)
            for b, plane, k in found:
                part = d2[_within(b, box)]
                # k == z is spelled out: with across 0 the step is infinite, and inf * 0 is nan.
                np.minimum(part, plane + np.float32(((k - z) * step) ** 2 if k != z else 0.0), out=part)
            d = np.sqrt(d2)
            weights.append((box, np.where(d <= cutoff, np.float32(weight) * np.exp(-d / reach), 0.0)
                            .astype(np.float32)))
        if weights == [None, None]:
            return
        box = _union_box([w[0] for w in weights if w is not None])
        region = out[z][box]
        total = np.ones(region.shape, np.float32)
        # (h + w) / (1 + w + w'), in the order of the sums as written: the same values wherever the boxes reach.
        if weights[0] is not None:
            inner = _within(weights[0][0], box)
            region[inner] += weights[0][1]
            total[inner] += weights[0][1]
        if weights[1] is not None:
            total[_within(weights[1][0], box)] += weights[1][1]
        region /= total

    # Each section writes only its own plane; numpy's passes release Python's lock.
    in_threads(pull, [(z, z + 1) for z in range(max(0, int(stroked[0]) - margin),
                                                 min(depth, int(stroked[-1]) + margin + 1))])
    return out
