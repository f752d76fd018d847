"""Stain normalization of whole stacks: a reference stain fitted over sections, and a volume rendered in it.

:func:`fit_reference` fits the target stain on (a sample of) the training sections;
:func:`normalize_volume` renders a stack in it, each section fitted on its own (a section
that cannot be falls back to the stack's stain) and mapped tile by tile.  The stain optics
and the one-image fit (:class:`~ScribbleSegLib.stain.VahadaneNormalizer`) are in
:mod:`ScribbleSegLib.stain`.

Examples
--------
>>> from ScribbleSegLib.phantom import PhantomConfig, make_phantom
>>> volume = make_phantom(0, PhantomConfig(shape=(4, 96, 96))).image.array
>>> normalize_volume(volume, fit_reference([volume])).shape
(4, 96, 96, 3)
"""

from __future__ import annotations

import logging
import math
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np

from . import progress as _progress
from .errors import ScribbleSegError
from .optical_density import is_grey
from .runtime import in_order, section_workers, torch_threads
from .stain import (
    _STAGE, _TABLE_MIN_PIXELS, MIN_TISSUE_PIXELS, VahadaneNormalizer, _check_max_pixels, _check_rgb, _check_tile,
    _StainMapping, _stainable, _whole_at_least, tissue_mask,
)

# One logger for every stain message, as before the stacks' part had a module of its own (tests and users filter on it).
_log = logging.getLogger("ScribbleSegLib.stain")


def spread(count: int, total: int) -> np.ndarray:
    """``count`` evenly spaced indices in ``range(total)`` (all of them if ``count >= total``).

    Examples
    --------
    >>> spread(3, 10).tolist(), spread(5, 3).tolist()
    ([0, 4, 9], [0, 1, 2])
    """
    _whole_at_least(count, 1, "sections")
    return np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int))


def _sections_with_tissue(volume: np.ndarray, downsample: int, luminosity_threshold: float) -> List[int]:
    """Indices of the sections whose strided copy holds a stainable tissue pixel (blank glass holds none).

    Examples
    --------
    >>> volume = np.full((3, 8, 8, 3), 250, np.uint8); volume[1, 2:6, 2:6] = (150, 60, 170)
    >>> _sections_with_tissue(volume, 2, 0.8)
    [1]
    """
    return [z for z, section in enumerate(volume) if len(_tissue_pixels(section, downsample, luminosity_threshold))]


def _tissue_pixels(section: np.ndarray, downsample: int, luminosity_threshold: float) -> np.ndarray:
    """The stainable tissue pixels ``(N, 3)`` of a section's strided copy (:func:`tissue_mask`, :func:`_stainable`)."""
    small = section[::downsample, ::downsample]
    pixels = small[tissue_mask(small, luminosity_threshold)]
    return pixels[_stainable(pixels)]  # the quota goes to tissue, not to black borders


