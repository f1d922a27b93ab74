"""EAT encoder: 16x16 patch embedding, fixed 2-D sin-cos positions, CLS token, post-LN `AltBlock`s.

Shapes (B batch, T_f fbank frames, F = 128 mel bins, D embed dim, H = T_f / 16 time patches,
W = F / 16 = 8 frequency patches, N = H * W patches, flattened time-major: n = t * W + f):
    input  spectrogram  (B, 1, T_f, F)   from `EATFrontEnd` (time is the height)
    output tokens       (B, 1 + N, D)    row 0 is CLS; no final LayerNorm (the last block's norm2 is it)

Module names follow the spec's clean names (§2.6) so that `checkpoint.py` maps official fairseq/HF keys
one to one: `patch_embed.proj`, `cls_token`, `norm_pre`, `blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,
mlp.fc1,mlp.fc2}`. The positional table `pos_embed` is a non-persistent buffer regenerated from the shapes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PATCH_SIZE = 16
MAX_TIME_PATCHES = 768  # `max_length` of EAT models/images.py: 768 x 16 frames = 122.9 s


def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """`[sin(p * w), cos(p * w)]` with `w_k = 10000^(-k / (d / 2))`: `(P,)` -> `(P, embed_dim)`."""
    omega = torch.arange(embed_dim // 2, dtype=torch.float64, device=positions.device) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega  # (d/2,)
    angles = positions.double()[:, None] * omega[None, :]  # (P, d/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(embed_dim: int, time_patches: int, freq_patches: int) -> torch.Tensor:
    """Fixed 2-D table `(time_patches * freq_patches, embed_dim)`, rows time-major (n = t * W + f).

    MAE's meshgrid quirk, kept for checkpoint parity (spec §2.2): the FIRST half of the channels encodes
    the frequency index, the SECOND half the time index.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim={embed_dim} must be divisible by 4 for the 2-D sin-cos table")
    # Always computed on the CPU in float64 (also under a `torch.device("meta")` context), then float32.
    time_index = torch.arange(time_patches, device="cpu").repeat_interleave(freq_patches)  # (N,) t of row n
    freq_index = torch.arange(freq_patches, device="cpu").repeat(time_patches)  # (N,) f of row n
    table = torch.cat([sincos_1d(embed_dim // 2, freq_index), sincos_1d(embed_dim // 2, time_index)], dim=1)
    return table.float()


class PatchEmbed(nn.Module):
    """Conv2d(1 -> D, 16x16, stride 16): `(B, 1, T_f, F)` -> `(B, N, D)` time-major."""

    def __init__(self, embed_dim: int, patch_size: int = PATCH_SIZE) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        x = self.proj(spectrogram)  # (B, D, H, W)
        return x.flatten(2).transpose(1, 2)  # (B, H * W, D), n = t * W + f


class Attention(nn.Module):
    """Multi-head self-attention, fused qkv laid out [q | k | v], softmax in float32."""

    def __init__(self, embed_dim: int, num_heads: int, attn_drop: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, L, D / heads)
        drop = self.attn_drop if self.training else 0.0
        if q.dtype == torch.float32:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:  # reduced precision: keep the softmax in float32 as the official AltAttention does
            scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
            weights = F.dropout(scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype), drop, self.training)
            out = weights @ v
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))  # (B, L, D)


