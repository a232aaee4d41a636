"""Issue 4 features built on the objective: style blends, guided Grams with region masks,
multi-scale and frame sequences. Golden values are computed in NumPy from the features."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import StyleConfig, extract_features, make_targets, preprocess, stylize
from nst_jax._image import load_image, resize_array
from nst_jax._losses import guided_gram, guided_style_error, normalized_style_error
from nst_jax._multiscale import pyramid_sizes, stylize_frames, stylize_multiscale
from nst_jax._optimize import initial_image, loss_weights, stylization_loss
from nst_jax._vgg import CAFFE, deprocess

DATA = Path(__file__).parent / "data"

# Two shallow style layers keep compiles and runs short; the mechanics do not depend on depth.
CONFIG = StyleConfig(content_layers=("conv2_1",), style_layers=("conv1_1", "conv2_1"))


@pytest.fixture(scope="module")
def images():
    content = resize_array(load_image(DATA / "chelsea.png"), 32)  # 22x32
    starry = resize_array(load_image(DATA / "starry_night.png"), 40)
    wave = resize_array(load_image(DATA / "great_wave.png"), 24)
    return content, starry, wave


def np_features(params, image, layers):
    return {k: np.asarray(v, np.float64)
            for k, v in extract_features(params, preprocess(image), layers).items()}


def np_gram_per_position(f):
    flat = f.reshape(-1, f.shape[-1])
    return flat.T @ flat / flat.shape[0]


def test_blend_target_is_weighted_mean_of_per_position_grams(random_params, images):
    content, starry, wave = images
    targets = make_targets(random_params, content, [starry, wave], CONFIG, style_blend=[3.0, 1.0])
    for i, name in enumerate(CONFIG.style_layers):
        a = np_gram_per_position(np_features(random_params, starry, [name])[name])
        b = np_gram_per_position(np_features(random_params, wave, [name])[name])
        np.testing.assert_allclose(targets.style_grams[i], 0.75 * a + 0.25 * b, rtol=2e-5)
    # Weight on one style only = that style alone.
    only = make_targets(random_params, content, [starry, wave], CONFIG, style_blend=[1.0, 0.0])
    single = make_targets(random_params, content, starry, CONFIG)
    for x, y in zip(only.style_grams, single.style_grams):
        np.testing.assert_allclose(x, y, rtol=1e-6)


def test_guided_gram_and_error_match_numpy():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(6, 5, 4)).astype(np.float32)
    masks = rng.uniform(size=(2, 6, 5)).astype(np.float32)
    targets = rng.normal(size=(2, 4, 4)).astype(np.float32)
    expected_error = 0.0
    for r in range(2):
        weighted = (f * masks[r][..., None]).reshape(-1, 4).astype(np.float64)
        g = weighted.T @ weighted / np.sum(masks[r].astype(np.float64) ** 2)
        np.testing.assert_allclose(guided_gram(f, masks)[r], g, rtol=1e-5)
        share = masks[r].mean()
        expected_error += share * np.sum((g - targets[r]) ** 2) / (4 * 4**2)
    np.testing.assert_allclose(guided_style_error(f, targets, masks), expected_error, rtol=1e-5)
    # An all-ones mask is the unguided error exactly.
    ones = np.ones((1, 6, 5), np.float32)
    np.testing.assert_allclose(guided_style_error(f, targets[:1], ones),
                               normalized_style_error(f, targets[0]), rtol=1e-6)


def test_masks_are_pooled_to_each_layer(random_params, images):
    content, starry, wave = images
    left = np.zeros(content.shape[:2], np.float32)
    left[:, :16] = 1.0
    masks = np.stack([left, 1.0 - left])
    targets = make_targets(random_params, content, [starry, wave], CONFIG, masks=masks)
    assert targets.style_grams[0].shape == (2, 64, 64)
    conv1, conv2 = targets.style_masks
    assert conv1.shape == (2, 22, 32) and conv2.shape == (2, 11, 16)
    np.testing.assert_array_equal(conv1, masks)
    np.testing.assert_allclose(conv2[0], masks[0].reshape(11, 2, 16, 2).mean(axis=(1, 3)))
    with pytest.raises(ValueError, match="one per style"):
        make_targets(random_params, content, [starry, wave], CONFIG, masks=masks[:1])
    with pytest.raises(ValueError, match="cannot be combined"):
        make_targets(random_params, content, [starry, wave], CONFIG, masks=masks,
                     style_blend=[1, 1])


def _region_error(params, image, region, style, name="conv1_1"):
    """Unguided-style error of the features inside a region (cropped) against one style."""
    f = extract_features(params, preprocess(image), [name])[name][:, region]
    a = np_gram_per_position(np_features(params, style, [name])[name]).astype(np.float32)
    return float(normalized_style_error(f, a))


def test_masks_route_each_style_to_its_region(random_params, images):
    content, starry, wave = images
    left = np.zeros(content.shape[:2], np.float32)
    left[:, :16] = 1.0
    result = stylize(content, [starry, wave], params=random_params, config=CONFIG,
                     masks=np.stack([left, 1.0 - left]), content_weight=1e-4,
                     style_weight=1.0, iterations=15, tol=0.0)
    assert result.history["loss"][-1] < 0.5 * result.history["loss"][0]
    left_cols, right_cols = slice(0, 16), slice(16, 32)
    # Each region moved towards its own style ...
    for cols, own in ((left_cols, starry), (right_cols, wave)):
        before = _region_error(random_params, content, cols, own)
        after = _region_error(random_params, result.image, cols, own)
        assert after < 0.5 * before, (before, after)
    # ... and is closer to its own style than to the other region's style.
    assert _region_error(random_params, result.image, left_cols, starry) < _region_error(
        random_params, result.image, left_cols, wave)
    assert _region_error(random_params, result.image, right_cols, wave) < _region_error(
        random_params, result.image, right_cols, starry)


def test_gaussian_init_is_the_weights_mean_colour(images):
    content = images[0]
    image = initial_image("gaussian", content, None, key=jax.random.key(0))
    np.testing.assert_allclose(np.asarray(image).mean(axis=(0, 1)), CAFFE.mean[::-1], atol=1e-3)
    np.testing.assert_allclose(deprocess(preprocess(image)), image, atol=1e-4)
    with pytest.raises(ValueError, match="expected"):
        initial_image(np.zeros((3, 3, 3)), content, None, key=jax.random.key(0))


def test_pyramid_sizes():
    assert pyramid_sizes(2048, factor=2, min_size=256) == [256, 512, 1024, 2048]
    assert pyramid_sizes(100, min_size=256) == [100]
    assert pyramid_sizes(1000, factor=1.5, min_size=400) == [444, 667, 1000]
    with pytest.raises(ValueError):
        pyramid_sizes(512, factor=1.0)


def test_multiscale_warm_starts_each_scale(random_params, images):
    content, starry, _ = images
    weights = {"content_weight": 1.0, "style_weight": 1e2, "tol": 0.0}
    result = stylize_multiscale(content, starry, params=random_params, config=CONFIG,
                                sizes=[16, 32], iterations=[8, 3], **weights)
    assert result.image.shape == content.shape
    assert [r.iterations for r in result.scales] == [8, 3]
    assert result.scales[0].image.shape == (11, 16, 3)
    # The fine scale starts from the upsampled coarse result: its first loss is far below that
    # of the content photo, where a single-scale run would start.
    cold = stylize(content, starry, params=random_params, config=CONFIG, iterations=0, **weights)
    assert result.scales[1].history["loss"][0] < 0.5 * cold.history["loss"][0]
    with pytest.raises(ValueError, match="last size"):
        stylize_multiscale(content, starry, params=random_params, config=CONFIG, sizes=[16, 64])
    with pytest.raises(ValueError, match="increasing"):
        stylize_multiscale(content, starry, params=random_params, config=CONFIG, sizes=[32, 16])


def test_frames_share_grams_and_warm_start(random_params, images, monkeypatch):
    content, starry, _ = images
    from nst_jax import _multiscale

    calls = []
    original = _multiscale.make_targets
    monkeypatch.setattr(_multiscale, "make_targets",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    shifted = np.roll(content, 2, axis=1)
    results = list(stylize_frames([content, content, shifted], starry, params=random_params,
                                  config=CONFIG, iterations=4, tol=0.0, style_weight=1e2))
    assert len(calls) == 1  # style Grams once for the whole sequence
    assert len(results) == 3
    # Frame 1 (same content) starts where frame 0 ended.
    weights = loss_weights(CONFIG, style=1e2)
    targets = make_targets(random_params, content, starry, CONFIG)
    end0, _ = stylization_loss(jnp.asarray(results[0].image), random_params, targets, weights,
                               CONFIG)
    np.testing.assert_allclose(results[1].history["loss"][0], float(end0), rtol=1e-4)
    # Frame 2's content features are its own: its loss is measured against the shifted photo.
    assert results[2].history["loss"][0] > results[1].history["loss"][-1]
    with pytest.raises(ValueError, match="one size"):
        list(stylize_frames([content, content[:16]], starry, params=random_params,
                            config=CONFIG, iterations=1))


def test_warm_start_caps_the_first_step(random_params, images):
    """A fixed-step L-BFGS-B's first move from B_0 = I throws pixels onto the bounds; from a
    warm start (an image as init: the coarse scale, the previous frame) it is capped."""
    content, starry, _ = images
    kwargs = {"params": random_params, "config": CONFIG, "iterations": 1, "tol": 0.0}
    cold = stylize(content, starry, init="content", **kwargs)
    warm = stylize(content, starry, init=content, **kwargs)
    assert cold.history["loss"][0] == warm.history["loss"][0]  # the same starting image
    moved = np.abs(np.asarray(warm.state.image) - content).max()
    assert 0 < moved <= 32.0 + 1e-3
    assert np.abs(np.asarray(cold.state.image) - content).max() > 100
