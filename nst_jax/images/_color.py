"""Colour preservation for style transfer (Gatys, Bethge, Hertzmann & Shechtman, "Preserving
Color in Neural Artistic Style Transfer", arXiv:1606.05897; Gatys et al., "Controlling Perceptual
Factors in Neural Style Transfer", CVPR 2017, Sec. 5).

Two ways to keep the content photo's colours:

* Luminance-only transfer: stylize the grey luminance images (:func:`luminance_images`), then put
  the result's luminance under the content's colour channels (:func:`recombine_luminance`).
* Colour histogram matching: recolour the style image so that its pixel mean and covariance equal
  the content's (:func:`match_color`), then stylize as usual.

Image convention: one image, (H, W, 3), float32, RGB, 0-255. Every function is pure and
jittable (``method`` of :func:`match_color` is static).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_HIGHEST = lax.Precision.HIGHEST

#: NTSC YIQ (FCC 1953): rows give Y, I, Q from R, G, B. Each of the I and Q rows sums to zero, so a
#: grey pixel (R = G = B = v) has Y = v and I = Q = 0.
RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.5959, -0.2746, -0.3213], [0.2115, -0.5227, 0.3112]], np.float64
)
#: The exact inverse of :data:`RGB_TO_YIQ` (computed in float64, not the rounded textbook table),
#: so that ``yiq_to_rgb(rgb_to_yiq(x)) == x`` up to float32 rounding.
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)

COLOR_METHODS = ("cholesky", "eigen")


def _as_image(x: jax.Array, what: str) -> jax.Array:
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"{what}: expected one (H, W, 3) image, got shape {x.shape}")
    return x


def _apply_matrix(x: jax.Array, matrix: np.ndarray) -> jax.Array:
    """``out[..., i] = sum_j matrix[i, j] x[..., j]`` at full float32 precision."""
    return jnp.einsum("...j,ij->...i", x, jnp.asarray(matrix, jnp.float32), precision=_HIGHEST)


def rgb_to_yiq(rgb: jax.Array) -> jax.Array:
    """RGB (H, W, 3), 0-255 -> YIQ (H, W, 3): ``[Y, I, Q] = M [R, G, B]`` (:data:`RGB_TO_YIQ`).

    Y is in 0-255; I and Q are signed, in the same units.
    """
    return _apply_matrix(_as_image(rgb, "rgb_to_yiq"), RGB_TO_YIQ)


def yiq_to_rgb(yiq: jax.Array) -> jax.Array:
    """YIQ (H, W, 3) -> RGB (H, W, 3), the exact inverse of :func:`rgb_to_yiq` (not clipped)."""
    return _apply_matrix(_as_image(yiq, "yiq_to_rgb"), YIQ_TO_RGB)


def _grey(luminance: jax.Array) -> jax.Array:
    """(H, W) luminance -> (H, W, 3) grey RGB image with that luminance (R = G = B = Y)."""
    return jnp.repeat(luminance[..., None], 3, axis=-1)


def luminance_images(content: jax.Array, style: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The grey luminance images that luminance-only transfer stylizes (Gatys et al. 2017, Sec. 5).

    Each image's Y channel is replicated into R, G and B. The style luminance is first matched to
    the content's mean and standard deviation, "to compensate for the difference in the histogram
    of the luminance channels": ``L_s' = (sigma_c / sigma_s) (L_s - mu_s) + mu_c``. A flat style
    image (sigma_s = 0) becomes a flat grey at mu_c.

    Args:
        content: (H, W, 3) RGB 0-255 content photo.
        style: (H', W', 3) RGB 0-255 style image (any size).

    Returns:
        (content_lum (H, W, 3), style_lum (H', W', 3)), float32 grey RGB images. The content's is
        in 0-255; the style's is not clipped (so its statistics match exactly) and may leave
        0-255 by a little, which the network does not mind.
    """
    content_y = rgb_to_yiq(_as_image(content, "luminance_images content"))[..., 0]
    style_y = rgb_to_yiq(_as_image(style, "luminance_images style"))[..., 0]
    # 1e-6 of a grey level only keeps a flat style image from dividing 0 by 0.
    scale = jnp.std(content_y) / jnp.maximum(jnp.std(style_y), 1e-6)
    style_y = (style_y - jnp.mean(style_y)) * scale + jnp.mean(content_y)
    return _grey(content_y), _grey(style_y)


