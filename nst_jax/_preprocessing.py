"""The network's input convention: how RGB 0-255 pixels become VGG-19 input, and back.

Outside the network every image is one (H, W, 3) float32 RGB array with values 0-255. Each set of
weights expects its own input convention, recorded with the weights (:class:`Preprocessing`):
the canonical Keras/Caffe VGG-19 wants BGR, 0-255, minus the ImageNet mean (:data:`CAFFE`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How RGB 0-255 pixels become network input: ``x = (order(rgb) * scale / 255 - mean) / std``.

    Attributes:
        channel_order: ``"BGR"`` (Caffe-trained weights) or ``"RGB"`` (torchvision, MatConvNet).
        input_scale: the pixel range the network was trained on, 255.0 or 1.0.
        mean, std: per input channel, in ``channel_order`` and in ``input_scale`` units.

    Hashable, so it is part of the static :class:`~nst_jax.StyleConfig`. Weights files written
    by this project record it as HDF5 attributes; the Keras release has none and means
    :data:`CAFFE`.
    """

    channel_order: str = "BGR"
    input_scale: float = 255.0
    mean: tuple[float, float, float] = (103.939, 116.779, 123.68)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if not self.input_scale > 0 or len(self.mean) != 3 or len(self.std) != 3 or not all(
                s > 0 for s in self.std):
            raise ValueError(f"invalid preprocessing {self}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "input_scale", float(self.input_scale))

    def as_dict(self) -> dict[str, Any]:
        return {"channel_order": self.channel_order, "input_scale": self.input_scale,
                "mean": list(self.mean), "std": list(self.std)}


#: The canonical Keras/Caffe VGG-19 (Keras ``preprocess_input`` mode "caffe").
CAFFE = Preprocessing()
#: torchvision's ImageNet models: RGB 0-1, mean/std normalized.
TORCHVISION = Preprocessing("RGB", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def preprocess(rgb: jax.Array, preprocessing: Preprocessing = CAFFE) -> jax.Array:
    """RGB float 0-255 (..., 3) -> network input.

    ``x = (order(rgb) * s / 255 - mean) / std``; with the default :data:`CAFFE` convention this
    is ``rgb[..., ::-1] - [103.939, 116.779, 123.68]`` (Keras ``preprocess_input``, "caffe").
    """
    rgb = jnp.asarray(rgb, jnp.float32)
    if preprocessing.channel_order == "BGR":
        rgb = rgb[..., ::-1]
    if preprocessing.input_scale != 255.0:
        rgb = rgb * np.float32(preprocessing.input_scale / 255.0)
    x = rgb - np.asarray(preprocessing.mean, np.float32)
    if preprocessing.std != (1.0, 1.0, 1.0):
        x = x / np.asarray(preprocessing.std, np.float32)
    return x


def deprocess(x: jax.Array, preprocessing: Preprocessing = CAFFE) -> jax.Array:
    """Inverse of :func:`preprocess`: network input (..., 3) -> RGB float 0-255 (not clipped)."""
    x = jnp.asarray(x, jnp.float32)
    x = x * np.asarray(preprocessing.std, np.float32) + np.asarray(preprocessing.mean, np.float32)
    x = x * np.float32(255.0 / preprocessing.input_scale)
    return x[..., ::-1] if preprocessing.channel_order == "BGR" else x
