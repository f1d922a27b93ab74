"""Building blocks of the EfficientAT MobileNetV3 ("MN"): channel rounding, Conv-BN-act, SE, inverted residual.

Module and parameter names follow EfficientAT `models/mn/block_types.py` (spec efficientat.md §2.3) so that an
official state dict loads with `strict=True`:
    ConvNormAct          -> `0` conv (no bias), `1` BatchNorm2d(eps 1e-3, momentum 0.01), `2` activation
    InvertedResidual     -> `block` Sequential: [expand], depthwise, [se], project
    ConcurrentSE         -> `conc_se_layers.<i>.fc1 / fc2` (nn.Linear)

Shapes: every block maps (B, C_in, F, T) -> (B, C_out, ceil(F / stride), ceil(T / stride)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# BatchNorm hyper-parameters of every layer inside `features` (TF-style, EfficientAT models/mn/model.py).
BN_EPS = 1e-3
BN_MOMENTUM = 0.01

# SE letters -> tensor dimension of a (B, C, F, T) map.
SE_DIMS = {"c": 1, "f": 2, "t": 3}
SE_AGGREGATIONS = ("max", "avg", "add", "min")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round `value` to a multiple of `divisor` (at least `divisor`) without losing more than 10 %.

    Example:
        >>> [make_divisible(c * 0.4) for c in (16, 64, 72, 120)]
        [8, 24, 32, 48]
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_out_size(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Output length of a conv with 'same'-style padding (kernel - 1) // 2 * dilation."""
    padding = (kernel - 1) // 2 * dilation
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> optional activation; indices 0/1/2 as torchvision's ConvNormActivation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        activation: type[nn.Module] | None = nn.Hardswish,
    ) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False),
            nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """Gate one dimension of a (B, C, F, T) map: mean over the two others -> fc1 -> ReLU -> fc2 -> sigmoid -> scale.

    Args:
        input_dim: Size of the gated dimension (channels, frequency bins or frames).
        squeeze_dim: Bottleneck width.
        se_dim: Gated tensor dimension: 1 channel, 2 frequency, 3 time.
    """

    def __init__(self, input_dim: int, squeeze_dim: int, se_dim: int) -> None:
        super().__init__()
        if se_dim not in (1, 2, 3):
            raise ValueError(f"se_dim must be 1, 2 or 3, got {se_dim}")
        self.se_dim = se_dim
        self.fc1 = nn.Linear(input_dim, squeeze_dim)
        self.fc2 = nn.Linear(squeeze_dim, input_dim)
        self.activation = nn.ReLU(inplace=True)
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled_dims = [d for d in (1, 2, 3) if d != self.se_dim]
        scale = x.mean(dim=pooled_dims, keepdim=True)  # (B, C, 1, 1) | (B, 1, F, 1) | (B, 1, 1, T)
        shape = scale.shape
        scale = self.fc2(self.activation(self.fc1(scale.flatten(1))))  # (B, D)
        return x * self.scale_activation(scale).view(shape)


class ConcurrentSE(nn.Module):
    """One SqueezeExcitation per requested dimension, fused by `se_agg` over the gated maps (EfficientAT order).

    Args:
        dims: Sizes (C, F, T) of the block's depthwise output.
        se_dims: Letters out of "cft", in the order the SE layers are created, e.g. "c" or "cf".
        se_reduction: Squeeze ratio r; squeeze width = make_divisible(D // r, 8).
        se_agg: "max" | "avg" | "add" | "min".
    """

    def __init__(self, dims: tuple[int, int, int], se_dims: str, se_reduction: int = 4, se_agg: str = "max") -> None:
        super().__init__()
        if se_agg not in SE_AGGREGATIONS:
            raise ValueError(f"se_agg must be one of {SE_AGGREGATIONS}, got '{se_agg}'")
        self.se_agg = se_agg
        self.conc_se_layers = nn.ModuleList()
        for letter in se_dims:
            input_dim = dims[SE_DIMS[letter] - 1]
            squeeze_dim = make_divisible(input_dim // se_reduction, 8)
            self.conc_se_layers.append(SqueezeExcitation(input_dim, squeeze_dim, SE_DIMS[letter]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.conc_se_layers) == 1:
            return self.conc_se_layers[0](x)
        gated = torch.stack([layer(x) for layer in self.conc_se_layers], dim=0)  # (n_se, B, C, F, T)
        if self.se_agg == "max":
            return gated.max(dim=0).values
        if self.se_agg == "min":
            return gated.min(dim=0).values
        if self.se_agg == "avg":
            return gated.mean(dim=0)
        return gated.sum(dim=0)


@dataclass(frozen=True)
class BlockConfig:
    """One row of the MobileNetV3-Large table after width scaling (spec §2.2)."""

    in_channels: int
    kernel: int
    expanded_channels: int
    out_channels: int
    use_se: bool
    use_hardswish: bool
    stride: int
    dilation: int


class InvertedResidual(nn.Module):
    """MobileNetV3 bottleneck: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project, residual if shapes allow.

    Args:
        cfg: Scaled block configuration.
        se_dims: SE letters ("c", "cf", ...); "" or "none" disables SE in every block.
        freq_bins: Frequency size after this block's depthwise conv (for frequency SE).
        frames: Time size after this block's depthwise conv (for time SE).
    """

    def __init__(
        self,
        cfg: BlockConfig,
        se_dims: str = "c",
        freq_bins: int = 0,
        frames: int = 0,
        se_reduction: int = 4,
        se_agg: str = "max",
    ) -> None:
        super().__init__()
        if cfg.stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {cfg.stride}")
        self.use_res_connect = cfg.stride == 1 and cfg.in_channels == cfg.out_channels
        activation = nn.Hardswish if cfg.use_hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if cfg.expanded_channels != cfg.in_channels:
            layers.append(ConvNormAct(cfg.in_channels, cfg.expanded_channels, 1, activation=activation))
        depthwise_stride = 1 if cfg.dilation > 1 else cfg.stride
        layers.append(
            ConvNormAct(
                cfg.expanded_channels,
                cfg.expanded_channels,
                cfg.kernel,
                stride=depthwise_stride,
                groups=cfg.expanded_channels,
                dilation=cfg.dilation,
                activation=activation,
            )
        )
        if cfg.use_se and se_dims not in ("", "none"):
            dims = (cfg.expanded_channels, freq_bins, frames)
            layers.append(ConcurrentSE(dims, se_dims, se_reduction, se_agg))
        layers.append(ConvNormAct(cfg.expanded_channels, cfg.out_channels, 1, activation=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = cfg.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = out + x
        return out
