"""Simulated scribbles: the strokes a user draws on a few sections of a volume.

Harada et al. (§IV) annotate every 10th section that shows the heart with four
or five curves inside the heart and four or five curves on other tissue, and
make three such patterns per volume.  :func:`simulate_scribbles` draws the same
from a ground-truth label: smooth curved strokes that keep a margin inside the
heart, strokes in a ring just outside it (where a user corrects the boundary)
and a few further away, each a few pixels wide and clipped to its class, so a
scribble never contradicts the label.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import choices
from .checks import check_array, check_count, check_seed, check_spacing, check_whole, check_width
from .errors import ScribbleSegError

#: Scribble codes.
NONE, HEART, BACKGROUND = 0, 1, 2


def scribbled_sections(label: np.ndarray, seed: int = 0, every: int = choices.SCRIBBLE_EVERY,
                       n_sections: Optional[int] = None) -> np.ndarray:
    """Indices of the sections :func:`simulate_scribbles` annotates.

    Parameters
    ----------
    label : numpy.ndarray
        ``(Z, Y, X)`` ground truth, > 0 = heart.
    seed : int
        Chooses the offset (``every``) or the jitter of the even spread (``n_sections``).
    every : int
        Annotate every ``every``-th section among those that contain heart.
    n_sections : int, optional
        Instead, annotate this many heart sections spread evenly over the heart.

    Returns
    -------
    numpy.ndarray
        Sorted section indices (at least one).

    Examples
    --------
    >>> label = np.zeros((12, 8, 8), np.uint8); label[2:10, 2:6, 2:6] = 1
    >>> scribbled_sections(label, every=3).tolist()
    [3, 6, 9]
    """
    label = _check_label(label)
    seed = check_seed(seed)
    heart = np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))
    if heart.size == 0:
        raise ScribbleSegError("the label has no heart voxels, so there is nothing to scribble on")
    # The whole seed: numpy splits it into 32-bit words, so seeds of 2^32 and more get streams of their own,
    # and those below keep the streams they always had (the seed was once cut to 32 bits here).
    rng = np.random.default_rng([int(seed), 0x5C81])
    if n_sections is not None:
        if int(n_sections) < 1:
            raise ScribbleSegError(f"n_sections must be at least 1, got {n_sections!r}")
        n = min(int(n_sections), heart.size)
        # One section in each of n equal runs of heart sections, at the same place in every run;
        # the place avoids the ends, where the heart is smallest.
        where = rng.uniform(0.25, 0.75)
        return heart[np.floor((np.arange(n) + where) * heart.size / n).astype(int)]
    every = check_whole(every, "every")  # 1.5 would be cut to 1 without a word
    offset = int(rng.integers(min(every, heart.size)))
    return heart[offset::every]


def simulate_scribbles(label: np.ndarray, seed: int = 0, every: int = choices.SCRIBBLE_EVERY,
                       n_sections: Optional[int] = None, strokes: Tuple[int, int] = (4, 5), width: float = 3,
                       spacing: Optional[Sequence[float]] = None, tissue: Optional[np.ndarray] = None) -> np.ndarray:
    """Draw scribbles a user would draw on a few sections of a labelled volume.

    Parameters
    ----------
    label : numpy.ndarray
        ``(Z, Y, X)`` ground truth, > 0 = heart.  Any shape of heart works; on a
        section where it is too thin for a margin the strokes run along its middle.
    seed : int
        Scribble pattern; different seeds give different sections and strokes.
    every, n_sections
        Which sections, see :func:`scribbled_sections`.
    strokes : (int, int)
        Fewest and most strokes per class and section (the paper: 4 or 5).
    width : float
        Brush diameter in pixels (of the x axis).
    spacing : sequence of float, optional
        Voxel size ``(x, y, z)`` in mm; only the in-plane ratio matters (round brushes
        and margins in mm on anisotropic pixels).  Default: square pixels.
    tissue : numpy.ndarray, optional
        ``(Z, Y, X)`` bool, where the section has tissue; background strokes away from
        the heart stay on it when given.

    Returns
    -------
    numpy.ndarray
        ``(Z, Y, X)`` uint8: 0 none, 1 heart, 2 background.  Heart scribbles lie
        only where ``label > 0``, background scribbles only where ``label == 0``,
        and every annotated section has both (background only if the section has any).

    Examples
    --------
    >>> yy, xx = np.mgrid[:32, :32]
    >>> label = np.repeat(((yy - 16) ** 2 + (xx - 16) ** 2 < 100)[None], 12, axis=0).astype(np.uint8)
    >>> strokes = simulate_scribbles(label, seed=0, every=5)
    >>> np.flatnonzero(strokes.any(axis=(1, 2))).tolist()
    [3, 8]
    >>> bool((label[strokes == 1] == 1).all() and (label[strokes == 2] == 0).all())
    True
    """
    label = _check_label(label)
    try:
        low, high = (check_count(s, "strokes") for s in strokes)
    except (TypeError, ValueError, ScribbleSegError):
        low = high = 0
    if not 1 <= low <= high:
        raise ScribbleSegError(f"strokes must be (fewest, most) with 1 <= fewest <= most, got {strokes!r}")
    width = _check_brush(width, label.shape)
    check_seed(seed)
    spacing = check_spacing(spacing)
    aspect = 1.0 if spacing is None else spacing[1] / spacing[0]
    if tissue is not None and tuple(np.shape(tissue)) != label.shape:
        raise ScribbleSegError(f"tissue has shape {np.shape(tissue)}, the label {label.shape}")

    sections = scribbled_sections(label, seed=seed, every=every, n_sections=n_sections)
    out = np.zeros(label.shape, np.uint8)
    children = np.random.SeedSequence([int(seed), 0x5C82]).spawn(len(sections))
    for k, child in zip(sections, children):
        out[k] = _scribble_section(label[k] > 0, np.random.default_rng(child), (low, high), float(width) / 2,
                                   aspect, None if tissue is None else np.asarray(tissue[k], bool))
    return out


def _check_label(label: np.ndarray) -> np.ndarray:
    label = np.asarray(label)
    if label.ndim != 3 or 0 in label.shape:
        raise ScribbleSegError(f"the label must be a non-empty 3D (Z, Y, X) array, got shape {label.shape}")
    return label


def _check_brush(width, shape) -> float:
    """A brush ``width`` in pixels that fits a section of ``shape`` (a huge one would allocate terabytes)."""
    value = check_width(width)
    if value > max(shape[1:]):
        raise ScribbleSegError(f"width must be at most the section's size ({max(shape[1:])} pixels), got {width!r}")
    return value


def _distance(mask: np.ndarray, aspect: float) -> np.ndarray:
    """Signed distance to the mask's boundary in x pixels, positive inside."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing((1.0, aspect))
    dist = sitk.SignedMaurerDistanceMap(image, insideIsPositive=True, squaredDistance=False, useImageSpacing=True)
    return sitk.GetArrayFromImage(dist).astype(np.float32)


