"""How much memory a run needs (``nst_jax.run._memory``): the cost model, its calibration
against the measured benchmark, and the refusal before compute that names the largest size that
fits. (The CLI's refusal: tests/images/test_fuzz.py.)"""

from __future__ import annotations

import pytest

from nst_jax import NstError
from nst_jax.run import _memory
from nst_jax.solvers import SolverConfig


def test_estimate_is_linear_in_pixels_and_runs():
    config = SolverConfig()
    base = _memory.BASE_BYTES
    one = _memory.estimate_bytes(300, 400, config) - base
    assert _memory.estimate_bytes(600, 800, config) - base == pytest.approx(4 * one, abs=4)
    assert _memory.estimate_bytes(300, 400, config, batch=5) - base == pytest.approx(
        5 * one, abs=4)
    # L-BFGS keeps 2 * history_size float32 RGB vectors (s and y).
    longer = SolverConfig(history_size=30)
    extra = _memory.estimate_bytes(300, 400, longer) - _memory.estimate_bytes(300, 400, config)
    assert extra == pytest.approx(2 * 20 * 300 * 400 * 3 * 4, abs=2)


def test_estimate_matches_the_measured_benchmark():
    # The peaks scripts/bench.py measured when the estimate was fitted: 884 MiB at 170x256 and
    # 1,173 MiB at 341x512 for one evaluation, which holds no optimizer state (the current
    # run is in docs/benchmarks/speed.md).
    config = SolverConfig()
    for height, width, mib in ((170, 256, 884), (341, 512, 1173)):
        state = 2 * config.history_size * height * width * 3 * 4
        evaluation = _memory.estimate_bytes(height, width, config) - state
        assert evaluation == pytest.approx(mib * 2**20, abs=2)


def test_check_fits_names_the_largest_size_that_fits():
    config = SolverConfig()
    budget = _memory.estimate_bytes(300, 400, config)
    _memory.check_fits(300, 400, config, budget=budget)  # exactly at the budget: fine
    with pytest.raises(NstError) as info:
        _memory.check_fits(3000, 4000, config, budget=budget)
    message = str(info.value)
    side = _memory.largest_side(3000, 4000, config, budget)
    assert side in (399, 400)  # 300x400 is what fits; the floor of the root may lose 1 px
    assert f"4000x3000 image needs about {_memory.estimate_bytes(3000, 4000, config) / 1e9:.1f} GB"\
        in message
    assert f"about {side} px on the longest side" in message and f"--size {side}" in message
    with pytest.raises(NstError, match="3 runs of a 400x300 image need"):
        _memory.check_fits(300, 400, config, budget=budget, batch=3)
    with pytest.raises(NstError, match="at any size"):
        _memory.check_fits(300, 400, config, budget=1000)


def test_available_bytes_is_positive():
    available = _memory.available_bytes()
    assert available is None or available > 0


def test_adam_keeps_two_moments_instead_of_the_lbfgs_history():
    lbfgs, adam = SolverConfig(), SolverConfig(name="adam")
    saved = _memory.estimate_bytes(300, 400, lbfgs) - _memory.estimate_bytes(300, 400, adam)
    assert saved == pytest.approx((2 * 10 - 2) * 300 * 400 * 3 * 4, abs=2)
    assert _memory.largest_side(300, 400, adam, 10**10) > _memory.largest_side(
        300, 400, lbfgs, 10**10)
