"""On-disk cache of M-Unet outputs, so that a re-run with new scribbles skips inference.

An entry is a folder ``<cache_dir>/<key>/`` holding ``probability.npy``
(float32), ``features.npy`` (float16, opened memory-mapped) and
``meta.json``.  The key hashes the image bytes, its shape and the model file's
bytes, so a changed image or model never reuses a stale entry.

The cache heals itself:

- ``meta.json`` is the entry's manifest: each file's size and a checksum of
  a few sampled blocks (a full hash of a multi-GB feature file would cost
  as much as reading it).  An entry whose manifest is missing or does not
  match -- truncated, partly overwritten, half deleted -- is removed with one
  warning and recomputed.  Damage between the sampled blocks that turns
  values into NaN is found where a run reads them (the probability as the
  entry loads, the features where the adaptation reads them), and the entry
  goes the same way (:func:`discard_entry`).
- Entries are written into a temporary folder named
  ``.KEY.scribbleseg-tmp-HOST-PID-XXXXXXXX`` and renamed into place; the next
  run removes the temporaries of runs that were killed.
- A cache folder that cannot be used (it is a file, or read-only) means one
  warning and a run without the cache, never a failure.
- The cache has a size cap (:func:`~ScribbleSegLib.choices.default_cache_max_gb`);
  after each new entry the least recently used ones are evicted beyond it.

Warnings go to the ``ScribbleSegLib`` logger: the command line prints them as
one line each, the worker forwards them to the Slicer module.

Examples
--------
>>> import tempfile, numpy as np
>>> cache = FeatureCache(tempfile.mkdtemp())
>>> with cache.new_entry("0" * 32) as tmp:
...     np.save(tmp / "probability.npy", np.zeros((1, 2, 2), np.float32))
...     np.save(tmp / "features.npy", np.zeros((1, 2, 2, 3), np.float16))
>>> prob, feats = cache.load("0" * 32)
>>> feats.shape
(1, 2, 2, 3)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import choices
from .errors import ScribbleSegError
from .fileio import FULL_MARGIN_BYTES, free_bytes, fsync_file, sweep_stale_temps, temp_path, unreadable_reason

log = logging.getLogger("ScribbleSegLib")

PathLike = Union[str, os.PathLike]

FILES = ("probability.npy", "features.npy")
MANIFEST = "meta.json"
SETTINGS = "settings.json"
MANIFEST_VERSION = 1

_CHUNK = 1 << 24
_SAMPLE_BLOCKS = 16
_SAMPLE_BYTES = 1 << 16
_KEY_RE = re.compile(r"^[0-9a-f]{32}$")
# Temporary folders of versions before the manifest (``.KEY.XXXXXXXX`` from mkdtemp): no pid to check.
_LEGACY_TEMP_RE = re.compile(r"^\.[0-9a-f]{32}\.[A-Za-z0-9_]{8}$")
_LEGACY_TEMP_AGE_S = 24 * 3600


def _hash_array(h: "hashlib._Hash", array: np.ndarray) -> None:
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    for start in range(0, flat.size, _CHUNK):
        h.update(memoryview(flat[start:start + _CHUNK]))


#: What the M-Unet computes from an image and a model file: part of every key, so that a change to it (2: black
#: registration fill and grey glass shown to the network as white glass, and no stain fit on near-black pixels;
#: 3: unevenly lit, yellow or blue glass made white section by section; 4: a fit's two stains ranked by their red /
#: green, stain.order_stains, and no grey section in a stack's fit; 5: the stack's fit spread over the sections that
#: hold tissue) leaves the entries of the code before unused instead of returning its features.
FEATURES_VERSION = 5


def cache_key(image: np.ndarray, model_path: PathLike, extra: str = "") -> str:
    """A hex digest that identifies an (image, model file, settings) combination.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> model = os.path.join(tempfile.mkdtemp(), "m.model")
    >>> _ = open(model, "wb").write(b"weights")
    >>> len(cache_key(np.zeros((1, 2, 2, 3), np.uint8), model))
    32
    """
    h = hashlib.sha256()
    h.update(repr((image.shape, str(image.dtype), extra, FEATURES_VERSION)).encode())
    _hash_array(h, image)
    with open(model_path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()[:32]


def sampled_checksum(path: PathLike, size: Optional[int] = None) -> str:
    """A cheap checksum of a file: its size and :data:`_SAMPLE_BLOCKS` blocks at evenly spaced offsets.

    The first and the last block are always among them, so a truncated or
    re-headed file changes it; damage that falls between the samples does
    not (the ``.npy`` header and the size checks catch the rest that
    matters for a cache: partial and cut-off entries).

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "f.bin")
    >>> _ = open(path, "wb").write(b"x" * 1000)
    >>> sampled_checksum(path) == sampled_checksum(path)
    True
    """
    size = os.path.getsize(path) if size is None else size
    h = hashlib.blake2b(digest_size=16)
    h.update(str(size).encode())
    with open(path, "rb") as f:
        if size <= _SAMPLE_BLOCKS * _SAMPLE_BYTES:
            h.update(f.read())
        else:
            step = (size - _SAMPLE_BYTES) / (_SAMPLE_BLOCKS - 1)
            for i in range(_SAMPLE_BLOCKS):
                f.seek(int(round(i * step)))
                h.update(f.read(_SAMPLE_BYTES))
    return h.hexdigest()


@dataclass
class CacheEntry:
    """One entry as :meth:`FeatureCache.entries` lists it.

    Attributes
    ----------
    key : str
    path : pathlib.Path
    size : int
        Bytes on disk.
    last_used : float
        Seconds since the epoch of the last store or reuse.
    meta : dict
        The manifest (empty if unreadable).

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory(); cache = FeatureCache(folder.name)
    >>> with cache.new_entry("a" * 32) as tmp:
    ...     np.save(tmp / "probability.npy", np.zeros((1, 2, 2), np.float32))
    ...     np.save(tmp / "features.npy", np.zeros((1, 2, 2, 3), np.float16))
    >>> [(e.key, e.path.parent == cache.folder, e.size > 0, e.meta["format"]) for e in cache.entries()]
    [('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', True, True, 'scribbleseg-feature-cache')]
    >>> folder.cleanup()
    """

    key: str
    path: Path
    size: int
    last_used: float
    meta: Dict


def _folder_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total



def size_text(nbytes: float) -> str:
    """A size as people read it: GB with 2 decimals from 0.1 GB, else MB to 3 digits (a cap of 1 MB was "0.00 GB").

    Examples
    --------
    >>> size_text(3 * 2**30), size_text(2**20), size_text(2_200_000)
    ('3.00 GB', '1 MB', '2.1 MB')
    """
    return f"{nbytes / 2**30:.2f} GB" if nbytes >= 2**30 / 10 else f"{nbytes / 2**20:.3g} MB"

class FeatureCache:
    """A cache folder with its size cap.

    Parameters
    ----------
    folder : path
        Created if missing (its parent too).
    max_bytes : int, optional
        Size cap; default :func:`~ScribbleSegLib.choices.default_cache_max_gb`.

    Examples
    --------
    >>> import tempfile
    >>> FeatureCache(tempfile.mkdtemp(), max_bytes=10 << 30).entries()
    []
    """

    def __init__(self, folder: PathLike, max_bytes: Optional[int] = None) -> None:
        self.folder = Path(folder)
        if max_bytes is None:
            max_bytes = int(self.configured_cap_gb() * 2**30)
        self.max_bytes = int(max_bytes)

    def configured_cap_gb(self) -> float:
        """The cap in GB: ``$SCRIBBLESEG_CACHE_MAX_GB``, else the one ``scribbleseg cache --max-gb`` stored
        in the folder (``settings.json``), else :data:`~ScribbleSegLib.choices.DEFAULT_CACHE_MAX_GB`."""
        if os.environ.get("SCRIBBLESEG_CACHE_MAX_GB"):
            return choices.default_cache_max_gb()
        path = self.folder / SETTINGS
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))["max_gb"]
        except OSError:  # none stored, or no folder to hold it (which the run reports itself)
            return choices.default_cache_max_gb()
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("feature cache: %s holds no cap (%s); using the default of %g GB", path,
                        type(exc).__name__, choices.default_cache_max_gb())
            return choices.default_cache_max_gb()
        problem = choices.cache_cap_problem(stored)
        if problem is not None:  # written by hand, or by a version that checked less: never fatal
            log.warning("feature cache: the cap in %s %s; using the default of %g GB", path, problem,
                        choices.default_cache_max_gb())
            return choices.default_cache_max_gb()
        return float(stored)

    def set_cap_gb(self, max_gb: float) -> None:
        """Store ``max_gb`` as this folder's cap (every later run reads it); :meth:`evict` applies it.

        Raises ScribbleSegError unless ``max_gb`` is a positive number up to
        :data:`~ScribbleSegLib.choices.MAX_CACHE_GB`; nothing is stored then.

        Examples
        --------
        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory(); cache = FeatureCache(folder.name)
        >>> cache.set_cap_gb(2.5)
        >>> cache.max_bytes == int(2.5 * 2**30), (cache.folder / SETTINGS).read_text()
        (True, '{"max_gb": 2.5}\\n')
        >>> cache.set_cap_gb(-1)
        Traceback (most recent call last):
        ...
        ScribbleSegLib.errors.ScribbleSegError: max_gb must be a positive number of GB up to 1e+06, got -1
        >>> folder.cleanup()
        """
        from .fileio import atomic_output

        problem = choices.cache_cap_problem(max_gb)
        if problem is not None:
            raise ScribbleSegError(f"max_gb {problem}")
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.folder / SETTINGS) as tmp:
            tmp.write_text(json.dumps({"max_gb": float(max_gb)}) + "\n", encoding="utf-8")
        self.max_bytes = int(max_gb * 2**30)

    # -- opening -------------------------------------------------------------------------------

    def problem(self) -> Optional[str]:
        """Why the folder cannot hold a cache (create it if missing), or None if it can.

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     _ = Path(folder, "notes.txt").write_text("not a cache")
        ...     FeatureCache(Path(folder, "cache")).problem(), FeatureCache(Path(folder, "notes.txt")).problem()
        (None, 'is not a folder')
        """
        if self.folder.exists() and not self.folder.is_dir():
            return "is not a folder"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot be created ({exc.strerror or exc})"
        if not os.access(self.folder, os.W_OK | os.X_OK):
            return "is not writable"
        return None

    def sweep(self) -> List[Path]:
        """Remove what killed runs left: temporaries of dead processes, old pre-manifest temporaries.

        Examples
        --------
        A temporary folder of a version before the manifest, two days old:

        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     old = Path(folder, "." + "0" * 32 + ".abcdefgh"); old.mkdir()
        ...     os.utime(old, (time.time() - 2 * 86400,) * 2)
        ...     FeatureCache(folder).sweep() == [old], old.exists()
        (True, False)
        """
        removed = sweep_stale_temps(self.folder)
        now = time.time()
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.folder):
                if _LEGACY_TEMP_RE.match(entry.name) and entry.is_dir(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        if now - entry.stat(follow_symlinks=False).st_mtime > _LEGACY_TEMP_AGE_S:
                            shutil.rmtree(entry.path)
                            removed.append(Path(entry.path))
        return removed

    # -- entries -------------------------------------------------------------------------------

    def entry_problem(self, entry: CacheEntry) -> Optional[str]:
        """What is wrong with a listed entry (a file cut short, changed, missing), or None if its files match its
        manifest.  Cheap: sizes and sampled checksums (:func:`sampled_checksum`), as a run checks before a reuse.

        Examples
        --------
        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory(); cache = FeatureCache(folder.name)
        >>> with cache.new_entry("a" * 32) as tmp:
        ...     np.save(tmp / "probability.npy", np.zeros((1, 2, 2), np.float32))
        ...     np.save(tmp / "features.npy", np.zeros((1, 2, 2, 3), np.float16))
        >>> entry = cache.entries()[0]
        >>> cache.entry_problem(entry) is None
        True
        >>> with open(entry.path / "features.npy", "r+b") as f:
        ...     _ = f.truncate(100)
        >>> cache.entry_problem(entry)
        'features.npy has 100 bytes, the manifest says 152'
        >>> folder.cleanup()
        """
        return self._check(entry.path)

    def _check(self, entry: Path) -> Optional[str]:
        """What is wrong with an entry, or None if its files match its manifest."""
        try:
            meta = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "its manifest is missing or unreadable"
        files = meta.get("files") if isinstance(meta, dict) else None
        if not isinstance(files, dict) or set(files) != set(FILES):
            return "its manifest lists no files"
        if meta.get("version") != MANIFEST_VERSION:
            # Another version's entry (a newer ScribbleSeg's in a shared cache) was used as this one's.
            return f"its manifest is of version {meta.get('version')!r}, this ScribbleSeg writes {MANIFEST_VERSION}"
        for name, recorded in files.items():
            path = entry / name
            try:
                size = path.stat().st_size
            except OSError:
                return f"{name} is missing"
            if not isinstance(recorded, dict) or size != recorded.get("size"):
                expected = recorded.get("size") if isinstance(recorded, dict) else "?"
                return f"{name} has {size} bytes, the manifest says {expected}"
            try:
                if sampled_checksum(path, size) != recorded.get("checksum"):
                    return f"{name} does not match its checksum"
            except OSError as exc:
                return f"{name} cannot be read ({exc.strerror or exc})"
        return None

    def _discard(self, entry: Path, reason: str) -> None:
        discard_entry(entry, reason)

    def load(self, key: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """Return ``(probability, features)`` for ``key``, or None if absent or damaged.

        A damaged entry is removed (one warning), so the caller recomputes and
        stores it again.  Both are memory-mapped read-only, so a cached
        volume larger than RAM costs only the pages a later stage touches.

        Examples
        --------
        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory(); cache = FeatureCache(folder.name)
        >>> with cache.new_entry("a" * 32) as tmp:
        ...     np.save(tmp / "probability.npy", np.zeros((1, 2, 2), np.float32))
        ...     np.save(tmp / "features.npy", np.zeros((1, 2, 2, 3), np.float16))
        >>> _ = (cache.folder / ("a" * 32) / "features.npy").write_bytes(b"cut short")
        >>> cache.load("a" * 32), (cache.folder / ("a" * 32)).exists()  # damaged: removed, computed again
        (None, False)
        >>> folder.cleanup()
        """
        entry = self.folder / key
        if not entry.is_dir():
            return None
        problem = self._check(entry)
        if problem is None:
            try:
                # Both memory-mapped: a re-run reads the page cache's pages where a copy would first have to be
                # given fresh memory (up to 1.7 s for this 105 MB at 100x512x512 on a VM that backs it lazily).
                prob = np.load(entry / "probability.npy", mmap_mode="r")
                feats = np.load(entry / "features.npy", mmap_mode="r")
            except (OSError, ValueError, EOFError) as exc:
                problem = f"unreadable: {unreadable_reason(exc)}"
            else:
                if prob.ndim != 3 or feats.ndim != 4 or feats.shape[:3] != prob.shape:
                    problem = f"shapes {prob.shape} and {feats.shape} do not fit together"
                elif not math.isfinite(float(np.sum(prob, dtype=np.float64))):
                    # Bytes overwritten between the checksum's samples; a sum sees a NaN anywhere (0.02 s).
                    problem = "probability.npy holds values that are not numbers"
        if problem is not None:
            self._discard(entry, problem)
            return None
        with contextlib.suppress(OSError):
            os.utime(entry / MANIFEST)  # the least-recently-used order
        return prob, feats

    def stored_warnings(self, key: str) -> List[str]:
        """The warnings the run that computed ``key``'s entry gave while it computed them (its manifest's
        ``warnings``; none for an entry made before they were kept, or a manifest that cannot be read).

        Examples
        --------
        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory(); cache = FeatureCache(folder.name)
        >>> with cache.new_entry("a" * 32, {"warnings": ["pale stain"]}) as tmp:
        ...     np.save(tmp / "probability.npy", np.zeros((1, 2, 2), np.float32))
        ...     np.save(tmp / "features.npy", np.zeros((1, 2, 2, 3), np.float16))
        >>> cache.stored_warnings("a" * 32), cache.stored_warnings("b" * 32)  # the second: no such entry
        (['pale stain'], [])
        >>> folder.cleanup()
        """
        try:
            stored = json.loads((self.folder / key / MANIFEST).read_text(encoding="utf-8")).get("warnings", [])
        except (OSError, ValueError, AttributeError):
            return []
        return [str(w) for w in stored] if isinstance(stored, list) else []

    @contextlib.contextmanager
    def new_entry(self, key: str, meta: Optional[dict] = None) -> Iterator[Path]:
        """Yield a temporary folder to fill with ``probability.npy`` and ``features.npy``.

        ``meta`` goes into the manifest as it is when the body ends (the body may add to it: the warnings
        its computation gave, :meth:`stored_warnings`).

        On success the manifest is written and the folder renamed to
        ``<folder>/<key>``, then entries beyond the size cap are evicted; on
        failure (or SIGINT/SIGTERM) it is removed.  Writing the features straight
        into the entry (a memory-mapped ``.npy``) keeps a large volume's
        features out of RAM.

        Examples
        --------
        A body that fails leaves nothing behind, not even its temporary folder:

        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory(); cache = FeatureCache(folder.name)
        >>> with cache.new_entry("a" * 32) as tmp:
        ...     np.save(tmp / "probability.npy", np.zeros((1, 2, 2), np.float32))
        ...     raise MemoryError("the features did not fit")
        Traceback (most recent call last):
        ...
        MemoryError: the features did not fit
        >>> os.listdir(folder.name)
        []
        >>> folder.cleanup()
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / key
        tmp = temp_path(final)
        tmp.mkdir()
        try:
            yield tmp
            files = {}
            for name in FILES:
                size = (tmp / name).stat().st_size
                files[name] = {"size": size, "checksum": sampled_checksum(tmp / name, size)}
            manifest = {"format": "scribbleseg-feature-cache", "version": MANIFEST_VERSION,
                        "created": time.time(), **(meta or {}), "files": files}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            # On the disk before the rename: a crash soon after it could leave the entry's blocks as zeros, which
            # the sampled checksum can miss, and the features are then read as numbers that are not theirs.
            for name in (*FILES, MANIFEST):
                fsync_file(tmp / name)
            if final.exists() and self._check(final) is None:
                shutil.rmtree(tmp)  # another run stored the same entry meanwhile
            else:
                if final.is_symlink() or (os.path.lexists(final) and not final.is_dir()):
                    # A file or a link (dangling or not) where the entry goes: the rename would fail on it in
                    # every run on this image.
                    final.unlink()
                elif final.exists():
                    shutil.rmtree(final, ignore_errors=True)
                try:
                    os.replace(tmp, final)
                except OSError:
                    # Another run renamed the same entry into place between the check and the rename (a
                    # folder is not replaced over a full one): that entry serves, when it is whole.
                    if not final.exists() or self._check(final) is not None:
                        raise
                    shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.evict(keep=key)

    def entries(self) -> List[CacheEntry]:
        """Every entry, least recently used first (temporaries and foreign files are not entries).

        Examples
        --------
        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory(); cache = FeatureCache(folder.name)
        >>> with cache.new_entry("a" * 32) as tmp:
        ...     np.save(tmp / "probability.npy", np.zeros((1, 2, 2), np.float32))
        ...     np.save(tmp / "features.npy", np.zeros((1, 2, 2, 3), np.float16))
        >>> _ = (cache.folder / "notes.txt").write_text("not an entry")
        >>> [e.key for e in cache.entries()]
        ['aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa']
        >>> folder.cleanup()
        """
        found = []
        with contextlib.suppress(OSError):
            for item in os.scandir(self.folder):
                if not _KEY_RE.match(item.name) or not item.is_dir(follow_symlinks=False):
                    continue
                path = Path(item.path)
                try:
                    last_used = (path / MANIFEST).stat().st_mtime
                    meta = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    last_used, meta = 0.0, {}
                found.append(CacheEntry(item.name, path, _folder_size(path), last_used,
                                        meta if isinstance(meta, dict) else {}))
        return sorted(found, key=lambda e: e.last_used)

    def size(self) -> int:
        """Bytes held by entries and temporaries.

        Examples
        --------
        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory(); cache = FeatureCache(folder.name)
        >>> cache.size()
        0
        >>> with cache.new_entry("a" * 32) as tmp:
        ...     np.save(tmp / "probability.npy", np.zeros((1, 2, 2), np.float32))
        ...     np.save(tmp / "features.npy", np.zeros((1, 2, 2, 3), np.float16))
        >>> cache.size() == cache.entries()[0].size > 0
        True
        >>> folder.cleanup()
        """
        return sum(e.size for e in self.entries())

    def evict(self, keep: Optional[str] = None, extra_bytes: int = 0, report: bool = True) -> List[str]:
        """Remove least-recently-used entries until the cache plus ``extra_bytes`` fits the cap.

        ``keep`` (the entry just stored or in use) is never removed.  Returns the removed keys, and logs
        how many unless ``report`` is False (a caller that says so itself).

        Examples
        --------
        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory(); cache = FeatureCache(folder.name)
        >>> with cache.new_entry("a" * 32) as tmp:
        ...     np.save(tmp / "probability.npy", np.zeros((1, 2, 2), np.float32))
        ...     np.save(tmp / "features.npy", np.zeros((1, 2, 2, 3), np.float16))
        >>> with cache.new_entry("b" * 32) as tmp:
        ...     np.save(tmp / "probability.npy", np.zeros((1, 2, 2), np.float32))
        ...     np.save(tmp / "features.npy", np.zeros((1, 2, 2, 3), np.float16))
        >>> cache.max_bytes = 1  # less than any entry
        >>> cache.evict(keep="b" * 32, report=False), [e.key[0] for e in cache.entries()]
        (['aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'], ['b'])
        >>> folder.cleanup()
        """
        entries = self.entries()
        total = sum(e.size for e in entries) + int(extra_bytes)
        removed = []
        for entry in entries:
            if total <= self.max_bytes:
                break
            if entry.key == keep:
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            total -= entry.size
            removed.append(entry.key)
        if removed and report:
            log.info("feature cache: evicted %d least recently used entr%s to stay under %s",
                     len(removed), "y" if len(removed) == 1 else "ies", size_text(self.max_bytes))
        return removed

    def make_room(self, nbytes: int) -> Optional[str]:
        """Evict what is needed for a new entry of ``nbytes``; return why it still cannot be stored, or None.

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     print(FeatureCache(folder, max_bytes=1 << 30).make_room(2 << 30))
        ...     print(FeatureCache(folder, max_bytes=1 << 20).make_room(2_200_000))
        the features need 2.00 GB, more than the cache's cap of 1.00 GB
        the features need 2.1 MB, more than the cache's cap of 1 MB
        """
        if nbytes > self.max_bytes:
            return (f"the features need {size_text(nbytes)}, more than the cache's cap of "
                    f"{size_text(self.max_bytes)}")
        self.evict(extra_bytes=nbytes)
        free = free_bytes(self.folder)
        if free < nbytes + FULL_MARGIN_BYTES:
            return f"the features need {nbytes / 2**20:.0f} MB, {free / 2**20:.0f} MB free"
        return None

    def check_readable(self) -> bool:
        """Whether the folder exists; ScribbleSegError if it exists but cannot be listed (its entries would
        look like none).

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     FeatureCache(folder).check_readable(), FeatureCache(Path(folder, "none yet")).check_readable()
        (True, False)
        """
        try:
            os.scandir(self.folder).close()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ScribbleSegError(f"{self.folder}: cannot read the cache folder ({exc.strerror or exc})") from None
        return True

    def clear(self) -> Tuple[int, int]:
        """Remove every entry and every temporary; return (entries removed, bytes freed).

        Only entries and ScribbleSeg temporaries are removed, never other files
        that happen to be in the folder.  An entry counts as removed only once it is
        gone: in a folder this user cannot write, nothing is.

        Raises
        ------
        ScribbleSegError
            The folder cannot be read, or some entries could not be removed (after
            removing all it could).

        Examples
        --------
        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory(); cache = FeatureCache(folder.name)
        >>> with cache.new_entry("a" * 32) as tmp:
        ...     np.save(tmp / "probability.npy", np.zeros((1, 2, 2), np.float32))
        ...     np.save(tmp / "features.npy", np.zeros((1, 2, 2, 3), np.float16))
        >>> _ = (cache.folder / "notes.txt").write_text("not the cache's")
        >>> size = cache.size(); cache.clear() == (1, size), os.listdir(folder.name)
        (True, ['notes.txt'])
        >>> folder.cleanup()
        """
        if not self.check_readable():
            return 0, 0
        count = freed = 0
        kept = []
        for entry in self.entries():
            shutil.rmtree(entry.path, ignore_errors=True)
            if entry.path.exists():
                kept.append(entry.key)
                continue
            count += 1
            freed += entry.size
        from .fileio import is_temp_name

        with contextlib.suppress(OSError):
            for item in os.scandir(self.folder):
                if is_temp_name(item.name) or _LEGACY_TEMP_RE.match(item.name):
                    path = Path(item.path)
                    freed += _folder_size(path) if path.is_dir() else path.stat().st_size
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
        if kept:
            raise ScribbleSegError(f"{self.folder}: removed {count} entr{'y' if count == 1 else 'ies'}, but "
                                   f"{len(kept)} could not be removed (no permission to write the folder?)")
        return count, freed


