"""The Gatys objective (``stylization_loss``) and the compiled optimizer loop (``stylize``).

Compiles dominate the cost of this module, so almost every run shares one compiled chunk: the
default :class:`StyleConfig`, the 64-px test images (content 43x64) and ``save_every=5`` (chunks
of 5 iterations). Loss weights, ``tol``, ``patience`` and ``iterations`` are traced, so varying
them reuses that chunk. Adam and optax's L-BFGS add one compile each.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import _optimize as optimize
from nst_jax import (
    content_loss,
    extract_features,
    gram_matrix,
    preprocess,
    style_layer_loss,
    total_variation,
)
from nst_jax._image import load_image, resize_array
from nst_jax._optimize import (
    DEFAULT_STYLE_LAYERS,
    StyleConfig,
    loss_weights,
    make_targets,
    stylization_loss,
    stylize,
)

DATA = Path(__file__).parent / "data"
SAVE_EVERY = 5  # every stylize call below compiles (or reuses) a chunk of this many iterations
STYLE_LAYER_WEIGHTS = (0.1, 0.3, 0.2, 0.25, 0.15)  # deliberately not uniform


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def content():
    image = load_image(DATA / "chelsea.png")
    assert image.shape == (43, 64, 3)
    return image


@pytest.fixture(scope="module")
def style():
    return load_image(DATA / "starry_night.png")


def run(content, style, params, **kwargs):
    """stylize with the module's shared chunk size and early stopping off unless asked."""
    kwargs.setdefault("save_every", SAVE_EVERY)
    kwargs.setdefault("tol", 0.0)
    return stylize(content, style, params=params, **kwargs)


def check_history(result, weights):
    """Invariants of every history; ``weights`` = (content, style, tv) used for the run."""
    history = result.history
    assert set(history) == {"loss", "content", "style", "tv", "evaluations", "seconds"}
    lengths = {name: len(values) for name, values in history.items()}
    assert set(lengths.values()) == {len(history["loss"])}, lengths
    assert np.all(np.isfinite(history["loss"]))
    recombined = (weights[0] * history["content"].astype(np.float64)
                  + weights[1] * history["style"].astype(np.float64)
                  + weights[2] * history["tv"].astype(np.float64))
    np.testing.assert_allclose(history["loss"], recombined, rtol=1e-5)
    evaluations = history["evaluations"]
    assert np.all(np.diff(evaluations) >= 1), evaluations  # cumulative, >= 1 per iteration
    assert evaluations[-1] == result.evaluations
    assert result.evaluations >= result.iterations
    seconds = history["seconds"]
    assert seconds[0] == 0.0
    assert np.all(np.diff(seconds) >= 0), seconds
    assert result.image.dtype == np.float32
    assert np.all(np.isfinite(result.image))
    assert result.image.min() >= 0.0 and result.image.max() <= 255.0


# ----------------------------------------------------------------------- the objective itself


@pytest.fixture(scope="module")
def small_problem(random_params):
    """A 16x24 content photo (the smallest size conv5_1 allows), a 19x24 style image, a random
    image, and weights chosen so that each of the three weighted terms is a sizable share."""
    small_content = resize_array(load_image(DATA / "chelsea.png"), 24)
    small_style = resize_array(load_image(DATA / "starry_night.png"), 24)
    assert small_content.shape[:2] != small_style.shape[:2]
    config = StyleConfig()
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

    # Independent recomputation from the public pieces (DESIGN.md, "The method").
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


# ------------------------------------------------------------------------- end to end, L-BFGS-B


@pytest.fixture(scope="module")
def noise_run(random_params, content, style):
    """15 iterations of the default L-BFGS-B from white noise, recording every callback."""
    calls = []

    def callback(state, records):
        image = np.asarray(state.image)
        calls.append({"iteration": int(state.iteration), "loss": records["loss"].copy(),
                      "active": records["active"].copy(), "min": image.min(),
                      "max": image.max(), "finite": bool(np.all(np.isfinite(image)))})

    result = run(content, style, random_params, init="noise", key=jax.random.key(1),
                 iterations=15, tv_weight=1.0, callback=callback)
    return result, calls


