"""Context generation of a DyMN block (spec efficientat.md §3; EfficientAT models/dymn/dy_block.py `ContextGen`).

From the block input x (B, C_in, F, T) it produces a `Context`:
    vector (B, H)            drives the kernel attention of DynamicConv and the coefficients of DyReLUB
    freq   (B, C_exp, F', 1) coordinate-attention logits over frequency (after the block's stride)
    time   (B, C_exp, 1, T') coordinate-attention logits over time

Keys: `joint_conv` (H, C_in, 1, 1), `joint_norm` (H), `conv_f` / `conv_t` (C_exp, H, 1, 1) with bias.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from audiopipe.models.mobilenet.blocks import BN_EPS, BN_MOMENTUM, make_divisible


class Context(NamedTuple):
    """Per-example conditioning of one block (shapes in the module docstring)."""

    vector: torch.Tensor
    freq: torch.Tensor
    time: torch.Tensor


def context_size(
    expanded_channels: int, width_mult: float, ratio: int = 4, min_size: int = 32, max_size: int = 128
) -> int:
    """Context width H = clip(make_divisible(expanded // ratio), make_divisible(min * a), make_divisible(max * a)).

    Example:
        >>> [context_size(c, 1.0) for c in (16, 240, 200, 480, 960)]
        [32, 64, 48, 120, 128]
    """
    lower, upper = make_divisible(min_size * width_mult, 8), make_divisible(max_size * width_mult, 8)
    return min(max(make_divisible(expanded_channels // ratio, 8), lower), upper)


class ContextGen(nn.Module):
    """Mean over time and over frequency -> shared 1x1 conv-BN-h-swish -> context vector and attention maps.

    Args:
        context_dim: H.
        in_channels: Channels of the block input.
        expanded_channels: Channels of the attention maps (the block's expanded width).
        stride: The block's depthwise stride; > 1 average-pools the sequences (kernel 3) to the strided size.
    """

    def __init__(self, context_dim: int, in_channels: int, expanded_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.joint_conv = nn.Conv2d(in_channels, context_dim, kernel_size=1, bias=False)
        self.joint_norm = nn.BatchNorm2d(context_dim, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.joint_act = nn.Hardswish(inplace=True)
        self.conv_f = nn.Conv2d(context_dim, expanded_channels, kernel_size=1)
        self.conv_t = nn.Conv2d(context_dim, expanded_channels, kernel_size=1)
        self.pool_f: nn.Module = nn.Identity()
        self.pool_t: nn.Module = nn.Identity()
        if stride > 1:
            self.pool_f = nn.AvgPool2d(kernel_size=(3, 1), stride=(stride, 1), padding=(1, 0))
            self.pool_t = nn.AvgPool2d(kernel_size=(1, 3), stride=(1, stride), padding=(0, 1))

    def forward(self, x: torch.Tensor) -> Context:
        f, t = x.shape[2], x.shape[3]
        per_freq = x.mean(dim=3, keepdim=True)  # (B, C_in, F, 1)
        per_time = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (B, C_in, T, 1)
        sequence = torch.cat([per_freq, per_time], dim=2)  # (B, C_in, F + T, 1): one shared transform for both
        sequence = self.joint_act(self.joint_norm(self.joint_conv(sequence)))  # (B, H, F + T, 1)
        h_freq, h_time = torch.split(sequence, [f, t], dim=2)
        vector = sequence.mean(dim=(2, 3))  # (B, H)
        freq = self.conv_f(self.pool_f(h_freq))  # (B, C_exp, F', 1)
        time = self.conv_t(self.pool_t(h_time.transpose(2, 3)))  # (B, C_exp, 1, T')
        return Context(vector, freq, time)
