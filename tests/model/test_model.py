"""VGG-19 feature extractor against an independent float64 NumPy VGG-19.

The reference network below is written from the description in docs/design.md ("The method") (5 blocks of 3x3
convs, 2,2,4,4,4 convs of 64,128,256,512,512 channels, zero padding 1, bias, ReLU; a 2x2/2 pool
between blocks, floored at odd sizes), never by calling the library.
"""

from __future__ import annotations

import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import VGG19, extract_features, preprocess, random_vgg19_params
from nst_jax._model import backward_kernel, param_shapes, with_backward_kernels

# The canonical VGG-19 conv stack, written out independently: (canonical, keras, cin, cout).
_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]
_BLOCK_INDEX = [
    (1, 1),
    (1, 2),
    (2, 1),
    (2, 2),
    (3, 1),
    (3, 2),
    (3, 3),
    (3, 4),
    (4, 1),
    (4, 2),
    (4, 3),
    (4, 4),
    (5, 1),
    (5, 2),
    (5, 3),
    (5, 4),
]
SPEC = [
    (f"conv{b}_{i}", f"block{b}_conv{i}", 3 if k == 0 else _WIDTHS[k - 1], _WIDTHS[k])
    for k, (b, i) in enumerate(_BLOCK_INDEX)
]
ALL_LAYERS = [s[0] for s in SPEC]
SOME_LAYERS = ["conv1_1", "conv2_2", "conv3_1", "conv4_2", "conv5_1"]
REL_TOL = 1e-4


# --------------------------------------------------------------------------- NumPy reference


