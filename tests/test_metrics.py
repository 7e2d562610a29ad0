import math

import numpy as np
import pytest
from sklearn import metrics as skm

from deepfake_xai.metrics import (
    average_precision,
    classification_metrics,
    expected_calibration_error,
    per_group_metrics,
    reliability_curve,
    roc_curve,
)


def _cases(n_cases: int = 40):
    rng = np.random.default_rng(0)
    for _ in range(n_cases):
        n = int(rng.integers(4, 80))
        y = rng.integers(0, 2, n)
        y[:2] = (0, 1)
        p = np.round(rng.random(n), int(rng.integers(1, 4)))  # rounding creates ties
        yield y, p


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_matches_scikit_learn(threshold):
    for y, p in _cases():
        m = classification_metrics(y, p, threshold)
        pred = (p >= threshold).astype(int)
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
        assert m["precision"] == pytest.approx(skm.precision_score(y, pred, zero_division=0))
        assert m["recall"] == pytest.approx(skm.recall_score(y, pred, zero_division=0))
        assert m["f1"] == pytest.approx(skm.f1_score(y, pred, zero_division=0))
        assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
        assert m["average_precision"] == pytest.approx(skm.average_precision_score(y, p))
        tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
        assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)
        assert m["n"] == len(y) and m["n_fake"] == y.sum()


def test_roc_curve_matches_scikit_learn():
    for y, p in _cases(10):
        fpr, tpr, thresholds = roc_curve(y, p)
        sk_fpr, sk_tpr, sk_thr = skm.roc_curve(y, p, drop_intermediate=False)
        np.testing.assert_allclose(fpr, sk_fpr)
        np.testing.assert_allclose(tpr, sk_tpr)
        np.testing.assert_allclose(thresholds[1:], sk_thr[1:])


def test_eer_lies_where_the_error_rates_cross():
    for y, p in _cases(20):
        m = classification_metrics(y, p)
        fpr, tpr, _ = skm.roc_curve(y, p, drop_intermediate=False)
        fnr = 1 - tpr
        k = np.flatnonzero(fnr - fpr <= 0)[0]  # first ROC point past the crossing
        low, high = sorted([fpr[k - 1], fpr[k], fnr[k - 1], fnr[k]])[1:3]
        assert low - 1e-12 <= m["eer"] <= high + 1e-12
        assert 0 <= m["eer_threshold"] <= 1


def test_eer_known_values():
    perfect = classification_metrics([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert perfect["eer"] == 0 and perfect["roc_auc"] == 1 and perfect["accuracy"] == 1
    inverted = classification_metrics([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1])
    assert inverted["eer"] == 1 and inverted["roc_auc"] == 0
    # one real scored above one fake: FPR and FNR cross at 0.5
    half = classification_metrics([0, 0, 1, 1], [0.1, 0.7, 0.6, 0.9])
    assert half["eer"] == pytest.approx(0.5) and half["roc_auc"] == pytest.approx(0.75)


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_does_not_crash(label):
    m = classification_metrics([label] * 5, [0.2, 0.4, 0.6, 0.8, 0.9])
    assert m["roc_auc"] is None and m["eer"] is None and m["eer_threshold"] is None
    assert m["accuracy"] == pytest.approx(0.6 if label else 0.4)
    assert m["ece"] is not None
    if label == 0:
        assert m["average_precision"] is None and m["precision"] == 0 and m["f1"] == 0


def test_empty_and_invalid_inputs():
    empty = classification_metrics([], [])
    assert empty["n"] == 0 and empty["accuracy"] == 0 and empty["ece"] is None
    with pytest.raises(ValueError, match="0 \\(real\\) and 1 \\(fake\\)"):
        classification_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\]"):
        classification_metrics([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match="3 values but p_fake has 2"):
        classification_metrics([0, 1, 1], [0.1, 0.2])


def test_reliability_and_ece():
    y = np.array([0, 0, 1, 1, 1, 0, 1, 1])
    p = np.array([0.05, 0.15, 0.15, 0.55, 0.58, 0.95, 0.99, 1.0])
    curve = reliability_curve(y, p, n_bins=10)
    assert curve["count"].tolist() == [1, 2, 0, 0, 0, 2, 0, 0, 0, 3]
    assert curve["fraction_fake"][1] == pytest.approx(0.5)
    assert curve["mean_predicted"][9] == pytest.approx((0.95 + 0.99 + 1.0) / 3)
    assert math.isnan(curve["mean_predicted"][2])
    expected = (
        1 * abs(0.05 - 0)
        + 2 * abs(0.15 - 0.5)
        + 2 * abs(0.565 - 1)
        + 3 * abs((0.95 + 0.99 + 1.0) / 3 - 2 / 3)
    ) / 8
    assert expected_calibration_error(y, p) == pytest.approx(expected)
    assert classification_metrics(y, p)["ece"] == pytest.approx(expected)
    perfect = np.array([0.0, 0.0, 1.0, 1.0])
    assert expected_calibration_error([0, 0, 1, 1], perfect) == 0


def test_average_precision_without_fakes_is_none():
    assert average_precision([0, 0], [0.3, 0.4]) is None


def test_per_group_metrics():
    y = [0, 1, 0, 1, 1, 0]
    p = [0.1, 0.9, 0.2, 0.4, 0.8, 0.7]
    groups = ["a", "a", "b", "b", None, None]
    out = per_group_metrics(y, p, groups)
    assert sorted(out) == ["a", "b", "none"]
    assert out["a"]["accuracy"] == 1 and out["b"]["accuracy"] == 0.5 and out["none"]["n"] == 2
    assert out["a"]["roc_auc"] == pytest.approx(skm.roc_auc_score([0, 1], [0.1, 0.9]))
    with pytest.raises(ValueError, match="2 groups for 6 labels"):
        per_group_metrics(y, p, ["a", "b"])
