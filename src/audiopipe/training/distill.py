"""Task `distill_mobilenet`: train a MobileNetV3 student on packed clips and teacher logits (spec §4).

Reads `<clips_dir>/<train_split>.h5` and `<valid_split>.h5` (ClipReader packs) and, when
`kd_lambda < 1`, the teacher predictions file (`audiopipe.data.predictions`) whose rows are matched
to the pack by clip id. Writes the best-validation-mAP student to `checkpoint` in the final-model
format (`builder="mn_tagger"`; `"dymn_tagger"` with `student: dymn`), rebuildable with
`audiopipe.models.load_model`, and returns a
`TaskResult` with the best epoch's metrics (`valid/mAP`, `valid/roc_auc`, `valid/d_prime`,
`valid/loss`, plus `teacher/valid_mAP` when the teacher file has the validation split).

Training step (EfficientAT ex_audioset.py order): waveform gain and circular roll → mel front end in
train mode (fmin/fmax jitter, optional masks) → spectrogram mixup with per-example λ ≥ 0.5 and a
random partner → student → `kd_loss_terms` with the teacher probabilities mixed the same way.
BatchNorm: `features` uses the spec's TF-style momentum 0.01, so the running statistics move ~1 % per step
and after a demo-sized run (tens of steps) they are still mostly their initial (0, 1): in eval mode every
layer then mis-scales its input, the error compounds over ~50 BN layers and the logits become the same for
every clip (valid ROC-AUC 0.5), although training itself works (batch statistics). With
`bn_recalib_batches > 0` the running statistics are therefore re-estimated before each validation as the
plain average over that many clean train batches (eval-mode mel, no gain/roll/mixup) with the current
weights ("precise BN"); the model, its momentum and the published recipe (0 = off) are unchanged.
Deliberate deviations: the LR schedule is linear warm-up + linear decay per optimizer step (not the
per-epoch exp-warm-up/plateau/ramp-down), and a clip without a teacher row is an error instead of a
silently zeroed KD term.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from audiopipe.audio.augment import mix, mixup_params, random_gain, time_roll
from audiopipe.config import DistillMobilenetConfig
from audiopipe.data.datasets import ClipDataset
from audiopipe.data.predictions import PredictionsError, read_attrs, read_predictions
from audiopipe.losses.distillation import kd_loss_terms, teacher_probabilities
from audiopipe.metrics.tagging import tagging_metrics
from audiopipe.models import build_model
from audiopipe.training.inference import predict_logits
from audiopipe.training.loaders import make_loader
from audiopipe.training.loop import FitSettings
from audiopipe.training.runner import (
    Outcome,
    Selection,
    TaskResult,
    TrainingTask,
    input_digest,
    resume_key,
    run_task,
)
from audiopipe.training.samplers import WeightedEpochSampler
from audiopipe.training.schedulers import warmup_linear

log = logging.getLogger(__name__)

STUDENT_BUILDERS = {"mn": "mn_tagger", "dymn": "dymn_tagger"}  # `student` param -> registry name


class _StudentStep(nn.Module):
    """Training view of the tagger: waveform → mel → mixup → net, so DDP sees one forward call."""

    def __init__(self, tagger: nn.Module) -> None:
        super().__init__()
        self.tagger: Any = tagger

    def forward(self, audio: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
        mel = mix(self.tagger.mel(audio), lam, partner)
        return self.tagger.net(mel)[0]


def align_teacher(
    teacher_h5: Path, split: str, clip_ids: list[str], class_names: list[str]
) -> torch.Tensor:
    """Teacher logits (N, C) in the order of `clip_ids`, matched by id.

    Raises:
        PredictionsError: missing file or split, different label list, duplicate ids, or clips of the
            pack without a teacher row (and teacher rows for clips not in the pack).
    """
    ids, logits, _ = read_predictions(teacher_h5, split, expected_class_names=class_names)
    row = {clip_id: i for i, clip_id in enumerate(ids)}
    if len(row) != len(ids):
        raise PredictionsError(f"{teacher_h5}: split '{split}' has duplicate clip ids")
    missing = [c for c in clip_ids if c not in row]
    extra = sorted(set(row) - set(clip_ids))
    if missing or extra:
        raise PredictionsError(
            f"{teacher_h5}: split '{split}' is not aligned with the packed clips: {len(missing)} pack clip(s) "
            f"without teacher logits (e.g. {missing[:3]}), {len(extra)} teacher row(s) for unknown clips "
            f"(e.g. {extra[:3]}); rerun predict_teacher on this pack"
        )
    return torch.from_numpy(logits[[row[c] for c in clip_ids]])


def sample_weights(targets: np.ndarray, offset: float) -> np.ndarray:
    """EfficientAT balanced sampling: Σ over a clip's positive classes of 1000 / (class count + offset).

    Clips without any positive label get the smallest positive weight so that they are still drawn.
    """
    class_weight = 1000.0 / (targets.sum(axis=0) + offset)
    weights = (targets > 0.5).astype(np.float64) @ class_weight
    floor = weights[weights > 0].min() if (weights > 0).any() else 1.0
    return np.where(weights > 0, weights, floor)


def _student_kwargs(cfg: DistillMobilenetConfig, n_classes: int, sample_rate: int) -> dict[str, Any]:
    return {
        "width_mult": cfg.width_mult, "n_classes": n_classes, "sample_rate": sample_rate,
        "n_mels": cfg.n_mels, "hop_length": cfg.hop_length, "dropout": cfg.dropout,
        "fmin_aug_range": cfg.fmin_aug_range, "fmax_aug_range": cfg.fmax_aug_range,
        "freqm": cfg.freqm, "timem": cfg.timem,
    }  # fmt: skip


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor], device: torch.device) -> int:
    """Reset the BatchNorm running statistics of `model` and re-estimate them over waveform `batches`.

    Runs `model` in eval mode except for its BatchNorm layers, which use batch statistics and accumulate a plain
    (cumulative) average of them (momentum None); their momentum is restored afterwards and the model is
    left in eval mode. Returns the number of batches used; with 0 batches the statistics are left untouched.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    model.eval()
    count = 0
    try:
        for batch in batches:
            if count == 0:
                for m in norms:
                    m.reset_running_stats()
                    m.momentum = None  # cumulative average over the batches
                    m.train()
            model(batch.to(device))
            count += 1
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
            m.eval()
    return count


