"""The end-of-run projection of each detector's stored embeddings: a CSV and a scatter PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..paths import path_to_text
from ..registry import EXPLAINERS
from .outcomes import SHORT
from .result import AnalysisResult
from .store import OK, projection_stem, write_csv

VERDICT_COLOURS = {"real": "#2b83ba", "fake": "#d7191c"}
UNKNOWN_COLOUR = "#999999"  # no label, or uncertain
LABELS = {"real": "real", "fake": "fake", "": "unknown"}
MIN_POINTS = 4


def write_projection(result: AnalysisResult, detector: str, method: str) -> Path | None:
    """Project ``detector``'s embeddings of the readable images (not video frames) with
    ``method``.

    Writes ``projection_<detector>.csv`` (index, path as text, x, y, label, p_fake, verdict)
    and ``.png`` for the images with a verdict; returns the CSV path, or None when they are
    fewer than 4.
    """
    rows = result.predictions
    rows = rows[(rows["detector"] == detector) & (rows["status"] == OK) & ~rows["video"]]
    rows = rows.sort_values("index")
    if len(rows) < MIN_POINTS:
        return None
    embeddings = result.embeddings(detector)[rows["index"].to_numpy()]
    coords = EXPLAINERS.create(method, random_state=0).fit_transform(embeddings).coords
    table = pd.DataFrame(
        {
            "index": rows["index"].to_numpy(),
            "path": [path_to_text(p) for p in rows["path"]],
            "x": coords[:, 0],
            "y": coords[:, 1],
            "label": rows["label"].fillna("").to_numpy(),
            "p_fake": rows["p_fake"].to_numpy(),
            "verdict": rows["verdict"].to_numpy(),
        }
    )
    stem = result.out / projection_stem(detector)
    csv_path = stem.with_suffix(".csv")
    write_csv(csv_path, table)
    plot_projection(table, f"{detector}: {method}", stem.with_suffix(".png"))
    return csv_path


def plot_projection(table: pd.DataFrame, title: str, path: Path) -> Path:
    """Two scatter panels of the projection: coloured by label and by the detector's outcome."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.0), dpi=90, layout="constrained")
    by_label, by_verdict = figure.subplots(1, 2, sharex=True, sharey=True)
    _scatter(by_label, table, table["label"].to_numpy(), "label", LABELS)
    _scatter(by_verdict, table, table["verdict"].to_numpy(), "outcome", SHORT)
    figure.suptitle(title, fontsize=10)
    figure.savefig(path, format="png")
    return path


def _scatter(
    axis, table: pd.DataFrame, classes: np.ndarray, title: str, names: dict[str, str]
) -> None:
    """One panel: a colour per class of ``names`` (class -> legend text)."""
    size = 18.0 if len(table) < 1000 else 4.0
    for name, text in names.items():
        mask = classes == name
        if mask.any():
            axis.scatter(
                table["x"][mask],
                table["y"][mask],
                s=size,
                c=VERDICT_COLOURS.get(name, UNKNOWN_COLOUR),
                label=text,
                alpha=0.7,
                linewidths=0,
            )
    axis.set_title(title, fontsize=9)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(fontsize=8, loc="best", frameon=False)
