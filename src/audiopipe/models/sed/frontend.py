"""DESED-baseline mel front end of the SED CNN branch (ATST-SED `mel_spec` + `take_log` + instance scaler).

Shapes (B batch, T samples at 16 kHz):
    input  waveform (B, T)                        float in [-1, 1]
    output mel      (B, 128, 1 + T // 256)        per-clip min-max scaled to [0, 1]; 10 s -> 626 frames

Steps (spec atst_sed.md §2): magnitude mel (n_fft = win 2048, hop 256, symmetric Hamming, 128 HTK bins
0-8000 Hz, centred reflect padding) -> 20·log10(max(x, 1e-5)) -> clamp [-50, 80] dB ->
(x - min) / (max - min + 1e-8) over (frequency, time) of each clip (`TorchScaler("instance", "minmax", [1, 2])`).
"""

from __future__ import annotations

import torch
from torch import nn

from audiopipe.models.atst.frontend import LinearMel


class SEDMelFrontEnd(nn.Module):
    """Waveform (B, T) -> min-max scaled log-mel (B, n_mels, frames); no trainable parameters or saved buffers.

    Example:
        >>> frontend = SEDMelFrontEnd()
        >>> tuple(frontend(torch.randn(2, 160000)).shape)
        (2, 128, 626)
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 2048,
        hop_length: int = 256,
        n_mels: int = 128,
        f_min: float = 0.0,
        f_max: float = 8000.0,
    ) -> None:
        super().__init__()
        self.sample_rate, self.hop_length, self.n_mels = sample_rate, hop_length, n_mels
        self.mel = LinearMel(
            sample_rate, n_fft, hop_length, n_mels, f_min, f_max, power=1.0, window="hamming_symmetric"
        )

    def magnitude(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, T) -> linear magnitude mel (B, n_mels, frames); the domain in which ATST-SED applies mixup."""
        return self.mel(waveform)

    @staticmethod
    def normalize(magnitude: torch.Tensor) -> torch.Tensor:
        """Magnitude mel (B, F, T) -> 20·log10, clamp [-50, 80] dB, per-clip min-max to [0, 1]."""
        x = (20.0 * torch.log10(magnitude.clamp(min=1e-5))).clamp(min=-50.0, max=80.0)
        low = x.amin(dim=(1, 2), keepdim=True)
        high = x.amax(dim=(1, 2), keepdim=True)
        return (x - low) / (high - low + 1e-8)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.magnitude(waveform))
