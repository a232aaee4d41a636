"""``stylize``: one image, from the content photo and the style image(s) to the result.

Pixel convention: every image is (H, W, 3) float32 RGB 0-255.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._objective import (
    DEFAULT_STYLE_WEIGHT,
    StyleConfig,
    Targets,
    _as_style_list,
    default_weights,
    loss_weights,
    make_targets,
    with_weights,
)
from .._preprocessing import CAFFE, Preprocessing, deprocess
from ..solvers import SolverConfig
from ._loop import (
    BOUNDS,
    OptState,
    chunk_size,
    compile_cached,
    drive,
    init_state,
    run_steps,
    status_name,
)

INITS = ("content", "noise", "style", "gaussian")
#: Defaults of :func:`stylize`, chosen on the pretrained VGG-19 (docs/benchmarks/quality.md).
DEFAULT_ITERATIONS = 500
DEFAULT_TOL = 1e-3
DEFAULT_PATIENCE = 10

_init_jit = jax.jit(init_state, static_argnames=("config", "solver"))
_targets_jit = jax.jit(make_targets, static_argnames="config")


class StylizeResult(NamedTuple):
    """Outcome of :func:`stylize`.

    Attributes:
        image: (H, W, 3) float32 RGB 0-255 (clipped to range), the lowest-loss image of the
            run (``state.best_image``; nearly always the last iterate, ``state.image``).
        history: per iteration (index 0 = the initial image): ``loss`` total, ``content``,
            ``style``, ``tv`` (unweighted terms), ``evaluations`` (cumulative loss+gradient
            evaluations) and ``seconds`` (wall clock of the iterations since the first; within one
            compiled chunk the time is spread evenly over its iterations).
        iterations: optimizer iterations done.
        evaluations: loss+gradient evaluations done.
        status: why the run stopped (see ``STATUS_NAMES``).
        state: the final :class:`OptState` (continue a run with ``stylize(..., state=...)``).
        compile_seconds: seconds before the first iteration: the content features, style
            Grams and initial state, and on a cold run their compiles and the step's
            (``history["seconds"]`` counts the iterations only).
        targets: the :class:`Targets` used (pass them back with ``stylize(..., targets=)`` to
            continue a run without recomputing the content features and style Grams).
    """

    image: np.ndarray
    history: dict[str, np.ndarray]
    iterations: int
    evaluations: int
    status: str
    state: OptState
    compile_seconds: float
    targets: Targets


def initial_image(init, content, style, *, key,
                  preprocessing: Preprocessing | None = None) -> jax.Array:
    """Starting image (H, W, 3) RGB 0-255.

    ``init`` is an array (an image of the content's shape, e.g. an upsampled earlier result), or
    ``"content"`` (the photo), ``"noise"`` (white noise, uniform 0-255, from ``key``),
    ``"style"`` (the first style image resized to the content's shape) or ``"gaussian"``
    (neural-style's ``-init random``: ``deprocess(0.001 * N(0, 1))``, i.e. the weights' mean
    colour plus tiny Gaussian noise in network-input units).
    """
    content = jnp.asarray(content, jnp.float32)
    if not isinstance(init, str):
        init = jnp.asarray(init, jnp.float32)
        if init.shape != content.shape:
            raise ValueError(f"init image has shape {init.shape}, expected {content.shape}")
        return init
    if init == "content":
        return content
    if init == "noise":
        return jax.random.uniform(key, content.shape, jnp.float32, 0.0, 255.0)
    if init == "gaussian":
        return deprocess(0.001 * jax.random.normal(key, content.shape, jnp.float32),
                         preprocessing or CAFFE)
    if init == "style":
        first = _as_style_list(style)[0]
        return jax.image.resize(first, content.shape, "lanczos3")
    raise ValueError(f"init must be an image or one of {INITS}, got {init!r}")


def stylize(
    content,
    style,
    *,
    params,
    config: StyleConfig | None = None,
    solver: SolverConfig | None = None,
    content_weight: float | None = None,
    style_weight: float = DEFAULT_STYLE_WEIGHT,
    tv_weight: float | None = None,
    content_layer_weights=None,
    style_layer_weights=None,
    style_blend=None,
    masks=None,
    targets: Targets | None = None,
    init="content",
    key: jax.Array | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    tol: float = DEFAULT_TOL,
    patience: int = DEFAULT_PATIENCE,
    state: OptState | None = None,
    callback: Callable[[OptState, dict[str, np.ndarray]], Any] | None = None,
    save_every: int | None = None,
) -> StylizeResult:
    """Minimize ``alpha * L_c + beta * L_s + gamma * TV`` over the pixels of one image.

    ``content`` and ``style`` are RGB 0-255 (H, W, 3) arrays at the sizes to use (resize first;
    the CLI does). The image keeps the content's size; every iterate stays in 0..255.

    The default solver is jaxopt's L-BFGS with a fixed step, a first step of at most
    ``solver.first_step`` pixel levels and the pixel box kept by reflection
    (``nst_jax.solvers``): its trajectory does not depend on the scale of the loss, so
    multiplying every loss weight by the same factor gives the same image.

    Defaults (chosen on the pretrained VGG-19 over photo/painting pairs of several kinds,
    docs/benchmarks/quality.md): ``content_weight=None`` and ``tv_weight=None`` mean
    :func:`~nst_jax.content_weight_for` and :func:`~nst_jax.tv_weight_for` the content's size
    (the same balance at every size); ``style_weight``, ``iterations``, ``tol`` and
    ``patience`` are the constants ``DEFAULT_*``;
    ``init="content"`` (Gatys et al. 2016, Sec. 4: initialising from the photo gives results
    like noise and converges faster). Early stopping (``tol``, ``patience``): the run ends once
    the relative decrease of the loss stayed below ``tol`` for ``patience`` consecutive
    iterations; ``tol=0`` disables it.

    Args:
        content: (H, W, 3) RGB 0-255.
        style: (H', W', 3) RGB 0-255, or a sequence of style images (blended, or one per mask
            region; see :func:`~nst_jax.make_targets`).
        params: VGG-19 weights: a :class:`~nst_jax.VGGWeights` (from
            :func:`~nst_jax.pretrained_vgg19`; its input convention is applied unless
            ``config.preprocessing`` overrides it) or a plain params pytree.
        config: :class:`~nst_jax.StyleConfig`: layers, pooling, loss conventions.
        solver: :class:`~nst_jax.solvers.SolverConfig` (default: jaxopt's L-BFGS).
        style_blend: blend weights of several styles (default equal).
        masks: (R, H, W) region masks in [0, 1], one per style image (guided Grams).
        targets: precomputed :class:`~nst_jax.Targets` (e.g. style Grams shared across video
            frames); when given, ``style``, ``style_blend`` and ``masks`` are not used.
        init: ``"content"``, ``"noise"``, ``"style"``, ``"gaussian"`` or an (H, W, 3) image (see
            :func:`initial_image`); ``key`` seeds the random ones.
        iterations: maximum optimizer iterations (iterations, not evaluations).
        state: an :class:`OptState` from an earlier result to continue from.
        callback: called after each compiled chunk with ``(state, records)``; return True to stop.
        save_every: if given, chunks end on multiples of it (so callbacks can save images).

    Returns:
        :class:`StylizeResult` with the image, loss history and counts.
    """
    config, params = with_weights(config or StyleConfig(), params)
    solver = resolve_solver(config, solver)
    content = jnp.asarray(content, jnp.float32)
    if content.ndim != 3 or content.shape[-1] != 3:
        raise ValueError(f"content: expected one (H, W, 3) RGB image, got shape {content.shape}")
    style = _as_style_list(style)
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    key = jax.random.key(0) if key is None else key
    content_weight, tv_weight = default_weights(config, content.shape, content=content_weight,
                                                tv=tv_weight)
    weights = loss_weights(
        config, content=content_weight, style=style_weight, tv=tv_weight,
        content_layers=content_layer_weights, style_layers=style_layer_weights,
    )
    limits = (jnp.int32(iterations), jnp.float32(tol), jnp.int32(max(patience, 1)))

    start = time.perf_counter()
    if targets is None:
        targets = _targets_jit(params, content, style, config, style_blend=style_blend,
                               masks=masks)
    if state is None:
        first = initial_image(init, content, style, key=key, preprocessing=config.preprocessing)
        state = _init_jit(first, params, targets, weights, config, solver)
    else:
        state = state._replace(status=jnp.zeros((), jnp.int32))
    steps = chunk_size(content.shape[0] * content.shape[1], save_every)
    compiled, _ = compile_cached(
        run_steps, (state, params, targets, weights, limits), config=config, solver=solver,
        steps=steps)
    # Everything before the first iteration (the targets, the initial state, and on a cold run
    # their compiles and the step's) is compile_seconds; history["seconds"] counts iterations.
    state = jax.block_until_ready(state)
    compile_seconds = time.perf_counter() - start
    state, history, status = drive(compiled, state, (params, targets, weights, limits),
                                   iterations=iterations, start=time.perf_counter(),
                                   compile_seconds=0.0, callback=callback)
    return StylizeResult(
        image=np.clip(np.asarray(state.best_image), *BOUNDS),
        history=history,
        iterations=int(state.iteration),
        evaluations=int(state.evaluations),
        status=status_name(int(status)),
        state=state,
        compile_seconds=compile_seconds,
        targets=targets,
    )


def resolve_solver(config: StyleConfig, solver: SolverConfig | None) -> SolverConfig:
    """The solver to run: ``solver``, else one built from the deprecated optimizer fields of
    ``config`` (if any are set), else the default :class:`~nst_jax.solvers.SolverConfig`."""
    if solver is not None:
        return solver
    return SolverConfig.from_settings(config.legacy_solver_settings())
