"""The redesign changed no output: two fixed ``nst-jax stylize`` runs write the same pixels and
the same loss history as the code before it (``tests/data/golden_cli.npz``, recorded with it).

``adam``: ``nst-jax stylize tests/data/chelsea.png tests/data/starry_night.png -o adam.png
--size 32 --iterations 5 --weights random --optimizer adam --log adam.json``; ``adam_lum``: the
same plus ``--preserve-colors luminance --init noise --seed 3 --tv-weight 1e-3``. Adam (not the
default L-BFGS, which the redesign replaced) keeps the comparison about everything else: images
in and out, the weights, the objective, the loop, the log. The defaults of the loss weights were
re-chosen on the pretrained weights at the same time, so the runs here give the old defaults
explicitly (``--content-weight 1 --style-weight 1e3 --tv-weight 0``), and so the Gatys losses
and one scale that later defaults replaced (``--content-norm gatys --style-norm gatys
--scale-factor 1``): a flag keeps its meaning.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from nst_jax.cli import main

GOLDEN = DATA / "golden_cli.npz"
BASE = ["stylize", DATA / "chelsea.png", DATA / "starry_night.png", "--size", "32",
        "--iterations", "5", "--weights", "random", "--optimizer", "adam",
        "--content-weight", "1", "--style-weight", "1e3", "--tv-weight", "0",
        "--content-norm", "gatys", "--style-norm", "gatys", "--scale-factor", "1"]
RUNS = {
    "adam": [],
    "adam_lum": ["--preserve-colors", "luminance", "--init", "noise", "--seed", "3",
                 "--tv-weight", "1e-3"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_cli_output_equals_the_recording_from_before_the_redesign(name, tmp_path, monkeypatch):
    monkeypatch.setenv("NST_JAX_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    args = [*BASE, "-o", f"{name}.png", "--log", f"{name}.json", *RUNS[name]]
    assert main([str(a) for a in args]) == 0
    with np.load(GOLDEN) as golden:
        pixels, loss = golden[f"{name}_pixels"], golden[f"{name}_loss"]
    with Image.open(tmp_path / f"{name}.png") as image:
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), pixels)
    history = json.loads((tmp_path / f"{name}.json").read_text())["history"]
    assert len(history["loss"]) == len(loss) == 6  # the initial image and 5 iterations
    np.testing.assert_array_equal(np.asarray(history["loss"], np.float32), loss)
