"""Safe output files: checked paths and write-to-temporary-then-rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

from .errors import ScribbleSegError

PathLike = Union[str, os.PathLike]


def check_output_path(path: PathLike) -> Path:
    """Return ``path`` as a Path after checking that its folder exists and is writable.

    Raises
    ------
    ScribbleSegError
        If the folder does not exist, is not a folder, or cannot be written,
        or if ``path`` is an existing folder.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ScribbleSegError(f"{path}: the output folder {parent} does not exist")
    if path.is_dir():
        raise ScribbleSegError(f"{path}: is a folder, expected a file name")
    if not os.access(parent, os.W_OK):
        raise ScribbleSegError(f"{path}: the output folder {parent} is not writable")
    return path


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    If the body raises, the temporary file is removed and ``path`` is left as it
    was, so no half-written output is ever seen.  The temporary name keeps the
    final suffixes (``.seg.nrrd``, ``.nii.gz``) so that writers choosing a
    format by extension still work.
    """
    path = check_output_path(path)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates the file 0600; give the output the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
