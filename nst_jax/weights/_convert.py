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
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .._errors import WeightsError
from .._files import check_output, file_digest
from .._model import KERAS_LAYERS, LAYERS, param_shapes
from .._preprocessing import CAFFE, TORCHVISION, Preprocessing
from ._hdf5 import save_vgg19_params

#: Positions of the 16 convs in torchvision's ``vgg19().features`` Sequential (Conv2d, ReLU per
#: conv; MaxPool2d after each block).
TORCHVISION_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
#: ``--preprocessing`` values for a torchvision-layout file that is not a known one.
PREPROCESSING_CHOICES = {"caffe": CAFFE, "torchvision": TORCHVISION}
_INSTALL = 'pip install "nst_jax[convert]"'
_CONV_NAME = re.compile(r"^conv\d+_\d+$")
_GATYS_KEY = re.compile(r"^conv\d+_\d+\.(weight|bias)$")
# torch.save's legacy (pre-1.6) format opens with a pickled magic number; newer files are zips.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_EXTENSIONS = {".pth": "pytorch", ".pt": "pytorch", ".mat": "matlab", ".h5": "hdf5",
               ".hdf5": "hdf5"}


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


def detect_format(path: str | os.PathLike) -> str:
    """``"pytorch"`` or ``"matlab"``, from the file's first bytes, checked against its extension.

    Raises:
        WeightsError: an HDF5 file (already this project's format), a MATLAB v7.3 file (scipy
            cannot read it), content the extension contradicts, or an unknown format.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(520)
    if head.startswith(b"MATLAB 7.3"):
        raise WeightsError(f"{path}: a MATLAB v7.3 (HDF5-based) file, which scipy cannot read; "
                           "load it in MATLAB and save it again with save(..., '-v7')")
    if head.startswith(b"MATLAB 5.0"):
        kind = "matlab"
    elif head.startswith(_TORCH_LEGACY_MAGIC) or (
            head.startswith(b"PK\x03\x04") and _is_torch_zip(path)):
        kind = "pytorch"
    elif head.startswith(_HDF5_MAGIC):
        kind = "hdf5"
    else:
        kind = None
    expected = _EXTENSIONS.get(path.suffix.lower())
    if kind == "hdf5":
        raise WeightsError(f"{path}: already an HDF5 file; a Keras-layout VGG-19 file needs no "
                           "conversion (check it with `nst-jax weights info`)")
    if kind is None:
        what = f"not a {expected} file" if expected else "unknown format"
        raise WeightsError(f"{path}: {what}; convert reads PyTorch .pth files (torchvision "
                           "layout or Gatys' vgg_conv.pth) and MatConvNet .mat files")
    if expected not in (None, kind):
        raise WeightsError(f"{path}: the extension says {expected}, the content is {kind}; "
                           "rename the file to match what it is")
    return kind


def _is_torch_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``torch.load`` a ``.pth`` state_dict (``weights_only``: no code runs) as NumPy arrays.

    Raises:
        WeightsError: torch missing (saying how to install it), an unreadable file, or a file
            that is not a mapping of names to tensors.
    """
    path = Path(path)
    try:
        import torch
    except ImportError:
        raise WeightsError(f"{path}: reading PyTorch files needs torch: {_INSTALL} "
                           "(or pip install torch)") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- torch.load raises many types (pickle, zip, ...)
        first_line = str(err).strip().partition("\n")[0]
        raise WeightsError(f"{path}: cannot read as a PyTorch file ({first_line})") from None
    if not isinstance(state, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state_dict (a mapping of names to tensors) but a "
                           f"{type(state).__name__}")
    return {str(k): v.detach().to(torch.float32).numpy() for k, v in state.items()}


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


def read_matconvnet(path: str | os.PathLike) -> tuple[dict[str, tuple[Any, Any]], Any]:
    """Read a MatConvNet SimpleNN ``.mat`` with scipy.

    Returns:
        ``({"conv1_1": (W, b), ...}, average_image)``: every layer named ``convB_I`` (relu,
        pool and the fc layers are skipped), W (3, 3, C_in, C_out) and b as stored; the
        ``averageImage`` (RGB 0-255, (3,) or an (H, W, 3) image).

    Raises:
        WeightsError: scipy missing, an unreadable file, no ``layers`` or ``averageImage``, a
            conv layer without weights or given twice.
    """
    path = Path(path)
    try:
        import scipy.io
    except ImportError:
        raise WeightsError(f"{path}: reading MATLAB files needs scipy: {_INSTALL} "
                           "(or pip install scipy)") from None
    try:
        # No squeeze_me: it would also squeeze arrays with unit axes (a 1x1 kernel to a scalar).
        data = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=False)
    except (ValueError, TypeError, OSError, EOFError, NotImplementedError) as err:
        raise WeightsError(f"{path}: damaged or unreadable MATLAB file ({err})") from None
    if "layers" not in data:
        names = [k for k in data if not k.startswith("__")]
        raise WeightsError(f"{path}: no 'layers' variable, so not a MatConvNet SimpleNN model "
                           f"(variables: {_listing(names)})")
    # Newer files keep the normalization under meta; older ones at the top level.
    normalization = _field(data.get("meta"), "normalization")
    if normalization is None:
        normalization = _unwrap(data.get("normalization"))
    average = _field(normalization, "averageImage")
    if average is None:
        raise WeightsError(f"{path}: no meta.normalization.averageImage (the input mean)")
    layers = {}
    for layer in np.asarray(data["layers"], dtype=object).ravel():
        layer = _unwrap(layer)
        name = _field(layer, "name")
        name = str(np.asarray(name).ravel()[0]) if name is not None and np.size(name) else ""
        if not _CONV_NAME.match(name):
            continue
        if hasattr(layer, "weights"):
            cell = np.asarray(layer.weights, dtype=object).ravel()
            if cell.size != 2:
                raise WeightsError(f"{path}: layer {name} has {cell.size} weights, expected "
                                   "filters and biases")
            weights = (cell[0], cell[1])
        elif hasattr(layer, "filters") and hasattr(layer, "biases"):  # pre-beta13 field names
            weights = (layer.filters, layer.biases)
        else:
            raise WeightsError(f"{path}: layer {name} has no weights")
        if name in layers:
            raise WeightsError(f"{path}: layer {name} appears twice")
        layers[name] = weights
    return layers, average


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
    try:
        save_vgg19_params(dst, conversion.params, preprocessing=conversion.preprocessing,
                          attrs=attrs)
    except OSError as err:
        raise WeightsError(f"{dst}: cannot write ({err})") from None
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


def _unwrap(value: Any) -> Any:
    """A MATLAB struct or cell of one element (a 1x1 object array) as that element."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.ravel()[0]
    return value


def _field(struct: Any, name: str) -> Any:
    return _unwrap(getattr(_unwrap(struct), name, None))


def _listing(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
