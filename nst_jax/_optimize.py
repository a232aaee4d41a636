"""Stylization: the Gatys objective on one image and the compiled optimizer loop around it.

Pixel convention: the optimized variable is the image itself, (H, W, 3) float32 RGB 0-255; it is
preprocessed (an affine map) inside the objective. Everything structural (layers, pooling,
optimizer, history) lives in the frozen, hashable :class:`StyleConfig` and is static under
``jit``; every loss weight is a traced array in :class:`LossWeights`, so changing weights (or
vmapping over them) never recompiles.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._distributed import to_host
from ._lbfgsb import jaxopt_rules
from ._losses import (
    NORMS,
    content_loss,
    gram_matrix,
    guided_style_error,
    normalized_style_error,
    total_variation,
)
from ._vgg import (
    CAFFE,
    LAYERS,
    Preprocessing,
    canonical_layer,
    deprocess,
    extract_features,
    preprocess,
)

with warnings.catch_warnings():
    # jaxopt announces on import that it is unmaintained; it is still the design's solver.
    warnings.filterwarnings("ignore", message="JAXopt is no longer maintained", category=DeprecationWarning)
    import jaxopt

DEFAULT_CONTENT_LAYERS = ("conv4_2",)
DEFAULT_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
OPTIMIZERS = ("jaxopt-lbfgs", "projected-lbfgs", "optax-lbfgs", "adam")
LINESEARCHES = ("backtracking", "zoom", "hager-zhang", "none")
SUBSPACES = ("projected", "truncated")
INITS = ("content", "noise", "style", "gaussian")
TERMS = ("content", "style", "tv")

# Run status codes (OptState.status).
RUNNING, MAX_ITERATIONS, CONVERGED, NONFINITE = 0, 1, 2, 3
STATUS_NAMES = {
    RUNNING: "running",
    MAX_ITERATIONS: "reached the iteration limit",
    CONVERGED: "converged (relative loss change below tolerance)",
    NONFINITE: "stopped: the loss became NaN or infinite",
}


@dataclasses.dataclass(frozen=True)
class StyleConfig:
    """Static (structural) settings; hashable, so it can be a ``jit`` static argument.

    Defaults and their sources:

    * ``content_layers=("conv4_2",)``, ``style_layers=conv1_1 ... conv5_1``: Gatys, Ecker &
      Bethge, CVPR 2016, Sec. 3.
    * ``pooling="max"``: the trained network; Gatys et al. 2016 (Sec. 2) prefer ``"avg"`` with
      their normalized VGG.
    * ``optimizer="jaxopt-lbfgs"``: L-BFGS as in Gatys et al. 2016 (Sec. 3: "we found L-BFGS to
      work best"); box-constrained (jaxopt's L-BFGS-B), see :func:`stylize`.
      ``"projected-lbfgs"`` (:func:`_projected_step`, with the :func:`pyramid_precondition`
      preconditioner) is the fastest measured route to a low loss (README "Optimizer"),
      ``"adam"`` is projected Adam, ``"optax-lbfgs"`` is unconstrained.
    * ``history_size=10``: jaxopt's and optax's default (Nocedal & Wright suggest 3-20). The Lua
      reference uses 100, but jaxopt's L-BFGS-B update costs O(n m) dense work with a large
      constant: measured here at 128 px, history 100 took 1.6x the time per iteration of
      history 10 and reached no lower loss.
    * ``linesearch="none"``: a fixed step of 1 along L-BFGS-B's direction (then projection onto
      the pixel box), as the Lua and PyTorch references do: exactly one loss+gradient
      evaluation per iteration and no XLA loop around it. Chosen by ``scripts/converge.py``
      (README "Optimizer"): after 300 evaluations at 128 px it reached a 1.6x lower loss than
      jaxopt's backtracking (1.03 evaluations per iteration) and 2.3x lower than zoom (2.02).
    * ``subspace="projected"`` (jaxopt L-BFGS-B only): the subspace step is projected onto the
      box, L-BFGS-B 3.0's rule (Morales & Nocedal 2011), its displacement capped at
      ``SUBSPACE_STEP_CAP`` = 16 levels (:func:`nst_jax._lbfgsb.projected_subspace`);
      ``"truncated"`` is jaxopt's own rule, which stops the whole step at the first pixel that
      meets a bound and left the solver 2.8x above the references' loss at 128 px.
    * ``pyramid_levels=None`` (projected L-BFGS only): levels of the preconditioner
      :func:`pyramid_precondition`, ``None`` = from the image size (:func:`pyramid_levels`),
      0 = none.
    * ``learning_rate=10.0`` (Adam only): neural-style's ``-learning_rate`` default, in 0-255
      pixel units.
    * ``dtype="float32"``; ``"bfloat16"`` runs the VGG convolutions in bfloat16 (Grams and
      losses still accumulate in float32): halves activation memory where the backend has
      bfloat16 convolutions (GPU, TPU); on XLA:CPU it saves little (README "Benchmarks").
    * ``remat=False``; True recomputes each VGG block in the backward pass instead of storing
      its activations (``_vgg._remat``): 27% less XLA buffer plan at 512 px on CPU (30% at
      2048 px), 1.5-1.6x the time; reverse mode only.
    * ``layer_output="relu"``: layers are the ReLU outputs (Caffe's ``reluB_I``, Gatys);
      ``"conv"`` taps the convolutions before the ReLU (the PyTorch tutorial).
    * ``content_norm="gatys"``, ``style_norm="gatys"``: Gatys Eqs. 1 and 4; ``"mean"`` are the
      mean-squared-error conventions of neural-style and the PyTorch tutorial (see
      :func:`~nst_jax.content_loss`, :func:`~nst_jax.style_layer_loss`).
    * ``tv_form="squared"``; ``"neural-style"`` is that implementation's TV (see
      :func:`~nst_jax.total_variation`).
    * ``preprocessing``: the input convention of the weights (:data:`~nst_jax.CAFFE` for the
      Keras file; files converted by ``nst-jax weights convert`` record theirs, and the CLI
      takes it from the file).
    """

    content_layers: tuple[str, ...] = DEFAULT_CONTENT_LAYERS
    style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
    pooling: str = "max"
    optimizer: str = "jaxopt-lbfgs"
    history_size: int = 10
    linesearch: str = "none"
    learning_rate: float = 10.0
    dtype: str = "float32"
    remat: bool = False
    layer_output: str = "relu"
    content_norm: str = "gatys"
    style_norm: str = "gatys"
    tv_form: str = "squared"
    preprocessing: Preprocessing = CAFFE
    subspace: str = "projected"
    pyramid_levels: int | None = None

    def __post_init__(self):
        if not self.style_layers:
            raise ValueError("at least one style layer is required")
        for name in (*self.content_layers, *self.style_layers):
            canonical_layer(name)
        if self.pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', got {self.pooling!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.linesearch not in LINESEARCHES:
            raise ValueError(f"linesearch must be one of {LINESEARCHES}, got {self.linesearch!r}")
        if self.history_size < 1:
            raise ValueError(f"history_size must be at least 1, got {self.history_size}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.layer_output not in ("relu", "conv"):
            raise ValueError(f"layer_output must be 'relu' or 'conv', got {self.layer_output!r}")
        for name in ("content_norm", "style_norm"):
            if getattr(self, name) not in NORMS:
                raise ValueError(f"{name} must be one of {NORMS}, got {getattr(self, name)!r}")
        if self.tv_form not in ("squared", "neural-style"):
            raise ValueError(f"tv_form must be 'squared' or 'neural-style', got {self.tv_form!r}")
        if not isinstance(self.preprocessing, Preprocessing):
            raise TypeError("preprocessing must be a nst_jax.Preprocessing")
        if self.subspace not in SUBSPACES:
            raise ValueError(f"subspace must be one of {SUBSPACES}, got {self.subspace!r}")
        if self.pyramid_levels is not None and self.pyramid_levels < 0:
            raise ValueError(f"pyramid_levels must be >= 0 or None, got {self.pyramid_levels}")

    def features(self, params, image, layers):
        """VGG features of one RGB 0-255 image with this config's preprocessing, pooling,
        layer outputs, dtype and remat."""
        return extract_features(params, preprocess(image, self.preprocessing), layers,
                                pooling=self.pooling, dtype=jnp.dtype(self.dtype),
                                remat=self.remat, outputs=self.layer_output)

    @property
    def feature_layers(self) -> tuple[str, ...]:
        """Every layer the objective reads, in network order, canonical names."""
        wanted = {canonical_layer(n) for n in (*self.content_layers, *self.style_layers)}
        return tuple(name for name in LAYERS if name in wanted)


class LossWeights(NamedTuple):
    """Traced loss weights: ``L = alpha * sum_c v_c L_c + beta * sum_l w_l E_l + gamma * TV``.

    Attributes:
        content: alpha, scalar.
        style: beta, scalar.
        tv: gamma, scalar.
        content_layers: (len(content_layers),) per-content-layer weights v_c.
        style_layers: (len(style_layers),) per-style-layer weights w_l.
    """

    content: jax.Array
    style: jax.Array
    tv: jax.Array
    content_layers: jax.Array
    style_layers: jax.Array


def loss_weights(
    config: StyleConfig,
    *,
    content: float = 1.0,
    style: float = 1e3,
    tv: float = 0.0,
    content_layers=None,
    style_layers=None,
) -> LossWeights:
    """Build :class:`LossWeights`; per-layer weights default to ``1 / number of layers``.

    ``style=1e3`` with ``content=1`` is the ratio alpha/beta = 1e-3 of Gatys et al. 2015
    (Fig. 2); ``tv=0``: Gatys et al. use no smoothness term.
    """
    def per_layer(values, names, what):
        if values is None:
            return jnp.full((len(names),), 1.0 / max(len(names), 1), jnp.float32)
        values = jnp.asarray(values, jnp.float32)
        if values.shape != (len(names),):
            raise ValueError(f"{what}: expected {len(names)} weights, got shape {values.shape}")
        return values

    return LossWeights(
        jnp.asarray(content, jnp.float32),
        jnp.asarray(style, jnp.float32),
        jnp.asarray(tv, jnp.float32),
        per_layer(content_layers, config.content_layers, "content layer weights"),
        per_layer(style_layers, config.style_layers, "style layer weights"),
    )


class Targets(NamedTuple):
    """What the generated image is compared with, computed once per content/style image.

    Attributes:
        content_features: per content layer, (H_l, W_l, C_l) features of the content photo.
        style_grams: per style layer, the target Gram per position ``A_hat = A / M'`` (M' the
            style image's positions at that layer; see :func:`~nst_jax.style_layer_loss`):
            (N_l, N_l), or (R, N_l, N_l) with one target per region when ``style_masks`` is set.
        style_masks: None, or per style layer (R, H_l, W_l) region guidance at that layer's
            resolution (Gatys et al. 2017 guided Grams).
    """

    content_features: tuple[jax.Array, ...]
    style_grams: tuple[jax.Array, ...]
    style_masks: tuple[jax.Array, ...] | None = None


def _as_style_list(style) -> list[jax.Array]:
    if isinstance(style, (list, tuple)):
        images = [jnp.asarray(s, jnp.float32) for s in style]
    else:
        images = [jnp.asarray(style, jnp.float32)]
    if not images:
        raise ValueError("at least one style image is required")
    for image in images:
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"style: expected (H, W, 3) RGB images, got shape {image.shape}")
    return images


def _pool_to_layer(masks: jax.Array, layer: str) -> jax.Array:
    """(R, H, W) -> (R, H_l, W_l): 2x2/2 average pooling once per pooling before ``layer``
    (floored, like the network's own pooling), so masks line up with the feature maps."""
    for _ in range(int(canonical_layer(layer)[4]) - 1):
        h, w = masks.shape[1] // 2 * 2, masks.shape[2] // 2 * 2
        masks = masks[:, :h, :w].reshape(masks.shape[0], h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    return masks


def make_targets(params, content: jax.Array, style, config: StyleConfig, *,
                 style_blend=None, masks=None) -> Targets:
    """Content features and style target Grams.

    Args:
        content: (H, W, 3) RGB 0-255 content photo.
        style: one (H', W', 3) RGB 0-255 style image, or a sequence of them (sizes may differ).
        style_blend: for several styles without masks, blend weights (normalized to sum to 1;
            default equal): the target is the blend of their per-position Grams
            ``A_hat = sum_s b_s A_s / M'_s``, as neural-style's ``-style_blend_weights``.
        masks: (R, H, W) values in [0, 1], one content-space region per style image (R = number
            of styles): region r is painted in style r (Gatys et al. 2017 guided Grams; each
            style image is used whole).
    """
    styles = _as_style_list(style)
    content_features = (config.features(params, content, config.content_layers)
                        if config.content_layers else {})
    per_style = []
    for image in styles:
        features = config.features(params, image, config.style_layers)
        per_style.append([gram_matrix(features[name]) / (features[name].shape[0]
                                                         * features[name].shape[1])
                          for name in config.style_layers])
    style_masks = None
    if masks is not None:
        if style_blend is not None:
            raise ValueError("style_blend and masks cannot be combined: masks give each region "
                             "its own style")
        masks = jnp.asarray(masks, jnp.float32)
        if masks.shape != (len(styles), *content.shape[:2]):
            raise ValueError(f"masks: expected shape ({len(styles)}, {content.shape[0]}, "
                             f"{content.shape[1]}) (one per style, content size), got "
                             f"{masks.shape}")
        grams = tuple(jnp.stack(layer) for layer in zip(*per_style))
        style_masks = tuple(_pool_to_layer(masks, name) for name in config.style_layers)
    else:
        blend = jnp.full((len(styles),), 1.0 / len(styles)) if style_blend is None else \
            jnp.asarray(style_blend, jnp.float32)
        if blend.shape != (len(styles),):
            raise ValueError(f"style_blend: expected {len(styles)} weights, got {blend.shape}")
        blend = blend / jnp.sum(blend)
        grams = tuple(sum(b * g for b, g in zip(blend, layer)) for layer in zip(*per_style))
    return Targets(tuple(content_features[name] for name in config.content_layers), grams,
                   style_masks)


def stylization_loss(
    image: jax.Array, params, targets: Targets, weights: LossWeights, config: StyleConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The full Gatys objective of one image; pure, differentiable, vmappable over ``weights``.

    ``L = alpha * sum_c v_c L_c + beta * sum_l w_l E_l + gamma * TV`` with the conventions of
    ``config`` (:class:`StyleConfig`); E_l is guided when ``targets.style_masks`` is set.

    Args:
        image: (H, W, 3) RGB 0-255, the image being optimized (same size as the content photo).

    Returns:
        (total, terms): total float32 scalar; terms holds the unweighted ``content``
        (sum_c v_c L_c), ``style`` (sum_l w_l E_l) and ``tv`` values.
    """
    features = config.features(params, image, config.feature_layers)
    content = sum(
        (weights.content_layers[i] * content_loss(features[canonical_layer(name)], target,
                                                  norm=config.content_norm)
         for i, (name, target) in enumerate(zip(config.content_layers, targets.content_features))),
        jnp.float32(0.0),
    )
    style = jnp.float32(0.0)
    for i, name in enumerate(config.style_layers):
        f = features[canonical_layer(name)]
        if targets.style_masks is None:
            error = normalized_style_error(f, targets.style_grams[i], norm=config.style_norm)
        else:
            error = guided_style_error(f, targets.style_grams[i], targets.style_masks[i],
                                       norm=config.style_norm)
        style = style + weights.style_layers[i] * error
    tv = total_variation(image, form=config.tv_form)
    total = weights.content * content + weights.style * style + weights.tv * tv
    return total, {"content": content, "style": style, "tv": tv}


# --------------------------------------------------------------------------------------------
# Solvers: a common init/update interface over jaxopt's L-BFGS-B, optax's L-BFGS and Adam.


class OptState(NamedTuple):
    """Loop state, returned with the result so a run can be continued.

    Attributes:
        image: (H, W, 3) current iterate, RGB 0-255.
        solver: the optimizer's own state (jaxopt ``LbfgsbState`` with its L-BFGS history, or
            an optax state).
        iteration: optimizer iterations done.
        evaluations: loss+gradient evaluations done (line-search trials included).
        loss: total loss at ``image``.
        terms: (3,) content, style, tv at ``image``.
        stall: consecutive iterations whose relative loss decrease was below ``tol``.
        status: RUNNING, MAX_ITERATIONS, CONVERGED or NONFINITE.
        best_image: the lowest-loss image so far (with a fixed step, L-BFGS may raise the loss
            now and then; a run returns its best image, not merely its last).
        best_loss: total loss at ``best_image``.
    """

    image: jax.Array
    solver: Any
    iteration: jax.Array
    evaluations: jax.Array
    loss: jax.Array
    terms: jax.Array
    stall: jax.Array
    status: jax.Array
    best_image: jax.Array
    best_loss: jax.Array


_BOUNDS = (0.0, 255.0)
#: Largest pixel change (0-255 units) of L-BFGS-B's first iteration from a warm start.
WARM_FIRST_STEP = 32.0


def _value_and_grad(config: StyleConfig):
    def fun(image, params, targets, weights):
        total, terms = stylization_loss(image, params, targets, weights, config)
        return total, jnp.stack([terms[name] for name in TERMS])

    return jax.value_and_grad(fun, has_aux=True)


def _jaxopt_solver(config: StyleConfig):
    linesearch = {"none": {"stepsize": 1.0}}.get(config.linesearch, {"linesearch": config.linesearch})
    return jaxopt.LBFGSB(
        fun=_value_and_grad(config),
        value_and_grad=True,
        has_aux=True,
        maxiter=2**31 - 1,  # our loop decides when to stop
        tol=0.0,
        history_size=config.history_size,
        **linesearch,
    )


def _box(image):
    return (jnp.full_like(image, _BOUNDS[0]), jnp.full_like(image, _BOUNDS[1]))


def _optax_transform(config: StyleConfig):
    if config.optimizer == "adam":
        return optax.adam(config.learning_rate)
    return optax.lbfgs(memory_size=config.history_size)


def init_state(image, params, targets: Targets, weights: LossWeights, config: StyleConfig,
               first_step=0.0) -> OptState:
    """Evaluate the objective at ``image`` and set up the optimizer (one evaluation).

    ``first_step`` (jaxopt L-BFGS-B only, traced): if > 0, the largest pixel change of the
    first iteration; :func:`stylize` uses ``WARM_FIRST_STEP`` when ``init`` is an image."""
    image = jnp.clip(jnp.asarray(image, jnp.float32), *_BOUNDS)
    args = (params, targets, weights)
    if config.optimizer == "jaxopt-lbfgs":
        solver_state = _jaxopt_solver(config).init_state(image, _box(image), *args)
        loss, terms = solver_state.value, solver_state.aux
        # First step. With B_0 = I the L-BFGS-B direction is P(x - g) - x and |g| is in the
        # millions, so a fixed step 1 throws nearly every pixel onto 0 or 255: a 100x loss
        # spike for 2-4 iterations. From a cold start that is harmless, even the fastest route
        # measured (scripts/converge.py: 2.3x lower loss after 300 evaluations at 128 px than a
        # capped first step), but it would wipe out a warm start (the upsampled coarse scale,
        # the previous video frame). ``first_step`` > 0 caps the first move: B_0 = theta_0 I
        # with theta_0 = max|g| / first_step moves no pixel by more than first_step levels.
        # From the first curvature pair on, jaxopt sets theta = y's / s's as usual.
        theta0 = jnp.where(first_step > 0, jnp.max(jnp.abs(solver_state.grad))
                           / jnp.maximum(first_step, 1e-6), 1.0)
        solver_state = solver_state._replace(
            theta=jnp.maximum(1.0, theta0).astype(solver_state.theta.dtype))
    else:
        # These states carry the gradient, so each iteration evaluates once.
        (loss, terms), grad = _value_and_grad(config)(image, *args)
        if config.optimizer == "projected-lbfgs":
            history = jnp.zeros((config.history_size, *image.shape), jnp.float32)
            solver_state = _ProjectedLbfgs(history, history, jnp.zeros((config.history_size,)),
                                           jnp.zeros((), jnp.int32), grad)
        else:  # optax states do not keep the gradient
            solver_state = (_optax_transform(config).init(image), grad)
    zero = jnp.zeros((), jnp.int32)
    return OptState(image, solver_state, zero, zero + 1, loss, terms, zero, zero, image, loss)


class _ProjectedLbfgs(NamedTuple):
    """State of :func:`_projected_step`: the last ``m`` curvature pairs (newest at slot
    ``(count - 1) % m``), ``rho = 1 / s'y``, pairs stored so far, and the current gradient."""

    s: jax.Array  # (m, H, W, 3)
    y: jax.Array  # (m, H, W, 3)
    rho: jax.Array  # (m,)
    count: jax.Array
    grad: jax.Array


def pyramid_levels(shape: tuple[int, ...], levels: int | None = None) -> int:
    """Levels K of :func:`pyramid_precondition` for an (H, W, ...) image: ``levels`` if given,
    else the largest K with 2^K <= min(H, W) / 4 (the coarsest blocks a quarter of the short
    side: 4 at 85x128, 5 at 170x256, 6 at 341x512)."""
    if levels is not None:
        return int(levels)
    return max(0, int(np.floor(np.log2(max(min(shape[0], shape[1]) / 4, 1)))))


def pyramid_precondition(x: jax.Array, levels: int) -> jax.Array:
    """``P x = x + sum_{k=1..K} 2^k Pi_k x`` for an (H, W, C) array; Pi_k replaces each
    2^k x 2^k block (the grid anchored at the top left, the image zero-padded to whole blocks)
    by its mean.

    Each Pi_k is an orthogonal projection (onto block-constant images), so P is symmetric
    positive definite with eigenvalues in [1, 2^(K+1) - 1]: a component constant on 2^j blocks
    but not on 2^(j+1) ones is scaled by 2^(j+1) - 1, i.e. by about its wavelength. That is
    the preconditioner: pixel-space gradients of the style loss are dominated by fine detail,
    while the slow modes of this objective are the coarse ones (found by measurement,
    ``scripts/converge.py``; cf. the Laplacian-pyramid parameterizations of feature
    visualization). ``levels = 0`` is the identity.
    """
    if levels == 0:
        return x
    height, width, channels = x.shape
    block = 2 ** levels
    ph, pw = -(-height // block) * block, -(-width // block) * block
    padded = jnp.pad(x, ((0, ph - height), (0, pw - width), (0, 0)))
    out = x
    for k in range(1, levels + 1):
        b = 2 ** k
        tiles = padded.reshape(ph // b, b, pw // b, b, channels)
        means = jnp.broadcast_to(tiles.mean(axis=(1, 3), keepdims=True), tiles.shape)
        out = out + 2.0 ** k * means.reshape(ph, pw, channels)[:height, :width]
    return out


def _two_loop(g, sol: _ProjectedLbfgs, precondition=lambda v: v):
    """``H g`` by the L-BFGS two-loop recursion (Nocedal & Wright, Alg. 7.4) over the stored
    pairs with ``H_0 = gamma P`` (``P = precondition``, symmetric positive definite;
    ``gamma = s'y / y'P y`` of the newest pair, Eq. 7.20 in P's metric); unfilled slots
    contribute nothing."""
    m = sol.rho.shape[0]
    q, alphas = g, []
    for i in range(m):  # newest first; m is small and static, so this unrolls
        j = (sol.count - 1 - i) % m
        valid = i < jnp.minimum(sol.count, m)
        a = jnp.where(valid, sol.rho[j] * jnp.vdot(sol.s[j], q), 0.0)
        q = q - a * sol.y[j]
        alphas.append((j, a, valid))
    newest = (sol.count - 1) % m
    y = sol.y[newest]
    gamma = jnp.vdot(sol.s[newest], y) / jnp.vdot(y, precondition(y))
    q = precondition(q) * jnp.where(sol.count > 0, gamma, 1.0)
    for j, a, valid in reversed(alphas):
        b = jnp.where(valid, sol.rho[j] * jnp.vdot(sol.y[j], q), 0.0)
        q = q + (a - b) * sol.s[j]
    return q


def _projected_step(image, sol: _ProjectedLbfgs, value_and_grad, args, levels: int = 0):
    """One projected L-BFGS iteration with a fixed step: pixels at a bound whose gradient points
    out of the box are held ("active"); the two-loop direction (``H_0 = gamma P``, P the
    :func:`pyramid_precondition` with ``levels``) is computed on the free pixels only, the
    step is clipped to 0..255, and the curvature pair keeps only the free pixels' gradient
    change (so held pixels do not pollute the curvature). The first step (no pairs) is
    ``-P g`` on the free pixels, scaled to move no pixel by more than ``WARM_FIRST_STEP``
    levels. One loss+gradient evaluation per iteration."""
    g = sol.grad
    lower, upper = _BOUNDS
    free = ~(((image <= lower) & (g > 0)) | ((image >= upper) & (g < 0)))
    g_free = jnp.where(free, g, 0.0)

    def precondition(v):
        return pyramid_precondition(v, levels)

    steepest = precondition(g_free)
    first = -steepest * (WARM_FIRST_STEP / jnp.maximum(jnp.max(jnp.abs(steepest)), 1e-30))
    direction = jnp.where(free, jnp.where(sol.count > 0, -_two_loop(g_free, sol, precondition),
                                          first), 0.0)
    new = jnp.clip(image + direction, lower, upper)
    (loss, terms), grad = value_and_grad(new, *args)
    s, y = new - image, jnp.where(free, grad - g, 0.0)
    sy = jnp.vdot(s, y)
    keep = sy > 1e-10 * jnp.maximum(jnp.vdot(y, y), 1e-30)  # skip non-positive curvature
    slot = sol.count % sol.rho.shape[0]
    sol = _ProjectedLbfgs(
        jnp.where(keep, sol.s.at[slot].set(s), sol.s),
        jnp.where(keep, sol.y.at[slot].set(y), sol.y),
        jnp.where(keep, sol.rho.at[slot].set(1.0 / jnp.where(keep, sy, 1.0)), sol.rho),
        sol.count + keep.astype(sol.count.dtype),
        grad,
    )
    return new, sol, loss, terms


def _update(state: OptState, params, targets, weights, config: StyleConfig):
    """One optimizer iteration -> (image, solver state, loss, terms, evaluations used)."""
    args = (params, targets, weights)
    if config.optimizer == "jaxopt-lbfgs":
        solver = state.solver
        with jaxopt_rules(config.subspace):
            image, solver = _jaxopt_solver(config).update(state.image, solver, _box(state.image),
                                                          *args)
        used = solver.num_fun_eval - state.solver.num_fun_eval
        return image, solver, solver.value, solver.aux, used.astype(jnp.int32)
    value_and_grad = _value_and_grad(config)
    if config.optimizer == "projected-lbfgs":
        levels = pyramid_levels(state.image.shape, config.pyramid_levels)
        image, solver, loss, terms = _projected_step(state.image, state.solver, value_and_grad,
                                                     args, levels)
        return image, solver, loss, terms, jnp.ones((), jnp.int32)
    transform = _optax_transform(config)
    opt_state, grad = state.solver
    used = jnp.ones((), jnp.int32)
    if config.optimizer == "adam":
        updates, opt_state = transform.update(grad, opt_state, state.image)
        # Projected Adam: a step followed by the projection onto the pixel box.
        image = jnp.clip(optax.apply_updates(state.image, updates), *_BOUNDS)
    else:
        value_fn = lambda x: value_and_grad(x, *args)[0][0]
        updates, opt_state = transform.update(
            grad, opt_state, state.image, value=state.loss, grad=grad, value_fn=value_fn
        )
        # optax's L-BFGS is unconstrained; pixels are clipped once, on output.
        image = optax.apply_updates(state.image, updates)
        steps = optax.tree_utils.tree_get(opt_state, "num_linesearch_steps")
        used = used + jnp.asarray(steps, jnp.int32)
    # Loss, terms and gradient at the new iterate (reused by the next update).
    (loss, terms), grad = value_and_grad(image, *args)
    return image, (opt_state, grad), loss, terms, used


def _step(state: OptState, params, targets, weights, limits, config: StyleConfig) -> OptState:
    max_iterations, tol, patience = limits
    image, solver, loss, terms, used = _update(state, params, targets, weights, config)
    finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(image))
    improvement = (state.loss - loss) / jnp.maximum(jnp.abs(state.loss), 1e-30)
    # A rise is not convergence; tol = 0 turns early stopping off.
    stall = jnp.where((tol > 0) & (jnp.abs(improvement) < tol), state.stall + 1, 0)
    iteration = state.iteration + 1
    status = jnp.select(
        [~finite, stall >= patience, iteration >= max_iterations],
        [NONFINITE, CONVERGED, MAX_ITERATIONS],
        RUNNING,
    ).astype(jnp.int32)
    better = loss < state.best_loss
    new = OptState(image, solver, iteration, state.evaluations + used, loss, terms, stall, status,
                   jnp.where(better, image, state.best_image),
                   jnp.where(better, loss, state.best_loss))
    # A non-finite step is discarded: the last good image and state are kept.
    return jax.tree.map(lambda good, bad: jnp.where(finite, good, bad), new,
                        state._replace(status=status, iteration=iteration,
                                       evaluations=new.evaluations))


def run_steps(state: OptState, params, targets, weights, limits, config: StyleConfig, steps: int):
    """Advance up to ``steps`` iterations inside one compiled ``lax.scan``.

    Finished runs (status != RUNNING) are carried through unchanged (``lax.cond``; under
    ``vmap`` both branches execute, so a finished lane costs as much as a running one).
    ``steps=1`` compiles one iteration with no control flow around it (a select keeps finished
    runs unchanged): XLA:CPU runs the VGG convolutions about 2x slower when they sit inside a
    loop or conditional (measured at 128 px: 0.85-0.95 s per evaluation inside ``lax.scan``,
    0.42 s for the same step compiled alone, equal to a bare loss+gradient call).

    Args:
        limits: (max_iterations, tol, patience) traced scalars.

    Returns:
        (state, records) with records = dict of per-step arrays: ``loss`` (steps,), ``terms``
        (steps, 3), ``evaluations`` (steps,), ``active`` (steps,) bool (False once finished).
    """

    def body(carry, _):
        active = carry.status == RUNNING
        carry = jax.lax.cond(
            active,
            lambda s: _step(s, params, targets, weights, limits, config),
            lambda s: s,
            carry,
        )
        return carry, {"loss": carry.loss, "terms": carry.terms,
                       "evaluations": carry.evaluations, "active": active}

    if steps == 1:
        active = state.status == RUNNING
        new = _step(state, params, targets, weights, limits, config)
        state = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, state)
        records = {"loss": state.loss, "terms": state.terms,
                   "evaluations": state.evaluations, "active": active}
        return state, jax.tree.map(lambda r: r[None], records)
    return jax.lax.scan(body, state, None, length=steps)


_init_jit = jax.jit(init_state, static_argnames="config")
_targets_jit = jax.jit(make_targets, static_argnames="config")
_compiled: dict[Any, Any] = {}


def compile_cached(fn, args, **static):
    """Ahead-of-time compile ``fn(*args, **static)`` once per function, static settings,
    argument shapes/dtypes and shardings; memoized, so equal shapes never compile twice.

    Returns (compiled, seconds spent compiling now: 0.0 when it was already compiled).
    """
    leaves = jax.tree.leaves(args)
    signature = (fn, tuple(sorted(static.items())), jax.tree.structure(args),
                 tuple((a.shape, str(a.dtype), getattr(a, "sharding", None)) for a in leaves))
    if signature in _compiled:
        return _compiled[signature], 0.0
    start = time.perf_counter()
    compiled = jax.jit(fn, static_argnames=tuple(static)).lower(*args, **static).compile()
    _compiled[signature] = compiled
    return compiled, time.perf_counter() - start


STOPPED = -1  # by the caller's callback (not a state value: the loop just ends)


def status_name(code: int) -> str:
    """Readable reason for a status code of :func:`drive`."""
    return STATUS_NAMES.get(code, "stopped by the caller")


def drive(compiled, state: OptState, run_args, *, iterations: int, start: float,
          compile_seconds: float, callback=None):
    """Call a compiled chunk of :func:`run_steps` (possibly vmapped) until every run stopped.

    Works for one run (scalar state fields) and for a batch (leading batch axis).

    Returns:
        (state, history, status): history holds ``loss``, ``content``, ``style``, ``tv``,
        ``evaluations`` with one row per iteration (row 0: the initial image; shape (T,) or
        (T, B); a finished lane repeats its last values) and ``seconds`` (T,); status is the
        status code (array for a batch), ``STOPPED`` where the callback ended the loop.
    """
    # to_host, not np.asarray: with devices on several processes the lanes are global arrays,
    # gathered so that every process sees (and stops on) the same values.
    history = {"loss": [to_host(state.loss)[None]], "terms": [to_host(state.terms)[None]],
               "evaluations": [to_host(state.evaluations)[None]], "seconds": [np.zeros(1)]}

    def status_now():
        status, done = to_host(state.status), to_host(state.iteration) >= iterations
        return np.where((status == RUNNING) & done, MAX_ITERATIONS, status)

    while np.any(status_now() == RUNNING):
        state, records = compiled(state, *run_args)
        records = jax.tree.map(to_host, records)
        active = records["active"]
        rows = active if active.ndim == 1 else active.any(axis=1)
        n = int(rows.sum())
        elapsed = time.perf_counter() - start - compile_seconds
        previous = history["seconds"][-1][-1]
        for name in ("loss", "terms", "evaluations"):
            history[name].append(records[name][rows])
        history["seconds"].append(previous + (elapsed - previous) * np.arange(1, n + 1) / max(n, 1))
        if callback is not None and callback(state, records):
            status = status_now()
            return state, _history(history), np.where(status == RUNNING, STOPPED, status)
    return state, _history(history), status_now()


def _history(lists) -> dict[str, np.ndarray]:
    terms = np.concatenate(lists["terms"])
    return {
        "loss": np.concatenate(lists["loss"]),
        **{name: terms[..., i] for i, name in enumerate(TERMS)},
        "evaluations": np.concatenate(lists["evaluations"]),
        "seconds": np.concatenate(lists["seconds"]),
    }


class StylizeResult(NamedTuple):
    """Outcome of :func:`stylize`.

    Attributes:
        image: (H, W, 3) float32 RGB 0-255 (clipped to range), the lowest-loss image of the
            run (``state.best_image``; nearly always the last iterate, ``state.image``).
        history: per iteration (index 0 = the initial image): ``loss`` total, ``content``,
            ``style``, ``tv`` (unweighted terms), ``evaluations`` (cumulative loss+gradient
            evaluations) and ``seconds`` (wall clock since the start of the loop; within one
            compiled chunk the time is spread evenly over its iterations).
        iterations: optimizer iterations done.
        evaluations: loss+gradient evaluations done.
        status: why the run stopped (see ``STATUS_NAMES``).
        state: the final :class:`OptState` (continue a run with ``stylize(..., state=...)``).
        compile_seconds: time spent compiling (first chunk includes it).
        targets: the :class:`Targets` used (pass them back with ``stylize(..., targets=)`` to
            continue a run without recomputing the content features and style Grams).
    """

    image: np.ndarray
    history: dict[str, np.ndarray]
    iterations: int
    evaluations: int
    status: str
    state: OptState
    compile_seconds: float
    targets: Targets


def _chunk_size(pixels: int, save_every: int | None) -> int:
    """Iterations per compiled call: 1 on CPU (see :func:`run_steps`: loops slow XLA:CPU's
    convolutions down 2x, while a Python call costs well under a millisecond); on accelerators
    enough iterations for a progress update every second or two."""
    if jax.default_backend() == "cpu":
        return 1
    size = int(min(50, max(1, 2**17 // max(pixels, 1))))
    if save_every:
        size = max(d for d in range(1, min(size, save_every) + 1) if save_every % d == 0)
    return size


def initial_image(init, content, style, *, key,
                  preprocessing: Preprocessing = CAFFE) -> jax.Array:
    """Starting image (H, W, 3) RGB 0-255.

    ``init`` is an array (an image of the content's shape, e.g. an upsampled earlier result), or
    ``"content"`` (the photo), ``"noise"`` (white noise, uniform 0-255, from ``key``),
    ``"style"`` (the first style image resized to the content's shape) or ``"gaussian"``
    (neural-style's ``-init random``: ``deprocess(0.001 * N(0, 1))``, i.e. the weights' mean
    colour plus tiny Gaussian noise in network-input units).
    """
    content = jnp.asarray(content, jnp.float32)
    if not isinstance(init, str):
        init = jnp.asarray(init, jnp.float32)
        if init.shape != content.shape:
            raise ValueError(f"init image has shape {init.shape}, expected {content.shape}")
        return init
    if init == "content":
        return content
    if init == "noise":
        return jax.random.uniform(key, content.shape, jnp.float32, 0.0, 255.0)
    if init == "gaussian":
        return deprocess(0.001 * jax.random.normal(key, content.shape, jnp.float32),
                         preprocessing)
    if init == "style":
        first = _as_style_list(style)[0]
        return jax.image.resize(first, content.shape, "lanczos3")
    raise ValueError(f"init must be an image or one of {INITS}, got {init!r}")


def stylize(
    content,
    style,
    *,
    params,
    config: StyleConfig | None = None,
    content_weight: float = 1.0,
    style_weight: float = 1e3,
    tv_weight: float = 0.0,
    content_layer_weights=None,
    style_layer_weights=None,
    style_blend=None,
    masks=None,
    targets: Targets | None = None,
    init="content",
    key: jax.Array | None = None,
    iterations: int = 1000,
    tol: float = 1e-4,
    patience: int = 10,
    state: OptState | None = None,
    callback: Callable[[OptState, dict[str, np.ndarray]], Any] | None = None,
    save_every: int | None = None,
) -> StylizeResult:
    """Minimize ``alpha * L_c + beta * L_s + gamma * TV`` over the pixels of one image.

    ``content`` and ``style`` are RGB 0-255 (H, W, 3) arrays at the sizes to use (resize first;
    the CLI does). The image keeps the content's size.

    Keeping pixels in range: the default solver is jaxopt's L-BFGS-B, i.e. L-BFGS with the box
    constraint 0 <= pixel <= 255 handled by projection inside the algorithm (Cauchy point,
    projected line search). This is the choice of Gatys et al.'s own code (scipy's L-BFGS-B with
    pixel bounds): the objective is evaluated only at valid images and stays smooth, unlike
    peers that clamp inside the objective (a zero gradient through the clamp and a curvature
    history that no longer matches the function, which is what makes their L-BFGS blow up).
    Adam is projected the same way (step, then clip), which is exact projected gradient descent.
    optax's L-BFGS has no bounds: its iterates are unconstrained and clipped once, on output.

    Defaults and their sources: ``style_weight / content_weight = 1e3`` (alpha/beta = 1e-3,
    Gatys et al. 2015, Fig. 2); ``tv_weight=0`` (Gatys et al. use none); ``init="content"``
    (Gatys et al. 2016, Sec. 4: initialising from the content photo gives results like noise,
    and it converges faster; jcjohnson/neural-style's ``-init image``); ``iterations=1000``
    (neural-style's ``-num_iterations``). Early stopping (``tol``, ``patience``): the run ends
    once the relative decrease of the loss stayed below ``tol`` for ``patience`` consecutive
    iterations; ``tol=0`` disables it. See :class:`StyleConfig` for the structural defaults.

    Args:
        content: (H, W, 3) RGB 0-255.
        style: (H', W', 3) RGB 0-255, or a sequence of style images (blended, or one per mask
            region; see :func:`make_targets`).
        params: VGG-19 variables (:func:`load_vgg19_params` or :func:`random_vgg19_params`).
        config: :class:`StyleConfig`; default layers, pooling and optimizer as documented there.
        style_blend: blend weights of several styles (default equal).
        masks: (R, H, W) region masks in [0, 1], one per style image (guided Grams).
        targets: precomputed :class:`Targets` (e.g. style Grams shared across video frames);
            when given, ``style``, ``style_blend`` and ``masks`` are not used for the loss.
        init: ``"content"``, ``"noise"``, ``"style"``, ``"gaussian"`` or an (H, W, 3) image (see
            :func:`initial_image`); ``key`` seeds the random ones.
        iterations: maximum optimizer iterations (L-BFGS iterations, not evaluations).
        state: an :class:`OptState` from an earlier result to continue from.
        callback: called after each compiled chunk with ``(state, records)``; return True to stop.
        save_every: if given, chunks end on multiples of it (so callbacks can save images).

    Returns:
        :class:`StylizeResult` with the image, loss history and counts.
    """
    config = config or StyleConfig()
    content = jnp.asarray(content, jnp.float32)
    if content.ndim != 3 or content.shape[-1] != 3:
        raise ValueError(f"content: expected one (H, W, 3) RGB image, got shape {content.shape}")
    style = _as_style_list(style)
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    key = jax.random.key(0) if key is None else key
    weights = loss_weights(
        config, content=content_weight, style=style_weight, tv=tv_weight,
        content_layers=content_layer_weights, style_layers=style_layer_weights,
    )
    limits = (jnp.int32(iterations), jnp.float32(tol), jnp.int32(max(patience, 1)))

    start = time.perf_counter()
    if targets is None:
        targets = _targets_jit(params, content, style, config, style_blend=style_blend,
                               masks=masks)
    if state is None:
        first = initial_image(init, content, style, key=key, preprocessing=config.preprocessing)
        warm = not isinstance(init, str)
        state = _init_jit(first, params, targets, weights, config,
                          jnp.float32(WARM_FIRST_STEP if warm else 0.0))
    else:
        state = state._replace(status=jnp.zeros((), jnp.int32))
    steps = _chunk_size(content.shape[0] * content.shape[1], save_every)
    compiled, compile_seconds = compile_cached(
        run_steps, (state, params, targets, weights, limits), config=config, steps=steps)
    state, history, status = drive(compiled, state, (params, targets, weights, limits),
                                   iterations=iterations, start=start,
                                   compile_seconds=compile_seconds, callback=callback)
    return StylizeResult(
        image=np.clip(np.asarray(state.best_image), *_BOUNDS),
        history=history,
        iterations=int(state.iteration),
        evaluations=int(state.evaluations),
        status=status_name(int(status)),
        state=state,
        compile_seconds=compile_seconds,
        targets=targets,
    )
