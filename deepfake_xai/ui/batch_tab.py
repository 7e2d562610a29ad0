"""The "Analyse a batch" tab: many images or a zip, faces found first, then
:func:`deepfake_xai.analyze`; the results are on the page.

Stages, each shown in the progress bar: decoding and finding faces (each image's largest face is
framed like the training photos; an image with no face gets no verdict), the detectors, the
projection, the report. The page shows a summary (per detector its model version and how many
images it called fake, showed no signs of generation or was uncertain about and, with labels,
accuracy, ROC AUC and a confusion matrix; per source too when the images come from several), the
predictions table (outcome, P(fake), distance score and why uncertain), heatmap overlays and one
projection per detector whose points open their image and heatmap when selected. The CSV adds
whether each verdict could be relied on and the model version. An upload's source is found from
its path inside its zip, the zip's name first, as
:func:`deepfake_xai.analysis.inputs.folder_sources` finds it in a folder; an image uploaded on
its own has none.
"""

from __future__ import annotations

import html
import os
import shutil
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import gradio as gr
import pandas as pd

from ..analysis.inputs import folder_sources
from ..analysis.outcomes import EXPLAINED, NO_STATISTICS, SHORT, p_fake_text
from ..analysis.projection import MIN_POINTS
from ..analysis.store import UNREADABLE
from ..detectors import Detector
from ..images import ImageLoadError, load_image
from .errors import friendly, user_error
from .example_files import label_from_name
from .text import METHOD_NAMES, display_name, plain
from .upload_check import CHECKS_AT_ONCE, check_images
from .uploads import UploadLimits, collect_uploads, prune_runs, size_text

KEEP_RUNS = 8  # run folders kept overall, whichever session made them
KEEP_SECONDS = 7200  # a session's results are deleted this long after its last batch
GALLERY_SIZE = 48
NO_FACE = "no face found: no verdict"
COLOUR = "label and verdict"
P_FAKE = "P(fake)"
DISTANCE = "distance"
TABLE_COLUMNS = ["file", "detector", "verdict", P_FAKE, DISTANCE, "label", "faces", "note"]
CSV_COLUMNS = [*TABLE_COLUMNS, "reliable", "model version"]  # the download adds these
FOUND = SHORT["real"]
UNCERTAIN = SHORT["uncertain"]
# Right answers in the class colour, each kind of mistake in its own strong colour (purple: a
# fake the detector missed; orange: a real photo flagged), uncertain (whatever the label) in grey.
COLOURS = {
    FOUND: "#2b83ba",
    "said fake": "#d7191c",
    f"real, {FOUND}": "#2b83ba",
    "fake, said fake": "#d7191c",
    f"fake, {FOUND}": "#6a3d9a",
    "real, said fake": "#e66101",
    UNCERTAIN: "#8c8c8c",
}
PROJECTION_NAMES = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}


