"""MP3 codec of packed clips (`pack_hdf5` codec "mp3"): `encode_mp3` with ffmpeg, `decode_mp3` in-process (PyAV).

Both work on mono float32 waveforms in [-1, 1]; `decode_mp3` returns exactly `num_samples` samples (zero-padded or
cut), so a decoded clip has the length its pack recorded.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from audiopipe.audio.io import ffmpeg_exe


def encode_mp3(waveform: np.ndarray, sample_rate: int, bitrate_kbps: int = 128) -> bytes:
    """Encode mono float32 audio to mp3 bytes with ffmpeg (libmp3lame).

    ffmpeg writes to a (seekable) temporary file, not a pipe, so that it can fill in the LAME/Xing header
    with the encoder delay and padding; decoders then return exactly the original samples' timing.
    """
    with tempfile.TemporaryDirectory(prefix="audiopipe-mp3-") as tmp:
        out = Path(tmp) / "clip.mp3"
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-f", "f32le", "-ar", str(sample_rate)]
        cmd += ["-ac", "1", "-i", "-", "-c:a", "libmp3lame", "-b:a", f"{bitrate_kbps}k", str(out)]
        pcm = np.ascontiguousarray(waveform, dtype=np.float32).tobytes()
        proc = subprocess.run(cmd, input=pcm, capture_output=True, check=False)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"ffmpeg mp3 encoding failed: {proc.stderr.decode(errors='replace')[-300:]}")
        return out.read_bytes()


def decode_mp3(data: bytes, sample_rate: int, num_samples: int) -> np.ndarray:
    """Decode mp3 bytes in-process (PyAV) to mono float32 `(num_samples,)` at `sample_rate`."""
    import av  # lazy: only mp3 packs need it

    chunks: list[np.ndarray] = []
    with av.open(io.BytesIO(data), mode="r", format="mp3") as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        for frame in container.decode(audio=0):
            for piece in resampler.resample(frame):
                chunks.append(piece.to_ndarray().reshape(-1))
        for piece in resampler.resample(None):
            chunks.append(piece.to_ndarray().reshape(-1))
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    out = np.zeros(num_samples, dtype=np.float32)
    n = min(num_samples, audio.shape[0])
    out[:n] = audio[:n]
    return np.clip(out, -1.0, 1.0)
