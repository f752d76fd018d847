"""The scale the network runs a stack at: the stack's pixel size against the model's training pixel size.

:func:`scale_pixel` picks the in-plane pixel size a run goes by (a given spacing's, a :class:`Volume`'s, or the
scan's that its file states); :func:`network_scale` turns it into the ``(y, x)`` factors that bring the sections to
the model's pixel size, or runs the stack at its own scale with a one-line warning (no pixel size, one far from the
model's, pixels not square, a print density); :func:`logged_network_scale` logs those and warns of sections that the
network, at its pixel size, sees little of.

:mod:`ScribbleSegLib.pipeline` runs them before the M-Unet and re-exports the public functions; this module does
not import it.
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

from .geometry import UNKNOWN_PIXEL, Volume, micrometres_question

# The warnings were logged by pipeline.py before they moved here: the logger keeps its name.
log = logging.getLogger("ScribbleSegLib.pipeline")


#: Stacks whose pixels are more than this many times coarser than the model's are not enlarged to its scale:
#: the network's time and memory would grow with the square of the factor.
MAX_RESAMPLING = 4.0

#: Stacks whose pixels are up to this many times finer than the model's are shrunk to its scale (cheaper than
#: running at their own): a scan at a higher magnification than the training data's.  A missing or mistyped
#: spacing (1 mm, micrometres as mm) is caught before.  Measured: 5 and 8 times finer phantoms,
#: M-Unet IoU 0.89-0.91 shrunk against 0.44-0.47 at their own scale (BENCHMARKS.md, "Stacks scanned finer than
#: the model").
MAX_SHRINK = 16.0


#: In-plane pixels longer than this many times their width are not a scan's (see :func:`network_scale`).
NON_SQUARE_PIXELS = 1.5


#: Densities that image editors, screens and printers write into a PNG's or JPEG's header (dots per inch).
PRINT_DENSITIES_DPI = (72, 96, 100, 120, 144, 150, 200, 240, 300, 600, 1200)


def print_resolution(pixel_mm: float) -> Optional[int]:
    """The dots per inch that a pixel size is, when it is one of :data:`PRINT_DENSITIES_DPI`, else None.

    A PNG or JPEG saved by an image editor states such a density, and ITK reads it as the pixel size (96 dpi:
    0.265 mm); no slide scanner's pixel is that coarse.

    Examples
    --------
    >>> print_resolution(25.4 / 96), print_resolution(0.00025), print_resolution(0.03)
    (96, None, None)
    """
    for dpi in PRINT_DENSITIES_DPI:
        if abs(pixel_mm * dpi - 25.4) < 1e-3 * 25.4:  # a PNG stores whole pixels per metre: 0.26458 mm
            return dpi
    return None


def network_scale(spacing_xy: Optional[Sequence[float]], model, warnings: Optional[List[str]] = None,
                  section_yx: Optional[Sequence[int]] = None) -> Tuple[float, float]:
    """``(y, x)`` factors that bring the stack's pixels to the model's training pixel size.

    A stack without a spacing (``None``, or 1 mm per pixel or coarser: what a file format states when it
    stores none, as a 2D tile read without a spacing has, also read downsampled), or with one more than
    :data:`MAX_RESAMPLING` times coarser or :data:`MAX_SHRINK` times finer than the model's, runs at its own
    pixel scale, and a one-line warning goes to ``warnings``; so do pixels over :data:`NON_SQUARE_PIXELS` times
    longer than wide.  A pixel coarser than 1 mm but not of whole millimetres is named with what it would be in
    micrometres, the likeliest mistake in a given spacing.  A stack more than :data:`MAX_SHRINK` times finer
    is told the ``downsample`` that brings it near the model's scale, unless its sections (``section_yx``, in
    pixels, when given) would then be under half the network's patch (:data:`SMALL_SECTION_SHARE`): a 1000-pixel
    tile at 40x, 71 times finer than the starter model, is not told to become 14 pixels wide.

    Examples
    --------
    >>> from ScribbleSegLib.model_file import load_model
    >>> from ScribbleSegLib.starter import starter_model_path
    >>> model = load_model(starter_model_path())
    >>> x, y = model.voxel_size[:2]  # the model's training pixel, (x, y) in mm
    >>> network_scale((x, y), model)
    (1.0, 1.0)
    >>> network_scale((2 * x, 2 * y), model)  # pixels twice as coarse: the sections are enlarged twice
    (2.0, 2.0)
    >>> warnings = []
    >>> network_scale(None, model, warnings), len(warnings)  # no spacing: its own scale, and a warning
    ((1.0, 1.0), 1)
    """
    from .inference import network_scale as factors

    if spacing_xy is not None and warnings is not None:
        x, y = (float(v) for v in spacing_xy[:2])
        if max(x / y, y / x) > NON_SQUARE_PIXELS:
            # Sections are scanned with square pixels: a file whose sections lie along another of its axes, or a
            # spacing typed as Z Y X, shows up as long pixels (and the network runs on cross-sections).
            warnings.append(f"the sections' pixels are not square ({x:g} x {y:g} mm): does the file hold its sections "
                            "along another axis, or was the spacing given in another order than X Y Z?")
        question = micrometres_question(min(x, y))
        if question:
            # 0.62 for 0.62 um, given to train and segment alike, ran without a word: the areas and volumes came out
            # a million times too large (a model trained so records it, so nothing else looked wrong).
            warnings.append(f"the image's pixel size {question}")
    model_xy = tuple(float(v) for v in getattr(model, "voxel_size", (1.0, 1.0, 1.0))[:2])
    if model_xy == UNKNOWN_PIXEL:  # a model that never knew its training pixel size
        return 1.0, 1.0
    # 1 mm per pixel is what a file states when it stores no pixel size; read with downsample N it becomes N mm.
    # No microscope scans sections at 1 mm per pixel or coarser: such a size is not known either.
    pixel = None if spacing_xy is None else min(float(v) for v in spacing_xy[:2])
    if pixel is None or pixel >= UNKNOWN_PIXEL[0]:
        # Whole millimetres are what a file without a pixel size states (1 mm), read with downsample N (N mm).
        if warnings is not None and (pixel is None or pixel == UNKNOWN_PIXEL[0]):
            warnings.append(f"the image states no pixel size; the model was trained at {model_xy[0]:g} mm per pixel, "
                            "so results may be poor if the scales differ (give the spacing, in mm)")
        elif warnings is not None and pixel == round(pixel):
            # N mm: a file without one read with downsample N, or a spacing typed in whole micrometres (40 for
            # 40 um), which was told "the image states no pixel size" though one was given.
            warnings.append(f"the image's pixel size {pixel:g} mm is what a file that states none gives when read "
                            f"with downsample {pixel:g}, or a spacing in micrometres ({pixel:g} um is "
                            f"{pixel / 1000:g} mm): it runs at its own scale; the model was trained at "
                            f"{model_xy[0]:g} mm per pixel (give the spacing, in mm)")
        elif warnings is not None:
            # A spacing typed in micrometres (9.2 for 9.2 um) was told "the image states no pixel size".
            warnings.append(f"the image's pixel size {pixel:g} mm is coarser than any scan's, so it runs at its own "
                            f"scale; the model was trained at {model_xy[0]:g} mm per pixel (the spacing is in mm: "
                            f"{pixel:g} um is {pixel / 1000:g} mm)")
        return 1.0, 1.0
    scale = factors(spacing_xy, model_xy)
    if _beyond_limits(scale):
        if warnings is not None:
            dpi = print_resolution(float(spacing_xy[0]))
            finer = round(model_xy[0] / float(spacing_xy[0]))
            # A stack scanned finer than the model: read downsampled, the network sees it near its own scale.
            closer = ""
            if finer > MAX_SHRINK:
                small = None
                if section_yx is not None:  # each axis at its own scale (a spacing typed wrong shrinks one only)
                    rows, cols = int(section_yx[0] * scale[0]), int(section_yx[1] * scale[1])
                    small = _narrow_for_patch(model, rows, cols)
                closer = (f"; at the model's scale its sections would be {cols}x{rows} pixels, too few for the "
                          "network to read" if small else
                          f"; read downsampled by {finer} (downsample {finer}), the stack would be near the model's "
                          "scale")
            why = (f"it is {dpi} dots per inch, a print size that the image's file states, not the scan's: give the "
                   "scan's pixel size (spacing)" if dpi else
                   "is the spacing right? If it is, the model learnt another magnification: the network alone will "
                   "be poor and the strokes must carry the result; a model trained on images like these serves "
                   f"best{closer}")
            # Both sizes where they differ: the far one may be the second (a spacing typed wrong in one axis).
            size = (f"{float(spacing_xy[0]):g} mm" if float(spacing_xy[0]) == float(spacing_xy[1]) else
                    f"{float(spacing_xy[0]):g} x {float(spacing_xy[1]):g} mm")
            warnings.append(f"the image's pixel size {size} is far from the model's {model_xy[0]:g} mm; not "
                            f"resampling ({why})")
        return 1.0, 1.0
    return scale


def _beyond_limits(scale: Sequence[float]) -> bool:
    """Whether ``(y, x)`` factors to the model's pixel size lie beyond :data:`MAX_RESAMPLING` or :data:`MAX_SHRINK`."""
    return max(scale) > MAX_RESAMPLING or 1.0 / min(scale) > MAX_SHRINK


