"""Streaming decode and windowing: the same windows as the in-memory rule, blocks bounded in size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiopipe.commands.tag import window_starts
from audiopipe.inference.stream import LevelMeter, audio_blocks, sliding_windows


@pytest.mark.parametrize(("length", "win", "hop", "block"), [(25, 10, 5, 3), (20, 10, 5, 7), (3, 10, 5, 2),
                                                             (10, 10, 5, 4), (101, 10, 3, 50), (11, 10, 10, 1)])
def test_sliding_windows_follow_the_window_rule(length: int, win: int, hop: int, block: int) -> None:
    signal = np.arange(1, length + 1, dtype=np.float32)
    blocks = [signal[i:i + block] for i in range(0, length, block)]
    got = list(sliding_windows(blocks, win, hop, min_len=4))
    assert [s for s, _ in got] == [round(s) for s in window_starts(length, win, hop)]
    for start, window in got:
        expected = signal[start:start + win]
        size = max(length, 4) if length <= win else win
        assert window.shape == (size,)
        np.testing.assert_array_equal(window[: expected.size], expected)
        assert not window[expected.size:].any()  # zero padding


def test_long_files_are_streamed_in_bounded_blocks(tmp_path: Path) -> None:
    rate = 8000
    signal = (0.1 * np.random.default_rng(0).standard_normal((95 * rate, 2))).astype(np.float32)
    path = tmp_path / "long.wav"
    sf.write(path, signal, rate, subtype="FLOAT")
    meter = LevelMeter()
    blocks = list(audio_blocks(path, rate, meter, stream_above_s=10.0, block_s=30.0))
    assert len(blocks) == 4 and max(b.size for b in blocks) == 30 * rate  # never the whole file at once
    streamed = np.concatenate(blocks)
    np.testing.assert_allclose(streamed, signal.mean(axis=1), atol=1e-6)  # ffmpeg at the same rate: exact
    assert meter.n == signal.shape[0] and meter.peak == pytest.approx(np.abs(signal.mean(axis=1)).max(), rel=1e-5)
    resampled = np.concatenate(list(audio_blocks(path, 16000, stream_above_s=10.0)))
    assert abs(resampled.size - 2 * signal.shape[0]) <= 2


def test_level_meter_warnings() -> None:
    meter = LevelMeter()
    meter.update(np.zeros(100, np.float32))
    assert "digital silence" in meter.warnings()[0]
    meter.update(np.full(100, 1e-6, np.float32))
    assert "near-silent" in meter.warnings()[0]
    meter.update(np.array([2.5], np.float32))
    assert any("±2.50" in w for w in meter.warnings())
