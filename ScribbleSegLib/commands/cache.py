"""``scribbleseg cache``: list or clear the cache of M-Unet features, or apply a size cap."""

from __future__ import annotations

import argparse
import time

from .. import choices
from .common import cache_gb, folder_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> parser.parse_args([])
    Namespace(action='list', max_gb=None, quiet=False, cache_dir=None)
    >>> parser.parse_args(["clear", "--max-gb", "2.5"]).max_gb
    2.5
    """
    parser.add_argument("action", nargs="?", default="list", choices=("list", "clear"),
                        help="list the entries (default) or remove them all")
    parser.add_argument("--max-gb", type=cache_gb, metavar="G",
                        help="set the cache's size cap to G GB (kept in the cache folder for every later run) "
                             "and evict least-recently-used entries beyond it (default cap: "
                             f"{choices.DEFAULT_CACHE_MAX_GB:g} GB; $SCRIBBLESEG_CACHE_MAX_GB overrides)")
    parser.add_argument("--quiet", action="store_true",
                        help="taken, as every command takes it; this one shows no progress bar")
    parser.add_argument("--cache-dir", type=folder_path, default=None,
                        help=f"the cache folder (default {choices.default_cache_dir()}, or $SCRIBBLESEG_CACHE_DIR)")


def _shape_text(shape) -> str:
    """``ZxYxX`` of an entry's stored image shape, or ``?`` when its manifest holds none that reads as one."""
    if not isinstance(shape, (list, tuple)) or not shape:
        return "?"
    return "x".join(str(s) for s in shape[:3])


def _scale_text(scale) -> str:
    """`` (network scale YxX)`` of an entry whose features the network computed on resized sections, else ``""``
    (none stated, as by an entry of an earlier version, or 1x1).

    Examples
    --------
    >>> _scale_text([0.5, 0.5]), _scale_text([1.0, 1.0]), _scale_text(None)
    (' (network scale 0.5x0.5)', '', '')
    """
    if not (isinstance(scale, list) and len(scale) == 2 and all(isinstance(v, (int, float)) for v in scale)):
        return ""
    return "" if tuple(scale) == (1, 1) else f" (network scale {float(scale[0]):g}x{float(scale[1]):g})"


def run(args: argparse.Namespace) -> int:
    """Run the command.

    Examples
    --------
    A ``--cache-dir`` that is a file is refused before anything is listed or removed:

    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "features"
    >>> _ = path.write_text("")
    >>> run(argparse.Namespace(cache_dir=str(path), max_gb=None, action="clear"))
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: ...features: is not a folder (--cache-dir)
    """
    from pathlib import Path

    from ..errors import ScribbleSegError
    from ..feature_cache import FeatureCache, size_text

    folder = Path(args.cache_dir).expanduser() if args.cache_dir is not None else choices.default_cache_dir()
    if folder.exists() and not folder.is_dir():
        raise ScribbleSegError(f"{folder}: is not a folder (--cache-dir)")
    cache = FeatureCache(folder)
    if args.max_gb is not None:
        try:
            cache.set_cap_gb(args.max_gb)
        except OSError as exc:
            raise ScribbleSegError(f"{folder}: cannot store the size cap ({exc.strerror or exc})") from None
    # The cap is kept for every later run: say so wherever the command ends (clear said only what it removed).
    capped = f"; size cap {args.max_gb:g} GB kept for later runs" if args.max_gb is not None else ""
    if not cache.check_readable():
        print(f"{folder}: no cache yet (0 entries){capped}")
        return 0
    if args.action == "clear":
        count, freed = cache.clear()
        print(f"{folder}: removed {count} entr{'y' if count == 1 else 'ies'}, {size_text(freed)} freed{capped}")
        return 0
    cache.sweep()
    if args.max_gb is not None:
        removed = cache.evict(report=False)  # the line below says it
        print(f"{folder}: size cap {args.max_gb:g} GB; evicted {len(removed)} least recently used "
              f"entr{'y' if len(removed) == 1 else 'ies'}")
    entries = cache.entries()
    for entry in reversed(entries):  # most recently used first
        shape = _shape_text(entry.meta.get("shape"))
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used)) if entry.last_used else "?"
        problem = cache.entry_problem(entry)
        damaged = f"  damaged: {problem} (the next run that needs it computes it again)" if problem else ""
        scaled = _scale_text(entry.meta.get("scale"))
        print(f"{entry.key}  {size_text(entry.size):>10}  last used {used}  image {shape}{scaled}  "
              f"model {entry.meta.get('model', '?')}{damaged}")
    total = sum(e.size for e in entries)
    print(f"{folder}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {size_text(total)} "
          f"(cap {size_text(cache.max_bytes)})")
    return 0
