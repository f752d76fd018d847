"""Synthetic H&E serial-section volumes of an embryo-like body with a heart.

The phantom is made the way a real stack is: a 3D anatomy is cut into
sections at a random angle, each section is stained and imaged on its own, and
the stack carries the artefacts of cutting and alignment.

Anatomy (in body coordinates: x left-right, y dorsal (-) to ventral (+), z
cranial (-) to caudal (+), in units of half the in-plane field of view): a
smooth blob of mesenchyme with a body wall and epidermis; a multi-chambered
heart (myocardium around trabeculated ventricles, atria and an outflow tract,
lumens full of blood, endocardial cushions) in a pericardial cavity that is
collapsed where the liver (caudal), the lung buds (dorsal) and the body wall
(ventral) touch the heart; a neural tube, notochord, gut, dorsal aortae and
cardinal veins.  Liver and body wall are stained like myocardium and liver
and vessels hold blood, so colour and texture alone do not find the heart.

Rendering follows Beer–Lambert: each pixel has haematoxylin and eosin
concentrations (tissue base level, nuclei as small blobs with a density per
tissue, striated myocardium and body-wall muscle, red blood cells as bright
eosin blobs, white glass elsewhere), composed with per-volume stain OD vectors
and turned into RGB by :func:`ScribbleSegLib.stain.od_to_rgb`.

Artefacts and how the ground truth follows them:

- section angle: a random 3D rotation of the body relative to the stack; the
  label is sampled from the same rotated anatomy;
- residual misalignment: every section is shifted by a few pixels and turned
  by a fraction of a degree; the label moves with it;
- a lost section (the stack skips one anatomical level) or a section imaged
  twice (two identical consecutive sections); the label shows what the image
  shows;
- folds: a band where a flap of the section lies on itself, twice as dark; the
  label is unchanged, the heart is still there under the fold;
- tears: thin white cracks; the ``tissue`` map marks them empty but the label
  keeps the heart across them, as an expert tracing the organ's outline would.

Everything is deterministic given the seed.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import choices
from . import progress as _progress
from .errors import ScribbleSegError
from .fileio import OutputSet, PathLike, check_free_space, sweep_stale_temps
from .geometry import Geometry, Volume
from .progress import CancelToken, ProgressCallback
from .scribbles import draw_path
from .optical_density import od_to_rgb  # not stain: the phantom must not need torch

#: Format version of ``phantom.json``.
MANIFEST_VERSION = 1
#: ``phantom.json``'s ``format``: what says a folder's files are a phantom set's.
MANIFEST_FORMAT = "scribbleseg-phantom"

#: Haematoxylin and eosin OD vectors (Ruifrok & Johnston 2001), the centre of the per-volume variation.
HEMATOXYLIN_OD = (0.650, 0.704, 0.286)
EOSIN_OD = (0.072, 0.990, 0.105)
#: OD of the bare glass slide and mounting medium.
_GLASS_OD = 0.025


class Tissue(enum.IntEnum):
    """Tissue classes of :attr:`Phantom.tissue` (what a section shows at a pixel).

    Examples
    --------
    >>> Tissue(5), Tissue.CUSHION in HEART_TISSUES, Tissue.LIVER in HEART_TISSUES
    (<Tissue.MYOCARDIUM: 5>, True, False)
    """

    EMPTY = 0  #: glass: outside the body, tears, lost tissue
    CAVITY = 1  #: fluid-filled space inside the body (pericardial cavity, lumens of tubes)
    MESENCHYME = 2
    BODY_WALL = 3  #: ventral body wall with its striated muscle precursors
    EPIDERMIS = 4
    MYOCARDIUM = 5  #: heart
    HEART_BLOOD = 6  #: heart (lumen of a chamber)
    CUSHION = 7  #: heart (endocardial cushion: sparse cells in cardiac jelly)
    LIVER = 8
    LIVER_BLOOD = 9  #: blood islands of the fetal liver
    LUNG = 10
    EPITHELIUM = 11  #: gut and bronchial epithelium
    NEURAL = 12  #: neural tube
    NOTOCHORD = 13
    VESSEL_BLOOD = 14  #: blood in aortae and veins
    HEMATOPOIETIC = 15  #: blood-forming foci of the fetal liver, packed small nuclei


#: Tissues that make up the heart label.
HEART_TISSUES = (Tissue.MYOCARDIUM, Tissue.HEART_BLOOD, Tissue.CUSHION)


@dataclass(frozen=True)
class PhantomConfig:
    """Size and difficulty of a phantom volume.

    Parameters
    ----------
    shape : (Z, Y, X)
        Sections, rows, columns.  The anatomy scales with the in-plane field of
        view, so a small shape gives the same embryo at a coarser resolution.
    spacing : (x, y, z)
        Voxel size in mm at the reference in-plane size :data:`REFERENCE_SIZE`.
        A phantom of another size shows the same embryo, so its voxels are that
        much larger or smaller (:func:`voxel_size`): the embryo keeps its size
        in mm, and a model trained on one size sees the others at its own scale
        once the sections are resampled to its pixel size.
    max_tilt_deg : float
        Largest angle between the body axis and the stack axis.
    max_spin_deg : float
        Largest in-plane rotation of the body (either way).
    misalignment_px : float
        Standard deviation of the residual shift of each section, in pixels
        (about 1/50 of that, in degrees, of residual rotation).
    stain_variation : float
        Scale of the per-volume variation of stain vectors and intensities
        (0: every volume has the reference stains).
    mimicry : float
        How closely liver and body wall take the myocardium's colour and
        texture, from 0 (clearly different) to 1 (the same).
    pericardial_space : float
        Width of the pericardial cavity around the heart, relative to the
        heart's size, where no organ touches it.
    heart_scale : float
        Size of the heart relative to the default anatomy.
    nucleus_px : float
        Radius of a nucleus in pixels (sets the texture scale).
    tears, folds : int
        Number of sections with a tear and with a fold.
    skipped_sections : int
        Number of lost or twice-imaged sections (each chosen at random).
    noise : float
        Standard deviation of the per-pixel OD noise.
    zoom : float
        Magnification of the anatomy in pixels: 1 fills the field of view with the
        body; 1.25 shows it 1.25 times larger (cropped at the edges), as a scan at
        a higher magnification would.  Give ``spacing`` the matching pixel size.
    hematoxylin_od, eosin_od : (3,) float
        Centre of the per-volume variation of the stain OD vectors.
    intensity : (2,) float
        Mean haematoxylin and eosin strength (1 = the reference staining).
    striation, grain, nuclear_density : float
        Factors on the muscle striation, the cytoplasm grain and the nucleus
        density of every tissue (textures that differ between labs and ages).
    bubbles, debris : int
        Number of air bubbles (pale discs with a dark rim) and of specks of dark
        debris in the whole stack; the label is unchanged under them.

    Notes
    -----
    Making a volume takes about 120 bytes of memory per voxel at its peak (about 300 MB
    for the default shape) and about 2 s for the default shape (measured on a 2-core VM).

    Examples
    --------
    >>> small = PhantomConfig(shape=(8, 64, 64))
    >>> make_phantom(0, small).image.array.shape
    (8, 64, 64, 3)
    >>> PhantomConfig(shape=(2, 64, 64)).validate()
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: phantom shape 2 64 64 is too small: at least 4 sections of 16x16 pixels
    """

    shape: Tuple[int, int, int] = choices.PHANTOM_SHAPE
    spacing: Tuple[float, float, float] = (0.02, 0.02, 0.04)
    max_tilt_deg: float = 25.0
    max_spin_deg: float = 30.0
    misalignment_px: float = 1.5
    stain_variation: float = 1.0
    mimicry: float = 0.85
    pericardial_space: float = 0.12
    heart_scale: float = 1.0
    nucleus_px: float = 1.1
    tears: int = 3
    folds: int = 2
    skipped_sections: int = 1
    noise: float = 0.02
    zoom: float = 1.0
    hematoxylin_od: Tuple[float, float, float] = HEMATOXYLIN_OD
    eosin_od: Tuple[float, float, float] = EOSIN_OD
    intensity: Tuple[float, float] = (1.0, 1.0)
    striation: float = 1.0
    grain: float = 1.0
    nuclear_density: float = 1.0
    bubbles: int = 0
    debris: int = 0

    def validate(self) -> None:
        """Raise :class:`ScribbleSegError` if a value is out of range.

        The bounds are wide; they keep out what would give an empty or black phantom, or a traceback, without
        a word (an infinite zoom, NaN noise, 2.5 tears).

        Examples
        --------
        >>> PhantomConfig(shape=(4, 64, 64)).validate()  # fine: nothing happens
        >>> try:
        ...     PhantomConfig(tears=2.5).validate()
        ... except ScribbleSegError as error:
        ...     print(error)
        phantom tears must be a whole number from 0 to 10^6, got 2.5
        """
        try:
            z, y, x = (_whole(s) for s in self.shape)
        except (TypeError, ValueError):
            raise ScribbleSegError(f"phantom shape must be three positive sizes (Z Y X), got {self.shape!r}") from None
        if min(z, y, x) < 1:
            raise ScribbleSegError(f"phantom shape must be three positive sizes (Z Y X), got {self.shape!r}")
        if z < 4 or y < 16 or x < 16:
            raise ScribbleSegError(f"phantom shape {z} {y} {x} is too small: at least 4 sections of 16x16 pixels")
        spacing = _numbers(self.spacing, 3)
        if spacing is None or not all(v > 0 for v in spacing):
            raise ScribbleSegError(f"phantom spacing must be three positive numbers in mm, got {self.spacing!r}")
        side = min(y, x)
        for name, low, high, low_open in (
                ("max_tilt_deg", 0, 90, False), ("max_spin_deg", 0, 180, False),
                ("misalignment_px", 0, side / 4, False), ("stain_variation", 0, 10, False),
                ("pericardial_space", 0, 1, False), ("noise", 0, 1, False), ("mimicry", 0, 1, False),
                ("heart_scale", 0.3, 1.5, False), ("nucleus_px", 0, side / 4, True), ("zoom", 0.25, 4, False),
                ("striation", 0, 100, True), ("grain", 0, 100, True), ("nuclear_density", 0, 100, True)):
            value = _numbers([getattr(self, name)], 1)
            if value is None or not (low < value[0] <= high if low_open else low <= value[0] <= high):
                interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
                raise ScribbleSegError(f"phantom {name} must be in {interval}, got {getattr(self, name)!r}")
        for name, n in (("hematoxylin_od", 3), ("eosin_od", 3), ("intensity", 2)):
            value = getattr(self, name)
            numbers = _numbers(value, n)
            if numbers is None or not all(0 <= v <= 10 for v in numbers) or not any(v > 0 for v in numbers):
                raise ScribbleSegError(f"phantom {name} must be {n} numbers from 0 to 10, not all 0, got {value!r}")
        for name in ("tears", "folds", "skipped_sections", "bubbles", "debris"):
            value = getattr(self, name)
            try:
                count = _whole(value)
            except (TypeError, ValueError):
                count = -1
            if not 0 <= count <= 10**6:
                raise ScribbleSegError(f"phantom {name} must be a whole number from 0 to 10^6, got {value!r}")


def _whole(value) -> int:
    """``value`` as an int if it is a whole number (``3`` or ``3.0``), else ValueError."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


