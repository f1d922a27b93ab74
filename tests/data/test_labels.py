"""Tests for audiopipe.data.labels: ATST-SED frame encoding (floor onset, ceil offset) and decoding."""

from __future__ import annotations

import numpy as np
import pytest

from audiopipe.data.labels import active_runs, decode_frames, encode_events


def test_encoding_uses_floor_onset_and_ceil_offset_at_the_output_rate() -> None:
    targets = encode_events([(0.1, 0.2, 0)], n_classes=1, n_frames=156, frame_rate_hz=15.625)
    # 0.1 s * 15.625 = 1.5625 -> frame 1; 0.2 s * 15.625 = 3.125 -> end 4 (exclusive)
    assert np.flatnonzero(targets[0]).tolist() == [1, 2, 3]


def test_events_are_clipped_to_the_clip() -> None:
    targets = encode_events([(9.9, 12.0, 1), (-1.0, 0.05, 0)], n_classes=2, n_frames=156, frame_rate_hz=15.625)
    assert targets[1, 154:].tolist() == [1.0, 1.0] and targets[1].sum() == 2
    assert targets[0].tolist()[:2] == [1.0, 0.0]


def test_bad_class_index_raises() -> None:
    with pytest.raises(ValueError, match="class index"):
        encode_events([(0.0, 1.0, 3)], n_classes=2, n_frames=10, frame_rate_hz=10.0)


def test_decode_inverts_encode_on_frame_aligned_events() -> None:
    events = [(0.0, 0.5, "a"), (0.3, 0.9, "b"), (0.7, 1.0, "a")]
    index = {"a": 0, "b": 1}
    targets = encode_events(
        [(on, off, index[c]) for on, off, c in events], n_classes=2, n_frames=10, frame_rate_hz=10.0
    )
    decoded = decode_frames(targets > 0, frame_rate_hz=10.0, class_names=["a", "b"], duration_s=1.0)
    assert [(pytest.approx(on), pytest.approx(off), c) for on, off, c in decoded] == sorted(events)


def test_active_runs() -> None:
    assert active_runs(np.array([1, 1, 0, 1, 0, 0, 1], bool)) == [(0, 2), (3, 4), (6, 7)]
    assert active_runs(np.zeros(3, bool)) == []
