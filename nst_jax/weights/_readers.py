"""Reading the files ``nst-jax weights convert`` accepts: telling their format apart, and
loading a PyTorch state_dict (torch, optional) or a MatConvNet ``.mat`` (scipy, optional) into
plain arrays; :mod:`._convert` turns those into VGG-19 params."""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import WeightsError

_INSTALL = 'pip install "nst_jax[convert]"'
_CONV_NAME = re.compile(r"^conv\d+_\d+$")
# torch.save's legacy (pre-1.6) format opens with a pickled magic number; newer files are zips.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_EXTENSIONS = {".pth": "pytorch", ".pt": "pytorch", ".mat": "matlab", ".h5": "hdf5",
               ".hdf5": "hdf5"}


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
