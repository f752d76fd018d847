"""The scan's pixel size that a microscopy TIFF states in its description, where ITK reads none.

ITK reads a TIFF's pixel size from its resolution tags only when their unit is the inch or the centimetre.
Microscopy software states it otherwise, and ITK (so 3D Slicer) then loads the file on 1 mm pixels:

- ImageJ and Fiji write pixels per micrometre in the resolution tags with no unit there, and ``unit=micron``
  (and ``spacing=`` between the sections of a stack) in the image description;
- OME-TIFF (Bio-Formats, QuPath) writes ``PhysicalSizeX``, ``PhysicalSizeY`` and ``PhysicalSizeZ`` in the
  OME-XML of the description;
- Aperio's scanners (``.svs``) write ``MPP = 0.2520`` (micrometres per pixel) in it.

:func:`stated_pixel` reads these, so that the network can run at the scale it was trained at on a Fiji stack
or a slide's region.  The grid the file is read on stays ITK's, the one 3D Slicer loads and strokes are drawn on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from . import image_tags

_DESCRIPTION, _SAMPLES_PER_PIXEL, _X_RESOLUTION, _Y_RESOLUTION = 270, 277, 282, 283
#: Millimetres per unit, by the names ImageJ and OME write (ImageJ escapes the micro sign as ``\\u00B5``).
UNITS_MM: Dict[str, float] = {"micron": 1e-3, "microns": 1e-3, "um": 1e-3, "µm": 1e-3, "μm": 1e-3,
                              "\\u00b5m": 1e-3, "micrometer": 1e-3, "micrometre": 1e-3, "nm": 1e-6,
                              "nanometer": 1e-6, "mm": 1.0, "millimeter": 1.0, "cm": 10.0, "m": 1000.0}
#: A stated pixel outside this range (mm) is taken for a mistake in the file, not a scan's: 1 nm to 1 mm.
PLAUSIBLE_MM = (1e-6, 1.0)


@dataclass(frozen=True)
class StatedPixel:
    """A scan's voxel size that a file states: ``x`` and ``y`` in mm, ``z`` (between sections) in mm or None,
    and ``source``, what stated it (``"ImageJ"``, ``"OME"`` or ``"Aperio"``).

    Examples
    --------
    What an OME description's sizes in µm (its default unit) come to:

    >>> _ome('<OME><Image><Pixels PhysicalSizeX="0.5" PhysicalSizeY="0.5" PhysicalSizeZ="5"/></Image></OME>')
    StatedPixel(x=0.0005, y=0.0005, z=0.005, source='OME')
    """

    x: float
    y: float
    z: Optional[float]
    source: str


def _plausible(*sizes: Optional[float]) -> bool:
    return all(s is None or PLAUSIBLE_MM[0] <= s <= PLAUSIBLE_MM[1] for s in sizes)


def _imagej(description: str, values: Dict[int, object]) -> Optional[StatedPixel]:
    fields = dict(line.split("=", 1) for line in description.splitlines() if "=" in line)
    unit = UNITS_MM.get(fields.get("unit", "").strip().lower())
    x_per_unit, y_per_unit = values.get(_X_RESOLUTION), values.get(_Y_RESOLUTION, values.get(_X_RESOLUTION))
    if unit is None or not x_per_unit or not y_per_unit:  # "pixel", "inch" (ITK reads that one) or no resolution
        return None
    try:
        z = float(fields["spacing"]) * unit if "spacing" in fields else None
    except ValueError:
        z = None
    return StatedPixel(unit / float(x_per_unit), unit / float(y_per_unit), z if z and z > 0 else None, "ImageJ")


def _ome(description: str) -> Optional[StatedPixel]:
    pixels = re.search(r"<(?:\w+:)?Pixels\b([^>]*)>", description)
    if pixels is None:
        return None
    attributes = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', pixels.group(1)))

    def size(axis: str) -> Optional[float]:
        unit = UNITS_MM.get(attributes.get(f"PhysicalSize{axis}Unit", "µm").strip().lower())
        try:
            value = float(attributes[f"PhysicalSize{axis}"])
        except (KeyError, ValueError):
            return None
        return value * unit if unit is not None and value > 0 else None

    x, y = size("X"), size("Y")
    return None if x is None else StatedPixel(x, y if y is not None else x, size("Z"), "OME")


def _aperio(description: str) -> Optional[StatedPixel]:
    mpp = re.search(r"\|\s*MPP\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)", description)
    if mpp is None or float(mpp.group(1)) <= 0:
        return None
    return StatedPixel(float(mpp.group(1)) * 1e-3, float(mpp.group(1)) * 1e-3, None, "Aperio")


def stated_pixel(path: Path) -> Optional[StatedPixel]:
    """The voxel size a TIFF's description states (ImageJ, OME-XML or Aperio), or None: another file, no such
    statement, or sizes no scan has (:data:`PLAUSIBLE_MM`).

    Examples
    --------
    >>> import os
    >>> stated_pixel(Path(os.devnull)) is None  # not a TIFF
    True
    >>> _aperio("Aperio Image Library v12.0.15 |AppMag = 40|MPP = 0.2520")
    StatedPixel(x=0.000252, y=0.000252, z=None, source='Aperio')
    """
    values = image_tags.first_page_values(path, (_DESCRIPTION, _X_RESOLUTION, _Y_RESOLUTION))
    description = values.get(_DESCRIPTION) if values else None
    if not isinstance(description, str):
        return None
    head = description.lstrip()
    if head.startswith("ImageJ="):
        found = _imagej(description, values)
    elif "<OME" in description:
        found = _ome(description)
    elif head.startswith("Aperio"):
        found = _aperio(description)
    else:
        found = None
    return found if found is not None and _plausible(found.x, found.y, found.z) else None


def channels_as_pages(path: Path) -> Optional[int]:
    """How many colour channels a TIFF stores as pages of their own, where its description states more than one
    (a Fiji/ImageJ composite or hyperstack: ``channels=3``; an OME-TIFF: ``SizeC="3"``) and its pages hold one
    sample per pixel: ITK then reads each channel as a grey section of its own.  None for any other file.

    Examples
    --------
    >>> import os
    >>> channels_as_pages(Path(os.devnull)) is None  # not a TIFF
    True
    """
    values = image_tags.first_page_values(path, (_DESCRIPTION, _SAMPLES_PER_PIXEL))
    description = values.get(_DESCRIPTION) if values else None
    if not isinstance(description, str) or values.get(_SAMPLES_PER_PIXEL, 1) != 1:
        return None
    if description.lstrip().startswith("ImageJ="):
        stated = re.search(r"^channels=(\d+)\s*$", description, re.MULTILINE)
    elif "<OME" in description:
        pixels = re.search(r"<(?:\w+:)?Pixels\b([^>]*)>", description)
        stated = re.search(r'\bSizeC\s*=\s*"(\d+)"', pixels.group(1)) if pixels else None
    else:
        stated = None
    channels = int(stated.group(1)) if stated else 1
    return channels if channels > 1 else None
