"""Stain optics (Beer–Lambert) and Vahadane stain normalization.

Optical density (OD) of an 8-bit RGB pixel is ``-log((I + 1) / 256)``; a stained
pixel's OD is the concentration-weighted sum of its stains' OD vectors.

Vahadane et al. (IEEE TMI 2016) normalization, as implemented here:

1. OD of the tissue pixels: CIE lightness ``L* / 100`` below ``luminosity_threshold``
   (0.8).
2. Sparse non-negative dictionary learning with two unit-norm, non-negative atoms
   (the stain OD vectors) and L1 weight ``dictionary_lambda`` (0.1) on a random
   sample of tissue pixels; the atoms are ordered haematoxylin first (see
   :func:`order_stains`).
3. Per-pixel stain concentrations by non-negative least squares, or non-negative
   lasso with ``lasso_lambda`` (0.01).
4. Each stain's concentrations are scaled so that a high percentile of them matches
   the target's, then recomposed with the target's stain matrix.  The percentile is
   taken over the pixels the stain dominates (``scale_pixels`` "dominant": the 95th
   percentile over the tissue pixels where the stain makes at least
   :data:`DOMINANT_SHARE` of the concentration), so it measures how dark the nuclei
   are, not how much of the tissue they cover.  Models made before this rule keep
   theirs (``scale_pixels`` "tissue": the 99th percentile over all tissue), which a
   tile with few nuclei reads far too low.  Near-saturated pixels (ink, thick
   folds) are left out of both.  A tissue whose two fitted stain vectors are too
   close to tell apart (a pale-eosin tile) uses the target's stain vectors, with a
   warning.

With two stains every per-pixel problem in steps 2 and 3 is a 2-variable
non-negative quadratic program, which :func:`_solve_concentrations` solves exactly
by enumerating the active sets; no inner iterations are needed.

This module fits one image (:class:`VahadaneNormalizer`); a reference over training stacks and a whole
stack rendered in it, section by section, are in :mod:`ScribbleSegLib.stain_volume`.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

import numpy as np
import torch

from . import progress as _progress
from .errors import ScribbleSegError
from .runtime import torch_threads

#: Background light intensity; the +1 offset keeps log() finite at I = 0.
_I0 = 256.0

#: A fit needs at least this many tissue pixels (after downsampling).
MIN_TISSUE_PIXELS = 500

#: Two fitted stain vectors closer than this cosine are one stain (grey or single-stain image).  Real H&E can
#: come close: a purple real tile fits at 0.983-0.985, the real tiles of the issue "Scribbles that carry the
#: result" at 0.97-0.984; a grey image or one stain alone at 0.994-0.998 (0.985 with noise of 8 grey levels).
#: Using the target's vectors on that purple tile cost its network 0.12 IoU (BENCHMARKS.md, "Stain vectors
#: that real H&E brings close").
MAX_STAIN_COSINE = 0.99

#: Maps over at least this many pixels go through a full colour lookup table.
_TABLE_MIN_PIXELS = 1 << 25

#: Which pixels set the concentration scale, and the percentile of a stain's concentration over them that is
#: matched to the target's.  "tissue": all tissue pixels, the rule of models made before 2026-12-05 (their
#: stored stain has no ``scale_pixels``).  "dominant": the pixels where the stain makes at least
#: ``DOMINANT_SHARE`` of the concentration.  Over all tissue the 99th percentile of haematoxylin reads the
#: nuclei only where they cover more than about 1 % of the tissue; on a tile of stroma with few nuclei it read
#: a half to a quarter of their darkness, and the stroma's faint haematoxylin was rendered as nuclei.  The 95th
#: and not the 99th percentile over the dominant pixels: that subset's top percent lies where a strong eosin
#: clips the 8-bit green channel, which biased a thick section's scale (BENCHMARKS "Stain normalization").
SCALE_PERCENTILES = {"tissue": 99.0, "dominant": 95.0}
#: The rule of new fits.
DEFAULT_SCALE_PIXELS = "dominant"
#: A pixel is a stain's when the stain makes at least this share of its concentration.
DOMINANT_SHARE = 0.7
#: Fewer dominant pixels than this in a fit: the share is lowered (to 1/2, then to any) until there are as many.
MIN_DOMINANT_PIXELS = 100

#: Pixels this dark or darker in every channel (OD above about 2.1 in red, green and blue) are
#: near-saturated, near-black: ink, thick folds, debris.  No H&E mix is that dark in blue, so
#: they are kept out of the stain fit and the concentration percentile.
SATURATED_RGB = 30
#: Both H&E stains absorb green at least about as much as red or blue (the haematoxylin of the Ruifrok-Johnston
#: vectors by 1.08 times, eosin by far more; real tiles' tissue pixels 1.13 and more at their 0.1 % quantile, the
#: phantoms' 0.77 at their 0.01 %).  The green and teal dyes that mark a slide's margins absorb red or blue far
#: more than green: pixels whose green optical density is below this share of their red or blue one are such a
#: dye, and kept out of the fit and the percentile.  Left in at 0.5-3.4 % of a real slide region's tissue pixels,
#: they turned its fitted haematoxylin from about (0.63, 0.68, 0.37) to (0.80, 0.52, 0.30), its scale from 3.75 to
#: 6.08, and the tiles a model trained on it renders darker (BENCHMARKS.md, "Marking dye on a slide").
MIN_GREEN_OD_SHARE = 0.8

_STAGE = "stain normalization"
_log = logging.getLogger(__name__)


# rgb_to_od, od_to_rgb and is_grey live in a torch-free module (the phantom and the section reader need them).
from .optical_density import is_grey, od_to_rgb, rgb_to_od  # noqa: E402,F401


# OD of every 8-bit value, and the sRGB-to-linear-light table for the tissue mask.
_OD_LUT = rgb_to_od(np.arange(256))
_LINEAR_LUT = np.where(
    np.arange(256) / 255.0 <= 0.04045,
    np.arange(256) / 255.0 / 12.92,
    ((np.arange(256) / 255.0 + 0.055) / 1.055) ** 2.4,
).astype(np.float32)
_LUMA = (0.2126, 0.7152, 0.0722)  # Rec. 709 / sRGB relative luminance weights


def _check_rgb(rgb: np.ndarray, what: str = "image") -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim < 2 or rgb.shape[-1] != 3:
        raise ScribbleSegError(
            f"stain normalization: the {what} must be uint8 RGB with shape (..., 3), "
            f"got {rgb.dtype} {tuple(rgb.shape)}"
        )
    return rgb


def tissue_mask(rgb: np.ndarray, luminosity_threshold: float = 0.8) -> np.ndarray:
    """Boolean mask of pixels darker than ``luminosity_threshold`` (CIE ``L* / 100``).

    Parameters
    ----------
    rgb : ndarray, uint8, shape (..., 3)
        sRGB pixels.
    luminosity_threshold : float
        Lightness in [0, 1]; 0.8 (Vahadane's value) keeps stained tissue and drops
        the bright glass.

    Returns
    -------
    ndarray of bool, shape ``rgb.shape[:-1]``

    Examples
    --------
    >>> tissue_mask(np.array([[[255, 255, 255], [128, 64, 200]]], np.uint8)).tolist()  # glass, tissue
    [[False, True]]
    """
    rgb = _check_rgb(rgb)
    # L* < 100 t  <=>  Y < f^-1(t), so compare linear-light luminance and skip the cube root.
    lightness = (100.0 * luminosity_threshold + 16.0) / 116.0
    y_max = lightness**3 if lightness > 6.0 / 29.0 else 3.0 * (6.0 / 29.0) ** 2 * (lightness - 4.0 / 29.0)
    y = sum(w * _LINEAR_LUT[rgb[..., c]] for c, w in enumerate(_LUMA))
    return y < y_max


def order_stains(stains: np.ndarray) -> np.ndarray:
    """Order two stain OD vectors haematoxylin first.

    Eosin looks pink because it absorbs green and little red: its OD vector is far
    larger in green than in red (Ruifrok & Johnston: 0.07, 0.99, 0.11).
    Haematoxylin looks blue-purple because it absorbs red about as much as green
    (0.65, 0.70, 0.29).  The rule: the atom with the larger ``OD_red / OD_green``
    is haematoxylin.  Blue, which the rule leaves out, is what varies most between
    labs (a bluer haematoxylin, a more purple eosin) and what a fit pulls around:
    JPEG's coarser colour and a grey section among colour ones draw grey into the
    haematoxylin atom, raising its blue.  The rule used before (the larger
    ``OD_red - OD_blue``) then ranked 23 of 1 034 fits of phantom stacks and
    real tiles the wrong way round, rendering every section with the two stains
    exchanged; this one ranked none (``benchmarks/bench_stain_order.py``,
    BENCHMARKS.md "Which fitted stain is haematoxylin").  A grey atom (red = green) lands on the haematoxylin
    side, where the dark, neutral pixels of such a fit belong.

    Parameters
    ----------
    stains : ndarray, shape (2, 3)
        Unit-norm, non-negative stain OD vectors as rows, in any order.

    Returns
    -------
    ndarray, shape (2, 3)
        The same rows, haematoxylin first.

    Examples
    --------
    >>> order_stains(np.array([[0.42, 0.888, 0.188], [0.595, 0.716, 0.365]])).tolist()  # a JPEG stack's fit
    [[0.595, 0.716, 0.365], [0.42, 0.888, 0.188]]
    """
    stains = np.asarray(stains)
    score = stains[:, 0] / np.maximum(stains[:, 1], 1e-6)
    return stains if score[0] >= score[1] else stains[::-1].copy()


def _solve_concentrations(b: torch.Tensor, gram: torch.Tensor, lam: float) -> torch.Tensor:
    """Exact ``argmin_{c >= 0} 0.5 c'Gc - b'c + lam * sum(c)`` for 2 stains, per row of ``b``.

    ``b`` is (N, 2) = OD @ stains.T and ``gram`` the 2x2 stains @ stains.T.  If the
    unconstrained minimiser is non-negative it is the answer; otherwise, by
    convexity, the answer lies on a face ``c_k = 0`` and is the better of the two
    one-stain solutions.  All arithmetic is elementwise, so every pixel's result is
    independent of how the image is tiled.
    """
    g00, g01, g11 = gram[0, 0], gram[0, 1], gram[1, 1]
    b0 = b[:, 0] - lam
    b1 = b[:, 1] - lam
    det = g00 * g11 - g01 * g01
    c0 = (g11 * b0 - g01 * b1) / det
    c1 = (g00 * b1 - g01 * b0) / det
    inside = (c0 >= 0) & (c1 >= 0)
    p0 = b0.clamp(min=0)
    p1 = b1.clamp(min=0)
    # One-stain objective is -0.5 p_k^2 / g_kk: keep the stain that lowers it most.
    use0 = p0 * p0 * g11 >= p1 * p1 * g00
    zero = torch.zeros_like(c0)
    c0 = torch.where(inside, c0, torch.where(use0, p0 / g00, zero))
    c1 = torch.where(inside, c1, torch.where(use0, zero, p1 / g11))
    return torch.stack((c0, c1), dim=1)


def _project_atom(u: torch.Tensor) -> torch.Tensor:
    """Projection onto {d >= 0, |d| <= 1} (orthant first, then the ball, is exact)."""
    u = u.clamp(min=0)
    norm = torch.linalg.vector_norm(u)
    return u / norm if norm > 1 else u


def _initial_stains(od: torch.Tensor) -> torch.Tensor:
    """Macenko-style start: the extreme OD angles in the plane of the top two eigenvectors."""
    _, vectors = torch.linalg.eigh(od.T @ od)
    e1, e2 = vectors[:, 2], vectors[:, 1]
    if e1.sum() < 0:
        e1 = -e1
    angle = torch.atan2(od @ e2, od @ e1).numpy()
    lo, hi = (torch.tensor(a) for a in np.quantile(angle, [0.01, 0.99]))  # torch.quantile caps the size
    stains = torch.stack([torch.cos(a) * e1 + torch.sin(a) * e2 for a in (lo, hi)])
    stains = stains.clamp(min=0) + 1e-6  # a tiny floor keeps an all-negative direction usable
    return stains / torch.linalg.vector_norm(stains, dim=1, keepdim=True)


def learn_stains(
    od: np.ndarray, dictionary_lambda: float = 0.1, max_iter: int = 200, tol: float = 1e-6
) -> np.ndarray:
    """Sparse non-negative dictionary learning with two atoms (Vahadane step 2).

    Minimises ``sum_i 0.5 |x_i - c_i D|^2 + lambda |c_i|_1`` over ``c_i >= 0`` and
    ``D >= 0`` with rows ``|d_k| <= 1`` (the objective of SPAMS ``trainDL`` with
    ``mode=2, posAlpha, posD``), by alternating the exact concentration step with
    block-coordinate dictionary updates (Mairal et al., JMLR 2010, alg. 2).

    Parameters
    ----------
    od : ndarray, shape (N, 3)
        Optical densities of tissue pixels (a few tens of thousands suffice).
    dictionary_lambda : float
        L1 weight on the concentrations.
    max_iter : int
        Upper bound on alternations.
    tol : float
        Stop when no atom component moves more than this.

    Returns
    -------
    ndarray, float64, shape (2, 3)
        Unit-norm stain OD vectors, haematoxylin first (:func:`order_stains`).

    Examples
    --------
    Pixels mixed from two known stains give those stains back (cosines near 1):

    >>> stains = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
    >>> stains /= np.linalg.norm(stains, axis=1, keepdims=True)
    >>> rng = np.random.default_rng(0)
    >>> conc = rng.exponential(0.3, (2000, 2)) * (rng.random((2000, 2)) < 0.7)  # each stain absent from 30 %
    >>> (learn_stains(conc @ stains) * stains).sum(axis=1).round(2).tolist()
    [1.0, 1.0]
    """
    with torch_threads(1):  # tiny 2x2/3x2 updates: one thread is many times faster
        x = torch.as_tensor(np.asarray(od, dtype=np.float64))
        stains = _initial_stains(x)
        for _ in range(max_iter):
            previous = stains.clone()
            conc = _solve_concentrations(x @ stains.T, stains @ stains.T, dictionary_lambda)
            a = conc.T @ conc
            b = x.T @ conc
            for k in range(2):
                if a[k, k] > 1e-12:  # an unused atom keeps its place
                    stains[k] = _project_atom(stains[k] + (b[:, k] - stains.T @ a[:, k]) / a[k, k])
            if torch.max(torch.abs(stains - previous)) < tol:
                break
        norm = torch.linalg.vector_norm(stains, dim=1, keepdim=True).clamp(min=1e-12)
        return order_stains((stains / norm).numpy())


def _number(value) -> float:
    """``value`` as a float; NaN for what is not a number (a string, a bool, None)."""
    if isinstance(value, (bool, str)):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class VahadaneNormalizer:
    """A fitted stain: two stain OD vectors and each stain's concentration scale.

    Fit one on the reference (target) data and one on the image to normalize (the
    source); ``source.transform(image, target)`` renders the image in the target's
    stain.

    Parameters
    ----------
    luminosity_threshold : float
        Tissue is CIE ``L* / 100`` below this.
    dictionary_lambda : float
        L1 weight of the dictionary learning.
    concentration_method : {"nnls", "lasso"}
        Per-pixel concentrations by non-negative least squares, or by non-negative
        lasso with ``lasso_lambda`` (Vahadane's original choice; it zeroes weak
        stain contributions and so changes colours slightly).
    lasso_lambda : float
        L1 weight of the lasso concentrations.
    scale_pixels : {"dominant", "tissue"}
        Which pixels set the concentration scale (:data:`SCALE_PERCENTILES`): the
        pixels each stain dominates (new fits), or all tissue (models made before
        2026-12-05).  A source and its target must use the same.

    Attributes
    ----------
    stain_matrix : ndarray (2, 3) or None
        Rows: haematoxylin and eosin OD vectors, unit norm.
    max_concentrations : ndarray (2,) or None
        Each stain's concentration scale: its percentile over the pixels
        ``scale_pixels`` names.

    Examples
    --------
    One phantom's section rendered in another's stain:

    >>> from ScribbleSegLib.phantom import PhantomConfig, make_phantom
    >>> reference = make_phantom(seed=3, config=PhantomConfig(shape=(4, 96, 96))).image.array[2]
    >>> section = make_phantom(seed=4, config=PhantomConfig(shape=(4, 96, 96))).image.array[2]
    >>> target = VahadaneNormalizer().fit(reference)
    >>> target.fitted, target.stain_matrix.shape
    (True, (2, 3))
    >>> VahadaneNormalizer().fit(section).transform(section, target).shape
    (96, 96, 3)
    >>> VahadaneNormalizer.from_dict(target.to_dict()).fitted  # as the model file stores it
    True
    """

    def __init__(
        self,
        luminosity_threshold: float = 0.8,
        dictionary_lambda: float = 0.1,
        concentration_method: str = "nnls",
        lasso_lambda: float = 0.01,
        scale_pixels: str = DEFAULT_SCALE_PIXELS,
    ) -> None:
        if concentration_method not in ("nnls", "lasso"):
            raise ScribbleSegError(
                f"stain normalization: concentration_method {concentration_method!r} is not 'nnls' or 'lasso'"
            )
        _check_scale_pixels(scale_pixels)
        given = {"luminosity_threshold": luminosity_threshold, "dictionary_lambda": dictionary_lambda,
                 "lasso_lambda": lasso_lambda}
        values = {name: _number(value) for name, value in given.items()}
        if not 0.0 < values["luminosity_threshold"] <= 1.0:
            raise ScribbleSegError(
                f"stain normalization: luminosity_threshold {luminosity_threshold!r} is not in (0, 1]"
            )
        for name in ("dictionary_lambda", "lasso_lambda"):  # a negative one fits an all-zero stain, silently
            if not (math.isfinite(values[name]) and values[name] >= 0):
                raise ScribbleSegError(f"stain normalization: {name} must be a finite number >= 0, got "
                                       f"{given[name]!r}")
        self.luminosity_threshold = float(luminosity_threshold)
        self.dictionary_lambda = float(dictionary_lambda)
        self.concentration_method = concentration_method
        self.lasso_lambda = float(lasso_lambda)
        self.scale_pixels = scale_pixels
        self.stain_matrix: Optional[np.ndarray] = None
        self.max_concentrations: Optional[np.ndarray] = None

    @property
    def fitted(self) -> bool:
        """Whether the stain matrix and concentration percentiles are set.

        Examples
        --------
        >>> VahadaneNormalizer().fitted
        False
        >>> VahadaneNormalizer().concentrations(np.zeros((1, 3), np.uint8))
        Traceback (most recent call last):
        ...
        ScribbleSegLib.errors.ScribbleSegError: stain normalization: the normalizer is not fitted; call fit() first
        """
        return self.stain_matrix is not None and self.max_concentrations is not None

    def _require_fitted(self, role: str = "normalizer") -> None:
        if not self.fitted:
            raise ScribbleSegError(f"stain normalization: the {role} is not fitted; call fit() first")

    @property
    def _lambda(self) -> float:
        return self.lasso_lambda if self.concentration_method == "lasso" else 0.0

    # -- fitting -------------------------------------------------------------------------
    def fit(
        self,
        rgb: np.ndarray,
        mask: Optional[np.ndarray] = None,
        max_pixels: int = 50_000,
        seed: int = 0,
        fallback_stains: Optional[np.ndarray] = None,
    ) -> "VahadaneNormalizer":
        """Estimate the stain matrix and concentration percentiles of ``rgb``.

        Parameters
        ----------
        rgb : ndarray, uint8, shape (..., 3)
            An image, a volume, or a downsampled copy of either.
        mask : ndarray of bool, shape ``rgb.shape[:-1]``, optional
            Pixels to learn from; default :func:`tissue_mask`.
        max_pixels : int
            Learn from at most this many randomly chosen tissue pixels.
        seed : int
            Seed of that random choice; equal inputs and seed give equal fits.
        fallback_stains : ndarray (2, 3), optional
            Stain vectors to use, with a one-line logged warning, when the two
            fitted vectors are closer than :data:`MAX_STAIN_COSINE` (a pale-eosin
            tile, say); without it such tissue is refused.

        Returns
        -------
        VahadaneNormalizer
            ``self``.

        Raises
        ------
        ScribbleSegError
            If fewer than :data:`MIN_TISSUE_PIXELS` tissue pixels remain (an empty,
            white image), or if the tissue holds no two distinct stains (a grey or
            single-stain image) and no ``fallback_stains`` were given.

        Examples
        --------
        >>> stains = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
        >>> stains /= np.linalg.norm(stains, axis=1, keepdims=True)  # unit haematoxylin and eosin OD vectors
        >>> rgb = od_to_rgb(np.random.default_rng(0).exponential(0.3, (2000, 2)) @ stains).reshape(40, 50, 3)
        >>> normalizer = VahadaneNormalizer().fit(rgb)
        >>> bool(((normalizer.stain_matrix * stains).sum(axis=1) > 0.98).all())  # near the stains the pixels hold
        True
        >>> VahadaneNormalizer().fit(np.full((40, 50, 3), 255, np.uint8))  # white glass only
        Traceback (most recent call last):
        ...
        ScribbleSegLib.errors.ScribbleSegError: stain normalization: only 0 tissue pixels (darker than lightness \
0.8, not black, not a marking dye's colour), need 500; is the image empty or white?
        """
        rgb = _check_rgb(rgb)
        _check_max_pixels(max_pixels)
        if mask is None:
            mask = tissue_mask(rgb, self.luminosity_threshold)
        else:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != rgb.shape[:-1]:
                raise ScribbleSegError(
                    f"stain normalization: the mask has shape {mask.shape}, the image {rgb.shape[:-1]}"
                )
        pixels = rgb[mask]
        rng = np.random.default_rng(seed)
        if len(pixels) > max_pixels:
            pixels = pixels[rng.choice(len(pixels), size=max_pixels, replace=False)]
        self._fit_pixels(pixels, fallback_stains)
        return self

    def _fit_pixels(self, pixels: np.ndarray, fallback_stains: Optional[np.ndarray] = None, of: str = "") -> None:
        """Fit on tissue pixels (N, 3) uint8; raise ScribbleSegError if they do not allow it.  ``of`` names the
        volume in the warnings (" of training volume 2 of 3"), as
        :func:`~ScribbleSegLib.stain_volume.normalize_volume`'s notes do."""
        # Near-saturated pixels (ink, thick folds, the black a registration pads sections with) fit neither
        # stain: they stay out of both the dictionary and the percentile.  Where they were kept for want of
        # other tissue, a stack's black border set a section's stain and rendered its tissue wrong.
        pixels = pixels[_stainable(pixels)]
        if len(pixels) < MIN_TISSUE_PIXELS:
            raise ScribbleSegError(
                f"stain normalization: only {len(pixels)} tissue pixels (darker than lightness "
                f"{self.luminosity_threshold}, not black, not a marking dye's colour), need {MIN_TISSUE_PIXELS}; "
                "is the image empty or white?"
            )
        stains = learn_stains(_OD_LUT[pixels], self.dictionary_lambda)
        cosine = float(stains[0] @ stains[1])
        if cosine > MAX_STAIN_COSINE:
            if fallback_stains is None:
                raise ScribbleSegError(
                    f"stain normalization: the tissue shows one stain, not two (stain vectors at cosine "
                    f"{cosine:.3f}); is the image grey or single-stained?"
                )
            if is_grey(pixels):  # a grey scan has no stain colour to tell apart: say that, not a cosine of 1
                _log.warning("stain normalization%s: the tissue shows no colour (a grey image?); using the "
                             "reference stain vectors, though the network learns from colour", of)
            else:
                _log.warning("stain normalization%s: the two stains are hard to tell apart here (cosine %.3f); "
                             "using the reference stain vectors", of, cosine)
            stains = np.asarray(fallback_stains, dtype=np.float64).reshape(2, 3)
        self.stain_matrix = stains
        with torch_threads(1):
            conc = self._concentrations_of(pixels)
        self.max_concentrations = concentration_scale(conc, self.scale_pixels)
        if not np.all(self.max_concentrations > 0):
            raise ScribbleSegError(
                "stain normalization: a stain is absent from the tissue (its concentration scale is 0)"
            )

    # -- per-pixel concentrations ------------------------------------------------------------
    def _concentrations_of(self, pixels: np.ndarray) -> np.ndarray:
        """Concentrations (N, 2) float32 of uint8 pixels (N, 3)."""
        stains = torch.as_tensor(self.stain_matrix, dtype=torch.float32)
        b = _stain_projection(torch.from_numpy(np.ascontiguousarray(pixels)), stains)
        return _solve_concentrations(b, stains @ stains.T, self._lambda).numpy()

    def concentrations(self, rgb: np.ndarray) -> np.ndarray:
        """Stain concentrations of every pixel.

        Parameters
        ----------
        rgb : ndarray, uint8, shape (..., 3)

        Returns
        -------
        ndarray, float32, shape (..., 2)
            Haematoxylin and eosin concentrations (OD units), >= 0.

        Examples
        --------
        >>> stains = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
        >>> stains /= np.linalg.norm(stains, axis=1, keepdims=True)  # unit haematoxylin and eosin OD vectors
        >>> rgb = od_to_rgb(np.random.default_rng(0).exponential(0.3, (2000, 2)) @ stains).reshape(40, 50, 3)
        >>> normalizer = VahadaneNormalizer().fit(rgb)
        >>> haematoxylin = od_to_rgb(np.array([0.5, 0.0]) @ normalizer.stain_matrix)  # OD 0.5 of the first stain
        >>> normalizer.concentrations(np.array([haematoxylin, [255, 255, 255]], np.uint8)).round(2).tolist()
        [[0.5, 0.0], [0.0, 0.0]]
        """
        rgb = _check_rgb(rgb)
        self._require_fitted()
        return self._concentrations_of(rgb.reshape(-1, 3)).reshape(rgb.shape[:-1] + (2,))

    # -- normalization -------------------------------------------------------------------------
    def transform(
        self,
        rgb: np.ndarray,
        target: "VahadaneNormalizer",
        tile: int = 512,
        threads: int = 1,
        cancel: Optional[_progress.CancelToken] = None,
    ) -> np.ndarray:
        """Render ``rgb`` (whose stain this normalizer holds) in ``target``'s stain.

        Each pixel's concentrations are scaled by ``target.max_concentrations /
        self.max_concentrations`` and recomposed with ``target.stain_matrix``.  The
        image is processed in ``tile`` x ``tile`` blocks, so the working memory is
        about 100 bytes per tile pixel (25 MB at the default 512) beside the output,
        whatever the image size; the result does not depend on the tile size.
        White (OD 0) stays white.  Images of 2**25 pixels or more go through a
        2**24-colour lookup table (50 MB) built from the same per-pixel map, which
        is about three times cheaper per pixel and gives identical output.

        Parameters
        ----------
        rgb : ndarray, uint8, shape (Y, X, 3)
        target : VahadaneNormalizer
            The fitted reference stain.
        tile : int
            Block edge in pixels.
        threads : int
            Torch intra-op threads.  One is the safe choice on small or busy
            machines: on a busy 2-core VM two threads made the map 5 to 20 times
            slower (``benchmarks/bench_stain.py``).
        cancel : CancelToken, optional
            Checked between tiles.

        Returns
        -------
        ndarray, uint8, shape (Y, X, 3)

        Examples
        --------
        A target whose stains are twice as strong renders the image darker, and white stays white:

        >>> stains = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
        >>> stains /= np.linalg.norm(stains, axis=1, keepdims=True)  # unit haematoxylin and eosin OD vectors
        >>> rgb = od_to_rgb(np.random.default_rng(0).exponential(0.3, (2000, 2)) @ stains).reshape(40, 50, 3)
        >>> source = VahadaneNormalizer().fit(rgb)
        >>> target = VahadaneNormalizer.from_dict({**source.to_dict(),
        ...                                        "max_concentrations": (2 * source.max_concentrations).tolist()})
        >>> rgb[0, 0] = 255; out = source.transform(rgb, target)
        >>> out.shape, bool(out.mean() < rgb.mean() - 20), out[0, 0].tolist()
        ((40, 50, 3), True, [255, 255, 255])
        """
        rgb = _check_rgb(rgb)
        if rgb.ndim != 3:
            raise ScribbleSegError(f"stain normalization: transform expects one (Y, X, 3) image, got {rgb.shape}")
        self._require_fitted("source stain")
        target._require_fitted("target stain")
        _check_tile(tile)
        out = np.empty_like(rgb)
        with torch_threads(threads):
            mapping = _StainMapping(self, target, use_table=rgb.shape[0] * rgb.shape[1] >= _TABLE_MIN_PIXELS)
            mapping.apply(rgb, out, tile, cancel)
        return out

    # -- storage ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON-able description (floats, strings, lists) for the model file.

        Examples
        --------
        >>> import json
        >>> stored = VahadaneNormalizer.from_dict({"method": "vahadane", "stain_matrix": [[1, 0, 0], [0, 1, 0]],
        ...     "max_concentrations": [1.5, 0.75], "luminosity_threshold": 0.8, "dictionary_lambda": 0.1,
        ...     "concentration_method": "nnls", "lasso_lambda": 0.01}).to_dict()
        >>> stored["max_concentrations"], stored["scale_pixels"], json.loads(json.dumps(stored)) == stored
        ([1.5, 0.75], 'tissue', True)
        """
        self._require_fitted()
        return {
            "method": "vahadane",
            "stain_matrix": [[float(v) for v in row] for row in self.stain_matrix],
            "max_concentrations": [float(v) for v in self.max_concentrations],
            "luminosity_threshold": self.luminosity_threshold,
            "dictionary_lambda": self.dictionary_lambda,
            "concentration_method": self.concentration_method,
            "lasso_lambda": self.lasso_lambda,
            "scale_pixels": self.scale_pixels,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "VahadaneNormalizer":
        """Rebuild a fitted normalizer from :meth:`to_dict` output.

        Raises
        ------
        ScribbleSegError
            If a key is missing or a value has the wrong shape or range.

        Examples
        --------
        >>> VahadaneNormalizer.from_dict({"method": "macenko"})
        Traceback (most recent call last):
        ...
        ScribbleSegLib.errors.ScribbleSegError: stain normalization: bad stored stain (method 'macenko' is not \
'vahadane')
        """
        try:
            if d.get("method") != "vahadane":
                raise ValueError(f"method {d.get('method')!r} is not 'vahadane'")
            norm = cls(
                luminosity_threshold=float(d["luminosity_threshold"]),
                dictionary_lambda=float(d["dictionary_lambda"]),
                concentration_method=str(d["concentration_method"]),
                lasso_lambda=float(d["lasso_lambda"]),
                # A stain stored before the rule was recorded was scaled over all tissue.
                scale_pixels=d.get("scale_pixels", "tissue"),
            )
            stains = np.asarray(d["stain_matrix"], dtype=np.float64)
            max_conc = np.asarray(d["max_concentrations"], dtype=np.float64)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ScribbleSegError(f"stain normalization: bad stored stain ({exc})") from None
        except ScribbleSegError as exc:
            raise ScribbleSegError(f"stain normalization: bad stored stain ({str(exc).split(': ', 1)[1]})") from None
        if stains.shape != (2, 3) or max_conc.shape != (2,):
            raise ScribbleSegError(
                f"stain normalization: bad stored stain (stain_matrix {stains.shape}, "
                f"max_concentrations {max_conc.shape}; expected (2, 3) and (2,))"
            )
        if not (np.all(np.isfinite(stains)) and np.all(stains >= 0) and np.all(max_conc > 0)
                and np.all(np.isfinite(max_conc))
                and np.allclose(np.linalg.norm(stains, axis=1), 1.0, atol=1e-4)
                and stains[0] @ stains[1] <= MAX_STAIN_COSINE):
            raise ScribbleSegError(
                "stain normalization: bad stored stain (stain vectors must be non-negative, unit-norm and "
                "distinct, max concentrations positive and finite)"
            )
        norm.stain_matrix = stains
        norm.max_concentrations = max_conc
        return norm

    def __repr__(self) -> str:
        if not self.fitted:
            return "VahadaneNormalizer(unfitted)"
        h, e = (np.round(v, 3).tolist() for v in self.stain_matrix)
        return f"VahadaneNormalizer(H={h}, E={e}, max_c={np.round(self.max_concentrations, 3).tolist()})"


def _check_scale_pixels(scale_pixels) -> None:
    if scale_pixels not in SCALE_PERCENTILES:
        raise ScribbleSegError(f"stain normalization: scale_pixels {scale_pixels!r} is not one of "
                               f"{', '.join(map(repr, SCALE_PERCENTILES))}")


def concentration_scale(conc: np.ndarray, scale_pixels: str = DEFAULT_SCALE_PIXELS) -> np.ndarray:
    """Each stain's concentration scale: a percentile over the pixels ``scale_pixels`` names.

    Parameters
    ----------
    conc : ndarray, shape (N, 2)
        Haematoxylin and eosin concentrations of tissue pixels (near-saturated ones
        left out).
    scale_pixels : {"dominant", "tissue"}
        "tissue": the 99th percentile over all of them.  "dominant": for each stain,
        the 95th percentile over the pixels where it makes at least
        :data:`DOMINANT_SHARE` of the concentration; where fewer than
        :data:`MIN_DOMINANT_PIXELS` pixels are that much one stain's, over those
        where it makes half, then over all.

    Returns
    -------
    ndarray, float64, shape (2,)

    Examples
    --------
    Nuclei (dark haematoxylin) on 0.5 % of a stroma with a little haematoxylin:
    over the pixels haematoxylin dominates, the scale reads the nuclei.

    >>> conc = np.tile([[0.06, 0.45]], (39800, 1))
    >>> conc = np.concatenate([conc, np.tile([[0.9, 0.2]], (200, 1))])
    >>> concentration_scale(conc, "dominant").round(2).tolist()
    [0.9, 0.45]
    >>> concentration_scale(conc, "tissue").round(2).tolist()
    [0.06, 0.45]
    """
    _check_scale_pixels(scale_pixels)
    conc = np.asarray(conc, dtype=np.float64)
    q = SCALE_PERCENTILES[scale_pixels]
    if len(conc) == 0:
        return np.zeros(2)
    if scale_pixels == "tissue":
        return np.percentile(conc, q, axis=0)
    share = conc / np.maximum(conc.sum(axis=1, keepdims=True), 1e-12)
    scale = np.zeros(2)
    for s in range(2):
        for least in (DOMINANT_SHARE, 0.5, 0.0):
            own = conc[share[:, s] >= least, s]
            if len(own) >= MIN_DOMINANT_PIXELS or least == 0.0:
                scale[s] = np.percentile(own, q)
                break
    return scale


def _stainable(pixels: np.ndarray) -> np.ndarray:
    """Mask of the tissue pixels (N, 3) uint8 that may fit the stains and set the concentration percentile.

    Near-saturated pixels (every channel at or below :data:`SATURATED_RGB`) are ink,
    thick folds and debris: a share of 1-2 % of them would otherwise set the
    concentration scale and render the whole image pale.  Pixels of a hue neither
    stain has (green OD under :data:`MIN_GREEN_OD_SHARE` of the red or blue one) are a
    marking dye: they would pull a stain vector their way.

    Examples
    --------
    >>> _stainable(np.array([[150, 60, 170], [10, 12, 20], [120, 170, 150]], np.uint8)).tolist()  # H&E, ink, teal
    [True, False, False]
    """
    od = _OD_LUT[pixels]
    foreign = od[:, 1] < MIN_GREEN_OD_SHARE * np.maximum(od[:, 0], od[:, 2])
    return (pixels.max(axis=1) > SATURATED_RGB) & ~foreign


def _stain_projection(pixels: torch.Tensor, stains: torch.Tensor) -> torch.Tensor:
    """``OD @ stains.T`` (N, 2) of uint8 pixels (N, 3), written elementwise (tiling-exact)."""
    od = torch.as_tensor(_OD_LUT)[pixels.long()]
    return torch.stack([od[:, 0] * s[0] + od[:, 1] * s[1] + od[:, 2] * s[2] for s in stains], dim=1)


class _StainMapping:
    """The per-pixel map from a source stain to a target stain, on uint8 blocks."""

    def __init__(self, source: VahadaneNormalizer, target: VahadaneNormalizer, use_table: bool = False,
                 cancel: Optional[_progress.CancelToken] = None) -> None:
        if source.scale_pixels != target.scale_pixels:  # the scales would not measure the same thing
            raise ScribbleSegError(f"stain normalization: the source stain's scale_pixels {source.scale_pixels!r} "
                                   f"is not the target's {target.scale_pixels!r}; fit the source with the target's")
        self.source = torch.as_tensor(source.stain_matrix, dtype=torch.float32)
        self.gram = self.source @ self.source.T
        self.lam = source._lambda
        self.scale = torch.as_tensor(target.max_concentrations / source.max_concentrations, dtype=torch.float32)
        self.target = torch.as_tensor(target.stain_matrix, dtype=torch.float32)
        self.table = self._build_table(cancel) if use_table else None

    def __call__(self, block: np.ndarray) -> np.ndarray:
        """The mapped copy of a uint8 block (..., 3)."""
        shape = block.shape
        array = np.ascontiguousarray(block).reshape(-1, 3)
        # torch warns on a read-only array (a read-only or memory-mapped input): read it from a copy instead.
        pixels = torch.from_numpy(array if array.flags.writeable else array.copy())
        conc = _solve_concentrations(_stain_projection(pixels, self.source), self.gram, self.lam) * self.scale
        od = conc[:, :1] * self.target[0] + conc[:, 1:] * self.target[1]
        return od_to_rgb(od.numpy()).reshape(shape)

    def _build_table(self, cancel: Optional[_progress.CancelToken]) -> np.ndarray:
        """The map of all 2**24 colours, indexed by ``r << 16 | g << 8 | b``."""
        codes = np.arange(1 << 16, dtype=np.uint32)
        low = np.stack([(codes >> 8) & 255, codes & 255], axis=-1).astype(np.uint8)
        colours = np.empty((1 << 16, 3), np.uint8)
        colours[:, 1:] = low
        table = np.empty((1 << 24, 3), np.uint8)
        for red in range(256):
            _progress.check(cancel)
            colours[:, 0] = red
            table[red << 16 : (red + 1) << 16] = self(colours)
        return table

    def apply(self, rgb: np.ndarray, out: np.ndarray, tile: int, cancel: Optional[_progress.CancelToken]) -> None:
        """Map ``rgb`` (Y, X, 3) into ``out`` block by block."""
        height, width = rgb.shape[:2]
        for y in range(0, height, tile):
            for x in range(0, width, tile):
                _progress.check(cancel)
                block = rgb[y : y + tile, x : x + tile]
                if self.table is None:
                    out[y : y + tile, x : x + tile] = self(block)
                else:
                    code = (block[..., 0].astype(np.uint32) << 16) | (block[..., 1].astype(np.uint32) << 8)
                    code |= block[..., 2]
                    out[y : y + tile, x : x + tile] = self.table[code]


def _whole_at_least(value, low: int, name: str, unit: str = "") -> int:
    from .checks import check_whole

    return check_whole(value, f"stain normalization: {name}", low, unit)


def _check_max_pixels(max_pixels: int) -> None:
    _whole_at_least(max_pixels, MIN_TISSUE_PIXELS, "max_pixels")


def _check_tile(tile: int) -> None:
    _whole_at_least(tile, 1, "tile", " pixel")
