"""Per-image audit features: what a detector could learn instead of the face itself.

Encoding and file properties come from the file header (no pixel decoding); global pixel
statistics and face framing come from one decode through :func:`deepfake_xai.images.load_image`
at a bounded working size. The folder a file sits in is never a feature: only its own name is.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, JpegImagePlugin

from ..images import image_size, load_image

WORK_SIZE = 256
"""Face detection runs on the image scaled to at most this side (eyes need about 20 px)."""

STATS_SIZE = 128
"""Global pixel statistics run on the image scaled to at most this side."""

GROUPS = ("file", "pixels", "framing", "filename")


@dataclass(frozen=True)
class Feature:
    """One audit feature: ``kind`` is "numeric" or "categorical"; ``group`` one of GROUPS."""

    name: str
    kind: str
    group: str
    description: str


def _f(name: str, kind: str, group: str, description: str) -> tuple[str, Feature]:
    return name, Feature(name, kind, group, description)


FEATURES: dict[str, Feature] = dict(
    [
        _f("width", "numeric", "file", "width in pixels (after EXIF orientation)"),
        _f("height", "numeric", "file", "height in pixels (after EXIF orientation)"),
        _f("aspect", "numeric", "file", "width / height"),
        _f("format", "categorical", "file", "file format as decoded (JPEG, PNG, ...)"),
        _f("mode", "categorical", "file", "Pillow mode as stored (RGB, L, P, RGBA, ...)"),
        _f("file_size", "numeric", "file", "file size in bytes"),
        _f("bytes_per_pixel", "numeric", "file", "file size / (width * height)"),
        _f("jpeg_quality", "numeric", "file", "IJG quality estimated from the luminance table"),
        _f("chroma_subsampling", "categorical", "file", "JPEG chroma subsampling"),
        _f("jpeg_progressive", "numeric", "file", "1 if a progressive JPEG"),
        _f("has_exif", "numeric", "file", "1 if EXIF metadata is present"),
        _f("has_icc", "numeric", "file", "1 if an ICC colour profile is present"),
        _f("has_xmp", "numeric", "file", "1 if XMP metadata is present"),
        _f("metadata_keys", "categorical", "file", "the set of metadata keys in the header"),
        _f("brightness_mean", "numeric", "pixels", "mean grey level (0-255)"),
        _f("brightness_std", "numeric", "pixels", "grey-level standard deviation (contrast)"),
        _f("red_mean", "numeric", "pixels", "mean red value"),
        _f("green_mean", "numeric", "pixels", "mean green value"),
        _f("blue_mean", "numeric", "pixels", "mean blue value"),
        _f("saturation_mean", "numeric", "pixels", "mean HSV saturation (0-1)"),
        _f("sharpness", "numeric", "pixels", "variance of the Laplacian of the grey image"),
        _f("face_found", "numeric", "framing", "1 if a frontal face was detected"),
        _f("face_size", "numeric", "framing", "face box width / image width"),
        _f("face_cx", "numeric", "framing", "face box centre x / image width"),
        _f("face_cy", "numeric", "framing", "face box centre y / image height"),
        _f("inter_ocular", "numeric", "framing", "distance between the eyes / image width"),
        _f("name_length", "numeric", "filename", "length of the file name without extension"),
        _f("name_digits", "numeric", "filename", "fraction of digits in the file name"),
        _f("extension", "categorical", "filename", "file extension, lower case"),
        _f("name_scheme", "categorical", "filename", "naming pattern, e.g. [0-9]+ or IMG_[0-9]+"),
    ]
)

_SAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}

# ITU-T T.81 Annex K.1 luminance table in natural (row-major) order: IJG quality 50.
_IJG_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ]
).ravel()


def _ijg_tables() -> np.ndarray:
    """(100, 64): the baseline luminance table libjpeg writes for quality 1..100."""
    q = np.arange(1, 101)
    scale = np.where(q < 50, 5000 // q, 200 - 2 * q)
    return np.clip((_IJG_LUMA[None, :] * scale[:, None] + 50) // 100, 1, 255)


_TABLES = _ijg_tables()


def estimate_jpeg_quality(luma_table: list[int] | np.ndarray) -> int:
    """The IJG quality (1-100) whose scaled standard table is closest to ``luma_table``.

    Exact for files written by libjpeg-based encoders (Pillow, OpenCV and most libraries);
    the nearest equivalent for encoders with their own tables.
    """
    table = np.asarray(luma_table, dtype=np.int64).ravel()
    if table.size != 64:
        raise ValueError(f"a JPEG quantisation table has 64 entries, got {table.size}")
    errors = np.abs(_TABLES - table[None, :]).sum(axis=1)
    return int(np.argmin(errors)) + 1


def name_scheme(stem: str) -> str:
    """A regex-like signature of a file name: runs of letters/digits become character classes.

    ``00017`` -> ``[0-9]+``, ``IMG_0042`` -> ``[A-Z]+_[0-9]+``, ``002KDWZBHU`` -> ``[0-9A-Z]+``.
    """
    parts = []
    for token in re.split(r"([^0-9A-Za-z]+)", stem):
        if not token:
            continue
        if not token[0].isascii() or not token[0].isalnum():
            parts.append(token)
            continue
        classes = [
            c
            for c, rx in (("0-9", r"\d"), ("A-Z", "[A-Z]"), ("a-z", "[a-z]"))
            if re.search(rx, token)
        ]
        parts.append(f"[{''.join(classes)}]+")
    return "".join(parts)


def filename_features(path: Path) -> dict[str, Any]:
    """Features of the file's own name (never of the folders above it)."""
    stem = path.stem
    return {
        "name_length": len(stem),
        "name_digits": sum(c.isdigit() for c in stem) / max(1, len(stem)),
        "extension": path.suffix.lower().lstrip(".") or "none",
        "name_scheme": name_scheme(stem) or "none",
    }


