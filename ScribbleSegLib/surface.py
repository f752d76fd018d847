"""Closed surfaces of labelmaps with vtk: the surface Slicer shows, files, offscreen renders.

:func:`labelmap_to_surface` reproduces Slicer's binary-labelmap-to-closed-surface
conversion (``vtkBinaryLabelmapToClosedSurfaceConversionRule``: discrete flying
edges in voxel space, optional decimation, windowed-sinc smoothing, then the
voxel-to-world transform and normals), so a surface written here matches the
one a user sees in Slicer's 3D view for the same segmentation.  Coordinates are
physical LPS millimetres, the frame Slicer uses for model files by default.

Only the vtk modules needed are imported (not ``import vtk``), which halves the
import time.  Rendering needs an OpenGL driver; without a display (CI, a
server) vtk renders offscreen through EGL (Debian/Ubuntu packages ``libegl1
libegl-mesa0 libgl1-mesa-dri``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

from . import choices
from .errors import ScribbleSegError
from .fileio import PathLike, atomic_output, check_path, native_stderr_held, signals_held

# VTK's modules are imported with interrupts held (fileio.signals_held): one cut short can crash the process.
with signals_held():
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonCore import vtkLogger, vtkOutputWindow, vtkStringArray, vtkStringOutputWindow
    from vtkmodules.vtkCommonDataModel import vtkImageData, vtkPolyData
    from vtkmodules.vtkCommonTransforms import vtkTransform
    from vtkmodules.vtkFiltersCore import (vtkDecimatePro, vtkMassProperties, vtkPolyDataNormals, vtkReverseSense,
                                           vtkTriangleFilter, vtkWindowedSincPolyDataFilter)
    from vtkmodules.vtkFiltersGeneral import vtkDiscreteFlyingEdges3D, vtkTransformFilter
from .geometry import Geometry, check_geometry
from .progress import CancelToken, ProgressCallback, check, report

#: Surface colour of the heart (Slicer's "heart" in its generic anatomy colour table), RGB in [0, 1].
HEART_COLOR = (206 / 255, 110 / 255, 84 / 255)

#: File formats :func:`write_surface` writes, by extension.
SURFACE_FORMATS = choices.SURFACE_FORMATS

#: Written into every surface file the way Slicer's model storage node does, so
#: that Slicer loads the file in the right frame without asking.
_SPACE_TAG = "SPACE=LPS"


def labelmap_to_surface(labels: np.ndarray, geometry: Geometry, smoothing: float = 0.5, decimation: float = 0.0,
                        progress: Optional[ProgressCallback] = None,
                        cancel: Optional[CancelToken] = None) -> vtkPolyData:
    """The closed surface of a labelmap, as Slicer's default conversion makes it.

    Steps (Slicer's closed-surface conversion rule with its default parameters):

    1. crop to the labelled voxels and pad by one empty voxel, so that the
       surface is closed where the label touches the volume's border;
    2. ``vtkDiscreteFlyingEdges3D`` at label value 1, in voxel (IJK) coordinates;
    3. if ``decimation > 0``: ``vtkDecimatePro`` (feature angle 60, no
       splitting, topology preserved, maximum error 1, target reduction
       ``decimation``);
    4. if ``smoothing > 0``: ``vtkWindowedSincPolyDataFilter``, 20 iterations,
       pass band ``10 ** (-4 * smoothing)``, normalised coordinates,
       non-manifold smoothing on, boundary and feature-edge smoothing off;
    5. the IJK-to-LPS matrix of ``geometry``, with ``vtkReverseSense`` when its
       determinant is negative so that triangles keep facing outwards;
    6. point normals with ``vtkPolyDataNormals`` (consistency on, splitting off).

    Parameters
    ----------
    labels : numpy.ndarray
        ``(Z, Y, X)``; voxels > 0 are inside.
    geometry : Geometry
        The labelmap's geometry; the surface is in its LPS millimetres.
    smoothing : float
        Slicer's smoothing factor, 0 (none) to 1 (strong); Slicer's default 0.5.
    decimation : float
        Share of triangles to remove, 0 (none, Slicer's default) to below 1.
    progress, cancel
        See :mod:`ScribbleSegLib.progress`.

    Returns
    -------
    vtkPolyData
        Triangles with point normals, in LPS mm.  Written to STL it is in LPS,
        like Slicer's model export default (the file says ``SPACE=LPS``).

    Raises
    ------
    ScribbleSegError
        If no voxel is labelled, the labels are not integers, or the parameters are out of range.

    Examples
    --------
    A cube of 8 voxels of 0.5 mm a side (64 mm^3), smoothed a little:

    >>> from ScribbleSegLib.geometry import Geometry
    >>> cube = np.zeros((12, 12, 12), np.uint8); cube[2:10, 2:10, 2:10] = 1
    >>> area, volume = surface_area_volume(labelmap_to_surface(cube, Geometry((0.5, 0.5, 0.5))))
    >>> bool(55 < volume < 66)
    True
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ScribbleSegError(f"a labelmap must be (Z, Y, X), got shape {labels.shape}")
    if labels.dtype.kind not in "uib":
        # A probability (result.probability) counted as inside wherever it was above 0: the whole volume's box.
        raise ScribbleSegError(f"labels must be an integer labelmap, got {labels.dtype} (a probability? threshold it: "
                               "probability > 0.5)")
    check_geometry(geometry)
    for name, value in (("smoothing", smoothing), ("decimation", decimation)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ScribbleSegError(f"surface {name} must be a number, got {value!r}")
    if not 0.0 <= smoothing <= 1.0:
        raise ScribbleSegError(f"surface smoothing must be in [0, 1], got {smoothing}")
    if not 0.0 <= decimation < 1.0:
        raise ScribbleSegError(f"surface decimation must be in [0, 1), got {decimation}")
    inside = labels > 0
    occupied = [np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if occupied[0].size == 0:
        raise ScribbleSegError("the labelmap is empty: there is no surface to make")
    report(progress, "surface", 0.0, "extracting")

    # Cropping changes nothing in the result (every step works on the polygons,
    # not the image extent) but saves most of the work on a big volume.
    lo = [int(o[0]) for o in occupied]
    hi = [int(o[-1]) + 1 for o in occupied]
    padded = np.pad(inside[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.uint8), 1)
    image = vtkImageData()
    image.SetDimensions(padded.shape[2], padded.shape[1], padded.shape[0])
    # Keep the original volume's IJK coordinates: the padded corner is (lo - 1).
    image.SetOrigin(lo[2] - 1, lo[1] - 1, lo[0] - 1)
    image.SetSpacing(1.0, 1.0, 1.0)
    image.GetPointData().SetScalars(numpy_to_vtk(padded.reshape(-1), deep=True))

    contour = vtkDiscreteFlyingEdges3D()
    contour.SetInputData(image)
    contour.SetValue(0, 1)
    contour.ComputeGradientsOff()
    contour.ComputeNormalsOff()
    contour.ComputeScalarsOff()
    contour.Update()
    surface = contour.GetOutput()
    check(cancel)

    if decimation > 0.0:
        report(progress, "surface", 0.3, "decimating")
        decimate = vtkDecimatePro()
        decimate.SetInputData(surface)
        decimate.SetFeatureAngle(60)
        decimate.SplittingOff()
        decimate.PreserveTopologyOn()
        decimate.SetMaximumError(1)
        decimate.SetTargetReduction(decimation)
        decimate.Update()
        surface = decimate.GetOutput()
        check(cancel)

    if smoothing > 0.0:
        report(progress, "surface", 0.5, "smoothing")
        smoother = vtkWindowedSincPolyDataFilter()
        smoother.SetInputData(surface)
        smoother.SetNumberOfIterations(20)
        smoother.SetPassBand(10.0 ** (-4.0 * smoothing))
        smoother.BoundarySmoothingOff()
        smoother.FeatureEdgeSmoothingOff()
        smoother.NonManifoldSmoothingOn()
        smoother.NormalizeCoordinatesOn()
        smoother.Update()
        surface = smoother.GetOutput()
        check(cancel)

    report(progress, "surface", 0.8, "transforming to LPS")
    matrix = geometry.ijk_to_lps()
    transform = vtkTransform()
    transform.SetMatrix(matrix.ravel().tolist())
    to_world = vtkTransformFilter()  # vtkTransformPolyDataFilter is deprecated since vtk 9.7
    to_world.SetInputData(surface)
    to_world.SetTransform(transform)
    to_world.Update()
    surface = to_world.GetOutput()
    if np.linalg.det(matrix[:3, :3]) < 0:
        # A mirroring matrix turns outward-facing triangles inward.
        reverse = vtkReverseSense()
        reverse.SetInputData(surface)
        reverse.ReverseCellsOn()
        reverse.Update()
        surface = reverse.GetOutput()

    normals = vtkPolyDataNormals()
    normals.SetInputData(surface)
    normals.ConsistencyOn()
    normals.SplittingOff()
    normals.Update()
    report(progress, "surface", 1.0, f"{normals.GetOutput().GetNumberOfPolys()} triangles")
    return normals.GetOutput()


def surface_area_volume(polydata: vtkPolyData) -> Tuple[float, float]:
    """Area (mm^2) and enclosed volume (mm^3) of a closed surface, by ``vtkMassProperties``.

    Examples
    --------
    >>> from ScribbleSegLib.geometry import Geometry
    >>> cube = np.zeros((12, 12, 12), np.uint8); cube[2:10, 2:10, 2:10] = 1  # 8 mm on a side
    >>> area, volume = surface_area_volume(labelmap_to_surface(cube, Geometry((1.0, 1.0, 1.0)), smoothing=0))
    >>> 300 < area < 400, 400 < volume < 520  # the cube's 384 mm^2 and 512 mm^3, its corners cut
    (True, True)
    """
    if not isinstance(polydata, vtkPolyData):
        raise ScribbleSegError(f"polydata must be a vtkPolyData, got {type(polydata).__name__}")
    if polydata.GetNumberOfPolys() == 0:
        raise ScribbleSegError("the surface is empty: no area or volume to measure")
    triangles = vtkTriangleFilter()
    triangles.SetInputData(polydata)
    mass = vtkMassProperties()
    mass.SetInputConnection(triangles.GetOutputPort())
    mass.Update()
    return float(mass.GetSurfaceArea()), float(mass.GetVolume())


def write_surface(path: PathLike, polydata: vtkPolyData) -> None:
    """Write a surface as STL (binary), VTP (zlib-compressed XML) or OBJ, chosen by extension.

    Each file records ``SPACE=LPS`` where Slicer looks for it (STL header, VTP
    field data ``SPACE``, OBJ comment), so Slicer loads it in LPS without asking.
    The file appears only once complete.

    Raises
    ------
    ScribbleSegError
        An unknown extension, an empty surface, or a failed write.

    Examples
    --------
    >>> import tempfile
    >>> cube = np.zeros((12, 12, 12), np.uint8); cube[2:10, 2:10, 2:10] = 1
    >>> folder = tempfile.TemporaryDirectory()
    >>> write_surface(Path(folder.name) / "heart.stl", labelmap_to_surface(cube, Geometry((0.5, 0.5, 0.5))))
    >>> sorted(path.name for path in Path(folder.name).iterdir())  # nothing else: written atomically
    ['heart.stl']
    >>> folder.cleanup()
    """
    path = check_path(path)
    suffix = path.suffix.lower()
    if suffix not in SURFACE_FORMATS:
        raise ScribbleSegError(f"{path}: unknown surface format {suffix or '(no extension)'!r}; "
                               f"expected one of {', '.join(SURFACE_FORMATS)}")
    if not isinstance(polydata, vtkPolyData):
        raise ScribbleSegError(f"{path}: the surface must be a vtkPolyData, got {type(polydata).__name__}")
    if polydata.GetNumberOfPoints() == 0:
        raise ScribbleSegError(f"{path}: the surface is empty, nothing to write")
    with atomic_output(path) as tmp:
        if suffix == ".stl":
            with signals_held():
                from vtkmodules.vtkIOGeometry import vtkSTLWriter

            writer = vtkSTLWriter()
            writer.SetFileTypeToBinary()
            writer.SetHeader(f"ScribbleSeg surface. {_SPACE_TAG}")
            ok = _write(writer, polydata, tmp)
        elif suffix == ".vtp":
            with signals_held():
                from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

            tagged = vtkPolyData()
            tagged.ShallowCopy(polydata)
            space = vtkStringArray()
            space.SetName("SPACE")
            space.InsertNextValue("LPS")
            tagged.GetFieldData().AddArray(space)
            writer = vtkXMLPolyDataWriter()
            writer.SetDataModeToAppended()
            writer.SetCompressorTypeToZLib()
            ok = _write(writer, tagged, tmp)
        else:
            ok = _write_obj(polydata, tmp)
        if not ok:
            raise ScribbleSegError(f"{path}: vtk could not write the surface")


@contextlib.contextmanager
def _vtk_messages_kept() -> Iterator[vtkStringOutputWindow]:
    """vtk's own error and warning text kept in a string while a writer runs, instead of printed: a failed
    write (a full disk) is reported as one line by the caller, not as vtk's screenful.

    vtk prints through its output window and, since 9.0, its logger (to stderr); both are held back.
    """
    previous = vtkOutputWindow.GetInstance()
    previous.Register(None)  # keep it alive while it is not the instance
    kept = vtkStringOutputWindow()
    vtkOutputWindow.SetInstance(kept)
    # The cutoff is the most verbose of the logger's sinks: stderr's own, unless a program added a log file.
    verbosity = vtkLogger.GetCurrentVerbosityCutoff()
    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_OFF)
    try:
        yield kept
    finally:
        vtkLogger.SetStderrVerbosity(vtkLogger.ConvertToVerbosity(verbosity))
        vtkOutputWindow.SetInstance(previous)
        previous.UnRegister(None)


def _write(writer, polydata: vtkPolyData, path: Path) -> bool:
    writer.SetInputData(polydata)
    writer.SetFileName(str(path))
    with _vtk_messages_kept():
        return bool(writer.Write())


def _write_obj(polydata: vtkPolyData, path: Path) -> bool:
    """OBJ through vtkOBJWriter, with a leading comment line (it has no comment option)."""
    with signals_held():
        from vtkmodules.vtkIOGeometry import vtkOBJWriter

    body = path.with_name(path.name + ".body.obj")
    try:
        if not _write(vtkOBJWriter(), polydata, body):
            return False
        with open(path, "wb") as out, open(body, "rb") as src:
            out.write(f"# ScribbleSeg surface. {_SPACE_TAG}\n".encode("ascii"))
            shutil.copyfileobj(src, out, 1 << 20)
        return True
    finally:
        body.unlink(missing_ok=True)


def _use_egl_without_display() -> None:
    """Ask vtk for an EGL window when there is no X or Wayland display (Linux servers, CI)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


#: The largest side of a render, in pixels: 4 bytes a pixel for the window and as many for the image read back.
MAX_RENDER_SIDE = 8192


def render_surface_png(polydata: vtkPolyData, path: PathLike, size: Tuple[int, int] = choices.RENDER_SIZE,
                       color: Sequence[float] = HEART_COLOR,
                       background: Sequence[float] = (1.0, 1.0, 1.0)) -> None:
    """Render a surface offscreen to a PNG, seen from the anterior-left, superior up.

    The camera looks at the surface from the front (anterior, -y in LPS),
    turned 30 degrees towards the patient's left (+x) and raised 20 degrees
    towards superior (+z), and is zoomed so that the whole surface fits.  Works
    without a display (EGL).

    Parameters
    ----------
    polydata : vtkPolyData
        A surface in LPS mm (:func:`labelmap_to_surface`).
    path : path
        The PNG file; written only once complete.
    size : (int, int)
        Width and height in pixels.
    color, background : RGB in [0, 1]

    Raises
    ------
    ScribbleSegError
        An empty surface, a bad size, or no usable OpenGL.

    Examples
    --------
    An empty surface is refused before any OpenGL is asked for (rendering needs a driver, see the module):

    >>> try:
    ...     render_surface_png(vtkPolyData(), "heart.png")
    ... except ScribbleSegError as error:
    ...     print(error)
    heart.png: the surface is empty, nothing to render
    """
    if not isinstance(polydata, vtkPolyData):  # surface, then file: write_surface takes them the other way
        swapped = " (the surface comes first, then the file)" if isinstance(path, vtkPolyData) else ""
        raise ScribbleSegError(f"polydata must be a vtkPolyData, got {type(polydata).__name__}{swapped}")
    if Path(path).suffix.lower() != ".png":  # the writer is PNG's: a .jpg name got PNG bytes
        raise ScribbleSegError(f"{path}: a render is written as PNG; name the file .png")
    width, height = (int(s) for s in size)
    if not (1 <= width <= MAX_RENDER_SIDE and 1 <= height <= MAX_RENDER_SIDE):
        # 100000 x 100000 ended the interpreter in the renderer's allocation (std::bad_alloc).
        raise ScribbleSegError(f"render size must be 1 to {MAX_RENDER_SIDE} pixels a side, got {size}")
    if polydata.GetNumberOfPolys() == 0:
        raise ScribbleSegError(f"{path}: the surface is empty, nothing to render")
    _use_egl_without_display()
    with signals_held():
        import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (registers the OpenGL render window)
        from vtkmodules.vtkIOImage import vtkPNGWriter
        from vtkmodules.vtkRenderingCore import (vtkActor, vtkPolyDataMapper, vtkRenderer, vtkRenderWindow,
                                                 vtkWindowToImageFilter)

    mapper = vtkPolyDataMapper()
    mapper.SetInputData(polydata)
    mapper.ScalarVisibilityOff()  # otherwise scalars go through the lookup table and the surface turns black
    actor = vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*color)
    renderer = vtkRenderer()
    renderer.AddActor(actor)
    renderer.SetBackground(*background)
    camera = renderer.GetActiveCamera()
    center = np.asarray(polydata.GetCenter())
    camera.SetFocalPoint(*center)
    camera.SetPosition(*(center + np.array([0.0, -1.0, 0.0])))
    camera.SetViewUp(0.0, 0.0, 1.0)
    camera.Azimuth(30.0)  # towards +x, the patient's left
    camera.Elevation(20.0)
    camera.OrthogonalizeViewUp()

    window = vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(width, height)
    window.AddRenderer(renderer)
    # Fits the projected surface to the image (ResetCamera fits its bounding sphere,
    # which leaves wide margins); needs the window's aspect ratio, hence here.
    renderer.ResetCameraScreenSpace()
    try:
        if not window.SupportsOpenGL():
            raise ScribbleSegError(f"{path}: no usable OpenGL for offscreen rendering; on Linux install "
                                   f"libegl1 libegl-mesa0 libgl1-mesa-dri")
        window.Render()
        grab = vtkWindowToImageFilter()
        grab.SetInput(window)
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()
        grab.Update()
        with native_stderr_held(), atomic_output(path) as tmp:  # libpng's own "Write Error" on a full disk
            writer = vtkPNGWriter()
            if not _write_image(writer, grab, tmp):
                raise ScribbleSegError(f"{path}: vtk could not write the PNG")
    finally:
        window.Finalize()


def _write_image(writer, source, path: Path) -> bool:
    writer.SetInputConnection(source.GetOutputPort())
    writer.SetFileName(str(path))
    with _vtk_messages_kept():
        writer.Write()
    return path.exists() and path.stat().st_size > 0
