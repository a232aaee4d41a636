"""Mean-activation normalization of VGG-19 (Gatys, Ecker & Bethge, CVPR 2016, Sec. 2).

"We normalized the network by scaling the weights such that the mean activation of each
convolutional filter over images and positions is equal to one." Rescaling a ReLU layer's output
channel c by 1/mu_c (its kernel[..., c] and bias[c] divided by mu_c) and compensating in the next
layer (its kernel[:, :, c, :] multiplied by mu_c) leaves the rest of the network unchanged,
because ReLU and max / average pooling commute with a positive per-channel scale. Done for every
layer, each layer's ReLU output becomes the original's divided by its own mu:

    F'_l[..., c] = F_l[..., c] / mu_l[c],   mu_l[c] = mean over images and positions of F_l[..., c]

Only the relative weight of the layers in the style loss changes (their Gram matrices scale by
1/(mu_i mu_j)), which is what the paper's loss weights were tuned for.

Images are RGB float 0-255, (H, W, 3), of any (possibly different) sizes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import NstError
from .._files import check_output
from .._model import CONV_SPECS, KERAS_LAYERS, LAYERS, extract_features, min_image_side
from .._preprocessing import CAFFE, Preprocessing, preprocess
from ..images import load_image
from ._hdf5 import load_preprocessing, load_vgg19_params, save_vgg19_params


@functools.partial(jax.jit, static_argnames=("pooling",))
def _channel_sums(params, x, *, pooling: str):
    """Per-channel sums over positions of every layer's ReLU output for one preprocessed image
    (H, W, 3): {name: (C,)}.

    Jitted once at module level, so each image shape compiles once per process (preprocessing
    happens outside, so it does not multiply the compiles); reduced on the device so that only
    (C,) vectors come back.
    """
    features = extract_features(params, x, LAYERS, pooling=pooling)
    return {name: jnp.sum(f, axis=(0, 1)) for name, f in features.items()}


def mean_activations(
    params: Any,
    images: Sequence[Any],
    *,
    pooling: str = "max",
    preprocessing: Preprocessing = CAFFE,
) -> dict[str, np.ndarray]:
    """Mean ReLU activation of every channel of every layer, over all images and positions.

    ``mu_l[c] = sum_images sum_positions F_l[..., c] / (total number of positions at layer l)``:
    a larger image counts for more, as in the pooled mean over "images and positions".

    Args:
        params: VGG-19 variables pytree.
        images: RGB 0-255 (H, W, 3) arrays, each at least 16 px on both sides.
        pooling: ``"max"`` or ``"avg"``, as the network will be used.
        preprocessing: the input convention of ``params``.

    Returns:
        {``convB_I``: (C,) float64 means}, in network order.
    """
    images = list(images)
    if not images:
        raise ValueError("mean_activations: no images given")
    if pooling not in ("max", "avg"):
        raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")
    sums = {name: 0.0 for name in LAYERS}
    counts = dict.fromkeys(LAYERS, 0)
    smallest = min_image_side(LAYERS)
    for index, image in enumerate(images):
        rgb = jnp.asarray(image, jnp.float32)
        if rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise ValueError(f"image {index}: expected one (H, W, 3) image, got shape {rgb.shape}")
        if min(rgb.shape[:2]) < smallest:
            raise ValueError(
                f"image {index}: {rgb.shape[0]}x{rgb.shape[1]} px is too small; every layer "
                f"needs at least {smallest}x{smallest}"
            )
        image_sums = _channel_sums(params, preprocess(rgb, preprocessing), pooling=pooling)
        for name, (block, _, _) in zip(LAYERS, CONV_SPECS):
            # Positions in block B: each side floored through B - 1 2x2/2 poolings, as in VGG19.
            height, width = (side // 2 ** (block - 1) for side in rgb.shape[:2])
            sums[name] = sums[name] + np.asarray(image_sums[name], np.float64)
            counts[name] += height * width
    return {name: sums[name] / counts[name] for name in LAYERS}


def normalize_vgg19_params(
    params: Any,
    images: Sequence[Any],
    *,
    pooling: str = "max",
    preprocessing: Preprocessing = CAFFE,
) -> tuple[dict[str, Any], dict[str, jax.Array]]:
    """Scale VGG-19 weights so that every channel's mean ReLU activation over ``images`` is 1.

    For layer l with per-channel means mu_l (a dead channel, mu = 0, keeps scale 1):
    ``kernel'_l = kernel_l * s_{l-1}[c_in] / s_l[c_out]``, ``bias'_l = bias_l / s_l``, with
    ``s_0 = 1`` for the RGB input. The new network's layer-l features are ``F_l / s_l``.

    The sequential procedure (measure layer l in the network whose earlier layers are already
    normalized, rescale it, compensate in layer l + 1) measures exactly the original F_l at every
    step, since the compensation restores layer l's input; so one pass of the original network
    gives every mu.

    Args:
        params: ``{"params": {"block1_conv1": {"kernel", "bias"}, ...}}``.
        images: RGB 0-255 (H, W, 3) arrays (any sizes, each at least 16 px per side).
        pooling: ``"max"`` or ``"avg"``: the pooling the normalized network will be used with
            (the means of layers after the first pooling depend on it).
        preprocessing: the input convention of ``params``.

    Returns:
        ``(new_params, scales)``: the same pytree structure with float32 leaves, and
        {``convB_I``: (C,) float32 scale s_l used} (mu_l, or 1 for dead channels).
    """
    means = mean_activations(params, images, pooling=pooling, preprocessing=preprocessing)
    return rescale_vgg19_params(params, means)


def rescale_vgg19_params(
    params: Any, means: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, jax.Array]]:
    """Divide every layer's output channels by the given means, compensating in the next layer.

    ``kernel'_l = kernel_l * s_{l-1}[c_in] / s_l[c_out]``, ``bias'_l = bias_l / s_l``, with
    ``s_l = mu_l`` where mu_l > 0 and 1 elsewhere (dead channels), and ``s_0 = 1`` for the RGB
    input. Computed in float64, returned as float32.

    Args:
        params: VGG-19 variables pytree.
        means: {``convB_I``: (C,)} for all 16 layers, e.g. from :func:`mean_activations`.

    Returns:
        ``(new_params, scales)`` as :func:`normalize_vgg19_params`.

    Raises:
        ValueError: a rescaled weight is not finite in float32 (a channel with a mean so close
            to 0 that dividing by it overflows).
    """
    layers = params["params"]
    new_layers = dict(layers)
    scales = {}
    in_scale = np.ones(3, np.float64)
    for name, keras_name in zip(LAYERS, KERAS_LAYERS):
        mean = np.asarray(means[name], np.float64)
        out_scale = np.where(mean > 0, mean, 1.0)
        kernel = np.asarray(layers[keras_name]["kernel"], np.float64)
        bias = np.asarray(layers[keras_name]["bias"], np.float64)
        with np.errstate(over="ignore"):  # an overflow is reported just below, by layer
            new_kernel = (kernel * in_scale[:, None] / out_scale).astype(np.float32)
            new_bias = (bias / out_scale).astype(np.float32)
        if not (np.isfinite(new_kernel).all() and np.isfinite(new_bias).all()):
            raise ValueError(
                f"{name}: rescaled weights overflow float32 (smallest channel mean "
                f"{mean[mean > 0].min():.3g}); normalize with more or larger images"
            )
        new_layers[keras_name] = {"kernel": jnp.asarray(new_kernel), "bias": jnp.asarray(new_bias)}
        scales[name] = jnp.asarray(out_scale, jnp.float32)
        in_scale = out_scale
    return {**params, "params": new_layers}, scales


def normalize_weights_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    image_paths: Sequence[str | os.PathLike],
    *,
    size: int = 256,
    pooling: str = "max",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a mean-activation-normalized copy of a VGG-19 weights file.

    Loads ``src`` and its preprocessing, loads each image with its longer side resized to
    ``size``, normalizes (:func:`normalize_vgg19_params`) and writes ``dst`` atomically in the
    same Keras layout with the same preprocessing, plus root attributes ``normalized =
    "mean-activation"``, ``normalization_images = "<n> images at <size> px"`` ("1 image ...")
    and ``normalization_pooling``.

    Returns:
        summary ``{"src", "dst", "images", "size", "pooling", "layers": {convB_I: {"min",
        "max", "dead"}}}``: per layer the smallest and largest mu of the live channels and the
        number of dead ones.

    Raises:
        NstError: ``dst`` is ``src`` or one of the images (even with ``overwrite``), exists
            (and not ``overwrite``), or cannot be written (:func:`check_output`); no images, an
            unknown ``pooling``, a ``size`` too small for VGG-19 (all before any loading).
        ImageError: a missing or unreadable image.
        WeightsError: a bad ``src``, or ``dst`` cannot be written.
    """
    src, dst = Path(src), Path(dst)
    image_paths = [Path(p) for p in image_paths]
    smallest = min_image_side(LAYERS)
    # Every check a user can fail comes before loading 80 MB and running the network.
    check_output(dst, overwrite=overwrite, error=NstError, sources=(src, *image_paths),
                 what="weights file")
    if pooling not in ("max", "avg"):
        raise NstError(f"pooling must be 'max' or 'avg', got {pooling!r}")
    if not image_paths:
        raise NstError("no images to normalize with; pass one or more image files")
    if size < smallest:
        raise NstError(f"size {size} is too small: VGG-19 needs images of at least {smallest} px")
    images = [load_image(path, max_side=size) for path in image_paths]
    for path, image in zip(image_paths, images):
        if min(image.shape[:2]) < smallest:
            raise NstError(
                f"{path}: {image.shape[1]}x{image.shape[0]} px at size {size}; its shorter side "
                f"must be at least {smallest} px (use a larger --size or a less elongated image)"
            )
    params = load_vgg19_params(src)
    preprocessing = load_preprocessing(src)
    means = mean_activations(params, images, pooling=pooling, preprocessing=preprocessing)
    try:
        new_params, _ = rescale_vgg19_params(params, means)
    except ValueError as err:
        raise NstError(f"{src}: {err}") from None
    attrs = {
        "normalized": "mean-activation",
        "normalization_images": f"{len(images)} image{'s' * (len(images) != 1)} at {size} px",
        "normalization_pooling": pooling,
    }
    # save_vgg19_params reports its own write errors (WeightsError naming the file).
    save_vgg19_params(dst, new_params, preprocessing=preprocessing, attrs=attrs)
    layers = {}
    for name, mean in means.items():
        live = mean[mean > 0]
        layers[name] = {
            "min": float(live.min()) if live.size else None,
            "max": float(live.max()) if live.size else None,
            "dead": int(mean.size - live.size),
        }
    return {"src": str(src), "dst": str(dst), "images": len(images), "size": size,
            "pooling": pooling, "layers": layers}
