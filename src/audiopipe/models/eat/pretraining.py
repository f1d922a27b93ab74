"""EAT self-supervised pre-training model: student encoder, EMA teacher, CNN decoder (spec §3).

One `forward(spectrogram)` computes the Utterance-Frame Objective for B clips with K masked clones each:
    spectrogram                  (B, 1, T_f, 128)      normalised fbank, T_f a multiple of 16 (1024)
    teacher (no grad, full clip) -> targets y           (B, N, D) instance-normed average of block FFN outputs
    student (visible patches)    -> x                   (B * K, 1 + N_keep, D)
    decoder (visible + noise)    -> predictions         (B * K, N, D), compared at the masked patches
    returns {"loss", "frame_loss", "utterance_loss"}    scalars (losses.ssl.utterance_frame_loss)

`ema_update(step)` moves the teacher towards the student after each optimizer step with the annealed
decay of spec §3.6. `dense_baseline_step` computes the same objective with the student encoding every
patch of every clone (masked patches replaced by noise tokens); it exists to measure EAT's speed-up.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from audiopipe.losses.ssl import teacher_targets, utterance_frame_loss
from audiopipe.models.eat.decoder import Decoder2d
from audiopipe.models.eat.encoder import PATCH_SIZE, EATEncoder, gather_tokens
from audiopipe.models.eat.masking import BlockMask, clone_masks
from audiopipe.models.ema import EMA


class EATPretrainer(nn.Module):
    """Student + `ema_teacher` + decoder; defaults are EAT-base's pre-training config.

    Args:
        embed_dim, depth, num_heads, mlp_ratio: Encoder size (see `EATEncoder`).
        decoder_channels, decoder_depth, decoder_kernel_size: CNN decoder (base 768/6/3, large 1024/3/5).
        clones: Masked clones K per clip sharing one teacher pass (16).
        mask_ratio, mask_prob_adjust, block_size: Inverse block masking (base 0.8/0.07/5, large 0.75/0.1/5).
        ema_decay_start, ema_decay_end, ema_anneal_steps: Linear decay anneal (0.9998 -> 0.99999 over
            100k updates for base, 150k for large).
        frame_weight, utterance_weight: `d2v_loss` and `cls_loss` (both 1).
        mask_noise_std: Std of the Gaussian "mask tokens" fed to the decoder (0.01).

    Example:
        >>> model = EATPretrainer(embed_dim=32, depth=1, num_heads=4, decoder_channels=32, decoder_depth=1, clones=2)
        >>> out = model(torch.randn(2, 1, 64, 128))
        >>> sorted(out), tuple(out["loss"].shape)
        (['frame_loss', 'loss', 'utterance_loss'], ())
    """

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        decoder_channels: int = 768,
        decoder_depth: int = 6,
        decoder_kernel_size: int = 3,
        clones: int = 16,
        mask_ratio: float = 0.8,
        mask_prob_adjust: float = 0.07,
        block_size: int = 5,
        ema_decay_start: float = 0.9998,
        ema_decay_end: float = 0.99999,
        ema_anneal_steps: int = 100_000,
        frame_weight: float = 1.0,
        utterance_weight: float = 1.0,
        mask_noise_std: float = 0.01,
        n_mels: int = 128,
    ) -> None:
        super().__init__()
        self.encoder = EATEncoder(embed_dim, depth, num_heads, mlp_ratio, n_mels=n_mels)
        self.decoder = Decoder2d(embed_dim, decoder_channels, decoder_depth, decoder_kernel_size,
                                 freq_patches=n_mels // PATCH_SIZE)
        self.ema_teacher = EMA(self.encoder, decay=ema_decay_start)  # exact copy of the fresh student
        self.clones = clones
        self.mask_ratio = mask_ratio
        self.mask_prob_adjust = mask_prob_adjust
        self.block_size = block_size
        self.ema_decay_start = ema_decay_start
        self.ema_decay_end = ema_decay_end
        self.ema_anneal_steps = ema_anneal_steps
        self.frame_weight = frame_weight
        self.utterance_weight = utterance_weight
        self.mask_noise_std = mask_noise_std

    def train(self, mode: bool = True) -> EATPretrainer:
        super().train(mode)
        self.ema_teacher.module.eval()  # the teacher always runs in eval mode
        return self

    def make_masks(self, spectrogram: torch.Tensor, generator: torch.Generator | None = None) -> BlockMask:
        """K clip-major inverse block masks per clip for this spectrogram's patch grid."""
        grid = (spectrogram.shape[2] // PATCH_SIZE, spectrogram.shape[3] // PATCH_SIZE)
        return clone_masks(spectrogram.shape[0], self.clones, grid, self.mask_ratio, self.mask_prob_adjust,
                           self.block_size, generator=generator, device=spectrogram.device)

    @torch.no_grad()
    def targets(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """Teacher targets `(B, N, D)` from the full, unmasked clips (one pass shared by all clones)."""
        teacher = cast(EATEncoder, self.ema_teacher.module)
        _, layer_results = teacher.forward_layers(spectrogram)
        return teacher_targets([m[:, 1:] for m in layer_results])  # drop the CLS row of each layer

    def forward(
        self,
        spectrogram: torch.Tensor,
        keep_index: torch.Tensor | None = None,
        mask_index: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Utterance-Frame loss; masks `(B * K, N_keep)` / `(B * K, N - N_keep)` are drawn when not given."""
        if keep_index is None or mask_index is None:
            keep_index, mask_index, _ = self.make_masks(spectrogram)
        targets = self.targets(spectrogram)  # (B, N, D)
        x = self.encoder.encode_visible(spectrogram, keep_index)  # (B * K, 1 + N_keep, D)
        rows, _, dim = x.shape
        noise = torch.randn(rows, targets.shape[1], dim, device=x.device, dtype=x.dtype) * self.mask_noise_std
        index = keep_index.unsqueeze(-1).expand(-1, -1, dim)
        full = noise.scatter(1, index, x[:, 1:])  # (B * K, N, D): visible outputs back in patch order
        return self._objective(self.decoder(full), x[:, 0], targets, mask_index)

    def dense_baseline_step(
        self,
        spectrogram: torch.Tensor,
        keep_index: torch.Tensor | None = None,
        mask_index: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Same objective, but the student encodes all N patches of every clone (noise at masked ones)."""
        if keep_index is None or mask_index is None:
            keep_index, mask_index, _ = self.make_masks(spectrogram)
        targets = self.targets(spectrogram)
        tokens = self.encoder.embed(spectrogram).repeat_interleave(self.clones, dim=0)  # (B * K, N, D)
        rows, _, dim = tokens.shape
        noise = torch.randn(rows, mask_index.shape[1], dim, device=tokens.device, dtype=tokens.dtype)
        tokens = tokens.scatter(1, mask_index.unsqueeze(-1).expand(-1, -1, dim), noise * self.mask_noise_std)
        x, _ = self.encoder.run_blocks(tokens)  # (B * K, 1 + N, D)
        return self._objective(self.decoder(x[:, 1:]), x[:, 0], targets, mask_index)

    def _objective(
        self, predictions: torch.Tensor, cls: torch.Tensor, targets: torch.Tensor, mask_index: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        clones = cls.shape[0] // targets.shape[0]
        frame_target = gather_tokens(targets.repeat_interleave(clones, dim=0), mask_index)  # (B * K, M, D)
        utterance_target = targets.mean(dim=1).repeat_interleave(clones, dim=0)  # (B * K, D) patch mean
        return utterance_frame_loss(
            gather_tokens(predictions, mask_index), frame_target, cls, utterance_target,
            frame_weight=self.frame_weight, utterance_weight=self.utterance_weight,
        )

    def ema_decay(self, step: int) -> float:
        """Linearly annealed teacher decay after `step` optimizer updates (fairseq `get_annealed_rate`)."""
        if step >= self.ema_anneal_steps:
            return self.ema_decay_end
        return self.ema_decay_start + (self.ema_decay_end - self.ema_decay_start) * step / self.ema_anneal_steps

    def ema_update(self, step: int) -> float:
        """Move the teacher towards the student (call after each optimizer step); returns the decay used."""
        decay = self.ema_decay(step)
        self.ema_teacher.update(self.encoder, decay=decay)
        return decay
