"""Faces through time: link the faces of neighbouring sampled frames into tracks by box overlap.

Faces are linked greedily, largest first, each to the track whose last box overlaps it most
(intersection over union at least ``min_overlap``), looking back over up to ``max_gap`` frames
without that face (a blink of the face detector does not split a track). Sampled frames are
about a second apart, so a face that moves farther than its own size in that time starts a new
track: the price of a linker with no appearance model, stated in docs/video.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .faces import FaceBox

MIN_OVERLAP = 0.3
MAX_GAP = 1


def overlap(a: FaceBox, b: FaceBox) -> float:
    """Intersection over union of two face boxes (0 when they do not touch)."""
    width = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    height = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / (a.width * a.height + b.width * b.height - inter)


@dataclass
class _Track:
    box: FaceBox
    seen: int  # the position of the last frame it was seen in


def link_tracks(
    faces: Sequence[Sequence[FaceBox]],
    *,
    min_overlap: float = MIN_OVERLAP,
    max_gap: int = MAX_GAP,
) -> list[list[int]]:
    """The track number of each face of each frame (``faces[k]``: frame ``k``'s boxes);
    tracks are numbered from 0 in the order they first appear."""
    tracks: list[_Track] = []
    numbers: list[list[int]] = []
    for position, boxes in enumerate(faces):
        taken: set[int] = set()
        order = sorted(range(len(boxes)), key=lambda i: -boxes[i].width * boxes[i].height)
        assigned: dict[int, int] = {}
        for i in order:
            best, best_overlap = None, min_overlap
            for number, track in enumerate(tracks):
                if number in taken or position - track.seen > max_gap + 1:
                    continue
                value = overlap(boxes[i], track.box)
                if value >= best_overlap:
                    best, best_overlap = number, value
            if best is None:
                tracks.append(_Track(boxes[i], position))
                best = len(tracks) - 1
            else:
                tracks[best] = _Track(boxes[i], position)
            taken.add(best)
            assigned[i] = best
        numbers.append([assigned[i] for i in range(len(boxes))])
    return numbers
