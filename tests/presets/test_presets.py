"""Presets against independent NumPy implementations of each reference's objective.

Each ``reference_*`` function below is written from the reference itself (the paper's equations,
neural_style.lua, the PyTorch tutorial), with the reference's own constants (layer lists,
weights, pixel scaling) typed in here, never read from the preset: a float64 NumPy VGG-19
forward pass (the reference's preprocessing, 3x3 correlation with zero padding 1, bias, taps
after or before the ReLU, 2x2/2 max or average pooling) and the reference's loss formulas.
"""

from __future__ import annotations

import functools
import inspect
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from nst_jax import (
    TORCHVISION,
    Preprocessing,
    StyleConfig,
    make_targets,
    stylization_loss,
    stylize,
    total_variation,
)
from nst_jax.presets import (
    PRESETS,
    Preset,
    get_preset,
    load_presets,
    preset_config,
    preset_loss_weights,
    preset_solver,
    preset_table,
)
from nst_jax.run import INITS, initial_image
from nst_jax.solvers import SolverConfig

RTOL = 1e-4
# (block, index) of the VGG-19 convolutions in network order, as in Simonyan & Zisserman.
CONVS = [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3), (3, 4),
         (4, 1), (4, 2), (4, 3), (4, 4), (5, 1)]
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
# neural_style.lua's preprocess(): BGR, x256 (not 255), minus the Caffe mean.
NEURAL_STYLE_PREPROCESSING = Preprocessing("BGR", 256.0, tuple(CAFFE_MEAN_BGR.tolist()))


# --------------------------------------------------------------------------- NumPy references


def np_conv(x, kernel, bias):
    """3x3 correlation, stride 1, zero padding 1: x (H, W, Cin), kernel (3, 3, Cin, Cout)."""
    h, w, cin = x.shape
    # im2col: windows (H, W, Cin, 3, 3) -> rows (H W, 3 3 Cin) in the kernel's HWI order, so the
    # (large) kernel reshapes without a copy; one matmul.
    windows = sliding_window_view(np.pad(x, ((1, 1), (1, 1), (0, 0))), (3, 3), axis=(0, 1))
    rows = windows.transpose(0, 1, 3, 4, 2).reshape(h * w, 9 * cin)
    return (rows @ kernel.reshape(9 * cin, -1)).reshape(h, w, -1) + bias


def np_pool(x, how):
    h, w = x.shape[0] // 2, x.shape[1] // 2
    blocks = x[: 2 * h, : 2 * w].reshape(h, 2, w, 2, -1)
    return blocks.max(axis=(1, 3)) if how == "max" else blocks.mean(axis=(1, 3))


def np_vgg(params, x, layers, *, pooling, taps):
    """Features of one preprocessed (H, W, 3) image at ``layers`` (``convB_I`` names);
    ``taps="relu"`` after the ReLU, ``"conv"`` before it."""
    deepest = max(CONVS.index((int(n[4]), int(n[6]))) for n in layers)
    features, h = {}, x
    for block, index in CONVS[: deepest + 1]:
        if index == 1 and block > 1:
            h = np_pool(h, pooling)
        layer = params[f"block{block}_conv{index}"]
        pre = np_conv(h, layer["kernel"], layer["bias"])
        h = np.maximum(pre, 0.0)
        if f"conv{block}_{index}" in layers:
            features[f"conv{block}_{index}"] = pre if taps == "conv" else h
    return features


def gram(f):
    flat = f.reshape(-1, f.shape[-1])
    return flat.T @ flat


