"""``build_demo``: the Gradio app, built from the loaded detectors and the explainer registry.

The same app is a UI and an API: every event has an ``api_name``. Model work is serialised
through one concurrency group (CAM hooks live on the shared models), the queue is bounded and is
the only way in (no direct REST calls around it), every handler that reads an upload runs in it,
and uploads are capped in size by :func:`serve`. The app's work folder is deleted when it stops,
also on SIGTERM.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from ..api import list_explainers
from ..detectors import Detector
from . import legend, outcome
from .about_tab import build_about_tab
from .batch_tab import KEEP_RUNS, KEEP_SECONDS, build_batch_tab
from .demo_models import CHECKPOINTS_ENV, DemoConfig, resolve_models
from .example_files import captioned, example_folder, folder_examples
from .inspect_tab import ABOUT_TAB, INSPECT_BATCH, KEEP_DOWNLOADS, build_inspect_tab
from .uploads import MAX_TOTAL_BYTES, UploadLimits
from .video_tab import CSS as VIDEO_CSS
from .video_tab import build_video_tab

TITLE = "deepfake-xai: is this face real, and why does the detector think so?"
MODEL_GROUP = "detectors"
CHECK_GROUP = "upload-checks"  # decoding a dropped file before "Analyse"
QUEUE_SIZE = 32  # requests waiting for the detectors (the one running is not counted)
MAX_UPLOAD = "200mb"
log = logging.getLogger(__name__)
CACHE_SECONDS = (3600, 7200)  # Gradio deletes uploaded files older than 2 h, checking hourly


def _summary_rows(most: int = 12) -> str:
    """CSS giving a transposed summary table as many grid rows as the table has columns."""
    return "".join(
        f"  #batch-summary table:has(tr > :nth-child({n}):last-child) "
        f"{{ grid-template-rows: repeat({n}, auto); }}\n"
        for n in range(2, most + 1)
    )


def _column_widths(table: str, widths: Sequence[int]) -> str:
    """CSS fixing a Gradio Dataframe's column widths in pixels (header and virtual rows)."""
    rules = []
    for n, width in enumerate(widths, start=1):
        cells = f"{table} th:nth-child({n}), {table} .virtual-row > .body-cell:nth-child({n})"
        rules.append(
            f"  {cells} {{ width: {width}px !important; min-width: {width}px !important; "
            f"max-width: {width}px !important; flex: 0 0 {width}px !important; }}\n"
        )
    return (
        f"  {table} table, {table} .virtual-body {{ width: max-content !important; }}\n"
        + "".join(rules)
    )


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
/* The About tab's side-by-side tables scroll sideways rather than break numbers ("0.9 53"). */
#about-comparison table { display: block; overflow-x: auto; width: max-content; max-width: 100%; }
#about-comparison th, #about-comparison td { white-space: nowrap; }
#about-comparison td:first-child { white-space: normal; word-break: normal; overflow-wrap: normal;
  min-width: 8em; }
/* The feature map takes the height its (wrapping) label leaves, instead of pushing its x axis
   out of the box. */
.projection.block { display: flex; flex-direction: column; }
.projection .vega-embed { flex: 1 1 auto; height: auto !important; min-height: 0; }
.projection .mark-symbol path { stroke-width: 2.5px; }  /* every point, even a pale one, shows */
/* Table cells wrap at spaces and hyphens, never mid-word ("P(fak e)", "0 . 9 5"). */
#batch-table th *, #batch-table .body-cell * { word-break: normal !important;
  overflow-wrap: normal !important; }
@media (max-width: 640px) {
  /* Narrow screens. Tab labels wrap onto two lines, so every tab stays in the bar (Gradio
     moves the ones that do not fit into a "..." menu). */
  .tab-wrapper, .tab-container { height: auto !important; }
  .tab-container button { white-space: normal !important; max-width: 7.5em; height: auto !important;
    line-height: 1.15; padding: 4px 8px !important; text-align: center; }
  /* Summary tables are transposed (one column per row of the table: a label column, then the
     values) instead of running off the screen; cells wrap at spaces, never mid-word. */
  #batch-summary table { display: grid; grid-auto-flow: column; overflow-x: auto; }
  #batch-summary thead, #batch-summary tbody, #batch-summary tr { display: contents; }
  #batch-summary th, #batch-summary td { white-space: normal; word-break: normal;
    overflow-wrap: normal; text-align: left; padding: 4px 8px; }
  /* The predictions table scrolls sideways at fixed column widths. */
