"""The "Inspect one image" tab: every loaded detector side by side on one upload.

Each detector gets a fixed slot built when the app is built (verdict, heatmap overlay, a
plain-language reading with its time); the work is :func:`deepfake_xai.engine.explain`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image, ImageDraw

from ..detectors import Detector
from ..engine import explain
from ..explainers.base import TARGETS
from ..images import ImageLoadError, load_image
from .errors import friendly, unreadable, user_error
from .text import Box, display_name, reading

LAYERS = ("final", "mid")
FACE_MARGIN = 0.4
DISPLAY_SIZE = 320  # overlays of smaller detector inputs are drawn on an upscaled copy


@dataclass
class Slot:
    """The output components of one detector."""

    detector: Detector
    verdict: gr.Label
    overlay: gr.Image
    reading: gr.Markdown

    @property
    def components(self) -> list[gr.components.Component]:
        return [self.verdict, self.overlay, self.reading]


@dataclass
class FaceCrop:
    """The square around a face that is analysed, the face within it, and the marked input."""

    image: Image.Image
    face: Box | None
    marked: Image.Image | None


def build_inspect_tab(
    detectors: Sequence[Detector],
    explainers: Sequence[str],
    examples: Sequence[str],
    faces: bool,
    concurrency_id: str,
) -> None:
    """Lay out the tab inside the current ``gr.Blocks`` and wire its one event (``/inspect``)."""
    names = [d.name for d in detectors]
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            inputs = [
                gr.Image(
                    sources=["upload", "webcam", "clipboard"],
                    type="filepath",
                    label="Face photo",
                    height=320,
                    elem_id="inspect-image",
                ),
                gr.CheckboxGroup(names, value=names, label="Detectors"),
                gr.Dropdown(
                    list(explainers), value=_default(explainers, "gradcam"), label="Explainer"
                ),
                gr.Radio(list(LAYERS), value="final", label="Layer (Grad-CAM family)"),
                gr.Radio(list(TARGETS), value="fake", label="Explain the evidence for"),
                gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity"),
            ]
            with gr.Accordion("Face crop", open=False, visible=faces):
                inputs.append(gr.Checkbox(value=False, label="Crop to the face first"))
                face_view = gr.Image(label="Face found", interactive=False, height=240)
            button = gr.Button("Analyse", variant="primary", elem_id="inspect-button")
            if examples:
                gr.Examples(list(examples), inputs=inputs[0], label="Examples")
        with gr.Column(scale=3), gr.Row(equal_height=True):
            slots = [_slot(detector) for detector in detectors]

    @friendly
    def run_inspect(image, detectors, explainer, layer, target, opacity, face_crop):
        return inspect(slots, image, detectors, explainer, layer, target, opacity, face_crop)

    button.click(
        run_inspect,
        inputs=inputs,
        outputs=[c for slot in slots for c in slot.components] + [face_view],
        api_name="inspect",
        api_description="Verdict, heatmap overlay and reading per detector for one image.",
        preprocess=False,
        concurrency_id=concurrency_id,
    )


def _slot(detector: Detector) -> Slot:
    title = display_name(detector.name, detector.architecture)
    with gr.Column(min_width=240, elem_classes=["detector-slot"]):
        gr.Markdown(f"### {title}")
        return Slot(
            detector,
            gr.Label(num_top_classes=2, label=f"{title}: verdict", elem_classes=["verdict"]),
            gr.Image(
                label=f"{title}: heatmap",
                format="jpeg",  # PNG encoding took ~50 ms per overlay, JPEG under 1 ms
                interactive=False,
                height=DISPLAY_SIZE,
                elem_classes=["overlay"],
            ),
            gr.Markdown(elem_classes=["reading"]),
        )


def inspect(
    slots: Sequence[Slot],
    upload: Mapping[str, Any] | None,
    chosen: Sequence[str] | None,
    method: str,
    layer: str,
    target: str,
    opacity: float,
    face_crop: bool,
) -> list[Any]:
    """Run the chosen detectors on one uploaded image; values for every slot plus the face view.

    ``upload`` is Gradio's raw file payload (the event skips Gradio's own decoding, so that a
    bad file is judged by :func:`deepfake_xai.images.load_image` and reported by name).
    """
    if not upload or not upload.get("path"):
        raise user_error("upload an image first")
    chosen = list(chosen or [])
    if not chosen:
        raise user_error("choose at least one detector")
    name = upload.get("orig_name") or "the uploaded image"
    try:
        picture = load_image(upload["path"], name=name)
    except ImageLoadError as exc:
        raise unreadable(name, exc) from None
    crop = _face_crop(picture) if face_crop else FaceCrop(picture, None, None)
    values: list[Any] = []
    for slot in slots:
        if slot.detector.name in chosen:
            values.extend(_explain_one(slot.detector, crop, method, layer, target, opacity))
        else:
            values.extend([None, None, "_not selected_"])
    return [*values, crop.marked]


def _explain_one(
    detector: Detector, crop: FaceCrop, method: str, layer: str, target: str, opacity: float
) -> list[Any]:
    """Verdict, overlay and reading of one detector."""
    start = time.perf_counter()
    result = explain(detector, [crop.image], method=method, layers=(layer,), target=target)
    seconds = time.perf_counter() - start
    key = layer if layer in result.heatmaps else next(iter(result.heatmaps))
    p_fake = float(result.probs[0])
    explained = "fake" if int(result.targets[0]) == 1 else "real"
    name = display_name(detector.name, detector.architecture)
    text = reading(name, p_fake, result.heatmaps[key].numpy()[0], target=explained, face=crop.face)
    where = "" if key == "input" else f" at {key}"
    return [
        {"fake": p_fake, "real": 1.0 - p_fake},
        result.overlay(0, key, alpha=opacity, image=_display_copy(result.images[0])),
        f"{text}\n\n<small>{result.method}{where} · {seconds * 1000:.0f} ms</small>",
    ]


def _display_copy(image: Image.Image) -> Image.Image:
    """The harmonised input, upscaled to at least ``DISPLAY_SIZE`` wide for a readable overlay."""
    if image.width >= DISPLAY_SIZE:
        return image
    height = round(image.height * DISPLAY_SIZE / image.width)
    return image.resize((DISPLAY_SIZE, height), Image.Resampling.BICUBIC)


def _face_crop(image: Image.Image) -> FaceCrop:
    """The square around the largest face (``FACE_MARGIN`` of its size around it), or an error."""
    from ..faces import EXTRA_HINT, detect_face, face_square, faces_available

    if not faces_available():
        raise user_error(f"the face crop is not available on this server: {EXTRA_HINT}")
    box = detect_face(image)
    if box is None:
        raise user_error("no face found in the image; untick 'Crop to the face first'")
    left, top, right, _ = square_box = face_square(box, FACE_MARGIN)
    side = right - left
    square = image.crop(square_box)
    face = (
        (box.x - left) / side,
        (box.y - top) / side,
        (box.x + box.width - left) / side,
        (box.y + box.height - top) / side,
    )
    marked = image.copy()
    width = max(2, round(min(image.size) / 150))
    ImageDraw.Draw(marked).rectangle(
        (box.x, box.y, box.x + box.width, box.y + box.height), outline=(0, 255, 0), width=width
    )
    return FaceCrop(square, face, marked)


def _default(choices: Sequence[str], preferred: str) -> str | None:
    return preferred if preferred in choices else (choices[0] if choices else None)