def recombine_luminance(output: jax.Array, content: jax.Array) -> jax.Array:
    """The stylized luminance under the content's colours: ``YIQ^-1(Y_out, I_c, Q_c)``.

    Args:
        output: (H, W, 3) RGB 0-255 result of stylizing the luminance images (grey or nearly
            so; its luminance is its YIQ Y).
        content: (H, W, 3) RGB 0-255 content photo, the same size.

    Returns:
        (H, W, 3) float32 RGB, clipped to 0-255.
    """
    output = _as_image(output, "recombine_luminance output")
    content = _as_image(content, "recombine_luminance content")
    if output.shape != content.shape:
        raise ValueError(
            f"recombine_luminance: output {output.shape} and content {content.shape} differ in size"
        )
    yiq = rgb_to_yiq(content).at[..., 0].set(rgb_to_yiq(output)[..., 0])
    return jnp.clip(yiq_to_rgb(yiq), 0.0, 255.0)


def _mean_cov(rgb: jax.Array, ridge: float) -> tuple[jax.Array, jax.Array]:
    """Pixel mean (3,) and covariance (3, 3) ``1/N sum_k (x_k - mu)(x_k - mu)^T + ridge I``."""
    pixels = rgb.reshape(-1, 3)
    mean = jnp.mean(pixels, axis=0)
    centred = pixels - mean
    cov = jnp.matmul(centred.T, centred, precision=_HIGHEST) / pixels.shape[0]
    return mean, cov + ridge * jnp.eye(3, dtype=jnp.float32)


def _sqrt_and_inv_sqrt(cov: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Symmetric square root ``Sigma^1/2`` and its inverse, from ``Sigma = V diag(w) V^T``."""
    w, v = jnp.linalg.eigh(cov)
    w = jnp.maximum(w, 0.0)  # rounding can make a ridge-sized eigenvalue a hair negative
    root = jnp.sqrt(w)
    sqrt = jnp.matmul(v * root, v.T, precision=_HIGHEST)
    inv_sqrt = jnp.matmul(v / jnp.maximum(root, 1e-12), v.T, precision=_HIGHEST)
    return sqrt, inv_sqrt


def color_matrix(
    style: jax.Array, content: jax.Array, *, method: str = "cholesky", ridge: float = 1e-2
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The pieces of :func:`match_color`'s map ``x' = A (x - mu_s) + mu_c``: ``(A, mu_s, mu_c)``.

    ``A = L_c L_s^-1`` (``"cholesky"``, ``Sigma = L L^T``) or ``A = Sigma_c^1/2 Sigma_s^-1/2``
    (``"eigen"``, the symmetric square roots of image analogies). Either gives
    ``A Sigma_s A^T = Sigma_c``. Both covariances get ``ridge * I`` added (in squared grey
    levels) so that a flat or single-hue image has an invertible covariance.

    Returns:
        A (3, 3), mu_s (3,), mu_c (3,), float32.
    """
    if method not in COLOR_METHODS:
        raise ValueError(f"method must be one of {COLOR_METHODS}, got {method!r}")
    mean_s, cov_s = _mean_cov(_as_image(style, "match_color style"), ridge)
    mean_c, cov_c = _mean_cov(_as_image(content, "match_color content"), ridge)
    if method == "cholesky":
        chol_s = jnp.linalg.cholesky(cov_s)
        chol_c = jnp.linalg.cholesky(cov_c)
        # A = L_c L_s^-1, i.e. A^T = L_s^-T L_c^T: one triangular solve, no explicit inverse.
        matrix = jax.scipy.linalg.solve_triangular(chol_s, chol_c.T, trans="T", lower=True).T
    else:
        sqrt_c, _ = _sqrt_and_inv_sqrt(cov_c)
        _, inv_sqrt_s = _sqrt_and_inv_sqrt(cov_s)
        matrix = jnp.matmul(sqrt_c, inv_sqrt_s, precision=_HIGHEST)
    return matrix, mean_s, mean_c


def match_color(
    style: jax.Array, content: jax.Array, *, method: str = "cholesky", ridge: float = 1e-2
) -> jax.Array:
    """Colour histogram matching (Gatys et al. 2016, arXiv:1606.05897, Sec. 2.1): recolour the
    style image so that its pixel mean and covariance equal the content's.

    Every pixel gets the same affine map ``x' = A (x - mu_s) + mu_c`` (see
    :func:`color_matrix` for ``A``); the result is clipped to 0-255, so the match is exact only
    where nothing clips.

    Args:
        style: (H, W, 3) RGB 0-255 style image.
        content: (H', W', 3) RGB 0-255 content photo (any size).
        method: ``"cholesky"`` or ``"eigen"``.
        ridge: added to both covariances' diagonals (squared grey levels), for flat images.

    Returns:
        (H, W, 3) float32 RGB 0-255, the recoloured style image.
    """
    matrix, mean_s, mean_c = color_matrix(style, content, method=method, ridge=ridge)
    # Centre before mapping: for a nearly flat style A is huge, and A x - A mu_s would cancel.
    centred = _as_image(style, "match_color style") - mean_s
    return jnp.clip(_apply_matrix(centred, matrix) + mean_c, 0.0, 255.0)
