"""SED post-processing of frame scores: per-class median filtering, then thresholding into events.

Scores are per-clip frame probabilities of shape (C, T) at `frame_rate_hz`; events are
`(onset_s, offset_s, class name)`, clipped to the clip duration. `median_windows` expands the `median_window(s)`
setting (one value = every class) into one filter length per class, the form checkpoints store.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import median_filter

from audiopipe.data.labels import decode_frames


def median_windows(window: Sequence[int], n_classes: int) -> list[int]:
    """Per-class median filter lengths; a single value applies to every class."""
    if len(window) == 1:
        return [int(window[0])] * n_classes
    if len(window) != n_classes:
        raise ValueError(f"median_window has {len(window)} entries for {n_classes} classes")
    return [int(w) for w in window]


def median_filter_scores(scores: np.ndarray, windows: Sequence[int]) -> np.ndarray:
    """Per-class median filter over time of (C, T) scores, scipy `reflect` mode as in ATST-SED."""
    if len(windows) != scores.shape[0]:
        raise ValueError(f"{len(windows)} median windows for {scores.shape[0]} classes")
    out = np.empty_like(scores)
    for c, w in enumerate(windows):
        out[c] = median_filter(scores[c], size=int(w)) if w > 1 else scores[c]
    return out


def frame_boundaries(n_frames: int, frame_rate_hz: float, duration_s: float) -> np.ndarray:
    """Onset/offset times k / frame_rate (k = 0..T) clipped to the clip duration, shape (T + 1,)."""
    return np.minimum(np.arange(n_frames + 1) / frame_rate_hz, duration_s)


def scores_to_events(
    scores: np.ndarray, threshold: float, *, frame_rate_hz: float, class_names: Sequence[str], duration_s: float
) -> list[tuple[float, float, str]]:
    """Events where scores > threshold (strict), contiguous frames merged (no gap filling, no min length)."""
    return decode_frames(
        scores > threshold, frame_rate_hz=frame_rate_hz, class_names=class_names, duration_s=duration_s
    )
