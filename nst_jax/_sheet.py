"""Pictures of a sweep: a labelled contact sheet and a loss-curve plot, drawn with Pillow only.

Images are RGB 0-255 (H, W, 3) arrays; the outputs are PIL images ready for ``save``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_LABEL_HEIGHT = 14
# Distinct line colours (Tableau 10).
_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def contact_sheet(images: Sequence[np.ndarray], labels: Sequence[str], *, columns: int | None = None,
                  gap: int = 4) -> Image.Image:
    """Grid of equally sized images, each with its label underneath, on white.

    Args:
        images: B arrays (H, W, 3), RGB 0-255, all the same shape.
        labels: B strings.
        columns: grid width (default: ceil(sqrt(B))).

    Returns:
        RGB image of size (columns * (W + gap) + gap, rows * (H + label + gap) + gap).
    """
    if len(images) != len(labels) or not images:
        raise ValueError("contact_sheet: need one label per image and at least one image")
    height, width = np.shape(images[0])[:2]
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    cell_w, cell_h = width + gap, height + _LABEL_HEIGHT + gap
    sheet = Image.new("RGB", (columns * cell_w + gap, rows * cell_h + gap), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (image, label) in enumerate(zip(images, labels)):
        x, y = gap + (i % columns) * cell_w, gap + (i // columns) * cell_h
        tile = np.clip(np.rint(np.asarray(image, np.float32)), 0, 255).astype(np.uint8)
        sheet.paste(Image.fromarray(tile), (x, y))
        draw.text((x, y + height + 1), _fit(draw, label, font, width), fill="black", font=font)
    return sheet


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    while text and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text


def loss_plot(curves: Sequence[np.ndarray], labels: Sequence[str], *, x: np.ndarray | None = None,
              size: tuple[int, int] = (800, 500), x_label: str = "iteration") -> Image.Image:
    """Line plot of positive loss curves on a log10 y axis, one colour per run, with a legend.

    Args:
        curves: B arrays of losses (non-positive or non-finite values are skipped).
        labels: B legend entries.
        x: x values shared by all curves (default 0..T-1).
    """
    width, height = size
    left, right, top, bottom = 70, 190, 20, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    values = np.concatenate([np.asarray(c, np.float64).ravel() for c in curves])
    values = values[np.isfinite(values) & (values > 0)]
    low, high = (np.log10(values.min()), np.log10(values.max())) if values.size else (0.0, 1.0)
    low, high = math.floor(low), max(math.ceil(high), math.floor(low) + 1)
    length = max(len(c) for c in curves)
    x = np.arange(length, dtype=np.float64) if x is None else np.asarray(x, np.float64)
    x_max = max(float(x.max()), 1e-12)

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    for decade in range(low, high + 1):
        y = top + plot_h * (high - decade) / (high - low)
        draw.line([left, y, left + plot_w, y], fill=(225, 225, 225))
        draw.text((5, y - 6), f"1e{decade}", fill="black", font=font)
    for tick in np.linspace(0, x_max, 5):
        px = left + plot_w * tick / x_max
        draw.text((px - 10, top + plot_h + 5), f"{tick:.4g}", fill="black", font=font)
    draw.text((left + plot_w / 2 - 20, height - 15), x_label, fill="black", font=font)
    for i, (curve, label) in enumerate(zip(curves, labels)):
        colour = _COLOURS[i % len(_COLOURS)]
        curve = np.asarray(curve, np.float64)
        ok = np.isfinite(curve) & (curve > 0)
        points = [(left + plot_w * x[j] / x_max,
                   top + plot_h * (high - np.log10(curve[j])) / (high - low))
                  for j in range(len(curve)) if ok[j]]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        legend_y = top + 14 * i
        draw.line([left + plot_w + 10, legend_y + 6, left + plot_w + 30, legend_y + 6],
                  fill=colour, width=3)
        draw.text((left + plot_w + 35, legend_y), _fit(draw, label, font, right - 40),
                  fill="black", font=font)
    return image