#: Name of a cut's coarse pair weights in a cache entry: ``cut-weights-<key>.npy`` and its manifest ``.json``.
CUT_WEIGHTS = "cut-weights-"


class CutWeights:
    """The coarse-to-fine cut's coarse pair weights of a cached image, kept in its cache entry.

    They depend on the image, its spacing and the cut's settings alone, and cost a cut of a large volume
    about half a second (BENCHMARKS.md, "Interactive speed" item 49): a re-run that reuses the entry's
    features reads them instead.  One set per entry (``cut-weights-<key>.npy``, float32 ``(3, Z, Y, X)``),
    with a manifest of its size and sampled checksum beside it; a set that does not match it, or has another
    shape, is removed and computed again.  Every problem is one warning and a cut that computes them, never an
    error: they are a shortcut, not a result.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> store = CutWeights(pathlib.Path(tempfile.mkdtemp()))
    >>> store.save("k", [np.ones((1, 2, 2), np.float32)] * 3)
    >>> [w.shape for w in store.load("k", (1, 2, 2))]
    [(1, 2, 2), (1, 2, 2), (1, 2, 2)]
    >>> store.load("other", (1, 2, 2)) is None
    True
    """

    def __init__(self, entry: PathLike) -> None:
        self.entry = Path(entry)

    @classmethod
    def of(cls, features: np.ndarray) -> Optional["CutWeights"]:
        """The store of the cache entry that ``features`` were read from (memory-mapped), or None.

        Examples
        --------
        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory(); cache = FeatureCache(folder.name)
        >>> with cache.new_entry("a" * 32) as tmp:
        ...     np.save(tmp / "probability.npy", np.zeros((1, 2, 2), np.float32))
        ...     np.save(tmp / "features.npy", np.zeros((1, 2, 2, 3), np.float16))
        >>> probability, features = cache.load("a" * 32)
        >>> CutWeights.of(features).entry == cache.folder / ("a" * 32), CutWeights.of(np.array(features))
        (True, None)
        >>> del probability, features; folder.cleanup()
        """
        entry = entry_of(features)
        return None if entry is None else cls(entry)

    def _paths(self, key: str) -> Tuple[Path, Path]:
        return self.entry / f"{CUT_WEIGHTS}{key}.npy", self.entry / f"{CUT_WEIGHTS}{key}.json"

    def load(self, key: str, shape: Tuple[int, int, int],
             mapped: bool = False) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The three float32 ``shape`` arrays stored under ``key``, or None; ``mapped``: read-only and
        memory-mapped, for a caller that drops them before the store may replace the file (Windows refuses to
        delete a mapped file), instead of copied into fresh memory.

        Examples
        --------
        A set of another shape is not used, and goes:

        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as entry:
        ...     CutWeights(entry).save("k", [np.ones((1, 2, 2), np.float32)] * 3)
        ...     CutWeights(entry).load("k", (1, 4, 4)), os.listdir(entry)
        (None, [])
        """
        data, manifest = self._paths(key)
        if not data.is_file():
            return None
        try:
            recorded = json.loads(manifest.read_text(encoding="utf-8"))
            size = data.stat().st_size
            if size != recorded["size"] or sampled_checksum(data, size) != recorded["checksum"]:
                raise ValueError("it does not match its manifest")
            weights = np.load(data, mmap_mode="r" if mapped else None)
            expected = (3,) + tuple(shape)
            if weights.dtype != np.float32 or weights.shape != expected:
                raise ValueError(f"it holds {weights.dtype} {weights.shape}, the cut needs float32 {expected}")
        except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
            log.warning("feature cache: the cut's pair weights in entry %s are not usable (%s); removed, computed "
                        "again", self.entry.name, unreadable_reason(exc))
            for path in (data, manifest):
                with contextlib.suppress(OSError):
                    path.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(self.entry / MANIFEST)  # the entry was used: the least-recently-used order
        return weights[0], weights[1], weights[2]

    def save(self, key: str, weights: Sequence[np.ndarray]) -> None:
        """Keep ``weights`` (three arrays of one shape) under ``key``, in place of any other set; a failure (a full
        disk, a folder removed meanwhile) is one warning.

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as entry:
        ...     for key in ("first", "second"):
        ...         CutWeights(entry).save(key, [np.zeros((1, 2, 2), np.float32)] * 3)
        ...     sorted(os.listdir(entry))  # one set per entry
        ['cut-weights-second.json', 'cut-weights-second.npy']
        """
        from .fileio import atomic_output

        data, manifest = self._paths(key)
        stacked = np.stack([np.asarray(w, np.float32) for w in weights])
        sweep_stale_temps(self.entry)  # what a run killed while saving left
        try:
            for old in self.entry.glob(f"{CUT_WEIGHTS}*"):
                if old not in (data, manifest):
                    old.unlink()
            with atomic_output(data, expected_bytes=stacked.nbytes + 4096) as tmp:
                np.save(tmp, stacked)
            size = data.stat().st_size
            with atomic_output(manifest) as tmp:
                tmp.write_text(json.dumps({"size": size, "checksum": sampled_checksum(data, size)}), encoding="utf-8")
        except (OSError, ScribbleSegError) as exc:
            log.warning("feature cache: the cut's pair weights were not kept in %s (%s)", self.entry, exc)
            with contextlib.suppress(OSError):
                data.unlink()
            return
        FeatureCache(self.entry.parent).evict(keep=self.entry.name)  # the entry grew: the cap still holds


def entry_of(features: np.ndarray) -> Optional[Path]:
    """The folder of the cache entry that ``features`` were read from (memory-mapped), or None.

    Examples
    --------
    >>> entry_of(np.zeros((1, 2, 2, 3), np.float16)) is None
    True
    """
    filename = getattr(features, "filename", None)
    if not isinstance(features, np.memmap) or not filename or Path(filename).name != "features.npy":
        return None
    entry = Path(filename).parent
    return entry if _KEY_RE.match(entry.name) and (entry / MANIFEST).is_file() else None


def features_origin(features: np.ndarray) -> str:
    """Where ``features`` come from, for a message: the cache entry's folder, or the network.

    Examples
    --------
    >>> features_origin(np.zeros((1, 2, 2, 3), np.float16))
    'the M-Unet features'
    """
    entry = entry_of(features)
    return "the M-Unet features" if entry is None else f"the cached M-Unet features in {entry}"


def discard_entry(entry: PathLike, reason: str) -> None:
    """Remove a damaged cache entry, with the one warning that says why and that its features are computed again.

    Examples
    --------
    >>> import tempfile
    >>> entry = Path(tempfile.mkdtemp()) / ("0" * 32)
    >>> entry.mkdir()
    >>> discard_entry(entry, "a test")
    >>> entry.exists()
    False
    """
    entry = Path(entry)
    log.warning("feature cache: entry %s is damaged (%s); removed, the features are computed again",
                entry.name, reason)
    shutil.rmtree(entry, ignore_errors=True)


def open_cache(folder: Optional[PathLike], max_bytes: Optional[int] = None) -> Optional[FeatureCache]:
    """The cache in ``folder``, swept of stale temporaries; None (with one warning) if it cannot be used.

    Examples
    --------
    >>> import tempfile, os
    >>> open_cache(os.path.join(tempfile.mkdtemp(), "cache")) is not None
    True
    """
    if folder is None:
        return None
    cache = FeatureCache(folder, max_bytes)
    problem = cache.problem()
    if problem is not None:
        log.warning("feature cache: %s %s; running without the cache", cache.folder, problem)
        return None
    cache.sweep()
    return cache


# Functions of the first version, kept for callers that hold only a folder.


def load(cache_dir: PathLike, key: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``FeatureCache(cache_dir).load(key)``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     load(folder, "0" * 32) is None  # no such entry
    True
    """
    return FeatureCache(cache_dir).load(key)


def new_entry(cache_dir: PathLike, key: str, meta: Optional[dict] = None):
    """``FeatureCache(cache_dir).new_entry(key, meta)``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with new_entry(folder, "0" * 32) as tmp:
    ...         np.save(tmp / "probability.npy", np.zeros((1, 2, 2), np.float32))
    ...         np.save(tmp / "features.npy", np.zeros((1, 2, 2, 3), np.float16))
    ...     [a.shape for a in load(folder, "0" * 32)]
    [(1, 2, 2), (1, 2, 2, 3)]
    """
    return FeatureCache(cache_dir).new_entry(key, meta)