def _numbers(values, n: int):
    """``n`` finite floats, or None."""
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == n and all(math.isfinite(v) for v in numbers) else None


#: Phantom families: embryos as two labs would section, stain and scan them.  ``"a"`` is the
#: default; ``"b"`` differs the way real labs differ: other stain vectors (a bluer haematoxylin,
#: a more orange eosin) and strengths, a younger embryo (a larger heart relative to the body),
#: a 1.3x higher scan magnification (finer pixels, bigger objects in pixels), other textures
#: (fainter striation, coarser grain, denser nuclei), more tears and folds, air bubbles and debris.
FAMILIES: Dict[str, PhantomConfig] = {
    "a": PhantomConfig(),
    "b": PhantomConfig(spacing=(0.0154, 0.0154, 0.03), zoom=1.3, nucleus_px=1.45, heart_scale=1.15,
                       mimicry=0.8, pericardial_space=0.09, hematoxylin_od=(0.56, 0.72, 0.41),
                       eosin_od=(0.21, 0.80, 0.56), intensity=(0.85, 1.3), striation=0.5, grain=1.5,
                       nuclear_density=1.4, tears=6, folds=4, skipped_sections=2, misalignment_px=2.5,
                       noise=0.03, bubbles=4, debris=40),
}


#: In-plane size (pixels, the smaller of Y and X) at which :attr:`PhantomConfig.spacing` is the voxel size.
REFERENCE_SIZE = min(choices.PHANTOM_SHAPE[1:])


def voxel_size(config: PhantomConfig) -> Tuple[float, float, float]:
    """``(x, y, z)`` voxel size in mm of a phantom made with ``config``.

    The embryo fills the same share of the field of view at every shape, so its
    voxels scale with ``REFERENCE_SIZE / min(Y, X)`` on all three axes (the
    sections scale with the field of view too).

    Examples
    --------
    >>> voxel_size(PhantomConfig())
    (0.02, 0.02, 0.04)
    >>> voxel_size(PhantomConfig(shape=(32, 128, 128)))
    (0.03, 0.03, 0.06)
    """
    factor = REFERENCE_SIZE / min(int(config.shape[1]), int(config.shape[2]))
    return tuple(round(float(s) * factor, 9) for s in config.spacing)


def family_config(family: str = choices.DEFAULT_PHANTOM_FAMILY, shape: Optional[Sequence[int]] = None) -> PhantomConfig:
    """The :class:`PhantomConfig` of a phantom family, optionally with another shape.

    Examples
    --------
    >>> family_config("b", shape=(16, 64, 64)).zoom
    1.3
    """
    if family not in FAMILIES:
        raise ScribbleSegError(f"phantom family must be one of {', '.join(FAMILIES)}, got {family!r}")
    config = FAMILIES[family]
    if shape is not None:  # (4.5, 64, 64) was cut to 4 sections without a word
        from .checks import check_shape

        config = dataclasses.replace(config, shape=check_shape(shape))
    return config


