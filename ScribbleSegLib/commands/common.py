"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_image_options(parser: argparse.ArgumentParser) -> None:
    """``--spacing`` and ``--downsample``, for images given as a folder of sections."""
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                        help="voxel size in mm (required for a folder of sections; overrides a file's)")
    parser.add_argument("--downsample", type=int, default=1, metavar="N",
                        help="read sections downsampled in-plane by N (area average)")


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda``."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where torch runs (default: cuda if available)")


def default_cache_dir() -> Path:
    """The per-user cache of M-Unet features (``$XDG_CACHE_HOME/scribbleseg/features``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "scribbleseg" / "features"
