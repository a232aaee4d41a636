"""The Gatys objective of one image: what is compared with what, and the weighted total.

``L = alpha * sum_c v_c L_c + beta * sum_l w_l E_l + gamma * TV`` (Gatys, Ecker & Bethge,
CVPR 2016, Eqs. 1-7, plus an optional total-variation term). Pixel convention: the image is
(H, W, 3) float32 RGB 0-255; it is preprocessed for the network inside the objective. Everything
structural (layers, pooling, loss conventions, input convention) lives in the frozen, hashable
:class:`StyleConfig` and is static under ``jit``; every loss weight is a traced array in
:class:`LossWeights`, so changing weights (or vmapping over them) never recompiles. This module
knows nothing of how the objective is minimized (``nst_jax.solvers``, ``nst_jax.run``).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._losses import (
    NORMS,
    content_loss,
    guided_style_error,
    style_error,
    style_target,
    total_variation,
)
from ._model import (
    LAYERS,
    canonical_layer,
    extract_features,
    unpack_weights,
    with_backward_kernels,
)
from ._preprocessing import CAFFE, Preprocessing, preprocess

DEFAULT_CONTENT_LAYERS = ("conv4_2",)
DEFAULT_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
TERMS = ("content", "style", "tv")
#: Default loss conventions: every term is a squared relative error, so each style layer is
#: weighed against its own scale (docs/design.md, "The default objective").
DEFAULT_NORM = "relative"
#: Default alpha, beta and gamma, chosen on the pretrained VGG-19 at 512 px
#: (docs/benchmarks/quality.md). Gamma is the value for an image of ``REFERENCE_PIXELS``
#: pixels (:func:`tv_weight_for`); alpha and beta weigh dimensionless relative errors.
DEFAULT_CONTENT_WEIGHT = 1.0
DEFAULT_STYLE_WEIGHT = 10.0
DEFAULT_TV_WEIGHT = 1e-9
REFERENCE_PIXELS = 128 * 128
#: StyleConfig fields that configured the optimizer before ``nst_jax.solvers`` existed.
SOLVER_FIELDS = ("optimizer", "history_size", "linesearch", "learning_rate", "subspace",
                 "pyramid_levels")


@dataclasses.dataclass(frozen=True)
class StyleConfig:
    """Structural settings of the objective; hashable, so it can be a ``jit`` static argument.

    Defaults and their sources:

    * ``content_layers=("conv4_2",)``, ``style_layers=conv1_1 ... conv5_1``: Gatys, Ecker &
      Bethge, CVPR 2016, Sec. 3.
    * ``pooling="max"``: the trained network; Gatys et al. 2016 (Sec. 2) prefer ``"avg"`` with
      their normalized VGG.
    * ``layer_output="relu"``: layers are the ReLU outputs (Caffe's ``reluB_I``, Gatys);
      ``"conv"`` taps the convolutions before the ReLU (the PyTorch tutorial).
    * ``content_norm="relative"``, ``style_norm="relative"``: each term is a squared relative
      error, ``|X - P|^2 / |P|^2`` and per layer ``|G/M - A_hat|^2 / |A_hat|^2``, so every
      style layer counts against its own scale (on the pretrained VGG-19 the Gatys constants
      1/(4 N_l^2) let conv4_1 outweigh conv1_1 by ~1e5 and the painting's colours never
      arrive). ``"gatys"`` are Gatys Eqs. 1 and 4; ``"mean"`` the mean-squared-error
      conventions of neural-style and the PyTorch tutorial (see
      :func:`~nst_jax.content_loss`, :func:`~nst_jax.style_error`).
    * ``tv_form="squared"``; ``"neural-style"`` is that implementation's TV (see
      :func:`~nst_jax.total_variation`).
    * ``preprocessing=None``: the input convention of the weights (recorded with them; the
      Keras file means :data:`~nst_jax.CAFFE`); set it only to override the weights' own.
    * ``dtype="float32"``; ``"bfloat16"`` runs the VGG convolutions in bfloat16 (Grams and
      losses still accumulate in float32): less activation memory where the backend has
      bfloat16 convolutions (GPU, TPU).
    * ``remat=False``; True recomputes each VGG block in the backward pass instead of storing
      its activations (less memory, about one more forward pass of compute).

    The optimizer is not part of the objective: pass ``solver=nst_jax.solvers.SolverConfig(...)``
    to :func:`~nst_jax.stylize`. The fields ``optimizer``, ``history_size``, ``linesearch``,
    ``learning_rate``, ``subspace`` and ``pyramid_levels`` are deprecated aliases kept for one
    release: set, they warn and :func:`~nst_jax.stylize` builds its solver from them.
    """

    content_layers: tuple[str, ...] = DEFAULT_CONTENT_LAYERS
    style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
    pooling: str = "max"
    dtype: str = "float32"
    remat: bool = False
    layer_output: str = "relu"
    content_norm: str = DEFAULT_NORM
    style_norm: str = DEFAULT_NORM
    tv_form: str = "squared"
    preprocessing: Preprocessing | None = None
    optimizer: str | None = None
    history_size: int | None = None
    linesearch: str | None = None
    learning_rate: float | None = None
    subspace: str | None = None
    pyramid_levels: int | None = None

    def __post_init__(self):
        if not self.style_layers:
            raise ValueError("at least one style layer is required")
        for name in (*self.content_layers, *self.style_layers):
            canonical_layer(name)
        if self.pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', got {self.pooling!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.layer_output not in ("relu", "conv"):
            raise ValueError(f"layer_output must be 'relu' or 'conv', got {self.layer_output!r}")
        for name in ("content_norm", "style_norm"):
            if getattr(self, name) not in NORMS:
                raise ValueError(f"{name} must be one of {NORMS}, got {getattr(self, name)!r}")
        if self.tv_form not in ("squared", "neural-style"):
            raise ValueError(f"tv_form must be 'squared' or 'neural-style', got {self.tv_form!r}")
        if self.preprocessing is not None and not isinstance(self.preprocessing, Preprocessing):
            raise TypeError("preprocessing must be a nst_jax.Preprocessing or None")
        legacy = [name for name in SOLVER_FIELDS if getattr(self, name) is not None]
        if legacy:
            warnings.warn(f"StyleConfig({', '.join(legacy)}=...) is deprecated: pass "
                          "solver=nst_jax.solvers.SolverConfig(...) to stylize",
                          DeprecationWarning, stacklevel=3)

    def features(self, params, image, layers):
        """VGG features of one RGB 0-255 image with this config's preprocessing (CAFFE when
        None), pooling, layer outputs, dtype and remat."""
        return extract_features(params, preprocess(image, self.preprocessing or CAFFE), layers,
                                pooling=self.pooling, dtype=jnp.dtype(self.dtype),
                                remat=self.remat, outputs=self.layer_output)

    @property
    def feature_layers(self) -> tuple[str, ...]:
        """Every layer the objective reads, in network order, canonical names."""
        wanted = {canonical_layer(n) for n in (*self.content_layers, *self.style_layers)}
        return tuple(name for name in LAYERS if name in wanted)

    def legacy_solver_settings(self) -> dict:
        """The deprecated optimizer fields that are set, as ``SolverConfig`` keyword arguments."""
        names = {"optimizer": "name"}
        return {names.get(name, name): getattr(self, name) for name in SOLVER_FIELDS
                if getattr(self, name) is not None}


def content_weight_for(shape: tuple[int, ...], per_reference: float = DEFAULT_CONTENT_WEIGHT,
                       *, norm: str = DEFAULT_NORM) -> float:
    """The default alpha for an (H, W, ...) image and a content ``norm``.

    ``"relative"`` and ``"mean"`` content losses do not grow with the image: alpha =
    ``per_reference``. The ``"gatys"`` loss (Eq. 1) sums over the feature map's positions
    while each style layer's loss is per position, so with one fixed alpha a larger image
    gets more content and less style; for it alpha = ``per_reference * REFERENCE_PIXELS /
    (H W)`` keeps the balance the same at every size. A weight the caller gives is used as is.
    """
    if norm != "gatys":
        return per_reference
    return per_reference * REFERENCE_PIXELS / (shape[0] * shape[1])


def tv_weight_for(shape: tuple[int, ...], per_reference: float = DEFAULT_TV_WEIGHT) -> float:
    """The default gamma for an (H, W, ...) image, ``per_reference * REFERENCE_PIXELS / (H W)``:
    total variation is a sum over pixels, like the content loss (see :func:`content_weight_for`).
    The default smooths the pixel-scale colour speckle of Gatys outputs on the pretrained
    VGG-19 without blurring the strokes (docs/benchmarks/quality.md); it is meant for the
    default, relative, content and style losses."""
    return per_reference * REFERENCE_PIXELS / (shape[0] * shape[1])


def default_weights(config: StyleConfig, shape: tuple[int, ...], *, content=None, tv=None
                    ) -> tuple[float, float]:
    """``(alpha, gamma)`` of a run on an (H, W, ...) image: the given values, or for None the
    defaults :func:`content_weight_for` (for ``config.content_norm``) and
    :func:`tv_weight_for`. The one place :func:`~nst_jax.stylize`, batches and sweeps take
    them from."""
    return (content_weight_for(shape, norm=config.content_norm) if content is None else content,
            tv_weight_for(shape) if tv is None else tv)


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
    content: float = DEFAULT_CONTENT_WEIGHT,
    style: float = DEFAULT_STYLE_WEIGHT,
    tv: float = 0.0,
    content_layers=None,
    style_layers=None,
) -> LossWeights:
    """Build :class:`LossWeights`; per-layer weights default to ``1 / number of layers``.

    Defaults ``DEFAULT_CONTENT_WEIGHT`` and ``DEFAULT_STYLE_WEIGHT``, ``tv=0`` (the image-size
    aware defaults of :func:`~nst_jax.stylize` are :func:`content_weight_for` and
    :func:`tv_weight_for`).
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
        per_style.append([style_target(features[name]) for name in config.style_layers])
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
            error = style_error(f, targets.style_grams[i], norm=config.style_norm)
        else:
            error = guided_style_error(f, targets.style_grams[i], targets.style_masks[i],
                                       norm=config.style_norm)
        style = style + weights.style_layers[i] * error
    tv = total_variation(image, form=config.tv_form)
    total = weights.content * content + weights.style * style + weights.tv * tv
    return total, {"content": content, "style": style, "tv": tv}


def with_weights(config: StyleConfig, weights) -> tuple[StyleConfig, object]:
    """``(config, params)`` for a run on ``weights`` (a :class:`~nst_jax.VGGWeights` or a
    plain params pytree): when ``config.preprocessing`` is None it becomes the convention the
    weights record, so a caller cannot forget it. The params carry the input-gradient kernels
    of the layers the objective reads (:func:`~nst_jax._model.with_backward_kernels`): a run
    computes them once instead of on every evaluation."""
    params, recorded = unpack_weights(weights)
    if config.preprocessing is None and recorded is not None:
        config = copy.copy(config)  # not dataclasses.replace: no second deprecation warning
        object.__setattr__(config, "preprocessing", recorded)
    return config, with_backward_kernels(params, config.feature_layers)
