"""Resampling: in memory (`resample`, polyphase) and file to file (`resample_file`, an ffmpeg subprocess).

`resample_file(src, dst, sample_rate)` turns any container/codec/rate/channel layout that ffmpeg reads into
a mono PCM16 wav at `sample_rate`, written atomically (temporary file + rename) by ffmpeg itself and checked
as it streams, so memory does not grow with the file's length; a file that already is such a wav is copied
without starting ffmpeg (the same samples, ~20 ms less per file). Inputs that cannot be used raise
`AudioDecodeError` whose `reason` is one of `REJECT_REASONS`.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import tempfile
from math import gcd
from pathlib import Path
from typing import IO

import numpy as np
import soundfile as sf

from audiopipe.audio.io import REJECT_REASONS, AudioDecodeError, ffmpeg_exe
from audiopipe.storage import atomic_write

__all__ = ["REJECT_REASONS", "AudioDecodeError", "decode_resampled", "resample", "resample_file"]

# Leading bytes of the containers we expect; a decode failure on one of them means "corrupt", else "not audio".
_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"OggS", b"fLaC", b"ID3", b"FORM", b"\x1aE\xdf\xa3", b"\xff\xfb", b"\xff\xf3")
# ffmpeg's wording (lower-cased, most specific first) when the container is fine but no decoder reads its codec.
_CODEC_MARKERS = (
    "no decoder found",
    "unknown codec",
    "decoder not found",
    "unsupported codec",
    "codec not supported",
    "not currently supported",
    "unsupported format tag",
)
_PREFIX = re.compile(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*")  # "[aist#0:0/none @ 0x55...] " before a message
_CHUNK_BYTES = 1 << 20  # 256 Ki float32 samples per read from ffmpeg's pipe
_LOG_BYTES = 1 << 16


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


def _codec_of(lines: list[str]) -> str:
    """The input audio stream's codec as ffmpeg describes it (`none (4[18][0][0] / 0x1234)`), or ""."""
    for line in lines:
        if "Stream #" in line and "Audio:" in line:
            return line.split("Audio:", 1)[1].split(",")[0].strip()
    return ""


def _classify_failure(src: Path, stderr: str) -> AudioDecodeError:
    """Turn ffmpeg's stderr into a reject: every line is scanned, not just the last one, because ffmpeg
    reports the cause (no audio stream, no decoder for the codec) early and a generic follow-up error last."""
    with open(src, "rb") as fh:
        head = fh.read(16)
    lines = [_PREFIX.sub("", ln).strip() for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln]
    known_container = any(head.startswith(m) for m in _MAGIC) or head[4:8] == b"ftyp"
    if any("does not contain any stream" in ln or "matches no streams" in ln for ln in lines):
        return AudioDecodeError(src, "not audio", "no audio stream")
    codec_line = next((ln for m in _CODEC_MARKERS for ln in lines if m in ln.lower()), "")
    if codec_line:
        codec = _codec_of(lines)
        detail = f"unsupported codec{' ' + codec if codec else ''}: {codec_line}"
        return AudioDecodeError(src, "corrupt" if known_container else "not audio", _clean(detail))
    detail = _clean(lines[-1]) if lines else ""
    return AudioDecodeError(src, "corrupt" if known_container else "not audio", detail)


def _clean(text: str) -> str:
    """One line, no tabs (rejects.tsv is tab-separated), at most 200 characters."""
    return " ".join(text.split())[:200]


