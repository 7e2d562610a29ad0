"""The single gate for image input: paths, bytes, file objects, PIL images and arrays in; RGB out.

Every image the project touches goes through :func:`load_image`, which either returns a fresh,
fully decoded RGB :class:`PIL.Image.Image` (EXIF orientation applied, alpha composited over a
background, 16-bit and float data scaled to 8 bits, metadata stripped) or raises
:class:`ImageLoadError` naming the input and the reason. Decompression bombs, truncated or damaged
files, non-images, zero-size images, absurd aspect ratios and decodes that would need more memory
than :data:`DEFAULT_MAX_DECODE_BYTES` are rejected; no other exception escapes. Only common photo
formats are decoded (see :data:`FORMATS`), which keeps exotic decoders (EPS through Ghostscript,
headerless formats such as TGA) away from untrusted uploads.

Damaged JPEGs are **rejected, not flagged**. JPEGs are decoded by libjpeg-turbo through
``simplejpeg`` in strict mode, so any warning of the decoder ("Premature end of JPEG file",
"Corrupt JPEG data: ...") fails the decode; Pillow silences those warnings and fills the missing
blocks with grey or smeared data, which a detector of generation artifacts would then score with
confidence. A flag would have to travel through every output and be checked by every consumer;
a rejection uses the error path every front door already has (a batch records it and goes on).
The decoder stops at its first warning, so harmless warnings (an unknown JFIF revision) are
rejected too: re-saving such a file fixes it. A JPEG whose header claims more pixels than its bytes
can encode (a Huffman-coded scan spends at least one bit per 8 x 8 block) is refused before
decoding. Each check is local to its call (no global state, no ``warnings`` filters), so the gate
is safe to use from several threads. See ``docs/input-safety.md`` for the measured figures.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import numpy as np
import simplejpeg
from PIL import ExifTags, Image

__all__ = [
    "DEFAULT_MAX_ASPECT",
    "DEFAULT_MAX_DECODE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "ImageLoadError",
    "ImageSource",
    "decode_cost",
    "describe_source",
    "image_size",
    "load_image",
]

DEFAULT_MAX_PIXELS: int = 64_000_000
"""Largest accepted width * height; anything bigger is treated as a decompression bomb."""

DEFAULT_MAX_ASPECT: float = 20.0
"""Largest accepted max(width / height, height / width)."""

DEFAULT_MAX_DECODE_BYTES: int = 512 * 2**20
"""Largest memory one decode may take, estimated from the header by :func:`decode_cost` before
any pixel is decoded (the decoder's buffers plus the RGB result). 512 MiB admits RGB, RGBA, grey
and 16-bit grey JPEG, PNG and TIFF files up to :data:`DEFAULT_MAX_PIXELS`; the heavier kinds are
refused above about 33 MP (WebP), 44 MP (CMYK JPEG) and 55-60 MP (32-bit TIFF, palette images
with transparency). Figures: ``benchmarks/README.md``, "Decode memory"."""

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
_PASTE_MODES = frozenset({"RGBA", "LA"})  # Image.paste composites these onto RGB without a copy
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
_OWN_BUFFER_FORMATS = frozenset({"WEBP", "AVIF", "HEIF"})  # the codec's own buffers, measured
_ROWS_PER_STRIP, _TILE_LENGTH = 278, 323  # TIFF tags
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_STRIP_PIXELS = 1 << 20  # wide modes are scaled to 8 bits in strips of about this many pixels
# libjpeg's warnings (jerror.h, JWRN_*): the decoder went on with data it had to guess.
_LIBJPEG_WARNINGS = (
    "Corrupt JPEG data",
    "Premature end of JPEG file",
    "Invalid SOS parameters",
    "Inconsistent progression sequence",
    "Warning: unknown JFIF revision",
    "Unknown Adobe color transform",
    "Application transferred too many scanlines",
)
# Start-of-frame markers of Huffman-coded JPEGs (arithmetic coding has no per-block minimum).
_HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})
_FRAMES = _HUFFMAN_FRAMES | {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


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
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    draft_size: tuple[int, int] | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    name: str | None = None,
) -> Image.Image:
    """Decode any supported input into a fresh, fully loaded RGB PIL image.

    ``source`` is a path (str or PathLike), encoded image bytes, a binary file object (read from
    its current position), a PIL image (never modified) or a uint8/uint16/float array of shape
    (H, W), (H, W, 1), (H, W, 3) or (H, W, 4). Float data in [0, 1] is scaled by 255, other float
    data is taken as 0..255; both are clipped. Alpha is composited over ``background``. For
    JPEGs, ``draft_size`` lets the decoder work at a reduced DCT scale while both sides stay at
    least ``max(draft_size)``. Multi-frame files give their first frame. An encoded image whose
    decode would take more than ``max_decode_bytes`` (see :func:`decode_cost`) is refused before
    decoding. Damaged JPEGs (any warning of the JPEG decoder) are rejected, not repaired: see the
    module docstring for why. ``name`` replaces :func:`describe_source` in error messages.

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
        side = max(draft_size) if draft_size else None
        with _opened(source) as (img, fp):
            _check_size(img.size, max_pixels, max_aspect)
            _check_budget(img, side, max_decode_bytes)
            if img.format in _JPEG_FORMATS:
                rgb = _decode_jpeg(img, fp, side)
            else:
                img.load()
                rgb = _to_rgb(img, background)
            orientation = _orientation(img)
        rgb = _orient(rgb, orientation)  # after the decoder's buffers are released
        _check_size(rgb.size, max_pixels, max_aspect)
        return rgb


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
            with _opened(source) as (img, _):
                _check_size(img.size, max_pixels, max_aspect)
                return _oriented_size(img)
        _check_size(size, max_pixels, max_aspect)
        return size


def jpeg_quality(source: ImageSource, *, name: str | None = None) -> int | None:
    """The quality (1-100, on the IJG scale most encoders use) of a JPEG's luminance table,
    read from the header alone; None for other formats and decoded arrays.

    Raises:
        ImageLoadError: the header cannot be read.
    """
    if isinstance(source, np.ndarray):
        return None
    if isinstance(source, Image.Image):
        return _ijg_quality(getattr(source, "quantization", None))
    with _guard(name or describe_source(source)), _opened(source) as (img, _):
        is_jpeg = img.format in _JPEG_FORMATS
        return _ijg_quality(getattr(img, "quantization", None)) if is_jpeg else None


# The IJG standard luminance table (JPEG Annex K); quality q scales it by 5000/q below 50 and by
# 200 - 2q above. Comparing sums keeps the estimate independent of the table's order.
_IJG_LUMA_SUM = sum(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55]
    + [14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62]
    + [18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92]
    + [49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
)


def _ijg_quality(tables: object) -> int | None:
    if not isinstance(tables, dict) or 0 not in tables or len(tables[0]) != 64:
        return None
    scale = 100.0 * sum(tables[0]) / _IJG_LUMA_SUM
    quality = 5000.0 / scale if scale > 100 else (200.0 - scale) / 2.0
    return int(min(100, max(1, round(quality))))


def decode_cost(
    source: ImageSource, *, draft_size: tuple[int, int] | None = None, name: str | None = None
) -> int:
    """Bytes :func:`load_image` may take at peak to decode the encoded ``source``, estimated
    from its header alone (the figure compared with ``max_decode_bytes``).

    Raises:
        ImageLoadError: the header cannot be read; PIL images and arrays have nothing to decode.
    """
    with _guard(name or describe_source(source)):
        if isinstance(source, (Image.Image, np.ndarray)):
            raise _Reject("already decoded: only encoded images have a decode cost")
        with _opened(source) as (img, _):
            return _decode_cost(img, max(draft_size) if draft_size else None)


def _decode_cost(img: Image.Image, draft_side: int | None) -> int:
    """Bytes one decode of the opened (not yet loaded) ``img`` may take at peak.

    From the header alone: the decoder's output at its bytes per pixel plus the RGB result (4
    bytes per pixel in Pillow), the 8-bit strip conversion of 16/32-bit data, the RGBA copy that
    palette transparency needs, libtiff's buffer for one strip or tile, and the buffers of the
    WebP/AVIF/HEIF decoders (8 B/px, measured for WebP). JPEGs
    count the decoder's RGB array (3 B/px, CMYK 4 + 4) at the DCT scale ``draft_side`` allows.
    ``benchmarks/README.md`` compares these estimates with measured peaks.
    """
    w, h = img.size
    if img.format in _JPEG_FORMATS:
        scale = _jpeg_scale(img.size, draft_side)
        w, h = math.ceil(w / scale), math.ceil(h / scale)
        return w * h * (12 if img.mode == "CMYK" else 7)
    decoded = _BYTES_PER_PIXEL.get(img.mode, 4)
    per_pixel = decoded + 4
    if img.mode in _WIDE_MODES:
        per_pixel += 1
    elif img.mode not in _PASTE_MODES and (img.mode in _ALPHA_MODES or "transparency" in img.info):
        per_pixel += 4
    if img.format in _OWN_BUFFER_FORMATS:
        per_pixel += 8
    strip = _tiff_strip_rows(img) * w * decoded if img.format == "TIFF" else 0
    return w * h * per_pixel + strip


def _tiff_strip_rows(img: Image.Image) -> int:
    """Rows in one TIFF strip or tile, which libtiff decodes into a buffer of its own."""
    tags = getattr(img, "tag_v2", {})
    rows = tags.get(_TILE_LENGTH) or tags.get(_ROWS_PER_STRIP) or img.height
    return min(int(rows), img.height)


@contextmanager
def _guard(label: str) -> Iterator[None]:
    """Turn every failure inside the block into an :class:`ImageLoadError` for ``label``."""
    try:
        yield
    except _Reject as e:
        raise ImageLoadError(label, str(e)) from e.__cause__
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(label, f"decompression bomb: {e}") from e
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
def _opened(source: object) -> Iterator[tuple[Image.Image, BinaryIO]]:
    """Yield the Pillow image (header read, pixels not yet decoded) and its stream.

    The image is identified by the format plugins directly rather than ``Image.open``, whose own
    decompression-bomb check would apply Pillow's limit (and its warning, which only a
    process-wide ``warnings`` filter could turn into an error) instead of ``max_pixels``.
    """
    with _stream(source) as fp:
        img = _identify(fp)
        with img:
            yield img, fp


def _identify(fp: BinaryIO) -> Image.Image:
    """The first of :data:`FORMATS` whose plugin accepts the stream, header parsed."""
    prefix = fp.read(16)
    notes = []
    for fmt in _formats():
        factory, accept = Image.OPEN[fmt]
        verdict = accept(prefix) if accept else True
        if isinstance(verdict, str):
            notes.append(verdict)
        if verdict is not True and not (verdict and not isinstance(verdict, str)):
            continue
        fp.seek(0)
        try:
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error) as e:
            notes.append(f"{fmt}: {re.sub(r'<[^<>]*>', '', str(e)).strip()}")
    raise _Reject("not a recognised image format" + (f" ({'; '.join(notes)})" if notes else ""))


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


