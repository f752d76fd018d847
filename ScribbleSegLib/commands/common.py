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


def add_experiment_options(parser: argparse.ArgumentParser, out_default: str, minutes_default: float) -> None:
    """Options shared by ``demo`` and ``bench``: output folder, seed, device, budget, phantom size."""
    parser.add_argument("--out", default=out_default, help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phantoms, scribbles and training")
    add_device_option(parser)
    parser.add_argument("--train-minutes", type=float, default=minutes_default,
                        help="training budget of each network in minutes (default: %(default)s)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                        help="phantom size (default: the phantom's default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def make_output_folder(out: str) -> Path:
    """Create ``out`` (its parent must exist) and return it."""
    from ..errors import ScribbleSegError

    path = Path(out)
    if not path.parent.is_dir():
        raise ScribbleSegError(f"--out {path}: the folder {path.parent} does not exist")
    path.mkdir(exist_ok=True)
    return path
