"""Harmonised preprocessing: the same steps for both classes, at training and at inference.

A detector stores its :class:`Harmonization` in its checkpoint, so whatever crops, resizes and
re-encodes it was trained with is re-applied automatically when it is used later.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from PIL import Image

RESIZE_METHODS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
FIT_MODES = ("squash", "center_crop")
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 1024  # past 1024 px one image costs gigabytes in the engine
MAX_FACE_MARGIN = 2.0  # a crop five times the face's side; wider is no face crop any more


@dataclass(frozen=True)
class Harmonization:
    """How every image is brought to one canonical form before a detector sees it.

    ``fit="center_crop"`` resizes the shorter side and crops the centre (keeps the aspect ratio);
    ``"squash"`` resizes to a square. ``face_crop`` centres on the largest detected face with
    ``face_margin`` of its size around it (needs the ``[faces]`` extra). ``jpeg_quality``
    re-encodes every image once at that quality, so compression is the same for both classes.
    """

    image_size: int = 224
    resize: str = "bicubic"
    fit: str = "center_crop"
    face_crop: bool = False
    face_margin: float = 0.4
    jpeg_quality: int | None = None

    def __post_init__(self) -> None:
        problems = harmonization_problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    def apply(self, image: Image.Image) -> Image.Image:
        """Harmonise one decoded RGB image (see :func:`deepfake_xai.images.load_image`)."""
        if self.face_crop:
            from .faces import crop_to_face

            image = crop_to_face(image, margin=self.face_margin)
        image = self._fit(image)
        if self.jpeg_quality is not None:
            image = jpeg_roundtrip(image, self.jpeg_quality)
        return image

    def _fit(self, image: Image.Image) -> Image.Image:
        size, method = self.image_size, RESIZE_METHODS[self.resize]
        if self.fit == "squash":
            return image.resize((size, size), method)
        w, h = image.size
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((new_w, new_h), method)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        return image.crop((left, top, left + size, top + size))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Harmonization:
        """Build from a stored dict; unknown keys are an error that names them."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown harmonization settings {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**data)


def harmonization_problems(h: Harmonization) -> list[str]:
    """What is wrong with each setting of ``h`` (its type and its bounds); [] if nothing."""
    problems = []
    if not _is_int(h.image_size) or not MIN_IMAGE_SIZE <= h.image_size <= MAX_IMAGE_SIZE:
        problems.append(
            f"image_size must be an int in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], "
            f"got {h.image_size!r}"
        )
    if not isinstance(h.resize, str) or h.resize not in RESIZE_METHODS:
        problems.append(f"resize must be one of {sorted(RESIZE_METHODS)}, got {h.resize!r}")
    if not isinstance(h.fit, str) or h.fit not in FIT_MODES:
        problems.append(f"fit must be one of {FIT_MODES}, got {h.fit!r}")
    if not isinstance(h.face_crop, bool):
        problems.append(f"face_crop must be true or false, got {h.face_crop!r}")
    margin = h.face_margin
    if not (_is_number(margin) and math.isfinite(margin) and 0 <= margin <= MAX_FACE_MARGIN):
        problems.append(f"face_margin must be a number in [0, {MAX_FACE_MARGIN}], got {margin!r}")
    quality = h.jpeg_quality
    if quality is not None and not (_is_int(quality) and 1 <= quality <= 100):
        problems.append(f"jpeg_quality must be an int in [1, 100] or None, got {quality!r}")
    return problems


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def jpeg_roundtrip(image: Image.Image, quality: int) -> Image.Image:
    """Encode as JPEG at ``quality`` and decode again (metadata dropped)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a ``(3, H, W)`` uint8 tensor (normalisation happens on the device)."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
