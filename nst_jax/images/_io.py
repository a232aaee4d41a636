"""Image files <-> arrays.

Pixel convention everywhere outside the network: one image, (H, W, 3), float32, RGB, 0-255.
Writes are atomic (temporary file in the target folder, then rename), so a failed or interrupted
save never leaves a partial file and never replaces an existing one half-way.

Colour: the network was trained on sRGB images, and every array here is sRGB. A file with an
embedded ICC profile (Display P3 from phones, Adobe RGB from cameras, a grey profile) is
converted to sRGB on load with Pillow's ImageCms (LittleCMS); every file written carries the
sRGB profile.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageOps, PngImagePlugin

from .._errors import ImageError
from .._files import atomic_file, check_output

#: Largest image accepted by default, in pixels (Pillow's own decompression-bomb threshold x2).
MAX_PIXELS = 178_956_970

# EXIF ImageDescription: where the run's settings go in formats without text chunks.
_EXIF_DESCRIPTION = 0x010E


def load_image(
    path: str | os.PathLike, *, max_side: int | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Read an image file as RGB float32 0-255, (H, W, 3).

    EXIF orientation is applied; an embedded RGB or grey ICC profile is converted to sRGB
    (relative colorimetric; an unreadable profile, or one of another colour space such as CMYK,
    is ignored and the numbers are taken as sRGB, as files without a profile are); grayscale,
    palette and CMYK images are converted to RGB; transparency is composited on white;
    animated files give their first frame; 16-bit images are scaled to 8-bit range. Pillow's
    warnings about damaged metadata are silenced: the pixels either decode, or the file is
    refused.

    Args:
        path: image file.
        max_side: if given, resize (Lanczos) so that the longer side equals it.
        max_pixels: refuse files that declare more pixels than this, before decoding them
            (the decompression-bomb guard); None means ``MAX_PIXELS``.

    Raises:
        ImageError: missing, unreadable, not an image, or larger than ``max_pixels``.
    """
    path = Path(path)
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, expected an image file")
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    try:
        with warnings.catch_warnings(), _pillow_pixel_limit(limit):
            # Our own check below replaces Pillow's warning threshold, and a damaged tag that
            # Pillow skips with a UserWarning must not crash a caller running with -W error.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
            with Image.open(path) as img:
                if img.width * img.height > limit:
                    raise ImageError(
                        f"{path}: declares {img.width}x{img.height} pixels, more than the "
                        f"{limit:,}-pixel limit (a guard against decompression bombs); pass "
                        "--max-pixels N to raise the limit"
                    )
                img.seek(0)
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        # Pillow's own guard, at twice our limit, fires inside open() before the size is known.
        raise ImageError(
            f"{path}: declares more than twice the {limit:,}-pixel limit (a guard against "
            f"decompression bombs; {err}); pass --max-pixels N to raise the limit"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as err:
        # Pillow signals truncated / corrupt / unknown files with any of these.
        raise ImageError(f"{path}: not a readable image ({err})") from None
    if rgb.width < 1 or rgb.height < 1:
        raise ImageError(f"{path}: image has no pixels")
    if max_side is not None:
        rgb = resize_longest(rgb, max_side)
    return np.asarray(rgb, dtype=np.float32)


_PILLOW_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillow_pixel_limit(limit: int):
    """Set Pillow's global ``Image.MAX_IMAGE_PIXELS`` to ``limit`` for one load.

    Pillow stops on its own at twice that value, inside ``open()`` and for some formats (WebP)
    before the canvas is allocated. Tied to our limit, that early stop stays (at twice it), our
    own check, which names the dimensions, decides everything below, and ``max_pixels`` can
    raise both. A lock, because the setting is process-global.
    """
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = limit
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


#: The ICC colour spaces converted on load, with the Pillow mode each profile describes.
_PROFILE_MODES = {"RGB": "RGB", "GRAY": "L"}


def _embedded_profile(img: Image.Image) -> ImageCms.ImageCmsProfile | None:
    """The image's ICC profile, if it has one that :func:`load_image` converts from."""
    data = img.info.get("icc_profile")
    if not data:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(data))
    except (OSError, ValueError, TypeError):  # ImageCms.PyCMSError is an OSError
        return None  # damaged metadata: the pixels still decode, read as sRGB
    return profile if profile.profile.xcolor_space.strip() in _PROFILE_MODES else None


