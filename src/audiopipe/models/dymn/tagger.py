"""Waveform-in DyMN tagger (EfficientAT mel front end + `DyMN`) and strict loading of official DyMN weights.

Shapes (B batch, T samples at `sample_rate`, C classes):
    input   waveform  (B, T) float32 in [-1, 1]
    output  logits    (B, C)

State-dict keys are the official ones under `net.` (the front end has no persistent state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from audiopipe.models.dymn.model import DyMN
from audiopipe.models.mobilenet.tagger import MelTagger, load_strict


class DyMNTagger(MelTagger):
    """EfficientATMel -> DyMN -> logits; the DyMN counterpart of `MobileNetTagger` (same front-end arguments).

    Args:
        width_mult: Width multiplier alpha of the network.
        n_mels, hop_length, n_fft, win_length: Front-end settings (EfficientAT: 128, 320, 1024, 800 at 32 kHz).
        fmin_aug_range, fmax_aug_range, freqm, timem: Train-time front-end augmentation (spec §1.1).
        head_type, strides, dropout, use_dy_blocks, T_max, T_min, T0_slope, T1_slope, temperature: Passed to
            `DyMN`; the schedule defaults are EfficientAT's for training, pass `T_max=1` to fine-tune AudioSet
            weights.

    Example:
        >>> tagger = DyMNTagger(width_mult=0.4, n_classes=5).eval()
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
        strides: Sequence[int] = (2, 2, 2, 2),
        dropout: float = 0.2,
        fmin_aug_range: int = 10,
        fmax_aug_range: int = 2000,
        freqm: int = 0,
        timem: int = 0,
        use_dy_blocks: str = "all",
        T_max: float = 30.0,
        T_min: float = 1.0,
        T0_slope: float = 1.0,
        T1_slope: float = 0.02,
        temperature: float = 1.0,
    ) -> None:
        super().__init__(
            sample_rate=sample_rate, n_mels=n_mels, hop_length=hop_length, n_fft=n_fft, win_length=win_length,
            fmin_aug_range=fmin_aug_range, fmax_aug_range=fmax_aug_range, freqm=freqm, timem=timem,
        )  # fmt: skip
        self.net: DyMN = DyMN(
            n_classes=n_classes,
            width_mult=width_mult,
            head_type=head_type,
            strides=tuple(strides),
            dropout=dropout,
            use_dy_blocks=use_dy_blocks,
            T_max=T_max,
            T_min=T_min,
            T0_slope=T0_slope,
            T1_slope=T1_slope,
            temperature=temperature,
        )

    def update_params(self, epoch: int) -> float:
        """Temperature schedule step of the network (see `DyMN.update_params`); returns tau."""
        return self.net.update_params(epoch)


def load_official_weights(module: DyMNTagger | DyMN, source: str | Path | Mapping[str, torch.Tensor]) -> None:
    """Load an official EfficientAT DyMN state dict (file or mapping) strictly into `module` (or `module.net`).

    tau is not in the file: keep the network's temperature at 1 for the `dymn*_as` weights.

    Raises:
        CheckpointError: Keys or shapes do not match; the message lists missing, unexpected and mis-shaped keys.
    """
    load_strict(module.net if isinstance(module, DyMNTagger) else module, source)
