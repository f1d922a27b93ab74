"""ATST-SED two-phase semi-supervised training (spec atst_sed.md §5-§8): one code path, `phase=1|2`.

Reads `<clips_dir>/{train,weak,unlabelled,valid,test}.h5` (the splits named in `cfg.train_splits`, in the
order of `cfg.batch_sizes`); writes the final checkpoint (best epoch on valid by `selection_criterion`: phase 1
the lowest mean of the mean teacher's weak and strong BCE, phase 2 the highest teacher PSDS1 + PSDS2),
`psd_roc.csv` / `psd_roc.png` (test PSD-ROC of student and mean teacher) next to it.

Phase 1: build the fused model (`cfg.model`, encoder weights from `encoder_checkpoint`), encoder frozen,
CRNN + heads trained. Phase 2: rebuild the phase-1 model from `init_checkpoint` (student and mean teacher),
encoder unfrozen with layer-wise decayed LRs. Both: EMA mean teacher with the exponential consistency ramp-up,
strong BCE on strong clips, weak BCE on weak clips, mixup per subset group in the linear mel domain,
frame shift, time/frequency masking of the student's SED mel, LR warm-up (then cosine to 10 % if
`cfg.cos_down`). Stage-2 specifics are switches (spec §5.5, §6.2): `consistency: ict` (teacher on the clean
input, targets mixed like the student's input), `mixup_encoder_input` (mix the encoder's power mel with the
same draw) and `freq_warp_prob` (frequency warping of the encoder input).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from audiopipe.config import AtstStage1Config, AtstStage2Config, SedTrainingConfig
from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.labels import encode_events
from audiopipe.data.sed_batches import SEDClipDataset, make_mixed_loader
from audiopipe.metrics.psd_roc_files import plot_roc, write_roc_csv
from audiopipe.models import build_model
from audiopipe.models.ema import EMA
from audiopipe.models.sed import SEDModel, as_sed_model
from audiopipe.models.sed.encoders import AugmentableFrameEncoder
from audiopipe.storage import load_checkpoint, load_state_dict_strict
from audiopipe.training import distributed
from audiopipe.training.distributed import resolve_device
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
from audiopipe.training.sed.optim import LearningRates, lr_factor, param_groups
from audiopipe.training.sed.step import SEDStep, StepSettings
from audiopipe.training.sed.validation import (
    eval_split,
    evaluate_split,
    median_windows,
    predict_scores,
    validation_bce,
)

log = logging.getLogger(__name__)

CONSISTENCY_TYPES = ("mean_teacher", "ict")


def selection_criterion(phase: int) -> tuple[str, Literal["min", "max"]]:
    """(validation metric, "min" | "max") that picks the restored epoch; also logged as `valid/obj_metric`.

    As ATST-SED's `val/obj_metric` (spec atst_sed.md §6.5): phase 1 keeps the lowest mean of the mean teacher's
    weak and strong BCE, phase 2 the highest teacher PSDS1 + PSDS2.
    """
    return ("valid/teacher_bce_mean", "min") if phase == 1 else ("valid/teacher_psds_sum", "max")


def _build(
    cfg: AtstStage1Config | AtstStage2Config, encoder_checkpoint: Path | None, init_checkpoint: Path | None,
    n_classes: int,
) -> tuple[SEDModel, str, dict[str, Any] | None]:
    """(model, its builder name, phase 1's payload in phase 2): phase 1 builds from `cfg`, phase 2 from the file."""
    if isinstance(cfg, AtstStage1Config):
        kwargs: dict[str, Any] = {"n_classes": n_classes, **cfg.crnn_kwargs}
        if cfg.model != "sed_crnn":
            kwargs.update(
                encoder_preset=cfg.encoder_preset,
                encoder_kwargs=dict(cfg.encoder_kwargs),
                encoder_checkpoint=encoder_checkpoint,
            )
        return as_sed_model(build_model(cfg.model, **kwargs), f"model '{cfg.model}'"), cfg.model, None
    assert init_checkpoint is not None  # checked by train_atst_sed
    payload = load_checkpoint(init_checkpoint)
    model = as_sed_model(build_model(payload["builder"], **payload["builder_kwargs"]), f"{init_checkpoint}'s model")
    load_state_dict_strict(model, payload["model"], source=str(init_checkpoint))
    return model, payload["builder"], payload


def learning_rates(cfg: SedTrainingConfig) -> LearningRates:
    """The phase's parameter-group learning rates (`param_groups`)."""
    return LearningRates(cnn=cfg.lr_cnn, rnn=cfg.lr_rnn, encoder=cfg.lr_encoder, encoder_scale=cfg.encoder_lr_scale)


def step_settings(cfg: SedTrainingConfig) -> StepSettings:
    """The augmentation and loss values `SEDStep` reads, taken from the phase's section."""
    return StepSettings(
        consistency=cfg.consistency, cache_features=cfg.cache_features,
        frame_shift_max_frames=cfg.frame_shift_max_frames, mixup_prob=cfg.mixup_prob, mixup_alpha=cfg.mixup_alpha,
        mixup_encoder_input=cfg.mixup_encoder_input, freq_warp_prob=cfg.freq_warp_prob,
        mask_time_frames=cfg.mask_time_frames, mask_freq_bins=cfg.mask_freq_bins, const_max=cfg.const_max,
        weak_loss_weight=cfg.weak_loss_weight,
    )


def _datasets(cfg: SedTrainingConfig, clips_dir: Path, n_frames: int, frame_rate: float,
              sample_rate: int) -> list[SEDClipDataset]:
    # in-process loading (num_workers 0) keeps the resampled audio in memory across epochs
    return [
        SEDClipDataset(
            clips_dir / f"{split}.h5", duration_s=cfg.clip_duration_s, n_frames=n_frames, frame_rate_hz=frame_rate,
            sample_rate=sample_rate, cache=cfg.num_workers == 0,
        )
        for split in cfg.train_splits
    ]


def output_frames(model: SEDModel, duration_s: float) -> int:
    """Output frames T' of `model` for a clip of `duration_s`; the training targets are encoded on this grid at
    `model.frame_rate_hz` (so T' / frame_rate_hz must span the clip)."""
    with torch.no_grad():
        strong, _ = model.eval()(torch.zeros(1, int(round(duration_s * model.sample_rate))))
    n_frames = int(strong.shape[-1])
    span = n_frames / float(model.frame_rate_hz)
    if abs(span - duration_s) > 2.0 / float(model.frame_rate_hz):
        raise ValueError(
            f"{n_frames} output frames at {model.frame_rate_hz} Hz span {span:.3f} s, not the {duration_s} s clip: "
            "frame targets would not line up with the model output"
        )
    return n_frames


def init_head_bias(model: SEDModel, h5_path: Path, n_frames: int, frame_rate_hz: float) -> None:
    """Set the strong head's bias to logit(p_c), p_c = fraction of active frames of class c in a strong pack
    (clamped to [1e-3, 0.5]). Starting at the prior instead of p = 0.5 skips the first few hundred steps in
    which a fresh model only learns that events are rare; with the demo's ~100 steps that is most of the run."""
    reader = ClipReader(h5_path)
    n_classes = len(reader.class_names)
    active = np.zeros(n_classes)
    for i in range(len(reader)):
        targets = encode_events(reader.events(i), n_classes=n_classes, n_frames=n_frames, frame_rate_hz=frame_rate_hz)
        active += targets.sum(axis=1)
    prior = np.clip(active / max(1, len(reader) * n_frames), 1e-3, 0.5)
    with torch.no_grad():
        model.dense.bias.copy_(torch.as_tensor(np.log(prior / (1.0 - prior)), dtype=model.dense.bias.dtype))


def train_atst_sed(
    cfg: AtstStage1Config | AtstStage2Config,
    *,
    phase: int,
    clips_dir: Path,
    encoder_checkpoint: Path | None,
    init_checkpoint: Path | None,
    checkpoint: Path,
    tracker: Any = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> TaskResult:
    """Train one ATST-SED phase; returns valid/test metrics of student and mean teacher (see module doc)."""
    if phase not in (1, 2):
        raise ValueError(f"phase must be 1 or 2, got {phase}")
    if isinstance(cfg, AtstStage1Config) != (phase == 1):
        raise TypeError(f"phase {phase} takes {'AtstStage1Config' if phase == 1 else 'AtstStage2Config'}, "
                        f"got {type(cfg).__name__}")
    if phase == 2 and init_checkpoint is None:
        raise ValueError("phase 2 starts from phase 1's checkpoint: pass init_checkpoint")
    if phase == 2 and encoder_checkpoint is not None:
        raise ValueError(f"phase 2 takes its encoder from phase 1's checkpoint {init_checkpoint}; "
                         f"encoder_checkpoint {encoder_checkpoint} would be ignored: drop it")
    if cfg.consistency not in CONSISTENCY_TYPES:
        raise ValueError(f"consistency must be one of {CONSISTENCY_TYPES}, got {cfg.consistency!r} (params.yaml)")
    torch.manual_seed(cfg.seed)
    clips_dir, checkpoint = Path(clips_dir), Path(checkpoint)
    class_names = list(ClipReader(clips_dir / f"{cfg.train_splits[0]}.h5").class_names)
    model, builder, init_payload = _build(cfg, encoder_checkpoint, init_checkpoint, len(class_names))
    if model.encoder is not None:
        model.freeze_encoder(phase == 1)
        augments_encoder = cfg.mixup_encoder_input or cfg.freq_warp_prob > 0
        if augments_encoder and not isinstance(model.encoder, AugmentableFrameEncoder):
            raise ValueError(
                f"{type(model.encoder).__name__} has no linear_input/input_from_linear/frames_from_input: set "
                "mixup_encoder_input: false and freq_warp_prob: 0 in params.yaml, or add those methods"
            )
    n_frames = output_frames(model, cfg.clip_duration_s)
    if isinstance(cfg, AtstStage1Config) and cfg.head_prior_init:
        init_head_bias(model, clips_dir / f"{cfg.train_splits[0]}.h5", n_frames, float(model.frame_rate_hz))
    device = resolve_device(cfg.device)
    teacher = EMA(model, decay=cfg.ema_decay, copy_buffers=False)  # parameters only (spec §4.4, §6.3)
    if init_payload is not None and "mean_teacher" in init_payload:
        load_state_dict_strict(teacher.module, init_payload["mean_teacher"], source=f"{init_checkpoint} (mean_teacher)")
    model.to(device), teacher.to(device)
    distributed.init_distributed()  # under torchrun: each rank draws its share of the mixed batches
    loader = make_mixed_loader(
        _datasets(cfg, clips_dir, n_frames, model.frame_rate_hz, int(model.sample_rate)),
        cfg.batch_sizes,
        seed=cfg.seed,
        num_workers=cfg.num_workers,
        rank=distributed.rank(),
        world_size=distributed.world_size(),
    )
    steps_per_epoch = len(loader)
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    rampup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    optimizer = torch.optim.Adam(param_groups(model, learning_rates(cfg), phase), betas=(0.9, 0.999), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s + 1, rampup_steps=rampup_steps, total_steps=total_steps, cos_down=cfg.cos_down)
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    step_fn = SEDStep(step_settings(cfg), phase, teacher, generator, rampup_steps)
    windows = median_windows(cfg.median_window, len(class_names))

    def on_step(step: int) -> None:
        step_fn.step = step
        decay = min(1.0 - 1.0 / (step + 1), cfg.ema_decay) if cfg.ema_warm_start else cfg.ema_decay
        teacher.update(model, decay=decay)

    selected, mode = selection_criterion(phase)
    splits = {
        split: eval_split(clips_dir / f"{split}.h5", duration_s=cfg.clip_duration_s, sample_rate=int(model.sample_rate))
        for split in ("valid", "test")
    }
    run = PhaseRun(cfg, phase, model, teacher, builder, class_names, splits, windows, checkpoint.parent,
                   steps_per_epoch)
    task = TrainingTask(
        model, loader, step_fn, optimizer, scheduler,
        settings=FitSettings(epochs=cfg.epochs, device=device, seed=cfg.seed, desc=f"ATST-SED phase {phase}",
                             progress=cfg.progress),
        finish=run.finish, validate=run.validate, snapshot=run.snapshot,
        # ties (e.g. PSDS 0 early in a short run) go to the later, longer-trained epoch
        selection=Selection(selected, mode, ties_win=True),
        on_optimizer_step=on_step, state={"mean_teacher": teacher, "step": step_fn},
    )
    key = resume_key(
        {**dataclasses.asdict(cfg), "phase": phase},
        packs={split: ClipReader(clips_dir / f"{split}.h5").content_hash for split in (*cfg.train_splits, "valid")},
        encoder=input_digest(encoder_checkpoint),
        init=input_digest(init_checkpoint),
    )
    return run_task(task, checkpoint=checkpoint, key=key, tracker=tracker, on_epoch_end=on_epoch_end)


@dataclass
class PhaseRun:
    """What the runner's callbacks of one ATST-SED phase share: the student, its mean teacher, the evaluation
    splits and the post-processing. `validate` scores the valid split (on `val_every` epochs and the last),
    `snapshot` keeps both models' weights of a selected epoch, `finish` restores them, scores valid + test and
    returns the checkpoint payload; the test PSD-ROC curves go to `out_dir/psd_roc.{csv,png}`."""

    cfg: AtstStage1Config | AtstStage2Config
    phase: int
    model: SEDModel
    teacher: EMA
    builder: str
    class_names: list[str]
    splits: dict[str, SEDClipDataset]
    windows: list[int]
    out_dir: Path
    steps_per_epoch: int

    def validate(self, net: nn.Module, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        if epoch + 1 != cfg.epochs and (epoch + 1) % cfg.val_every:
            return {}
        models = {"student": net, "teacher": self.teacher.module}
        valid = self.splits["valid"]
        strong, weak = predict_scores(models, valid, batch_size=cfg.eval_batch_size)
        results = evaluate_split(models, valid, self.windows, clip_duration_s=cfg.clip_duration_s,
                                 batch_size=cfg.eval_batch_size, operating_points=False, scores=strong)
        metrics = {f"valid/{name}_{k}": v for name, r in results.items() for k, v in r.metrics.items()}
        rate = float(self.model.frame_rate_hz)
        losses = validation_bce(strong["teacher"], weak["teacher"], valid, frame_rate_hz=rate)
        metrics["valid/teacher_strong_bce"] = losses["strong_bce"]
        metrics["valid/teacher_weak_bce"] = losses["weak_bce"]
        metrics["valid/teacher_bce_mean"] = (losses["strong_bce"] + losses["weak_bce"]) / 2
        metrics["valid/teacher_psds_sum"] = metrics["valid/teacher_psds1"] + metrics["valid/teacher_psds2"]
        metrics["valid/obj_metric"] = metrics[selection_criterion(self.phase)[0]]
        return metrics

    def snapshot(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        valid = {k: v for k, v in metrics.items() if k != "valid/obj_metric"}
        return {"student": self.model.state_dict(), "teacher": self.teacher.module.state_dict(), "valid": valid}

    def finish(self, outcome: Outcome) -> tuple[dict[str, float], dict[str, Any]]:
        best, model, cfg = outcome.best, self.model, self.cfg
        assert best is not None
        if best.payload is not None:
            model.load_state_dict(best.payload["student"])
            self.teacher.module.load_state_dict(best.payload["teacher"])
        known = best.payload["valid"] if best.payload is not None else {}
        metrics = self._final_metrics(known)
        metrics.update({"train/steps_per_epoch": float(self.steps_per_epoch),
                        "train/best_epoch": float(best.best_epoch)})
        return metrics, {
            "builder": self.builder,
            "builder_kwargs": {**model.builder_kwargs, "freeze_encoder": False},
            "model": model.state_dict(),
            "mean_teacher": self.teacher.module.state_dict(),
            "class_names": self.class_names,
            "sample_rate": int(model.sample_rate),
            "config": {**dataclasses.asdict(cfg), "phase": self.phase},
            "metrics": metrics,
            "postprocessing": {
                "median_windows": self.windows,
                "frame_rate_hz": float(model.frame_rate_hz),
                "clip_duration_s": cfg.clip_duration_s,
            },
        }

    def _final_metrics(self, known: Mapping[str, float]) -> dict[str, float]:
        """valid and test metrics of both models (valid ones taken from `known` when it already holds them for the
        restored epoch)."""
        models = {"student": self.model, "teacher": self.teacher.module}
        metrics: dict[str, float] = dict(known)
        rocs = {}
        for split in ("valid", "test"):
            if split == "valid" and known:
                continue
            ops = self.cfg.operating_point_psds and split == "test"
            results = evaluate_split(models, self.splits[split], self.windows, clip_duration_s=self.cfg.clip_duration_s,
                                     batch_size=self.cfg.eval_batch_size, operating_points=ops)
            for name, result in results.items():
                metrics.update({f"{split}/{name}_{k}": v for k, v in result.metrics.items()})
                if split == "test":
                    rocs.update({f"{name}_{k}": roc for k, roc in result.rocs.items()})
        write_roc_csv(self.out_dir / "psd_roc.csv", rocs)
        plot_roc(self.out_dir / "psd_roc.png", rocs, title="test PSD-ROC")
        return metrics