def _decode(src: Path, sample_rate: int, wav_out: Path | None, keep: list[np.ndarray] | None) -> int:
    """Run ffmpeg once: decode `src` to mono float32 at `sample_rate` on a pipe, checked chunk by chunk (and
    appended to `keep` when given); with `wav_out`, ffmpeg also writes the same signal as a PCM16 wav there.

    Returns the number of samples. Raises `AudioDecodeError` for unusable input, `OSError` when ffmpeg cannot
    write `wav_out` (e.g. ENOSPC). Memory stays at one chunk whatever the file's length (unless `keep`).
    """
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    if src.stat().st_size == 0:
        raise AudioDecodeError(src, "empty", "file has 0 bytes")
    mono = ["-vn", "-sn", "-dn", "-map_metadata", "-1", "-ac", "1", "-ar", str(int(sample_rate))]
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-y", "-i", str(src)]
    if wav_out is not None:
        cmd += [*mono, "-c:a", "pcm_s16le", "-fflags", "+bitexact", "-flags:a", "+bitexact", "-f", "wav", str(wav_out)]
    cmd += [*mono, "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1"]
    samples, finite, audible = 0, True, False
    with tempfile.TemporaryFile() as err_fh:  # a file, not a pipe: ffmpeg can't block on a full stderr pipe
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_fh)
        assert proc.stdout is not None
        try:
            tail = b""
            while buf := proc.stdout.read(_CHUNK_BYTES):
                buf = tail + buf
                cut = len(buf) - len(buf) % 4
                tail, chunk = buf[cut:], np.frombuffer(buf[:cut], dtype=np.float32)
                samples += chunk.shape[0]
                finite = finite and bool(np.isfinite(chunk).all())
                audible = audible or bool(np.any(chunk))
                if keep is not None:
                    keep.append(chunk)
            returncode = proc.wait()
        finally:
            proc.stdout.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if returncode != 0:
            stderr = _read_log(err_fh)
            if "No space left on device" in stderr:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(wav_out))
            raise _classify_failure(src, stderr)
    if samples == 0:
        raise AudioDecodeError(src, "zero duration", "0 samples after decoding")
    if not finite:
        raise AudioDecodeError(src, "non-finite samples", "NaN or inf in the decoded signal")
    if not audible:
        raise AudioDecodeError(src, "silent", "every sample is zero (a broken export?)")
    return samples


def _read_log(fh: IO[bytes]) -> str:
    """ffmpeg's stderr: its head (stream info, codec errors) and tail (the final error), bounded in size."""
    size = fh.seek(0, os.SEEK_END)
    fh.seek(0)
    if size <= 2 * _LOG_BYTES:
        return fh.read().decode(errors="replace")
    head = fh.read(_LOG_BYTES)
    fh.seek(size - _LOG_BYTES)
    return (head + b"\n...\n" + fh.read()).decode(errors="replace")


def decode_resampled(src: str | Path, sample_rate: int) -> np.ndarray:
    """Decode any ffmpeg-readable file to mono float32 `(T,)` at `sample_rate` (ffmpeg resamples and downmixes).

    Holds the whole signal in memory; `resample_file` converts file to file in constant memory.

    Raises:
        AudioDecodeError: empty, not audio, corrupt, zero duration, non-finite samples, silent.
    """
    chunks: list[np.ndarray] = []
    _decode(Path(src), sample_rate, None, chunks)
    return np.clip(np.concatenate(chunks), -1.0, 1.0)


def _copy_if_already_there(src: Path, sample_rate: int, tmp: Path) -> int | None:
    """A mono PCM16 wav already at `sample_rate` (what realmix writes): the same checks as the ffmpeg path on its
    samples, then a plain copy (ffmpeg would write the same samples, one process per file slower). None when the
    file is anything else, so that ffmpeg handles it."""
    if src.suffix.lower() != ".wav" or not src.is_file() or src.stat().st_size == 0:
        return None
    try:
        info = sf.info(str(src))
    except (RuntimeError, sf.LibsndfileError):
        return None
    if (info.format, info.subtype, info.channels, info.samplerate) != ("WAV", "PCM_16", 1, int(sample_rate)):
        return None
    samples, audible = 0, False
    with sf.SoundFile(str(src)) as reader:
        for block in reader.blocks(blocksize=1 << 18, dtype="int16"):
            samples += block.shape[0]
            audible = audible or bool(np.any(block))
    if samples == 0:
        raise AudioDecodeError(src, "zero duration", "0 samples after decoding")
    if not audible:
        raise AudioDecodeError(src, "silent", "every sample is zero (a broken export?)")
    shutil.copyfile(src, tmp)  # OSError (e.g. ENOSPC) names the file, as ffmpeg's failure does
    return samples


def resample_file(src: str | Path, dst: str | Path, sample_rate: int) -> float:
    """Convert `src` to a mono PCM16 wav `dst` at `sample_rate`, atomically. Returns the duration in seconds.

    ffmpeg writes the wav to a temporary sibling of `dst` while the checks read its float copy from a pipe in
    chunks, so memory does not grow with the file's length; the temporary file is renamed only if they pass.

    Raises:
        AudioDecodeError: the input cannot be used (see `decode_resampled`); nothing is written then.
        OSError: the output cannot be written (e.g. disk full); `dst` is left as it was.
    """
    src, dst = Path(src), Path(dst)
    with atomic_write(dst) as tmp:
        samples = _copy_if_already_there(src, sample_rate, tmp)
        if samples is None:
            samples = _decode(src, sample_rate, tmp, None)
        written = sf.info(str(tmp)).frames
        if written != samples:
            raise OSError(errno.EIO, f"ffmpeg wrote {written} of {samples} samples", str(tmp))
    return samples / sample_rate