def _scribble_section(heart: np.ndarray, rng: np.random.Generator, strokes: Tuple[int, int], radius: float,
                      aspect: float, tissue: Optional[np.ndarray]) -> np.ndarray:
    out = np.zeros(heart.shape, np.uint8)
    background = ~heart
    dist = _distance(heart, aspect) if background.any() else np.full(heart.shape, np.inf, np.float32)
    size = float(np.sqrt(heart.sum() * aspect))  # side of a square of the heart's area, in x pixels
    depth = float(dist[heart].max())

    # Heart: strokes in the heart shrunk by a margin (the brush plus a little), as far as it allows.
    margin = min(radius + 1.0 + 0.05 * size, 0.5 * depth)
    fg_region = dist >= margin
    if not fg_region.any():
        fg_region = heart
    fg = _strokes(fg_region, rng, rng.integers(strokes[0], strokes[1] + 1), (0.4, 0.9), size, radius, aspect)
    fg &= heart
    if not fg.any():
        fg[np.unravel_index(np.argmax(np.where(heart, dist, -np.inf)), heart.shape)] = True
    out[fg] = HEART

    if not background.any():
        return out
    # Background: most strokes follow the heart in a ring just outside it, one or two lie further away.
    outside = -dist
    near = radius + 1.0 + 0.04 * size
    far = near + max(3.0, 0.2 * size)
    n_bg = int(rng.integers(strokes[0], strokes[1] + 1))
    n_far = min(n_bg - 1, int(rng.integers(1, 3)))
    ring = (outside >= near) & (outside <= far)
    if not ring.any():
        ring = background
    bg = _strokes(ring, rng, n_bg - n_far, (0.5, 1.0), size, radius, aspect)
    away = (outside > far + radius) & (outside <= far + radius + max(size, 6.0))
    if tissue is not None:
        away &= tissue
    if n_far and away.any():
        far_strokes = _strokes(away, rng, n_far, (0.3, 0.6), size, radius, aspect)
        bg |= far_strokes if tissue is None else far_strokes & tissue
    bg &= background
    if not bg.any():
        bg[np.unravel_index(np.argmin(np.where(background, np.abs(outside - near), np.inf)), heart.shape)] = True
    out[bg] = BACKGROUND
    return out


