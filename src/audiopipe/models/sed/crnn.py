"""Building blocks of the DCASE-baseline / ATST-SED CRNN: gated CNN, BiGRU and the strong/weak heads.

Shapes (B batch, F mel bins, T mel frames, C channels, K classes):
    CNN    mel (B, F, T)            -> (B, T', C_last · F')      T' = T // prod(time pools)
    BiGRU  (B, T', n_in)            -> (B, T', 2 · hidden)
    heads  (B, T', 2 · hidden)      -> strong (B, K, T') sigmoid, weak (B, K) attention-pooled

Module names follow `ATST-SED desed_task/nnet/{CNN,RNN}.py` (spec atst_sed.md §4.3): `cnn.conv{i}`,
`cnn.batchnorm{i}`, `cnn.cg{i}.linear` (or `cnn.glu{i}.linear`), `rnn` inside `BidirectionalGRU`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ContextGating(nn.Module):
    """x · sigmoid(Linear_{C->C}(x)), the linear applied over channels of every (time, freq) cell."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, T, F)
        return x * torch.sigmoid(gate)


class GLU(nn.Module):
    """DESED baseline's "GLU": Linear_{C->C}(x) · sigmoid(x) over channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lin = self.linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, T, F)
        return lin * torch.sigmoid(x)


_ACTIVATIONS = {"cg": ContextGating, "glu": GLU}


class CNN(nn.Module):
    """Conv3x3 -> BatchNorm(eps 1e-3, momentum 0.99) -> gating -> Dropout -> AvgPool(time, freq), per block.

    Args:
        pools: (time, freq) average-pool factors per block (ATST-SED: 2, 2 in time, 2 in frequency everywhere).
        activation: "cg" (context gating, ATST-SED) or "glu" (DCASE 2023 baseline).
    """

    def __init__(
        self,
        n_mels: int,
        channels: Sequence[int],
        pools: Sequence[Sequence[int]],
        activation: str,
        dropout: float,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation '{activation}'; choose one of {sorted(_ACTIVATIONS)}")
        if len(channels) != len(pools):
            raise ValueError(f"{len(channels)} channel entries but {len(pools)} pooling entries")
        self.time_pool, freq_pool = 1, 1
        self.cnn = nn.Sequential()
        in_channels = 1
        for i, (out_channels, pool) in enumerate(zip(channels, pools, strict=True)):
            time_factor, freq_factor = int(pool[0]), int(pool[1])
            self.cnn.add_module(f"conv{i}", nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
            self.cnn.add_module(f"batchnorm{i}", nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.99))
            self.cnn.add_module(f"{activation}{i}", _ACTIVATIONS[activation](out_channels))
            self.cnn.add_module(f"dropout{i}", nn.Dropout(dropout))
            self.cnn.add_module(f"pooling{i}", nn.AvgPool2d((time_factor, freq_factor)))
            in_channels = out_channels
            self.time_pool, freq_pool = self.time_pool * time_factor, freq_pool * freq_factor
        if n_mels % freq_pool:
            raise ValueError(f"n_mels={n_mels} is not divisible by the frequency pooling {freq_pool}")
        self.out_dim = in_channels * (n_mels // freq_pool)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.cnn(mel.transpose(1, 2).unsqueeze(1))  # (B, 1, T, F) -> (B, C, T', F')
        return x.permute(0, 2, 1, 3).flatten(2)  # (B, T', C · F')


class BidirectionalGRU(nn.Module):
    """Batch-first bidirectional GRU; the wrapper keeps the official `rnn.rnn.*` key names."""

    def __init__(self, n_in: int, hidden: int, num_layers: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.rnn = nn.GRU(
            n_in,
            hidden,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]  # (B, T', 2 · hidden)


def strong_weak_heads(x: torch.Tensor, dense: nn.Linear, dense_softmax: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """RNN output (B, T', H) -> strong (B, K, T') sigmoid and weak (B, K).

    Weak = attention-weighted mean of strong over time, the attention being a softmax over the **classes**
    clamped to [1e-7, 1] (ATST-SED `CRNN_e2e.py`, spec §4.1).
    """
    strong = torch.sigmoid(dense(x))  # (B, T', K)
    attention = torch.softmax(dense_softmax(x), dim=-1).clamp(min=1e-7, max=1.0)  # (B, T', K)
    weak = (strong * attention).sum(dim=1) / attention.sum(dim=1)  # (B, K)
    return strong.transpose(1, 2), weak
