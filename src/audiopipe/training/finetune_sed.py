"""ATST-SED two-phase semi-supervised training (spec atst_sed.md §5-§8): one code path, `phase=1|2`.

Reads `<clips_dir>/{train,weak,unlabelled,valid,test}.h5` (the splits named in `cfg.train_splits`, in the
order of `cfg.batch_sizes`); writes the final checkpoint (best epoch by teacher PSDS1 + PSDS2 on valid),
`psd_roc.csv` / `psd_roc.png` (test PSD-ROC of student and mean teacher) next to it.

Phase 1: build the fused model (`cfg.model`, encoder weights from `encoder_checkpoint`), encoder frozen,
CRNN + heads trained. Phase 2: rebuild the phase-1 model from `init_checkpoint` (student and mean teacher),
encoder unfrozen with layer-wise decayed LRs. Both: EMA mean teacher with the exponential consistency ramp-up,
strong BCE on strong clips, weak BCE on strong + weak clips, mixup per subset group in the linear mel domain,
frame shift, time/frequency masking of the student's SED mel, LR warm-up (then cosine to 10 % if
`cfg.cos_down`). Stage-2 specifics are switches (spec §5.5, §6.2): `consistency: ict` (teacher on the clean
input, targets mixed like the student's input), `mixup_encoder_input` (mix the encoder's power mel with the
same draw) and `freq_warp_prob` (frequency warping of the encoder input).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from audiopipe.audio.augment import GroupMix, freq_warp, group_mixup_params, mix_groups, spec_mask
from audiopipe.config import AtstSedConfig
from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.labels import encode_events
from audiopipe.data.sed_batches import SEDClipDataset, make_mixed_loader, subset_masks
from audiopipe.losses.sed import consistency_mse, consistency_weight, ict_consistency, strong_bce, weak_bce
from audiopipe.models import build_model
from audiopipe.models.sed import SEDModel
from audiopipe.models.sed_encoders import AugmentableFrameEncoder
from audiopipe.training.checkpoint import load_checkpoint, load_state_dict_strict, save_checkpoint
from audiopipe.training.distributed import resolve_device
from audiopipe.training.ema import EMA
from audiopipe.training.loop import BestTracker, TaskResult, fit
from audiopipe.training.sed_feature_cache import ClipFeatureCache
from audiopipe.training.sed_optim import lr_factor, param_groups
from audiopipe.training.sed_validation import eval_split, evaluate_split, median_windows

log = logging.getLogger(__name__)

CONSISTENCY_TYPES = ("mean_teacher", "ict")


def _build(
    cfg: AtstSedConfig, phase: int, encoder_checkpoint: Path | None, init_checkpoint: Path | None, n_classes: int
) -> tuple[SEDModel, dict[str, Any] | None]:
    if phase == 1:
        kwargs: dict[str, Any] = {"n_classes": n_classes, **cfg.crnn_kwargs}
        if cfg.model != "sed_crnn":
            kwargs.update(
                encoder_preset=cfg.encoder_preset,
                encoder_kwargs=dict(cfg.encoder_kwargs),
                encoder_checkpoint=encoder_checkpoint,
            )
        return build_model(cfg.model, **kwargs), None  # type: ignore[return-value]
    assert init_checkpoint is not None  # checked by train_atst_sed
    payload = load_checkpoint(init_checkpoint)
    model = build_model(payload["builder"], **payload["builder_kwargs"])
    load_state_dict_strict(model, payload["model"], source=str(init_checkpoint))
    return model, payload  # type: ignore[return-value]


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


def _warp_groups(
    features: torch.Tensor, subset: torch.Tensor, encoder: AugmentableFrameEncoder, prob: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Frequency-warp the encoder input of each subset group with probability `prob` (one crop per group)."""
    if prob <= 0:
        return features
    out = features.clone()
    for kind in subset.unique().tolist():
        if torch.rand(1, generator=generator).item() >= prob:
            continue
        index = torch.nonzero(subset == kind).flatten().to(features.device)
        out[index] = freq_warp(
            features[index], freq_axis=encoder.freq_axis, time_axis=encoder.time_axis, generator=generator
        )
    return out


