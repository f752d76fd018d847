"""Tests of ScribbleSegLib.surface: Slicer-style closed surfaces, writers, offscreen render."""

import math

import numpy as np
import pytest
import SimpleITK as sitk
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkFiltersCore import vtkFeatureEdges

from ScribbleSegLib import surface
from ScribbleSegLib.errors import ScribbleSegError
from ScribbleSegLib.geometry import Geometry

RADIUS = 12.0  # mm
SPACING = (0.5, 0.6, 1.2)  # x, y, z mm: the sphere is 10 voxels across in z, 24 in x
# Rotation about z by 30 degrees, then x mirrored: a direction with determinant -1.
_C, _S = math.cos(math.radians(30)), math.sin(math.radians(30))
MIRRORED = (-_C, -_S, 0.0, -_S, _C, 0.0, 0.0, 0.0, 1.0)


def _sphere(spacing=SPACING, radius=RADIUS):
    """Labelmap of a ball of ``radius`` mm centred on voxel ``centre`` (z, y, x)."""
    half = [int(math.ceil(radius / s)) + 2 for s in (spacing[2], spacing[1], spacing[0])]
    zz, yy, xx = np.mgrid[-half[0]:half[0] + 1, -half[1]:half[1] + 1, -half[2]:half[2] + 1]
    inside = (xx * spacing[0]) ** 2 + (yy * spacing[1]) ** 2 + (zz * spacing[2]) ** 2 <= radius ** 2
    return inside.astype(np.uint8), np.array(half)


def _points_and_triangles(polydata):
    points = vtk_to_numpy(polydata.GetPoints().GetData()).astype(float)
    triangles = vtk_to_numpy(polydata.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    return points, triangles


def _signed_volume(polydata):
    """Volume by the divergence theorem: positive when the triangles face outwards."""
    p, t = _points_and_triangles(polydata)
    return np.einsum("ij,ij->i", p[t[:, 0]], np.cross(p[t[:, 1]], p[t[:, 2]])).sum() / 6.0


def _open_edges(polydata):
    edges = vtkFeatureEdges()
    edges.SetInputData(polydata)
    edges.BoundaryEdgesOn()
    edges.NonManifoldEdgesOn()
    edges.FeatureEdgesOff()
    edges.ManifoldEdgesOff()
    edges.Update()
    return edges.GetOutput().GetNumberOfCells()


@pytest.mark.parametrize("direction", [(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), MIRRORED])
def test_sphere_has_the_expected_area_volume_and_position_in_lps(direction):
    labels, centre_kji = _sphere()
    geometry = Geometry(SPACING, (10.0, -20.0, 30.0), direction)
    poly = surface.labelmap_to_surface(labels, geometry)
    area, volume = surface.surface_area_volume(poly)
    assert area == pytest.approx(4 * math.pi * RADIUS ** 2, rel=0.03)
    assert volume == pytest.approx(4 / 3 * math.pi * RADIUS ** 3, rel=0.03)
    points, _ = _points_and_triangles(poly)
    centre_lps = (geometry.ijk_to_lps() @ np.r_[centre_kji[::-1], 1.0])[:3]
    np.testing.assert_allclose(points.mean(axis=0), centre_lps, atol=0.2)
    np.testing.assert_allclose(np.linalg.norm(points - centre_lps, axis=1), RADIUS, atol=1.0)
    # Triangles and normals face outwards, mirrored matrix or not.
    assert _signed_volume(poly) == pytest.approx(volume, rel=1e-3)
    normals = vtk_to_numpy(poly.GetPointData().GetNormals())
    assert (np.einsum("ij,ij->i", normals, points - centre_lps) > 0).mean() > 0.99
    assert _open_edges(poly) == 0


def test_label_touching_the_border_gives_a_closed_surface():
    labels = np.ones((6, 7, 8), np.uint8)
    poly = surface.labelmap_to_surface(labels, Geometry((1.0, 1.0, 1.0)), smoothing=0.0)
    assert _open_edges(poly) == 0
    _, volume = surface.surface_area_volume(poly)
    assert volume == pytest.approx(6 * 7 * 8, rel=0.1)  # flying edges bevels the box's edges


def test_smoothing_and_decimation_follow_slicers_parameters():
    labels, _ = _sphere()
    geometry = Geometry(SPACING)
    raw = surface.labelmap_to_surface(labels, geometry, smoothing=0.0)
    smooth = surface.labelmap_to_surface(labels, geometry)
    decimated = surface.labelmap_to_surface(labels, geometry, decimation=0.8)
    # Staircase area shrinks towards the sphere's when smoothed.
    assert surface.surface_area_volume(raw)[0] > 1.1 * surface.surface_area_volume(smooth)[0]
    assert decimated.GetNumberOfPolys() < 0.35 * smooth.GetNumberOfPolys()


@pytest.mark.parametrize("suffix", [".stl", ".vtp", ".obj"])
def test_writers_round_trip(tmp_path, suffix):
    from vtkmodules.vtkIOGeometry import vtkOBJReader, vtkSTLReader
    from vtkmodules.vtkIOXML import vtkXMLPolyDataReader

    labels, _ = _sphere(radius=6.0)
    poly = surface.labelmap_to_surface(labels, Geometry(SPACING))
    path = tmp_path / f"heart{suffix}"
    surface.write_surface(path, poly)
    reader = {".stl": vtkSTLReader, ".vtp": vtkXMLPolyDataReader, ".obj": vtkOBJReader}[suffix]()
    reader.SetFileName(str(path))
    reader.Update()
    back = reader.GetOutput()
    assert back.GetNumberOfPoints() == poly.GetNumberOfPoints()
    assert back.GetNumberOfPolys() == poly.GetNumberOfPolys()
    np.testing.assert_allclose(back.GetBounds(), poly.GetBounds(), atol=1e-4)
    space = {".stl": lambda: reader.GetHeader(), ".obj": lambda: reader.GetComment(),
             ".vtp": lambda: "SPACE=" + back.GetFieldData().GetAbstractArray("SPACE").GetValue(0)}[suffix]()
    assert "SPACE=LPS" in space
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left


def test_write_refuses_unknown_extension_and_empty_surface(tmp_path):
    from vtkmodules.vtkCommonDataModel import vtkPolyData

    labels, _ = _sphere(radius=4.0)
    poly = surface.labelmap_to_surface(labels, Geometry(SPACING))
    with pytest.raises(ScribbleSegError, match="unknown surface format '.ply'"):
        surface.write_surface(tmp_path / "x.ply", poly)
    with pytest.raises(ScribbleSegError, match="empty"):
        surface.write_surface(tmp_path / "x.stl", vtkPolyData())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ScribbleSegError, match="polydata must be a vtkPolyData, got NoneType"):
        surface.surface_area_volume(None)
    # A probability counted as inside wherever it was above 0: the surface of the whole volume's box.
    with pytest.raises(ScribbleSegError, match=r"labels must be an integer labelmap, got float32 \(a probability"):
        surface.labelmap_to_surface(labels.astype(np.float32) * 0.4 + 0.01, Geometry(SPACING))


