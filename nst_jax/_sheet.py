"""Contact sheets: a labelled grid of images drawn with Pillow (re-exported by
:mod:`nst_jax.quality`). Images are (H, W, 3) RGB 0-255 arrays, grey (H, W) arrays or PIL
images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _image(x: Any, name: str = "image") -> np.ndarray:
    """As float64 (H, W, 3); grey (H, W) or (H, W, 1) is repeated over three channels."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name}: expected an (H, W, 3) RGB image, got shape {np.shape(x)}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: Any) -> tuple[int, int]:
    if not text:
        return 0, 0
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _as_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    a = _image(image)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def contact_sheet(rows: Sequence[Sequence[Any]], row_labels: Sequence[str] | None = None,
                  column_labels: Sequence[str] | None = None, *,
                  cell: tuple[int, int] | None = None, zoom: int = 1, gap: int = 6,
                  font_size: int = 12,
                  background: str | tuple[int, int, int] = "white",
                  missing: str = "failed") -> Image.Image:
    """A labelled grid of images: ``rows[r][c]`` in row r, column c.

    Args:
        rows: R sequences of images ((H, W, 3) RGB 0-255 arrays, grey (H, W) arrays, or PIL
            images); sizes may differ. ``None`` draws an empty grey cell marked ``missing``
            (e.g. a failed run). Rows may be shorter than the longest one.
        row_labels: R strings, drawn left of each row (None: no label column).
        column_labels: one string per column, drawn above it (None: no header row).
        cell: (width, height) of every cell; images larger than it are shrunk to fit
            (Lanczos, aspect kept), never enlarged. Default: the largest image width and height
            (after ``zoom``), so nothing is resampled.
        zoom: integer enlargement of every image first, nearest neighbour (each pixel becomes a
            zoom x zoom square, so block artefacts of small outputs stay visible).
        gap: pixels between cells and around the sheet.

    Returns:
        RGB image: each image is centred in its cell, pixels unchanged unless zoomed or shrunk.
        Width = label column + C * (cell_w + gap) + gap; height = header + R * (cell_h + gap)
        + gap.
    """
    rows = [list(r) for r in rows]
    if not rows or not any(rows):
        raise ValueError("contact_sheet: need at least one image")
    n_cols = max(len(r) for r in rows)
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"contact_sheet: {len(rows)} rows but {len(row_labels)} row labels")
    if column_labels is not None and len(column_labels) > n_cols:
        raise ValueError(f"contact_sheet: {n_cols} columns but {len(column_labels)} labels")
    zoom = int(zoom)
    if zoom < 1:
        raise ValueError(f"contact_sheet: zoom must be a positive integer, got {zoom}")
    pictures = [[None if im is None else _as_pil(im) for im in r] for r in rows]
    if zoom > 1:
        pictures = [[None if p is None else p.resize((p.width * zoom, p.height * zoom),
                                                     Image.NEAREST) for p in r]
                    for r in pictures]
    if cell is None:
        sizes = [p.size for r in pictures for p in r if p is not None] or [(64, 64)]
        cell = (max(s[0] for s in sizes), max(s[1] for s in sizes))
    cell_w, cell_h = int(cell[0]), int(cell[1])

    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = _text_size(probe, "Ag", font)[1] + 4
    label_w = 0
    if row_labels is not None:
        label_w = max(_text_size(probe, str(t), font)[0] for t in row_labels) + gap
    header_h = line_h + gap if column_labels is not None else 0

    width = label_w + n_cols * (cell_w + gap) + gap
    height = header_h + len(rows) * (cell_h + gap) + gap
    sheet = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(sheet)
    text_colour = (0, 0, 0)

    def x0(c: int) -> int:
        return label_w + gap + c * (cell_w + gap)

    def y0(r: int) -> int:
        return header_h + gap + r * (cell_h + gap)

    for c, text in enumerate(column_labels or []):
        tw, _ = _text_size(draw, str(text), font)
        draw.text((x0(c) + max(0, (cell_w - tw) // 2), gap), str(text), fill=text_colour,
                  font=font)
    for r, row in enumerate(pictures):
        if row_labels is not None:
            th = _text_size(draw, str(row_labels[r]), font)[1]
            draw.text((gap, y0(r) + (cell_h - th) // 2), str(row_labels[r]), fill=text_colour,
                      font=font)
        for c, pic in enumerate(row):
            if pic is None:
                draw.rectangle([x0(c), y0(r), x0(c) + cell_w - 1, y0(r) + cell_h - 1],
                               fill=(200, 200, 200))
                tw, th = _text_size(draw, missing, font)
                draw.text((x0(c) + (cell_w - tw) // 2, y0(r) + (cell_h - th) // 2), missing,
                          fill=(160, 0, 0), font=font)
                continue
            if pic.width > cell_w or pic.height > cell_h:
                s = min(cell_w / pic.width, cell_h / pic.height)
                pic = pic.resize((max(1, round(pic.width * s)), max(1, round(pic.height * s))),
                                 Image.LANCZOS)
            sheet.paste(pic, (x0(c) + (cell_w - pic.width) // 2,
                              y0(r) + (cell_h - pic.height) // 2))
    return sheet
