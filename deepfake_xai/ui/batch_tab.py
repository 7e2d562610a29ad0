"""The "Analyze a batch" tab: uploaded images or a zip through :func:`deepfake_xai.analyze`.

Shows the predictions table (and its CSV), a gallery of Grad-CAM overlays, one projection
scatter per detector (coloured by prediction, and by label when the archive had ``real/`` and
``fake/`` folders), and offers the run's HTML report and a zip of all its outputs.
"""

from __future__ import annotations

import html
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from ..analysis.projection import MIN_POINTS
from ..detectors import Detector
from .errors import friendly, user_error
from .text import display_name
from .uploads import collect_uploads, prune_runs

KEEP_RUNS = 8
GALLERY_SIZE = 48
TABLE_COLUMNS = ["file", "detector", "p_fake", "verdict", "label", "error"]
# Right answers in the class colour, mistakes in a lighter shade of the predicted class's colour.
COLOURS = {
    "real": "#2b83ba",
    "fake": "#d7191c",
    "real, predicted real": "#2b83ba",
    "fake, predicted fake": "#d7191c",
    "fake, predicted real": "#abd9e9",
    "real, predicted fake": "#fdae61",
}


def build_batch_tab(
    detectors: Sequence[Detector], projections: Sequence[str], work_dir: str, concurrency_id: str
) -> None:
    """Lay out the tab inside the current ``gr.Blocks`` and wire ``/analyze_batch``."""
    names = [d.name for d in detectors]
    choices = [*projections, "none"]
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            files_in = gr.File(
                file_count="multiple",
                label="Images, or a .zip (real/ and fake/ folders give labels)",
                elem_id="batch-files",
            )
            detectors_in = gr.CheckboxGroup(names, value=names, label="Detectors")
            projection_in = gr.Dropdown(
                choices, value="tsne" if "tsne" in choices else choices[0], label="Projection"
            )
            button = gr.Button("Analyse the batch", variant="primary", elem_id="batch-button")
            summary = gr.Markdown()
        with gr.Column(scale=3):
            table = gr.Dataframe(label="Predictions", interactive=False, max_height=360)
            gallery = gr.Gallery(label="Grad-CAM overlays", columns=6, height=320)
            with gr.Row():
                scatters = {
                    d.name: gr.ScatterPlot(
                        x="x",
                        y="y",
                        color="colour",
                        color_map=COLOURS,
                        tooltip=["file", "p_fake", "colour"],
                        label=f"{display_name(d.name, d.architecture)}: projection",
                        height=320,
                    )
                    for d in detectors
                }
            with gr.Row():
                csv = gr.File(label="predictions.csv", interactive=False)
                report = gr.File(label="report.html", interactive=False)
                archive = gr.File(label="all outputs (.zip)", interactive=False)
    outputs = [summary, table, csv, gallery, *scatters.values(), report, archive]
    by_name = {d.name: d for d in detectors}

    @friendly
    def analyze_batch(files, detectors, projection, progress=gr.Progress(track_tqdm=True)):
        """``progress`` makes Gradio show the analysis' own tqdm bar in the page."""
        chosen = [by_name[name] for name in detectors or [] if name in by_name]
        return run_batch(files, chosen, projection, Path(work_dir), list(scatters))

    button.click(
        analyze_batch,
        inputs=[files_in, detectors_in, projection_in],
        outputs=outputs,
        api_name="analyze_batch",
        api_description="Predictions, overlays, projections and a report for a set of images.",
        concurrency_id=concurrency_id,
    )


