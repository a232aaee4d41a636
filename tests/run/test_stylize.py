"""The compiled optimization loop (``nst_jax.run``: ``stylize``, ``init_state``/``run_steps``)
end to end on random weights.

Compiles dominate the cost of this module, so almost every run shares one compiled chunk: the
default :class:`StyleConfig` and :class:`SolverConfig`, the 64-px test images (content 43x64)
and ``save_every=5`` (chunks of 5 iterations). Loss weights, ``tol``, ``patience`` and
``iterations`` are traced, so varying them reuses that chunk. Adam and optax's L-BFGS add one
compile each.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import DATA
from nst_jax import (
    CAFFE,
    StyleConfig,
    content_weight_for,
    deprocess,
    extract_features,
    loss_weights,
    make_targets,
    preprocess,
    style_error,
    stylize,
)
from nst_jax.images import load_image, resize_array
from nst_jax.run import _loop, _stylize, initial_image
from nst_jax.solvers import NAMES, SolverConfig

SAVE_EVERY = 5  # every stylize call below compiles (or reuses) a chunk of this many iterations
# The paper's losses, which the loop tests were written with, and their size-aware default
# alpha for the 43x64 content photo.
GATYS = StyleConfig(content_norm="gatys", style_norm="gatys")
DEFAULT_ALPHA = content_weight_for((43, 64), norm="gatys")
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
    """stylize with the module's shared chunk size, early stopping off, and fixed loss weights
    and losses (beta 1e3, no TV, the Gatys losses: the runs below are about the loop, not about
    the chosen defaults) unless asked otherwise."""
    kwargs.setdefault("config", GATYS)
    kwargs.setdefault("save_every", SAVE_EVERY)
    kwargs.setdefault("tol", 0.0)
    kwargs.setdefault("style_weight", 1e3)
    kwargs.setdefault("tv_weight", 0.0)
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


# ----------------------------------------------------------------- end to end, default L-BFGS


@pytest.fixture(scope="module")
def noise_run(random_params, content, style):
    """15 iterations of the default solver (jaxopt's L-BFGS) from white noise, recording every
    callback."""
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
    # The iterate itself stays inside the box at every checkpoint, not just the clipped output
    # (the default L-BFGS keeps it there by reflection; the old L-BFGS-B by projection, up to
    # float32 rounding of x + (P(y) - x): the 1e-3 slack below is from then).
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
    check_history(result, (DEFAULT_ALPHA, 1e3, 1.0))
    assert result.history["evaluations"][0] == 1
    assert result.history["tv"][0] > 0  # the tv term really is part of the recombination
    assert int(result.state.iteration) == 15
    assert int(result.state.evaluations) == result.evaluations
    np.testing.assert_allclose(result.state.loss, result.history["loss"][-1])


def test_callback_runs_after_each_chunk(noise_run):
    result, calls = noise_run
    # save_every=5: chunks end on multiples of 5 (1 iteration per chunk on CPU, see _chunk_size).
    chunk = _loop.chunk_size(43 * 64, 5)
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
    chunk = _loop.chunk_size(43 * 64, SAVE_EVERY)
    assert calls == [chunk]
    assert result.iterations == chunk
    assert len(result.history["loss"]) == chunk + 1
    check_history(result, (DEFAULT_ALPHA, 1e3, 0.0))
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
    check_history(result, (DEFAULT_ALPHA, 1e3, 0.0))


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

    # The equality above needs the optimizer's memory: restarting L-BFGS from the same image
    # with an empty history takes different steps.
    config = GATYS
    weights = loss_weights(config, tv=0.5)
    targets = make_targets(random_params, jnp.asarray(content), jnp.asarray(style), config)
    fresh = _stylize._init_jit(  # the driver's own jitted init_state, already compiled
        half.state.image, random_params, targets, weights, config, SolverConfig())
    fresh = fresh._replace(iteration=half.state.iteration, evaluations=half.state.evaluations)
    restarted = run(content, style, random_params, iterations=2 * n, state=fresh, **kwargs)
    assert not np.array_equal(restarted.image, whole.image)


# ----------------------------------------------------------------- early stopping and best image
# Loss weights given explicitly (the values of stylize's defaults for this image when these tests
# were written): the tests are about the loop, not about the defaults of the day.
LOOP_WEIGHTS = {"content_weight": DEFAULT_ALPHA, "style_weight": 1e3, "tv_weight": 0.0}


def test_patience_counts_consecutive_stalled_iterations(random_params, content, style):
    """With tol = 1e30 every iteration's relative change is below tol, so the run converges after
    exactly ``patience`` iterations; converging on the last allowed iteration says converged."""
    for patience, iterations in ((3, 10), (1, 10), (4, 4)):
        result = run(content, style, random_params, iterations=iterations, tol=1e30,
                     patience=patience, **LOOP_WEIGHTS)
        assert result.iterations == patience, (patience, iterations, result.iterations)
        assert "converged" in result.status, (patience, iterations, result.status)


def test_a_rise_of_the_loss_is_not_a_stall(random_params, content, style):
    """Adam with lr 30 from the photo first raises the loss 6.5x; with tol = 1e-9 and patience 1
    no iteration changes the loss that little, so the run goes to its limit (a rise counts as a
    change, not as convergence)."""
    adam = SolverConfig(name="adam", learning_rate=30.0)
    result = run(content, style, random_params, solver=adam, iterations=5, tol=1e-9, patience=1,
                 **LOOP_WEIGHTS)
    loss = result.history["loss"].astype(np.float64)
    assert np.any(np.diff(loss) > 0), "precondition: the loss rose"
    assert np.all(np.abs(np.diff(loss)) > 1e-6 * loss[:-1]), "precondition: no stalled step"
    assert result.iterations == 5 and "iteration limit" in result.status, result.status


def test_best_image_is_the_lowest_loss_of_the_run(random_params, content, style):
    """The best image is the lowest-loss iterate of the whole run, not the last one that improved
    on its predecessor. Adam with lr 30 (8 iterations) goes 1, 6.5, 1.3, 0.73 (the best), up to
    0.99, then down again to 0.86: descents that stay above the best must not replace it, and
    the result is the best image, not the last."""
    adam = SolverConfig(name="adam", learning_rate=30.0)
    result = run(content, style, random_params, solver=adam, iterations=8, tol=0.0,
                 **LOOP_WEIGHTS)
    loss = result.history["loss"]
    best_so_far = np.minimum.accumulate(loss)
    recoveries = [i for i in range(2, len(loss))
                  if loss[i] < loss[i - 1] and loss[i] > best_so_far[i - 1]]
    assert recoveries and loss[-1] > loss.min(), f"precondition: {loss / loss[0]}"
    assert float(result.state.best_loss) == loss.min()
    np.testing.assert_array_equal(result.image,
                                  np.clip(np.asarray(result.state.best_image), 0, 255))
    assert not np.array_equal(result.image, np.clip(np.asarray(result.state.image), 0, 255))


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


# "projected-lbfgs" (retired) was the third solver here; every solver of nst_jax.solvers runs
# now, the default jaxopt-lbfgs on the module's shared compile.
@pytest.mark.parametrize("optimizer", [
    pytest.param(name, marks=pytest.mark.slow) if name == "optax-lbfgs" else name
    for name in NAMES])  # optax's zoom line search: a compile of its own, 5-15 s
def test_every_solver_lowers_the_loss(random_params, content, style, optimizer):
    result = run(content, style, random_params, solver=SolverConfig(name=optimizer),
                 init="noise", key=jax.random.key(2), iterations=5)
    loss = result.history["loss"]
    assert loss[-1] <= loss[0] / 3, loss
    assert result.iterations == 5 and len(loss) == 6
    check_history(result, (DEFAULT_ALPHA, 1e3, 0.0))
    state_image = np.asarray(result.state.image)
    assert state_image.min() >= 0.0 and state_image.max() <= 255.0  # every iterate in the box
    if optimizer in ("adam", "jaxopt-lbfgs"):
        # Projected Adam and the fixed-step L-BFGS: one evaluation per iteration.
        assert result.evaluations == 6


def test_retired_projected_lbfgs_warns_and_runs_the_default(random_params, content, style):
    with pytest.warns(DeprecationWarning, match="retired"):
        solver = SolverConfig(name="projected-lbfgs")
    assert solver == SolverConfig()
    again = run(content, style, random_params, solver=solver, iterations=2)
    default = run(content, style, random_params, iterations=2)
    np.testing.assert_array_equal(again.image, default.image)


def test_deprecated_config_fields_choose_the_solver(random_params, content, style):
    """StyleConfig(optimizer=..., learning_rate=...) (the old way) still picks the solver."""
    with pytest.warns(DeprecationWarning):
        config = StyleConfig(optimizer="adam", learning_rate=30.0)
    assert _stylize.resolve_solver(config, None) == SolverConfig(name="adam", learning_rate=30.0)
    assert _stylize.resolve_solver(StyleConfig(), None) == SolverConfig()
    explicit = SolverConfig(name="optax-lbfgs")
    assert _stylize.resolve_solver(config, explicit) is explicit


def test_zero_tol_disables_early_stopping_even_if_the_loss_rises(random_params, content, style):
    # Adam with lr 30 from the content photo does not decrease monotonically; with tol=0
    # ("disables it", stylize's docstring) a rise must not count as convergence.
    adam = SolverConfig(name="adam", learning_rate=30.0)
    result = run(content, style, random_params, solver=adam, iterations=5, tol=0.0, patience=1)
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
    return len(_loop._compiled)


def test_changing_weight_values_does_not_recompile(random_params, content, style):
    first = run(content, style, random_params, iterations=2)
    chunks = compiled_loops()
    init_cache = _stylize._init_jit._cache_size()
    targets_cache = _stylize._targets_jit._cache_size()

    weights = (5.0, 20.0, 3.0)
    second = run(content, style, random_params, iterations=2, content_weight=weights[0],
                 style_weight=weights[1], tv_weight=weights[2],
                 style_layer_weights=list(STYLE_LAYER_WEIGHTS))
    assert compiled_loops() == chunks  # (compile_seconds now also counts computing targets)
    assert _stylize._init_jit._cache_size() == init_cache
    assert _stylize._targets_jit._cache_size() == targets_cache
    # ... and the new values were really used.
    check_history(second, weights)
    assert second.history["loss"][0] != first.history["loss"][0]
    assert second.history["style"][0] != first.history["style"][0]  # per-layer weights differ


# ---------------------------------------------------------------------------------- bad input


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


# ------------------------------------------------------- region masks (guided Grams), inits

# Two shallow style layers keep compiles and runs short; the mechanics do not depend on depth.
SHALLOW = StyleConfig(content_layers=("conv2_1",), style_layers=("conv1_1", "conv2_1"))


@pytest.fixture(scope="module")
def small_images():
    content = resize_array(load_image(DATA / "chelsea.png"), 32)  # 22x32
    starry = resize_array(load_image(DATA / "starry_night.png"), 40)
    wave = resize_array(load_image(DATA / "great_wave.png"), 24)
    return content, starry, wave


def np_gram_per_position(f):
    flat = np.asarray(f, np.float64).reshape(-1, f.shape[-1])
    return flat.T @ flat / flat.shape[0]


def _region_error(params, image, region, style, name="conv1_1"):
    """Unguided-style error of the features inside a region (cropped) against one style."""
    f = extract_features(params, preprocess(image), [name])[name][:, region]
    a = np_gram_per_position(extract_features(params, preprocess(style), [name])[name])
    a = a.astype(np.float32)
    return float(style_error(f, a))


def test_masks_route_each_style_to_its_region(random_params, small_images):
    content, starry, wave = small_images
    left = np.zeros(content.shape[:2], np.float32)
    left[:, :16] = 1.0
    result = stylize(content, [starry, wave], params=random_params, config=SHALLOW,
                     masks=np.stack([left, 1.0 - left]), content_weight=1e-4,
                     style_weight=1.0, tv_weight=0.0, iterations=15, tol=0.0)
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


def test_gaussian_init_is_the_weights_mean_colour(small_images):
    content = small_images[0]
    image = initial_image("gaussian", content, None, key=jax.random.key(0))
    np.testing.assert_allclose(np.asarray(image).mean(axis=(0, 1)), CAFFE.mean[::-1], atol=1e-3)
    np.testing.assert_allclose(deprocess(preprocess(image)), image, atol=1e-4)
    with pytest.raises(ValueError, match="expected"):
        initial_image(np.zeros((3, 3, 3)), content, None, key=jax.random.key(0))


def test_history_seconds_count_iterations_not_the_compiles(random_params, small_images,
                                                           monkeypatch):
    """Everything before the first iteration (targets, initial state, compiles) is
    compile_seconds; history["seconds"] starts at 0 and counts only iterations. The targets
    are made to take 2 s longer (a sleep): that must land in compile_seconds, not in the
    history of 3 iterations at 21x27 px (milliseconds each)."""
    content, starry, _ = small_images
    slow = _stylize._targets_jit

    def slow_targets(*args, **kwargs):
        out = jax.block_until_ready(slow(*args, **kwargs))
        time.sleep(2.0)
        return out

    monkeypatch.setattr(_stylize, "_targets_jit", slow_targets)
    config = StyleConfig(content_layers=("conv2_1",), style_layers=("conv1_1",))
    result = stylize(np.asarray(content[:21, :27]), starry, params=random_params, config=config,
                     iterations=3, tol=0.0)
    seconds = result.history["seconds"]
    assert seconds[0] == 0.0 and np.all(np.diff(seconds) >= 0)
    assert result.compile_seconds >= 2.0
    assert seconds[-1] < 2.0
