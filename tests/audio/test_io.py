"""Tests for audiopipe.audio.io: formats, channel layouts, rates, and clear errors on bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiopipe.audio.io import AudioDecodeError, audio_info, ffmpeg_exe, load_audio, save_audio
from audiopipe.data.mp3 import encode_mp3


def _tone(sample_rate: int, seconds: float = 0.25, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    x = 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return x if channels == 1 else np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)


@pytest.mark.parametrize(("sample_rate", "channels"), [(8000, 1), (16000, 2), (96000, 1), (48000, 6)])
def test_load_keeps_rate_and_channels(tmp_path: Path, sample_rate: int, channels: int) -> None:
    path = tmp_path / "x.wav"
    sf.write(path, _tone(sample_rate, channels=channels), sample_rate)
    audio, rate = load_audio(path)
    assert rate == sample_rate and audio.dtype == np.float32
    assert audio.shape == ((sample_rate // 4,) if channels == 1 else (sample_rate // 4, channels))
    mono, _ = load_audio(path, mono=True)
    assert mono.shape == (sample_rate // 4,)
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.frames) == (sample_rate, channels, sample_rate // 4)


def test_ffmpeg_fallback_reads_mp3(tmp_path: Path) -> None:
    path = tmp_path / "x.mp3"
    path.write_bytes(encode_mp3(_tone(16000), 16000))
    audio, rate = load_audio(path)
    assert rate == 16000 and audio.ndim == 1 and abs(audio.shape[0] - 4000) < 1200
    assert audio_info(path).sample_rate == 16000


def test_ffmpeg_binary_exists() -> None:
    assert Path(ffmpeg_exe()).is_file()


def test_save_is_atomic_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "y.wav"
    save_audio(path, _tone(16000), 16000)
    audio, rate = load_audio(path)
    assert rate == 16000 and np.abs(audio - _tone(16000)).max() < 1e-4
    assert [p.name for p in path.parent.iterdir()] == ["y.wav"]


def test_save_refuses_nan_and_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "z.wav"
    save_audio(path, _tone(16000), 16000)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="non-finite"):
        save_audio(path, np.full(10, np.nan, np.float32), 16000)
    assert path.read_bytes() == before


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.wav").write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty") as err:
        load_audio(tmp_path / "e.wav")
    assert err.value.reason == "empty" and "e.wav" in str(err.value)


def test_zero_sample_audio(tmp_path: Path) -> None:
    sf.write(tmp_path / "z.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioDecodeError, match="zero duration"):
        load_audio(tmp_path / "z.wav")


def test_text_renamed_wav(tmp_path: Path) -> None:
    (tmp_path / "t.wav").write_text("this is not audio\n" * 20)
    with pytest.raises(AudioDecodeError) as err:
        load_audio(tmp_path / "t.wav")
    assert err.value.reason == "not audio"


def test_nan_float_wav(tmp_path: Path) -> None:
    x = _tone(16000)
    x[10] = np.nan
    sf.write(tmp_path / "n.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="non-finite"):
        load_audio(tmp_path / "n.wav")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such audio file"):
        load_audio(tmp_path / "missing.wav")
