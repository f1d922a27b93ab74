"""ATST-Frame encoder (`FrameAST`): a ViT over whole-spectrum time patches giving one token per 40 ms.

Shapes (B batch, F = 64 mel bins, T mel frames at 10 ms, D embed dim):
    input  mel     (B, F, T) or (B, 1, F, T)    normalised by `ATSTFrontEnd`
    output frames  (B, T // 4, D)               10 s: 1001 mel frames -> 250 tokens (trailing frames dropped)

Architecture and parameter names follow `audiossl audiossl/methods/atstframe/audio_transformer.py`
(`FrameAST_base`) as used by ATST-SED (spec atst_sed.md §3.1-3.2), so `atst_as2M.ckpt`-style state dicts load
strictly: `mask_embed`, `pos_embed` (row 0 reserved, tokens use rows 1..N), `patch_embed.patch_embed` (a Linear
over a 64x4 patch flattened frequency-major, index f·4 + t), pre-norm `blocks.{i}` with bias-free qkv, and the
final `norm_frame`. Only the last block passed through `norm_frame` is returned (ATST-SED's use).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability `drop_prob` (training only)."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class PatchEmbed(nn.Module):
    """(B, F, T) -> (B, T // patch_frames, D); the doubled name `patch_embed.patch_embed` is the official one."""

    def __init__(self, n_mels: int, patch_frames: int, dim: int) -> None:
        super().__init__()
        self.n_mels, self.patch_frames = n_mels, patch_frames
        self.patch_embed = nn.Linear(n_mels * patch_frames, dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        batch, n_mels, frames = mel.shape
        n_tokens = frames // self.patch_frames
        x = mel[:, :, : n_tokens * self.patch_frames]  # drop trailing frames (1001 -> 1000)
        x = x.reshape(batch, n_mels, n_tokens, self.patch_frames)  # (B, F, N, 4)
        x = x.permute(0, 2, 1, 3).reshape(batch, n_tokens, n_mels * self.patch_frames)  # (B, N, F*4), f-major
        return self.patch_embed(x)  # (B, N, D)


class Attention(nn.Module):
    """Multi-head self-attention with a bias-free fused qkv projection (scale head_dim ** -0.5)."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads, self.attn_drop = num_heads, attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n_tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, n_tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, head_dim)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(batch, n_tokens, dim)  # (B, N, D)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """Linear -> GELU (exact) -> Dropout -> Linear -> Dropout."""

    def __init__(self, dim: int, hidden_dim: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)); LayerNorm eps 1e-6."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, attn_drop=drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class FrameAST(nn.Module):
    """ATST-Frame transformer encoder over 64-mel x 4-frame patches.

    Args:
        max_tokens: Rows of the position table besides the reserved row 0 (250 = 10 s); longer inputs raise.
        drop: Dropout inside attention and MLP (ATST-SED `atst_dropout`, 0.0).
        drop_path: Stochastic-depth rate, increased linearly over the blocks up to this value.

    Example:
        >>> encoder = FrameAST(dim=96, depth=2, num_heads=4).eval()
        >>> tuple(encoder.frame_features(torch.randn(2, 64, 1001)).shape)
        (2, 250, 96)
    """

    def __init__(
        self,
        n_mels: int = 64,
        patch_frames: int = 4,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        max_tokens: int = 250,
        drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_mels, self.patch_frames, self.dim, self.max_tokens = n_mels, patch_frames, dim, max_tokens
        self.patch_embed = PatchEmbed(n_mels, patch_frames, dim)
        self.mask_embed = nn.Parameter(torch.zeros(1, 1, dim))  # pre-training only; kept for checkpoint parity
        self.pos_embed = nn.Parameter(torch.zeros(1, max_tokens + 1, dim))
        self.pos_drop = nn.Dropout(drop)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # linear 0 -> drop_path
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, drop, rate) for rate in rates)
        self.norm_frame = nn.LayerNorm(dim, eps=1e-6)
        self._init_weights()

    @property
    def frame_hop_s(self) -> float:
        """Seconds between output tokens for a 10-ms mel hop (0.04 s)."""
        return self.patch_frames * 0.01

    def _init_weights(self) -> None:
        if self.pos_embed.is_meta:  # shape-only build (parameter counting): nothing to initialise
            return
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.mask_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def frame_features(self, mel: torch.Tensor) -> torch.Tensor:
        """Normalised mel (B, F, T) or (B, 1, F, T) -> last block + `norm_frame`, (B, T // 4, D)."""
        if mel.dim() == 4:
            mel = mel.squeeze(1)  # (B, 1, F, T) -> (B, F, T), the official layout
        if mel.dim() != 3 or mel.shape[1] != self.n_mels:
            raise ValueError(f"expected mel (B, {self.n_mels}, T), got shape {tuple(mel.shape)}")
        n_tokens = mel.shape[-1] // self.patch_frames
        if not 1 <= n_tokens <= self.max_tokens:
            raise ValueError(
                f"{mel.shape[-1]} mel frames give {n_tokens} tokens; the encoder takes 1 to "
                f"{self.max_tokens} (split longer inputs into chunks of at most 10 s)"
            )
        x = self.patch_embed(mel)  # (B, N, D)
        x = self.pos_drop(x + self.pos_embed[:, 1 : n_tokens + 1])  # row 0 is the unused reserved slot
        for block in self.blocks:
            x = block(x)
        return self.norm_frame(x)  # (B, N, D)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.frame_features(mel)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters from the top down, for layer-wise LR decay (ATST-SED `separate_opt_params`).

        Group 0 is `norm_frame`, group i (1..depth) is block depth - i, the last group is the embeddings
        (patch embedding, `pos_embed`, `mask_embed`).
        """
        groups = [list(self.norm_frame.parameters())]
        groups += [list(block.parameters()) for block in reversed(self.blocks)]
        groups.append([*self.patch_embed.parameters(), self.pos_embed, self.mask_embed])
        return groups
