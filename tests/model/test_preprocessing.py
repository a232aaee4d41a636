"""The network's input convention (``nst_jax._preprocessing``): RGB 0-255 <-> VGG-19 input,
against float64 NumPy written from the Keras "caffe" convention."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from nst_jax import deprocess, preprocess


def np_preprocess(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(rgb, np.float64)[..., ::-1] - np.array([103.939, 116.779, 123.68])


def rgb_image(h, w, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (h, w, 3)).astype(np.float32)


def test_preprocess_known_pixel_exact():
    rgb = np.array([[[10.0, 200.0, 37.5]]], np.float32)
    got = preprocess(rgb)
    assert got.dtype == jnp.float32
    mean_bgr = np.array([103.939, 116.779, 123.68], np.float32)
    want = np.array([[[37.5, 200.0, 10.0]]], np.float32) - mean_bgr
    np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_allclose(
        np.asarray(got)[0, 0], [37.5 - 103.939, 200 - 116.779, 10 - 123.68], rtol=0, atol=1e-5
    )


def test_preprocess_image_matches_numpy():
    rgb = rgb_image(5, 7, seed=3)
    np.testing.assert_allclose(np.asarray(preprocess(rgb)), np_preprocess(rgb), rtol=0, atol=1e-4)


def test_preprocess_accepts_integers_and_lists():
    got = preprocess(np.array([[[0, 128, 255]]], np.uint8))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(
        np.asarray(got)[0, 0], [255 - 103.939, 128 - 116.779, -123.68], atol=1e-4
    )


def test_deprocess_inverts_preprocess():
    values = np.arange(256, dtype=np.float32)
    pixels = np.stack([values, values[::-1], (values * 7) % 256], -1).reshape(16, 16, 3)
    back = deprocess(preprocess(pixels))
    assert back.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(back), pixels)  # exact at integer pixel values
    floats = rgb_image(9, 11, seed=4)
    back = deprocess(preprocess(floats))
    np.testing.assert_allclose(np.asarray(back), floats, rtol=0, atol=1e-4)
    # deprocess is the inverse map, not clipped.
    np.testing.assert_allclose(
        np.asarray(deprocess(np.zeros((1, 1, 3), np.float32)))[0, 0],
        [123.68, 116.779, 103.939],
        atol=1e-5,
    )


def test_torchvision_convention_matches_numpy():
    """RGB order, 0-1 scale, mean/std normalized: ``(rgb / 255 - mean) / std``; and back."""
    from nst_jax import TORCHVISION, Preprocessing

    rgb = rgb_image(4, 6, seed=5)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    want = (np.asarray(rgb, np.float64) / 255.0 - mean) / std
    got = preprocess(rgb, TORCHVISION)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(deprocess(got, TORCHVISION)), rgb, rtol=0, atol=1e-3)
    np.testing.assert_allclose(np.asarray(deprocess(want.astype(np.float32), TORCHVISION)), rgb,
                               rtol=0, atol=1e-3)
    # BGR with a 0-1 scale and a std: every step of x = (order(rgb) * s / 255 - mean) / std.
    custom = Preprocessing("BGR", 1.0, (0.1, 0.2, 0.3), (0.5, 2.0, 4.0))
    want = (np.asarray(rgb, np.float64)[..., ::-1] / 255.0 - [0.1, 0.2, 0.3]) / [0.5, 2.0, 4.0]
    np.testing.assert_allclose(np.asarray(preprocess(rgb, custom)), want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(deprocess(want.astype(np.float32), custom)), rgb,
                               rtol=0, atol=1e-3)