def test_render_png_shows_the_object_superior_up_and_left_on_the_right(tmp_path):
    # An L: a bar along x at the bottom, and a post going up (+z, superior) at its +x (left) end.
    labels = np.zeros((40, 20, 60), np.uint8)
    labels[2:10, 5:15, 2:58] = 1
    labels[2:38, 5:15, 48:58] = 1
    poly = surface.labelmap_to_surface(labels, Geometry((1.0, 1.0, 1.0)))
    path = tmp_path / "render.png"
    surface.render_surface_png(poly, path, size=(320, 240))
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert image.shape == (240, 320, 3)
    foreground = (image < 250).any(axis=2)
    assert 0.05 < foreground.mean() < 0.7
    rows, cols = np.nonzero(foreground)
    top = rows < np.percentile(rows, 25)
    assert cols[top].mean() > 320 / 2  # the post (superior, left) is at the top right
    red, green, blue = (image[foreground].astype(float).mean(axis=0))
    assert red > green + 30 and red > blue + 30  # coloured, not black through a lookup table


def test_empty_labels_and_bad_parameters_are_refused():
    with pytest.raises(ScribbleSegError, match="empty"):
        surface.labelmap_to_surface(np.zeros((4, 5, 6), np.uint8), Geometry((1.0, 1.0, 1.0)))
    labels, _ = _sphere(radius=4.0)
    with pytest.raises(ScribbleSegError, match="smoothing"):
        surface.labelmap_to_surface(labels, Geometry(SPACING), smoothing=2.0)
    with pytest.raises(ScribbleSegError, match="decimation"):
        surface.labelmap_to_surface(labels, Geometry(SPACING), decimation=1.0)


def test_render_arguments_are_checked_before_any_rendering(tmp_path):
    # The file first (as write_surface takes it) gave an AttributeError from inside; a .jpg name got PNG bytes; a
    # 100000-pixel side ended the interpreter (std::bad_alloc).
    poly = surface.labelmap_to_surface(_sphere()[0], Geometry(SPACING))
    png = tmp_path / "heart.png"
    with pytest.raises(ScribbleSegError, match=r"^polydata must be a vtkPolyData, got PosixPath \(the surface comes "
                                               r"first, then the file\)$"):
        surface.render_surface_png(png, poly)
    with pytest.raises(ScribbleSegError, match=r"heart.jpg: a render is written as PNG; name the file .png$"):
        surface.render_surface_png(poly, tmp_path / "heart.jpg")
    with pytest.raises(ScribbleSegError, match=r"^render size must be 1 to 8192 pixels a side, got "
                                               r"\(100000, 100000\)$"):
        surface.render_surface_png(poly, png, size=(100000, 100000))
    assert list(tmp_path.iterdir()) == []
