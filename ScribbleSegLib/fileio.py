"""Safe output files: checked paths, disk-space checks, write-to-temporary-then-rename.

Every file ScribbleSeg writes appears only once complete.  A writer gets a
temporary path beside its target, named recognisably
(``.NAME.scribbleseg-tmp-HOST-PID-XXXXXXXX.SUFFIXES``); on success the temporary
file is renamed onto the target, on any error (a full disk included) it is
removed.  A run killed with SIGKILL cannot clean up: the next run sweeps the
temporaries whose process is gone, or, made on another machine, that are a day old
(:func:`sweep_stale_temps`).

A job with several outputs checks all of them before any computation
(:func:`check_outputs`) and writes them through one :class:`OutputSet`, which
renames them together at the end.

This module imports only the standard library: the Slicer module imports it in
Slicer's own process.

Examples
--------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> with atomic_output(folder / "a.txt") as tmp:
...     _ = tmp.write_text("hello")
>>> (folder / "a.txt").read_text()
'hello'
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import Interrupted, ScribbleSegError

PathLike = Union[str, os.PathLike]


def check_path(path: object, name: str = "path") -> Path:
    """``path`` as a Path, or a one-line error naming the parameter where it is no file name (an array, None).

    Examples
    --------
    >>> check_path("image.nrrd").name
    'image.nrrd'
    >>> check_path(None, "image")
    Traceback (most recent call last):
    ...
    ScribbleSegLib.errors.ScribbleSegError: image must be a file or folder name (str or os.PathLike), got NoneType
    """
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes):
        raise ScribbleSegError(f"{name} must be a file or folder name (str or os.PathLike), got {type(path).__name__}")
    return Path(path)

TEMP_TAG = ".scribbleseg-tmp-"
"""Marks every temporary file and folder ScribbleSeg creates beside an output or in its cache."""

NAME_MAX_BYTES = 255
"""The longest file name (bytes) the common file systems take (ext4, XFS, btrfs, APFS; NTFS counts UTF-16 units)."""

FOREIGN_TEMP_AGE_SECONDS = 24 * 3600
"""A temporary another machine made (a shared or network folder) is swept only once this old: its process
cannot be asked whether it still runs."""

# This machine, in temporary names: a process id means something only on the machine that gave it.
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]

# The host part is optional: temporaries of earlier versions had a process id alone.
_TEMP_RE = re.compile(r"^\..*" + re.escape(TEMP_TAG) + r"(?:(?P<host>[0-9a-f]{8})-)?(?P<pid>\d+)-[0-9a-z]+")

FULL_MARGIN_BYTES = 1 << 20
"""A write that fails (or a writer that ends) with less than this free on its disk ran out of space.