@dataclass
class Prepared:
    """What the face step made of the uploads: what to analyse and what to report."""

    analysed: list[Path] = field(default_factory=list)  # the files given to analyze
    shown: dict[str, str] = field(default_factory=dict)  # analysed path -> name shown
    labels: dict[str, str] = field(default_factory=dict)  # analysed path -> real / fake
    sources: dict[str, str] = field(default_factory=dict)  # analysed path -> source ("": none)
    faces: dict[str, int] = field(default_factory=dict)  # name shown -> faces found
    no_face: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def build_batch_tab(
    detectors: Sequence[Detector],
    projections: Sequence[str],
    faces: bool,
    work_dir: str,
    concurrency_id: str,
    *,
    limits: UploadLimits | None = None,
    check_group: str = "upload-checks",
    compare_by_default: bool = False,
) -> None:
    """Lay out the tab inside the current ``gr.Blocks`` and wire ``/analyze_batch``; dropped
    files are checked in the queue's ``check_group`` within ``limits``. The first detector
    alone is chosen at first (every one with ``compare_by_default``), so that loading more
    detectors does not multiply a batch's time unasked; only the chosen detectors' feature
    maps show."""
    limits = limits or UploadLimits()
    names = [d.name for d in detectors]
    first_chosen = names if compare_by_default else names[:1]
    choices = [(PROJECTION_NAMES.get(p, p), p) for p in projections] + [("none", "none")]
    with gr.Row():
        with gr.Column(scale=2, min_width=300):
            files_in = gr.File(
                file_count="multiple",
                label="Images, or a .zip of images",
                elem_id="batch-files",
            )
            status = gr.Markdown(
                label="Status: refused files", elem_id="batch-status", elem_classes=["status"]
            )
            find_first = gr.Checkbox(
                value=faces,
                interactive=faces,
                label="Find the face first",
                info="Each image's largest face is analysed; images without a face get no verdict.",
            )
            detectors_in = gr.CheckboxGroup(
                [(display_name(d.name, d.architecture), d.name) for d in detectors],
                value=first_chosen,
                label="Detectors",
                info="Which loaded detectors to run; tick several to compare them side by side "
                "(each one adds its own time)."
                if len(names) > 1
                else "Which loaded detectors to run.",
                elem_id="batch-detectors",
            )
            projection_in = gr.Dropdown(
                choices,
                value="tsne" if "tsne" in projections else choices[0][1],
                label="Map of the detectors' features",
                info="Places images the detector sees as similar close together (needs at least "
                f"{MIN_POINTS} faces). t-SNE keeps neighbours, PCA is fastest.",
            )
            button = gr.Button("Analyse the batch", variant="primary", elem_id="batch-button")
            gr.Markdown(
                "Labels (for accuracy): folders `real/` and `fake/` inside a .zip, or file names "
                "starting `real_` / `fake_`.",
                elem_classes=["hint"],
            )
        with gr.Column(scale=5):
            summary = gr.Markdown(label="Summary", elem_id="batch-summary")
            table = gr.Dataframe(
                label="Predictions (one row per image and detector)",
                interactive=False,
                max_height=360,
                wrap=True,
                column_widths=["15%", "14%", "11%", "10%", "11%", "8%", "8%", "23%"],
                elem_id="batch-table",
            )
            gallery = gr.Gallery(
                label="Heatmaps (Grad-CAM, last layer) of the analysed faces",
                columns=6,
                height=300,
                elem_id="batch-gallery",
            )
            scatters, maps = {}, []
            for d in detectors:
                with gr.Column(visible=d.name in first_chosen) as box:
                    maps.append(box)
                    gr.HTML(map_legend(), elem_classes=["map-legend"])
                    scatters[d.name] = gr.ScatterPlot(
                        x="x",
                        y="y",
                        color=COLOUR,
                        color_map=COLOURS,
                        colors_in_legend=[],  # Vega's legend is clipped to its title: ours is above
                        tooltip=["file", P_FAKE, COLOUR],
                        label=f"{display_name(d.name, d.architecture)}: map of its features "
                        "(drag across points to open them)",
                        height=360,
                        elem_classes=["projection"],
                    )
            opened = gr.Gallery(
                label="Opened from the map: each image and its heatmap",
                columns=4,
                height=260,
                elem_id="batch-opened",
            )
            with gr.Row():
                csv = gr.File(label="predictions.csv", interactive=False)
                report = gr.File(label="report.html", interactive=False)
                archive = gr.File(label="all outputs (.zip)", interactive=False)
    # This session's latest run (its folder, the bytes it unpacked, its map points): the folder
    # is deleted when the next batch replaces it or when the session ends.
    latest = gr.State({}, time_to_live=KEEP_SECONDS, delete_callback=delete_run)
    outputs = [summary, table, csv, gallery, *scatters.values(), report, archive, status, latest]
    by_name = {d.name: d for d in detectors}

    @friendly
    def analyze_batch(
        files, detectors, projection, find_faces, shown, progress=gr.Progress(track_tqdm=True)
    ):
        chosen = [by_name[name] for name in detectors or [] if name in by_name]
        return run_batch(
            files, chosen, projection, find_faces, Path(work_dir), list(scatters), progress,
            limits=limits, previous=shown,
        )  # fmt: skip

    def check(files):
        return check_files(files, limits)

    files_in.upload(
        check, files_in, [files_in, status], api_visibility="private",
        concurrency_id=check_group, concurrency_limit=CHECKS_AT_ONCE,
    )  # fmt: skip
    button.click(
        analyze_batch,
        inputs=[files_in, detectors_in, projection_in, find_first, latest],
        outputs=outputs,
        api_name="analyze_batch",
        api_description=(
            "Many images or a zip: summary, predictions table, heatmaps, a feature map per "
            "detector, the CSV, the HTML report and a zip of all outputs."
        ),
        concurrency_id=concurrency_id,
    )
    for name, scatter in scatters.items():
        scatter.select(_opener(name), [latest], opened, api_visibility="private")
    detectors_in.change(
        lambda picked: [gr.Column(visible=n in (picked or [])) for n in names], detectors_in,
        maps, queue=False, preprocess=False, show_progress="hidden", api_visibility="private",
    )  # fmt: skip