@dataclass
class Phantom:
    """One phantom volume.

    Attributes
    ----------
    image : Volume
        ``(Z, Y, X, 3)`` uint8 RGB with its geometry.
    label : numpy.ndarray
        ``(Z, Y, X)`` uint8, 1 = heart (myocardium, chamber lumens, cushions).
    tissue : numpy.ndarray
        ``(Z, Y, X)`` uint8 :class:`Tissue` codes of what each pixel shows.
    info : dict
        Seed, stain vectors and the artefacts applied (section indices), JSON-ready.

    Examples
    --------
    >>> phantom = make_phantom(seed=3, config=PhantomConfig(shape=(4, 64, 64)))
    >>> phantom.image.array.shape, phantom.label.dtype, phantom.info["seed"]
    ((4, 64, 64, 3), dtype('uint8'), 3)
    >>> bool((np.isin(phantom.tissue, HEART_TISSUES) == (phantom.label == 1)).all())  # the label is the heart tissues
    True
    """

    image: Volume
    label: np.ndarray
    tissue: np.ndarray
    info: Dict = field(default_factory=dict)


# --- tissue appearance --------------------------------------------------------------------------------------
# Per tissue: haematoxylin and eosin base concentrations, nucleus seed density (per pixel at
# nucleus_px = 1), nuclear haematoxylin, striation amplitude (fraction of eosin), granular texture
# amplitude, red-blood-cell density.
_APPEARANCE = {
    Tissue.EMPTY: (0.00, 0.00, 0.000, 0.0, 0.00, 0.00, 0.00),
    Tissue.CAVITY: (0.01, 0.05, 0.002, 0.8, 0.00, 0.20, 0.01),
    Tissue.MESENCHYME: (0.07, 0.13, 0.035, 1.0, 0.00, 0.35, 0.00),
    Tissue.BODY_WALL: (0.10, 0.30, 0.060, 1.0, 0.20, 0.30, 0.00),
    Tissue.EPIDERMIS: (0.30, 0.25, 0.250, 1.1, 0.00, 0.20, 0.00),
    Tissue.MYOCARDIUM: (0.10, 0.46, 0.050, 1.0, 0.28, 0.25, 0.00),
    Tissue.HEART_BLOOD: (0.02, 0.12, 0.010, 0.7, 0.00, 0.10, 0.30),
    Tissue.CUSHION: (0.06, 0.11, 0.030, 1.0, 0.00, 0.35, 0.00),
    Tissue.LIVER: (0.15, 0.34, 0.090, 1.0, 0.00, 0.35, 0.02),
    Tissue.LIVER_BLOOD: (0.03, 0.14, 0.015, 0.7, 0.00, 0.10, 0.26),
    Tissue.LUNG: (0.09, 0.17, 0.070, 1.0, 0.00, 0.30, 0.00),
    Tissue.EPITHELIUM: (0.30, 0.22, 0.300, 1.1, 0.00, 0.20, 0.00),
    Tissue.NEURAL: (0.22, 0.16, 0.280, 1.1, 0.00, 0.20, 0.00),
    Tissue.NOTOCHORD: (0.12, 0.20, 0.100, 1.0, 0.00, 0.20, 0.00),
    Tissue.VESSEL_BLOOD: (0.02, 0.12, 0.010, 0.7, 0.00, 0.10, 0.30),
    Tissue.HEMATOPOIETIC: (0.20, 0.16, 0.300, 1.0, 0.00, 0.30, 0.02),
}
#: Tissues that take on the myocardium's look as ``mimicry`` goes to 1.
_MIMICS = (Tissue.LIVER, Tissue.BODY_WALL)

#: Heart chambers in heart coordinates: centre, lumen semi-axes, wall thickness, trabeculation.
_CHAMBERS = (
    ((0.18, 0.05, 0.08), (0.15, 0.19, 0.24), 0.06, 0.6),  # left ventricle
    ((-0.18, 0.06, 0.06), (0.14, 0.18, 0.23), 0.06, 0.6),  # right ventricle
    ((0.15, -0.12, -0.20), (0.13, 0.11, 0.13), 0.035, 0.0),  # left atrium
    ((-0.16, -0.12, -0.21), (0.14, 0.11, 0.14), 0.035, 0.0),  # right atrium
    ((-0.04, 0.16, -0.30), (0.06, 0.06, 0.18), 0.05, 0.0),  # outflow tract
)
_RBC_EOSIN = 0.85  # eosin of a red blood cell: the brightest red of the section
_RBC_HEMATOXYLIN = 0.15  # embryonic red cells are nucleated


def _appearance_table(mimicry: float) -> np.ndarray:
    table = np.zeros((len(Tissue), 7), np.float32)
    for tissue, values in _APPEARANCE.items():
        table[tissue] = values
    myo = table[Tissue.MYOCARDIUM].copy()
    for tissue in _MIMICS:
        table[tissue] += mimicry * (myo - table[tissue])
    # Body-wall muscle is striated like myocardium; liver cords are not, which texture could tell.
    table[Tissue.LIVER, 4] = _APPEARANCE[Tissue.LIVER][4]
    return table


# --- random fields ------------------------------------------------------------------------------------------
def _gaussian_filter_fft(shape: Sequence[int], sigma: Sequence[float]) -> np.ndarray:
    """Fourier transfer function (rfftn layout) of a Gaussian with per-axis sigma in voxels."""
    grids = []
    for axis, (n, s) in enumerate(zip(shape, sigma)):
        freq = np.fft.rfftfreq(n) if axis == len(shape) - 1 else np.fft.fftfreq(n)
        shape_b = [1] * len(shape)
        shape_b[axis] = freq.size
        grids.append((np.exp(-2.0 * (np.pi * freq * s) ** 2)).reshape(shape_b))
    out = grids[0]
    for g in grids[1:]:
        out = out * g
    return out.astype(np.float32)


