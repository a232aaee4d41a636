"""Gatys et al. losses against independent float64 NumPy implementations.

The golden values below are computed from the formulas in docs/design.md ("The method"), never by
calling the library. Every golden test runs both eagerly and under ``jax.jit``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from nst_jax import (
    content_loss,
    gram_matrix,
    guided_gram,
    style_error,
    style_layer_loss,
    style_loss,
    style_target,
    total_variation,
)
from nst_jax._losses import guided_style_error

RTOL = 1e-5

# (H, W, C) shapes of feature maps: square, H != W both ways, one channel.
SHAPES = [(4, 4, 3), (5, 3, 8), (3, 7, 6), (6, 9, 1)]


# --------------------------------------------------------------------------- NumPy references


def np_gram(f: np.ndarray) -> np.ndarray:
    """G_ij = sum_k F_ik F_jk with F the (M, N) reshaped map, in float64."""
    f = np.asarray(f, np.float64)
    h, w, n = f.shape
    flat = f.reshape(h * w, n)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            out[i, j] = np.sum(flat[:, i] * flat[:, j])
    return out


def np_content_loss(x: np.ndarray, p: np.ndarray) -> float:
    d = np.asarray(x, np.float64) - np.asarray(p, np.float64)
    return 0.5 * float(np.sum(d * d))


def np_style_layer_loss(x: np.ndarray, a_gram: np.ndarray, a_positions=None) -> float:
    """Gatys Eq. 4, 1/(4 N^2 M^2) sum (G - A)^2; for a style map of M' != M positions, each
    Gram per position: 1/(4 N^2) sum (G/M - A/M')^2."""
    h, w, n = x.shape
    m = h * w
    a_positions = m if a_positions is None else a_positions
    d = np_gram(x) / m - np.asarray(a_gram, np.float64) / a_positions
    return float(np.sum(d * d)) / (4.0 * n**2)


def np_style_loss(features, style_maps, weights=None) -> float:
    """sum_l w_l E_l with each style map's Gram per position (it may have any H, W)."""
    if weights is None:
        weights = {name: 1.0 / len(style_maps) for name in style_maps}
    return sum(
        float(weights[name]) * np_style_layer_loss(
            features[name], np_gram(style_maps[name]),
            style_maps[name].shape[0] * style_maps[name].shape[1])
        for name in style_maps
    )


def np_total_variation(img: np.ndarray) -> float:
    img = np.asarray(img, np.float64)
    h, w, c = img.shape
    total = 0.0
    for i in range(h):
        for j in range(w):
            for k in range(c):
                if i + 1 < h:
                    total += (img[i + 1, j, k] - img[i, j, k]) ** 2
                if j + 1 < w:
                    total += (img[i, j + 1, k] - img[i, j, k]) ** 2
    return total


# --------------------------------------------------------------------------- helpers / fixtures


def rand(shape, seed, scale=1.0, relu=True):
    """Random float32 map; ReLU-like (non-negative) by default, like VGG activations."""
    a = np.random.default_rng(seed).normal(size=shape) * scale
    if relu:
        a = np.abs(a)
    return a.astype(np.float32)


@pytest.fixture(params=["eager", "jit"])
def transform(request):
    return (lambda f: f) if request.param == "eager" else jax.jit


def assert_f32_scalar(value):
    assert isinstance(value, jax.Array)
    assert value.shape == ()
    assert value.dtype == jnp.float32


def style_setup(seed=0):
    """Features of a generated image at three layers and the features of a style image whose
    maps have a different H, W (including H != W) than the generated image's."""
    x_shapes = {"conv1_1": (8, 6, 4), "conv2_1": (4, 3, 6), "conv3_1": (2, 2, 5)}
    s_shapes = {"conv1_1": (5, 9, 4), "conv2_1": (3, 5, 6), "conv3_1": (1, 3, 5)}
    feats = {name: rand(shape, seed + k) for k, (name, shape) in enumerate(x_shapes.items())}
    style_maps = {
        name: rand(shape, seed + 10 + k, scale=1.3)
        for k, (name, shape) in enumerate(s_shapes.items())
    }
    return feats, style_maps


# --------------------------------------------------------------------------- golden values


@pytest.mark.parametrize("shape", SHAPES)
def test_gram_matrix_golden(transform, shape):
    f = rand(shape, 1, relu=False)
    got = transform(gram_matrix)(f)
    assert got.shape == (shape[-1], shape[-1])
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), np_gram(f), rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got), np.asarray(got).T, rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_content_loss_golden(transform, shape):
    x, p = rand(shape, 2), rand(shape, 3)
    got = transform(content_loss)(x, p)
    assert_f32_scalar(got)
    np.testing.assert_allclose(float(got), np_content_loss(x, p), rtol=RTOL)
    assert float(transform(content_loss)(x, x)) == 0.0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("style_hw", [(5, 5), (7, 2)])
