"""Tests for deepfake_xai.images: every input kind and mode, and a generated corpus of bad files."""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageFile, features

from deepfake_xai.images import (
    DEFAULT_MAX_ASPECT,
    DEFAULT_MAX_PIXELS,
    ImageLoadError,
    decode_cost,
    describe_source,
    image_size,
    load_image,
)

needs_webp = pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")


# ---------------------------------------------------------------- helpers and fixtures


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def noise(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A random image of the given mode (plus the pseudo-mode "PT": P with a transparent index)."""
    rng = np.random.default_rng(seed)
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (h, w), dtype=np.uint8).astype(bool))
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "F":
        return Image.fromarray(rng.random((h, w), dtype=np.float32))
    if mode in ("P", "PT"):
        img = Image.frombytes("P", (w, h), rng.integers(0, 256, w * h, dtype=np.uint8).tobytes())
        img.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
        if mode == "PT":
            img.info["transparency"] = 0
        return img
    bands = len(Image.new(mode, (1, 1)).getbands())
    data = rng.integers(0, 256, h * w * bands, dtype=np.uint8).tobytes()
    return Image.frombytes(mode, (w, h), data)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(w: int, h: int) -> bytes:
    """A PNG that claims w x h RGB pixels but carries almost no data: a cheap bomb."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def rejected(source, **kwargs) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(source, **kwargs)
    return info.value


@pytest.fixture
def jpeg_bytes() -> bytes:
    return encode(noise(64, 48), "JPEG", quality=90)


@pytest.fixture
def png_bytes() -> bytes:
    return encode(noise(64, 48), "PNG")


# ---------------------------------------------------------------- errors and names


def test_error_names_input_and_reason():
    err = ImageLoadError("a.jpg", "empty file")
    assert (err.source, err.reason, str(err)) == ("a.jpg", "empty file", "a.jpg: empty file")
    assert isinstance(err, ValueError)


def test_describe_source(tmp_path):
    assert describe_source("x/y.png") == "x/y.png"
    assert describe_source(tmp_path / "y.png") == str(tmp_path / "y.png")
    assert describe_source(b"1234") == "<bytes: 4 B>"
    assert describe_source(memoryview(bytearray(10))) == "<bytes: 10 B>"
    assert describe_source(Image.new("RGBA", (640, 480))) == "<PIL.Image 640x480 RGBA>"
    assert describe_source(np.zeros((4, 5, 3), np.uint8)) == "<array (4, 5, 3) uint8>"
    assert describe_source(io.BytesIO()) == "<file-like BytesIO>"
    with open(tmp_path / "f.bin", "wb") as fh:
        assert describe_source(fh) == f"<file-like {tmp_path / 'f.bin'}>"
    assert describe_source(42) == "<int>"


def test_name_overrides_description():
    err = rejected(b"not an image", name="upload.jpg")
    assert str(err).startswith("upload.jpg: not a recognised image format")


# ---------------------------------------------------------------- input kinds


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "BytesIO", "str", "Path"])
def test_encoded_input_kinds(kind, tmp_path, png_bytes):
    path = tmp_path / "img.png"
    path.write_bytes(png_bytes)
    source = {
        "bytes": png_bytes,
        "bytearray": bytearray(png_bytes),
        "memoryview": memoryview(png_bytes),
        "BytesIO": io.BytesIO(png_bytes),
        "str": str(path),
        "Path": path,
    }[kind]
    out = load_image(source)
    assert out.mode == "RGB" and out.size == (64, 48)
    assert out.tobytes() == noise(64, 48).tobytes()


def test_open_binary_file_object(tmp_path, png_bytes):
    path = tmp_path / "img.png"
    path.write_bytes(png_bytes)
    with open(path, "rb") as fh:
        assert load_image(fh).size == (64, 48)
    with open(path, encoding="latin-1") as fh:
        err = rejected(fh)
    assert str(path) in str(err) and "binary mode" in err.reason


