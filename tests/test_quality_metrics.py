"""nst_jax.quality: golden values from small NumPy references written independently here.

Seeded random VGG-19 params and 32-48 px images keep the style-distance tests to seconds.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from PIL import Image

from nst_jax import extract_features, preprocess, random_vgg19_params
from nst_jax.quality import (
    COLOUR_DIRECTIONS,
    DEFAULT_STYLE_LAYERS,
    PairScorer,
    StyleScorer,
    block_grid,
    change,
    colour_distance,
    contact_sheet,
    grid,
    layer_figures,
    saturation,
    score,
    style_distance,
    style_scorer,
)

EPS = 0.01  # the documented eps of block_grid, 0-255 units


# ------------------------------------------------------------------------------------------
# NumPy references


def ref_change(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).sum() / a.size)


def ref_block_grid(img):
    """Python loops over axes, periods and line indices; steps averaged per line."""
    img = np.asarray(img, np.float64)
    best = None
    for axis in (0, 1):
        x = np.moveaxis(img, axis, 0)  # the stepped axis first: (n, other, 3)
        n = x.shape[0]
        step = [float(np.mean(np.abs(x[i + 1] - x[i]))) for i in range(n - 1)]
        for k in (2, 3, 4, 5):
            p = 2**k
            across = [step[i] for i in range(p - 1, n - 1, p)]
            others = [step[i] for i in range(n - 1) if (i + 1) % p]
            if not across or not others:
                continue
            ratio = (sum(across) / len(across) + EPS) / (sum(others) / len(others) + EPS)
            best = ratio if best is None else max(best, ratio)
    return 1.0 if best is None else best


def ref_saturation(img, margin=0.5):
    img = np.asarray(img, np.float64)
    h, w, _ = img.shape
    hits = 0
    for i in range(h):
        for j in range(w):
            if any(v <= margin or v >= 255 - margin for v in img[i, j]):
                hits += 1
    return hits / (h * w)


def ref_style_error(params, image, style, layers=DEFAULT_STYLE_LAYERS):
    """mean_l sum((G/M - A/M')^2) / (4 N^2) with float64 einsum Grams."""
    def grams(x):
        feats = extract_features(params, preprocess(np.asarray(x, np.float32)), layers)
        out = {}
        for name in layers:
            f = np.asarray(feats[name], np.float64)
            h, w, c = f.shape
            out[name] = np.einsum("hwi,hwj->ij", f, f) / (h * w)
        return out

    g, a = grams(image), grams(style)
    errors = [np.sum((g[n] - a[n]) ** 2) / (4 * g[n].shape[0] ** 2) for n in layers]
    return float(sum(errors) / len(errors))


# ------------------------------------------------------------------------------------------
# images


def smooth_image(h=96, w=96):
    """Photo-like: smooth sinusoids with incommensurate periods, a little noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(3)
    chans = []
    for c in range(3):
        v = (128 + 45 * np.sin(0.113 * x + 0.071 * y + c)
             + 30 * np.sin(0.047 * x - 0.139 * y + 2 * c) + 10 * np.cos(0.31 * x * (c + 1) / 3))
        chans.append(v)
    return np.clip(np.stack(chans, -1) + rng.normal(0, 1.5, (h, w, 3)), 1, 254)


def blocks(h, w, size, seed=0, low=0.0, high=255.0):
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(low, high, (-(-h // size), -(-w // size), 3))
    return np.repeat(np.repeat(coarse, size, 0), size, 1)[:h, :w]


@pytest.fixture(scope="module")
def params():
    return random_vgg19_params(jax.random.key(0))


@pytest.fixture(scope="module")
def pictures():
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:36, 0:44].astype(np.float64)
    photo = np.stack([120 + 60 * np.sin(x / 5), 100 + 50 * np.cos(y / 7), 90 + x + y], -1)
    style = rng.uniform(0, 255, (40, 32, 3))  # another size and aspect
    output = np.clip(photo + 0.5 * (blocks(36, 44, 4, seed=2) - 128), 0, 255)
    return photo, style, output


# ------------------------------------------------------------------------------------------
# pixel figures


def test_change_golden():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (9, 13, 3))
    b = rng.uniform(0, 255, (9, 13, 3))
    assert change(a, b) == pytest.approx(ref_change(a, b), rel=1e-12)
    assert change(a, a) == 0.0
    assert change(np.zeros((4, 5, 3)), np.full((4, 5, 3), 10.0)) == pytest.approx(10.0)


def test_change_resizes_photo_to_output():
    photo = np.full((20, 30, 3), 100.0)
    assert change(np.full((10, 15, 3), 90.0), photo) == pytest.approx(10.0, abs=1e-3)


def test_block_grid_smooth_image_is_about_one():
    img = smooth_image()
    value = block_grid(img)
    assert value == pytest.approx(ref_block_grid(img), rel=1e-10)
    assert abs(value - 1.0) < 0.15


def test_block_grid_of_8px_blocks_is_large():
    img = blocks(64, 64, 8, seed=1)
    value = block_grid(img)
    # Steps inside blocks are exactly 0: the ratio is ~ mean border step / eps.
    assert value == pytest.approx(ref_block_grid(img), rel=1e-10)
    assert value > 1000


def test_block_grid_tiny_and_flat_images():
    assert block_grid(np.full((3, 3, 3), 7.0)) == 1.0  # too small for any period
    assert block_grid(np.full((40, 40, 3), 7.0)) == pytest.approx(1.0)  # 0 steps: eps / eps
    grey = blocks(24, 24, 4, seed=4)[..., 0]  # (H, W) grey works too
    assert block_grid(grey) == pytest.approx(ref_block_grid(np.repeat(grey[..., None], 3, -1)))


def test_grid_of_4px_block_output_over_photo():
    photo = smooth_image(64, 80)
    output = np.clip(photo + (blocks(64, 80, 4, seed=5) - 128) * 0.1, 0, 255)
    value = grid(output, photo)
    assert value == pytest.approx(ref_block_grid(output) - ref_block_grid(photo), rel=1e-10)
    assert value > 0.5
    assert grid(photo, photo) == 0.0


def test_saturation_counts():
    img = np.full((10, 10, 3), 128.0)
    img[0, 0, 0] = 0.0  # low
    img[0, 1, 2] = 255.0  # high
    img[0, 2, 1] = 0.5  # at the margin: counts
    img[0, 3, 1] = 0.6  # just inside: does not
    img[0, 4, 0] = 254.5  # at 255 - margin: counts
    img[0, 5] = (0.0, 255.0, 0.0)  # several channels of one pixel: one pixel
    img[0, 6, 2] = 254.4  # inside (but within a margin of 1)
    assert saturation(img) == pytest.approx(5 / 100)  # pixels 0, 1, 2, 4, 5 of row 0
    assert saturation(img) == pytest.approx(ref_saturation(img))
    assert saturation(img, margin=0.0) == pytest.approx(3 / 100)
    assert saturation(img, margin=1.0) == pytest.approx(ref_saturation(img, 1.0)) == 0.07
    rng = np.random.default_rng(1)
    noisy = np.clip(rng.normal(128, 120, (12, 9, 3)), 0, 255)
    assert saturation(noisy) == pytest.approx(ref_saturation(noisy))


# ------------------------------------------------------------------------------------------
# style distance


def test_style_distance_of_photo_is_one(params, pictures):
    photo, style, _ = pictures
    assert style_distance(photo, photo, style, params=params) == pytest.approx(1.0, abs=1e-12)


def test_style_distance_of_style_against_itself_is_zero(params, pictures):
    photo, style, _ = pictures
    photo_same_size = photo[:32, :32]
    assert style_distance(style, photo[:40, :32], style, params=params) == 0.0
    # A photo of another size is resized to the output's; the style still scores 0.
    assert style_distance(style, photo_same_size, style, params=params) == 0.0


def test_style_distance_matches_numpy_grams(params, pictures):
    photo, style, output = pictures
    expected = ref_style_error(params, output, style) / ref_style_error(params, photo, style)
    value = style_distance(output, photo, style, params=params)
    assert value == pytest.approx(expected, rel=1e-4)
    assert 0 < value and value != pytest.approx(1.0, abs=1e-3)
    # Two layers, and the scorer object reused for several outputs gives the same numbers.
    layers = ("conv1_1", "conv2_1")
    scorer = style_scorer(style, params=params, layers=layers)
    assert isinstance(scorer, StyleScorer)
    two = ref_style_error(params, output, style, layers) / ref_style_error(
        params, photo, style, layers)
    assert scorer(output, photo) == pytest.approx(two, rel=1e-4)
    assert scorer.distance(photo, photo) == pytest.approx(1.0)
    assert scorer.error(output) == pytest.approx(
        ref_style_error(params, output, style, layers), rel=1e-4)


def test_style_distance_resizes_photo(params, pictures):
    photo, style, output = pictures
    big = np.asarray(Image.fromarray(photo.astype(np.uint8)).resize((88, 72), Image.LANCZOS),
                     np.float64)
    small = np.stack([np.asarray(Image.fromarray(big[..., c].astype(np.float32))
                                 .resize((44, 36), Image.LANCZOS), np.float64)
                      for c in range(3)], -1)
    expected = ref_style_error(params, output, style) / ref_style_error(params, small, style)
    assert style_distance(output, big, style, params=params) == pytest.approx(expected, rel=1e-4)


def test_score_has_the_four_figures(params, pictures):
    photo, style, output = pictures
    scorer = StyleScorer(style, params=params)
    figures = score(output, photo, style, scorer=scorer)
    assert set(figures) == {"style_distance", "change", "grid", "saturation"}
    assert figures == score(output, photo, style, params=params)
    assert figures["change"] == pytest.approx(ref_change(output, photo))
    assert figures["grid"] == pytest.approx(ref_block_grid(output) - ref_block_grid(photo))
    assert figures["saturation"] == pytest.approx(ref_saturation(output))
    assert all(isinstance(v, float) for v in figures.values())
    with pytest.raises(ValueError, match="params"):
        score(output, photo, style)


# ------------------------------------------------------------------------------------------
# contact sheet


def test_contact_sheet_geometry_and_cells():
    rng = np.random.default_rng(0)
    sizes = [[(20, 30), (24, 16), (10, 10)], [(8, 30), (24, 30)]]
    rows = [[rng.integers(0, 256, (h, w, 3)).astype(np.float32) for h, w in row]
            for row in sizes]
    rows[1].append(None)  # a failed run
    gap = 5
    sheet = contact_sheet(rows, ["photo one", "p2"], ["a", "b", "c"], gap=gap)
    assert isinstance(sheet, Image.Image) and sheet.mode == "RGB"
    cell_w, cell_h = 30, 24  # the largest width and height
    label_w = sheet.width - 3 * (cell_w + gap) - gap
    header_h = sheet.height - 2 * (cell_h + gap) - gap
    assert label_w > 0 and header_h > 0  # room for the labels
    pixels = np.asarray(sheet)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            x = label_w + gap + c * (cell_w + gap)
            y = header_h + gap + r * (cell_h + gap)
            if image is None:
                assert (pixels[y, x] == (200, 200, 200)).all()
                continue
            h, w = image.shape[:2]
            y, x = y + (cell_h - h) // 2, x + (cell_w - w) // 2  # centred
            np.testing.assert_array_equal(pixels[y:y + h, x:x + w], image.astype(np.uint8))


def test_contact_sheet_without_labels_and_fixed_cell():
    img = np.full((40, 20, 3), 50.0)
    sheet = contact_sheet([[img, img[:, :, 0]]], cell=(10, 10), gap=2)
    assert sheet.size == (2 * 12 + 2, 12 + 2)
    # shrunk to fit the 10x10 cell, aspect kept: 5x10 in the middle of the cell
    assert (np.asarray(sheet)[2:12, 4:9] == 50).all()
    with pytest.raises(ValueError):
        contact_sheet([[img]], ["one", "two"])


def test_contact_sheet_zoom_is_nearest_neighbour():
    img = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3) * 10
    sheet = np.asarray(contact_sheet([[img]], zoom=4, gap=1))
    assert sheet.shape == (8 + 2, 12 + 2, 3)
    np.testing.assert_array_equal(sheet[1:9, 1:13], np.kron(img, np.ones((4, 4, 1))))


# ------------------------------------------------------------------------------------------
# per-layer figures: Gram errors, colour distance, content distance


def np_lanczos(image, shape):
    """Per-channel float Lanczos resize with Pillow (the resampling the figures document)."""
    h, w = shape
    return np.stack([np.asarray(Image.fromarray(np.asarray(image[..., c], np.float32))
                                .resize((w, h), Image.LANCZOS), np.float64)
                     for c in range(3)], -1)


def np_features(params, image, layers):
    feats = extract_features(params, preprocess(np.asarray(image, np.float32)), layers)
    return {name: np.asarray(feats[name], np.float64) for name in layers}


def np_w1(x, y):
    """Exact 1-D Wasserstein-1 from the CDFs: integral |F_x - F_y| over the merged values."""
    values = np.sort(np.concatenate([x, y]))
    fx = np.searchsorted(np.sort(x), values[:-1], side="right") / x.size
    fy = np.searchsorted(np.sort(y), values[:-1], side="right") / y.size
    return float(np.sum(np.abs(fx - fy) * np.diff(values)))


def test_colour_directions_are_64_fixed_unit_vectors():
    assert COLOUR_DIRECTIONS.shape == (64, 3)
    np.testing.assert_allclose(np.linalg.norm(COLOUR_DIRECTIONS, axis=1), 1.0, rtol=1e-12)
    # Spread over the sphere, not one repeated direction.
    assert np.abs(COLOUR_DIRECTIONS @ COLOUR_DIRECTIONS.T - np.eye(64)).min() < 0.99


def test_colour_distance_golden():
    rng = np.random.default_rng(5)
    a = rng.uniform(0, 255, (9, 11, 3))
    b = rng.uniform(0, 255, (7, 5, 3))  # another size: the CDF form
    expected = np.mean([np_w1(a.reshape(-1, 3) @ d, b.reshape(-1, 3) @ d)
                        for d in COLOUR_DIRECTIONS])
    assert colour_distance(a, b) == pytest.approx(expected, rel=1e-10)
    # Equal sizes: W1 is the mean gap of the sorted projections.
    c = rng.uniform(0, 255, (9, 11, 3))
    sorted_gaps = np.mean([np.mean(np.abs(np.sort(a.reshape(-1, 3) @ d)
                                          - np.sort(c.reshape(-1, 3) @ d)))
                           for d in COLOUR_DIRECTIONS])
    assert colour_distance(a, c) == pytest.approx(sorted_gaps, rel=1e-10)
    # A uniform shift by s of every channel moves each projection by s (d1 + d2 + d3).
    assert colour_distance(a + 10.0, a) == pytest.approx(
        10.0 * np.mean(np.abs(COLOUR_DIRECTIONS.sum(axis=1))), rel=1e-10)
    # Only the distribution counts: shuffled pixels and a repeated copy are at distance 0.
    flat = a.reshape(-1, 3)
    assert colour_distance(flat[rng.permutation(len(flat))][None], a) == pytest.approx(0, abs=1e-9)
    assert colour_distance(np.concatenate([a, a]), a) == pytest.approx(0, abs=1e-9)


def test_pair_scorer_matches_numpy(params, pictures):
    photo, style, output = pictures
    layers = DEFAULT_STYLE_LAYERS
    figures = PairScorer(photo, style, params=params).figures(output)
    # The painting (40 x 32) is scaled so that its longest side is the output's (44 px).
    scaled = np_lanczos(style, (44, 35))
    out_f = np_features(params, output, (*layers, "conv4_2"))
    ref_f = np_features(params, scaled, layers)
    for name in layers:
        g = np.einsum("hwi,hwj->ij", out_f[name], out_f[name]) / np.prod(out_f[name].shape[:2])
        a = np.einsum("hwi,hwj->ij", ref_f[name], ref_f[name]) / np.prod(ref_f[name].shape[:2])
        assert figures["gram_errors"][name] == pytest.approx(
            np.linalg.norm(g - a) / np.linalg.norm(a), rel=1e-4)
    # Content: against the photo at the output's size (the same here) and the painting
    # resized to the output's shape.
    photo_f = np_features(params, photo, ("conv4_2",))["conv4_2"]
    paint_f = np_features(params, np_lanczos(style, (36, 44)), ("conv4_2",))["conv4_2"]
    expected = np.mean((out_f["conv4_2"] - photo_f) ** 2) / np.mean((paint_f - photo_f) ** 2)
    assert figures["content"] == pytest.approx(expected, rel=1e-4)
    assert figures["colour"] == pytest.approx(colour_distance(output, scaled), rel=1e-9)
    assert layer_figures(output, photo, style, params=params) == figures


def test_pair_scorer_limits(params, pictures):
    photo, style, _ = pictures
    scorer = PairScorer(photo, style, params=params)
    same = scorer.figures(photo)
    assert same["content"] == 0.0
    assert all(v > 0.05 for v in same["gram_errors"].values())
    # The painting scored against itself (at its own size) has every Gram error 0.
    itself = PairScorer(style, style, params=params).figures(style)
    assert max(itself["gram_errors"].values()) == pytest.approx(0.0, abs=1e-6)
    assert itself["colour"] == pytest.approx(0.0, abs=1e-9)
    assert itself["content"] == 0.0  # the photo is the painting: no distance to measure
