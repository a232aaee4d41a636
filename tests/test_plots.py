"""Loss curves (``nst_jax._plots.loss_plot``): drawn with matplotlib, an optional dependency.

Replaces the old Pillow-drawn plot's tests (its colours and margins are gone with it): without
matplotlib the plot is None (the sweep says so); with it, an RGB image of the requested size
that survives non-positive and non-finite values.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from nst_jax._plots import loss_plot

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.mark.skipif(HAS_MATPLOTLIB, reason="matplotlib is installed")
def test_without_matplotlib_there_is_no_plot():
    assert loss_plot([np.geomspace(1e6, 1e3, 30)], ["a"]) is None


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="needs matplotlib (the plots extra)")
def test_loss_plot_is_an_rgb_image_of_the_requested_size():
    size = (400, 300)
    curves = [np.geomspace(1e6, 1e3, 30), np.geomspace(1e5, 1e2, 30)]
    image = loss_plot(curves, ["a", "b"], size=size)
    assert image.shape == (300, 400, 3) and image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 255
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # lines, not a blank canvas


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="needs matplotlib (the plots extra)")
def test_loss_plot_skips_zero_and_nan_values():
    size = (300, 200)
    with_gaps = np.array([1e4, 0.0, np.nan, 1e3, np.inf, -5.0, 1e2, 1e1])
    image = loss_plot([with_gaps, np.full(8, np.nan)], ["gaps", "nothing"], size=size)
    assert image.shape == (200, 300, 3)
    # No drawable value at all still gives a picture.
    assert loss_plot([np.zeros(3)], ["zero"], size=size).shape == (200, 300, 3)


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="needs matplotlib (the plots extra)")
def test_loss_plot_in_a_fresh_process():
    """As the CLI calls it: no pyplot imported, so no backend chosen (a bare Figure has no
    raster canvas there; this crashed ``nst-jax sweep`` once)."""
    code = ("import numpy as np, sys; from nst_jax._plots import loss_plot; "
            "image = loss_plot([np.geomspace(1e6, 1e3, 30)], ['a'], size=(200, 100)); "
            "assert 'matplotlib.pyplot' not in sys.modules; print(image.shape)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(100, 200, 3)"
