"""Named presets: the settings of the main references, each value with its source.

A :class:`Preset` holds the static settings (:class:`~nst_jax.StyleConfig` fields), the
:func:`~nst_jax.stylize` keyword arguments (loss weights, init, iterations, stopping) and the
image size a reference uses by default, plus where every value comes from and what nst_jax
cannot reproduce exactly. Pixel convention as everywhere: RGB 0-255 outside the network, so
weights that a reference states in other pixel units are converted here (and say so).

The three presets:

* ``gatys2016``: Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural
  Networks", CVPR 2016.
* ``neural-style``: the defaults of jcjohnson/neural-style (``neural_style.lua``, Torch7).
* ``pytorch-tutorial``: "Neural Transfer Using PyTorch" (pytorch/tutorials,
  ``advanced_source/neural_style_tutorial.py``), torchvision's VGG-19.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

from ._optimize import LossWeights, StyleConfig, loss_weights
from ._vgg import CAFFE_MEAN_BGR, Preprocessing

_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(StyleConfig))
_RUN_KEYS = ("content_weight", "style_weight", "tv_weight", "content_layer_weights",
             "style_layer_weights", "init", "iterations", "tol")


@dataclasses.dataclass(frozen=True)
class Preset:
    """The settings of one reference implementation or paper.

    Attributes:
        name: the key in :data:`PRESETS` (the CLI's ``--preset`` value).
        description: one paragraph: what it reproduces and which weights it needs.
        reference: the paper or repository and file.
        config_kwargs: :class:`~nst_jax.StyleConfig` fields (read-only mapping). A preset that
            sets ``preprocessing`` (only ``neural-style``, whose x256 input scaling is part of
            its code, not of its weights) means it; otherwise the preprocessing comes from the
            weights file.
        run_kwargs: :func:`~nst_jax.stylize` keyword arguments: ``content_weight``,
            ``style_weight``, ``tv_weight``, ``content_layer_weights`` and
            ``style_layer_weights`` (explicit tuples), ``init``, ``iterations``, ``tol``
            (every preset sets ``tol=0``: it runs exactly ``iterations``, so ``patience`` does
            not apply).
        size: longest side of the output image the reference uses by default, pixels.
        sources: setting name (a key of ``config_kwargs`` / ``run_kwargs``, or ``"size"``) ->
            where the value comes from, or "not specified" and what was chosen.
        differences: what nst_jax does not reproduce exactly.
    """

    name: str
    description: str
    reference: str
    config_kwargs: Mapping[str, Any]
    run_kwargs: Mapping[str, Any]
    size: int
    sources: Mapping[str, str]
    differences: tuple[str, ...] = ()

    def __post_init__(self):
        unknown = set(self.config_kwargs) - set(_CONFIG_FIELDS)
        if unknown:
            raise ValueError(f"preset {self.name!r}: not StyleConfig fields: {sorted(unknown)}")
        unknown = set(self.run_kwargs) - set(_RUN_KEYS)
        if unknown:
            raise ValueError(f"preset {self.name!r}: unknown run settings: {sorted(unknown)}")
        # Read-only views: a preset is a constant shared by every caller.
        for name in ("config_kwargs", "run_kwargs", "sources"):
            object.__setattr__(self, name, types.MappingProxyType(dict(getattr(self, name))))


#: Per-layer style weights of neural-style and the tutorial: each of their loss modules gets
#: the full style weight, so w_l = 1, not 1/L.
_ONE_EACH = (1.0,) * 5

#: neural-style's ``preprocess``: ``img:index(1, {3, 2, 1}):mul(256.0)`` minus the Caffe mean,
#: on images loaded as RGB 0-1, i.e. BGR, scaled to 0-256 (not 0-255), mean subtracted.
NEURAL_STYLE_PREPROCESSING = Preprocessing("BGR", 256.0, tuple(CAFFE_MEAN_BGR.tolist()))

_GATYS = "Gatys, Ecker & Bethge, CVPR 2016"
_NS = "jcjohnson/neural-style neural_style.lua"
_TUT = "pytorch/tutorials advanced_source/neural_style_tutorial.py"
_TORCH_LBFGS = "torch.optim.LBFGS defaults (lr=1, max_iter=20, history_size=100, " \
               "line_search_fn=None)"

_PRESETS = (
    Preset(
        name="gatys2016",
        description=(
            "Gatys, Ecker & Bethge (CVPR 2016): ReLU features, content conv4_2, style "
            "conv1_1-conv5_1 with w_l = 1/5, their Eq. 1 and Eq. 4 losses, alpha/beta = 1e-3, "
            "no TV, average pooling, L-BFGS from white noise. The paper uses a normalized "
            "VGG-19 (weights rescaled so that each filter's mean activation is 1); use weights "
            "made with `nst-jax weights normalize` -- with the plain weights the same "
            "alpha/beta weighs content and style differently. The paper gives no iteration "
            "count; this preset runs 500 L-BFGS iterations."
        ),
        reference="Gatys, L. A., Ecker, A. S., & Bethge, M. Image Style Transfer Using "
                  "Convolutional Neural Networks. CVPR 2016.",
        config_kwargs={
            "content_layers": ("conv4_2",),
            "style_layers": ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"),
            "layer_output": "relu",
            "pooling": "avg",
            "content_norm": "gatys",
            "style_norm": "gatys",
            "tv_form": "squared",
            "optimizer": "jaxopt-lbfgs",
            "history_size": 10,
            "linesearch": "none",
        },
        run_kwargs={
            "content_weight": 1.0,
            "style_weight": 1e3,
            "tv_weight": 0.0,
            "content_layer_weights": (1.0,),
            "style_layer_weights": (0.2,) * 5,
            "init": "noise",
            "iterations": 500,
            "tol": 0.0,
        },
        size=512,
        sources={
            "content_layers": f"{_GATYS}, Sec. 3: content matched on layer 'conv4_2'",
            "style_layers": f"{_GATYS}, Sec. 3: style on 'conv1_1', 'conv2_1', 'conv3_1', "
                            "'conv4_1' and 'conv5_1'",
            "layer_output": "the paper's layers are Caffe blobs of VGG-19, whose ReLUs run in "
                            "place, so 'conv4_2' holds the rectified responses",
            "pooling": f"{_GATYS}, Sec. 2: 'replacing the maximum pooling operation by average "
                       "pooling yields slightly more appealing results'",
            "content_norm": f"{_GATYS}, Eq. 1: L_content = 1/2 sum (F - P)^2",
            "style_norm": f"{_GATYS}, Eq. 4: E_l = 1/(4 N_l^2 M_l^2) sum (G - A)^2",
            "tv_form": "unused: the paper has no TV term",
            "optimizer": f"{_GATYS}: L-BFGS, which the authors found to work best for image "
                         "synthesis",
            "history_size": "not specified in the paper; nst_jax's default (10)",
            "linesearch": "not specified in the paper; nst_jax's default (none: fixed step 1)",
            "content_weight": f"{_GATYS}, Sec. 3 / Fig. 3 B: alpha/beta = 1e-3 (alpha = 1)",
            "style_weight": f"{_GATYS}, Sec. 3 / Fig. 3 B: alpha/beta = 1e-3 (beta = 1e3)",
            "tv_weight": f"{_GATYS}: the objective is alpha L_content + beta L_style, no TV "
                         "term",
            "content_layer_weights": "one content layer, weight 1",
            "style_layer_weights": f"{_GATYS}, Sec. 3: 'w_l = 1/5 in those layers'",
            "init": f"{_GATYS}: the synthesis starts from a white noise image (distribution "
                    "not specified; nst_jax draws uniform 0-255)",
            "iterations": "not specified in the paper (its Discussion says the run time "
                          "depends on the stopping criterion); 500 chosen here",
            "tol": "not specified; 0 = run exactly `iterations`",
            "size": f"{_GATYS}, Discussion: the images were synthesised at about 512 x 512 "
                    "pixels",
        },
        differences=(
            "The normalized VGG-19 is not shipped: make it with `nst-jax weights normalize`.",
            ("The paper resizes the style image to the content image's size; nst_jax scales "
             "its longest side (Grams are divided by each image's number of positions, so "
             "for equal sizes this is Eq. 4 exactly)."),
            ("Iteration count, L-BFGS memory and line search are not given in the paper "
             "(choices above); pixels are kept in 0-255 by L-BFGS-B (the paper says nothing "
             "about bounds)."),
        ),
    ),
    Preset(
        name="neural-style",
        description=(
            "jcjohnson/neural-style (Torch7) defaults: content relu4_2, style relu1_1-relu5_1, "
            "content weight 5, style weight 100 per layer, TV 1e-3, losses as mean squared "
            "errors (Grams divided by the number of feature elements), neural-style's TV, "
            "init random (tiny Gaussian around the mean colour), L-BFGS with 100 corrections, "
            "fixed step 1 and no line search, 1000 iterations, 512 px. Also reproduces its "
            "input scaling (x 256, not 255). Meant for the Caffe VGG-19 (the default Keras "
            "file holds the same Oxford weights)."
        ),
        reference="Justin Johnson, neural-style (2015), https://github.com/jcjohnson/"
                  "neural-style, neural_style.lua",
        config_kwargs={
            "content_layers": ("conv4_2",),
            "style_layers": ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"),
            "layer_output": "relu",
            "pooling": "max",
            "content_norm": "mean",
            "style_norm": "mean",
            "tv_form": "neural-style",
            "optimizer": "jaxopt-lbfgs",
            "history_size": 100,
            "linesearch": "none",
            "preprocessing": NEURAL_STYLE_PREPROCESSING,
        },
        run_kwargs={
            "content_weight": 5.0,
            "style_weight": 100.0,
            # TVLoss acts on the network input, which is 256/255 times our pixel units.
            "tv_weight": 1e-3 * (256.0 / 255.0) ** 2,
            "content_layer_weights": (1.0,),
            "style_layer_weights": _ONE_EACH,
            "init": "gaussian",
            "iterations": 1000,
            "tol": 0.0,
        },
        size=512,
        sources={
            "content_layers": f"{_NS}: -content_layers relu4_2",
            "style_layers": f"{_NS}: -style_layers relu1_1,relu2_1,relu3_1,relu4_1,relu5_1",
            "layer_output": f"{_NS}: the loss modules follow the reluB_I layers",
            "pooling": f"{_NS}: -pooling max",
            "content_norm": f"{_NS}: ContentLoss = strength * nn.MSECriterion (mean over "
                            "elements)",
            "style_norm": f"{_NS}: StyleLoss: G = Gram / input:nElement(), loss = strength * "
                          "nn.MSECriterion(G, target)",
            "tv_form": f"{_NS}: TVLoss:updateGradInput (forward adds no loss; nst_jax uses the "
                       "function with that gradient)",
            "optimizer": f"{_NS}: -optimizer lbfgs (optim.lbfgs)",
            "history_size": "torch/optim lbfgs.lua: nCorrection defaults to 100 "
                            f"({_NS} -lbfgs_num_correction 0 keeps it)",
            "linesearch": "torch/optim lbfgs.lua: no lineSearch given -> fixed step "
                          "learningRate = 1",
            "preprocessing": f"{_NS}: preprocess(): RGB 0-1 -> BGR, mul(256.0), minus "
                             "{103.939, 116.779, 123.68}",
            "content_weight": f"{_NS}: -content_weight 5e0",
            "style_weight": f"{_NS}: -style_weight 1e2",
            "tv_weight": f"{_NS}: -tv_weight 1e-3, on the x256 network input: 1e-3 * "
                         "(256/255)^2 in nst_jax's 0-255 pixel units",
            "content_layer_weights": f"{_NS}: every ContentLoss gets strength = content_weight",
            "style_layer_weights": f"{_NS}: every StyleLoss gets strength = style_weight "
                                   "(w_l = 1, not 1/5)",
            "init": f"{_NS}: -init random: torch.randn(...):mul(0.001) in network-input units",
            "iterations": f"{_NS}: -num_iterations 1000 (optim.lbfgs maxIter)",
            "tol": f"{_NS}: optim_state tolX = -1, tolFun = -1 (never stops early)",
            "size": f"{_NS}: -image_size 512 (longest side; the style image's longest side is "
                    "ceil(-style_scale 1.0 x 512))",
        },
        differences=(
            ("neural-style optimizes without bounds (the saved image goes through "
             "image.minmax to 0-1); nst_jax's L-BFGS-B keeps pixels in 0-255 throughout."),
            ("optim.lbfgs's first step is -g * min(1, 1/||g||_1); jaxopt's L-BFGS-B with a "
             "fixed step 1 takes the full projected gradient step -g (later steps have length 1 "
             "in both)."),
            ("optim.lbfgs skips the curvature pair when y.s <= 1e-10 (jaxopt: <= 0) and stops "
             "if g.d > 1 (not a descent direction); nst_jax has no such stop."),
            ("neural-style's printed loss leaves out TV (TVLoss only adds a gradient); "
             "nst_jax's loss includes it. With no line search and no tolerances the iterates "
             "do not depend on the loss value."),
            ("The written out.png is the image at the 1000th evaluation, i.e. after 999 "
             "updates (optim.lbfgs does not evaluate after its last step); nst_jax returns the "
             "lowest-loss image of its 1000 iterations."),
            ("Random init draws differ (Torch's generator vs JAX's); images are resized with "
             "nst_jax's resampling, not image.scale's bilinear."),
        ),
    ),
    Preset(
        name="pytorch-tutorial",
        description=(
            "The PyTorch tutorial 'Neural Transfer Using PyTorch' (torchvision VGG-19): losses "
            "on the convolutions before their ReLU, content conv_4 = conv2_2, style conv_1 to "
            "conv_5 = conv1_1, conv1_2, conv2_1, conv2_2, conv3_1, mean-squared-error losses "
            "(Grams divided by N*M), style weight 1e6 per layer, content weight 1, no TV, "
            "init from the content image, torch.optim.LBFGS defaults (100 corrections, step "
            "1, no line search), 320 iterations (its num_steps=300 counts closure calls; see "
            "sources), 512 px (128 without a GPU). Needs torchvision's VGG-19 converted with "
            "`nst-jax weights convert`: the file records its RGB 0-1 mean/std "
            "preprocessing, which nst_jax applies; the preset does not set it."
        ),
        reference="Alexis Jacq, Neural Transfer Using PyTorch, https://pytorch.org/tutorials/"
                  "advanced/neural_style_tutorial.html",
        config_kwargs={
            "content_layers": ("conv2_2",),
            "style_layers": ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1"),
            "layer_output": "conv",
            "pooling": "max",
            "content_norm": "mean",
            "style_norm": "mean",
            "tv_form": "squared",
            "optimizer": "jaxopt-lbfgs",
            "history_size": 100,
            "linesearch": "none",
        },
        run_kwargs={
            "content_weight": 1.0,
            "style_weight": 1e6,
            "tv_weight": 0.0,
            "content_layer_weights": (1.0,),
            "style_layer_weights": _ONE_EACH,
            "init": "content",
            "iterations": 320,
            "tol": 0.0,
        },
        size=512,
        sources={
            "content_layers": f"{_TUT}: content_layers_default = ['conv_4'] (conv_i counts "
                              "every Conv2d: conv_4 = conv2_2)",
            "style_layers": f"{_TUT}: style_layers_default = ['conv_1', ..., 'conv_5'] "
                            "(= conv1_1, conv1_2, conv2_1, conv2_2, conv3_1)",
            "layer_output": f"{_TUT}: the loss modules are inserted right after the Conv2d "
                            "named conv_i, before relu_i",
            "pooling": f"{_TUT}: torchvision vgg19().features keeps its MaxPool2d(2, 2)",
            "content_norm": f"{_TUT}: ContentLoss: F.mse_loss(input, target)",
            "style_norm": f"{_TUT}: gram_matrix divides by a*b*c*d; StyleLoss: "
                          "F.mse_loss(G, target)",
            "tv_form": "unused: the tutorial has no TV term",
            "optimizer": f"{_TUT}: get_input_optimizer: optim.LBFGS on input_img, default "
                         "arguments",
            "history_size": _TORCH_LBFGS,
            "linesearch": f"{_TORCH_LBFGS}: fixed step lr = 1",
            "content_weight": f"{_TUT}: run_style_transfer(..., content_weight=1)",
            "style_weight": f"{_TUT}: run_style_transfer(..., style_weight=1000000)",
            "tv_weight": f"{_TUT}: loss = style_score + content_score, no TV term",
            "content_layer_weights": "one content layer, weight 1",
            "style_layer_weights": f"{_TUT}: style_score = sum of sl.loss, times style_weight "
                                   "(w_l = 1)",
            "init": f"{_TUT}: input_img = content_img.clone()",
            "iterations": f"{_TUT}: num_steps=300 counts closure calls in `while run[0] <= "
                          "num_steps: optimizer.step(closure)`; each step runs max_iter=20 "
                          "L-BFGS iterations with 20 closure calls, so 16 steps = 320 "
                          "iterations run (unless torch's tolerances end a step early)",
            "tol": f"{_TORCH_LBFGS}: tolerance_grad=1e-7, tolerance_change=1e-9 rarely fire "
                   "at these loss scales; 0 = run exactly `iterations`",
            "size": f"{_TUT}: imsize = 512 if torch.cuda.is_available() else 128",
        },
        differences=(
            ("The tutorial clamps the image to [0, 1] at the start of every closure call (the "
             "L-BFGS memory keeps the unclamped step); nst_jax's L-BFGS-B handles the 0-255 box "
             "inside the algorithm."),
            ("torch.optim.LBFGS's first step is -g * min(1, 1/||g||_1); jaxopt's L-BFGS-B with "
             "a fixed step 1 takes the full projected gradient step."),
            ("transforms.Resize(512) sets the shorter side to 512; nst_jax's size is the "
             "longest side. The tutorial requires style and content of the same size; nst_jax "
             "accepts any (each Gram is divided by its own image's N*M, which is the tutorial's "
             "formula)."),
            ("Only exact with torchvision's VGG-19 weights (converted with `nst-jax weights "
             "convert`); the default Caffe weights are a different network."),
        ),
    ),
)

#: name -> :class:`Preset`, read-only.
PRESETS: Mapping[str, Preset] = types.MappingProxyType({p.name: p for p in _PRESETS})


def get_preset(name: str) -> Preset:
    """The :class:`Preset` called ``name``.

    Raises:
        ValueError: unknown name; the message lists the presets.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_config(name: str, **overrides) -> StyleConfig:
    """The :class:`~nst_jax.StyleConfig` of preset ``name``, with ``overrides`` (StyleConfig
    fields) replacing its values, e.g. ``preset_config("gatys2016", pooling="max")``.

    Raises:
        ValueError: unknown preset, or an override that is not a StyleConfig field (or an
            invalid value, from StyleConfig's own checks).
    """
    preset = get_preset(name)
    unknown = set(overrides) - set(_CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"not StyleConfig fields: {', '.join(sorted(unknown))}; expected "
                         f"some of {', '.join(_CONFIG_FIELDS)}")
    return StyleConfig(**{**preset.config_kwargs, **overrides})


def preset_loss_weights(name: str, config: StyleConfig | None = None, **overrides) -> LossWeights:
    """The traced :class:`~nst_jax.LossWeights` of preset ``name`` for ``config`` (default
    :func:`preset_config` ``(name)``).

    Args:
        overrides: replace run settings: ``content_weight``, ``style_weight``, ``tv_weight``,
            ``content_layer_weights``, ``style_layer_weights``.

    Raises:
        ValueError: unknown preset or override, or per-layer weights whose number does not
            match ``config``'s layers (a config with other layers needs its own per-layer
            weights).
    """
    preset = get_preset(name)
    weight_keys = ("content_weight", "style_weight", "tv_weight", "content_layer_weights",
                   "style_layer_weights")
    unknown = set(overrides) - set(weight_keys)
    if unknown:
        raise ValueError(f"not loss weights: {', '.join(sorted(unknown))}; expected some of "
                         f"{', '.join(weight_keys)}")
    config = config or preset_config(name)
    run = {**preset.run_kwargs, **overrides}
    for key, layers in (("content_layer_weights", config.content_layers),
                        ("style_layer_weights", config.style_layers)):
        if len(run[key]) != len(layers):
            raise ValueError(f"preset {name!r}: {key} has {len(run[key])} values but the config "
                             f"has {len(layers)} layers; pass {key} for {', '.join(layers)}")
    return loss_weights(
        config, content=run["content_weight"], style=run["style_weight"], tv=run["tv_weight"],
        content_layers=run["content_layer_weights"], style_layers=run["style_layer_weights"],
    )


# --------------------------------------------------------------------------------- README table

_ROWS = (
    ("content layers", "content_layers"),
    ("style layers", "style_layers"),
    ("layer output", "layer_output"),
    ("pooling", "pooling"),
    ("content loss", "content_norm"),
    ("style loss", "style_norm"),
    ("TV form", "tv_form"),
    ("input preprocessing", "preprocessing"),
    ("optimizer", "optimizer"),
    ("L-BFGS history", "history_size"),
    ("line search", "linesearch"),
    ("content weight (alpha)", "content_weight"),
    ("style weight (beta)", "style_weight"),
    ("TV weight (gamma)", "tv_weight"),
    ("style layer weights w_l", "style_layer_weights"),
    ("init", "init"),
    ("iterations", "iterations"),
    ("early stopping tol", "tol"),
    ("size (longest side, px)", "size"),
)


def _format(value) -> str:
    if isinstance(value, Preprocessing):
        mean = ", ".join(f"{m:g}" for m in value.mean)
        return f"{value.channel_order} 0-{value.input_scale:g}, minus ({mean})"
    if isinstance(value, tuple):
        if len(set(value)) == 1 and isinstance(value[0], float):
            return f"{_format(value[0])} each"
        return ", ".join(_format(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")
    return str(value)


def _lookup(preset: Preset, key: str):
    if key == "size":
        return preset.size
    if key in preset.run_kwargs:
        return preset.run_kwargs[key]
    return preset.config_kwargs.get(key)


def preset_table(*, differences: bool = True) -> str:
    """Markdown for the README: one row per setting, one column per preset, each value with a
    numbered footnote giving its source (listed per preset below the table), then what each
    preset does not reproduce exactly (``differences=True``).
    """
    names = list(PRESETS)
    cells: dict[tuple[str, str], str] = {}
    notes: dict[str, list[str]] = {name: [] for name in names}
    number = 0
    for name in names:  # column by column, so each preset's footnotes are consecutive
        preset = PRESETS[name]
        seen: dict[str, int] = {}
        for _, key in _ROWS:
            value = _lookup(preset, key)
            if value is None:
                cells[name, key] = "from the weights file" if key == "preprocessing" else ""
                continue
            cell = _format(value)
            source = preset.sources.get(key)
            if source:
                if source not in seen:
                    number += 1
                    seen[source] = number
                    notes[name].append(f"[{number}] {source}")
                cell += f" [{seen[source]}]"
            cells[name, key] = cell.replace("|", "\\|")
    lines = ["| setting | " + " | ".join(f"`{name}`" for name in names) + " |",
             "| --- |" + " --- |" * len(names)]
    for label, key in _ROWS:
        lines.append(f"| {label} | " + " | ".join(cells[name, key] for name in names) + " |")
    for name in names:
        lines += ["", f"Sources, `{name}` ({PRESETS[name].reference}):", ""]
        lines += [f"* {note}" for note in notes[name]]
    if differences:
        for name in names:
            lines += ["", f"Not reproduced exactly by `{name}`:", ""]
            lines += [f"* {text}" for text in PRESETS[name].differences]
    return "\n".join(lines) + "\n"
