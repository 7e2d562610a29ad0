"""A detector's :class:`~deepfake_xai.preprocessing.Harmonization`, applied to a uint8 batch on
the device, so perturbed images reach every detector without a trip through Pillow.

Resizing uses torch's antialiased kernels (bicubic with Pillow's a = -0.5; Lanczos falls back to
bicubic) and the JPEG step :func:`~deepfake_xai.trust.jpeg.jpeg_compress`; the result is within
about a grey level of Pillow's. A face crop needs the face detector, so harmonisations with
``face_crop`` go through Pillow image by image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..preprocessing import Harmonization, to_uint8_tensor
from .jpeg import jpeg_compress

_MODES = {"nearest": "nearest", "bilinear": "bilinear", "bicubic": "bicubic", "lanczos": "bicubic"}


def harmonize_batch(images: torch.Tensor, harmonization: Harmonization) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` decoded images to uint8 ``(B, 3, S, S)`` as ``harmonization``
    would make them, on the images' device."""
    if harmonization.face_crop:
        return _through_pillow(images, harmonization)
    size = harmonization.image_size
    height, width = images.shape[-2:]
    if harmonization.fit == "squash":
        target = (size, size)
    else:
        scale = size / min(height, width)
        target = (max(size, round(height * scale)), max(size, round(width * scale)))
    out = images
    if target != (height, width):
        mode = _MODES[harmonization.resize]
        resized = F.interpolate(images.float(), size=target, mode=mode, antialias=mode != "nearest")
        out = resized.round().clamp(0, 255).to(torch.uint8)
    top, left = (target[0] - size) // 2, (target[1] - size) // 2
    out = out[..., top : top + size, left : left + size]
    if harmonization.jpeg_quality is not None:
        out = jpeg_compress(out.contiguous(), harmonization.jpeg_quality)
    return out.contiguous()


def _through_pillow(images: torch.Tensor, harmonization: Harmonization) -> torch.Tensor:
    pictures = images.permute(0, 2, 3, 1).cpu().numpy()
    return torch.stack(
        [
            to_uint8_tensor(harmonization.apply(Image.fromarray(np.ascontiguousarray(p))))
            for p in pictures
        ]
    ).to(images.device)
