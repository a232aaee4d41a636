"""Colour profiles: inputs with an embedded ICC profile are converted to sRGB on load, outputs
carry the sRGB profile and say so.

The profiles are made here, as ICC v2 matrix/TRC profiles written byte by byte (Display P3, a
linear grey), and the expected sRGB values come from NumPy: the primaries' RGB -> XYZ matrices
(Bradford's adaptation to the D50 connection space cancels between two such profiles) and the
sRGB transfer curve.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms

from nst_jax.images import load_image, read_metadata, save_image
from nst_jax.images._io import profile_name

D65 = (0.3127, 0.3290)
D50_XYZ = np.array([0.9642, 1.0, 0.8249])
P3 = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
SRGB = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367],
                     [0.0389, -0.0685, 1.0296]])
# The sRGB curve as ICC parametric curve type 3: (g, a, b, c, d).
SRGB_CURVE = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)


def xyz(xy) -> np.ndarray:
    x, y = xy
    return np.array([x / y, 1.0, (1 - x - y) / y])


def rgb_to_xyz(primaries, white=D65) -> np.ndarray:
    """The (3, 3) matrix from linear RGB to XYZ (white Y = 1)."""
    columns = np.stack([xyz(p) for p in primaries], axis=1)
    return columns * np.linalg.solve(columns, xyz(white))


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    return np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(values) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in values)


def icc_profile(description: str, *, primaries=None, gamma: float | None = None) -> bytes:
    """An ICC v2 display profile: RGB with ``primaries`` (D65 white) and the sRGB curve, or,
    without primaries, grey with the curve ``gamma``."""
    text = description.encode() + b"\0"
    tags = {"desc": b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 3 + 67),
            "cprt": b"text\0\0\0\0no copyright, made by a test\0",
            "wtpt": _xyz_tag(xyz(D65))}
    if primaries is not None:
        # The colorants, adapted from D65 to the D50 connection space with Bradford's matrix.
        cone = BRADFORD @ xyz(D65), BRADFORD @ D50_XYZ
        adapt = np.linalg.inv(BRADFORD) @ np.diag(cone[1] / cone[0]) @ BRADFORD
        colorants = adapt @ rgb_to_xyz(primaries)
        curve = b"para\0\0\0\0" + struct.pack(">HH", 3, 0) + b"".join(map(_s15, SRGB_CURVE))
        for i, channel in enumerate("rgb"):
            tags[f"{channel}XYZ"] = _xyz_tag(colorants[:, i])
            tags[f"{channel}TRC"] = curve
        space = b"RGB "
    else:
        tags["kTRC"] = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))
        space = b"GRAY"
    table, data = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for signature, body in tags.items():
        body += bytes(-len(body) % 4)  # tag data 4-byte aligned
        table += signature.encode() + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntr"
              + space + b"XYZ " + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp"
              + bytes(4 + 4 + 4 + 4 + 8 + 4) + b"".join(map(_s15, D50_XYZ)) + bytes(4 + 16 + 28))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


@pytest.fixture
def p3_photo(tmp_path):
    """A 24x32 image of random P3 values, saturated corners included, tagged Display P3."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    pixels[0, :8] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255],
                     [255, 0, 255], [255, 255, 255], [0, 0, 0]]
    path = tmp_path / "p3.png"
    Image.fromarray(pixels).save(path, icc_profile=icc_profile("Display P3", primaries=P3))
    return path, pixels


def expected_srgb(p3_pixels: np.ndarray) -> np.ndarray:
    """P3 values -> sRGB values, 0-255 floats, in NumPy."""
    to_srgb = np.linalg.solve(rgb_to_xyz(SRGB), rgb_to_xyz(P3))
    linear = srgb_decode(p3_pixels / 255.0) @ to_srgb.T
    return 255.0 * srgb_encode(linear)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_a_display_p3_image_loads_as_its_srgb_conversion(p3_photo, tmp_path, suffix):
    path, pixels = p3_photo
    if suffix != ".png":  # the same pixels and profile in other containers (lossless where
        path = tmp_path / f"p3{suffix}"  # the format allows; JPEG: compare with its own pixels)
        options = {"quality": 100, "subsampling": 0} if suffix == ".jpg" else (
            {"lossless": True} if suffix == ".webp" else {})
        Image.fromarray(pixels).save(path, icc_profile=icc_profile("Display P3", primaries=P3),
                                     **options)
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB"))
    loaded = load_image(path)
    assert np.abs(loaded - expected_srgb(pixels)).max() <= 1.0  # within 8-bit rounding
    assert np.abs(loaded - pixels).max() > 20  # read as sRGB numbers, colours would shift
    assert profile_name(path) == "Display P3"


