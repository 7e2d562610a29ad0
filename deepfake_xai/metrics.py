"""Binary real/fake metrics with fake as the positive class, in plain NumPy.

Shared by training (validation), evaluation and the batch-analysis report, so every number
in the project is computed one way. Metrics that need both classes (ROC AUC, average precision,
EER) are None when only one class is present instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ECE_BINS = 10
#: The scores of :func:`classification_metrics` shown in summaries (reports, the app), in order.
HEADLINE_METRICS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "average_precision",
    "eer",
    "ece",
)


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, p_fake: Sequence[float] | np.ndarray, threshold: float = 0.5
) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, ROC AUC, AP, EER, ECE and the confusion matrix.

    ``y_true`` holds 1 for fake and 0 for real; ``p_fake`` is P(fake). A prediction is fake when
    ``p_fake >= threshold``. Precision/recall/F1 with an empty denominator are 0 (as scikit-learn
    with ``zero_division=0``); ROC AUC, ``average_precision``, ``eer`` and ``eer_threshold`` are
    None unless both classes occur. ECE uses :data:`ECE_BINS` equal-width bins of P(fake).
    """
    y, p = _validate(y_true, p_fake)
    pred = p >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    out: dict[str, Any] = {
        "n": int(y.size),
        "n_fake": int(y.sum()),
        "n_real": int(y.size - y.sum()),
        "threshold": float(threshold),
        "accuracy": _ratio(tp + tn, y.size),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "roc_auc": None,
        "average_precision": None,
        "eer": None,
        "eer_threshold": None,
        "ece": expected_calibration_error(y, p),
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
    }
    if 0 < y.sum() < y.size:
        fpr, tpr, thresholds = roc_curve(y, p)
        eer, eer_threshold = _eer(fpr, tpr, thresholds)
        out.update(
            roc_auc=float(np.trapezoid(tpr, fpr)),
            average_precision=average_precision(y, p),
            eer=eer,
            eer_threshold=eer_threshold,
        )
    return out


def roc_curve(
    y_true: Sequence[int] | np.ndarray, p_fake: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FPR, TPR, thresholds) at every distinct score, starting at (0, 0) with threshold inf."""
    y, p = _validate(y_true, p_fake)
    tps, fps, thresholds = _cumulative_counts(y, p)
    n_pos, n_neg = tps[-1], fps[-1]
    fpr = np.concatenate([[0.0], fps / n_neg if n_neg else np.full(fps.shape, np.nan)])
    tpr = np.concatenate([[0.0], tps / n_pos if n_pos else np.full(tps.shape, np.nan)])
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


def average_precision(
    y_true: Sequence[int] | np.ndarray, p_fake: Sequence[float] | np.ndarray
) -> float | None:
    """Area under the precision-recall step curve (as scikit-learn); None without fakes."""
    y, p = _validate(y_true, p_fake)
    tps, fps, _ = _cumulative_counts(y, p)
    if tps.size == 0 or tps[-1] == 0:
        return None
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def expected_calibration_error(
    y_true: Sequence[int] | np.ndarray, p_fake: Sequence[float] | np.ndarray, n_bins: int = ECE_BINS
) -> float | None:
    """Mean |P(fake) - observed fake rate| over equal-width bins, weighted by bin size."""
    curve = reliability_curve(y_true, p_fake, n_bins)
    counts = curve["count"]
    if counts.sum() == 0:
        return None
    filled = counts > 0
    gaps = np.abs(curve["mean_predicted"][filled] - curve["fraction_fake"][filled])
    return float(np.sum(gaps * counts[filled]) / counts.sum())


def reliability_curve(
    y_true: Sequence[int] | np.ndarray, p_fake: Sequence[float] | np.ndarray, n_bins: int = ECE_BINS
) -> dict[str, np.ndarray]:
    """Per bin of P(fake): edges, count, mean predicted P(fake) and observed fake fraction.

    Empty bins have count 0 and NaN means. Bins are ``[lo, hi)`` except the last, which
    includes 1.0.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    y, p = _validate(y_true, p_fake)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, weights=p, minlength=n_bins) / counts
        frac = np.bincount(which, weights=y, minlength=n_bins) / counts
    return {"edges": edges, "count": counts, "mean_predicted": mean_p, "fraction_fake": frac}


def per_group_metrics(
    y_true: Sequence[int] | np.ndarray,
    p_fake: Sequence[float] | np.ndarray,
    groups: Sequence[Any],
    threshold: float = 0.5,
) -> dict[str, dict[str, Any]]:
    """:func:`classification_metrics` for each distinct group (None becomes ``"none"``)."""
    y, p = _validate(y_true, p_fake)
    names = np.array(["none" if g is None else str(g) for g in groups], dtype=object)
    if names.shape != y.shape:
        raise ValueError(f"got {names.size} groups for {y.size} labels")
    return {
        g: classification_metrics(y[names == g], p[names == g], threshold)
        for g in sorted(set(names))
    }


def _validate(y_true, p_fake) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).reshape(-1)
    p = np.asarray(p_fake, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values but p_fake has {p.size}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must hold only 0 (real) and 1 (fake), got {np.unique(y)[:5]}")
    if not np.isfinite(p).all() or (p.size and (p.min() < 0 or p.max() > 1)):
        raise ValueError("p_fake must hold finite probabilities in [0, 1]")
    return y.astype(np.int64), p


def _cumulative_counts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives when thresholding at each distinct score, highest first."""
    order = np.argsort(-p, kind="mergesort")
    p, y = p[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(p)), p.size - 1] if p.size else np.array([], int)
    tps = np.cumsum(y)[last_of_run]
    fps = (last_of_run + 1) - tps
    return tps.astype(np.float64), fps.astype(np.float64), p[last_of_run]


def _eer(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """Equal error rate, linearly interpolated where FPR crosses FNR, and the nearer threshold."""
    fnr = 1.0 - tpr
    diff = fnr - fpr
    k = int(np.flatnonzero(diff <= 0)[0])  # diff goes from 1 at (0, 0) down to -1 at (1, 1)
    if k == 0 or diff[k] == 0:
        return float(fpr[k]), float(min(thresholds[k], 1.0))
    w = diff[k - 1] / (diff[k - 1] - diff[k])
    eer = fpr[k - 1] + w * (fpr[k] - fpr[k - 1])
    nearest = k if w >= 0.5 else k - 1
    return float(eer), float(min(thresholds[nearest], 1.0))


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else 0.0