def test_noise_run_lowers_loss_tenfold_and_keeps_pixels_in_range(noise_run, content):
    result, calls = noise_run
    loss = result.history["loss"]
    assert loss[-1] <= loss[0] / 10, loss
    assert result.image.shape == content.shape
    assert result.image.dtype == np.float32
    assert np.all(np.isfinite(result.image))
    assert result.image.min() >= 0.0 and result.image.max() <= 255.0
    # L-BFGS-B keeps the iterate itself inside the box at every checkpoint, not just the
    # clipped output (up to float32 rounding of its projected steps: x + (P(y) - x)).
    for call in calls:
        assert call["finite"] and call["min"] >= -1e-3 and call["max"] <= 255.0 + 1e-3, call
    state_image = np.asarray(result.state.image)
    assert state_image.min() >= -1e-3 and state_image.max() <= 255.0 + 1e-3
    # The result is the lowest-loss iterate (with no line search the last one may be higher).
    np.testing.assert_allclose(result.image, np.asarray(result.state.best_image), rtol=0,
                               atol=1e-3)
    assert float(result.state.best_loss) == loss.min()


def test_noise_run_history_and_counts(noise_run):
    result, _ = noise_run
    assert result.iterations == 15
    assert "iteration limit" in result.status
    assert len(result.history["loss"]) == result.iterations + 1
    check_history(result, (1.0, 1e3, 1.0))
    assert result.history["evaluations"][0] == 1
    assert result.history["tv"][0] > 0  # the tv term really is part of the recombination
    assert int(result.state.iteration) == 15
    assert int(result.state.evaluations) == result.evaluations
    np.testing.assert_allclose(result.state.loss, result.history["loss"][-1])


def test_callback_runs_after_each_chunk(noise_run):
    result, calls = noise_run
    # save_every=5: chunks end on multiples of 5 (1 iteration per chunk on CPU, see _chunk_size).
    chunk = optimize._chunk_size(43 * 64, 5)
    assert 5 % chunk == 0
    assert [call["iteration"] for call in calls] == list(range(chunk, 16, chunk))
    recorded = np.concatenate([call["loss"][call["active"]] for call in calls])
    np.testing.assert_array_equal(recorded, result.history["loss"][1:])


def test_callback_returning_true_stops(random_params, content, style):
    calls = []

    def callback(state, records):
        calls.append(int(state.iteration))
        return True

    result = run(content, style, random_params, iterations=20, callback=callback)
    chunk = optimize._chunk_size(43 * 64, SAVE_EVERY)
    assert calls == [chunk]
    assert result.iterations == chunk
    assert len(result.history["loss"]) == chunk + 1
    check_history(result, (1.0, 1e3, 0.0))
    # The run did not finish by itself: the status must say so, not "running".
    assert "running" not in result.status and "caller" in result.status, result.status


def test_same_key_same_output_different_key_different_output(random_params, content, style):
    def noise(key):
        return run(content, style, random_params, init="noise", key=jax.random.key(key),
                   iterations=2)

    first, again, other = noise(7), noise(7), noise(8)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.history["loss"], again.history["loss"])
    assert first.evaluations == again.evaluations
    assert not np.array_equal(first.image, other.image)
    assert first.history["loss"][0] != other.history["loss"][0]


def test_zero_iterations_returns_the_initial_image(random_params, content, style):
    key = jax.random.key(5)
    result = run(content, style, random_params, init="noise", key=key, iterations=0)
    expected = np.asarray(jax.random.uniform(key, content.shape, jnp.float32, 0.0, 255.0))
    np.testing.assert_array_equal(result.image, expected)
    assert result.iterations == 0 and result.evaluations == 1
    assert len(result.history["loss"]) == 1
    assert "iteration limit" in result.status


# --------------------------------------------------------------------------- early stopping


def test_large_tol_converges_before_the_limit(random_params, content, style):
    tol, patience = 1e-1, 2
    result = run(content, style, random_params, iterations=60, tol=tol, patience=patience)
    assert result.iterations < 60
    assert "converged" in result.status
    loss = result.history["loss"].astype(np.float64)
    improvement = (loss[:-1] - loss[1:]) / np.abs(loss[:-1])
    assert np.all(improvement[-patience:] < tol), improvement
    check_history(result, (1.0, 1e3, 0.0))


