"""Tiny EAT task configs shared by the EAT training/stage tests (eat_demo encoder, 1-s clips)."""

from __future__ import annotations

from typing import Any

from audiopipe.config import FinetuneEatConfig, PredictTeacherConfig, PretrainEatConfig

PRETRAIN: dict[str, Any] = dict(
    preset="eat_demo", splits=["train", "valid", "weak", "unlabelled"], clip_seconds=1.0, target_frames=96,
    mask_ratio=0.8, clones=2, epochs=2, batch_size=3, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95),
    warmup_fraction=0.2, max_grad_norm=4.0, ema_decay_start=0.9, ema_decay_end=0.99, ema_anneal_steps=10,
    checkpoint_every_steps=0, seed=0, device="cpu", amp="none", num_workers=0,
)
FINETUNE: dict[str, Any] = dict(
    preset="eat_demo", init="random", official_checkpoint=None, train_splits=["train", "weak"], valid_split="valid",
    clip_seconds=1.0, target_frames=96, epochs=2, batch_size=2, eval_batch_size=3, lr=1e-3, layer_decay=0.75,
    weight_decay=0.05, betas=(0.9, 0.95), warmup_fraction=0.1, min_lr_ratio=0.02, drop_path=0.1, mixup_alpha=0.8,
    mixup_prob=0.9, mask_ratio=0.2, roll_mag=True, gain_db=3.0, bce_normaliser="positives", seed=0, device="cpu",
    amp="none", num_workers=0,
)
PREDICT: dict[str, Any] = dict(
    extra_checkpoints=[], splits=["train", "valid", "test", "weak", "unlabelled"], clip_seconds=1.0, batch_size=3,
    seed=0, device="cpu", amp="none", num_workers=0,
)


def pretrain_cfg(**overrides: Any) -> PretrainEatConfig:
    return PretrainEatConfig(**{**PRETRAIN, **overrides})


def finetune_cfg(**overrides: Any) -> FinetuneEatConfig:
    return FinetuneEatConfig(**{**FINETUNE, **overrides})


def predict_cfg(**overrides: Any) -> PredictTeacherConfig:
    return PredictTeacherConfig(**{**PREDICT, **overrides})
