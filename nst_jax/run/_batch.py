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
    RUNNING,
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
    initial_image,
    resolve_solver,
    stylize,
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
    """

    images: np.ndarray
    history: dict[str, np.ndarray]
    iterations: np.ndarray
    evaluations: np.ndarray
    status: list[str]
    compile_seconds: float
    devices: int


#: Above this many pixels per image, ``stylize_batch(mode="auto")`` runs the lanes one after the
#: other on a single CPU device. Measured on 2 cores (scripts/bench.py sweep, 8 runs): 43x64 px,
#: 10 iterations, batched 1.34x the throughput of sequential runs; 170x256 px, 20 iterations,
#: 0.95x and, after the Cauchy point stopped sorting every lane, 1.06x (a vmapped evaluation of
#: 8 images costs 0.85-1.03x of 8 single ones there): within the run-to-run drift, so larger
#: images keep the loop, which is never slower. The crossover was not measured: 128x128 is a
#: round value in between.
CPU_VMAP_MAX_PIXELS = 128 * 128


def _loop(content, styles, params, config, solver, weights, index, seeds, init, iterations,
          tol, patience, callback) -> BatchResult:
    """``stylize_batch`` as a Python loop of :func:`stylize` runs, with the same result layout
    (histories padded by repeating each run's last row). ``callback`` sees each run as a batch
    of one."""
    lane_callback = None if callback is None else (
        lambda state, records: callback(jax.tree.map(lambda x: x[None], state),
                                        jax.tree.map(lambda x: x[:, None], records)))
    results = []
    for b in range(len(index)):
        results.append(stylize(
            content, styles[int(index[b])], params=params, config=config, solver=solver,
            content_weight=weights.content[b], style_weight=weights.style[b],
            tv_weight=weights.tv[b], content_layer_weights=weights.content_layers[b],
            style_layer_weights=weights.style_layers[b], init=init,
            key=jax.random.key(int(seeds[b])), iterations=iterations, tol=tol,
            patience=patience, callback=lane_callback))
    rows = max(len(r.history["loss"]) for r in results)
    pad = lambda v: np.concatenate([v, np.repeat(v[-1:], rows - len(v), 0)])
    history = {k: np.stack([pad(r.history[k]) for r in results], axis=1)
               for k in ("loss", *TERMS, "evaluations")}
    # Seconds since the start of the job at which every run had reached that row.
    offsets = np.cumsum([0.0] + [r.history["seconds"][-1] for r in results[:-1]])
    history["seconds"] = pad(results[-1].history["seconds"]) + offsets[-1]
    return BatchResult(
        images=np.stack([r.image for r in results]),
        history=history,
        iterations=np.array([r.iterations for r in results]),
        evaluations=np.array([r.evaluations for r in results]),
        status=[r.status for r in results],
        compile_seconds=sum(r.compile_seconds for r in results),
        devices=1,
    )


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
) -> BatchResult:
    """Run B stylizations of one content image as one vmapped, compiled optimization.

    ``mode``: ``"vmap"`` (one compiled program for all runs), ``"loop"`` (one :func:`stylize`
    per run, same results), or ``"auto"``: vmap, except on a single CPU device for images
    above ``CPU_VMAP_MAX_PIXELS``, where batching measured slower than a loop (see that
    constant), so a sweep is never slower than running it yourself.

    ``content_weight=None`` and ``tv_weight=None``: :func:`~nst_jax.content_weight_for` and
    :func:`~nst_jax.tv_weight_for` the content's size, as in :func:`~nst_jax.stylize`. Per-run arguments are either one value (shared) or a length-B
    array: ``content_weight``,
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

    devices = list(devices) if devices is not None else jax.local_devices()
    if mode not in ("auto", "vmap", "loop"):
        raise ValueError(f"mode must be 'auto', 'vmap' or 'loop', got {mode!r}")
    if mode == "auto":
        large = content.shape[0] * content.shape[1] > CPU_VMAP_MAX_PIXELS
        mode = "loop" if large and len(devices) == 1 and devices[0].platform == "cpu" else "vmap"
    if mode == "loop":
        return _loop(content, styles, params, config, solver, weights, index, seeds, init,
                     iterations, tol, patience, callback)
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
    images = jnp.stack([
        initial_image(init, content, styles[i], key=jax.random.key(int(seed)),
                      preprocessing=config.preprocessing)
        for i, seed in zip(index, seeds)
    ])

    padded = -(-batch // len(devices)) * len(devices)
    pad = lambda x: jnp.concatenate([x, jnp.repeat(x[:1], padded - batch, 0)])
    images, weights, index = put(jax.tree.map(pad, (images, weights, jnp.asarray(index))), lanes)
    shared = put((params, content_features, style_grams), replicated)
    limits = put((jnp.int32(iterations), jnp.float32(tol), jnp.int32(max(patience, 1))),
                 replicated)

    init_fn, init_seconds = compile_cached(
        _batched_init, (images, weights, index, *shared), config=config, solver=solver,
        lanes=lanes)
    state = init_fn(images, weights, index, *shared)
    steps = chunk_size(content.shape[0] * content.shape[1] * padded // len(devices), None)
    run_fn, run_seconds = compile_cached(
        _batched_run, (state, weights, index, *shared, limits), config=config, solver=solver,
        steps=steps, lanes=lanes)
    state, history, status = drive(
        run_fn, state, (weights, index, *shared, limits), iterations=iterations, start=start,
        compile_seconds=init_seconds + run_seconds, callback=callback)
    keep = slice(0, batch)
    return BatchResult(
        images=np.clip(to_host(state.best_image)[keep], *BOUNDS),
        history={k: (v if k == "seconds" else v[:, keep]) for k, v in history.items()},
        iterations=to_host(state.iteration)[keep],
        evaluations=to_host(state.evaluations)[keep],
        status=[status_name(int(code)) for code in np.asarray(status)[keep]],
        compile_seconds=init_seconds + run_seconds,
        devices=len(devices),
    )

