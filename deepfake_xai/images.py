"""The single gate for image input: paths, bytes, file objects, PIL images and arrays in; RGB out.

Every image the project touches goes through :func:`load_image`, which either returns a fresh,
fully decoded RGB :class:`PIL.Image.Image` (EXIF orientation applied, alpha composited over a
background, 16-bit and float data scaled to 8 bits, metadata stripped) or raises
:class:`ImageLoadError` naming the input and the reason. Decompression bombs, truncated or damaged
files, non-images, zero-size images, absurd aspect ratios and decodes that would need more memory
than :data:`DEFAULT_MAX_DECODE_BYTES` are rejected; no other exception escapes. Only common photo
formats are decoded (see :data:`FORMATS`), which keeps exotic decoders (EPS through Ghostscript,
headerless formats such as TGA) away from untrusted uploads.

Damaged files are **rejected, not flagged**. JPEGs are decoded by libjpeg-turbo through
``simplejpeg`` in strict mode, so any warning of the decoder ("Premature end of JPEG file",
"Corrupt JPEG data: ...") fails the decode; Pillow silences those warnings and fills the missing
blocks with grey or smeared data, which a detector of generation artifacts would then score with
confidence. A flag would have to travel through every output and be checked by every consumer;
a rejection uses the error path every front door already has (a batch records it and goes on).
The decoder stops at its first warning, so harmless warnings (an unknown JFIF revision) are
rejected too: re-saving such a file fixes it. A JPEG whose header claims more pixels than its bytes
can encode (a Huffman-coded scan spends at least one bit per 8 x 8 block), one whose scans stop
before every component and coefficient is sent (a progressive file cut at a scan boundary, which
libjpeg finishes in silence) and one of more than :data:`MAX_JPEG_SCANS` scans are refused before
decoding. Other formats' decoders pass some damage in silence too: a PNG whose zlib stream ends
before its last row (Pillow leaves the rest black) and a WebP cut and zero-padded to its full
length (libwebp decodes the zeros as empty blocks) are rejected, and a PNG of more than
:data:`MAX_PNG_CHUNKS` chunks is refused before Pillow reads its chunk list. Each check is
local to its call (no global state, no ``warnings`` filters), so the gate is safe to use from
several threads. See ``docs/input-safety.md`` for the measured figures.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import struct
import zlib
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
    "MAX_JPEG_SCANS",
    "MAX_PNG_CHUNKS",
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

MAX_JPEG_SCANS: int = 100
"""Most scans a JPEG may have, counted from its markers before decoding. Each scan of a
progressive JPEG makes the decoder pass over every block of the image again: a 228 KB file of 883
valid scans (8000 x 8000 grey) took 24.8 s of CPU in the outside test, 16.9 s here. Encoders
write 1 scan per image (baseline) or about 10 (libjpeg's progressive script); NVIDIA's
nvImageCodec refuses more than 256 by default."""

MAX_PNG_CHUNKS: int = 100_000
"""Most chunks a PNG may have. Pillow reads the chunk list in Python and keeps every private
chunk: a 96 MB PNG of 8,000,000 empty chunks took 22.6 s and 919 MB. 100,000 admits a 512 MiB
image stored in libpng's 8 KiB IDAT chunks; the limit is checked before Pillow reads any chunk."""

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
_PROGRESSIVE_FRAMES = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_SOS, _EOI = 0xDA, 0xD9
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and the restart markers: no length
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CRITICAL = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND"})
_PNG_CHUNK_OVERHEAD = 160  # Pillow's objects per kept chunk: 64 B here, 115 B outside
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
_INFLATE_STEP = 1 << 20
_WEBP_IMAGE_CHUNKS = frozenset({b"VP8 ", b"VP8L", b"ALPH"})
# The next marker after entropy-coded data: 0xFF not followed by a stuffed zero or a restart.
_NEXT_MARKER = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")


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
            _check_budget(img, fp, side, max_decode_bytes)
            if img.format in _JPEG_FORMATS:
                rgb = _decode_jpeg(img, fp, side)
            else:
                _check_payload(img, fp)
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
        with _opened(source) as (img, fp):
            return _decode_cost(img, fp, max(draft_size) if draft_size else None)


def _decode_cost(img: Image.Image, fp: BinaryIO, draft_side: int | None) -> int:
    """Bytes one decode of the opened (not yet loaded) ``img`` may take at peak.

    From the header alone: the decoder's output at its bytes per pixel plus the RGB result (4
    bytes per pixel in Pillow), the 8-bit strip conversion of 16/32-bit data, the RGBA copy that
    palette transparency needs, libtiff's buffer for one strip or tile, the buffers of the
    WebP/AVIF/HEIF decoders (8 B/px, measured for WebP) and the ancillary chunks Pillow keeps of
    a PNG (their bytes plus :data:`_PNG_CHUNK_OVERHEAD` each). JPEGs
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
    chunks = _png_ancillary_bytes(fp) if img.format == "PNG" else 0
    return w * h * per_pixel + strip + chunks


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
        _check_chunk_count(fp)
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


def _check_budget(
    img: Image.Image, fp: BinaryIO, draft_side: int | None, max_decode_bytes: int
) -> None:
    """Refuse a decode whose estimated peak memory exceeds ``max_decode_bytes``."""
    cost = _decode_cost(img, fp, draft_side)
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
    _check_jpeg_structure(data, img.size)
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


def _check_jpeg_structure(data: bytes, size: tuple[int, int]) -> None:
    """Refuse, before decoding, a JPEG with too many scans, one whose bytes cannot hold the
    pixels its header claims, and one whose scans stop before every coefficient is sent."""
    frame, components, scans = None, (), []
    for marker, payload in _jpeg_segments(data):
        if marker in _FRAMES and frame is None:
            frame, components = marker, _frame_components(payload)
        elif marker == _SOS:
            scans.append(payload)
            if len(scans) > MAX_JPEG_SCANS:
                raise _Reject(
                    f"JPEG with more than {MAX_JPEG_SCANS} scans: decoding it would take too "
                    "long (an encoder writes at most a few dozen)"
                )
    if frame in _HUFFMAN_FRAMES:
        _check_jpeg_payload(len(data), size)
    if frame is not None:
        _check_jpeg_complete(frame in _PROGRESSIVE_FRAMES, components, scans)


def _check_jpeg_payload(length: int, size: tuple[int, int]) -> None:
    """Refuse a Huffman-coded JPEG whose bytes cannot encode the pixels its header claims.

    Every 8 x 8 block of the full-resolution component costs at least one bit (its DC code), so
    ``w * h`` pixels need at least ``ceil(w / 8) * ceil(h / 8) / 8`` bytes of scan data.
    """
    w, h = size
    needed = math.ceil(w / 8) * math.ceil(h / 8) // 8
    if length < needed:
        raise _Reject(
            f"damaged JPEG: its header claims {w} x {h} pixels, which need at least {needed} "
            f"bytes of image data, but the file holds {length}"
        )


def _check_jpeg_complete(progressive: bool, components: tuple[int, ...], scans: list) -> None:
    """Refuse a JPEG whose scans leave a component, or a progressive JPEG whose scans leave a
    coefficient, unsent or unrefined: libjpeg fills the gap without a warning, so a progressive
    file cut at a scan boundary decodes to a blurred or colourless picture."""
    lowest_bit: dict[int, list[int | None]] = {c: [None] * 64 for c in components}
    for scan in scans:
        count = scan[0] if scan else 0
        if len(scan) < 4 + 2 * count:
            continue  # malformed: left to the decoder's own error
        first, last, approximation = scan[1 + 2 * count : 4 + 2 * count]
        band = range(first, min(last, 63) + 1) if progressive else range(64)
        bit = approximation & 0x0F if progressive else 0
        for component in scan[1 : 1 + 2 * count : 2]:
            bits = lowest_bit.get(component, [])
            for k in band[: len(bits)]:
                bits[k] = bit
    missing = {c: sum(bit != 0 for bit in bits) for c, bits in lowest_bit.items()}
    if any(missing.values()):
        parts = ", ".join(f"component {c}: {n} of 64" for c, n in missing.items() if n)
        raise _Reject(
            f"damaged JPEG: the image is incomplete ({parts} frequency coefficients never sent "
            "or never fully refined); the file was probably cut"
        )


def _frame_components(payload: bytes) -> tuple[int, ...]:
    """The component ids of a start-of-frame segment."""
    count = payload[5] if len(payload) > 5 else 0
    return tuple(payload[6 : 6 + 3 * count : 3])


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(marker, payload) of each marker segment up to the end of the image, stepping over the
    entropy-coded data that follows each start-of-scan segment (a regex search, not a loop)."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == _EOI:
            return
        if marker in _STANDALONE:
            at += 2
            continue
        end = at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")
        yield marker, data[at + 4 : end]
        at = end
        if marker == _SOS:
            found = _NEXT_MARKER.search(data, at)
            if found is None:
                return
            at = found.start()


# -- PNG and WebP -----------------------------------------------------------------------------
def _check_chunk_count(fp: BinaryIO) -> None:
    """Refuse a PNG of more than :data:`MAX_PNG_CHUNKS` chunks before Pillow reads its list."""
    if fp.read(len(_PNG_SIGNATURE)) == _PNG_SIGNATURE:
        _png_chunks(fp)
    fp.seek(0)


def _png_chunks(fp: BinaryIO) -> list[tuple[bytes, int, int]]:
    """(type, offset of the data, length) of each chunk of a PNG, up to IEND or the end of the
    file, from the 8-byte chunk headers alone; the stream's position is left where it was."""
    position, chunks = fp.tell(), []
    fp.seek(len(_PNG_SIGNATURE))
    while len(chunks) <= MAX_PNG_CHUNKS:
        head = fp.read(8)
        if len(head) < 8:
            break
        length, kind = int.from_bytes(head[:4], "big"), head[4:]
        chunks.append((kind, fp.tell(), length))
        if kind == b"IEND":
            break
        fp.seek(length + 4, io.SEEK_CUR)  # the data and its CRC
    fp.seek(position)
    if len(chunks) > MAX_PNG_CHUNKS:
        raise _Reject(
            f"PNG with more than {MAX_PNG_CHUNKS} chunks: reading them would take too long "
            "(an encoder writes a few, plus one per 8-64 KiB of image data)"
        )
    return chunks


def _png_ancillary_bytes(fp: BinaryIO) -> int:
    """Memory Pillow may keep for a PNG's ancillary chunks (private chunks, text, profiles)."""
    return sum(
        length + _PNG_CHUNK_OVERHEAD
        for kind, _, length in _png_chunks(fp)
        if kind not in _PNG_CRITICAL
    )


def _check_payload(img: Image.Image, fp: BinaryIO) -> None:
    """Refuse damage that Pillow's decoders pass in silence (JPEGs have their own decoder)."""
    if img.format == "PNG":
        _check_png_rows(fp)
    elif img.format == "WEBP":
        fp.seek(0)
        _check_webp_tail(fp.read(), img.size)


def _check_png_rows(fp: BinaryIO) -> None:
    """Refuse a PNG whose image data inflates to fewer bytes than its rows need.

    Pillow stops at the end of the zlib stream and leaves the missing rows black, without an
    error, so a valid stream that holds half the rows decodes to half a picture. Inflating the
    stream once more (in 1 MiB steps, nothing kept) counts its bytes.
    """
    chunks = _png_chunks(fp)
    header = next((offset for kind, offset, _ in chunks if kind == b"IHDR"), None)
    if header is None:
        return  # left to Pillow's own error
    fp.seek(header)
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", fp.read(13))
    bits = depth * _PNG_CHANNELS.get(colour, 1)
    needed = _png_filtered_bytes(width, height, bits, interlace == 1)
    found = _inflated_size(_chunk_data(fp, chunks, b"IDAT"), needed)
    if found < needed:
        rows = "" if interlace else f" ({found // (1 + _row_bytes(width, bits))} of {height} rows)"
        raise _Reject(
            f"damaged PNG: truncated image data: its zlib stream holds {found} of the {needed} "
            f"bytes its header needs{rows}; the file was probably cut"
        )


def _row_bytes(width: int, bits: int) -> int:
    return (width * bits + 7) // 8


def _png_filtered_bytes(width: int, height: int, bits: int, interlaced: bool) -> int:
    """Bytes of filtered rows (a filter byte per row) a PNG's zlib stream must inflate to."""
    if not interlaced:
        return height * (1 + _row_bytes(width, bits))
    total = 0
    for x0, y0, dx, dy in _ADAM7:
        w, h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if w > 0 and h > 0:
            total += h * (1 + _row_bytes(w, bits))
    return total


def _chunk_data(fp: BinaryIO, chunks: list, kind: bytes) -> Iterator[bytes]:
    """The data of every chunk of type ``kind``, in 64 KiB pieces."""
    for chunk_kind, offset, length in chunks:
        if chunk_kind != kind:
            continue
        fp.seek(offset)
        while length > 0:
            piece = fp.read(min(length, 1 << 16))
            if not piece:
                return
            length -= len(piece)
            yield piece


def _inflated_size(pieces: Iterator[bytes], limit: int) -> int:
    """Bytes the zlib stream in ``pieces`` inflates to, counted up to just past ``limit``."""
    inflater, size = zlib.decompressobj(), 0
    for piece in pieces:
        while piece and size <= limit:
            size += len(inflater.decompress(piece, _INFLATE_STEP))
            piece = inflater.unconsumed_tail
        if inflater.eof or size > limit:
            break
    return size


def _check_webp_tail(data: bytes, size: tuple[int, int]) -> None:
    """Refuse a WebP whose image data ends in more zero bytes than any encoder writes.

    A file cut short and zero-padded to its full length (what an interrupted download or copy
    leaves) keeps a valid header, and libwebp decodes the zeros as smooth, empty blocks. An
    encoder ends a flat image in at most 0.035 zero bytes per 16 x 16 macroblock (measured with
    libwebp: flat, part-flat and photo images, lossy and lossless); 64 bytes plus 0.25 per
    macroblock is far above that.
    """
    blocks = math.ceil(size[0] / 16) * math.ceil(size[1] / 16)
    allowed = 64 + blocks // 4
    for payload in _webp_image_chunks(data, 12):
        zeros = len(payload) - len(payload.rstrip(b"\0"))
        if zeros > allowed:
            raise _Reject(
                f"damaged WebP: its image data ends in {zeros} zero bytes (an encoder writes at "
                f"most {allowed} for this size); the file was probably cut and padded"
            )


def _webp_image_chunks(data: bytes, at: int) -> Iterator[bytes]:
    """The payloads of the RIFF chunks that hold image data (VP8, VP8L, ALPH), also inside
    animation frames, from offset ``at``."""
    while at + 8 <= len(data):
        kind, length = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "little")
        payload = data[at + 8 : at + 8 + length]
        if kind in _WEBP_IMAGE_CHUNKS:
            yield payload
        elif kind == b"ANMF":
            yield from _webp_image_chunks(payload, 16)  # after the frame's own header
        at += 8 + length + (length & 1)


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
