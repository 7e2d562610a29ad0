"""Captum-backed input attributions: integrated gradients, saliency (with SmoothGrad), occlusion.

Each explainer maps a normalised batch to one heatmap per image at input resolution (the
result's only key is ``"input"``). Captum sees the detector through :class:`LogitModel`, whose
two outputs are ``[-logit, logit]``, so Captum's per-image ``target`` (0 = real, 1 = fake)
explains the right signed score even in a batch with mixed targets. Parameters stay frozen;
only the input receives gradients. Memory is bounded by ``internal_batch_size``: the most images
(originals, interpolation steps, noisy copies or occluded copies) in one forward pass.

Guided backprop is deliberately not offered: Captum's version only rewrites ``nn.ReLU``, so on
the SiLU / ReLU6 built-ins it silently equals plain gradients, and even where it works it
mostly reconstructs edges regardless of the model (Adebayo et al., 2018, "Sanity Checks for
Saliency Maps"), which is the opposite of showing why *this* detector decided.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..folding import eager_network
from ..registry import EXPLAINERS
from .base import AttributionExplainer, Heatmaps, TargetSpec, normalize_maps, resolve_targets

if TYPE_CHECKING:
    from ..detectors import Detector

Baseline = Literal["black", "blur", "mean"]
BASELINES: tuple[str, ...] = ("black", "blur", "mean")
Reduction = Literal["abs", "positive"]

BLUR_SIGMA_FRACTION = 1 / 16
"""Sigma of the ``"blur"`` baseline as a fraction of the image side (14 px at 224 px)."""


class LogitModel(nn.Module):
    """A detector as a Captum forward: ``x -> (B, 2)`` scores ``[-logit, logit]``, computed by
    its BatchNorm-folded copy where it has one (:mod:`deepfake_xai.folding`).

    Column 0 is the score of "real" and column 1 that of "fake", so Captum's ``target`` is the
    class index and target "real" explains ``-logit``.
    """

    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = eager_network(self.detector)(x).float()
        return torch.stack([-logit, logit], dim=1)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with edge replication."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).repeat(x.shape[1], 1, 1, 1)
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    rows = F.conv2d(padded, kernel.view(x.shape[1], 1, 1, -1), groups=x.shape[1])
    return F.conv2d(rows, kernel.view(x.shape[1], 1, -1, 1), groups=x.shape[1])


def make_baseline(detector: Detector, x: torch.Tensor, kind: str) -> torch.Tensor:
    """The reference image for each image of ``x``, in the detector's normalised space.

    ``"black"``: a zero pixel; ``"mean"``: each image's mean colour; ``"blur"``: the image
    blurred with sigma = side / 16, which removes the high-frequency traces generators leave.
    """
    x = x.detach()
    if kind == "black":
        mean = torch.tensor(detector.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(detector.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (-mean / std).expand_as(x)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    if kind == "blur":
        return gaussian_blur(x, sigma=max(x.shape[-2:]) * BLUR_SIGMA_FRACTION)
    raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}")


def reduce_channels(attributions: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """``(B, C, H, W)`` to ``(B, H, W)``: sum of absolute values, or positive part of the sum."""
    if reduction == "abs":
        return attributions.abs().sum(dim=1)
    if reduction == "positive":
        return attributions.sum(dim=1).clamp_min(0)
    raise ValueError(f"reduction must be 'abs' or 'positive', got {reduction!r}")


class CaptumExplainer(AttributionExplainer):
    """Shared plumbing: targets, gradient mode, chunking, channel reduction, normalisation.

    Subclasses set ``reduction`` and implement :meth:`_attribute_chunk` for at most
    ``internal_batch_size`` images.
    """

    reduction: ClassVar[Reduction] = "positive"

    def __init__(self, detector: Detector, *, internal_batch_size: int = 16):
        super().__init__(detector)
        if internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be >= 1, got {internal_batch_size}")
        self.internal_batch_size = internal_batch_size
        self.forward_model = LogitModel(detector)

    def attribute(
        self,
        inputs: torch.Tensor,
        target: TargetSpec = "fake",
        layers: Sequence[str] = ("final",),
    ) -> dict[str, Heatmaps]:
        """``{"input": Heatmaps}`` with maps ``(N, H, W)`` in [0, 1]; ``layers`` is ignored."""
        raw, targets = self.raw_attributions(inputs, target)
        maps = normalize_maps(reduce_channels(raw.float(), self.reduction))
        return {"input": Heatmaps(maps, self.name, "input", targets, self.detector.name)}

    def raw_attributions(
        self, inputs: torch.Tensor, target: TargetSpec = "fake"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Signed per-pixel, per-channel attributions ``(N, C, H, W)`` and the targets ``(N,)``.

        Works inside ``torch.inference_mode`` too: gradients are re-enabled for the input only.
        """
        if inputs.ndim != 4:
            raise ValueError(
                f"{self.name}: expected a (B, 3, H, W) batch, got {tuple(inputs.shape)}"
            )
        with torch.inference_mode(False), torch.enable_grad():
            x = inputs.detach().clone() if inputs.is_inference() else inputs.detach()
            x.requires_grad_()
            targets = self._targets(x, target)
            step = min(len(x), self.internal_batch_size)
            raw = torch.cat(
                [
                    self._attribute_chunk(x[i : i + step], targets[i : i + step], step)
                    for i in range(0, len(x), step)
                ]
            )
        return raw.detach(), targets

    def _targets(self, x: torch.Tensor, target: TargetSpec) -> torch.Tensor:
        """Class index per image; a forward pass only when some target is ``"predicted"``."""
        if isinstance(target, torch.Tensor):
            resolved = resolve_targets(target, x.new_zeros(len(x)))
            return resolved.clone() if resolved.is_inference() else resolved
        names = [target] if isinstance(target, str) else list(target)
        if "predicted" not in names:
            return resolve_targets(target, x.new_zeros(len(x)))
        with torch.no_grad():
            return resolve_targets(target, eager_network(self.detector)(x))

    def _extra_per_image(self, chunk: int) -> int:
        """How many perturbed copies of each image fit in one forward pass."""
        return max(1, self.internal_batch_size // chunk)

    def _attribute_chunk(self, x: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        raise NotImplementedError


def _check_baseline(baseline: str) -> str:
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    return baseline


@EXPLAINERS.register("integrated_gradients", aliases=("ig",))
class IntegratedGradientsExplainer(CaptumExplainer):
    """Integrated gradients from a baseline image (Sundararajan et al., 2017).

    Reduction: positive part of the channel sum. IG is signed and complete (attributions sum
    to score(x) - score(baseline)); the positive part is the evidence *for* the target, so
    "real" and "fake" give different maps (their absolute values would be identical).
    """

    name = "integrated_gradients"
    reduction = "positive"

    def __init__(
        self,
        detector: Detector,
        *,
        n_steps: int = 32,
        internal_batch_size: int = 16,
        baseline: Baseline = "black",
    ):
        super().__init__(detector, internal_batch_size=internal_batch_size)
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        self.n_steps = n_steps
        self.baseline = _check_baseline(baseline)
        from captum.attr import IntegratedGradients  # Captum is imported when it is used

        self._ig = IntegratedGradients(self.forward_model)

    def _attribute_chunk(self, x: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        return self._ig.attribute(
            x,
            baselines=make_baseline(self.detector, x, self.baseline),
            target=targets,
            n_steps=self.n_steps,
            internal_batch_size=self.internal_batch_size,
        )


@EXPLAINERS.register("saliency")
class SaliencyExplainer(CaptumExplainer):
    """Input-gradient saliency (Simonyan et al., 2014), optionally SmoothGrad-averaged.

    Reduction: sum over channels of ``|gradient|`` (the usual saliency magnitude). For a
    one-logit detector the gradient of "real" is minus that of "fake", so this map is the same
    for both targets; use integrated gradients or occlusion for class-specific evidence.
    With ``smoothgrad=True``, ``nt_samples`` noisy copies are averaged; ``noise_level`` is the
    noise standard deviation as a fraction of the pixel range (10-20 % in the SmoothGrad
    paper), and ``seed`` makes the noise reproducible.
    """

    name = "saliency"
    reduction = "abs"

    def __init__(
        self,
        detector: Detector,
        *,
        smoothgrad: bool = False,
        nt_samples: int = 16,
        noise_level: float = 0.15,
        internal_batch_size: int = 16,
        seed: int = 0,
    ):
        super().__init__(detector, internal_batch_size=internal_batch_size)
        if nt_samples < 1:
            raise ValueError(f"nt_samples must be >= 1, got {nt_samples}")
        if noise_level <= 0:
            raise ValueError(f"noise_level must be > 0, got {noise_level}")
        self.smoothgrad = smoothgrad
        self.nt_samples = nt_samples
        self.noise_level = noise_level
        self.seed = seed
        from captum.attr import NoiseTunnel, Saliency

        self._saliency = Saliency(self.forward_model)
        self._tunnel = NoiseTunnel(self._saliency)

    def _attribute_chunk(self, x: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        if not self.smoothgrad:
            return self._saliency.attribute(x, target=targets, abs=True)
        # A pixel range of 1 spans 1 / std in the normalised space.
        stdev = self.noise_level / (sum(self.detector.std) / len(self.detector.std))
        return _seeded(
            self.seed,
            x.device,
            lambda: self._tunnel.attribute(
                x,
                nt_type="smoothgrad",
                nt_samples=self.nt_samples,
                nt_samples_batch_size=self._extra_per_image(chunk),
                stdevs=stdev,
                target=targets,
                abs=True,
            ),
        )


@EXPLAINERS.register("occlusion")
class OcclusionExplainer(CaptumExplainer):
    """Occlusion (Zeiler & Fergus, 2014): slide a baseline patch and record the score drop.

    Reduction: positive part of the channel sum, i.e. how much hiding the region lowers the
    target's score. ``window`` defaults to 1/8 of the image side and ``stride`` to half the
    window; the default ``"blur"`` baseline hides detail without pasting a foreign patch.
    """

    name = "occlusion"
    reduction = "positive"

    def __init__(
        self,
        detector: Detector,
        *,
        window: int | None = None,
        stride: int | None = None,
        baseline: Baseline = "blur",
        internal_batch_size: int = 16,
    ):
        super().__init__(detector, internal_batch_size=internal_batch_size)
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 pixel, got {window}")
        if stride is not None and stride < 1:
            raise ValueError(f"stride must be >= 1 pixel, got {stride}")
        self.window = window
        self.stride = stride
        self.baseline = _check_baseline(baseline)
        from captum.attr import Occlusion

        self._occlusion = Occlusion(self.forward_model)

    def geometry(self, height: int, width: int) -> tuple[int, int]:
        """``(window, stride)`` in pixels for an input of that size."""
        side = min(height, width)
        window = self.window or max(1, side // 8)
        stride = self.stride or max(1, window // 2)
        if window > side:
            raise ValueError(f"occlusion window {window} px exceeds the {height}x{width} input")
        if stride > window:
            raise ValueError(f"occlusion stride {stride} px exceeds the window ({window} px)")
        return window, stride

    def _attribute_chunk(self, x: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        window, stride = self.geometry(*x.shape[-2:])
        return self._occlusion.attribute(
            x,
            sliding_window_shapes=(x.shape[1], window, window),
            strides=(x.shape[1], stride, stride),
            baselines=make_baseline(self.detector, x, self.baseline),
            target=targets,
            perturbations_per_eval=self._extra_per_image(chunk),
        )


def _seeded(seed: int, device: torch.device, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run ``fn`` with the global RNG seeded, restoring the caller's RNG state afterwards."""
    devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return fn()
