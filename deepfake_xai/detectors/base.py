"""The Detector: one model plus everything needed to use it correctly."""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..images import ImageSource, load_image
from ..preprocessing import Harmonization, to_uint8_tensor

if TYPE_CHECKING:
    from ..reliability import Reliability

LABELS = ("real", "fake")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NonFiniteOutputError(RuntimeError):
    """A detector produced NaN or infinite logits, so no verdict can be given."""


class UntrainedDetectorWarning(UserWarning):
    """A detector built from the registry rather than loaded from a checkpoint: it was never
    trained to tell real from fake, so its verdicts mean nothing."""


class DeviceUnavailableError(ValueError):
    """The requested device does not exist on this machine."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; an explicit device must exist.

    Raises:
        DeviceUnavailableError: e.g. ``"cuda"`` on a machine without a usable GPU.
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceUnavailableError(
            f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps"
        ) from exc
    _check_available(resolved)
    return resolved


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _check_available(device: torch.device) -> None:
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only"
            raise DeviceUnavailableError(
                f"device {str(device)!r} requested, but no CUDA GPU is usable here (torch "
                f"{torch.__version__} is {built}); use --device cpu or auto"
            )
        if device.index is not None and device.index >= count:
            raise DeviceUnavailableError(
                f"device {str(device)!r} requested, but only {count} CUDA GPU(s) exist "
                f"(cuda:0..cuda:{count - 1})"
            )
    elif device.type == "mps" and not _mps_available():
        raise DeviceUnavailableError(
            "device 'mps' requested, but Apple's MPS backend is not available here; use cpu"
        )


MEAN_RANGE = (-1.0, 2.0)  # pixels are in [0, 1]
STD_RANGE = (1e-3, 10.0)  # 1/255 (inputs in 0..255) is fine; 1e-38 blows every pixel up


def normalization_problems(mean: object, std: object) -> list[str]:
    """What is wrong with a mean/std pair (three finite numbers each, within
    :data:`MEAN_RANGE` and :data:`STD_RANGE`); [] if nothing."""
    problems = []
    for label, values, (low, high) in (("mean", mean, MEAN_RANGE), ("std", std, STD_RANGE)):
        numbers = _three_numbers(values)
        if numbers is None:
            problems.append(f"{label} must be three numbers (one per RGB channel), got {values!r}")
        elif not all(math.isfinite(v) for v in numbers):
            problems.append(f"{label} must be finite, got {list(numbers)}")
        elif label == "std" and min(numbers) <= 0:
            problems.append(f"std must be positive (it divides the pixels), got {list(numbers)}")
        elif not all(low <= v <= high for v in numbers):
            problems.append(f"{label} must be in [{low:g}, {high:g}], got {list(numbers)}")
    return problems


def _three_numbers(values: object) -> tuple[float, ...] | None:
    """``values`` as three floats (a list, tuple, array or tensor of numbers), else None."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        return None
    try:
        items = list(values)
    except TypeError:
        return None
    if len(items) != 3 or any(isinstance(v, (str, bytes, bool)) for v in items):
        return None
    try:
        return tuple(float(v) for v in items)
    except (TypeError, ValueError):
        return None


def check_finite_logits(detector: str, logits: np.ndarray) -> None:
    """Refuse to turn NaN or infinite logits into probabilities (and so into verdicts)."""
    bad = ~np.isfinite(logits)
    if bad.any():
        raise NonFiniteOutputError(
            f"{detector}: produced NaN or infinite logits for {int(bad.sum())} of {bad.size} "
            "images, so it gives no verdict; its weights or preprocessing are broken (load it "
            "again from a checkpoint, which is checked for that)"
        )


def autocast_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype for ``device``: bf16 where the GPU supports it, else fp16; bf16 off
    CUDA (the CPU)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


_BUILD_LOCK = threading.RLock()


