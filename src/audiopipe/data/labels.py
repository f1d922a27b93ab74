"""Frame label encoder: event lists <-> frame-level multi-hot matrices at a model's output frame rate.

Follows ATST-SED's `ManyHotEncoder` (spec atst_sed.md §5.4): labels are encoded directly at the output
rate, start frame = floor(onset * rate), end frame (exclusive) = ceil(offset * rate), clipped to [0, T];
decoding turns each contiguous run [a, b) of active frames into (a / rate, b / rate), clipped to the
clip duration. `reference_events` lists a packed split's events with class names, the ground truth the
SED metrics take.

Shapes (C classes, T output frames):
    targets (C, T) float32 in {0, 1}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from audiopipe.data.hdf5 import ClipReader

Event = tuple[float, float, int]  # (onset_s, offset_s, class index), as returned by ClipReader.events
NamedEvent = tuple[float, float, str]  # (onset_s, offset_s, class name)


def encode_events(events: Sequence[Event], *, n_classes: int, n_frames: int, frame_rate_hz: float) -> np.ndarray:
    """Strong targets (C, T) for one clip.

    Example:
        >>> encode_events([(0.1, 0.3, 1)], n_classes=2, n_frames=10, frame_rate_hz=10.0)[1].tolist()
        [0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    targets = np.zeros((n_classes, n_frames), dtype=np.float32)
    for onset, offset, cls in events:
        if not 0 <= cls < n_classes:
            raise ValueError(f"event class index {cls} outside [0, {n_classes})")
        # round(…, 6) keeps e.g. 0.3 * 10 = 3.0000000000000004 from spilling into the next frame
        start = min(max(math.floor(round(onset * frame_rate_hz, 6)), 0), n_frames)
        end = min(max(math.ceil(round(offset * frame_rate_hz, 6)), 0), n_frames)
        targets[cls, start:end] = 1.0
    return targets


def active_runs(active: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs [a, b) of True in a 1-D boolean array."""
    padded = np.concatenate([[False], np.asarray(active, dtype=bool), [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(changes[::2], changes[1::2])]


def decode_frames(
    active: np.ndarray, *, frame_rate_hz: float, class_names: Sequence[str], duration_s: float | None = None
) -> list[tuple[float, float, str]]:
    """Events (onset_s, offset_s, label) from a boolean (C, T) frame matrix, sorted by onset."""
    if active.shape[0] != len(class_names):
        raise ValueError(f"{active.shape[0]} rows but {len(class_names)} class names")
    events = []
    for cls, row in enumerate(active):
        for a, b in active_runs(row):
            onset, offset = a / frame_rate_hz, b / frame_rate_hz
            if duration_s is not None:
                onset, offset = min(onset, duration_s), min(offset, duration_s)
            if offset > onset:
                events.append((onset, offset, class_names[cls]))
    return sorted(events)


def reference_events(reader: ClipReader) -> dict[str, list[NamedEvent]]:
    """clip id -> reference events (onset_s, offset_s, class name) of a packed split."""
    names = reader.class_names
    return {cid: [(on, off, names[c]) for on, off, c in reader.events(i)] for i, cid in enumerate(reader.clip_ids)}
