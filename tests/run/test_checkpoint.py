"""Checkpoints: exact round trips, damaged files, resume == uninterrupted (API and CLI), and a
fault-injection run that is SIGKILLed at random moments and must always leave valid files.

Every run uses the same tiny setup (32 px, two style layers) as the CLI runs below, so the
optimizer loop compiles once in this process and the CLI subprocesses load it from the
persistent compilation cache (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from nst_jax import NstError, OptState, StyleConfig, load_image, stylize
from nst_jax.cli import main
from nst_jax.images import read_metadata
from nst_jax.run._checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    meta_differences,
    read_checkpoint_meta,
    save_checkpoint,
    state_template,
)
from nst_jax.solvers import SolverConfig
SIZE = 32
LAYERS = ["--style-layers", "conv1_1,conv2_1", "--content-layers", "conv2_1"]
CONFIG = StyleConfig(style_layers=("conv1_1", "conv2_1"), content_layers=("conv2_1",))


@pytest.fixture(scope="module")
def images():
    # Loaded exactly as the CLI loads them, so in-process and CLI runs share compiled code.
    return (load_image(DATA / "chelsea.png", max_side=SIZE),
            load_image(DATA / "starry_night.png", max_side=SIZE))


def _run(images, params, config, iterations, **kwargs):
    content, style = images
    return stylize(content, style, params=params, config=config, iterations=iterations, tol=0.0,
                   **kwargs)


def _assert_same_tree(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ------------------------------------------------------------------------------ library


@pytest.mark.parametrize("optimizer", ["jaxopt-lbfgs", "adam"])
def test_round_trip_is_exact(optimizer, images, random_params, tmp_path):
    solver = SolverConfig(name=optimizer)
    result = _run(images, random_params, CONFIG, 3, solver=solver)
    path = tmp_path / "run.ckpt.npz"
    save_checkpoint(path, result.state, history=result.history, meta={"note": [1, "two"]})
    template = state_template(images[0].shape, params=random_params, config=CONFIG,
                              solver=solver)
    state, history, meta = load_checkpoint(path, template)
    _assert_same_tree(state, result.state)
    if optimizer == "jaxopt-lbfgs":
        # The L-BFGS memory itself travels: 3 iterations filled 3 of its 10 slots.
        filled = np.abs(np.asarray(state.solver.inner.s_history)).sum(axis=(1, 2, 3)) > 0
        assert filled.sum() == 3
    assert history.keys() == result.history.keys()
    for name in history:
        np.testing.assert_array_equal(history[name], result.history[name])
    assert meta["note"] == [1, "two"] and meta["iteration"] == 3
    assert meta["evaluations"] == result.evaluations
    assert not list(tmp_path.glob(".*.tmp"))


def test_prng_key_leaves_round_trip(tmp_path):
    key = jax.random.split(jax.random.key(7), 2)
    state = OptState(np.zeros((2, 2, 3), np.float32), (key,), *[np.int32(i) for i in range(6)],
                     np.zeros((2, 2, 3), np.float32), np.float32(0))
    path = tmp_path / "key.npz"
    save_checkpoint(path, state, history={}, meta={})
    for template in (state, jax.eval_shape(lambda: state)):
        loaded, _, _ = load_checkpoint(path, template)
        np.testing.assert_array_equal(jax.random.key_data(loaded.solver[0]),
                                      jax.random.key_data(key))
        assert loaded.solver[0].dtype == key.dtype


@pytest.fixture(scope="module")
def saved(images, random_params, tmp_path_factory):
    result = _run(images, random_params, CONFIG, 2)
    path = tmp_path_factory.mktemp("saved") / "run.ckpt.npz"
    save_checkpoint(path, result.state, history=result.history, meta={})
    return path


def _damaged(saved: Path, folder: Path, how: str) -> Path:
    data = bytearray(saved.read_bytes())
    if how == "truncated":
        data = data[: len(data) * 2 // 3]
    elif how == "flipped byte":
        with zipfile.ZipFile(saved) as archive:
            member = archive.getinfo("state.solver.inner.y_history.npy")
        local = data[member.header_offset: member.header_offset + 30]
        start = (member.header_offset + 30 + int.from_bytes(local[26:28], "little")
                 + int.from_bytes(local[28:30], "little"))
        data[start + member.file_size // 2] ^= 0x40
    elif how == "empty":
        data = bytearray()
    elif how == "not a checkpoint":
        path = folder / "other.npz"
        np.savez(path, image=np.zeros(3))
        return path
    path = folder / f"{how.replace(' ', '_')}.npz"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how", ["truncated", "flipped byte", "empty", "not a checkpoint",
                                 "missing"])
def test_damaged_checkpoint_is_a_clear_error(how, saved, images, random_params, tmp_path):
    path = tmp_path / "missing.npz" if how == "missing" else _damaged(saved, tmp_path, how)
    template = state_template(images[0].shape, params=random_params, config=CONFIG)
    with pytest.raises(NstError) as err:
        load_checkpoint(path, template)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_checkpoint_of_another_run_is_refused(saved, images, random_params):
    adam = SolverConfig(name="adam")
    with pytest.raises(NstError, match="different optimizer state.*--optimizer"):
        load_checkpoint(saved, state_template(images[0].shape, params=random_params,
                                              config=CONFIG, solver=adam))
    with pytest.raises(NstError, match=r"\.image has shape \(22, 32, 3\).*\(44, 64, 3\)"):
        load_checkpoint(saved, state_template((44, 64, 3), params=random_params, config=CONFIG))
    shorter = SolverConfig(history_size=5)
    with pytest.raises(NstError, match=r"s_history has shape \(10, .*\(5, .*--history-size"):
        load_checkpoint(saved, state_template(images[0].shape, params=random_params,
                                              config=CONFIG, solver=shorter))


def test_checkpoint_of_format_version_1_is_refused(saved, images, random_params, tmp_path):
    """Version 1 held jaxopt's L-BFGS-B state (retired); version 2 the nst_jax.solvers state."""
    assert FORMAT_VERSION == 2 and read_checkpoint_meta(saved)["format_version"] == 2
    with np.load(saved) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(arrays["meta"].tobytes().decode())
    arrays["meta"] = np.frombuffer(json.dumps({**meta, "format_version": 1}).encode(), np.uint8)
    old = tmp_path / "v1.ckpt.npz"
    np.savez(old, **arrays)
    template = state_template(images[0].shape, params=random_params, config=CONFIG)
    for read in (lambda: read_checkpoint_meta(old), lambda: load_checkpoint(old, template)):
        with pytest.raises(NstError, match="format version 1, this nst_jax reads version 2"):
            read()