def _opener(detector: str):
    """The select handler of one detector's map (Gradio passes the selection by annotation)."""

    def opener(data: dict, evt: gr.SelectData) -> list[tuple[Any, str]]:
        return open_points(data, detector, evt)

    return opener


LEGEND_MEANING = {
    f"real, {FOUND}": "real photo, detector right",
    "fake, said fake": "fake, detector right",
    f"fake, {FOUND}": "fake the detector missed",
    "real, said fake": "real photo flagged as fake",
    FOUND: "no label, detector found no signs of generation",
    "said fake": "no label, detector says fake",
    UNCERTAIN: "unlike the faces the detector learnt from (any label)",
}


def map_legend() -> str:
    """HTML legend of the feature maps: one swatch per label and verdict, in words."""
    items = "".join(
        f'<span class="legend-entry"><span class="swatch" style="background:{COLOURS[key]}">'
        f"</span>{html.escape(key)}: {html.escape(text)}</span>"
        for key, text in LEGEND_MEANING.items()
    )
    return f'<div class="legend-entries"><strong>Colours:</strong> {items}</div>'


def check_files(files: Sequence[str] | None, limits: UploadLimits | None = None) -> tuple[Any, str]:
    """Keep images and zips, refuse the rest at upload, naming each refused file; each image
    is decoded in a child process bounded by ``limits`` (see :mod:`.upload_check`)."""
    if not files:
        return gr.update(), ""
    images = [file for file in files if not zipfile.is_zipfile(file)]
    reasons = dict(
        zip(images, check_images([(f, Path(f).name) for f in images], limits), strict=True)
    )
    kept, refused = [], []
    for file in files:
        if reasons.get(file):
            refused.append(f"{Path(file).name}: {reasons[file]}")
        else:
            kept.append(file)
    if not refused:
        return gr.update(), ""
    lines = [f"**Refused {len(refused)} file(s)** (not an image or a .zip):"]
    lines += [f"- {plain(reason)}" for reason in refused]
    return kept or None, "\n".join(lines)


def open_points(data: dict, detector: str, evt: gr.SelectData) -> list[tuple[Any, str]]:
    """The images (and heatmaps) of the points inside the selected range of one map."""
    table = (data or {}).get("points", {}).get(detector)
    if table is None or not isinstance(evt.index, (list, tuple)) or len(evt.index) < 2:
        return []
    low, high = sorted(float(v) for v in evt.index[:2])
    picked = [row for row in table if low <= row["x"] <= high][:12]
    if not picked or not Path(picked[0]["out"]).is_dir():
        return []
    from ..analysis import AnalysisResult

    result = AnalysisResult(picked[0]["out"])
    items = []
    for row in picked:
        caption = f"{row['file']} ({p_fake_text(row['p_fake'])})"
        items.append((result.image(row["index"], detector), caption))
        items.append((result.overlay(row["index"], detector), f"{row['file']}: heatmap"))
    return items


