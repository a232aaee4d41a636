"""Mean-activation normalization of VGG-19 (Gatys et al. 2016, Sec. 2).

The reference means are computed here in float64 NumPy from the original network's feature maps
(pooled over all images and positions); the normalized network must reproduce those maps divided
by them, on the normalizing images and on another one. Two image shapes (32x32, 22x32) keep the
compiles few while still testing images of different sizes.
"""

from __future__ import annotations

import h5py
import jax
import numpy as np
import pytest

from conftest import DATA
from nst_jax import (
    CAFFE,
    TORCHVISION,
    NstError,
    WeightsError,
    extract_features,
    load_image,
    preprocess,
)
from nst_jax._model import KERAS_LAYERS, LAYERS
from nst_jax.weights import load_preprocessing, load_vgg19_params, save_vgg19_params
from nst_jax.weights._normalize import (
    mean_activations,
    normalize_vgg19_params,
    normalize_weights_file,
    rescale_vgg19_params,
)
# Channels killed on purpose: a bias far below any pre-activation makes the ReLU output 0.
DEAD = {"conv1_1": 5, "conv3_2": 7}
# float32 error of a conv output is a fraction of the magnitudes it sums, i.e. of the layer's
# largest activation, not of the output itself: a channel active at a single position can be a
# near-total cancellation. Errors are therefore measured in the original network's units,
# against this fraction of the layer's largest value (observed: below 3e-6).
LAYER_RTOL = 2e-5


@pytest.fixture(scope="module")
def params(random_params):
    layers = dict(random_params["params"])
    for name, channel in DEAD.items():
        keras = KERAS_LAYERS[LAYERS.index(name)]
        layers[keras] = {"kernel": layers[keras]["kernel"],
                         "bias": layers[keras]["bias"].at[channel].set(-1e6)}
    return {"params": layers}


@pytest.fixture(scope="module")
def images():
    """Two normalizing images of different sizes and one held-out image of a size already used."""
    load = {name: load_image(DATA / f"{name}.png", max_side=32)
            for name in ("astronaut", "chelsea", "great_wave")}
    assert load["astronaut"].shape == (32, 32, 3) and load["chelsea"].shape == (22, 32, 3)
    return [load["astronaut"], load["chelsea"]], load["great_wave"]


_features = jax.jit(lambda params, x: extract_features(params, x, LAYERS))


def features(params, rgb, preprocessing=CAFFE):
    """All 16 ReLU maps, float64 NumPy (the network input is preprocessed outside the jit, so
    one compile per image shape serves every params and preprocessing)."""
    return {name: np.asarray(f, np.float64)
            for name, f in _features(params, preprocess(rgb, preprocessing)).items()}


@pytest.fixture(scope="module")
def normalized(params, images):
    fit, held_out = images
    new_params, scales = normalize_vgg19_params(params, fit)
    original = [features(params, rgb) for rgb in (*fit, held_out)]
    after = [features(new_params, rgb) for rgb in (*fit, held_out)]
    # Reference means: every position of every normalizing image counts once.
    means = {name: sum(f[name].sum(axis=(0, 1)) for f in original[:2])
             / sum(f[name].shape[0] * f[name].shape[1] for f in original[:2])
             for name in LAYERS}
    return new_params, scales, original, after, means


def test_scales_are_the_mean_activations(normalized):
    _, scales, _, _, means = normalized
    assert list(scales) == list(LAYERS)
    for name in LAYERS:
        live = means[name] > 0
        np.testing.assert_allclose(np.asarray(scales[name])[live], means[name][live], rtol=1e-4,
                                   atol=LAYER_RTOL * means[name].max(), err_msg=name)
        np.testing.assert_array_equal(np.asarray(scales[name])[~live], 1.0, err_msg=name)


@pytest.mark.parametrize("which", [0, 1, 2], ids=["fit-32x32", "fit-22x32", "held-out"])
def test_features_are_rescaled_per_channel(normalized, which):
    _, _, original, after, means = normalized
    for name in LAYERS:
        scale = np.where(means[name] > 0, means[name], 1.0)
        expected = original[which][name] / scale
        # The error in original units (see LAYER_RTOL).
        error = np.abs(after[which][name] - expected) * scale
        limit = LAYER_RTOL * np.abs(original[which][name]).max()
        assert error.max() <= limit, f"{name}: error {error.max()} > {limit}"
        assert not np.allclose(after[which][name], original[which][name], rtol=1e-2)


