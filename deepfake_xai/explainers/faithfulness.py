"""How faithful and how well localised heatmaps are, scored in batched torch on the device.

Faithfulness asks the model: deletion / insertion (RISE, Petsiuk et al., 2018) replace or
restore pixels in order of decreasing saliency and integrate the target-class probability over
the fraction changed; Average Drop and Increase in Confidence (Chattopadhyay et al., 2018)
compare the probability on the image with that on the image multiplied by its map.
Localisation asks the ground truth (the synthetic set's artifact masks): the pointing game and
the share of the map's energy inside the mask.

Maps are ``(N, h, w)`` at any resolution and are resized bilinearly to what they are compared
with. Images are normalised ``(N, 3, H, W)`` batches, as for the explainers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F

from .attribution import Baseline, make_baseline
from .base import TargetSpec, resolve_targets, signed_logit

if TYPE_CHECKING:
    from ..detectors import Detector

ArrayLike = np.ndarray | torch.Tensor


def resize_maps(
    maps: ArrayLike, size: tuple[int, int], device: torch.device | None = None
) -> torch.Tensor:
    """``(N, h, w)`` maps as float32 ``(N, H, W)`` on ``device``, resized bilinearly if needed."""
    maps = torch.as_tensor(maps, device=device).float()
    if maps.ndim != 3:
        raise ValueError(f"maps must be (N, h, w), got shape {tuple(maps.shape)}")
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def perturbation_curve(
    detector: Detector,
    x: torch.Tensor,
    maps: ArrayLike,
    target: TargetSpec = "predicted",
    *,
    mode: Literal["deletion", "insertion"] = "deletion",
    steps: int = 16,
    baseline: Baseline = "blur",
    batch_size: int = 32,
) -> np.ndarray:
    """Target probability ``(N, steps + 1)`` as pixels are deleted or inserted by saliency.

    Step ``k`` changes the ``k / steps`` most salient pixels: deletion replaces them with the
    baseline, insertion starts from the baseline and restores them. All (image, step) inputs
    go through the model in chunks of ``batch_size``. ``"predicted"`` is the prediction on the
    unperturbed image.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    _check_counts(steps=steps, batch_size=batch_size)
    with torch.inference_mode():
        x = _images(detector, x)
        n, _, height, width = x.shape
        saliency = _matching_maps(maps, x).reshape(n, -1)
        ranks = saliency.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
        counts = torch.linspace(0, height * width, steps + 1, device=x.device).round().long()
        base = make_baseline(detector, x, baseline)
        start, end = (x, base) if mode == "deletion" else (base, x)

        image_of = torch.arange(n, device=x.device).repeat_interleave(steps + 1)
        step_of = torch.arange(steps + 1, device=x.device).repeat(n)
        logits = torch.empty(n * (steps + 1), device=x.device)
        for lo in range(0, len(image_of), batch_size):
            img, step = image_of[lo : lo + batch_size], step_of[lo : lo + batch_size]
            changed = (ranks[img] < counts[step, None]).view(-1, 1, height, width)
            logits[lo : lo + batch_size] = detector(
                torch.where(changed, end[img], start[img])
            ).float()
        logits = logits.view(n, steps + 1)
        full = logits[:, 0] if mode == "deletion" else logits[:, -1]
        targets = resolve_targets(target, full)
        return torch.sigmoid(signed_logit(logits, targets[:, None])).cpu().numpy()


def _area_under_curve(
    mode: Literal["deletion", "insertion"], better: str
) -> Callable[..., np.ndarray]:
    """``deletion_auc`` or ``insertion_auc``: the area under :func:`perturbation_curve`."""

    def area(
        detector: Detector,
        x: torch.Tensor,
        maps: ArrayLike,
        target: TargetSpec = "predicted",
        *,
        steps: int = 16,
        baseline: Baseline = "blur",
        batch_size: int = 32,
    ) -> np.ndarray:
        curve = perturbation_curve(
            detector,
            x,
            maps,
            target,
            mode=mode,
            steps=steps,
            baseline=baseline,
            batch_size=batch_size,
        )
        return curve_area(curve)

    area.__name__ = area.__qualname__ = f"{mode}_auc"
    area.__doc__ = (
        f"Area under the {mode} curve per image ``(N,)``: {better} means a more faithful map."
    )
    return area


deletion_auc = _area_under_curve("deletion", "lower")
insertion_auc = _area_under_curve("insertion", "higher")


