"""Section overlays written as PNG."""

import numpy as np
import SimpleITK as sitk

from ScribbleSegLib import overlay


def test_boundary_of_a_square():
    mask = np.zeros((7, 7), bool)
    mask[2:5, 2:5] = True
    edge = overlay.boundary(mask)
    assert edge.sum() == 8  # the 3x3 square's ring; its centre is interior
    assert not edge[3, 3]


def test_overlay_png_grid(tmp_path):
    image = np.full((4, 10, 12, 3), 200, np.uint8)
    truth = np.zeros((4, 10, 12), np.uint8)
    truth[:, 3:7, 3:8] = 1
    scrib = np.zeros_like(truth)
    scrib[1, 5, 4:7] = 1
    scrib[1, 0, :] = 2
    path = tmp_path / "o.png"
    overlay.write_overlay_png(path, image, [0, 1, 2, 3], prediction=truth, truth=truth, scribbles=scrib, columns=2)
    grid = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert grid.shape == (2 * 10 + 4, 2 * 12 + 4, 3)
    tile1 = grid[:10, 12 + 4:]
    assert (tile1[5, 4:7] == overlay.HEART_SCRIBBLE_RGB).all()
    assert (tile1[0] == overlay.BACKGROUND_SCRIBBLE_RGB).all()
    assert (grid[:10, :12][3, 3] == overlay.TRUTH_RGB).all()  # truth outline drawn over the prediction
