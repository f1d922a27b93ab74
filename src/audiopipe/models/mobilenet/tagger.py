"""Waveform-in tagger: EfficientAT mel front end + MobileNetV3, and strict loading of official EfficientAT weights.

Shapes (B batch, T samples at `sample_rate`, C classes):
    input   waveform  (B, T) float32 in [-1, 1]
    output  logits    (B, C)

State-dict keys are the official ones under `net.` (the front end has no persistent state), so
`tagger.net.load_state_dict(official_state_dict, strict=True)` works; `load_official_weights` wraps that
with an error that lists missing and unexpected keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

import torch
from torch import nn

from audiopipe.audio.features import EfficientATMel
from audiopipe.models.mobilenet.model import MobileNetV3
from audiopipe.storage import load_checkpoint, load_state_dict_strict


class MelTagger(nn.Module):
    """Shared body of the EfficientAT taggers: the `mel` front end (built here) and `net` (set by the subclass,
    returning (logits, embedding) from a mel (B, n_mels, frames)); `embed` and `forward` are defined once."""

    net: nn.Module

    def __init__(
        self, *, sample_rate: int, n_mels: int, hop_length: int, n_fft: int, win_length: int,
        fmin_aug_range: int, fmax_aug_range: int, freqm: int, timem: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.sample_rate = sample_rate
        self.mel = EfficientATMel(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            n_mels=n_mels,
            fmin_aug_range=fmin_aug_range,
            fmax_aug_range=fmax_aug_range,
            freqm=freqm,
            timem=timem,
        )

    def embed(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, C) and clip embedding (B, E)."""
        return cast(tuple[torch.Tensor, torch.Tensor], self.net(self.mel(waveform)))  # mel (B, n_mels, frames)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.embed(waveform)[0]


class MobileNetTagger(MelTagger):
    """EfficientATMel -> MobileNetV3 -> logits.

    Args:
        width_mult: Width multiplier alpha of the network.
        n_classes: Output classes C.
        sample_rate: Sample rate of the input waveform in Hz.
        n_mels, hop_length, n_fft, win_length: Front-end settings (EfficientAT: 128, 320, 1024, 800 at 32 kHz).
        head_type, se_dims, strides, dropout: Passed to `MobileNetV3`.
        fmin_aug_range, fmax_aug_range, freqm, timem: Train-time front-end augmentation (spec §1.1).
        input_dim_t: Frames the time SE is sized for (only used when `se_dims` contains "t").

    Example:
        >>> tagger = MobileNetTagger(width_mult=0.1, n_classes=5).eval()
        >>> tuple(tagger(torch.zeros(2, 16000)).shape)
        (2, 5)
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        n_classes: int = 527,
        sample_rate: int = 32000,
        n_mels: int = 128,
        hop_length: int = 320,
        n_fft: int = 1024,
        win_length: int = 800,
        head_type: str = "mlp",
        se_dims: str = "c",
        strides: Sequence[int] = (2, 2, 2, 2),
        dropout: float = 0.2,
        fmin_aug_range: int = 10,
        fmax_aug_range: int = 2000,
        freqm: int = 0,
        timem: int = 0,
        input_dim_t: int = 1000,
    ) -> None:
        super().__init__(
            sample_rate=sample_rate, n_mels=n_mels, hop_length=hop_length, n_fft=n_fft, win_length=win_length,
            fmin_aug_range=fmin_aug_range, fmax_aug_range=fmax_aug_range, freqm=freqm, timem=timem,
        )  # fmt: skip
        self.net = MobileNetV3(
            n_classes=n_classes,
            width_mult=width_mult,
            head_type=head_type,
            se_dims=se_dims,
            strides=tuple(strides),
            input_dim_f=n_mels,
            input_dim_t=input_dim_t,
            dropout=dropout,
        )

def load_official_weights(
    module: MobileNetTagger | MobileNetV3, source: str | Path | Mapping[str, torch.Tensor]
) -> None:
    """Load an official EfficientAT MN state dict (file or mapping) strictly into `module` (or `module.net`).

    Raises:
        CheckpointError: Keys or shapes do not match; the message lists missing, unexpected and mis-shaped keys.
    """
    load_strict(module.net if isinstance(module, MobileNetTagger) else module, source)


def load_strict(net: nn.Module, source: str | Path | Mapping[str, torch.Tensor]) -> None:
    """`net.load_state_dict(strict=True)` from a file or mapping; `CheckpointError` lists every mismatch."""
    if isinstance(source, (str, Path)):
        load_state_dict_strict(net, load_checkpoint(source), source=str(source))
    else:
        load_state_dict_strict(net, dict(source), source="state dict")
