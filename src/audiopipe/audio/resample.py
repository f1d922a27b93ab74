"""Resampling: in memory (`resample`, polyphase) and file to file (`resample_file`, ffmpeg via ffmpeg-python).

`resample_file(src, dst, sample_rate)` turns any container/codec/rate/channel layout that ffmpeg reads into
a mono PCM16 wav at `sample_rate`, written atomically (temporary file + rename). Inputs that cannot be
used raise `AudioDecodeError` whose `reason` is one of `REJECT_REASONS`.
"""

from __future__ import annotations

import os
from math import gcd
from pathlib import Path

import ffmpeg
import numpy as np
import soundfile as sf

from audiopipe.audio.io import REJECT_REASONS, AudioDecodeError, atomic_target, ffmpeg_exe

__all__ = ["REJECT_REASONS", "AudioDecodeError", "decode_resampled", "resample", "resample_file"]

# Leading bytes of the containers we expect; a decode failure on one of them means "corrupt", else "not audio".
_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"OggS", b"fLaC", b"ID3", b"FORM", b"\x1aE\xdf\xa3", b"\xff\xfb", b"\xff\xf3")


def resample(waveform: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling along the first axis; `(T,)` or `(T, channels)` float32 in, float32 out.

    Example:
        >>> resample(np.zeros(16000, np.float32), 16000, 32000).shape
        (32000,)
    """
    if orig_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
    if orig_rate == target_rate:
        return np.asarray(waveform, dtype=np.float32)
    from scipy.signal import resample_poly  # lazy: scipy.signal takes seconds to import

    g = gcd(int(orig_rate), int(target_rate))
    out = resample_poly(np.asarray(waveform, dtype=np.float32), target_rate // g, orig_rate // g, axis=0)
    return out.astype(np.float32)


def _classify_failure(src: Path, stderr: str) -> AudioDecodeError:
    with open(src, "rb") as fh:
        head = fh.read(16)
    detail = next((ln for ln in reversed(stderr.strip().splitlines()) if ln.strip()), "")[:200]
    if "does not contain any stream" in stderr or "matches no streams" in stderr:
        return AudioDecodeError(src, "not audio", "no audio stream")
    if any(head.startswith(m) for m in _MAGIC) or (head[4:8] == b"ftyp"):
        return AudioDecodeError(src, "corrupt", detail)
    return AudioDecodeError(src, "not audio", detail)


def decode_resampled(src: str | Path, sample_rate: int) -> np.ndarray:
    """Decode any ffmpeg-readable file to mono float32 `(T,)` at `sample_rate` (ffmpeg resamples and downmixes).

    Raises:
        AudioDecodeError: empty, not audio, corrupt, zero duration, non-finite samples, silent.
    """
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    if src.stat().st_size == 0:
        raise AudioDecodeError(src, "empty", "file has 0 bytes")
    stream = ffmpeg.input(str(src)).output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=int(sample_rate))
    try:
        out, _ = stream.run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True, quiet=True)
    except ffmpeg.Error as err:
        raise _classify_failure(src, err.stderr.decode(errors="replace")) from None
    audio = np.frombuffer(out, dtype=np.float32)
    if audio.shape[0] == 0:
        raise AudioDecodeError(src, "zero duration", "0 samples after decoding")
    if not np.isfinite(audio).all():
        raise AudioDecodeError(src, "non-finite samples", "NaN or inf in the decoded signal")
    if not np.any(audio):
        raise AudioDecodeError(src, "silent", "every sample is zero (a broken export?)")
    return np.clip(audio, -1.0, 1.0)


def resample_file(src: str | Path, dst: str | Path, sample_rate: int) -> float:
    """Convert `src` to a mono PCM16 wav `dst` at `sample_rate`, atomically. Returns the duration in seconds.

    Raises:
        AudioDecodeError: the input cannot be used (see `decode_resampled`); nothing is written then.
    """
    dst = Path(dst)
    audio = decode_resampled(src, sample_rate)
    tmp = atomic_target(dst)
    try:
        sf.write(str(tmp), audio, int(sample_rate), subtype="PCM_16", format="WAV")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return audio.shape[0] / sample_rate