def _rewritten(saved: Path, folder: Path, name: str, change) -> Path:
    """A copy of the checkpoint ``saved`` with the member ``name`` replaced by ``change(it)``."""
    with np.load(saved) as npz:
        arrays = {member: npz[member] for member in npz.files}
    arrays[name] = change(arrays[name])
    path = folder / "rewritten.ckpt.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("member, dtype", [
    ("state.image", np.float16), ("state.loss", np.float64), ("state.iteration", np.int64)])
def test_a_leaf_of_another_dtype_is_refused(saved, images, random_params, tmp_path, member,
                                            dtype):
    """Converting silently would resume a run from values it never had (float16 pixels)."""
    path = _rewritten(saved, tmp_path, member, lambda array: array.astype(dtype))
    template = state_template(images[0].shape, params=random_params, config=CONFIG)
    with pytest.raises(NstError, match=rf"{member[len('state'):]} has shape .* and dtype"):
        load_checkpoint(path, template)


def test_a_leaf_of_another_shape_but_the_same_size_is_refused(saved, images, random_params):
    """A 22x32 run's checkpoint for a 32x22 run: every array has the right number of elements,
    none the right shape."""
    height, width, _ = images[0].shape
    template = state_template((width, height, 3), params=random_params, config=CONFIG)
    with pytest.raises(NstError, match=r"\.image has shape \(22, 32, 3\).*\(32, 22, 3\)"):
        load_checkpoint(saved, template)


def test_loaded_leaves_keep_the_weak_types_of_the_run(saved, images, random_params):
    """load_checkpoint's promise: scalar leaves keep their weak types (jaxopt's iteration
    counter is one), so a resumed run traces exactly as the original did."""
    template = state_template(images[0].shape, params=random_params, config=CONFIG)
    state, _, _ = load_checkpoint(saved, template)
    weak = [jax.tree_util.keystr(path) for path, leaf in
            jax.tree_util.tree_leaves_with_path(template) if leaf.weak_type]
    assert weak, "precondition: the state has a weakly typed leaf"
    assert [leaf.weak_type for leaf in jax.tree.leaves(state)] == [
        leaf.weak_type for leaf in jax.tree.leaves(template)]


