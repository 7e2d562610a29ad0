"""The report's video section: per video, its verdict per detector, a timeline of P(fake) per
face track, and the most suspicious frames with their heatmaps."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..paths import display_path
from ..video_analysis import timeline_png
from .outcomes import WORDS
from .report import _data_uri, _e, _figure, _heatmap_kinds, _try_image
from .result import AnalysisResult
from .store import OK

MAX_VIDEOS = 20  # shown in full; the others are in videos.csv
SUSPICIOUS = 3  # frames with heatmaps per video and detector


def video_section(result: AnalysisResult, names: Mapping[str, str]) -> str:
    """The section, or ``""`` when the run has no video."""
    videos = result.videos
    if videos.empty:
        return ""
    rows = result.predictions
    rows = rows[rows["video"]]
    kinds = _heatmap_kinds(result)
    blocks = []
    for index, group in list(videos.groupby("index", sort=True))[:MAX_VIDEOS]:
        path = group["path"].iloc[0]
        name = names.get(path, display_path(path))
        parts = [f"<h3>{_e(name)}</h3>"]
        for video in group.to_dict("records"):
            mine = rows[(rows["index"] == index) & (rows["detector"] == video["detector"])]
            parts.append(_verdict_line(video))
            if not video["frames_sampled"]:
                continue
            title = f"{video['detector']}: P(fake) over time"
            png = timeline_png(mine, video["duration"], title)
            parts.append(f'<img src="{_data_uri(png, "png")}" alt="timeline of {_e(name)}">')
            if kinds:
                parts.append(_suspicious(result, int(index), video["detector"], mine, kinds[0]))
        blocks.append("".join(parts))
    more = len(videos["index"].unique()) - MAX_VIDEOS
    tail = f'<p class="muted">{more} more videos in videos.csv.</p>' if more > 0 else ""
    return (
        '<h2>Videos</h2><p class="muted">A verdict per video: that of its most suspicious '
        "face track (P(fake) is the sigmoid of the track's mean logit over its reliable frames; "
        "the 90th percentile is shown beside it); uncertain when most frames are. Frames "
        "without a face are counted, not scored.</p>" + "".join(blocks) + tail
    )


def _verdict_line(video: dict) -> str:
    verdict = video["verdict"]
    if video["error"] and not video["frames_sampled"]:  # not read at all: only the reason
        reason = _e(video["error"])
        return (
            f"<p>{_e(video['detector'])}: <b>no verdict</b>: the file cannot be read ({reason})</p>"
        )
    said = WORDS.get(verdict, "no verdict") if verdict else "no verdict (no face scored)"
    numbers = (
        f"P(fake) {video['p_fake']:.2f} (90th percentile {video['p_high']:.2f}), "
        f"{video['flagged']:.0%} of frames flagged fake, "
        if np.isfinite(video["p_fake"])
        else ""
    )
    error = f"; <b>{_e(video['error'])}</b>" if video["error"] else ""
    return (
        f'<p>{_e(video["detector"])}: <b class="{_e(verdict)}">{_e(said)}</b>; {numbers}'
        f"{video['frames_sampled']} frames sampled over {video['duration']:.1f} s, "
        f"{video['no_face_frames']} without a face, {video['tracks']} face tracks, "
        f"{_e(video['reliability'])}{error}</p>"
    )


def _suspicious(
    result: AnalysisResult, index: int, detector: str, rows: pd.DataFrame, kind: tuple[str, str]
) -> str:
    """The frames of highest P(fake), each face as the detector saw it with its heatmap."""
    scored = rows[rows["status"] == OK].sort_values("p_fake", ascending=False).head(SUSPICIOUS)
    explainer, layer = kind
    figures = []
    for row in scored.to_dict("records"):
        frame, track = int(row["frame"]), int(row["track"])
        picture = _try_image(
            lambda f=frame, t=track: result.frame_overlay(index, detector, f, t, layer, explainer)
        )
        if picture is not None:
            caption = f"{row['time']:.1f} s, face {track}: P(fake) {row['p_fake']:.2f}"
            figures.append(_figure(picture, _e(caption)))
    if not figures:
        return ""
    return f'<div class="row">{"".join(figures)}</div>'