def header_features(path: Path) -> dict[str, Any]:
    """Encoding and metadata, read from the header without decoding pixels.

    Call only on a file :func:`~deepfake_xai.images.load_image` has accepted.
    """
    width, height = image_size(path)
    file_size = os.path.getsize(path)
    with Image.open(path) as img:
        info = img.info
        quant = getattr(img, "quantization", None) or {}
        sampling = JpegImagePlugin.get_sampling(img) if img.format in ("JPEG", "MPO") else -1
        fmt, mode = img.format, img.mode
    return {
        "width": width,
        "height": height,
        "aspect": width / height,
        "format": fmt or "unknown",
        "mode": mode,
        "file_size": file_size,
        "bytes_per_pixel": file_size / (width * height),
        "jpeg_quality": estimate_jpeg_quality(quant[0]) if 0 in quant else math.nan,
        "chroma_subsampling": _SAMPLING.get(sampling, "none"),
        "jpeg_progressive": int(bool(info.get("progressive") or info.get("progression"))),
        "has_exif": int(bool(info.get("exif"))),
        "has_icc": int(bool(info.get("icc_profile"))),
        "has_xmp": int(bool(info.get("xmp") or info.get("XML:com.adobe.xmp"))),
        "metadata_keys": ",".join(sorted(map(str, info))) or "none",
    }


def pixel_features(image: Image.Image) -> dict[str, float]:
    """Global colour, brightness, saturation and sharpness of an RGB image, at STATS_SIZE."""
    small = image.copy()
    small.thumbnail((STATS_SIZE, STATS_SIZE), Image.Resampling.BILINEAR)
    rgb = np.asarray(small, dtype=np.float32)
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    hi, lo = rgb.max(axis=2), rgb.min(axis=2)
    saturation = np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-6), 0.0)
    laplacian = (
        grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1]
    )
    means = rgb.reshape(-1, 3).mean(axis=0)
    return {
        "brightness_mean": float(grey.mean()),
        "brightness_std": float(grey.std()),
        "red_mean": float(means[0]),
        "green_mean": float(means[1]),
        "blue_mean": float(means[2]),
        "saturation_mean": float(saturation.mean()),
        "sharpness": float(laplacian.var()) if laplacian.size else math.nan,
    }


def framing_features(image: Image.Image) -> dict[str, float]:
    """Where the largest face sits and how big it is, relative to the image (NaN if none)."""
    from ..faces import detect_face

    box = detect_face(image, with_eyes=True)
    if box is None:
        nan = math.nan
        return {
            "face_found": 0,
            "face_size": nan,
            "face_cx": nan,
            "face_cy": nan,
            "inter_ocular": nan,
        }
    w, h = image.size
    eyes = box.inter_ocular
    return {
        "face_found": 1,
        "face_size": box.width / w,
        "face_cx": (box.x + box.width / 2) / w,
        "face_cy": (box.y + box.height / 2) / h,
        "inter_ocular": eyes / w if eyes is not None else math.nan,
    }


def working_image(path: str | os.PathLike) -> Image.Image:
    """The decoded RGB image scaled to at most WORK_SIZE per side (JPEG draft mode when large)."""
    image = load_image(path, draft_size=(WORK_SIZE, WORK_SIZE))
    image.thumbnail((WORK_SIZE, WORK_SIZE), Image.Resampling.BILINEAR)
    return image


def extract_features(path: str | os.PathLike, *, faces: bool | None = None) -> dict[str, Any]:
    """All audit features of one image file, keyed by the names in :data:`FEATURES`.

    ``faces=None`` adds the framing features when the ``[faces]`` extra is installed; ``False``
    skips them. Raises :class:`~deepfake_xai.images.ImageLoadError` for an unusable file.
    """
    path = Path(path)
    image = working_image(path)
    row = {**header_features(path), **pixel_features(image)}
    if faces is None:
        from ..faces import faces_available

        faces = faces_available()
    if faces:
        row.update(framing_features(image))
    return {**row, **filename_features(path)}
