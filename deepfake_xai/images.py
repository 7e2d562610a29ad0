"""The single gate for image input: paths, bytes, file objects, PIL images and arrays in; RGB out.

Every image the project touches goes through :func:`load_image`, which either returns a fresh,
fully decoded RGB :class:`PIL.Image.Image` (EXIF orientation applied, alpha composited over a
background, 16-bit and float data scaled to 8 bits, metadata stripped) or raises
:class:`ImageLoadError` naming the input and the reason. Decompression bombs, truncated or corrupt
files, non-images, zero-size images and absurd aspect ratios are rejected; no other exception
escapes. Only common photo formats are decoded (see :data:`FORMATS`), which keeps exotic decoders
(EPS through Ghostscript, headerless formats such as TGA) away from untrusted uploads.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_ASPECT",
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "ImageLoadError",
    "ImageSource",
    "describe_source",
    "image_size",
    "load_image",
]

DEFAULT_MAX_PIXELS: int = 64_000_000
"""Largest accepted width * height; anything bigger is treated as a decompression bomb."""

DEFAULT_MAX_ASPECT: float = 20.0
"""Largest accepted max(width / height, height / width)."""

FORMATS: tuple[str, ...] = (
    "JPEG",
    "MPO",
    "PNG",
    "WEBP",
    "GIF",
    "TIFF",
    "BMP",
    "PPM",
    "AVIF",
    "HEIF",
)
"""Pillow formats that are decoded (those whose plugin is installed); anything else is rejected."""

ImageSource = (
    str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray
)

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_DRAFT_FORMATS = frozenset({"JPEG", "MPO"})
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


class ImageLoadError(ValueError):
    """An input that cannot be used as an image; names the input and the reason."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class _Reject(Exception):
    """Internal: the input is unusable for the given reason; the public functions add its name."""