def test_zero_tol_runs_to_the_limit(random_params, content, style):
    result = run(content, style, random_params, iterations=5, tol=0.0, patience=1)
    assert result.iterations == 5
    assert "iteration limit" in result.status


# --------------------------------------------------------------------------------- continuing


def test_continuing_equals_one_long_run(random_params, content, style):
    n = 3
    kwargs = {"init": "noise", "key": jax.random.key(4), "tv_weight": 0.5}
    whole = run(content, style, random_params, iterations=2 * n, **kwargs)
    half = run(content, style, random_params, iterations=n, **kwargs)
    rest = run(content, style, random_params, iterations=2 * n, state=half.state, **kwargs)

    assert half.iterations == n and rest.iterations == 2 * n
    np.testing.assert_array_equal(rest.image, whole.image)
    np.testing.assert_array_equal(rest.history["loss"], whole.history["loss"][n:])
    np.testing.assert_array_equal(rest.history["evaluations"], whole.history["evaluations"][n:])
    assert rest.evaluations == whole.evaluations

    # The equality above needs the optimizer's memory: restarting L-BFGS-B from the same image
    # with an empty history takes different steps.
    config = StyleConfig()
    weights = loss_weights(config, tv=0.5)
    targets = make_targets(random_params, jnp.asarray(content), jnp.asarray(style), config)
    fresh = optimize._init_jit(  # the driver's own jitted init_state, already compiled
        half.state.image, random_params, targets, weights, config)
    fresh = fresh._replace(iteration=half.state.iteration, evaluations=half.state.evaluations)
    restarted = run(content, style, random_params, iterations=2 * n, state=fresh, **kwargs)
    assert not np.array_equal(restarted.image, whole.image)


# ------------------------------------------------------------------------------ non-finite loss


def test_nonfinite_loss_stops_and_keeps_the_last_good_image(random_params, content, style):
    # A constant grey photo as the start: TV = 0 there, so the total is finite; any step that
    # changes the image makes 1e38 * TV overflow float32.
    grey = np.full_like(content, 128.0)
    result = run(grey, style, random_params, iterations=10, tv_weight=1e38)
    assert np.isfinite(result.history["loss"][0])
    assert result.iterations < 10
    assert "nan" in result.status.lower() and "infinite" in result.status.lower(), result.status
    assert np.all(np.isfinite(result.history["loss"]))
    np.testing.assert_array_equal(result.image, grey)
    assert np.isfinite(float(result.state.loss))


# ------------------------------------------------------------------------- other optimizers


@pytest.mark.parametrize("optimizer", ["adam", "optax-lbfgs", "projected-lbfgs"])
def test_other_optimizers_lower_the_loss(random_params, content, style, optimizer):
    config = StyleConfig(optimizer=optimizer)
    result = run(content, style, random_params, config=config, init="noise",
                 key=jax.random.key(2), iterations=5)
    loss = result.history["loss"]
    assert loss[-1] <= loss[0] / 3, loss
    assert result.iterations == 5 and len(loss) == 6
    check_history(result, (1.0, 1e3, 0.0))
    if optimizer in ("adam", "projected-lbfgs"):
        # Projected methods: one evaluation per iteration, the iterate itself stays in the box.
        assert result.evaluations == 6
        state_image = np.asarray(result.state.image)
        assert state_image.min() >= 0.0 and state_image.max() <= 255.0


def test_zero_tol_disables_early_stopping_even_if_the_loss_rises(random_params, content, style):
    # Adam with lr 30 from the content photo does not decrease monotonically; with tol=0
    # ("disables it", stylize's docstring) a rise must not count as convergence.
    config = StyleConfig(optimizer="adam", learning_rate=30.0)
    result = run(content, style, random_params, config=config, iterations=5, tol=0.0,
                 patience=1)
    assert np.any(np.diff(result.history["loss"]) > 0), "precondition: the loss rose once"
    assert result.iterations == 5, (result.iterations, result.status)
    assert "iteration limit" in result.status
    # The result is the best image of the run, not the last one, when the loss rose at the end.
    history = result.history["loss"]
    assert float(result.state.best_loss) == history.min()
    np.testing.assert_array_equal(result.image, np.clip(np.asarray(result.state.best_image),
                                                        0, 255))
    best = int(np.argmin(history))
    if best != len(history) - 1:
        assert not np.array_equal(result.image, np.asarray(result.state.image))


