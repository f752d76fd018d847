"""ScribbleSegLib: the computing core of ScribbleSeg.

Scribble-guided 3D segmentation of an organ in a stack of serial histological
sections, after Harada et al., "Scribbles for Metric Learning in Histological
Image Segmentation" (EMBC 2019): a multi-field-of-view U-Net (M-Unet) gives
per-pixel features and a probability, a DDML metric-learning MLP and a 1x1 head
are retrained on the user's scribbles, and a 3D graph cut gives the labels.

This package never imports ``slicer``, ``qt``, ``ctk`` or MRML, and importing it
is cheap: heavy packages (torch, maxflow, vtk, SimpleITK) are imported by the
submodules that need them.
"""

__version__ = "0.1.0"

from .errors import CancelledError, ScribbleSegError  # noqa: F401
