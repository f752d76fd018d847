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