def test_returns_plain_loaded_image_without_metadata():
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Camera"
    data = encode(noise(32, 32), "JPEG", exif=exif.tobytes(), icc_profile=b"fake icc profile")
    assert "icc_profile" in Image.open(io.BytesIO(data)).info
    out = load_image(data)
    assert type(out) is Image.Image and out.mode == "RGB"
    assert out.info == {} and len(out.getexif()) == 0
    assert getattr(out, "fp", None) is None
    out.putpixel((0, 0), (1, 2, 3))  # writable, not a read-only view


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_no_file_handle_left_open(tmp_path, jpeg_bytes):
    good, cut, empty = tmp_path / "good.jpg", tmp_path / "cut.jpg", tmp_path / "empty.jpg"
    good.write_bytes(jpeg_bytes)
    cut.write_bytes(jpeg_bytes[: len(jpeg_bytes) // 2])
    empty.write_bytes(b"")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        load_image(good)
        image_size(good)
        for bad in (cut, empty, tmp_path):
            with pytest.raises(ImageLoadError):
                load_image(bad)
    assert len(os.listdir("/proc/self/fd")) == before


def test_pil_input_is_not_mutated():
    img = noise(20, 10, "PT")
    img.info["exif"] = b"Exif\0\0junk"
    before = (img.mode, img.size, img.tobytes(), dict(img.info), img.getpalette())
    out = load_image(img)
    assert out is not img and out.mode == "RGB"
    out.putpixel((0, 0), (1, 2, 3))
    assert (img.mode, img.size, img.tobytes(), dict(img.info), img.getpalette()) == before


def test_rgb_pil_input_is_copied():
    img = noise(8, 8)
    out = load_image(img)
    assert out is not img and out.tobytes() == img.tobytes()
    out.putpixel((0, 0), (0, 0, 0))
    assert img.tobytes() == noise(8, 8).tobytes()


@pytest.mark.parametrize(
    ("array", "pixel"),
    [
        (np.full((3, 5, 3), (10, 20, 30), np.uint8), (10, 20, 30)),
        (np.full((3, 5), 77, np.uint8), (77, 77, 77)),
        (np.full((3, 5, 1), 77, np.uint8), (77, 77, 77)),
        (np.full((3, 5, 4), (200, 0, 0, 0), np.uint8), (255, 255, 255)),
        (np.full((3, 5, 4), (200, 0, 0, 255), np.uint8), (200, 0, 0)),
        (np.full((3, 5, 3), 65535, np.uint16), (255, 255, 255)),
        (np.full((3, 5), 32768, np.uint16), (128, 128, 128)),
        (np.full((3, 5), 32768, ">u2"), (128, 128, 128)),
        (np.full((3, 5, 3), 0.5, np.float32), (128, 128, 128)),
        (np.full((3, 5, 3), 1.0, np.float64), (255, 255, 255)),
        (np.full((3, 5, 3), 100.0, np.float32), (100, 100, 100)),
        (np.full((3, 5, 3), 300.0, np.float16), (255, 255, 255)),
        (np.full((3, 5, 3), -4.0, np.float32), (0, 0, 0)),
    ],
)
def test_numpy_inputs(array, pixel):
    out = load_image(array)
    assert out.mode == "RGB" and out.size == (5, 3)
    assert out.getpixel((4, 2)) == pixel


def test_numpy_output_does_not_share_memory():
    array = np.zeros((4, 4, 3), np.uint8)
    out = load_image(array)
    array[:] = 255
    assert out.getpixel((0, 0)) == (0, 0, 0)
    out.putpixel((1, 1), (9, 9, 9))
    assert (array == 255).all()


def test_non_contiguous_array():
    array = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)[::2, ::-1]
    assert np.array_equal(np.asarray(load_image(array)), array)


# ---------------------------------------------------------------- modes


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    ("img", "pixel"),
    [
        (Image.new("L", (4, 4), 100), (100, 100, 100)),
        (Image.new("LA", (4, 4), (100, 0)), (255, 255, 255)),
        (Image.new("LA", (4, 4), (100, 255)), (100, 100, 100)),
        (Image.new("RGBA", (4, 4), (255, 0, 0, 128)), (255, 127, 127)),
        (Image.new("RGBA", (4, 4), (0, 0, 0, 0)), (255, 255, 255)),
        (Image.new("PA", (4, 4), (0, 0)), (255, 255, 255)),
        (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), (255, 0, 0)),
        (Image.new("YCbCr", (4, 4), (255, 128, 128)), (255, 255, 255)),
        (Image.new("1", (4, 4), 1), (255, 255, 255)),
        (Image.new("1", (4, 4), 0), (0, 0, 0)),
        (Image.new("I", (4, 4), 65535), (255, 255, 255)),
        (Image.new("I", (4, 4), 70000), (255, 255, 255)),
        (Image.new("I", (4, 4), -5), (0, 0, 0)),
        (Image.new("F", (4, 4), 0.25), (64, 64, 64)),
        (Image.new("F", (4, 4), 200.0), (200, 200, 200)),
    ],
    ids=lambda v: v.mode if isinstance(v, Image.Image) else "",
)
def test_modes(img, pixel):
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (4, 4)
    assert out.getpixel((1, 1)) == pixel


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_composited(fmt):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    img.putpixel((0, 0), 0)
    data = encode(img, fmt, transparency=0)
    out = load_image(data, background=(0, 255, 0))
    assert out.getpixel((0, 0)) == (0, 255, 0)
    assert out.getpixel((1, 1)) == (10, 20, 30)


