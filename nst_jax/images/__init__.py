"""Images in and out: files <-> (H, W, 3) float32 RGB 0-255 arrays, region masks, colour.

Pixel convention everywhere outside the network: one image, (H, W, 3), float32, RGB, 0-255.
"""

from ._color import luminance_images, match_color, recombine_luminance, rgb_to_yiq, yiq_to_rgb
from ._io import MAX_PIXELS, check_writable, load_image, read_metadata, resize_array, save_image
from ._masks import load_label_map, load_masks

__all__ = [
    "MAX_PIXELS",
    "check_writable",
    "load_image",
    "load_label_map",
    "load_masks",
    "luminance_images",
    "match_color",
    "read_metadata",
    "recombine_luminance",
    "resize_array",
    "rgb_to_yiq",
    "save_image",
    "yiq_to_rgb",
]
