"""nst_jax.solvers.adam (projected) and optax_lbfgs (reflected) on small problems."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_lbfgs import BOX, X0, quadratic, run

from nst_jax.solvers import adam, optax_lbfgs


def test_adam_is_optax_adam_followed_by_the_projection():
    """NumPy-free reference: optax.adam's update, then clip; one evaluation per iteration."""
    solver = adam(quadratic, bounds=BOX, learning_rate=0.5)
    xs, state = run(solver, jnp.asarray(X0, jnp.float32), 10)
    transform = optax.adam(0.5)
    x = jnp.asarray(X0, jnp.float32)
    opt = transform.init(x)
    for k in range(10):
        grad = jax.grad(lambda v: quadratic(v)[0])(x)
        updates, opt = transform.update(grad, opt, x)
        x = jnp.clip(x + updates, *BOX)
        np.testing.assert_allclose(xs[k], x, rtol=1e-6, atol=1e-6)
    assert int(state.evaluations) == 11


def test_adam_steps_do_not_depend_on_the_loss_scale():
    xs, _ = run(adam(quadratic, bounds=BOX), jnp.asarray(X0, jnp.float32), 10)
    scaled, _ = run(adam(lambda x: quadratic(x, 2.0**30), bounds=BOX),
                    jnp.asarray(X0, jnp.float32), 10)
    np.testing.assert_array_equal(xs, scaled)


def test_optax_lbfgs_lowers_the_loss_inside_the_box():
    xs, state = run(optax_lbfgs(quadratic, bounds=BOX), jnp.asarray(X0, jnp.float32), 30)
    assert xs.min() >= BOX[0] and xs.max() <= BOX[1]
    assert float(state.value) < float(quadratic(X0)[0]) - 10.0
    # The zoom line search's trials are counted as evaluations.
    assert int(state.evaluations) > 31


def test_adam_rejects_a_non_positive_learning_rate():
    with pytest.raises(ValueError, match="learning_rate"):
        adam(quadratic, learning_rate=0.0)
