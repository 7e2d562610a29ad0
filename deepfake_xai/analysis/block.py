"""A block of decoded images through the engines, into the rows of one run-store part.

:class:`DecodedBlock` is what the decoding side hands over (tensors for the images that decoded
with a face, status and reason for the others); :class:`BlockAnalyser` runs every engine on it
and returns the block's rows as an Arrow table in the store's layout. The local loop and Ray's
engine actors both call it, so both backends write the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from ..detectors import Detector
from ..engine import DetectorOutput, Engine
from ..explainers.base import heatmap_layers
from ..faces import FaceBox
from ..reliability import assess, input_problems
from .decode import FACES_OFF, DecodedImage
from .store import (
    EMBEDDING,
    FACE_FIELDS,
    INVALID_SCORE,
    JPEG_QUALITY,
    MODEL_VERSION,
    OK,
    REASONS_SEPARATOR,
    ROW_SCHEMA,
    array_column,
    cam_column,
)

NAN_SCORE = "the detector returned a NaN or infinite score; no verdict"
NO_QUALITY = -1  # the jpeg_quality of an image that is no JPEG, in a block


@dataclass
class DecodedBlock:
    """Images of one block: per-row facts, and one uint8 ``(n_ok, 3, S, S)`` tensor per
    harmonization holding the rows whose status is ok, in row order."""

    index: np.ndarray
    path: list[str]
    label: list[str | None]
    status: list[str]
    error: list[str]
    faces: np.ndarray
    boxes: np.ndarray
    sizes: np.ndarray  # (n, 2) width and height as decoded; 0 for images that were not
    quality: np.ndarray  # JPEG quality, NO_QUALITY for other images
    images: list[torch.Tensor]
    video: np.ndarray | None = None  # a video's frame; then frame, track (-1: none) and times
    frame: np.ndarray | None = None
    track: np.ndarray | None = None
    time: np.ndarray | None = None  # NaN for photos
    duration: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.index)
        self.video = np.zeros(n, dtype=bool) if self.video is None else self.video
        for name in ("frame", "track"):
            if getattr(self, name) is None:
                setattr(self, name, np.full(n, -1, dtype=np.int32))
        for name in ("time", "duration"):
            if getattr(self, name) is None:
                setattr(self, name, np.full(n, np.nan))

    def __len__(self) -> int:
        return len(self.index)

    @property
    def decoded(self) -> np.ndarray:
        return np.array([s == OK for s in self.status], dtype=bool)

    @classmethod
    def from_images(cls, items: Sequence[DecodedImage], slots: int) -> DecodedBlock:
        good = [item.tensors for item in items if item.tensors is not None]
        return cls(
            index=np.array([item.index for item in items], dtype=np.int64),
            path=[item.path for item in items],
            label=[item.label for item in items],
            status=[item.status for item in items],
            error=[item.error for item in items],
            faces=np.array([item.faces for item in items], dtype=np.int32),
            boxes=np.array([item.box or (-1, -1, -1, -1) for item in items], dtype=np.int32),
            sizes=np.array([item.size or (0, 0) for item in items], dtype=np.int32).reshape(-1, 2),
            quality=np.array(
                [NO_QUALITY if item.jpeg_quality is None else item.jpeg_quality for item in items],
                dtype=np.int32,
            ),
            images=[
                torch.stack([t[k] for t in good]) if good else _no_images() for k in range(slots)
            ],
            video=np.array([item.video for item in items], dtype=bool),
            frame=_numbers([item.frame for item in items]),
            track=_numbers([item.track for item in items]),
            time=_seconds([item.time for item in items]),
            duration=_seconds([item.duration for item in items]),
        )

    def to_columns(self) -> dict[str, np.ndarray]:
        """Equal-length numpy columns (images zero-padded to every row), as Ray Data carries
        them between tasks."""
        columns = {
            "index": self.index,
            "path": np.array(self.path, dtype=object),
            "label": np.array(self.label, dtype=object),
            "status": np.array(self.status, dtype=object),
            "error": np.array(self.error, dtype=object),
            "faces": self.faces,
            "boxes": self.boxes,
            "sizes": self.sizes,
            "quality": self.quality,
        }
        decoded = self.decoded
        for k, images in enumerate(self.images):
            padded = np.zeros((len(self), *images.shape[1:]), dtype=np.uint8)
            padded[decoded] = images.numpy()
            columns[f"image_{k}"] = padded
        return columns

    @classmethod
    def from_columns(cls, columns: Mapping[str, np.ndarray], slots: int) -> DecodedBlock:
        status = [str(s) for s in columns["status"]]
        decoded = np.array([s == OK for s in status], dtype=bool)
        return cls(
            index=np.asarray(columns["index"], dtype=np.int64),
            path=[str(p) for p in columns["path"]],
            label=[None if v is None else str(v) for v in columns["label"]],
            status=status,
            error=[str(e) for e in columns["error"]],
            faces=np.asarray(columns["faces"], dtype=np.int32),
            boxes=np.asarray(columns["boxes"], dtype=np.int32).reshape(-1, 4),
            sizes=np.asarray(columns["sizes"], dtype=np.int32).reshape(-1, 2),
            quality=np.asarray(columns["quality"], dtype=np.int32),
            images=[
                torch.from_numpy(np.ascontiguousarray(columns[f"image_{k}"][decoded]))
                for k in range(slots)
            ],
        )

    def pin_memory(self) -> DecodedBlock:
        """Called by the DataLoader with ``pin_memory=True`` (CUDA)."""
        self.images = [image.pin_memory() for image in self.images]
        return self


def _numbers(values: Sequence[int | None]) -> np.ndarray:
    return np.array([-1 if v is None else v for v in values], dtype=np.int32)


def _seconds(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _no_images() -> torch.Tensor:
    return torch.zeros((0, 3, 1, 1), dtype=torch.uint8)


def build_engines(
    detectors: Sequence[Detector],
    explainers: Sequence[str],
    layers: Sequence[str],
    target: str,
    device: torch.device,
    amp: bool | None,
) -> list[Engine]:
    """One engine per explainer over the same detectors (predictions only without any)."""
    methods: list[str | None] = list(explainers) or [None]
    options = {"layers": layers, "target": target, "device": device, "amp": amp}
    first = Engine(detectors, method=methods[0], **options)
    return [first] + [Engine(first.detectors, method=m, **options) for m in methods[1:]]


def _video_columns(block: DecodedBlock) -> dict[str, pa.Array]:
    """``video``, ``track``, ``frame``, ``time`` and ``duration`` of each row (see the store)."""
    return {
        "video": pa.array(block.video, type=pa.bool_()),
        "track": pa.array(block.track, mask=block.track < 0, type=pa.int32()),
        "frame": pa.array(block.frame, mask=block.frame < 0, type=pa.int32()),
        "time": pa.array(block.time, mask=np.isnan(block.time), type=pa.float64()),
        "duration": pa.array(block.duration, mask=np.isnan(block.duration), type=pa.float64()),
    }


class BlockAnalyser:
    """Every engine on a :class:`DecodedBlock`; the rows of the block as an Arrow table."""

    def __init__(self, engines: Sequence[Engine], explainers: Sequence[str], slot: dict[str, int]):
        self.engines = list(engines)
        self.explainers = list(explainers)
        self.layers = list(engines[0].layers)
        self.detectors = {d.name: d for d in engines[0].detectors}
        self.names = list(self.detectors)
        self.slot = slot

    def __call__(self, block: DecodedBlock) -> pa.Table:
        outputs: list[dict[str, DetectorOutput]] = []
        if block.decoded.any():
            feed = self._feed(block)
            # NaN scores become invalid_score rows below, one image at a time.
            outputs = [engine.run(feed, check_finite=False) for engine in self.engines]
        return pa.concat_tables([self._rows(block, name, outputs) for name in self.names])

    def _feed(self, block: DecodedBlock) -> torch.Tensor | dict[str, torch.Tensor]:
        """The shared batch, or each detector's own when their harmonizations differ."""
        if len(block.images) == 1:
            return block.images[0]
        return {name: block.images[self.slot[name]] for name in self.names}

    def _rows(
        self, block: DecodedBlock, name: str, outputs: list[dict[str, DetectorOutput]]
    ) -> pa.Table:
        """The block's rows for detector ``name``: scores, verdicts, statuses, faces, arrays."""
        decoded = block.decoded
        n = len(block)
        p_fake, ood = np.full(n, np.nan), np.full(n, np.nan)
        if outputs:
            output = outputs[0][name]
            usable = np.isfinite(output.logits)  # an infinite logit is no score either
            p_fake[decoded] = np.where(usable, output.probs.astype(np.float64), np.nan)
            if output.ood_scores is not None:
                ood[decoded] = output.ood_scores
        status, error = list(block.status), list(block.error)
        for row in np.flatnonzero(decoded & ~np.isfinite(p_fake)):
            status[row], error[row] = INVALID_SCORE, NAN_SCORE
        scored = np.array([s == OK for s in status], dtype=bool)
        verdict, reliable, reasons = self._assess(block, name, p_fake, ood, scored)
        checked = block.faces != FACES_OFF
        boxed = block.boxes[:, 0] >= 0
        fingerprint = self.detectors[name].fingerprint or ""
        columns: dict[str, pa.Array] = {
            "index": pa.array(block.index, type=pa.int64()),
            "path": pa.array(block.path, type=pa.string()),
            "detector": pa.array([name] * n, type=pa.string()),
            "p_fake": pa.array(p_fake, mask=~scored, type=pa.float64()),
            "verdict": pa.array(verdict, type=pa.string()),
            "ood_score": pa.array(ood, mask=~(scored & np.isfinite(ood)), type=pa.float64()),
            "reliable": pa.array(reliable, type=pa.bool_()),
            "reasons": pa.array(reasons, type=pa.string()),
            "label": pa.array(block.label, type=pa.string()),
            "error": pa.array(error, type=pa.string()),
            "status": pa.array(status, type=pa.string()),
            FACE_FIELDS[0]: pa.array(block.faces, mask=~checked, type=pa.int32()),
        }
        for k, field in enumerate(FACE_FIELDS[1:]):
            columns[field] = pa.array(block.boxes[:, k], mask=~boxed, type=pa.int32())
        columns[JPEG_QUALITY] = pa.array(
            block.quality, mask=block.quality == NO_QUALITY, type=pa.int32()
        )
        columns[MODEL_VERSION] = pa.array([fingerprint] * n, type=pa.string())
        columns.update(_video_columns(block))
        table = pa.table(columns, schema=ROW_SCHEMA)
        embeddings = outputs[0][name].embeddings if outputs else np.zeros((0, 0))
        table = table.append_column(EMBEDDING, array_column(embeddings, decoded))
        for k, explainer in enumerate(self.explainers):
            output = outputs[k] if outputs else None
            for layer in heatmap_layers(explainer, self.layers):
                maps = output[name].heatmaps[layer] if output else np.zeros((0, 0, 0))
                table = table.append_column(
                    cam_column(explainer, layer), array_column(maps, decoded)
                )
        return table

    def _assess(
        self,
        block: DecodedBlock,
        name: str,
        p_fake: np.ndarray,
        ood: np.ndarray,
        scored: np.ndarray,
    ) -> tuple[list[str], list[bool | None], list[str]]:
        """Verdict, reliability and reasons of each scored row (the input checks, then
        :func:`deepfake_xai.reliability.assess`); ``""``, None and ``""`` for the others."""
        detector = self.detectors[name]
        verdicts, reliable, reasons = [""] * len(block), [None] * len(block), [""] * len(block)
        for row in np.flatnonzero(scored):
            left, top, width, height = (int(v) for v in block.boxes[row])
            box = FaceBox(left, top, width, height) if left >= 0 else None
            quality = int(block.quality[row])
            problems = input_problems(
                detector,
                (int(block.sizes[row, 0]), int(block.sizes[row, 1])),
                box,
                None if quality == NO_QUALITY else quality,
            )
            outcome = assess(float(p_fake[row]), float(ood[row]), problems)
            verdicts[row], reliable[row] = outcome.verdict, outcome.reliable
            reasons[row] = REASONS_SEPARATOR.join(outcome.reasons)
        return verdicts, reliable, reasons
