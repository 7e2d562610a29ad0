"""One image, from its source to the uint8 tensors the detectors see, or to the reason it cannot.

The same steps run in the local DataLoader workers and in Ray's CPU decoding tasks: decode
through :func:`deepfake_xai.images.load_image`, find the faces (largest first) and frame the
largest like the training faces, then harmonise once per distinct :class:`Harmonization` among
the detectors. An image that cannot be decoded, or in which no face is found, comes back with
its status and reason instead of tensors. What the detectors' input checks need comes along
(see :func:`deepfake_xai.reliability.input_problems`): the image's size, the face box and the
JPEG quality read from the file's header.

A video (see :mod:`deepfake_xai.video`) gives several items through :meth:`Decoder.decode`: one
per face of each sampled frame (at most :data:`MAX_FACES_PER_FRAME`, largest first), its faces
linked into tracks across frames (:func:`deepfake_xai.tracks.link_tracks`), one ``no_face``
item per frame without a face, and one ``unreadable`` item (no frame) for a video that cannot be
read or that ends before its last sample (the frames before that end are kept).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from ..faces import FaceBox, FacesExtraMissing, find_faces, frame_face
from ..images import ImageLoadError, jpeg_quality, load_image
from ..preprocessing import Harmonization, to_uint8_tensor
from ..tracks import link_tracks
from ..video import (
    Sampling,
    VideoFrame,
    VideoLimits,
    is_video_path,
    open_video,
    probe_video,
)
from .store import NO_FACE, OK, UNREADABLE

FACES_OFF = -1
"""The ``faces`` count of an image when the face check is off."""
MAX_FACES_PER_FRAME = 4
"""Faces analysed per sampled video frame (the largest ones); the count found is recorded."""


def draft_size(harmonizations: Sequence[Harmonization]) -> tuple[int, int] | None:
    """JPEG draft size: twice the largest input side (as in training); off for face crops."""
    if any(h.face_crop for h in harmonizations):
        return None
    side = 2 * max(h.image_size for h in harmonizations)
    return side, side


def harmonization_slots(
    harmonizations: dict[str, Harmonization],
) -> tuple[list[Harmonization], dict[str, int]]:
    """The distinct harmonizations, and detector name -> position in that list."""
    distinct: list[Harmonization] = []
    slot = {}
    for name, harmonization in harmonizations.items():
        if harmonization not in distinct:
            distinct.append(harmonization)
        slot[name] = distinct.index(harmonization)
    return distinct, slot


@dataclass
class DecodedImage:
    """One image after decoding: ``tensors`` (one per harmonization) when ``status`` is ok."""

    index: int
    path: str
    label: str | None
    status: str
    error: str = ""
    faces: int = FACES_OFF
    box: tuple[int, int, int, int] | None = None
    tensors: tuple[torch.Tensor, ...] | None = None
    size: tuple[int, int] | None = None  # (width, height) as decoded, before framing
    jpeg_quality: int | None = None
    video: bool = False  # a video's frame (or the video itself, when frame is None)
    frame: int | None = None
    track: int | None = None
    time: float | None = None
    duration: float | None = None


@dataclass(frozen=True)
class Decoder:
    """Decodes, checks for a face and harmonises; plain and picklable, so it travels to Ray.

    With ``faces`` on, JPEG draft decoding is off: the face is framed from the full image,
    which can be much smaller than the image itself. With it off, a drafted image keeps both
    sides at least twice every detector's input size, above any smallest face they can judge.
    """

    harmonizations: tuple[Harmonization, ...]
    faces: bool = True
    sampling: Sampling = Sampling()
    limits: VideoLimits = VideoLimits()

    @property
    def draft(self) -> tuple[int, int] | None:
        return None if self.faces else draft_size(self.harmonizations)

    def decode(self, index: int, source: Any, path: str, label: str | None) -> list[DecodedImage]:
        """The items of input ``index``: one for an image, one per frame and face for a video
        file (a path named like one)."""
        if isinstance(source, (str, os.PathLike)) and is_video_path(source):
            return self.video(index, source, path, label)
        return [self(index, source, path, label)]

    def sampled_frames(self, source: str | os.PathLike) -> int:
        """How many frames the video at ``source`` gives (1, its error row, when it cannot be
        read); only its header is read."""
        try:
            info = probe_video(source, limits=self.limits)
        except ImageLoadError:
            return 1
        return len(self.sampling.frame_numbers(info.frame_count, info.fps))

    def video(
        self, index: int, source: str | os.PathLike, path: str, label: str | None
    ) -> list[DecodedImage]:
        """The sampled frames of a video, one item per face (see the module docstring). Each
        frame is framed as it comes and let go, so only the face crops are held."""

        def item(status: str, error: str = "", **facts: Any) -> DecodedImage:
            return DecodedImage(index, path, label, status, error, video=True, **facts)

        seen: list[tuple[dict[str, Any], list[FaceBox] | str, list[tuple]]] = []
        problem = ""
        try:
            with open_video(source, self.sampling, limits=self.limits, name=path) as opened:
                info, frames = opened
                for frame in frames:
                    seen.append(self._look(frame, info.duration))
        except ImageLoadError as exc:
            if not seen:
                return [item(UNREADABLE, exc.reason)]
            problem = exc.reason  # the stream ended early: the frames before are kept
        tracks = link_tracks([faces if isinstance(faces, list) else [] for _, faces, _ in seen])
        items = []
        for (at, faces, crops), numbers in zip(seen, tracks, strict=True):
            if isinstance(faces, str):
                items.append(item(UNREADABLE, faces, **at))
            elif not self.faces:
                items.append(item(OK, tensors=crops[0], track=0, **at))
            elif not faces:
                items.append(item(NO_FACE, "no face found", faces=0, **at))
            else:
                for box, track, tensors in zip(faces, numbers, crops, strict=True):
                    corner = (box.x, box.y, box.width, box.height)
                    facts = {"box": corner, "tensors": tensors, "track": track, **at}
                    items.append(item(OK, faces=len(faces), **facts))
        if problem:
            items.append(item(UNREADABLE, problem))
        return items

    def _look(
        self, frame: VideoFrame, duration: float
    ) -> tuple[dict[str, Any], list[FaceBox] | str, list[tuple]]:
        """A frame's facts, its faces (or the face detector's error) and the tensors of each
        face framed (of the whole frame with the face check off)."""
        at = {"frame": frame.number, "time": frame.time, "duration": duration}
        at["size"] = frame.image.size
        faces = self._frame_faces(frame.image)
        if not self.faces:
            return at, faces, [self._tensors(frame.image)]
        if isinstance(faces, str):
            return at, faces, []
        return at, faces, [self._tensors(frame_face(frame.image, box)) for box in faces]

    def _tensors(self, image: Image.Image) -> tuple[torch.Tensor, ...]:
        """``image`` harmonised once per distinct harmonization, as uint8 tensors."""
        return tuple(to_uint8_tensor(h.apply(image)) for h in self.harmonizations)

    def _frame_faces(self, image: Image.Image) -> list[FaceBox] | str:
        """The largest faces of a frame (an empty list with the face check off, as for a frame
        analysed whole), or the face detector's error."""
        if not self.faces:
            return []
        try:
            return find_faces(image)[:MAX_FACES_PER_FRAME]
        except FacesExtraMissing:
            raise
        except Exception as exc:  # the face detector's own failure on this frame
            return f"face detection failed: {exc}"

    def __call__(self, index: int, source: Any, path: str, label: str | None) -> DecodedImage:
        """Decode ``source`` (image ``index``, recorded as ``path``, the text of its path)."""
        try:
            image = load_image(source, draft_size=self.draft, name=path)
        except ImageLoadError as exc:
            return DecodedImage(index, path, label, UNREADABLE, exc.reason)
        size, quality = image.size, _quality(source, path)
        found, box = FACES_OFF, None
        if self.faces:
            try:
                boxes = find_faces(image)
            except FacesExtraMissing:
                raise
            except Exception as exc:  # the face detector's own failure on this image
                return DecodedImage(index, path, label, UNREADABLE, f"face detection failed: {exc}")
            found = len(boxes)
            if not boxes:
                return DecodedImage(index, path, label, NO_FACE, "no face found", found)
            box = (boxes[0].x, boxes[0].y, boxes[0].width, boxes[0].height)
            image = frame_face(image, boxes[0])
        return DecodedImage(
            index, path, label, OK, "", found, box, self._tensors(image), size, quality
        )


def _quality(source: Any, path: str) -> int | None:
    """The JPEG quality in ``source``'s header (None for other formats, or a stream already
    read by the decoder)."""
    try:
        return jpeg_quality(source, name=path)
    except ImageLoadError:
        return None