class _SEDStep:
    """step_fn for `fit`: augmentation, student/teacher forward passes and the semi-supervised loss.

    Student input: frame shift (waveform), mixup per subset group (linear SED magnitude mel; also the encoder's
    linear input when `cfg.mixup_encoder_input`), time/frequency masking of the SED mel, frequency warping of
    the encoder input (`cfg.freq_warp_prob`). Teacher input: the same mixed SED mel for `mean_teacher`
    consistency (stage 1); the clean one for `ict` (stage 2), with its own frequency-warp draw.
    """

    def __init__(
        self, cfg: AtstSedConfig, phase: int, teacher: EMA, generator: torch.Generator, rampup_steps: int
    ) -> None:
        self.cfg, self.phase, self.teacher, self.generator = cfg, phase, teacher, generator
        self.rampup_steps = rampup_steps
        self.step = 0  # optimizer steps taken (fit's on_optimizer_step keeps it current)
        self.cache = ClipFeatureCache() if cfg.cache_features else None
        # a frozen encoder on the clean clip (phase 1 without encoder augmentation) gives the same frames each epoch
        self.cache_frames = phase == 1 and not cfg.mixup_encoder_input and cfg.freq_warp_prob <= 0

    def _encoder_frames(
        self, raw: SEDModel, audio: torch.Tensor, subset: torch.Tensor, draws: list[GroupMix]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(student frames, teacher frames); the teacher's are None when it shares the student's frozen
        encoder on the same input (stage 1)."""
        cfg, encoder = self.cfg, raw.encoder
        if encoder is None:
            return None, None
        if not isinstance(encoder, AugmentableFrameEncoder):  # checked in train_atst_sed: no encoder augmentation
            frames = encoder.frame_features(audio)
            if self.phase == 1:
                return frames, None
            with torch.no_grad():  # stage 2: the teacher's own (EMA) encoder
                return frames, self.teacher.module.encoder.frame_features(audio)
        linear = encoder.linear_input(audio)
        student_linear = mix_groups(linear, draws) if cfg.mixup_encoder_input else linear
        student_in = _warp_groups(
            encoder.input_from_linear(student_linear), subset, encoder, cfg.freq_warp_prob, self.generator
        )
        frames = encoder.frames_from_input(student_in)
        if self.phase == 1:
            return frames, None
        teacher_linear = linear if cfg.consistency == "ict" else student_linear
        teacher_encoder = cast(AugmentableFrameEncoder, self.teacher.module.encoder)
        teacher_in = _warp_groups(
            encoder.input_from_linear(teacher_linear), subset, encoder, cfg.freq_warp_prob, self.generator
        )
        with torch.no_grad():
            return frames, teacher_encoder.frames_from_input(teacher_in)

    def __call__(self, model: nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        cfg, raw = self.cfg, cast(SEDModel, getattr(model, "module", model))
        samples_per_frame = int(round(raw.sample_rate / raw.frame_rate_hz))
        subset = batch["subset"]
        audio, strong, shifts = _frame_shift(
            batch["audio"], batch["strong"], cfg.frame_shift_max_frames, samples_per_frame, self.generator
        )
        draws = group_mixup_params(subset, alpha=cfg.mixup_alpha, prob=cfg.mixup_prob, generator=self.generator)
        strong, weak = mix_groups(strong, draws, clamp=(0.0, 1.0)), mix_groups(batch["weak"], draws, clamp=(0.0, 1.0))
        keys = list(zip(batch.get("split", []), batch.get("clip_id", [])))
        if self.cache is not None and len(keys) != len(subset):
            raise ValueError("cache_features needs the batch's 'split' and 'clip_id' (SEDClipDataset items)")
        if self.cache is not None:  # (B, F, T); the front end has no parameters
            sed_linear = self.cache.sed_magnitude(raw, batch["audio"], keys, shifts, samples_per_frame)
        else:
            sed_linear = raw.mel_spec.magnitude(audio)
        mixed_mel = raw.mel_spec.normalize(mix_groups(sed_linear, draws))
        student_mel = mixed_mel
        if cfg.mask_time_frames > 0 or cfg.mask_freq_bins > 0:
            student_mel = spec_mask(
                mixed_mel, freq_width=cfg.mask_freq_bins, time_width=cfg.mask_time_frames, generator=self.generator
            )
        if self.cache is not None and self.cache_frames and raw.encoder is not None:
            frames, t_frames = self.cache.encoder_frames(raw, batch["audio"], keys, shifts, strong.shape[-1]), None
        else:
            frames, t_frames = self._encoder_frames(raw, audio, subset, draws)
        s_strong, s_weak = raw.forward_features(student_mel, frames)
        ict = cfg.consistency == "ict" and bool(draws)
        with torch.no_grad():
            teacher = self.teacher.module.train()  # teacher BN/dropout in train mode (spec §4.4)
            teacher_mel = raw.mel_spec.normalize(sed_linear) if ict else mixed_mel
            t_frames = frames if t_frames is None else t_frames
            t_strong, t_weak = teacher.forward_features(teacher_mel, None if t_frames is None else t_frames.detach())
        masks = subset_masks(subset)
        loss_strong = strong_bce(s_strong, strong, masks["strong"])
        loss_weak = weak_bce(s_weak, weak, masks["weak"])
        weight = consistency_weight(self.step + 1, rampup_steps=self.rampup_steps, const_max=cfg.const_max)
        if ict:
            loss_con = ict_consistency(s_strong, s_weak, t_strong, t_weak, draws, weak_weight=cfg.weak_loss_weight)
        else:
            loss_con = consistency_mse(s_strong, s_weak, t_strong, t_weak, weak_weight=cfg.weak_loss_weight)
        loss = loss_strong + cfg.weak_loss_weight * loss_weak + weight * loss_con
        return {
            "loss": loss,
            "strong_bce": loss_strong.detach(),
            "weak_bce": loss_weak.detach(),
            "consistency": loss_con.detach(),
            "consistency_weight": torch.tensor(weight),
            "ict": torch.tensor(float(ict)),
        }


def _datasets(cfg: AtstSedConfig, clips_dir: Path, n_frames: int, frame_rate: float,
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
    cfg: AtstSedConfig,
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
    if phase == 2 and init_checkpoint is None:
        raise ValueError("phase 2 starts from phase 1's checkpoint: pass init_checkpoint")
    if cfg.consistency not in CONSISTENCY_TYPES:
        raise ValueError(f"consistency must be one of {CONSISTENCY_TYPES}, got {cfg.consistency!r} (params.yaml)")
    torch.manual_seed(cfg.seed)
    clips_dir, checkpoint = Path(clips_dir), Path(checkpoint)
    class_names = list(ClipReader(clips_dir / f"{cfg.train_splits[0]}.h5").class_names)
    model, init_payload = _build(cfg, phase, encoder_checkpoint, init_checkpoint, len(class_names))
    if model.encoder is not None:
        model.freeze_encoder(phase == 1)
        augments_encoder = cfg.mixup_encoder_input or cfg.freq_warp_prob > 0
        if augments_encoder and not isinstance(model.encoder, AugmentableFrameEncoder):
            raise ValueError(
                f"{type(model.encoder).__name__} has no linear_input/input_from_linear/frames_from_input: set "
                "mixup_encoder_input: false and freq_warp_prob: 0 in params.yaml, or add those methods"
            )
    n_frames = output_frames(model, cfg.clip_duration_s)
    if phase == 1 and cfg.head_prior_init:
        init_head_bias(model, clips_dir / f"{cfg.train_splits[0]}.h5", n_frames, float(model.frame_rate_hz))
    device = resolve_device(cfg.device)
    teacher = EMA(model, decay=cfg.ema_decay)
    if init_payload is not None and "mean_teacher" in init_payload:
        load_state_dict_strict(teacher.module, init_payload["mean_teacher"], source=f"{init_checkpoint} (mean_teacher)")
    model.to(device), teacher.to(device)
    loader = make_mixed_loader(
        _datasets(cfg, clips_dir, n_frames, model.frame_rate_hz, int(model.sample_rate)),
        cfg.batch_sizes,
        seed=cfg.seed,
        num_workers=cfg.num_workers,
    )
    steps_per_epoch = len(loader)
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    rampup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    optimizer = torch.optim.Adam(param_groups(model, cfg, phase), betas=(0.9, 0.999), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s + 1, rampup_steps=rampup_steps, total_steps=total_steps, cos_down=cfg.cos_down)
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    step_fn = _SEDStep(cfg, phase, teacher, generator, rampup_steps)
    windows = median_windows(cfg.median_window, len(class_names))

    def on_step(step: int) -> None:
        step_fn.step = step
        decay = min(1.0 - 1.0 / (step + 1), cfg.ema_decay) if cfg.ema_warm_start else cfg.ema_decay
        teacher.update(model, decay=decay)

    best = BestTracker("max")
    best_states: dict[str, Any] = {}
    splits = {
        split: eval_split(clips_dir / f"{split}.h5", duration_s=cfg.clip_duration_s, sample_rate=int(model.sample_rate))
        for split in ("valid", "test")
    }
    valid_of_epoch: dict[int, dict[str, float]] = {}

    def evaluate(net: nn.Module, epoch: int) -> dict[str, float]:
        last = epoch + 1 == cfg.epochs
        if not last and (epoch + 1) % cfg.val_every:
            return {}
        results = evaluate_split(
            {"student": net, "teacher": teacher.module}, splits["valid"], cfg, windows, operating_points=False
        )
        metrics = {f"valid/{name}_{k}": v for name, r in results.items() for k, v in r.metrics.items()}
        valid_of_epoch[epoch] = dict(metrics)
        metrics["valid/obj_metric"] = metrics["valid/teacher_psds1"] + metrics["valid/teacher_psds2"]
        # ties (e.g. PSDS 0 early in a short run) go to the later, longer-trained epoch
        if best.best is None or metrics["valid/obj_metric"] >= best.best:
            best.best, best.best_epoch = metrics["valid/obj_metric"], epoch
            best_states.update(
                student=copy.deepcopy(net.state_dict()), teacher=copy.deepcopy(teacher.module.state_dict())
            )
        return metrics

    def on_metrics(metrics: dict[str, float], step: int) -> None:
        if tracker is not None:
            tracker.log_metrics(metrics, step)

    history = fit(
        model,
        loader,
        step_fn,
        optimizer,
        scheduler,
        epochs=cfg.epochs,
        device=device,
        evaluate=evaluate,
        on_metrics=on_metrics,
        on_optimizer_step=on_step,
        on_epoch_end=on_epoch_end,
        extra_state={"mean_teacher": teacher, "best": best},
        seed=cfg.seed,
        desc=f"atst_stage{phase}",
        progress=cfg.progress,
    )
    if best_states:
        model.load_state_dict(best_states["student"])
        teacher.module.load_state_dict(best_states["teacher"])
    known = valid_of_epoch.get(best.best_epoch, {}) if best_states else {}
    metrics = _final_metrics(
        {"student": model, "teacher": teacher.module}, splits, cfg, windows, checkpoint.parent, known
    )
    metrics.update({"train/steps_per_epoch": float(steps_per_epoch), "train/best_epoch": float(best.best_epoch)})
    save_checkpoint(
        checkpoint,
        {
            "builder": cfg.model if init_payload is None else init_payload["builder"],
            "builder_kwargs": {**model.builder_kwargs, "freeze_encoder": False},
            "model": model.state_dict(),
            "mean_teacher": teacher.module.state_dict(),
            "class_names": class_names,
            "sample_rate": int(model.sample_rate),
            "config": {**dataclasses.asdict(cfg), "phase": phase},
            "metrics": metrics,
            "postprocessing": {
                "median_windows": windows,
                "frame_rate_hz": float(model.frame_rate_hz),
                "clip_duration_s": cfg.clip_duration_s,
            },
        },
    )
    if tracker is not None:
        tracker.log_metrics(metrics, history.steps[-1]["step"] if history.steps else 0)
    return TaskResult(metrics=metrics, checkpoint=checkpoint, history=history.steps + history.epochs)


def _final_metrics(
    models: Mapping[str, nn.Module],
    splits: Mapping[str, SEDClipDataset],
    cfg: AtstSedConfig,
    windows: list[int],
    out_dir: Path,
    known: Mapping[str, float],
) -> dict[str, float]:
    """valid and test metrics of both models (valid ones taken from `known` when it already holds them for
    the restored epoch); the test PSD-ROC curves go to `out_dir/psd_roc.{csv,png}`."""
    from audiopipe.metrics.sed import plot_roc, write_roc_csv

    metrics: dict[str, float] = dict(known)
    rocs = {}
    for split in ("valid", "test"):
        if split == "valid" and known:
            continue
        ops = cfg.operating_point_psds and split == "test"
        results = evaluate_split(models, splits[split], cfg, windows, operating_points=ops)
        for name, result in results.items():
            metrics.update({f"{split}/{name}_{k}": v for k, v in result.metrics.items()})
            if split == "test":
                rocs.update({f"{name}_{k}": roc for k, roc in result.rocs.items()})
    write_roc_csv(out_dir / "psd_roc.csv", rocs)
    plot_roc(out_dir / "psd_roc.png", rocs, title="test PSD-ROC")
    return metrics
