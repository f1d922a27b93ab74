"""Tests for audiopipe.metrics.sed_postprocessing: median windows and filter, strict thresholding into events."""

from __future__ import annotations

import numpy as np
import pytest

from audiopipe.metrics.sed_postprocessing import median_filter_scores, median_windows, scores_to_events


def test_one_median_window_applies_to_every_class() -> None:
    assert median_windows([7], 3) == [7, 7, 7]
    assert median_windows([1, 2, 3], 3) == [1, 2, 3]
    with pytest.raises(ValueError, match="2 entries for 3 classes"):
        median_windows([1, 2], 3)


def test_median_filter_removes_short_spikes_per_class() -> None:
    scores = np.zeros((2, 20))
    scores[:, 5] = 1.0  # one-frame spike in both classes
    out = median_filter_scores(scores, [3, 1])
    assert out[0].max() == 0.0 and out[1, 5] == 1.0
    with pytest.raises(ValueError, match="median windows"):
        median_filter_scores(scores, [3])


def test_strict_threshold_and_event_decoding() -> None:
    scores = np.zeros((3, 10))
    scores[1, 2:5] = 0.5
    scores[2, 6:8] = 0.8
    events = scores_to_events(scores, 0.5, frame_rate_hz=10.0, class_names=["alarm", "dog", "speech"], duration_s=1.0)
    assert events == [(0.6, 0.8, "speech")]  # 0.5 is not > 0.5