def far_from_model(spacing_xy: Optional[Sequence[float]], model) -> bool:
    """Whether the stack's stated pixel size is so far from the model's training pixel size that the network runs
    it at its own scale (:func:`network_scale`): the model learnt another magnification, and neither its network
    nor its training pixels (the bank) read the target there.

    False where either size is unknown (no spacing, 1 mm or coarser, a model that never knew its own): the scales
    may then be alike.

    Examples
    --------
    >>> class Model: voxel_size = (0.0177, 0.0177, 0.05)
    >>> far_from_model((0.0005, 0.0005), Model()), far_from_model((0.005, 0.005), Model())
    (True, False)
    >>> far_from_model(None, Model()), far_from_model((1.0, 1.0), Model())
    (False, False)
    """
    from .inference import network_scale as factors

    model_xy = tuple(float(v) for v in getattr(model, "voxel_size", (1.0, 1.0, 1.0))[:2])
    if spacing_xy is None or model_xy == UNKNOWN_PIXEL or min(float(v) for v in spacing_xy[:2]) >= UNKNOWN_PIXEL[0]:
        return False
    return _beyond_limits(factors(spacing_xy, model_xy))


def scale_pixel(image, geometry, spacing) -> Optional[Tuple[float, float]]:
    """The in-plane pixel size ``(x, y)`` in mm that the network's scale reads (:func:`network_scale`).

    A given ``spacing``'s; a :class:`Volume`'s grid's, or the scan's pixel size that its file states apart
    from the grid (``Volume.scan_pixel``: an ImageJ, OME or Aperio TIFF read on ITK's 1 mm pixels); None for
    an array without a spacing.

    Examples
    --------
    >>> import numpy as np
    >>> from ScribbleSegLib.geometry import Geometry
    >>> tile = Volume(np.zeros((1, 4, 4, 3), np.uint8), Geometry((1.0, 1.0, 1.0)), scan_pixel=(0.00025, 0.00025))
    >>> scale_pixel(tile, tile.geometry, None)
    (0.00025, 0.00025)
    >>> scale_pixel(tile.array, tile.geometry, None) is None
    True
    """
    if spacing is None and not isinstance(image, Volume):
        return None
    return image.scan_spacing[:2] if spacing is None else tuple(float(v) for v in geometry.spacing[:2])


