"""The audit report: verdict, leaking features, per-class tables, histograms, JSON and Markdown."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._io import jsonable, write_errors, write_text
from .features import FEATURES
from .shortcut import ShortcutScore, as_text

CLASSES = ("real", "fake")
HISTOGRAMS = "histograms"

_ADVICE = {
    "format": "Save both classes in one format: write a harmonised copy (`--harmonize`).",
    "encoding": "Re-encode both classes once at one JPEG quality and chroma subsampling "
    "(`--harmonize OUT --jpeg-quality 95`); compression differences are visible in the pixels.",
    "size": "Resize both classes to one size with one resampling method (`--image-size`), "
    "cropping to the same aspect ratio first.",
    "metadata": "Strip metadata and convert both classes to RGB (the harmonised copy does both).",
    "framing": "Crop faces to a fixed margin (`--face-crop`) so that face size and position "
    "do not differ between the classes.",
    "pixels": "Global colour, brightness or sharpness differ between the classes: check how "
    "each class was collected; harmonising resize and encoding narrows sharpness gaps, and "
    "colour gaps need more balanced sources or colour augmentation.",
    "combined": "No single feature stands out, but together they predict the label: look at "
    "the top-scoring features' histograms, write a harmonised copy (`--harmonize`, "
    "`--face-crop` when framing features lead) and audit the copy again.",
    "filename": "File names differ by class. A pixel model never sees them, but it shows the "
    "classes come from different sources (expect other differences) and any model or split "
    "that uses paths can cheat: never feed file names to a model.",
}
_TOPIC = {
    "format": "format",
    "extension": "format",
    "jpeg_quality": "encoding",
    "chroma_subsampling": "encoding",
    "jpeg_progressive": "encoding",
    "file_size": "encoding",
    "bytes_per_pixel": "encoding",
    "width": "size",
    "height": "size",
    "aspect": "size",
    "mode": "metadata",
    "has_exif": "metadata",
    "has_icc": "metadata",
    "has_xmp": "metadata",
    "metadata_keys": "metadata",
}


def _topic(feature: str) -> str:
    """Which piece of advice a feature's leak calls for."""
    return _TOPIC.get(feature, FEATURES[feature].group)


