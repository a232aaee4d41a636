"""The public surface: every name in ``__all__`` (top level and each namespace) exists, the names
that moved still resolve with a warning, ``import nst_jax`` and the CLI parser import no JAX,
the parser's choices and defaults are the library's, and the README's Python example runs."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax

ROOT = Path(__file__).parents[1]
NAMESPACES = ("images", "presets", "quality", "run", "solvers", "weights")


def test_all_names_import():
    assert len(set(nst_jax.__all__)) == len(nst_jax.__all__)
    for name in nst_jax.__all__:
        assert getattr(nst_jax, name) is not None, name
    public = {n for n in vars(nst_jax) if not n.startswith("_")}
    modules = {"cli"}
    assert public - modules - set(nst_jax.__all__) == set()


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_namespace_names_import(namespace):
    module = importlib.import_module(f"nst_jax.{namespace}")
    assert getattr(nst_jax, namespace) is module
    assert namespace in nst_jax.__all__
    names = module.__all__
    assert len(set(names)) == len(names), namespace
    for name in names:
        assert hasattr(module, name), f"nst_jax.{namespace}.{name}"


def test_moved_names_resolve_with_a_deprecation_warning():
    assert nst_jax._MOVED  # the names that lived at the top level before 0.2
    for name, namespace in nst_jax._MOVED.items():
        assert name not in nst_jax.__all__, name
        with pytest.warns(DeprecationWarning, match=f"nst_jax.{namespace}.{name}"):
            value = getattr(nst_jax, name)
        assert value is getattr(importlib.import_module(f"nst_jax.{namespace}"), name), name
    with pytest.raises(AttributeError, match="no_such_name"):
        nst_jax.no_such_name  # noqa: B018


def test_import_and_the_cli_parser_do_not_import_jax():
    """``import nst_jax`` and ``nst-jax --help`` answer at once: neither imports JAX."""
    code = ("import nst_jax, nst_jax.cli._parser, sys; "
            "nst_jax.cli._parser.build_parser(); "
            "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if 'jax' in m)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


def test_parser_choices_and_defaults_are_the_librarys():
    """The parser keeps its own copies (to stay free of JAX); they must equal the library's."""
    from nst_jax import images, presets, run, solvers
    from nst_jax._objective import DEFAULT_STYLE_WEIGHT, StyleConfig
    from nst_jax.cli import _parser
    from nst_jax.weights import _sources

    assert _parser.OPTIMIZERS == solvers.NAMES
    assert _parser.DEPRECATED_OPTIMIZERS == tuple(solvers.DEPRECATED_NAMES)
    assert _parser.LINESEARCHES == solvers.LINESEARCHES
    assert _parser.INITS == run.INITS
    assert _parser.MAX_PIXELS == images.MAX_PIXELS
    assert _parser.WEIGHT_SPECS == _sources.SPECS
    assert _parser.preset_names() == sorted(presets.PRESETS)

    defaults = _parser.DEFAULTS
    solver, config = solvers.SolverConfig(), StyleConfig()
    stylize_defaults = {name: p.default for name, p in
                        inspect.signature(run.stylize).parameters.items()}
    assert defaults["optimizer"] == solver.name
    assert defaults["history_size"] == solver.history_size
    assert defaults["linesearch"] == solver.linesearch
    assert defaults["learning_rate"] == solver.learning_rate
    assert defaults["first_step"] is None  # None: SolverConfig's own default
    assert (defaults["iterations"], defaults["tol"], defaults["patience"]) == (
        run.DEFAULT_ITERATIONS, run.DEFAULT_TOL, run.DEFAULT_PATIENCE)
    assert (stylize_defaults["iterations"], stylize_defaults["tol"],
            stylize_defaults["patience"]) == (
        run.DEFAULT_ITERATIONS, run.DEFAULT_TOL, run.DEFAULT_PATIENCE)
    assert defaults["style_weight"] == DEFAULT_STYLE_WEIGHT == stylize_defaults["style_weight"]
    # The content weight's default is stylize's own (a number, or None for "chosen by the
    # library", which the CLI then leaves to the library).
    assert defaults["content_weight"] == stylize_defaults["content_weight"]
    assert defaults["tv_weight"] == stylize_defaults["tv_weight"]
    assert defaults["init"] == stylize_defaults["init"]
    assert defaults["style_layer_weights"] == stylize_defaults["style_layer_weights"]
    assert tuple(defaults["content_layers"]) == config.content_layers
    assert tuple(defaults["style_layers"]) == config.style_layers
    assert defaults["pooling"] == config.pooling
    assert (defaults["content_norm"], defaults["style_norm"]) == (config.content_norm,
                                                                  config.style_norm)