# ------------------------------------------------------------------------ weights never compile


def compiled_loops() -> int:
    """Number of programs the driver has compiled (its memo)."""
    return len(optimize._compiled)


def test_changing_weight_values_does_not_recompile(random_params, content, style):
    first = run(content, style, random_params, iterations=2)
    chunks = compiled_loops()
    init_cache = optimize._init_jit._cache_size()
    targets_cache = optimize._targets_jit._cache_size()

    weights = (5.0, 20.0, 3.0)
    second = run(content, style, random_params, iterations=2, content_weight=weights[0],
                 style_weight=weights[1], tv_weight=weights[2],
                 style_layer_weights=list(STYLE_LAYER_WEIGHTS))
    assert compiled_loops() == chunks
    assert second.compile_seconds == 0.0
    assert optimize._init_jit._cache_size() == init_cache
    assert optimize._targets_jit._cache_size() == targets_cache
    # ... and the new values were really used.
    check_history(second, weights)
    assert second.history["loss"][0] != first.history["loss"][0]
    assert second.history["style"][0] != first.history["style"][0]  # per-layer weights differ


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs", [
    {"optimizer": "sgd"},
    {"linesearch": "wolfe"},
    {"pooling": "median"},
    {"style_layers": ("conv6_1",)},
    {"style_layers": ("conv1_1", "pool2")},
    {"content_layers": ("block4_conv9",)},
    {"style_layers": ()},
    {"history_size": 0},
    {"learning_rate": 0.0},
])
def test_bad_config_raises(kwargs):
    with pytest.raises(ValueError):
        StyleConfig(**kwargs)


def test_keras_layer_names_are_accepted():
    config = StyleConfig(content_layers=("block4_conv2",), style_layers=("block1_conv1", "conv2_1"))
    assert config.feature_layers == ("conv1_1", "conv2_1", "conv4_2")


def test_wrong_number_of_layer_weights_raises():
    config = StyleConfig()
    with pytest.raises(ValueError, match="5"):
        loss_weights(config, style_layers=[0.5, 0.5])
    with pytest.raises(ValueError):
        loss_weights(config, content_layers=[1.0, 1.0])


@pytest.mark.parametrize("change", [
    {"style_layer_weights": [1.0, 2.0]},
    {"content_layer_weights": [1.0, 1.0]},
    {"content": "grey"},
    {"content": "rgba"},
    {"style": "grey"},
    {"iterations": -1},
    {"init": "zeros"},
])
def test_bad_stylize_arguments_raise(random_params, content, style, change):
    change = dict(change)
    images = {"content": content, "style": style}
    for name in ("content", "style"):
        if change.get(name) == "grey":
            images[name] = images[name][..., 0]
        elif change.get(name) == "rgba":
            images[name] = np.concatenate([images[name], images[name][..., :1]], axis=-1)
        change.pop(name, None)
    with pytest.raises(ValueError):
        run(images["content"], images["style"], random_params, **{"iterations": 1, **change})


