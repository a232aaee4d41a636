"""The solver interface shared by every family in ``nst_jax.solvers``.

A solver minimizes ``fun(x, *args) -> (value, aux)`` (differentiable in x, ``aux`` any pytree
carried along) over x in a box. Like optax's transformations and jaxopt's solvers it is a pair
of pure functions over a NamedTuple state, with nothing stateful in between, so a loop can be
compiled, vmapped, checkpointed and resumed:

* ``state = init(x0, *args)``: evaluates ``fun`` once at x0 (clipped into the box);
* ``x, state = update(x, state, *args)``: one iteration.

Every state exposes ``value`` and ``aux`` (of ``fun`` at the current iterate) and
``evaluations`` (loss+gradient evaluations so far, line-search trials included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Solver(NamedTuple):
    """``init(x0, *args) -> state`` and ``update(x, state, *args) -> (x, state)``."""

    init: Callable[..., Any]
    update: Callable[..., tuple[Any, Any]]
