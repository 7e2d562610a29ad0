"""The model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

A heatmap that explains the model must change when the model's weights are destroyed. The
cascade re-draws the weights from the top (the classifier) down, one stage at a time, and the
explainer's maps on each randomised copy are compared with its maps on the intact detector. An
explainer *passes* when, with every layer randomised, its maps no longer resemble the originals
(mean rank correlation below :data:`PASS_BELOW`); one that still draws the same picture is
showing the image (edges, contrast), not the model.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..detectors import Detector

PASS_BELOW = 0.5
STAGES = 5


@dataclass(frozen=True)
class CascadeStage:
    """The top ``randomised`` of ``total`` parameter-holding modules re-drawn (top first)."""

    index: int
    randomised: int
    total: int
    deepest: str

    @property
    def label(self) -> str:
        return f"top {self.randomised}/{self.total} (down to {self.deepest})"


def parameter_modules(model: nn.Module) -> list[str]:
    """Names of the modules that hold parameters themselves, from the output back to the input
    (the reverse of registration order, which is the forward order for timm models)."""
    names = [
        name
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    ]
    return names[::-1]


def cascade(detector: Detector, stages: int = STAGES) -> list[CascadeStage]:
    """Up to ``stages`` cumulative stages: the top module alone, then growing shares of the
    rest, ending with every parameter-holding module randomised."""
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    names = parameter_modules(detector.model)
    if not names:
        raise ValueError(f"{detector.name}: the model has no parameters to randomise")
    counts = [1] + [math.ceil(len(names) * k / (stages - 1)) for k in range(1, stages)]
    counts = sorted(set(min(c, len(names)) for c in counts))
    return [CascadeStage(i, c, len(names), names[c - 1]) for i, c in enumerate(counts)]


def randomised_copies(
    detector: Detector, stages: list[CascadeStage], seed: int = 0
) -> list[tuple[CascadeStage, Detector]]:
    """For each stage, an independent copy of ``detector`` whose top modules carry random
    weights (cumulatively: each stage re-draws the previous stage's modules and more).

    Each re-drawn tensor keeps its original mean and standard deviation (a normal draw), so
    activations keep their scale and the explainer still has a signal to work with.
    """
    randomised = copy.deepcopy(detector)
    names = parameter_modules(randomised.model)
    generator = torch.Generator().manual_seed(seed)
    copies, done = [], 0
    for stage in stages:
        for name in names[done : stage.randomised]:
            _redraw(randomised.model.get_submodule(name), generator)
        done = stage.randomised
        copies.append((stage, copy.deepcopy(randomised)))
    return copies


@torch.no_grad()
def _redraw(module: nn.Module, generator: torch.Generator) -> None:
    for param in module.parameters(recurse=False):
        values = param.detach().float().cpu()
        mean = values.mean().item()
        std = values.std().item() if values.numel() > 1 else abs(mean)
        draw = torch.randn(values.shape, generator=generator) * (std or 1.0) + mean
        param.copy_(draw.to(param.device, param.dtype))
