"""The Gradio app: :func:`build_demo` builds it from the loaded detectors, :func:`serve` runs it.

Gradio is imported on first use, so that the upload check's child process
(:mod:`deepfake_xai.ui.upload_check`) starts without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .demo import build_demo, serve
    from .demo_models import DemoConfig, DemoModels, prepare_demo_models

__all__ = ["DemoConfig", "DemoModels", "build_demo", "prepare_demo_models", "serve"]
_HOMES = {"build_demo": ".demo", "serve": ".demo"} | dict.fromkeys(
    ("DemoConfig", "DemoModels", "prepare_demo_models"), ".demo_models"
)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name], __name__), name)