def test_mean_activation_is_one(normalized):
    _, _, _, after, means = normalized
    for name in LAYERS:
        total = sum(f[name].sum(axis=(0, 1)) for f in after[:2])
        count = sum(f[name].shape[0] * f[name].shape[1] for f in after[:2])
        live = means[name] > 0
        # |mean' - 1| * mu is the error in original units (see LAYER_RTOL).
        np.testing.assert_allclose(((total / count - 1.0) * means[name])[live], 0.0,
                                   atol=LAYER_RTOL * means[name].max(), err_msg=name)
        assert np.median(np.abs(total / count - 1.0)[live]) < 1e-5, name
        np.testing.assert_array_equal((total / count)[~live], 0.0, err_msg=name)
        assert live.mean() > 0.5, name  # most channels are alive, so the check has teeth


def test_dead_channel_keeps_scale_one(params, normalized):
    new_params, scales, _, after, means = normalized
    for name, channel in DEAD.items():
        position = LAYERS.index(name)
        keras, before = KERAS_LAYERS[position], LAYERS[position - 1] if position else None
        assert means[name][channel] == 0.0
        assert float(scales[name][channel]) == 1.0
        in_scale = np.asarray(scales[before], np.float64) if before else np.ones(3)
        old = np.asarray(params["params"][keras]["kernel"], np.float64)
        new = np.asarray(new_params["params"][keras]["kernel"], np.float64)
        # Only the input side (the previous layer's scales) changes this channel's kernel.
        np.testing.assert_allclose(new[..., channel], old[..., channel] * in_scale,
                                   rtol=1e-6)
        assert float(new_params["params"][keras]["bias"][channel]) == -1e6
        # The next layer reads it unscaled: input channel c multiplied by 1.
        following = KERAS_LAYERS[position + 1]
        out_next = np.asarray(scales[LAYERS[position + 1]], np.float64)
        np.testing.assert_allclose(
            np.asarray(new_params["params"][following]["kernel"])[:, :, channel, :],
            np.asarray(params["params"][following]["kernel"])[:, :, channel, :] / out_next,
            rtol=1e-6)
        assert all((f[name][..., channel] == 0).all() for f in after)


def test_rescale_formula(params):
    """kernel' = kernel * s_prev[c_in] / s[c_out], bias' = bias / s, s = mu or 1 if mu = 0."""
    rng = np.random.default_rng(0)
    means = {name: rng.uniform(0.1, 10.0, params["params"][keras]["bias"].shape)
             for name, keras in zip(LAYERS, KERAS_LAYERS)}
    means["conv2_1"][:3] = 0.0
    new_params, scales = rescale_vgg19_params(params, means)
    previous = np.ones(3)
    for name, keras in zip(LAYERS, KERAS_LAYERS):
        s = np.where(means[name] > 0, means[name], 1.0)
        old = {role: np.asarray(v, np.float64) for role, v in params["params"][keras].items()}
        new = new_params["params"][keras]
        for c_in in (0, len(previous) - 1):
            for c_out in (0, 1, len(s) - 1):
                np.testing.assert_allclose(new["kernel"][:, :, c_in, c_out],
                                           old["kernel"][:, :, c_in, c_out] * previous[c_in]
                                           / s[c_out], rtol=1e-6)
        np.testing.assert_allclose(new["bias"], old["bias"] / s, rtol=1e-6)
        np.testing.assert_allclose(scales[name], s, rtol=1e-6)
        assert new["kernel"].dtype == np.float32
        previous = s
    means["conv4_1"][9] = 1e-42
    with pytest.raises(ValueError, match="conv4_1.*overflow"):
        rescale_vgg19_params(params, means)


def test_average_pooling_network(params, images):
    """Normalized for average pooling, the avg-pooling network has mean activation 1; the means
    after the first pooling differ from max pooling's."""
    fit = images[0][:1]
    new_params, scales = normalize_vgg19_params(params, fit, pooling="avg")
    means = mean_activations(new_params, fit, pooling="avg")
    for name in LAYERS:
        live = np.asarray(scales[name]) != 1.0
        np.testing.assert_allclose(((means[name] - 1.0) * np.asarray(scales[name]))[live], 0.0,
                                   atol=LAYER_RTOL * float(np.max(scales[name])), err_msg=name)
    max_means = mean_activations(params, fit, pooling="max")
    np.testing.assert_allclose(scales["conv1_2"], max_means["conv1_2"], rtol=1e-6)  # no pool yet
    assert not np.allclose(scales["conv2_1"], max_means["conv2_1"], rtol=0.05)


