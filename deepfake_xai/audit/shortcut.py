"""The shortcut score: how well metadata alone predicts real vs fake, out of fold.

A classifier that never sees the face, only file and global image properties, is trained with
stratified k-fold cross-validation. Near 50 % balanced accuracy means the metadata carries no
label signal; well above it means a detector can score by learning the shortcut instead of the
face. Each feature is also scored on its own, which names the culprit plainly ("format alone
predicts the label with 100 % accuracy").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

LEAK_THRESHOLD = 0.7
"""Balanced accuracy from which a feature (or the whole set) is said to leak the label."""

WEAK_THRESHOLD = 0.6
"""Balanced accuracy from which a signal is reported as weak but present."""

PARALLEL_FROM = 20_000
"""Tables with fewer rows train the gradient boosting on one thread."""

MAX_CATEGORIES = 30
"""Categories beyond the most frequent ones are pooled into "other"."""


@dataclass(frozen=True)
class ShortcutScore:
    """Cross-validated metadata-only classification of real vs fake.

    ``accuracy`` is the out-of-fold balanced accuracy (chance is 0.5 whatever the class
    balance); ``feature_scores`` gives each feature's own balanced accuracy, and
    ``group_scores`` that of each group of features together (computed only when the whole
    set reaches ``weak_level``: it says where a signal spread over several features lives).
    """

    accuracy: float
    roc_auc: float
    n_samples: int
    folds: int
    feature_scores: dict[str, float] = field(default_factory=dict)
    group_scores: dict[str, float] = field(default_factory=dict)

    @property
    def leak_level(self) -> float:
        """The score from which the label counts as leaked: LEAK_THRESHOLD, or higher on small
        sets, where chance alone can reach it (3 binomial standard deviations above 0.5)."""
        return max(LEAK_THRESHOLD, 0.5 + 1.5 / math.sqrt(self.n_samples))

    @property
    def weak_level(self) -> float:
        """The score from which a signal is reported as weak (2 standard deviations at least)."""
        return max(WEAK_THRESHOLD, 0.5 + 1.0 / math.sqrt(self.n_samples))

    @property
    def leaking(self) -> list[tuple[str, float]]:
        """Features that alone predict the label with at least ``leak_level``, best first."""
        return [(k, v) for k, v in self.ranked() if v >= self.leak_level]

    def ranked(self) -> list[tuple[str, float]]:
        """All features by their own score, best first (ties by name)."""
        return sorted(self.feature_scores.items(), key=lambda kv: (-kv[1], kv[0]))

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "roc_auc": self.roc_auc,
            "n_samples": self.n_samples,
            "folds": self.folds,
            "leak_level": self.leak_level,
            "feature_scores": dict(self.ranked()),
            "group_scores": self.group_scores,
        }


def shortcut_score(
    features: pd.DataFrame,
    labels: Sequence[int | str],
    *,
    groups: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
    folds: int = 5,
) -> ShortcutScore:
    """Score how well ``features`` (one row per image) predict ``labels`` (fake = 1 / "fake").

    Object, string, category and bool columns are categorical; the rest numeric, NaN allowed.
    Uses stratified ``folds``-fold CV (fewer when a class has fewer images), seeded. ``groups``
    names sets of columns to score together as well when the whole set shows a signal.
    """
    y = _targets(labels)
    if len(features) != len(y):
        raise ValueError(f"{len(features)} feature rows but {len(y)} labels")
    counts = np.bincount(y, minlength=2)
    if counts.min() < 2:
        raise ValueError(
            f"the shortcut score needs at least 2 real and 2 fake images, got {counts[0]} real "
            f"and {counts[1]} fake"
        )
    X = _prepare(features)
    cv = _folds(min(folds, int(counts.min())), seed)
    scores = {name: _single_feature_score(X[name], y, cv) for name in X.columns}
    accuracy, auc = _model_score(X, y, cv, seed)
    result = ShortcutScore(accuracy, auc, len(y), cv.get_n_splits(), scores)
    if not groups or accuracy < result.weak_level:
        return result
    by_group = {
        name: _model_score(X[[c for c in columns if c in X.columns]], y, cv, seed)[0]
        for name, columns in groups.items()
    }
    return replace(result, group_scores=by_group)


def _targets(labels: Sequence[int | str]) -> np.ndarray:
    """Labels as 0 (real) / 1 (fake); strings and ints both accepted."""
    out = []
    for label in labels:
        if label in (0, 1) and not isinstance(label, str):
            out.append(int(label))
        elif isinstance(label, str) and label.lower() in ("real", "fake"):
            out.append(int(label.lower() == "fake"))
        else:
            raise ValueError(f"labels must be 'real'/'fake' or 0/1, got {label!r}")
    return np.asarray(out, dtype=np.int64)


def as_text(column: pd.Series) -> pd.Series:
    """Category values as strings, missing ones as "missing" (pandas keeps NaN otherwise)."""
    return column.astype(object).where(column.notna(), "missing").astype(str)


def _is_categorical(column: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def _prepare(features: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns as float, categorical ones as ``category`` with rare values pooled."""
    X = pd.DataFrame(index=range(len(features)))
    for name in features.columns:
        column = features[name].reset_index(drop=True)
        if _is_categorical(column):
            values = as_text(column)
            keep = values.value_counts().index[:MAX_CATEGORIES]
            X[name] = values.where(values.isin(keep), "other").astype("category")
        else:
            X[name] = column.astype(float)
    return X


