"""Audio file I/O: the one place that decides which backend reads and writes audio.

`load_audio(path)` returns `(waveform, sample_rate)` with `waveform` float32 in [-1, 1], shaped `(T,)`
for mono or `(T, channels)` for multi-channel files (`mono=True` averages the channels).
It tries python-soundfile (wav/flac/ogg) first and falls back to an ffmpeg subprocess for anything
else (mp3, m4a, opus, ...). The ffmpeg binary is the system `ffmpeg` on PATH if there is one, else
the binary shipped inside the `imageio-ffmpeg` wheel, so no system package is needed.
`save_audio` writes PCM16 wav atomically (temporary file, then rename).
"""

from __future__ import annotations

import errno
import shutil
import stat
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from audiopipe.storage import atomic_write


class AudioDecodeError(RuntimeError):
    """A file could not be decoded to audio. `reason` is one of REJECT_REASONS; the message names the file."""

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        extra = f" ({detail})" if detail else ""
        super().__init__(f"{path}: cannot decode audio: {reason}{extra}")


REJECT_REASONS = ("empty", "not audio", "corrupt", "zero duration", "non-finite samples", "silent")


@dataclass(frozen=True)
class AudioInfo:
    """Container-level facts about an audio file."""

    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: system `ffmpeg` on PATH, else the one inside imageio-ffmpeg."""
    system = shutil.which("ffmpeg")
    if system:
        return system
    import imageio_ffmpeg  # imported lazily: only needed when no system ffmpeg exists

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def check_audio_path(path: str | Path) -> None:
    """Raise a one-line error for paths that cannot be audio files: missing, directories, symlink loops,
    devices and pipes (e.g. /dev/zero, which would never end), empty files."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise AudioDecodeError(path, "not audio", "symbolic link loop; point the link at a real file") from err
        if err.errno == errno.ENOENT:
            kind = "broken symbolic link" if path.is_symlink() else "no such audio file"
            raise FileNotFoundError(f"{path}: {kind}; check the path") from err
        raise AudioDecodeError(path, "not audio", err.strerror or str(err)) from err
    if stat.S_ISDIR(info.st_mode):
        raise AudioDecodeError(path, "not audio", "is a directory; pass the audio files inside it (e.g. DIR/*.wav)")
    if not stat.S_ISREG(info.st_mode):
        raise AudioDecodeError(path, "not audio", "not a regular file (a device, pipe or socket); pass an audio file")
    if info.st_size == 0:
        raise AudioDecodeError(path, "empty", "file has 0 bytes")


def ffmpeg_input(path: str | Path) -> str:
    """A local path as ffmpeg input: an absolute `file:` URL, so names such as `-`, `pipe:x.wav` or `concat:a|b`
    are read as files, not as ffmpeg protocols."""
    return "file:" + str(Path(path).absolute())


_check_file = check_audio_path


def _ffmpeg_decode(path: Path) -> tuple[np.ndarray, int]:
    """Decode any container with ffmpeg to interleaved float32 at the file's own rate and channels."""
    probe = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", ffmpeg_input(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    info = _parse_ffmpeg_stream(probe.stderr)
    if info is None:
        reason = "not audio" if "Invalid data" in probe.stderr or "Audio:" not in probe.stderr else "corrupt"
        raise AudioDecodeError(path, reason, _last_line(probe.stderr))
    sample_rate, channels = info
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", ffmpeg_input(path), "-map", "0:a:0"]
    cmd += ["-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(channels), "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise AudioDecodeError(path, "corrupt", _last_line(proc.stderr.decode(errors="replace")))
    data = np.frombuffer(proc.stdout, dtype=np.float32).reshape(-1, channels)
    return data, sample_rate


def _parse_ffmpeg_stream(stderr: str) -> tuple[int, int] | None:
    """(sample_rate, channels) of the first audio stream in ffmpeg's banner, or None."""
    layouts = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}
    for line in stderr.splitlines():
        if "Stream #" in line and "Audio:" in line:
            fields = [f.strip() for f in line.split("Audio:", 1)[1].split(",")]
            rate = next((int(f.split()[0]) for f in fields if f.endswith(" Hz")), 0)
            channels = 0
            for f in fields[2:4]:
                key = f.split("(")[0].strip()
                if key in layouts:
                    channels = layouts[key]
                elif key.endswith(" channels"):
                    channels = int(key.split()[0])
            if rate > 0 and channels > 0:
                return rate, channels
    return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def load_audio(path: str | Path, *, mono: bool = False, clip: bool = True) -> tuple[np.ndarray, int]:
    """Read an audio file as float32.

    Returns:
        `(waveform, sample_rate)`; waveform `(T,)` for mono sources or with `mono=True`, else `(T, channels)`.
        Float files can hold samples beyond ±1: they are clipped unless `clip=False` (callers that report
        such samples clip after looking).

    Raises:
        FileNotFoundError: the path does not exist.
        AudioDecodeError: empty, corrupt, not audio, 0 samples or non-finite samples.
    """
    path = Path(path)
    _check_file(path)
    try:
        data, sample_rate = sf.read(str(path.absolute()), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        data, sample_rate = _ffmpeg_decode(path)
    if data.shape[0] == 0:
        raise AudioDecodeError(path, "zero duration", "0 samples")
    if not np.isfinite(data).all():
        raise AudioDecodeError(path, "non-finite samples", "NaN or inf in the decoded signal")
    if clip:
        data = np.clip(data, -1.0, 1.0)
    if mono or data.shape[1] == 1:
        data = data.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(data, dtype=np.float32), int(sample_rate)


def audio_info(path: str | Path) -> AudioInfo:
    """Sample rate, channel count and frame count without decoding (soundfile, else ffmpeg)."""
    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path.absolute()))
        return AudioInfo(sample_rate=int(info.samplerate), channels=int(info.channels), frames=int(info.frames))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        data, sample_rate = _ffmpeg_decode(path)
        return AudioInfo(sample_rate=sample_rate, channels=data.shape[1], frames=data.shape[0])


def save_audio(path: str | Path, waveform: np.ndarray, sample_rate: int) -> None:
    """Write `(T,)` or `(T, channels)` float audio as PCM16 wav, atomically (temp file + rename)."""
    path = Path(path)
    waveform = np.asarray(waveform, dtype=np.float32)
    if not np.isfinite(waveform).all():
        raise ValueError(f"{path}: refusing to write non-finite samples")
    with atomic_write(path) as tmp:
        sf.write(str(tmp), np.clip(waveform, -1.0, 1.0), int(sample_rate), subtype="PCM_16", format="WAV")