"""
    + _summary_rows()
    + _column_widths("#batch-table", (150, 130, 120, 84, 96, 64, 64, 240))
    + "}\n"
    + legend.CSS
    + outcome.CSS
    + VIDEO_CSS
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
    f"after at most {CACHE_SECONDS[1] // 3600} hours; a batch's results are deleted when your "
    f"next batch replaces them, when you close the page or after {KEEP_SECONDS // 3600} hours "
    f"(and at most the last {KEEP_RUNS} batches are kept); the inspect tab keeps its last "
    f"{KEEP_DOWNLOADS} downloads; everything is deleted when the app stops. One batch may "
    f"unpack at most {MAX_TOTAL_BYTES // 2**30} GiB from its .zip files. Nothing is sent "
    f"anywhere else. At most {QUEUE_SIZE} requests wait in line; the page shows your place in it."
)


def build_demo(
    detectors: Sequence[Detector | str] | None = None,
    checkpoints: Sequence[str | os.PathLike] | None = None,
    examples: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    device: str = "auto",
    demo_config: DemoConfig | None = None,
    synthetic: bool = False,
    limits: UploadLimits | None = None,
    inspect_batch: int = INSPECT_BATCH,
) -> gr.Blocks:
    """The app for ``detectors`` (objects, registry names), else ``checkpoints`` (paths or
    ``hf-hub:`` ids), else ``$DEEPFAKE_XAI_CHECKPOINTS``, else the detectors shipped with the
    package, else (or with ``synthetic``) the cached synthetic demo detectors (see
    :mod:`deepfake_xai.ui.demo_models`). ``examples`` replaces the labelled examples: a folder
    (captioned by its ``sources.json``) or image paths (default: ``$DEEPFAKE_XAI_EXAMPLES`` or
    the packaged ones). ``limits`` bounds what one request and one session may unpack and what
    checking a dropped file may cost (default :class:`~deepfake_xai.ui.uploads.UploadLimits`).
    Up to ``inspect_batch`` Inspect requests waiting in the queue are answered as one batch.

    The Inspect and Batch tabs run the first detector alone unless asked to compare: a visitor
    gets one verdict at one detector's speed. Detectors the caller names (``detectors``,
    ``checkpoints`` or the variable) are the comparison asked for: all of them run.
    """
    models = resolve_models(
        detectors, checkpoints, device=device, config=demo_config, synthetic=synthetic
    )
    named = bool(detectors or checkpoints or os.environ.get(CHECKPOINTS_ENV, "").strip(" ,"))
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
                warm_up = build_inspect_tab(
                    models.detectors, explainers, shown, faces, work_dir, MODEL_GROUP, tabs,
                    limits=limits, check_group=CHECK_GROUP, max_batch=inspect_batch,
                    compare_by_default=named,
                )  # fmt: skip
            with gr.Tab("Analyse a batch", id="batch"):
                build_batch_tab(
                    models.detectors, projections, faces, work_dir, MODEL_GROUP,
                    limits=limits, check_group=CHECK_GROUP, compare_by_default=named,
                )  # fmt: skip
            with gr.Tab("Analyse a video", id="video"):
                build_video_tab(
                    models.detectors, faces, MODEL_GROUP, max_upload=MAX_UPLOAD, limits=limits,
                    check_group=CHECK_GROUP,
                )  # fmt: skip
            with gr.Tab("About the detectors", id=ABOUT_TAB):
                build_about_tab(models.detectors, UPLOADS_NOTE)
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE, api_open=False)
    weakref.finalize(demo, shutil.rmtree, work_dir, ignore_errors=True)
    atexit.register(_delete_cached, demo.temp_file_sets)  # at exit only: apps may share them
    demo.work_dir = work_dir  # where runs and downloads live (deleted when the app stops)
    demo.warm_up = warm_up  # serve() runs it before the first visitor comes
    return demo


def serve(demo: gr.Blocks, *, warm_up: bool = True, **launch_kwargs: Any) -> Any:
    """``demo.launch`` with the app's upload cap, theme and styles (overridable by keyword),
    after answering one drawn face with the detectors a visitor gets at first (``warm_up``),
    so that the first visitor does not pay for what a process does once (see
    :func:`~deepfake_xai.ui.inspect_tab.warm_up`)."""
    settings: dict[str, Any] = {
        "max_file_size": MAX_UPLOAD,
        "theme": gr.themes.Soft(),
        "css": CSS,
        "footer_links": ["api"],
    }
    settings.update(launch_kwargs)
    if not settings.get("prevent_thread_lock"):
        _stop_on_sigterm()
    if warm_up and getattr(demo, "warm_up", None):
        log.info("warmed up in %.1f s", demo.warm_up())
    return demo.launch(**settings)


def _delete_cached(cached: Sequence[set[str]]) -> None:
    """Delete every file Gradio cached for an app (uploads, outputs) and the folders left
    empty: Gradio does this itself only when its server shuts down in time."""
    for files in cached:
        for file in list(files):
            path = Path(file)
            with contextlib.suppress(OSError):
                path.unlink()
                path.parent.rmdir()  # Gradio keeps each file in a folder of its own


def _stop_on_sigterm() -> None:
    """Make SIGTERM stop the app as Ctrl-C does: the server closes (Gradio deletes its uploads)
    and the interpreter exits normally (the work folder's finaliser runs), instead of dying
    with everything left on disk."""
    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def _faces_available() -> bool:
    from ..faces import faces_available

    return faces_available()