def _orientation(img: Image.Image) -> int | None:
    """The EXIF orientation of an opened image (after ``load()`` for formats that need it)."""
    if img.format == "PNG" and "exif" not in img.info:
        return None
    return img.getexif().get(ExifTags.Base.Orientation)


def _orient(rgb: Image.Image, orientation: int | None) -> Image.Image:
    """``rgb`` turned upright for an EXIF orientation (what ``ImageOps.exif_transpose`` does)."""
    method = _TRANSPOSES.get(orientation)
    return rgb if method is None else rgb.transpose(method)


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


def _check_budget(img: Image.Image, draft_side: int | None, max_decode_bytes: int) -> None:
    """Refuse a decode whose estimated peak memory exceeds ``max_decode_bytes``."""
    cost = _decode_cost(img, draft_side)
    if cost > max_decode_bytes:
        w, h = img.size
        raise _Reject(
            f"decoding this {w} x {h} {img.format} ({img.mode}) would take about "
            f"{cost / 2**20:.0f} MiB, above the budget of {max_decode_bytes / 2**20:.0f} MiB; "
            "pass max_decode_bytes= to raise it"
        )


# -- JPEG ---------------------------------------------------------------------------------------
def _decode_jpeg(img: Image.Image, fp: BinaryIO, draft_side: int | None) -> Image.Image:
    """Decode with libjpeg-turbo in strict mode: any decoder warning rejects the file."""
    fp.seek(0)
    data = fp.read()
    _check_jpeg_payload(data, img.size)
    cmyk = img.mode == "CMYK"
    scale = _jpeg_scale(img.size, draft_side)
    try:
        pixels = simplejpeg.decode_jpeg(
            data,
            colorspace="CMYK" if cmyk else "RGB",
            min_width=math.ceil(img.width / scale),
            min_height=math.ceil(img.height / scale),
            strict=True,
        )
    except ValueError as e:
        message = str(e).strip()
        if message.startswith(_LIBJPEG_WARNINGS):
            raise _Reject(f"damaged JPEG: truncated or corrupt data (decoder: {message})") from e
        raise _Reject(f"corrupt or unsupported JPEG (decoder: {message})") from e
    size = (pixels.shape[1], pixels.shape[0])
    if not cmyk:
        return Image.fromarray(pixels, "RGB")
    rawmode = img.tile[0][3][0] if img.tile else "CMYK"  # "CMYK;I" for Adobe's inverted CMYK
    return Image.frombytes("CMYK", size, pixels, "raw", rawmode).convert("RGB")


