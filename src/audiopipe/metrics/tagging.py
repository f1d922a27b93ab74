"""Clip-level tagging metrics: per-class AP, macro mAP, macro ROC-AUC and d′ (AudioSet-style).

Inputs are `targets` (N, C) multi-hot (values > 0.5 count as positive) and `scores` (N, C) of any
monotone scale (logits or probabilities give the same numbers). Per class the values equal
scikit-learn's `average_precision_score` and `roc_auc_score` (ties handled the same way; proven in
tests/metrics/test_tagging.py); they are computed here in vectorised NumPy so that 527 classes cost
one sort.

Classes that have no positive clip have no AP and no AUC; classes without a negative clip have no
AUC. Such classes are left out of the macro means and counted in the output, as AudioSet
evaluation does. d′ = √2 · Φ⁻¹(macro AUC), with the AUC clipped to [1e-7, 1 − 1e-7] so that a
perfect ranking gives a large finite value instead of infinity (metrics.json must stay valid JSON).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm, rankdata

AUC_CLIP = 1e-7


def _check(targets: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    targets = np.asarray(targets, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if targets.ndim == 1:
        targets, scores = targets[:, None], scores[:, None]
    if targets.shape != scores.shape or targets.ndim != 2:
        raise ValueError(f"targets {targets.shape} and scores {scores.shape} must both be (N, C)")
    if targets.shape[0] == 0:
        raise ValueError("no clips to evaluate (N = 0)")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    return targets > 0.5, scores


def average_precision_per_class(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AP of every class (C,), NaN where the class has no positive clip.

    AP = Σ_k (R_k − R_{k−1}) · P_k over the distinct score thresholds, high to low (scikit-learn's
    step-wise definition, no interpolation).
    """
    positive, scores = _check(targets, scores)
    n, c = scores.shape
    order = np.argsort(-scores, axis=0, kind="mergesort")
    sorted_scores = np.take_along_axis(scores, order, axis=0)
    sorted_pos = np.take_along_axis(positive, order, axis=0).astype(np.float64)
    tps = np.cumsum(sorted_pos, axis=0)
    ranks = np.arange(1, n + 1, dtype=np.float64)[:, None]
    # a threshold ends where the next score differs (or at the last clip): only there P and R are defined
    is_end = np.ones((n, c), dtype=bool)
    is_end[:-1] = sorted_scores[:-1] != sorted_scores[1:]
    n_pos = tps[-1]
    ap = np.full(c, np.nan)
    for j in np.flatnonzero(n_pos > 0):
        tp = tps[is_end[:, j], j]
        precision = tp / ranks[is_end[:, j], 0]
        recall_gain = np.diff(tp, prepend=0.0) / n_pos[j]
        ap[j] = float(np.sum(recall_gain * precision))
    return ap


def roc_auc_per_class(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC-AUC of every class (C,), NaN where the class lacks positives or negatives.

    Computed as the Mann-Whitney statistic with average ranks for ties, which equals the trapezoidal
    area under scikit-learn's ROC curve.
    """
    positive, scores = _check(targets, scores)
    n = scores.shape[0]
    n_pos = positive.sum(axis=0).astype(np.float64)
    n_neg = n - n_pos
    ranks = rankdata(scores, axis=0, method="average")
    rank_sum = np.where(positive, ranks, 0.0).sum(axis=0)
    valid = (n_pos > 0) & (n_neg > 0)
    auc = np.full(scores.shape[1], np.nan)
    auc[valid] = (rank_sum[valid] - n_pos[valid] * (n_pos[valid] + 1) / 2) / (n_pos[valid] * n_neg[valid])
    return auc


def d_prime(auc: float) -> float:
    """Sensitivity index d′ = √2 · Φ⁻¹(AUC) (AUC clipped away from 0 and 1; NaN stays NaN)."""
    if math.isnan(auc):
        return math.nan
    return float(math.sqrt(2.0) * norm.ppf(min(max(auc, AUC_CLIP), 1.0 - AUC_CLIP)))


def tagging_metrics(targets: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Macro metrics of a tagger on N clips and C classes, as a flat dict of floats.

    Keys: `mAP`, `roc_auc`, `d_prime` (macro over the classes that define them), `n_classes`,
    `n_classes_ap` / `n_classes_auc` (classes that entered each mean), `n_excluded_no_positive`,
    `n_excluded_no_negative` (classes with positives but no negative: excluded from AUC only).
    Means are NaN when no class qualifies.
    """
    positive, _ = _check(targets, scores)
    ap = average_precision_per_class(targets, scores)
    auc = roc_auc_per_class(targets, scores)
    n_pos = positive.sum(axis=0)
    n = positive.shape[0]
    macro_auc = float(np.nanmean(auc)) if np.isfinite(auc).any() else math.nan
    return {
        "mAP": float(np.nanmean(ap)) if np.isfinite(ap).any() else math.nan,
        "roc_auc": macro_auc,
        "d_prime": d_prime(macro_auc),
        "n_classes": float(positive.shape[1]),
        "n_classes_ap": float(np.isfinite(ap).sum()),
        "n_classes_auc": float(np.isfinite(auc).sum()),
        "n_excluded_no_positive": float((n_pos == 0).sum()),
        "n_excluded_no_negative": float(((n_pos == n) & (n_pos > 0)).sum()),
    }


def precision_recall_curve(targets: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PR curve of one class for plots: (precision, recall, thresholds), thresholds increasing.

    Same convention as scikit-learn (≥ 1.3): one point per distinct score, and a final (precision,
    recall) pair (1, 0) without a threshold.
    """
    targets = np.asarray(targets).reshape(-1)
    scores = np.asarray(scores).reshape(-1)
    positive, scores2 = _check(targets, scores)
    positive, scores = positive[:, 0], scores2[:, 0]
    if not positive.any():
        raise ValueError("a PR curve needs at least one positive clip")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positive[order].astype(np.float64)
    end = np.r_[np.flatnonzero(s[:-1] != s[1:]), len(s) - 1]
    tps = np.cumsum(y)[end]
    precision = tps / (end + 1)
    recall = tps / tps[-1]
    keep = slice(None, None, -1)
    return (
        np.r_[precision[keep], 1.0],
        np.r_[recall[keep], 0.0],
        s[end][keep],
    )


def class_prior(targets: np.ndarray) -> np.ndarray:
    """(C,) frequency of each label over (N, C) multi-hot targets: the scores of the class-prior baseline."""
    return (np.asarray(targets) > 0.5).mean(axis=0)
