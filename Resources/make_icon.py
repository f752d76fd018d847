"""Draw the ScribbleSeg icons and the placeholder screenshot.

Run from the repository root::

    python Resources/make_icon.py               # the two 128x128 icons (numpy + zlib only)
    python Resources/make_icon.py --screenshot  # also Resources/Screenshot01.png (needs ScribbleSegLib and vtk)

Outputs:

- ``Resources/ScribbleSeg.png``: the extension icon (128x128, EXTENSION_ICONURL);
- ``ScribbleSeg/Resources/Icons/ScribbleSeg.png``: the module icon (the same picture);
- ``Resources/Screenshot01.png``: a section of the synthetic phantom with scribbles beside
  the surface of its heart.  It stands in for a screenshot of Slicer until one is taken.

The icon is a heart outline on a pale H&E-pink section, with a red scribble inside the
heart and a blue one outside, in the module's segment colours.  PNG files are written
with zlib, so no imaging library is needed.
"""

from __future__ import annotations

import argparse
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ICON_SIZE = 128
HEART_COLOR = (0.85, 0.2, 0.2)
BACKGROUND_COLOR = (0.2, 0.4, 0.85)
OUTLINE_COLOR = (0.45, 0.05, 0.12)
TISSUE_COLOR = (0.96, 0.78, 0.86)


def write_png(path: Path, rgba: np.ndarray) -> None:
    """Write an ``(H, W, 4)`` uint8 RGBA array as an 8-bit PNG."""
    height, width = rgba.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgba.reshape(height, width * 4)], axis=1)
    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
           + chunk(b"IEND", b""))
    path.write_bytes(png)


def heart_curve(n: int = 400) -> np.ndarray:
    """The classic heart curve, ``(n, 2)`` points (x right, y down) filling [-1, 1]^2."""
    t = np.linspace(0, 2 * np.pi, n)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    points = np.stack([x, y], axis=1)
    points -= (points.max(0) + points.min(0)) / 2
    return points / np.abs(points).max()