def _jpeg_scale(size: tuple[int, int], draft_side: int | None) -> int:
    """The power-of-two DCT reduction (1, 2, 4, 8) that keeps both sides >= ``draft_side``.

    Powers of two only, as Pillow's draft mode: libjpeg-turbo's other factors (3/8, 7/8...)
    have no SIMD inverse DCT and are slower than decoding at full size.
    """
    if not draft_side:
        return 1
    scale = 8
    while scale > 1 and min(size) // scale < draft_side:
        scale //= 2
    return scale


def _check_jpeg_payload(data: bytes, size: tuple[int, int]) -> None:
    """Refuse a Huffman-coded JPEG whose bytes cannot encode the pixels its header claims.

    Every 8 x 8 block of the full-resolution component costs at least one bit (its DC code), so
    ``w * h`` pixels need at least ``ceil(w / 8) * ceil(h / 8) / 8`` bytes of scan data.
    """
    if _jpeg_frame_marker(data) not in _HUFFMAN_FRAMES:
        return
    w, h = size
    needed = math.ceil(w / 8) * math.ceil(h / 8) // 8
    if len(data) < needed:
        raise _Reject(
            f"damaged JPEG: its header claims {w} x {h} pixels, which need at least {needed} "
            f"bytes of image data, but the file holds {len(data)}"
        )


