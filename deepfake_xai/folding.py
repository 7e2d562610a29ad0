"""BatchNorm folded into the convolution before it, for the eager passes on CPU.

In eval mode a BatchNorm is an affine map per channel, so the convolution that feeds it can
absorb it (its weights scaled, a bias added): the network computes the same function, to float
rounding, without a normalisation layer to run forwards and backwards after each convolution.
The eager pass runs those layers where gradients are needed: a Grad-CAM below the final layer,
the pixel saliency the app checks each heatmap against, Captum's attributions (1.10-1.21x for
those calls on 2 cores, ``benchmarks/README.md``, "Engine speed: BatchNorm folding").

The detector's own network is left as it is (training needs its BatchNorms): the engine and
the Captum explainers run a folded copy (:func:`eager_network`), made once per process and
network, and made again when the network's weights change (an optimiser step,
``load_state_dict``, a move to another device). A copy whose outputs on a probe batch differ
from the network's is not used. Only networks on the CPU are folded (it was measured there).
``DEEPFAKE_XAI_FOLD=0`` turns folding off.
"""

from __future__ import annotations

import copy
import logging
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .detectors import Detector
from .runtime import switch_setting

FOLD_ENV = "DEEPFAKE_XAI_FOLD"
PROBE_TOLERANCE = 1e-3
"""Largest difference of a logit or an embedding value, relative to the largest magnitude,
that a folded copy may show on the probe batch (float rounding gives about 1e-6)."""

log = logging.getLogger(__name__)


class FoldedNormAct(nn.Module):
    """What remains of a norm-plus-activation layer (timm's ``BatchNormAct2d``) once its
    normalisation is in the convolution before it: the dropout and the activation."""

    def __init__(self, drop: nn.Module, act: nn.Module):
        super().__init__()
        self.drop = drop
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> set[str]:
    """Fold, in place, each eval-mode ``BatchNorm2d`` into the ``Conv2d`` registered just before
    it in the same parent with as many output channels (the order timm's blocks, torchvision's
    and most convnets run them in). Returns the paths of the convolutions changed; their outputs
    now are the normalised ones."""
    changed: set[str] = set()
    for prefix, parent in model.named_modules():
        conv_name, conv = None, None
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d):
                conv_name, conv = name, child
            elif conv is not None and _foldable(child, conv):
                _absorb(conv, child)
                setattr(parent, name, _remainder(child))
                changed.add(f"{prefix}.{conv_name}" if prefix else conv_name)
                conv = None
    return changed


def _foldable(norm: nn.Module, conv: nn.Conv2d) -> bool:
    kind = type(norm)
    plain = kind is nn.BatchNorm2d or kind.__name__ == "BatchNormAct2d"
    return (
        plain
        and isinstance(norm, nn.BatchNorm2d)
        and not norm.training
        and norm.track_running_stats
        and norm.running_mean is not None
        and norm.num_features == conv.out_channels
    )


def _absorb(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    conv.weight.mul_(scale.to(conv.weight.dtype).view(-1, 1, 1, 1))
    conv.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)


def _remainder(norm: nn.BatchNorm2d) -> nn.Module:
    if type(norm) is nn.BatchNorm2d:
        return nn.Identity()
    return FoldedNormAct(norm.drop, norm.act)


@dataclass(frozen=True)
class Folded:
    """A folded copy of a detector and the paths of the convolutions it changed."""

    detector: Detector
    changed: frozenset[str]


_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, Folded | None]] = (
    weakref.WeakKeyDictionary()
)
_LOCK = threading.Lock()


def folded(detector: Detector) -> Folded | None:
    """The process's folded copy of ``detector`` (None: folding is off, the detector is not on
    the CPU or is training, or folding finds nothing to fold or does not reproduce the
    outputs)."""
    if switch_setting(FOLD_ENV) is False or detector.device.type != "cpu":
        return None  # measured on CPU only; a GPU runs the network as it is until measured
    if detector.model.training:
        return None
    model = detector.model
    state = _weights_state(model)
    with _LOCK:
        cached = _CACHE.get(model)
        if cached is not None and cached[0] == state:
            return cached[1]
        made = _make(detector)
        _CACHE[model] = (state, made)
        return made


def eager_network(detector: Detector, read: Iterable[str] = ()) -> Detector:
    """The detector an eager pass should run: its folded copy, unless there is none or a layer
    in ``read`` (CAM layers or module paths the pass reads) is a convolution folding changed."""
    made = folded(detector)
    if made is None or not made.changed.isdisjoint(map(detector.resolve_layer, read)):
        return detector
    return made.detector


def _weights_state(model: nn.Module) -> tuple:
    """Where each weight lives and how often it was changed in place (torch counts it)."""
    tensors = [*model.parameters(), *model.buffers()]
    return tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)


def _make(detector: Detector) -> Folded | None:
    copied = copy.copy(detector)
    copied.model = copy.deepcopy(detector.model)
    changed = fold_batchnorm(copied.model)
    if not changed:
        return None
    if not _same_outputs(detector, copied):
        log.warning("%s: folding BatchNorm changed its outputs; the eager pass runs unfolded",
                    detector.name)  # fmt: skip
        return None
    return Folded(copied, frozenset(changed))


@torch.no_grad()
def _same_outputs(original: Detector, copied: Detector) -> bool:
    """Whether both give the same logits and embeddings on a seeded probe batch."""
    size = original.input_size
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(2, 3, size, size, generator=generator).to(original.device)
    for expected, got in zip(
        original.head(original.features(probe)),
        copied.head(copied.features(probe)),
        strict=True,
    ):
        scale = expected.abs().max().clamp_min(1.0)
        if not bool(((expected - got).abs().max() <= PROBE_TOLERANCE * scale).item()):
            return False
    return True