def test_style_layer_loss_golden(transform, shape, style_hw):
    x = rand(shape, 4)
    # The style Gram comes from a map of another (H, W): M in the formula is the one of x.
    a_gram = np_gram(rand((*style_hw, shape[-1]), 5, scale=2.0)).astype(np.float32)
    got = transform(style_layer_loss)(x, a_gram)
    assert_f32_scalar(got)
    np.testing.assert_allclose(float(got), np_style_layer_loss(x, a_gram), rtol=RTOL)


def test_style_layer_loss_normalization(transform):
    """E_l = sum (G - A)^2 / (4 N^2 M^2) with M = H * W (not the side length) and G - A."""
    h, w, n = 3, 5, 2
    x = np.ones((h, w, n), np.float32)  # G = M * ones(N, N)
    a_gram = np.zeros((n, n), np.float32)
    got = float(transform(style_layer_loss)(x, a_gram))
    m = h * w
    expected = (n * n * m**2) / (4.0 * n**2 * m**2)
    np.testing.assert_allclose(got, expected, rtol=RTOL)  # = 0.25
    # Sign of the difference does not matter for the loss but the difference does: G == A -> 0.
    assert float(transform(style_layer_loss)(x, np_gram(x).astype(np.float32))) == 0.0


@pytest.mark.parametrize("style_hw", [(5, 5), (7, 2)])
def test_style_target_is_the_gram_per_position(transform, style_hw):
    f = rand((*style_hw, 4), 23)
    got = transform(style_target)(f)
    assert got.shape == (4, 4) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), np_gram(f) / (style_hw[0] * style_hw[1]),
                               rtol=RTOL)


@pytest.mark.parametrize("norm", ["gatys", "mean"])
@pytest.mark.parametrize("style_hw", [(4, 6), (7, 2)])
def test_style_error_golden(transform, norm, style_hw):
    """E_l = c * sum (G/M - A_hat)^2 with c = 1/(4 N^2) ("gatys") or 1/N^4 ("mean"); against
    the style map's own target it equals style_layer_loss with a_positions = M'."""
    x, style = rand((4, 6, 3), 24), rand((*style_hw, 3), 25, scale=1.5)
    a_positions = style_hw[0] * style_hw[1]
    target = (np_gram(style) / a_positions).astype(np.float32)
    got = transform(lambda a, t: style_error(a, t, norm=norm))(x, target)
    assert_f32_scalar(got)
    d = np_gram(x) / x[..., 0].size - np_gram(style) / a_positions
    expected = np.sum(d * d) / (4.0 * 9 if norm == "gatys" else 3.0**4)
    np.testing.assert_allclose(float(got), expected, rtol=RTOL)
    via_gram = style_layer_loss(x, np_gram(style).astype(np.float32), a_positions=a_positions,
                                norm=norm)
    np.testing.assert_allclose(float(via_gram), expected, rtol=RTOL)
    if norm == "gatys":
        np.testing.assert_allclose(
            float(got), np_style_layer_loss(x, np_gram(style), a_positions), rtol=RTOL)


