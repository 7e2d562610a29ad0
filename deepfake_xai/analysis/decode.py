"""One image, from its source to the uint8 tensors the detectors see, or to the reason it cannot.

The same steps run in the local DataLoader workers and in Ray's CPU decoding tasks: decode
through :func:`deepfake_xai.images.load_image`, find the faces (largest first) and frame the
largest like the training faces, then harmonise once per distinct :class:`Harmonization` among
the detectors. An image that cannot be decoded, or in which no face is found, comes back with
its status and reason instead of tensors. What the detectors' input checks need comes along
(see :func:`deepfake_xai.reliability.input_problems`): the image's size, the face box and the
JPEG quality read from the file's header.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..images import ImageLoadError, jpeg_quality, load_image
from ..preprocessing import Harmonization, to_uint8_tensor
from .store import NO_FACE, OK, UNREADABLE

FACES_OFF = -1
"""The ``faces`` count of an image when the face check is off."""


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


@dataclass(frozen=True)
class Decoder:
    """Decodes, checks for a face and harmonises; plain and picklable, so it travels to Ray.

    With ``faces`` on, JPEG draft decoding is off: the face is framed from the full image,
    which can be much smaller than the image itself. With it off, a drafted image keeps both
    sides at least twice every detector's input size, above any smallest face they can judge.
    """

    harmonizations: tuple[Harmonization, ...]
    faces: bool = True

    @property
    def draft(self) -> tuple[int, int] | None:
        return None if self.faces else draft_size(self.harmonizations)

    def __call__(self, index: int, source: Any, path: str, label: str | None) -> DecodedImage:
        """Decode ``source`` (image ``index``, recorded as ``path``, the text of its path)."""
        try:
            image = load_image(source, draft_size=self.draft, name=path)
        except ImageLoadError as exc:
            return DecodedImage(index, path, label, UNREADABLE, exc.reason)
        size, quality = image.size, _quality(source, path)
        found, box = FACES_OFF, None
        if self.faces:
            from ..faces import FacesExtraMissing, find_faces, frame_face

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
        tensors = tuple(to_uint8_tensor(h.apply(image)) for h in self.harmonizations)
        return DecodedImage(index, path, label, OK, "", found, box, tensors, size, quality)


def _quality(source: Any, path: str) -> int | None:
    """The JPEG quality in ``source``'s header (None for other formats, or a stream already
    read by the decoder)."""
    try:
        return jpeg_quality(source, name=path)
    except ImageLoadError:
        return None
