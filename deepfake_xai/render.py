"""Drawing heatmaps: colour lookup, overlays on images, standalone heatmap images.

PIL and numpy only. Colormaps come from matplotlib's registry, imported on first use and turned
into a 256-entry uint8 lookup table once per name, so importing this module stays cheap.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

LUT_SIZE = 256
COLORMAPS: tuple[str, ...] = ("jet", "inferno", "viridis", "turbo")
"""The colormaps offered by the UI; any matplotlib colormap name also works."""


@lru_cache(maxsize=32)
def colormap_lut(name: str) -> np.ndarray:
    """The ``(256, 3)`` uint8 RGB lookup table of a matplotlib colormap."""
    from matplotlib import colormaps

    try:
        cmap = colormaps[name]
    except KeyError:
        raise ValueError(f"unknown colormap {name!r}; try one of {list(COLORMAPS)}") from None
    rgba = cmap(np.linspace(0.0, 1.0, LUT_SIZE))
    lut = np.rint(rgba[:, :3] * 255).astype(np.uint8)
    lut.flags.writeable = False
    return lut


def as_map(heatmap: np.ndarray | torch.Tensor) -> np.ndarray:
    """A 2-D float32 array in [0, 1]; NaN and inf become 0, a leading axis of 1 is dropped."""
    if hasattr(heatmap, "detach"):  # a torch tensor; torch itself is not imported here
        heatmap = heatmap.detach().float().cpu().numpy()
    values = np.asarray(heatmap, dtype=np.float32)
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2:
        raise ValueError(f"a heatmap must be 2-D (h, w), got shape {values.shape}")
    return np.clip(np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0)


def colorize(heatmap: np.ndarray | torch.Tensor, colormap: str = "jet") -> np.ndarray:
    """``(h, w)`` values in [0, 1] to an ``(h, w, 3)`` uint8 RGB array."""
    index = np.rint(as_map(heatmap) * (LUT_SIZE - 1)).astype(np.intp)
    return colormap_lut(colormap)[index]


def resize_map(heatmap: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a heatmap to ``size`` = (width, height), values kept in [0, 1]."""
    values = as_map(heatmap)
    if values.shape[::-1] == tuple(size):
        return values
    resized = Image.fromarray(values).resize(tuple(size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized), 0.0, 1.0)


def heatmap_image(
    heatmap: np.ndarray | torch.Tensor,
    size: tuple[int, int] | None = None,
    colormap: str = "jet",
) -> Image.Image:
    """The coloured heatmap as an RGB image, bilinearly resized to ``size`` = (width, height)."""
    values = as_map(heatmap) if size is None else resize_map(heatmap, size)
    return Image.fromarray(colorize(values, colormap))


def overlay(
    image: Image.Image | np.ndarray,
    heatmap: np.ndarray | torch.Tensor,
    *,
    alpha: float = 0.5,
    colormap: str = "jet",
) -> Image.Image:
    """``image`` blended with the coloured heatmap (upsampled to the image size) at ``alpha``."""
    base = _rgb_image(image) if isinstance(image, Image.Image) else Image.fromarray(_rgb(image))
    return blend(base, heatmap_image(heatmap, size=base.size, colormap=colormap), alpha=alpha)


def blend(image: Image.Image, coloured: Image.Image, *, alpha: float = 0.5) -> Image.Image:
    """``image`` blended at ``alpha`` with ``coloured``, a heatmap already coloured at its size
    (:func:`heatmap_image`; one colouring serves both the overlay and the heatmap alone)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if coloured.size != image.size:
        raise ValueError(f"the coloured map is {coloured.size}, the image {image.size}")
    pixels = np.asarray(_rgb_image(image), dtype=np.float32)
    blended = (1.0 - alpha) * pixels + alpha * np.asarray(coloured, dtype=np.float32)
    return Image.fromarray(np.rint(blended).astype(np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    """``image`` as a PNG, encoded for speed (OpenCV, one filter, Huffman coding only): 5 ms
    instead of Pillow's 14 ms for a 448 px overlay, about as small (``benchmarks/README.md``,
    "The app under concurrent users")."""
    import cv2

    pixels = np.asarray(_rgb_image(image))[:, :, ::-1]
    options = [cv2.IMWRITE_PNG_COMPRESSION, 1,
               cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]  # fmt: skip
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV 4.11 and later
        options += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pixels), options)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.size} {image.mode} image as PNG")
    return encoded.tobytes()


def _rgb_image(image: Image.Image) -> Image.Image:
    """``image`` in RGB, converted (a copy) only when it is in another mode."""
    return image if image.mode == "RGB" else image.convert("RGB")


def _rgb(array: np.ndarray) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 array, or an error saying what was given."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            f"an image array must be (H, W, 3) uint8, got shape {array.shape} dtype {array.dtype}"
        )
    return array
