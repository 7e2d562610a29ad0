"""deepfake-xai: tell real face photos from AI-generated ones, and show why.

The public API is re-exported here lazily, so ``import deepfake_xai`` builds no model and imports
neither timm nor gradio.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DETECTORS": "registry",
    "EXPLAINERS": "registry",
    "Registry": "registry",
    "RegistryError": "registry",
    "PluginWarning": "registry",
    "list_detectors": "api",
    "list_explainers": "api",
    "load_detector": "api",
    "ImageLoadError": "images",
    "load_image": "images",
    "VideoLoadError": "video",
    "Sampling": "video",
    "read_video": "video",
    "explain_video": "video_analysis",
    "VideoExplanation": "video_analysis",
    "Harmonization": "preprocessing",
    "Detector": "detectors",
    "TimmDetector": "detectors",
    "CheckpointError": "detectors",
    "Engine": "engine",
    "explain": "api",
    "Explanation": "engine",
    "analyze": "analysis",
    "Analyzer": "analysis",
    "AnalysisResult": "analysis",
    "audit_dataset": "audit",
    "harmonize_dataset": "audit",
    "AuditReport": "audit",
    "discover": "data",
    "train": "training",
    "TrainConfig": "training",
    "evaluate": "evaluation",
    "generate_dataset": "synthetic",
    "build_demo": "ui",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'deepfake_xai' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
