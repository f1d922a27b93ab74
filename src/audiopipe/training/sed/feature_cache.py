"""Per-clip cache of the deterministic inputs of an ATST-SED training step (params: `cache_features`).

Two things a CPU step spends most of its non-network time on do not change between epochs:
    SED magnitude mel   (F, T_mel)  of the clean clip; the SED front end has no parameters (both phases)
    encoder frames      (T', D)     of a frozen encoder that sees the clean clip, already resampled to the
                                    CRNN's T' output frames (phase 1 with `mixup_encoder_input: false` and
                                    `freq_warp_prob: 0`)
Both are computed from the unshifted clip on first sight and rolled by the clip's frame shift, exactly as the
waveform and the frame targets are rolled: a shift of s output frames is s x (samples per output frame /
hop) mel frames and s encoder frames on the T' grid. Only the wrapped edge differs from encoding the shifted
clip. Entries are keyed by (split, clip id).

Memory per clip: F x T_mel x 4 B (128 x 626: 320 kB) plus T' x D x 4 B (demo: 156 x 96: 60 kB); the demo's
320 training clips take ~120 MB. For DESED-size corpora (~20k clips, ATST-Frame D = 768) that is ~16 GB, so the
published setting is off.
"""

from __future__ import annotations

import torch

from audiopipe.models.sed import SEDModel, resample_frames
from audiopipe.models.sed.encoders import FrameEncoder

Key = tuple[str, str]  # (split, clip id)


class ClipFeatureCache:
    """SED magnitude mels and frozen-encoder frames of each training clip, computed once (module docstring)."""

    def __init__(self) -> None:
        self.mels: dict[Key, torch.Tensor] = {}
        self.frames: dict[Key, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.mels) + len(self.frames)

    def sed_magnitude(
        self, model: SEDModel, audio: torch.Tensor, keys: list[Key], shifts: list[int], samples_per_frame: int
    ) -> torch.Tensor:
        """Unshifted clips (B, T), their keys and frame shifts -> magnitude mels (B, F, T_mel) of the shifted clips."""
        hop = model.mel_spec.hop_length
        if samples_per_frame % hop:
            raise ValueError(f"an output frame ({samples_per_frame} samples) is not whole {hop}-sample hops")
        missing = [i for i, key in enumerate(keys) if key not in self.mels]
        if missing:
            with torch.no_grad():
                fresh = model.mel_spec.magnitude(audio[missing])
            self.mels.update({keys[i]: m for i, m in zip(missing, fresh)})
        step = samples_per_frame // hop
        return torch.stack([torch.roll(self.mels[key], shift * step, dims=-1) for key, shift in zip(keys, shifts)])

    def encoder_frames(
        self, model: SEDModel, audio: torch.Tensor, keys: list[Key], shifts: list[int], n_frames: int
    ) -> torch.Tensor:
        """Unshifted clips (B, T), keys and shifts -> frozen-encoder frames (B, T', D), computed in eval mode."""
        encoder = model.encoder
        if not isinstance(encoder, FrameEncoder):
            raise ValueError("encoder frames are cached only for a model with a frame encoder (sed_atst, sed_eat)")
        missing = [i for i, key in enumerate(keys) if key not in self.frames]
        if missing:
            was_training = encoder.training
            encoder.eval()
            with torch.no_grad():
                fresh = encoder.frame_features(audio[missing])
                fresh = resample_frames(fresh, n_frames, model.encoder_pool)
            encoder.train(was_training)
            self.frames.update({keys[i]: f for i, f in zip(missing, fresh)})
        return torch.stack([torch.roll(self.frames[key], shift, dims=0) for key, shift in zip(keys, shifts)])