def _blur_sections(stack: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur of each section (axes 1, 2) of a ``(Z, Y, X)`` stack, periodic borders."""
    if sigma_px <= 0:
        return stack.astype(np.float32)
    transfer = _gaussian_filter_fft(stack.shape[1:], (sigma_px, sigma_px))
    spectrum = np.fft.rfft2(stack.astype(np.float32), axes=(1, 2))
    return np.fft.irfft2(spectrum * transfer[None], s=stack.shape[1:], axes=(1, 2)).astype(np.float32)


#: Voxels per slab of sections: wherever the arithmetic is per voxel or per section, the phantom is
#: made a slab at a time, so its peak is a few whole-volume arrays (about 25 bytes per voxel) instead
#: of dozens of whole-volume temporaries.  Random fields are still drawn whole, in the same order.
_SLAB_VOXELS = 1 << 22


def _slabs(shape: Sequence[int]) -> List[slice]:
    """Consecutive slices of sections covering ``shape[0]``, about ``_SLAB_VOXELS`` voxels each."""
    step = max(1, _SLAB_VOXELS // max(1, int(np.prod(shape[1:3]))))
    return [slice(z0, min(int(shape[0]), z0 + step)) for z0 in range(0, int(shape[0]), step)]


def _draw(draw, shape: Sequence[int]) -> np.ndarray:
    """A float32 array of ``draw(size)`` values, drawn slab by slab (the same values as one whole draw:
    a generator's stream does not depend on how it is split) without a whole float64 temporary."""
    out = np.empty(tuple(shape), np.float32)
    for sl in _slabs(shape):
        out[sl] = draw((sl.stop - sl.start,) + tuple(shape[1:]))
    return out


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: Sequence[float]) -> np.ndarray:
    """White noise filtered with a Gaussian (per-axis sigma in voxels, 0 = unfiltered), unit std."""
    field_ = _draw(lambda size: rng.standard_normal(size, dtype=np.float32), shape)
    # Transform only along the filtered axes (section-wise noise needs no FFT across sections).
    axes = tuple(a for a, s in enumerate(sigma) if s > 0)
    transfer = _gaussian_filter_fft([shape[a] for a in axes], [sigma[a] for a in axes])
    transfer = transfer.reshape([transfer.shape[axes.index(a)] if a in axes else 1 for a in range(len(shape))])
    size = [shape[a] for a in axes]
    if 0 in axes:  # filtered across sections: one transform of the whole volume
        spectrum = np.fft.rfftn(field_, axes=axes)
        del field_
        spectrum *= transfer
        field_ = np.fft.irfftn(spectrum, s=size, axes=axes).astype(np.float32, copy=False)
        del spectrum
    elif axes:  # in-plane only: section by section, in place
        for sl in _slabs(shape):
            spectrum = np.fft.rfftn(field_[sl], axes=axes)
            spectrum *= transfer
            field_[sl] = np.fft.irfftn(spectrum, s=size, axes=axes)
    field_ -= field_.mean()
    field_ /= max(float(field_.std()), 1e-12)
    return field_


# --- geometry of the anatomy --------------------------------------------------------------------------------
def _rotation(axis: Sequence[float], angle: float) -> np.ndarray:
    a = np.asarray(axis, float)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _random_small_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    return _rotation(rng.standard_normal(3), np.deg2rad(rng.uniform(-max_deg, max_deg)))


class _Body:
    """Body coordinates of every voxel and implicit shapes evaluated on them."""

    def __init__(self, p: np.ndarray, noise: Dict[str, np.ndarray]) -> None:
        self.p = p  # (3, Z, Y, X) float32
        self.noise = noise

    def ellipsoid(self, centre, semi, rotation=None, noise: Optional[str] = None, amp: float = 0.0) -> np.ndarray:
        """Implicit value ``sum((q / semi)^2)`` (< 1 inside), optionally roughened by a noise field."""
        q = [self.p[i] - np.float32(centre[i]) for i in range(3)]
        if rotation is not None:
            r = np.asarray(rotation, np.float32)
            q = [r[0, i] * q[0] + r[1, i] * q[1] + r[2, i] * q[2] for i in range(3)]
        f = (q[0] / np.float32(semi[0])) ** 2 + (q[1] / np.float32(semi[1])) ** 2 + (q[2] / np.float32(semi[2])) ** 2
        if noise is not None and amp:
            f = f * (1.0 + np.float32(amp) * self.noise[noise])
        return f

    def tube(self, centre_xy, radius_xy, bend=(0.0, 0.0), noise: Optional[str] = None, amp: float = 0.0):
        """Implicit value of a tube along z whose centre bends quadratically with z."""
        z2 = self.p[2] ** 2
        dx = (self.p[0] - np.float32(centre_xy[0]) - np.float32(bend[0]) * z2) / np.float32(radius_xy[0])
        dy = (self.p[1] - np.float32(centre_xy[1]) - np.float32(bend[1]) * z2) / np.float32(radius_xy[1])
        f = dx * dx + dy * dy
        if noise is not None and amp:
            f = f * (1.0 + np.float32(amp) * self.noise[noise])
        return f


def _paint_anatomy(body: _Body, rng: np.random.Generator, cfg: PhantomConfig) -> Tuple[np.ndarray, np.ndarray]:
    """Tissue map and heart label of the (rotated, misaligned) anatomy."""
    def jit(values, scale):
        return tuple(float(v) + float(rng.uniform(-scale, scale)) for v in values)

    def rel(values, scale):
        return tuple(float(v) * float(np.exp(rng.uniform(-scale, scale))) for v in values)

    shape = body.p.shape[1:]
    tissue = np.zeros(shape, np.uint8)

    # Body, cavity, wall and skin.
    body_f = body.ellipsoid(jit((0.0, 0.02, 0.0), 0.03), rel((0.80, 0.68, 1.3), 0.05), noise="coarse", amp=0.10)
    inside = body_f < 1
    tissue[inside] = Tissue.MESENCHYME

    # The heart is a union of chamber-shaped lobes (a chamber plus its wall), so its outline is
    # lobulated like a real one; the pericardial cavity around it is collapsed in places.
    hs = cfg.heart_scale
    heart_c = np.array(jit((0.02, 0.29, -0.02), 0.03))
    heart_rot = _random_small_rotation(rng, 15.0)
    chambers = []  # (lumen implicit, trabeculation)
    env_f = None
    for centre, semi, wall, trabeculae in _CHAMBERS:
        c = heart_c + heart_rot @ (np.array(jit(centre, 0.02)) * hs)
        semi = np.array(rel(semi, 0.08)) * hs
        lobe = body.ellipsoid(c, semi + wall * hs, heart_rot, noise="coarse", amp=0.04)
        env_f = lobe if env_f is None else np.minimum(env_f, lobe)
        chambers.append((body.ellipsoid(c, semi, heart_rot), trabeculae))
    gap = cfg.pericardial_space * np.clip(1.0 + 1.3 * body.noise["coarse"], 0.0, 2.0)
    cavity = (env_f < (1 + gap) ** 2) & inside
    tissue[cavity] = Tissue.CAVITY
    del gap

    radial = np.sqrt(np.maximum(body_f, 0))
    tissue[inside & (radial > 0.84) & (body.p[1] > 0.15)] = Tissue.BODY_WALL
    tissue[inside & (radial > 0.975)] = Tissue.EPIDERMIS

    # Dorsal structures: neural tube, notochord, gut, aortae, cardinal veins.
    bend = (float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.08, 0.08)))
    neural = body.tube(jit((0.0, -0.47), 0.02), rel((0.09, 0.13), 0.08), bend, "fine", 0.05) < 1
    tissue[neural & inside] = Tissue.NEURAL
    tissue[(body.tube((0.0, -0.47), (0.014, 0.08), bend) < 1) & neural] = Tissue.CAVITY
    tissue[(body.tube(jit((0.0, -0.31), 0.01), (0.025, 0.025), bend) < 1) & inside] = Tissue.NOTOCHORD
    gut_c = jit((0.0, -0.16), 0.02)
    gut = body.tube(gut_c, rel((0.06, 0.05), 0.1), bend, "fine", 0.1)
    tissue[(gut < 1) & inside] = Tissue.EPITHELIUM
    tissue[(gut < 0.3) & inside] = Tissue.CAVITY
    for side in (-1, 1):
        aorta = body.tube((side * 0.08, -0.27), rel((0.035, 0.035), 0.15), bend)
        tissue[(aorta < 1) & inside] = Tissue.VESSEL_BLOOD
        vein = body.tube((side * 0.33, -0.22), rel((0.04, 0.05), 0.2), bend, "fine", 0.2)
        tissue[(vein < 1) & inside] = Tissue.VESSEL_BLOOD

    # Lung buds dorsal to the heart, each with a bronchus.
    for side in (-1, 1):
        c = jit((side * 0.2, -0.08, 0.06), 0.02)
        lung = body.ellipsoid(c, rel((0.15, 0.14, 0.28), 0.08), noise="fine", amp=0.15) < 1
        tissue[lung & inside] = Tissue.LUNG
        bronchus = body.tube((c[0], c[1]), (0.045, 0.04), bend)
        tissue[(bronchus < 1) & lung & inside] = Tissue.EPITHELIUM
        tissue[(bronchus < 0.3) & lung & inside] = Tissue.CAVITY

    # Liver caudo-ventral, touching the heart, with blood islands and a large vein.
    liver_f = body.ellipsoid(jit((0.0, 0.24, 0.38), 0.03), rel((0.42, 0.30, 0.25), 0.06), noise="coarse", amp=0.12)
    liver = (liver_f < 1) & inside
    tissue[liver] = Tissue.LIVER
    tissue[liver & (body.noise["fine"] > 1.5)] = Tissue.LIVER_BLOOD
    # Blood-forming foci, few next to the heart (where the liver looks like myocardium), more further off.
    away = np.clip(np.sqrt(np.maximum(env_f, 0)) - 1.3, 0, 1)
    tissue[liver & (-body.noise["fine"] > 1.0 - 1.2 * away)] = Tissue.HEMATOPOIETIC
    del away
    vessel = body.tube(jit((0.05, 0.12), 0.05), (0.05, 0.05), (0.0, 0.0))
    tissue[liver & (vessel < 1)] = Tissue.VESSEL_BLOOD

    # Heart: myocardium, chamber lumens with trabeculae protruding into the ventricles, cushions.
    heart = (env_f < 1) & inside
    tissue[heart] = Tissue.MYOCARDIUM
    lumen = np.zeros(shape, bool)
    for chamber_f, trabeculae in chambers:
        lumen |= chamber_f * (1.0 + trabeculae * np.maximum(body.noise["fine"], 0)) < 1
    lumen &= heart
    tissue[lumen] = Tissue.HEART_BLOOD
    cushion_c = heart_c + heart_rot @ (np.array(jit((0.0, -0.04, -0.07), 0.02)) * hs)
    cushion = body.ellipsoid(cushion_c, np.array(rel((0.13, 0.05, 0.06), 0.1)) * hs, heart_rot, "fine", 0.2) < 1
    tissue[cushion & heart] = Tissue.CUSHION
    return tissue, heart.astype(np.uint8)