class Mlp(nn.Module):
    """timm-style Mlp: fc1 -> exact GELU -> dropout -> fc2."""

    def __init__(self, embed_dim: int, hidden_dim: int, activation_drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(activation_drop)
        self.fc2 = nn.Linear(hidden_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability `drop_prob`."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class AltBlock(nn.Module):
    """data2vec 2.0 / EAT post-LN block (`layer_norm_first=False`); returns `(out, ffn_output)`.

    `x = x + attn(x); r = norm1(x); m = mlp(r); out = norm2(r + m)`. `m` (the FFN output before the
    residual) is the "layer result" the EMA teacher's targets are built from (spec §2.3, §3.4).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        attn_drop: float = 0.0,
        activation_drop: float = 0.0,
        post_mlp_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.attn = Attention(embed_dim, num_heads, attn_drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.mlp = Mlp(embed_dim, int(embed_dim * mlp_ratio), activation_drop)
        self.post_mlp_dropout = nn.Dropout(post_mlp_drop)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x + self.drop_path(self.attn(x))
        r = self.norm1(x)
        m = self.mlp(r)
        out = self.norm2(r + self.drop_path(self.post_mlp_dropout(m)))
        return out, m


class EATEncoder(nn.Module):
    """EAT Transformer encoder (spec §2).

    Args:
        embed_dim: Token width D (base 768, large 1024).
        depth: Number of `AltBlock`s (base 12, large 24).
        num_heads: Attention heads (base 12, large 16).
        mlp_ratio: FFN hidden width / D.
        n_mels: Mel bins F of the input (128; W = F / 16 frequency patches).
        max_time_patches: Rows of the positional table; longest input is `16 * max_time_patches` frames.
        drop_path_rate: Stochastic depth, linearly spaced 0 -> rate over the blocks (fine-tuning 0.1).
        norm_eps: LayerNorm epsilon of the pre-norm and the blocks.

    Example:
        >>> encoder = EATEncoder(embed_dim=32, depth=1, num_heads=4).eval()
        >>> tuple(encoder(torch.zeros(2, 1, 64, 128)).shape)
        (2, 33, 32)
    """

    pos_embed: torch.Tensor

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        n_mels: int = 128,
        max_time_patches: int = MAX_TIME_PATCHES,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if n_mels % PATCH_SIZE:
            raise ValueError(f"n_mels={n_mels} must be a multiple of {PATCH_SIZE}")
        self.embed_dim = embed_dim
        self.freq_patches = n_mels // PATCH_SIZE
        self.max_time_patches = max_time_patches
        self.patch_embed = PatchEmbed(embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # Fixed table (not trained, regenerated on load): (1, max_time_patches * W, D).
        table = sincos_2d(embed_dim, max_time_patches, self.freq_patches)
        self.register_buffer("pos_embed", table.unsqueeze(0), persistent=False)
        self.norm_pre = nn.LayerNorm(embed_dim, eps=norm_eps)
        rates = [drop_path_rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]  # linear 0 -> rate
        self.blocks = nn.ModuleList(
            AltBlock(embed_dim, num_heads, mlp_ratio, drop_path=rate, norm_eps=norm_eps) for rate in rates
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Pre-training init (spec §2.5): BERT init for Linear, Xavier patch conv, N(0, 1) CLS."""
        if self.cls_token.is_meta:  # shape-only model (parameter counting): nothing to draw
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        weight = self.patch_embed.proj.weight
        bound = math.sqrt(6.0 / (weight.shape[0] + weight[0].numel()))  # Xavier on the (D, 256) view
        nn.init.uniform_(weight, -bound, bound)
        nn.init.normal_(self.cls_token, std=1.0)

    def embed(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """Patch tokens plus positions (no CLS): `(B, 1, T_f, F)` -> `(B, N, D)`."""
        if spectrogram.dim() != 4 or spectrogram.shape[1] != 1:
            raise ValueError(f"expected a (B, 1, T_f, F) spectrogram, got {tuple(spectrogram.shape)}")
        patches = self.patch_embed(spectrogram)  # (B, N, D)
        if patches.shape[1] > self.pos_embed.shape[1]:
            raise ValueError(f"input has {patches.shape[1] // self.freq_patches} time patches, "
                             f"the positional table holds {self.max_time_patches}")
        positions = self.pos_embed[:, : patches.shape[1]].to(device=patches.device, dtype=patches.dtype)
        return patches + positions  # time-major prefix of the table

    def run_blocks(
        self, tokens: torch.Tensor, keep_layer_results: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Prepend CLS, pre-norm and run every block: `(B, L, D)` -> `((B, 1 + L, D), [m_i (B, 1 + L, D)])`."""
        cls = self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype)  # CLS has no position
        x = self.norm_pre(torch.cat([cls, tokens], dim=1))  # (B, 1 + L, D)
        layer_results: list[torch.Tensor] = []
        for block in self.blocks:
            x, ffn_output = block(x)
            if keep_layer_results:
                layer_results.append(ffn_output)
        return x, layer_results

    def forward(self, spectrogram: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token sequence `(B, 1 + N_visible, D)`; `mask` `(B, N)` bool, True = dropped (equal count per row)."""
        tokens = self.embed(spectrogram)  # (B, N, D)
        if mask is not None:
            counts = (~mask).sum(dim=1)
            if not bool((counts == counts[0]).all()):
                raise ValueError("every row of `mask` must keep the same number of patches")
            keep_index = (~mask).nonzero()[:, 1].view(mask.shape[0], -1)  # (B, N_visible) ascending
            tokens = gather_tokens(tokens, keep_index)
        return self.run_blocks(tokens)[0]

    def forward_layers(self, spectrogram: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Full forward keeping every block's FFN output: `((B, 1 + N, D), depth x (B, 1 + N, D))`."""
        return self.run_blocks(self.embed(spectrogram), keep_layer_results=True)

    def encode_visible(self, spectrogram: torch.Tensor, keep_index: torch.Tensor) -> torch.Tensor:
        """Student pass on K masked clones per clip, encoding only the kept patches.

        `keep_index` `(B * K, N_keep)` indexes the N patches of each clone, clip-major (row b * K + k is
        clone k of clip b). Returns `(B * K, 1 + N_keep, D)`.
        """
        tokens = self.embed(spectrogram)  # (B, N, D), positions added before masking
        clones = keep_index.shape[0] // tokens.shape[0]
        if clones * tokens.shape[0] != keep_index.shape[0]:
            raise ValueError(f"keep_index has {keep_index.shape[0]} rows, not a multiple of batch {tokens.shape[0]}")
        tokens = tokens.repeat_interleave(clones, dim=0)  # (B * K, N, D) clip-major
        return self.run_blocks(gather_tokens(tokens, keep_index))[0]

    def extract_features(self, spectrogram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(utterance (B, D) = CLS output, frames (B, H, D) = mean over the W frequency patches)`.

        Frames come at one per 16 fbank frames (160 ms, 6.25 Hz).
        """
        x = self(spectrogram)  # (B, 1 + H * W, D)
        batch, _, dim = x.shape
        frames = x[:, 1:].reshape(batch, -1, self.freq_patches, dim).mean(dim=2)  # (B, H, D)
        return x[:, 0], frames


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Row-wise gather: tokens `(R, N, D)`, index `(R, M)` -> `(R, M, D)`."""
    return tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


PRESETS: dict[str, dict[str, int]] = {
    "eat_demo": {"embed_dim": 96, "depth": 2, "num_heads": 4},
    "eat_small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "eat_base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "eat_large": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
}
