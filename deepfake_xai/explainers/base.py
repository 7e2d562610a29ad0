"""Explainer contracts and their small result types.

Two kinds: *attribution* explainers turn a batch of images into one heatmap per image (and per
layer) for a target class; *projection* explainers turn a set of embeddings into 2-D points.
Results hold tensors / arrays plus the metadata needed to render them, never figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from ..detectors import Detector

Target = Literal["fake", "real", "predicted"]
TARGETS: tuple[str, ...] = ("fake", "real", "predicted")
#: What a ``target`` argument accepts: one name for all images, one per image, or 0/1 indices.
TargetSpec = str | Sequence[str] | torch.Tensor


def resolve_targets(target: TargetSpec, logits: torch.Tensor) -> torch.Tensor:
    """Class index per image (1 = fake, 0 = real) for ``"fake"``, ``"real"``, ``"predicted"``.

    A sequence gives one target per image; a tensor of 0/1 is taken as is.
    """
    n = logits.shape[0]
    if isinstance(target, torch.Tensor):
        return target.to(logits.device).long().reshape(n)
    names = [target] * n if isinstance(target, str) else list(target)
    if len(names) != n:
        raise ValueError(f"got {len(names)} targets for {n} images")
    predicted = (logits.detach() > 0).long()
    out = torch.empty(n, dtype=torch.long, device=logits.device)
    for i, name in enumerate(names):
        if name not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {name!r}")
        out[i] = 1 if name == "fake" else 0 if name == "real" else predicted[i]
    return out


def signed_logit(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The score whose gradient explains each target: the logit for fake, minus it for real."""
    return torch.where(targets.bool(), logits, -logits)


def normalize_maps(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each map of ``(N, h, w)`` to [0, 1]; NaN/inf become 0 and flat maps stay 0."""
    maps = torch.nan_to_num(maps.float(), nan=0.0, posinf=0.0, neginf=0.0)
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.min(dim=1, keepdim=True).values
    high = flat.max(dim=1, keepdim=True).values
    span = high - low
    scaled = torch.where(span > eps, (flat - low) / span.clamp_min(eps), torch.zeros_like(flat))
    return scaled.reshape(maps.shape)


@dataclass
class Heatmaps:
    """One map per image at the explainer's native resolution (feature map or input size).

    ``maps`` is ``(N, h, w)``, each normalised to [0, 1] (see :func:`normalize_maps`);
    ``targets`` holds the explained class per image (1 = fake).
    """

    maps: torch.Tensor
    method: str
    layer: str
    targets: torch.Tensor
    detector: str = ""

    def __len__(self) -> int:
        return self.maps.shape[0]

    def upsample(self, size: int | tuple[int, int]) -> torch.Tensor:
        """Bilinear upsampling to ``size`` (H, W), kept in [0, 1]; ``(N, H, W)`` float32."""
        size = (size, size) if isinstance(size, int) else tuple(size)
        up = F.interpolate(
            self.maps[:, None].float(), size=size, mode="bilinear", align_corners=False
        )
        return up[:, 0].clamp_(0, 1)

    def numpy(self) -> np.ndarray:
        return self.maps.detach().float().cpu().numpy()


@dataclass
class Projection:
    """2-D coordinates of a set of embeddings, with the settings that produced them."""

    coords: np.ndarray
    method: str
    params: dict = field(default_factory=dict)


class AttributionExplainer:
    """Maps a batch to per-image heatmaps for a target; constructed once per detector.

    Subclasses implement :meth:`attribute`. ``inputs`` is a normalised float batch on the
    detector's device (see :meth:`Detector.normalize`).
    """

    kind: ClassVar[str] = "attribution"
    name: ClassVar[str] = ""
    uses_layers: ClassVar[bool] = False

    def __init__(self, detector: Detector):
        self.detector = detector

    def attribute(
        self,
        inputs: torch.Tensor,
        target: TargetSpec = "fake",
        layers: Sequence[str] = ("final",),
    ) -> dict[str, Heatmaps]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(detector={self.detector.name!r})"


def heatmap_layers(
    explainer: str | type | AttributionExplainer, layers: Sequence[str]
) -> list[str]:
    """The keys of ``explainer``'s heatmaps when asked for ``layers``: those layers for the
    Grad-CAM family (``uses_layers``), ``["input"]`` for input attributions."""
    if isinstance(explainer, str):
        from ..registry import EXPLAINERS

        explainer = EXPLAINERS.get(explainer)
    return list(dict.fromkeys(layers)) if getattr(explainer, "uses_layers", False) else ["input"]


class ProjectionExplainer:
    """Maps embeddings ``(N, D)`` to 2-D; parameters in the constructor, like scikit-learn."""

    kind: ClassVar[str] = "projection"
    name: ClassVar[str] = ""

    def fit_transform(self, embeddings: np.ndarray) -> Projection:
        raise NotImplementedError