# --- the volume ---------------------------------------------------------------------------------------------
def make_phantom(seed: int = 0, config: Optional[PhantomConfig] = None) -> Phantom:
    """Make one synthetic H&E serial-section volume with its heart label.

    Parameters
    ----------
    seed : int
        Seed of every random choice; the same seed and config give identical arrays.
    config : PhantomConfig, optional
        Size and difficulty; the default is a 64 x 192 x 192 volume.

    Returns
    -------
    Phantom
        ``image`` (RGB :class:`~ScribbleSegLib.geometry.Volume`), ``label`` (heart 0/1),
        ``tissue`` (:class:`Tissue` codes) and ``info``.

    Examples
    --------
    >>> phantom = make_phantom(seed=3, config=PhantomConfig(shape=(16, 96, 96)))
    >>> phantom.image.array.shape, phantom.image.array.dtype, bool(phantom.label.any())
    ((16, 96, 96, 3), dtype('uint8'), True)
    """
    from .checks import check_instance, check_seed
    from .resources import check_phantom_memory

    check_seed(seed)
    check_instance(config, "config", PhantomConfig)
    cfg = config or PhantomConfig()
    cfg.validate()
    check_phantom_memory(cfg.shape)  # the command line checks it too, with its option's name
    Z, Y, X = (int(s) for s in cfg.shape)
    sx, sy, sz = voxel_size(cfg)
    # The whole seed (numpy splits it into 32-bit words): seeds of 2^32 and more make phantoms of their own.
    streams = np.random.SeedSequence([int(seed), 0x5EC7])
    rng_geo, rng_anat, rng_tex, rng_stain, rng_art = (np.random.default_rng(s) for s in streams.spawn(5))

    # Artefact plan: sections lost or imaged twice decide which anatomical level each section shows.
    skips = _plan_skips(rng_art, Z, cfg.skipped_sections)
    levels = np.arange(Z, dtype=np.float32)
    for index, kind in skips:
        if kind == "lost":
            levels[index:] += 1
    levels -= (levels[-1] - (Z - 1)) / 2  # keep the stack centred on the body

    # Body coordinates of every voxel: rotation of the body relative to the stack, section misalignment.
    # Body units are half the field of view at zoom 1; a zoom > 1 shows fewer body units per pixel.
    half_fov = min(X * sx, Y * sy) / 2 * float(cfg.zoom)
    tilt = _rotation((*rng_geo.standard_normal(2), 0.0), np.deg2rad(rng_geo.uniform(0, cfg.max_tilt_deg)))
    spin = _rotation((0, 0, 1), np.deg2rad(rng_geo.uniform(-cfg.max_spin_deg, cfg.max_spin_deg)))
    rot = (spin @ tilt).astype(np.float32)
    # The stack is centred on the heart (which lies a little cranial of the body's middle).
    offset = (rng_geo.uniform(-0.04, 0.04, 3) + (0.0, 0.0, -0.06)).astype(np.float32)
    shifts = rng_geo.normal(0, cfg.misalignment_px, (Z, 2)).astype(np.float32)
    turns = np.deg2rad(rng_geo.normal(0, cfg.misalignment_px / 50, Z)).astype(np.float32)
    i = (np.arange(X, dtype=np.float32) + 0.5 - X / 2)[None, None, :]
    j = (np.arange(Y, dtype=np.float32) + 0.5 - Y / 2)[None, :, None]
    cos_t, sin_t = np.cos(turns)[:, None, None], np.sin(turns)[:, None, None]

    # Shape noise: smooth 3D fields with correlation lengths fixed in body units (so, in mm).
    per_unit = np.array([half_fov / sz, half_fov / sy, half_fov / sx])  # voxels per body unit, (z, y, x)
    noise = {"coarse": _smooth_noise(rng_anat, (Z, Y, X), 0.12 * per_unit),
             "fine": _smooth_noise(rng_anat, (Z, Y, X), 0.035 * per_unit)}
    tissue = np.empty((Z, Y, X), np.uint8)
    label = np.empty((Z, Y, X), np.uint8)
    for sl in _slabs((Z, Y, X)):
        u = (cos_t[sl] * i - sin_t[sl] * j + shifts[sl, 0, None, None]) * np.float32(sx / half_fov)
        v = (sin_t[sl] * i + cos_t[sl] * j + shifts[sl, 1, None, None]) * np.float32(sy / half_fov)
        w = ((levels[sl] + 0.5 - Z / 2) * np.float32(sz / half_fov))[:, None, None]
        p = np.empty((3,) + u.shape, np.float32)
        for axis in range(3):
            p[axis] = rot[0, axis] * u + rot[1, axis] * v + rot[2, axis] * w + offset[axis]
        # Each slab draws the organs' positions and sizes from the same point of the stream.
        tissue[sl], label[sl] = _paint_anatomy(_Body(p, {k: f[sl] for k, f in noise.items()}),
                                               copy.deepcopy(rng_anat), cfg)
        del u, v, p
    del noise

    stains = _random_stains(rng_stain, cfg)
    conc = _concentrations(tissue, rng_tex, cfg, stains["intensity"])
    repeated = [i for i, k in skips if k == "repeated"]
    info: Dict = {"seed": int(seed), "stains": {k: np.asarray(v).round(4).tolist() for k, v in stains.items()},
                  "tilt_deg": round(float(np.rad2deg(np.arccos(np.clip(rot[2, 2], -1, 1)))), 2),
                  "lost_sections": [i for i, k in skips if k == "lost"], "repeated_sections": repeated}
    info["folds"] = _add_folds(conc, tissue, rng_art, cfg.folds, cfg.nucleus_px, exclude=repeated)
    info["tears"] = _add_tears(conc, tissue, rng_art, cfg.tears, cfg.nucleus_px, exclude=repeated)
    # A section imaged twice: the same tissue with its artefacts, but its own camera noise.
    for index in repeated:
        conc[:, index] = conc[:, index - 1]
        tissue[index] = tissue[index - 1]
        label[index] = label[index - 1]

    dark = np.zeros(tissue.shape, np.float32)
    info["bubbles"] = _add_bubbles(conc, dark, tissue, rng_art, cfg.bubbles, cfg.nucleus_px)
    info["debris"] = _add_debris(dark, rng_art, cfg.debris, cfg.nucleus_px)
    image = np.empty((Z, Y, X, 3), np.uint8)
    hematoxylin, eosin = (np.asarray(stains[k], np.float32) for k in ("hematoxylin", "eosin"))
    for sl in _slabs((Z, Y, X)):  # camera noise drawn slab by slab: the same stream as one draw
        od = conc[0, sl][..., None] * hematoxylin
        od += conc[1, sl][..., None] * eosin
        od += dark[sl][..., None] * np.float32(_DARK_OD)[None, None, None, :]
        od += np.float32(_GLASS_OD)
        if cfg.noise > 0:
            od += rng_tex.normal(0, cfg.noise, od.shape).astype(np.float32)
        image[sl] = od_to_rgb(od)
    del od, conc, dark
    geometry = Geometry(spacing=(sx, sy, sz))
    return Phantom(image=Volume(image, geometry), label=label, tissue=tissue, info=info)


