"""Malformed images and resource limits: the loader and the CLI must refuse cleanly, never crash.

Every mutated file goes through :func:`nst_jax.load_image`, which must either return a finite
float32 (H, W, 3) array in 0..255 or raise :class:`nst_jax.ImageError`; a deterministic subset
also goes through ``nst-jax stylize`` in-process, which must end in exactly one
``nst-jax: error:`` line and leave no file behind. The corpus is rebuilt from a fixed seed on
every run (Pillow-made seed files plus tests/data/*.png), so a failure reproduces exactly.
"""

from __future__ import annotations

import io
import random
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from nst_jax import ImageError, load_image
from nst_jax.cli import _common, main
from nst_jax.images import MAX_PIXELS
SEED = 20260527
#: Seconds one file may take to load; a hang fails the test instead of blocking it.
TIME_LIMIT = 10


# --------------------------------------------------------------------------- corpus


def _noise(height: int, width: int, channels: int = 3, *, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _encode(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _valid_files() -> dict[str, bytes]:
    """Small valid files of every format the loader meets, named ``<stem>.<ext>``."""
    rgb = Image.fromarray(_noise(16, 24))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate; exercises exif_transpose on mutated EXIF
    frames = [Image.fromarray(_noise(12, 10, seed=s)).convert("P") for s in (1, 2)]
    palette = rgb.convert("P")
    palette.info["transparency"] = 0
    files = {
        "rgb.png": _encode(rgb, "PNG"),
        "palette.png": _encode(palette, "PNG"),
        "gray16.png": _encode(Image.fromarray(_noise(9, 7, 1).astype(np.uint16) * 257), "PNG"),
        "rgba.png": _encode(Image.fromarray(_noise(8, 8, 4)), "PNG"),
        "rgb.jpg": _encode(rgb, "JPEG", quality=80),
        "exif.jpg": _encode(rgb, "JPEG", exif=exif),
        "progressive.jpg": _encode(rgb, "JPEG", progressive=True),
        "anim.gif": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "rgb.bmp": _encode(rgb, "BMP"),
        "rgb.tif": _encode(rgb, "TIFF"),
        "deflate.tif": _encode(rgb, "TIFF", compression="tiff_deflate", exif=exif),
        "lossy.webp": _encode(rgb, "WEBP", quality=50),
        "lossless.webp": _encode(rgb, "WEBP", lossless=True),
    }
    for path in sorted(DATA.glob("*.png")):
        files[f"data_{path.name}"] = path.read_bytes()
    return files


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` (CRC fixed) over a 1x1 image's data."""
    png = _encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG")
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def _corpus(rng: random.Random) -> list[tuple[str, bytes | None]]:
    """(file name, content) pairs; content None means "a folder with this name"."""
    valid = _valid_files()
    names = sorted(valid)
    extensions = [name.rsplit(".", 1)[1] for name in names]
    corpus: list[tuple[str, bytes | None]] = []

    def add(kind: str, source: str, data: bytes | None) -> None:
        extension = source.rsplit(".", 1)[1]
        corpus.append((f"{len(corpus):04d}_{kind}_{source.rsplit('.', 1)[0]}.{extension}", data))

    for name in names:
        data = valid[name]
        for _ in range(10):  # cut anywhere, including inside the header
            add("cut", name, data[:rng.randrange(len(data))])
        for _ in range(12):  # a few flipped bytes anywhere
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                mutated[rng.randrange(len(mutated))] ^= rng.randint(1, 255)
            add("flip", name, bytes(mutated))
        for _ in range(8):  # header bytes overwritten (magic, dimensions, offsets, counts)
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(min(64, len(mutated)))] = rng.choice((0, 0xFF, 0x7F, 0x80))
            add("header", name, bytes(mutated))
        for _ in range(4):  # this format's header spliced onto another format's body
            other = valid[rng.choice(names)]
            cut = rng.randint(4, 64)
            add("splice", name, data[:cut] + other[rng.randint(0, 64):])
        add("doubled", name, data + data)
        add("zero-tail", name, data[: len(data) // 2] + bytes(len(data) - len(data) // 2))
    for _ in range(30):  # noise, sometimes behind a valid magic number
        magic = valid[rng.choice(names)][: rng.choice((0, 2, 4, 8, 16))]
        add("random", f"noise.{rng.choice(extensions)}", magic + rng.randbytes(rng.randint(1, 4096)))
    for width, height in ((20000, 20000), (2**31 - 1, 1), (1, 2**31 - 1), (0, 0), (0, 5),
                          (2**32 - 1, 2**32 - 1), (70000, 3), (3, 3)):
        add(f"ihdr{width}x{height}", "declared.png", _png_with_size(width, height))
    for extension in sorted(set(extensions)):
        add("empty", f"empty.{extension}", b"")
        add("text", f"text.{extension}", b"this is not an image, just words\n" * 40)
        add("folder", f"folder.{extension}", None)
    return corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("fuzz")
    paths = []
    for name, data in _corpus(random.Random(SEED)):
        path = folder / name
        if data is None:
            path.mkdir()
        else:
            path.write_bytes(data)
        paths.append(path)
    return paths


class _Hang(BaseException):
    """Raised by the alarm; a BaseException, so no ``except Exception`` can swallow it."""


def _on_alarm(signum, frame):
    raise _Hang


def _load_within_limit(path: Path, **options):
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    try:
        return load_image(path, **options)
    except _Hang:
        pytest.fail(f"{path.name}: load_image took more than {TIME_LIMIT} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def outcomes(corpus) -> dict[Path, np.ndarray | ImageError]:
    """Each corpus file's :func:`load_image` result: the array, or the ImageError it raised."""
    results: dict[Path, np.ndarray | ImageError] = {}
    for path in corpus:
        try:
            results[path] = _load_within_limit(path)
        except ImageError as err:
            results[path] = err
    return results


def test_every_mutated_file_loads_or_raises_image_error(corpus, outcomes):
    # Any exception other than ImageError has already failed the `outcomes` fixture.
    assert len(corpus) >= 500
    loaded = {path: out for path, out in outcomes.items() if isinstance(out, np.ndarray)}
    refused = {path: out for path, out in outcomes.items() if isinstance(out, ImageError)}
    assert len(loaded) + len(refused) == len(corpus)
    assert len(refused) >= len(corpus) // 2 and loaded  # both outcomes are exercised
    for path, rgb in loaded.items():
        assert rgb.dtype == np.float32 and rgb.ndim == 3 and rgb.shape[2] == 3, path.name
        assert min(rgb.shape[:2]) >= 1, path.name
        assert np.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 255, path.name
    for path, err in refused.items():
        message = str(err)
        assert str(path) in message and "\n" not in message, message


# --------------------------------------------------------------------------- the CLI, in-process


@pytest.fixture
def cli(monkeypatch, capfd, tmp_path):
    """Run ``nst-jax`` in-process; returns (exit code, stderr lines, files left in the output
    folder). Resolving weights fails the test: every run here must stop before any compute."""
    def no_compute(*args, **kwargs):
        raise AssertionError("the run got past the checks to the weights")

    monkeypatch.setattr(_common, "get_weights", no_compute)
    monkeypatch.setenv("NST_JAX_OFFLINE", "1")
    out = tmp_path / "out"  # (conftest restores the signal handlers main() installs)
    out.mkdir()

    def run(*args):
        capfd.readouterr()
        code = main([str(a) for a in args])
        err = capfd.readouterr().err
        assert "Traceback" not in err, err
        return code, err.splitlines(), sorted(p.name for p in out.iterdir())

    run.out = out
    return run


def _error_line(lines: list[str]) -> str:
    errors = [line for line in lines if line.startswith("nst-jax: error:")]
    assert len(errors) == 1, lines
    return errors[0]


def test_cli_refuses_mutated_files_cleanly(corpus, outcomes, cli):
    chosen = random.Random(SEED).sample(corpus, 60)
    good = DATA / "starry_night.png"
    for path in chosen:
        options = ["--weights", "random", "--size", "32", "--iterations", "1", "-q"]
        if isinstance(outcomes[path], np.ndarray):
            # Still a valid image: the loader lets it through, and a tiny memory budget stops
            # the run right after it (a full run compiles per shape; test_cli.py covers that).
            options += ["--max-memory", "0.001"]
        code, lines, left = cli("stylize", path, good, "-o", cli.out / "out.png", *options)
        assert code == 1, (path.name, lines)
        line = _error_line(lines)
        if isinstance(outcomes[path], ImageError):
            assert str(path) in line, line
        else:
            assert "GB is available" in line, line
        assert left == [], (path.name, left)  # no output, no temporary file


def test_declared_huge_png_is_refused_unless_the_limit_is_raised(tmp_path, cli):
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_with_size(20000, 20000))
    with pytest.raises(ImageError, match="--max-pixels") as info:
        load_image(huge)
    assert f"{MAX_PIXELS:,}" in str(info.value)
    # Past the guard with a higher limit, the 1x1 pixel data then fails to decode.
    with pytest.raises(ImageError, match="not a readable image") as info:
        load_image(huge, max_pixels=400_000_000)
    assert "--max-pixels" not in str(info.value)

    common = [DATA / "starry_night.png", "-o", cli.out / "out.png", "--weights", "random"]
    code, lines, left = cli("stylize", huge, *common)
    assert code == 1 and "--max-pixels" in _error_line(lines) and left == []
    code, lines, left = cli("stylize", huge, *common, "--max-pixels", "400000000")
    line = _error_line(lines)
    assert code == 1 and "not a readable image" in line and "--max-pixels" not in line


def test_max_pixels_flag_is_honoured_end_to_end(cli):
    # chelsea.png is 64x43 = 2,752 px: refused by our own check (which names the dimensions)
    # below twice the limit, and by Pillow's early stop above it; both name the fix.
    content = DATA / "chelsea.png"
    with pytest.raises(ImageError, match="declares 64x43 pixels, more than the 2,000-pixel"):
        load_image(content, max_pixels=2000)
    assert load_image(content, max_pixels=64 * 43).shape == (43, 64, 3)
    for limit in ("2000", "100"):
        code, lines, left = cli("stylize", content, DATA / "starry_night.png",
                                "-o", cli.out / "out.png", "--max-pixels", limit)
        line = _error_line(lines)
        assert code == 1 and str(content) in line and "--max-pixels" in line, line
        assert f"{int(limit):,}-pixel limit" in line and left == []
    # The style image is guarded too: starry_night.png is 64x51 = 3,264 px.
    code, lines, _ = cli("stylize", content, DATA / "starry_night.png",
                         "-o", cli.out / "out.png", "--max-pixels", "3000")
    assert code == 1 and "starry_night.png: declares 64x51" in _error_line(lines)


def test_pillow_limit_is_restored(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    load_image(DATA / "chelsea.png", max_pixels=10**9)
    with pytest.raises(ImageError):
        load_image(DATA / "chelsea.png", max_pixels=10)
    assert Image.MAX_IMAGE_PIXELS == before


def test_cli_refuses_a_run_over_the_memory_budget_before_compute(cli):
    content, style = DATA / "chelsea.png", DATA / "starry_night.png"
    code, lines, left = cli("stylize", content, style, "-o", cli.out / "out.png",
                            "--size", "64", "--max-memory", "0.001", "--weights", "random")
    line = _error_line(lines)
    assert code == 1 and left == []
    assert "a 64x43 image needs about" in line and "only 0.0 GB is available" in line, line
    code, lines, _ = cli("sweep", content, style, "-o", cli.out / "sweep",
                         "--style-weight", "1e2,1e3,1e4", "--size", "64", "--max-memory", "0.001")
    assert code == 1 and "3 runs of a 64x43 image need" in _error_line(lines)
