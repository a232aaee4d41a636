"""Pretrained VGG-19 weights: strict HDF5 loading, download, verification, weight sources.

File layout read here (the legacy Keras weights layout, DESIGN.md): a root attribute
``layer_names`` lists every layer in order; each layer's group has an attribute ``weight_names``
listing its datasets in order (kernel, then bias). Dataset names differ between writers
(``block1_conv1_W_1:0`` in the canonical file, ``block1_conv1/kernel`` from Keras 3), so they are
only ever looked up through ``weight_names``. Kernels are HWIO ``(3, 3, C_in, C_out)``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from ._errors import WeightsError
from ._image import atomic_file, publish
from ._vgg import CAFFE, KERAS_LAYERS, Preprocessing, param_shapes, random_vgg19_params

FILENAME = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
#: Where Keras itself downloads the file (keras/src/applications/vgg19.py), then a mirror.
URLS = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/" + FILENAME,
    "https://github.com/fchollet/deep-learning-models/releases/download/v0.1/" + FILENAME,
)
SIZE = 80_134_624
MD5 = "253f8cb515780f3b799900260a226db6"
#: Explicit weights file for ``auto``; checked before ``./weights/`` and the user cache.
ENV_VAR = "NST_JAX_WEIGHTS"
#: Set to 1 to forbid downloads (``auto`` then falls back to random weights at once).
OFFLINE_VAR = "NST_JAX_OFFLINE"
#: Root attributes of files this project writes that record the input convention; a file
#: without them (the Keras release) expects :data:`~nst_jax._vgg.CAFFE`.
PREPROCESSING_ATTRS = ("channel_order", "input_scale", "mean", "std")
# Layers of the full ("top") VGG-19 file that the conv feature extractor does not use.
_CLASSIFIER_LAYERS = {"flatten", "fc1", "fc2", "predictions"}


def _decode(names: Any) -> list[str]:
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in np.atleast_1d(names)]


def load_vgg19_params(path: str | os.PathLike) -> dict[str, Any]:
    """Load VGG-19 conv weights from a Keras-layout HDF5 file, strictly.

    Both dataset naming styles are accepted (read through each group's ``weight_names``), as is
    a whole saved model (weights under ``model_weights``) and a file with the classifier layers.

    Args:
        path: HDF5 file, e.g. ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``.

    Returns:
        ``{"params": {"block1_conv1": {"kernel": (3,3,3,64), "bias": (64,)}, ...}}``, float32
        ``jax.Array`` leaves, ready for ``VGG19().apply``.

    Raises:
        WeightsError: naming the file and what is wrong: missing, not HDF5, truncated, missing
            layers, layers the model does not have, wrong shapes, non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    if not h5py.is_hdf5(path):
        raise WeightsError(f"{path}: not an HDF5 file (expected the Keras VGG-19 weights {FILENAME})")
    try:
        with h5py.File(path, "r") as handle:
            arrays = _read_layers(path, handle)
    except WeightsError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
        raise WeightsError(f"{path}: damaged or truncated HDF5 file ({err})") from None
    return {"params": jax.tree.map(jnp.asarray, arrays)}


def _weights_root(handle: h5py.File):
    if "layer_names" not in handle.attrs and "model_weights" in handle:
        return handle["model_weights"]
    return handle


def load_preprocessing(path: str | os.PathLike) -> Preprocessing:
    """The input convention a weights file expects, from its root attributes
    (``channel_order``, ``input_scale``, ``mean``, ``std``); :data:`CAFFE` when it has none,
    as the Keras release. Raises :class:`WeightsError` for a partial or invalid record."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            attrs = dict(handle.attrs)
    except (OSError, ValueError) as err:
        raise WeightsError(f"{path}: cannot read HDF5 attributes ({err})") from None
    present = [name for name in PREPROCESSING_ATTRS if name in attrs]
    if not present:
        return CAFFE
    if len(present) != len(PREPROCESSING_ATTRS):
        missing = sorted(set(PREPROCESSING_ATTRS) - set(present))
        raise WeightsError(f"{path}: preprocessing attributes incomplete (missing {missing})")
    try:
        return Preprocessing(
            channel_order=_decode(attrs["channel_order"])[0],
            input_scale=float(np.asarray(attrs["input_scale"])),
            mean=tuple(float(v) for v in np.asarray(attrs["mean"], np.float64).ravel()),
            std=tuple(float(v) for v in np.asarray(attrs["std"], np.float64).ravel()),
        )
    except (ValueError, TypeError) as err:
        raise WeightsError(f"{path}: invalid preprocessing attributes ({err})") from None


def save_vgg19_params(path: str | os.PathLike, params, *,
                      preprocessing: Preprocessing = CAFFE, attrs: dict | None = None) -> Path:
    """Write VGG-19 conv params in the Keras weights layout (readable by
    :func:`load_vgg19_params` and by Keras' ``load_weights``), atomically.

    Layout: root ``layer_names`` (input, convs and pools in order), one group per layer with
    ``weight_names`` = [``blockB_convI_W_1:0``, ``blockB_convI_b_1:0``] (kernel HWIO, bias), as
    in the Keras release; plus root attributes recording ``preprocessing`` and any ``attrs``
    (e.g. the source a file was converted from).
    """
    path = Path(path)
    layers = ["input_1"]
    for name in KERAS_LAYERS:
        layers.append(name)
        block = name.split("_")[0]
        if name == [n for n in KERAS_LAYERS if n.startswith(block + "_")][-1]:
            layers.append(f"{block}_pool")
    with atomic_file(path, WeightsError, "weights") as stream, h5py.File(stream, "w") as handle:
        handle.attrs["layer_names"] = np.array([n.encode() for n in layers])
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = b"2.1.5"
        for key, value in preprocessing.as_dict().items():
            handle.attrs[key] = value.encode() if isinstance(value, str) else np.asarray(
                value, np.float64)
        for key, value in (attrs or {}).items():
            handle.attrs[key] = value.encode() if isinstance(value, str) else value
        for name in layers:
            group = handle.create_group(name)
            if name not in KERAS_LAYERS:
                group.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            names = [f"{name}_W_1:0", f"{name}_b_1:0"]
            group.attrs["weight_names"] = np.array([n.encode() for n in names])
            for role, dataset in zip(("kernel", "bias"), names):
                group.create_dataset(
                    dataset, data=np.asarray(params["params"][name][role], np.float32))
    return path


def _read_layers(path: Path, handle: h5py.File) -> dict[str, dict[str, np.ndarray]]:
    root = _weights_root(handle)
    if "layer_names" not in root.attrs:
        raise WeightsError(
            f"{path}: not a Keras weights file (no 'layer_names' attribute at the root)"
        )
    expected = param_shapes()
    in_file = {}
    for layer in _decode(root.attrs["layer_names"]):
        if layer not in root:
            raise WeightsError(f"{path}: layer {layer!r} is listed but has no group")
        names = _decode(root[layer].attrs.get("weight_names", []))
        if names:
            in_file[layer] = [root[layer][name] for name in names]
    extra = sorted(set(in_file) - set(expected) - _CLASSIFIER_LAYERS)
    missing = [layer for layer in KERAS_LAYERS if layer not in in_file]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"in model only: {', '.join(missing)}")
        if extra:
            parts.append(f"in file only: {', '.join(extra)}")
        raise WeightsError(f"{path}: not a VGG-19 weights file ({'; '.join(parts)})")
    arrays = {}
    for layer in KERAS_LAYERS:
        datasets = in_file[layer]
        if len(datasets) != 2:
            raise WeightsError(
                f"{path}: layer {layer} has {len(datasets)} weights, expected kernel and bias"
            )
        arrays[layer] = {}
        for role, dataset in zip(("kernel", "bias"), datasets):
            want = expected[layer][role]
            if tuple(dataset.shape) != want:
                raise WeightsError(
                    f"{path}: {layer} {role} has shape {tuple(dataset.shape)}, expected {want}"
                )
            value = np.asarray(dataset[()], dtype=np.float32)
            if not np.all(np.isfinite(value)):
                raise WeightsError(f"{path}: {layer} {role} contains NaN or infinite values")
            arrays[layer][role] = value
    return arrays


def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    """Hex digest (``"md5"``, ``"sha256"``, ...) of a file, read in chunks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


class WeightsInfo(NamedTuple):
    """What ``nst-jax weights info`` reports about a file."""

    path: str
    size: int
    md5: str
    canonical: bool  # size and MD5 equal those of the Keras release
    layers: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # (name, kernel, bias shapes)
    parameters: int
    preprocessing: dict[str, Any]


def weights_info(path: str | os.PathLike) -> WeightsInfo:
    """Load (strictly) and describe a weights file. Raises :class:`WeightsError`."""
    params = load_vgg19_params(path)["params"]
    md5 = file_digest(path)
    size = Path(path).stat().st_size
    layers = [
        (name, tuple(params[name]["kernel"].shape), tuple(params[name]["bias"].shape))
        for name in KERAS_LAYERS
    ]
    count = sum(int(np.prod(k)) + int(np.prod(b)) for _, k, b in layers)
    return WeightsInfo(str(path), size, md5, size == SIZE and md5 == MD5, layers, count,
                       load_preprocessing(path).as_dict())


def cache_dir() -> Path:
    """Per-user folder for downloaded weights: ``$XDG_CACHE_HOME/nst_jax`` or ``~/.cache/nst_jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nst_jax"


def local_weights_file() -> Path | None:
    """The first existing file of: ``$NST_JAX_WEIGHTS``, ``./weights/FILENAME``, the user cache."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        if not Path(explicit).is_file():
            raise WeightsError(f"${ENV_VAR} points to {explicit}, which is not a file")
        return Path(explicit)
    for candidate in (Path("weights") / FILENAME, cache_dir() / FILENAME):
        if candidate.is_file():
            return candidate
    return None


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
        dest: target file or folder (default: the user cache folder).
        urls: sources, tried in order.
        size, md5: what the file must be.
        progress: called as ``progress(bytes_done, bytes_total)``.
        timeout: seconds of silence before a connection is given up.

    Returns:
        Path of the verified file.

    Raises:
        WeightsError: every source failed; the message lists why each did.
    """
    dest = Path(dest) if dest is not None else cache_dir()
    if dest.is_dir() or dest.suffix == "":
        dest = dest / FILENAME
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WeightsError(f"{dest}: cannot create folder {dest.parent} ({err})") from None
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
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.md5()
        done = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or size)
            if total != size:
                raise ValueError(f"server announces {total} bytes, expected {size}")
            while block := response.read(1 << 16):
                out.write(block)
                digest.update(block)
                done += len(block)
                if done > size:
                    raise ValueError(f"more than the expected {size} bytes")
                if progress is not None:
                    progress(done, size)
            out.flush()
            os.fsync(out.fileno())
        if done != size:
            raise ValueError(f"connection ended after {done} of {size} bytes")
        if digest.hexdigest() != md5:
            raise ValueError(f"MD5 {digest.hexdigest()} does not match {md5}")
        publish(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


class WeightsSource(NamedTuple):
    """Params plus the record of where they came from (stored in every output's metadata)."""

    params: dict[str, Any]
    source: str  # "file", "random"
    path: str | None
    md5: str | None
    seed: int | None
    preprocessing: Preprocessing = CAFFE  # what the weights expect (random: the Caffe one)


def resolve_weights(
    spec: str,
    *,
    seed: int = 0,
    download: Callable[[], Path] | None = None,
    warn: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> WeightsSource:
    """Turn a ``--weights`` value into params.

    ``PATH``: that file. ``imagenet``: the pretrained file, found locally or downloaded, never a
    fallback. ``random``: seeded He-normal VGG-19. ``auto``: a local file, else a download, else
    ``random`` with a loud warning saying how to get the pretrained file.
    """
    if spec == "random":
        return WeightsSource(random_vgg19_params(jax.random.key(seed)), "random", None, None, seed)
    if spec not in ("auto", "imagenet"):
        return _from_file(Path(spec))
    path = local_weights_file()
    if path is None:
        try:
            if os.environ.get(OFFLINE_VAR, "") not in ("", "0"):
                raise WeightsError(f"downloads are disabled (${OFFLINE_VAR} is set)")
            path = (download or download_weights)()
        except WeightsError as err:
            if spec == "imagenet":
                raise
            warn(
                "WARNING: pretrained VGG-19 weights not found and the download failed; using "
                "RANDOM untrained weights (results will look unlike classic style transfer).\n"
                f"  {str(err).partition(chr(10))[0]}\n"
                f"  Get {FILENAME} with `nst-jax weights download`, or put it in ./weights/, "
                f"or set ${ENV_VAR}."
            )
            return resolve_weights("random", seed=seed)
    return _from_file(path)


def _from_file(path: Path) -> WeightsSource:
    return WeightsSource(load_vgg19_params(path), "file", str(path), file_digest(path), None,
                         load_preprocessing(path))


def progress_printer(stream=sys.stderr) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback drawing a one-line bar with MB/s."""
    start = time.monotonic()

    def show(done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        rate = done / max(time.monotonic() - start, 1e-9) / 1e6
        bar = "#" * int(30 * fraction)
        stream.write(f"\r[{bar:<30}] {done / 1e6:6.1f}/{total / 1e6:.1f} MB {rate:5.1f} MB/s")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show