#: Sections narrower than this share of the network's patch (``ModelConfig.patch``), in either axis at its pixel
#: size, get a warning: the network sees little around each pixel (8x64-pixel sections scored 0.86 with the
#: network, 4x4 ones came out empty, in a new-user pass of 2026-12-06).
SMALL_SECTION_SHARE = 0.5


def _narrow_for_patch(model, rows: float, cols: float) -> Optional[int]:
    """The network's patch in pixels (``ModelConfig.patch``) when sections of ``rows`` x ``cols`` pixels at its
    pixel size are narrower than :data:`SMALL_SECTION_SHARE` of it, else None (also for a model without one)."""
    patch = getattr(getattr(model, "config", None), "patch", None)
    return patch if patch and min(rows, cols) < SMALL_SECTION_SHARE * patch else None


#: Serial sections for a 3D reconstruction lie micrometres apart, every section or every few (the paper's embryo:
#: tens of micrometres); a distance over this many mm between a stack's sections, with its pixel size known, is
#: asked about as micrometres given as mm (5 for 5 um): the cut links neighbouring sections by their distance, and
#: the volumes come out a thousand times too large.  1 mm itself is what a file that states no distance gives.
FARTHEST_SECTIONS = 1.0


def section_distance_warning(spacing_zyx: Sequence[float], sections: int,
                             spacing_xy: Optional[Sequence[float]]) -> Optional[str]:
    """A warning for sections farther apart than :data:`FARTHEST_SECTIONS` in a stack of two or more whose in-plane
    pixel size ``spacing_xy`` is known (under 1 mm); None otherwise.

    Examples
    --------
    >>> section_distance_warning((5.0, 0.015, 0.015), 8, (0.015, 0.015))[:44]
    'the sections lie 5 mm apart, farther than se'
    >>> section_distance_warning((0.03, 0.015, 0.015), 8, (0.015, 0.015)) is None
    True
    >>> section_distance_warning((5.0, 1.0, 1.0), 8, None) is None  # nothing states the pixel size: said already
    True
    """
    z = float(spacing_zyx[0])
    if sections < 2 or z <= FARTHEST_SECTIONS or spacing_xy is None or min(spacing_xy[:2]) >= UNKNOWN_PIXEL[0]:
        return None
    return (f"the sections lie {z:g} mm apart, farther than serial sections for a 3D reconstruction: was the "
            f"spacing given in micrometres? It is in mm ({z:g} um is {z / 1000:g} mm); the cut links neighbouring "
            "sections by their distance, and the volume is reported in mm^3")


