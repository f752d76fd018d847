"""What a run says about its strokes and its result: one-line warnings, after which the run goes on.

:func:`run_warnings` gathers, before a run, those about the strokes: :func:`scribble_warnings` (a section filled
rather than stroked, strokes on one section only, heart and background strokes that touch or lie far apart, an
antialiased brush) and, for bare arrays, :func:`axis_order_warning` (strokes that look drawn on an ``(X, Y, Z)``
array).  :func:`result_size_warning` speaks after a run whose heart fills nearly the whole volume.

:mod:`ScribbleSegLib.pipeline` calls them and re-exports the public functions; this module does not import it.
"""

from __future__ import annotations

import logging
import math
from typing import List, Optional, Sequence

import numpy as np

# The warnings were logged by pipeline.py before they moved here: the logger keeps its name.
log = logging.getLogger("ScribbleSegLib.pipeline")


def run_warnings(scribbles: Optional[np.ndarray], method: str, spacing_zyx: Sequence[float],
                 bare: bool = False) -> List[str]:
    """The scribble warnings of one run (:func:`scribble_warnings`), each logged; none for ``munet``.

    ``bare``: the image came as a bare array, whose axis order no file states, so strokes that
    look drawn on the array's last axis are named too (:func:`axis_order_warning`).

    Examples
    --------
    >>> run_warnings(None, "munet", (1.0, 1.0, 1.0))
    []
    """
    warnings: List[str] = []
    if scribbles is not None and method != "munet":
        order = axis_order_warning(scribbles) if bare else None
        warnings += ([order] if order else []) + scribble_warnings(scribbles, spacing_zyx)
        for line in warnings:
            log.warning(line)
    return warnings


#: :func:`result_size_warning` speaks when the heart covers more than this share of the volume.
FILLED_RESULT_SHARE = 0.9


def result_size_warning(labels: np.ndarray, network_probability: np.ndarray) -> Optional[str]:
    """A warning when the heart covers nearly the whole volume, which strokes by mistake give (a section filled as
    heart, the two classes swapped); None otherwise.

    Examples
    --------
    >>> labels = np.ones((2, 4, 4), np.uint8); labels[0, 0, 0] = 0
    >>> result_size_warning(labels, np.zeros((2, 4, 4), np.float32))[:36]
    'the heart covers 97% of the volume ('
    >>> result_size_warning(np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4), np.float32)) is None
    True
    """
    share = float(np.count_nonzero(labels)) / max(1, labels.size)
    if share <= FILLED_RESULT_SHARE:
        return None
    network = float(np.count_nonzero(np.asarray(network_probability) > 0.5)) / max(1, labels.size)
    return (f"the heart covers {share:.0%} of the volume (the network alone: {network:.0%}): check the heart strokes "
            "(a section filled as heart, heart painted on background, the two classes swapped)")


#: In-plane pixels of the strokes' bounding box above which the heart-to-background distance of
#: :func:`scribble_warnings` is measured on in-plane blocks (max-pooled) instead of pixels.
WARNING_DISTANCE_PIXELS = 1 << 18


#: :func:`axis_order_warning` speaks when strokes cross at least this many of the first axis's indices ...
ORDER_MIN_CROSSED = 8
#: ... and this many times as many as they lie on along the last axis.
ORDER_RATIO = 4


def axis_order_warning(scribbles: np.ndarray) -> Optional[str]:
    """A warning when bare arrays look ``(X, Y, Z)`` instead of ``(Z, Y, X)``, else None.

    Strokes are drawn on sections, so in a ``(Z, Y, X)`` array they lie on a few indices of the
    first axis and run across many of the last.  Arrays from a library that orders axes
    ``(X, Y, Z)`` (nibabel, ITK's ``GetArrayFromImage`` transposed by hand) show the reverse: strokes
    on a few indices of the last axis, across many of the first, which is then longer than the
    last (a stack has fewer sections than pixels across).  Nothing in an array says its order, and
    such a run would segment the wrong planes without a word; strokes drawn on side planes of a
    stack with more sections than columns look the same, so this is a warning, not an error.

    Examples
    --------
    >>> s = np.zeros((60, 40, 10), np.uint8); s[10:50, 20, 3] = 1; s[10:50, 30, 3] = 2
    >>> axis_order_warning(s).startswith("the strokes lie on 1 index of the arrays' last axis")
    True
    >>> axis_order_warning(np.transpose(s, (2, 1, 0))) is None
    True
    """
    n_first, _, n_last = scribbles.shape
    if n_first <= n_last:
        return None
    crossed = int(np.count_nonzero(scribbles.any(axis=(1, 2))))
    on_last = int(np.count_nonzero(scribbles.any(axis=(0, 1))))
    if crossed < ORDER_MIN_CROSSED or crossed < ORDER_RATIO * on_last:
        return None
    return (f"the strokes lie on {on_last} {'index' if on_last == 1 else 'indices'} of the arrays' last axis and "
            f"cross {crossed} of the first: are the image and scribbles (X, Y, Z)? They must be (Z, Y, X), sections "
            "first: np.transpose(image, (2, 1, 0, 3)) and np.transpose(scribbles, (2, 1, 0))")


