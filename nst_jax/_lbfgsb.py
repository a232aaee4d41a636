"""Two replacements inside jaxopt's L-BFGS-B update, swapped in while it is traced.

jaxopt is archived at 0.8.5, so the private functions replaced here no longer move; both take
and return what jaxopt's own do (flat (n,) vectors, W (n, 2m), M (2m, 2m); Byrd, Lu, Nocedal &
Zhu 1995 notation), and :func:`jaxopt_rules` puts jaxopt's back after tracing.

* :func:`cauchy_point`: the same Cauchy point as jaxopt's ``_find_cauchy_point``, bit for bit,
  without its two full sorts of the n breakpoints (52 ms each at 256 px, 225 ms at 512 px on
  2 CPU cores; with them an iteration cost 1.14-1.20x an evaluation, without 1.00-1.04x).
* :func:`projected_subspace`: L-BFGS-B 3.0's subspace step instead of 2.1's truncated one.
"""

from __future__ import annotations

import contextlib
import warnings

import jax.numpy as jnp
import numpy as np
from jax import lax

with warnings.catch_warnings():
    # jaxopt announces on import that it is unmaintained; it is still the design's solver.
    warnings.filterwarnings("ignore", message="JAXopt is no longer maintained",
                            category=DeprecationWarning)
    from jaxopt._src import lbfgsb as _jaxopt_lbfgsb

_JAXOPT_SUBSPACE = getattr(_jaxopt_lbfgsb, "_minimize_subspace", None)
_JAXOPT_CAUCHY = getattr(_jaxopt_lbfgsb, "_find_cauchy_point", None)

SUBSPACE_STEP_CAP = 16.0  # pixel levels; see projected_subspace
#: Breakpoints taken (``lax.top_k``) before the Cauchy search falls back to a full sort.
CAUCHY_WINDOW = 4096


def _breakpoint_search(order, t_sorted, t_before, start, grad, x, x_bound, theta, w, m,
                       limit):
    """Algorithm CP's loop (Byrd et al. 1995, Sec. 4) over the free variables in the order
    ``order`` (their breakpoints ``t_sorted``, ascending), as jaxopt writes it, stopping at the
    first segment holding the minimizer or after ``limit`` breakpoints. ``start`` = (df, ddf,
    p) at the path's start, the same whichever order is walked.

    Returns (i, c, t_old): i breakpoints passed; c the vector that starts the subspace
    minimization (``W^T (x_cauchy - x)``); t_old the path parameter of the Cauchy point.
    """
    eps = np.finfo(x.dtype).eps
    dt = jnp.diff(t_sorted, prepend=t_before)

    def cond(state):
        i, df, ddf = state[:3]
        return (i < limit) & (-df / ddf >= dt[jnp.minimum(i, limit - 1)])

    def body(state):
        i, df, ddf, c, p = state
        j = order[i]
        g, w_j = grad[j], w[j]
        c_new = c + dt[i] * p
        df_new = (df + dt[i] * ddf + g ** 2 + theta * g * (x_bound[j] - x[j])
                  - g * jnp.dot(w_j, jnp.matmul(m, c_new)))
        ddf_new = (ddf - theta * g ** 2 - 2.0 * g * jnp.dot(w_j, jnp.matmul(m, p))
                   - g ** 2 * jnp.dot(w_j, jnp.matmul(m, w_j)))
        return i + 1, df_new, jnp.maximum(eps, ddf_new), c_new, p + g * w_j

    df0, ddf0, p0 = start
    zero = jnp.zeros(m.shape[-1:], m.dtype)
    i, df, ddf, c, p = lax.while_loop(cond, body, (jnp.int32(0), df0, ddf0, zero, p0))
    dt_min = jnp.maximum(-df / ddf, 0.0)
    dt_min = jnp.where(jnp.isnan(dt_min), 0.0, dt_min)
    t_old = jnp.where(i > 0, t_sorted[jnp.maximum(i - 1, 0)], t_before) + dt_min
    return i, c + dt_min * p, t_old