def test_a_grey_profile_converts_the_grey_levels_to_srgb(tmp_path):
    """Gamma 2.2 grey (Photoshop's "Gray Gamma 2.2"): within LittleCMS's 8-bit precision,
    which measured 1.03 levels at worst here (a linear grey, rare, is off by up to 10 levels in
    the darkest greys: the price of its fast, precalculated 8-bit transforms)."""
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = tmp_path / "grey.png"
    Image.fromarray(levels, "L").save(path, icc_profile=icc_profile("Gray Gamma 2.2", gamma=2.2))
    loaded = load_image(path)
    want = 255.0 * srgb_encode((levels / 255.0) ** (563 / 256))  # the gamma as u8Fixed8 stores it
    for channel in range(3):
        assert np.abs(loaded[..., channel] - want).max() <= 1.1


def test_alpha_survives_the_conversion_and_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255  # top half opaque P3 red, bottom half transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path, icc_profile=icc_profile("Display P3", primaries=P3))
    loaded = load_image(path)
    np.testing.assert_allclose(loaded[:2], np.broadcast_to(
        expected_srgb(np.array([255, 0, 0])), (2, 4, 3)), atol=1.0)
    np.testing.assert_array_equal(loaded[2:], 255.0)


def test_an_unreadable_profile_is_ignored(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    path = tmp_path / "bad_profile.png"
    Image.fromarray(pixels).save(path, icc_profile=b"not an ICC profile at all")
    np.testing.assert_array_equal(load_image(path), pixels)
    assert profile_name(path) is None


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_outputs_carry_the_srgb_profile_and_say_so(tmp_path, suffix):
    pixels = np.random.default_rng(2).integers(0, 256, (8, 8, 3)).astype(np.float32)
    path = save_image(tmp_path / f"out{suffix}", pixels, metadata={"note": "x"})
    with Image.open(path) as img:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
    assert "sRGB" in ImageCms.getProfileDescription(profile)
    if suffix in (".png", ".jpg"):
        assert read_metadata(path) == {"note": "x", "color_space": "sRGB"}
    if suffix in (".png", ".tif"):  # lossless: read back as the same numbers (sRGB to sRGB)
        np.testing.assert_array_equal(load_image(path), pixels)


def test_a_display_p3_photo_through_the_cli_equals_its_srgb_conversion(tmp_path, monkeypatch):
    """The photo's numbers reinterpreted as Display P3: stylized, it gives the image that its
    sRGB conversion (LittleCMS, saved without a profile) gives, bit for bit; the output carries
    the sRGB profile and its metadata names the input's profile."""
    from conftest import DATA
    from nst_jax.cli import main

    monkeypatch.setenv("NST_JAX_OFFLINE", "1")
    with Image.open(DATA / "chelsea.png") as img:
        photo = img.convert("RGB")
    p3 = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile("Display P3", primaries=P3)))
    photo.save(tmp_path / "p3.png", icc_profile=p3.tobytes())
    converted = ImageCms.profileToProfile(photo, p3, ImageCms.createProfile("sRGB"),
                                          renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
                                          outputMode="RGB")
    converted.info.pop("icc_profile", None)  # untagged numbers: read as sRGB
    converted.save(tmp_path / "srgb.png")
    outputs = {}
    for name in ("p3", "srgb"):
        outputs[name] = tmp_path / f"out_{name}.png"
        assert main(["stylize", str(tmp_path / f"{name}.png"), str(DATA / "starry_night.png"),
                     "-o", str(outputs[name]), "--size", "32", "--iterations", "2",
                     "--weights", "random", "-q"]) == 0
    np.testing.assert_array_equal(load_image(outputs["p3"]), load_image(outputs["srgb"]))
    assert np.abs(load_image(tmp_path / "p3.png") - np.asarray(photo)).max() > 20
    meta = read_metadata(outputs["p3"])
    assert meta["color_space"] == "sRGB"
    assert meta["settings"]["input_profiles"] == {str(tmp_path / "p3.png"): "Display P3"}
    assert read_metadata(outputs["srgb"])["settings"]["input_profiles"] == {}
    with Image.open(outputs["p3"]) as img:
        assert "sRGB" in ImageCms.getProfileDescription(
            ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"])))
