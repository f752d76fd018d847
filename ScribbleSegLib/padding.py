"""The near-black fill around aligned sections, shown to the network as the glass it learnt.

Registration tools pad the sections of an aligned stack with black where a section was moved
away from the edge (ITK's resampling, Fiji and Slicer's transforms fill with 0), and some
scanners leave a black frame.  The networks learn glass (white) around the tissue; black there
is unlike anything they saw and made a stack's heart largely missed (BENCHMARKS.md, "Black
registration fill").  :func:`padding_to_glass` makes the near-black regions that touch a
section's edge white before the network (and its stain normalization) sees the section; dark
specks inside the tissue (ink, folds) stay as they are.  The image the cut sees is not changed.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .stain import SATURATED_RGB


def padding_to_glass(sections: np.ndarray) -> np.ndarray:
    """Sections ``(Z, Y, X, 3)`` uint8 with their near-black edge regions made white.

    A region is every pixel at or below :data:`stain.SATURATED_RGB` in each channel, connected
    (8-connected in-plane) to a pixel on the section's edge.

    Parameters
    ----------
    sections : numpy.ndarray
        uint8 ``(Z, Y, X, 3)`` RGB.

    Returns
    -------
    numpy.ndarray
        ``sections`` itself when no section has such a region (nothing is copied), else a copy
        with those regions set to 255.

    Examples
    --------
    >>> tissue = np.full((1, 6, 6, 3), 150, np.uint8)
    >>> tissue[0, :, :2] = 0          # black fill along the left edge
    >>> tissue[0, 3, 4] = 0           # a black speck inside the tissue
    >>> glass = padding_to_glass(tissue)
    >>> int(glass[0, 0, 0, 0]), int(glass[0, 3, 4, 0]), int(tissue[0, 0, 0, 0])
    (255, 0, 0)
    >>> padding_to_glass(glass) is glass
    True
    """
    out = sections
    for z in range(sections.shape[0]):
        fill = _edge_dark(sections[z])
        if fill is None:
            continue
        if out is sections:
            out = sections.copy()
        out[z][fill] = 255
    return out


def _edge_dark(section: np.ndarray):
    """Mask ``(Y, X)`` of the near-black regions of ``section`` that touch its edge, or None if it has none."""
    dark = section.max(axis=-1) <= SATURATED_RGB
    if not (dark[0].any() or dark[-1].any() or dark[:, 0].any() or dark[:, -1].any()):
        return None
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(dark.view(np.uint8)), True))
    on_edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, on_edge[on_edge > 0])
