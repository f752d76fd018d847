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


def test_heat_colours_run_from_blue_through_green_to_red():
    colors = overlay.heat_colors(np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.5]))
    assert colors.tolist() == [[0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0], [255, 0, 0], [255, 0, 0]]
    assert colors.dtype == np.uint8


def test_heat_map_png_colours_only_probable_heart(tmp_path):
    image = np.full((3, 8, 10, 3), 200, np.uint8)
    probability = np.zeros((3, 8, 10), np.float32)
    probability[1, 2:6, 2:6] = 1.0
    probability[1, 0, 0] = 0.01  # below the panel's threshold: left as it is
    path = tmp_path / "heat.png"
    overlay.write_heat_map_png(path, image, probability, [0, 1], opacity=0.5, columns=2)
    grid = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert grid.shape == (8, 2 * 10 + 4, 3)
    tile1 = grid[:, 10 + 4:]
    assert np.abs(tile1[3, 3].astype(int) - [227, 100, 100]).max() <= 1  # half grey 200, half red
    assert tile1[0, 0].tolist() == [200, 200, 200]
    assert (grid[:, :10] == 200).all(), "section 0 has no heart probability"