def run_batch(
    files: Sequence[str] | None,
    detectors: Sequence[Detector],
    projection: str,
    find_faces_first: bool,
    work_dir: Path,
    scatter_order: Sequence[str],
    progress: Any = None,
    *,
    limits: UploadLimits | None = None,
    previous: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Analyse the uploaded ``files`` in a fresh run folder; values for every output component.

    ``previous`` is the session's last run (the last output): its folder is deleted once this
    run's results replace it, and what it still holds unpacked counts against the session's
    limit. A run that fails leaves nothing behind.
    """
    progress = progress or (lambda *args, **kwargs: None)
    if not files:
        raise user_error("upload some images or a .zip first")
    if not detectors:
        raise user_error("choose at least one detector")
    work_dir.mkdir(parents=True, exist_ok=True)
    prune_runs(work_dir, KEEP_RUNS - 1, pattern="run-*")
    run_dir = work_dir / f"run-{uuid.uuid4().hex[:12]}"
    try:
        outputs = _run(files, detectors, projection, find_faces_first, run_dir, scatter_order,
                       progress, limits or UploadLimits(), previous or {})  # fmt: skip
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    delete_run(previous)
    return outputs


def delete_run(shown: Mapping[str, Any] | None) -> None:
    """Delete the folder of a run whose results are no longer shown (``shown``: its state)."""
    if shown and shown.get("run"):
        shutil.rmtree(shown["run"], ignore_errors=True)


def _unpack(files: Sequence[str], dest: Path, limits: UploadLimits, previous: Mapping) -> Any:
    """The uploads, archives unpacked within the request's and the session's byte limits."""
    held = int(previous.get("unpacked", 0))
    if held and limits.session_bytes - held < limits.request_bytes:
        allowed = max(0, limits.session_bytes - held)
        bound = (
            f"this session may still unpack while its previous results are shown (they hold "
            f"{size_text(held)} of its {size_text(limits.session_bytes)})"
        )
        return collect_uploads(
            files, dest, max_files=limits.max_files, max_bytes=allowed, bound=bound
        )
    return collect_uploads(files, dest, max_files=limits.max_files, max_bytes=limits.request_bytes)


def _run(
    files: Sequence[str],
    detectors: Sequence[Detector],
    projection: str,
    find_faces_first: bool,
    run_dir: Path,
    scatter_order: Sequence[str],
    progress: Any,
    limits: UploadLimits,
    previous: Mapping[str, Any],
) -> list[Any]:
    """The analysis of one batch in ``run_dir``; see :func:`run_batch`."""
    from ..analysis import AnalysisResult, analyze
    from ..analysis.projection import write_projection
    from ..analysis.report import write_report
    from ..data import Sample, write_manifest

    progress(0.0, desc="Reading the uploads")
    root = run_dir / "uploads"
    uploads = _unpack(files, root, limits, previous)
    sources = _upload_sources(uploads.images, root, files)
    prepared = _prepare(uploads, sources, root, run_dir / "faces", find_faces_first, progress)
    unpacked = uploads.unpacked
    if find_faces_first:  # the framed faces were analysed: what was unpacked is not needed
        shutil.rmtree(root, ignore_errors=True)
        unpacked = 0
    result = report_path = None
    if prepared.analysed:
        progress(0.3, desc="Running the detectors")
        samples = [
            Sample(p, prepared.labels.get(_key(p)), group=prepared.sources[_key(p)] or None)
            for p in prepared.analysed
        ]
        result = analyze(
            write_manifest(samples, run_dir / "inputs.csv"),
            detectors=list(detectors),
            explainers=("gradcam",),
            layers=("final",),
            projection=None,
            out=run_dir / "analysis",
            device=detectors[0].device,
            progress=True,
            report=False,
            faces=False,  # faces were found (or skipped on request) in _prepare
        )
        if projection != "none":
            progress(0.8, desc="Computing the feature maps")
            for detector in detectors:
                write_projection(result, detector.name, projection)
        progress(0.9, desc="Writing the report")
        result = AnalysisResult(result.out)
        report_path = write_report(result, run_dir / "report.html", names=prepared.shown)
    table = _table(result, prepared, detectors)
    csv_path = run_dir / "predictions.csv"
    table.to_csv(csv_path, index=False)  # CSV_COLUMNS; the page shows TABLE_COLUMNS
    archive = _archive(run_dir, csv_path, report_path, result)
    scatters, points = {}, {}
    for name in scatter_order:
        scatters[name], points[name] = _scatter(result, name, prepared, projection)
    return [
        _summary(table, prepared, uploads.skipped, result, detectors, projection),
        table[TABLE_COLUMNS],
        str(csv_path),
        _gallery(result, detectors, prepared),
        *scatters.values(),
        str(report_path) if report_path else None,
        archive,
        "",
        {"run": str(run_dir), "unpacked": unpacked, "points": points},
    ]


def _upload_sources(images: Sequence[Path], root: Path, files: Sequence[str]) -> list[str]:
    """Each upload's source: from its folders inside its zip (extracted into ``archive-<n>``
    under ``root``), the zip's name first; none for an image uploaded on its own."""
    zips = {f"archive-{n}": Path(f).stem for n, f in enumerate(files)}
    relative = []
    for image in images:
        try:
            archive, *inside = image.relative_to(root).parts
        except ValueError:
            relative.append(PurePath(image.name))
            continue
        relative.append(PurePath(zips.get(archive, archive), *inside))
    return folder_sources(relative)