def test_projected_lbfgs_two_loop_matches_the_dense_bfgs_inverse():
    """The two-loop recursion over a ring buffer equals the dense inverse-Hessian BFGS update
    (Nocedal & Wright Eq. 6.17) over the last m pairs, H_0 = s'y / y'y of the newest."""
    from nst_jax._optimize import _ProjectedLbfgs, _two_loop

    rng = np.random.default_rng(0)
    n, m, pairs = 12, 4, 6
    a = rng.normal(size=(n, n))
    a = a @ a.T + n * np.eye(n)  # convex quadratic: s'y > 0
    s_list = [rng.normal(size=n) for _ in range(pairs)]
    y_list = [a @ s for s in s_list]
    s_buf, y_buf, rho = np.zeros((m, n)), np.zeros((m, n)), np.zeros(m)
    for k, (s, y) in enumerate(zip(s_list, y_list)):
        s_buf[k % m], y_buf[k % m], rho[k % m] = s, y, 1.0 / (s @ y)
    g = rng.normal(size=n)
    last = list(zip(s_list, y_list))[-m:]
    h = (last[-1][0] @ last[-1][1]) / (last[-1][1] @ last[-1][1]) * np.eye(n)
    for s, y in last:
        r = 1.0 / (s @ y)
        v = np.eye(n) - r * np.outer(y, s)
        h = v.T @ h @ v + r * np.outer(s, s)
    sol = _ProjectedLbfgs(jnp.asarray(s_buf, jnp.float32), jnp.asarray(y_buf, jnp.float32),
                          jnp.asarray(rho, jnp.float32), jnp.int32(pairs), None)
    np.testing.assert_allclose(_two_loop(jnp.asarray(g, jnp.float32), sol), h @ g, rtol=1e-4,
                               atol=1e-6)
    empty = sol._replace(count=jnp.int32(0))
    np.testing.assert_allclose(_two_loop(jnp.asarray(g, jnp.float32), empty), g, rtol=1e-6)


# ------------------------------------------------------------- preconditioner, subspace step


def _pyramid_numpy(x, levels):
    """P x = x + sum_k 2^k (block means on the 2^k grid, zero padding) with explicit loops."""
    height, width, _ = x.shape
    out = x.astype(np.float64).copy()
    for k in range(1, levels + 1):
        b = 2 ** k
        for i in range(0, height, b):
            for j in range(0, width, b):
                block = x[i:i + b, j:j + b].astype(np.float64)
                out[i:i + b, j:j + b] += 2.0 ** k * block.sum(axis=(0, 1)) / (b * b)
    return out


def test_pyramid_precondition_matches_numpy_and_is_symmetric_positive_definite():
    from nst_jax._optimize import pyramid_precondition

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2, 13, 22, 3))  # not a multiple of 8: the padded blocks count
    px = np.asarray(pyramid_precondition(jnp.asarray(x, jnp.float32), 3))
    np.testing.assert_allclose(px, _pyramid_numpy(x, 3), rtol=1e-5, atol=1e-5)
    py = np.asarray(pyramid_precondition(jnp.asarray(y, jnp.float32), 3))
    np.testing.assert_allclose(np.vdot(px, y), np.vdot(x, py), rtol=1e-5)
    ratio = np.vdot(x, px) / np.vdot(x, x)
    assert 1.0 <= ratio <= 2.0 ** 4 - 1
    constant = np.ones((16, 16, 3))  # one whole 8x8-block-constant image: scaled by 2^4 - 1
    np.testing.assert_allclose(pyramid_precondition(jnp.asarray(constant), 3), 15 * constant,
                               rtol=1e-6)
    x32 = x.astype(np.float32)
    np.testing.assert_array_equal(pyramid_precondition(jnp.asarray(x32), 0), x32)


def test_pyramid_levels_follow_the_short_side():
    from nst_jax._optimize import pyramid_levels

    assert [pyramid_levels(s) for s in [(85, 128), (170, 256), (341, 512), (10, 10), (3, 9)]] \
        == [4, 5, 6, 1, 0]
    assert pyramid_levels((341, 512), 2) == 2
    with pytest.raises(ValueError):
        StyleConfig(pyramid_levels=-1)


