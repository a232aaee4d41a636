"""Where weights files live: the user cache, ``./weights/``, ``$NST_JAX_WEIGHTS``."""

from __future__ import annotations

import os
from pathlib import Path

from .._errors import WeightsError

#: The exact Keras release's file name.
FILENAME = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
#: The file written from the 8-bit quantized copy (``nst-jax weights download``).
QUANTIZED_FILENAME = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q8.h5"
#: Explicit weights file for ``auto``; checked before ``./weights/`` and the user cache.
ENV_VAR = "NST_JAX_WEIGHTS"
#: Set to 1 to forbid downloads (``auto`` then uses cached files or falls back to random).
OFFLINE_VAR = "NST_JAX_OFFLINE"


def cache_dir() -> Path:
    """Per-user folder for downloaded weights: ``$XDG_CACHE_HOME/nst_jax`` or ``~/.cache/nst_jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nst_jax"


def weights_target(kind: str, dest: str | os.PathLike | None = None) -> Path:
    """The file a download of ``kind`` (``"exact"`` or ``"quantized"``) writes: ``dest`` itself
    when it names a file, that kind's usual name inside ``dest`` when it is a folder (an
    existing one, or a name without a suffix), else in the user cache."""
    name = FILENAME if kind == "exact" else QUANTIZED_FILENAME
    if dest is None:
        return cache_dir() / name
    dest = Path(dest)
    return dest / name if dest.is_dir() or dest.suffix == "" else dest


def local_weights_file() -> Path | None:
    """The first existing file of: ``$NST_JAX_WEIGHTS``; the exact file in ``./weights/`` or
    the user cache; the quantized file there."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        if not Path(explicit).is_file():
            raise WeightsError(f"${ENV_VAR} points to {explicit}, which is not a file")
        return Path(explicit)
    for name in (FILENAME, QUANTIZED_FILENAME):
        for folder in (Path("weights"), cache_dir()):
            if (folder / name).is_file():
                return folder / name
    return None
