"""Input-dependent layers of the Dynamic MobileNet (spec efficientat.md §3; EfficientAT models/dymn/dy_block.py).

Every layer takes the feature map x (B, C, F, T) and the block's `Context` (see `context.py`):
    DynamicConv  x -> conv(x) with a per-example mixture of K kernels, weighted by softmax(Linear(h) / tau)
    DyReLUB      x -> max_m (a_m x + b_m) with per-example, per-channel a_m, b_m from h
    CoordAtt     x -> x * sigmoid(frequency map) * sigmoid(time map)
    Static       wraps a parameter-free module (activation, identity) so that it takes (x, context)

Parameter names equal the official ones: `DynamicConv.weight` (1, 1, K, out * in / groups * k * k),
`DynamicConv.residuals.0` Linear(H -> K), `DyReLUB.coef_net.0` Linear(H -> 2 M C) and the persistent buffers
`DyReLUB.lambdas` / `DyReLUB.init_v` (2 M entries each).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from audiopipe.models.dymn.context import Context


def temperature_schedule(epoch: int, T_max: float, T_min: float, T0_slope: float, T1_slope: float) -> float:
    """Kernel-attention temperature of an epoch (DyMN paper Eq. 5; EfficientAT `DynamicConv.update_params`).

    A steep fall from T_max by T0_slope per epoch, then a shallow line of slope T1_slope, floored at T_min.

    Example:
        >>> [temperature_schedule(e, 30, 1, 1, 0.02) for e in (0, 1, 28, 40)]
        [30, 29, 2, 1]
    """
    steep = T_max - T0_slope * epoch
    shallow = 1 + T1_slope * (T_max - 1) / T0_slope - T1_slope * epoch
    return max(steep, shallow, T_min)


class DynamicConv(nn.Module):
    """Conv2d whose kernel is a per-example softmax mixture of K kernels; no bias.

    Runs as one grouped convolution with the batch folded into the channels, so every example gets its own
    kernel. `temperature` (tau) is a plain attribute, not state: set it through `DyMN.temperature` or
    `DyMN.update_params(epoch)`.

    Shapes: x (B, in, F, T), context.vector (B, H) -> (B, out, F', T') with F' = (F + 2 p - d (k - 1) - 1) // s + 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        context_dim: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        n_kernels: int = 4,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if in_channels % groups:
            raise ValueError(f"in_channels={in_channels} is not divisible by groups={groups}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.n_kernels, self.temperature = n_kernels, temperature
        self.residuals = nn.Sequential(nn.Linear(context_dim, n_kernels))  # kernel-attention logits
        kernels = torch.empty(n_kernels, out_channels, in_channels // groups, kernel_size, kernel_size)
        if not kernels.is_meta:
            for kernel in kernels:  # per kernel, as a Conv2d weight (the model-wide init skips this parameter)
                nn.init.kaiming_normal_(kernel, mode="fan_out")
        self.weight = nn.Parameter(kernels.reshape(1, 1, n_kernels, -1))  # official flattened layout

    @property
    def static_weight_shape(self) -> tuple[int, int, int, int]:
        """Shape of the mixed kernel, i.e. of the equivalent static Conv2d weight."""
        return (self.out_channels, self.in_channels // self.groups, self.kernel_size, self.kernel_size)

    def forward(self, x: torch.Tensor, context: Context) -> torch.Tensor:
        b, _, f, t = x.shape
        logits = self.residuals(context.vector)  # (B, K)
        attention = torch.softmax(logits / self.temperature, dim=-1)
        kernels = attention @ self.weight.view(self.n_kernels, -1)  # (B, out * in / groups * k * k)
        kernels = kernels.reshape(b * self.out_channels, *self.static_weight_shape[1:])  # (B * out, in / g, k, k)
        out = F.conv2d(
            x.reshape(1, b * self.in_channels, f, t),  # batch folded into channels
            kernels,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups * b,
        )  # (1, B * out, F', T')
        return out.view(b, self.out_channels, out.shape[-2], out.shape[-1])

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"groups={self.groups}, n_kernels={self.n_kernels}, temperature={self.temperature}"
        )


class DyReLUB(nn.Module):
    """Dynamic ReLU, variant B (spatially shared, channel-wise): max over M lines a_m x + b_m per channel.

    Coefficients: 2 sigmoid(Linear(h)) - 1, times `lambdas` = [1] * M + [0.5] * M, plus `init_v` = [1, 0, ...],
    so a zero Linear output gives max(x, 0) = ReLU.

    Shapes: x (B, C, F, T), context.vector (B, H) -> (B, C, F, T).
    """

    lambdas: torch.Tensor
    init_v: torch.Tensor

    def __init__(self, channels: int, context_dim: int, n_lines: int = 2) -> None:
        super().__init__()
        self.channels, self.n_lines = channels, n_lines
        self.coef_net = nn.Sequential(nn.Linear(context_dim, 2 * n_lines * channels))
        self.register_buffer("lambdas", torch.tensor([1.0] * n_lines + [0.5] * n_lines))
        self.register_buffer("init_v", torch.tensor([1.0] + [0.0] * (2 * n_lines - 1)))

    def forward(self, x: torch.Tensor, context: Context) -> torch.Tensor:
        theta = 2 * torch.sigmoid(self.coef_net(context.vector)) - 1  # (B, 2 M C)
        coefs = theta.view(-1, self.channels, 1, 1, 2 * self.n_lines) * self.lambdas + self.init_v  # (B, C, 1, 1, 2M)
        slopes, intercepts = coefs[..., : self.n_lines], coefs[..., self.n_lines :]
        lines = x.unsqueeze(-1) * slopes + intercepts  # (B, C, F, T, M)
        return lines.amax(dim=-1)


class CoordAtt(nn.Module):
    """Coordinate attention: x (B, C, F, T) times sigmoid of the context's (B, C, F, 1) and (B, C, 1, T) maps."""

    def forward(self, x: torch.Tensor, context: Context) -> torch.Tensor:
        return x * torch.sigmoid(context.freq) * torch.sigmoid(context.time)


class Static(nn.Module):
    """A context-free module in the (x, context) calling convention (upstream `DynamicWrapper`); adds no keys."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, context: Context) -> torch.Tensor:
        return self.module(x)
