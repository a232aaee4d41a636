"""Arrays whose devices span several processes (multi-host JAX, ``jax.distributed.initialize``).

In a multi-process run every process executes the same program with the same arguments, and a
global array holds on each process only the shards of that process's devices. These helpers put
host values onto such a sharding, read a global array back whole on every process, and check
that the processes really were given the same arguments. With one process (or a sharding over
local devices only) they reduce to ``jax.device_put`` and ``np.asarray``.
"""

from __future__ import annotations

import zlib

import jax
import numpy as np
from jax.experimental import multihost_utils


def to_host(x) -> np.ndarray:
    """The whole value of ``x`` as a NumPy array, on every process.

    A global array with shards on other processes is all-gathered (a collective: every process
    must call this for the same arrays in the same order); anything else is ``np.asarray``.
    """
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def put(tree, sharding: jax.sharding.Sharding):
    """``jax.device_put(tree, sharding)`` that also works when ``sharding`` spans processes.

    Every process passes the same host values; each one copies only the slices its own devices
    hold (``jax.make_array_from_callback``). ``jax.device_put`` would instead all-gather every
    leaf to check it is equal everywhere (all of VGG-19's 80 MB, every call) and refuses arrays
    already committed to a device.
    """
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def one(x):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree)


def _fingerprint(leaf) -> int:
    if isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
        host = np.ascontiguousarray(np.asarray(leaf))
        header = f"{host.shape}{host.dtype}".encode()
        return zlib.crc32(host.tobytes(), zlib.crc32(header))
    # repr, not hash(): str hashes are salted differently in every process.
    return zlib.crc32(repr(leaf).encode())


def check_same_on_every_process(values: dict) -> None:
    """Raise ValueError naming the arguments that differ between processes.

    ``values`` maps argument names to pytrees of arrays and plain values; one all-gather of a
    CRC-32 per argument compares them (a collective: call it on every process).
    """
    names = sorted(values)
    mine = np.array([zlib.crc32(np.array([_fingerprint(leaf) for leaf in
                                          jax.tree.leaves(values[name])], np.uint32).tobytes())
                     for name in names], np.uint32)
    every = np.asarray(multihost_utils.process_allgather(mine))
    differ = [name for name, column in zip(names, every.T) if np.any(column != column[0])]
    if differ:
        raise ValueError(
            f"the processes called with different {', '.join(differ)}: with devices on several "
            "processes every process must make the same call with the same arguments")
