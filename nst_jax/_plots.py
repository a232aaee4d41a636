"""Loss curves with matplotlib, an optional dependency (``pip install 'nst-jax[plots]'``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def loss_plot(curves: Sequence[np.ndarray], labels: Sequence[str], *,
              x: np.ndarray | None = None, x_label: str = "iteration",
              size: tuple[int, int] = (800, 500)) -> np.ndarray | None:
    """One line per curve on a log y axis, with a legend, as an (H, W, 3) RGB 0-255 image;
    None when matplotlib is not installed. Non-positive and non-finite values are skipped.

    Args:
        curves: B arrays of losses.
        labels: B legend entries.
        x: x values shared by all curves (default 0..T-1).
        size: (width, height) in pixels.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None

    dpi = 100
    figure = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    # Its own raster canvas: a bare Figure has none unless pyplot has set a backend.
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for curve, label in zip(curves, labels):
        curve = np.asarray(curve, np.float64)
        steps = np.arange(len(curve)) if x is None else np.asarray(x, np.float64)[:len(curve)]
        keep = np.isfinite(curve) & (curve > 0)
        axes.plot(steps[keep], curve[keep], label=label, linewidth=1.5)
    axes.set_yscale("log")
    axes.set_xlabel(x_label)
    axes.set_ylabel("loss")
    axes.grid(True, which="major", alpha=0.3)
    if len(labels) <= 20:
        axes.legend(fontsize="small", loc="upper right")
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(np.float32)
