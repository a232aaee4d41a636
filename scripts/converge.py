"""Convergence benchmark: loss against wall-clock time and evaluations, for every optimizer, on
the pretrained VGG-19.

Commands (from the repository root, venv active; ``--weights`` defaults to ``auto``, the
pretrained weights as the CLI finds or downloads them; ``random`` for untrained ones)::

    python scripts/converge.py --sizes 128 --evals 300 --json docs/benchmarks/converge_128.json \
        --plot docs/benchmarks/converge_128.png                       # the default runs
    python scripts/converge.py --sizes 256 --evals 300 --runs 'lua-ref-steps,jaxopt-none-h10'
    python scripts/converge.py --torch-json torch_128.json ...         # + the PyTorch reference
    python scripts/converge.py --list-runs

Runtime on the 2-core CPU machine: one 128-px loss+gradient evaluation takes ~50 ms as a
compiled call (~190 ms at 256 px), so a 300-evaluation run is ~15-25 s at 128 px and ~1 min at
256 px plus its compile (5-10 s; ~30 s for the Hager-Zhang line search).

Problem: the chelsea photo (content) and starry_night (style) from ``examples/``, each loaded
with ``load_image(path, max_side=S)`` for every size S in ``--sizes``; the library's default
objective (conv4_2 content, conv1_1..conv5_1 style, the default alpha (size-aware) and beta, no
TV: the PyTorch reference has none; :func:`objective_weights`), content initialisation. Every run gets the same budget of ``--evals`` loss+gradient evaluations (the
initial evaluation counts as one).

Runs (names for ``--runs``; shell-style patterns such as ``'adam-*'`` work, ``all`` = every run):

* ``lua-ref``: a "Lua-reference" L-BFGS written here in JAX (:func:`lua_step`), matching
  ``optim.lbfgs`` of torch/optim as jcjohnson/neural-style calls it (``learningRate=1``,
  ``nCorrection=100``, no line search, tolFun/tolX disabled): one evaluation per iteration, first
  step ``t = min(1, 1/|g|_1) * lr`` then ``t = lr``, two-loop recursion with
  ``H0 = s'y / y'y`` of the newest pair, a pair skipped when ``y's <= 1e-10``; unconstrained.
  (Checked against a line-by-line numpy port of optim/lbfgs.lua on a small convex problem:
  losses and iterates agree to 1e-14 in float64, history wrap-around included.) It runs compiled
  in chunks of ``lax.scan``. Its loss after ``--evals`` evaluations is the target ``L*``.
* ``lua-ref-steps``: the same algorithm, one compiled iteration per Python call (no XLA loop
  around the iterations; XLA:CPU runs convolutions ~2x slower inside loops). It gives ``L*``
  where ``lua-ref`` is not run.
* ``torch-lbfgs`` (with ``--torch-json``, one file per size, from ``scripts/torch_reference.py
  lbfgs``): the independent PyTorch reference, ``torch.optim.LBFGS(lr=1, history_size=100,
  line_search_fn=None)`` on the same weights and objective; its loss at the budget is the
  target when given, and each run's time to it is compared with the PyTorch run's.
* ``jaxopt-{none,backtracking,zoom,hager-zhang}-h{10,20,50,100}``: :func:`nst_jax.stylize` with
  jaxopt's L-BFGS (``nst_jax.solvers.lbfgs``: box kept by reflection, first step of at most 32
  pixel levels), with a fixed step (``none``) or one of jaxopt's line searches.
  ``jaxopt-none-h10`` is the library default.
* ``optax-lbfgs-h10``: optax's L-BFGS (zoom line search).
* ``adam-lr{5,10,20}``: projected Adam, learning rate in 0-255 pixel units.

How each run is timed: a warm-up call compiles everything (``stylize(iterations=0)``; for the
references the same functions ahead of time), then the timed call: ``stylize(iterations=evals-1,
tol=0)`` with a callback that stops it once ``evaluations >= --evals``. Solvers with more than one
evaluation per iteration (line searches) may thus overshoot the budget by up to one compiled
chunk; their curves are cut at the budget (``loss@E`` is the last loss with at most ``--evals``
evaluations) while ``final``/``clipped`` refer to the last iterate. jaxopt counts every call of
the objective as an evaluation, including the forward-only one its zoom line search makes to
recompute ``aux`` (cheaper than a loss+gradient). Seconds are ``history["seconds"]`` (wall clock
from the start of the timed call, compiles excluded, so the target features and the initial
evaluation are in the first chunk; within a chunk the time is spread evenly); the references are
timed the same way. ``clipped``: the loss of the final image clipped to 0..255, which is what an
unconstrained solver (the references) delivers (for nst_jax's it equals ``final``: every iterate
is in the box); ``L*`` and ``t(L*)`` use the loss of the iterate itself.

Two evaluation floors are measured per size: "bare", one compiled ``value_and_grad`` call
(``block_until_ready``, median of ``--repeats`` = 5, measured again just before every run), and
"in-loop", the seconds per evaluation of a compiled ``lax.scan`` that does nothing but evaluate
(3 per call, median of 3 calls). They differ on XLA:CPU: inside a while loop the 13
input-gradient convolutions of the VGG backward pass keep a transposed (``01oi``) kernel layout
and are emitted as plain parallel loops instead of Eigen calls (in the optimized HLO of the
two: all 26 convolutions ``01io`` outside a loop; inside, 13 ``01oi`` ones carrying the loop
emitter's ``outer_dimension_partitions``), the class of XLA:CPU problem of jax-ml/jax#12868.

Output: a table per size on stdout with, per run: evaluations and iterations done, evaluations
per iteration (initial evaluation excluded), ms per evaluation (loop seconds / evaluations),
``x bare`` (that over the bare evaluation), ``x floor`` (over the floor of the run's loop
structure: in-loop, or bare for ``lua-ref-steps``), solver ms per iteration ((loop seconds -
evaluations x floor) / iterations), ``loss@E``, final and clipped final loss, the time to reach
``L*`` ("-" if never) and its ratio to the reference's; then the loop overhead of the library
default: loop seconds / (evaluations x bare evaluation), target <= 1.05, and the same over the
in-loop floor. ``--json PATH`` (default converge.json): every curve (loss, evaluations, seconds
per iteration), every summary number, the floors and the environment (jax version, CPU count,
load average at start and end). ``--plot PATH`` (default converge.png, needs matplotlib:
``pip install '.[plots]'``): per size a row of two panels, loss (log scale) against seconds and
against evaluations, one line per run, ``L*`` dashed. Both files are written atomically.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import functools
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import NstError, load_image, with_backward_kernels
from nst_jax._files import atomic_file
from nst_jax._objective import (
    DEFAULT_STYLE_WEIGHT,
    StyleConfig,
    content_weight_for,
    loss_weights,
    make_targets,
    stylization_loss,
)
from nst_jax.run import stylize
from nst_jax.run._loop import chunk_size
from nst_jax.solvers import SolverConfig
from nst_jax.weights import resolve_weights

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BASE = StyleConfig()
DEFAULT_RUN = "jaxopt-none-h10"
REFERENCE = "lua-ref"
REFERENCE_STEPS = "lua-ref-steps"  # the same algorithm without an XLA loop around the iterations
# Default run sets (see the module docstring): below LARGE px, and from LARGE px up.
LARGE = 256
DEFAULT_RUNS_SMALL = (
    REFERENCE_STEPS, DEFAULT_RUN, "jaxopt-none-h20", "jaxopt-none-h100", "jaxopt-backtracking-h10",
    "jaxopt-zoom-h10", "optax-lbfgs-h10", "adam-lr10")
DEFAULT_RUNS_LARGE = (REFERENCE_STEPS, DEFAULT_RUN, "jaxopt-none-h100", "adam-lr10")


def run_specs() -> dict[str, dict[str, Any]]:
    """Every run by name, in table order: its kind and settings."""
    specs: dict[str, dict[str, Any]] = {
        REFERENCE: {"kind": "lua", "lr": 1.0, "history": 100, "loop": "scan"},
        REFERENCE_STEPS: {"kind": "lua", "lr": 1.0, "history": 100, "loop": "steps"},
    }
    for history in (10, 20, 50, 100):
        for search in ("none", "backtracking", "zoom", "hager-zhang"):
            specs[f"jaxopt-{search}-h{history}"] = {
                "kind": "stylize", "name": "jaxopt-lbfgs", "linesearch": search,
                "history_size": history}
    specs["optax-lbfgs-h10"] = {"kind": "stylize", "name": "optax-lbfgs", "history_size": 10}
    for lr in (5, 10, 20):
        specs[f"adam-lr{lr}"] = {"kind": "stylize", "name": "adam", "learning_rate": float(lr)}
    return specs


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int_list, default=[128],
                        help="longest image sides, comma separated (default 128; 256 adds "
                             "~25 minutes, see the module docstring)")
    parser.add_argument("--evals", type=int, default=300,
                        help="loss+gradient evaluations per run, the initial one included "
                             "(default 300)")
    parser.add_argument("--runs", help="comma separated run names or shell patterns, or 'all' "
                        "(default: DEFAULT_RUNS_SMALL below 256 px, DEFAULT_RUNS_LARGE from 256 px "
                        "up; see --list-runs)")
    parser.add_argument("--list-runs", action="store_true", help="print the run names and exit")
    parser.add_argument("--weights", default="auto",
                        help="auto (default: the pretrained VGG-19, found or downloaded as the "
                        "CLI does), random, or a Keras-layout HDF5 file")
    parser.add_argument("--torch-json", type=Path, action="append", default=[],
                        help="a scripts/torch_reference.py lbfgs result (repeat: one per size)")
    parser.add_argument("--json", type=Path, default=Path("converge.json"),
                        help="where to write every curve and number (default converge.json)")
    parser.add_argument("--plot", type=Path, default=Path("converge.png"),
                        help="loss plot (default converge.png)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed bare evaluations per size (default 5)")
    args = parser.parse_args(argv)
    if args.evals < 2:
        parser.error("--evals must be at least 2")
    if not args.sizes or min(args.sizes) < 32:
        parser.error("--sizes: every size must be at least 32 (VGG-19 pools 4 times to conv5_1)")
    return args


def select_runs(pattern: str | None, size: int) -> list[str]:
    names = list(run_specs())
    if pattern is None:
        return [n for n in names if n in (DEFAULT_RUNS_SMALL if size < LARGE else DEFAULT_RUNS_LARGE)]
    if pattern == "all":
        return names
    wanted = [p.strip() for p in pattern.split(",") if p.strip()]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in wanted)]
    unknown = [p for p in wanted if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unknown or not chosen:
        raise SystemExit(f"--runs: no run matches {', '.join(unknown) or pattern!r}; "
                         f"names: {', '.join(names)}")
    return chosen


def load_pair(size: int):
    return (load_image(EXAMPLES / "chelsea.jpg", max_side=size),
            load_image(EXAMPLES / "starry_night.jpg", max_side=size))


# --------------------------------------------------------------------------------------------
# The Lua-reference L-BFGS (torch/optim's optim.lbfgs without line search), compiled.


class LuaState(NamedTuple):
    """x: iterate; g, f, terms: gradient, loss and (content, style, tv) at x; s, y: (m, H, W, 3)
    circular history (newest at head - 1), rho = 1 / y's; k pairs stored; hdiag = s'y / y'y of
    the newest pair (1 before any); iteration done so far."""

    x: jax.Array
    g: jax.Array
    f: jax.Array
    terms: jax.Array
    s: jax.Array
    y: jax.Array
    rho: jax.Array
    head: jax.Array
    k: jax.Array
    hdiag: jax.Array
    iteration: jax.Array


def _objective(image, params, targets, weights, config):
    total, terms = stylization_loss(image, params, targets, weights, config)
    return total, jnp.stack([terms["content"], terms["style"], terms["tv"]])


def lua_init(image, params, targets, weights, *, config: StyleConfig, history: int) -> LuaState:
    (f, terms), g = jax.value_and_grad(_objective, has_aux=True)(image, params, targets, weights,
                                                                 config)
    zeros = jnp.zeros((history, *image.shape), image.dtype)
    zero = jnp.zeros((), jnp.int32)
    return LuaState(image, g, f, terms, zeros, zeros, jnp.zeros((history,), image.dtype), zero,
                    zero, jnp.ones((), image.dtype), zero)


def lua_direction(state: LuaState) -> jax.Array:
    """-H g by the two-loop recursion over the k stored pairs (newest to oldest, then back)."""
    m = state.s.shape[0]

    def backward(i, carry):
        q, alpha = carry
        j = (state.head - 1 - i) % m
        a = state.rho[j] * jnp.vdot(state.s[j], q)
        return q - a * state.y[j], alpha.at[j].set(a)

    q, alpha = jax.lax.fori_loop(0, state.k, backward,
                                 (-state.g, jnp.zeros((m,), state.rho.dtype)))

    def forward(i, r):
        j = (state.head - state.k + i) % m
        beta = state.rho[j] * jnp.vdot(state.y[j], r)
        return r + (alpha[j] - beta) * state.s[j]

    return jax.lax.fori_loop(0, state.k, forward, state.hdiag * q)


def lua_step(state: LuaState, params, targets, weights, lr, config: StyleConfig) -> LuaState:
    """One optim.lbfgs iteration without line search: one loss+gradient evaluation."""
    d = lua_direction(state)
    t = jnp.where(state.iteration == 0,
                  jnp.minimum(1.0, 1.0 / jnp.sum(jnp.abs(state.g))) * lr, lr)
    x = state.x + t * d
    (f, terms), g = jax.value_and_grad(_objective, has_aux=True)(x, params, targets, weights,
                                                                 config)
    # The memory update Lua does at the start of the next iteration, done here instead.
    s, y = t * d, g - state.g
    ys = jnp.vdot(y, s)
    accept = ys > 1e-10
    m, head = state.s.shape[0], state.head
    return LuaState(
        x, g, f, terms,
        state.s.at[head].set(jnp.where(accept, s, state.s[head])),
        state.y.at[head].set(jnp.where(accept, y, state.y[head])),
        state.rho.at[head].set(jnp.where(accept, 1.0 / ys, state.rho[head])),
        jnp.where(accept, (head + 1) % m, head),
        jnp.where(accept, jnp.minimum(state.k + 1, m), state.k),
        jnp.where(accept, ys / jnp.vdot(y, y), state.hdiag),
        state.iteration + 1,
    )


def lua_chunk(state: LuaState, params, targets, weights, lr, *, config: StyleConfig, steps: int):
    """``steps`` iterations in one ``lax.scan``; returns (state, loss after each evaluation)."""

    def body(carry, _):
        carry = lua_step(carry, params, targets, weights, lr, config)
        return carry, carry.f

    return jax.lax.scan(body, state, None, length=steps)


def lua_one(state: LuaState, params, targets, weights, lr, *, config: StyleConfig):
    """One iteration as its own compiled call (the ``steps`` loop); returns (state, loss)."""
    state = lua_step(state, params, targets, weights, lr, config)
    return state, state.f


def objective_weights(content):
    """The race's objective: the library's default alpha (size-aware) and beta, no TV (the
    PyTorch reference has none), as traced :class:`LossWeights` and as stylize keywords."""
    alpha = content_weight_for(content.shape)
    keywords = {"content_weight": alpha, "style_weight": DEFAULT_STYLE_WEIGHT, "tv_weight": 0.0}
    return loss_weights(BASE, content=alpha, style=DEFAULT_STYLE_WEIGHT, tv=0.0), keywords


def run_lua(params, content, style, evals: int, spec: dict) -> tuple[dict, np.ndarray]:
    """A reference run; returns (record as for stylize runs, final unclipped image).

    ``spec["loop"]``: ``"scan"`` runs each chunk of iterations as one compiled ``lax.scan``
    (XLA while loop), like :func:`nst_jax.stylize`; ``"steps"`` calls one compiled iteration
    per Python loop step (no XLA loop; state donated, losses fetched once per chunk).
    """
    weights, _ = objective_weights(content)
    lr = jnp.float32(spec["lr"])
    targets_fn = jax.jit(functools.partial(make_targets, config=BASE))
    init_fn = jax.jit(functools.partial(lua_init, config=BASE, history=spec["history"]))
    compile_start = time.perf_counter()
    targets = targets_fn(params, content, style)
    state = init_fn(content, params, targets, weights)
    iterations = evals - 1
    chunk = min(chunk_size(content.shape[0] * content.shape[1], None), iterations)
    args = (params, targets, weights, lr)
    if spec["loop"] == "scan":
        lengths = {chunk, iterations % chunk} - {0}
        compiled = {n: jax.jit(lua_chunk, static_argnames=("config", "steps"), donate_argnums=0)
                    .lower(state, *args, config=BASE, steps=n).compile() for n in lengths}

        def run_chunk(state, n):
            return compiled[n](state, *args)
    else:
        one = (jax.jit(lua_one, static_argnames="config", donate_argnums=0)
               .lower(state, *args, config=BASE).compile())

        def run_chunk(state, n):
            losses = []
            for _ in range(n):
                state, f = one(state, *args)
                losses.append(f)
            return state, losses
    jax.block_until_ready(state)
    compile_seconds = time.perf_counter() - compile_start
    del state

    start = time.perf_counter()
    targets = targets_fn(params, content, style)
    args = (params, targets, weights, lr)
    state = init_fn(content, params, targets, weights)
    losses, seconds = [float(state.f)], [0.0]
    done = 0
    while done < iterations:
        n = min(chunk, iterations - done)
        state, f = run_chunk(state, n)
        f = np.asarray(jax.device_get(f), np.float64)
        elapsed = time.perf_counter() - start
        losses += f.tolist()
        seconds += (seconds[-1] + (elapsed - seconds[-1]) * np.arange(1, n + 1) / n).tolist()
        done += n
    history = {"loss": np.asarray(losses), "evaluations": np.arange(1, evals + 1),
               "seconds": np.asarray(seconds)}
    record = {"iterations": int(state.iteration), "evaluations": evals,
              "compile_seconds": compile_seconds, "status": "reached the evaluation budget",
              "history": history, "stored_pairs": int(state.k)}
    return record, np.asarray(state.x)


# --------------------------------------------------------------------------------------------
# The library's solvers through stylize.


def run_stylize(params, content, style, evals: int, spec: dict) -> tuple[dict, np.ndarray]:
    solver = SolverConfig(**{key: value for key, value in spec.items() if key != "kind"})
    _, keywords = objective_weights(content)
    warm = stylize(content, style, params=params, config=BASE, solver=solver, iterations=0,
                   tol=0.0, **keywords)

    def stop(state, records):
        return int(state.evaluations) >= evals

    result = stylize(content, style, params=params, config=BASE, solver=solver,
                     iterations=evals - 1, tol=0.0, callback=stop, **keywords)
    history = {name: np.asarray(result.history[name])
               for name in ("loss", "evaluations", "seconds")}
    record = {"iterations": result.iterations, "evaluations": result.evaluations,
              "compile_seconds": warm.compile_seconds + result.compile_seconds,
              "status": result.status, "history": history}
    return record, np.asarray(result.state.image)


# --------------------------------------------------------------------------------------------
# One size.


def bare_evaluation(params, content, style, in_loop: int = 3):
    """Compiled loss+gradient and loss of the default objective at the content photo.

    Returns ``(time_it, time_in_loop, loss_fn)``: ``time_it(repeats)`` gives the seconds of
    ``repeats`` single compiled loss+gradient calls (``block_until_ready`` each);
    ``time_in_loop(repeats)`` the seconds per evaluation of a compiled ``lax.scan`` doing
    ``in_loop`` evaluations (a gradient step of 1e-9 between them) and nothing else, i.e. the
    floor of any solver whose iterations run inside an XLA loop; ``loss_fn`` the jitted loss.
    """
    targets = make_targets(params, content, style, BASE)
    weights, _ = objective_weights(content)
    value_and_grad = jax.value_and_grad(functools.partial(_objective, config=BASE), has_aux=True)
    grad_fn = jax.jit(value_and_grad)

    def scan(x, params, targets, weights):
        def body(x, _):
            (f, _), g = value_and_grad(x, params, targets, weights)
            return x - 1e-9 * g, f
        return jax.lax.scan(body, x, None, length=in_loop)

    scan_fn = jax.jit(scan)
    image = jnp.asarray(content)

    def timer(fn, per_call):
        jax.block_until_ready(fn(image, params, targets, weights))

        def time_it(repeats: int) -> list[float]:
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                jax.block_until_ready(fn(image, params, targets, weights))
                times.append((time.perf_counter() - start) / per_call)
            return times
        return time_it

    loss_fn = jax.jit(lambda x: _objective(x, params, targets, weights, BASE)[0])
    return timer(grad_fn, 1), timer(scan_fn, in_loop), loss_fn


def summarize(record: dict, evals: int, bare: float, floor: float) -> dict:
    """Numbers of one run; ``bare``: single-call evaluation seconds; ``floor``: the evaluation
    seconds of the loop structure the run uses (in-loop for XLA loops, ``bare`` for steps)."""
    history = record["history"]
    within = history["evaluations"] <= evals
    loop = float(history["seconds"][-1])
    evaluations, iterations = record["evaluations"], max(record["iterations"], 1)
    return {
        "iterations": record["iterations"],
        "evaluations": evaluations,
        # The initial evaluation is not part of any iteration.
        "evals_per_iteration": (evaluations - 1) / iterations,
        "loop_seconds": loop,
        "ms_per_evaluation": 1e3 * loop / evaluations,
        "overhead": loop / (evaluations * bare),
        "overhead_vs_floor": loop / (evaluations * floor),
        "solver_ms_per_iteration": 1e3 * (loop - evaluations * floor) / iterations,
        "loss_at_budget": float(history["loss"][within][-1]),
        "evaluations_at_budget": int(history["evaluations"][within][-1]),
        "final_loss": float(history["loss"][-1]),
        "compile_seconds": record["compile_seconds"],
        "status": record["status"],
    }


def time_to(history: dict, target: float, evals: int) -> float | None:
    """Seconds at the first recorded loss <= target within the budget, or None."""
    hit = np.nonzero((history["loss"] <= target) & (history["evaluations"] <= evals))[0]
    return float(history["seconds"][hit[0]]) if hit.size else None


def torch_record(torch: dict, evals: int) -> dict:
    """A ``scripts/torch_reference.py lbfgs`` result as a run record (curves cut at the budget)."""
    loss = np.asarray(torch["history"]["loss"], np.float64)[:evals]
    seconds = np.asarray(torch["history"]["seconds"], np.float64)[:evals]
    evaluations = np.arange(1, len(loss) + 1)
    return {"spec": {"kind": "torch", **torch.get("settings", {})},
            "summary": {"iterations": len(loss) - 1, "evaluations": len(loss),
                        "evals_per_iteration": 1.0, "loop_seconds": float(seconds[-1]),
                        "ms_per_evaluation": 1e3 * float(seconds[-1]) / len(loss),
                        "loss_at_budget": float(loss[-1]), "final_loss": float(loss[-1]),
                        "evaluations_at_budget": len(loss), "status": "torch reference"},
            "curve": {"loss": loss.tolist(), "evaluations": evaluations.tolist(),
                      "seconds": seconds.tolist()}}


def run_size(params, size: int, args, torch_runs: list[dict]) -> dict:
    content, style = load_pair(size)
    names = select_runs(args.runs, size)
    specs = run_specs()
    print(f"{size} px ({content.shape[0]}x{content.shape[1]}): bare evaluation ...",
          file=sys.stderr, flush=True)
    time_it, time_in_loop, loss_fn = bare_evaluation(params, content, style)
    in_loop_times = time_in_loop(3)
    in_loop = statistics.median(in_loop_times)
    runs = {}
    for name in names:
        spec = specs[name]
        # Measured just before each run, so that a drifting machine load is caught per run.
        bare_times = time_it(args.repeats)
        bare = statistics.median(bare_times)
        print(f"{size} px: {name} (bare evaluation {1e3 * bare:.1f} ms) ...", file=sys.stderr,
              flush=True)
        runner = run_lua if spec["kind"] == "lua" else run_stylize
        record, image = runner(params, jnp.asarray(content), jnp.asarray(style), args.evals, spec)
        floor = bare if spec.get("loop") == "steps" else in_loop
        summary = summarize(record, args.evals, bare, floor)
        summary["bare_eval_ms"] = 1e3 * bare
        summary["bare_eval_ms_all"] = [1e3 * t for t in bare_times]
        summary["floor_eval_ms"] = 1e3 * floor
        summary["clipped_final_loss"] = float(loss_fn(jnp.clip(jnp.asarray(image), 0.0, 255.0)))
        if "stored_pairs" in record:
            summary["stored_pairs"] = record["stored_pairs"]
        runs[name] = {"spec": spec, "summary": summary,
                      "curve": {k: v.tolist() for k, v in record["history"].items()}}
        print(f"{size} px: {name}: loss@E {summary['loss_at_budget']:.4g}, "
              f"{summary['ms_per_evaluation']:.1f} ms/eval, x bare {summary['overhead']:.3f}",
              file=sys.stderr, flush=True)
    bare_after = statistics.median(time_it(args.repeats))
    in_loop_after = statistics.median(time_in_loop(3))

    for torch in torch_runs:
        runs["torch-lbfgs"] = torch_record(torch, args.evals)
    # L*: the PyTorch reference's loss at the budget when given, else the scanned JAX
    # reference's, else the stepped one's (same iterates).
    reference = next((n for n in ("torch-lbfgs", REFERENCE, REFERENCE_STEPS) if n in runs), None)
    target = None
    if reference is not None:
        target = runs[reference]["summary"]["loss_at_budget"]
        ref_curve = {k: np.asarray(v) for k, v in runs[reference]["curve"].items()}
        ref_time = time_to(ref_curve, target, args.evals)
        for run in runs.values():
            curve = {k: np.asarray(v) for k, v in run["curve"].items()}
            reach = time_to(curve, target, args.evals)
            run["summary"]["time_to_target"] = reach
            run["summary"]["ratio_to_reference"] = (
                None if reach is None or not ref_time else reach / ref_time)
    default = runs.get(DEFAULT_RUN, {}).get("summary", {})
    return {"size": size, "height": int(content.shape[0]), "width": int(content.shape[1]),
            "bare_eval_ms": statistics.median(r["summary"]["bare_eval_ms"] for r in runs.values()
                                              if "bare_eval_ms" in r["summary"]),
            "bare_eval_ms_after": 1e3 * bare_after,
            "in_loop_eval_ms": 1e3 * in_loop, "in_loop_eval_ms_all": [1e3 * t for t in in_loop_times],
            "in_loop_eval_ms_after": 1e3 * in_loop_after,
            "reference": reference, "target_loss": target,
            "default_loop_overhead": default.get("overhead"),
            "default_loop_overhead_vs_in_loop": default.get("overhead_vs_floor"), "runs": runs}


# --------------------------------------------------------------------------------------------
# Report.


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
        for line in lines)


def fmt(value, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) \
        else format(value, spec)


def report_size(result: dict, evals: int) -> str:
    out = [(f"{result['size']} px ({result['height']}x{result['width']}), budget {evals} "
            f"evaluations; loss+gradient: bare single call {result['bare_eval_ms']:.1f} ms "
            f"(median over the runs; after them {result['bare_eval_ms_after']:.1f}), inside a "
            f"compiled lax.scan {result['in_loop_eval_ms']:.1f} ms (after the runs "
            f"{result['in_loop_eval_ms_after']:.1f}); L* = {fmt(result['target_loss'], '.5g')} "
            f"({result['reference'] or 'no reference run'} at {evals} evaluations)")]
    rows = []
    for name, run in result["runs"].items():
        s = run["summary"]
        rows.append([
            name, str(s["evaluations"]), str(s["iterations"]), f"{s['evals_per_iteration']:.2f}",
            f"{s['ms_per_evaluation']:.1f}", fmt(s.get("overhead"), ".3f"),
            fmt(s.get("overhead_vs_floor"), ".3f"), fmt(s.get("solver_ms_per_iteration"), ".1f"),
            fmt(s["loss_at_budget"], ".5g"), fmt(s["final_loss"], ".5g"),
            fmt(s.get("clipped_final_loss"), ".5g"), fmt(s.get("time_to_target"), ".2f"),
            fmt(s.get("ratio_to_reference"), ".2f")])
    out.append(table(["run", "evals", "iters", "evals/it", "ms/eval", "x bare", "x floor",
                      "solver ms/it", "loss@E", "final", "clipped", "t(L*) s", "vs ref"], rows))
    if result["default_loop_overhead"] is not None:
        value = result["default_loop_overhead"]
        out.append(f"loop overhead of the default ({DEFAULT_RUN}): {value:.3f} x the bare "
                   f"evaluation (target <= 1.05: {'met' if value <= 1.05 else 'NOT met'}); "
                   f"{result['default_loop_overhead_vs_in_loop']:.3f} x the in-loop evaluation")
    return "\n".join(out)


def plot(results: list[dict], evals: int, path: Path) -> None:
    """Per size, loss (log) against seconds and against evaluations; ``L*`` dashed."""
    try:
        import matplotlib
    except ImportError:
        print(f"no plot: {path} needs matplotlib (pip install '.[plots]')", file=sys.stderr)
        return
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.2 * len(results)), dpi=100)
    axes = figure.subplots(len(results), 2, squeeze=False)
    for row, result in zip(axes, results):
        where = f"{result['size']} px ({result['height']}x{result['width']})"
        for panel, (key, label) in zip(row, (("seconds", "seconds (compile excluded)"),
                                             ("evaluations", "loss+gradient evaluations"))):
            for name, run in result["runs"].items():
                curve = {k: np.asarray(v) for k, v in run["curve"].items()}
                keep = (curve["evaluations"] <= evals) & (curve["loss"] > 0)
                panel.plot(curve[key][keep], curve["loss"][keep], label=name,
                           linewidth=2 if name in (DEFAULT_RUN, "torch-lbfgs") else 1.2,
                           color="black" if name == "torch-lbfgs" else None)
            if result["target_loss"]:
                panel.axhline(result["target_loss"], color="black", linestyle="--",
                              linewidth=0.8)
            panel.set_yscale("log")
            panel.set_xlabel(label)
            panel.set_title(f"{where}: loss vs {key}; dashed: L*", fontsize="medium")
            panel.grid(True, alpha=0.3)
        row[1].legend(fontsize="small", loc="upper right")
    figure.tight_layout()
    write_atomic(path, lambda f: figure.savefig(f, format="png"))


def write_atomic(path: Path, write) -> None:
    with atomic_file(path) as handle:
        write(handle)


def environment(args) -> dict:
    return {
        "jax_version": jax.__version__, "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "weights": args.weights_record,
        "evals": args.evals, "sizes": args.sizes, "runs": args.runs,
        "objective": {"content_layers": BASE.content_layers, "style_layers": BASE.style_layers,
                      "content_weight": "content_weight_for(shape): 1 per 128x128 px",
                      "style_weight": DEFAULT_STYLE_WEIGHT, "tv_weight": 0.0,
                      "init": "content", "pooling": BASE.pooling},
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.list_runs:
        for name in run_specs():
            where = [label for label, names in (("small", DEFAULT_RUNS_SMALL),
                                                (f">={LARGE} px", DEFAULT_RUNS_LARGE))
                     if name in names]
            print(f"{name:26s} default at: {', '.join(where) or '-'}")
        return
    for size in args.sizes:
        select_runs(args.runs, size)  # fail on a bad --runs before any work
    try:
        weights = resolve_weights(args.weights, notify=print)
    except NstError as err:
        raise SystemExit(f"error: {err}") from None
    # With the input-gradient kernels, as stylize() prepares them: the references and the
    # bare evaluation then run the same convolutions as the library's runs.
    params = with_backward_kernels(weights.params)
    args.weights_record = weights.source
    torch_runs = [json.loads(Path(path).read_text()) for path in args.torch_json]
    started = time.perf_counter()
    env = environment(args)
    results = [run_size(params, size, args,
                        [t for t in torch_runs if t["settings"].get("size") == size])
               for size in args.sizes]
    env["total_seconds"] = time.perf_counter() - started
    env["load_average_end"] = os.getloadavg()
    print(f"jax {env['jax_version']} ({env['backend']}, {env['device_kind']}), "
          f"{env['cpu_count']} CPUs, load average {env['load_average'][0]:.2f} -> "
          f"{env['load_average_end'][0]:.2f}; weights: {env['weights']}; "
          f"total {env['total_seconds']:.0f} s")
    for result in results:
        print()
        print(report_size(result, args.evals))
    payload = {"environment": env, "sizes": results}
    write_atomic(args.json, lambda f: f.write(json.dumps(payload, indent=1).encode()))
    plot(results, args.evals, args.plot)
    print(f"\nwrote {args.json} and {args.plot}")


if __name__ == "__main__":
    main()
