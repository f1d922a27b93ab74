"""ATST-Frame front end: waveform -> normalised 64-bin log-mel, as ATST-SED feeds the encoder.

Shapes (B batch, T samples at 16 kHz):
    input  waveform (B, T)                       float in [-1, 1]
    output mel      (B, 64, 1 + T // 160)        10 s -> 1001 frames

Pipeline (spec atst_sed.md §2, `ATST-SED desed_task/dataio/datasets_atst_sed.py` `ATSTTransform` and the
`atst_norm` of the trainers): power mel (n_fft 1024, hop 160, periodic Hann, 64 HTK bins 60-7800 Hz,
centred reflect padding) -> 10·log10(max(x, 1e-10)) -> floor at (max - 80 dB) -> clamp [-50, 80] dB ->
fixed affine map 2·(x + 79.6482)/(50.6842 + 79.6482) - 1.

The 80 dB floor is taken over the whole batch in ATST-SED (torchaudio's `amplitude_to_DB` on a (B, F, T)
tensor); ATST-Frame pre-training takes it per clip and does not clamp. `top_db_scope` and `clamp_db` switch
between the two; the defaults reproduce ATST-SED.

`LinearMel` (STFT magnitude/power -> mel, no log) is shared with the SED front end in `models/sed/frontend.py`;
its window and filter bank are non-persistent buffers so model state dicts keep the official key sets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchaudio.functional import melscale_fbanks  # type: ignore[import-untyped]

# ATST-SED `train/local/*_trainer.py` (ATSTNorm): min/max dB of the ATST-Frame pre-training data.
ATST_NORM_MIN_DB = -79.6482
ATST_NORM_MAX_DB = 50.6842


class LinearMel(nn.Module):
    """Centred STFT -> |X|^power -> HTK mel filter bank (no filter normalisation), like torchaudio's MelSpectrogram.

    Shapes:
        (B, T) -> (B, n_mels, 1 + T // hop_length)
    """

    window: torch.Tensor
    fb: torch.Tensor

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        n_mels: int,
        f_min: float,
        f_max: float,
        power: float,
        window: str = "hann",
    ) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.power = n_fft, hop_length, power
        windows: dict[str, Callable[[], torch.Tensor]] = {
            "hann": lambda: torch.hann_window(n_fft),  # periodic, the torch default
            "hamming_symmetric": lambda: torch.hamming_window(n_fft, periodic=False),
        }
        if window not in windows:
            raise ValueError(f"unknown window '{window}'; choose one of {sorted(windows)}")
        with torch.device("cpu"):  # constants: computed on the CPU even inside a meta/cuda device context
            fb = melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate, norm=None, mel_scale="htk")
            self.register_buffer("window", windows[window](), persistent=False)
        self.register_buffer("fb", fb, persistent=False)  # (n_fft // 2 + 1, n_mels)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() != 2:
            raise ValueError(f"expected waveform (B, T), got shape {tuple(waveform.shape)}")
        if waveform.shape[-1] <= self.n_fft // 2:
            raise ValueError(
                f"waveform of {waveform.shape[-1]} samples is shorter than n_fft/2 + 1 = "
                f"{self.n_fft // 2 + 1} (reflect padding needs more)"
            )
        spec = torch.stft(
            waveform.float(),
            self.n_fft,
            self.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # (B, n_fft // 2 + 1, frames)
        spec = spec.abs().pow(self.power)
        return torch.matmul(spec.transpose(1, 2), self.fb).transpose(1, 2)  # (B, n_mels, frames)


class ATSTFrontEnd(nn.Module):
    """Waveform at 16 kHz -> normalised ATST log-mel (B, 64, frames); no trainable parameters.

    Args:
        top_db: Dynamic range kept below the maximum (dB); None disables the floor.
        top_db_scope: "batch" (ATST-SED: one maximum over the whole batch) or "clip" (ATST-Frame pre-training).
        clamp_db: (min, max) dB clamp applied after the floor (ATST-SED); None disables it (audiossl).

    Example:
        >>> frontend = ATSTFrontEnd()
        >>> tuple(frontend(torch.zeros(2, 16000)).shape)
        (2, 64, 101)
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 160,
        n_mels: int = 64,
        f_min: float = 60.0,
        f_max: float = 7800.0,
        top_db: float | None = 80.0,
        top_db_scope: str = "batch",
        clamp_db: Sequence[float] | None = (-50.0, 80.0),
    ) -> None:
        super().__init__()
        if top_db_scope not in ("batch", "clip"):
            raise ValueError(f"top_db_scope must be 'batch' or 'clip', got '{top_db_scope}'")
        self.sample_rate, self.hop_length, self.n_mels = sample_rate, hop_length, n_mels
        self.top_db, self.top_db_scope = top_db, top_db_scope
        self.clamp_db = None if clamp_db is None else (float(clamp_db[0]), float(clamp_db[1]))
        self.mel = LinearMel(sample_rate, n_fft, hop_length, n_mels, f_min, f_max, power=2.0, window="hann")

    def power_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, T) -> linear power mel (B, n_mels, frames); the domain in which ATST-SED mixes clips (mixup)."""
        return self.mel(waveform)

    def normalize(self, power_mel: torch.Tensor) -> torch.Tensor:
        """Power mel (B, n_mels, frames) -> dB, floor, clamp, fixed affine scaling."""
        x = 10.0 * torch.log10(power_mel.clamp(min=1e-10))
        if self.top_db is not None:
            peak = x.amax(dim=(1, 2), keepdim=True) if self.top_db_scope == "clip" else x.amax()
            x = torch.maximum(x, peak - self.top_db)
        if self.clamp_db is not None:
            x = x.clamp(min=self.clamp_db[0], max=self.clamp_db[1])
        return 2.0 * (x - ATST_NORM_MIN_DB) / (ATST_NORM_MAX_DB - ATST_NORM_MIN_DB) - 1.0

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.power_mel(waveform))
