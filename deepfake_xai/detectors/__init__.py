"""Detectors: the base class, checkpoints, and the built-in timm detectors (registered here)."""

from .base import (
    LABELS,
    Detector,
    DeviceUnavailableError,
    NonFiniteOutputError,
    UntrainedDetectorWarning,
    autocast_dtype,
    resolve_device,
    warn_if_untrained,
)
from .checkpoint import CheckpointError
from .timm import EfficientNetB0, EfficientNetLite0, MobileNetV2, TimmDetector
from .weights import PretrainedWeightsUnavailable

__all__ = [
    "LABELS",
    "CheckpointError",
    "Detector",
    "DeviceUnavailableError",
    "EfficientNetB0",
    "EfficientNetLite0",
    "MobileNetV2",
    "NonFiniteOutputError",
    "PretrainedWeightsUnavailable",
    "TimmDetector",
    "UntrainedDetectorWarning",
    "autocast_dtype",
    "resolve_device",
    "warn_if_untrained",
]
