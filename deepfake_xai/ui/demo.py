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
from . import legend, outcome
from .about_tab import build_about_tab
from .batch_tab import KEEP_RUNS, build_batch_tab
from .demo_models import DemoConfig, resolve_models
from .example_files import captioned, example_folder, folder_examples
from .inspect_tab import ABOUT_TAB, KEEP_DOWNLOADS, build_inspect_tab

TITLE = "deepfake-xai: is this face real, and why does the detector think so?"
MODEL_GROUP = "detectors"
QUEUE_SIZE = 32  # requests waiting for the detectors (the one running is not counted)
MAX_UPLOAD = "200mb"
CACHE_SECONDS = (3600, 7200)  # Gradio deletes uploaded files older than 2 h, checking hourly
CSS = (
    """
.detector-slot { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px; }
.demo-banner { background: #fff4d6; color: #5c4400; border-radius: 8px; padding: 8px 12px; }
.status p, .status li, .status strong { color: #a61b1b !important; }
.status:has(p) { border-left: 4px solid #a61b1b; padding-left: 8px; }
.hint p { font-size: 0.85rem; color: var(--body-text-color-subdued); margin: 0; }
#face-note h3 { margin-top: 0; }
.legend-entries { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 0.85rem; }
.legend-entry { display: inline-flex; align-items: center; gap: 5px; }
.swatch { width: 12px; height: 12px; border-radius: 50%; display: inline-block; }
#batch-summary table { display: block; overflow-x: auto; }
#batch-summary th, #batch-summary td { white-space: nowrap; }
@media (max-width: 640px) {
  /* Narrow screens: the tables scroll sideways instead of breaking words letter by letter. */
  #batch-table table { min-width: 620px; }
  #batch-table td, #batch-table th { word-break: normal; overflow-wrap: normal; }
}
"""
    + legend.CSS
    + outcome.CSS
)
DEMO_BANNER = (
    "**Demo detectors.** These detectors were trained in a few minutes on synthetic cartoon "
    "faces with planted artifacts, to show whether heatmaps point at a known artifact (the "
    "pointing game). Their verdicts on real photos mean nothing: for real use, start the app "
    "with the shipped detector (`deepfake-xai demo`) or a checkpoint trained on real data "
    "(`deepfake-xai demo --checkpoint PATH_OR_HF_HUB_ID`, or `DEEPFAKE_XAI_CHECKPOINTS`)."
)
UPLOADS_NOTE = (
    f"Uploads stay on this server only while they are needed: Gradio deletes uploaded files "
    f"after at most {CACHE_SECONDS[1] // 3600} hours; the batch tab keeps its last {KEEP_RUNS} "
    f"runs and the inspect tab its last {KEEP_DOWNLOADS} downloads, deleting older ones, and "
    "everything when the app stops. Nothing is sent anywhere else. At most "
    f"{QUEUE_SIZE} requests wait in line; the page shows your place in it."
)


def build_demo(
    detectors: Sequence[Detector | str] | None = None,
    checkpoints: Sequence[str | os.PathLike] | None = None,
    examples: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    device: str = "auto",
    demo_config: DemoConfig | None = None,
    synthetic: bool = False,
) -> gr.Blocks:
    """The app for ``detectors`` (objects, registry names), else ``checkpoints`` (paths or
    ``hf-hub:`` ids), else ``$DEEPFAKE_XAI_CHECKPOINTS``, else the detectors shipped with the
    package, else (or with ``synthetic``) the cached synthetic demo detectors (see
    :mod:`deepfake_xai.ui.demo_models`). ``examples`` replaces the labelled examples: a folder
    (captioned by its ``sources.json``) or image paths (default: ``$DEEPFAKE_XAI_EXAMPLES`` or
    the packaged ones).
    """
    models = resolve_models(
        detectors, checkpoints, device=device, config=demo_config, synthetic=synthetic
    )
    if isinstance(examples, (str, os.PathLike)):
        shown = folder_examples(examples)
    elif examples is not None:
        shown = captioned(examples)
    else:
        shown = folder_examples(example_folder()) + captioned(models.examples)
    explainers = list_explainers("attribution")
    projections = list_explainers("projection")
    work_dir = tempfile.mkdtemp(prefix="deepfake-xai-ui-")
    faces = _faces_available()
    with gr.Blocks(
        title="deepfake-xai", analytics_enabled=False, delete_cache=CACHE_SECONDS
    ) as demo:
        gr.Markdown(f"# {TITLE}")
        if models.demo:
            gr.Markdown(DEMO_BANNER, elem_classes=["demo-banner"], elem_id="demo-banner")
        with gr.Tabs() as tabs:
            with gr.Tab("Inspect one image", id="inspect"):
                build_inspect_tab(
                    models.detectors, explainers, shown, faces, work_dir, MODEL_GROUP, tabs
                )
            with gr.Tab("Analyse a batch", id="batch"):
                build_batch_tab(models.detectors, projections, faces, work_dir, MODEL_GROUP)
            with gr.Tab("About the detectors", id=ABOUT_TAB):
                build_about_tab(models.detectors, UPLOADS_NOTE)
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
