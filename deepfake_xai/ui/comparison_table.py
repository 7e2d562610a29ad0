"""The About tab's "Side by side" tables: the loaded detectors compared, from their checkpoints.

Each detector's ``metadata["comparison"]`` holds what ``evaluate`` measured on one test set:
accuracy, F1, ROC AUC, ms per image (and the CPU threads used), the share of Grad-CAM mass per
facial region, ``half_mass_area`` (the share of the face area holding half of that mass) and how
well the penultimate features separate real from fake (silhouette and kNN accuracy in the
embedding and in t-SNE), with the data set, split, n, machine and date. Every field is optional:
a missing or non-numeric one reads "—". The study the project grew out of reported accuracy
only; its two figures are reference rows for the networks it trained, when those are loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..detectors import Detector
from ..face_regions import FACE_REGIONS
from .text import cell, display_name, plain

MISSING = "—"
REGIONS = FACE_REGIONS  # the regions evaluate measures, in its order
SPACES = (("embedding", "embedding"), ("tsne", "t-SNE"))
# What the study's notebook reported (accuracy on its own test split), by architecture.
STUDY = {"efficientnet_b0": 0.974, "mobilenetv2_100": 0.961}
STUDY_SOURCE = (
    "the original study's notebook, on its own split of a 10k-image subset of "
    '"140k Real and Fake Faces" (StyleGAN fakes): another test set, so compare with care'
)


def comparison(detector: Detector) -> Mapping[str, Any] | None:
    """The detector's ``comparison`` block, or None when it has none."""
    block = (detector.metadata or {}).get("comparison")
    return block if isinstance(block, Mapping) else None


def comparison_tables(detectors: Sequence[Detector]) -> str:
    """Markdown: three tables (accuracy and speed, where Grad-CAM looks, feature separation)
    with a row per detector that has a ``comparison`` block, and a caption saying where and
    when it was measured; "" unless at least two detectors have one."""
    compared = [(d, block) for d in detectors if (block := comparison(d)) is not None]
    if len(compared) < 2:
        return ""
    names = [display_name(d.name, d.architecture) for d, _ in compared]
    if len(set(names)) < len(names):  # two checkpoints of one architecture: say which is which
        names = [f"{name} ({d.name})" for name, (d, _) in zip(names, compared, strict=True)]
    rows = list(zip(names, (block for _, block in compared), strict=True))
    study = [
        (f"{display_name(a)}, reported by the study", accuracy)
        for a, accuracy in STUDY.items()
        if any(d.architecture == a or d.name == a for d, _ in compared)
    ]
    lines = ["## Side by side", "", _caption(rows), ""]
    without = [display_name(d.name, d.architecture) for d in detectors if comparison(d) is None]
    if without:
        lines += [f"_No comparison is recorded with {', '.join(map(plain, without))}._", ""]
    lines += [
        "**How often each was right, and how fast**",
        "",
        "| detector | accuracy | F1 | ROC AUC | ms per image |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, block in rows:
        scores = [_decimal(block.get(key), 3) for key in ("accuracy", "f1", "roc_auc")]
        lines.append(_row(name, *scores, _speed(block)))
    for name, accuracy in study:
        lines.append(_row(name, _decimal(accuracy, 3), MISSING, MISSING, MISSING))
    if study:
        lines += ["", f"_The study's rows: accuracy only, from {STUDY_SOURCE}._"]
    lines += [
        "",
        "**Where its Grad-CAM evidence lies**: the share of the heatmap's mass on each part of "
        "the face, over the test faces (each row adds up to about 100%). The last column is how "
        "concentrated it is: the share of the face area that holds half of the mass (lower is "
        "more focused).",
        "",
        "| detector | " + " | ".join(REGIONS) + " | half the mass in |",
        "|---|" + "---:|" * (len(REGIONS) + 1),
    ]
    for name, block in rows:
        regions = block.get("regions")
        regions = regions if isinstance(regions, Mapping) else {}
        shares = [_percent(regions.get(region)) for region in REGIONS]
        lines.append(_row(name, *shares, _area(block.get("half_mass_area"))))
    lines += [
        "",
        "**How well its features separate real from fake faces**: silhouette (from -1 to 1; "
        "higher means two cleaner clusters) and the accuracy of a nearest-neighbour vote, in "
        "its own feature space and in the 2-D t-SNE map of it.",
        "",
        "| detector | "
        + " | ".join(f"{s} silhouette | {s} kNN accuracy" for _, s in SPACES)
        + " |",
        "|---|" + "---:|" * (2 * len(SPACES)),
    ]
    for name, block in rows:
        separation = block.get("separation")
        separation = separation if isinstance(separation, Mapping) else {}
        values = []
        for key, _ in SPACES:
            space = separation.get(key)
            space = space if isinstance(space, Mapping) else {}
            values += [_decimal(space.get("silhouette"), 2), _decimal(space.get("knn_accuracy"), 3)]
        lines.append(_row(name, *values))
    return "\n".join(lines)


def _caption(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Where and when: one line when every detector was measured alike, else one per detector."""
    said = [(name, _measured(block)) for name, block in rows]
    if len({text for _, text in said}) == 1:
        return f"_Measured {said[0][1]}._"
    return "\n".join(f"- _{plain(name)}: measured {text}._" for name, text in said)


def _measured(block: Mapping[str, Any]) -> str:
    dataset = block.get("dataset")
    n = block.get("n")
    where = f"on {cell(dataset)}" if dataset else "on a test set not recorded"
    parts = [f"{where}, n = {int(n):,}" if _number(n) else where]
    if block.get("machine"):
        parts.append(f"machine: {cell(block['machine'])}")
    if block.get("date"):
        parts.append(f"date: {cell(block['date'])}")
    return "; ".join(parts)


def _row(name: str, *values: str) -> str:
    return f"| {cell(name)} | " + " | ".join(values) + " |"


def _speed(block: Mapping[str, Any]) -> str:
    ms = block.get("ms_per_image")
    if not _number(ms):
        return MISSING
    threads = block.get("threads")
    if _number(threads):
        return f"{ms:.1f} ({int(threads)} thread{'s' if threads != 1 else ''})"
    return f"{ms:.1f}"


def _decimal(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if _number(value) else MISSING


def _percent(value: Any) -> str:
    return f"{value:.0%}" if _number(value) else MISSING


def _area(value: Any) -> str:
    return f"{value:.0%} of the face" if _number(value) else MISSING


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