def reference_gatys(params, image, content, style):
    """Gatys et al. 2016: Caffe input (BGR 0-255 minus the mean), ReLU outputs, average pooling;
    L = alpha * 1/2 sum (F - P)^2 at conv4_2 + beta * sum_l 1/5 * E_l with
    E_l = 1/(4 N^2 M^2) sum (G - A)^2 over conv1_1..conv5_1, alpha = 1, beta = 1e3.

    Eq. 4 assumes the style image has the generated image's size; for another size each Gram
    is taken per position, E_l = 1/(4 N^2) sum (G/M - A/M')^2 (equal to Eq. 4 when M = M').
    """
    style_layers = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]

    def features(rgb):
        return np_vgg(params, rgb[..., ::-1] - CAFFE_MEAN_BGR, style_layers + ["conv4_2"],
                      pooling="avg", taps="relu")

    x, p, a = features(image), features(content), features(style)
    content_term = 0.5 * np.sum((x["conv4_2"] - p["conv4_2"]) ** 2)
    style_term = 0.0
    for name in style_layers:
        n, m, m_style = x[name].shape[-1], x[name][..., 0].size, a[name][..., 0].size
        if m == m_style:
            e = np.sum((gram(x[name]) - gram(a[name])) ** 2) / (4 * n**2 * m**2)
        else:
            e = np.sum((gram(x[name]) / m - gram(a[name]) / m_style) ** 2) / (4 * n**2)
        style_term += e / 5
    return {"content": 1.0 * content_term, "style": 1e3 * style_term, "tv": 0.0}


def ns_preprocess(rgb):
    """neural_style.lua preprocess(): image.load gives RGB 0-1; BGR, mul(256), minus mean."""
    return (rgb / 255.0)[..., ::-1] * 256.0 - CAFFE_MEAN_BGR


def ns_tv_grad(z, strength):
    """neural_style.lua TVLoss:updateGradInput on a preprocessed (H, W, C) image."""
    grad = np.zeros_like(z)
    x_diff = z[:-1, :-1] - z[:-1, 1:]
    y_diff = z[:-1, :-1] - z[1:, :-1]
    grad[:-1, :-1] += x_diff + y_diff
    grad[:-1, 1:] -= x_diff
    grad[1:, :-1] -= y_diff
    return strength * grad


def reference_neural_style(params, image, content, style):
    """neural_style.lua defaults: content relu4_2, style relu1_1..relu5_1, max pooling;
    ContentLoss = 5 * MSE(F, P); each StyleLoss = 100 * MSE(G / nElement, A / nElement');
    TVLoss(1e-3) on the preprocessed image: the loss whose gradient it applies,
    1e-3 * 1/2 sum_{i<H-1, j<W-1} (z_ij - z_i,j+1)^2 + (z_ij - z_i+1,j)^2."""
    style_layers = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]

    def features(rgb):
        return np_vgg(params, ns_preprocess(rgb), style_layers + ["conv4_2"],
                      pooling="max", taps="relu")

    x, p, a = features(image), features(content), features(style)
    content_term = 5.0 * np.mean((x["conv4_2"] - p["conv4_2"]) ** 2)
    style_term = sum(
        100.0 * np.mean((gram(x[name]) / x[name].size - gram(a[name]) / a[name].size) ** 2)
        for name in style_layers)
    z = ns_preprocess(image)
    tv = 0.5 * (np.sum((z[:-1, :-1] - z[:-1, 1:]) ** 2) + np.sum((z[:-1, :-1] - z[1:, :-1]) ** 2))
    return {"content": content_term, "style": style_term, "tv": 1e-3 * tv}


def reference_pytorch_tutorial(params, image, content, style):
    """The PyTorch tutorial: RGB 0-1, (x - mean) / std; losses right after conv_i (before the
    ReLU), conv_i counting every Conv2d; content conv_4, style conv_1..conv_5; max pooling;
    gram_matrix divides by a*b*c*d; loss = 1 * mse(F, P) + 1e6 * sum_l mse(G, A)."""
    conv_i = {f"conv_{k + 1}": f"conv{b}_{i}" for k, (b, i) in enumerate(CONVS)}
    style_layers = [conv_i[f"conv_{k}"] for k in range(1, 6)]
    content_layer = conv_i["conv_4"]

    def features(rgb):
        return np_vgg(params, (rgb / 255.0 - IMAGENET_MEAN) / IMAGENET_STD, style_layers,
                      pooling="max", taps="conv")

    x, p, a = features(image), features(content), features(style)
    content_term = 1.0 * np.mean((x[content_layer] - p[content_layer]) ** 2)
    style_term = 1e6 * sum(
        np.mean((gram(x[name]) / x[name].size - gram(a[name]) / a[name].size) ** 2)
        for name in style_layers)
    return {"content": content_term, "style": style_term, "tv": 0.0}