def test_loss_weights_defaults_are_the_documented_constants():
    from nst_jax._objective import DEFAULT_CONTENT_WEIGHT, DEFAULT_STYLE_WEIGHT

    weights = nst_jax.loss_weights(nst_jax.StyleConfig())
    assert (float(weights.content), float(weights.style), float(weights.tv)) == (
        DEFAULT_CONTENT_WEIGHT, DEFAULT_STYLE_WEIGHT, 0.0)
    assert [f.name for f in dataclasses.fields(nst_jax.solvers.SolverConfig)] == [
        "name", "history_size", "linesearch", "learning_rate", "first_step"]


@pytest.mark.slow  # a vmapped compile of the whole network: ~6 s
def test_vmap_over_style_weight_matches_loop(random_params):
    """The README's vmap example: one compiled call for several beta values."""
    rng = np.random.default_rng(0)
    content = jnp.asarray(rng.uniform(0, 255, (24, 20, 3)), jnp.float32)
    style = jnp.asarray(rng.uniform(0, 255, (20, 24, 3)), jnp.float32)
    image = jnp.asarray(rng.uniform(0, 255, (24, 20, 3)), jnp.float32)
    config = nst_jax.StyleConfig()
    targets = nst_jax.make_targets(random_params, content, style, config)
    weights = nst_jax.loss_weights(config)
    prepared = nst_jax.with_backward_kernels(random_params)

    def loss(x, beta, params):
        return nst_jax.stylization_loss(
            x, params, targets, weights._replace(style=beta), config)[0]

    betas = jnp.array([1e2, 1e3, 1e4])
    images = jnp.stack([image, image + 1.0, image - 1.0])
    grad = jax.value_and_grad(loss)
    batched, batched_grads = jax.jit(jax.vmap(grad, in_axes=(0, 0, None)))(images, betas, prepared)
    looped = [grad(x, b, random_params) for x, b in zip(images, betas)]
    np.testing.assert_allclose(batched, jnp.stack([v for v, _ in looped]), rtol=1e-5)
    for batched_grad, (_, looped_grad) in zip(batched_grads, looped):
        np.testing.assert_allclose(batched_grad, looped_grad, rtol=1e-4,
                                   atol=1e-5 * float(jnp.max(jnp.abs(looped_grad))))
    assert batched[0] < batched[1] < batched[2]


def test_no_private_names_of_dependencies():
    """Nothing imported or reached from a private module or name of jax, flax, optax or
    jaxopt (``jax._src``, ``jaxopt._src``, ``optax._src``, ...): their internals change
    without notice."""
    pattern = re.compile(r"\b(?:jax|jaxopt|optax|flax)(?:\.\w+)*\._\w")
    package = Path(nst_jax.__file__).parent
    offenders = [f"{path.relative_to(package)}:{number}: {line.strip()}"
                 for path in sorted(package.rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if pattern.search(line.split("#")[0])]
    assert offenders == []
    assert pattern.search("from jaxopt._src.lbfgsb import x")  # the pattern itself works
    assert pattern.search("optax._src.base.GradientTransformation")
