"""Face boxes from OpenCV's Haar cascades (the ``[faces]`` extra), for audits and face crops."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

EXTRA_HINT = "face detection needs the [faces] extra: pip install 'deepfake-xai[faces]'"


class FacesExtraMissing(ImportError):
    """OpenCV is not installed."""


@dataclass(frozen=True)
class FaceBox:
    """A face box in pixels, with the eye centres when the eye cascade found two."""

    x: int
    y: int
    width: int
    height: int
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None

    @property
    def inter_ocular(self) -> float | None:
        if self.eyes is None:
            return None
        (x0, y0), (x1, y1) = self.eyes
        return float(np.hypot(x1 - x0, y1 - y0))


def faces_available() -> bool:
    try:
        _cascades()
    except FacesExtraMissing:
        return False
    return True


@lru_cache(maxsize=1)
def _cascades():
    try:
        import cv2
    except ImportError as exc:
        raise FacesExtraMissing(EXTRA_HINT) from exc
    face = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    eyes = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")
    if face.empty():
        raise FacesExtraMissing(f"OpenCV {cv2.__version__} ships no Haar cascades; {EXTRA_HINT}")
    return cv2, face, eyes


# Where a face sits in the FFHQ-aligned training images (Haar box measured on 120 of the shared
# faces): its box is 0.68 of the image's width, centred at x = 0.50 and y = 0.55 of the side.
FFHQ_BOX_FRACTION = 0.68
FFHQ_BOX_CENTRE = (0.50, 0.55)


def find_faces(image: Image.Image) -> list[FaceBox]:
    """Every frontal face in ``image``, largest first (empty when none is found)."""
    cv2, face_cascade, _ = _cascades()
    gray = np.asarray(image.convert("L"))
    min_side = max(24, min(gray.shape) // 8)
    found = face_cascade.detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side,) * 2
    )
    boxes = [FaceBox(*(int(v) for v in box)) for box in found]
    return sorted(boxes, key=lambda b: b.width * b.height, reverse=True)


def frame_face(image: Image.Image, box: FaceBox) -> Image.Image:
    """A square crop that frames ``box`` the way the FFHQ-aligned training faces are framed.

    The square is shifted to stay inside the image where it fits; an image already framed like
    the training data (the square would cover 85 % of its shorter side or more) comes back whole.
    """
    side = round(box.width / FFHQ_BOX_FRACTION)
    if side >= 0.85 * min(image.size):
        return image
    left = box.x + box.width / 2 - FFHQ_BOX_CENTRE[0] * side
    top = box.y + box.height / 2 - FFHQ_BOX_CENTRE[1] * side
    left = min(max(left, 0), max(image.width - side, 0)) if side <= image.width else left
    top = min(max(top, 0), max(image.height - side, 0)) if side <= image.height else top
    left, top = round(left), round(top)
    return image.crop((left, top, left + side, top + side))


def detect_face(image: Image.Image, *, with_eyes: bool = False) -> FaceBox | None:
    """The largest frontal face in ``image``, or None."""
    cv2, face_cascade, eye_cascade = _cascades()
    gray = np.asarray(image.convert("L"))
    min_side = max(24, min(gray.shape) // 8)
    found = face_cascade.detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side,) * 2
    )
    if len(found) == 0:
        return None
    x, y, w, h = (int(v) for v in max(found, key=lambda b: b[2] * b[3]))
    eyes = None
    if with_eyes and not eye_cascade.empty():
        upper = gray[y : y + h // 2, x : x + w]
        candidates = eye_cascade.detectMultiScale(upper, scaleFactor=1.1, minNeighbors=5)
        if len(candidates) >= 2:
            two = sorted(candidates, key=lambda b: b[2] * b[3])[-2:]
            centres = sorted((x + ex + ew / 2, y + ey + eh / 2) for ex, ey, ew, eh in two)
            eyes = (centres[0], centres[1])
    return FaceBox(x, y, w, h, eyes)


def face_square(box: FaceBox, margin: float) -> tuple[int, int, int, int]:
    """The square ``(left, top, right, bottom)`` centred on ``box`` with ``margin`` around it."""
    side = round(max(box.width, box.height) * (1 + 2 * margin))
    left = round(box.x + box.width / 2 - side / 2)
    top = round(box.y + box.height / 2 - side / 2)
    return left, top, left + side, top + side


def crop_to_face(image: Image.Image, *, margin: float = 0.4) -> Image.Image:
    """A square crop centred on the largest face with ``margin`` of its size around it.

    Images where no face is found are returned unchanged, so both classes go through the same
    step either way.
    """
    box = detect_face(image)
    return image if box is None else image.crop(face_square(box, margin))
