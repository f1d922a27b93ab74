"""EAT's lightweight CNN decoder (`Decoder2d`, EAT models/modules.py; spec §3.3), pre-training only.

Shapes (R = B * K clone rows, N = H * W patches time-major, D encoder width, C decoder channels):
    input  tokens       (R, N, D)   visible student outputs and noise "mask tokens", in patch order
    output predictions  (R, N, D)   one target-space vector per patch

Each layer: grouped Conv2d(k x k, padding k // 2) -> channel-only LayerNorm (no affine, eps 1e-5) -> GELU,
then a residual add of the layer input whenever the widths agree (always in the official configs).
A final Linear(C -> D) maps every position back to the target width. There is no positional input.
Key names `convs.{j}` / `proj` map from the official `decoder.blocks.{j}.0` / `decoder.proj`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Decoder2d(nn.Module):
    """Grouped-conv decoder over the (H, W) patch grid.

    Args:
        embed_dim: Encoder width D (input and output of the decoder).
        channels: Conv width C (base 768, large 1024).
        depth: Conv layers (base 6, large 3).
        kernel_size: Square kernel (base 3, large 5).
        groups: Conv groups (16 in both configs).
        freq_patches: W, the grid width (128 mel bins / 16 = 8); H is inferred from N.

    Example:
        >>> decoder = Decoder2d(embed_dim=32, channels=32, depth=2)
        >>> tuple(decoder(torch.zeros(3, 64 * 8, 32)).shape)
        (3, 512, 32)
    """

    def __init__(
        self,
        embed_dim: int,
        channels: int,
        depth: int,
        kernel_size: int = 3,
        groups: int = 16,
        freq_patches: int = 8,
    ) -> None:
        super().__init__()
        self.freq_patches = freq_patches
        widths = [embed_dim] + [channels] * depth
        self.convs = nn.ModuleList(
            nn.Conv2d(widths[j], widths[j + 1], kernel_size, padding=kernel_size // 2, groups=groups)
            for j in range(depth)
        )
        self.proj = nn.Linear(channels, embed_dim)
        self.convs.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stub lacks it

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        rows, length, dim = tokens.shape
        if length % self.freq_patches:
            raise ValueError(f"{length} patches do not fill a grid {self.freq_patches} patches wide")
        # (R, N, D) -> (R, D, H, W) as a channels-last view (no copy); oneDNN's grouped-conv backward is
        # several times faster in this layout on CPU, and the channel LayerNorm needs channels last anyway.
        x = tokens.reshape(rows, length // self.freq_patches, self.freq_patches, dim).permute(0, 3, 1, 2)
        for conv in self.convs:
            y = conv(x)  # (R, C, H, W)
            y = F.layer_norm(y.permute(0, 2, 3, 1), (y.shape[1],), eps=1e-5)  # (R, H, W, C), norm over C
            y = F.gelu(y).permute(0, 3, 1, 2)  # (R, C, H, W)
            x = y + x if y.shape == x.shape else y
        x = x.permute(0, 2, 3, 1).reshape(rows, length, -1)  # (R, N, C), time-major again
        return self.proj(x)  # (R, N, D)