def run_batch(
    files: Sequence[str] | None,
    detectors: Sequence[Detector],
    projection: str,
    work_dir: Path,
    scatter_order: Sequence[str],
) -> list[Any]:
    """Analyse the uploaded ``files`` in a fresh run folder; values for every output component."""
    from ..analysis import analyze

    if not files:
        raise user_error("upload some images or a .zip first")
    if not detectors:
        raise user_error("choose at least one detector")
    work_dir.mkdir(parents=True, exist_ok=True)
    prune_runs(work_dir, KEEP_RUNS - 1)
    run_dir = work_dir / f"run-{uuid.uuid4().hex[:12]}"
    uploads = collect_uploads(files, run_dir / "uploads")
    labels = (
        dict(zip(map(str, uploads.images), uploads.labels, strict=True))
        if uploads.has_labels
        else None
    )
    result = analyze(
        [str(p) for p in uploads.images],
        detectors=list(detectors),
        explainers=("gradcam",),
        layers=("final",),
        projection=None if projection == "none" else projection,
        out=run_dir / "analysis",
        labels=labels,
        device=detectors[0].device,
        progress=True,
        report=True,
        faces=False,
    )
    root = run_dir / "uploads"
    table = _table(result.predictions, root)
    csv_path = run_dir / "predictions.csv"
    table.to_csv(csv_path, index=False)
    archive = shutil.make_archive(str(run_dir / "deepfake-xai-analysis"), "zip", result.out)
    scatters = [_scatter(result, name, root) for name in scatter_order]
    return [
        _summary(table, uploads.skipped, projection),
        table,
        str(csv_path),
        _gallery(result, detectors, root),
        *scatters,
        str(result.report_path) if result.report_path else None,
        archive,
    ]


def _file(path: str, root: Path) -> str:
    """A path as the user knows it: relative to the upload folder, without Gradio's cache dirs."""
    try:
        relative = Path(path).relative_to(root)
        return str(Path(*relative.parts[1:]))
    except ValueError:
        return Path(path).name


def _table(predictions: pd.DataFrame, root: Path) -> pd.DataFrame:
    files = [_file(p, root) for p in predictions["path"]]
    table = predictions.assign(file=files, label=predictions["label"].fillna(""))
    return table[TABLE_COLUMNS].sort_values(["file", "detector"], kind="stable")


def _gallery(result: Any, detectors: Sequence[Detector], root: Path) -> list[tuple[Any, str]]:
    """Overlays of the readable images, detector by detector, at most ``GALLERY_SIZE``."""
    rows = result.predictions[result.predictions["error"] == ""]
    items: list[tuple[Any, str]] = []
    for detector in detectors:
        for row in rows[rows["detector"] == detector.name].itertuples():
            if len(items) >= GALLERY_SIZE:
                return items
            caption = (
                f"{_file(row.path, root)} · {display_name(detector.name, detector.architecture)}: "
                f"{row.verdict} (P(fake) {row.p_fake:.0%})"
            )
            items.append((result.overlay(int(row.index), detector.name), caption))
    return items


def _scatter(result: Any, detector: str, root: Path) -> pd.DataFrame | None:
    """The projection of one detector with a colour column, or None when it was not run."""
    if detector not in result.detectors:
        return None
    try:
        points = result.projection(detector)
    except FileNotFoundError:
        return None
    verdicts = ["fake" if p >= 0.5 else "real" for p in points["p_fake"]]
    labels = points["label"].fillna("").astype(str)
    colour = [
        f"{lab}, predicted {v}" if lab else v for lab, v in zip(labels, verdicts, strict=True)
    ]
    files = [_file(p, root) for p in points["path"]]
    # no column may be called "path": gradio_client would take the plot for a file to download
    return points.drop(columns="path").assign(file=files, colour=colour)


def _summary(table: pd.DataFrame, skipped: Sequence[str], projection: str) -> str:
    """A few lines: counts, unreadable images, skipped uploads."""
    images = table["file"].nunique()
    failed = table[table["error"] != ""].drop_duplicates("file")
    lines = [f"**{images} images analysed** by {table['detector'].nunique()} detector(s)."]
    if projection != "none" and images - len(failed) < MIN_POINTS:
        lines.append(f"The projection needs at least {MIN_POINTS} readable images.")
    if len(failed):
        lines.append(f"**{len(failed)} unreadable:**")
        lines.extend(f"- {row.file}: {row.error}" for row in failed.itertuples())
    if skipped:
        lines.append(f"**{len(skipped)} files skipped:**")
        lines.extend(f"- {reason}" for reason in skipped)
    return "\n".join(html.escape(line, quote=False) for line in lines)
