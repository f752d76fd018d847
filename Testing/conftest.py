"""Shared pytest fixtures for ScribbleSegLib (no Slicer needed)."""

import os

# Offscreen vtk rendering without an X server (Debian: libegl1 libegl-mesa0 libgl1-mesa-dri).
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
