"""Where each detector looks over a dataset, as numbers (``evaluate --regions``).

For every image the face's five landmarks are found (MTCNN, on the image as the detector sees
it) and mapped to facial regions (:mod:`deepfake_xai.face_regions`); the detector's final-layer
Grad-CAM of the class it predicts is split by region. Per true class the shares are averaged
over the faces, beside the share of the image each region covers (what an even map would give),
with the concentration: the fraction of the face's area that holds half of the map's mass on
the face (0.5 for an even map, small for a focused one). Images without a face found, and maps
without any mass (no evidence for the predicted class), are left out of the shares; a class's
``faces`` counts the faces that were shared out. The same pass gives the penultimate features,
whose class separation is measured in :mod:`deepfake_xai.trust.separation`.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..data import ImageDataset, Sample, make_loader
from ..detectors import Detector
from ..engine import Engine
from ..face_regions import (
    FACE_REGIONS,
    area_shares,
    face_landmarks,
    face_region_map,
    half_mass_area,
    region_shares,
)
from ..render import resize_map
from .separation import separation

METHOD, LAYER, TARGET = "gradcam", "final", "predicted"
CLASSES = ("real", "fake", "all")
DEFAULT_PROJECTIONS = ("tsne", "umap")


@dataclass
class _Looks:
    """One detector's per-image measurements."""

    targets: list[int] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    faces: list[tuple[int, np.ndarray, np.ndarray, float]] = field(default_factory=list)
    found: int = 0  # images with a face, with or without a map to share out

    def summary(self, projections: Sequence[str], seed: int) -> dict[str, Any]:
        targets = np.array(self.targets, dtype=np.int64)
        embeddings = np.concatenate(self.embeddings) if self.embeddings else np.zeros((0, 1))
        return {
            "images": len(targets),
            "faces_found": self.found,
            "classes": {c: self._class_summary(c) for c in CLASSES},
            "separation": separation(embeddings, targets, projections, seed=seed),
        }

    def _class_summary(self, name: str) -> dict[str, Any]:
        rows = [r for r in self.faces if name == "all" or CLASSES[r[0]] == name]
        if not rows:
            return {"faces": 0}
        shares, areas, spread = (np.array([r[i] for r in rows]) for i in (1, 2, 3))
        return {
            "faces": len(rows),
            "shares": dict(zip(FACE_REGIONS, shares.mean(axis=0).tolist(), strict=True)),
            "area": dict(zip(FACE_REGIONS, areas.mean(axis=0).tolist(), strict=True)),
            "half_mass_area": float(np.nanmean(spread)) if np.isfinite(spread).any() else math.nan,
        }


@dataclass
class RegionStudy:
    """Per detector: region shares, area shares and concentration per class, and separation."""

    detectors: dict[str, dict[str, Any]]
    projections: tuple[str, ...]
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": METHOD,
            "layer": LAYER,
            "target": TARGET,
            "regions": list(FACE_REGIONS),
            "projections": list(self.projections),
            "seconds": self.seconds,
            "detectors": self.detectors,
        }

    def to_markdown(self, digits: int = 3) -> str:
        """Two tables: the shares per region and class, and the separation figures."""
        header = ["detector", "class", "faces", *FACE_REGIONS, "half the mass in"]
        rows = []
        for name, study in self.detectors.items():
            for cls in CLASSES:
                summary = study["classes"][cls]
                if summary["faces"]:
                    cells = [summary["shares"][r] for r in FACE_REGIONS]
                    rows.append([name, cls, summary["faces"], *cells, summary["half_mass_area"]])
            if study["classes"]["all"]["faces"]:
                area = study["classes"]["all"]["area"]
                rows.append([name, "area (an even map)", "", *area.values(), 0.5])
        lines = [
            "## Where the detectors look",
            "",
            "Share of the final-layer Grad-CAM mass (class predicted) per facial region, mean "
            "over the faces found; *half the mass in*: the fraction of the face's area that "
            "holds half of its mass (0.5 for an even map).",
            "",
            _table(header, rows, digits),
            "## How the penultimate features separate the classes",
            "",
            "Silhouette of the true classes and 5-NN accuracy (5-fold), in the full embedding "
            "and in each 2-D map.",
            "",
            _table(*self._separation_rows(), digits),
        ]
        return "\n".join(lines)

    def _separation_rows(self) -> tuple[list[str], list[list[Any]]]:
        spaces = ["embedding", *self.projections]
        header = ["detector"] + [f"{k}: {s}" for s in spaces for k in ("silhouette", "k-NN")]
        rows = []
        for name, study in self.detectors.items():
            row: list[Any] = [name]
            for space in spaces:
                figures = study["separation"].get(space, {})
                row += [figures.get("silhouette", math.nan), figures.get("knn_accuracy", math.nan)]
            rows.append(row)
        return header, rows


def study_regions(
    detectors: Sequence[Detector],
    names: Sequence[str],
    samples: Sequence[Sample],
    *,
    projections: Sequence[str] | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> RegionStudy:
    """Region shares, concentration and separation of each detector over ``samples``;
    separation also in each 2-D map of ``projections`` (default :data:`DEFAULT_PROJECTIONS`)."""
    projections = DEFAULT_PROJECTIONS if projections is None else tuple(projections)
    looks = {name: _Looks() for name in names}
    seconds: dict[str, float] = defaultdict(float)
    groups: dict[Any, list[tuple[str, Detector]]] = defaultdict(list)
    for name, detector in zip(names, detectors, strict=True):
        groups[detector.harmonization].append((name, detector))
    for harmonization, group in groups.items():
        loader = make_loader(
            ImageDataset(samples, harmonization), batch_size, num_workers=num_workers
        )
        engines = {
            name: Engine(
                [d], method=METHOD, layers=(LAYER,), target=TARGET, device=d.device, amp=False
            )
            for name, d in group
        }
        batches = loader
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(loader, desc="regions", unit="batch")
        for images, targets, _ in batches:
            start = time.perf_counter()
            labels = [_face_labels(image) for image in images]
            seconds["faces"] += time.perf_counter() - start
            for name, detector in group:
                start = time.perf_counter()
                output = engines[name].run(images.to(detector.device), check_finite=False)
                _record(looks[name], targets, output[detector.name], labels)
                seconds["explain"] += time.perf_counter() - start
    start = time.perf_counter()
    detectors_summary = {name: look.summary(projections, seed) for name, look in looks.items()}
    seconds["separation"] = time.perf_counter() - start
    return RegionStudy(detectors_summary, tuple(projections), dict(seconds))


def _face_labels(image) -> np.ndarray | None:
    """The region map of a uint8 ``(3, H, W)`` image, or None when no face is found."""
    picture = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    landmarks = face_landmarks(picture)
    return None if landmarks is None else face_region_map(picture.height, picture.width, landmarks)


def _record(look: _Looks, targets, output, labels: list[np.ndarray | None]) -> None:
    classes = [int(t) for t in targets.tolist()]
    look.targets += classes
    look.embeddings.append(output.embeddings)
    for cls, heatmap, label in zip(classes, output.heatmaps[LAYER], labels, strict=True):
        if label is None:
            continue
        look.found += 1
        full = resize_map(heatmap, label.shape[::-1])
        shares = region_shares(full, label)
        if shares is not None:
            look.faces.append((cls, shares, area_shares(label), half_mass_area(full, label)))


def _table(header: list[str], rows: list[list[Any]], digits: int) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    lines = [header, ["---", *["---:"] * (len(header) - 1)], *[[cell(v) for v in r] for r in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"