def _prepare(
    uploads, sources: Sequence[str], root: Path, faces_dir: Path, find_first: bool, progress: Any
) -> Prepared:
    """Decode each upload, find its faces and write the largest one framed, when asked."""
    prepared = Prepared()
    items = list(zip(uploads.images, uploads.labels, sources, strict=True))
    if find_first:
        from ..faces import find_faces, frame_face

        faces_dir.mkdir(parents=True, exist_ok=True)
    for number, (path, folder_label, source) in enumerate(items):
        progress((number / max(len(items), 1)) * 0.3, desc="Decoding and finding faces")
        shown = _file(path, root)
        label = folder_label or label_from_name(path)
        if not find_first:
            _add(prepared, path, shown, label, source)
            continue
        try:
            picture = load_image(path, name=shown)
        except ImageLoadError as exc:
            prepared.unreadable.append((shown, exc.reason))
            continue
        found = find_faces(picture)
        prepared.faces[shown] = len(found)
        if not found:
            prepared.no_face.append(shown)
            continue
        crop = faces_dir / f"{number:05d}.png"  # the report and the table show ``shown``
        frame_face(picture, found[0]).save(crop)
        _add(prepared, crop, shown, label, source)
    return prepared


def _add(prepared: Prepared, path: Path, shown: str, label: str | None, source: str) -> None:
    key = _key(path)
    prepared.analysed.append(path)
    prepared.shown[key] = shown
    prepared.sources[key] = source
    if label:
        prepared.labels[key] = label


def _key(path: Path) -> str:
    """``path`` as the analysis lists it (absolute)."""
    return os.path.abspath(path)


def _file(path: str | Path, root: Path) -> str:
    """A path as the user knows it: relative to the upload folder, without Gradio's cache dirs."""
    try:
        relative = Path(path).relative_to(root)
        return str(Path(*relative.parts[1:]))
    except ValueError:
        return Path(path).name


def _table(result: Any, prepared: Prepared, detectors: Sequence[Detector]) -> pd.DataFrame:
    """One row per image and detector (:data:`CSV_COLUMNS`): readable names and outcomes,
    rounded numbers, why a verdict is uncertain or missing in ``note``; sorted by file."""
    rows = []
    if result is not None:
        for row in result.predictions.itertuples():
            shown = prepared.shown.get(row.path, Path(row.path).name)
            if row.verdict:
                note = row.reasons
            elif row.status == UNREADABLE:
                note = f"unreadable: {row.error}"
            else:
                note = row.error
            rows.append(
                {
                    "file": shown,
                    "detector": _name(row.detector, detectors),
                    "verdict": SHORT.get(row.verdict, ""),
                    P_FAKE: round(float(row.p_fake), 2) if row.verdict else None,
                    DISTANCE: None if pd.isna(row.ood_score) else round(float(row.ood_score), 2),
                    "label": row.label or "",
                    "faces": prepared.faces.get(shown, ""),
                    "note": note,
                    "reliable": row.reliable,
                    "model version": row.model_version,
                }
            )
    for shown, reason in prepared.unreadable:
        rows += [_blank(shown, d, detectors, f"unreadable: {reason}") for d in detectors]
    for shown in prepared.no_face:
        rows += [_blank(shown, d, detectors, NO_FACE, faces=0) for d in detectors]
    table = pd.DataFrame(rows, columns=CSV_COLUMNS)
    return table.sort_values(["file", "detector"], kind="stable").reset_index(drop=True)


