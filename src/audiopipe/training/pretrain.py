"""Task `pretrain_eat`: EAT self-supervised pre-training on packed clips (spec §3.6-3.7).

Reads the `<split>.h5` files of `clips_dir` named in `cfg.splits` (labels unused), crops/pads every clip
to `cfg.clip_seconds`, turns it into the EAT fbank on the training device and trains `EATPretrainer`
(student + EMA teacher + CNN decoder) with AdamW (decay on every parameter), linear warm-up + cosine,
gradient clipping and the annealed EMA decay, through the task runner (`training.runner`: resumable, DDP-ready).

Writes `checkpoint` (final-model payload of docs/architecture.md): builder `eat_<preset>` and the
*student* encoder weights (what fine-tuning starts from, spec §4.1), so `load_model(checkpoint)` rebuilds
an `EATEncoder`; the EMA teacher encoder is stored alongside under `ema_teacher`. `TaskResult.history`
holds the per-step loss curve (`train/loss`, `train/frame_loss`, `train/utterance_loss`, `train/lr`) and the
per-epoch mean loss (`train/epoch_loss`). There is no validation and no selection: the last epoch is the model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset

from audiopipe.config import PretrainEatConfig, to_dict
from audiopipe.data.datasets import ClipDataset
from audiopipe.models import build_model
from audiopipe.models.eat.frontend import EATFrontEnd
from audiopipe.models.eat.pretraining import EATPretrainer
from audiopipe.training.loaders import make_loader
from audiopipe.training.loop import FitSettings
from audiopipe.training.runner import Outcome, TaskResult, TrainingTask, resume_key, run_task
from audiopipe.training.schedulers import warmup_cosine

log = logging.getLogger(__name__)


def open_splits(clips_dir: Path, splits: Sequence[str], clip_seconds: float | None) -> list[ClipDataset]:
    """`ClipDataset`s of the named splits that exist in `clips_dir` (same sample rate required).

    Raises:
        FileNotFoundError: none of the splits is packed in `clips_dir`.
        ValueError: the splits disagree on sample rate or class list.
    """
    found = [clips_dir / f"{split}.h5" for split in splits if (clips_dir / f"{split}.h5").is_file()]
    if not found:
        raise FileNotFoundError(f"{clips_dir}: none of the splits {list(splits)} is packed (<split>.h5); "
                                "run the pack_hdf5 stage first")
    datasets = [ClipDataset(path, duration_s=clip_seconds) for path in found]
    for ds, path in zip(datasets[1:], found[1:]):
        if ds.sample_rate != datasets[0].sample_rate or ds.class_names != datasets[0].class_names:
            raise ValueError(f"{path}: sample rate or class list differs from {found[0]}; repack the clips")
    return datasets


def build_pretrainer(cfg: PretrainEatConfig) -> EATPretrainer:
    """Student, EMA teacher and decoder of `cfg.preset` (decoder size from the family's pre-training preset)."""
    model = build_model("eat_pretrainer", size=cfg.preset, clones=cfg.clones, mask_ratio=cfg.mask_ratio,
                        ema_decay_start=cfg.ema_decay_start, ema_decay_end=cfg.ema_decay_end,
                        ema_anneal_steps=cfg.ema_anneal_steps)
    assert isinstance(model, EATPretrainer)
    return model


class _SpectrogramStep:
    """`step_fn` for `fit`: waveform batch -> fbank on the device -> Utterance-Frame objective."""

    def __init__(self, frontend: EATFrontEnd) -> None:
        self.frontend = frontend

    def __call__(self, model: torch.nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        with torch.autocast(device.type, enabled=False):  # fbank in float32 whatever the autocast
            spectrogram = self.frontend(batch["audio"].float())
        return model(spectrogram)


class _EpochLosses:
    """Losses of the running epoch's optimizer steps; resumable (`TrainingTask.state`), so that a run resumed
    from a resume file written inside an epoch still averages that epoch over all of its steps."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self.values)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = list(state["values"])


def pretrain_eat(
    cfg: PretrainEatConfig,
    *,
    clips_dir: Path,
    checkpoint: Path,
    tracker: Any = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> TaskResult:
    """Pre-train an EAT encoder on every clip of `cfg.splits`; returns loss metrics and the per-step curve."""
    torch.manual_seed(cfg.seed)
    datasets = open_splits(Path(clips_dir), cfg.splits, cfg.clip_seconds)
    dataset: Dataset = ConcatDataset(datasets)
    n_clips = len(dataset)  # type: ignore[arg-type]
    drop_last = n_clips >= cfg.batch_size
    loader = make_loader(dataset, cfg.batch_size, shuffle=True, seed=cfg.seed, num_workers=cfg.num_workers,
                         drop_last=drop_last)
    sample_rate = datasets[0].sample_rate
    frontend = EATFrontEnd(input_sample_rate=sample_rate, target_frames=cfg.target_frames)
    model = build_pretrainer(cfg)
    params = [p for p in model.parameters() if p.requires_grad]  # excludes the EMA teacher
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=1e-8, weight_decay=cfg.weight_decay)
    total = max(1, cfg.epochs * len(loader))  # optimizer steps: this rank's share under DDP
    scheduler = warmup_cosine(optimizer, warmup_steps=min(total, round(cfg.warmup_fraction * total)),
                              total_steps=total)
    log.info("pretrain_eat: %d clips from %s, %s, %d optimizer steps", n_clips, [d.reader.path.name for d in datasets],
             cfg.preset, total)

    epoch_losses = _EpochLosses()

    def collect_loss(metrics: dict[str, float], step: int) -> None:
        if "train/loss" in metrics:
            epoch_losses.values.append(metrics["train/loss"])

    def epoch_loss(_: torch.nn.Module, epoch: int) -> dict[str, float]:
        losses = epoch_losses.values
        mean = sum(losses) / len(losses) if losses else math.nan
        losses.clear()
        return {"train/epoch_loss": mean}

    def finish(outcome: Outcome) -> tuple[dict[str, float], dict[str, Any]]:
        steps, epochs = outcome.history.steps, outcome.history.epochs
        losses = [row["train/loss"] for row in steps]
        metrics = {
            "train/loss_first": losses[0] if losses else math.nan,
            "train/loss_last": losses[-1] if losses else math.nan,
            "train/epoch_loss_first": epochs[0].get("train/epoch_loss", math.nan) if epochs else math.nan,
            "train/epoch_loss_last": epochs[-1].get("train/epoch_loss", math.nan) if epochs else math.nan,
            "train/steps": float(len(losses)),
            "train/clips": float(n_clips),
            "train/ema_decay_last": model.ema_decay(len(losses)),
        }
        return metrics, {
            "builder": cfg.preset,
            "builder_kwargs": {},
            "model": {k: v.cpu() for k, v in model.encoder.state_dict().items()},
            "ema_teacher": {k: v.cpu() for k, v in model.ema_teacher.module.state_dict().items()},
            "class_names": datasets[0].class_names,
            "sample_rate": sample_rate,
            "config": to_dict(cfg),
            "metrics": metrics,
        }

    task = TrainingTask(
        model, loader, _SpectrogramStep(frontend), optimizer, scheduler,
        settings=FitSettings(epochs=cfg.epochs, device=cfg.device, amp=cfg.amp, max_grad_norm=cfg.max_grad_norm,
                             checkpoint_every_steps=cfg.checkpoint_every_steps, seed=cfg.seed, desc="pretrain_eat"),
        finish=finish, validate=epoch_loss, on_train_metrics=collect_loss,
        on_optimizer_step=model.ema_update,  # teacher follows the student after every optimizer step (spec §3.1 step 6)
        state={"epoch_losses": epoch_losses},
    )
    key = resume_key(to_dict(cfg), packs=[d.reader.content_hash for d in datasets])
    return run_task(task, checkpoint=checkpoint, key=key, tracker=tracker, on_epoch_end=on_epoch_end)