def _strokes(region: np.ndarray, rng: np.random.Generator, count: int, length: Tuple[float, float], size: float,
             radius: float, aspect: float) -> np.ndarray:
    """``count`` strokes in ``region``, each started away from the earlier ones where there is room."""
    mask = np.zeros(region.shape, bool)
    taken = np.zeros(region.shape, bool)
    for _ in range(int(count)):
        free = region & ~taken
        starts = np.flatnonzero(free if free.any() else region)
        start = np.unravel_index(starts[rng.integers(starts.size)], region.shape)
        ys, xs = _walk(region, rng, start, rng.uniform(*length) * max(size, 1.0), aspect)
        draw_path(mask, ys, xs, radius, aspect)
        draw_path(taken, ys, xs, 3 * radius + 2, aspect)
    return mask


def _walk(region: np.ndarray, rng: np.random.Generator, start: Tuple[int, int], length: float,
          aspect: float) -> Tuple[np.ndarray, np.ndarray]:
    """A smooth curve through ``start`` inside ``region``: half its length each way, one pixel per step.

    The curve starts along the longest straight run of a few random directions, as a hand
    sweeps across a region; its heading then drifts smoothly and bends away from the region's
    edge, and the curve ends where no gentle bend keeps it inside.
    """
    def inside(y: float, x: float) -> bool:
        iy, ix = int(round(y)), int(round(x))
        return 0 <= iy < region.shape[0] and 0 <= ix < region.shape[1] and bool(region[iy, ix])

    def run(theta: float) -> int:
        steps = 0
        while steps < length and inside(start[0] + (steps + 1) * np.sin(theta) / aspect,
                                        start[1] + (steps + 1) * np.cos(theta)):
            steps += 1
        return steps

    candidates = rng.uniform(0, np.pi, 6)
    heading = max(candidates, key=lambda t: run(t) + run(t + np.pi))
    halves: List[List[Tuple[float, float]]] = []
    for direction in (0.0, np.pi):
        y, x = float(start[0]), float(start[1])
        theta, bend = heading + direction, 0.0
        points = []
        for _ in range(int(length / 2)):
            bend = 0.85 * bend + rng.normal(0, 0.02)
            theta += bend
            side = 1.0 if rng.random() < 0.5 else -1.0
            for turn in (0.0, 0.12, -0.12, 0.25, -0.25, 0.4, -0.4):
                t = theta + side * turn
                if inside(y + np.sin(t) / aspect, x + np.cos(t)):
                    break
            else:
                break
            theta, y, x = t, y + np.sin(t) / aspect, x + np.cos(t)
            points.append((y, x))
        halves.append(points)
    path = halves[1][::-1] + [(float(start[0]), float(start[1]))] + halves[0]
    return np.array([p[0] for p in path]), np.array([p[1] for p in path])


def draw_path(mask: np.ndarray, ys: np.ndarray, xs: np.ndarray, radius: float, aspect: float = 1.0) -> np.ndarray:
    """Set ``mask`` to True along a sampled path with a round brush.

    Parameters
    ----------
    mask : numpy.ndarray
        2D bool image, modified in place and returned.
    ys, xs : numpy.ndarray
        Path samples in pixels (rows, columns), at most about a pixel apart.
    radius : float
        Brush radius in column pixels; the brush covers at least the sample's pixel.
    aspect : float
        Row pixel size over column pixel size, so the brush is round in mm.

    Examples
    --------
    >>> mask = draw_path(np.zeros((5, 9), bool), np.full(7, 2.0), np.arange(1.0, 8.0), radius=1)
    >>> mask.astype(int)
    array([[0, 0, 0, 0, 0, 0, 0, 0, 0],
           [0, 1, 1, 1, 1, 1, 1, 1, 0],
           [1, 1, 1, 1, 1, 1, 1, 1, 1],
           [0, 1, 1, 1, 1, 1, 1, 1, 0],
           [0, 0, 0, 0, 0, 0, 0, 0, 0]])
    """
    ry, rx = int(np.ceil(radius / aspect)), int(np.ceil(radius))
    oy, ox = np.mgrid[-ry:ry + 1, -rx:rx + 1]
    inside = (oy * aspect) ** 2 + ox ** 2 <= max(radius, 0.5) ** 2
    inside[ry, rx] = True
    oy, ox = oy[inside], ox[inside]
    py = np.rint(np.asarray(ys, float)).astype(int)[:, None] + oy[None, :]
    px = np.rint(np.asarray(xs, float)).astype(int)[:, None] + ox[None, :]
    ok = (py >= 0) & (py < mask.shape[0]) & (px >= 0) & (px < mask.shape[1])
    mask[py[ok], px[ok]] = True
    return mask