REFERENCES = {
    "gatys2016": (reference_gatys, {}),
    "neural-style": (reference_neural_style, {}),
    # The tutorial's file carries torchvision's preprocessing; the preset leaves it to the file.
    "pytorch-tutorial": (reference_pytorch_tutorial, {"preprocessing": TORCHVISION}),
}


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def params(random_params):
    """Seed-0 random kernels plus random (non-zero) biases, so the bias is tested too."""
    rng = np.random.default_rng(1)
    return {"params": {
        name: {"kernel": np.asarray(layer["kernel"], np.float32),
               "bias": rng.normal(0.0, 0.1, layer["bias"].shape).astype(np.float32)}
        for name, layer in random_params["params"].items()}}


@pytest.fixture(scope="module")
def params64(params):
    """The same params in float64 for the NumPy references (layers up to conv5_1)."""
    needed = {f"block{block}_conv{index}" for block, index in CONVS}
    return {name: {k: v.astype(np.float64) for k, v in layer.items()}
            for name, layer in params["params"].items() if name in needed}


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)

    def draw(h, w):
        return rng.uniform(0.0, 255.0, (h, w, 3)).astype(np.float32)

    return {"content": draw(32, 32), "image": draw(32, 32),
            "same-size style": draw(32, 32), "other-size style": draw(24, 40)}


# -------------------------------------------------------------------------------------- tests


@functools.partial(jax.jit, static_argnames="config")
def _objective(params, content, style, image, weights, config):
    # One compiled call per config and shape (cached on disk by conftest's compilation cache).
    targets = make_targets(params, content, style, config)
    return stylization_loss(image, params, targets, weights, config)


def test_references_cover_every_preset():
    assert set(REFERENCES) == set(PRESETS)


@pytest.mark.parametrize("style_name", ["same-size style", "other-size style"])
@pytest.mark.parametrize("name", list(REFERENCES))
def test_objective_matches_reference(name, style_name, params, params64, images):
    reference, overrides = REFERENCES[name]
    config = preset_config(name, **overrides)
    weights = preset_loss_weights(name, config)
    content, image, style = images["content"], images["image"], images[style_name]
    total, terms = _objective(params, content, style, image, weights, config)

    expected = reference(params64, *(a.astype(np.float64) for a in (image, content, style)))
    weighted = {"content": weights.content * terms["content"],
                "style": weights.style * terms["style"], "tv": weights.tv * terms["tv"]}
    for term in ("content", "style", "tv"):
        np.testing.assert_allclose(float(weighted[term]), expected[term], rtol=RTOL,
                                   err_msg=f"{name}: {term} term")
    assert expected["content"] > 0 and expected["style"] > 0
    np.testing.assert_allclose(float(total), sum(expected.values()), rtol=RTOL)


def test_neural_style_tv_gradient_is_tvloss(images):
    """The preset's TV term has exactly the gradient neural-style's TVLoss applies, mapped from
    its x256 BGR input back to RGB 0-255 pixels (dz/drgb = 256/255, channels reversed)."""
    config = preset_config("neural-style")
    weights = preset_loss_weights("neural-style", config)
    image = images["image"]
    grad = jax.grad(lambda x: weights.tv * total_variation(x, form=config.tv_form))(image)
    grad_z = ns_tv_grad(ns_preprocess(image.astype(np.float64)), 1e-3)
    np.testing.assert_allclose(np.asarray(grad), 256.0 / 255.0 * grad_z[..., ::-1],
                               rtol=RTOL, atol=1e-7)


