"""One video, in memory: per-frame verdicts and heatmaps, tracks, one verdict, a timeline.

:func:`explain_video` is what ``dx.explain(detector, "clip.mp4")`` and a UI call: the frames are
sampled and their faces found and linked into tracks as ``analyze`` does (the same
:class:`~deepfake_xai.analysis.decode.Decoder`), every face goes through the same engine
(:func:`deepfake_xai.engine.explain`) and the same three-way assessment, and the result holds
the per-frame table, the per-track and per-video rollups (:mod:`deepfake_xai.video_verdict`),
the most suspicious frames with their heatmaps, and a timeline figure.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .analysis.store import REASONS_SEPARATOR
from .detectors import Detector
from .engine import Explanation
from .engine import explain as explain_images
from .faces import FaceBox
from .reliability import input_problems
from .video import Sampling, VideoLimits
from .video_verdict import Rollup, roll_up, video_rollup

FRAME_COLUMNS = (
    "row",
    "frame",
    "time",
    "track",
    "status",
    "p_fake",
    "verdict",
    "reliable",
    "reasons",
    "face_left",
    "face_top",
    "face_width",
    "face_height",
)


@dataclass
class VideoExplanation:
    """A video explained by one detector.

    ``frames``: a row per face of each sampled frame (``status`` ok, ``row`` its position in
    ``explanation``) and per frame without a face (``no_face``); ``tracks``: a rollup per track;
    ``verdict``: the video's rollup; ``problem``: why sampling stopped early (``""`` if not).
    """

    path: str
    detector: str
    duration: float
    frames: pd.DataFrame
    tracks: dict[int, Rollup]
    verdict: Rollup
    explanation: Explanation | None  # None when no frame had a face
    problem: str = ""

    @property
    def no_face_frames(self) -> int:
        return int((self.frames["status"] == "no_face").sum())

    def suspicious(self, count: int = 4) -> pd.DataFrame:
        """The ``count`` scored rows of highest P(fake) (of any track), most suspicious first."""
        scored = self.frames[self.frames["status"] == "ok"]
        return scored.sort_values("p_fake", ascending=False, kind="stable").head(count)

    def overlay(self, row: int, layer: str = "final", alpha: float = 0.5) -> Image.Image:
        """The face of ``explanation`` row ``row`` (see ``frames["row"]``) with its heatmap."""
        if self.explanation is None:
            raise ValueError(f"{self.path}: no face was found in any sampled frame")
        return self.explanation.overlay(row, layer, alpha=alpha)

    def as_dict(self) -> dict[str, Any]:
        """The verdicts as plain JSON-ready values (for an API's named result): the video's
        rollup, each track's, and the frames (time, track, P(fake), verdict, reasons)."""
        frames = self.frames[["frame", "time", "track", "status", "p_fake", "verdict", "reasons"]]
        return {
            "path": self.path,
            "detector": self.detector,
            "duration": _plain(self.duration),
            "verdict": _rollup_dict(self.verdict),
            "tracks": {str(k): _rollup_dict(v) for k, v in self.tracks.items()},
            "frames_sampled": int(self.frames["frame"].nunique()),
            "no_face_frames": self.no_face_frames,
            "frames": [{k: _plain(v) for k, v in row.items()} for row in frames.to_dict("records")],
            "problem": self.problem,
        }

    def timeline_png(self) -> bytes:
        """A small PNG: P(fake) over time, a line per track, the decision threshold dashed."""
        return timeline_png(self.frames, self.duration, f"{self.detector}: P(fake) over time")


def explain_video(
    detector: Detector | str,
    path: str | os.PathLike,
    method: str | None = "gradcam",
    layers: Sequence[str] = ("final",),
    target: str = "fake",
    *,
    sampling: Sampling = Sampling(),
    limits: VideoLimits = VideoLimits(),
    faces: bool = True,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> VideoExplanation:
    """Sample, find faces, track, predict, explain and roll up the video at ``path``.

    ``progress`` (a UI's progress bar) is called as each stage starts: ``("frames", n)``
    before the n sampled frames are decoded and their faces found, ``("detector", n)``
    before the n faces found go through the detector (P(fake) and heatmaps in one pass).

    Raises :class:`~deepfake_xai.video.VideoLoadError` (naming the file and the reason) for a
    file that is no usable video; a stream that ends early keeps its earlier frames and says
    why in ``problem``.
    """
    from .analysis.decode import Decoder
    from .api import load_detector
    from .video import VideoLoadError

    detector = load_detector(detector, **({"device": device} if device else {}))
    name = os.fsdecode(os.fspath(path))
    decoder = Decoder((detector.harmonization,), faces, sampling, limits)
    if progress is not None:
        progress("frames", decoder.sampled_frames(path))
    items = decoder.video(0, path, name, None)
    unread = [i for i in items if i.status == "unreadable"]
    if len(items) == 1 and unread and unread[0].frame is None:  # no frame came out at all
        raise VideoLoadError(name, unread[0].error)
    good = [i for i in items if i.tensors is not None]
    explanation = None
    if good:
        if progress is not None:
            progress("detector", len(good))
        batch = torch.stack([i.tensors[0] for i in good])
        options = {"method": method, "layers": layers, "target": target, "batch_size": batch_size}
        explanation = explain_images(detector, batch, device=device, **options)
    frames = _frame_table(detector, items, explanation)
    framed = frames[frames["frame"].notna()]
    tracks = {
        int(track): roll_up(group["p_fake"].tolist(), group["verdict"].tolist())
        for track, group in framed[framed["track"].notna()].groupby("track")
    }
    everything = roll_up(framed["p_fake"].tolist(), framed["verdict"].tolist())
    duration = next((i.duration for i in items if i.duration is not None), float("nan"))
    return VideoExplanation(
        path=name,
        detector=detector.name,
        duration=duration,
        frames=frames,
        tracks=tracks,
        verdict=video_rollup(list(tracks.values()), everything),
        explanation=explanation,
        problem="; ".join(i.error for i in unread),
    )


def _frame_table(detector: Detector, items: list, explanation: Explanation | None) -> pd.DataFrame:
    """The ``frames`` table of :class:`VideoExplanation` (see there)."""
    rows: list[dict[str, Any]] = []
    position = 0
    for item in items:
        if item.frame is None:
            continue
        row: dict[str, Any] = {
            "row": None,
            "frame": item.frame,
            "time": item.time,
            "track": item.track,
            "status": item.status,
            "p_fake": np.nan,
            "verdict": "",
            "reliable": None,
            "reasons": item.error,
        }
        box = FaceBox(*item.box) if item.box is not None else None
        for key, value in zip(FRAME_COLUMNS[-4:], item.box or (None,) * 4, strict=True):
            row[key] = value
        if item.tensors is not None and explanation is not None:
            problems = input_problems(detector, item.size, box, None)
            outcome = explanation.assessment(position, problems)
            p_fake = float(explanation.probs[position])
            row.update(row=position, p_fake=p_fake, verdict=outcome.verdict)
            row.update(reliable=outcome.reliable, reasons=REASONS_SEPARATOR.join(outcome.reasons))
            position += 1
        rows.append(row)
    return pd.DataFrame(rows, columns=list(FRAME_COLUMNS))


def _rollup_dict(rollup: Rollup) -> dict[str, Any]:
    return {k: _plain(v) for k, v in asdict(rollup).items()}


def _plain(value: Any) -> Any:
    """A JSON-friendly value: NaN and pandas' NA become None, numpy scalars plain numbers."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if np.isnan(value) else float(value)
    return value


def timeline_png(frames: pd.DataFrame, duration: float, title: str) -> bytes:
    """P(fake) per track over time as a small PNG (frames: ``time``, ``track``, ``p_fake``,
    ``status``); frames without a face are ticks along the bottom."""
    from matplotlib.figure import Figure

    from .reliability import THRESHOLD

    figure = Figure(figsize=(6.0, 2.2), dpi=90, layout="constrained")
    axis = figure.subplots()
    scored = frames[frames["status"] == "ok"]
    for track, group in scored.groupby("track"):
        axis.plot(
            group["time"], group["p_fake"], marker="o", markersize=3, label=f"face {int(track)}"
        )
    empty = frames[frames["status"] == "no_face"]
    if len(empty):
        axis.plot(empty["time"], [0.0] * len(empty), "|", color="#999999", label="no face")
    axis.axhline(THRESHOLD, color="#666666", linestyle="--", linewidth=0.8)
    axis.set_ylim(-0.03, 1.03)
    if np.isfinite(duration) and duration > 0:
        axis.set_xlim(0, duration)
    axis.set_xlabel("time (s)", fontsize=8)
    axis.set_ylabel("P(fake)", fontsize=8)
    axis.set_title(title, fontsize=9)
    axis.tick_params(labelsize=7)
    if len(scored) or len(empty):
        axis.legend(fontsize=7, loc="best", frameon=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