Native writers (SimpleITK, vtk, torch's zip writer) report a full disk as a
generic error, a 0-byte file or a silently truncated file; the free space left
afterwards is the one reliable sign."""

_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}

_MB = 1 << 20


class DiskFullError(ScribbleSegError):
    """An output did not fit on its disk; nothing of it was left behind.

    Examples
    --------
    >>> try:
    ...     check_free_space({"huge.nrrd": 1 << 60})  # an exbibyte
    ... except DiskFullError as error:
    ...     print(isinstance(error, ScribbleSegError), str(error).startswith("disk full writing huge.nrrd ("))
    True True
    """


def _mb(nbytes: float) -> str:
    return f"{nbytes / _MB:.1f}" if nbytes < 10 * _MB else f"{nbytes / _MB:.0f}"


def disk_full_message(path: PathLike, needed: int, free: int) -> str:
    """The one line that reports a full disk.

    Examples
    --------
    >>> disk_full_message("out.nrrd", 50 << 20, 3 << 20)
    'disk full writing out.nrrd (50 MB needed, 3.0 MB free)'
    >>> disk_full_message("out.stl", 0, 3 << 20)  # a size not known in advance
    'disk full writing out.stl (3.0 MB free)'
    """
    if needed < _MB / 20:  # not known in advance (or only what was written before the disk filled): not shown
        return f"disk full writing {path} ({_mb(free)} MB free)"
    return f"disk full writing {path} ({_mb(needed)} MB needed, {_mb(free)} MB free)"


def free_bytes(folder: PathLike) -> int:
    """Bytes an unprivileged user can still write in ``folder``'s file system (0 if unknown).

    Examples
    --------
    >>> free_bytes(".") >= 0
    True
    """
    try:
        return int(shutil.disk_usage(folder).free)
    except OSError:
        return 0


def _parent(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def check_output_path(path: PathLike, name: Optional[str] = None) -> Path:
    """Return ``path`` as a Path after checking that its folder exists and is writable.

    Parameters
    ----------
    path : path
        The output file.
    name : str, optional
        How the caller names this output (a CLI option, a request field); it
        follows the file name in the message.

    Raises
    ------
    ScribbleSegError
        If the folder does not exist, is not a folder, or cannot be written,
        or if ``path`` is an existing folder or an existing read-only file.

    Examples
    --------
    >>> check_output_path("result.nrrd").name
    'result.nrrd'
    """
    path = Path(path)
    label = f"{path} ({name})" if name else str(path)
    if not str(path) or path.name in ("", ".", ".."):
        raise ScribbleSegError(f"{label}: expected a file name")
    path = output_target(path)
    if len(path.name.encode()) > NAME_MAX_BYTES:
        raise ScribbleSegError(f"{label}: the file name is too long ({len(path.name.encode())} bytes; "
                               f"at most {NAME_MAX_BYTES})")
    parent = _parent(path)
    if not _is_dir(parent):
        # A file where the folder should be was called missing, which sent the user looking for the wrong thing.
        what = "is a file, not a folder" if _is_file(parent) else "does not exist"
        raise ScribbleSegError(f"{label}: the output folder {parent} {what}")
    if path.is_dir():
        raise ScribbleSegError(f"{label}: is a folder, expected a file name")
    if _is_special(path):
        # The atomic rename would put a regular file in its place: /dev/null (as root) or a named pipe replaced.
        raise ScribbleSegError(f"{label}: is a device, a named pipe or a socket, not a file to write; "
                               "choose an output file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ScribbleSegError(f"{label}: the output folder {parent} is not writable")
    if _write_protected(path):
        # The atomic rename would replace it regardless of its mode, as `mv` does; a file someone made read-only
        # is one they meant to keep.
        raise ScribbleSegError(f"{label}: exists and is read-only; make it writable or choose another output file")
    return path


def output_target(path: PathLike) -> Path:
    """The file an output named ``path`` is written to: the file a symbolic link names, else ``path``.

    Written through the link, as the shell's ``>`` writes: the atomic rename onto the link itself replaced it
    with a file and left the file it named as it was, while the run said it had replaced it.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "current.model").symlink_to(folder / "v1.model")
    >>> output_target(folder / "current.model") == (folder / "v1.model").resolve()
    True
    """
    path = Path(path)
    try:
        return Path(os.path.realpath(path)) if path.is_symlink() else path
    except OSError:  # a loop of links: the checks after say what is wrong
        return path


def _is_special(path: Path) -> bool:
    """Whether ``path`` exists as something other than a regular file or a folder (a device, a pipe, a socket)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long, a folder we may not enter: not a folder we can write into
        return False


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _write_protected(path: Path) -> bool:
    """Whether ``path`` is an existing file its owner made read-only (no write bit, or not writable for us)."""
    try:
        mode = path.stat().st_mode
    except OSError:  # missing (the usual case) or unreadable: the write itself will tell
        return False
    return not stat.S_IMODE(mode) & 0o222 or not os.access(path, os.W_OK)


# ---------------------------------------------------------------------------
# Temporary names and the sweep of what a killed run left
# ---------------------------------------------------------------------------