def test_style_loss_with_grams_is_deprecated_and_means_the_outputs_size(transform):
    """A 2-D Gram (the old calling convention) still works, warns, and is taken as the Gram of
    a style image of the output's size (Gatys Eq. 4 with M' = M)."""
    feats, styles = style_setup(seed=7)
    grams = {name: np_gram(m).astype(np.float32) for name, m in styles.items()}
    with pytest.warns(DeprecationWarning, match="features"):
        got = transform(style_loss)(feats, grams)
    expected = np.mean([np_style_layer_loss(feats[n], grams[n]) for n in grams])
    np.testing.assert_allclose(float(got), expected, rtol=RTOL)


def test_style_loss_default_weights_golden(transform):
    feats, styles = style_setup()
    got = transform(style_loss)(feats, styles)
    assert_f32_scalar(got)
    expected = np_style_loss(feats, styles)
    np.testing.assert_allclose(float(got), expected, rtol=RTOL)
    # Default is w_l = 1/L, i.e. the mean of the per-layer losses.
    per_layer = [np_style_layer_loss(feats[n], np_gram(styles[n]), styles[n][..., 0].size)
                 for n in styles]
    np.testing.assert_allclose(float(got), np.mean(per_layer), rtol=RTOL)


def test_style_loss_explicit_weights_golden(transform):
    feats, styles = style_setup(seed=3)
    weights = {"conv1_1": 0.5, "conv2_1": 2.0, "conv3_1": 0.0}
    got = transform(style_loss)(feats, styles, {k: jnp.float32(v) for k, v in weights.items()})
    assert_f32_scalar(got)
    np.testing.assert_allclose(float(got), np_style_loss(feats, styles, weights), rtol=RTOL)


def test_style_loss_only_layers_of_style_features(transform):
    """Layers are those of ``style_features``; extra feature maps are ignored."""
    feats, styles = style_setup(seed=5)
    sub = {"conv2_1": styles["conv2_1"]}
    got = transform(style_loss)(feats, sub)
    np.testing.assert_allclose(
        float(got), np_style_layer_loss(feats["conv2_1"], np_gram(styles["conv2_1"]),
                                        styles["conv2_1"][..., 0].size), rtol=RTOL
    )


@pytest.mark.parametrize("shape", SHAPES + [(1, 5, 3), (4, 1, 2)])
def test_total_variation_golden(transform, shape):
    img = rand(shape, 6, scale=60.0, relu=False) + 120.0
    got = transform(total_variation)(img)
    assert_f32_scalar(got)
    np.testing.assert_allclose(float(got), np_total_variation(img), rtol=RTOL)


def np_total_variation_neural_style(img: np.ndarray) -> float:
    """1/2 sum over positions with both a right and a lower neighbour of the squared
    differences to each (jcjohnson/neural-style's TVLoss), written as loops."""
    img = np.asarray(img, np.float64)
    h, w, c = img.shape
    total = 0.0
    for i in range(h - 1):
        for j in range(w - 1):
            for k in range(c):
                total += (img[i, j + 1, k] - img[i, j, k]) ** 2
                total += (img[i + 1, j, k] - img[i, j, k]) ** 2
    return 0.5 * total


@pytest.mark.parametrize("shape", SHAPES + [(2, 2, 3)])
def test_total_variation_neural_style_golden(transform, shape):
    img = rand(shape, 16, scale=60.0, relu=False) + 120.0
    got = transform(lambda x: total_variation(x, form="neural-style"))(img)
    assert_f32_scalar(got)
    np.testing.assert_allclose(float(got), np_total_variation_neural_style(img), rtol=RTOL)


def test_total_variation_constant_image_is_zero(transform):
    assert float(transform(total_variation)(np.full((5, 4, 3), 77.0, np.float32))) == 0.0


# --------------------------------------------------------------------------- guided Grams


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
                               style_error(f, targets[0]), rtol=1e-6)


