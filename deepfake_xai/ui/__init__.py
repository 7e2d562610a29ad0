"""The Gradio app: :func:`build_demo` builds it from the loaded detectors, :func:`serve` runs it."""

from .demo import build_demo, serve
from .demo_models import DemoConfig, DemoModels, prepare_demo_models

__all__ = ["DemoConfig", "DemoModels", "build_demo", "prepare_demo_models", "serve"]
