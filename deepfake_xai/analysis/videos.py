"""Per-track and per-video tables of an analysis, from the per-frame rows of ``predictions``.

A video's rows are one per face of each sampled frame (``ok`` with its ``track``), one per frame
without a face (``no_face``) and one without a frame for a video that could not be read or ended
early (``unreadable``, its reason in ``error``). The verdicts roll up as
:mod:`deepfake_xai.video_verdict` says.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..video_verdict import Rollup, roll_up, video_rollup
from .store import NO_FACE, UNREADABLE

SCORES = ("frames", "p_fake", "p_mean", "p_high", "flagged", "uncertain", "verdict")
"""The columns of a :class:`~deepfake_xai.video_verdict.Rollup`, in table order."""
TRACK_COLUMNS = ("index", "path", "detector", "track", "start", "end", *SCORES)
VIDEO_COLUMNS = (
    "index",
    "path",
    "detector",
    "label",
    "duration",
    "frames_sampled",
    "no_face_frames",
    "tracks",
    *SCORES,
    "reliability",
    "error",
)


def track_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per face track, video and detector: its time span, frames scored, scores,
    share of frames flagged fake and called uncertain, and verdict."""
    rows = predictions[predictions["video"] & predictions["track"].notna()]
    table = []
    for (index, detector, track), group in rows.groupby(["index", "detector", "track"], sort=True):
        rollup = roll_up(group["p_fake"].tolist(), group["verdict"].tolist())
        table.append(
            {
                "index": int(index),
                "path": group["path"].iloc[0],
                "detector": detector,
                "track": int(track),
                "start": float(group["time"].min()),
                "end": float(group["time"].max()),
                **_scores(rollup),
            }
        )
    return pd.DataFrame(table, columns=list(TRACK_COLUMNS))


def video_table(predictions: pd.DataFrame, tracks: pd.DataFrame) -> pd.DataFrame:
    """One row per video and detector: duration, frames sampled, frames without a face,
    tracks, the rolled-up scores and verdict, ``reliability`` (the share of scored frames
    called uncertain, in words) and the reason it could not be read (or ended early)."""
    rows = predictions[predictions["video"]]
    table = []
    for (index, detector), group in rows.groupby(["index", "detector"], sort=True):
        framed = group[group["frame"].notna()]
        mine = tracks[(tracks["index"] == index) & (tracks["detector"] == detector)]
        rollups = [_rollup(row) for row in mine.to_dict("records")]
        rollup = video_rollup(
            rollups, roll_up(framed["p_fake"].tolist(), framed["verdict"].tolist())
        )
        problems = group.loc[group["status"] == UNREADABLE, "error"]
        duration = group["duration"].dropna()
        table.append(
            {
                "index": int(index),
                "path": group["path"].iloc[0],
                "detector": detector,
                "label": group["label"].iloc[0],
                "duration": float(duration.iloc[0]) if len(duration) else np.nan,
                "frames_sampled": int(framed["frame"].nunique()),
                "no_face_frames": int((framed["status"] == NO_FACE).sum()),
                "tracks": len(mine),
                **_scores(rollup),
                "reliability": _reliability(rollup),
                "error": "; ".join(dict.fromkeys(problems)),
            }
        )
    frame = pd.DataFrame(table, columns=list(VIDEO_COLUMNS))
    return frame.rename(columns={"frames": "frames_scored"})


def _scores(rollup: Rollup) -> dict[str, object]:
    return {name: getattr(rollup, name) for name in SCORES}


def _rollup(row: dict) -> Rollup:
    return Rollup(**{name: row[name] for name in SCORES})


def _reliability(rollup: Rollup) -> str:
    """The share of scored frames the detector could rely on, in words."""
    if rollup.frames == 0:
        return "no frame scored"
    reliable = round(100 * (1 - rollup.uncertain))
    return f"{reliable}% of {rollup.frames} scored frames reliable"
