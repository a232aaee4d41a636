"""optax's L-BFGS (zoom line search) and Adam.

Boxes: optax's L-BFGS runs on ``fun(reflect(u))`` (:mod:`._box`), like :func:`~._jaxopt.lbfgs`;
its first step is already scale-free (optax scales the identity by ``min(1, 1/|g|)``). Adam is
projected: a step, then the projection (clip) onto the box, which is exact projected gradient
descent; Adam's steps are in units of ``learning_rate`` whatever the loss scale.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._base import Solver
from ._box import reflect, reflected


class OptaxState(NamedTuple):
    """State of :func:`optax_lbfgs` and :func:`adam`.

    Attributes:
        u: the variable optax updates (``reflect(u)`` is the iterate for L-BFGS; the iterate
            itself for Adam).
        opt: optax's state.
        grad: gradient of ``fun`` at u (optax states do not keep it).
        value, aux: ``fun`` at u.
        evaluations: loss+gradient evaluations so far.
    """

    u: jax.Array
    opt: Any
    grad: jax.Array
    value: jax.Array
    aux: Any
    evaluations: jax.Array


def _initializer(transform, value_and_grad, low, high):
    """``init(x0, *args)`` of both solvers: x0 clipped into the box, with its value, aux and
    gradient and optax's initial state."""

    def init(x0, *args) -> OptaxState:
        u = jnp.clip(jnp.asarray(x0, jnp.float32), low, high)
        (value, aux), grad = value_and_grad(u, *args)
        return OptaxState(u, transform.init(u), grad, value, aux, jnp.ones((), jnp.int32))

    return init


def optax_lbfgs(fun, *, bounds: tuple[float, float] = (0.0, 255.0),
                history_size: int = 10) -> Solver:
    """``optax.lbfgs(memory_size=history_size)`` (zoom line search) on ``fun(reflect(u))``.

    Args:
        fun: ``fun(x, *args) -> (value, aux)``, differentiable in x.
    """
    low, high = bounds
    transform = optax.lbfgs(memory_size=history_size)
    unbounded = reflected(fun, low, high)
    value_and_grad = jax.value_and_grad(unbounded, has_aux=True)

    init = _initializer(transform, value_and_grad, low, high)

    def update(x, state: OptaxState, *args):
        del x
        updates, opt = transform.update(
            state.grad, state.opt, state.u, value=state.value, grad=state.grad,
            value_fn=lambda u: unbounded(u, *args)[0])
        u = optax.apply_updates(state.u, updates)
        trials = jnp.asarray(optax.tree_utils.tree_get(opt, "num_linesearch_steps"), jnp.int32)
        (value, aux), grad = value_and_grad(u, *args)
        return reflect(u, low, high), OptaxState(u, opt, grad, value, aux,
                                                 state.evaluations + 1 + trials)

    return Solver(init, update)


def check_adam(*, learning_rate: float) -> None:
    """Raise ValueError for settings :func:`adam` cannot run (also what
    :class:`~nst_jax.solvers.SolverConfig` checks)."""
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate}")


def adam(fun, *, bounds: tuple[float, float] = (0.0, 255.0), learning_rate: float = 10.0
         ) -> Solver:
    """Projected Adam: ``x <- clip(x + adam_step(g))`` with ``optax.adam(learning_rate)``.

    Args:
        fun: ``fun(x, *args) -> (value, aux)``, differentiable in x.
        learning_rate: Adam's step size, in the units of x (pixel levels for an image).
    """
    check_adam(learning_rate=learning_rate)
    low, high = bounds
    transform = optax.adam(learning_rate)
    value_and_grad = jax.value_and_grad(fun, has_aux=True)

    init = _initializer(transform, value_and_grad, low, high)

    def update(x, state: OptaxState, *args):
        del x
        updates, opt = transform.update(state.grad, state.opt, state.u)
        u = jnp.clip(optax.apply_updates(state.u, updates), low, high)
        (value, aux), grad = value_and_grad(u, *args)
        return u, OptaxState(u, opt, grad, value, aux, state.evaluations + 1)

    return Solver(init, update)
