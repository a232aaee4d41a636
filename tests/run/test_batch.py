"""Batched stylization (``nst_jax.run.stylize_batch``) and the ``sweep`` command (its images,
contact sheet, loss curves and JSON report).

Compiles dominate, so the library tests share one small problem: a 32x22 content image, two
32x22 styles, three lanes and a shallow layer set (conv1_1..conv3_1, conv2_2), compiled once
for the batch and once for the single-run loop; other calls reuse those programs.

Loss scale: with random VGG weights and the default alpha/beta the loss is ~1e9. With the
retired L-BFGS-B the first Cauchy point put ~99% of the pixels on the 0/255 box, a
discontinuous choice that the ~5e-7 relative gradient differences between a vmapped and a
single evaluation could flip, so batched and looped runs drifted apart. With content weight
1e-4 and style weights 1e-2..1 the pixel gradients are O(1), the box is rarely touched, and
batched and looped runs agree to ~1e-3 pixel levels, so the comparison below can be tight.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from nst_jax import StyleConfig, stylize
from nst_jax.images import load_image
from nst_jax.run import _batch, _loop, stylize_batch

ROOT = Path(__file__).parents[2]

CONFIG = StyleConfig(content_layers=("conv2_2",), style_layers=("conv1_1", "conv2_1", "conv3_1"))
CONTENT_WEIGHT = 1e-4
STYLE_WEIGHTS = [1e-2, 1e-1, 1.0]
STYLE_INDEX = [0, 1, 1]
SEEDS = [3, 4, 5]
ITERATIONS = 5
LIMIT = "reached the iteration limit"

# Five iterations, observed here: <= 1e-3 pixel levels and <= 1e-5 relative loss; a wrong
# weight, seed or style is off by whole pixel levels and by orders of magnitude in loss.
PIXEL_ATOL = 0.05
LOSS_RTOL = 1e-4


@pytest.fixture(scope="module")
def images():
    content = load_image(DATA / "chelsea.png", max_side=32)  # 32x22
    styles = [load_image(DATA / "starry_night.png", max_side=32)[:22],  # 32x26, cropped
              load_image(DATA / "great_wave.png", max_side=32)]
    assert content.shape == styles[0].shape == styles[1].shape == (22, 32, 3)
    return content, styles


def run_batch(images, params, **kwargs):
    content, styles = images
    settings = {"params": params, "config": CONFIG, "content_weight": CONTENT_WEIGHT,
                "style_weight": STYLE_WEIGHTS, "style_index": STYLE_INDEX, "seeds": SEEDS,
                "init": "noise", "iterations": ITERATIONS, "tol": 0.0}
    return stylize_batch(content, styles, **{**settings, **kwargs})


def run_loop(images, params, **kwargs):
    content, styles = images
    return [
        stylize(content, styles[index], params=params, config=CONFIG,
                content_weight=CONTENT_WEIGHT, style_weight=weight, init="noise",
                key=jax.random.key(seed), **{"iterations": ITERATIONS, "tol": 0.0, **kwargs})
        for weight, index, seed in zip(STYLE_WEIGHTS, STYLE_INDEX, SEEDS)
    ]


@pytest.fixture(scope="module")
def batched(images, random_params):
    return run_batch(images, random_params)


@pytest.fixture(scope="module")
def looped(images, random_params):
    return run_loop(images, random_params)


def assert_lanes_match_loop(result, singles, *, pixel_atol=PIXEL_ATOL, pixel_mean=PIXEL_ATOL,
                            loss_rtol=LOSS_RTOL):
    for lane, single in enumerate(singles):
        assert result.iterations[lane] == single.iterations, lane
        assert result.evaluations[lane] == single.evaluations, lane
        assert result.status[lane] == single.status, lane
        steps = single.iterations + 1
        np.testing.assert_array_equal(result.history["evaluations"][:steps, lane],
                                      single.history["evaluations"])
        np.testing.assert_allclose(result.history["loss"][:steps, lane], single.history["loss"],
                                   rtol=loss_rtol, err_msg=f"lane {lane}")
        np.testing.assert_allclose(result.images[lane], single.image, rtol=0, atol=pixel_atol,
                                   err_msg=f"lane {lane}")
        assert np.abs(result.images[lane] - single.image).mean() <= pixel_mean, lane


# --- 1. batched == a loop of single runs -----------------------------------------------------


def test_batch_equals_loop_of_single_runs(batched, looped, images):
    content, _ = images
    assert batched.images.shape == (3, *content.shape)
    assert batched.images.dtype == np.float32
    assert batched.devices == len(jax.local_devices())
    assert batched.compile_seconds > 0
    assert batched.history["loss"].shape == (ITERATIONS + 1, 3)
    assert batched.history["seconds"].shape == (ITERATIONS + 1,)
    # Lanes really differ (weights, styles and seeds were all used).
    assert len({float(v) for v in batched.history["loss"][0]}) == 3
    assert_lanes_match_loop(batched, looped)
    # The loss went down in every lane, as in the single runs.
    assert np.all(batched.history["loss"][-1] < batched.history["loss"][0])


def test_tol_zero_runs_every_lane_to_the_limit(batched):
    assert batched.status == [LIMIT] * 3
    np.testing.assert_array_equal(batched.iterations, [ITERATIONS] * 3)


# --- 2. no recompilation -----------------------------------------------------------------------


def test_new_weights_seeds_and_style_contents_reuse_the_compiled_program(
        batched, images, random_params):
    content, styles = images
    memo = len(_loop._compiled)
    events = []

    def listener(event, duration, **kwargs):
        events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        again = stylize_batch(
            content, [styles[1][::-1], 255.0 - styles[0]], params=random_params, config=CONFIG,
            content_weight=2 * CONTENT_WEIGHT, style_weight=[0.5, 2.0, 3.0],
            style_index=[1, 0, 0], seeds=[7, 8, 9], init="noise", iterations=ITERATIONS, tol=0.0)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert again.compile_seconds == 0.0
    assert len(_loop._compiled) == memo
    compiles = [e for e in events if e in ("/jax/core/compile/backend_compile_duration",
                                           "/jax/core/compile/jaxpr_to_mlir_module_duration")]
    assert compiles == []
    # ... and the new values were used.
    assert again.status == [LIMIT] * 3
    assert np.all(np.abs(again.history["loss"][0] - batched.history["loss"][0])
                  > 1e-3 * batched.history["loss"][0])


# --- 4. early stopping under vmap ------------------------------------------------------------


def test_early_stop_lanes_stop_separately_and_stay_put(batched, looped, images, random_params):
    stop = {"iterations": 30, "tol": 1e-1, "patience": 1}
    result = run_batch(images, random_params, **stop)
    assert result.compile_seconds == 0.0  # tol, patience and iterations are traced
    iterations = result.iterations
    assert len(set(iterations.tolist())) > 1, iterations
    assert np.all(iterations < stop["iterations"])
    assert all(s.startswith("converged") for s in result.status), result.status
    history = result.history
    assert history["loss"].shape == (iterations.max() + 1, 3)
    for lane, last in enumerate(iterations):
        for name in ("loss", "content", "style", "tv", "evaluations"):
            tail = history[name][last:, lane]
            np.testing.assert_array_equal(tail, np.full_like(tail, tail[0]), err_msg=name)
        # Up to its stop the lane was still moving.
        assert np.all(np.diff(history["evaluations"][:last + 1, lane]) > 0)
        assert history["evaluations"][-1, lane] == result.evaluations[lane]
    # A finished lane is frozen, not optimized further: each equals its own single run, with
    # the same iterations and evaluations. Float differences grow with the iterations (with the
    # retired L-BFGS-B, lane 2 stopping at 8: 1.2e-3 relative loss, 0.58 max / 0.015 mean pixel
    # levels); one lane carried on for even 4 more iterations would be 20-60% lower in loss.
    assert_lanes_match_loop(result, run_loop(images, random_params, **stop), pixel_atol=2.0,
                            pixel_mean=0.1, loss_rtol=1e-2)


# --- 4b. stopping and continuing ------------------------------------------------------------


def _stop_after(chunks: int):
    """A callback that ends the job after ``chunks`` compiled chunks (as a signal does)."""
    seen = []

    def callback(state, records):
        seen.append(np.asarray(state.iteration).copy())
        return len(seen) >= chunks

    return callback, seen


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_a_stopped_batch_continues_bit_for_bit_from_its_state(batched, images, random_params,
                                                              tmp_path, mode):
    """Stopped by its callback after 2 iterations, every lane holds 2 iterations and its best
    image so far; continued from ``BatchResult.state`` (through a checkpoint file), the runs
    end exactly as one uninterrupted job does."""
    from nst_jax.run import load_checkpoint, save_checkpoint

    whole = batched if mode == "vmap" else run_batch(images, random_params, mode="loop")
    callback, seen = _stop_after(2)
    stopped = run_batch(images, random_params, mode=mode, callback=callback)
    np.testing.assert_array_equal(stopped.iterations, [2, 2, 2])  # every run moved on
    assert [s.tolist() for s in seen] == [[1, 1, 1], [2, 2, 2]]
    assert stopped.status == ["stopped by the caller"] * 3
    np.testing.assert_array_equal(stopped.images, np.clip(stopped.state.best_image, 0, 255))
    np.testing.assert_array_equal(stopped.history["loss"], whole.history["loss"][:3])
    save_checkpoint(tmp_path / "sweep.ckpt.npz", stopped.state, history=stopped.history,
                    meta={})
    template = run_batch(images, random_params, mode=mode, iterations=0).state
    state, history, _ = load_checkpoint(tmp_path / "sweep.ckpt.npz", template)
    np.testing.assert_array_equal(history["loss"], stopped.history["loss"])
    rest = run_batch(images, random_params, mode=mode, state=state)
    np.testing.assert_array_equal(rest.images, whole.images)
    np.testing.assert_array_equal(rest.iterations, whole.iterations)
    np.testing.assert_array_equal(rest.history["loss"], whole.history["loss"][2:])
    assert rest.status == whole.status


def test_continuing_checks_the_lanes_and_keeps_converged_runs_stopped(batched, images,
                                                                      random_params):
    with pytest.raises(ValueError, match="holds \\[2\\] lanes, this batch has 3"):
        run_batch(images, random_params,
                  state=jax.tree.map(lambda x: x[:2], batched.state))
    converged = batched.state._replace(status=np.array([2, 1, 1], np.int32))  # CONVERGED, ...
    more = run_batch(images, random_params, state=converged, iterations=ITERATIONS + 2)
    np.testing.assert_array_equal(more.iterations, [ITERATIONS, ITERATIONS + 2, ITERATIONS + 2])


# --- 5. argument validation ------------------------------------------------------------------


def test_argument_validation(images, random_params):
    content, styles = images
    common = {"params": random_params, "config": CONFIG, "iterations": 1}
    with pytest.raises(ValueError, match="disagree"):
        stylize_batch(content, styles, style_weight=[1.0, 2.0, 3.0], seeds=[1, 2], **common)
    with pytest.raises(ValueError, match="disagree"):
        stylize_batch(content, styles, content_weight=[1.0, 2.0], style_index=[0, 1, 1],
                      **common)
    with pytest.raises(ValueError, match="style_index"):
        stylize_batch(content, styles, style_index=[0, 2], **common)
    with pytest.raises(ValueError, match="style_index"):
        stylize_batch(content, styles, style_index=[-1, 0], **common)
    with pytest.raises(ValueError, match="style"):
        stylize_batch(content, [], **common)
    with pytest.raises(ValueError, match="style_layer_weights"):
        stylize_batch(content, styles, style_weight=[1.0, 2.0],
                      style_layer_weights=np.ones((2, 4)), **common)


def test_shared_style_layer_weights_do_not_set_the_batch_size(batched, images, random_params):
    """One (L,) vector of per-layer weights is shared by all runs (the docstring's "one value
    (shared)"), like every other per-run argument; it must not be read as L runs.

    Bug: ``_batch_size`` counts ``style_layer_weights`` by its first axis, so a shared (L,)
    vector makes a batch of L runs (here 3 instead of 1) or, with B != L per-run weights,
    raises "per-run arguments disagree on the batch size" (the sweep CLI always passes it so).
    """
    # (``batched`` first: today this call reuses its B=3 program.)
    content, styles = images
    single = stylize_batch(content, styles, params=random_params, config=CONFIG,
                           content_weight=CONTENT_WEIGHT, style_weight=STYLE_WEIGHTS[0],
                           style_layer_weights=[1 / 3] * 3, seeds=SEEDS[0], init="noise",
                           iterations=1, tol=0.0)
    assert single.images.shape == (1, *content.shape)


# --- 3. sharding over devices (subprocess with 4 host devices) --------------------------------

SHARDED_SCRIPT = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    from nst_jax import StyleConfig, random_vgg19_params
    from nst_jax.images import load_image
    from nst_jax.run import stylize_batch

    data, out = sys.argv[1], sys.argv[2]
    params = random_vgg19_params(jax.random.key(0))
    content = load_image(data + "/chelsea.png", max_side=16)
    styles = [load_image(data + "/starry_night.png", max_side=16),
              load_image(data + "/great_wave.png", max_side=16)]
    config = StyleConfig(content_layers=("conv2_2",), style_layers=("conv1_1", "conv2_1", "conv3_1"))
    settings = dict(params=params, config=config, content_weight=1e-4,
                    style_weight=[1e-2, 1e-1, 1.0], style_index=[0, 1, 1], seeds=[3, 4, 5],
                    init="noise", iterations=3, tol=0.0)
    spread = stylize_batch(content, styles, **settings)
    one = stylize_batch(content, styles, devices=jax.local_devices()[:1], **settings)
    np.savez(out, device_count=jax.device_count(),
             spread_images=spread.images, spread_loss=spread.history["loss"],
             spread_devices=spread.devices, spread_iterations=spread.iterations,
             one_images=one.images, one_loss=one.history["loss"], one_devices=one.devices,
             one_iterations=one.iterations)
""")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NST_JAX_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


