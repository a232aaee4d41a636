"""The Gatys objective (``nst_jax._objective``): targets, ``stylization_loss`` and its
composition from the public losses, gradients, vmapping over the loss weights, the config's
validation and the weights' own input convention."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import DATA
from nst_jax import (
    CAFFE,
    TORCHVISION,
    VGGWeights,
    content_loss,
    extract_features,
    gram_matrix,
    preprocess,
    style_layer_loss,
    total_variation,
)
from nst_jax._losses import style_error
from nst_jax._model import KERAS_LAYERS
from nst_jax._objective import (
    DEFAULT_CONTENT_WEIGHT,
    DEFAULT_STYLE_LAYERS,
    REFERENCE_PIXELS,
    StyleConfig,
    _pool_to_layer,
    content_weight_for,
    default_weights,
    loss_weights,
    make_targets,
    stylization_loss,
    tv_weight_for,
    with_weights,
)
from nst_jax.images import load_image, resize_array

STYLE_LAYER_WEIGHTS = (0.1, 0.3, 0.2, 0.25, 0.15)  # deliberately not uniform


@pytest.fixture(scope="module")
def small_problem(random_params):
    """A 16x24 content photo (the smallest size conv5_1 allows), a 19x24 style image, a random
    image, and weights chosen so that each of the three weighted terms is a sizable share."""
    small_content = resize_array(load_image(DATA / "chelsea.png"), 24)
    small_style = resize_array(load_image(DATA / "starry_night.png"), 24)
    assert small_content.shape[:2] != small_style.shape[:2]
    # The paper's losses, for which these weights give each term a sizable share; the default
    # (relative) losses are composed in their own test below.
    config = StyleConfig(content_norm="gatys", style_norm="gatys")
    weights = loss_weights(config, content=2.0, style=0.5, tv=0.1,
                           style_layers=STYLE_LAYER_WEIGHTS)
    targets = make_targets(random_params, jnp.asarray(small_content), jnp.asarray(small_style),
                           config)
    image = jnp.asarray(
        np.random.default_rng(0).uniform(20.0, 235.0, small_content.shape), jnp.float32)
    return small_content, small_style, image, config, weights, targets


def test_make_targets_are_content_features_and_style_grams(random_params, small_problem):
    small_content, small_style, _, _, _, targets = small_problem
    content_features = extract_features(random_params, preprocess(small_content), ["conv4_2"])
    style_features = extract_features(random_params, preprocess(small_style),
                                      list(DEFAULT_STYLE_LAYERS))
    assert len(targets.content_features) == 1
    np.testing.assert_allclose(targets.content_features[0], content_features["conv4_2"],
                               rtol=1e-6, atol=1e-6)
    assert len(targets.style_grams) == len(DEFAULT_STYLE_LAYERS)
    for gram, name in zip(targets.style_grams, DEFAULT_STYLE_LAYERS):
        # Per-position Grams A / M', so styles of any size compare with the image's G / M.
        positions = style_features[name].shape[0] * style_features[name].shape[1]
        np.testing.assert_allclose(gram, gram_matrix(style_features[name]) / positions,
                                   rtol=1e-5)


def test_stylization_loss_equals_composition_of_public_losses(random_params, small_problem):
    small_content, small_style, image, config, weights, targets = small_problem
    total, terms = stylization_loss(image, random_params, targets, weights, config)

    # Independent recomputation from the public pieces (docs/design.md, "The method").
    layers = ["conv4_2", *DEFAULT_STYLE_LAYERS]
    feats = extract_features(random_params, preprocess(image), layers)
    photo = extract_features(random_params, preprocess(small_content), ["conv4_2"])["conv4_2"]
    painting = extract_features(random_params, preprocess(small_style), list(DEFAULT_STYLE_LAYERS))
    l_content = content_loss(feats["conv4_2"], photo)
    # The style image has another size: each Gram is compared per position (A / M').
    l_style = sum(
        w * style_layer_loss(feats[name], gram_matrix(painting[name]),
                             a_positions=painting[name].shape[0] * painting[name].shape[1])
        for name, w in zip(DEFAULT_STYLE_LAYERS, STYLE_LAYER_WEIGHTS)
    )
    tv = total_variation(image)
    expected = 2.0 * l_content + 0.5 * l_style + 0.1 * tv

    # Each weighted term matters, so a dropped or mis-weighted term cannot hide.
    for share in (2.0 * l_content, 0.5 * l_style, 0.1 * tv):
        assert float(share) > 0.1 * float(expected)
    assert total.dtype == jnp.float32 and total.shape == ()
    np.testing.assert_allclose(terms["content"], l_content, rtol=1e-5)
    np.testing.assert_allclose(terms["style"], l_style, rtol=1e-5)
    np.testing.assert_allclose(terms["tv"], tv, rtol=1e-6)
    np.testing.assert_allclose(total, expected, rtol=1e-5)


def test_default_objective_is_the_relative_errors_of_the_public_losses(random_params,
                                                                        small_problem):
    """The default StyleConfig: content |X - P|^2 / |P|^2 and per layer
    |G/M - A/M'|^2 / |A/M'|^2, recomputed from the public losses and in NumPy."""
    small_content, small_style, image, _, _, _ = small_problem
    config = StyleConfig()
    targets = make_targets(random_params, jnp.asarray(small_content), jnp.asarray(small_style),
                           config)
    weights = loss_weights(config, content=1.0, style=10.0, tv=0.0,
                           style_layers=STYLE_LAYER_WEIGHTS)
    total, terms = stylization_loss(image, random_params, targets, weights, config)
    layers = ["conv4_2", *DEFAULT_STYLE_LAYERS]
    feats = {k: np.asarray(v, np.float64) for k, v in
             extract_features(random_params, preprocess(image), layers).items()}
    photo = np.asarray(extract_features(random_params, preprocess(small_content),
                                        ["conv4_2"])["conv4_2"], np.float64)
    painting = extract_features(random_params, preprocess(small_style), list(DEFAULT_STYLE_LAYERS))
    want_content = np.sum((feats["conv4_2"] - photo) ** 2) / np.sum(photo**2)
    want_style = 0.0
    for name, w in zip(DEFAULT_STYLE_LAYERS, STYLE_LAYER_WEIGHTS):
        f, a = feats[name], np.asarray(painting[name], np.float64)
        g = np.einsum("hwi,hwj->ij", f, f) / (f.shape[0] * f.shape[1])
        a_hat = np.einsum("hwi,hwj->ij", a, a) / (a.shape[0] * a.shape[1])
        want_style += w * np.sum((g - a_hat) ** 2) / np.sum(a_hat**2)
    np.testing.assert_allclose(terms["content"], want_content, rtol=1e-4)
    np.testing.assert_allclose(terms["style"], want_style, rtol=1e-4)
    np.testing.assert_allclose(total, want_content + 10.0 * want_style, rtol=1e-4)
    assert 0.05 < float(want_content) and 0.05 < float(want_style)  # neither term is ~0


def test_stylization_loss_gradient_matches_finite_differences(random_params, small_problem):
    """Directional central differences in float32, one term at a time and all together.

    Along the unit gradient direction d = g / |g| the derivative is |g|, the largest it can be,
    so float32 rounding and ReLU kinks stay far below the tolerance (measured: < 1% at
    h = 0.1 ... 3 pixel units); a gradient missing a term, or with channels swapped, is off by
    far more (a TV gradient lost to ``stop_gradient`` shows up as 8% in the mixed lane and as
    a zero gradient in the TV lane).
    """
    _, _, image, config, weights, targets = small_problem
    one_hot = [loss_weights(config, content=a, style=b, tv=c, style_layers=STYLE_LAYER_WEIGHTS)
               for a, b, c in [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]]
    batch = jax.tree.map(lambda *lanes: jnp.stack(lanes), *one_hot, weights)

    def loss(x, w):
        return stylization_loss(x, random_params, targets, w, config)[0]

    @jax.jit
    def check(x, h):
        grads = jax.vmap(jax.grad(loss), in_axes=(None, 0))(x, batch)
        norms = jnp.sqrt(jnp.sum(jnp.square(grads), axis=(1, 2, 3)))
        directions = grads / norms[:, None, None, None]
        lanes = jax.vmap(loss)
        return norms, (lanes(x + h * directions, batch) - lanes(x - h * directions, batch)) / (2 * h)

    norms, finite_differences = check(image, 1.0)
    assert np.all(np.asarray(norms) > 1.0), norms
    np.testing.assert_allclose(finite_differences, norms, rtol=0.02)


def test_stylization_loss_vmaps_over_weights(random_params, small_problem):
    _, _, image, config, weights, targets = small_problem
    other = loss_weights(config, content=0.5, style=7.0, tv=0.0)
    batch = jax.tree.map(lambda a, b: jnp.stack([a, b]), weights, other)
    totals = jax.jit(jax.vmap(
        lambda w: stylization_loss(image, random_params, targets, w, config)[0]))(batch)
    expected = [stylization_loss(image, random_params, targets, w, config)[0]
                for w in (weights, other)]
    np.testing.assert_allclose(totals, expected, rtol=1e-5)


@pytest.mark.parametrize("content_norm, style_norm", [("gatys", "mean"), ("mean", "gatys")])
def test_each_term_uses_its_own_normalisation_and_layer_weights(random_params, content_norm,
                                                               style_norm):
    """content_norm goes to the content loss, style_norm to the style error (the two differ
    here, so neither can stand in for the other), and each content layer has its own weight."""
    config = StyleConfig(content_layers=("conv1_1", "conv2_1"), style_layers=("conv1_1",),
                         content_norm=content_norm, style_norm=style_norm)
    rng = np.random.default_rng(5)
    photo, painting, image = (jnp.asarray(rng.uniform(0, 255, (12, 10, 3)), jnp.float32)
                              for _ in range(3))
    targets = make_targets(random_params, photo, painting, config)
    weights = loss_weights(config, content=1.0, style=1.0, content_layers=[0.3, 2.0])
    _, terms = stylization_loss(image, random_params, targets, weights, config)
    layers = ("conv1_1", "conv2_1")
    feats = extract_features(random_params, preprocess(image), layers)
    photo_feats = extract_features(random_params, preprocess(photo), layers)
    painting_feats = extract_features(random_params, preprocess(painting), ["conv1_1"])
    expected_content = sum(w * content_loss(feats[n], photo_feats[n], norm=content_norm)
                           for w, n in zip((0.3, 2.0), layers))
    target = gram_matrix(painting_feats["conv1_1"]) / (12 * 10)
    expected_style = style_error(feats["conv1_1"], target, norm=style_norm)
    np.testing.assert_allclose(terms["content"], expected_content, rtol=1e-5)
    np.testing.assert_allclose(terms["style"], expected_style, rtol=1e-5)


def test_default_layer_weights_are_one_over_the_number_of_layers():
    weights = loss_weights(StyleConfig(content_layers=("conv1_1", "conv4_2")))
    np.testing.assert_allclose(weights.content_layers, [0.5, 0.5])
    np.testing.assert_allclose(weights.style_layers, [0.2] * 5)


def test_content_weight_scales_with_the_number_of_pixels_for_the_summed_loss_only():
    """With the Gatys (summed) content loss alpha = per_reference * 128^2 / (H W): a 64x32
    image gets 8x, a 256x512 one 1/8. The relative (default) and mean losses do not grow with
    the image, so alpha stays per_reference."""
    assert REFERENCE_PIXELS == 128 * 128
    assert content_weight_for((64, 32, 3), 3.0, norm="gatys") == pytest.approx(24.0)
    assert content_weight_for((256, 512), 1.0, norm="gatys") == pytest.approx(0.125)
    for norm in ("relative", "mean"):
        assert content_weight_for((64, 32, 3), 3.0, norm=norm) == 3.0
    assert content_weight_for((256, 512)) == DEFAULT_CONTENT_WEIGHT
    config = StyleConfig()
    assert (config.content_norm, config.style_norm) == ("relative", "relative")
    assert default_weights(config, (256, 512)) == (DEFAULT_CONTENT_WEIGHT,
                                                   tv_weight_for((256, 512)))
    assert default_weights(StyleConfig(content_norm="gatys"), (256, 512), tv=3.0) == (0.125, 3.0)


def test_masks_are_average_pooled_at_every_depth():
    """Soft masks of odd size, pooled 2x2/2 (floored) once per pooling before the layer."""
    masks = np.random.default_rng(6).uniform(size=(2, 23, 35)).astype(np.float32)

    def np_pool(m):
        h, w = m.shape[1] // 2 * 2, m.shape[2] // 2 * 2
        return m[:, :h, :w].reshape(m.shape[0], h // 2, 2, w // 2, 2).mean(axis=(2, 4))

    expected = masks.astype(np.float64)
    for block in range(1, 6):
        np.testing.assert_allclose(_pool_to_layer(jnp.asarray(masks), f"conv{block}_1"),
                                   expected, rtol=1e-6, atol=1e-7)
        expected = np_pool(expected)


@pytest.mark.parametrize("kwargs", [
    {"pooling": "median"},
    {"style_layers": ("conv6_1",)},
    {"style_layers": ("conv1_1", "pool2")},
    {"content_layers": ("block4_conv9",)},
    {"style_layers": ()},
    {"dtype": "float16"},
    {"layer_output": "pool"},
    {"content_norm": "sum"},
    {"style_norm": "sum"},
    {"tv_form": "l1"},
])
def test_bad_config_raises(kwargs):
    with pytest.raises(ValueError):
        StyleConfig(**kwargs)


def test_preprocessing_must_be_a_preprocessing():
    with pytest.raises(TypeError):
        StyleConfig(preprocessing="caffe")


@pytest.mark.parametrize("kwargs, solver", [
    ({"optimizer": "adam", "learning_rate": 30.0}, {"name": "adam", "learning_rate": 30.0}),
    ({"history_size": 5, "linesearch": "zoom"}, {"history_size": 5, "linesearch": "zoom"}),
])
def test_deprecated_optimizer_fields_warn_and_become_solver_settings(kwargs, solver):
    """The optimizer left the objective (nst_jax.solvers); its old StyleConfig fields warn and
    are what stylize builds its solver from."""
    with pytest.warns(DeprecationWarning, match="SolverConfig"):
        config = StyleConfig(**kwargs)
    assert config.legacy_solver_settings() == solver
    assert StyleConfig().legacy_solver_settings() == {}


def test_keras_layer_names_are_accepted():
    config = StyleConfig(content_layers=("block4_conv2",), style_layers=("block1_conv1", "conv2_1"))
    assert config.feature_layers == ("conv1_1", "conv2_1", "conv4_2")


def test_wrong_number_of_layer_weights_raises():
    config = StyleConfig()
    with pytest.raises(ValueError, match="5"):
        loss_weights(config, style_layers=[0.5, 0.5])
    with pytest.raises(ValueError):
        loss_weights(config, content_layers=[1.0, 1.0])


def test_with_weights_applies_the_recorded_preprocessing(random_params):
    """preprocessing=None means the weights' own convention; an explicit one overrides it; a
    plain params pytree records none (CAFFE is then used)."""
    weights = VGGWeights(random_params, TORCHVISION, {"kind": "random"})
    config, params = with_weights(StyleConfig(), weights)
    assert config.preprocessing == TORCHVISION and params["params"] is random_params["params"]
    assert StyleConfig().preprocessing is None  # the caller's config is not changed
    config, _ = with_weights(StyleConfig(preprocessing=CAFFE), weights)
    assert config.preprocessing == CAFFE
    config, params = with_weights(StyleConfig(), random_params)
    assert config.preprocessing is None and params["params"] is random_params["params"]


def test_with_weights_adds_the_backward_kernels_of_the_layers_read(random_params):
    """The input-gradient kernels of every conv up to the deepest layer the objective reads,
    and no others; idempotent."""
    _, params = with_weights(StyleConfig(), random_params)  # deepest: conv5_1
    assert sorted(params["backward"]) == sorted(KERAS_LAYERS[:13])
    _, again = with_weights(StyleConfig(), params)
    assert again is params
    shallow = StyleConfig(content_layers=("conv2_1",), style_layers=("conv1_1", "conv2_1"))
    _, params = with_weights(shallow, random_params)
    assert sorted(params["backward"]) == ["block1_conv1", "block1_conv2", "block2_conv1"]
    # Deeper layers later: only the missing kernels are added, the others kept as they are.
    _, deeper = with_weights(StyleConfig(), params)
    assert sorted(deeper["backward"]) == sorted(KERAS_LAYERS[:13])
    assert deeper["backward"]["block1_conv1"] is params["backward"]["block1_conv1"]


# ------------------------------------------------------------ several styles: blends and masks

# Two shallow style layers keep compiles and runs short; the mechanics do not depend on depth.
SHALLOW = StyleConfig(content_layers=("conv2_1",), style_layers=("conv1_1", "conv2_1"))


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
    targets = make_targets(random_params, content, [starry, wave], SHALLOW, style_blend=[3.0, 1.0])
    for i, name in enumerate(SHALLOW.style_layers):
        a = np_gram_per_position(np_features(random_params, starry, [name])[name])
        b = np_gram_per_position(np_features(random_params, wave, [name])[name])
        np.testing.assert_allclose(targets.style_grams[i], 0.75 * a + 0.25 * b, rtol=2e-5)
    # Weight on one style only = that style alone.
    only = make_targets(random_params, content, [starry, wave], SHALLOW, style_blend=[1.0, 0.0])
    single = make_targets(random_params, content, starry, SHALLOW)
    for x, y in zip(only.style_grams, single.style_grams):
        np.testing.assert_allclose(x, y, rtol=1e-6)


def test_masks_are_pooled_to_each_layer(random_params, images):
    content, starry, wave = images
    left = np.zeros(content.shape[:2], np.float32)
    left[:, :16] = 1.0
    masks = np.stack([left, 1.0 - left])
    targets = make_targets(random_params, content, [starry, wave], SHALLOW, masks=masks)
    assert targets.style_grams[0].shape == (2, 64, 64)
    conv1, conv2 = targets.style_masks
    assert conv1.shape == (2, 22, 32) and conv2.shape == (2, 11, 16)
    np.testing.assert_array_equal(conv1, masks)
    np.testing.assert_allclose(conv2[0], masks[0].reshape(11, 2, 16, 2).mean(axis=(1, 3)))
    with pytest.raises(ValueError, match="one per style"):
        make_targets(random_params, content, [starry, wave], SHALLOW, masks=masks[:1])
    with pytest.raises(ValueError, match="cannot be combined"):
        make_targets(random_params, content, [starry, wave], SHALLOW, masks=masks,
                     style_blend=[1, 1])
