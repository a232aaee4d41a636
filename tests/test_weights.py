"""Weights: strict HDF5 loading, info, download against a local HTTP server, weight sources.

Every file here is built by the test itself (``write_keras_h5`` from conftest, or h5py edits of a
copy of a valid file); nothing is downloaded from the internet: the download tests talk to an
``http.server`` bound to 127.0.0.1 in a thread of this process.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import os
import shutil
import socket
import stat
import threading
from pathlib import Path
from typing import ClassVar

import h5py
import jax
import numpy as np
import pytest
from conftest import write_keras_h5

from nst_jax import WeightsError, download_weights, load_vgg19_params, weights_info
from nst_jax._vgg import CONV_SPECS, KERAS_LAYERS
from nst_jax._weights import ENV_VAR, FILENAME, resolve_weights

NAMINGS = ("canonical", "keras3")


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def np_params(random_params):
    """The seed-0 random params as NumPy arrays (the values every file below is written from)."""
    return jax.tree.map(np.asarray, random_params)


def _with(np_params, **layers):
    """A shallow copy of ``np_params`` with layers added or replaced."""
    inner = dict(np_params["params"])
    inner.update(layers)
    return {"params": inner}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def _dataset_names(group: h5py.Group) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["weight_names"]]


def _assert_params_equal(loaded, expected):
    assert set(loaded) == {"params"}
    assert set(loaded["params"]) == set(KERAS_LAYERS)
    for layer in KERAS_LAYERS:
        assert set(loaded["params"][layer]) == {"kernel", "bias"}
        for role in ("kernel", "bias"):
            leaf = loaded["params"][layer][role]
            assert isinstance(leaf, jax.Array), (layer, role, type(leaf))
            assert leaf.dtype == np.float32, (layer, role, leaf.dtype)
            np.testing.assert_array_equal(
                np.asarray(leaf), expected["params"][layer][role], err_msg=f"{layer} {role}"
            )


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("naming", NAMINGS)
def test_load_returns_exactly_the_written_params(weights_files, np_params, naming):
    loaded = load_vgg19_params(weights_files[naming])
    _assert_params_equal(loaded, np_params)


def test_written_fixture_really_is_bias_first(weights_files):
    """Guard for the test above: the fixture creates the bias dataset first on purpose, so a loader
    that used creation order would have been caught (see also the swap test below)."""
    with h5py.File(weights_files["keras3"], "r") as handle:
        group = handle["block1_conv1"]
        assert _dataset_names(group) == ["block1_conv1/kernel", "block1_conv1/bias"]


@pytest.mark.parametrize("naming", NAMINGS)
def test_weight_names_order_is_what_decides_kernel_and_bias(weights_files, tmp_path, naming):
    """Swapping the ``weight_names`` entries (datasets untouched) must change what is read."""
    path = _copy(weights_files[naming], tmp_path / "swapped.h5")
    with h5py.File(path, "r+") as handle:
        group = handle["block2_conv2"]
        kernel, bias = _dataset_names(group)
        group.attrs["weight_names"] = np.array([bias.encode(), kernel.encode()])
    with pytest.raises(WeightsError) as info:
        load_vgg19_params(path)
    message = str(info.value)
    assert str(path) in message
    assert "block2_conv2" in message and "kernel" in message and "(128,)" in message


def test_arbitrary_dataset_names_are_read_through_weight_names(weights_files, np_params, tmp_path):
    """No hard-coded dataset names: rename every dataset, keep ``weight_names`` in step."""
    path = _copy(weights_files["canonical"], tmp_path / "renamed.h5")
    with h5py.File(path, "r+") as handle:
        for layer in KERAS_LAYERS:
            group = handle[layer]
            new = []
            for position, old in enumerate(_dataset_names(group)):
                name = f"zz_{9 - position}_param"  # kernel sorts after bias alphabetically
                group.move(old, name)
                new.append(name.encode())
            group.attrs["weight_names"] = np.array(new)
    _assert_params_equal(load_vgg19_params(path), np_params)


def test_whole_model_file_with_model_weights_group_loads(weights_files, np_params, tmp_path):
    flat = weights_files["keras3"]
    path = tmp_path / "whole_model.h5"
    with h5py.File(flat, "r") as src, h5py.File(path, "w") as dst:
        dst.attrs["model_config"] = b'{"class_name": "Functional"}'
        dst.attrs["keras_version"] = b"2.15.0"
        group = dst.create_group("model_weights")
        for key, value in src.attrs.items():
            group.attrs[key] = value
        for name in src:
            src.copy(src[name], group, name=name)
        dst.create_group("optimizer_weights")
    with h5py.File(path, "r") as handle:
        assert "layer_names" not in handle.attrs  # really only under model_weights
    _assert_params_equal(load_vgg19_params(path), np_params)


@pytest.mark.parametrize("naming", NAMINGS)
def test_file_with_classifier_layers_loads(np_params, tmp_path, naming):
    rng = np.random.default_rng(1)
    dense = {
        name: {
            "kernel": rng.standard_normal((8, width)).astype(np.float32),
            "bias": rng.standard_normal(width).astype(np.float32),
        }
        for name, width in (("fc1", 6), ("fc2", 6), ("predictions", 4))
    }
    path = write_keras_h5(
        tmp_path / "top.h5",
        _with(np_params, **dense),
        naming=naming,
        extra_layers=("flatten", "fc1", "fc2", "predictions"),
    )
    loaded = load_vgg19_params(path)
    _assert_params_equal(loaded, np_params)  # and no fc1/fc2/predictions in the pytree


# --------------------------------------------------------------------------- load errors


def _missing(tmp_path, np_params, good):
    return tmp_path / "does_not_exist.h5"


def _text(tmp_path, np_params, good):
    path = tmp_path / "vgg19.h5"
    path.write_text("this is not an HDF5 file\n" * 40)
    return path


def _cut(nbytes):
    def build(tmp_path, np_params, good):
        path = _copy(good, tmp_path / "truncated.h5")
        size = path.stat().st_size if nbytes is None else nbytes
        with open(path, "r+b") as handle:
            handle.truncate(size // 2 if nbytes is None else size)
        assert h5py.is_hdf5(path)  # the signature survives: the loader must look deeper
        return path

    return build


def _skip_layer(tmp_path, np_params, good):
    return write_keras_h5(tmp_path / "skip.h5", np_params, skip=("block3_conv2",))


def _extra_layer(tmp_path, np_params, good):
    dense = {"kernel": np.ones((4, 2), np.float32), "bias": np.zeros(2, np.float32)}
    return write_keras_h5(
        tmp_path / "extra.h5", _with(np_params, dense_99=dense), extra_layers=("dense_99",)
    )


def _wrong_shape(tmp_path, np_params, good):
    return write_keras_h5(tmp_path / "shape.h5", np_params, shapes={"block2_conv1": (3, 3, 64, 64)})


def _poison(value, role="kernel"):
    def build(tmp_path, np_params, good):
        layer = dict(np_params["params"]["block4_conv3"])
        layer[role] = layer[role].copy()
        layer[role].flat[7] = value
        return write_keras_h5(tmp_path / "poison.h5", _with(np_params, block4_conv3=layer))

    return build


def _no_layer_names(tmp_path, np_params, good):
    path = _copy(good, tmp_path / "no_layer_names.h5")
    with h5py.File(path, "r+") as handle:
        del handle.attrs["layer_names"]
    return path


def _one_weight(tmp_path, np_params, good):
    path = _copy(good, tmp_path / "one_weight.h5")
    with h5py.File(path, "r+") as handle:
        group = handle["block3_conv1"]
        kernel, bias = _dataset_names(group)
        group.attrs["weight_names"] = np.array([kernel.encode()])
        del group[bias]
    return path


def _listed_without_group(tmp_path, np_params, good):
    path = _copy(good, tmp_path / "ghost.h5")
    with h5py.File(path, "r+") as handle:
        names = list(handle.attrs["layer_names"]) + [b"ghost_layer"]
        handle.attrs["layer_names"] = np.array(names)
    return path


LOAD_ERRORS = [
    pytest.param(_missing, ["no such"], id="missing-file"),
    pytest.param(_text, ["not an HDF5"], id="text-file"),
    pytest.param(_cut(None), ["truncated"], id="truncated-half"),
    pytest.param(_cut(1000), ["truncated"], id="truncated-1000-bytes"),
    pytest.param(_skip_layer, ["block3_conv2", "in model only"], id="missing-layer"),
    pytest.param(_extra_layer, ["dense_99", "in file only"], id="extra-layer"),
    pytest.param(
        _wrong_shape, ["block2_conv1", "(3, 3, 64, 64)", "(3, 3, 64, 128)"], id="wrong-shape"
    ),
    pytest.param(_poison(np.nan), ["block4_conv3", "kernel", "NaN"], id="nan-kernel"),
    pytest.param(_poison(np.inf), ["block4_conv3", "kernel", "infinite"], id="inf-kernel"),
    pytest.param(_poison(-np.inf, "bias"), ["block4_conv3", "bias", "infinite"], id="inf-bias"),
    pytest.param(_no_layer_names, ["layer_names"], id="no-layer_names"),
    pytest.param(_one_weight, ["block3_conv1", "1 weight"], id="one-weight"),
    pytest.param(_listed_without_group, ["ghost_layer"], id="listed-without-group"),
]


@pytest.mark.parametrize("build, words", LOAD_ERRORS)
def test_load_errors_name_the_file_and_the_problem(
    build, words, tmp_path, np_params, weights_files
):
    path = build(tmp_path, np_params, weights_files["canonical"])
    with pytest.raises(WeightsError) as info:
        load_vgg19_params(path)
    message = str(info.value)
    assert str(path) in message
    said = message.replace(str(path), "")  # what is wrong must be said, not just in the path
    for word in words:
        assert word in said, (word, message)
    with pytest.raises(WeightsError):  # weights_info goes through the same strict loader
        weights_info(path)


# --------------------------------------------------------------------------- weights_info


def test_weights_info(weights_files):
    path = weights_files["keras3"]
    info = weights_info(path)

    widths = [width for _, _, width in CONV_SPECS]
    assert widths == [64, 64, 128, 128] + [256] * 4 + [512] * 8
    independent = sum(3 * 3 * c_in * c_out + c_out for c_in, c_out in zip([3] + widths, widths))
    assert info.parameters == independent == 20_024_384

    assert info.md5 == hashlib.md5(path.read_bytes()).hexdigest()
    assert info.size == path.stat().st_size
    assert info.canonical is False
    assert info.path == str(path)
    assert [name for name, _, _ in info.layers] == list(KERAS_LAYERS)
    assert info.layers[0] == ("block1_conv1", (3, 3, 3, 64), (64,))
    assert info.layers[-1] == ("block5_conv4", (3, 3, 512, 512), (512,))
    assert info.preprocessing["channel_order"] == "BGR"


# --------------------------------------------------------------------------- download


PAYLOAD = np.random.default_rng(0).bytes(300_000)
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # needed for the chunked route
    hits: ClassVar[list[str]] = []  # paths requested, in order

    def log_message(self, *args):  # keep test output clean
        pass

    def _head(self, length=None, chunked=False):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _drop(self):
        self.wfile.flush()
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_GET(self):
        self.hits.append(self.path)
        route = self.path.split("/")[1]
        half = len(PAYLOAD) // 2
        if route == "good":
            self._head(len(PAYLOAD))
            self.wfile.write(PAYLOAD)
        elif route == "corrupt":  # right size, one byte changed
            self._head(len(PAYLOAD))
            self.wfile.write(PAYLOAD[:1000] + bytes([PAYLOAD[1000] ^ 0xFF]) + PAYLOAD[1001:])
        elif route == "drop":  # announces the full size, sends half, hangs up
            self._head(len(PAYLOAD))
            self.wfile.write(PAYLOAD[:half])
            self._drop()
        elif route == "chunked_drop":  # chunked transfer, hangs up inside a chunk
            self._head(chunked=True)
            self.wfile.write(b"%x\r\n" % len(PAYLOAD) + PAYLOAD[:half])
            self._drop()
        elif route == "wrong_length":
            self._head(len(PAYLOAD) + 10)
            self.wfile.write(PAYLOAD + b"0123456789")
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture
def closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/nothing-listens-here"


def _download(dest, *urls, **kwargs):
    kwargs.setdefault("size", len(PAYLOAD))
    kwargs.setdefault("md5", PAYLOAD_MD5)
    return download_weights(dest, urls=tuple(urls), timeout=10, **kwargs)


def test_download_good_file(server, tmp_path):
    calls = []
    path = _download(tmp_path, f"{server}/good/1", progress=lambda d, t: calls.append((d, t)))
    assert path == tmp_path / FILENAME
    assert path.read_bytes() == PAYLOAD
    assert sorted(os.listdir(tmp_path)) == [FILENAME]
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert all(total == len(PAYLOAD) for _, total in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done)


def test_download_to_explicit_file_in_new_folder(server, tmp_path):
    dest = tmp_path / "a" / "b" / "mine.h5"
    assert _download(dest, f"{server}/good/2") == dest
    assert dest.read_bytes() == PAYLOAD
    assert os.listdir(dest.parent) == ["mine.h5"]


@pytest.mark.parametrize(
    "route, words",
    [
        pytest.param("corrupt", ["MD5"], id="wrong-checksum"),
        pytest.param("drop", ["150000 of 300000"], id="connection-dropped"),
        pytest.param("wrong_length", ["300010"], id="wrong-size-announced"),
        pytest.param("missing", ["404"], id="http-404"),
    ],
)
def test_download_failure_leaves_nothing(server, tmp_path, route, words):
    url = f"{server}/{route}"
    with pytest.raises(WeightsError) as info:
        _download(tmp_path, url)
    message = str(info.value)
    assert url in message
    said = message.replace(url, "")
    for word in words:
        assert word in said, (word, message)
    assert os.listdir(tmp_path) == []  # no file, no .part leftovers


def test_download_closed_port_fails_cleanly(closed_port_url, tmp_path):
    with pytest.raises(WeightsError, match="nothing-listens-here"):
        _download(tmp_path, closed_port_url)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("first", ["missing", "corrupt", "drop", "closed"])
def test_download_falls_back_to_the_next_mirror(server, tmp_path, closed_port_url, first):
    bad = closed_port_url if first == "closed" else f"{server}/{first}?mirror-test"
    good = f"{server}/good/mirror-{first}"
    path = _download(tmp_path, bad, good)
    assert path.read_bytes() == PAYLOAD
    assert os.listdir(tmp_path) == [FILENAME]
    assert good.removeprefix(server) in _Handler.hits
    if first != "closed":
        assert bad.removeprefix(server) in _Handler.hits


@pytest.mark.parametrize("route", ["corrupt", "drop", "missing"])
def test_failed_download_keeps_existing_file(server, tmp_path, route):
    dest = tmp_path / FILENAME
    existing = b"previously downloaded, must survive" * 100
    dest.write_bytes(existing)
    with pytest.raises(WeightsError):
        _download(tmp_path, f"{server}/{route}")
    assert dest.read_bytes() == existing
    assert os.listdir(tmp_path) == [FILENAME]


def test_download_chunked_connection_dropped(server, tmp_path):
    with pytest.raises(WeightsError):
        _download(tmp_path, f"{server}/chunked_drop")
    assert os.listdir(tmp_path) == []
    assert _download(tmp_path, f"{server}/chunked_drop", f"{server}/good/3").read_bytes() == PAYLOAD


def test_download_into_uncreatable_folder_is_a_weights_error(server, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_bytes(b"x")
    with pytest.raises(WeightsError, match="a_file"):
        _download(blocker / "sub" / "w.h5", f"{server}/good/4")


def test_downloaded_file_has_normal_permissions(server, tmp_path):
    old = os.umask(0o022)
    try:
        path = _download(tmp_path, f"{server}/good/5")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# --------------------------------------------------------------------------- resolve_weights


@pytest.fixture
def no_local_weights(tmp_path, monkeypatch):
    """No $NST_JAX_WEIGHTS, an empty working folder and an empty user cache."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    work = tmp_path / "work"
    cache = tmp_path / "cache"
    work.mkdir()
    cache.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return work, cache