def test_palette_alpha_bytes_are_composited():
    img = Image.new("P", (2, 1), 0)
    img.putpalette([200, 0, 0, 0, 0, 200] + [0] * 762)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = bytes([255, 0])
    out = load_image(encode(img, "PNG"), background=(1, 2, 3))
    assert out.getpixel((0, 0)) == (200, 0, 0) and out.getpixel((1, 0)) == (1, 2, 3)


def test_la_png_custom_background():
    data = encode(Image.new("LA", (3, 3), (50, 0)), "PNG")
    assert load_image(data, background=(0, 0, 255)).getpixel((0, 0)) == (0, 0, 255)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16_bit_is_scaled_not_clipped(fmt, mode):
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    raw = values.astype(">u2" if mode == "I;16B" else "<u2").tobytes()
    img = Image.frombytes(mode, (4, 1), raw)
    for source in (img, encode(img, fmt)):
        out = np.asarray(load_image(source))[0, :, 0]
        assert out.tolist() == [0, 1, 128, 255]


def test_float_tiff_is_scaled():
    img = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert np.asarray(load_image(encode(img, "TIFF")))[0, :, 1].tolist() == [0, 128, 255]


def test_cmyk_jpeg_and_tiff():
    img = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    assert load_image(encode(img, "TIFF")).getpixel((0, 0)) == (255, 0, 0)
    r, g, b = load_image(encode(img, "JPEG", quality=95)).getpixel((4, 4))
    assert r > 240 and g < 15 and b < 15


def test_one_bit_png():
    img = Image.new("1", (9, 9), 0)
    img.putpixel((3, 3), 1)
    out = load_image(encode(img, "PNG"))
    assert out.getpixel((3, 3)) == (255, 255, 255) and out.getpixel((0, 0)) == (0, 0, 0)


# ---------------------------------------------------------------- formats, frames, orientation


@pytest.mark.parametrize(
    ("fmt", "lossless"),
    [
        ("PNG", True),
        ("BMP", True),
        ("TIFF", True),
        ("JPEG", False),
        pytest.param("WEBP", False, marks=needs_webp),
        ("GIF", False),
    ],
)
def test_format_round_trip(fmt, lossless):
    img = noise(33, 21)
    out = load_image(encode(img, fmt))
    assert out.mode == "RGB" and out.size == (33, 21)
    if lossless:
        assert out.tobytes() == img.tobytes()


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "PNG", pytest.param("WEBP", marks=needs_webp)])
def test_multi_frame_gives_first_frame(fmt):
    frames = [Image.new("RGB", (16, 12), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], lossless=True)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    out = load_image(data)
    assert out.size == (16, 12) and out.getpixel((8, 6)) == (255, 0, 0)


def oriented_jpeg(orientation: int) -> bytes:
    """A 40x20 JPEG, left half red and right half blue, with the given EXIF Orientation."""
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return encode(img, "JPEG", exif=exif.tobytes(), quality=95)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(oriented_jpeg(6))  # stored sideways: display rotated 90 degrees clockwise
    out = load_image(path)
    assert out.size == (20, 40)
    red, blue = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert red[0] > 200 and red[2] < 60 and blue[2] > 200 and blue[0] < 60
    assert len(out.getexif()) == 0
    assert image_size(path) == (20, 40)


def test_orientation_one_keeps_size():
    assert load_image(oriented_jpeg(1)).size == (40, 20)
    assert image_size(oriented_jpeg(3)) == (40, 20)


def test_draft_size_decodes_jpeg_smaller():
    data = encode(noise(1600, 1200), "JPEG", quality=70)
    out = load_image(data, draft_size=(200, 150))
    assert out.size == (400, 300)  # 1/4 scale: the smallest DCT scale keeping both sides >= 200
    assert load_image(data).size == (1600, 1200)
    assert load_image(data, draft_size=(1000, 1000)).size == (1600, 1200)
    png = encode(noise(400, 300), "PNG")
    assert load_image(png, draft_size=(50, 50)).size == (400, 300)


# ---------------------------------------------------------------- the corpus of bad inputs


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jpg"
    err = rejected(str(path))
    assert str(path) in str(err) and err.reason == "file not found"
    assert rejected(path).reason == "file not found"


def test_directory(tmp_path):
    err = rejected(tmp_path)
    assert str(tmp_path) in str(err) and err.reason == "is a directory"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    assert rejected(fifo).reason == "not a regular file"


def test_invalid_path():
    assert "invalid path" in rejected("bad\0path.png").reason


