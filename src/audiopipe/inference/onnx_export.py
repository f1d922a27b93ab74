"""ONNX-friendly re-expression of the EfficientAT front end (used by `audiopipe export onnx`).

`torch.onnx.export` (TorchScript exporter, `dynamo=False`) cannot export the complex `torch.stft` of
`EfficientATMel`, so the eval-mode front end is re-expressed with real operations that compute the same
numbers: pre-emphasis, reflect padding, a strided Conv1d whose kernels are the windowed cosine/sine DFT rows
(= the STFT), power, the eval mel filterbank, log and the fixed normalisation.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from audiopipe.audio.features import LOG_OFFSET, NORM_SCALE, NORM_SHIFT, PREEMPHASIS, EfficientATMel


class ExportableMel(nn.Module):
    """Eval-mode `EfficientATMel` built from ONNX-friendly real operations (no complex tensors).

    Example:
        >>> mel = EfficientATMel(sample_rate=16000, n_mels=32).eval()
        >>> x = torch.randn(1, 16000) * 0.1
        >>> bool(torch.allclose(ExportableMel(mel)(x), mel(x), atol=1e-3))
        True
    """

    dft: torch.Tensor
    banks: torch.Tensor

    def __init__(self, mel: EfficientATMel) -> None:
        super().__init__()
        n_fft, win = mel.n_fft, mel.win_length
        window = torch.zeros(n_fft, dtype=torch.float64)
        left = (n_fft - win) // 2  # torch.stft centres a shorter window inside n_fft
        window[left:left + win] = mel.window.double()
        bins = n_fft // 2 + 1
        angle = 2 * math.pi * torch.arange(bins, dtype=torch.float64)[:, None] * torch.arange(n_fft)[None] / n_fft
        kernels = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])  # (2 * bins, n_fft)
        self.register_buffer("dft", kernels.float().unsqueeze(1), persistent=False)  # (2 * bins, 1, n_fft)
        self.register_buffer("banks", mel.eval_mel_banks.clone().float(), persistent=False)  # (n_mels, bins)
        self.n_fft, self.hop_length, self.bins = n_fft, mel.hop_length, bins

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = waveform[:, 1:] - PREEMPHASIS * waveform[:, :-1]  # (B, T - 1)
        x = F.pad(x.unsqueeze(1), (self.n_fft // 2, self.n_fft // 2), mode="reflect")  # (B, 1, T - 1 + n_fft)
        spec = F.conv1d(x, self.dft, stride=self.hop_length)  # (B, 2 * bins, frames)
        real, imag = spec[:, : self.bins], spec[:, self.bins :]
        mel = torch.matmul(self.banks, real * real + imag * imag)  # (B, n_mels, frames)
        return (torch.log(mel + LOG_OFFSET) + NORM_SHIFT) / NORM_SCALE


class ExportableTagger(nn.Module):
    """waveform (B, T) -> logits (B, C) for a `MobileNetTagger`-like model (`.mel` + `.net`)."""

    def __init__(self, tagger: nn.Module) -> None:
        super().__init__()
        self.mel = ExportableMel(tagger.mel)  # type: ignore[arg-type]
        self.net: Any = tagger.net

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.net(self.mel(waveform))[0]


def exportable(model: nn.Module) -> nn.Module:
    """The module to trace: the real-valued front end for EfficientAT taggers, else the model itself."""
    if isinstance(getattr(model, "mel", None), EfficientATMel) and hasattr(model, "net"):
        return ExportableTagger(model).eval()
    return model.eval()