#: :func:`scribble_warnings` names an antialiased brush when more than this share of the heart stroke pixels have a
#: background stroke pixel beside them (a rim of 1s around strokes of 2); strokes drawn apart that meet somewhere
#: have a few.
ANTIALIASED_SHARE = 0.3

#: :func:`scribble_warnings` names a fill when heart strokes cover at least this share of a section.
FILLED_SECTION_SHARE = 0.9


def scribble_warnings(scribbles: np.ndarray, spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0)) -> List[str]:
    """One-line warnings about scribbles that leave much to the network (the run still goes on).

    A section (nearly) filled with heart strokes, or with background strokes where it holds heart strokes too;
    strokes on one section only; heart and background strokes that touch; background strokes only far from the
    heart strokes (nothing tells the heart from the tissue around it).
    Everything but finding the stroked sections looks only at those sections, inside the strokes'
    bounding box, so a re-run of a large stack does not pay for whole-volume arrays here.

    Examples
    --------
    >>> s = np.zeros((3, 20, 20), np.uint8); s[1, 5, 5:8] = 1; s[1, 15, 5:8] = 2
    >>> scribble_warnings(s)[0].startswith("all strokes lie on section 1")
    True
    """
    warnings = []
    n = scribbles.shape[0]
    sections = np.flatnonzero(scribbles.reshape(n, -1).any(axis=1))
    if sections.size == 0:
        return warnings
    if sections.size == 1 and n > 1:
        warnings.append(f"all strokes lie on section {int(sections[0])}; the other sections follow the network "
                        "alone: add strokes on a few more sections")
    # The stroked sections only, cropped to the strokes' box: the rest holds no stroke.
    stack = scribbles[sections]
    rows = np.flatnonzero(stack.any(axis=(0, 2)))
    cols = np.flatnonzero(stack.any(axis=(0, 1)))
    box = stack[:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    heart, background = box == 1, box == 2
    # Every heart stroke lies in the box: its count there over the whole section's size.
    shares = heart.reshape(len(sections), -1).sum(axis=1) / float(scribbles[0].size)
    filled = np.flatnonzero(shares >= FILLED_SECTION_SHARE)
    if filled.size:
        # A fill tool rather than a brush: every voxel of the section, glass and other tissue too, is heart then,
        # and the cut spreads it (a section filled so made 99.6 % of a phantom heart, IoU 0.07).
        warnings.insert(0, f"heart strokes cover {shares[filled[0]]:.0%} of section {int(sections[filled[0]])}" + (
            f" (and {filled.size - 1} more section(s))" if filled.size > 1 else "")
            + ": a fill rather than strokes? Every voxel they cover is taken as heart; paint heart inside the "
              "heart only")
    # Background strokes over (nearly) all of a section that holds heart strokes too: a fill, or the empty canvas
    # saved as 2 (a palette in another order made every section so, and the result was the heart strokes alone).
    # A section without heart strokes may well be all background: a section past the heart's end.
    covered = background.reshape(len(sections), -1).sum(axis=1) / float(scribbles[0].size)
    flooded = np.flatnonzero((covered >= FILLED_SECTION_SHARE) & (shares > 0))
    if flooded.size:
        warnings.insert(0, f"background strokes cover {covered[flooded[0]]:.0%} of section "
                        f"{int(sections[flooded[0]])}" + (f" (and {flooded.size - 1} more section(s))"
                                                           if flooded.size > 1 else "")
                        + ": a fill, or an empty canvas saved as background (2)? Every voxel they cover is taken as "
                          "background, so the heart there is only what its strokes mark; paint background outside the "
                          "heart only")
    touching = np.zeros(box.shape[0], bool)
    beside = np.zeros(box.shape, bool)  # heart stroke pixels with a background stroke pixel as a 4-neighbour
    for axis in (1, 2):
        for a, b in ((heart, background), (background, heart)):
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(0, -1), slice(1, None)
            pair = a[tuple(lo)] & b[tuple(hi)]
            touching |= pair.reshape(box.shape[0], -1).any(axis=1)
            beside[tuple(lo if a is heart else hi)] |= pair
    heart_pixels = int(np.count_nonzero(heart))
    if heart_pixels and np.count_nonzero(beside) > ANTIALIASED_SHARE * heart_pixels:
        # An image editor's antialiased brush painting 2 on 0 leaves a rim of 1s: the background strokes' edges read
        # as heart strokes, and the result follows them (a gland tile fell from 0.525 to 0.452).
        warnings.append(f"{np.count_nonzero(beside) / heart_pixels:.0%} of the heart stroke pixels lie right beside "
                        "background strokes: an antialiased brush gives each background stroke a rim of heart (1) "
                        "pixels, and strokes drawn along each other leave nothing between them to the image; draw "
                        "them apart, without antialiasing (a pencil tool)")
    if touching.any():
        warnings.append(f"heart and background strokes touch on {int(touching.sum())} section(s) (first: "
                        f"{int(sections[np.flatnonzero(touching)[0]])}); the boundary there is taken as drawn")
    if heart.any() and background.any():
        nearest = _nearest_distance(heart, background, sections, spacing_zyx)
        _, ys, xs = np.nonzero(heart)
        extent = max(float((ys.max() - ys.min() + 1) * spacing_zyx[1]), float((xs.max() - xs.min() + 1)
                                                                              * spacing_zyx[2]))
        if nearest > max(extent, 10 * float(min(spacing_zyx))):
            # 1 mm pixels are what a file that states no pixel size gives (a PNG): its distances are pixels.
            unit = "pixels" if tuple(float(v) for v in spacing_zyx[1:]) == (1.0, 1.0) else "mm"
            warnings.append(f"the background strokes are all far from the heart strokes (nearest {nearest:.3g} "
                            f"{unit}); draw background next to the heart, where it touches other tissue")
    return warnings


def _nearest_distance(heart: np.ndarray, background: np.ndarray, sections: np.ndarray,
                      spacing_zyx: Sequence[float]) -> float:
    """Distance (mm) from the background strokes to the nearest heart stroke.

    ``heart`` and ``background`` are ``(S, Y, X)`` masks of the stroked sections ``sections`` (their
    indices, increasing), cropped alike.  Exact: each heart section's in-plane distance map, combined
    with the distance between sections (``d^2 = d_plane^2 + dz^2``); pairs of sections further apart
    than the nearest distance found so far are skipped.  Boxes over :data:`WARNING_DISTANCE_PIXELS` pixels
    a section are max-pooled in-plane by ``k`` first, which is within ``k`` pixels of the exact distance.
    """
    from .stroke_pull import plane_distance  # the stroke pull's in-plane distance map (SimpleITK's Maurer)

    k = max(1, int(np.ceil(np.sqrt(heart[0].size / WARNING_DISTANCE_PIXELS))))
    spacing = [float(s) for s in spacing_zyx]
    if k > 1:
        z, y, x = heart.shape
        pad = ((0, 0), (0, -y % k), (0, -x % k))
        heart, background = (np.pad(m, pad).reshape(z, (y + pad[1][1]) // k, k, (x + pad[2][1]) // k, k)
                             .any(axis=(2, 4)) for m in (heart, background))
        spacing[1:] = [s * k for s in spacing[1:]]
    drawn = [i for i in range(len(sections)) if background[i].any()]
    best = math.inf
    for i in np.flatnonzero(heart.reshape(len(sections), -1).any(axis=1)):
        gaps = sorted(((abs(int(sections[j]) - int(sections[i])) * spacing[0], j) for j in drawn))
        if gaps[0][0] >= best:
            continue
        plane = plane_distance(heart[i], spacing, 1.0)  # in mm: pixels of size 1
        for gap, j in gaps:
            if gap >= best:
                break  # the rest are further apart than the nearest pair found
            best = min(best, math.hypot(float(plane[background[j]].min()), gap))
    return best
