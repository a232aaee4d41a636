"""Coarse-to-fine stylization and frame sequences: loops of :func:`~nst_jax.stylize` runs, each
warm-started from an earlier result.

Multi-scale: the image is optimized at a small size first, upsampled, and refined at each larger
size (as neural-style's ``multires.sh`` and crowsonkb/style-transfer do). The coarse scales fix the
large structures cheaply, so the large scales need few iterations: this is the route to 2000+ px.

Frames: each frame of a sequence is initialised from the previous frame's result (reduces
flicker: the optimizer only moves pixels the new content asks to move), and the style Grams are
computed once for the whole sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._model import min_image_side
from .._objective import StyleConfig, Targets, _as_style_list, make_targets, with_weights
from ._stylize import StylizeResult, initial_image, stylize


#: The default schedule (chosen on the pretrained VGG-19 at 512 px, docs/benchmarks/quality.md):
#: sizes grow by sqrt(2) from 128 px, and each scale gets 2/3 of the iterations of the one
#: before it, so most iterations run where they are cheap (a 128-px iteration costs ~1/8 of a
#: 512-px one here) and the large scales only refine what the small ones found.
SCALE_FACTOR = 2 ** 0.5
MIN_SIZE = 128
ITERATION_RATIO = 2 / 3


def pyramid_sizes(size: int, *, factor: float = SCALE_FACTOR, min_size: int = MIN_SIZE
                  ) -> list[int]:
    """Longest sides of a pyramid ending at ``size``: ``size / factor^k`` for k = K..0, the
    smallest at least ``min_size`` (or ``size`` itself if it is smaller).

    >>> pyramid_sizes(2048, factor=2, min_size=256)
    [256, 512, 1024, 2048]
    >>> pyramid_sizes(512)
    [128, 181, 256, 362, 512]
    """
    if size < 1 or min_size < 1:
        raise ValueError("sizes must be positive")
    if not factor > 1:
        raise ValueError(f"factor must be > 1, got {factor}")
    sizes = [size]
    while round(size / factor ** len(sizes)) >= min_size:
        sizes.insert(0, round(size / factor ** len(sizes)))
    return sizes


def split_iterations(total: int, scales: int, *, ratio: float = ITERATION_RATIO) -> list[int]:
    """``total`` iterations over ``scales`` scales, smallest first: scale k+1 gets ``ratio``
    times the iterations of scale k (``total * ratio^k / sum_j ratio^j``, rounded by largest
    remainder so that they add up to ``total``; every scale gets at least one).

    >>> split_iterations(500, 5)
    [192, 128, 85, 57, 38]
    """
    if scales < 1 or total < scales:
        raise ValueError(f"{total} iterations cannot be split over {scales} scales (at least "
                         "one each)")
    shares = [total * ratio ** k / sum(ratio ** j for j in range(scales)) for k in range(scales)]
    counts = [int(share) for share in shares]
    by_remainder = sorted(range(scales), key=lambda k: counts[k] - shares[k])
    for k in by_remainder[:total - sum(counts)]:
        counts[k] += 1
    for k in range(scales):  # at least one each, taken from the largest
        if counts[k] == 0:
            counts[k], counts[0] = 1, counts[0] - 1
    return counts


def _shape_at(shape: tuple[int, int], side: int) -> tuple[int, int]:
    scale = side / max(shape)
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def _resize(image, shape: tuple[int, int], channels: bool = True) -> jax.Array:
    """Antialiased resize (Lanczos) of an (H, W, C) image or (R, H, W) masks to ``shape``."""
    image = jnp.asarray(image, jnp.float32)
    target = (*shape, image.shape[-1]) if channels else (image.shape[0], *shape)
    if image.shape == target:
        return image
    return jax.image.resize(image, target, "lanczos3", antialias=True)


class MultiscaleResult(NamedTuple):
    """Outcome of :func:`stylize_multiscale`.

    Attributes:
        image: (H, W, 3) final image, RGB 0-255, at the content's size.
        scales: one :class:`StylizeResult` per scale, smallest first.
        sizes: the longest side of each scale.
    """

    image: np.ndarray
    scales: list[StylizeResult]
    sizes: list[int]


def stylize_multiscale(
    content,
    style,
    *,
    params,
    sizes: Sequence[int] | None = None,
    iterations: int | Sequence[int] = 500,
    masks=None,
    init="content",
    key: jax.Array | None = None,
    on_scale: Callable[[int, int], None] | None = None,
    **kwargs,
) -> MultiscaleResult:
    """Coarse-to-fine :func:`~nst_jax.stylize`: scale k is initialised with scale k-1's result,
    upsampled (Lanczos) to scale k's size.

    Args:
        content: (H, W, 3) RGB 0-255 at the final size; ``sizes[-1]`` must equal max(H, W).
        style: one style image or a sequence (RGB 0-255), at the size to use at the final
            scale: each scale shrinks them by the same factor as the content, so brush strokes
            keep their size relative to the image.
        sizes: longest side of each scale, increasing, the last = max(H, W); default
            :func:`pyramid_sizes` of the content (sqrt(2) steps from 128 px).
        iterations: the total, split over the scales by :func:`split_iterations` (each
            scale 2/3 of the one before), or one count per scale.
        masks: (R, H, W) region masks at the final size (resized to each scale).
        init: the first scale's init (see :func:`~nst_jax.stylize`); an image is resized.
        on_scale: called as ``on_scale(index, size)`` before each scale starts.
        **kwargs: passed to every :func:`~nst_jax.stylize` call (config, weights, tol, ...).

    Returns:
        :class:`MultiscaleResult`.
    """
    content = jnp.asarray(content, jnp.float32)
    sizes = [int(s) for s in (sizes or pyramid_sizes(max(content.shape[:2])))]
    if not sizes or sizes != sorted(set(sizes)):
        raise ValueError(f"sizes must be increasing, got {sizes}")
    if sizes[-1] != max(content.shape[:2]):
        raise ValueError(f"the last size ({sizes[-1]}) must be the content's longest side "
                         f"({max(content.shape[:2])})")
    counts = split_iterations(int(iterations), len(sizes)) if np.ndim(iterations) == 0 else \
        [int(i) for i in iterations]
    if len(counts) != len(sizes):
        raise ValueError(f"{len(counts)} iteration counts for {len(sizes)} scales")
    config, params = with_weights(kwargs.pop("config", None) or StyleConfig(), params)
    need = min_image_side(config.feature_layers)
    styles = _as_style_list(style)
    key = jax.random.key(0) if key is None else key
    results: list[StylizeResult] = []
    image = None
    for index, (side, count) in enumerate(zip(sizes, counts)):
        shape = _shape_at(content.shape[:2], side)
        if min(shape) < need:
            raise ValueError(f"scale {side} px gives a {shape[1]}x{shape[0]} image; the layers "
                             f"used need at least {need} px per side (raise the smallest size)")
        if on_scale is not None:
            on_scale(index, side)
        scaled_content = _resize(content, shape)
        factor = side / sizes[-1]
        scaled_styles = [
            _resize(s, _shape_at(s.shape[:2], max(need, round(max(s.shape[:2]) * factor))))
            for s in styles
        ]
        if image is None:
            start = init if isinstance(init, str) else _resize(init, shape)
            start = initial_image(start, scaled_content, scaled_styles, key=key,
                                  preprocessing=config.preprocessing)
        else:
            start = jnp.clip(_resize(image, shape), 0.0, 255.0)
        scaled_masks = None if masks is None else jnp.clip(
            _resize(masks, shape, channels=False), 0.0, 1.0)
        result = stylize(scaled_content, scaled_styles, params=params, config=config,
                         masks=scaled_masks, init=start, key=key, iterations=count, **kwargs)
        results.append(result)
        image = result.image
    return MultiscaleResult(np.asarray(image), results, sizes)


_content_features = jax.jit(
    lambda params, content, config: tuple(
        config.features(params, content, config.content_layers)[name]
        for name in config.content_layers),
    static_argnums=2,
)


def stylize_frames(
    frames: Iterable,
    style,
    *,
    params,
    config: StyleConfig | None = None,
    style_blend=None,
    init="content",
    key: jax.Array | None = None,
    **kwargs,
) -> Iterator[StylizeResult]:
    """Stylize a sequence of equally sized frames, yielding one result per frame.

    The style Grams are computed once; frame t > 0 starts from frame t-1's result (frame 0
    from ``init``), the warm start of Ruder et al. 2016 without optical flow. Every frame
    has the same shape, so the optimizer is compiled once.

    Args:
        frames: iterable of (H, W, 3) RGB 0-255 arrays, all of one shape.
        style: a style image or a sequence (blended with ``style_blend``).
        **kwargs: passed to :func:`~nst_jax.stylize` (weights, iterations, tol, callback, ...).
    """
    config, params = with_weights(config or StyleConfig(), params)
    key = jax.random.key(0) if key is None else key
    targets: Targets | None = None
    previous = None
    for index, frame in enumerate(frames):
        frame = jnp.asarray(frame, jnp.float32)
        if targets is None:
            targets = make_targets(params, frame, style, config, style_blend=style_blend)
        else:
            if frame.shape != previous.shape:
                raise ValueError(f"frame {index} has shape {frame.shape}, expected "
                                 f"{previous.shape} (all frames must have one size)")
            targets = targets._replace(
                content_features=_content_features(params, frame, config))
        start = init if previous is None else previous
        result = stylize(frame, style, params=params, config=config, targets=targets,
                         init=start, key=jax.random.fold_in(key, index), **kwargs)
        previous = jnp.asarray(result.image)
        yield result

