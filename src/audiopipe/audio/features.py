"""Log-mel front ends as `nn.Module`s: waveform (B, T) -> features (B, n_mels, frames).

`EfficientATMel` reproduces EfficientAT `models/preprocess.py::AugmentMelSTFT` (spec efficientat.md §1):
pre-emphasis -> STFT power -> Kaldi-style mel filterbank (rebuilt with random fmin/fmax jitter in train mode)
-> ln(x + 1e-5) -> optional SpecAugment-style masks (train mode) -> (x + 4.5) / 5.
No parameters and no persistent buffers, so nothing of it appears in a checkpoint.

Frames: 1 + (T - 1) // hop_length (pre-emphasis drops one sample): 10 s at 32 kHz, hop 320 -> 1000 frames.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# EfficientAT models/preprocess.py: pre-emphasis coefficient, log offset and the fixed (x + 4.5) / 5 scaling.
PREEMPHASIS = 0.97
LOG_OFFSET = 1e-5
NORM_SHIFT = 4.5
NORM_SCALE = 5.0


def _kaldi_mel(freq_hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * (1.0 + freq_hz / 700.0).log()


def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: float, fmin: float, fmax: float) -> torch.Tensor:
    """Triangular mel filters on the Kaldi mel scale, no area normalisation, zero Nyquist column.

    Same formula and float32 arithmetic as `torchaudio.compliance.kaldi.get_mel_banks` without VTLN warping
    (spec §1.2 step 5), vendored so that torchaudio API drift cannot change the features.

    Returns:
        (n_mels, n_fft // 2 + 1) float32 weights.
    """
    if not 0.0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, fmax={fmax}")
    mel_low = 1127.0 * math.log(1.0 + fmin / 700.0)
    mel_high = 1127.0 * math.log(1.0 + fmax / 700.0)
    delta = (mel_high - mel_low) / (n_mels + 1)
    band = torch.arange(n_mels, dtype=torch.float32).unsqueeze(1)  # (n_mels, 1)
    left, centre, right = mel_low + band * delta, mel_low + (band + 1.0) * delta, mel_low + (band + 2.0) * delta
    bin_mel = _kaldi_mel((sample_rate / n_fft) * torch.arange(n_fft // 2, dtype=torch.float32)).unsqueeze(0)
    up = (bin_mel - left) / (centre - left)
    down = (right - bin_mel) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # (n_mels, n_fft // 2)
    return torch.nn.functional.pad(banks, (0, 1))  # Nyquist column of zeros


def _mask_along(x: torch.Tensor, max_width: int, dim: int) -> torch.Tensor:
    """Zero one random band of width U[0, max_width) along `dim` (1 = mel, 2 = time) per example."""
    batch, size = x.shape[0], x.shape[dim]
    width = torch.rand(batch, device=x.device) * min(max_width, size)
    start = torch.rand(batch, device=x.device) * (size - width)
    positions = torch.arange(size, device=x.device).unsqueeze(0)  # (1, size)
    mask = (positions >= start.floor().unsqueeze(1)) & (positions < (start + width).floor().unsqueeze(1))
    mask = mask.unsqueeze(2) if dim == 1 else mask.unsqueeze(1)  # (B, F, 1) or (B, 1, T)
    return x.masked_fill(mask, 0.0)


class EfficientATMel(nn.Module):
    """EfficientAT log-mel front end (AugmentMelSTFT) with train-time fmin/fmax jitter and optional masks.

    Args:
        sample_rate: Input sample rate in Hz (32000 for every published checkpoint).
        n_fft: FFT size.
        win_length: Symmetric Hann window length in samples, centred in `n_fft`.
        hop_length: Hop in samples (320 = 10 ms at 32 kHz).
        n_mels: Mel bands.
        fmin: Lower mel edge in Hz.
        fmax: Upper mel edge in Hz; None -> sample_rate // 2 - fmax_aug_range // 2 (15 kHz at 32 kHz).
        fmin_aug_range: Train mode draws fmin + U{0 .. fmin_aug_range - 1}; 1 disables the jitter.
        fmax_aug_range: Train mode draws fmax + fmax_aug_range // 2 - U{0 .. fmax_aug_range - 1}.
        freqm: Maximum frequency-mask width in bins (train mode; 0 = off, the EfficientAT recipe value).
        timem: Maximum time-mask width in frames (train mode; 0 = off, the EfficientAT recipe value).

    Differences from upstream, on purpose: eval mode draws no random numbers (upstream draws the jitter and
    discards it), and masks are drawn per example (torchaudio >= 2 semantics; upstream's pinned torchaudio 0.13
    used one mask per batch). Neither changes eval outputs or the AudioSet recipe (masks off).

    Example:
        >>> mel = EfficientATMel().eval()
        >>> tuple(mel(torch.zeros(2, 32000)).shape)
        (2, 128, 100)
    """

    window: torch.Tensor
    eval_mel_banks: torch.Tensor

    def __init__(
        self,
        sample_rate: int = 32000,
        n_fft: int = 1024,
        win_length: int = 800,
        hop_length: int = 320,
        n_mels: int = 128,
        fmin: float = 0.0,
        fmax: float | None = None,
        fmin_aug_range: int = 10,
        fmax_aug_range: int = 2000,
        freqm: int = 0,
        timem: int = 0,
    ) -> None:
        super().__init__()
        if fmin_aug_range < 1 or fmax_aug_range < 1:
            raise ValueError("fmin_aug_range and fmax_aug_range must be >= 1 (1 disables the jitter)")
        if win_length > n_fft:
            raise ValueError(f"win_length {win_length} exceeds n_fft {n_fft}")
        self.sample_rate, self.n_fft, self.win_length, self.hop_length = sample_rate, n_fft, win_length, hop_length
        self.n_mels, self.fmin_aug_range, self.fmax_aug_range = n_mels, fmin_aug_range, fmax_aug_range
        self.freqm, self.timem = freqm, timem
        self.fmin = float(fmin)
        self.fmax = float(sample_rate // 2 - fmax_aug_range // 2) if fmax is None else float(fmax)
        if self.fmax + fmax_aug_range // 2 > sample_rate / 2:
            raise ValueError(f"fmax {self.fmax} + jitter {fmax_aug_range // 2} exceeds the Nyquist frequency")
        self.register_buffer("window", torch.hann_window(win_length, periodic=False), persistent=False)
        eval_banks = kaldi_mel_banks(n_mels, n_fft, sample_rate, self.fmin, self.fmax)
        self.register_buffer("eval_mel_banks", eval_banks, persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a waveform of `num_samples` samples."""
        return 1 + (num_samples - 1) // self.hop_length

    def _mel_banks(self) -> torch.Tensor:
        if not self.training:
            return self.eval_mel_banks
        fmin = self.fmin + int(torch.randint(self.fmin_aug_range, (1,)))
        fmax = self.fmax + self.fmax_aug_range // 2 - int(torch.randint(self.fmax_aug_range, (1,)))
        banks = kaldi_mel_banks(self.n_mels, self.n_fft, self.sample_rate, fmin, fmax)
        return banks.to(self.eval_mel_banks.device)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() != 2:
            raise ValueError(f"expected a (B, T) waveform, got shape {tuple(waveform.shape)}")
        if waveform.shape[1] - 1 <= self.n_fft // 2:
            raise ValueError(f"waveform of {waveform.shape[1]} samples is too short for n_fft {self.n_fft}")
        x = waveform.float()
        x = x[:, 1:] - PREEMPHASIS * x[:, :-1]  # (B, T - 1)
        spec = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )  # (B, n_fft // 2 + 1, frames)
        power = spec.real.square() + spec.imag.square()
        with torch.autocast(device_type=power.device.type, enabled=False):
            mel = torch.matmul(self._mel_banks(), power.float())  # (B, n_mels, frames), always float32
        mel = torch.log(mel + LOG_OFFSET)
        if self.training and self.freqm > 0:
            mel = _mask_along(mel, self.freqm, dim=1)
        if self.training and self.timem > 0:
            mel = _mask_along(mel, self.timem, dim=2)
        return (mel + NORM_SHIFT) / NORM_SCALE

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, win_length={self.win_length}, "
            f"hop_length={self.hop_length}, n_mels={self.n_mels}, fmin={self.fmin}, fmax={self.fmax}, "
            f"freqm={self.freqm}, timem={self.timem}"
        )
