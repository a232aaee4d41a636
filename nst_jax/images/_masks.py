"""Region masks for guided style transfer (Gatys et al. 2017, Sec. 4), from image files.

Masks are (R, H, W) float32 in [0, 1], one per style image, at the content's size (H, W).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .._errors import ImageError
from ._io import load_image


def load_masks(paths, shape: tuple[int, int], *, max_pixels: int | None = None) -> np.ndarray:
    """Region masks for guided style transfer: one grayscale image per style, white = the region
    painted in that style; resized (bilinear) to ``shape`` = (H, W) of the content.

    Returns:
        (R, H, W) float32 in [0, 1]. Raises :class:`ImageError` for an unreadable file or masks
        that leave part of the image uncovered (every pixel must belong to some region).
    """
    masks = []
    for path in paths:
        grey = load_image(path, max_pixels=max_pixels).mean(axis=-1)
        img = Image.fromarray(grey.astype(np.float32), mode="F")
        masks.append(np.asarray(img.resize(shape[::-1], Image.Resampling.BILINEAR)) / 255.0)
    masks = np.clip(np.stack(masks), 0.0, 1.0).astype(np.float32)
    uncovered = float(np.mean(masks.sum(axis=0) < 0.5))
    if uncovered > 0.01:
        raise ImageError(f"{paths[0]}...: the masks leave {uncovered:.0%} of the image in no "
                         "region (white = region; together they must cover the image)")
    return masks


def load_label_map(path, shape: tuple[int, int], regions: int, *,
                   max_pixels: int | None = None) -> np.ndarray:
    """Region masks from one label image: its distinct colours, sorted (darkest first for
    grayscale), are regions 0, 1, ...; resized (nearest) to ``shape`` = (H, W).

    Returns:
        (regions, H, W) float32 one-hot masks. Raises :class:`ImageError` when the image does
        not have exactly ``regions`` colours (one per style).
    """
    rgb = load_image(path, max_pixels=max_pixels).astype(np.uint8)
    img = Image.fromarray(rgb).resize(shape[::-1], Image.Resampling.NEAREST)
    codes = np.asarray(img).astype(np.int64) @ np.array([1, 256, 65536])
    values = np.unique(codes)
    if len(values) != regions:
        raise ImageError(f"{path}: label map has {len(values)} colours, expected {regions} "
                         f"(one per style image; an anti-aliased or JPEG map has extra colours: "
                         "save it as PNG without smoothing)")
    return np.stack([(codes == v) for v in values]).astype(np.float32)
