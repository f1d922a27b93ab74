"""EfficientAT Dynamic MobileNet ("DyMN") audio tagger on log-mel spectrograms (spec efficientat.md §3).

The MobileNetV3 skeleton of `audiopipe.models.mobilenet` (same channel table, rounding and heads) with every
inverted residual replaced by a `DyBlock`: dynamic convolutions, dynamic ReLU and coordinate attention,
all conditioned on a per-example context computed from the block input.

Shapes (B batch, F mel bins, T frames, C classes, E = 6 x last block width, 960 for dymn10):
    input      mel        (B, F, T) or (B, 1, F, T)
    output     logits     (B, C)
               embedding  (B, E)   global average of the last feature map
    forward(x, return_fmaps=True) -> (logits, 17 feature maps: `in_c`, `layers.0..14`, `out_c`)

Module names (`in_c`, `layers.N.{context_gen, exp_conv, exp_norm, depth_conv, depth_norm, depth_act, proj_conv,
proj_norm}`, `out_c`, `classifier.*`) and their order equal the official ones, so an official EfficientAT DyMN
state dict loads with `load_state_dict(strict=True)`.

Temperature: the kernel-attention temperature tau is not part of the state dict. It starts at `temperature`
(default 1, right for the published AudioSet weights); `update_params(epoch)` sets it from the training
schedule (`T_max`, `T_min`, `T0_slope`, `T1_slope`; EfficientAT `get_model` defaults 30, 1, 1, 0.02), to be
called at the start of every epoch when training. When fine-tuning the AudioSet weights pass `T_max=1`
(upstream `pretrain_final_temp`), which keeps tau at 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import partial

import torch
from torch import nn

from audiopipe.models.dymn.context import ContextGen, context_size
from audiopipe.models.dymn.dynamic import CoordAtt, DynamicConv, DyReLUB, Static, temperature_schedule
from audiopipe.models.mobilenet.blocks import BN_EPS, BN_MOMENTUM, BlockConfig, ConvNormAct, InvertedResidual
from audiopipe.models.mobilenet.model import block_configs, init_weights, make_head

HEAD_TYPES = ("mlp", "fully_convolutional")
DY_BLOCK_LAYOUTS = ("all", "replace_se")


def _norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class DyBlock(nn.Module):
    """Dynamic inverted residual (upstream `DY_Block`): context -> [dynamic 1x1 expand] -> dynamic kxk depthwise
    -> DyReLU -> coordinate attention -> dynamic 1x1 project, residual if stride 1 and in == out.

    Args:
        cfg: Scaled row of the MobileNetV3 table (its `use_se` is ignored).
        width_mult: Width multiplier alpha; scales the context-size bounds.
        context_ratio, min_context_size, max_context_size: Context width H (see `context_size`).
        dyrelu_k: Lines M of DyReLU.
        dyconv_k: Kernels K of each dynamic convolution.
        temperature: Initial kernel-attention temperature.

    Shapes: (B, in, F, T) -> (B, out, ceil(F / stride), ceil(T / stride)).
    """

    def __init__(
        self,
        cfg: BlockConfig,
        width_mult: float,
        context_ratio: int = 4,
        min_context_size: int = 32,
        max_context_size: int = 128,
        dyrelu_k: int = 2,
        dyconv_k: int = 4,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if cfg.stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {cfg.stride}")
        self.use_res_connect = cfg.stride == 1 and cfg.in_channels == cfg.out_channels
        c_in, c_exp, c_out = cfg.in_channels, cfg.expanded_channels, cfg.out_channels
        h = self.context_dim = context_size(c_exp, width_mult, context_ratio, min_context_size, max_context_size)
        dynamic_conv = partial(DynamicConv, context_dim=h, n_kernels=dyconv_k, temperature=temperature)
        activation = nn.Hardswish if cfg.use_hardswish else nn.ReLU
        # attribute order = official state-dict order
        self.exp_conv: nn.Module = Static(nn.Identity())
        self.exp_norm: nn.Module = nn.Identity()
        self.exp_act: nn.Module = Static(nn.Identity())
        if c_exp != c_in:
            self.exp_conv = dynamic_conv(c_in, c_exp, kernel_size=1)
            self.exp_norm = _norm(c_exp)
            self.exp_act = Static(activation(inplace=True))
        stride = 1 if cfg.dilation > 1 else cfg.stride
        padding = (cfg.kernel - 1) // 2 * cfg.dilation
        self.depth_conv = dynamic_conv(
            c_exp, c_exp, kernel_size=cfg.kernel, stride=stride, padding=padding, dilation=cfg.dilation, groups=c_exp
        )
        self.depth_norm = _norm(c_exp)
        self.depth_act = DyReLUB(c_exp, h, dyrelu_k)
        self.ca = CoordAtt()
        self.proj_conv = dynamic_conv(c_exp, c_out, kernel_size=1)
        self.proj_norm = _norm(c_out)
        self.context_gen = ContextGen(h, c_in, c_exp, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.context_gen(x)
        out = self.exp_act(self.exp_norm(self.exp_conv(x, context)), context)  # (B, C_exp, F, T)
        out = self.depth_act(self.depth_norm(self.depth_conv(out, context)), context)  # (B, C_exp, F', T')
        out = self.ca(out, context)
        out = self.proj_norm(self.proj_conv(out, context))  # (B, C_out, F', T')
        if self.use_res_connect:
            out = out + x
        return out


class DyMN(nn.Module):
    """EfficientAT Dynamic MobileNet on (B, F, T) log-mel spectrograms.

    Args:
        n_classes: Output classes C (527 for AudioSet).
        width_mult: Width multiplier alpha (0.4 dymn04, 1.0 dymn10, 2.0 dymn20).
        head_type: "mlp" | "fully_convolutional".
        strides: Strides (s0, s1, s2, s3) of blocks 1, 3, 6 and 12.
        use_dy_blocks: "all" (published DyMN) or "replace_se" (dynamic blocks only where MN has SE; plain
            inverted residuals without SE elsewhere).
        context_ratio, min_context_size, max_context_size: Context width per block (see `context_size`).
        dyrelu_k: Lines M of DyReLU; dyconv_k: kernels K of each dynamic convolution.
        T_max, T_min, T0_slope, T1_slope: Temperature schedule of `update_params` (see `temperature_schedule`).
        temperature: Initial kernel-attention temperature tau (1 for the published AudioSet weights).

    Example:
        >>> net = DyMN(n_classes=10, width_mult=0.4).eval()
        >>> logits, embedding = net(torch.randn(2, 128, 100))
        >>> tuple(logits.shape), tuple(embedding.shape)
        ((2, 10), (2, 384))
    """

    def __init__(
        self,
        n_classes: int = 527,
        width_mult: float = 1.0,
        head_type: str = "mlp",
        strides: Sequence[int] = (2, 2, 2, 2),
        dilated: bool = False,
        reduced_tail: bool = False,
        dropout: float = 0.2,
        in_channels: int = 1,
        use_dy_blocks: str = "all",
        context_ratio: int = 4,
        min_context_size: int = 32,
        max_context_size: int = 128,
        dyrelu_k: int = 2,
        dyconv_k: int = 4,
        T_max: float = 30.0,
        T_min: float = 1.0,
        T0_slope: float = 1.0,
        T1_slope: float = 0.02,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if head_type not in HEAD_TYPES:
            raise ValueError(f"head_type must be one of {HEAD_TYPES}, got '{head_type}'")
        if use_dy_blocks not in DY_BLOCK_LAYOUTS:
            raise ValueError(f"use_dy_blocks must be one of {DY_BLOCK_LAYOUTS}, got '{use_dy_blocks}'")
        configs, hidden = block_configs(width_mult, strides, dilated, reduced_tail)
        self.head_type, self.in_channels = head_type, in_channels
        self.schedule = {"T_max": T_max, "T_min": T_min, "T0_slope": T0_slope, "T1_slope": T1_slope}

        self.layers = nn.ModuleList()  # registered before `in_c`, as upstream: official state-dict order
        self.in_c = ConvNormAct(in_channels, configs[0].in_channels, 3, stride=2)
        for cfg in configs:
            if use_dy_blocks == "all" or cfg.use_se:
                self.layers.append(
                    DyBlock(cfg, width_mult, context_ratio, min_context_size, max_context_size, dyrelu_k, dyconv_k)
                )
            else:
                self.layers.append(InvertedResidual(replace(cfg, use_se=False)))
        last_in = configs[-1].out_channels
        self.embedding_dim = 6 * last_in
        self.out_c = ConvNormAct(last_in, self.embedding_dim, 1)
        self.classifier = make_head(head_type, self.embedding_dim, hidden, n_classes, dropout, n_heads=1)
        init_weights(self)  # leaves DynamicConv.weight alone (initialised per kernel in DynamicConv)
        self.temperature = temperature

    @property
    def temperature(self) -> float:
        """Kernel-attention temperature tau of every DynamicConv (not saved in the state dict)."""
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        if value <= 0:
            raise ValueError(f"temperature must be positive, got {value}")
        self._temperature = float(value)
        for module in self.modules():
            if isinstance(module, DynamicConv):
                module.temperature = float(value)

    def update_params(self, epoch: int) -> float:
        """Set tau for `epoch` from the schedule (call at the start of each training epoch); returns tau."""
        self.temperature = temperature_schedule(epoch, **self.schedule)
        return self.temperature

    def _as_4d(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)  # (B, F, T) -> (B, 1, F, T)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, F, T) or (B, {self.in_channels}, F, T) input, got {tuple(x.shape)}")
        return x

    def _features(self, x: torch.Tensor, maps: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = self._as_4d(x)
        for layer in (self.in_c, *self.layers, self.out_c):
            x = layer(x)
            if maps is not None:
                maps.append(x)
        return x  # (B, E, F / 32, T / 32)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of `in_c`, the 15 blocks and `out_c` (17 maps), each (B, C_i, F_i, T_i)."""
        maps: list[torch.Tensor] = []
        self._features(x, maps)
        return maps

    def forward(
        self, x: torch.Tensor, return_fmaps: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, embedding), or (logits, the 17 feature maps) when `return_fmaps`."""
        maps: list[torch.Tensor] | None = [] if return_fmaps else None
        x = self._features(x, maps)
        logits = self.classifier(x).flatten(1)  # (B, C); flatten keeps B = 1 and C = 1 intact
        if maps is not None:
            return logits, maps
        return logits, x.mean(dim=(2, 3))  # embedding (B, E)