def test_neural_style_random_init_in_its_units(images):
    """-init random is torch.randn(...):mul(0.001) in neural-style's network-input units."""
    config = preset_config("neural-style")
    start = initial_image(get_preset("neural-style").run_kwargs["init"], images["content"],
                          images["content"], key=jax.random.key(3),
                          preprocessing=config.preprocessing)
    z = ns_preprocess(np.asarray(start, np.float64))
    assert abs(z.mean()) < 1e-4
    np.testing.assert_allclose(z.std(), 1e-3, rtol=0.1)


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_fields_are_valid(name):
    preset = get_preset(name)
    config = preset_config(name)
    assert isinstance(config, StyleConfig)
    for field, value in preset.config_kwargs.items():
        assert getattr(config, field) == value
    # The objective holds no optimizer settings any more: they are the preset's solver.
    assert config.legacy_solver_settings() == {}
    solver = preset_solver(name)
    assert isinstance(solver, SolverConfig)
    for field, value in preset.solver_kwargs.items():
        assert getattr(solver, field) == value
    run = preset.run_kwargs
    stylize_args = inspect.signature(stylize).parameters
    assert set(run) <= set(stylize_args)
    assert set(run) == {"content_weight", "style_weight", "tv_weight", "content_layer_weights",
                        "style_layer_weights", "init", "iterations", "tol"}
    assert len(run["style_layer_weights"]) == len(config.style_layers)
    assert len(run["content_layer_weights"]) == len(config.content_layers)
    assert run["init"] in INITS
    assert run["iterations"] > 0 and run["tol"] == 0.0
    assert preset.size > 0 and preset.description and preset.reference
    # Every setting says where it comes from, and nothing else has a source (the solver's
    # name is listed as "optimizer", as the CLI flag calls it).
    solver_keys = {"optimizer" if key == "name" else key for key in preset.solver_kwargs}
    assert set(preset.sources) == set(preset.config_kwargs) | solver_keys | set(run) | {"size"}
    assert set(preset.settings()) == set(preset.sources)
    assert all(text.strip() for text in preset.sources.values())
    assert preset.differences


def test_presets_are_read_only():
    with pytest.raises(TypeError):
        PRESETS["gatys2016"].run_kwargs["iterations"] = 1
    with pytest.raises(TypeError):
        PRESETS["new"] = PRESETS["gatys2016"]


def test_unknown_preset_lists_the_names():
    with pytest.raises(ValueError, match="unknown preset 'gatys'") as info:
        get_preset("gatys")
    for name in PRESETS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="neural-style"):
        preset_config("nope")


def test_preset_config_overrides():
    config = preset_config("neural-style", pooling="avg")
    solver = preset_solver("neural-style", history_size=5)
    assert (config.pooling, solver.history_size) == ("avg", 5)
    assert config.preprocessing == NEURAL_STYLE_PREPROCESSING
    assert solver.linesearch == "none" and config.style_norm == "mean"
    assert preset_config("neural-style").pooling == "max"  # the preset itself is unchanged
    assert preset_solver("neural-style").history_size == 100
    with pytest.raises(TypeError):
        preset_solver("neural-style", pooling="avg")  # not a solver setting
    with pytest.raises(ValueError, match="not StyleConfig fields: colour"):
        preset_config("gatys2016", colour="blue")
    with pytest.raises(ValueError, match="pooling"):
        preset_config("gatys2016", pooling="median")


def test_preset_weights_and_overrides():
    weights = preset_loss_weights("gatys2016")
    np.testing.assert_allclose(np.asarray(weights.style_layers), [0.2] * 5)
    assert (float(weights.content), float(weights.style), float(weights.tv)) == (1.0, 1e3, 0.0)
    fewer = preset_config("gatys2016", style_layers=("conv1_1", "conv2_1"))
    with pytest.raises(ValueError, match="style_layer_weights has 5 values but the config has 2"):
        preset_loss_weights("gatys2016", fewer)
    weights = preset_loss_weights("gatys2016", fewer, style_layer_weights=(0.5, 0.5),
                                  style_weight=10.0)
    np.testing.assert_allclose(np.asarray(weights.style_layers), [0.5, 0.5])
    assert float(weights.style) == 10.0
    with pytest.raises(ValueError, match="not loss weights: iterations"):
        preset_loss_weights("gatys2016", iterations=3)


