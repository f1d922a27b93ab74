"""One ATST-SED training step (spec atst_sed.md §5-§6): augmentation, student and mean-teacher forward passes
and the semi-supervised loss, as the `step_fn` that `audiopipe.training.loop.fit` calls per batch.

Student input: frame shift (waveform), mixup per subset group (linear SED magnitude mel; also the encoder's
linear input when `settings.mixup_encoder_input`), time/frequency masking of the SED mel, frequency warping of the
encoder input (`settings.freq_warp_prob`, one coin per batch). Loss: strong BCE on strong clips, weak BCE on weak
clips and the ramped-up consistency term (`mean_teacher` or `ict`). With `settings.cache_features` the deterministic
inputs come from `audiopipe.training.sed.feature_cache`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from audiopipe.audio.augment import GroupMix, freq_warp, group_mixup_params, mix_groups, spec_mask
from audiopipe.data.sed_batches import subset_masks
from audiopipe.losses.sed import consistency_mse, consistency_weight, ict_consistency, strong_bce, weak_bce
from audiopipe.models.ema import EMA
from audiopipe.models.sed import SEDModel, as_sed_model
from audiopipe.models.sed.encoders import AugmentableFrameEncoder
from audiopipe.training.sed.feature_cache import ClipFeatureCache


def _frame_shift(
    audio: torch.Tensor, strong: torch.Tensor, max_frames: int, samples_per_frame: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Roll each clip and its frame targets by the same whole number of output frames; also returns the shifts."""
    if max_frames <= 0:
        return audio, strong, [0] * audio.shape[0]
    shifts = torch.randint(-max_frames, max_frames + 1, (audio.shape[0],), generator=generator).tolist()
    audio = torch.stack([torch.roll(a, s * samples_per_frame) for a, s in zip(audio, shifts)])
    strong = torch.stack([torch.roll(y, s, dims=-1) for y, s in zip(strong, shifts)])
    return audio, strong, shifts


def _warp_coin(prob: float, generator: torch.Generator) -> bool:
    """Whether this batch's encoder inputs are frequency-warped: one coin per batch (spec §5.5, p = 0.5)."""
    return prob > 0 and torch.rand(1, generator=generator).item() < prob


def _warp_groups(
    features: torch.Tensor, subset: torch.Tensor, encoder: AugmentableFrameEncoder, generator: torch.Generator
) -> torch.Tensor:
    """Frequency-warp the encoder input of every subset group, one random crop per group."""
    out = features.clone()
    for kind in subset.unique().tolist():
        index = torch.nonzero(subset == kind).flatten().to(features.device)
        out[index] = freq_warp(
            features[index], freq_axis=encoder.freq_axis, time_axis=encoder.time_axis, generator=generator
        )
    return out


def _clip_keys(batch: dict[str, Any]) -> list[tuple[str, str]]:
    """(split, clip id) of every clip of a batch: the feature cache's keys."""
    keys = list(zip(batch.get("split", []), batch.get("clip_id", [])))
    if len(keys) != len(batch["subset"]):
        raise ValueError("cache_features needs the batch's 'split' and 'clip_id' (SEDClipDataset items)")
    return keys


@dataclass(frozen=True)
class StepSettings:
    """Augmentation and loss values of one ATST-SED phase (the fields of its params section with these names)."""

    consistency: Literal["mean_teacher", "ict"]
    cache_features: bool
    frame_shift_max_frames: int
    mixup_prob: float
    mixup_alpha: float
    mixup_encoder_input: bool
    freq_warp_prob: float
    mask_time_frames: float
    mask_freq_bins: float
    const_max: float
    weak_loss_weight: float


