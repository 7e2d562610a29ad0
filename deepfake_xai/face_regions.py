"""Facial regions from MTCNN's five landmarks, and how a heatmap's mass falls on them.

The landmarks (eye centres, nose tip, mouth corners; :class:`deepfake_xai.faces.FaceBox`) fix a
face frame: the origin between the eyes, one axis along them, the other towards the mouth, and
the eye distance as the unit, so the regions turn and scale with the face. In that frame the
eyes are ellipses around the eye centres, the mouth an ellipse around the mouth corners, the nose
and nose bridge a band from between the eyes to below the nose tip, and the head an ellipse
(about 2.3 eye distances wide, from 1.5 above the eyes to the chin); the head above the brows
is forehead and hair, the rest of it cheeks and skin, and everything outside it is outside the
face. The proportions are those of a frontal face (the FFHQ-aligned faces), so the borders are
approximate by a few pixels; the summary is meant for shares over many faces, not one pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

EYES = "eyes"
NOSE = "nose and nose bridge"
MOUTH = "mouth"
SKIN = "cheeks and skin"
FOREHEAD = "forehead and hair"
OUTSIDE = "outside the face"
FACE_REGIONS: tuple[str, ...] = (EYES, NOSE, MOUTH, SKIN, FOREHEAD, OUTSIDE)

# Shapes in eye distances (x along the eyes, y towards the mouth, origin between the eyes).
_EYE_RADII = (0.35, 0.25)
_MOUTH_MARGIN = (0.15, 0.25)  # beyond the corners, and above / below the mouth line
_BRIDGE_TOP = -0.2  # the nose band starts this far above the eye line
_NOSE_BELOW = 0.15  # and ends this far below the nose tip
_NOSE_HALF_WIDTH = (0.15, 0.3)  # at the bridge and at the tip
_HEAD_CENTRE_Y = 0.15
_HEAD_RADII = (1.15, 1.65)  # from 1.5 above the eye line to 1.8 below it
_BROW = -0.3  # above this the head is forehead and hair


def face_landmarks(image: Image.Image) -> np.ndarray | None:
    """The five ``(x, y)`` landmarks of the largest face MTCNN finds in ``image``, or None."""
    from .faces import find_faces

    faces = find_faces(image)
    if not faces or faces[0].landmarks is None:
        return None
    return np.asarray(faces[0].landmarks, dtype=np.float64)


def face_region_map(
    height: int, width: int, landmarks: Sequence[Sequence[float]] | np.ndarray
) -> np.ndarray:
    """An ``(height, width)`` array of indices into :data:`FACE_REGIONS` for a face with
    ``landmarks`` (left eye, right eye, nose tip, left and right mouth corner, in pixels)."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    origin = (left_eye + right_eye) / 2
    unit = max(float(np.hypot(*(right_eye - left_eye))), 1e-6)
    across = (right_eye - left_eye) / unit
    down = np.array([-across[1], across[0]])
    if np.dot((mouth_left + mouth_right) / 2 - origin, down) < 0:
        down = -down

    def frame(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        offset = xy - origin
        return offset @ across / unit, offset @ down / unit

    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    u, v = frame(np.stack([xs, ys], axis=-1))
    (nose_u,), (nose_v,) = frame(nose[None])
    (mouth_u,), (mouth_v,) = frame(((mouth_left + mouth_right) / 2)[None])
    mouth_half = float(np.hypot(*(mouth_right - mouth_left))) / unit / 2

    labels = np.full((height, width), FACE_REGIONS.index(OUTSIDE), dtype=np.int64)
    head = _inside(u, v - _HEAD_CENTRE_Y, _HEAD_RADII)
    labels[head] = FACE_REGIONS.index(SKIN)
    labels[head & (v < _BROW)] = FACE_REGIONS.index(FOREHEAD)
    along = np.clip((v - _BRIDGE_TOP) / max(nose_v - _BRIDGE_TOP, 1e-6), 0.0, 1.0)
    half_width = _NOSE_HALF_WIDTH[0] + (_NOSE_HALF_WIDTH[1] - _NOSE_HALF_WIDTH[0]) * along
    nose_band = (v >= _BRIDGE_TOP) & (v <= nose_v + _NOSE_BELOW)
    labels[nose_band & (np.abs(u - along * nose_u) <= half_width)] = FACE_REGIONS.index(NOSE)
    mouth_radii = (mouth_half + _MOUTH_MARGIN[0], _MOUTH_MARGIN[1])
    labels[_inside(u - mouth_u, v - mouth_v, mouth_radii)] = FACE_REGIONS.index(MOUTH)
    eyes = _inside(u + 0.5, v, _EYE_RADII) | _inside(u - 0.5, v, _EYE_RADII)
    labels[eyes] = FACE_REGIONS.index(EYES)
    return labels


def _inside(u: np.ndarray, v: np.ndarray, radii: tuple[float, float]) -> np.ndarray:
    return (u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= 1.0


def region_shares(heatmap: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """The share of ``heatmap``'s mass (values clipped at 0) on each of :data:`FACE_REGIONS`
    (summing to 1), or None for a map without mass."""
    values = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, None)
    total = values.sum()
    if total <= 0:
        return None
    return np.bincount(labels.ravel(), values.ravel(), minlength=len(FACE_REGIONS)) / total


def half_mass_area(heatmap: np.ndarray, labels: np.ndarray) -> float:
    """The smallest fraction of the face's area (every region but outside) that holds half of
    the map's mass on the face: 0.5 for an even map, near 0 for a focused one (NaN: no mass)."""
    values = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, None)
    face = np.sort(values[labels != FACE_REGIONS.index(OUTSIDE)])[::-1]
    if not face.size or face.sum() <= 0:
        return float("nan")
    needed = int(np.searchsorted(np.cumsum(face), face.sum() / 2)) + 1
    return needed / face.size


def area_shares(labels: np.ndarray) -> np.ndarray:
    """The share of the image each of :data:`FACE_REGIONS` covers (an even map's mass)."""
    return np.bincount(labels.ravel(), minlength=len(FACE_REGIONS)) / labels.size
