"""Bounded-memory audio for the inference commands: decode in blocks, cut analysis windows, watch the level.

`audio_blocks(path, sample_rate)` yields mono float32 blocks at `sample_rate`. A file already at that rate and
no longer than `STREAM_ABOVE_S` seconds is read whole (`load_audio`, channel mean); anything else is streamed
from one ffmpeg process (`-ar` resampling per channel, as the pipeline's `resample` stage does; channel mean
here) in blocks of `BLOCK_S` seconds, so a 2-hour recording needs a few MB of audio in memory instead of GBs,
and no scipy import (~1 s) is needed for resampling. `sliding_windows(blocks, win, hop)` cuts
the windows n = ceil((L − W) / H) + 1 (the last one zero-padded; a file shorter than W is one window) without
knowing L in advance. `LevelMeter` records peak and RMS on the way, for the silence and clipping warnings.
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiopipe.audio.io import AudioDecodeError, check_audio_path, ffmpeg_exe, ffmpeg_input, load_audio

STREAM_ABOVE_S = 600.0  # longer files are streamed through ffmpeg
BLOCK_S = 30.0
SILENCE_DBFS = -60.0  # RMS below this is reported as near-silent


@dataclass
class LevelMeter:
    """Running peak / RMS of the decoded signal (before any clipping)."""

    peak: float = 0.0
    sum_sq: float = 0.0
    n: int = 0

    def update(self, block: np.ndarray) -> None:
        if block.size:
            self.peak = max(self.peak, float(np.abs(block).max()))
            self.sum_sq += float(np.square(block, dtype=np.float64).sum())
            self.n += block.size

    @property
    def rms_dbfs(self) -> float:
        rms = math.sqrt(self.sum_sq / self.n) if self.n else 0.0
        return 20 * math.log10(rms) if rms > 0 else -math.inf

    def warnings(self) -> list[str]:
        """Human-readable problems with the level: silence, near-silence, samples beyond ±1."""
        out = []
        if self.peak == 0.0:
            out.append("digital silence (every sample is 0): the scores below say nothing about the content")
        elif self.rms_dbfs < SILENCE_DBFS:
            out.append(f"near-silent input (RMS {self.rms_dbfs:.0f} dBFS, peak {self.peak:.1e}): "
                       "the scores below are unreliable")
        if self.peak > 1.0:
            out.append(f"float samples reach ±{self.peak:.2f}, beyond ±1; they were clipped to ±1 "
                       "(rescale the file if that is not intended)")
        return out


def probe(path: Path) -> tuple[float | None, int | None]:
    """(duration s, sample rate) from the container header (soundfile, else ffmpeg's banner); None when unknown."""
    import soundfile as sf

    try:
        info = sf.info(str(Path(path).absolute()))
        return (info.frames / info.samplerate if info.samplerate else None), int(info.samplerate)
    except Exception:  # noqa: BLE001 - not a libsndfile format: ffmpeg decodes it, streamed
        return None, None


def duration_s(path: Path) -> float | None:
    """Duration from the container header (soundfile, else ffmpeg's banner); None when unknown."""
    length, _ = probe(path)
    if length is not None:
        return length
    banner = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", ffmpeg_input(path)],
                            capture_output=True, text=True, check=False)
    for line in banner.stderr.splitlines():
        if "Duration:" in line:
            stamp = line.split("Duration:", 1)[1].split(",")[0].strip()
            try:
                h, m, s = stamp.split(":")
                return int(h) * 3600 + int(m) * 60 + float(s)
            except ValueError:
                return None
    return None


def _channels(path: Path) -> int:
    from audiopipe.audio.io import _parse_ffmpeg_stream

    probe = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", ffmpeg_input(path)],
                           capture_output=True, text=True, check=False)
    info = _parse_ffmpeg_stream(probe.stderr)
    if info is None:
        raise AudioDecodeError(path, "not audio", "ffmpeg finds no audio stream")
    return info[1]


