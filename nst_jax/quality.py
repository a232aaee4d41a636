"""Quality figures of a stylized image: how much style, how much change, block artefacts, clipping.

Every image is an (H, W, 3) RGB array in 0-255 units (float or integer; grey (H, W) arrays are
taken as three equal channels). All figures are plain Python floats:

* :func:`style_distance` - the Gatys et al. style loss of the output against the painting,
  relative to the same loss of the unchanged photo: 1.0 = no style transferred, 0.0 = the
  painting's Gram statistics reproduced exactly (at the VGG-19 layers used).
* :func:`change` - mean absolute difference from the photo, 0-255 units (how far the output
  departed from the photo; neither 0 nor large is the goal).
* :func:`grid` - excess 2^k-pixel block pattern of the output over the photo's
  (:func:`block_grid`; ~0 for a clean output, > 0 when a 4/8/16/32-px lattice shows).
* :func:`saturation` - fraction of pixels with a channel clipped at 0 or 255.

:func:`score` gives the four together; :class:`StyleScorer` computes a painting's Gram
matrices once for scoring many outputs against it. :func:`contact_sheet` draws a labelled grid
of images (rows x columns) with Pillow.

Only ``numpy``, ``jax``, ``PIL`` and the public ``nst_jax`` feature extractor are used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "DEFAULT_STYLE_LAYERS",
    "GRID_EPS",
    "GRID_LEVELS",
    "StyleScorer",
    "block_grid",
    "change",
    "contact_sheet",
    "grid",
    "saturation",
    "score",
    "style_distance",
    "style_scorer",
]

#: Gatys et al. (2016) style layers.
DEFAULT_STYLE_LAYERS: tuple[str, ...] = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
#: Block periods 2^k tested by :func:`block_grid` (4, 8, 16, 32 px).
GRID_LEVELS: tuple[int, ...] = (2, 3, 4, 5)
#: Added to both means of :func:`block_grid`'s ratio (0-255 units), so flat images give 1.0
#: instead of 0/0, and an image of exactly constant blocks gives a large finite number.
GRID_EPS = 0.01


# --------------------------------------------------------------------------------------------
# helpers


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


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Lanczos resize of a float (H, W, 3) image to ``shape`` = (H', W'), per channel in
    float32 (no 8-bit rounding)."""
    h, w = shape
    if image.shape[:2] == (h, w):
        return image
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], np.float32))
                   .resize((w, h), Image.LANCZOS), np.float64)
        for c in range(image.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def _matched(output: Any, photo: Any) -> tuple[np.ndarray, np.ndarray]:
    out, ph = _image(output, "output"), _image(photo, "photo")
    return out, _resize(ph, out.shape[:2])


# --------------------------------------------------------------------------------------------
# style distance


class StyleScorer:
    """A painting's per-position Gram matrices, computed once, for scoring many outputs.

    For each layer l with N_l channels and M_l = h_l * w_l positions, the painting's target is
    ``A_l / M'_l`` (its Gram divided by its own number of positions). The style error of an
    image x is

        E(x) = mean_l  1 / (4 N_l^2) * sum_ij (G_l(x) / M_l - A_l / M'_l)_ij^2

    with activations in the VGG-19 network's own units (ReLU outputs of the given layers of
    ``params``). Dividing each Gram by its own M makes the error independent of image size,
    so outputs, photo and painting may have different sizes.

    Args:
        style: the painting, (H, W, 3) RGB 0-255.
        params: VGG-19 variables (:func:`nst_jax.load_vgg19_params` or
            :func:`nst_jax.random_vgg19_params`).
        layers: style layers (default :data:`DEFAULT_STYLE_LAYERS`).
        preprocessing: input convention for :func:`nst_jax.preprocess` (None: its default,
            CAFFE; use :func:`nst_jax.load_preprocessing` of the weights file when it records
            another one).
    """

    def __init__(self, style: Any, *, params: Any, layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
                 preprocessing: Any = None) -> None:
        self.layers = tuple(layers)
        if not self.layers:
            raise ValueError("StyleScorer: need at least one style layer")
        self.params = params
        self.preprocessing = preprocessing
        self.targets = self.grams(style)
        self._photo_errors: dict[tuple, float] = {}

    def grams(self, image: Any) -> dict[str, np.ndarray]:
        """Per-position Grams ``G_l / M_l`` of an image, float64 (N_l, N_l) per layer."""
        from . import extract_features, gram_matrix, preprocess  # the public API only

        rgb = np.asarray(_image(image), np.float32)
        x = preprocess(rgb) if self.preprocessing is None else preprocess(rgb, self.preprocessing)
        feats = extract_features(self.params, x, self.layers)
        out = {}
        for name in self.layers:
            f = feats[name]
            positions = int(f.shape[0]) * int(f.shape[1])
            out[name] = np.asarray(gram_matrix(f), np.float64) / positions
        return out

    def error(self, image: Any) -> float:
        """E(image): the mean over layers of ``sum((G/M - A/M')^2) / (4 N^2)`` (see class)."""
        grams = self.grams(image)
        per_layer = []
        for name in self.layers:
            diff = grams[name] - self.targets[name]
            n = diff.shape[0]
            per_layer.append(float(np.sum(diff * diff)) / (4.0 * n * n))
        return float(np.mean(per_layer))

    def photo_error(self, photo: Any, shape: tuple[int, int] | None = None) -> float:
        """E(photo), the photo first resized (Lanczos) to ``shape`` if given; cached per photo
        content and shape, so scoring many outputs of one photo computes it once."""
        ph = _image(photo, "photo")
        if shape is not None:
            ph = _resize(ph, tuple(shape))
        key = (ph.shape, hashlib.sha1(np.ascontiguousarray(ph, np.float32).tobytes()).hexdigest())
        if key not in self._photo_errors:
            self._photo_errors[key] = self.error(ph)
        return self._photo_errors[key]

    def distance(self, output: Any, photo: Any) -> float:
        """``E(output) / E(photo)``, the photo resized to the output's size if they differ.

        1.0: the output carries the photo's style statistics (nothing transferred); 0.0: the
        painting's exactly. ``inf`` if the photo already has the painting's statistics
        exactly (E(photo) = 0) and the output does not, 0.0 if both are exact.
        """
        out = _image(output, "output")
        num = self.error(out)
        den = self.photo_error(photo, out.shape[:2])
        if den == 0.0:
            return 0.0 if num == 0.0 else float("inf")
        return num / den

    __call__ = distance


def style_scorer(style: Any, *, params: Any, layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
                 preprocessing: Any = None) -> StyleScorer:
    """A :class:`StyleScorer` for ``style``: call it as ``scorer(output, photo)``."""
    return StyleScorer(style, params=params, layers=layers, preprocessing=preprocessing)


def style_distance(output: Any, photo: Any, style: Any, *, params: Any,
                   layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
                   preprocessing: Any = None) -> float:
    """Relative Gatys style loss of ``output`` against ``style``, dimensionless.

    ``style_distance = E(output) / E(photo)`` with, for VGG-19 layers l (N_l channels,
    M_l = h_l * w_l positions of that image at that layer, G_l = F_l^T F_l the unnormalized
    Gram of the (M_l, N_l) activations, A_l the painting's, M'_l its positions):

        E(x) = (1 / L) * sum_l  1 / (4 N_l^2) * sum_ij (G_l(x) / M_l - A_l / M'_l)_ij^2

    ``photo`` is resized (Lanczos) to the output's size if the shapes differ. 1.0 = no style
    at all (the photo's statistics), 0.0 = the painting's statistics exactly. Images are
    (H, W, 3) RGB 0-255. To score many outputs against one painting, build a
    :class:`StyleScorer` once instead.
    """
    return StyleScorer(style, params=params, layers=layers,
                       preprocessing=preprocessing).distance(output, photo)


# --------------------------------------------------------------------------------------------
# pixel figures


def change(output: Any, photo: Any) -> float:
    """Mean ``|output - photo|`` over all pixels and channels, 0-255 units.

    The photo is resized (Lanczos) to the output's size if the shapes differ.
    """
    out, ph = _matched(output, photo)
    return float(np.mean(np.abs(out - ph)))


def _grid_ratios(image: Any) -> dict[tuple[int, int], float]:
    """``{(axis, k): ratio}`` for :func:`block_grid` (axis 0: steps between rows)."""
    a = _image(image)
    ratios = {}
    for axis in (0, 1):
        # |x[i+1] - x[i]| along the axis, then the mean over channels and the other axis:
        # one number per step i (between index i and i + 1).
        steps = np.abs(np.diff(a, axis=axis)).mean(axis=(1 - axis, 2))
        index = np.arange(steps.shape[0])
        for k in GRID_LEVELS:
            border = (index + 1) % (2**k) == 0
            if border.all() or not border.any():
                continue  # too small for this period
            ratios[(axis, k)] = float((steps[border].mean() + GRID_EPS)
                                      / (steps[~border].mean() + GRID_EPS))
    return ratios


def block_grid(image: Any) -> float:
    """Strength of a 2^k-pixel block lattice in one image, dimensionless.

    For each axis and k in :data:`GRID_LEVELS` (periods 4, 8, 16, 32 px), let ``s_i`` be the
    mean over channels and over the other axis of ``|x[i+1] - x[i]|`` (the step between index
    i and i+1). The ratio for (axis, k) is

        (mean_{i: (i+1) % 2^k == 0} s_i + eps) / (mean_{other i} s_i + eps),  eps = GRID_EPS

    i.e. the mean step across the lattice's borders over the mean step elsewhere. The result
    is the largest ratio (1.0 if the image is too small for any period). A photo gives ~1.0,
    an image made of constant 2^k blocks a large number (~ mean border step / eps).
    """
    ratios = _grid_ratios(image)
    return max(ratios.values()) if ratios else 1.0


def grid(output: Any, photo: Any) -> float:
    """``block_grid(output) - block_grid(photo)``: the block lattice the stylization added.

    ~0 for a clean output; > 0 when a 4/8/16/32-px pattern appears (e.g. from strided or
    pooled gradients). The photo is used at its own size.
    """
    return block_grid(output) - block_grid(photo)


def saturation(image: Any, *, margin: float = 0.5) -> float:
    """Fraction (0-1) of pixels with any channel ``<= margin`` or ``>= 255 - margin``.

    Counts pixels (H * W), not channel values; with the default margin, values that round to
    0 or 255 in an 8-bit file.
    """
    a = _image(image)
    clipped = ((a <= margin) | (a >= 255.0 - margin)).any(axis=-1)
    return float(clipped.mean())


def score(output: Any, photo: Any, style: Any, *, params: Any = None,
          layers: Sequence[str] = DEFAULT_STYLE_LAYERS, preprocessing: Any = None,
          scorer: StyleScorer | None = None, margin: float = 0.5) -> dict[str, float]:
    """The four figures of one output.

    Returns:
        ``{"style_distance": ..., "change": ..., "grid": ..., "saturation": ...}`` (see
        :func:`style_distance`, :func:`change`, :func:`grid`, :func:`saturation`). Pass a
        prebuilt ``scorer`` (its painting must be ``style``; ``style``, ``params``, ``layers``
        and ``preprocessing`` are then ignored) to reuse the painting's Grams.
    """
    if scorer is None:
        if params is None:
            raise ValueError("score: pass params (VGG-19 variables) or a StyleScorer")
        scorer = StyleScorer(style, params=params, layers=layers, preprocessing=preprocessing)
    return {
        "style_distance": scorer.distance(output, photo),
        "change": change(output, photo),
        "grid": grid(output, photo),
        "saturation": saturation(output, margin=margin),
    }


# --------------------------------------------------------------------------------------------
# contact sheet


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