class Detector:
    """A binary real/fake classifier with one logit (sigmoid = P(fake)).

    Subclasses (or models following timm's protocol: ``forward_features``,
    ``forward_head(x, pre_logits=True)`` and ``get_classifier()``) provide :meth:`features`
    and :meth:`head`. ``cam_layers`` maps names such as ``"final"`` and ``"mid"`` to module
    paths inside :attr:`model`; ``"final"`` must be the layer whose output :meth:`features`
    returns.

    ``model`` may also be a callable that builds the network: it is called the first time
    :attr:`model` is used (:mod:`deepfake_xai.detectors.deferred` loads checkpoints so, since
    their ONNX Runtime pass needs no torch network). Until then ``served_head``, where set,
    computes :meth:`head`, and ``known_digests`` holds digests of the weights as loaded.
    """

    labels: tuple[str, str] = LABELS

    def __init__(
        self,
        model: nn.Module | Callable[[], nn.Module],
        *,
        name: str,
        architecture: str,
        cam_layers: Mapping[str, str],
        harmonization: Harmonization | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        metadata: Mapping[str, Any] | None = None,
        device: str | torch.device = "auto",
    ):
        if "final" not in cam_layers:
            raise ValueError(
                f"{name}: cam_layers must name a 'final' layer, got {dict(cam_layers)}"
            )
        problems = normalization_problems(mean, std)
        if problems:
            raise ValueError(f"{name}: " + "; ".join(problems))
        self._model: nn.Module | None = None
        self._device = resolve_device(device)
        self._channels_last = False
        self.served_head: nn.Module | None = None
        self.known_digests: dict[str, str] = {}
        self.name = name
        self.architecture = architecture
        self.cam_layers = dict(cam_layers)
        self.harmonization = harmonization or Harmonization()
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.checkpoint: str | None = None  # where the weights were loaded from, if anywhere
        self.fingerprint: str | None = None  # SHA-256 (12 hex digits) of that checkpoint file
        self.reliability: Reliability | None = None  # fitted statistics: ood_score, "uncertain"
        self._build_model: Callable[[], nn.Module] | None = model
        if isinstance(model, nn.Module):  # a network given is checked and placed now
            self._build_model = lambda: model
            self._build()

    # -- the network ----------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        """The torch network, built on first use where the detector was given a builder."""
        if self._model is None:
            # outside inference mode even when first needed inside it (a predict), so that
            # the parameters are ordinary tensors that later passes with gradients can use
            with _BUILD_LOCK, torch.inference_mode(False):
                if self._model is None:
                    self._build()
        return self._model

    @model.setter
    def model(self, model: nn.Module) -> None:
        self._model = model
        self._build_model = None

    @property
    def is_built(self) -> bool:
        """Whether the torch network exists (False until a deferred detector needs it)."""
        return self._model is not None

    def _build(self) -> None:
        """Build, check and place the network, then publish it (other threads read
        ``_model`` without the lock, so it is set last)."""
        model = self._build_model()
        for path in self.cam_layers.values():
            self._submodule(model, path)
        model.eval().requires_grad_(False).to(self._device)
        if self._channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model

    def use_channels_last(self) -> None:
        """Store the network's weights channels_last (now, or when it is built)."""
        self._channels_last = True
        if self.is_built and not all(
            p.is_contiguous(memory_format=torch.channels_last)  # walking costs ~5 ms
            for p in self.model.parameters()
            if p.ndim == 4
        ):
            self.model.to(memory_format=torch.channels_last)

    # -- model protocol -------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map ``(B, C, h, w)`` of normalised input ``x``."""
        return self.model.forward_features(x)

    def head(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logit (B,), embedding (B, D))`` from the final feature map."""
        if not self.is_built and self.served_head is not None:
            return self.served_head(fmap)
        embedding = self.model.forward_head(fmap, pre_logits=True)
        logit = self.model.get_classifier()(embedding)
        return logit.reshape(-1), embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B,)`` of a normalised float batch."""
        return self.head(self.features(x))[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    # -- inputs ---------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        return self.harmonization.image_size

    @property
    def device(self) -> torch.device:
        if not self.is_built:
            return self._device
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> Detector:
        resolved = resolve_device(device)
        if self.is_built:
            self.model.to(resolved)
        else:
            self._device = resolved
            if self.served_head is not None:
                self.served_head.to(resolved)
        return self

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` (or float in [0, 1]) to the model's normalised float input."""
        device = self.device
        batch = batch.to(device, non_blocking=True)
        x = batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        return (x - mean) / std

    def prepare(self, images: Sequence[ImageSource]) -> torch.Tensor:
        """Decode and harmonise images into a uint8 ``(N, 3, S, S)`` batch on the CPU."""
        return torch.stack(
            [to_uint8_tensor(self.harmonization.apply(load_image(i))) for i in images]
        )

    def _batches(self, images: Sequence[ImageSource] | torch.Tensor, batch_size: int):
        if isinstance(images, torch.Tensor):
            if images.ndim == 3:
                images = images.unsqueeze(0)
            for start in range(0, len(images), batch_size):
                yield self.normalize(images[start : start + batch_size])
            return
        if not isinstance(images, (list, tuple)):
            images = [images]
        for start in range(0, len(images), batch_size):
            yield self.normalize(self.prepare(images[start : start + batch_size]))

    # -- predictions ----------------------------------------------------------------------
    def predict_proba(
        self, images: Sequence[ImageSource] | torch.Tensor, batch_size: int = 32
    ) -> np.ndarray:
        """P(fake) per image, shape ``(N,)``; accepts paths, PIL images, arrays or a batch.

        Raises:
            NonFiniteOutputError: the model produced NaN or infinite logits.
        """
        with torch.inference_mode():
            out = [self(x).float().cpu() for x in self._batches(images, batch_size)]
        logits = torch.cat(out).numpy() if out else np.zeros(0, np.float32)
        check_finite_logits(self.name, logits)
        return torch.sigmoid(torch.from_numpy(logits)).numpy()

    def embed(
        self, images: Sequence[ImageSource] | torch.Tensor, batch_size: int = 32
    ) -> np.ndarray:
        """Pooled penultimate embeddings, shape ``(N, D)``."""
        with torch.inference_mode():
            out = [
                self.head(self.features(x))[1].float().cpu()
                for x in self._batches(images, batch_size)
            ]
        return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)

    # -- layers ---------------------------------------------------------------------------
    def resolve_layer(self, layer: str) -> str:
        """A CAM layer name (``final``, ``mid``, ...) or module path to a module path."""
        return self.cam_layers.get(layer, layer)

    def module(self, layer: str) -> nn.Module:
        """The module for a named CAM layer or a dotted module path."""
        return self._submodule(self.model, layer)

    def _submodule(self, model: nn.Module, layer: str) -> nn.Module:
        try:
            return model.get_submodule(self.resolve_layer(layer))
        except AttributeError:
            raise ValueError(
                f"{self.name}: no layer {layer!r}; use one of {sorted(self.cam_layers)} "
                "or a module path from detector.model.named_modules()"
            ) from None

    # -- description and checkpoints ------------------------------------------------------
    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild and use this detector, stored in its checkpoint."""
        from .. import __version__

        provider = plugin_provider(self.name)
        return {
            "detector": self.name,
            "architecture": self.architecture,
            "labels": list(self.labels),
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "harmonization": self.harmonization.to_dict(),
            "cam_layers": self.cam_layers,
            "package_version": __version__,
            **({"provided_by": provider} if provider else {}),
            **self.metadata,
        }

    def apply_config(self, config: Mapping[str, Any]) -> None:
        """Adopt the preprocessing and metadata stored in a checkpoint."""
        self.harmonization = Harmonization.from_dict(config["harmonization"])
        self.mean = tuple(float(m) for m in config["mean"])
        self.std = tuple(float(s) for s in config["std"])
        self.cam_layers = dict(config.get("cam_layers", self.cam_layers))
        if self.is_built:  # a deferred network checks its layers when it is built
            for path in self.cam_layers.values():
                self.module(path)
        reserved = {
            "detector",
            "architecture",
            "labels",
            "input_size",
            "mean",
            "std",
            "harmonization",
            "cam_layers",
            "package_version",
            "provided_by",
            "format",
            "reliability",
        }
        self.metadata = {k: v for k, v in config.items() if k not in reserved}

    def save(self, path: str | os.PathLike, **metadata: Any) -> Path:
        """Write a safetensors checkpoint; ``metadata`` (training, metrics...) is stored too."""
        from .checkpoint import save_checkpoint

        self.metadata.update(metadata)
        return save_checkpoint(self, path)

    @classmethod
    def load(
        cls,
        source: str | os.PathLike,
        *,
        device: str | torch.device = "auto",
        allow_pickle: bool = False,
        detector: str | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> Detector:
        """Load a checkpoint: a ``.safetensors`` path or ``hf-hub:org/repo[@revision]``."""
        from .checkpoint import load_checkpoint

        return load_checkpoint(
            source, device=device, allow_pickle=allow_pickle, detector=detector, cache_dir=cache_dir
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, architecture={self.architecture!r}, "
            f"input_size={self.input_size}, device={self.device})"
        )


def warn_if_untrained(detector: Detector, *, stacklevel: int = 2) -> None:
    """Emit the one :class:`UntrainedDetectorWarning` every front door shares, unless the
    detector's weights came from a checkpoint."""
    if detector.checkpoint is not None:
        return
    weights = "ImageNet" if detector.metadata.get("pretrained") else "random"
    warnings.warn(
        f"{detector.name}: built from the registry with {weights} weights, not trained to tell "
        "real from fake faces, so its verdicts mean nothing; load a checkpoint instead (train "
        "one with `deepfake-xai train`)",
        UntrainedDetectorWarning,
        stacklevel=stacklevel + 1,
    )


def plugin_provider(name: str) -> dict[str, str] | None:
    """``{"distribution", "version"}`` of the plugin that registers detector ``name``; None for
    built-ins and unregistered names. Stored in checkpoints, so loading one without its plugin
    can say what to install."""
    from ..registry import DETECTORS, RegistryError

    try:
        entry = DETECTORS.entry(name)
    except RegistryError:
        return None
    if not entry.is_plugin:
        return None
    return {"distribution": entry.source, "version": entry.version or ""}
