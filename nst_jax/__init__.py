"""nst_jax: neural style transfer (Gatys et al.) as pure JAX functions and a command line."""

from ._batch import BatchResult, stylize_batch
from ._checkpoint import load_checkpoint, save_checkpoint, state_template
from ._color import luminance_images, match_color, recombine_luminance, rgb_to_yiq, yiq_to_rgb
from ._convert import convert_weights
from ._errors import ImageError, NstError, WeightsError
from ._image import load_image, save_image
from ._losses import (
    content_loss,
    gram_matrix,
    guided_gram,
    style_layer_loss,
    style_loss,
    total_variation,
)
from ._multiscale import MultiscaleResult, pyramid_sizes, stylize_frames, stylize_multiscale
from ._normalize import normalize_vgg19_params, normalize_weights_file
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
from ._presets import PRESETS, Preset, get_preset, preset_config, preset_loss_weights
from ._vgg import (
    CAFFE,
    LAYERS,
    TORCHVISION,
    VGG19,
    Preprocessing,
    deprocess,
    extract_features,
    preprocess,
    random_vgg19_params,
)
from ._weights import (
    download_weights,
    load_preprocessing,
    load_vgg19_params,
    save_vgg19_params,
    weights_info,
)

__version__ = "0.1.0"

__all__ = [
    "CAFFE",
    "LAYERS",
    "PRESETS",
    "TORCHVISION",
    "VGG19",
    "BatchResult",
    "ImageError",
    "LossWeights",
    "MultiscaleResult",
    "NstError",
    "OptState",
    "Preprocessing",
    "Preset",
    "StyleConfig",
    "StylizeResult",
    "Targets",
    "WeightsError",
    "content_loss",
    "convert_weights",
    "deprocess",
    "download_weights",
    "extract_features",
    "get_preset",
    "gram_matrix",
    "guided_gram",
    "load_checkpoint",
    "load_image",
    "load_preprocessing",
    "load_vgg19_params",
    "loss_weights",
    "luminance_images",
    "make_targets",
    "match_color",
    "normalize_vgg19_params",
    "normalize_weights_file",
    "preprocess",
    "preset_config",
    "preset_loss_weights",
    "pyramid_sizes",
    "random_vgg19_params",
    "recombine_luminance",
    "rgb_to_yiq",
    "save_checkpoint",
    "save_image",
    "save_vgg19_params",
    "state_template",
    "style_layer_loss",
    "style_loss",
    "stylization_loss",
    "stylize",
    "stylize_batch",
    "stylize_frames",
    "stylize_multiscale",
    "total_variation",
    "weights_info",
    "yiq_to_rgb",
]
