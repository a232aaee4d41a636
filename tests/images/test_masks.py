"""Region masks from files (``nst_jax.images._masks``): one grayscale image per style, or one
label image whose colours are the regions. (End to end with ``--mask`` / ``--label-map``:
tests/cli/test_cli_features.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nst_jax import ImageError
from nst_jax.images import load_label_map, load_masks


def _save(path, pixels):
    Image.fromarray(np.asarray(pixels, np.uint8)).save(path)
    return path


def test_masks_are_white_regions_resized_to_the_content(tmp_path):
    left = np.zeros((20, 40), np.uint8)
    left[:, :20] = 255
    paths = [_save(tmp_path / "left.png", left), _save(tmp_path / "right.png", 255 - left)]
    masks = load_masks(paths, (10, 20))
    assert masks.shape == (2, 10, 20) and masks.dtype == np.float32
    assert masks.min() >= 0 and masks.max() <= 1
    np.testing.assert_array_equal(masks[0][:, :9], 1.0)
    np.testing.assert_array_equal(masks[0][:, 11:], 0.0)
    np.testing.assert_allclose(masks.sum(axis=0), 1.0, atol=1e-6)


def test_masks_must_cover_the_image(tmp_path):
    half = np.zeros((20, 40), np.uint8)
    half[:, :20] = 255
    path = _save(tmp_path / "half.png", half)
    with pytest.raises(ImageError, match="50% of the image in no region"):
        load_masks([path], (20, 40))


def test_label_map_colours_are_regions_darkest_first(tmp_path):
    labels = np.full((6, 8, 3), 200, np.uint8)
    labels[:, :4] = 10
    labels[:2] = (90, 0, 0)
    path = _save(tmp_path / "labels.png", labels)
    masks = load_label_map(path, (6, 8), 3)
    assert masks.shape == (3, 6, 8) and masks.dtype == np.float32
    np.testing.assert_array_equal(masks.sum(axis=0), 1.0)  # one-hot
    codes = labels.astype(np.int64) @ np.array([1, 256, 65536])
    for region, value in enumerate(np.unique(codes)):
        np.testing.assert_array_equal(masks[region], codes == value)
    with pytest.raises(ImageError, match="3 colours, expected 2"):
        load_label_map(path, (6, 8), 2)


def test_label_map_is_resized_with_nearest_neighbour(tmp_path):
    labels = np.zeros((4, 4, 3), np.uint8)
    labels[:, 2:] = 255
    masks = load_label_map(_save(tmp_path / "l.png", labels), (8, 8), 2)
    np.testing.assert_array_equal(masks[1], np.repeat(np.repeat(labels[..., 0] / 255, 2, 0), 2, 1))