def logged_network_scale(spacing_xy: Optional[Sequence[float]], model, warnings: List[str],
                         section_yx: Optional[Sequence[int]] = None,
                         spacing_zyx: Optional[Sequence[float]] = None, sections: int = 1) -> Tuple[float, float]:
    """:func:`network_scale`, logging the warnings it appends to ``warnings``; with the sections' size
    ``section_yx`` in pixels, also one for sections that the network, at its pixel size, sees little of
    (:data:`SMALL_SECTION_SHARE` of its patch); with the stack's ``spacing_zyx`` and number of ``sections``, one
    for sections implausibly far apart (:func:`section_distance_warning`).

    Examples
    --------
    >>> class Model: voxel_size = (1.0, 1.0, 1.0)
    >>> logged_network_scale((0.5, 0.5), Model(), [])
    (1.0, 1.0)
    """
    before = len(warnings)
    scale = network_scale(spacing_xy, model, warnings, section_yx)
    if spacing_zyx is not None:
        far = section_distance_warning(spacing_zyx, sections, spacing_xy)
        if far:
            warnings.append(far)
    if section_yx is not None:
        rows, cols = (max(1, round(n * f)) for n, f in zip(section_yx, scale))
        patch = _narrow_for_patch(model, rows, cols)
        if patch:
            # Sections far longer than wide are more often a stack saved along another axis (Y, X, Z) than cut so.
            why = ("its sections stored along another axis of the file?" if max(rows, cols) >= 4 * min(rows, cols)
                   else "a stack downsampled too far?")
            warnings.append(f"the sections are {cols}x{rows} pixels at the network's pixel size, under half its "
                            f"{patch}-pixel patch: it sees little around each pixel, and its output may be poor "
                            f"({why})")
    for line in warnings[before:]:
        log.warning(line)
    return scale