def masked_probabilities(
    detector: Detector,
    x: torch.Tensor,
    maps: ArrayLike,
    target: TargetSpec = "predicted",
    *,
    baseline: Baseline = "black",
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """``(p_full, p_masked)``: target probability on each image and on it multiplied by its map.

    With the default ``"black"`` baseline the masked image is the pixel-space product
    ``image * map``; other baselines blend towards that reference instead of black.
    ``"predicted"`` is the prediction on the full image.
    """
    _check_counts(batch_size=batch_size)
    with torch.inference_mode():
        x = _images(detector, x)
        weights = _matching_maps(maps, x).clamp(0, 1)[:, None]
        base = make_baseline(detector, x, baseline)
        full = _logits(detector, x, batch_size)
        masked = _logits(detector, base + (x - base) * weights, batch_size)
        targets = resolve_targets(target, full)
        p_full = torch.sigmoid(signed_logit(full, targets))
        p_masked = torch.sigmoid(signed_logit(masked, targets))
        return p_full.cpu().numpy(), p_masked.cpu().numpy()


def average_drop(p_full: ArrayLike, p_masked: ArrayLike) -> float:
    """Average Drop in %: mean of ``max(0, p_full - p_masked) / p_full`` (lower is better)."""
    full, masked = _probabilities(p_full, p_masked)
    return float(100 * np.mean(np.maximum(0, full - masked) / np.maximum(full, 1e-12)))


def increase_in_confidence(p_full: ArrayLike, p_masked: ArrayLike) -> float:
    """Increase in Confidence in %: share of images whose masked probability is higher."""
    full, masked = _probabilities(p_full, p_masked)
    return float(100 * np.mean(masked > full))


def pointing_game(maps: ArrayLike, masks: ArrayLike, tolerance: int = 0) -> np.ndarray:
    """Per image ``(N,)`` bool: does the map's maximum fall in the mask (or within
    ``tolerance`` pixels of it)? Maps are resized to the masks; an empty mask scores False.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    masks = _masks(masks)
    maps = _matching_masks(maps, masks)
    if tolerance:
        kernel = 2 * tolerance + 1
        masks = F.max_pool2d(masks[:, None].float(), kernel, stride=1, padding=tolerance)[:, 0] > 0
    peak = maps.reshape(len(maps), -1).argmax(dim=1)
    return masks.reshape(len(masks), -1).gather(1, peak[:, None])[:, 0].cpu().numpy()


def energy_in_mask(maps: ArrayLike, masks: ArrayLike) -> np.ndarray:
    """Per image ``(N,)``: the fraction of the map's total (non-negative) energy inside the mask.

    Maps are resized to the masks; an all-zero map scores 0.
    """
    masks = _masks(masks)
    maps = _matching_masks(maps, masks).clamp_min(0)
    inside = (maps * masks).sum(dim=(1, 2))
    total = maps.sum(dim=(1, 2))
    return torch.where(total > 0, inside / total.clamp_min(1e-12), 0.0).cpu().numpy()


def curve_area(curve: np.ndarray) -> np.ndarray:
    """Trapezoid area per image of ``(N, steps + 1)`` curves over the fraction changed 0..1."""
    return (curve[:, 1:] + curve[:, :-1]).sum(axis=1) / (2 * (curve.shape[1] - 1))


def _images(detector: Detector, x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4:
        raise ValueError(f"images must be a normalised (N, 3, H, W) batch, got {tuple(x.shape)}")
    return x.to(detector.device).float()


def _matching_maps(maps: ArrayLike, x: torch.Tensor) -> torch.Tensor:
    resized = resize_maps(maps, tuple(x.shape[-2:]), device=x.device)
    if len(resized) != len(x):
        raise ValueError(f"got {len(resized)} maps for {len(x)} images")
    return resized


def _matching_masks(maps: ArrayLike, masks: torch.Tensor) -> torch.Tensor:
    resized = resize_maps(maps, tuple(masks.shape[-2:]), device=masks.device)
    if len(resized) != len(masks):
        raise ValueError(f"got {len(resized)} maps for {len(masks)} masks")
    return resized


def _masks(masks: ArrayLike) -> torch.Tensor:
    masks = torch.as_tensor(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W) booleans, got shape {tuple(masks.shape)}")
    return masks.bool()


def _logits(detector: Detector, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat(
        [detector(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)]
    )


def _probabilities(p_full: ArrayLike, p_masked: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    full = np.asarray(torch.as_tensor(p_full).detach().cpu(), dtype=np.float64).reshape(-1)
    masked = np.asarray(torch.as_tensor(p_masked).detach().cpu(), dtype=np.float64).reshape(-1)
    if full.shape != masked.shape or not len(full):
        raise ValueError(
            "p_full and p_masked must be non-empty and equally long, "
            f"got {full.shape} and {masked.shape}"
        )
    return full, masked


def _check_counts(**values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
