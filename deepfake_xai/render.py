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
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    base = image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(_rgb(image))
    colour = colorize(resize_map(heatmap, base.size), colormap).astype(np.float32)
    pixels = np.asarray(base, dtype=np.float32)
    blended = (1.0 - alpha) * pixels + alpha * colour
    return Image.fromarray(np.rint(blended).astype(np.uint8))


def _rgb(array: np.ndarray) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 array, or an error saying what was given."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            f"an image array must be (H, W, 3) uint8, got shape {array.shape} dtype {array.dtype}"
        )
    return array