def _teacher_valid_map(teacher_h5: Path | None, split: str, valid: ClipDataset) -> dict[str, float]:
    if teacher_h5 is None or split not in read_attrs(teacher_h5)["splits"]:  # type: ignore[operator]
        return {}
    logits = align_teacher(teacher_h5, split, valid.reader.clip_ids, valid.class_names).numpy()
    return {"teacher/valid_mAP": tagging_metrics(valid.reader.all_targets, logits)["mAP"]}


def whole_split_loader(dataset: Any, batch_size: int, num_workers: int) -> DataLoader:
    """In-order loader over the whole `dataset`, not sharded under DDP (rank 0 alone validates).

    Its own generator: iterating a DataLoader without one draws a seed from torch's global RNG, which would shift
    every later augmentation draw of the training run (validation must not change what training sees).
    """
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      generator=torch.Generator())


@dataclass
class KDStep:
    """`step_fn`: gain and roll of the waveform, spectrogram mixup, student, `kd_loss_terms` with the teacher
    probabilities (rows of `teacher` by the batch's clip index; None: labels only) mixed like the input."""

    cfg: DistillMobilenetConfig
    teacher: torch.Tensor | None

    def __call__(self, net: nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        audio, labels = batch["audio"], batch["labels"]
        if cfg.gain_db > 0:
            audio = random_gain(audio, max_db=cfg.gain_db)
        if cfg.roll_samples > 0:
            audio = time_roll(audio, max_shift=cfg.roll_samples)
        lam, partner = mixup_params(audio.shape[0], alpha=cfg.mixup_alpha, pairing="permute", per_example=True)
        logits = net(audio, lam.to(device), partner.to(device))
        probs = None
        if self.teacher is not None:
            rows = self.teacher[batch["index"].cpu()].to(device)
            probs = mix(teacher_probabilities(rows, cfg.temperature), lam, partner)
        return kd_loss_terms(logits, probs, mix(labels, lam, partner), cfg.kd_lambda)


@dataclass
class StudentRun:
    """The runner's callbacks of one student: `validate` (precise-BN re-estimation, then valid mAP / ROC-AUC /
    d′ / loss), `snapshot` (the final-model payload of the current weights), `finish` (the kept epoch's metrics
    plus the teacher's valid mAP, and its payload)."""

    cfg: DistillMobilenetConfig
    tagger: nn.Module
    builder: str
    builder_kwargs: dict[str, Any]
    train: ClipDataset
    valid: ClipDataset
    valid_loader: DataLoader
    recalib_loader: DataLoader
    teacher_h5: Path | None

    def validate(self, net: nn.Module, epoch: int) -> dict[str, float]:
        cfg, device = self.cfg, next(net.parameters()).device
        if cfg.bn_recalib_batches > 0:
            if hasattr(self.recalib_loader.sampler, "set_epoch"):
                self.recalib_loader.sampler.set_epoch(epoch)
            batches = (b["audio"] for b in itertools.islice(self.recalib_loader, cfg.bn_recalib_batches))
            recalibrate_batchnorm(self.tagger, batches, device)
        logits, targets = predict_logits(self.tagger, self.valid_loader, device)  # tagger is net.tagger
        scores = tagging_metrics(targets, logits)
        loss = F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(targets)).item()
        return {"valid/mAP": scores["mAP"], "valid/roc_auc": scores["roc_auc"],
                "valid/d_prime": scores["d_prime"], "valid/loss": loss}

    def snapshot(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "builder": self.builder, "builder_kwargs": self.builder_kwargs, "model": self.tagger.state_dict(),
            "class_names": list(self.train.class_names), "sample_rate": int(self.train.sample_rate),
            "config": asdict(self.cfg), "metrics": {**metrics, "epoch": float(epoch)},
        }

    def finish(self, outcome: Outcome) -> tuple[dict[str, float], dict[str, Any]]:
        best, epochs = outcome.best, outcome.history.epochs
        if best is None or best.payload is None:
            raise RuntimeError("distill_mobilenet: no epoch was validated (epochs must be >= 1)")
        best_epoch = next((e for e in epochs if e["epoch"] == best.best_epoch), epochs[-1] if epochs else {})
        metrics = {k: float(v) for k, v in best_epoch.items() if k.startswith("valid/")}
        metrics["best_epoch"] = float(best.best_epoch)
        metrics.update(_teacher_valid_map(self.teacher_h5, self.cfg.valid_split, self.valid))
        log.info("distill_mobilenet: best valid/mAP %.4f at epoch %d", metrics.get("valid/mAP", math.nan),
                 best.best_epoch)
        return metrics, best.payload