def _sample_pixels(sections: Sequence[np.ndarray], downsample: int, luminosity_threshold: float,
                   max_pixels: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``max_pixels`` tissue pixels (N, 3) from strided copies of ``sections``.

    Striding (not averaging) keeps the pixel-value distribution, and so the
    percentiles, of the full-resolution section.  Each section gives at most
    ``2 * max_pixels / len(sections)`` pixels, so no one section dominates.
    Grey sections (:func:`~ScribbleSegLib.optical_density.is_grey`) among sections in colour give none: their
    pixels pulled the haematoxylin atom towards grey, and every section that
    used the stack's stain was rendered in it.
    """
    quota = max(1, math.ceil(2 * max_pixels / max(1, len(sections))))
    parts = []
    for section in sections:
        pixels = _tissue_pixels(section, downsample, luminosity_threshold)
        if len(pixels) > quota:
            pixels = pixels[rng.choice(len(pixels), size=quota, replace=False)]
        parts.append(pixels)
    coloured = [p for p in parts if len(p) and not is_grey(p)]
    if coloured and len(coloured) < sum(1 for p in parts if len(p)):
        parts = coloured
    pixels = np.concatenate(parts) if parts else np.empty((0, 3), np.uint8)
    if len(pixels) > max_pixels:
        pixels = pixels[rng.choice(len(pixels), size=max_pixels, replace=False)]
    return pixels


def _settings(norm: VahadaneNormalizer) -> dict:
    return {"luminosity_threshold": norm.luminosity_threshold, "dictionary_lambda": norm.dictionary_lambda,
            "concentration_method": norm.concentration_method, "lasso_lambda": norm.lasso_lambda,
            "scale_pixels": norm.scale_pixels}


def _fit_sections(sections: Sequence[np.ndarray], settings: dict, downsample: int, max_pixels: int,
                  seed: int, fallback_stains: Optional[np.ndarray] = None, *,
                  every_pixel_if_few: bool = False, of: str = "") -> VahadaneNormalizer:
    norm = VahadaneNormalizer(**settings)
    pixels = _sample_pixels(sections, downsample, norm.luminosity_threshold, max_pixels,
                            np.random.default_rng(seed))
    if every_pixel_if_few and len(pixels) < MIN_TISSUE_PIXELS and downsample > 1:
        # A small stack or tile, strided, can hold too few tissue pixels where its every pixel holds enough.
        # (Not for one section of a stack: that one falls back to the stack's stain.)
        pixels = _sample_pixels(sections, 1, norm.luminosity_threshold, max_pixels, np.random.default_rng(seed))
    norm._fit_pixels(pixels, fallback_stains, of)
    return norm


def _as_sections(images: Iterable[np.ndarray]) -> list:
    sections = []
    for index, image in enumerate(images):
        image = _check_rgb(image, f"reference image {index}")
        if image.ndim == 3:
            sections.append(image)
        elif image.ndim == 4:
            sections.extend(image)
        else:
            raise ScribbleSegError(
                f"stain normalization: reference image {index} has shape {image.shape}, "
                "expected (Y, X, 3) or (Z, Y, X, 3)"
            )
    if not sections:
        raise ScribbleSegError("stain normalization: no reference images given")
    return sections


def _check_downsample(downsample: int) -> int:
    return _whole_at_least(downsample, 1, "fit_downsample")


def fit_reference(
    images: Iterable[np.ndarray],
    sections: int = 16,
    fit_downsample: int = 4,
    max_pixels: int = 50_000,
    seed: int = 0,
    concentration_method: str = "nnls",
) -> VahadaneNormalizer:
    """Fit the target stain on (a sample of) the training data.

    Parameters
    ----------
    images : iterable of ndarray, uint8
        Training images, each ``(Y, X, 3)`` or a volume ``(Z, Y, X, 3)``.
    sections : int
        Learn from this many sections spread evenly over all of them.
    fit_downsample : int
        In-plane stride of the copies the fit sees.
    max_pixels : int
        Learn from at most this many tissue pixels in all.
    seed : int
        Seed of the pixel sampling.
    concentration_method : {"nnls", "lasso"}
        How concentrations are computed (stored with the stain and used by every
        normalization to it).

    Returns
    -------
    VahadaneNormalizer
        The fitted reference; store it with :meth:`VahadaneNormalizer.to_dict`.

    Raises
    ------
    ScribbleSegError
        If the sampled sections hold too little tissue or only one stain.

    Examples
    --------
    >>> from ScribbleSegLib.phantom import PhantomConfig, make_phantom
    >>> phantom = make_phantom(0, PhantomConfig(shape=(4, 96, 96)))
    >>> reference = fit_reference([phantom.image.array])
    >>> reference.stain_matrix.shape, reference.max_concentrations.shape  # two stains' RGB optical densities
    ((2, 3), (2,))
    """
    _check_max_pixels(max_pixels)
    all_sections = _as_sections(images)
    chosen = [all_sections[i] for i in spread(sections, len(all_sections))]
    settings = _settings(VahadaneNormalizer(concentration_method=concentration_method))
    return _fit_sections(chosen, settings, _check_downsample(fit_downsample), max_pixels, seed,
                         every_pixel_if_few=True)


def normalize_volume(
    volume: np.ndarray,
    target: Union[VahadaneNormalizer, dict],
    fit_downsample: int = 4,
    per_section: bool = True,
    sections: int = 16,
    max_pixels: int = 50_000,
    tile: int = 512,
    threads: int = 1,
    seed: int = 0,
    progress: Optional[_progress.ProgressCallback] = None,
    cancel: Optional[_progress.CancelToken] = None,
    name: Optional[str] = None,
) -> np.ndarray:
    """Render a serial-section volume in the target stain.

    By default each section's stain is fitted on its own strided copy, which also
    evens out the section-to-section intensity differences of serial sections
    (thickness, staining time): on two phantom stacks it cut the section-to-section
    change of the mean normalized concentrations from 7-9 % (one volume stain)
    to 1.5-2.6 % (``benchmarks/bench_stain.py --volume``).  A section that cannot be fitted (too little
    tissue, one stain) uses the volume's stain instead, which is fitted once on
    strided copies of ``sections`` sections spread over the stack.  With
    ``per_section=False`` every section uses the volume's stain: cheaper, and
    right when the intensity differences between sections are real.  Sections are
    then mapped tile by tile at full resolution.

    If the volume itself cannot be fitted (no tissue, or grey / single-stain
    tissue) and no section can either, it is returned unchanged (a copy), with a
    logged warning: there is no stain to map.

    Parameters
    ----------
    volume : ndarray, uint8, shape (Z, Y, X, 3)
    target : VahadaneNormalizer or dict
        The fitted reference stain, or its dict as a model file holds it (``model.stain``).
    fit_downsample : int
        In-plane stride of the copies the fits see.
    per_section : bool
        Fit each section's stain on its own (default) or use the volume's stain.
    sections : int
        Number of sections the volume's stain is learned from.
    max_pixels : int
        Tissue pixels per fit.
    tile : int
        Block edge of the full-resolution map, in pixels.
    threads : int
        Torch intra-op threads for the map (see :meth:`VahadaneNormalizer.transform`).
    seed : int
        Seed of the pixel sampling.
    progress, cancel
        See :mod:`ScribbleSegLib.progress`; reported per section.
    name : str, optional
        How the logged notes name the volume (e.g. "training volume 2 of 4"), where several are normalized.

    Returns
    -------
    ndarray, uint8, shape (Z, Y, X, 3)
        A new array; ``volume`` is not modified.

    Examples
    --------
    >>> from ScribbleSegLib.phantom import PhantomConfig, make_phantom
    >>> target = VahadaneNormalizer().fit(make_phantom(seed=3, config=PhantomConfig(shape=(4, 96, 96))).image.array[2])
    >>> volume = make_phantom(seed=4, config=PhantomConfig(shape=(4, 96, 96))).image.array
    >>> normalized = normalize_volume(volume, target)
    >>> normalized.shape, normalized.dtype, normalized is volume
    ((4, 96, 96, 3), dtype('uint8'), False)
    """
    volume = _check_rgb(volume, "volume")
    if volume.ndim != 4:
        raise ScribbleSegError(f"stain normalization: the volume must have shape (Z, Y, X, 3), got {volume.shape}")
    if isinstance(target, dict):  # what a model file holds (model.stain): the obvious thing to pass
        target = VahadaneNormalizer.from_dict(target)
    if not isinstance(target, VahadaneNormalizer):
        raise ScribbleSegError(f"target must be a fitted VahadaneNormalizer or its dict (model.stain), "
                               f"got {type(target).__name__}")
    target._require_fitted("target stain")
    _check_tile(tile)
    _check_max_pixels(max_pixels)
    _whole_at_least(threads, 1, "threads")
    from .checks import check_progress_cancel, check_seed

    check_seed(seed)
    check_progress_cancel(progress, cancel)
    if name is not None and not isinstance(name, str):
        raise ScribbleSegError(f"name must be a string or None, got {type(name).__name__}")
    downsample = _check_downsample(fit_downsample)
    settings = _settings(target)
    n_sections = volume.shape[0]
    # One section (a tile): its own fit is the volume's, made with every pixel where a strided copy holds too few;
    # fitting it again on the strided copy alone only failed there and noted so, once per tile.
    per_section = per_section and n_sections > 1
    of = f" of {name}" if name else ""
    named = f"{name}: " if name else ""

    # Spread over the sections that hold tissue: blank glass added at the ends (registration padding) moved which
    # sections the fit saw, and took their share of its pixels, and so changed every section's colours.
    stained = _sections_with_tissue(volume, downsample, settings["luminosity_threshold"]) or list(range(n_sections))
    chosen = [volume[stained[i]] for i in spread(sections, len(stained))]
    _progress.report(progress, _STAGE, 0.0, "fitting the volume's stain")
    try:
        # Stain vectors too close to tell apart (pale eosin) fall back to the target's, with a message.
        volume_stain: Optional[VahadaneNormalizer] = _fit_sections(chosen, settings, downsample, max_pixels, seed,
                                                                   fallback_stains=target.stain_matrix,
                                                                   every_pixel_if_few=True, of=of)
    except ScribbleSegError as exc:
        volume_stain = None
        if not per_section:
            _log.warning("%s%s; the volume is left as it is", named, exc)
            return volume.copy()
        _log.warning("%s%s; sections that cannot be fitted on their own are left as they are", named, exc)

    out = np.empty_like(volume)
    pixels_per_section = volume.shape[1] * volume.shape[2]

    def render(z: int) -> Optional[str]:
        """Section ``z`` into ``out[z]``; the reason it could not be fitted on its own, or None."""
        _progress.check(cancel)
        mapping, reason = shared, None
        if per_section:
            stain = volume_stain
            try:
                stain = _fit_sections([volume[z]], settings, downsample, max_pixels, seed)
            except ScribbleSegError as exc:
                reason = str(exc)
            mapping = None if stain is None else _StainMapping(
                stain, target, pixels_per_section >= _TABLE_MIN_PIXELS, cancel)
        if mapping is None:
            out[z] = volume[z]
        else:
            mapping.apply(volume[z], out[z], tile, cancel)
        return reason

    unfitted: list = []

    def done(z: int, reason: Optional[str]) -> None:
        if reason is not None:
            # Routine for the sections at the ends of a stack: one summary line below, details at debug.
            _log.debug("section %d: %s; using the volume's stain", z, reason)
            unfitted.append(z)
        _progress.report(progress, _STAGE, (z + 1) / n_sections, f"section {z + 1}/{n_sections}")

    with torch_threads(threads):
        shared = None
        if volume_stain is not None and not per_section:
            shared = _StainMapping(volume_stain, target, pixels_per_section * n_sections >= _TABLE_MIN_PIXELS, cancel)
        # Sections side by side on a 2-core CPU (each its own fit and map, into its own plane); the messages and
        # the progress follow the sections' order, whichever thread ran them.
        in_order(render, range(n_sections), section_workers("cpu", pixels_per_section) if threads == 1 else 1, done)
    if unfitted and volume_stain is not None:
        # "Too little tissue" misread small all-tissue sections: what they lack is sampled pixels (MIN_TISSUE_PIXELS).
        # At debug: the volume's stain is a sound fallback that asks nothing of the user, and as a note the line
        # came with every run on the README's own phantom (36 of its 64 sections), teaching users to skip notes.
        _log.debug("stain normalization%s: %d of %d sections give too few tissue pixels (small or pale sections) or "
                  "show one stain, too little to fit on their own (first: %d); they use the volume's stain", of,
                  len(unfitted), n_sections, unfitted[0])
    return out