# --------------------------------------------------------------------------- normalisations
# Golden values of every normalisation mode. The "mean" references follow neural-style's
# definitions, not the library's algebra: the content loss is nn.MSECriterion of the feature
# maps; the style loss is nn.MSECriterion of Grams each divided by its map's number of elements
# (N M), i.e. the mean over the N^2 entries of (G/(N M) - A/(N M'))^2 (= sum (G/M - A/M')^2 / N^4).
# "gatys" is Eq. 1 (1/2 sum (X - P)^2) and Eq. 4 (sum (G - A)^2 / (4 N^2 M^2)).


def np_content_mean(x, p):
    return float(np.mean((np.asarray(x, np.float64) - np.asarray(p, np.float64)) ** 2))


def np_style_mean(x, style):
    """neural-style's StyleLoss: MSE of G / nElement, the Grams of the output and the style."""
    g = np_gram(x) / x.size
    a = np_gram(style) / np.asarray(style).size
    return float(np.mean((g - a) ** 2))


def np_content_relative(x, p):
    """The squared relative error |X - P|^2 / |P|^2 (norm="relative")."""
    x, p = np.asarray(x, np.float64), np.asarray(p, np.float64)
    return float(np.sum((x - p) ** 2) / np.sum(p**2))


def np_content(x, p, norm):
    return {"gatys": np_content_loss, "mean": np_content_mean,
            "relative": np_content_relative}[norm](x, p)


def np_style(x, style, norm):
    if norm == "mean":
        return np_style_mean(x, style)
    n, m, m_style = x.shape[-1], x.shape[0] * x.shape[1], style.shape[0] * style.shape[1]
    a_hat = np_gram(style) / m_style
    squared = float(np.sum((np_gram(x) / m - a_hat) ** 2))
    if norm == "relative":  # each layer against its own scale: |G/M - A/M'|^2 / |A/M'|^2
        return squared / float(np.sum(a_hat**2))
    return squared / (4.0 * n**2)


@pytest.mark.parametrize("norm", ["gatys", "mean", "relative"])
def test_every_normalisation_mode_has_exact_small_values(norm):
    """Hand-computable values pin each constant: X = 1 (H W N = 3*5*3), P = A = 0.

    content: "gatys" 1/2 * 45 = 22.5, "mean" 1. style: G/M = ones(3, 3), so "gatys"
    9 / (4 * 9) = 0.25 and "mean" 9 / 3^4 = 1/9 (N^3 would give 1/3, N^2 1). "relative"
    divides by the target's own square norm: against P = 2 (|P|^2 = 180) content
    45 / 180 = 1/4; against A_hat = 2 (|A_hat|^2 = 36) style 9 / 36 = 1/4."""
    x = np.ones((3, 5, 3), np.float32)
    relative = norm == "relative"
    target = np.full((3, 3), 2.0 if relative else 0.0, np.float32)
    photo = np.full_like(x, 2.0 if relative else 0.0)
    content = {"gatys": 22.5, "mean": 1.0, "relative": 0.25}[norm]
    style = {"gatys": 0.25, "mean": 1.0 / 9.0, "relative": 0.25}[norm]
    np.testing.assert_allclose(float(content_loss(x, photo, norm=norm)), content, rtol=1e-6)
    np.testing.assert_allclose(float(style_error(x, target, norm=norm)), style, rtol=1e-6)
    np.testing.assert_allclose(float(style_layer_loss(x, target * 15, norm=norm)), style,
                               rtol=1e-6)
    np.testing.assert_allclose(float(style_layer_loss(x, target * 7, a_positions=7, norm=norm)),
                               style, rtol=1e-6)
    np.testing.assert_allclose(float(guided_style_error(x, target[None], np.ones((1, 3, 5)),
                                                        norm=norm)), style, rtol=1e-6)
    style_map = np.full((2, 2, 3), np.sqrt(2.0 / 3.0) if relative else 0.0)  # A_hat = 2 or 0
    np.testing.assert_allclose(float(style_loss({"a": x}, {"a": style_map}, norm=norm)), style,
                               rtol=1e-6)


