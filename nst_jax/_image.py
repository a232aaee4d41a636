"""Image files <-> arrays.

Pixel convention everywhere outside the network: one image, (H, W, 3), float32, RGB, 0-255.
Writes are atomic (temporary file in the target folder, then rename), so a failed or interrupted
save never leaves a partial file and never replaces an existing one half-way.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from ._errors import ImageError

#: Largest image accepted by default, in pixels (Pillow's own decompression-bomb threshold x2).
MAX_PIXELS = 178_956_970

# EXIF ImageDescription: where the run's settings go in formats without text chunks.
_EXIF_DESCRIPTION = 0x010E


def load_image(
    path: str | os.PathLike, *, max_side: int | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Read an image file as RGB float32 0-255, (H, W, 3).

    EXIF orientation is applied; grayscale, palette and CMYK images are converted to RGB;
    transparency is composited on white; animated files give their first frame; 16-bit images
    are scaled to 8-bit range. Pillow's warnings about damaged metadata are silenced: the pixels
    either decode, or the file is refused.

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


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or (img.mode == "I" and array.max() > 255) else 255.0
        img = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
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


def load_masks(paths, shape: tuple[int, int], *, max_pixels: int | None = None) -> np.ndarray:
    """Region masks for guided style transfer: one grayscale image per style, white = the region
    painted in that style; resized (bilinear) to ``shape`` = (H, W) of the content.

    Returns:
        (R, H, W) float32 in [0, 1]. Raises :class:`ImageError` for an unreadable file or masks
        that leave part of the image uncovered (every pixel must belong to some region).
    """
    masks = []
    for path in paths:
        grey = load_image(path, max_pixels=max_pixels).mean(axis=-1)
        img = Image.fromarray(grey.astype(np.float32), mode="F")
        masks.append(np.asarray(img.resize(shape[::-1], Image.Resampling.BILINEAR)) / 255.0)
    masks = np.clip(np.stack(masks), 0.0, 1.0).astype(np.float32)
    uncovered = float(np.mean(masks.sum(axis=0) < 0.5))
    if uncovered > 0.01:
        raise ImageError(f"{paths[0]}...: the masks leave {uncovered:.0%} of the image in no "
                         "region (white = region; together they must cover the image)")
    return masks


def load_label_map(path, shape: tuple[int, int], regions: int, *,
                   max_pixels: int | None = None) -> np.ndarray:
    """Region masks from one label image: its distinct colours, sorted (darkest first for
    grayscale), are regions 0, 1, ...; resized (nearest) to ``shape`` = (H, W).

    Returns:
        (regions, H, W) float32 one-hot masks. Raises :class:`ImageError` when the image does
        not have exactly ``regions`` colours (one per style).
    """
    rgb = load_image(path, max_pixels=max_pixels).astype(np.uint8)
    img = Image.fromarray(rgb).resize(shape[::-1], Image.Resampling.NEAREST)
    codes = np.asarray(img).astype(np.int64) @ np.array([1, 256, 65536])
    values = np.unique(codes)
    if len(values) != regions:
        raise ImageError(f"{path}: label map has {len(values)} colours, expected {regions} "
                         f"(one per style image; an anti-aliased or JPEG map has extra colours: "
                         "save it as PNG without smoothing)")
    return np.stack([(codes == v) for v in values]).astype(np.float32)


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


def check_output(path: str | os.PathLike, *, overwrite: bool,
                 error: type[Exception] = ImageError,
                 sources: Sequence[str | os.PathLike] = (), what: str = "file") -> Path:
    """Fail early, before any compute, if ``path`` must not or cannot be written.

    Refused, in this order: ``path`` is one of ``sources`` (the same path or the same file
    under another name; refused even with ``overwrite``, since an input is never replaced);
    a folder; an existing file while ``overwrite`` is false; a missing folder; a folder in
    which a temporary file cannot be created (a real probe: ``os.access`` says yes to root
    on a read-only folder). Nothing is left behind.

    Args:
        path: the file to write.
        overwrite: whether an existing ``path`` may be replaced.
        error: the exception class raised.
        sources: the run's input files.
        what: what ``path`` holds, for the messages ("image", "checkpoint", ...).

    Raises:
        ``error`` ("PATH: <reason>").
    """
    path = Path(path)
    for source in sources:
        if same_file(path, Path(source)):
            raise error(f"{path}: the output would overwrite the input {source}")
    if path.is_dir():
        raise error(f"{path}: is a folder; expected a file name for the {what}")
    if path.exists() and not overwrite:
        raise error(f"{path}: already exists; pass --overwrite to replace it")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise error(f"{path}: folder {folder} does not exist")
    check_folder_writable(folder, error=error, name=path)
    return path


def check_folder_writable(folder: str | os.PathLike, *, error: type[Exception] = ImageError,
                          name: str | os.PathLike | None = None) -> None:
    """Raise ``error`` ("NAME: folder FOLDER is not writable (reason)"; NAME defaults to the
    folder) unless a file can be created in the existing ``folder``. A real probe, a temporary
    file removed at once: ``os.access`` says yes to root on a read-only folder."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".nst-jax-probe-"):
            pass
    except OSError as err:
        raise error(f"{name or folder}: folder {folder} is not writable ({err.strerror})") \
            from None


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same file: equal resolved paths (``a`` may not exist
    yet), or one existing file under two names (a hard link, a bind mount, ...)."""
    a, b = Path(a), Path(b)
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def save_image(
    path: str | os.PathLike, rgb: Any, *, metadata: dict[str, Any] | None = None
) -> Path:
    """Write an (H, W, 3) RGB 0-255 array atomically; format from the extension.

    ``metadata`` (JSON-serializable) is stored as a PNG text chunk ``nst_jax`` and as the EXIF
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
    options: dict[str, Any] = {}
    if metadata is not None:
        text = json.dumps(metadata, sort_keys=True)
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
            # Formats that take no EXIF: the pixels still matter more than the metadata.
            handle.seek(0)
            handle.truncate()
            img.save(handle, format=fmt)
    return path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, error: type[Exception] = OSError, what: str = "file"):
    """Write ``path`` all-or-nothing: yields a binary handle on a temporary file in the same
    folder, which is flushed, fsynced and renamed over ``path`` (:func:`publish`) when the block
    ends normally, and removed on any exception (KeyboardInterrupt included). A reader, or a run
    killed mid-write, only ever sees the complete old or the complete new file.

    Raises:
        ``error`` ("PATH: cannot write <what> (...)") for an OSError while writing.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise error(f"{path}: cannot write {what} ({err})") from None
    try:
        with os.fdopen(fd, "w+b") as handle:  # readable too: h5py writes through it
            yield handle
            handle.flush()
            # Durable before the rename: after a crash the name points at complete data.
            os.fsync(handle.fileno())
        publish(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, error):
            raise error(f"{path}: cannot write {what} ({err})") from None
        raise


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Atomically move a finished temporary file to ``path`` with the usual umask permissions
    (``mkstemp`` creates files readable by their owner only)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, path)


def read_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``nst_jax`` metadata of an image written by :func:`save_image`, or None."""
    with Image.open(path) as img:
        text = img.info.get("nst_jax") or img.getexif().get(_EXIF_DESCRIPTION)
    return json.loads(text) if text else None
