"""Colour preservation (Gatys et al., arXiv:1606.05897) against float64 NumPy references.

The references below re-implement the paper's formulas from the NTSC YIQ table and
``numpy.linalg``; they never call the library. Golden tests run eagerly and under ``jax.jit``.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from conftest import DATA
from nst_jax import load_image
from nst_jax.images._color import (
    color_matrix,
    luminance_images,
    match_color,
    recombine_luminance,
    rgb_to_yiq,
    yiq_to_rgb,
)

# NTSC YIQ, as published (FCC 1953).
NP_YIQ = np.array([[0.299, 0.587, 0.114], [0.5959, -0.2746, -0.3213], [0.2115, -0.5227, 0.3112]])
RIDGE = 1e-2
MODES = [pytest.param(lambda f: f, id="eager"), pytest.param(jax.jit, id="jit")]


def np_yiq(rgb):
    return np.asarray(rgb, np.float64) @ NP_YIQ.T


def np_rgb(yiq):
    return np.asarray(yiq, np.float64) @ np.linalg.inv(NP_YIQ).T


def np_stats(rgb):
    pixels = np.asarray(rgb, np.float64).reshape(-1, 3)
    mean = pixels.mean(axis=0)
    return mean, (pixels - mean).T @ (pixels - mean) / len(pixels)


def np_sqrt(cov, power):
    w, v = np.linalg.eigh(cov)
    return (v * w**power) @ v.T


def np_match_unclipped(style, content, method):
    """x' = A (x - mu_s) + mu_c, A = L_c L_s^-1 or Sigma_c^1/2 Sigma_s^-1/2 (ridge-regularized)."""
    mean_s, cov_s = np_stats(style)
    mean_c, cov_c = np_stats(content)
    cov_s, cov_c = cov_s + RIDGE * np.eye(3), cov_c + RIDGE * np.eye(3)
    if method == "cholesky":
        a = np.linalg.cholesky(cov_c) @ np.linalg.inv(np.linalg.cholesky(cov_s))
    else:
        a = np_sqrt(cov_c, 0.5) @ np_sqrt(cov_s, -0.5)
    pixels = np.asarray(style, np.float64).reshape(-1, 3)
    return ((pixels - mean_s) @ a.T + mean_c).reshape(np.shape(style)), a


def rng_image(seed, shape=(12, 10), low=0.0, high=255.0):
    return np.random.default_rng(seed).uniform(low, high, (*shape, 3)).astype(np.float32)


def mixed_image(seed, shape, centre, mixing):
    """Correlated colours: centre + mixing @ z, z uniform in [-1, 1]^3."""
    z = np.random.default_rng(seed).uniform(-1.0, 1.0, (*shape, 3))
    return (centre + z @ np.asarray(mixing).T).astype(np.float32)


@pytest.fixture(scope="module")
def photos():
    return {name: load_image(DATA / f"{name}.png", max_side=32)
            for name in ("chelsea", "starry_night", "great_wave")}


# --------------------------------------------------------------------------- YIQ


@pytest.mark.parametrize("mode", MODES)
def test_rgb_to_yiq_matches_ntsc_table(mode):
    rgb = rng_image(0)
    np.testing.assert_allclose(mode(rgb_to_yiq)(rgb), np_yiq(rgb), atol=1e-3)
    primaries = np.array([[[255, 255, 255], [255, 0, 0], [0, 0, 255]]], np.float32)
    np.testing.assert_allclose(
        rgb_to_yiq(primaries)[0],
        [[255, 0, 0], [0.299 * 255, 0.5959 * 255, 0.2115 * 255], [0.114 * 255, -0.3213 * 255,
                                                                  0.3112 * 255]],
        atol=1e-3,
    )


@pytest.mark.parametrize("mode", MODES)
def test_yiq_round_trip(mode):
    rgb = rng_image(1)
    np.testing.assert_allclose(mode(yiq_to_rgb)(mode(rgb_to_yiq)(rgb)), rgb, atol=2e-3)
    yiq = np_yiq(rgb).astype(np.float32)
    np.testing.assert_allclose(mode(yiq_to_rgb)(yiq), np_rgb(yiq), atol=2e-3)
    np.testing.assert_allclose(rgb_to_yiq(yiq_to_rgb(yiq)), yiq, atol=2e-3)


