"""Issue 4 features from the command line (in-process ``main``): blends, masks, colour
preservation, presets, multi-scale, frames, ``weights normalize``, and preprocessing taken from
the weights file. Two shallow layers and 32-px images keep every compile small."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from nst_jax import TORCHVISION, load_image, random_vgg19_params
from nst_jax.cli import main
from nst_jax.images import read_metadata, rgb_to_yiq
from nst_jax.weights import save_vgg19_params
FAST = ["--size", "32", "--content-layers", "conv2_1", "--style-layers", "conv1_1,conv2_1",
        "--tol", "0", "-q"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("NST_JAX_OFFLINE", "1")


@pytest.fixture(scope="module")
def weights(weights_files):
    return str(weights_files["canonical"])


def stylize(tmp_path, *args, name="out.png"):
    out = tmp_path / name
    code = main(["stylize", str(DATA / "chelsea.png"), *map(str, args), "-o", str(out), *FAST])
    return code, out


def pixels(path):
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), np.float32)


def test_blend_with_zero_weight_equals_the_single_style(tmp_path, weights):
    starry, wave = DATA / "starry_night.png", DATA / "great_wave.png"
    code, single = stylize(tmp_path, starry, "--weights", weights, "--iterations", "3", "--tv-weight", "0",
                           name="single.png")
    assert code == 0
    code, blend = stylize(tmp_path, f"{starry}:1", "--style", f"{wave}:0",
                          "--weights", weights, "--iterations", "3", "--tv-weight", "0", name="blend.png")
    assert code == 0
    np.testing.assert_array_equal(pixels(single), pixels(blend))
    code, mixed = stylize(tmp_path, f"{starry}:0.5", "--style", f"{wave}:0.5:1.5",
                          "--weights", weights, "--iterations", "3", "--tv-weight", "0", name="mixed.png")
    assert code == 0
    assert np.abs(pixels(mixed) - pixels(single)).max() > 1
    settings = read_metadata(mixed)["settings"]
    assert settings["more_styles"] == [f"{wave}:0.5:1.5"]


def test_region_options_are_checked_before_compute(tmp_path, weights, capsys):
    starry, wave = DATA / "starry_night.png", DATA / "great_wave.png"
    mask = tmp_path / "mask.png"
    Image.fromarray(np.full((22, 32), 255, np.uint8)).save(mask)
    labels = tmp_path / "labels.png"
    Image.fromarray(np.zeros((22, 32), np.uint8)).save(labels)  # one colour, two styles
    cases = [
        (["--mask", mask], "one mask per style"),
        (["--mask", mask, "--mask", mask, "--label-map", labels], "not both"),
        (["--label-map", labels], "expected 2"),
    ]
    for extra, needle in cases:
        code, out = stylize(tmp_path, starry, "--style", wave, *extra, "--weights", weights,
                            "--iterations", "1")
        assert code == 1
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err
        assert not out.exists()


def test_masks_and_label_map_run(tmp_path, weights):
    starry, wave = DATA / "starry_night.png", DATA / "great_wave.png"
    left = np.zeros((22, 32), np.uint8)
    left[:, :16] = 255
    Image.fromarray(left).save(tmp_path / "left.png")
    Image.fromarray(255 - left).save(tmp_path / "right.png")
    code, masked = stylize(tmp_path, starry, "--style", wave, "--mask", tmp_path / "left.png",
                           "--mask", tmp_path / "right.png", "--weights", weights,
                           "--iterations", "3", name="masked.png")
    assert code == 0
    code, labelled = stylize(tmp_path, starry, "--style", wave, "--label-map",
                             tmp_path / "right.png", "--weights", weights, "--iterations", "3",
                             name="labelled.png")
    assert code == 0
    # Label colours sorted darkest first: black (left) = style 1, as the first mask says.
    np.testing.assert_array_equal(pixels(masked), pixels(labelled))


def test_luminance_preservation_keeps_the_photos_chroma(tmp_path, weights):
    # 16 iterations: from a cold start the first fixed steps overshoot for a few iterations
    # (the result is the best image, which must be past them to differ from the photo).
    code, out = stylize(tmp_path, DATA / "starry_night.png", "--preserve-colors", "luminance",
                        "--weights", weights, "--iterations", "16")
    assert code == 0
    photo = load_image(DATA / "chelsea.png", max_side=32)
    result = pixels(out)
    iq_photo, iq_out = np.asarray(rgb_to_yiq(photo))[..., 1:], np.asarray(rgb_to_yiq(result))
    # Chroma kept up to 8-bit rounding and the clipping of out-of-gamut pixels.
    assert np.median(np.abs(iq_out[..., 1:] - iq_photo)) < 1.0
    assert np.abs(iq_out[..., 0] - np.asarray(rgb_to_yiq(photo))[..., 0]).mean() > 1.0
    code, out = stylize(tmp_path, DATA / "starry_night.png", "--preserve-colors", "histogram",
                        "--weights", weights, "--iterations", "2", name="histogram.png")
    assert code == 0 and read_metadata(out)["settings"]["preserve_colors"] == "histogram"


def test_preset_sets_conventions_and_explicit_options_win(tmp_path, weights, capsys):
    code, out = stylize(tmp_path, DATA / "starry_night.png", "--preset", "neural-style",
                        "--style-weight", "7", "--iterations", "2", "--weights", weights,
                        "--style-layer-weights", "1,1")  # FAST changes the preset's layers
    assert code == 0
    # The preset says what it changed from the defaults; options given explicitly are not
    # listed.
    said = [line for line in capsys.readouterr().err.splitlines()
            if line.startswith("preset neural-style sets: ")]
    assert len(said) == 1, said
    assert "content_weight=5" in said[0] and "history_size=100" in said[0]
    assert "init=gaussian" in said[0] and "style_weight" not in said[0]
    settings = read_metadata(out)["settings"]
    assert settings["preset"] == "neural-style" and settings["style_weight"] == 7.0
    assert settings["history_size"] == 100 and settings["linesearch"] == "none"
    assert settings["init"] == "gaussian" and settings["content_weight"] == 5.0


@pytest.mark.parametrize("optimizer", ["adam", "jaxopt-lbfgs"])
def test_a_preset_may_set_every_solver_field(monkeypatch, capsys, optimizer):
    """A preset's learning_rate or first_step configures the solver, as its history_size
    does (they reached StyleConfig, which refused first_step and let learning_rate go
    unused); explicit options still win."""
    import dataclasses

    from nst_jax import presets
    from nst_jax.cli._common import apply_preset, solver_config, style_config
    from nst_jax.cli._parser import build_parser

    custom = dataclasses.replace(presets.get_preset("gatys2016"), solver_kwargs={
        "name": optimizer, "learning_rate": 3.0, "first_step": 8.0})
    monkeypatch.setattr(presets, "get_preset", lambda name: custom)

    def configs(*flags):
        args = build_parser().parse_args(["stylize", "c.png", "s.png", "-o", "o.png",
                                          "--preset", "gatys2016", *flags])
        apply_preset(args)
        return style_config(args), solver_config(args)

    config, solver = configs()
    assert (solver.name, solver.learning_rate, solver.first_step) == (optimizer, 3.0, 8.0)
    assert config.learning_rate is None  # no deprecated solver field reached the objective
    assert "learning_rate=3, first_step=8" in capsys.readouterr().err
    _, solver = configs("--learning-rate", "5", "--first-step", "2")
    assert (solver.learning_rate, solver.first_step) == (5.0, 2.0)


def test_preset_layer_weights_must_follow_changed_layers(tmp_path, weights, capsys):
    code, _ = stylize(tmp_path, DATA / "starry_night.png", "--preset", "neural-style",
                      "--weights", weights, "--iterations", "1")
    assert code == 1 and "--style-layer-weights" in capsys.readouterr().err


def test_preset_refuses_weights_of_another_convention(tmp_path, capsys):
    torch_like = tmp_path / "torchvision.h5"
    save_vgg19_params(torch_like, random_vgg19_params(jax.random.key(1)),
                      preprocessing=TORCHVISION)
    code, out = stylize(tmp_path, DATA / "starry_night.png", "--preset", "neural-style",
                        "--weights", torch_like, "--iterations", "1",
                        "--style-layer-weights", "1,1")
    assert code == 1 and "Caffe-convention" in capsys.readouterr().err
    # Without a preset the file's own convention is used, and recorded in the image.
    code, out = stylize(tmp_path, DATA / "starry_night.png", "--weights", torch_like,
                        "--iterations", "1")
    assert code == 0
    recorded = read_metadata(out)["weights"]["preprocessing"]
    assert recorded["channel_order"] == "RGB" and recorded["std"] == list(TORCHVISION.std)


def test_multiscale_from_the_cli(tmp_path, weights, capsys):
    code, out = stylize(tmp_path, DATA / "starry_night.png", "--scales", "16",
                        "--scale-iterations", "2,2", "--weights", weights,
                        "--log", tmp_path / "log.json")
    assert code == 0
    assert pixels(out).shape == (22, 32, 3)
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["sizes"] == [16, 32] and [len(s["history"]["loss"]) for s in log["scales"]] == [
        3, 3]
    for extra, needle in ((["--scales", "16", "--resume"], "single-scale"),
                          (["--scales", "64"], "must increase"),
                          (["--scale-factor", "2", "--min-size", "8", "--scale-iterations", "1"],
                           "positive counts")):
        code, _ = stylize(tmp_path, DATA / "starry_night.png", *extra, "--weights", weights,
                          name="x.png")
        assert code == 1 and needle in capsys.readouterr().err


def test_the_default_runs_coarse_to_fine_and_splits_the_iterations():
    """``scale_sizes`` (no compute): the default at 512 px is 128, 181, 256, 362, 512 with
    --iterations split 2/3 per scale; one scale for a preset, --scale-factor 1, a size at or
    below --min-size, and the single-scale-only options (which refuse explicit scales)."""
    from nst_jax._errors import NstError
    from nst_jax.cli._parser import build_parser
    from nst_jax.cli._stylize import scale_sizes

    def sizes(*flags):
        args = build_parser().parse_args(["stylize", "a.jpg", "b.jpg", "-o", "o.png",
                                          "--iterations", "500", "--size", "512", *flags])
        return scale_sizes(args), args.scale_iterations

    assert sizes() == ([128, 181, 256, 362, 512], [192, 128, 85, 57, 38])
    assert sizes("--iterations", "50") == ([128, 181, 256, 362, 512], [19, 13, 8, 6, 4])
    assert sizes("--size", "256", "--iterations", "50") == ([128, 181, 256], [24, 16, 10])
    assert sizes("--scale-factor", "2") == ([128, 256, 512], [237, 158, 105])
    assert sizes("--scale-factor", "2", "--scale-iterations", "5,4,3") == (
        [128, 256, 512], [5, 4, 3])
    for single in (["--scale-factor", "1"], ["--size", "128"], ["--min-size", "600"],
                   ["--preset", "neural-style"], ["--checkpoint-every", "10"],
                   ["--save-every", "10"]):
        assert sizes(*single) == (None, None), single
    with pytest.raises(NstError, match="single-scale"):
        sizes("--scale-factor", "2", "--checkpoint-every", "10")
    with pytest.raises(NstError, match=">= 1"):
        sizes("--scale-factor", "0.5")


def test_frames_continue_with_skip_existing(tmp_path, weights, capsys, monkeypatch):
    from nst_jax import images

    frames = tmp_path / "frames"
    frames.mkdir()
    photo = load_image(DATA / "chelsea.png")
    for i in range(3):
        Image.fromarray(np.roll(photo, 2 * i, axis=1).astype(np.uint8)).save(
            frames / f"f{i}.png")
    out = tmp_path / "out"
    args = ["stylize-frames", str(frames), str(DATA / "starry_night.png"), "-o", str(out),
            "--weights", weights, "--iterations", "2", *FAST]
    decoded, load = [], images.load_image
    monkeypatch.setattr(images, "load_image", lambda path, **kw: decoded.append(
        Path(path).name) or load(path, **kw))
    assert main(args) == 0
    assert decoded == ["f0.png", "starry_night.png", "f1.png", "f2.png"]  # each frame once
    monkeypatch.setattr(images, "load_image", load)
    assert sorted(p.name for p in out.iterdir()) == ["f0.png", "f1.png", "f2.png"]
    first = pixels(out / "f2.png")
    assert main(args) == 1 and "--skip-existing" in capsys.readouterr().err
    (out / "f2.png").unlink()
    assert main([*args, "--skip-existing"]) == 0
    # It starts from the saved f1.png (8-bit) instead of the float result: nearly the same.
    assert np.abs(pixels(out / "f2.png") - first).mean() < 2.0


def test_frames_that_would_share_an_output_are_refused(tmp_path, weights, capsys):
    """f0.jpg and f0.png would both be written to f0.png: refused before any compute."""
    frames = tmp_path / "frames"
    frames.mkdir()
    photo = load_image(DATA / "chelsea.png").astype(np.uint8)
    Image.fromarray(photo).save(frames / "f0.png")
    Image.fromarray(photo).save(frames / "f0.jpg")
    out = tmp_path / "out"
    args = ["stylize-frames", str(frames), str(DATA / "starry_night.png"), "-o", str(out),
            "--weights", weights, "--iterations", "1", *FAST]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "f0.jpg" in err and "f0.png" in err and "rename one" in err
    assert not out.exists()


def test_weights_normalize_command(tmp_path, weights, capsys):
    dst = tmp_path / "normalized.h5"
    args = ["weights", "normalize", weights, "-o", str(dst), "--images",
            str(DATA / "chelsea.png"), "--size", "32"]
    assert main(args) == 0
    assert "conv5_4" in capsys.readouterr().out
    assert main(["weights", "info", str(dst)]) == 0
    assert main(args) == 1 and "exists" in capsys.readouterr().err


def test_weights_normalize_never_overwrites_its_source(tmp_path, weights, capsys):
    src = tmp_path / "vgg19.h5"
    src.write_bytes(Path(weights).read_bytes())
    code = main(["weights", "normalize", str(src), "-o", str(src), "--overwrite", "--images",
                 str(DATA / "chelsea.png"), "--size", "32"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"nst-jax: error: {src}: the output would overwrite the input {src}\n"
    assert src.read_bytes() == Path(weights).read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["vgg19.h5"]


def test_run_outputs_are_checked_before_compute(tmp_path, weights, capsys):
    """The log and the checkpoint get the same refusals as the image, with one line each."""
    content, style = tmp_path / "chelsea.png", tmp_path / "starry_night.png"
    for path in (content, style):
        path.write_bytes((DATA / path.name).read_bytes())
    folder = tmp_path / "log.json"
    folder.mkdir()
    out = tmp_path / "out.png"
    cases = [
        (["--log", out], f"{out}: the log must differ from the image"),
        (["--log", style, "--overwrite"], f"{style}: the output would overwrite the input {style}"),
        (["--checkpoint", content, "--checkpoint-every", "1", "--overwrite"],
         f"{content}: the output would overwrite the input {content}"),
        (["--log", folder], f"{folder}: is a folder; expected a file name for the log"),
        (["--log", tmp_path / "no" / "log.json"],
         f"{tmp_path / 'no' / 'log.json'}: folder {tmp_path / 'no'} does not exist"),
    ]
    before = {p: p.read_bytes() for p in (content, style)}
    for extra, message in cases:
        code = main(["stylize", str(content), str(style), "-o", str(out), *map(str, extra),
                     "--weights", weights, "--iterations", "1", *FAST])
        assert (code, capsys.readouterr().err) == (1, f"nst-jax: error: {message}\n")
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chelsea.png", "log.json",
                                                          "starry_night.png"]


def test_nonfinite_loss_keeps_the_best_image_and_says_what_to_try(tmp_path, weights, capsys):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((22, 32, 3), 128, np.uint8)).save(grey)
    out = tmp_path / "out.png"
    # TV = 0 on the grey start; any change makes 1e38 * TV overflow float32.
    code = main(["stylize", str(grey), str(DATA / "starry_night.png"), "-o", str(out),
                 "--tv-weight", "1e38", "--weights", weights, "--iterations", "5", *FAST])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "NaN or infinite" in err and "--style-weight" in err, err
    np.testing.assert_array_equal(pixels(out), 128.0)