def _failing_download(calls):
    def download():
        calls.append(1)
        raise WeightsError("could not download the VGG-19 weights:\n  http://x: refused")

    return download


def _leaves(params):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(params)]


def test_random_is_deterministic_and_seeded(random_params):
    # random_params (conftest) was made independently from jax.random.key(0): same seed, same
    # values, even across separately built pytrees.
    a = resolve_weights("random", seed=0)
    c = resolve_weights("random", seed=1)
    assert (a.source, a.path, a.md5, a.seed) == ("random", None, None, 0)
    assert c.seed == 1
    assert jax.tree.structure(a.params) == jax.tree.structure(random_params)
    for x, z in zip(_leaves(a.params), _leaves(random_params)):
        np.testing.assert_array_equal(x, z)
    kernels_a = [np.asarray(a.params["params"][n]["kernel"]) for n in KERAS_LAYERS]
    kernels_c = [np.asarray(c.params["params"][n]["kernel"]) for n in KERAS_LAYERS]
    assert all(not np.array_equal(x, z) for x, z in zip(kernels_a, kernels_c))


def test_path_spec_loads_the_file(weights_files, np_params):
    path = weights_files["canonical"]
    source = resolve_weights(str(path))
    assert source.source == "file"
    assert source.path == str(path)
    assert source.md5 == hashlib.md5(path.read_bytes()).hexdigest()
    assert source.seed is None
    _assert_params_equal(source.params, np_params)


