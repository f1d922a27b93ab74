"""Scaper-style numpy mixer: place foreground events over a background at a chosen SNR.

Used by the `realmix` (real recordings) and `synthetic` (procedural) sources. All audio is mono float32
at one sample rate; onsets and offsets are in seconds and refer to the event's active region.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Foreground:
    """An isolated event: mono audio trimmed to its active region, its class and its source recording."""

    audio: np.ndarray
    label: str
    source_id: str


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def normalise_rms(x: np.ndarray, target_dbfs: float) -> np.ndarray:
    """Scale `x` to an RMS level of `target_dbfs` (silence stays silence)."""
    level = rms(x)
    return x if level == 0 else (x * (10 ** (target_dbfs / 20) / level)).astype(np.float32)


def crop_or_loop(x: np.ndarray, num_samples: int, rng: np.random.Generator, crossfade: int = 256) -> np.ndarray:
    """A random `num_samples` crop of `x`, looping it with a short crossfade when it is too short."""
    if x.shape[0] == 0:
        return np.zeros(num_samples, np.float32)
    if x.shape[0] >= num_samples:
        start = int(rng.integers(0, x.shape[0] - num_samples + 1))
        return x[start : start + num_samples].astype(np.float32)
    fade = min(crossfade, x.shape[0] // 4)
    out = x.astype(np.float32)
    while out.shape[0] < num_samples:
        if fade:
            ramp = np.linspace(0, 1, fade, dtype=np.float32)
            head = out[-fade:] * (1 - ramp) + x[:fade] * ramp
            out = np.concatenate([out[:-fade], head, x[fade:]])
        else:
            out = np.concatenate([out, x])
    return out[:num_samples]


def choose_onsets(
    durations_s: Sequence[float], clip_duration_s: float, rng: np.random.Generator, max_polyphony: int, tries: int = 30
) -> list[float | None]:
    """Onsets U(0, clip - dur) such that at most `max_polyphony` events overlap; None where none fits."""
    placed: list[tuple[float, float]] = []
    onsets: list[float | None] = []
    for dur in durations_s:
        chosen = None
        for _ in range(tries):
            onset = float(rng.uniform(0.0, max(clip_duration_s - dur, 0.0)))
            # polyphony at any instant is maximal at some event start inside [onset, onset + dur)
            points = [onset] + [a for a, _ in placed if onset <= a < onset + dur]
            if all(sum(a <= t < b for a, b in placed) + 1 <= max_polyphony for t in points):
                chosen = onset
                break
        if chosen is not None:
            placed.append((chosen, chosen + dur))
        onsets.append(chosen)
    return onsets


def mix_soundscape(
    background: np.ndarray,
    events: Sequence[tuple[Foreground, float, float]],
    sample_rate: int,
) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Mix `(foreground, onset_s, snr_db)` events over `background` `(T,)`.

    The SNR is measured between the event and the background over the event's own span.

    Returns:
        mixture `(T,)` float32 peak-limited to 0.99, and strong labels `(onset_s, offset_s, label)` sorted by onset.
    """
    mix = background.astype(np.float32).copy()
    total = mix.shape[0]
    labels = []
    for fg, onset_s, snr_db in events:
        start = int(round(onset_s * sample_rate))
        stop = min(start + fg.audio.shape[0], total)
        if stop <= start:
            continue
        piece = fg.audio[: stop - start].astype(np.float32)
        bg_level = max(rms(background[start:stop]), 1e-4)
        gain = 10 ** (snr_db / 20) * bg_level / max(rms(piece), 1e-8)
        mix[start:stop] += gain * piece
        labels.append((round(start / sample_rate, 3), round(stop / sample_rate, 3), fg.label))
    peak = float(np.abs(mix).max()) if total else 0.0
    if peak > 0.99:
        mix *= 0.99 / peak
    return mix, sorted(labels)


def segment_events(
    audio: np.ndarray,
    sample_rate: int,
    *,
    threshold_db: float = -35.0,
    min_duration_s: float = 0.15,
    merge_gap_s: float = 0.2,
    max_duration_s: float = 4.0,
    frame_s: float = 0.02,
) -> list[tuple[int, int]]:
    """Active regions `(start, stop)` in samples: frame RMS above `threshold_db` re the clip's loudest frame.

    Gaps shorter than `merge_gap_s` are merged, regions shorter than `min_duration_s` dropped and longer ones
    cut into pieces of at most `max_duration_s` (recipe step 4).
    """
    hop = max(int(frame_s * sample_rate), 1)
    n_frames = audio.shape[0] // hop
    if n_frames == 0:
        return []
    frames = audio[: n_frames * hop].reshape(n_frames, hop).astype(np.float64)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    active = level > level.max() + threshold_db
    if level.max() < -90:  # digital silence
        return []
    regions: list[list[int]] = []
    for i in np.flatnonzero(active).tolist():  # frame indices as Python ints
        if regions and (i - regions[-1][1]) * hop <= merge_gap_s * sample_rate:
            regions[-1][1] = i + 1
        else:
            regions.append([i, i + 1])
    out = []
    cap = int(max_duration_s * sample_rate)
    for a, b in regions:
        start, stop = a * hop, min(b * hop, audio.shape[0])
        if stop - start < min_duration_s * sample_rate:
            continue
        for s in range(start, stop, cap):
            if min(s + cap, stop) - s >= min_duration_s * sample_rate:
                out.append((s, min(s + cap, stop)))
    return out
