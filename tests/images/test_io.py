"""Image files <-> arrays: exact pixel values per mode, clear errors, atomic writes, metadata.

Every image here is made by the test itself with NumPy / Pillow (or is one of the exact 64-px PNGs in
tests/data), so expected pixel values are known independently of the loader.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nst_jax._files as files_module
import nst_jax.images._io as image_module
from conftest import DATA
from nst_jax import ImageError, load_image, save_image
from nst_jax.images import check_writable, read_metadata
DATA_PNGS = sorted(DATA.glob("*.png"))


def _noise(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _assert_rgb_image(loaded, shape):
    assert isinstance(loaded, np.ndarray)
    assert loaded.dtype == np.float32
    assert loaded.shape == shape
    assert loaded.min() >= 0 and loaded.max() <= 255


# --------------------------------------------------------------------------- load_image


def test_png_exact_values(tmp_path):
    pixels = _noise(17, 23)
    path = tmp_path / "noise.png"
    Image.fromarray(pixels).save(path)
    loaded = load_image(path)
    _assert_rgb_image(loaded, (17, 23, 3))
    np.testing.assert_array_equal(loaded, pixels.astype(np.float32))


@pytest.mark.parametrize("path", DATA_PNGS, ids=lambda p: p.stem)
def test_data_pngs_load_exactly(path):
    with Image.open(path) as img:
        expected = np.asarray(img.convert("RGB"), dtype=np.float32)
    loaded = load_image(path)
    _assert_rgb_image(loaded, expected.shape)
    assert max(loaded.shape[:2]) == 64
    np.testing.assert_array_equal(loaded, expected)


@pytest.mark.parametrize(
    "size, side, shape",
    [
        ((64, 48), 32, (24, 32, 3)),  # landscape, shrink: (W, H) -> (H, W, 3)
        ((48, 64), 32, (32, 24, 3)),  # portrait
        ((30, 20), 60, (40, 60, 3)),  # the longer side is made equal, also upwards
        ((64, 43), 32, (22, 32, 3)),  # 21.5 rounds to 22
        ((50, 50), 7, (7, 7, 3)),
    ],
)
def test_max_side_resizes_the_longest_side(tmp_path, size, side, shape):
    width, height = size
    path = tmp_path / "in.png"
    Image.fromarray(_noise(height, width)).save(path)
    _assert_rgb_image(load_image(path, max_side=side), shape)


def test_max_side_equal_to_size_keeps_pixels(tmp_path):
    pixels = _noise(20, 30)
    path = tmp_path / "in.png"
    Image.fromarray(pixels).save(path)
    np.testing.assert_array_equal(load_image(path, max_side=30), pixels)


def test_max_side_of_a_flat_image_keeps_its_colour(tmp_path):
    path = tmp_path / "flat.png"
    Image.new("RGB", (64, 40), (12, 200, 99)).save(path)
    loaded = load_image(path, max_side=16)
    _assert_rgb_image(loaded, (10, 16, 3))
    np.testing.assert_allclose(loaded, np.broadcast_to([12, 200, 99], loaded.shape), atol=1)


def test_grayscale(tmp_path):
    values = np.array([[0, 128, 255], [7, 64, 200]], np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(values, mode="L").save(path)
    loaded = load_image(path)
    _assert_rgb_image(loaded, (2, 3, 3))
    np.testing.assert_array_equal(loaded, np.repeat(values[..., None], 3, axis=-1))


def test_palette(tmp_path):
    img = Image.new("P", (3, 1))
    img.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0] + [0] * (3 * 253))
    img.putdata([1, 0, 2])
    path = tmp_path / "palette.png"
    img.save(path)
    with Image.open(path) as check:
        assert check.mode == "P"
    np.testing.assert_array_equal(load_image(path), [[[200, 100, 50], [10, 20, 30], [0, 255, 0]]])


def test_palette_with_transparent_index(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30, 0, 0, 0] + [0] * (3 * 254))
    img.putdata([0, 1])
    path = tmp_path / "palette_t.png"
    img.save(path, transparency=1)
    np.testing.assert_array_equal(load_image(path), [[[10, 20, 30], [255, 255, 255]]])


def test_rgba_is_composited_on_white(tmp_path):
    pixels = np.array(
        [[[10, 20, 30, 255], [10, 20, 30, 0], [0, 0, 0, 128], [200, 0, 0, 0]]], np.uint8
    )
    path = tmp_path / "rgba.png"
    Image.fromarray(pixels, mode="RGBA").save(path)
    loaded = load_image(path)
    _assert_rgb_image(loaded, (1, 4, 3))
    np.testing.assert_array_equal(loaded[0, 0], [10, 20, 30])  # opaque keeps its colour
    np.testing.assert_array_equal(loaded[0, 1], [255, 255, 255])  # transparent -> white
    np.testing.assert_array_equal(loaded[0, 3], [255, 255, 255])
    np.testing.assert_allclose(loaded[0, 2], [127, 127, 127], atol=1)  # half black on white


def test_la_is_composited_on_white(tmp_path):
    pixels = np.array([[[50, 255], [50, 0]]], np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(pixels, mode="LA").save(path)
    with Image.open(path) as check:
        assert check.mode == "LA"
    np.testing.assert_array_equal(load_image(path), [[[50, 50, 50], [255, 255, 255]]])


def test_cmyk(tmp_path):
    pixels = np.array(
        [[[0, 0, 0, 0], [255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 255, 0], [0, 0, 0, 255]]],
        np.uint8,
    )
    path = tmp_path / "cmyk.tif"
    Image.fromarray(pixels, mode="CMYK").save(path)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    expected = [[[255, 255, 255], [0, 255, 255], [255, 0, 255], [255, 255, 0], [0, 0, 0]]]
    np.testing.assert_array_equal(load_image(path), expected)


def _save_16bit(path, values):
    Image.fromarray(np.asarray(values, np.uint16)).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    return path


def test_16bit_grayscale_is_scaled(tmp_path):
    path = _save_16bit(tmp_path / "deep.png", [[0, 65535, 32768, 25700]])
    loaded = load_image(path)
    _assert_rgb_image(loaded, (1, 4, 3))
    np.testing.assert_array_equal(loaded[..., 0], [[0, 255, 128, 100]])
    np.testing.assert_array_equal(loaded[..., 0], loaded[..., 2])


def test_dark_16bit_grayscale_stays_dark(tmp_path):
    path = _save_16bit(tmp_path / "dark.png", [[0, 100, 255]])
    np.testing.assert_array_equal(load_image(path)[..., 0], [[0, 0, 1]])


def test_exif_rotated_jpeg(tmp_path):
    # Stored 40 wide x 20 high: top half red, bottom half blue. Orientation 6 means "rotate 90
    # degrees clockwise to display": the stored top ends up on the right.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:10] = [255, 0, 0]
    pixels[10:] = [0, 0, 255]
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    loaded = load_image(path)
    _assert_rgb_image(loaded, (40, 20, 3))
    np.testing.assert_allclose(loaded[:, -4:].mean(axis=(0, 1)), [255, 0, 0], atol=12)
    np.testing.assert_allclose(loaded[:, :4].mean(axis=(0, 1)), [0, 0, 255], atol=12)


def test_animated_gif_gives_first_frame(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (8, 6), colour) for colour in colours]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3
    loaded = load_image(path)
    _assert_rgb_image(loaded, (6, 8, 3))
    np.testing.assert_array_equal(loaded, np.broadcast_to([255, 0, 0], (6, 8, 3)))


# --------------------------------------------------------------------------- load errors


def _truncated(fmt, name):
    def build(tmp_path):
        path = tmp_path / name
        Image.fromarray(_noise(64, 64)).save(path, format=fmt)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path

    return build


def _write(name, data):
    def build(tmp_path):
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return build


def _folder(tmp_path):
    path = tmp_path / "folder.png"
    path.mkdir()
    return path


LOAD_ERRORS = [
    pytest.param(lambda tmp_path: tmp_path / "missing.png", id="missing"),
    pytest.param(_write("empty.png", b""), id="zero-bytes"),
    pytest.param(_write("text.png", b"hello, I am not a picture\n" * 20), id="text-as-png"),
    pytest.param(_truncated("PNG", "cut.png"), id="truncated-png"),
    pytest.param(_truncated("JPEG", "cut.jpg"), id="truncated-jpeg"),
    pytest.param(_folder, id="folder"),
]


@pytest.mark.parametrize("build", LOAD_ERRORS)
def test_load_errors_name_the_file(tmp_path, build):
    path = build(tmp_path)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_pixel_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(_noise(64, 64)).save(path)
    monkeypatch.setattr(image_module, "MAX_PIXELS", 64 * 64)
    _assert_rgb_image(load_image(path), (64, 64, 3))  # exactly at the limit is fine
    monkeypatch.setattr(image_module, "MAX_PIXELS", 64 * 64 - 1)
    with pytest.raises(ImageError) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message and "64x64" in message and "limit" in message


def test_images_below_max_pixels_are_accepted(tmp_path, monkeypatch):
    # Same proportions as the defaults (MAX_PIXELS == 2 * Image.MAX_IMAGE_PIXELS), scaled down.
    assert image_module.MAX_PIXELS == 2 * Image.MAX_IMAGE_PIXELS
    path = tmp_path / "medium.png"
    Image.fromarray(_noise(64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    monkeypatch.setattr(image_module, "MAX_PIXELS", 6000)
    _assert_rgb_image(load_image(path), (64, 64, 3))  # 4096 px < MAX_PIXELS


# --------------------------------------------------------------------------- save_image


def test_png_round_trip_is_exact(tmp_path):
    pixels = _noise(13, 29).astype(np.float32)
    path = save_image(tmp_path / "out.png", pixels)
    assert path == tmp_path / "out.png"
    np.testing.assert_array_equal(load_image(path), pixels)
    assert os.listdir(tmp_path) == ["out.png"]


def test_save_rounds_and_clips(tmp_path):
    values = np.array([-50.0, -0.4, 0.0, 10.4, 10.6, 254.6, 255.0, 255.4, 300.0, 1e6])
    expected = np.array([0, 0, 0, 10, 11, 255, 255, 255, 255, 255], np.float32)
    rgb = np.stack([values, values[::-1], np.full_like(values, 77.0)], axis=-1)[None]
    path = save_image(tmp_path / "clip.png", rgb)
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded[0, :, 0], expected)
    np.testing.assert_array_equal(loaded[0, :, 1], expected[::-1])
    np.testing.assert_array_equal(loaded[0, :, 2], 77)


def test_save_accepts_jax_arrays(tmp_path):
    import jax.numpy as jnp

    pixels = _noise(5, 6)
    path = save_image(tmp_path / "jax.png", jnp.asarray(pixels, jnp.float32))
    np.testing.assert_array_equal(load_image(path), pixels)


METADATA = {
    "weights": {"source": "random", "seed": 0, "path": None, "md5": None},
    "style_weight": 1e4,
    "content_weight": 1.0,
    "layers": ["conv1_1", "conv2_1", "conv4_2"],
    "note": "caf\u00e9 \u2013 \u201cquoted\u201d",
}


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".jpeg"])
def test_metadata_round_trip(tmp_path, suffix):
    pixels = _noise(16, 16).astype(np.float32)
    path = save_image(tmp_path / f"out{suffix}", pixels, metadata=METADATA)
    stored = {**METADATA, "color_space": "sRGB"}  # the pixels' space, added by save_image
    assert read_metadata(path) == stored
    with Image.open(path) as img:  # both carriers, readable by other tools
        if suffix == ".png":
            assert json.loads(img.info["nst_jax"]) == stored  # PNG tEXt/iTXt chunk
        assert json.loads(img.getexif()[0x010E]) == stored  # EXIF ImageDescription
    loaded = load_image(path)
    _assert_rgb_image(loaded, (16, 16, 3))
    if suffix == ".png":
        np.testing.assert_array_equal(loaded, pixels)  # metadata does not touch the pixels


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_no_metadata_reads_as_none(tmp_path, suffix):
    path = save_image(tmp_path / f"plain{suffix}", _noise(4, 4))
    assert read_metadata(path) is None


@pytest.mark.parametrize("shape", [(4, 4), (4, 4, 4), (4, 4, 1), (2, 4, 4, 3)])
def test_save_rejects_wrong_shapes(tmp_path, shape):
    path = tmp_path / "bad.png"
    with pytest.raises(ImageError, match="bad.png"):
        save_image(path, np.zeros(shape, np.float32))
    assert os.listdir(tmp_path) == []


def _exploding_save(error):
    def save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n partial bytes")  # something really reaches the temp file
        raise error

    return save


@pytest.mark.parametrize("existing", [True, False])
@pytest.mark.parametrize(
    "error, expected",
    [
        pytest.param(OSError(28, "No space left on device"), ImageError, id="oserror"),
        pytest.param(RuntimeError("interrupted"), RuntimeError, id="other-error"),
    ],
)
def test_failed_save_is_atomic(tmp_path, monkeypatch, existing, error, expected):
    dest = tmp_path / "result.png"
    old = b"previous result, must survive" * 10
    if existing:
        dest.write_bytes(old)
    monkeypatch.setattr(Image.Image, "save", _exploding_save(error))
    with pytest.raises(expected) as info:
        save_image(dest, _noise(8, 8))
    if expected is ImageError:
        assert str(dest) in str(info.value)
    if existing:
        assert dest.read_bytes() == old
        assert os.listdir(tmp_path) == ["result.png"]
    else:
        assert os.listdir(tmp_path) == []  # no partial file, no temp file


def test_save_overwrites_atomically_on_success(tmp_path):
    dest = tmp_path / "result.png"
    dest.write_bytes(b"old")
    pixels = _noise(6, 7)
    save_image(dest, pixels)
    np.testing.assert_array_equal(load_image(dest), pixels)
    assert os.listdir(tmp_path) == ["result.png"]


def test_save_into_missing_folder_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="missing"):
        save_image(tmp_path / "missing" / "out.png", _noise(4, 4))


def test_saved_image_has_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_image(tmp_path / "out.png", _noise(4, 4))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# --------------------------------------------------------------------------- check_writable


def _existing(tmp_path):
    path = tmp_path / "exists.png"
    path.write_bytes(b"x")
    return path


def _directory(tmp_path):
    path = tmp_path / "out_dir.png"
    path.mkdir()
    return path


CHECK_ERRORS = [
    pytest.param(lambda t: t / "out.xyz", False, "extension", id="unknown-extension"),
    pytest.param(lambda t: t / "out", False, "extension", id="no-extension"),
    pytest.param(_existing, False, "already exists", id="exists-no-overwrite"),
    pytest.param(
        lambda t: t / "no_such_dir" / "out.png", True, "does not exist", id="missing-folder"
    ),
    pytest.param(_directory, False, "is a folder", id="directory-path"),
    pytest.param(_directory, True, "is a folder", id="directory-path-overwrite"),
]


@pytest.mark.parametrize("build, overwrite, words", CHECK_ERRORS)
def test_check_writable_errors(tmp_path, build, overwrite, words):
    path = build(tmp_path)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ImageError) as info:
        check_writable(path, overwrite=overwrite)
    message = str(info.value)
    assert str(path) in message
    assert words in message.replace(str(path), "")  # said in words, not just in the path
    assert sorted(os.listdir(tmp_path)) == before


def test_check_writable_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        try:  # root (and some file systems) can write anyway: then there is nothing to test
            (folder / "probe").write_bytes(b"")
        except PermissionError:
            pass
        else:
            pytest.skip("this user can write into a read-only folder")
        with pytest.raises(ImageError, match="not writable"):
            check_writable(folder / "out.png")
    finally:
        folder.chmod(0o755)


def test_check_writable_unwritable_folder_even_as_root(tmp_path, monkeypatch):
    """The probe failing (as it does in a read-only folder) must become an ImageError."""

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files_module.tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(ImageError) as info:
        check_writable(tmp_path / "out.png")
    message = str(info.value)
    assert str(tmp_path / "out.png") in message and "not writable" in message


def test_check_writable_passes(tmp_path):
    existing = _existing(tmp_path)
    assert check_writable(existing, overwrite=True) == existing
    assert existing.read_bytes() == b"x"
    assert check_writable(tmp_path / "new.PNG") == tmp_path / "new.PNG"
    assert check_writable(str(tmp_path / "new.jpg")) == tmp_path / "new.jpg"
    assert os.listdir(tmp_path) == ["exists.png"]  # no probe file left behind


def test_check_writable_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_writable("out.png") == Path("out.png")
    assert os.listdir(tmp_path) == []


def test_check_writable_refuses_an_input(tmp_path):
    source = tmp_path / "in.png"
    source.write_bytes(b"x")
    with pytest.raises(ImageError, match="would overwrite the input"):
        check_writable(source, overwrite=True, sources=[source])
    assert source.read_bytes() == b"x"


def test_check_writable_refuses_read_only_format(tmp_path):
    path = tmp_path / "out.psd"
    try:
        check_writable(path)
    except ImageError as err:
        assert str(path) in str(err)
    else:
        raise AssertionError("check_writable accepted .psd, which Pillow cannot write")


def test_save_read_only_format_is_an_image_error(tmp_path):
    path = tmp_path / "out.psd"
    with pytest.raises(ImageError, match="out.psd"):
        save_image(path, _noise(4, 4))
    assert os.listdir(tmp_path) == []
