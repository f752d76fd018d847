"""On-disk cache of M-Unet outputs, so that a re-run with new scribbles skips inference.

An entry is a folder ``<cache_dir>/<key>/`` holding ``probability.npy`` (float32),
``features.npy`` (float16, opened memory-mapped) and ``meta.json``.  The key
hashes the image bytes, its shape and the model file's bytes, so a changed image
or model never reuses a stale entry.  Entries are written to a temporary folder
and renamed into place, so a crash leaves no half-written entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

import numpy as np

_CHUNK = 1 << 24


def _hash_array(h: "hashlib._Hash", array: np.ndarray) -> None:
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    for start in range(0, flat.size, _CHUNK):
        h.update(memoryview(flat[start:start + _CHUNK]))


def cache_key(image: np.ndarray, model_path: Union[str, os.PathLike], extra: str = "") -> str:
    """A hex digest that identifies an (image, model file, settings) combination."""
    h = hashlib.sha256()
    h.update(repr((image.shape, str(image.dtype), extra)).encode())
    _hash_array(h, image)
    with open(model_path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()[:32]


def load(cache_dir: Union[str, os.PathLike], key: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Return ``(probability, features)`` for ``key``, or ``None`` if absent or unreadable.

    The features are memory-mapped read-only, so a cached volume larger than
    RAM costs only the pages a later stage touches.
    """
    entry = Path(cache_dir) / key
    try:
        prob = np.load(entry / "probability.npy")
        feats = np.load(entry / "features.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    return prob, feats


@contextlib.contextmanager
def new_entry(cache_dir: Union[str, os.PathLike], key: str, meta: Optional[dict] = None) -> Iterator[Path]:
    """Yield a temporary folder to fill with ``probability.npy`` and ``features.npy``.

    On success the folder is renamed to ``<cache_dir>/<key>``; on failure it is
    removed.  Writing the features straight into the entry (a memory-mapped
    ``.npy``) keeps a large volume's features out of RAM.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / key
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_dir))
    try:
        yield tmp
        (tmp / "meta.json").write_text(json.dumps(meta or {}, indent=1))
        if final.exists():  # another run stored the same entry meanwhile
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def entry_sizes(cache_dir: Union[str, os.PathLike]) -> list:
    """``[(key, bytes, mtime)]`` of the finished entries, least recently written first."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return []
    entries = []
    for entry in cache_dir.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():  # temporary folders of runs in progress
            continue
        size = 0
        for root, _dirs, files in os.walk(entry):
            for name in files:
                with contextlib.suppress(OSError):
                    size += os.path.getsize(os.path.join(root, name))
        with contextlib.suppress(OSError):
            entries.append((entry.name, size, entry.stat().st_mtime))
    return sorted(entries, key=lambda e: e[2])


def prune(cache_dir: Union[str, os.PathLike], max_bytes: int) -> list:
    """Delete the least recently written entries until the finished entries fit in ``max_bytes``.

    The most recent entry is always kept, even alone over the cap: it is the
    volume the user is working on.  Temporary folders of runs in progress are
    neither counted nor touched.

    Returns
    -------
    list of str
        The keys deleted.
    """
    entries = entry_sizes(cache_dir)
    total = sum(size for _key, size, _mtime in entries)
    deleted = []
    for key, size, _mtime in entries[:-1]:
        if total <= max_bytes:
            break
        shutil.rmtree(Path(cache_dir) / key, ignore_errors=True)
        total -= size
        deleted.append(key)
    return deleted
