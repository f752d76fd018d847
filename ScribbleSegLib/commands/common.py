"""Options and helpers shared by several subcommands.

The choices and defaults come from :mod:`ScribbleSegLib.choices`; the value
checkers here make argparse refuse a bad number at once, before any work.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from pathlib import Path
from typing import Callable, Iterator

from .. import choices


def _number(kind: Callable, test: Callable[[float], bool], wanted: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    parse.__name__ = wanted  # argparse names the type in some messages
    return parse


positive_float = _number(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
"""argparse type: a finite number > 0.

Examples
--------
>>> positive_float("2.5")
2.5
"""
nonnegative_float = _number(float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")
positive_int = _number(int, lambda v: v > 0, "a positive integer")
nonnegative_int = _number(int, lambda v: v >= 0, "a non-negative integer")
phantom_volumes = _number(int, lambda v: 1 <= v <= choices.MAX_PHANTOM_VOLUMES,
                          f"a whole number of volumes from 1 to {choices.MAX_PHANTOM_VOLUMES}")
"""argparse type: how many volumes a phantom set holds (:data:`ScribbleSegLib.choices.MAX_PHANTOM_VOLUMES`)."""
seed_int = _number(int, lambda v: 0 <= v <= choices.MAX_SEED, "an integer from 0 to 2^63 - 1")
"""argparse type: a seed (:data:`ScribbleSegLib.choices.MAX_SEED`)."""
cache_gb = _number(float, lambda v: choices.cache_cap_problem(v) is None,
                   f"a positive number of GB up to {choices.MAX_CACHE_GB:g}")
"""argparse type: a cache size cap (:func:`ScribbleSegLib.choices.cache_cap_problem`)."""
spacing_mm = _number(float, lambda v: choices.SPACING_RANGE[0] <= v <= choices.SPACING_RANGE[1],
                     f"a voxel size from {choices.SPACING_RANGE[0]:g} to {choices.SPACING_RANGE[1]:g} mm")
"""argparse type: one entry of a voxel size (:data:`ScribbleSegLib.choices.SPACING_RANGE`)."""


def folder_path(text: str) -> str:
    """argparse type: a folder's path, not empty (an unset shell variable gives an empty one, which must not
    mean the default folder: ``cache clear`` would then empty the user's real cache).

    Examples
    --------
    >>> folder_path("/tmp/cache")
    '/tmp/cache'
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty path")
    return text


folder_path.__name__ = "a folder"


IMAGE_PARAMETER_FLAGS = {"(spacing)": "(--spacing)", "downsample": "--downsample"}
"""How the library's messages name what :func:`add_image_options` takes, as its flag (``cli._one_line``)."""

DEVICE_PARAMETER_FLAGS = {"device 'cpu'": "--device cpu"}
"""How the library's messages name what :func:`add_device_option` takes, as its flag (``cli._one_line``)."""


def add_image_options(parser: argparse.ArgumentParser) -> None:
    """``--spacing`` and ``--downsample``, for images given as a folder of sections.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_image_options(parser)
    >>> parser.parse_args(["--spacing", "0.5", "0.5", "2"])
    Namespace(spacing=[0.5, 0.5, 2.0], downsample=1)
    """
    parser.add_argument("--spacing", type=spacing_mm, nargs=3, metavar=("X", "Y", "Z"),
                        help="voxel size in mm (required for a folder of sections; a 2D section without it has "
                             "the file's pixel size, 1 mm for most formats; overrides a file's; for a single 2D "
                             "section Z sets only the volume reported and the outputs' section thickness: give, "
                             "say, the X value)")
    parser.add_argument("--downsample", type=positive_int, default=1, metavar="N",
                        help="read sections downsampled in-plane by N (area average)")


def check_device_flag(device: str) -> None:
    """Refuse ``--device`` at once when this machine cannot give it (``cuda`` without a GPU), before any work.

    Examples
    --------
    >>> check_device_flag("cpu")  # fine: nothing happens
    >>> from ScribbleSegLib.errors import ScribbleSegError
    >>> try:
    ...     check_device_flag("tpu")
    ... except ScribbleSegError as error:
    ...     print(error)
    --device tpu: unknown device, expected one of auto, cpu, cuda or cuda:N
    """
    from ..errors import ScribbleSegError
    from ..runtime import resolve_device

    try:
        resolve_device(device)
    except ScribbleSegError as exc:
        raise ScribbleSegError(f"--{exc}") from None


