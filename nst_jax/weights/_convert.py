"""Convert other VGG-19 weight files to this project's Keras-layout HDF5 (``nst-jax weights
convert``), recording the input convention each one expects.

Sources, and the convention recorded for each (see :class:`~nst_jax._vgg.Preprocessing`):

* PyTorch ``state_dict`` in torchvision's layout, ``features.N.weight`` (OIHW ``(C_out, C_in, 3,
  3)``) / ``features.N.bias`` for the conv indices N of :data:`TORCHVISION_INDICES`;
  ``classifier.*`` is ignored. torchvision's own file expects :data:`TORCHVISION` (RGB 0-1,
  mean/std); Caffe conversions in the same layout (jcjohnson's ``vgg19-d01eb7cb.pth``) expect
  :data:`CAFFE`. Known files are told apart by checksum, any other needs ``preprocessing``.
* Gatys' normalized ``vgg_conv.pth`` (PytorchNeuralStyleTransfer): ``conv1_1.weight`` ...
  ``conv5_4.bias``, OIHW, :data:`CAFFE` input; recorded with ``normalized="gatys"``.
* MatConvNet SimpleNN ``imagenet-vgg-verydeep-19.mat``: ``layers`` (cell array of structs with
  ``name``, ``type``, ``weights = {W (3, 3, C_in, C_out), b}``) and ``averageImage`` under
  ``meta.normalization`` (or ``normalization`` in older files): RGB 0-255 minus that mean.

Kernels are written HWIO ``(3, 3, C_in, C_out)``. Channels are never reordered: the first conv
keeps the channel order it was trained on, and the recorded convention feeds it that order.
Reading a file (torch / scipy, optional) is kept apart from converting the arrays it holds
(NumPy only), so the conversion is testable without either.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .._errors import WeightsError
from .._files import check_output, file_digest
from .._model import KERAS_LAYERS, LAYERS, param_shapes
from .._preprocessing import CAFFE, TORCHVISION, Preprocessing
from ._hdf5 import save_vgg19_params
from ._readers import _listing, detect_format, read_matconvnet, read_torch_state_dict

#: Positions of the 16 convs in torchvision's ``vgg19().features`` Sequential (Conv2d, ReLU per
#: conv; MaxPool2d after each block).
TORCHVISION_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
#: ``--preprocessing`` values for a torchvision-layout file that is not a known one.
PREPROCESSING_CHOICES = {"caffe": CAFFE, "torchvision": TORCHVISION}
_GATYS_KEY = re.compile(r"^conv\d+_\d+\.(weight|bias)$")


class KnownFile(NamedTuple):
    """A published VGG-19 file, recognized by its SHA-256."""

    name: str
    sha256: str  # the full digest, or the 8-hex-digit prefix torch hub puts in file names
    layout: str  # "torchvision" or "matconvnet"
    preprocessing: Preprocessing | None  # None: the file records its own (MatConvNet)


KNOWN_FILES = (
    KnownFile("torchvision's ImageNet VGG-19 (vgg19-dcbb9e9d.pth)", "dcbb9e9d", "torchvision",
              TORCHVISION),
    KnownFile("jcjohnson's Caffe VGG-19 for PyTorch (vgg19-d01eb7cb.pth)", "d01eb7cb",
              "torchvision", CAFFE),
    KnownFile("MatConvNet imagenet-vgg-verydeep-19.mat",
              "abdb57167f82a2a1fbab1e1c16ad9373411883f262a1a37ee5db2e6fb0044695", "matconvnet",
              None),
)


class Conversion(NamedTuple):
    """A converted file: params plus what it is and how it expects its input."""

    params: dict[str, Any]  # {"params": {"block1_conv1": {"kernel": (3,3,3,64), "bias": (64,)}}}
    preprocessing: Preprocessing
    source_format: str  # "torchvision", "gatys" or "matconvnet"
    known: KnownFile | None
    description: str  # one line for the CLI: the layout, what was recognized
    attrs: dict[str, str]  # extra root attributes of the written file


def describe_preprocessing(preprocessing: Preprocessing) -> str:
    """One line, e.g. ``RGB 0-1, minus mean (0.485, 0.456, 0.406), divided by std (...)``."""
    def numbers(values):
        return "(" + ", ".join(f"{v:g}" for v in values) + ")"

    text = (f"{preprocessing.channel_order} 0-{preprocessing.input_scale:g}, "
            f"minus mean {numbers(preprocessing.mean)}")
    if preprocessing.std != (1.0, 1.0, 1.0):
        text += f", divided by std {numbers(preprocessing.std)}"
    return text


def identify(sha256: str) -> KnownFile | None:
    """The known file with this SHA-256 (hex), if any."""
    return next((known for known in KNOWN_FILES if sha256.lower().startswith(known.sha256)), None)


def params_from_state_dict(state: Mapping[str, Any], *, source: str = "state_dict",
                           sha256: str | None = None,
                           preprocessing: str | None = None) -> Conversion:
    """Convert a PyTorch VGG-19 state_dict (NumPy arrays) to params.

    Kernels ``W_oihw`` (C_out, C_in, 3, 3) become ``W_hwio = W_oihw.transpose(2, 3, 1, 0)``: both
    are cross-correlations, ``y[o] = b[o] + sum_{i,dy,dx} W[o, i, dy, dx] x[i, y+dy, x+dx]``.

    Args:
        state: ``{"features.0.weight": (64, 3, 3, 3), ...}`` (torchvision layout) or
            ``{"conv1_1.weight": ...}`` (Gatys' ``vgg_conv.pth``).
        source: the file name, for messages.
        sha256: the file's digest, to recognize a known file (see :data:`KNOWN_FILES`).
        preprocessing: ``"caffe"`` or ``"torchvision"``: required for a torchvision-layout file
            that is not known, and must agree with what a known file expects.

    Raises:
        WeightsError: unknown layout, missing or unexpected keys, wrong shapes, NaN/inf, a
            missing or contradicting ``preprocessing``.
    """
    if any(key.startswith("features.") for key in state):
        layout, ignored = "torchvision", ("classifier.",)
        layers = {f"features.{n}": keras for n, keras in zip(TORCHVISION_INDICES, KERAS_LAYERS)}
    elif any(_GATYS_KEY.match(key) for key in state):
        layout, ignored = "gatys", ()
        layers = dict(zip(LAYERS, KERAS_LAYERS))
    else:
        raise WeightsError(
            f"{source}: unknown state_dict layout (keys {_listing(list(state))}); expected "
            "torchvision's features.N.weight or Gatys' conv1_1.weight")
    wanted = [f"{prefix}.{role}" for prefix in layers for role in ("weight", "bias")]
    missing = [key for key in wanted if key not in state]
    extra = [key for key in state if key not in wanted and not key.startswith(ignored)]
    if missing or extra:
        parts = [f"missing {_listing(missing)}"] if missing else []
        parts += [f"unexpected {_listing(extra)}"] if extra else []
        if any("running_mean" in key for key in extra):
            parts.append("batch-norm VGG-19 (vgg19_bn) is not supported")
        raise WeightsError(f"{source}: not a VGG-19 state_dict ({layout} layout: "
                           f"{'; '.join(parts)})")
    shapes = param_shapes()
    params = {}
    for prefix, keras in layers.items():
        label = f"{prefix} ({LAYERS[KERAS_LAYERS.index(keras)]})"
        height, width, c_in, c_out = shapes[keras]["kernel"]
        kernel = _checked(source, f"{label} weight", state[f"{prefix}.weight"],
                          (c_out, c_in, height, width))
        bias = _checked(source, f"{label} bias", state[f"{prefix}.bias"], shapes[keras]["bias"])
        params[keras] = {"kernel": np.ascontiguousarray(kernel.transpose(2, 3, 1, 0)),
                         "bias": bias}
    known = identify(sha256) if sha256 else None
    if known is not None and known.layout != layout:
        known = None
    if layout == "gatys":
        chosen = _choose(source, CAFFE, preprocessing, "Gatys' vgg_conv.pth")
        return Conversion({"params": params}, chosen, "gatys", None,
                          "Gatys' normalized VGG-19 (vgg_conv.pth layout)",
                          {"source_format": "gatys", "normalized": "gatys"})
    if known is not None:
        chosen = _choose(source, known.preprocessing, preprocessing, known.name)
        description = f"PyTorch state_dict, torchvision layout; recognized: {known.name}"
    elif preprocessing is None:
        raise WeightsError(
            f"{source}: a torchvision-layout VGG-19 that is not a known file, so its input "
            "convention is unknown; pass --preprocessing torchvision (torchvision's own "
            "weights: RGB 0-1, mean/std) or --preprocessing caffe (Caffe conversions such "
            "as vgg19-d01eb7cb.pth: BGR 0-255 minus the ImageNet mean)")
    else:
        chosen = _choose(source, None, preprocessing, "")
        description = (f"PyTorch state_dict, torchvision layout; not a known file, input "
                       f"convention from --preprocessing {preprocessing}")
    return Conversion({"params": params}, chosen, "torchvision", known, description,
                      {"source_format": "torchvision"})


def params_from_matconvnet(layers: Mapping[str, tuple[Any, Any]], average_image: Any, *,
                           source: str = "MatConvNet model", sha256: str | None = None,
                           preprocessing: str | None = None) -> Conversion:
    """Convert MatConvNet conv weights to params.

    MatConvNet's ``vl_nnconv`` is a cross-correlation over ``FH x FW x C x K`` filters
    (``y(i,j,k) = b(k) + sum W(i',j',c,k) x(i+i'-1, j+j'-1, c)``, i = row), so W already is
    HWIO and is used as is. (Its help text says ``FW x FH``, a known typo, vlfeat/matconvnet
    #1053 and #1128; ``import-caffe.py`` stores Caffe's kernels height-first. Some ports
    transpose the spatial axes because of it, anishathalye/neural-style#180.) The first conv
    takes RGB: the importer reordered it from Caffe's BGR.

    Args:
        layers: ``{"conv1_1": (W (3,3,3,64), b (64,) or (1,64)), ...}``, e.g. from
            :func:`read_matconvnet`.
        average_image: RGB 0-255 mean, (3,) or (H, W, 3) (older files store a mean image;
            its per-channel average is used).
        source, sha256: as for :func:`params_from_state_dict`.
        preprocessing: must be None: the file records its own mean.

    Raises:
        WeightsError: missing or unexpected conv layers, wrong shapes, NaN/inf, a bad mean.
    """
    mean = _average_rgb(source, average_image)
    missing = [name for name in LAYERS if name not in layers]
    extra = [name for name in layers if name not in LAYERS]
    if missing or extra:
        parts = [f"missing {_listing(missing)}"] if missing else []
        parts += [f"unexpected {_listing(extra)}"] if extra else []
        raise WeightsError(f"{source}: not a VGG-19 MatConvNet model ({'; '.join(parts)})")
    shapes = param_shapes()
    params = {}
    for name, keras in zip(LAYERS, KERAS_LAYERS):
        filters, biases = layers[name]
        params[keras] = {
            "kernel": _checked(source, f"{name} filters", filters, shapes[keras]["kernel"]),
            "bias": _checked(source, f"{name} biases", np.reshape(np.asarray(biases), -1),
                             shapes[keras]["bias"]),
        }
    implied = Preprocessing("RGB", 255.0, tuple(mean), (1.0, 1.0, 1.0))
    known = identify(sha256) if sha256 else None
    if known is not None and known.layout != "matconvnet":
        known = None
    chosen = _choose(source, implied, preprocessing, "a MatConvNet file (its recorded mean)")
    description = "MatConvNet SimpleNN model; " + (
        f"recognized: {known.name}" if known else "not a known file (mean read from it)")
    return Conversion({"params": params}, chosen, "matconvnet", known, description,
                      {"source_format": "matconvnet"})


def convert_weights(src: str | os.PathLike, dst: str | os.PathLike, *,
                    preprocessing: str | None = None, overwrite: bool = False) -> Conversion:
    """Convert a ``.pth`` or ``.mat`` VGG-19 to a Keras-layout HDF5 file, atomically.

    The output records the input convention (read back by :func:`load_preprocessing`) and
    its origin (root attributes ``converted_from``, ``source_sha256``, ``source_format``).

    Args:
        src: PyTorch state_dict (torchvision layout, or Gatys' ``vgg_conv.pth``) or MatConvNet
            ``.mat``.
        dst: the HDF5 file to write.
        preprocessing: ``"caffe"`` or ``"torchvision"``, for a torchvision-layout file that is
            not known (see :func:`params_from_state_dict`).
        overwrite: replace an existing ``dst``.

    Returns:
        The :class:`Conversion` written (its ``attrs`` include the origin attributes).

    Raises:
        WeightsError: a bad source (see :func:`detect_format` and the readers), a destination
            that exists (without ``overwrite``), is the source, or cannot be written.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise WeightsError(f"{src}: no such file")
    check_output(dst, overwrite=overwrite, error=WeightsError, sources=(src,),
                 what="weights file")
    kind = detect_format(src)
    digest = file_digest(src, "sha256")
    if kind == "pytorch":
        conversion = params_from_state_dict(read_torch_state_dict(src), source=str(src),
                                            sha256=digest, preprocessing=preprocessing)
    else:
        layers, average = read_matconvnet(src)
        conversion = params_from_matconvnet(layers, average, source=str(src), sha256=digest,
                                            preprocessing=preprocessing)
    attrs = {**conversion.attrs, "converted_from": src.name, "source_sha256": digest}
    # save_vgg19_params reports its own write errors (WeightsError naming the file).
    save_vgg19_params(dst, conversion.params, preprocessing=conversion.preprocessing,
                      attrs=attrs)
    return conversion._replace(attrs=attrs)


def _choose(source: str, implied: Preprocessing | None, requested: str | None,
            what: str) -> Preprocessing:
    """The convention to record: what the file implies; ``requested`` only fills a gap and
    must not contradict it (a silent override would feed the network the wrong input)."""
    if requested is not None and requested not in PREPROCESSING_CHOICES:
        raise WeightsError(f"{source}: --preprocessing must be one of {', '.join(PREPROCESSING_CHOICES)}, "
                           f"got {requested!r}")
    if implied is None:
        return PREPROCESSING_CHOICES[requested]
    if requested is not None and PREPROCESSING_CHOICES[requested] != implied:
        raise WeightsError(f"{source}: {what} expects {describe_preprocessing(implied)}; "
                           f"--preprocessing {requested} contradicts it (leave it out)")
    return implied


def _checked(source: str, label: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as float32 with exactly ``shape`` and only finite values."""
    try:
        array = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise WeightsError(f"{source}: {label} is not a numeric array") from None
    if array.shape != tuple(shape):
        raise WeightsError(f"{source}: {label} has shape {array.shape}, expected {tuple(shape)}")
    if not np.all(np.isfinite(array)):
        raise WeightsError(f"{source}: {label} contains NaN or infinite values")
    return array


def _average_rgb(source: str, average_image: Any) -> np.ndarray:
    """Per-channel mean (3,) of an averageImage given as (3,) or (..., 3)."""
    try:
        average = np.asarray(average_image, dtype=np.float64)
    except (ValueError, TypeError):
        average = np.zeros(0)
    if average.size == 0 or average.size % 3 or (average.shape[-1] != 3 and average.size != 3):
        raise WeightsError(f"{source}: averageImage of shape {average.shape} is not an RGB mean")
    mean = average.reshape(-1, 3).mean(axis=0)
    if not np.all((mean >= 0) & (mean <= 255)):
        raise WeightsError(f"{source}: averageImage mean {mean.tolist()} is outside 0-255")
    return mean