def temp_path(path: PathLike) -> Path:
    """A fresh, recognisable temporary name beside ``path`` that keeps its suffixes, in lower case.

    Writers that pick a format by extension (``.seg.nrrd``, ``.nii.gz``) still
    work on it; the machine and process id in the name let a later run tell a live
    run's temporary from one a killed run left.  ITK's writers know their extensions in
    lower case only: ``out.MHA`` made a header and a separate data file, ``out.NII`` failed.

    Examples
    --------
    >>> temp_path("/data/out.seg.nrrd").name.endswith(".seg.nrrd")
    True
    >>> temp_path("/data/OUT.NII.GZ").name.endswith(".nii.gz")
    True
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffixes else ""
    tail = f"{TEMP_TAG}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{suffix}"
    # A valid output name can be too long once tagged: shorten the copy of the name, never the tag or suffix.
    room = NAME_MAX_BYTES - len(f".{tail}".encode())
    head = path.name.encode()[:max(room, 1)].decode(errors="ignore")
    return _parent(path) / f".{head}{tail}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        ctypes.windll.kernel32.CloseHandle(handle)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a ScribbleSeg temporary (see :func:`temp_path`).

    Examples
    --------
    >>> is_temp_name(".out.nrrd.scribbleseg-tmp-42-0a1b2c3d.nrrd"), is_temp_name("out.nrrd")
    (True, False)
    """
    return _TEMP_RE.match(name) is not None


def _stale(match: "re.Match[str]", entry: os.DirEntry) -> bool:
    if match.group("host") in (None, _HOST):
        return not _pid_alive(int(match.group("pid")))
    try:  # another machine's: its process cannot be asked, so age decides
        return time.time() - entry.stat(follow_symlinks=False).st_mtime > FOREIGN_TEMP_AGE_SECONDS
    except OSError:
        return False