def test_mean_activations_checks_its_inputs(params, images):
    fit, _ = images
    with pytest.raises(ValueError, match="no images"):
        mean_activations(params, [])
    with pytest.raises(ValueError, match="too small"):
        mean_activations(params, [fit[0][:8]])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        mean_activations(params, [fit[0][..., :2]])
    with pytest.raises(ValueError, match="pooling"):
        mean_activations(params, fit, pooling="min")


# --------------------------------------------------------------------------- weights files


@pytest.fixture(scope="module")
def source_file(tmp_path_factory, params):
    """The dead-channel params with a non-default input convention, which must carry over."""
    return save_vgg19_params(tmp_path_factory.mktemp("src") / "vgg19.h5", params,
                             preprocessing=TORCHVISION)


def test_file_round_trip(tmp_path, source_file):
    dst = tmp_path / "vgg19_normalized.h5"
    dst.write_bytes(b"an older file")
    summary = normalize_weights_file(source_file, dst, [DATA / "astronaut.png"], size=32,
                                     overwrite=True)
    with h5py.File(dst, "r") as handle:
        attrs = {key: value.decode() if isinstance(value, bytes) else value
                 for key, value in handle.attrs.items()}
    assert attrs["normalized"] == "mean-activation"
    assert attrs["normalization_images"] == "1 image at 32 px"
    assert attrs["normalization_pooling"] == "max"
    assert load_preprocessing(dst) == TORCHVISION
    new_params = load_vgg19_params(dst)
    # Independently of the library's means: the saved network has mean activation 1 on the
    # image it was normalized with, under the file's own preprocessing.
    rgb = load_image(DATA / "astronaut.png", max_side=32)
    after = features(new_params, rgb, TORCHVISION)
    before = features(load_vgg19_params(source_file), rgb, TORCHVISION)
    assert summary["images"] == 1 and summary["size"] == 32 and summary["dst"] == str(dst)
    for name in LAYERS:
        mean = before[name].mean(axis=(0, 1))
        live, atol = mean > 0, LAYER_RTOL * mean.max()
        np.testing.assert_allclose(((after[name].mean(axis=(0, 1)) - 1.0) * mean)[live], 0.0,
                                   atol=atol, err_msg=name)
        layer = summary["layers"][name]
        assert layer["dead"] == int((~live).sum())
        np.testing.assert_allclose([layer["min"], layer["max"]],
                                   [mean[live].min(), mean[live].max()], rtol=1e-4, atol=atol)


def test_file_refuses_to_overwrite(tmp_path, source_file):
    dst = tmp_path / "exists.h5"
    dst.write_bytes(b"keep me")
    with pytest.raises(NstError, match="already exists.*--overwrite"):
        normalize_weights_file(source_file, dst, [DATA / "astronaut.png"], size=32)
    assert dst.read_bytes() == b"keep me"


def test_file_never_overwrites_its_inputs(tmp_path, source_file):
    """Not the weights file, nor an image, even with ``overwrite`` (as ``convert`` refuses)."""
    src = tmp_path / "vgg19.h5"
    src.write_bytes(source_file.read_bytes())
    image = tmp_path / "photo.png"
    image.write_bytes((DATA / "astronaut.png").read_bytes())
    for dst, source in ((src, src), (tmp_path / "." / "vgg19.h5", src), (image, image)):
        with pytest.raises(NstError) as info:
            normalize_weights_file(src, dst, [image], size=32, overwrite=True)
        assert str(info.value) == f"{dst}: the output would overwrite the input {source}"
    assert src.read_bytes() == source_file.read_bytes()
    assert image.read_bytes() == (DATA / "astronaut.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "vgg19.h5"]


def test_file_errors_name_the_problem(tmp_path, source_file):
    dst = tmp_path / "out.h5"
    with pytest.raises(NstError, match="no images"):
        normalize_weights_file(source_file, dst, [], size=32)
    with pytest.raises(NstError, match="too small"):
        normalize_weights_file(source_file, dst, [DATA / "astronaut.png"], size=8)
    with pytest.raises(NstError, match="does not exist"):
        normalize_weights_file(source_file, tmp_path / "nope" / "out.h5",
                               [DATA / "astronaut.png"], size=32)
    with pytest.raises(NstError, match="missing.png"):
        normalize_weights_file(source_file, dst, [tmp_path / "missing.png"], size=32)
    with pytest.raises(WeightsError, match="no-weights.h5"):
        normalize_weights_file(tmp_path / "no-weights.h5", dst, [DATA / "astronaut.png"], size=32)
    assert not dst.exists()
