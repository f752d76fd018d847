"""Reading parts of a ``(Z, Y, X, C)`` feature volume without holding all of it in memory.

The M-Unet's features of a 100x512x512 stack are 1.6 GB of float16 (the feature cache keeps them
memory-mapped).  The adaptation reads the features of a few thousand scribbled voxels, and the
evaluation of ``h`` reads the whole volume once, slab by slab: both through :class:`FeatureReader`.
"""

from __future__ import annotations

import mmap

import numpy as np

from .errors import ScribbleSegError


class FeatureReader:
    """Reads rows of sections of a ``(Z, Y, X, C)`` feature array.

    A C-contiguous memory-mapped array (the feature cache) is read with plain
    file reads instead of through its mapping: the pages then stay in the
    operating system's file cache and do not count in the process's resident
    memory, which would otherwise grow by the whole feature file (1.6 GB at
    100x512x512) on every pass over the volume.  Anything else is sliced, and so
    is a mapped file that is gone from its folder (another run's cache eviction or
    ``scribbleseg cache clear``): the mapping still holds it.

    Examples
    --------
    >>> import os, tempfile
    >>> features = np.arange(2 * 3 * 4 * 2, dtype=np.float16).reshape(2, 3, 4, 2)
    >>> path = os.path.join(tempfile.mkdtemp(), "features.npy")
    >>> np.save(path, features)
    >>> FeatureReader(np.load(path, mmap_mode="r")).path == path, FeatureReader(features).path  # read from the file
    (True, None)
    """

    def __init__(self, features: np.ndarray) -> None:
        self.features = features
        self.path, self.offset = None, 0
        mapping = getattr(features, "_mmap", None)
        if isinstance(features, np.memmap) and mapping is not None and features.flags.c_contiguous \
                and getattr(features, "filename", None):
            try:
                start = np.frombuffer(mapping, np.uint8).ctypes.data
            except (TypeError, ValueError):  # a closed or unusual mapping: slice it instead
                return
            # np.memmap maps the file from its offset rounded down to the allocation granularity.
            first = features.offset - features.offset % mmap.ALLOCATIONGRANULARITY
            self.path, self.offset = features.filename, first + features.ctypes.data - start

    def voxels(self, flat: np.ndarray) -> np.ndarray:
        """float32 ``(N, C)`` features of the voxels at flat indices ``flat`` (sorted: reads in file order).

        Examples
        --------
        >>> import os, tempfile
        >>> features = np.arange(2 * 3 * 4 * 2, dtype=np.float16).reshape(2, 3, 4, 2)
        >>> path = os.path.join(tempfile.mkdtemp(), "features.npy")
        >>> np.save(path, features)
        >>> FeatureReader(np.load(path, mmap_mode="r")).voxels([0, 13]).tolist()  # voxel 13 is (1, 0, 1)
        [[0.0, 1.0], [26.0, 27.0]]
        >>> FeatureReader(features).voxels([13]).dtype
        dtype('float32')
        """
        flat = np.asarray(flat, np.int64)
        handle = self._open()
        if handle is None:
            # Index with (z, y, x) arrays: reshaping a non-contiguous volume would copy all of it.
            return np.asarray(self.features[np.unravel_index(flat, self.features.shape[:3])], dtype=np.float32)
        out = np.empty((flat.size, self.features.shape[3]), self.features.dtype)
        size = out.shape[1] * out.itemsize
        with handle:
            for row, index in enumerate(flat.tolist()):
                handle.seek(self.offset + index * size)
                if handle.readinto(memoryview(out[row]).cast("B")) != size:
                    raise ScribbleSegError(f"the feature file {handle.name} ended early (truncated?)")
        return out.astype(np.float32)

    def rows(self, z: int, y0: int, y1: int) -> np.ndarray:
        """Rows ``y0:y1`` of section ``z``, ``(y1 - y0, X, C)``, a writable array of the features' dtype.

        Examples
        --------
        >>> import os, tempfile
        >>> features = np.arange(2 * 3 * 4 * 2, dtype=np.float16).reshape(2, 3, 4, 2)
        >>> path = os.path.join(tempfile.mkdtemp(), "features.npy")
        >>> np.save(path, features)
        >>> rows = FeatureReader(np.load(path, mmap_mode="r")).rows(1, 1, 3)
        >>> rows.shape, rows.dtype, bool((rows == features[1, 1:3]).all()), rows.flags.writeable
        ((2, 4, 2), dtype('float16'), True, True)
        """
        # One handle per read: threads read different slabs at once and must not share a file position.
        handle = self._open()
        if handle is None:
            return np.array(self.features[z, y0:y1])
        _, rows, cols, channels = self.features.shape
        out = np.empty((y1 - y0, cols, channels), self.features.dtype)
        row_bytes = cols * channels * out.itemsize
        with handle:
            handle.seek(self.offset + (z * rows + y0) * row_bytes)
            view = memoryview(out).cast("B")
            done = 0
            while done < out.nbytes:
                n = handle.readinto(view[done:])
                if not n:
                    raise ScribbleSegError(f"the feature file {handle.name} ended early (truncated?)")
                done += n
        return out

    def _open(self):
        """The feature file opened for reading; None for features read by slicing, and from when the file is gone
        from its folder (read through the mapping then, for good)."""
        path = self.path  # once: another thread may give it up meanwhile
        if path is None:
            return None
        try:
            return open(path, "rb", buffering=0)
        except FileNotFoundError:
            self.path = None
            return None


def read_only_view(array: np.ndarray) -> np.ndarray:
    """A read-only view of the M-Unet's ``array`` (``array`` itself, perhaps the caller's, keeps its flags).

    Results hold the probability they were made from: a change made to one must not reach the next run.
    A memory-mapped cache stays an ``np.memmap``: :class:`FeatureReader` reads one with file reads, which
    keep its pages out of the process's resident memory (``np.asarray`` would drop the subclass, and every
    pass over the features would then map in the whole file, 1.6 GB at 100x512x512).

    Examples
    --------
    >>> a = np.zeros(3)
    >>> read_only_view(a).flags.writeable, a.flags.writeable
    (False, True)
    """
    view = array.view() if isinstance(array, np.ndarray) else np.asarray(array).view()
    view.flags.writeable = False
    return view