def section_errors(label: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Wrong voxels per section: ``(Z,)`` counts of missed heart plus false heart.

    Examples
    --------
    >>> label = np.zeros((6, 8, 8), np.uint8); label[1:5, 2:6, 2:6] = 1
    >>> prediction = label.copy(); prediction[2, 2, 2:6] = 0; prediction[3, 0, 0] = 1
    >>> section_errors(label, prediction).tolist()
    [0, 0, 4, 1, 0, 0]
    """
    label = _check_label(label) > 0
    prediction = np.asarray(prediction) > 0
    if prediction.shape != label.shape:
        raise ScribbleSegError(f"prediction has shape {prediction.shape}, the label {label.shape}")
    return (label != prediction).reshape(label.shape[0], -1).sum(axis=1)


def corrective_scribbles(label: np.ndarray, prediction: np.ndarray, previous: np.ndarray, seed: int = 0,
                         sections: int = 3, strokes: int = 2, width: float = 3,
                         spacing: Optional[Sequence[float]] = None, min_area: int = 12) -> np.ndarray:
    """Add the strokes of a user who fixes the largest wrong regions of the worst sections.

    The paper's user looks at the result and "fixes the incorrect regions by adding
    annotations".  On each of the ``sections`` sections with the most wrong voxels, the
    ``strokes`` largest connected wrong regions get one stroke each, drawn inside the
    region with a margin: a heart stroke in missed heart, a background stroke in false
    heart.  Earlier strokes are kept and never overwritten, so the new scribbles never
    contradict the label or the old ones.

    Parameters
    ----------
    label : numpy.ndarray
        ``(Z, Y, X)`` ground truth, > 0 = heart.
    prediction : numpy.ndarray
        ``(Z, Y, X)`` the current result, > 0 = heart.
    previous : numpy.ndarray
        ``(Z, Y, X)`` uint8 scribbles so far (0 none, 1 heart, 2 background).
    seed : int
        Seed of the stroke shapes.
    sections, strokes : int
        How many sections to correct, and how many regions per section.
    width : float
        Brush diameter in pixels of the x axis.
    spacing : sequence of float, optional
        Voxel size ``(x, y, z)`` in mm (round brushes on anisotropic pixels).
    min_area : int
        Wrong regions smaller than this many pixels are left alone (too small to scribble in).

    Returns
    -------
    numpy.ndarray
        ``(Z, Y, X)`` uint8: ``previous`` plus the new strokes.

    Examples
    --------
    >>> import numpy as np
    >>> label = np.zeros((3, 40, 40), np.uint8); label[:, 10:30, 10:30] = 1
    >>> prediction = np.zeros_like(label); prediction[:, 10:30, 10:20] = 1
    >>> new = corrective_scribbles(label, prediction, np.zeros_like(label), sections=1)
    >>> bool((new == HEART).any() and ((new == HEART) <= (label > 0)).all())
    True
    """
    import SimpleITK as sitk

    label = _check_label(label) > 0
    previous = check_array(np.asarray(previous), "previous", ndim=3, kinds="ui", shape=label.shape)
    if int(previous.min()) < NONE or int(previous.max()) > BACKGROUND:
        raise ScribbleSegError("previous must hold 0 (none), 1 (heart) and 2 (background) only")
    sections, strokes, min_area = (check_count(v, n) for v, n in ((sections, "sections"), (strokes, "strokes"),
                                                                  (min_area, "min_area")))
    check_seed(seed)
    spacing = check_spacing(spacing)
    errors = section_errors(label, prediction)
    prediction = np.asarray(prediction) > 0
    aspect = 1.0 if spacing is None else spacing[1] / spacing[0]
    radius = _check_brush(width, label.shape) / 2
    out = previous.astype(np.uint8, copy=True)
    order = [int(k) for k in np.argsort(-errors, kind="stable")[: int(sections)] if errors[k] > 0]
    children = np.random.SeedSequence([int(seed), 0x5C83]).spawn(max(1, len(order)))
    for k, child in zip(order, children):
        rng = np.random.default_rng(child)
        regions = []
        for code, wrong in ((HEART, label[k] & ~prediction[k]), (BACKGROUND, ~label[k] & prediction[k])):
            wrong &= previous[k] == NONE
            if wrong.sum() < min_area:
                continue
            components = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(wrong.astype(np.uint8))))
            sizes = np.bincount(components.reshape(-1))
            regions += [(int(sizes[c]), code, components == c) for c in range(1, sizes.size) if sizes[c] >= min_area]
        regions.sort(key=lambda r: -r[0])
        for area, code, region in regions[: int(strokes)]:
            dist = _distance(region, aspect)
            inner = dist >= min(radius + 1.0, 0.5 * float(dist.max()))
            size = float(np.sqrt(area * aspect))
            stroke = _strokes(inner if inner.any() else region, rng, 1, (0.3, 0.8), size, radius, aspect)
            stroke &= region & (out[k] == NONE)
            if not stroke.any():  # a region too thin for the brush: mark its deepest pixel
                stroke[np.unravel_index(np.argmax(np.where(region, dist, -np.inf)), region.shape)] = True
            out[k][stroke] = code
    return out