def _jpeg_frame_marker(data: bytes) -> int | None:
    """The start-of-frame marker (0xC0...0xCF) of a JPEG stream, None if not found."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _FRAMES:
            return marker
        if marker == 0xDA:  # start of scan before any frame header
            return None
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None


# -- arrays and modes ---------------------------------------------------------------------------
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
    return Image.fromarray(np.ascontiguousarray(_to_uint8(a, _unit_range(a))))


def _unit_range(a: np.ndarray) -> bool:
    """True for float data in [0, 1] (scaled by 255); rejects NaN and infinities."""
    if a.dtype.kind != "f":
        return False
    if not np.isfinite(a).all():
        raise _Reject("contains NaN or infinite values")
    return bool(a.size and a.min() >= 0 and a.max() <= 1)


def _to_uint8(a: np.ndarray, unit_range: bool) -> np.ndarray:
    """Scale uint16/int32 (as 16-bit) or float data to uint8; uint8 passes through."""
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind == "f":
        if unit_range:
            a = a * 255
        return np.rint(np.clip(a, 0, 255)).astype(np.uint8)
    wide = np.clip(a, 0, 65535).astype(np.uint32)
    return ((wide + 128) // 257).astype(np.uint8)


def _wide_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float image to 8-bit L, in strips so no full-size copy is made."""
    rows = max(1, _STRIP_PIXELS // img.width)
    strips = [
        (0, top, img.width, min(top + rows, img.height)) for top in range(0, img.height, rows)
    ]
    unit_range = img.mode == "F" and all(_unit_range(np.asarray(img.crop(box))) for box in strips)
    out = Image.new("L", img.size)
    for box in strips:
        out.paste(Image.fromarray(_to_uint8(np.asarray(img.crop(box)), unit_range)), box[:2])
    return out


def _to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """A new RGB image with alpha composited over ``background`` and ``info`` cleared."""
    if img.mode in _WIDE_MODES:
        img = _wide_to_l(img)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img if img.mode in _PASTE_MODES else _convert(img, "RGBA")
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
