"""VGG-19 weights in the Keras HDF5 layout: strict loading, writing, description.

File layout (the legacy Keras weights layout): a root attribute
``layer_names`` lists every layer in order; each layer's group has an attribute ``weight_names``
listing its datasets in order (kernel, then bias). Dataset names differ between writers
(``block1_conv1_W_1:0`` in the canonical file, ``block1_conv1/kernel`` from Keras 3), so they are
only ever looked up through ``weight_names``. Kernels are HWIO ``(3, 3, C_in, C_out)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from .._errors import WeightsError
from .._files import atomic_file
from .._model import KERAS_LAYERS, param_shapes
from .._preprocessing import CAFFE, Preprocessing
from ._paths import FILENAME

#: Root attributes of files this project writes that record the input convention; a file
#: without them (the Keras release) expects :data:`~nst_jax.CAFFE`.
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
    return preprocessing_from(read_attributes(path), path)


def preprocessing_from(attrs: dict[str, Any], path: str | os.PathLike) -> Preprocessing:
    """:func:`load_preprocessing` from the attributes :func:`read_attributes` returned."""
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


def read_attributes(path: str | os.PathLike) -> dict[str, Any]:
    """The root attributes of an HDF5 weights file as plain Python values (bytes decoded)."""
    try:
        with h5py.File(path, "r") as handle:
            attrs = dict(handle.attrs)
    except (OSError, ValueError) as err:
        raise WeightsError(f"{path}: cannot read HDF5 attributes ({err})") from None
    plain = {}
    for key, value in attrs.items():
        value = np.asarray(value)
        if value.dtype.kind in "SO" and value.ndim == 0:
            plain[key] = _decode(value)[0]
        elif value.dtype.kind in "SO":
            plain[key] = _decode(value)
        else:
            plain[key] = value.tolist()
    return plain
