"""Gatys et al. losses, pure functions of one image's feature maps.

Feature maps are (H, W, C) float arrays (one image; ``jax.vmap`` for many). Every result is a
float32 scalar: inputs of a lower precision (bfloat16 features) are accumulated in float32.
Equations follow Gatys, Ecker & Bethge, "A Neural Algorithm of Artistic Style" (2015) /
"Image Style Transfer Using Convolutional Neural Networks" (CVPR 2016), Eqs. 1-5.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax import lax

_HIGHEST = lax.Precision.HIGHEST


def _as_maps(f: jax.Array, what: str) -> jax.Array:
    f = jnp.asarray(f)
    if f.ndim != 3:
        raise ValueError(f"{what}: expected one (H, W, C) feature map, got shape {f.shape}")
    return f


def gram_matrix(f: jax.Array) -> jax.Array:
    """Gram matrix ``G_ij = sum_k F_ik F_jk`` of a (H, W, N) feature map (Gatys Eq. 3).

    F is the map reshaped to (M, N) with M = H * W positions. Not normalized.

    Returns:
        (N, N) float32, computed at full matmul precision.
    """
    f = _as_maps(f, "gram_matrix")
    flat = f.reshape(-1, f.shape[-1])
    return jnp.matmul(
        flat.T, flat, precision=_HIGHEST, preferred_element_type=jnp.float32
    ).astype(jnp.float32)


def content_loss(x: jax.Array, p: jax.Array) -> jax.Array:
    """``L_c = 1/2 * sum_ij (X_ij - P_ij)^2`` (Gatys Eq. 1).

    Args:
        x: (H, W, C) features of the generated image.
        p: (H, W, C) features of the content photo.
    """
    x = _as_maps(x, "content_loss").astype(jnp.float32)
    p = _as_maps(p, "content_loss").astype(jnp.float32)
    if x.shape != p.shape:
        raise ValueError(f"content_loss: shapes differ, {x.shape} vs {p.shape}")
    return 0.5 * jnp.sum(jnp.square(x - p))


def style_layer_loss(x: jax.Array, a_gram: jax.Array) -> jax.Array:
    """``E_l = 1 / (4 N^2 M^2) * sum_ij (G_ij - A_ij)^2`` (Gatys Eq. 4).

    N is the number of channels and M = H * W the number of positions of the layer. (A
    paraphrase of the paper calls M the "side length" and writes ``G - A`` without its sign; we
    follow Gatys et al.: M = H * W and the difference G - A.)

    Args:
        x: (H, W, N) features of the generated image.
        a_gram: (N, N) Gram matrix of the style image at this layer (its own M may differ).
    """
    x = _as_maps(x, "style_layer_loss")
    a_gram = jnp.asarray(a_gram)
    n = x.shape[-1]
    m = x.shape[0] * x.shape[1]
    if a_gram.shape != (n, n):
        raise ValueError(f"style_layer_loss: Gram shape {a_gram.shape} does not match {n} channels")
    diff = gram_matrix(x) - a_gram.astype(jnp.float32)
    # Normalize before squaring: (G - A) / (N M) keeps float32 far from overflow at large M.
    return 0.25 * jnp.sum(jnp.square(diff / (n * m)))


def style_loss(
    features: Mapping[str, jax.Array],
    style_grams: Mapping[str, jax.Array],
    layer_weights: Mapping[str, jax.Array] | None = None,
) -> jax.Array:
    """``L_s = sum_l w_l E_l`` over the layers of ``style_grams`` (Gatys Eq. 5).

    Args:
        features: layer name -> (H, W, N_l) features of the generated image.
        style_grams: layer name -> (N_l, N_l) Gram matrix of the style image.
        layer_weights: layer name -> w_l (scalars, may be traced); default ``w_l = 1 / L``.
    """
    if not style_grams:
        raise ValueError("style_loss: no style layers")
    if layer_weights is None:
        layer_weights = {name: 1.0 / len(style_grams) for name in style_grams}
    missing = set(style_grams) - set(layer_weights)
    if missing:
        raise ValueError(f"style_loss: no weight for layers {sorted(missing)}")
    missing = set(style_grams) - set(features)
    if missing:
        raise ValueError(f"style_loss: no features for layers {sorted(missing)}")
    return sum(
        jnp.asarray(layer_weights[name], jnp.float32) * style_layer_loss(features[name], gram)
        for name, gram in style_grams.items()
    )


def total_variation(img: jax.Array) -> jax.Array:
    """Squared total variation of one (H, W, C) image:
    ``TV = sum_ijc (x_{i+1,j,c} - x_{ijc})^2 + (x_{i,j+1,c} - x_{ijc})^2``.

    The squared ("beta = 2") form of Mahendran & Vedaldi (2015): smooth, so L-BFGS sees a
    well-defined gradient everywhere. Units are squared pixel values (RGB 0-255).
    """
    img = _as_maps(img, "total_variation").astype(jnp.float32)
    return jnp.sum(jnp.square(img[1:] - img[:-1])) + jnp.sum(jnp.square(img[:, 1:] - img[:, :-1]))
