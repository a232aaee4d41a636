"""nst_jax: neural style transfer (Gatys et al.) as pure JAX functions and a command line."""

from ._batch import BatchResult, stylize_batch
from ._errors import ImageError, NstError, WeightsError
from ._image import load_image, save_image
from ._losses import content_loss, gram_matrix, style_layer_loss, style_loss, total_variation
from ._optimize import (
    LossWeights,
    OptState,
    StyleConfig,
    StylizeResult,
    Targets,
    loss_weights,
    make_targets,
    stylization_loss,
    stylize,
)
from ._vgg import LAYERS, VGG19, deprocess, extract_features, preprocess, random_vgg19_params
from ._weights import download_weights, load_vgg19_params, weights_info

__version__ = "0.1.0"

__all__ = [
    "LAYERS",
    "VGG19",
    "BatchResult",
    "ImageError",
    "LossWeights",
    "NstError",
    "OptState",
    "StyleConfig",
    "StylizeResult",
    "Targets",
    "WeightsError",
    "content_loss",
    "deprocess",
    "download_weights",
    "extract_features",
    "gram_matrix",
    "load_image",
    "load_vgg19_params",
    "loss_weights",
    "make_targets",
    "preprocess",
    "random_vgg19_params",
    "save_image",
    "style_layer_loss",
    "style_loss",
    "stylization_loss",
    "stylize",
    "stylize_batch",
    "total_variation",
    "weights_info",
]
