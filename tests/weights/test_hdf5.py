"""The Keras-layout HDF5 file, read strictly (``nst_jax.weights._hdf5``).

Every file here is built by the test itself (``write_keras_h5`` from conftest, or h5py edits of a
copy of a valid file).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import jax
import numpy as np
import pytest

from conftest import write_keras_h5
from nst_jax import CAFFE, Preprocessing, WeightsError
from nst_jax._model import KERAS_LAYERS
from nst_jax.weights import (
    load_preprocessing,
    load_vgg19_params,
    save_vgg19_params,
    weights_info,
)

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


def test_saved_file_records_its_preprocessing(np_params, tmp_path):
    """save_vgg19_params writes the params and every field of the input convention;
    load_preprocessing reads each back from its own attribute (all fields differ here)."""
    custom = Preprocessing("RGB", 1.0, (0.1, 0.2, 0.3), (0.5, 2.0, 4.0))
    path = save_vgg19_params(tmp_path / "custom.h5", np_params, preprocessing=custom)
    assert load_preprocessing(path) == custom
    _assert_params_equal(load_vgg19_params(path), np_params)
    # The Keras release records nothing and means CAFFE.
    bare = write_keras_h5(tmp_path / "bare.h5", np_params)
    assert load_preprocessing(bare) == CAFFE


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
