"""Tests for audiopipe.audio.resample: polyphase resampling and any-input -> mono PCM16 wav conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiopipe.audio.resample import AudioDecodeError, resample, resample_file
from audiopipe.data.mp3 import encode_mp3

TARGET = 16000


def _tone(sample_rate: int, seconds: float = 0.25, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return x if channels == 1 else np.repeat(x[:, None], channels, axis=1)


@pytest.mark.parametrize(("orig", "target"), [(8000, 16000), (96000, 32000), (44100, 16000), (16000, 16000)])
def test_resample_length_and_frequency(orig: int, target: int) -> None:
    out = resample(_tone(orig, seconds=0.5), orig, target)
    assert out.dtype == np.float32 and out.shape == (target // 2,)
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * target / out.shape[0] - 440) < 5


def test_resample_rejects_bad_rates() -> None:
    with pytest.raises(ValueError, match="positive"):
        resample(np.zeros(4, np.float32), 0, 16000)


@pytest.mark.parametrize(
    ("sample_rate", "channels", "suffix"),
    [(8000, 1, ".wav"), (96000, 1, ".wav"), (44100, 2, ".flac"), (48000, 6, ".wav"), (22050, 1, ".ogg")],
)
def test_resample_file_any_input_to_mono_pcm16(tmp_path: Path, sample_rate: int, channels: int, suffix: str) -> None:
    src = tmp_path / f"in{suffix}"
    sf.write(src, _tone(sample_rate, channels=channels), sample_rate)
    dst = tmp_path / "out" / "x.wav"
    duration_s = resample_file(src, dst, TARGET)
    info = sf.info(dst)
    assert (info.samplerate, info.channels, info.subtype) == (TARGET, 1, "PCM_16")
    tolerance = 2 if suffix != ".ogg" else 600  # lossy Vorbis: libsndfile and ffmpeg trim the pre-skip differently
    assert abs(info.frames - TARGET // 4) <= tolerance and abs(duration_s - info.frames / TARGET) < 1e-6
    assert [p.name for p in dst.parent.iterdir()] == ["x.wav"]


def test_resample_file_mp3(tmp_path: Path) -> None:
    src = tmp_path / "in.mp3"
    src.write_bytes(encode_mp3(_tone(32000), 32000))
    resample_file(src, tmp_path / "o.wav", TARGET)
    assert sf.info(tmp_path / "o.wav").samplerate == TARGET


def _corrupt(path: Path) -> None:
    path.write_bytes(b"RIFF\x24\x10\x00\x00WAVEfmt " + bytes(range(256)) * 8)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _zero_samples(path: Path) -> None:
    sf.write(path, np.zeros(0, np.float32), 16000)


def _text(path: Path) -> None:
    path.write_text("hello, I am a text file with a .wav name\n" * 10)


def _silent(path: Path) -> None:
    sf.write(path, np.zeros(1600, np.float32), 16000)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_corrupt, "corrupt"),
        (_empty, "empty"),
        (_zero_samples, "zero duration"),
        (_text, "not audio"),
        (_silent, "silent"),
    ],
)
def test_bad_inputs_raise_with_reason_and_write_nothing(tmp_path: Path, make, reason: str) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "bad.wav"
    make(src)
    dst = tmp_path / "out" / "bad.wav"
    with pytest.raises(AudioDecodeError) as err:
        resample_file(src, dst, TARGET)
    assert err.value.reason == reason and "bad.wav" in str(err.value)
    assert not dst.exists() and not (dst.parent.exists() and list(dst.parent.iterdir()))


def test_a_wav_already_at_the_target_format_is_copied_without_ffmpeg(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The same samples as the ffmpeg path, but no ffmpeg process (realmix writes 16 kHz mono PCM16 already)."""
    from audiopipe.audio import resample as module

    samples = (np.random.default_rng(0).standard_normal(16_000 * 3) * 3000).astype(np.int16)
    src = tmp_path / "clip.wav"
    sf.write(src, samples, 16_000, subtype="PCM_16")
    via_ffmpeg = tmp_path / "ffmpeg.wav"
    module._decode(src, 16_000, via_ffmpeg, None)  # what resample_file did for every file before

    def no_ffmpeg(*_: object, **__: object) -> None:
        raise AssertionError("ffmpeg was started for a file that needs no conversion")

    monkeypatch.setattr(module.subprocess, "Popen", no_ffmpeg)
    assert resample_file(src, tmp_path / "out.wav", 16_000) == 3.0
    copied, rate = sf.read(tmp_path / "out.wav", dtype="int16")
    assert rate == 16_000 and np.array_equal(copied, samples)
    assert np.array_equal(copied, sf.read(via_ffmpeg, dtype="int16")[0])
    sf.write(src, np.zeros(16_000, dtype=np.int16), 16_000, subtype="PCM_16")  # same checks as the ffmpeg path
    with pytest.raises(AudioDecodeError, match="silent"):
        resample_file(src, tmp_path / "silent.wav", 16_000)
    assert not (tmp_path / "silent.wav").exists()


def test_a_full_disk_while_copying_leaves_the_earlier_output_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from audiopipe.audio import resample as module

    src, dst = tmp_path / "clip.wav", tmp_path / "out" / "clip.wav"
    sf.write(src, _tone(16_000), 16_000, subtype="PCM_16")
    dst.parent.mkdir()
    dst.write_bytes(b"an earlier, complete file")

    def full(source: object, target: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(module.shutil, "copyfile", full)
    with pytest.raises(OSError, match="No space left on device"):
        resample_file(src, dst, 16_000)
    assert dst.read_bytes() == b"an earlier, complete file" and sorted(p.name for p in dst.parent.iterdir()) == [
        "clip.wav"]
