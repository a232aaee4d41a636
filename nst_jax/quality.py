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
* :class:`PairScorer` / :func:`layer_figures` - each layer against its own scale: per style
  layer the relative Gram error ``|G - A|_F / |A|_F``, the colour distance
  (:func:`colour_distance`, sliced Wasserstein-1 of the RGB distributions) and the content
  distance (relu4_2 MSE to the photo as a fraction of the painting's). Unlike the style
  distance, which sums the layers with the objective's weights, no layer can hide behind
  another.

:func:`score` gives the four pixel and summed figures together; :class:`StyleScorer` computes a painting's Gram
matrices once for scoring many outputs against it. :func:`contact_sheet` draws a labelled grid
of images (rows x columns) with Pillow.

Only ``numpy``, ``jax``, ``PIL`` and the public ``nst_jax`` feature extractor are used.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ._sheet import _image, contact_sheet

__all__ = [
    "COLOUR_DIRECTIONS",
    "DEFAULT_STYLE_LAYERS",
    "GRID_EPS",
    "GRID_LEVELS",
    "PairScorer",
    "StyleScorer",
    "block_grid",
    "change",
    "colour_distance",
    "contact_sheet",
    "grid",
    "layer_figures",
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
# per-layer figures: each layer, the colours and the content against their own scale

#: Directions of :func:`colour_distance`: 64 unit vectors in RGB space, fixed (seed 0).
COLOUR_DIRECTIONS: np.ndarray = (lambda d: d / np.linalg.norm(d, axis=1, keepdims=True))(
    np.random.default_rng(0).standard_normal((64, 3)))


def _wasserstein1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact W1 between the empirical distributions of the columns of a (n, D) and b (m, D),
    per column (D,): ``integral_0^1 |Q_a(u) - Q_b(u)| du`` with Q the quantile functions, step
    functions that change only at u = i/n and u = j/m (the same breaks for every column)."""
    a, b = np.sort(a, axis=0), np.sort(b, axis=0)
    n, m = a.shape[0], b.shape[0]
    breaks = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
    width = np.diff(breaks, prepend=0.0)
    middle = breaks - width / 2
    rows_a = np.minimum((middle * n).astype(np.int64), n - 1)
    rows_b = np.minimum((middle * m).astype(np.int64), m - 1)
    return width @ np.abs(a[rows_a] - b[rows_b])


def colour_distance(output: Any, painting: Any) -> float:
    """Sliced Wasserstein-1 distance between the RGB distributions of two images, 0-255 units.

    ``SW1 = mean_k W1(P_out . d_k, P_painting . d_k)`` over the 64 unit directions d_k of
    :data:`COLOUR_DIRECTIONS`, where ``P . d`` are the pixels' projections and W1 the exact
    1-D Wasserstein distance of their empirical distributions (the images may differ in size).
    0 = the same colour distribution; a uniform shift of every channel by c gives
    ``c * mean_k |d_k1 + d_k2 + d_k3|``.
    """
    out = _image(output, "output").reshape(-1, 3)
    ref = _image(painting, "painting").reshape(-1, 3)
    return float(np.mean(_wasserstein1(out @ COLOUR_DIRECTIONS.T, ref @ COLOUR_DIRECTIONS.T)))


def _side(image: np.ndarray, side: int) -> np.ndarray:
    """Resized (Lanczos) so that its longest side is ``side``, aspect kept."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    return _resize(image, (max(1, round(h * scale)), max(1, round(w * scale))))


class PairScorer:
    """The per-layer figures of outputs of one photo/painting pair, each against its own scale.

    For an output x (any size; the photo is resized to it, the painting scaled so that its
    longest side is x's):

    * ``gram_errors``: per style layer l, ``|G_l(x)/M_l - A_l/M'_l|_F / |A_l/M'_l|_F``, the
      relative Frobenius error of the per-position Gram (G_l = F^T F of the (M_l, N_l) ReLU
      activations, A_l the painting's): 0 = the painting's statistics, ~1 and above = none.
    * ``colour``: :func:`colour_distance` of x and the painting (0-255 units).
    * ``content``: ``mean (F(x) - F(photo))^2 / mean (F(painting) - F(photo))^2`` at
      ``content_layer`` (conv4_2), the painting resized to x's shape: 0 = the photo's
      content, 1 = as far from it as the painting is (0 or inf when the painting is the
      photo).

    Args:
        photo, painting: (H, W, 3) RGB 0-255.
        params: VGG-19 variables; ``preprocessing`` their input convention (None: CAFFE).
    """

    def __init__(self, photo: Any, painting: Any, *, params: Any,
                 layers: Sequence[str] = DEFAULT_STYLE_LAYERS, content_layer: str = "conv4_2",
                 preprocessing: Any = None) -> None:
        self.photo, self.painting = _image(photo, "photo"), _image(painting, "painting")
        self.layers, self.content_layer = tuple(layers), content_layer
        self.params, self.preprocessing = params, preprocessing
        self._cache: dict[tuple, Any] = {}

    def _features(self, image: np.ndarray) -> dict[str, np.ndarray]:
        from . import extract_features, preprocess  # the public API only

        rgb = np.asarray(image, np.float32)
        x = preprocess(rgb) if self.preprocessing is None else preprocess(rgb, self.preprocessing)
        feats = extract_features(self.params, x, (*self.layers, self.content_layer))
        return {name: np.asarray(f, np.float64) for name, f in feats.items()}

    def _grams(self, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for name in self.layers:
            flat = feats[name].reshape(-1, feats[name].shape[-1])
            out[name] = flat.T @ flat / flat.shape[0]
        return out

    def _references(self, shape: tuple[int, ...]) -> tuple[np.ndarray, dict, np.ndarray, float]:
        """For outputs of this (H, W): the painting scaled to the longest side and its Grams,
        the photo's content features, and the painting's content MSE (computed once)."""
        key = tuple(shape[:2])
        if key not in self._cache:
            scaled = _side(self.painting, max(key))
            photo = self._features(_resize(self.photo, key))[self.content_layer]
            painting = self._features(_resize(self.painting, key))[self.content_layer]
            self._cache[key] = (scaled, self._grams(self._features(scaled)), photo,
                                float(np.mean((painting - photo) ** 2)))
        return self._cache[key]

    def figures(self, output: Any) -> dict[str, Any]:
        """``{"gram_errors": {layer: float}, "colour": float, "content": float}``."""
        out = _image(output, "output")
        scaled, painting_grams, photo_content, painting_mse = self._references(out.shape)
        feats = self._features(out)
        grams = self._grams(feats)
        errors = {name: float(np.linalg.norm(grams[name] - painting_grams[name])
                              / np.linalg.norm(painting_grams[name])) for name in self.layers}
        moved = float(np.mean((feats[self.content_layer] - photo_content) ** 2))
        content = moved / painting_mse if painting_mse else (0.0 if moved == 0 else math.inf)
        return {"gram_errors": errors, "colour": colour_distance(out, scaled),
                "content": content}


def layer_figures(output: Any, photo: Any, painting: Any, *, params: Any,
                  layers: Sequence[str] = DEFAULT_STYLE_LAYERS, content_layer: str = "conv4_2",
                  preprocessing: Any = None) -> dict[str, Any]:
    """:meth:`PairScorer.figures` of one output (build a :class:`PairScorer` to score many)."""
    return PairScorer(photo, painting, params=params, layers=layers,
                      content_layer=content_layer, preprocessing=preprocessing).figures(output)


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