def test_meta_differences_names_what_changed():
    saved = {"content": {"path": "/a/c.png", "sha256": "11"}, "seed": 0, "size": 32}
    assert meta_differences(saved, {"content": {"path": "/moved/c.png", "sha256": "11"},
                                     "seed": 0, "size": 32}) == []
    lines = meta_differences(saved, {"content": {"path": "/a/c.png", "sha256": "22"},
                                     "seed": 1, "size": 32})
    assert [line.split(":")[0] for line in lines] == ["content", "seed"]


# ------------------------------------------------------------------- resume == uninterrupted


def test_resumed_run_equals_uninterrupted_run(images, random_params, tmp_path):
    straight = _run(images, random_params, CONFIG, 6)
    first = _run(images, random_params, CONFIG, 2)
    path = tmp_path / "part.ckpt.npz"
    save_checkpoint(path, first.state, history=first.history, meta={})
    # A template built from shapes only, as a fresh process would.
    state, history, _ = load_checkpoint(
        path, state_template(images[0].shape, params=random_params, config=CONFIG))
    rest = _run(images, random_params, CONFIG, 6, state=state)
    np.testing.assert_array_equal(rest.image, straight.image)
    assert (rest.iterations, rest.evaluations) == (6, straight.evaluations)
    for name in ("loss", "content", "style", "evaluations"):
        joined = np.concatenate([history[name], rest.history[name][1:]])
        np.testing.assert_array_equal(joined, straight.history[name])
    _assert_same_tree(rest.state, straight.state)


def _cli(*args) -> int:
    """``nst-jax`` in-process, returning the exit code (conftest restores the signal handlers
    ``main`` installs)."""
    return main([str(a) for a in args])


BASE = ["stylize", DATA / "chelsea.png", DATA / "starry_night.png", "--size", SIZE, "--tol", "0",
        "-q", *LAYERS]


def test_cli_resume_equals_straight_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NST_JAX_OFFLINE", "1")
    base = [*BASE, "--weights", "random"]
    out, log = tmp_path / "out.png", tmp_path / "log.json"
    ckpt = tmp_path / "out.ckpt.npz"
    assert _cli(*base, "-o", out, "--iterations", 6, "--checkpoint-every", 2, "--log", log) == 0
    assert "checkpoint" in capsys.readouterr().err and ckpt.is_file()
    assert read_checkpoint_meta(ckpt)["iteration"] == 6

    # Refusals, all before any optimization.
    assert _cli(*base, "-o", out, "--iterations", 10, "--checkpoint-every", 2) == 1
    assert "--resume" in capsys.readouterr().err  # never silently replace a user's checkpoint
    assert _cli(*base, "-o", out, "--iterations", 10, "--resume", "--style-weight", 5) == 1
    assert "loss_weights: checkpoint" in capsys.readouterr().err
    assert _cli(*base, "-o", tmp_path / "other.png", "--iterations", 10, "--resume") == 1
    assert "no checkpoint to resume from" in capsys.readouterr().err

    assert _cli(*base, "-o", out, "--iterations", 10, "--checkpoint-every", 2, "--log", log,
                "--resume") == 0
    assert "resuming from" in capsys.readouterr().err
    straight_out, straight_log = tmp_path / "straight.png", tmp_path / "straight.json"
    assert _cli(*base, "-o", straight_out, "--iterations", 10, "--log", straight_log) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(straight_out)))
    resumed, straight = json.loads(log.read_text()), json.loads(straight_log.read_text())
    assert resumed["history"]["iteration"] == list(range(11))
    for name in ("loss", "content", "style", "evaluations"):
        assert resumed["history"][name] == straight["history"][name]
    assert (resumed["evaluations"], resumed["iterations"]) == (straight["evaluations"], 10)
    assert read_checkpoint_meta(ckpt)["iteration"] == 10
    assert not list(tmp_path.glob(".*.tmp"))


# ------------------------------------------------------------------------- fault injection


