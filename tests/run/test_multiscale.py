"""Coarse-to-fine stylization and frame sequences (``nst_jax.run._multiscale``): loops of
``stylize`` runs, each warm-started from an earlier result."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import DATA
from nst_jax import StyleConfig, content_weight_for, make_targets, stylize
from nst_jax._objective import loss_weights, stylization_loss
from nst_jax.images import load_image, resize_array
from nst_jax.run import (
    _multiscale,
    pyramid_sizes,
    split_iterations,
    stylize_frames,
    stylize_multiscale,
)
from nst_jax.solvers import FIRST_STEP

# Two shallow style layers keep compiles and runs short; the mechanics do not depend on depth.
CONFIG = StyleConfig(content_layers=("conv2_1",), style_layers=("conv1_1", "conv2_1"))


@pytest.fixture(scope="module")
def images():
    content = resize_array(load_image(DATA / "chelsea.png"), 32)  # 22x32
    starry = resize_array(load_image(DATA / "starry_night.png"), 40)
    wave = resize_array(load_image(DATA / "great_wave.png"), 24)
    return content, starry, wave


def test_pyramid_sizes():
    assert pyramid_sizes(2048, factor=2, min_size=256) == [256, 512, 1024, 2048]
    assert pyramid_sizes(100, min_size=256) == [100]
    assert pyramid_sizes(1000, factor=1.5, min_size=400) == [444, 667, 1000]
    with pytest.raises(ValueError):
        pyramid_sizes(512, factor=1.0)


def test_the_default_pyramid_and_its_iterations():
    """sqrt(2) steps from 128 px; each scale 2/3 of the iterations of the one before, adding up
    to the total (largest remainders rounded up), at least one each."""
    assert pyramid_sizes(512) == [128, 181, 256, 362, 512]
    assert pyramid_sizes(128) == [128] and pyramid_sizes(180) == [180]
    assert split_iterations(500, 5) == [192, 128, 85, 57, 38]
    for total, scales in ((500, 5), (50, 3), (7, 5), (5, 5), (1000, 7), (3, 1)):
        counts = split_iterations(total, scales)
        assert sum(counts) == total and min(counts) >= 1 and len(counts) == scales
        assert counts == sorted(counts, reverse=True), counts
        exact = [total * (2 / 3) ** k / sum((2 / 3) ** j for j in range(scales))
                 for k in range(scales)]
        if total >= 3 * scales:
            assert max(abs(c - e) for c, e in zip(counts, exact)) < 1
    with pytest.raises(ValueError, match="cannot be split"):
        split_iterations(4, 5)


def test_default_multiscale_splits_the_total(random_params, images):
    """An int ``iterations`` is the total over the scales; sizes=None is the default pyramid
    of the content (one scale for a 32-px image, below the 128-px smallest scale)."""
    content, starry, _ = images
    result = stylize_multiscale(content, starry, params=random_params, config=CONFIG,
                                sizes=[16, 24, 32], iterations=10, tol=0.0)
    assert [r.iterations for r in result.scales] == split_iterations(10, 3) == [5, 3, 2]
    single = stylize_multiscale(content, starry, params=random_params, config=CONFIG,
                                iterations=3, tol=0.0)
    assert single.sizes == [32] and single.scales[0].iterations == 3


def test_multiscale_warm_starts_each_scale(random_params, images):
    content, starry, _ = images
    weights = {"content_weight": 1.0, "style_weight": 1e2, "tol": 0.0}
    result = stylize_multiscale(content, starry, params=random_params, config=CONFIG,
                                sizes=[16, 32], iterations=[8, 3], **weights)
    assert result.image.shape == content.shape
    assert [r.iterations for r in result.scales] == [8, 3]
    assert result.scales[0].image.shape == (11, 16, 3)
    # The fine scale starts from the upsampled coarse result: its first loss is far below that
    # of the content photo, where a single-scale run would start.
    cold = stylize(content, starry, params=random_params, config=CONFIG, iterations=0, **weights)
    assert result.scales[1].history["loss"][0] < 0.5 * cold.history["loss"][0]
    with pytest.raises(ValueError, match="last size"):
        stylize_multiscale(content, starry, params=random_params, config=CONFIG, sizes=[16, 64])
    with pytest.raises(ValueError, match="increasing"):
        stylize_multiscale(content, starry, params=random_params, config=CONFIG, sizes=[32, 16])


def test_frames_share_grams_and_warm_start(random_params, images, monkeypatch):
    content, starry, _ = images
    calls = []
    original = _multiscale.make_targets
    monkeypatch.setattr(_multiscale, "make_targets",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    shifted = np.roll(content, 2, axis=1)
    results = list(stylize_frames([content, content, shifted], starry, params=random_params,
                                  config=CONFIG, iterations=4, tol=0.0, style_weight=1e2,
                                  tv_weight=0.0))
    assert len(calls) == 1  # style Grams once for the whole sequence
    assert len(results) == 3
    # Frame 1 (same content) starts where frame 0 ended.
    weights = loss_weights(CONFIG, content=content_weight_for(content.shape), style=1e2)
    targets = make_targets(random_params, content, starry, CONFIG)
    end0, _ = stylization_loss(jnp.asarray(results[0].image), random_params, targets, weights,
                               CONFIG)
    np.testing.assert_allclose(results[1].history["loss"][0], float(end0), rtol=1e-4)
    # Frame 2's content features are its own: its loss is measured against the shifted photo.
    assert results[2].history["loss"][0] > results[1].history["loss"][-1]
    with pytest.raises(ValueError, match="one size"):
        list(stylize_frames([content, content[:16]], starry, params=random_params,
                            config=CONFIG, iterations=1))


def test_first_step_is_capped_from_any_start(random_params, images):
    """The first L-BFGS step moves no pixel further than ``SolverConfig.first_step`` levels,
    from the photo as from a warm start (an image as init: the coarse scale, the previous
    frame). Replaces the retired L-BFGS-B's warm-start cap (WARM_FIRST_STEP): its cold first
    move from B_0 = I threw pixels onto the bounds (> 100 levels), which is gone."""
    content, starry, _ = images
    kwargs = {"params": random_params, "config": CONFIG, "iterations": 1, "tol": 0.0}
    cold = stylize(content, starry, init="content", **kwargs)
    warm = stylize(content, starry, init=content, **kwargs)
    assert cold.history["loss"][0] == warm.history["loss"][0]  # the same starting image
    for result in (cold, warm):
        moved = np.abs(np.asarray(result.state.image) - content).max()
        assert 0 < moved <= FIRST_STEP + 1e-3