@functools.cache
def srgb_profile() -> ImageCms.ImageCmsProfile:
    """LittleCMS's built-in sRGB profile (the space of every array and output here)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def profile_name(path: str | os.PathLike) -> str | None:
    """The description of the ICC profile :func:`load_image` converts ``path`` from (e.g.
    ``"Display P3"``), or None when it reads the file as sRGB as it is (no or an unused profile).
    Reads the header only."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                profile = _embedded_profile(img)
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError):
        return None
    return None if profile is None else ImageCms.getProfileDescription(profile).strip()


def _to_srgb(img: Image.Image, profile: ImageCms.ImageCmsProfile) -> Image.Image:
    """``img`` (8-bit) converted from ``profile`` to sRGB, as RGB, or RGBA with its alpha kept
    (the colour channels alone go through the transform)."""
    alpha = img.convert("RGBA").getchannel("A") if _has_alpha(img) else None
    colour = img.convert(_PROFILE_MODES[profile.profile.xcolor_space.strip()])
    rgb = ImageCms.profileToProfile(colour, profile, srgb_profile(),
                                    renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
                                    outputMode="RGB")
    if alpha is not None:
        rgb.putalpha(alpha)
    return rgb


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info


def _to_rgb(img: Image.Image) -> Image.Image:
    profile = _embedded_profile(img)  # before any conversion below, which drops img.info
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or (img.mode == "I" and array.max() > 255) else 255.0
        img = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if profile is not None:
        img = _to_srgb(img, profile)
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def resize_longest(img: Image.Image, side: int) -> Image.Image:
    """Resize a PIL image (Lanczos) so that its longer side is ``side`` px, keeping the aspect."""
    if side < 1:
        raise ImageError(f"size must be at least 1 px, got {side}")
    scale = side / max(img.width, img.height)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img if size == img.size else img.resize(size, Image.Resampling.LANCZOS)


def resize_array(rgb: np.ndarray, side: int) -> np.ndarray:
    """Resize an (H, W, 3) float 0-255 array so that its longer side is ``side`` px (Lanczos)."""
    img = Image.fromarray(np.clip(np.asarray(rgb) + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(resize_longest(img, side), dtype=np.float32)


def check_writable(path: str | os.PathLike, *, overwrite: bool = False,
                   sources: Sequence[str | os.PathLike] = ()) -> Path:
    """Fail early, before any compute, if ``path`` cannot be written as an image.

    Raises:
        ImageError: unknown extension, or any refusal of :func:`check_output`.
    """
    path = Path(path)
    extension = path.suffix.lower()
    if Image.registered_extensions().get(extension) not in Image.SAVE:
        raise ImageError(
            f"{path}: unknown image extension {extension or '(none)'!r}; use .png, .jpg, ..."
        )
    return check_output(path, overwrite=overwrite, sources=sources, what="image")


def save_image(
    path: str | os.PathLike, rgb: Any, *, metadata: dict[str, Any] | None = None
) -> Path:
    """Write an (H, W, 3) sRGB 0-255 array atomically; format from the extension.

    The file carries the sRGB ICC profile (where the format stores one), so colour-managed
    viewers show what the network saw. ``metadata`` (JSON-serializable) is stored, with
    ``"color_space": "sRGB"`` added, as a PNG text chunk ``nst_jax`` and as the EXIF
    ImageDescription, so any output records which weights and settings made it.
    """
    path = Path(path)
    array = np.asarray(rgb, dtype=np.float32)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ImageError(f"{path}: expected an (H, W, 3) image, got shape {array.shape}")
    img = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ImageError(f"{path}: unknown image extension {path.suffix!r}")
    options: dict[str, Any] = {"icc_profile": srgb_profile().tobytes()}
    if metadata is not None:
        text = json.dumps({**metadata, "color_space": "sRGB"}, sort_keys=True)
        exif = Image.Exif()
        exif[_EXIF_DESCRIPTION] = text
        options["exif"] = exif
        if fmt == "PNG":
            info = PngImagePlugin.PngInfo()
            info.add_text("nst_jax", text)
            options["pnginfo"] = info
    if fmt == "JPEG":
        options["quality"] = 95
    with atomic_file(path, ImageError, "image") as handle:
        try:
            img.save(handle, format=fmt, **options)
        except (TypeError, KeyError):
            # Formats that take no EXIF or profile: the pixels matter more than the metadata.
            handle.seek(0)
            handle.truncate()
            img.save(handle, format=fmt)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``nst_jax`` metadata of an image written by :func:`save_image`, or None."""
    with Image.open(path) as img:
        text = img.info.get("nst_jax") or img.getexif().get(_EXIF_DESCRIPTION)
    return json.loads(text) if text else None