def _plan_skips(rng: np.random.Generator, n_sections: int, count: int) -> List[Tuple[int, str]]:
    """Distinct interior section indices, each lost (``"lost"``) or imaged twice (``"repeated"``)."""
    interior = np.arange(n_sections // 4, n_sections - n_sections // 4)
    count = min(count, interior.size // 2)
    if count <= 0:
        return []
    picks = sorted(int(k) for k in rng.choice(interior, count, replace=False))
    return [(k, "lost" if rng.random() < 0.5 else "repeated") for k in picks]


def _random_stains(rng: np.random.Generator, cfg: PhantomConfig) -> Dict[str, np.ndarray]:
    """Per-volume stain OD vectors (unit length) and concentration scales."""
    variation = cfg.stain_variation

    def jitter(vector, amount):
        v = np.asarray(vector) + rng.normal(0, amount * variation, 3)
        v = np.maximum(v, 0.02)
        return v / np.linalg.norm(v)

    return {"hematoxylin": jitter(cfg.hematoxylin_od, 0.05), "eosin": jitter(cfg.eosin_od, 0.08),
            "intensity": np.asarray(cfg.intensity, float) * np.exp(rng.normal(0, 0.18 * variation, 2))}


def _concentrations(tissue: np.ndarray, rng: np.random.Generator, cfg: PhantomConfig,
                    intensity: np.ndarray) -> np.ndarray:
    """Haematoxylin and eosin concentration ``(2, Z, Y, X)`` float32 for a tissue map."""
    table = _appearance_table(cfg.mimicry)
    shape = tissue.shape
    r = float(cfg.nucleus_px)
    table[:, 2] *= np.float32(cfg.nuclear_density)
    table[:, 4] *= np.float32(cfg.striation)
    table[:, 5] *= np.float32(cfg.grain)
    columns = {name: c for c, name in enumerate(("h_base", "e_base", "density", "nuc_h", "striation", "grain",
                                                  "rbc"))}

    def column(name: str, sl: slice) -> np.ndarray:
        return table[:, columns[name]][tissue[sl]]

    slabs = _slabs(shape)
    conc = np.empty((2,) + tuple(shape), np.float32)
    h, e = conc[0], conc[1]

    # Nuclei: random seeds at a tissue-dependent density, blurred into blobs of radius ~r.
    draws = _draw(lambda size: rng.random(size, dtype=np.float32), shape)
    weights = _draw(lambda size: rng.uniform(0.6, 1.0, size), shape)
    for sl in slabs:
        seeds = (draws[sl] < column("density", sl) / (r * r)).astype(np.float32)
        seeds *= weights[sl]
        blobs = _blur_sections(seeds, 0.8 * r) * np.float32(2 * np.pi * (0.8 * r) ** 2)
        h[sl] = column("h_base", sl) + column("nuc_h", sl) * np.minimum(blobs, 1.2)
    del weights, seeds, blobs

    # Red blood cells: packed eosin blobs, patchy where the blood is thinner.
    patch = _smooth_noise(rng, shape, (0, 6 * r, 6 * r))
    draws = _draw(lambda size: rng.random(size, dtype=np.float32), shape)
    for sl in slabs:
        rbc = column("rbc", sl)
        rbc_p = rbc * np.clip(0.75 + 0.5 * patch[sl], 0.1, 1.5) / (r * r)
        cells = (draws[sl] < rbc_p).astype(np.float32)
        cells = np.minimum(_blur_sections(cells, 0.9 * r) * np.float32(2 * np.pi * (0.9 * r) ** 2), 1.0)
        h[sl] += np.float32(_RBC_HEMATOXYLIN) * cells * (rbc > 0)
        e[sl] = column("e_base", sl) + np.float32(_RBC_EOSIN) * cells
    del draws, patch, cells, rbc_p

    # Cytoplasm grain and striated muscle: oriented stripes with a slowly varying direction.
    grain = _smooth_noise(rng, shape, (0, 0.7 * r, 0.7 * r))
    for sl in slabs:
        e[sl] *= 1.0 + column("grain", sl) * grain[sl]
    del grain
    present = np.zeros(len(table), bool)
    for sl in slabs:
        present[np.bincount(tissue[sl].ravel(), minlength=len(table)) > 0] = True
    if np.any(table[present, columns["striation"]] > 0):
        # Stripes of one direction per section, bent into wavy fibres by a smooth warp of their phase.
        angle = rng.uniform(0, np.pi, (shape[0], 1, 1)).astype(np.float32)
        yy = np.arange(shape[1], dtype=np.float32)[None, :, None]
        xx = np.arange(shape[2], dtype=np.float32)[None, None, :]
        warp = _smooth_noise(rng, shape, (0, 5 * r, 5 * r))
        for sl in slabs:
            phase = (np.cos(angle[sl]) * xx + np.sin(angle[sl]) * yy) * np.float32(2 * np.pi / (3.0 * r))
            e[sl] *= 1.0 + column("striation", sl) * np.sin(phase + 4.0 * warp[sl])
        del warp, phase

    # Uneven staining: smooth variation across a section and from section to section.
    for amount, scale in ((h, intensity[0]), (e, intensity[1])):
        uneven = _smooth_noise(rng, shape, (0, shape[1] / 4, shape[2] / 4))
        level = rng.uniform(0.93, 1.07, (shape[0], 1, 1)).astype(np.float32)
        for sl in slabs:
            amount[sl] *= np.float32(scale) * (1.0 + 0.08 * uneven[sl]) * level[sl]
        del uneven
    np.maximum(conc, 0, out=conc)
    # The microscope's optics soften everything a little.
    for sl in slabs:
        conc[0, sl] = _blur_sections(conc[0, sl], 0.5)
        conc[1, sl] = _blur_sections(conc[1, sl], 0.5)
    return conc


# --- artefacts ------------------------------------------------------------------------------------------------
def _tissue_sections(tissue: np.ndarray, exclude: Sequence[int]) -> np.ndarray:
    area = (tissue != Tissue.EMPTY).reshape(len(tissue), -1).mean(1)
    return np.setdiff1d(np.flatnonzero(area > 0.05), np.asarray(exclude, int))


def _pick_sections(tissue: np.ndarray, rng: np.random.Generator, count: int, exclude: Sequence[int]) -> List[int]:
    """Up to ``count`` distinct sections with enough tissue, not in ``exclude``, in order."""
    candidates = _tissue_sections(tissue, exclude)
    if count <= 0 or candidates.size == 0:
        return []
    return sorted(int(k) for k in rng.choice(candidates, min(count, candidates.size), replace=False))


def _add_folds(conc: np.ndarray, tissue: np.ndarray, rng: np.random.Generator, count: int, r: float,
               exclude: Sequence[int] = ()) -> List[int]:
    """Fold a flap of tissue over itself on ``count`` sections: a band of doubled OD."""
    chosen = _pick_sections(tissue, rng, count, exclude)
    _, Y, X = tissue.shape
    yy, xx = np.mgrid[0:Y, 0:X].astype(np.float32)
    for k in chosen:
        ys, xs = np.nonzero(tissue[k])
        pick = rng.integers(ys.size)
        theta = rng.uniform(0, np.pi)
        normal = np.array([np.cos(theta), np.sin(theta)], np.float32)
        d = (xx - xs[pick]) * normal[0] + (yy - ys[pick]) * normal[1]
        width = rng.uniform(2.0, 4.0) * max(r, 1.0)
        band = (d > 0) & (d < width)
        # The flap is the strip just outside the band, mirrored onto it.
        src_x = np.clip(np.rint(xx - 2 * d * normal[0]), 0, X - 1).astype(int)
        src_y = np.clip(np.rint(yy - 2 * d * normal[1]), 0, Y - 1).astype(int)
        for c in range(2):
            conc[c, k][band] += conc[c, k][src_y[band], src_x[band]]
    return chosen


def _add_tears(conc: np.ndarray, tissue: np.ndarray, rng: np.random.Generator, count: int, r: float,
               exclude: Sequence[int] = ()) -> List[int]:
    """Crack ``count`` sections: thin wandering white lines through the tissue."""
    chosen = _pick_sections(tissue, rng, count, exclude)
    _, Y, X = tissue.shape
    for k in chosen:
        ys, xs = np.nonzero(tissue[k])
        pick = rng.integers(ys.size)
        length = int(rng.uniform(0.2, 0.5) * min(Y, X))
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.15, length))
        path_x = xs[pick] + np.cumsum(np.cos(heading))
        path_y = ys[pick] + np.cumsum(np.sin(heading))
        mask = draw_path(np.zeros((Y, X), bool), path_y, path_x, rng.uniform(0.4, 0.9) * max(r, 1.0))
        mask &= tissue[k] != Tissue.EMPTY
        conc[:, k][:, mask] = 0.0
        tissue[k][mask] = Tissue.EMPTY
    return chosen