def test_yiq_rejects_non_images():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        rgb_to_yiq(np.zeros((4, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        yiq_to_rgb(np.zeros((4, 3), np.float32))


# --------------------------------------------------------------------------- luminance transfer


@pytest.mark.parametrize("mode", MODES)
def test_luminance_images_golden(mode, photos):
    content, style = photos["chelsea"], photos["starry_night"]
    content_lum, style_lum = mode(luminance_images)(content, style)
    assert content_lum.shape == content.shape and style_lum.shape == style.shape
    y_c, y_s = np_yiq(content)[..., 0], np_yiq(style)[..., 0]
    matched = (y_s - y_s.mean()) / y_s.std() * y_c.std() + y_c.mean()
    for channel in range(3):
        np.testing.assert_allclose(content_lum[..., channel], y_c, atol=2e-3)
        np.testing.assert_allclose(style_lum[..., channel], matched, atol=2e-3)
    # The style luminance now has the content's mean and standard deviation.
    style_y = np.asarray(style_lum[..., 0], np.float64)
    np.testing.assert_allclose([style_y.mean(), style_y.std()], [y_c.mean(), y_c.std()],
                               rtol=1e-4)
    assert abs(y_s.std() - y_c.std()) > 1.0  # the matching did something


def test_luminance_of_grey_image_is_the_image():
    grey = np.repeat(rng_image(2)[..., :1], 3, axis=-1)
    content_lum, style_lum = luminance_images(grey, grey)
    np.testing.assert_allclose(content_lum, grey, atol=2e-3)
    np.testing.assert_allclose(style_lum, grey, atol=2e-3)  # same statistics: nothing to match


def test_luminance_of_flat_style_is_finite():
    content = rng_image(3)
    _, style_lum = luminance_images(content, np.full((6, 6, 3), 77.0, np.float32))
    np.testing.assert_allclose(style_lum, np.full((6, 6, 3), np_yiq(content)[..., 0].mean()),
                               rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_recombine_keeps_content_colour_and_output_luminance(mode):
    # Mid-range colours: nothing clips, so the YIQ channels must come through exactly.
    content = rng_image(4, low=100.0, high=156.0)
    output = np.repeat(rng_image(5, low=90.0, high=170.0)[..., :1], 3, axis=-1)
    output = output + rng_image(6, low=-3.0, high=3.0)  # not exactly grey, as after optimizing
    golden = np_rgb(np.concatenate([np_yiq(output)[..., :1], np_yiq(content)[..., 1:]], -1))
    assert 0 < golden.min() and golden.max() < 255  # the premise: no clipping
    result = mode(recombine_luminance)(output, content)
    np.testing.assert_allclose(result, golden, atol=2e-3)
    result_yiq = np_yiq(result)
    np.testing.assert_allclose(result_yiq[..., 0], np_yiq(output)[..., 0], atol=2e-3)
    np.testing.assert_allclose(result_yiq[..., 1:], np_yiq(content)[..., 1:], atol=2e-3)


def test_recombine_clips_to_pixel_range():
    content = np.zeros((4, 4, 3), np.float32)
    content[..., 0] = 255.0  # saturated red: large I and Q
    output = np.full((4, 4, 3), 250.0, np.float32)
    golden = np_rgb(np.concatenate([np_yiq(output)[..., :1], np_yiq(content)[..., 1:]], -1))
    assert golden.max() > 255 or golden.min() < 0
    np.testing.assert_allclose(recombine_luminance(output, content), np.clip(golden, 0, 255),
                               atol=2e-3)


def test_recombine_rejects_different_sizes():
    with pytest.raises(ValueError, match="differ in size"):
        recombine_luminance(rng_image(0, (4, 4)), rng_image(0, (4, 5)))


# --------------------------------------------------------------------------- colour matching


@pytest.mark.parametrize("method", ["cholesky", "eigen"])
@pytest.mark.parametrize("mode", MODES)
def test_match_color_is_the_affine_map_of_the_paper(mode, method, photos):
    style, content = photos["starry_night"], photos["chelsea"]
    golden, _ = np_match_unclipped(style, content, method)
    result = mode(functools.partial(match_color, method=method))(style, content)
    assert result.shape == style.shape and result.dtype == np.float32
    np.testing.assert_allclose(result, np.clip(golden, 0, 255), atol=5e-3)


@pytest.mark.parametrize("method", ["cholesky", "eigen"])
def test_match_color_gives_content_mean_and_covariance(method):
    style = mixed_image(7, (40, 30), [90, 120, 160], [[60, 10, 0], [20, 40, 5], [0, 30, 50]])
    content = mixed_image(8, (20, 25), [130, 120, 110], [[20, -5, 3], [4, 15, 0], [-6, 2, 10]])
    golden, _ = np_match_unclipped(style, content, method)
    assert 0 < golden.min() and golden.max() < 255  # the premise: no clipping
    result = np.asarray(match_color(style, content, method=method), np.float64)
    mean_r, cov_r = np_stats(result)
    mean_c, cov_c = np_stats(content)
    np.testing.assert_allclose(mean_r, mean_c, atol=1e-3)
    # The ridge shifts the covariance by about RIDGE * A A^T, far below this tolerance.
    np.testing.assert_allclose(cov_r, cov_c, atol=0.05 + 1e-4 * np.abs(cov_c).max())
    assert not np.allclose(np_stats(style)[1], cov_c, atol=10.0)  # there was something to match


def test_methods_are_different_maps():
    style = mixed_image(9, (16, 16), [90, 120, 160], [[60, 10, 0], [20, 40, 5], [0, 30, 50]])
    content = mixed_image(10, (16, 16), [130, 120, 110], [[20, -5, 3], [4, 15, 0], [-6, 2, 10]])
    chol, _, _ = color_matrix(style, content, method="cholesky")
    eigen, _, _ = color_matrix(style, content, method="eigen")
    np.testing.assert_allclose(chol, np_match_unclipped(style, content, "cholesky")[1], rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(eigen, np_match_unclipped(style, content, "eigen")[1], rtol=1e-4,
                               atol=1e-5)
    assert np.allclose(np.triu(chol, 1), 0.0)  # L_c L_s^-1 is lower triangular
    assert not np.allclose(chol, eigen, atol=1e-2)


@pytest.mark.parametrize("method", ["cholesky", "eigen"])
def test_match_color_flat_images_do_not_produce_nan(method):
    flat_style = np.full((8, 8, 3), 40.0, np.float32)
    grey_style = np.repeat(rng_image(11, (8, 8))[..., :1], 3, axis=-1)  # rank-1 covariance
    flat_content = np.full((5, 5, 3), [200.0, 10.0, 90.0], np.float32)
    content = rng_image(12)
    # A flat style has nothing to map: every pixel goes to the content's mean.
    result = np.asarray(match_color(flat_style, content, method=method))
    np.testing.assert_allclose(result, np.broadcast_to(np_stats(content)[0], result.shape),
                               atol=1e-3)
    for style, target in [(grey_style, content), (content, flat_content),
                          (flat_style, flat_content)]:
        result = np.asarray(match_color(style, target, method=method))
        assert np.isfinite(result).all() and result.min() >= 0 and result.max() <= 255
    np.testing.assert_allclose(match_color(flat_style, flat_content, method=method),
                               np.broadcast_to(flat_content[0, 0], (8, 8, 3)), atol=1e-3)


def test_match_color_rejects_unknown_method():
    with pytest.raises(ValueError, match="cholesky"):
        match_color(rng_image(0), rng_image(1), method="svd")


# --------------------------------------------------------------------------- a whole run


def test_histogram_preservation_run_keeps_the_photos_colours(weights_files, tmp_path,
                                                             monkeypatch):
    """``stylize --preserve-colors histogram`` recolours the painting to the photo's colours
    (Gatys et al. 2017, Sec. 5.1), so the result keeps the photo's colour statistics: its mean
    colour within 6% of the photo-painting distance of the photo's (measured: 3%), its
    covariance 4x nearer the photo's than the painting's (measured: 7x). Recolouring the other
    way (the photo to the painting's colours, used as the style) ends 0.9 of the way to the
    painting's mean (measured: 70 of 78 levels)."""
    from PIL import Image

    from nst_jax.cli import main

    monkeypatch.setenv("NST_JAX_OFFLINE", "1")
    out = tmp_path / "histogram.png"
    # Loss weights given explicitly: the run does not depend on the defaults of the day.
    code = main(["stylize", str(DATA / "chelsea.png"), str(DATA / "starry_night.png"), "-o",
                 str(out), "--weights", str(weights_files["canonical"]), "--size", "32",
                 "--content-layers", "conv2_1", "--style-layers", "conv1_1,conv2_1",
                 "--content-weight", "1", "--style-weight", "1e3", "--tv-weight", "0",
                 "--iterations", "20", "--tol", "0", "--preserve-colors", "histogram", "-q"])
    assert code == 0
    with Image.open(out) as image:
        result = np.asarray(image.convert("RGB"), np.float32)
    photo = load_image(DATA / "chelsea.png", max_side=32)
    painting = load_image(DATA / "starry_night.png", max_side=32)
    (mean_r, cov_r), (mean_p, cov_p), (mean_s, cov_s) = map(np_stats, (result, photo, painting))
    apart = np.linalg.norm(mean_s - mean_p)
    assert apart > 50  # the premise: a warm photo, a blue painting
    assert np.abs(result - photo).mean() > 2.0  # the run did change the photo
    assert np.linalg.norm(mean_r - mean_p) < 0.06 * apart
    assert np.linalg.norm(mean_r - mean_s) > 0.9 * apart
    assert np.linalg.norm(cov_r - cov_p) < 0.25 * np.linalg.norm(cov_r - cov_s)