def _start(folder: Path, weights: Path, *extra) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NST_JAX_")}
    env["NST_JAX_OFFLINE"] = "1"
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"  # as in conftest.py
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2]),
                                         env.get("PYTHONPATH", "")])
    # A weights file loads in a fraction of the time random weights take to generate.
    args = [*BASE, "--weights", weights, "-o", "out.png", "--checkpoint-every", 1, *extra]
    return subprocess.Popen([sys.executable, "-m", "nst_jax.cli", *map(str, args)], cwd=folder,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _identity(path: Path):
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _wait_for_new_checkpoint(proc: subprocess.Popen, path: Path, before) -> None:
    """Until the run has published a checkpoint other than ``before`` (it has made progress)."""
    deadline = time.monotonic() + 120
    while _identity(path) in (None, before):
        if proc.poll() is not None:
            raise AssertionError(f"run ended early ({proc.returncode}): {proc.communicate()[1]}")
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.005)


def _check_files(folder: Path, template, previous: tuple[int, int]) -> tuple[int, int]:
    """The published files are valid whatever moment the run died at. ``previous``: the
    checkpoint's and the image's iterations after the last kill; returns them now."""
    state, history, meta = load_checkpoint(folder / "out.ckpt.npz", template)
    iteration = int(state.iteration)
    assert iteration > previous[0]  # a new checkpoint appeared, and nothing went backwards
    assert meta["iteration"] == iteration and len(history["loss"]) == iteration + 1
    assert history["loss"][-1] == np.asarray(state.loss)
    with Image.open(folder / "out.png") as img:
        img.load()  # decodes completely
        assert img.size == (SIZE, 22)
    shown = read_metadata(folder / "out.png")["iteration"]
    # The image is written right after its checkpoint: it shows that iteration or the one
    # before, or, when this run was killed between its first checkpoint and the image that
    # follows it, still the previous run's image. Never one the checkpoint cannot resume.
    assert previous[1] <= shown <= iteration
    assert shown >= iteration - 1 or shown == previous[1]
    return iteration, shown


@pytest.mark.slow
def test_killed_runs_always_leave_valid_files_and_resume(tmp_path, random_params, images,
                                                         weights_files):
    """SIGKILL at random moments (also mid-write), then --resume, many times; then SIGTERM.

    Stray temporary files: an atomic writer killed by SIGKILL cannot delete its ``.NAME.*.tmp``
    file; the published names are never touched before the rename, and the next run with the
    same outputs deletes the strays (checked with a planted one)."""
    template = state_template(images[0].shape, params=random_params, config=CONFIG)
    rng = random.Random(1234)
    ckpt = tmp_path / "out.ckpt.npz"
    iteration, shown = -1, -1
    weights = weights_files["canonical"]
    for kill in range(4):
        before = _identity(ckpt)
        strays_before = set(tmp_path.glob(".*.tmp"))
        proc = _start(tmp_path, weights, "--iterations", 100000, *(["--resume"] if kill else []))
        try:
            _wait_for_new_checkpoint(proc, ckpt, before)
            if kill == 0:  # the first image too: before it, there is no out.png to check yet
                _wait_for_new_checkpoint(proc, tmp_path / "out.png", None)
            time.sleep(rng.uniform(0.0, 0.25))
        finally:
            proc.kill()
            proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        iteration, shown = _check_files(tmp_path, template, (iteration, shown))
        strays = set(tmp_path.glob(".*.tmp"))
        assert not strays & strays_before and len(strays) <= 1, strays
        if kill == 0:
            (tmp_path / ".out.ckpt.npz.planted.tmp").write_bytes(b"half a checkpoint")

    proc = _start(tmp_path, weights, "--iterations", 100000, "--resume")
    try:
        _wait_for_new_checkpoint(proc, ckpt, _identity(ckpt))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM == 143, err  # 128 + the signal's number
    assert "interrupted (SIGTERM) at iteration" in err and "--resume" in err
    assert "Traceback" not in err
    state, _, _ = load_checkpoint(ckpt, template)
    meta = read_metadata(tmp_path / "out.png")
    assert meta["status"] == "interrupted" and meta["iteration"] == int(state.iteration)
    assert int(state.iteration) > iteration
    assert not list(tmp_path.glob(".*.tmp"))  # an orderly exit leaves none