def _ffmpeg_blocks(path: Path, sample_rate: int, block_s: float) -> Iterator[np.ndarray]:
    channels = _channels(path)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", ffmpeg_input(path), "-map", "0:a:0",
           "-vn", "-ar", str(int(sample_rate)), "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    frame_bytes = 4 * channels
    want = max(1, int(block_s * sample_rate)) * frame_bytes
    with tempfile.TemporaryFile() as err_fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_fh)
        assert proc.stdout is not None
        rest = b""
        try:
            while True:
                chunk = proc.stdout.read(want)
                if not chunk:
                    break
                data = rest + chunk
                usable = len(data) - len(data) % frame_bytes
                rest = data[usable:]
                block = np.frombuffer(data[:usable], dtype=np.float32).reshape(-1, channels)
                yield block.mean(axis=1, dtype=np.float32) if channels > 1 else block[:, 0].copy()
        finally:
            proc.stdout.close()
            code = proc.wait()
        if code != 0:
            err_fh.seek(0)
            lines = [x for x in err_fh.read().decode(errors="replace").splitlines() if x.strip()]
            raise AudioDecodeError(path, "corrupt", lines[-1][:200] if lines else f"ffmpeg exit code {code}")


def audio_blocks(path: str | Path, sample_rate: int, meter: LevelMeter | None = None,
                 *, stream_above_s: float = STREAM_ABOVE_S, block_s: float = BLOCK_S) -> Iterator[np.ndarray]:
    """Mono float32 blocks at `sample_rate`, clipped to ±1 after `meter` saw them (see the module docstring)."""
    path = Path(path)
    check_audio_path(path)
    length, rate = probe(path)
    if length is not None and length <= stream_above_s and rate == sample_rate:
        blocks: Iterable[np.ndarray] = [load_audio(path, mono=True, clip=False)[0]]
    else:
        blocks = _ffmpeg_blocks(path, sample_rate, block_s)
    total = 0
    for block in blocks:
        if not np.isfinite(block).all():
            raise AudioDecodeError(path, "non-finite samples", "NaN or inf in the decoded signal")
        if meter is not None:
            meter.update(block)
        total += block.size
        yield np.clip(block, -1.0, 1.0)
    if total == 0:
        raise AudioDecodeError(path, "zero duration", "0 samples")


def sliding_windows(blocks: Iterable[np.ndarray], win: int, hop: int, min_len: int = 0
                    ) -> Iterator[tuple[int, np.ndarray]]:
    """`(start_sample, window)` pairs over a block stream; every window has `win` samples (zero-padded at the
    end), except a stream shorter than `win`, which is one window of max(L, `min_len`) samples.
    The number of windows is ceil((L − win) / hop) + 1 for L > win, as `tag.window_starts`."""
    if win <= 0 or hop <= 0:
        raise ValueError("window and hop must be positive")
    buffer = np.zeros(0, dtype=np.float32)
    offset = 0  # sample index of buffer[0]
    k = 0  # next window index
    total = 0
    for block in blocks:
        total += block.size
        buffer = np.concatenate([buffer, block.astype(np.float32, copy=False)])
        while k * hop + win <= offset + buffer.size:
            begin = k * hop - offset
            yield k * hop, buffer[begin:begin + win].copy()
            k += 1
        drop = min(k * hop - offset, buffer.size)
        if drop > 0:
            buffer, offset = buffer[drop:], offset + drop
    if total <= win:
        if k == 0:
            length = max(total, min_len)
            yield 0, np.pad(buffer, (0, length - buffer.size))
        return
    n = math.ceil((total - win) / hop - 1e-9) + 1
    for j in range(k, n):
        begin = j * hop - offset
        piece = buffer[max(0, begin):begin + win]
        yield j * hop, np.pad(piece, (0, win - piece.size))


def rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux/macOS), for the benchmarks."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if os.uname().sysname == "Darwin" else peak / 1024