#: OD of the rim of a bubble and of debris: dark grey-brown, neither stain.
_DARK_OD = np.array([0.55, 0.62, 0.70], np.float32)


def _add_bubbles(conc: np.ndarray, dark: np.ndarray, tissue: np.ndarray, rng: np.random.Generator, count: int,
                 r: float) -> List[int]:
    """Air bubbles under the cover slip: a pale disc (the tissue seen faintly) with a dark rim."""
    chosen = _pick_sections(tissue, rng, count, ())
    _, Y, X = tissue.shape
    yy, xx = np.mgrid[0:Y, 0:X].astype(np.float32)
    for k in chosen:
        ys, xs = np.nonzero(tissue[k])
        pick = rng.integers(ys.size)
        radius = rng.uniform(0.05, 0.12) * min(Y, X)
        d = np.hypot(yy - ys[pick], xx - xs[pick])
        conc[:, k][:, d < radius] *= np.float32(0.35)
        dark[k] += np.clip(1.0 - np.abs(d - radius) / max(1.0, 0.8 * r), 0, 1).astype(np.float32)
    return chosen


def _add_debris(dark: np.ndarray, rng: np.random.Generator, count: int, r: float) -> int:
    """Specks of dark debris anywhere on the slides, a few nuclei across."""
    Z, Y, X = dark.shape
    if count <= 0:
        return 0
    zs, ys, xs = rng.integers(Z, size=count), rng.integers(Y, size=count), rng.integers(X, size=count)
    sigma = 1.5 * max(r, 1.0)
    for sl in _slabs(dark.shape):
        here = (zs >= sl.start) & (zs < sl.stop)
        if not here.any():  # blurring nothing adds nothing
            continue
        specks = np.zeros((sl.stop - sl.start, Y, X), np.float32)
        specks[zs[here] - sl.start, ys[here], xs[here]] = 1.0
        dark[sl] += np.minimum(_blur_sections(specks, sigma) * np.float32(2 * np.pi * sigma ** 2 * 0.8), 1.5)
    return int(count)


# --- a set of volumes on disk ---------------------------------------------------------------------------------
def volume_roles(n_volumes: int) -> List[str]:
    """Roles of the volumes of a set, in order: ``train`` first, then ``val``, then ``test``.

    Six volumes split as the paper's (2 / 2 / 2); in general a third (rounded down) each for
    validation and test and the rest for training; two volumes are one train and one test,
    a single volume is a test volume.

    Examples
    --------
    >>> volume_roles(6)
    ['train', 'train', 'val', 'val', 'test', 'test']
    >>> volume_roles(2), volume_roles(1)
    (['train', 'test'], ['test'])
    """
    n = int(n_volumes)
    if n <= 2:
        return ["test"] if n == 1 else ["train", "test"][:n]
    third = n // 3
    return ["train"] * (n - 2 * third) + ["val"] * third + ["test"] * third


