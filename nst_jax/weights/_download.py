"""The exact Keras VGG-19 file: download from its URLs, with size and MD5 checks, atomically.

The canonical file is Keras' ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``
(80,134,624 bytes, MD5 253f8cb515780f3b799900260a226db6, the URL Keras itself uses, then a
mirror): the original Simonyan & Zisserman (Caffe) weights, CC BY 4.0, Visual Geometry Group.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .._errors import WeightsError
from .._files import atomic_file, check_folder_writable
from ._paths import ENV_VAR, FILENAME, weights_target

#: Where Keras itself downloads the file (keras/src/applications/vgg19.py), then a mirror.
URLS = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/" + FILENAME,
    "https://github.com/fchollet/deep-learning-models/releases/download/v0.1/" + FILENAME,
)
SIZE = 80_134_624
MD5 = "253f8cb515780f3b799900260a226db6"


def download_weights(
    dest: str | os.PathLike | None = None,
    *,
    urls: tuple[str, ...] = URLS,
    size: int = SIZE,
    md5: str = MD5,
    progress: Callable[[int, int], None] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download the canonical VGG-19 weights, check size and MD5, write atomically.

    Each URL is tried in turn. Bytes go to a temporary file next to the destination, which is
    renamed into place only after the size and checksum match, so an interrupted or corrupted
    download never leaves a file that looks valid.

    Args:
        dest: target file or folder (default: the user cache folder); a file there is
            replaced once the new one is verified (:func:`download_pretrained` refuses to).
        urls: sources, tried in order.
        size, md5: what the file must be.
        progress: called as ``progress(bytes_done, bytes_total)`` as bytes arrive; an exception
            it raises (e.g. the CLI's interrupt) ends the download, leaves no file and is
            passed on.
        timeout: seconds of silence before a connection is given up.

    Returns:
        Path of the verified file.

    Raises:
        WeightsError: every source failed; the message lists why each did.
    """
    dest = weights_target("exact", dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WeightsError(f"{dest}: cannot create folder {dest.parent} ({err})") from None
    # Once, before any URL: a read-only folder is a local cause, not each URL's failure.
    check_folder_writable(dest.parent, error=WeightsError, name=dest)
    failures = []
    for url in urls:
        try:
            _fetch(url, dest, size=size, md5=md5, progress=progress, timeout=timeout)
            return dest
        except (OSError, ValueError, http.client.HTTPException) as err:
            failures.append(f"{url}: {err}")
    raise WeightsError(
        "could not download the VGG-19 weights:\n  " + "\n  ".join(failures)
        + f"\nDownload {FILENAME} by hand and pass --weights PATH or set ${ENV_VAR}."
    )


def _fetch(url, dest: Path, *, size, md5, progress, timeout) -> None:
    digest = hashlib.md5()
    done = 0
    # atomic_file: a temporary file renamed over dest only once every check below has passed,
    # removed on any error or interrupt (and by a forced exit: it is registered in PENDING).
    with atomic_file(dest) as out, urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or size)
        if total != size:
            raise ValueError(f"server announces {total} bytes, expected {size}")
        # read1: whatever has arrived (up to 64 KiB), so ``progress`` runs often even from a
        # slow server; an exception it raises (an interrupt) stops the download there.
        while block := response.read1(1 << 16):
            out.write(block)
            digest.update(block)
            done += len(block)
            if done > size:
                raise ValueError(f"more than the expected {size} bytes")
            if progress is not None:
                progress(done, size)
        if done != size:
            raise ValueError(f"connection ended after {done} of {size} bytes")
        if digest.hexdigest() != md5:
            raise ValueError(f"MD5 {digest.hexdigest()} does not match {md5}")
