"""Harmonised preprocessing: the same steps for both classes, at training and at inference.

A detector stores its :class:`Harmonization` in its checkpoint, so whatever crops, resizes and
re-encodes it was trained with is re-applied automatically when it is used later.
"""

from __future__ import annotations

import io
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
        if not isinstance(self.image_size, int) or not 8 <= self.image_size <= 4096:
            raise ValueError(f"image_size must be an int in [8, 4096], got {self.image_size!r}")
        if self.resize not in RESIZE_METHODS:
            raise ValueError(f"resize must be one of {sorted(RESIZE_METHODS)}, got {self.resize!r}")
        if self.fit not in FIT_MODES:
            raise ValueError(f"fit must be one of {FIT_MODES}, got {self.fit!r}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100] or None, got {self.jpeg_quality!r}")
        if self.face_margin < 0:
            raise ValueError(f"face_margin must be >= 0, got {self.face_margin!r}")

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
