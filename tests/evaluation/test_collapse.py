"""Score spread and the collapse flag on hand-made (N, C) probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from audiopipe.evaluation.collapse import SCORE_SPREAD_THRESHOLD, collapse_warning, score_spread


def test_constant_scores_are_collapsed() -> None:
    metrics = score_spread(np.tile([0.2, 0.7, 0.01], (8, 1)))
    assert metrics["test/collapsed"] == 1.0
    assert metrics["test/score_spread"] == pytest.approx(0.0, abs=1e-12) == metrics["test/logit_spread"]
    assert "KD student" in collapse_warning("KD student", metrics)


def test_scores_that_follow_the_input_are_not_collapsed() -> None:
    rng = np.random.default_rng(0)
    metrics = score_spread(rng.uniform(0, 1, (8, 3)))
    assert metrics["test/score_spread"] > 0.1 and metrics["test/collapsed"] == 0.0
    assert collapse_warning("KD student", metrics) is None


def test_tiny_but_ranked_probabilities_are_not_collapsed() -> None:
    """Rare classes: every probability below 1 %, so the spread in probability is small, but logits move by units."""
    scores = 1.0 / (1.0 + np.exp(-np.linspace(-9, -5, 10)))[:, None]
    metrics = score_spread(scores)
    assert metrics["test/score_spread"] < SCORE_SPREAD_THRESHOLD and metrics["test/collapsed"] == 0.0


def test_near_constant_scores_with_jitter_are_collapsed() -> None:
    rng = np.random.default_rng(0)
    assert score_spread(0.4 + 1e-4 * rng.standard_normal((16, 5)))["test/collapsed"] == 1.0


def test_score_spread_refuses_no_clips() -> None:
    with pytest.raises(ValueError, match="N >= 1"):
        score_spread(np.zeros((0, 3)))