def test_path_spec_missing_file_raises(tmp_path):
    with pytest.raises(WeightsError, match="nope.h5"):
        resolve_weights(str(tmp_path / "nope.h5"))


@pytest.mark.parametrize("spec", ["auto", "imagenet"])
def test_env_var_file_is_used(weights_files, np_params, no_local_weights, monkeypatch, spec):
    path = weights_files["keras3"]
    monkeypatch.setenv(ENV_VAR, str(path))
    calls = []
    source = resolve_weights(spec, download=_failing_download(calls), warn=calls.append)
    assert calls == []  # no download attempted, no warning
    assert (source.source, source.path) == ("file", str(path))
    assert source.md5 == hashlib.md5(path.read_bytes()).hexdigest()
    _assert_params_equal(source.params, np_params)


@pytest.mark.parametrize("where", ["weights_folder", "cache"])
def test_auto_finds_local_file(weights_files, np_params, no_local_weights, where):
    work, cache = no_local_weights
    folder = work / "weights" if where == "weights_folder" else cache / "nst_jax"
    folder.mkdir()
    _copy(weights_files["canonical"], folder / FILENAME)
    calls = []
    source = resolve_weights("auto", download=_failing_download(calls), warn=calls.append)
    assert calls == []
    assert source.source == "file"
    assert Path(source.path).resolve() == (folder / FILENAME).resolve()
    _assert_params_equal(source.params, np_params)