def test_table_rows_columns_and_footnotes():
    table = preset_table()
    rows = [line for line in table.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header == ["setting"] + [f"`{name}`" for name in PRESETS]
    body = {cells[0]: cells[1:] for cells in
            ([c.strip() for c in row.strip("|").split("|")] for row in rows[2:])}
    assert len(body) == 19 and all(len(cells) == len(PRESETS) for cells in body.values())
    column = {name: i for i, name in enumerate(PRESETS)}
    assert body["iterations"][column["pytorch-tutorial"]].startswith("320 [")
    assert body["style weight (beta)"][column["pytorch-tutorial"]].startswith("1e6 [")
    assert body["layer output"][column["pytorch-tutorial"]].startswith("conv [")
    assert body["input preprocessing"][column["gatys2016"]] == "from the weights file"
    assert body["style layer weights w_l"][column["gatys2016"]].startswith("0.2 each [")
    # Every footnote a cell cites is defined exactly once below the table, and used.
    cited = {int(n) for cells in body.values() for c in cells for n in re.findall(r"\[(\d+)]", c)}
    defined = [int(n) for n in re.findall(r"^\* \[(\d+)] ", table, flags=re.MULTILINE)]
    assert sorted(defined) == sorted(set(defined)) and set(defined) == cited
    for name in PRESETS:
        for text in get_preset(name).differences:
            assert text in table
    assert "Not reproduced" not in preset_table(differences=False)


def test_run_kwargs_drive_stylize(params):
    """The run settings are accepted by stylize as they stand (tiny image, one iteration)."""
    run = dict(get_preset("neural-style").run_kwargs, iterations=1)
    config = preset_config("neural-style", style_layers=("conv1_1",), content_layers=())
    run["style_layer_weights"], run["content_layer_weights"] = (1.0,), ()
    rng = np.random.default_rng(2)
    content = jnp.asarray(rng.uniform(0, 255, (16, 16, 3)), jnp.float32)
    result = stylize(content, content[::-1], params=params, config=config, **run)
    assert result.iterations == 1 and np.isfinite(result.history["loss"]).all()


def test_presets_file_is_validated(tmp_path):
    """presets.toml is data: a preset with an unknown or missing section, an unknown setting
    or an invalid value is refused on load, naming the file and the preset."""
    good = (tmp_path / "good.toml")
    source = (Path(inspect.getfile(Preset)).with_name("presets.toml")).read_text()
    good.write_text(source)
    assert list(load_presets(good)) == list(PRESETS)
    broken = {
        "unknown key": source.replace('["gatys2016".sources]', '["gatys2016".extra]\nx = 1\n\n'
                                      '["gatys2016".sources]', 1),
        "unknown objective settings": source.replace('pooling = "avg"', 'pool = "avg"', 1),
        "unknown solver settings": source.replace('history_size = 10', 'memory = 10', 1),
        "pooling": source.replace('pooling = "avg"', 'pooling = "median"', 1),
        "optimizer must be one of": source.replace('name = "jaxopt-lbfgs"', 'name = "sgd"', 1),
        "cannot read presets": source + "\n[[[",
    }
    for words, text in broken.items():
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(ValueError, match=words) as info:
            load_presets(path)
        assert str(path) in str(info.value), words


def test_docs_presets_page_holds_the_current_table():
    """docs/presets.md is generated from the data; regenerate it when presets.toml changes."""
    page = (Path(__file__).parents[2] / "docs" / "presets.md").read_text(encoding="utf-8")
    assert preset_table() in page
