"""Files written all-or-nothing, and checks made before any compute that an output may and
can be written.

Every file nst_jax writes (images, weights, checkpoints, logs) goes through :func:`atomic_file`:
a temporary file in the target folder, flushed, fsynced and renamed into place, so a failed or
interrupted write never leaves a partial file and never replaces an existing one half-way.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ._errors import ImageError

#: Temporary files (and folders) of writes in progress: a forced exit (a second Ctrl-C) removes
#: them, so no partial file stays.
PENDING: set[str] = set()
#: Helper processes (``subprocess.Popen``) working for the current step, e.g. pip downloading a
#: wheel: the CLI's signal handling stops them, so an interrupt does not wait for them to finish.
CHILDREN: set = set()


def check_output(path: str | os.PathLike, *, overwrite: bool,
                 error: type[Exception] = ImageError,
                 sources: Sequence[str | os.PathLike] = (), what: str = "file") -> Path:
    """Fail early, before any compute, if ``path`` must not or cannot be written.

    Refused, in this order: ``path`` is one of ``sources`` (the same path or the same file
    under another name; refused even with ``overwrite``, since an input is never replaced);
    a folder; an existing file while ``overwrite`` is false; a missing folder; a folder in
    which a temporary file cannot be created (a real probe: ``os.access`` says yes to root
    on a read-only folder). Nothing is left behind.

    Args:
        path: the file to write.
        overwrite: whether an existing ``path`` may be replaced.
        error: the exception class raised.
        sources: the run's input files.
        what: what ``path`` holds, for the messages ("image", "checkpoint", ...).

    Raises:
        ``error`` ("PATH: <reason>").
    """
    path = Path(path)
    for source in sources:
        if same_file(path, Path(source)):
            raise error(f"{path}: the output would overwrite the input {source}")
    if path.is_dir():
        raise error(f"{path}: is a folder; expected a file name for the {what}")
    if path.exists() and not overwrite:
        raise error(f"{path}: already exists; pass --overwrite to replace it")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise error(f"{path}: folder {folder} does not exist")
    check_folder_writable(folder, error=error, name=path)
    return path


def check_folder_writable(folder: str | os.PathLike, *, error: type[Exception] = ImageError,
                          name: str | os.PathLike | None = None) -> None:
    """Raise ``error`` ("NAME: folder FOLDER is not writable (reason)"; NAME defaults to the
    folder) unless a file can be created in the existing ``folder``. A real probe, a temporary
    file removed at once: ``os.access`` says yes to root on a read-only folder."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".nst-jax-probe-"):
            pass
    except OSError as err:
        raise error(f"{name or folder}: folder {folder} is not writable ({err.strerror})") \
            from None


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same file: equal resolved paths (``a`` may not exist
    yet), or one existing file under two names (a hard link, a bind mount, ...)."""
    a, b = Path(a), Path(b)
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, error: type[Exception] = OSError, what: str = "file"):
    """Write ``path`` all-or-nothing: yields a binary handle on a temporary file in the same
    folder, which is flushed, fsynced and renamed over ``path`` (:func:`publish`) when the block
    ends normally, and removed on any exception (KeyboardInterrupt included). A reader, or a run
    killed mid-write, only ever sees the complete old or the complete new file.

    Raises:
        ``error`` ("PATH: cannot write <what> (...)") for an OSError while writing.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise error(f"{path}: cannot write {what} ({err})") from None
    PENDING.add(tmp)
    try:
        with os.fdopen(fd, "w+b") as handle:  # readable too: h5py writes through it
            yield handle
            handle.flush()
            # Durable before the rename: after a crash the name points at complete data.
            os.fsync(handle.fileno())
        publish(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, error):
            raise error(f"{path}: cannot write {what} ({err})") from None
        raise
    finally:
        PENDING.discard(tmp)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Atomically move a finished temporary file to ``path`` with the usual umask permissions
    (``mkstemp`` creates files readable by their owner only)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, path)


def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    """Hex digest (``"md5"``, ``"sha256"``, ...) of a file, read in chunks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()
