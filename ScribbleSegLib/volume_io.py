"""Reading and writing images, labels, scribbles, probabilities and segmentations: one place to import them from.

The work is done in three modules, each named for its job:

- :mod:`~ScribbleSegLib.image_reading`: images from a folder of 2D section files (PNG/TIFF/JPEG, natural sort
  order, spacing given by the user) or from any 3D file SimpleITK reads (NRRD, NIfTI, MHA; RGB vector or scalar),
  returned as ``(Z, Y, X, 3)`` uint8 RGB :class:`~ScribbleSegLib.geometry.Volume` objects;
- :mod:`~ScribbleSegLib.label_reading`: labels (0/1) and scribbles (0 none, 1 heart, 2 background) from a
  labelmap file, a folder of labelmap sections or a Slicer ``.seg.nrrd`` segmentation, checked against the
  image's geometry and placed on its grid;
- :mod:`~ScribbleSegLib.volume_writing`: every writer, through :func:`~ScribbleSegLib.fileio.atomic_output`, so
  a failed write never leaves a half-written file.

Examples
--------
>>> from ScribbleSegLib import image_reading, label_reading, volume_io
>>> volume_io.read_image is image_reading.read_image and volume_io.read_scribbles is label_reading.read_scribbles
True
"""

from __future__ import annotations

from .geometry import UNKNOWN_PIXEL, Geometry, Volume
from .image_reading import (SECTION_SUFFIXES, TILE_GRID_NOTE, check_not_blank, image_file_grid, is_section_file,
                            is_segmentation_file, list_section_files, missing_section_numbers, read_image,
                            stated_section_voxel, takes_image_grid)
from .label_reading import (NO_GRID_NOTE, marks_on_file_grid, read_label, read_label_volume, read_scribbles,
                            read_segmentation, reduce_label_volume, reduce_strokes, scribbles_like, states_no_grid)
from .volume_writing import (BACKGROUND_COLOR, HEART_COLOR, write_labelmap, write_probability, write_rgb_volume,
                             write_segmentation, write_tile_mask)

__all__ = [
    "BACKGROUND_COLOR", "HEART_COLOR", "NO_GRID_NOTE", "SECTION_SUFFIXES", "TILE_GRID_NOTE", "UNKNOWN_PIXEL",
    "Geometry", "Volume", "check_not_blank", "image_file_grid", "is_section_file", "is_segmentation_file",
    "list_section_files", "marks_on_file_grid", "missing_section_numbers", "read_image", "read_label",
    "read_label_volume", "read_scribbles", "read_segmentation", "reduce_label_volume", "reduce_strokes",
    "scribbles_like", "stated_section_voxel", "states_no_grid", "takes_image_grid", "write_labelmap",
    "write_probability", "write_rgb_volume", "write_segmentation", "write_tile_mask",
]