def describe_source(source: object) -> str:
    """A short human name for ``source``, used in error messages."""
    if isinstance(source, str):
        return source
    if isinstance(source, os.PathLike):
        return os.fsdecode(os.fspath(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<bytes: {memoryview(source).nbytes} B>"
    if isinstance(source, Image.Image):
        return f"<PIL.Image {source.width}x{source.height} {source.mode}>"
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        return f"<file-like {name if isinstance(name, str) else type(source).__name__}>"
    return f"<{type(source).__name__}>"


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_aspect: float = DEFAULT_MAX_ASPECT,
    draft_size: tuple[int, int] | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    name: str | None = None,
) -> Image.Image:
    """Decode any supported input into a fresh, fully loaded RGB PIL image.

    ``source`` is a path (str or PathLike), encoded image bytes, a binary file object (read from
    its current position), a PIL image (never modified) or a uint8/uint16/float array of shape
    (H, W), (H, W, 1), (H, W, 3) or (H, W, 4). Float data in [0, 1] is scaled by 255, other float
    data is taken as 0..255; both are clipped. Alpha is composited over ``background``. For
    JPEGs, ``draft_size`` lets Pillow decode at 1/2, 1/4 or 1/8 scale while both sides stay at
    least ``max(draft_size)``. Multi-frame files give their first frame. ``name`` replaces
    :func:`describe_source` in error messages.

    Raises:
        ImageLoadError: the input cannot be used; ``.source`` names it, ``.reason`` says why.
    """
    with _guard(name or describe_source(source)):
        if isinstance(source, Image.Image):
            _check_size(source.size, max_pixels, max_aspect)
            return _to_rgb(source, background)
        if isinstance(source, np.ndarray):
            _check_size(_array_size(source), max_pixels, max_aspect)
            return _to_rgb(_array_to_image(source), background)
        with _opened(source, max_pixels) as img:
            _check_size(img.size, max_pixels, max_aspect)
            if draft_size and img.format in _DRAFT_FORMATS:
                side = max(draft_size)
                img.draft("RGB", (side, side))
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            _check_size(img.size, max_pixels, max_aspect)
            return _to_rgb(img, background)


def image_size(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_aspect: float = DEFAULT_MAX_ASPECT,
    name: str | None = None,
) -> tuple[int, int]:
    """(width, height) after EXIF orientation, from the file header only, with the same checks.

    Cheap: pixels are not decoded, so truncated pixel data is not detected here.

    Raises:
        ImageLoadError: as :func:`load_image`.
    """
    with _guard(name or describe_source(source)):
        if isinstance(source, Image.Image):
            size = source.size
        elif isinstance(source, np.ndarray):
            size = _array_size(source)
        else:
            with _opened(source, max_pixels) as img:
                _check_size(img.size, max_pixels, max_aspect)
                return _oriented_size(img)
        _check_size(size, max_pixels, max_aspect)
        return size


@contextmanager
def _guard(label: str) -> Iterator[None]:
    """Turn every failure inside the block into an :class:`ImageLoadError` for ``label``."""
    try:
        yield
    except _Reject as e:
        raise ImageLoadError(label, str(e)) from e.__cause__
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(label, f"decompression bomb: {e}") from e
    except UnidentifiedImageError as e:
        raise ImageLoadError(label, f"not a recognised image format ({_brief(e)})") from e
    except MemoryError as e:
        raise ImageLoadError(label, "out of memory while decoding") from e
    except Exception as e:
        raise ImageLoadError(label, f"corrupt or truncated image data ({_brief(e)})") from e


def _brief(e: BaseException) -> str:
    """Pillow's message without object reprs such as ``<_io.BytesIO object at 0x...>``."""
    kind = type(e)
    kind_name = (
        kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    )
    text = re.sub(r"\s*<[^<>]*>", "", str(e)).strip()
    return f"{kind_name}: {text}"[:200]


@contextmanager
def _opened(source: object, max_pixels: int) -> Iterator[Image.Image]:
    """Yield the Pillow image (header read, pixels not yet decoded) for an encoded source.

    The DecompressionBombWarning is an error inside the block unless ``max_pixels`` is above
    Pillow's own limit, in which case our own size check is the one that applies.
    """
    limit = Image.MAX_IMAGE_PIXELS
    action = "error" if limit is None or max_pixels <= limit else "ignore"
    with _stream(source) as fp, warnings.catch_warnings():
        warnings.simplefilter(action, Image.DecompressionBombWarning)
        with Image.open(fp, formats=_formats()) as img:
            yield img


@contextmanager
def _stream(source: object) -> Iterator[BinaryIO]:
    """A seekable binary stream over a path, bytes-like or file-like source."""
    if isinstance(source, (str, os.PathLike)):
        with _open_path(source) as fh:
            yield fh
        return
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise _Reject("zero bytes")
    elif hasattr(source, "read"):
        data = _read_all(source)
    else:
        raise _Reject(
            f"unsupported input type {type(source).__name__}; expected a path, bytes, "
            "a binary file object, a PIL image or a numpy array"
        )
    yield io.BytesIO(data)


@contextmanager
def _open_path(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a regular, non-empty file; non-blocking so a FIFO cannot hang us."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (OSError, ValueError) as e:
        raise _Reject(_open_failure(path, e)) from e
    try:
        _check_file(os.fstat(fd))
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


def _check_file(info: os.stat_result) -> None:
    """Reject directories, devices, pipes and empty files."""
    if stat.S_ISDIR(info.st_mode):
        raise _Reject("is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise _Reject("not a regular file")
    if info.st_size == 0:
        raise _Reject("empty file")


def _open_failure(path: str | os.PathLike, e: Exception) -> str:
    """The reason a path could not be opened."""
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, IsADirectoryError) or os.path.isdir(path):
        return "is a directory"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, OSError):
        return f"cannot open file ({e.strerror or e})"
    return f"invalid path ({e})"


def _read_all(fileobj: BinaryIO) -> bytes:
    """All bytes from a file object's current position."""
    try:
        data = fileobj.read()
    except OSError as e:
        raise _Reject(f"cannot read ({e})") from e
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _Reject(
            f"file object returned {type(data).__name__}, not bytes; open it in binary mode"
        )
    if not data:
        raise _Reject("empty file")
    return bytes(data)


def _formats() -> list[str]:
    """The entries of :data:`FORMATS` that this Pillow can open."""
    Image.init()
    return [f for f in FORMATS if f in Image.OPEN]


def _oriented_size(img: Image.Image) -> tuple[int, int]:
    """The image size after the EXIF orientation is applied, without decoding pixels."""
    if img.format == "PNG" and "exif" not in img.info:
        return img.size  # PngImageFile.getexif() would decode the image to look past IDAT
    orientation = img.getexif().get(ExifTags.Base.Orientation)
    return img.size[::-1] if orientation in _SWAPPING_ORIENTATIONS else img.size


def _check_size(size: tuple[int, int], max_pixels: int, max_aspect: float) -> None:
    """Reject zero-size images, decompression bombs and absurd aspect ratios."""
    w, h = size
    if w <= 0 or h <= 0:
        raise _Reject(f"zero-size image ({w} x {h})")
    if w * h > max_pixels:
        raise _Reject(
            f"decompression bomb: {w} x {h} = {w * h} pixels exceeds the limit of {max_pixels}; "
            "pass max_pixels= to raise it"
        )
    aspect = max(w / h, h / w)
    if aspect > max_aspect:
        raise _Reject(
            f"absurd aspect ratio: {w} x {h} is {aspect:.1f}:1, above the limit of "
            f"{max_aspect:g}:1; pass max_aspect= to raise it"
        )


def _array_size(a: np.ndarray) -> tuple[int, int]:
    """(width, height) of an image array, or a rejection of its dtype or shape."""
    if not (a.dtype.kind == "f" or (a.dtype.kind == "u" and a.dtype.itemsize <= 2)):
        raise _Reject(f"unsupported array dtype {a.dtype}; expected uint8, uint16 or float")
    if a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4)):
        return a.shape[1], a.shape[0]
    raise _Reject(
        f"unsupported array shape {a.shape}; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
    )


def _array_to_image(a: np.ndarray) -> Image.Image:
    """An L, RGB or RGBA image from a validated array (may share the array's memory)."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(_to_uint8(a)))


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Scale uint16/int32 (as 16-bit) or float data to uint8; uint8 passes through."""
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise _Reject("contains NaN or infinite values")
        if a.size and a.min() >= 0 and a.max() <= 1:
            a = a * 255
        return np.rint(np.clip(a, 0, 255)).astype(np.uint8)
    wide = np.clip(a, 0, 65535).astype(np.uint32)
    return ((wide + 128) // 257).astype(np.uint8)


def _to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """A new RGB image with alpha composited over ``background`` and ``info`` cleared."""
    if img.mode in _WIDE_MODES:
        img = Image.fromarray(_to_uint8(np.asarray(img)))
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = _convert(img, "RGBA")
        rgb = Image.new("RGB", rgba.size, background)
        rgb.paste(rgba, mask=rgba)
    else:
        rgb = _convert(img, "RGB")
    rgb.info = {}
    return rgb


def _convert(img: Image.Image, mode: str) -> Image.Image:
    """``img.convert(mode)`` (always a new image), rejecting modes Pillow cannot convert."""
    try:
        return img.convert(mode)
    except ValueError as e:
        raise _Reject(f"unsupported image mode {img.mode} ({e})") from e
