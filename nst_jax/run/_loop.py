"""The compiled optimization loop: objective + solver, one iteration at a time, with early
stopping, the best image so far, and a history.

Pixel convention: the image is (H, W, 3) float32 RGB 0-255. The loop state :class:`OptState`
carries the image, the solver's own state (``nst_jax.solvers``) and the bookkeeping; it is
returned with every result so a run can be continued or checkpointed. Objective settings
(:class:`~nst_jax.StyleConfig`) and the solver (:class:`~nst_jax.solvers.SolverConfig`) are
static; loss weights, targets and limits are traced arrays.
"""

from __future__ import annotations

import collections
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._objective import TERMS, LossWeights, StyleConfig, Targets, stylization_loss
from ..solvers import SolverConfig, make_solver
from ._distributed import to_host

#: The pixel box every iterate stays in.
BOUNDS = (0.0, 255.0)

# Run status codes (OptState.status).
RUNNING, MAX_ITERATIONS, CONVERGED, NONFINITE = 0, 1, 2, 3
STATUS_NAMES = {
    RUNNING: "running",
    MAX_ITERATIONS: "reached the iteration limit",
    CONVERGED: "converged (relative loss change below tolerance)",
    NONFINITE: "stopped: the loss became NaN or infinite",
}


class OptState(NamedTuple):
    """Loop state, returned with the result so a run can be continued.

    Attributes:
        image: (H, W, 3) current iterate, RGB 0-255.
        solver: the solver's own state (``nst_jax.solvers``: jaxopt's L-BFGS state with its
            curvature history, or an optax state).
        iteration: optimizer iterations done.
        evaluations: loss+gradient evaluations done (line-search trials included).
        loss: total loss at ``image``.
        terms: (3,) content, style, tv at ``image``.
        stall: consecutive iterations whose relative loss decrease was below ``tol``.
        status: RUNNING, MAX_ITERATIONS, CONVERGED or NONFINITE.
        best_image: the lowest-loss image so far (with a fixed step, L-BFGS may raise the loss
            now and then; a run returns its best image, not merely its last).
        best_loss: total loss at ``best_image``.
    """

    image: jax.Array
    solver: Any
    iteration: jax.Array
    evaluations: jax.Array
    loss: jax.Array
    terms: jax.Array
    stall: jax.Array
    status: jax.Array
    best_image: jax.Array
    best_loss: jax.Array


def _objective(config: StyleConfig):
    """``fun(image, params, targets, weights) -> (total, (3,) terms)``: what the solvers see."""
    def fun(image, params, targets, weights):
        total, terms = stylization_loss(image, params, targets, weights, config)
        return total, jnp.stack([terms[name] for name in TERMS])

    return fun


def _solver(config: StyleConfig, solver: SolverConfig):
    return make_solver(solver, _objective(config), bounds=BOUNDS)


def init_state(image, params, targets: Targets, weights: LossWeights, config: StyleConfig,
               solver: SolverConfig) -> OptState:
    """Evaluate the objective at ``image`` (clipped into the box) and set up the solver."""
    state = _solver(config, solver).init(image, params, targets, weights)
    image = jnp.clip(jnp.asarray(image, jnp.float32), *BOUNDS)
    zero = jnp.zeros((), jnp.int32)
    return OptState(image, state, zero, state.evaluations, state.value, state.aux, zero, zero,
                    image, state.value)


def _step(state: OptState, params, targets, weights, limits, config: StyleConfig,
          solver: SolverConfig) -> OptState:
    max_iterations, tol, patience = limits
    image, inner = _solver(config, solver).update(state.image, state.solver, params, targets,
                                                  weights)
    loss, terms = inner.value, inner.aux
    finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(image))
    improvement = (state.loss - loss) / jnp.maximum(jnp.abs(state.loss), 1e-30)
    # A rise is not convergence; tol = 0 turns early stopping off.
    stall = jnp.where((tol > 0) & (jnp.abs(improvement) < tol), state.stall + 1, 0)
    iteration = state.iteration + 1
    status = jnp.select(
        [~finite, stall >= patience, iteration >= max_iterations],
        [NONFINITE, CONVERGED, MAX_ITERATIONS],
        RUNNING,
    ).astype(jnp.int32)
    better = loss < state.best_loss
    new = OptState(image, inner, iteration, inner.evaluations, loss, terms, stall, status,
                   jnp.where(better, image, state.best_image),
                   jnp.where(better, loss, state.best_loss))
    # A non-finite step is discarded: the last good image and state are kept.
    return jax.tree.map(lambda good, bad: jnp.where(finite, good, bad), new,
                        state._replace(status=status, iteration=iteration,
                                       evaluations=new.evaluations))