def test_relative_norms_are_finite_for_zero_targets():
    """A blank target (all-zero features) must not give NaN: the error is then |X|^2 / tiny,
    large but finite, and its gradient too."""
    x = np.ones((3, 5, 3), np.float32)
    assert np.isfinite(float(content_loss(x, np.zeros_like(x), norm="relative")))
    assert np.isfinite(float(style_error(x, np.zeros((3, 3), np.float32), norm="relative")))
    assert float(style_error(np.zeros_like(x), np.zeros((3, 3), np.float32),
                             norm="relative")) == 0.0


@pytest.mark.parametrize("norm", ["gatys", "mean", "relative"])
@pytest.mark.parametrize("n", [1, 3, 8])
def test_every_normalisation_mode_golden(transform, norm, n):
    """Content and style losses of each mode against the NumPy references above, with N = 1, 3
    and 8 channels (a power of N wrong is a factor of N off) and a style map of another size."""
    x, p = rand((5, 6, n), 40), rand((5, 6, n), 41)
    style = rand((8, 4, n), 42, scale=1.7)
    m_style = style.shape[0] * style.shape[1]
    want_content = np_content(x, p, norm)
    want_style = np_style(x, style, norm)
    got = transform(lambda a, b: content_loss(a, b, norm=norm))(x, p)
    np.testing.assert_allclose(float(got), want_content, rtol=RTOL)
    target = (np_gram(style) / m_style).astype(np.float32)
    got = transform(lambda a, t: style_error(a, t, norm=norm))(x, target)
    np.testing.assert_allclose(float(got), want_style, rtol=RTOL)
    got = transform(lambda a, g: style_layer_loss(a, g, a_positions=m_style, norm=norm))(
        x, np_gram(style).astype(np.float32))
    np.testing.assert_allclose(float(got), want_style, rtol=RTOL)
    got = transform(lambda a, s: style_loss({"l": a}, {"l": s}, norm=norm))(x, style)
    np.testing.assert_allclose(float(got), want_style, rtol=RTOL)
    # The same-size convention of style_layer_loss (M' = M): the style map cut to x's size.
    same = style.reshape(-1, n)[: 5 * 6].reshape(5, 6, n)
    got = style_layer_loss(x, np_gram(same).astype(np.float32), norm=norm)
    np.testing.assert_allclose(float(got), np_style(x, same, norm), rtol=RTOL)


@pytest.mark.parametrize("norm", ["gatys", "mean", "relative"])
def test_guided_style_error_golden_in_every_mode(norm):
    """sum_r share_r * E_r with E_r the mode's error of the region's guided Gram."""
    rng = np.random.default_rng(3)
    f = rng.normal(size=(6, 5, 4)).astype(np.float32)
    masks = rng.uniform(size=(2, 6, 5)).astype(np.float32)
    targets = rng.normal(size=(2, 4, 4)).astype(np.float32)
    expected = 0.0
    for r in range(2):
        weighted = (f * masks[r][..., None]).reshape(-1, 4).astype(np.float64)
        g = weighted.T @ weighted / np.sum(masks[r].astype(np.float64) ** 2)
        d = g - targets[r]
        error = {"mean": np.mean((d / 4) ** 2), "gatys": np.sum(d * d) / (4 * 4**2),
                 "relative": np.sum(d * d) / np.sum(targets[r].astype(np.float64) ** 2)}[norm]
        expected += masks[r].mean() * error
    np.testing.assert_allclose(float(guided_style_error(f, targets, masks, norm=norm)), expected,
                               rtol=1e-5)


# --------------------------------------------------------------------------- dtypes


