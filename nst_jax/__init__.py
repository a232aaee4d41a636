"""nst_jax: neural style transfer (Gatys et al.) as pure JAX functions and a command line.

The top level holds the small core: the VGG-19 feature extractor and its weights, the losses,
the objective and :func:`stylize`. Everything else lives in a namespace named by its step of
the data flow: ``nst_jax.images``, ``nst_jax.weights``, ``nst_jax.solvers``, ``nst_jax.run``
(batches and sweeps, multi-scale, frames, checkpoints), ``nst_jax.presets``, ``nst_jax.quality``.

Names are imported on first use (PEP 562), so ``import nst_jax`` and ``nst-jax --help`` do not
pay for importing JAX.
"""

# Helpers under private names: the module's public names are exactly __all__ (and "cli").
import importlib as _importlib
import warnings as _warnings
from typing import TYPE_CHECKING as _TYPE_CHECKING

from ._version import __version__

#: public name -> the module that defines it
_CORE = {
    **dict.fromkeys(("ImageError", "NstError", "WeightsError"), "._errors"),
    **dict.fromkeys(("content_loss", "gram_matrix", "guided_gram", "style_error",
                     "style_layer_loss", "style_loss", "style_target", "total_variation"),
                    "._losses"),
    **dict.fromkeys(("LAYERS", "VGG19", "VGGWeights", "extract_features",
                     "random_vgg19_params", "with_backward_kernels"), "._model"),
    **dict.fromkeys(("LossWeights", "StyleConfig", "Targets", "content_weight_for",
                     "loss_weights", "make_targets", "stylization_loss", "tv_weight_for"),
                    "._objective"),
    **dict.fromkeys(("CAFFE", "TORCHVISION", "Preprocessing", "deprocess", "preprocess"),
                    "._preprocessing"),
    **dict.fromkeys(("load_image", "save_image"), ".images"),
    **dict.fromkeys(("OptState", "StylizeResult", "stylize"), ".run"),
    **dict.fromkeys(("load_vgg19_params", "pretrained_vgg19"), ".weights"),
}
_NAMESPACES = ("images", "presets", "quality", "run", "solvers", "weights")

#: Names that lived at the top level before 0.2: kept one release, with a warning.
_MOVED = {
    **dict.fromkeys(("BatchResult", "MultiscaleResult", "load_checkpoint", "pyramid_sizes",
                     "save_checkpoint", "state_template", "stylize_batch", "stylize_frames",
                     "stylize_multiscale"), "run"),
    **dict.fromkeys(("luminance_images", "match_color", "recombine_luminance", "rgb_to_yiq",
                     "yiq_to_rgb"), "images"),
    **dict.fromkeys(("convert_weights", "download_weights", "load_preprocessing",
                     "normalize_vgg19_params", "normalize_weights_file", "save_vgg19_params",
                     "weights_info"), "weights"),
    **dict.fromkeys(("PRESETS", "Preset", "get_preset", "preset_config",
                     "preset_loss_weights"), "presets"),
}

__all__ = sorted([*_CORE, *_NAMESPACES, "__version__"])


def __getattr__(name: str):
    if name in _CORE:
        value = getattr(_importlib.import_module(_CORE[name], __name__), name)
    elif name in _NAMESPACES:
        value = _importlib.import_module(f".{name}", __name__)
    elif name in _MOVED:
        _warnings.warn(f"nst_jax.{name} moved to nst_jax.{_MOVED[name]}.{name}; the old name "
                      "goes away in the next release", DeprecationWarning, stacklevel=2)
        return getattr(_importlib.import_module(f".{_MOVED[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'nst_jax' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted({*globals(), *__all__})


if _TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from . import images, presets, quality, run, solvers, weights
    from ._errors import ImageError, NstError, WeightsError
    from ._losses import (
        content_loss,
        gram_matrix,
        guided_gram,
        style_error,
        style_layer_loss,
        style_loss,
        style_target,
        total_variation,
    )
    from ._model import (
        LAYERS,
        VGG19,
        VGGWeights,
        extract_features,
        random_vgg19_params,
        with_backward_kernels,
    )
    from ._objective import (
        LossWeights,
        StyleConfig,
        Targets,
        content_weight_for,
        loss_weights,
        make_targets,
        stylization_loss,
        tv_weight_for,
    )
    from ._preprocessing import CAFFE, TORCHVISION, Preprocessing, deprocess, preprocess
    from .images import load_image, save_image
    from .run import OptState, StylizeResult, stylize
    from .weights import load_vgg19_params, pretrained_vgg19
