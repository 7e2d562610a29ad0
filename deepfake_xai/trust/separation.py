"""How well a detector's penultimate features separate real from fake faces, as numbers.

Two figures, in the full embedding and in each 2-D map (t-SNE, UMAP, PCA): the silhouette score
of the true classes (1: two tight, distant clusters; 0: overlapping; below 0: mixed) and the
accuracy of a k-nearest-neighbour vote under stratified cross-validation (how far a face's
neighbours share its class).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..registry import EXPLAINERS

KNN_NEIGHBOURS = 5
KNN_FOLDS = 5
EMBEDDING = "embedding"


def separation(
    embeddings: np.ndarray,
    targets: np.ndarray,
    projections: Sequence[str] = ("tsne",),
    *,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """``{"embedding" | projection: {"silhouette", "knn_accuracy"}}`` for two-class ``targets``.

    A projection that cannot run (UMAP without umap-learn) gets ``{"error": why}``; with fewer
    than two images of a class every figure is NaN.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(targets, dtype=np.int64)
    out = {EMBEDDING: class_separation(x, y, seed)}
    for name in projections:
        try:
            coords = EXPLAINERS.create(name, random_state=seed).fit_transform(x).coords
        except (ImportError, ValueError) as exc:
            out[name] = {"error": str(exc)}
            continue
        out[name] = class_separation(np.asarray(coords, dtype=np.float64), y, seed)
    return out


def class_separation(points: np.ndarray, targets: np.ndarray, seed: int) -> dict[str, float]:
    """Silhouette of the classes and cross-validated k-NN accuracy of ``points``."""
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    smallest = min(np.bincount(targets, minlength=2))
    if smallest < 2:
        return {"silhouette": float("nan"), "knn_accuracy": float("nan")}
    folds = min(KNN_FOLDS, int(smallest))
    neighbours = min(KNN_NEIGHBOURS, len(targets) - len(targets) // folds - 1)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    knn = cross_val_score(KNeighborsClassifier(neighbours), points, targets, cv=splitter)
    return {
        "silhouette": float(silhouette_score(points, targets)),
        "knn_accuracy": float(knn.mean()),
    }