@pytest.mark.slow
def test_sharded_over_four_devices_equals_one_device(tmp_path):
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED_SCRIPT)
    out = tmp_path / "out.npz"
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(script), str(DATA), str(out)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out)
    assert got["device_count"] == 4
    assert got["spread_devices"] == 4 and got["one_devices"] == 1
    assert got["spread_images"].shape == got["one_images"].shape == (3, 11, 16, 3)
    np.testing.assert_array_equal(got["spread_iterations"], [3, 3, 3])
    np.testing.assert_array_equal(got["one_iterations"], [3, 3, 3])
    # The padded fourth lane is dropped; the three real lanes are the same runs.
    assert got["spread_loss"].shape == got["one_loss"].shape == (4, 3)
    np.testing.assert_allclose(got["spread_loss"], got["one_loss"], rtol=LOSS_RTOL)
    np.testing.assert_allclose(got["spread_images"], got["one_images"], rtol=0, atol=PIXEL_ATOL)


# --- 7. the sweep command ----------------------------------------------------------------------


def run_cli(*args, cwd):
    env = _env(NST_JAX_OFFLINE="1", XDG_CACHE_HOME=str(Path(cwd) / "cache"))
    return subprocess.run([sys.executable, "-m", "nst_jax.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600, check=False)


SWEEP_ARGS = ("sweep", DATA / "chelsea.png", DATA / "starry_night.png", DATA / "great_wave.png",
              "--weights", "random", "--size", "32", "--iterations", "3",
              "--style-weight", "1e2,1e4", "-q",
              # Shallow layers: a third of the compile time of the default conv5_1 network.
              "--content-layers", "conv2_2", "--style-layers", "conv1_1,conv2_1,conv3_1")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sweep")
    return cwd, run_cli(*SWEEP_ARGS, "-o", "out", cwd=cwd)


def _snapshot(folder):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_sweep_writes_runs_sheet_plot_and_json(sweep):
    cwd, proc = sweep
    assert proc.returncode == 0, proc.stderr
    out = cwd / "out"
    runs = sorted(p.name for p in out.glob("0*.png"))
    assert runs == ["000_starry_night_sw100.png", "001_starry_night_sw10000.png",
                    "002_great_wave_sw100.png", "003_great_wave_sw10000.png"]
    assert {"contact_sheet.png", "sweep.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob(".*tmp"))
    with Image.open(out / runs[0]) as img:
        width, height = img.size
    assert (width, height) == (32, 22)
    with Image.open(out / "contact_sheet.png") as img:
        img.verify()
    # The contact sheet (nst_jax.quality.contact_sheet): one row per style image, one column per
    # style weight, each cell the run's image unchanged, with row and column labels (6 px gaps).
    with Image.open(out / "contact_sheet.png") as img:
        assert img.format == "PNG"
        sheet = np.asarray(img.convert("RGB"))
    gap = 6
    label_w = sheet.shape[1] - 2 * (width + gap) - gap
    header_h = sheet.shape[0] - 2 * (height + gap) - gap
    assert label_w > 0 and header_h > 0  # room for the labels
    for index, name in enumerate(runs):
        row, column = divmod(index, 2)
        x, y = label_w + gap + column * (width + gap), header_h + gap + row * (height + gap)
        with Image.open(out / name) as img:
            np.testing.assert_array_equal(sheet[y:y + height, x:x + width], np.asarray(img))
    # The loss curves need matplotlib (optional): drawn with it, said so without it.
    if importlib.util.find_spec("matplotlib") is None:
        assert not (out / "loss_curves.png").exists()
        assert "loss_curves.png needs matplotlib" in proc.stderr
    else:
        with Image.open(out / "loss_curves.png") as img:
            assert img.format == "PNG" and img.size == (800, 500)
    report = json.loads((out / "sweep.json").read_text())
    assert report["devices"] >= 1
    assert len(report["runs"]) == 4
    assert [r["file"] for r in report["runs"]] == runs
    assert [r["style_weight"] for r in report["runs"]] == [1e2, 1e4, 1e2, 1e4]
    for run in report["runs"]:
        assert run["iterations"] == 3
        for name in ("loss", "content", "style", "tv", "evaluations"):
            assert len(run["history"][name]) == 4, name
        assert run["history"]["loss"][-1] == pytest.approx(run["loss"])
        assert all(math.isfinite(v) for v in run["history"]["loss"])


@pytest.mark.slow
def test_sweep_refuses_to_overwrite(sweep):
    cwd, proc = sweep
    assert proc.returncode == 0, proc.stderr
    before = _snapshot(cwd / "out")
    again = run_cli(*SWEEP_ARGS, "-o", "out", cwd=cwd)
    assert again.returncode != 0
    assert "Traceback" not in again.stderr, again.stderr
    errors = [line for line in again.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, again.stderr
    assert "--overwrite" in errors[0]
    assert _snapshot(cwd / "out") == before


@pytest.mark.slow
def test_sweep_accepts_style_layer_weights(sweep):
    """``--style-layer-weights`` (one value per style layer, shared by every run) must work in
    a sweep; equal to the default 1/L weights it gives the same images.

    Bug: the CLI passes the (L,) list to ``stylize_batch``, whose ``_batch_size`` takes L as a
    run count: with 4 runs and 3 layers it ends in an uncaught ValueError traceback.
    """
    cwd, proc = sweep
    assert proc.returncode == 0, proc.stderr
    third = repr(1 / 3)  # the default weight of each of the 3 layers, exactly
    again = run_cli(*SWEEP_ARGS, "-o", "layers", "--style-layer-weights", ",".join([third] * 3),
                    cwd=cwd)
    assert again.returncode == 0, again.stderr[-3000:]
    for path in sorted((cwd / "out").glob("0*.png")):
        with Image.open(path) as a, Image.open(cwd / "layers" / path.name) as b:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_loop_mode_equals_single_runs_and_auto_picks_it_for_large_cpu_images(
        random_params, monkeypatch):
    rng = np.random.default_rng(5)
    content = rng.uniform(0, 255, (16, 20, 3)).astype(np.float32)
    style = rng.uniform(0, 255, (18, 16, 3)).astype(np.float32)
    config = StyleConfig(content_layers=("conv2_1",), style_layers=("conv1_1", "conv2_1"))
    common = {"params": random_params, "config": config, "iterations": 3, "tol": 0.0}
    monkeypatch.setattr(_batch, "CPU_VMAP_MAX_PIXELS", 100)  # 16x20 counts as large
    looped = stylize_batch(content, [style], style_weight=[1e-2, 1e-1], seeds=[0, 1],
                           init="noise", **common)
    for lane, (weight, seed) in enumerate(((1e-2, 0), (1e-1, 1))):
        single = stylize(content, style, style_weight=weight, init="noise",
                         key=jax.random.key(seed), **common)
        np.testing.assert_array_equal(looped.images[lane], single.image)
        np.testing.assert_array_equal(looped.history["loss"][:, lane], single.history["loss"])
    assert looped.history["seconds"].shape == (4,)
    with pytest.raises(ValueError, match="mode"):
        stylize_batch(content, [style], mode="fast", **common)


def test_sweep_checkpoint_rules_are_checked_before_compute(tmp_path, monkeypatch, capsys):
    """--resume needs the checkpoint of an interrupted sweep; an existing one is never
    replaced without --overwrite; one of another sweep is refused, naming what differs."""
    from nst_jax.cli import main
    from nst_jax.run import save_checkpoint

    monkeypatch.setenv("NST_JAX_OFFLINE", "1")
    args = [str(a) for a in SWEEP_ARGS] + ["-o", str(tmp_path / "out")]

    def error(*extra):
        assert main([*args, *extra]) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[-1].startswith("nst-jax: error: "), lines
        return lines[-1]

    assert "sweep.ckpt.npz: no checkpoint to resume from" in error("--resume")
    checkpoint = tmp_path / "out" / "sweep.ckpt.npz"
    checkpoint.parent.mkdir()
    save_checkpoint(checkpoint, {}, history={}, meta={"runs": []})
    assert "a checkpoint of an earlier sweep exists; pass --resume" in error()
    line = error("--resume")
    assert "the checkpoint belongs to a different sweep: " in line
    assert "; runs: checkpoint []" in line
    assert checkpoint.is_file() and sorted(p.name for p in checkpoint.parent.iterdir()) == [
        "sweep.ckpt.npz"]