@dataclass
class AuditReport:
    """The result of :func:`~deepfake_xai.audit.audit_dataset`.

    ``shortcut`` scores the features a pixel model can pick up (file, encoding, global pixel
    statistics, face framing); ``filename`` scores the file names alone, kept apart because a
    model never sees them. ``features`` holds one row per readable image.
    """

    source: str
    features: pd.DataFrame
    shortcut: ShortcutScore
    filename: ShortcutScore
    per_class: dict[str, dict[str, Any]]
    errors: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def shortcut_score(self) -> float:
        """Cross-validated balanced accuracy of metadata alone (0.5 = no shortcut)."""
        return self.shortcut.accuracy

    @property
    def leaking_features(self) -> list[tuple[str, float]]:
        """Features that alone predict the label at the leak level or above, best first."""
        both = self.shortcut.leaking + self.filename.leaking
        return sorted(both, key=lambda kv: (-kv[1], kv[0]))

    @property
    def counts(self) -> dict[str, int]:
        """Readable images per class."""
        return {c: int((self.features["label"] == c).sum()) for c in CLASSES}

    @property
    def verdict(self) -> str:
        """One paragraph: is there a shortcut, and through which features."""
        score = self.shortcut
        acc, auc = score.accuracy, score.roc_auc
        named = "; ".join(
            f"{k} alone predicts the label with {v:.0%} accuracy" for k, v in score.leaking
        )
        if acc >= score.leak_level:
            text = (
                f"The dataset leaks the label: a classifier that never sees the faces, only file "
                f"and global image properties, reaches {acc:.0%} balanced accuracy "
                f"(ROC-AUC {auc:.2f}; chance is 50%)."
            )
            text += f" {named}." if named else " No single feature does it alone."
        elif acc >= score.weak_level:
            text = (
                f"Weak shortcut signal: file and global image properties predict the label with "
                f"{acc:.0%} balanced accuracy (ROC-AUC {auc:.2f}; chance is 50%)."
            )
        else:
            text = (
                f"No detectable shortcut: file and global image properties predict the label "
                f"with {acc:.0%} balanced accuracy (ROC-AUC {auc:.2f}), near chance (50%)."
            )
        if self.filename.leaking:
            text += (
                f" File names alone predict the label with {self.filename.accuracy:.0%} accuracy"
                f" ({', '.join(k for k, _ in self.filename.leaking)})."
            )
        return text

    def recommendations(self) -> list[str]:
        """What to change, one line per kind of signal found (weak signals included)."""
        level = self.shortcut.weak_level
        topics = dict.fromkeys(_topic(k) for k, v in self.shortcut.ranked() if v >= level)
        if not topics and self.shortcut.accuracy >= level:
            topics["combined"] = None
        if any(v >= level for v in self.filename.feature_scores.values()):
            topics["filename"] = None
        return [_ADVICE[t] for t in topics]

    def to_dict(self) -> dict[str, Any]:
        """Everything but the per-image rows, as plain JSON types."""
        return jsonable(
            {
                "source": self.source,
                "counts": self.counts,
                "verdict": self.verdict,
                "shortcut_score": self.shortcut_score,
                "shortcut": self.shortcut.to_dict(),
                "filename": self.filename.to_dict(),
                "leaking_features": [
                    {"feature": k, "group": FEATURES[k].group, "accuracy_alone": v}
                    for k, v in self.leaking_features
                ],
                "recommendations": self.recommendations(),
                "per_class": self.per_class,
                "errors": [{"path": p, "reason": r} for p, r in self.errors],
                "notes": self.notes,
            }
        )

    def to_markdown(self) -> str:
        """The human report: verdict, leaking features, recommendations, all features."""
        from .markdown import render

        return render(self, plotted=set(_plottable(self.features)))

    def save(self, out: str | os.PathLike) -> Path:
        """Write audit.json, audit.md, features.csv, errors.csv and histograms/ under ``out``."""
        root = Path(out)
        folder = root / HISTOGRAMS
        folder.mkdir(parents=True, exist_ok=True)
        plotted = _plottable(self.features)
        for stale in folder.glob("*.png"):
            if stale.stem not in plotted:
                stale.unlink()
        for name in plotted:
            plot_feature(self.features, name, folder / f"{name}.png")
        write_text(root / "features.csv", self.features.to_csv(index=False))
        write_errors(root / "errors.csv", self.errors)
        write_text(root / "audit.json", json.dumps(self.to_dict(), indent=2) + "\n")
        write_text(root / "audit.md", self.to_markdown())
        return root


def _plottable(table: pd.DataFrame) -> list[str]:
    """Features with more than one value across the dataset (constant ones tell nothing)."""
    return [n for n in FEATURES if n in table.columns and table[n].nunique(dropna=False) > 1]


def plot_feature(table: pd.DataFrame, name: str, path: Path) -> Path:
    """A PNG comparing the classes on one feature: overlaid histograms, or bars of shares."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2), dpi=80)
    fig.subplots_adjust(left=0.13, right=0.97, top=0.9, bottom=0.25)
    ax = fig.add_subplot()
    if FEATURES[name].kind == "categorical":
        _bars(ax, table, name)
    else:
        _histogram(ax, table, name)
    ax.set_title(f"{name}: {FEATURES[name].description}", fontsize=9)
    ax.legend(fontsize=8)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def _histogram(ax, table: pd.DataFrame, name: str) -> None:
    values = table[name].astype(float)
    finite = values[np.isfinite(values)]
    bins = np.histogram_bin_edges(finite, bins=min(30, max(5, finite.nunique())))
    for label in CLASSES:
        v = values[(table["label"] == label) & np.isfinite(values)]
        missing = int((table["label"] == label).sum() - v.size)
        suffix = f" ({missing} missing)" if missing else ""
        ax.hist(v, bins=bins, alpha=0.55, density=bool(v.size), label=f"{label}{suffix}")
    ax.set_xlabel(name)
    ax.set_ylabel("density")


def _bars(ax, table: pd.DataFrame, name: str) -> None:
    values = as_text(table[name])
    categories = values.value_counts().index[:10]
    x = np.arange(len(categories))
    for i, label in enumerate(CLASSES):
        shares = values[table["label"] == label].value_counts(normalize=True)
        ax.bar(x + (i - 0.5) * 0.4, shares.reindex(categories).fillna(0), 0.4, label=label)
    ax.set_xticks(x, [c[:18] for c in categories], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("share of class")