def _blank(shown: str, detector: Detector, detectors, note: str, faces: Any = "") -> dict:
    label = label_from_name(shown) or ""
    return {
        "file": shown,
        "detector": _name(detector.name, detectors),
        "verdict": "no face" if faces == 0 else "",
        "label": label,
        "faces": faces,
        "note": note,
        "model version": detector.fingerprint or "",
    }


def _name(detector: str, detectors: Sequence[Detector]) -> str:
    for d in detectors:
        if d.name == detector:
            return display_name(d.name, d.architecture)
    return detector


def _gallery(result: Any, detectors: Sequence[Detector], prepared: Prepared) -> list:
    """Overlays of the analysed faces, detector by detector, at most ``GALLERY_SIZE``."""
    if result is None:
        return []
    rows = result.predictions[result.predictions["error"] == ""]
    items: list[tuple[Any, str]] = []
    for detector in detectors:
        title = display_name(detector.name, detector.architecture)
        for row in rows[rows["detector"] == detector.name].itertuples():
            if len(items) >= GALLERY_SIZE:
                return items
            shown = prepared.shown.get(row.path, Path(row.path).name)
            # Outcome first: the gallery cuts long captions at the tile's width.
            caption = (
                f"{SHORT[row.verdict]} · {p_fake_text(row.p_fake)} · {Path(shown).name} · {title}"
            )
            items.append((result.overlay(int(row.index), detector.name), caption))
    return items


def _scatter(
    result: Any, detector: str, prepared: Prepared, projection: str
) -> tuple[Any, list[dict]]:
    """One detector's map with readable columns, and its points for opening them."""
    if result is None or projection == "none" or detector not in result.detectors:
        return None, []
    try:
        frame = result.projection(detector)
    except FileNotFoundError:
        return None, []
    labels = frame["label"].fillna("").astype(str)
    colour = [_colour(v, label) for v, label in zip(frame["verdict"], labels, strict=True)]
    files = [prepared.shown.get(p, Path(p).name) for p in frame["path"]]
    # no column may be called "path": gradio_client would take the plot for a file to download
    shown = pd.DataFrame(
        {
            "x": frame["x"],
            "y": frame["y"],
            "file": files,
            P_FAKE: frame["p_fake"].round(3),
            COLOUR: colour,
        }
    )
    points = []
    for row, file in zip(frame.itertuples(), files, strict=True):
        points.append(
            {
                "x": float(row.x),
                "file": file,
                "p_fake": float(row.p_fake),
                "index": int(row.index),
                "out": str(result.out),
            }
        )
    title = PROJECTION_NAMES.get(projection, projection)
    plot = gr.ScatterPlot(
        value=shown,
        x_title=f"{title} axis 1",  # vega cuts longer titles; the label says what is mapped
        y_title=f"{title} axis 2",
    )
    return plot, points


def _colour(verdict: str, label: str) -> str:
    """A point's key in :data:`COLOURS`: its label and the detector's outcome."""
    if verdict == "uncertain":
        return UNCERTAIN
    said = "said fake" if verdict == "fake" else FOUND
    return f"{label}, {said}" if label else said