def _fill_missing(X: pd.DataFrame) -> pd.DataFrame:
    """Numeric NaN as a value below the column's range: its own branch for the trees, and no
    training fold left with an all-missing column (which the gradient boosting rejects)."""
    X = X.copy()
    for name in X.columns:
        if not isinstance(X[name].dtype, pd.CategoricalDtype) and X[name].isna().any():
            low = X[name].min()
            X[name] = X[name].fillna(low - 1 if pd.notna(low) else 0.0)
    return X


def _folds(n_splits: int, seed: int):
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)


def _single_feature_score(column: pd.Series, y: np.ndarray, cv) -> float:
    """Out-of-fold balanced accuracy of one feature alone (0.5 for a constant feature)."""
    from sklearn.metrics import balanced_accuracy_score

    if column.nunique(dropna=False) <= 1:
        return 0.5
    predict = _majority_by_category if isinstance(column.dtype, pd.CategoricalDtype) else _tree
    pred = np.empty_like(y)
    for train, test in cv.split(np.zeros(len(y)), y):
        pred[test] = predict(column.iloc[train], y[train], column.iloc[test])
    return float(balanced_accuracy_score(y, pred))


def _majority_by_category(train: pd.Series, y: np.ndarray, test: pd.Series) -> np.ndarray:
    """Predict each category's majority class in training; unseen categories get the prior."""
    rate = pd.Series(y, index=train.index).groupby(as_text(train)).mean()
    prior = float(y.mean())
    return (as_text(test).map(rate).fillna(prior).to_numpy() > 0.5).astype(np.int64)


def _tree(train: pd.Series, y: np.ndarray, test: pd.Series) -> np.ndarray:
    """A depth-2 decision tree on one numeric feature: up to three thresholds, enough for a
    shifted or a narrower distribution, few enough not to fit noise. NaN is its own branch."""
    from sklearn.tree import DecisionTreeClassifier

    leaf = max(3, len(y) // 40)
    model = DecisionTreeClassifier(max_depth=2, min_samples_leaf=leaf, random_state=0)
    model.fit(train.to_frame(), y)
    return model.predict(test.to_frame())


def _model_score(X: pd.DataFrame, y: np.ndarray, cv, seed: int) -> tuple[float, float]:
    """Out-of-fold balanced accuracy and ROC-AUC of gradient boosting on all features
    (0.5, 0.5 when no column varies)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import cross_val_predict
    from threadpoolctl import threadpool_limits

    informative = [name for name in X.columns if X[name].nunique(dropna=False) > 1]
    if not informative:
        return 0.5, 0.5
    model = HistGradientBoostingClassifier(
        max_iter=100,
        learning_rate=0.1,
        min_samples_leaf=5,
        categorical_features="from_dtype",
        random_state=seed,
    )
    # OpenMP threads only pay off on large tables; on small ones they mostly contend for cores.
    threads = 1 if len(y) < PARALLEL_FROM else None
    with threadpool_limits(limits=threads, user_api="openmp"):
        proba = cross_val_predict(
            model, _fill_missing(X[informative]), y, cv=cv, method="predict_proba"
        )[:, 1]
    return float(balanced_accuracy_score(y, proba > 0.5)), float(roc_auc_score(y, proba))