def test_bfloat16_features_give_float32():
    x32, p32 = rand((4, 6, 5), 7), rand((4, 6, 5), 8)
    xb, pb = jnp.asarray(x32, jnp.bfloat16), jnp.asarray(p32, jnp.bfloat16)
    # Golden values from the bf16-rounded inputs, in float64.
    xr, pr = np.asarray(xb, np.float64), np.asarray(pb, np.float64)
    a_gram = np_gram(rand((3, 3, 5), 9)).astype(np.float32)

    g = gram_matrix(xb)
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(g), np_gram(xr), rtol=RTOL)

    c = content_loss(xb, pb)
    assert_f32_scalar(c)
    np.testing.assert_allclose(float(c), np_content_loss(xr, pr), rtol=RTOL)

    s = style_layer_loss(xb, a_gram)
    assert_f32_scalar(s)
    np.testing.assert_allclose(float(s), np_style_layer_loss(xr, a_gram), rtol=1e-4)

    s2 = style_layer_loss(xb, jnp.asarray(a_gram, jnp.bfloat16))
    assert_f32_scalar(s2)

    total = style_loss({"a": xb}, {"a": pb})
    assert_f32_scalar(total)

    tv = total_variation(xb)
    assert_f32_scalar(tv)
    np.testing.assert_allclose(float(tv), np_total_variation(xr), rtol=RTOL)


# --------------------------------------------------------------------------- gradients

# float32 throughout: the functions compute in float32 whatever the input, so finite
# differences are float32 too. The losses are low-degree polynomials, so a moderate eps is
# accurate while keeping round-off small.
GRAD_TOL = {"order": 1, "modes": ["rev"], "eps": 1e-2, "atol": 2e-2, "rtol": 2e-2}


def test_grad_gram_matrix():
    """The Gram's hand-written derivative: finite differences in forward and reverse mode, to
    second order, and the closed form d/dF sum(G o C) = F (C + C^T) for a non-symmetric C."""
    f = rand((3, 4, 2), 10, relu=False)
    c = np.arange(4.0, dtype=np.float32).reshape(2, 2)
    weighted = lambda a: jnp.sum(gram_matrix(a) * c)
    check_grads(weighted, (f,), **{**GRAD_TOL, "order": 2, "modes": ["fwd", "rev"]})
    flat = f.reshape(-1, 2).astype(np.float64)
    expected = (flat @ (c + c.T)).reshape(f.shape)
    np.testing.assert_allclose(np.asarray(jax.grad(weighted)(f)), expected, rtol=RTOL, atol=1e-5)
    tangent = rand((3, 4, 2), 11, relu=False).astype(np.float64)
    _, d_gram = jax.jvp(gram_matrix, (f,), (tangent.astype(np.float32),))
    d_flat = tangent.reshape(-1, 2)
    np.testing.assert_allclose(np.asarray(d_gram), flat.T @ d_flat + d_flat.T @ flat,
                               rtol=RTOL, atol=1e-5)
    # bfloat16 features: float32 Gram, a bfloat16 gradient of the same shape.
    g = jax.grad(lambda a: jnp.sum(gram_matrix(a)))(f.astype(jnp.bfloat16))
    assert g.dtype == jnp.bfloat16 and g.shape == f.shape


def test_grad_content_loss():
    x, p = rand((3, 4, 2), 11), rand((3, 4, 2), 12)
    check_grads(content_loss, (x, p), **GRAD_TOL)


def test_grad_style_layer_loss():
    x = rand((3, 4, 2), 13)
    a_gram = np_gram(rand((2, 5, 2), 14, scale=1.5)).astype(np.float32)
    # Scale up so that the (tiny, 1/(4 N^2 M^2)-normalized) loss is O(1).
    check_grads(lambda a: 1e3 * style_layer_loss(a, a_gram), (x,), **GRAD_TOL)


def test_grad_style_loss():
    feats, styles = style_setup(seed=15)
    feats = {k: v[:3, :3] for k, v in feats.items()}
    weights = {"conv1_1": 1.0, "conv2_1": 0.5, "conv3_1": 2.0}
    check_grads(lambda f: 1e3 * style_loss(f, styles, weights), (feats,), **GRAD_TOL)
    # Gradient w.r.t. the (traced) layer weights: d L_s / d w_l = E_l.
    g = jax.grad(lambda w: style_loss(feats, styles, w))(
        {k: jnp.float32(v) for k, v in weights.items()}
    )
    for name in styles:
        np.testing.assert_allclose(
            float(g[name]), np_style_layer_loss(feats[name], np_gram(styles[name]),
                                                styles[name][..., 0].size), rtol=RTOL
        )


