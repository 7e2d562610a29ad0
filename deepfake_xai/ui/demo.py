"""``build_demo``: the Gradio app, built from the loaded detectors and the explainer registry.

The same app is a UI and an API: every event has an ``api_name``. Model work is serialised
through one concurrency group (CAM hooks live on the shared models), the queue is bounded, and
uploads are capped in size by :func:`serve`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from typing import Any

import gradio as gr

from ..api import list_explainers
from ..detectors import Detector
from .about_tab import build_about_tab
from .batch_tab import build_batch_tab
from .demo_models import DemoConfig, resolve_models
from .inspect_tab import build_inspect_tab

TITLE = "deepfake-xai: is this face real, and why does the detector think so?"
MODEL_GROUP = "detectors"
QUEUE_SIZE = 32
MAX_UPLOAD = "200mb"
CSS = """
.detector-slot { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px; }
.demo-banner { background: #fff4d6; color: #5c4400; border-radius: 8px; padding: 8px 12px; }
"""
DEMO_BANNER = (
    "**Demo detectors.** These detectors were trained in a few minutes on synthetic cartoon "
    "faces with planted artifacts, so the app can run anywhere offline. Their verdicts on real "
    "photos mean nothing: for real use, start the app with a checkpoint trained on real data "
    "(`deepfake-xai demo --checkpoint PATH_OR_HF_HUB_ID`, or `DEEPFAKE_XAI_CHECKPOINTS`)."
)


def build_demo(
    detectors: Sequence[Detector | str] | None = None,
    checkpoints: Sequence[str | os.PathLike] | None = None,
    examples: Sequence[str | os.PathLike] | None = None,
    *,
    device: str = "auto",
    demo_config: DemoConfig | None = None,
) -> gr.Blocks:
    """The app for ``detectors`` (objects, registry names), else ``checkpoints`` (paths or
    ``hf-hub:`` ids), else ``$DEEPFAKE_XAI_CHECKPOINTS``, else the cached demo detectors
    (trained on first use, see :mod:`deepfake_xai.ui.demo_models`).
    """
    models = resolve_models(detectors, checkpoints, device=device, config=demo_config)
    example_paths = [os.fspath(p) for p in (examples if examples is not None else models.examples)]
    explainers = list_explainers("attribution")
    projections = list_explainers("projection")
    work_dir = tempfile.mkdtemp(prefix="deepfake-xai-ui-")
    with gr.Blocks(
        title="deepfake-xai", analytics_enabled=False, delete_cache=(3600, 7200)
    ) as demo:
        gr.Markdown(f"# {TITLE}")
        if models.demo:
            gr.Markdown(DEMO_BANNER, elem_classes=["demo-banner"], elem_id="demo-banner")
        with gr.Tab("Inspect one image", id="inspect"):
            build_inspect_tab(
                models.detectors, explainers, example_paths, _faces_available(), MODEL_GROUP
            )
        with gr.Tab("Analyze a batch", id="batch"):
            build_batch_tab(models.detectors, projections, work_dir, MODEL_GROUP)
        with gr.Tab("About the detectors", id="about"):
            build_about_tab(models.detectors)
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    weakref.finalize(demo, shutil.rmtree, work_dir, ignore_errors=True)
    return demo


def serve(demo: gr.Blocks, **launch_kwargs: Any) -> Any:
    """``demo.launch`` with the app's upload cap, theme and styles (overridable by keyword)."""
    settings: dict[str, Any] = {
        "max_file_size": MAX_UPLOAD,
        "theme": gr.themes.Soft(),
        "css": CSS,
        "footer_links": ["api"],
    }
    settings.update(launch_kwargs)
    return demo.launch(**settings)


def _faces_available() -> bool:
    from ..faces import faces_available

    return faces_available()
