"""Minimizers of ``fun(x, *args) -> (value, aux)`` over x in a box, one family a module.

Each is an ``init``/``update`` pair (:class:`Solver`) over a NamedTuple state, in the manner of
optax and jaxopt; none knows anything of style transfer. :class:`SolverConfig` names one of
them with its settings (hashable: a ``jit`` static argument) and :func:`make_solver` builds it.

* ``"jaxopt-lbfgs"`` (default): jaxopt's L-BFGS, fixed step, scale-free first step, box kept by
  reflection (:func:`lbfgs`).
* ``"optax-lbfgs"``: optax's L-BFGS with its zoom line search (:func:`optax_lbfgs`).
* ``"adam"``: projected Adam (:func:`adam`).
"""

from __future__ import annotations

import dataclasses
import warnings

from ._base import Solver
from ._box import reflect
from ._jaxopt import FIRST_STEP, LINESEARCHES, LbfgsState, check_lbfgs, lbfgs
from ._optax import OptaxState, adam, check_adam, optax_lbfgs

NAMES = ("jaxopt-lbfgs", "optax-lbfgs", "adam")
#: Names kept for one release; each warns and means the solver given here.
DEPRECATED_NAMES = {"projected-lbfgs": "jaxopt-lbfgs"}


@dataclasses.dataclass(frozen=True)
class SolverConfig:
    """Which solver, with which settings (hashable: static under ``jit``).

    Defaults, chosen on the pretrained VGG-19 (docs/benchmarks):

    * ``name="jaxopt-lbfgs"``: L-BFGS, as Gatys et al. found best and the design asks.
    * ``history_size=10``: curvature pairs kept (jaxopt's and optax's default).
    * ``linesearch="none"``: a fixed step of 1 (one evaluation per iteration, the Lua and
      PyTorch references' schedule); jaxopt-lbfgs only.
    * ``learning_rate=10.0``: Adam's step in pixel levels (neural-style's default); adam only.
    * ``first_step=32.0``: the largest pixel change of L-BFGS's first iteration; jaxopt-lbfgs
      only.
    """

    name: str = "jaxopt-lbfgs"
    history_size: int = 10
    linesearch: str = "none"
    learning_rate: float = 10.0
    first_step: float = FIRST_STEP

    def __post_init__(self):
        if self.name in DEPRECATED_NAMES:
            warnings.warn(f"solver {self.name!r} is retired (its block preconditioner left a "
                          f"grid of 2^k-pixel blocks); using {DEPRECATED_NAMES[self.name]!r}",
                          DeprecationWarning, stacklevel=3)
            object.__setattr__(self, "name", DEPRECATED_NAMES[self.name])
        if self.name not in NAMES:
            raise ValueError(f"optimizer must be one of {NAMES}, got {self.name!r}")
        # The solvers' own checks, on every field (a config is refused when it is made, not
        # when a run builds its solver).
        check_lbfgs(history_size=self.history_size, linesearch=self.linesearch,
                    first_step=self.first_step)
        check_adam(learning_rate=self.learning_rate)

    @classmethod
    def from_settings(cls, settings: dict) -> SolverConfig:
        """A config from keyword settings that may carry the deprecated ``subspace`` and
        ``pyramid_levels`` (they no longer mean anything: warned about and dropped)."""
        settings = dict(settings)
        for gone in ("subspace", "pyramid_levels"):
            if settings.pop(gone, None) is not None:
                warnings.warn(f"{gone} is deprecated and ignored: the default L-BFGS keeps "
                              "pixels in range by reflection", DeprecationWarning, stacklevel=3)
        return cls(**settings)


def make_solver(config: SolverConfig, fun, *, bounds: tuple[float, float] = (0.0, 255.0)
                ) -> Solver:
    """The :class:`Solver` named by ``config`` for ``fun(x, *args) -> (value, aux)``."""
    if config.name == "jaxopt-lbfgs":
        return lbfgs(fun, bounds=bounds, history_size=config.history_size,
                     linesearch=config.linesearch, first_step=config.first_step)
    if config.name == "optax-lbfgs":
        return optax_lbfgs(fun, bounds=bounds, history_size=config.history_size)
    return adam(fun, bounds=bounds, learning_rate=config.learning_rate)


__all__ = [
    "DEPRECATED_NAMES",
    "FIRST_STEP",
    "LINESEARCHES",
    "NAMES",
    "LbfgsState",
    "OptaxState",
    "Solver",
    "SolverConfig",
    "adam",
    "lbfgs",
    "make_solver",
    "optax_lbfgs",
    "reflect",
]