def test_preconditioned_two_loop_matches_the_dense_bfgs_inverse():
    """With H_0 = gamma P (P symmetric positive definite, gamma = s'y / y'P y), the two-loop
    recursion equals the dense BFGS inverse update started from that H_0."""
    from nst_jax._optimize import _ProjectedLbfgs, _two_loop

    rng = np.random.default_rng(1)
    n, m = 10, 3
    a = rng.normal(size=(n, n))
    a = a @ a.T + n * np.eye(n)
    b = rng.normal(size=(n, n))
    p = b @ b.T + np.eye(n)
    s_list = [rng.normal(size=n) for _ in range(m)]
    y_list = [a @ s for s in s_list]
    s_last, y_last = s_list[-1], y_list[-1]
    h = (s_last @ y_last) / (y_last @ p @ y_last) * p
    for s, y in zip(s_list, y_list):
        r = 1.0 / (s @ y)
        v = np.eye(n) - r * np.outer(y, s)
        h = v.T @ h @ v + r * np.outer(s, s)
    sol = _ProjectedLbfgs(jnp.asarray(np.stack(s_list), jnp.float32),
                          jnp.asarray(np.stack(y_list), jnp.float32),
                          jnp.asarray([1.0 / (s @ y) for s, y in zip(s_list, y_list)], jnp.float32),
                          jnp.int32(m), None)
    g = rng.normal(size=n)
    pj = jnp.asarray(p, jnp.float32)
    np.testing.assert_allclose(_two_loop(jnp.asarray(g, jnp.float32), sol, lambda v: pj @ v),
                               h @ g, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("theta", [2.0, 0.02])  # du well inside / far beyond the 16-level cap
def test_projected_subspace_step_matches_numpy(theta):
    """The projected subspace step: the free variables' unconstrained quadratic-model minimizer
    x_c + du (Byrd, Lu, Nocedal & Zhu 1995, Eqs. 5.4-5.11, direct primal method), du scaled
    down to move nothing more than SUBSPACE_STEP_CAP, clipped to the box; computed here in
    float64 NumPy. jaxopt's own rule truncates the step at the first bound instead."""
    from nst_jax._lbfgsb import _JAXOPT_SUBSPACE, SUBSPACE_STEP_CAP, projected_subspace

    rng = np.random.default_rng(4)
    n, pairs, top = 40, 2, 60.0
    lower, upper = np.zeros(n), np.full(n, top)
    x = rng.uniform(2.0, top - 2.0, n)
    grad = rng.normal(size=n)
    active = rng.random(n) < 0.7  # True = free ("active set mask" in jaxopt's naming)
    x_cauchy = np.where(active, np.clip(x - 0.5 * grad, 0.0, top),
                        np.where(grad > 0, 0.0, top))
    w = rng.normal(scale=0.3, size=(n, 2 * pairs))
    b = rng.normal(scale=0.2, size=(2 * pairs, 2 * pairs))
    m = b @ b.T * 0.1
    c = rng.normal(size=2 * pairs)
    wz = w * active[:, None]
    r_c = grad + theta * (x_cauchy - x) - wz @ (m @ c)
    v = np.linalg.solve(np.eye(2 * pairs) - m @ (wz.T @ wz) / theta, m @ (wz.T @ r_c))
    du = np.where(active, -r_c / theta - wz @ v / theta ** 2, 0.0)
    du *= min(1.0, SUBSPACE_STEP_CAP / np.max(np.abs(du)))
    expected = np.clip(x_cauchy + du, lower, upper)
    assert np.dot(expected - x, grad) < 0  # precondition: a descent direction (else fallback)
    args = [jnp.asarray(a, jnp.float32) for a in (x, grad, lower, upper, x_cauchy, c)]
    rest = (jnp.float32(theta), jnp.asarray(w, jnp.float32), jnp.asarray(m, jnp.float32),
            jnp.asarray(active))
    got = np.asarray(projected_subspace(*args, *rest))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    truncated = np.asarray(_JAXOPT_SUBSPACE(*args, *rest))
    if theta > 1:  # a short step that meets no bound: both rules agree
        assert np.all((x_cauchy + du >= 0) & (x_cauchy + du <= top))
        np.testing.assert_allclose(truncated, expected, rtol=1e-4, atol=1e-3)
    else:  # a long one: jaxopt's rule stops it at the first bound
        assert np.max(np.abs(truncated - expected)) > 1.0


def test_jaxopt_rules_restore_jaxopt():
    from nst_jax._lbfgsb import _JAXOPT_CAUCHY, _JAXOPT_SUBSPACE, _jaxopt_lbfgsb, jaxopt_rules

    for subspace in ("projected", "truncated"):
        with pytest.raises(KeyError), jaxopt_rules(subspace):
            assert _jaxopt_lbfgsb._find_cauchy_point is not _JAXOPT_CAUCHY
            assert (_jaxopt_lbfgsb._minimize_subspace is _JAXOPT_SUBSPACE) == (
                subspace == "truncated")
            raise KeyError
        assert _jaxopt_lbfgsb._find_cauchy_point is _JAXOPT_CAUCHY
        assert _jaxopt_lbfgsb._minimize_subspace is _JAXOPT_SUBSPACE


def _cauchy_problem(seed, n=3000, pairs=3, at_bounds=0.2, still=0.05, theta=1.0):
    """A Cauchy-point problem like the image's: pixels in [0, 255], some at a bound with the
    gradient pushing outwards, some with a zero gradient, a curvature model from s/y pairs."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 255.0, n)
    grad = rng.normal(size=n)
    pinned = rng.random(n) < at_bounds
    x[pinned] = np.where(grad[pinned] > 0, 0.0, 255.0)
    # Some a hair above 0: breakpoints in (0, eps], still at their bound for the walk.
    hair = pinned & (grad > 0) & (rng.random(n) < 0.5)
    x[hair] = rng.uniform(0.1, 0.9, hair.sum()) * np.finfo(np.float32).eps * grad[hair]
    grad[rng.random(n) < still] = 0.0
    s_hist = rng.normal(size=(pairs, n))
    y_hist = s_hist * rng.uniform(0.5, 2.0, (pairs, n))
    w = np.concatenate([y_hist, theta * s_hist]).T
    sy, ss = s_hist @ y_hist.T, s_hist @ s_hist.T
    low = np.tril(sy, -1)
    m = np.linalg.inv(np.block([[-np.diag(np.diag(sy)), low.T], [low, theta * ss]]))
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    return (f32(x), f32(grad), f32(np.zeros(n)), f32(np.full(n, 255.0)), jnp.float32(theta),
            f32(w), f32(m))


@pytest.mark.parametrize("theta, window", [(1.0, 1024), (1.0, 4), (1e-3, 1024), (1e3, 8)])
def test_cauchy_point_equals_jaxopts_bit_for_bit(theta, window, monkeypatch):
    """Same x_cauchy, c and free set as jaxopt's two-sort version, on the fast path (the walk
    passes 7 breakpoints, or none with a large theta) and on the full-sort fallback (a window
    of 4 that the walk reaches, or a tiny theta: 1,574 breakpoints)."""
    from nst_jax import _lbfgsb

    monkeypatch.setattr(_lbfgsb, "CAUCHY_WINDOW", window)
    problem = _cauchy_problem(7, theta=theta)
    ours = jax.jit(_lbfgsb.cauchy_point)(*problem)
    theirs = jax.jit(_lbfgsb._JAXOPT_CAUCHY)(*problem)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    free = np.asarray(ours[2])
    assert 0 < free.sum() < free.size  # some passed or pinned variables, some still free


def test_cauchy_point_under_vmap(monkeypatch):
    """A lane that needs the full sort beside one that does not, in one vmapped call: equal to
    jaxopt's function vmapped the same way (batched matmuls round differently from single
    ones, so the comparison is batched against batched)."""
    from nst_jax import _lbfgsb

    monkeypatch.setattr(_lbfgsb, "CAUCHY_WINDOW", 8)
    problems = [_cauchy_problem(7, theta=1e3), _cauchy_problem(8, theta=1e-3)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *problems)
    ours = jax.jit(jax.vmap(_lbfgsb.cauchy_point))(*stacked)
    theirs = jax.jit(jax.vmap(_lbfgsb._JAXOPT_CAUCHY))(*stacked)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("faster, slower", [
    ({}, {"subspace": "truncated"}),
    ({"optimizer": "projected-lbfgs"}, {"optimizer": "projected-lbfgs", "pyramid_levels": 0}),
])
def test_subspace_step_and_preconditioner_lower_the_loss_faster(random_params, content, style,
                                                                faster, slower):
    """After 20 iterations from the content photo (43x64, measured: 1.6x and 1.35x apart),
    the projected subspace step beats jaxopt's truncated one and the pyramid preconditioner
    beats the plain two-loop."""
    losses = [run(content, style, random_params, config=StyleConfig(**settings),
                  iterations=20).history["loss"][-1] for settings in (faster, slower)]
    assert losses[0] * 1.2 < losses[1], losses
