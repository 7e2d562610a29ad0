"""A start for MobileNetV2 cut out of a trained EfficientNet-Lite0 (issue 21).

No ImageNet weights for MobileNetV2 can be had offline, and from scratch it learns too slowly on
a few thousand faces. But the two networks are close relatives: the same stem, ReLU6 inverted
residual blocks with expansion 6, the same 320 -> 1280 head. They differ in width (MobileNetV2's
stages carry 32 / 64 / 96 / 160 channels where Lite0's carry 40 / 80 / 112 / 192), in kernel size
(3 x 3 everywhere against some 5 x 5) and in the number of blocks per stage. So a MobileNetV2 is
cut out of a trained Lite0 as a pruned copy of it:

- each stage keeps the residual-stream channels whose last BatchNorm scales are largest (the
  same channels in every block of the stage, since they share the stream), and each block the
  hidden channels whose depthwise BatchNorm scales are largest;
- 5 x 5 depthwise kernels keep their central 3 x 3;
- a stage with more blocks than Lite0's gets identity blocks (the last BatchNorm's scale and shift
  zero, so the residual passes through); a stage with fewer drops Lite0's last blocks;
- the input is normalised as Lite0's (mean = std = 0.5).

The result is a MobileNetV2 that starts near the donor's answers and recovers what the pruning
lost in fine-tuning (with the donor as a distillation teacher, see
:mod:`deepfake_xai.distillation`). Padding differs slightly (Lite0 pads like TensorFlow).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Detector

TARGET = "mobilenetv2_100"
INPUT_NORMALIZATION = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}  # Lite0's


def mobilenetv2_from_lite0(donor: Detector, *, device: str = "cpu") -> Detector:
    """A ``mobilenetv2_100`` detector pruned out of the trained Lite0 ``donor`` (its
    preprocessing and metadata describe where it came from)."""
    from ..registry import DETECTORS

    if not donor.architecture.endswith("efficientnet_lite0"):
        raise ValueError(f"the donor must be an EfficientNet-Lite0, got {donor.architecture}")
    target = DETECTORS.create(TARGET, pretrained=False, device="cpu")
    source = donor.model.float().cpu()
    with torch.no_grad():
        _copy_stem_and_head(source, target.model)
        kept_in = torch.arange(source.blocks[0][0].conv_dw.weight.shape[0])
        for donor_stage, stage in zip(source.blocks, target.model.blocks, strict=True):
            kept_in = _transplant_stage(donor_stage, stage, kept_in)
    target.mean, target.std = INPUT_NORMALIZATION["mean"], INPUT_NORMALIZATION["std"]
    target.harmonization = donor.harmonization
    donor_name = " ".join(filter(None, (donor.name, donor.fingerprint)))
    target.metadata.update(
        pretrained=True,
        init=f"pruned out of {donor_name} (deepfake_xai.detectors.pruned_transplant)",
    )
    return target.to(device)


def _copy_stem_and_head(source: nn.Module, target: nn.Module) -> None:
    for name in ("conv_stem", "bn1", "conv_head", "bn2", "classifier"):
        target.get_submodule(name).load_state_dict(source.get_submodule(name).state_dict())


def _transplant_stage(donor: nn.Sequential, stage: nn.Sequential, kept_in: torch.Tensor):
    """Fill ``stage`` from ``donor``; ``kept_in`` are the donor's input channels kept. Returns
    the donor's output channels kept."""
    width = _out_conv(stage[0]).weight.shape[0]
    kept_out = _strongest(_last_norm(donor[0]).weight, width)
    for index, block in enumerate(stage):
        if index >= len(donor):
            _make_identity(block)
            continue
        _transplant_block(donor[index], block, kept_in if index == 0 else kept_out, kept_out)
    return kept_out


def _transplant_block(donor: nn.Module, block: nn.Module, kept_in, kept_out) -> None:
    expands = hasattr(block, "conv_pwl")  # an inverted residual (else depthwise-separable)
    if expands:
        hidden = _strongest(donor.bn2.weight, block.conv_dw.weight.shape[0])
        block.conv_pw.weight.copy_(donor.conv_pw.weight[hidden][:, kept_in])
        _copy_norm(donor.bn1, block.bn1, hidden)
    else:
        hidden = kept_in
    block.conv_dw.weight.copy_(_centre(donor.conv_dw.weight[hidden], block.conv_dw.weight))
    _copy_norm(donor.bn2 if expands else donor.bn1, block.bn2 if expands else block.bn1, hidden)
    out_conv, donor_out = (
        (block.conv_pwl, donor.conv_pwl) if expands else (block.conv_pw, donor.conv_pw)
    )
    out_conv.weight.copy_(donor_out.weight[kept_out][:, hidden])
    _copy_norm(_last_norm(donor), _last_norm(block), kept_out)


def _make_identity(block: nn.Module) -> None:
    """A residual block that passes its input through unchanged (until training moves it)."""
    norm = _last_norm(block)
    norm.weight.zero_()
    norm.bias.zero_()


def _out_conv(block: nn.Module) -> nn.Conv2d:
    return block.conv_pwl if hasattr(block, "conv_pwl") else block.conv_pw


def _last_norm(block: nn.Module) -> nn.BatchNorm2d:
    return block.bn3 if hasattr(block, "bn3") else block.bn2


def _strongest(scales: torch.Tensor, count: int) -> torch.Tensor:
    """The indices of the ``count`` largest ``|scales|``, in their original order."""
    return scales.abs().topk(count).indices.sort().values


def _centre(kernels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    size, target = kernels.shape[-1], like.shape[-1]
    start = (size - target) // 2
    return kernels[..., start : start + target, start : start + target]


def _copy_norm(source: nn.BatchNorm2d, target: nn.BatchNorm2d, kept: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(target, name).copy_(getattr(source, name)[kept])