def test_auto_uses_a_successful_download(weights_files, np_params, no_local_weights):
    warnings = []
    source = resolve_weights("auto", download=lambda: weights_files["keras3"], warn=warnings.append)
    assert warnings == []
    assert (source.source, source.path) == ("file", str(weights_files["keras3"]))
    _assert_params_equal(source.params, np_params)


def test_auto_falls_back_to_random_with_a_warning(no_local_weights, random_params):
    calls, warnings = [], []
    source = resolve_weights(
        "auto", seed=0, download=_failing_download(calls), warn=warnings.append
    )
    assert calls == [1]
    assert source.source == "random" and source.seed == 0 and source.path is None
    for x, y in zip(_leaves(source.params), _leaves(random_params)):
        np.testing.assert_array_equal(x, y)
    assert len(warnings) == 1
    message = warnings[0]
    assert "random" in message.lower()
    assert FILENAME in message
    assert "nst-jax weights download" in message
    assert ENV_VAR in message


def test_imagenet_never_falls_back(no_local_weights):
    calls, warnings = [], []
    with pytest.raises(WeightsError, match="could not download"):
        resolve_weights("imagenet", download=_failing_download(calls), warn=warnings.append)
    assert calls == [1]
    assert warnings == []


@pytest.mark.parametrize("spec", ["auto", "imagenet"])
def test_env_var_pointing_to_missing_file_raises(no_local_weights, monkeypatch, tmp_path, spec):
    missing = tmp_path / "gone.h5"
    monkeypatch.setenv(ENV_VAR, str(missing))
    calls = []
    with pytest.raises(WeightsError) as info:
        resolve_weights(spec, download=_failing_download(calls), warn=calls.append)
    assert str(missing) in str(info.value) and ENV_VAR in str(info.value)
    assert calls == []  # neither a download nor a silent fallback


def test_auto_fallback_survives_an_empty_error_message(no_local_weights):
    def download():
        raise WeightsError()

    warnings = []
    assert resolve_weights("auto", download=download, warn=warnings.append).source == "random"
    assert len(warnings) == 1
