"""Many stylizations of one content image in one compiled program: ``jax.vmap`` of the whole
optimization over loss weights, seeds/inits and style images, sharded across devices.

Pixel convention as everywhere: RGB float32 0-255, (H, W, 3) per image; batches lead with B.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._objective import (
    DEFAULT_STYLE_WEIGHT,
    TERMS,
    LossWeights,
    StyleConfig,
    Targets,
    default_weights,
    make_targets,
    with_weights,
)
from ..solvers import SolverConfig
from ._distributed import check_same_on_every_process, put, to_host
from ._loop import (
    BOUNDS,
    MAX_ITERATIONS,
    RUNNING,
    OptState,
    chunk_size,
    compile_cached,
    drive,
    init_state,
    run_steps,
    status_name,
)
from ._stylize import (
    DEFAULT_ITERATIONS,
    DEFAULT_PATIENCE,
    DEFAULT_TOL,
    _init_jit,
    _targets_jit,
    initial_image,
    resolve_solver,
)


class BatchResult(NamedTuple):
    """Outcome of :func:`stylize_batch`, one lane per run.

    Attributes:
        images: (B, H, W, 3) float32 RGB 0-255.
        history: ``loss``, ``content``, ``style``, ``tv``, ``evaluations``: (T, B) (row 0 is the
            initial image; a lane that stopped early repeats its last values); ``seconds`` (T,).
        iterations, evaluations: (B,) per lane.
        status: per lane, why it stopped.
        compile_seconds: time spent compiling in this call (0 when reused).
        devices: number of devices the batch was sharded over.
        state: the final :class:`~nst_jax.OptState` of every lane, (B, ...) NumPy arrays:
            continue the runs with ``stylize_batch(..., state=state)``, or checkpoint them
            (:func:`~nst_jax.run.save_checkpoint`).
    """

    images: np.ndarray
    history: dict[str, np.ndarray]
    iterations: np.ndarray
    evaluations: np.ndarray
    status: list[str]
    compile_seconds: float
    devices: int
    state: OptState


#: Above this many pixels per image, ``stylize_batch(mode="auto")`` runs the lanes one after the
#: other on a single CPU device. Measured on 2 cores (scripts/bench.py sweep, 8 runs): 43x64 px,
#: 10 iterations, batched 1.34x the throughput of sequential runs; 170x256 px, 20 iterations,
#: 0.95x and, after the Cauchy point stopped sorting every lane, 1.06x (a vmapped evaluation of
#: 8 images costs 0.85-1.03x of 8 single ones there): within the run-to-run drift, so larger
#: images keep the loop, which is never slower. The crossover was not measured: 128x128 is a
#: round value in between.
CPU_VMAP_MAX_PIXELS = 128 * 128


def _loop(content, styles, params, config, solver, weights, index, seeds, init, iterations,
          tol, patience, callback, state) -> BatchResult:
    """``stylize_batch`` lane by lane on one device, with the compiled program :func:`stylize`
    runs: each chunk advances every running lane in turn (a stopped lane costs nothing), so
    all runs progress together and a callback that stops the job finds every run with its best
    image so far. Each lane's result equals :func:`stylize`'s, bit for bit."""
    start = time.perf_counter()
    # Targets and loss weights as stylize builds them, so every lane runs stylize's program.
    targets = [_targets_jit(params, content, [style], config) for style in styles]
    lane_weights = [jax.tree.map(lambda x, b=b: x[b], weights) for b in range(len(index))]
    limits = (jnp.int32(iterations), jnp.float32(tol), jnp.int32(max(patience, 1)))
    if state is None:
        lanes = [_init_jit(initial_image(init, content, styles[i], key=jax.random.key(int(seed)),
                                         preprocessing=config.preprocessing),
                           params, targets[i], w, config, solver)
                 for i, seed, w in zip(index, seeds, lane_weights)]
    else:
        lanes = [jax.tree.map(lambda x, b=b: jnp.asarray(x[b]), state) for b in range(len(index))]
    steps = chunk_size(content.shape[0] * content.shape[1], None)
    compiled, compile_seconds = compile_cached(
        run_steps, (lanes[0], params, targets[index[0]], lane_weights[0], limits), config=config,
        solver=solver, steps=steps)

    def chunk(_):
        rows = []
        for b, lane in enumerate(lanes):
            if int(lane.status) == RUNNING and int(lane.iteration) < iterations:
                lanes[b], records = compiled(lane, params, targets[index[b]], lane_weights[b],
                                             limits)
            else:  # a stopped lane repeats its values, as under vmap
                records = {"loss": jnp.broadcast_to(lane.loss, (steps,)),
                           "terms": jnp.broadcast_to(lane.terms, (steps, len(TERMS))),
                           "evaluations": jnp.broadcast_to(lane.evaluations, (steps,)),
                           "active": jnp.zeros((steps,), bool)}
            rows.append(records)
        return _stack(lanes), jax.tree.map(lambda *r: jnp.stack(r, axis=1), *rows)

    state, history, status = drive(chunk, _stack(lanes), (), iterations=iterations, start=start,
                                   compile_seconds=compile_seconds, callback=callback)
    return _result(state, history, status, len(index), compile_seconds, 1)


def _stack(lanes):
    return jax.tree.map(lambda *x: jnp.stack(x), *lanes)


def _result(state, history, status, batch: int, compile_seconds: float,
            devices: int) -> BatchResult:
    """The first ``batch`` lanes (the rest are padding) of a finished :func:`drive`."""
    state = jax.tree.map(lambda x: to_host(x)[:batch], state)
    return BatchResult(
        images=np.clip(state.best_image, *BOUNDS),
        history={k: (v if k == "seconds" else v[:, :batch]) for k, v in history.items()},
        iterations=state.iteration,
        evaluations=state.evaluations,
        status=[status_name(int(code)) for code in np.asarray(status)[:batch]],
        compile_seconds=compile_seconds,
        devices=devices,
        state=state,
    )


def _continued(state: OptState, batch: int) -> OptState:
    """A batch state to continue from (``BatchResult.state``, or a checkpoint of it): lanes
    that stopped at the iteration limit run on to the new limit; converged or non-finite lanes
    stay stopped, as they would have in one uninterrupted run."""
    sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) else 0 for leaf in jax.tree.leaves(state)}
    if sizes != {batch}:
        raise ValueError(f"state: holds {sorted(sizes)} lanes, this batch has {batch} runs")
    status = np.asarray(state.status)
    return state._replace(status=np.where(status == MAX_ITERATIONS, RUNNING, status)
                          .astype(status.dtype))


def _lane_targets(content_features, style_grams, style_index):
    return Targets(content_features, tuple(grams[style_index] for grams in style_grams))


def _on_lanes(state, lanes):
    # Pin every per-lane array to the batch sharding, so each chunk's output state has exactly
    # the sharding the compiled chunk expects as input.
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, lanes), state)


def _batched_init(images, weights, style_index, params, content_features, style_grams, config,
                  solver, lanes):
    def one(image, lane_weights, index):
        targets = _lane_targets(content_features, style_grams, index)
        return init_state(image, params, targets, lane_weights, config, solver)

    return _on_lanes(jax.vmap(one)(images, weights, style_index), lanes)


def _batched_run(state, weights, style_index, params, content_features, style_grams, limits,
                 config, solver, steps, lanes):
    """Up to ``steps`` lock-step iterations of every lane; leaves early once no lane is running.

    Each iteration is :func:`run_steps` with ``steps=1`` vmapped over the lanes (no control flow
    around the VGG convolutions; a select keeps finished lanes unchanged, which is what a
    vmapped ``lax.cond`` would compute anyway). For ``steps > 1`` a ``lax.while_loop`` outside
    the vmap repeats it, so the batch stops paying as soon as its last lane has stopped.
    Records are (steps, B, ...); rows never reached are marked inactive.
    """

    def one_iteration(batch_state):
        def lane(lane_state, lane_weights, index):
            targets = _lane_targets(content_features, style_grams, index)
            lane_state, records = run_steps(lane_state, params, targets, lane_weights, limits,
                                            config, solver, 1)
            return lane_state, jax.tree.map(lambda r: r[0], records)

        batch_state, row = jax.vmap(lane)(batch_state, weights, style_index)
        return _on_lanes(batch_state, lanes), row

    if steps == 1:
        state, row = one_iteration(state)
        return state, jax.tree.map(lambda r: r[None], row)

    batch = state.loss.shape[0]
    records = {"loss": jnp.zeros((steps, batch), jnp.float32),
               "terms": jnp.zeros((steps, batch, len(TERMS)), jnp.float32),
               "evaluations": jnp.zeros((steps, batch), jnp.int32),
               "active": jnp.zeros((steps, batch), bool)}

    def running(carry):
        step, batch_state, _ = carry
        return (step < steps) & jnp.any(batch_state.status == RUNNING)

    def body(carry):
        step, batch_state, records = carry
        batch_state, row = one_iteration(batch_state)
        records = {name: records[name].at[step].set(row[name].astype(records[name].dtype))
                   for name in records}
        return step + 1, batch_state, records

    _, state, records = jax.lax.while_loop(running, body, (jnp.int32(0), state, records))
    return state, records


def _broadcast(value, batch: int, tail: tuple[int, ...], what: str) -> jax.Array:
    value = jnp.asarray(value, jnp.float32)
    if value.shape == tail:
        return jnp.broadcast_to(value, (batch, *tail))
    if value.shape != (batch, *tail):
        raise ValueError(f"{what}: expected shape {tail} or {(batch, *tail)}, got {value.shape}")
    return value


def _batch_size(*values) -> int:
    sizes = {int(np.shape(v)[0]) for v in values if v is not None and np.ndim(v) >= 1}
    if len(sizes) > 1:
        raise ValueError(f"per-run arguments disagree on the batch size: {sorted(sizes)}")
    return sizes.pop() if sizes else 1


def stylize_batch(
    content,
    styles: Sequence[Any],
    *,
    params,
    config: StyleConfig | None = None,
    solver: SolverConfig | None = None,
    content_weight=None,
    style_weight=DEFAULT_STYLE_WEIGHT,
    tv_weight=None,
    style_layer_weights=None,
    style_index=None,
    seeds=None,
    init: str = "content",
    iterations: int = DEFAULT_ITERATIONS,
    tol: float = DEFAULT_TOL,
    patience: int = DEFAULT_PATIENCE,
    devices: Sequence[Any] | None = None,
    callback=None,
    mode: str = "auto",
    state: OptState | None = None,
) -> BatchResult:
    """Run B stylizations of one content image as one vmapped, compiled optimization.

    ``mode``: ``"vmap"`` (one compiled program for all runs), ``"loop"`` (the runs in turn,
    each chunk with :func:`stylize`'s program; the same results), or ``"auto"``: vmap, except
    on a single CPU device for images above ``CPU_VMAP_MAX_PIXELS``, where batching measured
    slower than a loop (see that constant), so a sweep is never slower than running it
    yourself.

    ``content_weight=None`` and ``tv_weight=None``: :func:`~nst_jax.content_weight_for` and
    :func:`~nst_jax.tv_weight_for` the content's size, as in :func:`~nst_jax.stylize`. Per-run
    arguments are either one value (shared) or a length-B array: ``content_weight``,
    ``style_weight``, ``tv_weight`` (B,), ``style_layer_weights`` (B, L), ``style_index`` (B,)
    (which of ``styles`` each run uses), ``seeds`` (B,) (keys for ``init="noise"``). The style
    Grams are computed once per style image and shared by the runs that use it; the content
    features once for all.

    Early stopping under vmap: the batch advances in lock-step and a run that has converged is
    carried unchanged (its ``lax.cond`` becomes a select, so both branches are computed): the
    whole batch costs as much as its slowest run, and a converged lane keeps costing a full
    evaluation per iteration until every lane has stopped or ``iterations`` is reached.

    Sharding: the batch axis is split over ``devices`` (default: all local devices) with a 1-D
    ``Mesh`` and ``NamedSharding``; params, content features and Grams are replicated. B is
    padded to a multiple of the device count with copies of run 0 (dropped from the result).
    With one device this is plain vmap. Results equal a Python loop of :func:`stylize` calls.

    Several processes (after ``jax.distributed.initialize``; on CPU with
    ``jax_cpu_collectives_implementation="gloo"``): pass ``devices=jax.devices()`` and make the
    same call with the same arguments on every process (checked: a ValueError names the
    arguments that differ). Each process computes its devices' lanes and every process returns
    the whole result. The callback's ``records`` are then NumPy copies of all lanes, but its
    ``state`` holds global arrays (read them with ``jax.experimental.multihost_utils``).

    Changing any weight value, seed or style *content* of the same shapes reuses the compiled
    program (a memo keyed on shapes and static settings).

    ``callback(state, records)`` runs after each compiled chunk (an iteration, on CPU) with
    the (B, ...) state and (steps, B) records; returning True ends the job there, with the
    result so far. ``state`` (``BatchResult.state``, or a checkpoint of it) continues those runs
    up to ``iterations`` in all, as if they had not stopped (lanes at the old iteration limit
    run on; converged ones stay converged).
    """
    config, params = with_weights(config or StyleConfig(), params)
    solver = resolve_solver(config, solver)
    content = jnp.asarray(content, jnp.float32)
    styles = [jnp.asarray(style, jnp.float32) for style in styles]
    content_weight, tv_weight = default_weights(config, content.shape, content=content_weight,
                                                tv=tv_weight)
    if not styles:
        raise ValueError("at least one style image is required")
    n_style, n_content = len(config.style_layers), len(config.content_layers)
    # A 1-D style_layer_weights is one vector shared by all runs, not a batch axis.
    per_run_layers = style_layer_weights if np.ndim(style_layer_weights) == 2 else None
    batch = _batch_size(content_weight, style_weight, tv_weight, per_run_layers,
                        style_index, seeds)
    layer_weights = (jnp.full((n_style,), 1.0 / n_style) if style_layer_weights is None
                     else style_layer_weights)
    weights = LossWeights(
        _broadcast(content_weight, batch, (), "content_weight"),
        _broadcast(style_weight, batch, (), "style_weight"),
        _broadcast(tv_weight, batch, (), "tv_weight"),
        _broadcast(jnp.full((n_content,), 1.0 / max(n_content, 1)), batch, (n_content,),
                   "content layer weights"),
        _broadcast(layer_weights, batch, (n_style,), "style_layer_weights"),
    )
    index = np.zeros(batch, np.int32) if style_index is None else np.asarray(style_index)
    index = np.broadcast_to(index, (batch,)).astype(np.int32)
    if index.min() < 0 or index.max() >= len(styles):
        raise ValueError(f"style_index must be in [0, {len(styles)}), got {index.tolist()}")
    seeds = np.broadcast_to(np.arange(batch) if seeds is None else np.asarray(seeds), (batch,))
    if state is not None:
        state = _continued(state, batch)

    devices = list(devices) if devices is not None else jax.local_devices()
    if mode not in ("auto", "vmap", "loop"):
        raise ValueError(f"mode must be 'auto', 'vmap' or 'loop', got {mode!r}")
    if mode == "auto":
        large = content.shape[0] * content.shape[1] > CPU_VMAP_MAX_PIXELS
        mode = "loop" if large and len(devices) == 1 and devices[0].platform == "cpu" else "vmap"
    if mode == "loop":
        return _loop(content, styles, params, config, solver, weights, index, seeds, init,
                     iterations, tol, patience, callback, state)
    mesh = Mesh(np.array(devices), ("batch",))
    lanes = NamedSharding(mesh, PartitionSpec("batch"))
    replicated = NamedSharding(mesh, PartitionSpec())
    if not lanes.is_fully_addressable:
        check_same_on_every_process({
            "content": content, "styles": styles, "params": params, "config": config,
            "solver": solver,
            "content_weight": weights.content, "style_weight": weights.style,
            "tv_weight": weights.tv, "style_layer_weights": weights.style_layers,
            "style_index": index, "seeds": seeds, "init": init, "iterations": iterations,
            "tol": tol, "patience": patience})

    start = time.perf_counter()
    per_style = [make_targets(params, content, style, config) for style in styles]
    content_features = per_style[0].content_features
    style_grams = tuple(jnp.stack([t.style_grams[i] for t in per_style])
                        for i in range(n_style))
    padded = -(-batch // len(devices)) * len(devices)
    pad = lambda x: jnp.concatenate([x, jnp.repeat(x[:1], padded - batch, 0)])
    weights, lane_index = put(jax.tree.map(pad, (weights, jnp.asarray(index))), lanes)
    shared = put((params, content_features, style_grams), replicated)
    limits = put((jnp.int32(iterations), jnp.float32(tol), jnp.int32(max(patience, 1))),
                 replicated)
    init_seconds = 0.0
    if state is None:
        images = put(pad(jnp.stack([
            initial_image(init, content, styles[i], key=jax.random.key(int(seed)),
                          preprocessing=config.preprocessing)
            for i, seed in zip(index, seeds)
        ])), lanes)
        init_fn, init_seconds = compile_cached(
            _batched_init, (images, weights, lane_index, *shared), config=config, solver=solver,
            lanes=lanes)
        state = init_fn(images, weights, lane_index, *shared)
    else:
        state = put(jax.tree.map(pad, state), lanes)
    steps = chunk_size(content.shape[0] * content.shape[1] * padded // len(devices), None)
    run_fn, run_seconds = compile_cached(
        _batched_run, (state, weights, lane_index, *shared, limits), config=config,
        solver=solver, steps=steps, lanes=lanes)
    state, history, status = drive(
        run_fn, state, (weights, lane_index, *shared, limits), iterations=iterations, start=start,
        compile_seconds=init_seconds + run_seconds, callback=callback)
    return _result(state, history, status, batch, init_seconds + run_seconds, len(devices))
