"""How alike two heatmaps of the same image are: rank correlation and overlap of the top pixels.

Maps are compared on a common grid (:func:`to_grid`) so that a 7x7 Grad-CAM and a 224x224
attribution are judged alike. Everything is batched on the maps' device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GRID = 28
TOP_FRACTION = 0.1


def to_grid(maps: torch.Tensor, size: int = GRID) -> torch.Tensor:
    """``(N, h, w)`` maps as float ``(N, size, size)``: area-averaged down, bilinear up."""
    maps = torch.nan_to_num(maps.float())[:, None]
    height, width = maps.shape[-2:]
    if height >= size and width >= size:
        maps = F.adaptive_avg_pool2d(maps, size)
    else:
        maps = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)
    return maps[:, 0]


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation per pair of maps ``(N, ...)`` -> ``(N,)``.

    Ties get their average rank. A constant (flat) map ranks nothing: two flat maps score 1
    (unchanged), a flat map against a structured one scores 0 (nothing in common).
    """
    ra, rb = _average_ranks(_flat(a)), _average_ranks(_flat(b))
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    var_a, var_b = ra.square().sum(dim=1), rb.square().sum(dim=1)
    correlation = (ra * rb).sum(dim=1) / (var_a * var_b).sqrt().clamp_min(1e-12)
    flat_a, flat_b = var_a == 0, var_b == 0
    return torch.where(flat_a | flat_b, (flat_a & flat_b).float(), correlation)


def top_overlap(a: torch.Tensor, b: torch.Tensor, fraction: float = TOP_FRACTION) -> torch.Tensor:
    """Per pair ``(N,)``: the share of ``a``'s top ``fraction`` of pixels that are also in
    ``b``'s top ``fraction`` (1: the same region stands out; ``fraction``: chance level)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    fa, fb = _flat(a), _flat(b)
    k = max(1, math.ceil(fraction * fa.shape[1]))
    in_a = torch.zeros_like(fa, dtype=torch.bool).scatter_(1, fa.topk(k, dim=1).indices, True)
    in_b = torch.zeros_like(fb, dtype=torch.bool).scatter_(1, fb.topk(k, dim=1).indices, True)
    return (in_a & in_b).sum(dim=1).float() / k


def _flat(maps: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(maps.float()).reshape(maps.shape[0], -1)


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """0-based ranks along dim 1 with ties sharing their mean rank."""
    ordered = x.sort(dim=1).values
    below = torch.searchsorted(ordered, x, side="left")
    through = torch.searchsorted(ordered, x, side="right")
    return (below + through - 1).float() / 2