def _check_replaced(out: Path, files: List[str]) -> None:
    """Refuse a set whose files would replace files in ``out`` that no phantom set there wrote (its
    ``phantom.json`` lists them): a file of the user's own with a phantom file's name was replaced silently."""
    if not out.is_dir():
        return
    ours = set()
    manifest = out / "phantom.json"
    if manifest.is_file():
        try:
            stored = json.loads(manifest.read_text())
            if stored.get("format") == MANIFEST_FORMAT:
                ours.add("phantom.json")
                for entry in stored.get("volumes", []):
                    ours.update([entry.get("image"), entry.get("label"), *entry.get("scribbles", [])])
        except (OSError, ValueError, TypeError, AttributeError):
            pass  # not a manifest of ours: its files are not ours either
    for name in files + ["phantom.json"]:
        if name not in ours and (out / name).exists():
            raise ScribbleSegError(f"{out / name}: exists and is not a file of a phantom set (phantom.json does not "
                                   "list it); a set would replace it: choose another folder, or move the file")


def write_phantom_set(out_dir: PathLike, n_volumes: int = 6, seed: int = 0, config: Optional[PhantomConfig] = None,
                      progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> Path:
    """Write phantom volumes with labels and three scribble patterns each, and a manifest.

    Volume ``i`` is ``make_phantom(seed * 100 + i, config)`` (the volumes ``scribbleseg bench``
    uses for the same seed).  Files, per volume ``NN``: ``volNN_image.nrrd`` (RGB),
    ``volNN_label.seg.nrrd`` (segment ``heart``) and ``volNN_scribbles_pK.seg.nrrd`` (segments
    ``heart`` and ``background``; pattern K = 0, 1, 2 is :func:`~ScribbleSegLib.scribbles.simulate_scribbles`
    with ``seed=K`` on every 10th heart section); then ``phantom.json``.  The files are staged and renamed
    into place together at the end: an interrupt, a cancel or a full disk leaves none of them.

    Parameters
    ----------
    out_dir : str or Path
        Output folder; created if its parent exists.
    n_volumes : int
        Number of volumes; roles as :func:`volume_roles`.
    seed : int
        Seed of the set.
    config : PhantomConfig, optional
        Size and difficulty of every volume.
    progress, cancel
        Progress callback and cancel token (see :mod:`ScribbleSegLib.progress`).

    Returns
    -------
    Path
        The manifest ``out_dir/phantom.json``.

    Examples
    --------
    >>> import os, tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> write_phantom_set(folder.name, n_volumes=2, config=PhantomConfig(shape=(8, 64, 64))).name
    'phantom.json'
    >>> sorted(name for name in os.listdir(folder.name) if name.startswith("vol01"))[:2]
    ['vol01_image.nrrd', 'vol01_label.seg.nrrd']
    >>> len(os.listdir(folder.name))  # the manifest, and per volume its image, label and 3 stroke patterns
    11
    >>> folder.cleanup()
    """
    from . import volume_io
    from .scribbles import scribbled_sections, simulate_scribbles

    from .checks import check_instance, check_seed
    from .resources import check_phantom_memory

    check_seed(seed)
    check_instance(config, "config", PhantomConfig)
    cfg = config or PhantomConfig()
    cfg.validate()
    check_phantom_memory(cfg.shape)  # the command line checks it too, with its option's name
    most = choices.MAX_PHANTOM_VOLUMES
    if isinstance(n_volumes, bool) or not isinstance(n_volumes, (int, np.integer)) or not 1 <= n_volumes <= most:
        raise ScribbleSegError(f"n_volumes must be a whole number from 1 to {most}, got {n_volumes!r}")
    out = Path(out_dir)
    if not out.parent.is_dir():
        raise ScribbleSegError(f"{out}: the parent folder {out.parent} does not exist")
    if out.exists() and not out.is_dir():
        raise ScribbleSegError(f"{out}: exists and is not a folder")
    patterns = (0, 1, 2)
    # At most its raw size per file (the writers compress); all of them are held until the set is complete.
    check_free_space({out: int(n_volumes) * int(np.prod(cfg.shape)) * (3 + 1 + len(patterns))})
    roles = volume_roles(n_volumes)
    names = [f"vol{index:02d}" for index in range(len(roles))]
    files = [f"{name}_{kind}" for name in names
             for kind in ("image.nrrd", "label.seg.nrrd", *(f"scribbles_p{k}.seg.nrrd" for k in patterns))]
    _check_replaced(out, files)
    out.mkdir(exist_ok=True)
    sweep_stale_temps(out)  # what a killed run left staged here
    entries = []
    # Every file is staged and the set renamed into place at the end: an interrupt or a full disk leaves none.
    with OutputSet({file: out / file for file in files + ["phantom.json"]}) as outputs:
        for index, (name, role) in enumerate(zip(names, roles)):
            _progress.check(cancel)
            _progress.report(progress, "phantom", index / len(roles), f"{name}: making")
            ph = make_phantom(seed=int(seed) * 100 + index, config=cfg)
            geometry = ph.image.geometry
            entry = {"name": name, "role": role, "seed": int(seed) * 100 + index, "image": f"{name}_image.nrrd",
                     "label": f"{name}_label.seg.nrrd", "scribbles": [], "scribbled_sections": [],
                     "heart_sections": int(ph.label.reshape(len(ph.label), -1).any(axis=1).sum()),
                     "artefacts": {k: v for k, v in ph.info.items() if k not in ("seed",)}}
            _progress.report(progress, "phantom", (index + 0.5) / len(roles), f"{name}: writing")
            with outputs.writing(entry["image"]) as tmp:
                volume_io.write_rgb_volume(tmp, ph.image)
            with outputs.writing(entry["label"]) as tmp:
                volume_io.write_segmentation(tmp, [("heart", ph.label, volume_io.HEART_COLOR)], geometry)
            for k in patterns:
                _progress.check(cancel)
                strokes = simulate_scribbles(ph.label, seed=k, every=choices.SCRIBBLE_EVERY,
                                             spacing=geometry.spacing,
                                             tissue=ph.tissue != Tissue.EMPTY)
                file = f"{name}_scribbles_p{k}.seg.nrrd"
                with outputs.writing(file) as tmp:
                    volume_io.write_segmentation(tmp, [("heart", strokes == 1, volume_io.HEART_COLOR),
                                                       ("background", strokes == 2, volume_io.BACKGROUND_COLOR)],
                                                 geometry)
                entry["scribbles"].append(file)
                entry["scribbled_sections"].append(
                    scribbled_sections(ph.label, seed=k, every=choices.SCRIBBLE_EVERY).tolist())
            entries.append(entry)

        manifest = {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "seed": int(seed),
                    "shape": [int(s) for s in cfg.shape], "spacing": [float(s) for s in voxel_size(cfg)],
                    "config": dataclasses.asdict(cfg), "scribble_patterns": list(patterns), "volumes": entries}
        with outputs.writing("phantom.json") as tmp:
            tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        _progress.check(cancel)
        outputs.commit()
    path = out / "phantom.json"
    # An earlier, larger set in the folder keeps its later volumes beside a manifest that no longer lists them.
    written = set(files)
    stale = sorted(p.name for p in out.glob("vol[0-9][0-9]_*") if p.name not in written)
    if stale:
        logging.getLogger("ScribbleSegLib").warning(
            "%s: %d file(s) of an earlier set are still there (first: %s); phantom.json lists this set's only",
            out, len(stale), stale[0])
    _progress.report(progress, "phantom", 1.0, f"{len(roles)} volumes")
    return path
