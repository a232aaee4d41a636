"""Property-based fuzzing of the legacy torch reader and decode_quantized (hypothesis).

Every input either decodes or raises WeightsError: never another exception, never code from the
file (a sentinel file the hostile pickles would create stays absent), and never an allocation
beyond a few times the input (tracemalloc's peak, NumPy's buffers included, is checked).
Deterministic: ``derandomize=True`` and no example database.
"""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_quantized import vgg_arrays  # noqa: F401 (a fixture)
from test_torch_pickle import (
    HOSTILE, MAGIC, REBUILD, Raw, Reduce, dumps, legacy_file, payload, simple_file, small_arrays,
    storage_id,
)  # fmt: skip

from nst_jax._errors import WeightsError
from nst_jax.weights._quantized import LAYERS, decode_quantized
from nst_jax.weights._torch_pickle import read_legacy_torch

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
SEED = simple_file(small_arrays())


def outcome(read, data: bytes, factor: int = 4):
    """``read(data, name)``'s result or WeightsError; fails on any other exception or on an
    allocation peak above ``factor`` times the input plus 1 MiB."""
    tracemalloc.start()
    try:
        return read(data, "fuzz.bin")
    except WeightsError as error:
        assert str(error).startswith("fuzz.bin: ") and "\n" not in str(error)
        return error
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < factor * len(data) + (1 << 20), peak


@st.composite
def mutations(draw, seed: bytes):
    """``seed`` with 1-4 byte flips, overwrites, insertions, deletions or truncations."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


@settings(FUZZ, max_examples=500)
@given(data=mutations(SEED))
def test_mutated_files_decode_or_raise_weights_error(data):
    result = outcome(read_legacy_torch, data)
    if isinstance(result, dict):  # mutations that keep the file valid (e.g. in a float)
        assert all(isinstance(v, np.ndarray) and v.flags.c_contiguous for v in result.values())
    assert isinstance(outcome(decode_quantized, data), WeightsError)  # never VGG-19 shaped


@settings(FUZZ, max_examples=150)
@given(
    numel=st.integers(0, 40),
    offset=st.integers(0, 45),
    shape=st.lists(st.integers(0, 6), max_size=4),
    stride=st.lists(st.integers(0, 12), min_size=4, max_size=4),
    dtype=st.sampled_from(["<f8", "<f4", "<f2", "<i8", "<i4", "<i2", "i1", "u1"]),
)
def test_any_view_decodes_exactly_or_is_refused(numel, offset, shape, stride, dtype):
    storage = (np.arange(numel) * 7 % 101).astype(dtype)
    stride = stride[: len(shape)]
    args = (storage_id("k", storage.dtype, numel), offset, tuple(shape), tuple(stride), False, None)
    result = outcome(read_legacy_torch, legacy_file({"t": Reduce(REBUILD, args)}, {"k": storage}))
    positions = [offset + sum(i * s for i, s in zip(index, stride))
                 for index in itertools.product(*map(range, shape))]  # fmt: skip
    fits = max(positions, default=offset - 1) < numel and len(positions) <= numel
    if not fits:
        assert isinstance(result, WeightsError) and "reaches past" in str(result)
        return
    expected = storage[positions].reshape(shape) if positions else np.zeros(shape, dtype)
    assert result["t"].dtype == storage.dtype and result["t"].shape == tuple(shape)
    np.testing.assert_array_equal(result["t"], expected)


def stack_global(module: str, name: str) -> Raw:
    """Protocol-4 STACK_GLOBAL opcodes for module.name."""
    text = [b"\x8c" + bytes([len(s.encode())]) + s.encode() for s in (module, name)]
    return Raw(b"".join(text) + b"\x93")


@pytest.fixture(scope="module")
def sentinel_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sentinel")


@FUZZ
@given(
    target=st.sampled_from(HOSTILE),
    where=st.integers(0, 4),
    depth=st.integers(0, 3),
    stacked=st.booleans(),
)
def test_hostile_pickles_never_run(sentinel_dir, target, where, depth, stacked):
    sentinel = sentinel_dir / "ran"
    bad = payload(*target, sentinel)
    if stacked:  # the same call through STACK_GLOBAL, as protocol 4 writes it
        bad = Reduce(stack_global(*target), bad.args)
    for _ in range(depth):  # buried inside containers
        bad = [("x", {"y": bad})]
    parts = [dumps(MAGIC), dumps(1001), dumps({}), dumps({}), dumps([])]
    parts[where] = dumps(bad)
    result = outcome(read_legacy_torch, b"".join(parts))
    assert isinstance(result, WeightsError) and "refused" in str(result)
    assert not sentinel.exists()


@pytest.fixture(scope="module")
def vgg_file(vgg_arrays):  # noqa: F811 (the imported fixture)
    """The full-size synthetic file and the length of its pickles (before the raw storages)."""
    data = simple_file(vgg_arrays)
    return data, len(data) - sum(8 + array.nbytes for array in vgg_arrays.values())


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_mutated_vgg_headers_decode_or_raise_weights_error(vgg_file, data):
    """Mutations of the pickles of a full-size file (8 KB; its raw data follows unchanged).
    Decoding makes float32 kernels from uint8 indices, hence the allocation factor of 8."""
    whole, pickles = vgg_file
    head = data.draw(mutations(whole[:pickles]))
    result = outcome(decode_quantized, head + whole[pickles:], factor=8)
    if isinstance(result, dict):
        assert list(result["params"]) == [name for name, _, _ in LAYERS]