def run_steps(state: OptState, params, targets, weights, limits, config: StyleConfig,
              solver: SolverConfig, steps: int):
    """Advance up to ``steps`` iterations inside one compiled ``lax.scan``.

    Finished runs (status != RUNNING) are carried through unchanged (``lax.cond``; under
    ``vmap`` both branches execute, so a finished lane costs as much as a running one).
    ``steps=1`` compiles one iteration with no control flow around it (a select keeps finished
    runs unchanged). (With kernels passed as plain arguments, XLA:CPU ran the convolutions
    2-5x slower inside a loop or conditional; with the precomputed input-gradient kernels
    of :func:`~nst_jax.with_backward_kernels`, which every run uses, a ``lax.scan`` step costs
    what a bare loss+gradient call does: docs/benchmarks/converge.md.)

    Args:
        limits: (max_iterations, tol, patience) traced scalars.

    Returns:
        (state, records) with records = dict of per-step arrays: ``loss`` (steps,), ``terms``
        (steps, 3), ``evaluations`` (steps,), ``active`` (steps,) bool (False once finished).
    """

    def body(carry, _):
        active = carry.status == RUNNING
        carry = jax.lax.cond(
            active,
            lambda s: _step(s, params, targets, weights, limits, config, solver),
            lambda s: s,
            carry,
        )
        return carry, {"loss": carry.loss, "terms": carry.terms,
                       "evaluations": carry.evaluations, "active": active}

    if steps == 1:
        active = state.status == RUNNING
        new = _step(state, params, targets, weights, limits, config, solver)
        state = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, state)
        records = {"loss": state.loss, "terms": state.terms,
                   "evaluations": state.evaluations, "active": active}
        return state, jax.tree.map(lambda r: r[None], records)
    return jax.lax.scan(body, state, None, length=steps)


#: Compiled programs kept (least recently used dropped): a long session that stylizes many
#: sizes must not keep every executable alive.
COMPILE_CACHE_SIZE = 16
_compiled: collections.OrderedDict = collections.OrderedDict()


def compile_cached(fn, args, **static):
    """Ahead-of-time compile ``fn(*args, **static)`` once per function, static settings,
    argument shapes/dtypes and shardings; memoized (the last ``COMPILE_CACHE_SIZE``), so
    equal shapes never compile twice.

    Returns (compiled, seconds spent compiling now: 0.0 when it was already compiled).
    """
    leaves = jax.tree.leaves(args)
    signature = (fn, tuple(sorted(static.items())), jax.tree.structure(args),
                 tuple((a.shape, str(a.dtype), getattr(a, "sharding", None)) for a in leaves))
    if signature in _compiled:
        _compiled.move_to_end(signature)
        return _compiled[signature], 0.0
    start = time.perf_counter()
    compiled = jax.jit(fn, static_argnames=tuple(static)).lower(*args, **static).compile()
    _compiled[signature] = compiled
    while len(_compiled) > COMPILE_CACHE_SIZE:
        _compiled.popitem(last=False)
    return compiled, time.perf_counter() - start


STOPPED = -1  # by the caller's callback (not a state value: the loop just ends)


def status_name(code: int) -> str:
    """Readable reason for a status code of :func:`drive`."""
    return STATUS_NAMES.get(code, "stopped by the caller")


def drive(compiled, state: OptState, run_args, *, iterations: int, start: float,
          compile_seconds: float, callback=None):
    """Call a compiled chunk of :func:`run_steps` (possibly vmapped) until every run stopped.

    Works for one run (scalar state fields) and for a batch (leading batch axis).

    Returns:
        (state, history, status): history holds ``loss``, ``content``, ``style``, ``tv``,
        ``evaluations`` with one row per iteration (row 0: the initial image; shape (T,) or
        (T, B); a finished lane repeats its last values) and ``seconds`` (T,); status is the
        status code (array for a batch), ``STOPPED`` where the callback ended the loop.
    """
    # to_host, not np.asarray: with devices on several processes the lanes are global arrays,
    # gathered so that every process sees (and stops on) the same values.
    history = {"loss": [to_host(state.loss)[None]], "terms": [to_host(state.terms)[None]],
               "evaluations": [to_host(state.evaluations)[None]], "seconds": [np.zeros(1)]}

    def status_now():
        status, done = to_host(state.status), to_host(state.iteration) >= iterations
        return np.where((status == RUNNING) & done, MAX_ITERATIONS, status)

    while np.any(status_now() == RUNNING):
        state, records = compiled(state, *run_args)
        records = jax.tree.map(to_host, records)
        active = records["active"]
        rows = active if active.ndim == 1 else active.any(axis=1)
        n = int(rows.sum())
        elapsed = time.perf_counter() - start - compile_seconds
        previous = history["seconds"][-1][-1]
        for name in ("loss", "terms", "evaluations"):
            history[name].append(records[name][rows])
        history["seconds"].append(previous + (elapsed - previous) * np.arange(1, n + 1) / max(n, 1))
        if callback is not None and callback(state, records):
            status = status_now()
            return state, _history(history), np.where(status == RUNNING, STOPPED, status)
    return state, _history(history), status_now()


def _history(lists) -> dict[str, np.ndarray]:
    terms = np.concatenate(lists["terms"])
    return {
        "loss": np.concatenate(lists["loss"]),
        **{name: terms[..., i] for i, name in enumerate(TERMS)},
        "evaluations": np.concatenate(lists["evaluations"]),
        "seconds": np.concatenate(lists["seconds"]),
    }


def chunk_size(pixels: int, save_every: int | None) -> int:
    """Iterations per compiled call: 1 on CPU, where an evaluation takes tens of milliseconds
    or more, so progress, ``--save-every`` and signals act at every iteration; on accelerators
    enough iterations for a progress update every second or two."""
    if jax.default_backend() == "cpu":
        return 1
    size = int(min(50, max(1, 2**17 // max(pixels, 1))))
    if save_every:
        size = max(d for d in range(1, min(size, save_every) + 1) if save_every % d == 0)
    return size