class SEDStep:
    """step_fn for `fit`: augmentation, student/teacher forward passes and the semi-supervised loss.

    Student input: frame shift (waveform), mixup per subset group (linear SED magnitude mel; also the encoder's
    linear input when `settings.mixup_encoder_input`), time/frequency masking of the SED mel, frequency warping of
    the encoder input (`settings.freq_warp_prob`: one coin per batch, one crop per group). Teacher input: the same
    mixed SED mel for `mean_teacher` consistency (stage 1); the clean one for `ict` (stage 2), warped when the
    batch's coin fired, with its own crops. The teacher runs in train mode, so its BatchNorm running statistics
    are its own; pass an `EMA(..., copy_buffers=False)` so that the update does not overwrite them (spec §4.4).
    """

    def __init__(
        self, settings: StepSettings, phase: int, teacher: EMA, generator: torch.Generator, rampup_steps: int
    ) -> None:
        self.settings, self.phase, self.teacher, self.generator = settings, phase, teacher, generator
        self.mean_teacher = as_sed_model(teacher.module, "the mean teacher")  # the EMA's copy, updated in place
        self.rampup_steps = rampup_steps
        self.step = 0  # optimizer steps taken (fit's on_optimizer_step keeps it current)
        self.cache = ClipFeatureCache() if settings.cache_features else None
        # a frozen encoder on the clean clip (phase 1 without encoder augmentation) gives the same frames each epoch
        self.cache_frames = phase == 1 and not settings.mixup_encoder_input and settings.freq_warp_prob <= 0

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue the same augmentation draws and consistency ramp."""
        return {"step": self.step, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.generator.set_state(state["generator"])

    def _encoder_frames(
        self, raw: SEDModel, audio: torch.Tensor, subset: torch.Tensor, draws: list[GroupMix]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(student frames, teacher frames); the teacher's are None when it shares the student's frozen
        encoder on the same input (stage 1)."""
        settings, encoder = self.settings, raw.frame_encoder
        if encoder is None:
            return None, None
        if not isinstance(encoder, AugmentableFrameEncoder):  # checked in train_atst_sed: no encoder augmentation
            frames = encoder.frame_features(audio)
            if self.phase == 1:
                return frames, None
            with torch.no_grad():  # stage 2: the teacher's own (EMA) encoder
                teacher_encoder = self.mean_teacher.frame_encoder
                assert teacher_encoder is not None  # a copy of the student's
                return frames, teacher_encoder.frame_features(audio)
        linear = encoder.linear_input(audio)
        student_linear = mix_groups(linear, draws) if settings.mixup_encoder_input else linear
        # one coin for the batch; when it fires, every group of the student and (stage 2) of the teacher input is
        # warped, each with its own crop (spec §5.5)
        warp = _warp_coin(settings.freq_warp_prob, self.generator)
        student_in = encoder.input_from_linear(student_linear)
        if warp:
            student_in = _warp_groups(student_in, subset, encoder, self.generator)
        frames = encoder.frames_from_input(student_in)
        if self.phase == 1:
            return frames, None
        teacher_linear = linear if settings.consistency == "ict" else student_linear
        teacher_encoder = self.mean_teacher.frame_encoder
        assert isinstance(teacher_encoder, AugmentableFrameEncoder)  # a copy of the student's
        teacher_in = encoder.input_from_linear(teacher_linear)
        if warp:
            teacher_in = _warp_groups(teacher_in, subset, encoder, self.generator)
        with torch.no_grad():
            return frames, teacher_encoder.frames_from_input(teacher_in)

    def __call__(self, model: nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        settings, raw = self.settings, as_sed_model(getattr(model, "module", model), "the trained model")
        samples_per_frame = int(round(raw.sample_rate / raw.frame_rate_hz))
        subset = batch["subset"]
        audio, strong, shifts = _frame_shift(
            batch["audio"], batch["strong"], settings.frame_shift_max_frames, samples_per_frame, self.generator
        )
        draws = group_mixup_params(
            subset, alpha=settings.mixup_alpha, prob=settings.mixup_prob, generator=self.generator
        )
        strong, weak = mix_groups(strong, draws, clamp=(0.0, 1.0)), mix_groups(batch["weak"], draws, clamp=(0.0, 1.0))
        keys = _clip_keys(batch) if self.cache is not None else []
        if self.cache is not None:  # (B, F, T); the front end has no parameters
            sed_linear = self.cache.sed_magnitude(raw, batch["audio"], keys, shifts, samples_per_frame)
        else:
            sed_linear = raw.mel_spec.magnitude(audio)
        mixed_mel = raw.mel_spec.normalize(mix_groups(sed_linear, draws))
        student_mel = mixed_mel
        if settings.mask_time_frames > 0 or settings.mask_freq_bins > 0:
            student_mel = spec_mask(
                mixed_mel, freq_width=settings.mask_freq_bins, time_width=settings.mask_time_frames,
                generator=self.generator,
            )
        frames: torch.Tensor | None  # (B, T_enc, D) encoder frames; None without an encoder
        if self.cache is not None and self.cache_frames and raw.encoder is not None:
            frames, t_frames = self.cache.encoder_frames(raw, batch["audio"], keys, shifts, strong.shape[-1]), None
        else:
            frames, t_frames = self._encoder_frames(raw, audio, subset, draws)
        s_strong, s_weak = raw.forward_features(student_mel, frames)
        ict = settings.consistency == "ict" and bool(draws)
        with torch.no_grad():
            # teacher BN/dropout in train mode: this forward updates the teacher's own BN statistics (spec §4.4)
            teacher = self.mean_teacher.train()
            teacher_mel = raw.mel_spec.normalize(sed_linear) if ict else mixed_mel
            t_frames = frames if t_frames is None else t_frames
            t_strong, t_weak = teacher.forward_features(teacher_mel, None if t_frames is None else t_frames.detach())
        masks = subset_masks(subset)
        loss_strong = strong_bce(s_strong, strong, masks["strong"])
        loss_weak = weak_bce(s_weak, weak, masks["weak"])
        weight = consistency_weight(self.step + 1, rampup_steps=self.rampup_steps, const_max=settings.const_max)
        if ict:
            loss_con = ict_consistency(s_strong, s_weak, t_strong, t_weak, draws, weak_weight=settings.weak_loss_weight)
        else:
            loss_con = consistency_mse(s_strong, s_weak, t_strong, t_weak, weak_weight=settings.weak_loss_weight)
        loss = loss_strong + settings.weak_loss_weight * loss_weak + weight * loss_con
        return {
            "loss": loss,
            "strong_bce": loss_strong.detach(),
            "weak_bce": loss_weak.detach(),
            "consistency": loss_con.detach(),
            "consistency_weight": torch.tensor(weight),
            "ict": torch.tensor(float(ict)),
        }
