"""EfficientAT MobileNetV3 ("MN") audio tagger on log-mel spectrograms, with MLP, fully-convolutional or
attention-pooling heads (spec efficientat.md §2).

Shapes (B batch, F mel bins, T frames, C classes, E = 6 x last block width, 960 for mn10):
    input      mel        (B, F, T) or (B, 1, F, T)
    output     logits     (B, C)
               embedding  (B, E)   global average of the last feature map

Module names (`features.0` stem, `features.1..15` blocks, `features.16` last conv, `classifier.*`) equal the
official ones, so an official EfficientAT state dict loads with `load_state_dict(strict=True)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from audiopipe.models.mobilenet.blocks import BlockConfig, ConvNormAct, InvertedResidual, conv_out_size, make_divisible

HEAD_TYPES = ("mlp", "fully_convolutional", "attention")
_HEAD_ALIASES = {"multihead_attention_pooling": "attention"}

# MobileNetV3-Large table before width scaling (spec §2.2):
# (in, kernel, expanded, out, SE, h-swish, index into `strides` or None for stride 1)
_LARGE_TABLE: tuple[tuple[int, int, int, int, bool, bool, int | None], ...] = (
    (16, 3, 16, 16, False, False, None),
    (16, 3, 64, 24, False, False, 0),
    (24, 3, 72, 24, False, False, None),
    (24, 5, 72, 40, True, False, 1),
    (40, 5, 120, 40, True, False, None),
    (40, 5, 120, 40, True, False, None),
    (40, 3, 240, 80, False, True, 2),
    (80, 3, 200, 80, False, True, None),
    (80, 3, 184, 80, False, True, None),
    (80, 3, 184, 80, False, True, None),
    (80, 3, 480, 112, True, True, None),
    (112, 3, 672, 112, True, True, None),
    (112, 5, 672, 160, True, True, 3),
    (160, 5, 960, 160, True, True, None),
    (160, 5, 960, 160, True, True, None),
)


def block_configs(
    width_mult: float,
    strides: Sequence[int] = (2, 2, 2, 2),
    dilated: bool = False,
    reduced_tail: bool = False,
) -> tuple[list[BlockConfig], int]:
    """Scaled block table and MLP hidden width for a width multiplier (spec §2.1-2.2)."""
    if len(strides) != 4:
        raise ValueError(f"strides must have 4 entries, got {tuple(strides)}")
    divider = 2 if reduced_tail else 1
    configs = []
    for index, (c_in, kernel, c_exp, c_out, use_se, use_hs, stride_index) in enumerate(_LARGE_TABLE):
        tail = index >= 12  # the last three blocks (dilation, reduced tail)
        c_in = c_in // divider if index >= 13 else c_in
        c_exp = c_exp // divider if index >= 13 else c_exp
        c_out = c_out // divider if tail else c_out
        configs.append(
            BlockConfig(
                in_channels=make_divisible(c_in * width_mult),
                kernel=kernel,
                expanded_channels=make_divisible(c_exp * width_mult),
                out_channels=make_divisible(c_out * width_mult),
                use_se=use_se,
                use_hardswish=use_hs,
                stride=1 if stride_index is None else int(strides[stride_index]),
                dilation=2 if (dilated and tail) else 1,
            )
        )
    return configs, make_divisible(1280 // divider * width_mult)


class AttentionPoolingHead(nn.Module):
    """PSLA-style multi-head attention pooling over time (EfficientAT models/mn/attention_pooling.py).

    Shapes: (B, E, F', T') -> mean over F' -> (B, T', E) -> (B, C).
    """

    def __init__(self, in_dim: int, n_classes: int, n_heads: int = 4, epsilon: float = 1e-7) -> None:
        super().__init__()
        self.n_classes, self.n_heads, self.epsilon = n_classes, n_heads, epsilon
        self.subspace_proj = nn.Linear(in_dim, n_classes * 2 * n_heads)
        self.head_weight = nn.Parameter(torch.full((1, n_heads, 1), 1.0 / n_heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=2).transpose(1, 2)  # (B, T', E)
        b, n, _ = x.shape
        x = self.subspace_proj(x).reshape(b, n, 2, self.n_heads, self.n_classes)
        x = x.permute(2, 0, 3, 1, 4)  # (2, B, heads, T', C)
        attention, value = x[0], x[1]
        attention = torch.sigmoid(attention).clamp(self.epsilon, 1.0 - self.epsilon)
        attention = attention / attention.sum(dim=2, keepdim=True)  # normalised over time
        out = (attention * value).sum(dim=2) * self.head_weight  # (B, heads, C)
        return out.sum(dim=1)  # (B, C)


def make_head(head_type: str, in_dim: int, hidden: int, n_classes: int, dropout: float, n_heads: int) -> nn.Module:
    """Classifier `(B, E, F', T') -> (B, C[, 1, 1])` with the official sub-module indices (spec §2.3)."""
    if head_type == "mlp":
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(start_dim=1),
            nn.Linear(in_dim, hidden),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, n_classes),
        )
    if head_type == "fully_convolutional":
        # BatchNorm with PyTorch defaults here, unlike `features` (spec §10.2)
        return nn.Sequential(
            nn.Conv2d(in_dim, n_classes, kernel_size=1, bias=False),
            nn.BatchNorm2d(n_classes),
            nn.AdaptiveAvgPool2d(1),
        )
    return AttentionPoolingHead(in_dim, n_classes, n_heads)


def init_weights(model: nn.Module) -> None:
    """EfficientAT initialisation: Conv2d kaiming-normal (fan_out), norms 1/0, every nn.Linear normal(0, 0.01).

    Shape-only models (built on the "meta" device) are left alone.
    """
    if any(p.is_meta for p in model.parameters()):
        return
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class MobileNetV3(nn.Module):
    """EfficientAT MobileNetV3 on (B, F, T) log-mel spectrograms.

    Args:
        n_classes: Output classes C (527 for AudioSet).
        width_mult: Width multiplier alpha (0.4 for mn04, 1.0 for mn10, 4.0 for mn40).
        head_type: "mlp" | "fully_convolutional" | "attention" ("multihead_attention_pooling" is accepted).
        se_dims: Squeeze-and-excitation dimensions out of "c", "f", "t" (e.g. "c", "cf", "cft"); "none" disables SE.
        strides: Strides (s0, s1, s2, s3) of blocks 1, 3, 6 and 12 (spec §2.2).
        input_dim_f: Mel bins the frequency SE is sized for.
        input_dim_t: Frames the time SE is sized for (1000 = 10 s at hop 320).
        dropout: Dropout before the last Linear of the MLP head.
        attention_heads: Heads of the attention-pooling head.

    Example:
        >>> net = MobileNetV3(n_classes=10, width_mult=0.1).eval()
        >>> logits, embedding = net(torch.randn(2, 128, 100))
        >>> tuple(logits.shape), tuple(embedding.shape)
        ((2, 10), (2, 96))
    """

    def __init__(
        self,
        n_classes: int = 527,
        width_mult: float = 1.0,
        head_type: str = "mlp",
        se_dims: str = "c",
        se_reduction: int = 4,
        se_agg: str = "max",
        strides: Sequence[int] = (2, 2, 2, 2),
        dilated: bool = False,
        reduced_tail: bool = False,
        input_dim_f: int = 128,
        input_dim_t: int = 1000,
        dropout: float = 0.2,
        attention_heads: int = 4,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        head_type = _HEAD_ALIASES.get(head_type, head_type)
        if head_type not in HEAD_TYPES:
            raise ValueError(f"head_type must be one of {HEAD_TYPES}, got '{head_type}'")
        if se_dims not in ("", "none") and (not se_dims or set(se_dims) - set("cft")):
            raise ValueError(f"se_dims must be letters out of 'cft' or 'none', got '{se_dims}'")
        configs, hidden = block_configs(width_mult, strides, dilated, reduced_tail)
        self.head_type = head_type
        self.in_channels = in_channels

        freq_bins, frames = conv_out_size(input_dim_f, 3, 2), conv_out_size(input_dim_t, 3, 2)
        layers: list[nn.Module] = [ConvNormAct(in_channels, configs[0].in_channels, 3, stride=2)]
        for cfg in configs:
            stride = 1 if cfg.dilation > 1 else cfg.stride
            freq_bins = conv_out_size(freq_bins, cfg.kernel, stride, cfg.dilation)
            frames = conv_out_size(frames, cfg.kernel, stride, cfg.dilation)
            layers.append(InvertedResidual(cfg, se_dims, freq_bins, frames, se_reduction, se_agg))
        last_in = configs[-1].out_channels
        self.embedding_dim = 6 * last_in
        layers.append(ConvNormAct(last_in, self.embedding_dim, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = make_head(head_type, self.embedding_dim, hidden, n_classes, dropout, attention_heads)
        init_weights(self)

    def _as_4d(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)  # (B, F, T) -> (B, 1, F, T)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, F, T) or (B, {self.in_channels}, F, T) input, got {tuple(x.shape)}")
        return x

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the 17 `features` modules (stem, 15 blocks, last conv), each (B, C_i, F_i, T_i)."""
        x = self._as_4d(x)
        maps = []
        for layer in self.features:
            x = layer(x)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(self._as_4d(x))  # (B, E, F / 32, T / 32)
        embedding = x.mean(dim=(2, 3))  # (B, E)
        logits = self.classifier(x).flatten(1)  # (B, C); flatten keeps B = 1 and C = 1 intact
        return logits, embedding