def test_empty_inputs(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    err = rejected(path)
    assert str(path) in str(err) and err.reason == "empty file"
    assert rejected(b"").reason == "zero bytes"
    assert rejected(io.BytesIO()).reason == "empty file"


def test_text_file_renamed_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("just some text, not a JPEG\n" * 20)
    err = rejected(path)
    assert str(path) in str(err)
    assert err.reason.startswith("not a recognised image format")
    assert "0x" not in err.reason  # no object repr from Pillow


def test_truncated_jpeg(tmp_path, jpeg_bytes):
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg_bytes[: len(jpeg_bytes) // 2])
    err = rejected(path)
    assert str(path) in str(err) and "truncated" in err.reason
    assert "Premature end of JPEG file" in err.reason  # the decoder's own words


def test_truncated_png(tmp_path, png_bytes):
    path = tmp_path / "cut.png"
    path.write_bytes(png_bytes[: len(png_bytes) // 2])
    err = rejected(path)
    assert str(path) in str(err) and "truncated" in err.reason


def test_corrupt_bytes_in_the_middle(tmp_path, png_bytes):
    middle = len(png_bytes) // 2
    path = tmp_path / "corrupt.png"
    path.write_bytes(png_bytes[:middle] + b"\xff" * 64 + png_bytes[middle + 64 :])
    err = rejected(path)
    assert str(path) in str(err) and "corrupt" in err.reason


def test_truncated_pil_image_input(jpeg_bytes):
    lazy = Image.open(io.BytesIO(jpeg_bytes[: len(jpeg_bytes) // 2]))
    assert "truncated" in rejected(lazy).reason


@pytest.mark.parametrize(
    "source",
    [np.zeros((0, 5, 3), np.uint8), np.zeros((5, 0), np.float32), Image.new("RGB", (0, 7))],
    ids=["array-0-rows", "array-0-cols", "pil-0-width"],
)
def test_zero_size(source):
    assert rejected(source).reason.startswith("zero-size image")


def test_decompression_bomb(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (3000, 3000), 7).save(path)
    assert path.stat().st_size < 100_000
    err = rejected(path, max_pixels=1_000_000)
    assert str(path) in str(err)
    assert err.reason == (
        "decompression bomb: 3000 x 3000 = 9000000 pixels exceeds the limit of 1000000; "
        "pass max_pixels= to raise it"
    )
    assert load_image(path, max_pixels=9_000_000).size == (3000, 3000)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        image_size(path, max_pixels=1_000_000)


def test_max_pixels_above_pillows_limit_is_ours_and_touches_no_globals():
    limit, truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    filters = list(warnings.filters)
    above_warning, above_error = png_header_only(10_000, 10_000), png_header_only(20_000, 20_000)
    # our limit and our number, not Pillow's DecompressionBombWarning/Error and its number
    assert rejected(above_warning).reason.startswith(
        "decompression bomb: 10000 x 10000 = 100000000 pixels exceeds the limit of 64000000"
    )
    assert image_size(above_warning, max_pixels=10**9) == (10_000, 10_000)
    assert image_size(above_error, max_pixels=10**10) == (20_000, 20_000)  # 2x Pillow's limit
    reason = rejected(above_error, max_pixels=3 * 10**8).reason
    assert "300000000" in reason and str(Image.MAX_IMAGE_PIXELS) not in reason
    # past max_pixels, the memory budget still refuses it before decoding
    assert "above the budget of 512 MiB" in rejected(above_error, max_pixels=10**10).reason
    assert (limit, truncated) == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    assert warnings.filters == filters


def test_header_is_checked_before_decoding():
    data = png_header_only(9000, 9000)  # would need 243 MB; carries 100 bytes
    assert rejected(data).reason.startswith("decompression bomb: 9000 x 9000")
    assert image_size(png_header_only(300, 200)) == (300, 200)  # header only: no decode


@pytest.mark.parametrize(
    "source",
    [
        Image.new("RGB", (2000, 10)),
        np.zeros((10, 2000), np.uint8),
        encode(Image.new("L", (2000, 10)), "PNG"),
    ],
    ids=["pil", "array", "png"],
)
def test_absurd_aspect(source):
    err = rejected(source)
    assert err.reason.startswith("absurd aspect ratio: 2000 x 10 is 200.0:1")
    assert "max_aspect=" in err.reason
    assert load_image(source, max_aspect=200).size == (2000, 10)


def test_default_aspect_limit():
    assert load_image(np.zeros((1, 20), np.uint8)).size == (20, 1)
    assert rejected(np.zeros((1, 21), np.uint8)).reason.startswith("absurd aspect ratio")
    assert DEFAULT_MAX_ASPECT == 20.0


@pytest.mark.parametrize("source", [42, None, [1, 2, 3], 3.5, {"a": 1}])
def test_unsupported_type(source):
    err = rejected(source)
    assert f"unsupported input type {type(source).__name__}" in err.reason
    with pytest.raises(ImageLoadError, match="unsupported input type"):
        image_size(source)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_array(bad):
    array = np.zeros((4, 4, 3), np.float32)
    array[1, 2, 0] = bad
    assert rejected(array).reason == "contains NaN or infinite values"
    assert "NaN" in rejected(Image.fromarray(array[:, :, 0])).reason


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.zeros((4, 4), np.int64), "dtype int64"),
        (np.zeros((4, 4), bool), "dtype bool"),
        (np.zeros((4, 4, 2), np.uint8), "shape (4, 4, 2)"),
        (np.zeros((4,), np.uint8), "shape (4,)"),
        (np.zeros((2, 4, 4, 3), np.uint8), "shape (2, 4, 4, 3)"),
    ],
)
def test_unsupported_arrays(array, words):
    err = rejected(array)
    assert words in err.reason and str(err).startswith("<array ")


def test_unconvertible_pil_mode():
    assert "unsupported image mode La" in rejected(Image.new("La", (4, 4))).reason


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (
            struct.error("unpack requires a buffer"),
            "corrupt or truncated image data (struct.error: ",
        ),
        (EOFError("no more data"), "corrupt or truncated image data (EOFError: no more data)"),
        (SyntaxError("bad chunk"), "corrupt or truncated image data (SyntaxError: bad chunk)"),
        (IndexError("out of range"), "corrupt or truncated image data (IndexError: "),
        (MemoryError(), "out of memory while decoding"),
    ],
)
def test_unexpected_decoder_exceptions_become_load_errors(monkeypatch, png_bytes, exc, words):
    def explode(self):
        raise exc

    monkeypatch.setattr(ImageFile.ImageFile, "load", explode)
    err = rejected(png_bytes, name="x.png")
    assert str(err).startswith(f"x.png: {words}") and err.__cause__ is exc


def test_file_object_is_read_from_its_position(png_bytes):
    stream = io.BytesIO(b"junk" + png_bytes)
    stream.seek(4)
    assert load_image(stream).size == (64, 48)


def test_excluded_formats_are_rejected():
    tga = encode(noise(8, 8), "TGA")
    assert rejected(tga).reason.startswith("not a recognised image format")


def test_image_size_kinds(png_bytes):
    assert image_size(png_bytes) == (64, 48)
    assert image_size(Image.new("L", (7, 3))) == (7, 3)
    assert image_size(np.zeros((3, 7, 4), np.uint8)) == (7, 3)
    with pytest.raises(ImageLoadError, match="zero bytes"):
        image_size(b"")


# ---------------------------------------------------------------- damaged JPEGs


@pytest.fixture(scope="module")
def photo_jpeg() -> bytes:
    """A 256 px photo-like JPEG (smooth gradients, mild noise), like the FFHQ faces."""
    yy, xx = np.mgrid[0:256, 0:256]
    rng = np.random.default_rng(3)
    base = np.stack([xx, yy, (xx + yy) // 2], axis=-1) + rng.normal(0, 6, (256, 256, 3))
    return encode(Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)), "JPEG", quality=90)


def with_frame_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` with the start-of-frame header patched to claim ``width`` x ``height``."""
    out, at = bytearray(data), 2
    while out[at + 1] not in (0xC0, 0xC1, 0xC2):
        at += 2 + int.from_bytes(out[at + 2 : at + 4], "big")
    out[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(out)


DAMAGES = {
    "cut at 50%": lambda d: d[: len(d) // 2],
    "cut at 50% + EOI marker": lambda d: d[: len(d) // 2] + b"\xff\xd9",
    "cut at 50% + 64 KiB of zeros": lambda d: d[: len(d) // 2] + bytes(65536),
    "junk in the scan": lambda d: d[:3000] + bytes(b ^ 0xFF for b in d[3000:3016]) + d[3016:],
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_jpegs_are_rejected_by_the_decoders_own_warning(photo_jpeg, damage):
    data = DAMAGES[damage](photo_jpeg)
    err = rejected(data, name="face.jpg")
    assert str(err).startswith("face.jpg: damaged JPEG: truncated or corrupt data (decoder: ")
    assert "Premature end of JPEG file" in err.reason or "Corrupt JPEG data" in err.reason


def test_the_issues_cases_on_a_real_face(faces_sample):
    face = sorted((faces_sample / "val" / "real").glob("*.jpg"))[0].read_bytes()
    assert load_image(face).size == (256, 256)
    for damage in ("cut at 50% + EOI marker", "cut at 50% + 64 KiB of zeros"):
        assert rejected(DAMAGES[damage](face)).reason.startswith("damaged JPEG: truncated")
    claims = rejected(with_frame_size(face, 8000, 8000)).reason
    assert claims.startswith("damaged JPEG: its header claims 8000 x 8000 pixels")


def test_pillow_alone_accepts_what_the_gate_rejects(photo_jpeg):
    for damage in ("cut at 50% + EOI marker", "cut at 50% + 64 KiB of zeros"):
        with Image.open(io.BytesIO(DAMAGES[damage](photo_jpeg))) as img:
            img.load()  # no error: Pillow silences libjpeg's warnings and fills in grey
    assert load_image(photo_jpeg).size == (256, 256)


def test_header_claiming_more_pixels_than_the_bytes_hold_is_refused_before_decoding(
    photo_jpeg, monkeypatch
):
    import simplejpeg

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(simplejpeg, "decode_jpeg", no_decode)
    err = rejected(with_frame_size(photo_jpeg, 8000, 8000))
    assert err.reason == (
        f"damaged JPEG: its header claims 8000 x 8000 pixels, which need at least 125000 bytes "
        f"of image data, but the file holds {len(photo_jpeg)}"
    )


@pytest.mark.parametrize("progressive", [False, True])
def test_flat_jpegs_are_not_mistaken_for_lying_headers(progressive):
    flat = Image.new("RGB", (2048, 2048), (120, 130, 140))
    data = encode(flat, "JPEG", quality=50, optimize=True, progressive=progressive)
    assert np.abs(np.asarray(load_image(data), np.int16) - (120, 130, 140)).max() <= 2


def test_jpeg_checks_are_thread_safe(photo_jpeg):
    from concurrent.futures import ThreadPoolExecutor

    cases = [photo_jpeg, *(damage(photo_jpeg) for damage in DAMAGES.values())]
    cases.append(with_frame_size(photo_jpeg, 8000, 8000))

    def outcome(data: bytes) -> str:
        try:
            return load_image(data).tobytes().hex()[:64]
        except ImageLoadError as err:
            return err.reason

    expected = [outcome(c) for c in cases]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(outcome, cases * 25)) == expected * 25


# ---------------------------------------------------------------- property-based


MAGICS = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x10\x00\x00WEBPVP8 ",
    b"P6\n",
]


@pytest.mark.filterwarnings("ignore::UserWarning:PIL")  # Pillow's notes on corrupt data
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=4096),
        st.tuples(st.sampled_from(MAGICS), st.binary(max_size=2048)).map(b"".join),
    )
)
def test_random_bytes_give_an_image_or_a_load_error(data):
    try:
        out = load_image(data)
    except ImageLoadError as err:
        assert err.source == f"<bytes: {len(data)} B>" and err.reason
    else:
        assert out.mode == "RGB" and out.width * out.height <= DEFAULT_MAX_PIXELS


MODES_BY_FORMAT = {
    "PNG": ["1", "L", "LA", "P", "PT", "RGB", "RGBA", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "BMP": ["1", "L", "P", "RGB", "RGBA"],
    "TIFF": ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "F"],
    "GIF": ["L", "P", "PT"],
}
if features.check("webp"):
    MODES_BY_FORMAT["WEBP"] = ["RGB", "RGBA"]


@st.composite
def encoded_images(draw):
    fmt = draw(st.sampled_from(sorted(MODES_BY_FORMAT)))
    mode = draw(st.sampled_from(MODES_BY_FORMAT[fmt]))
    w, h = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    img = noise(w, h, mode, seed=draw(st.integers(0, 2**32 - 1)))
    extra = {"transparency": 0} if mode == "PT" else {}
    return encode(img, fmt, **extra), (w, h)


@pytest.mark.filterwarnings("ignore::UserWarning:PIL")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    encoded_images(),
    st.sampled_from(["none", "cut", "flip"]),
    st.floats(0, 1, exclude_max=True),
    st.integers(1, 255),
)
def test_small_images_decode_or_fail_cleanly(encoded, damage, where, xor):
    data, size = encoded
    at = int(where * len(data))
    if damage == "cut":
        data = data[:at]
    elif damage == "flip":
        data = data[:at] + bytes([data[at] ^ xor]) + data[at + 1 :]
    try:
        out = load_image(data, max_aspect=64, max_pixels=1_000_000)
    except ImageLoadError as err:
        assert damage != "none", err
        return
    assert out.mode == "RGB" and out.width * out.height <= 1_000_000
    if damage == "none":
        assert out.size == size


# ---------------------------------------------------------------- damage no decoder reports


def photo(side: int = 256) -> Image.Image:
    """A photo-like image: smooth gradients with mild noise."""
    yy, xx = np.mgrid[0:side, 0:side] * 255 // side
    rng = np.random.default_rng(5)
    base = np.stack([xx, yy, (xx + yy) // 2], axis=-1) + rng.normal(0, 6, (side, side, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def scan_starts(data: bytes) -> list[int]:
    """Offsets of the start-of-scan markers of a JPEG made by Pillow (no 0xFFDA in its data)."""
    return [at for at in range(len(data) - 1) if data[at : at + 2] == b"\xff\xda"]


@pytest.mark.parametrize("scans_kept", [1, 4, 9])
@pytest.mark.parametrize("end", [b"\xff\xd9", b""], ids=["with EOI", "without EOI"])
def test_progressive_jpeg_cut_at_a_scan_boundary_is_rejected(tmp_path, scans_kept, end):
    data = encode(photo(), "JPEG", quality=90, progressive=True)
    cut = scan_starts(data)[scans_kept]
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:cut] + end)
    err = rejected(path)
    assert str(path) in str(err) and err.reason.startswith("damaged JPEG")


def test_progressive_jpeg_missing_scans_names_what_is_missing():
    data = encode(photo(), "JPEG", quality=90, progressive=True)
    err = rejected(data[: scan_starts(data)[4]] + b"\xff\xd9", name="face.jpg")
    assert str(err).startswith("face.jpg: damaged JPEG: the image is incomplete")
    assert "component 1" in err.reason and "the file was probably cut" in err.reason


@pytest.mark.parametrize("progressive", [False, True])
def test_complete_jpegs_pass_the_scan_check(progressive):
    data = encode(photo(64), "JPEG", quality=95, progressive=progressive, optimize=True)
    with Image.open(io.BytesIO(data)) as img:
        pillows = np.asarray(img.convert("RGB"), np.int16)
    assert np.abs(np.asarray(load_image(data), np.int16) - pillows).mean() < 1


def png_with_rows(img: Image.Image, rows: int, interlace: int = 0) -> bytes:
    """An RGB PNG whose (valid, complete) zlib stream holds only the first ``rows`` rows."""
    raw = img.tobytes()
    line = 3 * img.width
    filtered = b"".join(b"\0" + raw[r * line : (r + 1) * line] for r in range(rows))
    ihdr = struct.pack(">IIBBBBB", img.width, img.height, 8, 2, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(filtered))
        + png_chunk(b"IEND", b"")
    )


def test_png_whose_zlib_stream_holds_half_the_rows_is_rejected(tmp_path):
    img = photo(64)
    assert np.array_equal(np.asarray(load_image(png_with_rows(img, 64))), np.asarray(img))
    path = tmp_path / "half.png"
    path.write_bytes(png_with_rows(img, 32))
    err = rejected(path)
    assert str(path) in str(err)
    assert err.reason == (
        "damaged PNG: truncated image data: its zlib stream holds 6176 of the 12352 bytes "
        "its header needs (32 of 64 rows); the file was probably cut"
    )


def test_interlaced_and_grey_pngs_pass_the_row_check():
    for img in (photo(61), photo(61).convert("L"), noise(33, 17, "1"), noise(40, 30, "I;16")):
        for interlace in (False, True):
            data = encode(img, "PNG", interlace=interlace)
            assert load_image(data).size == img.size


def webp_cut_and_padded(img: Image.Image, **options) -> tuple[bytes, bytes]:
    """The WebP of ``img`` and the same bytes cut at half and zero-padded to the full length."""
    data = encode(img, "WEBP", **options)
    half = len(data) // 2
    return data, data[:half] + bytes(len(data) - half)


@needs_webp
@pytest.mark.parametrize(
    "options", [{"quality": 80}, {"lossless": True}], ids=["lossy", "lossless"]
)
def test_webp_cut_and_zero_padded_is_rejected(tmp_path, options):
    intact, damaged = webp_cut_and_padded(photo(), **options)
    assert load_image(intact).size == (256, 256)
    path = tmp_path / "padded.webp"
    path.write_bytes(damaged)
    err = rejected(path)
    assert str(path) in str(err)
    assert err.reason.startswith("damaged WebP: its image data ends in ")
    assert "zero bytes" in err.reason and "the file was probably cut and padded" in err.reason


@needs_webp
@pytest.mark.parametrize("options", [{"quality": 100}, {"quality": 10}, {"lossless": True}])
def test_webps_with_flat_areas_are_not_mistaken_for_padded_ones(options):
    top = np.asarray(photo(512)).copy()
    top[128:] = 0  # a flat bottom: the encoder itself ends the data in zero bytes
    for img in (Image.fromarray(top), Image.new("RGB", (512, 512))):
        assert load_image(encode(img, "WEBP", **options)).size == (512, 512)


# ---------------------------------------------------------------- small files, long decodes


def bits_to_bytes(bits: str) -> bytes:
    """Entropy-coded bytes: padded with 1s, every 0xFF followed by a stuffed 0x00."""
    bits += "1" * (-len(bits) % 8)
    out = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))
    return out.replace(b"\xff", b"\xff\x00")


def eob_runs(blocks: int) -> str:
    """Bits that skip ``blocks`` blocks with end-of-band runs (AC symbol r << 4 has code r)."""
    bits = ""
    while blocks:
        r = min(14, blocks.bit_length() - 1)
        run = min(blocks, 2 ** (r + 1) - 1)
        bits += format(r, "04b") + (format(run - 2**r, f"0{r}b") if r else "")
        blocks -= run
    return bits


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


SINGLE_BANDS = tuple((k, k) for k in range(1, 64))


def many_scan_jpeg(side: int, bands=SINGLE_BANDS, refinements: int = 14) -> bytes:
    """A valid grey progressive JPEG: one DC scan and, per (first, last) band of AC
    coefficients, a first scan plus ``refinements - 1`` successive-approximation scans. By
    default 883 scans, the outside test's 24.8-second file; every block is flat grey, so each
    scan is a few bytes."""
    blocks = math.ceil(side / 8) ** 2
    dc_table = bytes([0x00, 1] + [0] * 15 + [0])  # one DC code "0": difference category 0
    ac_table = bytes([0x10] + [0, 0, 0, 15] + [0] * 12 + [r << 4 for r in range(15)])
    parts = [
        b"\xff\xd8",
        segment(0xDB, bytes([0]) + bytes([1] * 64)),
        segment(0xC2, struct.pack(">BHHB", 8, side, side, 1) + bytes([1, 0x11, 0])),
        segment(0xC4, dc_table + ac_table),
        segment(0xDA, bytes([1, 1, 0x00, 0, 0, 0])) + bits_to_bytes("0" * blocks),
    ]
    for first, last in bands:
        for step in range(refinements):
            al = refinements - 1 - step
            ah = 0 if step == 0 else al + 1
            header = bytes([1, 1, 0x00, first, last, ah << 4 | al])
            parts.append(segment(0xDA, header) + bits_to_bytes(eob_runs(blocks)))
    return b"".join(parts) + b"\xff\xd9"


def png_behind_chunks(img: Image.Image, chunks: int, size: int = 0) -> bytes:
    """A PNG of ``img`` with ``chunks`` private ancillary chunks of ``size`` bytes before IDAT."""
    data = encode(img, "PNG")
    private = png_chunk(b"prVt", bytes(size)) * chunks
    return data[:33] + private + data[33:]


def test_jpeg_with_more_scans_than_the_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    import simplejpeg

    data = many_scan_jpeg(64)
    assert len(scan_starts(data)) == 883
    assert load_image(many_scan_jpeg(64, refinements=1)).size == (64, 64)

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(simplejpeg, "decode_jpeg", no_decode)
    path = tmp_path / "scans.jpg"
    path.write_bytes(data)
    err = rejected(path)
    assert str(path) in str(err)
    assert err.reason == (
        "JPEG with more than 100 scans: decoding it would take too long "
        "(an encoder writes at most a few dozen)"
    )


def test_scan_limit_is_counted_before_the_decoder_runs(monkeypatch):
    import deepfake_xai.images as images

    monkeypatch.setattr(images, "MAX_JPEG_SCANS", 20)
    twenty = (*SINGLE_BANDS[:18], (19, 63))  # with the DC scan: 20 scans, every coefficient
    assert load_image(many_scan_jpeg(64, bands=twenty, refinements=1)).size == (64, 64)
    assert "more than 20 scans" in rejected(many_scan_jpeg(64, refinements=1)).reason


def test_png_with_too_many_chunks_is_refused_before_pillow_reads_them(tmp_path, monkeypatch):
    from PIL import PngImagePlugin

    import deepfake_xai.images as images

    monkeypatch.setattr(images, "MAX_PNG_CHUNKS", 1000)
    img = photo(32)
    assert load_image(png_behind_chunks(img, 990)).size == (32, 32)

    def no_parse(*args, **kwargs):
        raise AssertionError("Pillow read the chunks")

    monkeypatch.setattr(PngImagePlugin.PngStream, "call", no_parse)
    path = tmp_path / "chunks.png"
    path.write_bytes(png_behind_chunks(img, 2000))
    for check in (load_image, image_size, decode_cost):
        with pytest.raises(ImageLoadError) as info:
            check(path)
        assert str(path) in str(info.value)
        assert info.value.reason == (
            "PNG with more than 1000 chunks: reading them would take too long "
            "(an encoder writes a few, plus one per 8-64 KiB of image data)"
        )


def test_the_default_chunk_limit_is_fast():
    import time

    data = png_behind_chunks(photo(32), 200_000)  # 2.4 MB of empty chunks
    start = time.perf_counter()
    assert "more than 100000 chunks" in rejected(data).reason
    assert time.perf_counter() - start < 2


def test_ancillary_chunks_count_in_the_decode_estimate():
    img = photo(64)
    bare = decode_cost(encode(img, "PNG"))
    padded = decode_cost(png_behind_chunks(img, 500, size=2000))
    assert padded - bare >= 500 * 2000
    err = rejected(png_behind_chunks(img, 500, size=2000), max_decode_bytes=bare + 100_000)
    assert "above the budget" in err.reason
