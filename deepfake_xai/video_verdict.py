"""One verdict per face track and per video, from the verdicts of the sampled frames.

Per track, over its scored frames: ``p_mean`` is the sigmoid of the mean logit (a geometric
pooling that one odd frame cannot swing) and ``p_high`` the 90th percentile of P(fake) (which
rises when part of the track looks generated). Both are reported; ``p_mean`` decides, as
measured in docs/video.md. Frames whose verdict is ``uncertain`` do not enter the scores (when
all are uncertain the scores of all are shown, for the record). A track is ``uncertain`` when
such frames are most of its frames, else ``fake`` when ``p_mean`` reaches the threshold, else
``real``; ``flagged`` is the share of its scored frames called fake. A video is ``uncertain``
when most of its scored frames are; else its verdict is that of its most suspicious decided
track (one generated face makes the video fake). A video without any face scored gets no
verdict (``""``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .reliability import THRESHOLD, UNCERTAIN

HIGH_QUANTILE = 0.9
DECIDING = "p_mean"  # the score that gives the verdict; p_high is reported beside it


@dataclass(frozen=True)
class Rollup:
    """The verdict of a set of frames (a track or a video) and the numbers behind it."""

    verdict: str  # fake, real, uncertain, or "" without a scored frame
    p_fake: float  # the deciding score (p_mean); NaN without a usable frame
    p_mean: float
    p_high: float
    frames: int  # frames scored
    flagged: float  # share of scored frames called fake
    uncertain: float  # share of scored frames called uncertain


def roll_up(p_fake: Sequence[float], verdicts: Sequence[str]) -> Rollup:
    """The rollup of frames with these P(fake) and verdicts (only frames with a verdict)."""
    scored = [(float(p), v) for p, v in zip(p_fake, verdicts, strict=True) if v]
    n = len(scored)
    if n == 0:
        return Rollup("", math.nan, math.nan, math.nan, 0, math.nan, math.nan)
    uncertain = sum(v == UNCERTAIN for _, v in scored) / n
    flagged = sum(v == "fake" for _, v in scored) / n
    usable = np.array([p for p, v in scored if v != UNCERTAIN], dtype=np.float64)
    if len(usable) == 0:  # scores for the record; the verdict cannot rest on them
        usable = np.array([p for p, _ in scored], dtype=np.float64)
    p_mean, p_high = mean_logit(usable), float(np.quantile(usable, HIGH_QUANTILE))
    verdict = UNCERTAIN if uncertain > 0.5 else "fake" if p_mean >= THRESHOLD else "real"
    return Rollup(verdict, p_mean, p_mean, p_high, n, flagged, uncertain)


def video_rollup(tracks: Sequence[Rollup], frames: Rollup) -> Rollup:
    """The video's verdict: uncertain when most of its scored frames are (``frames`` rolls
    them all up), else that of its most suspicious decided track."""
    if frames.frames == 0:
        return frames
    decided = [t for t in tracks if t.verdict in ("fake", "real")]
    if frames.uncertain > 0.5 or not decided:
        return Rollup(UNCERTAIN, *_scores(frames))
    top = max(decided, key=lambda t: t.p_fake)
    return Rollup(top.verdict, top.p_fake, top.p_mean, top.p_high, *_shares(frames))


def mean_logit(p_fake: np.ndarray) -> float:
    """The sigmoid of the mean logit of ``p_fake`` (clipped away from 0 and 1)."""
    p = np.clip(p_fake, 1e-6, 1 - 1e-6)
    return float(1.0 / (1.0 + np.exp(-np.mean(np.log(p / (1 - p))))))


def _scores(frames: Rollup) -> tuple[float, float, float, int, float, float]:
    return (frames.p_fake, frames.p_mean, frames.p_high, *_shares(frames))


def _shares(frames: Rollup) -> tuple[int, float, float]:
    return frames.frames, frames.flagged, frames.uncertain
