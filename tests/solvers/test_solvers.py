"""``nst_jax.solvers``' :class:`SolverConfig` (defaults, validation, the retired settings) and
:func:`make_solver` (the solvers themselves: test_lbfgs.py, test_optax_solvers.py)."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from nst_jax.solvers import FIRST_STEP, NAMES, LbfgsState, OptaxState, SolverConfig, make_solver


def quadratic(scale, target):
    """``scale * sum(d_i (x_i - t_i)^2)``, an ill-conditioned bowl (d from 1 to 10)."""
    d = jnp.linspace(1.0, 10.0, target.size).reshape(target.shape)

    def fun(x):
        value = scale * jnp.sum(d * jnp.square(x - target))
        return value, jnp.stack([value, value, value])

    return fun


# ---------------------------------------------------------------------------- SolverConfig


@pytest.mark.parametrize("kwargs", [
    {"name": "sgd"},
    {"linesearch": "wolfe"},
    {"history_size": 0},
    {"learning_rate": 0.0},
    {"first_step": 0.0},
])
def test_bad_solver_config_raises(kwargs):
    """The optimizer settings of the old ``test_bad_config_raises`` (then StyleConfig fields)."""
    with pytest.raises(ValueError):
        SolverConfig(**kwargs)


def test_solver_config_defaults_and_hashable():
    config = SolverConfig()
    assert (config.name, config.history_size, config.linesearch, config.learning_rate,
            config.first_step) == ("jaxopt-lbfgs", 10, "none", 10.0, FIRST_STEP)
    assert config.name == NAMES[0]
    assert hash(config) == hash(SolverConfig())


def test_retired_settings_warn_and_are_dropped():
    with pytest.warns(DeprecationWarning, match="subspace"):
        config = SolverConfig.from_settings({"name": "adam", "subspace": "projected"})
    assert config == SolverConfig(name="adam")
    with pytest.warns(DeprecationWarning, match="pyramid_levels"):
        assert SolverConfig.from_settings({"pyramid_levels": 3}) == SolverConfig()


@pytest.mark.parametrize("name, state_type", [("jaxopt-lbfgs", LbfgsState),
                                              ("optax-lbfgs", OptaxState), ("adam", OptaxState)])
def test_make_solver_builds_the_named_solver(name, state_type):
    solver = make_solver(SolverConfig(name=name), quadratic(1.0, jnp.zeros(3)))
    state = solver.init(jnp.full((3,), 300.0))  # clipped into the box
    assert isinstance(state, state_type)
    assert int(state.evaluations) == 1
    assert float(state.value) == pytest.approx(float(quadratic(1.0, jnp.zeros(3))(
        jnp.full((3,), 255.0))[0]))