def cauchy_point(x, grad, lower, upper, theta, w, m):
    """The generalized Cauchy point: the first local minimizer of the quadratic model along
    the projected steepest-descent path ``x(t) = P(x - t g)`` (Byrd et al. 1995, Algorithm CP).

    Returns (x_cauchy, c, free): as jaxopt's ``_find_cauchy_point``, equal to it bit for bit
    (tested, also where the fallback runs).

    The path bends at each variable's breakpoint ``t_i`` (where it reaches its bound); jaxopt
    argsorts all n of them, walks them in order until the model's minimum, then argsorts
    again to undo the order. But after the first iteration the walk passes few breakpoints
    (measured: at 128 px 31,727 of 32,640 in the first, then 0-90; at 512 px 459,606, 1,897,
    2,210, 371, then under 60), so only the ``CAUCHY_WINDOW`` smallest are taken with
    ``lax.top_k`` (4 ms at 512 px), and the full sort runs only when the walk gets to the end
    of the window. Variables at a bound (``t <= eps``) never enter the walk: they are ordered
    last.
    """
    eps = np.finfo(x.dtype).eps
    n = x.shape[-1]
    t = jnp.where(jnp.abs(grad) < eps, jnp.inf,
                  jnp.where(grad < 0.0, (x - upper) / grad, (x - lower) / grad))
    d = jnp.where(t < eps, 0.0, -grad)
    x_bound = jnp.where(d > 0.0, upper, jnp.where(d < 0.0, lower, x))
    free = t > eps
    # The path parameter where the walk starts (jaxopt's dt of its first free breakpoint is
    # taken from it): the largest breakpoint of the variables at a bound, 0 if there are none.
    t_before = jnp.where(jnp.all(free), 0.0, jnp.max(jnp.where(free, -jnp.inf, t)))
    # Free variables with a finite breakpoint, in jaxopt's order: ties stay in index order in
    # both (stable argsort; top_k prefers the lower index). The walk stops before the t = inf
    # ones (zero gradient): jaxopt's enters them only if -df/ddf = inf, where its c turns NaN.
    walkable = free & jnp.isfinite(t)
    n_free = jnp.sum(walkable, dtype=jnp.int32)
    key = jnp.where(walkable, t, jnp.inf)
    # The model's slope and curvature at the path's start (one pass over W), shared by both walks.
    p0 = jnp.dot(w.T, d)
    df0 = -jnp.dot(d, d)
    ddf0 = -theta * df0 - jnp.dot(jnp.matmul(m, p0), p0)
    args = ((df0, ddf0, p0), grad, x, x_bound, theta, w, m)

    def walk(window):
        if window < n:
            neg_t, order = lax.top_k(-key, window)
            t_sorted = -neg_t
        else:
            order = jnp.argsort(key)
            t_sorted = key[order]
        i, c, t_old = _breakpoint_search(order, t_sorted, t_before, *args,
                                         limit=jnp.minimum(n_free, window))
        passed = jnp.zeros(n, bool).at[order].set(jnp.arange(window) < i)
        return i, c, t_old, passed

    window = min(n, CAUCHY_WINDOW)
    i, c, t_old, passed = walk(window)
    if window < n:
        # The full walk at most once. A while_loop rather than a cond: under vmap a cond
        # becomes a select that sorts every lane every iteration, while the loop runs its body
        # only when some lane needs it.
        def full(state):
            return (*walk(n), jnp.bool_(False))

        i, c, t_old, passed, _ = lax.while_loop(
            lambda state: state[-1], full,
            (i, c, t_old, passed, (i >= window) & (i < n_free)))
    still_free = free & ~passed
    return jnp.where(still_free, x + t_old * d, x_bound), c, still_free


def projected_subspace(x, grad, lower, upper, x_cauchy, c, theta, w, m, active):
    """L-BFGS-B's subspace step as L-BFGS-B 3.0 takes it (Morales & Nocedal, ACM TOMS 38(1),
    2011): the unconstrained minimizer of the quadratic model over the free variables,
    projected onto the box; if that is not a descent direction, jaxopt's own step.

    jaxopt (like L-BFGS-B 2.1) instead truncates the whole subspace step at the first bound it
    meets, ``x_c + min(1, alpha*) du``. Over 3HW pixels some free pixel is almost always a
    hair from 0 or 255, so alpha* ~ 0 and every step degenerates to the Cauchy point, a scaled
    projected gradient step: the solver levels off 2-3x above the references' loss
    (README "Optimizer"). L-BFGS-B 3.0 follows the projected step with a line search; with
    the fixed step used here, ``du`` is first shortened so that no pixel moves more than
    ``SUBSPACE_STEP_CAP`` levels beyond the Cauchy point (a max-norm trust region): without it
    a poor curvature pair occasionally threw the image 100-1000x up the loss (measured: 16
    levels cost 6% more evaluations to L* at 128 px and removed those spikes).

    Same arguments as ``jaxopt._src.lbfgsb._minimize_subspace``; with infinite bounds that
    function returns ``x_c + du`` on the free variables, from which ``du`` is taken.
    """
    unbounded = jnp.full_like(lower, jnp.inf)
    du = _JAXOPT_SUBSPACE(x, grad, -unbounded, unbounded, x_cauchy, c, theta, w, m,
                          active) - x_cauchy
    du = du * jnp.minimum(1.0, SUBSPACE_STEP_CAP / jnp.maximum(jnp.max(jnp.abs(du)), 1e-30))
    projected = jnp.clip(x_cauchy + du, lower, upper)
    descent = jnp.vdot(projected - x, grad) < 0
    # A cond, not a where: the fallback (a pass over the n x 2m matrix W) is rarely needed.
    return lax.cond(descent, lambda: projected,
                    lambda: _JAXOPT_SUBSPACE(x, grad, lower, upper, x_cauchy, c, theta, w, m,
                                             active))


@contextlib.contextmanager
def jaxopt_rules(subspace: str):
    """While tracing jaxopt's L-BFGS-B update: :func:`cauchy_point` for its Cauchy point, and
    the ``subspace`` step ("projected": :func:`projected_subspace`; "truncated": jaxopt's).
    Only the trace reads the module globals, so compiled programs keep what they were traced
    with. A jaxopt without these private functions keeps its own Cauchy point; only the
    projected step then refuses."""
    if subspace == "projected" and _JAXOPT_SUBSPACE is None:
        raise RuntimeError("this jaxopt has no lbfgsb._minimize_subspace; use "
                           "StyleConfig(subspace='truncated') or jaxopt 0.8.x")
    if _JAXOPT_CAUCHY is not None:
        _jaxopt_lbfgsb._find_cauchy_point = cauchy_point
    if subspace == "projected":
        _jaxopt_lbfgsb._minimize_subspace = projected_subspace
    try:
        yield
    finally:
        if _JAXOPT_CAUCHY is not None:
            _jaxopt_lbfgsb._find_cauchy_point = _JAXOPT_CAUCHY
        if _JAXOPT_SUBSPACE is not None:
            _jaxopt_lbfgsb._minimize_subspace = _JAXOPT_SUBSPACE
