"""EAT audio tagger: front end + encoder + CLS head (spec §4.1), and layer-wise LR decay groups (§4.4).

Shapes (B batch, T samples, C classes):
    input  waveform  (B, T)   float in [-1, 1] at `.sample_rate`
    output logits    (B, C)   pre-sigmoid

Head: encoder output row 0 (CLS) -> `fc_norm` LayerNorm (eps 1e-6) -> `head` Linear(D -> C)
(`prediction_mode: CLS_TOKEN` in every EAT script); `pooling="mean"` averages the patch tokens instead.
Training-time augmentation (mixup, SpecAugment, roll) belongs to the training code, which can call
`frontend` and `forward_spectrogram` separately to augment in between.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from audiopipe.models.eat.encoder import EATEncoder
from audiopipe.models.eat.frontend import AUDIOSET_MEAN, AUDIOSET_STD, EATFrontEnd


class EATTagger(nn.Module):
    """Waveform -> multi-label logits.

    Args:
        n_classes: Output classes C (527 for AudioSet).
        sample_rate: Rate of the input waveform (resampled to 16 kHz inside the front end).
        embed_dim, depth, num_heads, mlp_ratio: Encoder size (see `EATEncoder`; base 768/12/12/4).
        target_frames: Fbank pad/crop length (1024 AudioSet, 512 ESC-50, 128 SPC-2; None = variable).
        norm_mean, norm_std: Fbank normalisation constants of the dataset.
        drop_path_rate: Stochastic depth of the encoder (0.1 for fine-tuning).
        pooling: "cls" (official) or "mean" over patch tokens.

    Example:
        >>> tagger = EATTagger(n_classes=5, sample_rate=16000, embed_dim=32, depth=1, num_heads=4,
        ...                    target_frames=128).eval()
        >>> tuple(tagger(torch.zeros(2, 16000)).shape)
        (2, 5)
    """

    def __init__(
        self,
        n_classes: int,
        sample_rate: int,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        target_frames: int | None = 1024,
        norm_mean: float = AUDIOSET_MEAN,
        norm_std: float = AUDIOSET_STD,
        drop_path_rate: float = 0.1,
        pooling: str = "cls",
    ) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.sample_rate = sample_rate
        self.pooling = pooling
        self.frontend = EATFrontEnd(sample_rate, target_frames, norm_mean, norm_std)
        self.encoder = EATEncoder(embed_dim, depth, num_heads, mlp_ratio, drop_path_rate=drop_path_rate)
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, n_classes)
        if not self.head.weight.is_meta:  # shape-only models skip the random draw
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    def forward_spectrogram(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """Logits from a normalised fbank `(B, 1, T_f, 128)` -> `(B, C)`."""
        x = self.encoder(spectrogram)  # (B, 1 + N, D)
        pooled = x[:, 0] if self.pooling == "cls" else x[:, 1:].mean(dim=1)  # (B, D)
        return self.head(self.fc_norm(pooled))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.forward_spectrogram(self.frontend(waveform))


_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def param_groups_layer_decay(
    model: nn.Module, lr: float, layer_decay: float = 0.65, weight_decay: float = 0.05
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise LR decay (spec §4.4).

    Encoder block i (0-based, of `depth`) gets `lr * layer_decay ** (depth - i)`; every other trainable
    parameter (patch conv, CLS, pre-norm, fc_norm, head) gets `lr`. Weight decay is applied to all
    parameters, as the official fairseq run effectively does. Each group carries `lr_scale` and `name`
    so a scheduler can scale the peak LR per group.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    indices = [int(m.group(1)) for name, _ in named if (m := _BLOCK.search(name))]
    depth = max(indices) + 1 if indices else 0
    groups: dict[str, dict[str, Any]] = {}
    for name, param in named:
        match = _BLOCK.search(name)
        key = f"block_{match.group(1)}" if match else "rest"
        scale = layer_decay ** (depth - int(match.group(1))) if match else 1.0
        group = groups.setdefault(key, {"name": key, "params": [], "lr": lr * scale, "lr_scale": scale,
                                        "weight_decay": weight_decay})
        group["params"].append(param)
    return list(groups.values())