def device_flag(text: str) -> str:
    """``--device``'s value as the API takes it (:func:`ScribbleSegLib.choices.device_name`): any case, ``cuda:N`` too.

    Examples
    --------
    >>> device_flag("CPU")
    'cpu'
    """
    name = choices.device_name(text)
    if name is None:
        raise argparse.ArgumentTypeError(f"invalid device {text!r} (choose from {choices.DEVICES_TEXT})")
    return name


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda`` (or ``cuda:N``, in any case).

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_device_option(parser)
    >>> parser.parse_args([]).device, parser.parse_args(["--device", "CUDA:1"]).device
    ('auto', 'cuda:1')
    """
    parser.add_argument("--device", default=choices.DEFAULT_DEVICE, type=device_flag,
                        metavar="{" + ",".join(choices.DEVICES) + "}",
                        help="where torch runs; cuda:N picks one of several GPUs (default: cuda if available)")


def default_cache_dir() -> Path:
    """The per-user cache of M-Unet features (see :func:`ScribbleSegLib.choices.default_cache_dir`).

    Examples
    --------
    >>> default_cache_dir() == choices.default_cache_dir()
    True
    """
    return choices.default_cache_dir()


EXPERIMENT_PARAMETER_FLAGS = {"max_minutes": "--train-minutes", **DEVICE_PARAMETER_FLAGS}
"""How the library's messages name what :func:`add_experiment_options` takes, as its flags (``cli._one_line``)."""


def add_experiment_options(parser: argparse.ArgumentParser, out_default: str, minutes_default: float) -> None:
    """Options shared by ``demo`` and ``bench``: output folder, seed, device, budget, phantom size.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_experiment_options(parser, "demo_out", 5.0)
    >>> parser.parse_args(["--shape", "16", "96", "96"])
    Namespace(out='demo_out', seed=0, device='auto', train_minutes=5.0, shape=[16, 96, 96], quiet=False)
    """
    parser.add_argument("--out", type=folder_path, default=out_default, help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=seed_int, default=0,
                        help="seed of the phantoms, scribbles and training (default: %(default)s)")
    add_device_option(parser)
    parser.add_argument("--train-minutes", type=positive_float, default=minutes_default,
                        help="training budget of each network in minutes (default: %(default)s)")
    parser.add_argument("--shape", type=positive_int, nargs=3, metavar=("Z", "Y", "X"),
                        help="phantom size (default: the phantom's default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def check_phantom_shape(shape) -> None:
    """Refuse a ``--shape`` the phantom cannot be made with (too small, or too big for memory), before any work.

    Examples
    --------
    >>> check_phantom_shape((16, 96, 96)); check_phantom_shape(None)  # both fine: nothing happens
    >>> from ScribbleSegLib.errors import ScribbleSegError
    >>> try:
    ...     check_phantom_shape((2, 64, 64))
    ... except ScribbleSegError as error:
    ...     print(error)
    --shape 2 64 64: phantom shape 2 64 64 is too small: at least 4 sections of 16x16 pixels
    """
    if shape is None:
        return
    import dataclasses

    from ..errors import ScribbleSegError
    from ..phantom import PhantomConfig
    from ..resources import check_phantom_memory

    text = " ".join(map(str, shape))
    try:
        dataclasses.replace(PhantomConfig(), shape=tuple(shape)).validate()
    except ScribbleSegError as exc:
        raise ScribbleSegError(f"--shape {text}: {exc}") from None
    check_phantom_memory(shape, "--shape")


@contextlib.contextmanager
def output_folder_kept_on_success(out: str, *, with_contents: bool = False) -> Iterator[Path]:
    """:func:`make_output_folder` for the body; a folder it created is removed again if the body fails (a
    fault leaves no trace): when it is empty, or with ``with_contents``, with what the body wrote there.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "results"
    >>> try:
    ...     with output_folder_kept_on_success(str(out), with_contents=True) as folder:
    ...         _ = (folder / "half.txt").write_text("half written")
    ...         raise RuntimeError("the command failed")
    ... except RuntimeError:
    ...     pass
    >>> out.exists()
    False
    """
    created = not Path(out).exists()
    path = make_output_folder(out)
    try:
        yield path
    except BaseException:
        if created:
            import shutil

            with contextlib.suppress(OSError):  # not empty, or gone: leave it
                if with_contents:
                    shutil.rmtree(path)
                else:
                    path.rmdir()
        raise


def make_output_folder(out: str) -> Path:
    """Create ``out`` (its parent must exist and be writable) and return it.

    Examples
    --------
    >>> import tempfile
    >>> from ScribbleSegLib.errors import ScribbleSegError
    >>> base = Path(tempfile.mkdtemp())
    >>> make_output_folder(str(base / "out")).is_dir()
    True
    >>> try:
    ...     make_output_folder(str(base / "no" / "out"))
    ... except ScribbleSegError as error:
    ...     print(str(error).replace(str(base), "BASE"))
    --out BASE/no/out: the folder BASE/no does not exist
    """
    import os

    from ..errors import ScribbleSegError

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ScribbleSegError(f"--out {path}: is a file, expected a folder")
    if not path.parent.is_dir():
        raise ScribbleSegError(f"--out {path}: the folder {path.parent} does not exist")
    try:
        path.mkdir(exist_ok=True)
    except OSError as exc:
        raise ScribbleSegError(f"--out {path}: cannot create the folder ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ScribbleSegError(f"--out {path}: the folder is not writable")
    return path