def _summary(
    table: pd.DataFrame,
    prepared: Prepared,
    skipped: Sequence[str],
    result: Any,
    detectors: Sequence[Detector],
    projection: str,
) -> str:
    """Counts, verdicts per detector and, with labels, accuracy, ROC AUC and confusion matrices."""
    images = table["file"].nunique()
    unreadable = table[table["note"].str.startswith("unreadable")]["file"].nunique()
    analysed = images - unreadable - len(prepared.no_face)
    parts = [f"**{images} images**: {analysed} analysed"]
    if prepared.no_face:
        parts.append(f"{len(prepared.no_face)} with no face found (no verdict)")
    if unreadable:
        parts.append(f"{unreadable} unreadable")
    several = sum(1 for n in prepared.faces.values() if n > 1)
    lines = [", ".join(parts) + "."]
    if several:
        lines.append(f"{several} image(s) held several faces: the largest was analysed.")
    metrics = (result.summary.get("metrics", {}) if result is not None else {}) or {}
    outcomes = [SHORT[v] for v in ("fake", "real", "uncertain")]
    lines += ["", f"| detector | model | {' | '.join(outcomes)} | accuracy | ROC AUC | labelled |"]
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for detector in detectors:
        title = display_name(detector.name, detector.architecture)
        said = table.loc[table["detector"] == title, "verdict"]
        m = metrics.get(detector.name, {})
        counts = " | ".join(str((said == outcome).sum()) for outcome in outcomes)
        lines.append(
            f"| {plain(title)} | {detector.fingerprint or '-'} | {counts} | "
            f"{_pct(m.get('accuracy'))} | {_num(m.get('roc_auc'))} | {m.get('n', 0)} |"
        )
    lines += [
        f"\n_{plain(display_name(d.name, d.architecture))} {NO_STATISTICS}._"
        for d in detectors
        if d.reliability is None
    ]
    for detector in detectors:
        m = metrics.get(detector.name)
        if m and m.get("n"):
            title = plain(display_name(detector.name, detector.architecture))
            lines += [
                "",
                f"| {title}: confusion at P(fake) 0.5, uncertain included | below | 0.5 or more |",
                "|---|---:|---:|",
                f"| really real | {m['tn']} | {m['fp']} |",
                f"| really fake | {m['fn']} | {m['tp']} |",
            ]
    if result is not None:
        lines += _by_source(result.by_source(), detectors)
    if not metrics:
        lines += ["", "_No labels: name files `real_...` / `fake_...` or use `real/` and "
                  "`fake/` folders in a .zip to get accuracy and a confusion matrix._"]  # fmt: skip
    if projection != "none" and 0 < analysed < MIN_POINTS:
        lines.append(f"\nThe feature map needs at least {MIN_POINTS} analysed faces.")
    bad = table[table["note"].str.startswith("unreadable")].drop_duplicates("file")
    if len(bad):
        lines.append(f"\n**Unreadable ({len(bad)}):**")
        lines += [f"- {plain(row.file)}: {plain(row.note[12:])}" for row in bad.itertuples()]
    if skipped:
        lines.append(f"\n**Skipped ({len(skipped)}):**")
        lines += [f"- {plain(reason)}" for reason in skipped]
    lines.append(
        f"\n{EXPLAINED} Distance: how unlike those faces the image is. "
        f"Heatmaps: {METHOD_NAMES['gradcam']}, last layer."
    )
    return "\n".join(lines)


def _by_source(table: pd.DataFrame, detectors: Sequence[Detector]) -> list[str]:
    """Markdown rows per source and detector (analysed images only), when there are several
    sources (see :meth:`deepfake_xai.analysis.AnalysisResult.by_source`)."""
    from ..analysis.report import share
    from ..analysis.result import NO_SOURCE

    if table.empty or table["source"].nunique() < 2:
        return []
    said = [c for c in table.columns if c.startswith("said_")]
    labelled = bool(table["labelled"].any())
    head = ["source", "detector", "images", *(SHORT[c.removeprefix("said_")] for c in said)]
    head.append("no verdict")
    if labelled:
        head += ["accuracy", "fakes caught", "real photos called fake"]
    lines = ["", f"| {' | '.join(head)} |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in table.to_dict("records"):
        cells = [plain(r["source"] or NO_SOURCE), plain(_name(r["detector"], detectors))]
        cells += [str(r["images"]), *(str(r[c]) for c in said), str(r["no_verdict"])]
        if labelled:
            cells += [
                share(r["accuracy"], r["labelled"]),
                share(r["fakes_caught"], r["fakes"]),
                share(r["reals_called_fake"], r["reals"]),
            ]
        lines.append(f"| {' | '.join(cells)} |")
    return lines


def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, float) else "n/a"


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "n/a"


def _archive(run_dir: Path, csv_path: Path, report: Path | None, result: Any) -> str:
    """A zip of the predictions, the report and the heatmaps; no server path inside."""
    path = run_dir / "deepfake-xai-analysis.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(csv_path, "predictions.csv")
        if report is not None:
            zf.write(report, "report.html")
        if result is not None:
            for item in sorted((result.out / "cams").glob("*.npy")):
                zf.write(item, f"heatmaps/{item.name}")
            for item in sorted(result.out.glob("projection*.png")):
                zf.write(item, item.name)
    return str(path)
