"""Voxel geometry of a volume, in SimpleITK's (LPS, x-fastest) conventions.

Arrays in ScribbleSegLib are indexed ``[z, y, x]`` (``[k, j, i]``), as
SimpleITK's ``GetArrayFromImage`` and Slicer's ``arrayFromVolume`` give them;
images are ``(Z, Y, X, 3)`` uint8, labels and scribbles ``(Z, Y, X)`` uint8.
The geometry is kept in SimpleITK's order: ``spacing`` and ``origin`` are
``(x, y, z)`` in mm and ``direction`` is the row-major 3x3 matrix whose
columns are the i, j, k axis directions in LPS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import numpy as np

from .choices import SPACING_RANGE
from .errors import ScribbleSegError

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
#: The in-plane pixel size ``(x, y)`` in mm that stands for "not known": what a file format states when it stores
#: none (a PNG; a tile read without a spacing), and what a model trained on bare arrays records.
UNKNOWN_PIXEL = (1.0, 1.0)
#: A pixel size from this many mm up to :data:`UNKNOWN_PIXEL` is asked about as micrometres given as mm (0.62 for
#: 0.62 um): a slide scanner's coarsest overview is tens of micrometres per pixel (``pipeline.network_scale``,
#: ``training``).
COARSEST_SCAN_PIXEL = 0.5


def micrometres_question(pixel: float) -> str:
    """What a pixel size from :data:`COARSEST_SCAN_PIXEL` up to :data:`UNKNOWN_PIXEL` is asked about, after the
    words that name whose it is; "" for any other size.

    Examples
    --------
    >>> micrometres_question(0.62)
    "0.62 mm is coarser than a slide scanner's: was the spacing given in micrometres? It is in mm (0.62 um is \
0.00062 mm)"
    >>> micrometres_question(0.02)
    ''
    """
    if not COARSEST_SCAN_PIXEL <= pixel < UNKNOWN_PIXEL[0]:
        return ""
    return (f"{pixel:g} mm is coarser than a slide scanner's: was the spacing given in micrometres? It is in mm "
            f"({pixel:g} um is {pixel / 1000:g} mm)")


#: How far a direction's columns may be from unit length, and its determinant from +-1: a float32 NIfTI or a
#: rounded NRRD header is off by far less; a matrix further off scales or squeezes the axes (a singular one was
#: taken, and surfaces came out as one point and labelmaps as files that would not read back).
DIRECTION_TOLERANCE = 0.01


def _check_direction(direction: Tuple[float, ...]) -> None:
    """Refuse a direction whose columns are not unit vectors, or that is singular or far from orthogonal.

    Examples
    --------
    >>> _check_direction((0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))  # axes swapped: fine
    >>> _check_direction((0.0,) * 9)
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: direction must hold the axes' direction cosines (a rotation, its \
columns of length 1), got (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0): column lengths 0, 0, 0, determinant 0
    """
    matrix = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    lengths = np.linalg.norm(matrix, axis=0)
    det = float(np.linalg.det(matrix))
    if np.abs(lengths - 1).max() > DIRECTION_TOLERANCE or abs(abs(det) - 1) > DIRECTION_TOLERANCE:
        raise ScribbleSegError(f"direction must hold the axes' direction cosines (a rotation, its columns of length "
                               f"1), got {tuple(direction)!r}: column lengths "
                               f"{', '.join(f'{v:.3g}' for v in lengths)}, determinant {det:.3g}")


@dataclass(frozen=True)
class Geometry:
    """Spacing, origin and direction of a volume (SimpleITK order, mm, LPS).

    Parameters
    ----------
    spacing : tuple of 3 float
        Voxel size ``(x, y, z)`` in mm; every entry within :data:`ScribbleSegLib.choices.SPACING_RANGE`.
    origin : tuple of 3 float
        Position of voxel ``(0, 0, 0)`` in LPS mm.
    direction : tuple of 9 float
        Row-major 3x3 direction cosines; column ``c`` is the direction of axis ``c``.

    Examples
    --------
    >>> g = Geometry((0.02, 0.02, 0.1))
    >>> g.spacing_zyx, g.scaled((2, 2, 1)).spacing
    ((0.1, 0.02, 0.02), (0.04, 0.04, 0.1))
    """

    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: Tuple[float, ...] = field(default=IDENTITY)

    def __post_init__(self) -> None:
        spacing = _floats(self.spacing)
        if spacing is None or len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ScribbleSegError(f"spacing must be three positive numbers in mm, got {self.spacing!r}")
        lo, hi = SPACING_RANGE
        if not all(lo <= s <= hi for s in spacing):
            raise ScribbleSegError(f"spacing must lie between {lo:g} and {hi:g} mm, got {self.spacing!r}")
        origin = _floats(self.origin)
        if origin is None or len(origin) != 3 or not all(np.isfinite(o) for o in origin):
            raise ScribbleSegError(f"origin must be three numbers in mm, got {self.origin!r}")
        direction = _floats(self.direction)
        if direction is None or len(direction) != 9 or not all(np.isfinite(d) for d in direction):
            raise ScribbleSegError(f"direction must be nine numbers (a row-major 3x3 matrix), got {self.direction!r}")
        _check_direction(direction)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    @property
    def spacing_zyx(self) -> Tuple[float, float, float]:
        """Spacing in array-axis order ``(z, y, x)``."""
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    def ijk_to_lps(self) -> np.ndarray:
        """The 4x4 matrix taking ``(i, j, k, 1)`` voxel indices to LPS mm.

        Examples
        --------
        >>> Geometry((0.5, 0.5, 2.0), origin=(10.0, 0.0, 0.0)).ijk_to_lps() @ [2, 4, 1, 1]
        array([11.,  2.,  2.,  1.])
        """
        m = np.eye(4)
        m[:3, :3] = np.asarray(self.direction).reshape(3, 3) * np.asarray(self.spacing)[None, :]
        m[:3, 3] = self.origin
        return m

    def ijk_to_ras(self) -> np.ndarray:
        """The 4x4 matrix taking voxel indices to RAS mm, as Slicer's ``GetIJKToRASMatrix``.

        Examples
        --------
        >>> Geometry((0.5, 0.5, 2.0), origin=(10.0, 0.0, 0.0)).ijk_to_ras() @ [2, 4, 1, 1]  # x and y negated
        array([-11.,  -2.,   2.,   1.])
        """
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.ijk_to_lps()

    @classmethod
    def from_ijk_to_ras(cls, matrix: np.ndarray) -> "Geometry":
        """Build a geometry from a 4x4 IJK-to-RAS matrix (Slicer's convention).

        Examples
        --------
        >>> g = Geometry((0.5, 0.25, 2.0), origin=(10.0, -3.0, 7.0))
        >>> Geometry.from_ijk_to_ras(g.ijk_to_ras()) == g
        True
        """
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(matrix, dtype=float)
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        direction = lps[:3, :3] / spacing[None, :]
        return cls(tuple(spacing), tuple(lps[:3, 3]), tuple(direction.ravel()))

    def scaled(self, factors_xyz: Sequence[float]) -> "Geometry":
        """Geometry of the volume downsampled by ``factors_xyz`` (area average, same corner).

        Examples
        --------
        The first voxel of a 2x2 average is centred between the first two old ones:

        >>> g = Geometry((0.5, 0.5, 2.0)).scaled((2, 2, 1))
        >>> g.spacing, g.origin
        ((1.0, 1.0, 2.0), (0.25, 0.25, 0.0))
        """
        f = np.asarray(factors_xyz, dtype=float)
        spacing = np.asarray(self.spacing) * f
        # The first downsampled voxel's centre lies half an old voxel times (f - 1) inside.
        shift = np.asarray(self.direction).reshape(3, 3) @ (0.5 * (f - 1.0) * np.asarray(self.spacing))
        return Geometry(tuple(spacing), tuple(np.asarray(self.origin) + shift), self.direction)

    def mismatch(self, other: "Geometry", rtol: float = 1e-3, reference: str = "image") -> str:
        """Describe how ``other`` differs from this geometry, or return ``""`` if it matches.

        Spacing is compared relatively (``rtol``), origin to ``rtol`` of the largest
        spacing, direction to 1e-3.  ``reference`` names what this geometry belongs
        to in the description.

        Examples
        --------
        >>> image = Geometry((0.5, 0.5, 2.0))
        >>> image.mismatch(Geometry((0.5, 0.5, 2.0)))
        ''
        >>> image.mismatch(Geometry((0.5, 0.5, 4.0)), reference="stack")
        "spacing (0.5, 0.5, 4) differs from the stack's (0.5, 0.5, 2)"
        """
        if not np.allclose(self.spacing, other.spacing, rtol=rtol, atol=0):
            return f"spacing {_fmt(other.spacing)} differs from the {reference}'s {_fmt(self.spacing)}"
        if not np.allclose(self.origin, other.origin, rtol=0, atol=rtol * max(self.spacing) + 1e-6):
            return f"origin {_fmt(other.origin)} differs from the {reference}'s {_fmt(self.origin)}"
        if not np.allclose(self.direction, other.direction, atol=1e-3):
            return f"direction differs from the {reference}'s"
        return ""


def check_geometry(value, name: str = "geometry") -> Geometry:
    """``value`` if it is a :class:`Geometry`, else a one-line error naming ``name``.

    Examples
    --------
    >>> check_geometry((1.0, 1.0, 1.0))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: geometry must be a Geometry (ScribbleSegLib.geometry), got tuple
    """
    if not isinstance(value, Geometry):
        raise ScribbleSegError(f"{name} must be a Geometry (ScribbleSegLib.geometry), got {type(value).__name__}")
    return value


def _floats(values) -> Optional[Tuple[float, ...]]:
    """``values`` as a tuple of floats, or None if they are not a sequence of numbers (a string is not)."""
    if isinstance(values, (str, bytes)):
        return None
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


@dataclass
class Volume:
    """An image array with its geometry.

    Attributes
    ----------
    array : numpy.ndarray
        ``(Z, Y, X, 3)`` uint8 for an RGB image, ``(Z, Y, X)`` for a scalar one.
    geometry : Geometry
    scan_pixel : tuple of 2 float, optional
        The scan's pixel size ``(x, y)`` in mm that the file states apart from its grid, where the grid's is
        :data:`UNKNOWN_PIXEL` (an ImageJ, OME or Aperio TIFF: :mod:`ScribbleSegLib.scan_pixel`); the network's
        scale reads it.  None otherwise.

    Examples
    --------
    >>> volume = Volume(np.zeros((3, 4, 5, 3), np.uint8), Geometry((0.02, 0.02, 0.1)))
    >>> volume.shape
    (3, 4, 5)
    >>> Volume(volume.array, volume.geometry, scan_pixel=(0.0, 0.0))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: scan_pixel must be None or two pixel sizes (x, y) between 1e-09 and \
1e+09 mm, got (0.0, 0.0)
    """

    array: np.ndarray
    geometry: Geometry
    scan_pixel: Optional[Tuple[float, float]] = None

    def __post_init__(self) -> None:
        # The network's scale divides by it: (0, 0) was a ZeroDivisionError, (nan, nan) a ValueError.
        if self.scan_pixel is not None:
            pixel = _floats(self.scan_pixel)
            lo, hi = SPACING_RANGE
            if pixel is None or len(pixel) != 2 or not all(np.isfinite(v) and lo <= v <= hi for v in pixel):
                raise ScribbleSegError(f"scan_pixel must be None or two pixel sizes (x, y) between {lo:g} and {hi:g} "
                                       f"mm, got {self.scan_pixel!r}")
            self.scan_pixel = pixel

    @property
    def shape(self) -> Tuple[int, int, int]:
        """``(Z, Y, X)``, whatever the number of channels."""
        return tuple(self.array.shape[:3])

    @property
    def scan_spacing(self) -> Tuple[float, float, float]:
        """The scan's voxel size ``(x, y, z)`` in mm: the grid's, in-plane :attr:`scan_pixel` where the file
        states one.

        Examples
        --------
        >>> Volume(np.zeros((1, 2, 2, 3), np.uint8), Geometry((1.0, 1.0, 1.0)), (0.0005, 0.0005)).scan_spacing
        (0.0005, 0.0005, 1.0)
        """
        x, y = self.scan_pixel if self.scan_pixel is not None else self.geometry.spacing[:2]
        return float(x), float(y), float(self.geometry.spacing[2])
