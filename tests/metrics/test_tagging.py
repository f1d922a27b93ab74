"""Tagging metrics equal scikit-learn's per class; excluded classes are counted, not averaged."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn import metrics as skm

from audiopipe.metrics.tagging import (
    average_precision_per_class,
    d_prime,
    precision_recall_curve,
    roc_auc_per_class,
    tagging_metrics,
)


def _random(seed: int, n: int = 60, c: int = 7, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < 0.3).astype(np.float32)
    targets[0], targets[1] = 1.0, 0.0  # every class has a positive and a negative
    scores = rng.normal(size=(n, c)) + targets
    if ties:
        scores = np.round(scores, 0)  # many tied scores
    return targets, scores


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_values_equal_sklearn(seed: int, ties: bool) -> None:
    targets, scores = _random(seed, ties=ties)
    ap = average_precision_per_class(targets, scores)
    auc = roc_auc_per_class(targets, scores)
    np.testing.assert_allclose(ap, skm.average_precision_score(targets, scores, average=None), rtol=0, atol=1e-12)
    np.testing.assert_allclose(auc, [skm.roc_auc_score(targets[:, j], scores[:, j]) for j in range(7)], atol=1e-12)
    out = tagging_metrics(targets, scores)
    assert out["mAP"] == pytest.approx(skm.average_precision_score(targets, scores, average="macro"), abs=1e-12)
    assert out["roc_auc"] == pytest.approx(skm.roc_auc_score(targets, scores, average="macro"), abs=1e-12)
    assert out["d_prime"] == pytest.approx(math.sqrt(2) * norm.ppf(out["roc_auc"]), abs=1e-9)


def test_logits_and_probabilities_give_the_same_metrics() -> None:
    targets, logits = _random(3)
    probs = 1 / (1 + np.exp(-logits))
    a, b = tagging_metrics(targets, logits), tagging_metrics(targets, probs)
    for key in ("mAP", "roc_auc", "d_prime"):
        assert a[key] == pytest.approx(b[key], abs=1e-12)


def test_classes_without_positives_or_negatives_are_excluded_and_counted() -> None:
    targets, scores = _random(4, c=6)
    targets[:, 1] = 0.0  # no positives: no AP, no AUC
    targets[:, 4] = 1.0  # no negatives: AP = 1 (defined), no AUC
    out = tagging_metrics(targets, scores)
    assert out["n_classes"] == 6
    assert out["n_excluded_no_positive"] == 1 and out["n_excluded_no_negative"] == 1
    assert out["n_classes_ap"] == 5 and out["n_classes_auc"] == 4
    keep_ap, keep_auc = [0, 2, 3, 4, 5], [0, 2, 3, 5]
    expected_map = skm.average_precision_score(targets[:, keep_ap], scores[:, keep_ap], average="macro")
    expected_auc = skm.roc_auc_score(targets[:, keep_auc], scores[:, keep_auc], average="macro")
    assert out["mAP"] == pytest.approx(expected_map, abs=1e-12)
    assert out["roc_auc"] == pytest.approx(expected_auc, abs=1e-12)
    assert np.isnan(average_precision_per_class(targets, scores)[1])
    assert np.isnan(roc_auc_per_class(targets, scores)[4])


def test_perfect_and_inverted_rankings() -> None:
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=float)
    out = tagging_metrics(targets, targets)
    assert out["mAP"] == 1.0 and out["roc_auc"] == 1.0
    assert math.isfinite(out["d_prime"]) and out["d_prime"] > 5
    inverted = tagging_metrics(targets, 1 - targets)
    assert inverted["roc_auc"] == 0.0 and inverted["d_prime"] < -5
    assert d_prime(0.5) == pytest.approx(0.0)


def test_no_class_qualifies_gives_nan_not_error() -> None:
    out = tagging_metrics(np.zeros((3, 2)), np.random.default_rng(0).random((3, 2)))
    assert math.isnan(out["mAP"]) and math.isnan(out["roc_auc"]) and math.isnan(out["d_prime"])
    assert out["n_excluded_no_positive"] == 2


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="must both be"):
        tagging_metrics(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        tagging_metrics(np.ones((2, 1)), np.array([[np.nan], [0.0]]))


@pytest.mark.parametrize("ties", [False, True])
def test_pr_curve_equals_sklearn(ties: bool) -> None:
    targets, scores = _random(5, ties=ties)
    p, r, t = precision_recall_curve(targets[:, 2], scores[:, 2])
    ep, er, et = skm.precision_recall_curve(targets[:, 2], scores[:, 2])
    np.testing.assert_allclose(p, ep, atol=1e-12)
    np.testing.assert_allclose(r, er, atol=1e-12)
    np.testing.assert_allclose(t, et, atol=1e-12)