def distill_mobilenet(
    cfg: DistillMobilenetConfig,
    *,
    clips_dir: Path,
    teacher_h5: Path | None,
    checkpoint: Path,
    tracker: Any = None,
    on_epoch_end: Any = None,
) -> TaskResult:
    """Train the student; see the module docstring. `teacher_h5` may be None only when `kd_lambda == 1`."""
    train = ClipDataset(Path(clips_dir) / f"{cfg.train_split}.h5", duration_s=cfg.duration_s)
    valid = ClipDataset(Path(clips_dir) / f"{cfg.valid_split}.h5", duration_s=cfg.duration_s)
    if valid.class_names != train.class_names or valid.sample_rate != train.sample_rate:
        raise ValueError(f"{clips_dir}: train and valid packs differ in labels or sample rate")
    use_teacher = cfg.kd_lambda < 1.0
    teacher = None
    if use_teacher:
        if teacher_h5 is None:
            raise ValueError(f"kd_lambda={cfg.kd_lambda} < 1 needs teacher predictions (--teacher)")
        teacher = align_teacher(Path(teacher_h5), cfg.train_split, train.reader.clip_ids, train.class_names)

    if cfg.student not in STUDENT_BUILDERS:
        raise ValueError(f"student must be one of {sorted(STUDENT_BUILDERS)}, got {cfg.student!r} (params.yaml)")
    builder = STUDENT_BUILDERS[cfg.student]
    torch.manual_seed(cfg.seed)
    kwargs = _student_kwargs(cfg, len(train.class_names), train.sample_rate)
    tagger = build_model(builder, **kwargs)
    # DyMN: per-epoch softmax temperature of the dynamic convolutions (30 -> 1 over 29 epochs from scratch)
    on_epoch_start = getattr(tagger, "update_params", None)
    model = _StudentStep(tagger)
    n_train = cfg.epoch_len or len(train)
    sampler = (
        WeightedEpochSampler(sample_weights(train.reader.all_targets, cfg.sampling_offset).tolist(), n_train,
                             cfg.seed)
        if cfg.weighted_sampling else None
    )
    train_loader = make_loader(train, cfg.batch_size, shuffle=True, seed=cfg.seed, sampler=sampler,
                               num_workers=cfg.num_workers)
    valid_loader = whole_split_loader(valid, cfg.batch_size, cfg.num_workers)
    recalib_loader = make_loader(train, cfg.batch_size, shuffle=True, seed=cfg.seed + 1, num_workers=cfg.num_workers)
    steps_per_epoch = math.ceil(len(train_loader.sampler) / cfg.batch_size)  # type: ignore[arg-type]
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    optimizer = torch.optim.AdamW(tagger.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = warmup_linear(optimizer, warmup_steps=min(total_steps, round(cfg.warmup_epochs * steps_per_epoch)),
                              total_steps=total_steps, min_ratio=cfg.min_lr_ratio)

    run = StudentRun(cfg, tagger, builder, kwargs, train, valid, valid_loader, recalib_loader,
                     Path(teacher_h5) if teacher_h5 else None)
    task = TrainingTask(
        model, train_loader, KDStep(cfg, teacher), optimizer, scheduler,
        settings=FitSettings(epochs=cfg.epochs, device=cfg.device, amp=cfg.amp, seed=cfg.seed, desc="distill"),
        finish=run.finish, validate=run.validate, selection=Selection("valid/mAP", "max"), snapshot=run.snapshot,
        on_epoch_start=on_epoch_start,
    )
    teacher_digest = input_digest(teacher_h5) if teacher is not None else None
    # the teacher by content: a rewritten predictions file restarts the run
    key = resume_key(asdict(cfg), train=train.reader.content_hash, teacher=teacher_digest)
    return run_task(task, checkpoint=checkpoint, key=key, tracker=tracker, on_epoch_end=on_epoch_end)
