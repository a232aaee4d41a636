"""L-BFGS through jaxopt's public API (``jaxopt.LBFGS``), with the pixel box kept by
reflection (:mod:`._box`) and a first step that does not depend on the scale of the loss.

Why the first step matters: an L-BFGS iteration moves by ``-H g`` with ``H = gamma I`` refined
by the stored curvature pairs. Once there is a pair, ``gamma = s'y / y'y`` (Nocedal & Wright,
Eq. 7.20) scales with the objective and every step is invariant to multiplying the loss by a
constant. Before there is one, jaxopt starts from ``gamma = 1``: the first step is ``-g``, in
units of the gradient, so its length grows with the loss weights. With the pretrained VGG-19 the
Gatys loss is ~1e12 and the gradient ~1e6 per pixel: that first step threw every pixel far out
of range, and a fixed-step L-BFGS never recovered (the run returned its best iterate, the
photo). Here ``gamma_0 = first_step / max_i |g_i|``: the first step moves no coordinate by
more than ``first_step`` (in pixel levels for an image), whatever the loss weights, as
``optim.lbfgs`` (step ``min(1, 1/|g|_1)``) and SciPy's L-BFGS-B (first trial step of length 1)
also normalize it.

One more safeguard jaxopt's L-BFGS does not have: a curvature pair with ``s'y <= 0`` would make
``H`` indefinite (with a fixed step there is no Wolfe condition to rule it out), so such a pair
is dropped (its ``rho`` set to 0) and ``gamma`` kept, as optim.lbfgs and SciPy do. The test is
relative, ``s'y > 1e-6 |s| |y|``, so it too is scale-free.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._base import Solver
from ._box import reflect, reflected

with warnings.catch_warnings():
    # jaxopt announces on import that it is unmaintained; it is still the design's solver.
    warnings.filterwarnings("ignore", message="JAXopt is no longer maintained",
                            category=DeprecationWarning)
    import jaxopt

LINESEARCHES = ("none", "backtracking", "zoom", "hager-zhang")
#: Largest change of any coordinate in the first iteration (pixel levels on 0..255 images).
FIRST_STEP = 32.0
#: A curvature pair is kept when ``s'y > CURVATURE_TOL * |s| |y|`` (cosine of the angle).
CURVATURE_TOL = 1e-6


class LbfgsState(NamedTuple):
    """State of :func:`lbfgs`.

    Attributes:
        u: the unbounded variable; the iterate is ``reflect(u)`` (same shape).
        inner: jaxopt's ``LBFGS`` state: value, aux and gradient at u, the s/y history,
            ``rho`` and ``gamma``, counters.
    """

    u: jax.Array
    inner: Any

    @property
    def value(self):
        return self.inner.value

    @property
    def aux(self):
        return self.inner.aux

    @property
    def evaluations(self):
        return self.inner.num_fun_eval.astype(jnp.int32)


def check_lbfgs(*, history_size: int, linesearch: str, first_step: float) -> None:
    """Raise ValueError for settings :func:`lbfgs` cannot run (also what
    :class:`~nst_jax.solvers.SolverConfig` checks)."""
    if linesearch not in LINESEARCHES:
        raise ValueError(f"linesearch must be one of {LINESEARCHES}, got {linesearch!r}")
    if history_size < 1:
        raise ValueError(f"history_size must be at least 1, got {history_size}")
    if not first_step > 0:
        raise ValueError(f"first_step must be positive, got {first_step}")


def lbfgs(fun, *, bounds: tuple[float, float] = (0.0, 255.0), history_size: int = 10,
          linesearch: str = "none", first_step: float = FIRST_STEP) -> Solver:
    """jaxopt's L-BFGS on ``fun(reflect(u), *args)``.

    Args:
        fun: ``fun(x, *args) -> (value, aux)``, differentiable in x.
        bounds: the box (low, high) every iterate stays in.
        history_size: curvature pairs kept (m).
        linesearch: ``"none"`` (a fixed step of 1 along ``-H g``: one evaluation per
            iteration, the schedule of the Lua and PyTorch references) or one of jaxopt's
            line searches (``"backtracking"``, ``"zoom"``, ``"hager-zhang"``).
        first_step: largest coordinate change of the first iteration (see module docstring).

    Returns:
        :class:`~nst_jax.solvers.Solver` over :class:`LbfgsState`.
    """
    check_lbfgs(history_size=history_size, linesearch=linesearch, first_step=first_step)
    low, high = bounds
    step = {"stepsize": 1.0} if linesearch == "none" else {"linesearch": linesearch}
    inner = jaxopt.LBFGS(fun=reflected(fun, low, high), has_aux=True, history_size=history_size,
                         maxiter=2**31 - 1, tol=0.0, **step)

    def init(x0, *args) -> LbfgsState:
        u = jnp.clip(jnp.asarray(x0, jnp.float32), low, high)
        state = inner.init_state(u, *args)
        largest = jnp.max(jnp.abs(state.grad))
        gamma = jnp.where(largest > 0, first_step / jnp.where(largest > 0, largest, 1.0), 1.0)
        return LbfgsState(u, state._replace(gamma=gamma.astype(state.gamma.dtype)))

    def update(x, state: LbfgsState, *args):
        del x  # the iterate is reflect(state.u)
        u, new = inner.update(state.u, state.inner, *args)
        s, y = u - state.u, new.grad - state.inner.grad
        keep = jnp.vdot(s, y) > CURVATURE_TOL * jnp.linalg.norm(s) * jnp.linalg.norm(y)
        slot = state.inner.iter_num % history_size
        new = new._replace(
            rho_history=jnp.where(keep, new.rho_history, new.rho_history.at[slot].set(0.0)),
            gamma=jnp.where(keep, new.gamma, state.inner.gamma))
        return reflect(u, low, high), LbfgsState(u, new)

    return Solver(init, update)