def sweep_stale_temps(folder: PathLike) -> List[Path]:
    """Remove the temporaries in ``folder`` a killed run left; return what was removed.

    Only names made by :func:`temp_path` are touched, never other files.  A
    temporary made on this machine goes when its process no longer runs; one
    another machine made (a shared folder) when it is
    :data:`FOREIGN_TEMP_AGE_SECONDS` old.  A folder that cannot be listed is
    left alone.

    Examples
    --------
    >>> import tempfile
    >>> sweep_stale_temps(tempfile.mkdtemp())
    []
    """
    removed: List[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if match is None or not _stale(match, entry):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


# ---------------------------------------------------------------------------
# Disk space
# ---------------------------------------------------------------------------


def _looks_full(folder: Path) -> bool:
    # A folder gone has no free space either, and is not a full disk: the callers say what it is.
    return Path(folder).is_dir() and free_bytes(folder) < FULL_MARGIN_BYTES


def _is_disk_full_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS


def check_free_space(needs: Mapping[PathLike, int]) -> None:
    """Refuse before any work when the outputs will not fit on their disks.

    Parameters
    ----------
    needs : mapping of path to bytes
        Each output file and the bytes it needs at most.  Outputs on the same
        file system are added up.

    Raises
    ------
    DiskFullError
        ``"disk full writing X (N MB needed, M MB free)"`` for the first file
        system that is short; N includes :data:`FULL_MARGIN_BYTES`, kept free for others.

    Examples
    --------
    >>> check_free_space({"small.txt": 10})
    """
    groups: Dict[object, Tuple[List[Path], int, Path]] = {}
    for path, nbytes in needs.items():
        path = Path(path)
        parent = _parent(path)
        try:
            device: object = os.stat(parent).st_dev
        except OSError:
            device = str(parent)
        paths, total, _ = groups.get(device, ([], 0, parent))
        groups[device] = (paths + [path], total + max(0, int(nbytes)), parent)
    for paths, total, parent in groups.values():
        if not parent.is_dir():  # gone (or never there), not full: the write says which
            continue
        free = free_bytes(parent)
        # Keep the margin free as well: a disk filled to the last byte breaks other programs.
        if total and free < total + FULL_MARGIN_BYTES:
            raise DiskFullError(disk_full_message(", ".join(str(p) for p in paths), total + FULL_MARGIN_BYTES,
                                                  free))


# ---------------------------------------------------------------------------
# One output file
# ---------------------------------------------------------------------------

_staged_lock = threading.Lock()
_staged: Dict[Path, Path] = {}  # temp path of an OutputSet -> its target


def fsync_file(path: PathLike) -> None:
    """Flush a written file's data to its disk; a full disk raises (its ``OSError``), other failures do not.

    Delayed-allocation and network file systems report a full disk only when data is flushed, and a crash
    soon after a rename can otherwise leave the renamed file's blocks unwritten (zeros).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> file = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
    >>> _ = file.write_bytes(b"abc")
    >>> fsync_file(file)
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if _is_disk_full_error(exc):
            raise
    finally:
        os.close(fd)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _finish_write(tmp: Path, shown: PathLike, expected_bytes: Optional[int]) -> None:
    """Raise if the file just written is incomplete because its disk filled up or its folder went away."""
    if not _parent(tmp).is_dir():
        raise ScribbleSegError(f"{shown}: the output folder {_parent(Path(shown))} no longer exists")
    fsync_file(tmp)
    size = _size(tmp)
    if _looks_full(_parent(tmp)):
        # The writer said nothing, but the disk is (nearly) full after it: writers that cut a file short
        # without a word look just like this, so the file is not trusted.  What it needs counts the margin
        # kept free, as check_free_space counts it: a file that fitted but left less than that is not "0.7 MB
        # needed, 1.6 MB free".
        needed = max(int(expected_bytes or 0), size) + FULL_MARGIN_BYTES
        raise DiskFullError(disk_full_message(shown, needed, free_bytes(_parent(tmp)) + size))
    if size == 0:
        raise ScribbleSegError(f"{shown}: the writer produced an empty file")


def _translate_failure(exc: BaseException, tmp: Path, shown: PathLike,
                       expected_bytes: Optional[int]) -> Optional[BaseException]:
    """The one-line error to raise instead of ``exc`` when writing ``shown`` failed (None: keep ``exc``).

    A vanished output folder, a full disk, or any other error of the file system (read-only,
    an I/O error, no permission) is said in the target's name; an error of the writer itself is kept.
    """
    if not isinstance(exc, Exception) or isinstance(exc, DiskFullError):
        return None  # KeyboardInterrupt, SystemExit: not a write failure; a full disk already said so
    folder = _parent(Path(shown))
    if not folder.is_dir():  # a removed folder has no free space either: say what really happened
        return ScribbleSegError(f"{shown}: the output folder {folder} no longer exists")
    if _is_disk_full_error(exc) or _looks_full(_parent(tmp)):
        size = _size(tmp)
        needed = max(int(expected_bytes or 0), size)
        free = free_bytes(_parent(tmp)) + size  # what is free once the temporary is gone
        return DiskFullError(disk_full_message(shown, needed, free))
    if isinstance(exc, OSError) and exc.errno is not None:
        return ScribbleSegError(f"{shown}: cannot write ({exc.strerror or os.strerror(exc.errno)})")
    return None


def _remove(path: Path) -> None:
    # Cleanup after a failure must not hide it: a folder gone read-only or removed keeps what it keeps.
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


@contextlib.contextmanager
def atomic_output(path: PathLike, expected_bytes: Optional[int] = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    If the body raises, the temporary file is removed and ``path`` is left as it
    was, so no half-written output is ever seen.  The temporary name keeps the
    final suffixes (``.seg.nrrd``, ``.nii.gz``) so that writers choosing a
    format by extension still work.

    A full disk -- an ``ENOSPC`` error, or any failure, empty or silently
    truncated file that leaves less than :data:`FULL_MARGIN_BYTES` free --
    raises :class:`DiskFullError` with one line.  Inside an
    :class:`OutputSet`, ``path`` may be one of its staged temporaries: it is
    then written in place and renamed with the rest of the set.

    Parameters
    ----------
    path : path
        The output file.
    expected_bytes : int, optional
        The most the file can take (e.g. its uncompressed size): checked
        against the free space before writing, and reported if the disk fills.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
    >>> with atomic_output(target, expected_bytes=3) as tmp:
    ...     _ = tmp.write_bytes(b"abc")
    >>> target.read_bytes()
    b'abc'
    """
    path = Path(path)
    with _staged_lock:
        staged_target = _staged.get(path)
    if staged_target is not None:
        # The OutputSet owns the temporary: write it in place, report failures under the target's name.
        try:
            yield path
            _finish_write(path, staged_target, expected_bytes)
        except BaseException as exc:
            replacement = _translate_failure(exc, path, staged_target, expected_bytes)
            if replacement is not None:
                raise replacement from None
            raise
        return

    path = check_output_path(path)
    if expected_bytes:
        check_free_space({path: expected_bytes})
    tmp = temp_path(path)
    try:
        # Created empty with the permissions a plain open() gives (mkstemp would make it 0600).
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        if _is_disk_full_error(exc):
            raise DiskFullError(disk_full_message(path, expected_bytes or 0, free_bytes(_parent(path)))) from None
        raise ScribbleSegError(f"{path}: cannot create a file in {_parent(path)} ({exc.strerror})") from None
    try:
        yield tmp
        _finish_write(tmp, path, expected_bytes)
        os.replace(tmp, path)
    except BaseException as exc:
        replacement = _translate_failure(exc, tmp, path, expected_bytes)
        _remove(tmp)
        if replacement is not None:
            raise replacement from None
        raise


def unreadable_reason(exc: BaseException) -> str:
    """Why a stored array file did not load, in one line: numpy's message where it says what happened, ours where it
    would mislead (a file that is no NumPy file is "not a NumPy file", where numpy says to load it unsafely).

    Examples
    --------
    >>> unreadable_reason(ValueError("This file contains pickled (object) data. If you trust the file you can ..."))
    'not a NumPy file'
    >>> unreadable_reason(EOFError())
    'EOFError'
    """
    text = str(exc)
    if "allow_pickle" in text or "pickled" in text:
        return "not a NumPy file"
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def native_stderr_held(keep: bool = True) -> Iterator[None]:
    """Hold back what native code prints on fd 2 and pass it on only if the body succeeds (never, with ``keep``
    False: an image reader's complaints about a file it reads, which it reads anyway or we report in one line).

    Native writers complain on stderr as they fail (NIfTI's ``** ERROR: NWAD: wrote only ...``, libpng's
    ``libpng error: Write Error`` on a full disk); a failure is reported in one line of our own, so theirs
    would be a stray second line.  Use it outside :func:`atomic_output`, so that a failure that function
    finds (a truncated file) also drops the complaint.

    Examples
    --------
    >>> with native_stderr_held():
    ...     pass
    """
    with _STDERR_HELD:  # one thread at a time: two redirections interleaved would leave fd 2 on a closed file
        try:
            sys.stderr.flush()
            saved = os.dup(2)
            capture = tempfile.TemporaryFile()
        except (OSError, ValueError):
            yield
            return
        yield from _held(saved, capture, keep)


#: Serialises :func:`native_stderr_held` between threads (re-entrant: a held body may hold again).
_STDERR_HELD = threading.RLock()


def _held(saved: int, capture, keep: bool) -> Iterator[None]:
    """The body of :func:`native_stderr_held`: fd 2 on ``capture`` while it runs, then back on ``saved``."""
    try:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
        capture.seek(0)
        held = capture.read()
        if held and keep:
            os.write(2, held)
    finally:
        os.close(saved)
        capture.close()


# ---------------------------------------------------------------------------
# Several outputs of one job
# ---------------------------------------------------------------------------


def _same_file(a: Path, b: Path) -> bool:
    """Same resolved path (case-insensitively where the OS is), or the same existing file (inode)."""
    try:
        if os.path.normcase(str(a.resolve())) == os.path.normcase(str(b.resolve())):
            return True
    except OSError:
        pass
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def lies_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it, links resolved.

    Examples
    --------
    >>> lies_inside(Path("/data/stack/cache"), Path("/data/stack")), lies_inside(Path("/data"), Path("/data/stack"))
    (True, False)
    """
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError):
        return False


def mixed_case_nifti(name: str) -> Optional[str]:
    """The NIfTI extension (``.nii`` or ``.nii.gz``) of a file name that writes it in mixed case, which the NIfTI
    library refuses to read; None for any other name (lower or upper case, or not NIfTI).

    Examples
    --------
    >>> mixed_case_nifti("a.nii.GZ"), mixed_case_nifti("a.NII.GZ"), mixed_case_nifti("a.nii")
    ('.nii.gz', None, None)
    """
    nifti = next((x for x in (".nii.gz", ".nii") if name.lower().endswith(x)), None)
    return nifti if nifti is not None and name[-len(nifti):] not in (nifti, nifti.upper()) else None


def check_outputs(outputs: Mapping[str, Optional[PathLike]],
                  inputs: Mapping[str, Optional[PathLike]] = {},
                  suffixes: Mapping[str, Sequence[str]] = {},
                  needs: Mapping[str, int] = {}) -> Dict[str, Path]:
    """Check every output of a job before any computation.

    Parameters
    ----------
    outputs : mapping of name to path or None
        The outputs, keyed by how the caller names them (``--out``,
        ``outputs.labels``); None entries are skipped.
    inputs : mapping of name to path or None
        The job's inputs (files or folders of sections); no output may be one
        of them or lie inside an input folder.
    suffixes : mapping of name to suffixes
        Accepted endings per output (case-insensitive); missing: any.
    needs : mapping of name to bytes
        Expected size of each output, checked against the free space.

    Returns
    -------
    dict
        Name -> Path of every output given.

    Raises
    ------
    ScribbleSegError
        One line naming the file and the problem: a wrong extension, a missing
        or read-only folder, a folder where a file is expected, an output that
        is an input or another output (same path or same file), or too little
        free space (:class:`DiskFullError`).

    Examples
    --------
    >>> check_outputs({"--out": "a.nrrd"}, {"--image": "b.nrrd"})
    {'--out': PosixPath('a.nrrd')}
    """
    checked: Dict[str, Path] = {}
    for name, value in outputs.items():
        if value is None or value == "":
            continue
        path = Path(value)
        if str(value).endswith(("/", os.sep)):  # Path drops the slash, and the file would be written anyway
            raise ScribbleSegError(f"{value} ({name}): ends in a slash, as a folder does; give a file name")
        if path.name != path.name.strip():  # unseen in a message, it was told its extension was wrong
            raise ScribbleSegError(f"{str(value)!r} ({name}): the file name starts or ends with a space; remove it")
        # The gravest mistake first: an output that would replace an input.
        for input_name, input_value in inputs.items():
            if input_value is None or input_value == "":
                continue
            source = Path(input_value)
            if _same_file(path, source):
                raise ScribbleSegError(f"{path} ({name}): is the input {input_name}; "
                                       "choose another output file, inputs are never overwritten")
            if source.is_dir() and lies_inside(path, source):
                raise ScribbleSegError(f"{path} ({name}): lies inside the input folder {source} ({input_name}); "
                                       "write outputs elsewhere, inputs are never modified")
        for other_name, other in checked.items():
            if _same_file(path, other):
                raise ScribbleSegError(f"{path}: is given for both {other_name} and {name}; "
                                       "each output needs its own file")
        allowed = tuple(s.lower() for s in suffixes.get(name, ()))
        if allowed and not path.name.lower().endswith(allowed):
            raise ScribbleSegError(f"{path} ({name}): expected a file name ending in {' or '.join(allowed)}")
        nifti = mixed_case_nifti(path.name)
        if allowed and nifti in allowed:
            # The NIfTI library refuses such a name when the file is read (ITK, and so 3D Slicer).
            raise ScribbleSegError(f"{path} ({name}): NIfTI readers refuse an extension in mixed case; use {nifti}")
        if allowed and path.name.lower() in allowed:
            # ".nrrd" alone is a hidden file without an extension to the writers: it failed after the whole run.
            raise ScribbleSegError(f"{path} ({name}): the file name has nothing before its extension {path.name}; "
                                   f"give it a name, e.g. result{path.name}")
        if allowed and path.name.lower().endswith(".seg.nrrd") and ".seg.nrrd" not in allowed:
            # It ends in .nrrd, but Slicer and slicerio would take a plain volume of that name for a segmentation.
            raise ScribbleSegError(f"{path} ({name}): .seg.nrrd names a segmentation; this output is a volume "
                                   f"({' or '.join(s for s in allowed if s != '.seg.nrrd')})")
        check_output_path(path, name)
        checked[name] = path
    for path in checked.values():
        sweep_stale_temps(_parent(path))
    check_free_space({checked[name]: nbytes for name, nbytes in needs.items() if name in checked})
    return checked


class OutputSet:
    """Stage several outputs as temporaries and rename them onto their targets together.

    Use as a context manager: on leaving normally nothing happens until
    :meth:`commit`; on any exception (a full disk, a cancel, SIGINT or
    SIGTERM through :func:`signals_raise`) every temporary is removed and no
    target is touched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with OutputSet({"a": folder / "a.txt", "b": folder / "b.txt"}) as outputs:
    ...     _ = outputs.path("a").write_text("1")
    ...     _ = outputs.path("b").write_text("2")
    ...     written = outputs.commit()
    >>> sorted(p.name for p in folder.iterdir())
    ['a.txt', 'b.txt']
    """

    def __init__(self, targets: Mapping[str, PathLike]) -> None:
        self.targets: Dict[str, Path] = {k: output_target(v) for k, v in targets.items()}
        self._temps: Dict[str, Path] = {}
        self.committed = False

    def path(self, key: str) -> Path:
        """The temporary to write for output ``key`` (writers given it write in place).

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder, OutputSet({"seg": Path(folder, "heart.seg.nrrd")}) as out:
        ...     tmp = out.path("seg")
        ...     tmp.parent == Path(folder), is_temp_name(tmp.name), tmp.name.endswith(".seg.nrrd")
        (True, True, True)
        """
        if key not in self._temps:
            target = self.targets[key]
            tmp = temp_path(target)
            self._temps[key] = tmp
            with _staged_lock:
                _staged[tmp] = target
        return self._temps[key]

    @contextlib.contextmanager
    def writing(self, key: str) -> Iterator[Path]:
        """Like :meth:`path`, with the temporary's name replaced by the target's in any error message.

        Examples
        --------
        >>> with OutputSet({"seg": "heart.seg.nrrd"}) as out, out.writing("seg") as tmp:
        ...     raise ScribbleSegError(f"{tmp}: cannot write")
        Traceback (most recent call last):
        ...
        ScribbleSegLib.errors.ScribbleSegError: heart.seg.nrrd: cannot write
        """
        tmp = self.path(key)
        try:
            yield tmp
        except ScribbleSegError as exc:
            message = str(exc).replace(str(tmp), str(self.targets[key]))
            if message != str(exc):
                raise type(exc)(message) from None
            raise

    def commit(self) -> List[Path]:
        """Rename every written temporary onto its target; return the targets.

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder, OutputSet({"a": Path(folder, "a.txt"),
        ...                                                          "b": Path(folder, "b.txt")}) as out:
        ...     _ = out.path("a").write_text("1")
        ...     out.commit()  # "b" was never written: nothing is renamed
        Traceback (most recent call last):
        ...
        RuntimeError: outputs never written: ['b']
        """
        missing = [k for k in self.targets if k not in self._temps or not self._temps[k].exists()]
        if missing:
            raise RuntimeError(f"outputs never written: {missing}")
        # Ctrl-C or SIGTERM between two renames would leave new files beside old ones: held until the set is in.
        with signals_held():
            for key, tmp in self._temps.items():
                try:
                    os.replace(tmp, self.targets[key])
                except OSError as exc:
                    raise _translate_failure(exc, tmp, self.targets[key], None) or exc from None
            self.committed = True
        self._forget()
        return list(self.targets.values())

    def discard(self) -> None:
        """Remove every temporary.

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     out = OutputSet({"a": Path(folder, "a.txt")})
        ...     _ = out.path("a").write_text("1")
        ...     out.discard()
        ...     os.listdir(folder)  # neither the temporary nor the target
        []
        """
        for tmp in self._temps.values():
            _remove(tmp)
        self._forget()

    def _forget(self) -> None:
        with _staged_lock:
            for tmp in self._temps.values():
                _staged.pop(tmp, None)

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            self.discard()


# ---------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def signals_raise(signals: Sequence[str] = ("SIGTERM", "SIGHUP")) -> Iterator[None]:
    """Turn SIGTERM (and SIGHUP) into :class:`~ScribbleSegLib.errors.Interrupted` in the body.

    Python raises ``KeyboardInterrupt`` for SIGINT by itself; SIGTERM would
    end the process at once and leave temporaries behind.  Raising instead
    lets every ``finally`` and ``except`` remove them.  Outside the main
    thread (where handlers cannot be set) the body runs unchanged.

    Examples
    --------
    >>> with signals_raise():
    ...     pass
    """
    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        raise Interrupted(signum)

    with _signal_handlers(signals, handler):
        yield


@contextlib.contextmanager
def signals_held(signals: Sequence[str] = ("SIGINT", "SIGTERM", "SIGHUP")) -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP until the body is done, then deliver the first that came.

    For imports of compiled modules that must not be cut short: a
    ``KeyboardInterrupt`` raised while VTK initialises a module leaves it half
    made, and the process can crash on it later (a segmentation fault, with
    temporaries left behind).  Held, the signal reaches the handler that was in
    place (``KeyboardInterrupt``, :class:`~ScribbleSegLib.errors.Interrupted`)
    once the import is whole.  Outside the main thread the body runs unchanged.

    Examples
    --------
    >>> with signals_held():
    ...     import json
    """
    received: List[int] = []

    def hold(signum, frame):  # noqa: ARG001 - the signal module's signature
        received.append(signum)

    try:
        with _signal_handlers(signals, hold):
            yield
    finally:
        if received:  # the handlers in place again: the first signal reaches its own
            signal.raise_signal(received[0])


@contextlib.contextmanager
def _signal_handlers(signals: Sequence[str], handler) -> Iterator[None]:
    """``handler`` for the named signals during the body, the previous handlers after it.

    Only the main thread can set handlers; elsewhere the body runs with the handlers as they are.  A signal
    ignored when the body starts stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for name in signals:
        number = getattr(signal, name, None)
        if number is None or signal.getsignal(number) == signal.SIG_IGN:
            # Ignored as the program was started (`nohup` ignores SIGHUP): it stays ignored, or closing the
            # terminal stopped the run that nohup was asked to keep going.
            continue
        with contextlib.suppress(ValueError, OSError):
            previous[number] = signal.signal(number, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(number, old)