def test_grad_total_variation():
    img = rand((4, 3, 3), 16, relu=False)
    check_grads(total_variation, (img,), **GRAD_TOL)


def test_grad_content_loss_closed_form():
    """d L_c / d X = X - P exactly."""
    x, p = rand((3, 5, 4), 17), rand((3, 5, 4), 18)
    g = jax.grad(content_loss)(x, p)
    np.testing.assert_allclose(np.asarray(g), x.astype(np.float64) - p, rtol=RTOL, atol=1e-6)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("shape", [(5,), (4, 6), (1, 4, 6, 3)])
def test_wrong_ndim_raises(shape):
    bad = np.zeros(shape, np.float32)
    good = np.zeros((4, 6, 3), np.float32)
    with pytest.raises(ValueError, match="shape"):
        gram_matrix(bad)
    with pytest.raises(ValueError, match="shape"):
        content_loss(bad, bad)
    with pytest.raises(ValueError, match="shape"):
        content_loss(good, bad)
    with pytest.raises(ValueError, match="shape"):
        style_layer_loss(bad, np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        total_variation(bad)


@pytest.mark.parametrize("other", [(4, 5, 3), (5, 6, 3), (4, 6, 2), (6, 4, 3)])
def test_content_shape_mismatch_raises(other):
    with pytest.raises(ValueError, match="differ"):
        content_loss(np.zeros((4, 6, 3), np.float32), np.zeros(other, np.float32))


@pytest.mark.parametrize("gram_shape", [(4, 4), (3, 4), (3,), (2, 2)])
def test_gram_shape_mismatch_raises(gram_shape):
    with pytest.raises(ValueError, match="Gram"):
        style_layer_loss(np.zeros((4, 6, 3), np.float32), np.zeros(gram_shape, np.float32))


def test_style_loss_missing_weight_raises():
    feats, styles = style_setup()
    with pytest.raises(ValueError, match="conv2_1"):
        style_loss(feats, styles, {"conv1_1": 1.0, "conv3_1": 1.0})


def test_style_loss_no_layers_raises():
    feats, _ = style_setup()
    with pytest.raises(ValueError):
        style_loss(feats, {})


# --------------------------------------------------------------------------- vmap


def test_vmap_over_style_weight_matches_loop():
    feats, styles = style_setup(seed=20)
    content_x, content_p = rand((4, 3, 6), 21), rand((4, 3, 6), 22)
    alpha = jnp.float32(0.7)
    betas = jnp.asarray([0.0, 1.0, 1e2, 1e4, 3.5e5], jnp.float32)

    def total(alpha, beta):
        return alpha * content_loss(content_x, content_p) + beta * style_loss(feats, styles)

    batched = jax.jit(jax.vmap(total, in_axes=(None, 0)))(alpha, betas)
    assert batched.shape == betas.shape
    assert batched.dtype == jnp.float32
    looped = np.array([float(total(alpha, b)) for b in betas])
    np.testing.assert_allclose(np.asarray(batched), looped, rtol=RTOL)
    # And against the float64 reference.
    ref = 0.7 * np_content_loss(content_x, content_p) + np.asarray(betas, np.float64) * (
        np_style_loss(feats, styles)
    )
    np.testing.assert_allclose(np.asarray(batched), ref, rtol=RTOL)


def test_vmap_over_layer_weights_matches_loop():
    feats, styles = style_setup(seed=30)
    w = {
        name: jnp.asarray(np.random.default_rng(k).uniform(0, 2, 4), jnp.float32)
        for k, name in enumerate(styles)
    }
    batched = jax.vmap(lambda lw: style_loss(feats, styles, lw))(w)
    looped = [float(style_loss(feats, styles, {k: v[i] for k, v in w.items()})) for i in range(4)]
    np.testing.assert_allclose(np.asarray(batched), looped, rtol=RTOL)
