"""Baseline JPEG compression of uint8 image batches in torch, on any device.

The lossy steps of a JPEG encoder and decoder as libjpeg (and so Pillow) runs them: full-range
YCbCr, 4:2:0 chroma subsampling, 8x8 DCT, quantisation with the IJG tables scaled by quality,
and "fancy" (triangular) chroma upsampling on decoding. Entropy coding is lossless and skipped.
One call compresses a whole batch on the device; the result differs from Pillow's by about one
grey level per pixel (measured in the tests), from rounding inside libjpeg's integer DCT.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    *((99,) * 8,) * 4,
)
_RGB_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168735892, -0.331264108, 0.5),
    (0.5, -0.418687589, -0.081312411),
)
_YCBCR_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136286, -0.714136286), (1.0, 1.772, 0.0))


def quantization_tables(quality: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (luma, chroma) 8x8 tables libjpeg uses at ``quality`` (1-100), as float tensors."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in [1, 100], got {quality!r}")
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    tables = torch.tensor((_LUMA_TABLE, _CHROMA_TABLE), dtype=torch.int64)
    scaled = ((tables * scale + 50) // 100).clamp(1, 255)
    return scaled[0].float(), scaled[1].float()


def jpeg_compress(batch: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` RGB images after a JPEG round trip at ``quality``, same device."""
    if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(
            f"expected a uint8 (B, 3, H, W) batch, got {batch.dtype} {tuple(batch.shape)}"
        )
    luma_q, chroma_q = (t.to(batch.device) for t in quantization_tables(quality))
    height, width = batch.shape[-2:]
    padded = _pad_to(batch.float(), 16)
    ycc = _colour(padded, _RGB_TO_YCBCR, offset=(0.0, 128.0, 128.0)).round().clamp(0, 255)
    luma = _block_codec(ycc[:, :1], luma_q)
    chroma = F.avg_pool2d(ycc[:, 1:], 2).round()
    chroma = _block_codec(chroma, chroma_q)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    rgb = _colour(torch.cat([luma, chroma - 128.0], dim=1), _YCBCR_TO_RGB)
    return rgb[..., :height, :width].round().clamp(0, 255).to(torch.uint8)


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate the last row and column up to a multiple of ``multiple`` (as libjpeg does)."""
    height, width = x.shape[-2:]
    bottom, right = -height % multiple, -width % multiple
    return F.pad(x, (0, right, 0, bottom), mode="replicate") if bottom or right else x


def _colour(x: torch.Tensor, matrix, offset=(0.0, 0.0, 0.0)) -> torch.Tensor:
    weights = torch.tensor(matrix, device=x.device, dtype=x.dtype)
    shift = torch.tensor(offset, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return torch.einsum("oc,bchw->bohw", weights, x) + shift


def _dct_matrix(device: torch.device) -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix (JPEG's FDCT is its 2-D form)."""
    k = torch.arange(8, dtype=torch.float64)
    matrix = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * 0.5
    matrix[0] = math.sqrt(1 / 8)
    return matrix.float().to(device)


def _block_codec(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Level shift, 8x8 DCT, quantise, dequantise and invert one ``(B, C, H, W)`` plane set."""
    b, c, h, w = plane.shape
    blocks = (plane - 128.0).reshape(b, c, h // 8, 8, w // 8, 8).transpose(3, 4)
    dct = _dct_matrix(plane.device)
    coefficients = dct @ blocks @ dct.T
    coefficients = torch.round(coefficients / table) * table
    pixels = dct.T @ coefficients @ dct
    out = pixels.transpose(3, 4).reshape(b, c, h, w) + 128.0
    return out.round().clamp(0, 255)