def np_conv3x3(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """3x3 conv, stride 1, zero padding 1; x (H, W, Cin), kernel HWIO (3, 3, Cin, Cout)."""
    h, w, _ = x.shape
    padded = np.zeros((h + 2, w + 2, x.shape[2]))
    padded[1:-1, 1:-1] = x
    out = np.zeros((h, w, kernel.shape[3]))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("hwc,co->hwo", padded[dy : dy + h, dx : dx + w], kernel[dy, dx])
    return out + bias


def np_pool(x: np.ndarray, mode: str) -> np.ndarray:
    """2x2 window, stride 2, no padding (sizes floored)."""
    h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    win = x[: 2 * h2, : 2 * w2].reshape(h2, 2, w2, 2, c)
    return win.max(axis=(1, 3)) if mode == "max" else win.mean(axis=(1, 3))


def np_vgg19(params, x: np.ndarray, pooling: str = "max") -> dict[str, np.ndarray]:
    """All 16 ReLU conv outputs of the NumPy VGG-19, float64."""
    p = params["params"]
    h = np.asarray(x, np.float64)
    out = {}
    for canonical, keras, _, _ in SPEC:
        if canonical.endswith("_1") and canonical != "conv1_1":
            h = np_pool(h, pooling)
        kernel = np.asarray(p[keras]["kernel"], np.float64)
        bias = np.asarray(p[keras]["bias"], np.float64)
        h = np.maximum(np_conv3x3(h, kernel, bias), 0.0)
        out[canonical] = h
    return out


def np_preprocess(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(rgb, np.float64)[..., ::-1] - np.array([103.939, 116.779, 123.68])


def rel_err(got, want) -> float:
    got = np.asarray(got, np.float64)
    scale = max(np.max(np.abs(want)), 1e-12)
    return float(np.max(np.abs(got - want)) / scale)


# --------------------------------------------------------------------------- fixtures


def rgb_image(h, w, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (h, w, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def random_params_nonzero_bias(random_params):
    """The session params with small non-zero biases, so that the bias path is exercised."""
    rng = np.random.default_rng(1)
    return {
        "params": {
            name: {
                "kernel": layer["kernel"],
                "bias": jnp.asarray(rng.normal(0, 0.1, layer["bias"].shape), jnp.float32),
            }
            for name, layer in random_params["params"].items()
        }
    }


_REFERENCE_CACHE: dict = {}


def reference(params, h, w, pooling):
    key = (id(params), h, w, pooling)
    if key not in _REFERENCE_CACHE:
        _REFERENCE_CACHE[key] = np_vgg19(params, np_preprocess(rgb_image(h, w)), pooling)
    return _REFERENCE_CACHE[key]


# --------------------------------------------------------------------------- features vs NumPy


@pytest.mark.parametrize("pooling", ["max", "avg"])
@pytest.mark.parametrize("hw", [(20, 28), (18, 22)])
@pytest.mark.parametrize("layers", [SOME_LAYERS, ALL_LAYERS], ids=["five", "all16"])
def test_features_match_numpy(random_params_nonzero_bias, hw, pooling, layers):
    params = random_params_nonzero_bias
    want = reference(params, *hw, pooling)
    image = preprocess(rgb_image(*hw))
    got = extract_features(params, image, layers, pooling=pooling)
    assert list(got) == list(layers)
    for name in layers:
        assert got[name].shape == want[name].shape, name
        assert got[name].dtype == jnp.float32, name
        assert np.max(np.abs(want[name])) > 0, name  # the comparison is not vacuous
        assert rel_err(got[name], want[name]) < REL_TOL, name


def test_feature_shapes_floor_at_odd_sizes(random_params):
    got = extract_features(random_params, preprocess(rgb_image(18, 22)), ["conv5_1"])
    # 18x22 -> 9x11 -> 4x5 -> 2x2 -> 1x1.
    assert got["conv5_1"].shape == (1, 1, 512)


def test_session_params_match_numpy(random_params):
    """The unmodified seed-0 params (zero biases) on the 20x28 image, max pooling."""
    want = np_vgg19(random_params, np_preprocess(rgb_image(20, 28)), "max")
    got = extract_features(random_params, preprocess(rgb_image(20, 28)), ["conv3_1", "conv5_1"])
    for name in got:
        assert rel_err(got[name], want[name]) < REL_TOL, name


def test_avg_and_max_pooling_differ(random_params):
    image = preprocess(rgb_image(20, 28))
    a = extract_features(random_params, image, ["conv2_1"], pooling="max")["conv2_1"]
    b = extract_features(random_params, image, ["conv2_1"], pooling="avg")["conv2_1"]
    assert not np.allclose(np.asarray(a), np.asarray(b))


def test_bad_pooling_raises(random_params):
    with pytest.raises(ValueError, match="bad"):
        extract_features(random_params, preprocess(rgb_image(8, 8)), ["conv1_1"], pooling="bad")


# --------------------------------------------------------------------------- layer names


def test_both_layer_names_accepted(random_params):
    image = preprocess(rgb_image(20, 28))
    got = extract_features(random_params, image, ["conv4_2", "block4_conv2", "block1_conv1"])
    assert set(got) == {"conv4_2", "block4_conv2", "block1_conv1"}
    np.testing.assert_array_equal(np.asarray(got["conv4_2"]), np.asarray(got["block4_conv2"]))
    alone = extract_features(random_params, image, ["conv1_1"])["conv1_1"]
    np.testing.assert_array_equal(np.asarray(got["block1_conv1"]), np.asarray(alone))


@pytest.mark.parametrize(
    "name",
    [
        "conv6_1",
        "conv3_5",
        "conv1_3",
        "block1_conv3",
        "block0_conv1",
        "pool1",
        "conv4-2",
        "CONV4_2",
        "",
    ],
)
def test_unknown_layer_raises(random_params, name):
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        extract_features(random_params, preprocess(rgb_image(8, 8)), ["conv1_1", name])


def test_no_layers_raises(random_params):
    with pytest.raises(ValueError, match="no layers"):
        extract_features(random_params, preprocess(rgb_image(8, 8)), [])


def test_smallest_image_per_layer_works(random_params):
    """conv B_I needs at least 2^(B-1) pixels per side: 8x8 reaches conv4_x at 1x1."""
    got = extract_features(random_params, preprocess(rgb_image(8, 9)), ["conv4_2"])
    assert got["conv4_2"].shape == (1, 1, 512)
    got = extract_features(random_params, preprocess(rgb_image(16, 16)), ["conv5_1"])
    assert got["conv5_1"].shape == (1, 1, 512)


@pytest.mark.parametrize("hw", [(8, 8), (15, 40)])
def test_image_too_small_for_layer_raises(random_params, hw):
    """An image that pools away to nothing before the requested layer is a user error.

    15 -> 7 -> 3 -> 1 -> 0 rows at conv5_1: the features would be (0, W, 512) and every style
    loss on them NaN (0/0 in 1/(4 N^2 M^2)); the design asks for a clear error instead.
    """
    with pytest.raises(ValueError, match="conv5_1"):
        extract_features(random_params, preprocess(rgb_image(*hw)), ["conv5_1"])


# --------------------------------------------------------------------------- only up to deepest


def test_only_computes_up_to_deepest_layer(random_params):
    p = random_params["params"]
    x = preprocess(rgb_image(10, 12))
    only_first = {"params": {"block1_conv1": p["block1_conv1"]}}
    out = VGG19().apply(only_first, x, ("conv1_1",))
    assert set(out) == {"conv1_1"}
    want = np_vgg19(random_params, np_preprocess(rgb_image(10, 12)))["conv1_1"]
    assert rel_err(out["conv1_1"], want) < REL_TOL

    first_three = {"params": {k: p[k] for k in ("block1_conv1", "block1_conv2", "block2_conv1")}}
    out = VGG19().apply(first_three, x, ("block1_conv1", "conv2_1"))
    assert set(out) == {"conv1_1", "conv2_1"}

    # Control: asking for one layer deeper than the params hold does fail, so the checks
    # above really show that deeper layers were not touched.
    with pytest.raises(flax.errors.ScopeParamNotFoundError, match="block1_conv2"):
        VGG19().apply(only_first, x, ("conv1_2",))


# --------------------------------------------------------------------------- random params


def test_random_params_structure_and_init(random_params):
    p = random_params["params"]
    assert set(random_params) == {"params"}
    assert set(p) == {s[1] for s in SPEC}
    for _, keras, cin, cout in SPEC:
        kernel = np.asarray(p[keras]["kernel"])
        bias = np.asarray(p[keras]["bias"])
        assert kernel.shape == (3, 3, cin, cout), keras
        assert bias.shape == (cout,), keras
        assert kernel.dtype == np.float32 and bias.dtype == np.float32, keras
        np.testing.assert_array_equal(bias, 0.0)
        std = np.sqrt(2.0 / (9 * cin))
        tol = 0.05 if kernel.size >= 10_000 else 0.10  # block1_conv1 has only 1728 weights
        assert abs(kernel.std() / std - 1) < tol, (keras, kernel.std(), std)
        assert abs(kernel.mean()) < 4 * std / np.sqrt(kernel.size), keras


def test_random_params_deterministic_and_key_dependent(random_params):
    again = random_vgg19_params(jax.random.key(0))
    other = random_vgg19_params(jax.random.key(1))
    for _, keras, _, _ in SPEC:
        a = np.asarray(random_params["params"][keras]["kernel"])
        np.testing.assert_array_equal(a, np.asarray(again["params"][keras]["kernel"]))
        assert not np.allclose(a, np.asarray(other["params"][keras]["kernel"])), keras
    # Layers are not copies of each other (each layer gets its own stream).
    k1 = np.asarray(random_params["params"]["block3_conv2"]["kernel"]).ravel()
    k2 = np.asarray(random_params["params"]["block3_conv3"]["kernel"]).ravel()
    assert not np.allclose(k1, k2)


def test_param_shapes():
    shapes = param_shapes()
    assert set(shapes) == {s[1] for s in SPEC}
    for _, keras, cin, cout in SPEC:
        assert tuple(shapes[keras]["kernel"]) == (3, 3, cin, cout), keras
        assert tuple(shapes[keras]["bias"]) == (cout,), keras


# --------------------------------------------------------------------------- dtypes


def test_bfloat16_features_close_to_float32(random_params):
    image = preprocess(rgb_image(20, 28))
    f32 = extract_features(random_params, image, SOME_LAYERS)
    bf16 = extract_features(random_params, image, SOME_LAYERS, dtype=jnp.bfloat16)
    for name in SOME_LAYERS:
        assert f32[name].dtype == jnp.float32, name
        assert bf16[name].dtype == jnp.bfloat16, name
        assert bf16[name].shape == f32[name].shape, name
        assert rel_err(np.asarray(bf16[name], np.float32), np.asarray(f32[name])) < 0.05, name


# --------------------------------------------------------------------------- pooling gradient


def np_max_pool_grad(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Gradient of 2x2/2 max pooling of one (H, W, C) map: each window's cotangent goes to its
    first maximum in row-major window order (what XLA's select-and-scatter does)."""
    h2, w2, c = g.shape
    out = np.zeros_like(x)
    for i in range(h2):
        for j in range(w2):
            for k in range(c):
                window = x[2 * i : 2 * i + 2, 2 * j : 2 * j + 2, k].ravel()
                first = int(np.argmax(window))
                out[2 * i + first // 2, 2 * j + first % 2, k] = g[i, j, k]
    return out


@pytest.mark.parametrize("jit", [False, True], ids=["no-jit", "jit"])
@pytest.mark.parametrize("kind", ["ties", "continuous"])
@pytest.mark.parametrize("hw", [(8, 6), (7, 9)])
def test_max_pool_derivatives_match_select_and_scatter(jit, kind, hw):
    """The pooling's value, gradient and tangent equal NumPy's and ``nn.max_pool``'s exactly,
    ties (small integers, as ReLU zeros give) and odd sizes included."""
    from nst_jax._model import _max_pool

    rng = np.random.default_rng(0)
    shape = (1, *hw, 3)
    x = (rng.integers(0, 3, shape) if kind == "ties" else rng.normal(size=shape)).astype(np.float32)
    g = rng.normal(size=(1, hw[0] // 2, hw[1] // 2, 3)).astype(np.float32)
    t = rng.normal(size=shape).astype(np.float32)
    wrap = jax.jit if jit else (lambda f: f)
    reference_pool = wrap(lambda a: flax.linen.max_pool(a, (2, 2), strides=(2, 2)))
    pooled, vjp = jax.vjp(wrap(_max_pool), x)
    np.testing.assert_array_equal(pooled, np_pool(x[0], "max")[None])
    np.testing.assert_array_equal(vjp(g)[0][0], np_max_pool_grad(x[0], g[0]))
    np.testing.assert_array_equal(vjp(g)[0], jax.vjp(reference_pool, x)[1](g)[0])
    np.testing.assert_array_equal(jax.jvp(wrap(_max_pool), (x,), (t,))[1],
                                  jax.jvp(reference_pool, (x,), (t,))[1])


# --------------------------------------------------------------------------- remat


def feature_objective(params, image, *, remat, dtype=jnp.float32, pooling="max"):
    """A scalar of every SOME_LAYERS map (squares and a Gram, as the losses use them)."""
    features = extract_features(params, image, SOME_LAYERS, remat=remat, dtype=dtype,
                                pooling=pooling)
    total = jnp.float32(0.0)
    for weight, f in enumerate(features.values(), start=1):
        f = f.astype(jnp.float32)
        flat = f.reshape(-1, f.shape[-1])
        gram = jnp.matmul(flat.T, flat, precision="highest")
        total = total + weight * (jnp.mean(jnp.square(f)) + jnp.mean(jnp.square(gram)) / 1e4)
    return total


@pytest.mark.parametrize("pooling", ["max", "avg"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_remat_same_value_and_gradients(random_params_nonzero_bias, dtype, pooling):
    image = preprocess(rgb_image(20, 28))
    grad = jax.jit(jax.value_and_grad(feature_objective, argnums=(0, 1)),
                   static_argnames=("remat", "dtype", "pooling"))
    plain = grad(random_params_nonzero_bias, image, remat=False, dtype=dtype, pooling=pooling)
    remat = grad(random_params_nonzero_bias, image, remat=True, dtype=dtype, pooling=pooling)
    if dtype == jnp.float32:
        for want, got in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
            assert rel_err(got, np.asarray(want, np.float64)) < 1e-5
    else:
        # XLA:CPU computes bfloat16 in float32 and drops some roundings ("excess precision");
        # which ones depends on the graph, so remat and plain differ by bfloat16 rounding (so
        # did jax.checkpoint's: value 7e-4, image gradient 1.2% here). The params' gradients
        # of the deep layers are too noisy in bfloat16 to compare.
        assert rel_err(remat[0], np.float64(plain[0])) < 2e-3
        assert rel_err(remat[1][1], np.asarray(plain[1][1], np.float64)) < 3e-2


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="counts XLA:CPU's convolutions")
def test_remat_recomputes_after_xla_optimization(random_params):
    """XLA:CPU drops optimization barriers, so CSE merged ``jax.checkpoint``'s recomputation
    back into the forward pass (here 32 convolutions against 26; at 512 px 26 against 26).
    Up to conv5_1 the plain gradient has 13 forward and 13 backward convolutions; remat must
    recompute the forward ones after XLA's optimizations."""
    image = preprocess(rgb_image(20, 28))

    def convolutions(remat):
        compiled = jax.jit(jax.grad(feature_objective, argnums=1),
                           static_argnames="remat").lower(
            random_params, image, remat=remat).compile()
        return len(re.findall(r"\bconvolution\(", compiled.as_text()))

    plain, remat = convolutions(False), convolutions(True)
    assert plain == 26
    assert remat >= plain + 12


# ------------------------------------------------- precomputed input-gradient kernels


def test_backward_kernel_is_the_flipped_transposed_kernel():
    """K'[i, j, o, c] = K[2 - i, 2 - j, c, o], element by element in NumPy."""
    kernel = np.random.default_rng(0).normal(size=(3, 3, 4, 5)).astype(np.float32)
    expected = np.empty((3, 3, 5, 4), np.float32)
    for i, j, c, o in np.ndindex(3, 3, 4, 5):
        expected[i, j, o, c] = kernel[2 - i, 2 - j, c, o]
    np.testing.assert_array_equal(np.asarray(backward_kernel(jnp.asarray(kernel))), expected)


@pytest.mark.parametrize("remat,dtype", [(False, jnp.float32), (True, jnp.float32),
                                         (False, jnp.bfloat16)])
def test_backward_kernels_change_no_value_and_no_gradient(random_params, remat, dtype):
    """Features, the image gradient and the kernels' gradient are those of plain autodiff."""
    layers = ("conv1_2", "conv2_1", "conv3_1")
    prepared = with_backward_kernels(random_params, layers)
    assert with_backward_kernels(prepared, layers) is prepared
    image = jnp.asarray(np.random.default_rng(1).uniform(-100, 100, (19, 23, 3)), jnp.float32)

    def loss(params, x):
        features = extract_features(params, x, layers, remat=remat, dtype=dtype)
        return sum(jnp.sum(jnp.square(f.astype(jnp.float32))) for f in features.values())

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    (value, (params_grad, image_grad)) = grad(random_params, image)
    (value_b, (params_grad_b, image_grad_b)) = grad(prepared, image)
    np.testing.assert_array_equal(np.asarray(value_b), np.asarray(value))
    np.testing.assert_allclose(np.asarray(image_grad_b), np.asarray(image_grad),
                               rtol=1e-6, atol=1e-6 * float(jnp.max(jnp.abs(image_grad))))
    for name in ("block1_conv1", "block2_conv1", "block3_conv1"):
        for leaf in ("kernel", "bias"):
            a = np.asarray(params_grad["params"][name][leaf])
            b = np.asarray(params_grad_b["params"][name][leaf])
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())
    # The backward kernels only steer the image gradient; they get none of their own.
    assert not np.any(np.asarray(params_grad_b["backward"]["block1_conv1"]["kernel"]))
    # A wrong backward kernel (not flipped) must change the image gradient: the path is used.
    wrong = jax.tree.map(lambda k: k, prepared)
    wrong["backward"] = {n: {"kernel": jnp.asarray(prepared["params"][n]["kernel"]).swapaxes(2, 3)}
                         for n in prepared["backward"]}
    _, (_, image_grad_w) = grad(wrong, image)
    assert not np.allclose(np.asarray(image_grad_w), np.asarray(image_grad), rtol=1e-3)