def distance_to_polyline(px: np.ndarray, py: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance of every pixel centre to a polyline, in pixels."""
    a, b = line[:-1], line[1:]
    ab = b - a
    length2 = np.maximum((ab ** 2).sum(1), 1e-12)
    best = np.full(px.shape, np.inf)
    for start in range(0, len(a), 64):  # chunks keep the temporary arrays small
        sa, sab, sl = a[start:start + 64], ab[start:start + 64], length2[start:start + 64]
        dx = px[..., None] - sa[:, 0]
        dy = py[..., None] - sa[:, 1]
        t = np.clip((dx * sab[:, 0] + dy * sab[:, 1]) / sl, 0, 1)
        d = np.hypot(dx - t * sab[:, 0], dy - t * sab[:, 1]).min(-1)
        best = np.minimum(best, d)
    return best


def inside_polygon(px: np.ndarray, py: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule."""
    inside = np.zeros(px.shape, bool)
    x0, y0 = polygon[:-1, 0], polygon[:-1, 1]
    x1, y1 = polygon[1:, 0], polygon[1:, 1]
    for a, b, c, d in zip(x0, y0, x1, y1):
        crosses = (b > py) != (d > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xcross = a + (py - b) * (c - a) / (d - b)
        inside ^= crosses & (px < xcross)
    return inside


def wavy_stroke(x0: float, x1: float, y: float, amplitude: float, waves: float, n: int = 200) -> np.ndarray:
    """A hand-drawn-looking horizontal scribble from ``x0`` to ``x1``."""
    x = np.linspace(x0, x1, n)
    phase = np.linspace(0, waves * 2 * np.pi, n)
    return np.stack([x + 0.15 * amplitude * np.sin(3.1 * phase), y + amplitude * np.sin(phase)], axis=1)


def paint(canvas: np.ndarray, coverage: np.ndarray, color) -> None:
    """Alpha-composite a colour with per-pixel coverage in [0, 1] over an RGBA float canvas."""
    a = coverage[..., None]
    canvas[..., :3] = canvas[..., :3] * (1 - a) + np.asarray(color) * a
    canvas[..., 3:] = canvas[..., 3:] * (1 - a) + a


def stroke_coverage(distance: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased coverage of a stroke ``width`` pixels wide."""
    return np.clip(width / 2 - distance + 0.5, 0, 1)


def draw_icon(size: int = ICON_SIZE) -> np.ndarray:
    """The icon as ``(size, size, 4)`` uint8 RGBA."""
    s = size / 128.0
    py, px = np.mgrid[0:size, 0:size] + 0.5
    canvas = np.zeros((size, size, 4))
    # A round section of tissue behind the heart.
    section = np.hypot(px - 64 * s, py - 64 * s)
    paint(canvas, np.clip(60 * s - section + 0.5, 0, 1) * 0.9, TISSUE_COLOR)
    heart = heart_curve() * 40 * s + np.array([64 * s, 62 * s])
    paint(canvas, inside_polygon(px, py, heart) * 0.35, HEART_COLOR)
    paint(canvas, stroke_coverage(distance_to_polyline(px, py, heart), 5.5 * s), OUTLINE_COLOR)
    inner = wavy_stroke(44 * s, 82 * s, 60 * s, 6 * s, 2.2)
    paint(canvas, stroke_coverage(distance_to_polyline(px, py, inner), 6 * s), HEART_COLOR)
    outer = wavy_stroke(20 * s, 106 * s, 114 * s, 3.5 * s, 3.0)
    paint(canvas, stroke_coverage(distance_to_polyline(px, py, outer), 6 * s), BACKGROUND_COLOR)
    return np.clip(np.rint(canvas * 255), 0, 255).astype(np.uint8)


def draw_screenshot(path: Path, seed: int = 0) -> None:
    """A phantom section with simulated scribbles beside the surface of its true heart (1200 x 600)."""
    import os

    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    from ScribbleSegLib import phantom, scribbles, surface

    made = phantom.make_phantom(seed=seed)
    strokes = scribbles.simulate_scribbles(made.label, seed=seed, every=10, spacing=made.image.geometry.spacing)
    scribbled = np.flatnonzero(strokes.reshape(len(strokes), -1).any(1))
    k = int(scribbled[len(scribbled) // 2])
    section = made.image.array[k].astype(float) / 255
    for value, color in ((1, HEART_COLOR), (2, BACKGROUND_COLOR)):
        section[strokes[k] == value] = color
    zoom = 600 // max(section.shape[:2])
    left = np.kron(section, np.ones((zoom, zoom, 1)))
    pad_y, pad_x = 600 - left.shape[0], 600 - left.shape[1]
    left = np.pad(left, ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2), (0, 0)),
                  constant_values=1.0)

    with tempfile.TemporaryDirectory() as tmp:
        rendered = Path(tmp) / "heart.png"
        surface.render_surface_png(surface.labelmap_to_surface(made.label, made.image.geometry), rendered,
                                   size=(600, 600))
        reader = vtk.vtkPNGReader()
        reader.SetFileName(str(rendered))
        reader.Update()
        image = reader.GetOutput()
        width, height, _depth = image.GetDimensions()
        components = image.GetPointData().GetScalars().GetNumberOfComponents()
        right = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, components)[::-1, :, :3]
    rgb = np.concatenate([left, right.astype(float) / 255], axis=1)
    rgba = np.concatenate([rgb, np.ones(rgb.shape[:2] + (1,))], axis=2)
    write_png(path, np.clip(np.rint(rgba * 255), 0, 255).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshot", action="store_true", help="also draw Resources/Screenshot01.png")
    args = parser.parse_args()
    icon = draw_icon()
    for path in (ROOT / "Resources" / "ScribbleSeg.png",
                 ROOT / "ScribbleSeg" / "Resources" / "Icons" / "ScribbleSeg.png"):
        write_png(path, icon)
        print(f"wrote {path.relative_to(ROOT)}")
    if args.screenshot:
        path = ROOT / "Resources" / "Screenshot01.png"
        draw_screenshot(path)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
