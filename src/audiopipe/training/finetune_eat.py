"""Task `finetune_eat`: fine-tune an EAT tagger (CLS head, BCE) on the labelled packed clips (spec §4).

Initialisation (`cfg.init`): `pretrained` = the student encoder of our `pretrain_eat` checkpoint
(`pretrained`, its preset is taken from the file), `official` = an official fairseq/HF EAT checkpoint at
`cfg.official_checkpoint` (encoder only, preset from `cfg.preset`), `random` = fresh init of `cfg.preset`
(the control for "does pre-training help").

Training-only augmentation, in EAT's order (§4.2): waveform roll + Beta magnitude (`roll_mag`), optional
random gain, fbank, batch mixup of fbank and targets (reversed-batch pairing), one frequency and one time
mask per example. AdamW with layer-wise LR decay, warm-up + cosine, BCE normalised by the positives.

After each epoch: `valid/mAP` (macro AP over classes with positives), `valid/roc_auc`, `valid/loss`. The
best epoch by `valid/mAP` is written to `checkpoint` (final-model payload, builder `eat_tagger`). The
metrics also hold `valid/mAP_prior`, the class-prior baseline (every clip scored with the training label
frequencies), which a useful tagger must beat.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from audiopipe.audio.augment import (
    mixup,
    random_gain,
    random_scale,
    roll_scale_log_spectrogram,
    spec_mask,
    time_roll,
)
from audiopipe.config import FinetuneEatConfig, to_dict
from audiopipe.data.datasets import ClipDataset
from audiopipe.metrics.tagging import class_prior, tagging_metrics
from audiopipe.models import build_model
from audiopipe.models.eat.frontend import EATFrontEnd
from audiopipe.models.eat.tagger import EATTagger, param_groups_layer_decay
from audiopipe.storage import load_checkpoint, load_state_dict_strict
from audiopipe.training.inference import predict_logits
from audiopipe.training.loaders import make_loader
from audiopipe.training.loop import FitSettings
from audiopipe.training.pretrain import open_splits
from audiopipe.training.runner import (
    Outcome,
    Selection,
    TaskResult,
    TrainingTask,
    input_digest,
    resume_key,
    run_task,
)
from audiopipe.training.schedulers import fairseq_cosine

log = logging.getLogger(__name__)

INITS = ("pretrained", "official", "random")


Key = tuple[str, str]  # (split, clip id)


class FbankCache:
    """Log-mel fbank of each training clip, computed once (params: `finetune_eat.cache_features`).

    The front end has no parameters and the clips do not change between epochs; only `roll_mag`, the gain, mixup
    and the masks do, and those are applied to the cached fbank in the log domain (`roll_scale_log_spectrogram`).
    Entries are the un-normalised, un-padded fbank `(T_f, 128)` in float16 (10-s clip: 998 x 128 x 2 B = 255 kB;
    the demo's 2150 clips ~550 MB), keyed by (split, clip id), in one block of `capacity` rows allocated on first
    use (one block instead of a tensor per clip: thousands of 255-kB tensors fragment the heap to several times
    their size). Off for the published recipe (AudioSet-2M: ~500 GB).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rows: dict[Key, int] = {}
        self.block: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @torch.no_grad()
    def lookup(self, frontend: EATFrontEnd, audio: torch.Tensor, keys: list[Key]) -> torch.Tensor:
        """Clean clips `(B, T)` and their keys -> their log fbanks `(B, T_f, 128)` (float32)."""
        missing = [i for i, key in enumerate(keys) if key not in self.rows]
        if missing:
            with torch.autocast(audio.device.type, enabled=False):
                fresh = frontend.fbank(audio[missing].float())
            if self.block is None:
                self.block = torch.empty((self.capacity, *fresh.shape[1:]), dtype=torch.float16, device=fresh.device)
            if len(self.rows) + len(missing) > self.capacity:
                raise RuntimeError(f"fbank cache: more than {self.capacity} distinct clips (keys {keys[:2]} ...)")
            for i, fbank in zip(missing, fresh):
                self.rows[keys[i]] = row = len(self.rows)
                self.block[row] = fbank.to(torch.float16)
        assert self.block is not None
        index = torch.tensor([self.rows[key] for key in keys], device=self.block.device)
        return self.block.index_select(0, index).float()


class AugmentedTagger(nn.Module):
    """Training wrapper: `(audio (B, T), labels (B, C)[, keys]) -> (logits (B, C), mixed labels (B, C))`.

    Augments only in training mode; in eval mode it is the plain tagger. Wrapping (instead of augmenting
    in the step function) keeps the whole forward inside one module, which DDP needs. With `cache` and the
    clips' `keys`, the fbank comes from the cache and `roll_mag` / the gain act on it in the log domain.
    """

    def __init__(self, tagger: EATTagger, *, mixup_alpha: float, mixup_prob: float, mask_ratio: float,
                 roll_mag: bool, gain_db: float, cache: FbankCache | None = None) -> None:
        super().__init__()
        self.tagger = tagger
        self.mixup_alpha, self.mixup_prob, self.mask_ratio = mixup_alpha, mixup_prob, mask_ratio
        self.roll_mag, self.gain_db = roll_mag, gain_db
        self.cache = cache

    def forward(self, audio: torch.Tensor, labels: torch.Tensor,
                keys: list[Key] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return self.tagger(audio), labels
        frontend = self.tagger.frontend
        if self.cache is not None and keys is not None:
            fbank = self.cache.lookup(frontend, audio, keys)  # (B, T_f, 128) log power
            if self.roll_mag or self.gain_db > 0:
                fbank = roll_scale_log_spectrogram(fbank, valid_frames=fbank.shape[1], per_log_unit=1.0, time_axis=1,
                                                   roll_mag=self.roll_mag, max_gain_db=self.gain_db)
            spec = frontend.normalize_fbank(fbank)
        else:
            if self.roll_mag:
                audio = random_scale(time_roll(audio))
            if self.gain_db > 0:
                audio = random_gain(audio, max_db=self.gain_db)
            with torch.autocast(audio.device.type, enabled=False):
                spec = frontend(audio.float())  # (B, 1, T_f, 128)
        spec, labels = mixup(spec, labels, alpha=self.mixup_alpha, prob=self.mixup_prob)
        if self.mask_ratio > 0:
            spec = spec_mask(spec, freq_width=spec.shape[-1] * self.mask_ratio,
                             time_width=spec.shape[-2] * self.mask_ratio, freq_axis=-1, time_axis=-2)
        return self.tagger.forward_spectrogram(spec), labels


def bce_loss(logits: torch.Tensor, targets: torch.Tensor, normaliser: str) -> torch.Tensor:
    """BCE-with-logits summed and divided by the positive labels (EAT AudioSet) or averaged ("mean")."""
    if normaliser == "mean":
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
    if normaliser == "positives":
        total = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="sum")
        return total / targets.float().sum().clamp(min=1.0)
    raise ValueError(f"bce_normaliser must be 'positives' or 'mean', got {normaliser!r}")


def _tagger_kwargs(cfg: FinetuneEatConfig, preset: str, n_classes: int, sample_rate: int) -> dict[str, Any]:
    return {"size": preset, "n_classes": n_classes, "sample_rate": sample_rate,
            "target_frames": cfg.target_frames, "drop_path_rate": cfg.drop_path, "pooling": cfg.pooling}


def _build_tagger(kwargs: dict[str, Any]) -> EATTagger:
    tagger = build_model("eat_tagger", **kwargs)
    assert isinstance(tagger, EATTagger)
    return tagger


def build_tagger(cfg: FinetuneEatConfig, pretrained: Path | None, n_classes: int,
                 sample_rate: int) -> tuple[EATTagger, dict[str, Any]]:
    """The tagger initialised as `cfg.init` says, and the kwargs that rebuild it (`builder_kwargs`)."""
    if cfg.init not in INITS:
        raise ValueError(f"finetune_eat.init must be one of {INITS}, got {cfg.init!r}")
    if cfg.init == "pretrained":
        if pretrained is None:
            raise ValueError("finetune_eat.init is 'pretrained' but no pre-trained checkpoint was given")
        payload = load_checkpoint(pretrained)
        kwargs = _tagger_kwargs(cfg, payload["builder"], n_classes, sample_rate)
        tagger = _build_tagger(kwargs)
        load_state_dict_strict(tagger.encoder, payload["model"], source=str(pretrained))
        return tagger, kwargs
    if cfg.init == "official":
        if not cfg.official_checkpoint:
            raise ValueError("finetune_eat.init is 'official' but official_checkpoint is null: set it to the path "
                             "of the EAT checkpoint (fairseq .pt or Hugging Face .bin/.safetensors)")
        from audiopipe.models.eat.checkpoint import (
            convert_state_dict,
            encoder_preset_of,
            load_official,
            read_checkpoint,
        )

        raw = read_checkpoint(cfg.official_checkpoint)
        state = convert_state_dict(raw, cfg.official_checkpoint)
        preset = encoder_preset_of(state, cfg.official_checkpoint)  # the file decides the size, not `preset`
        if preset != cfg.preset:
            log.info("finetune_eat: %s holds an %s encoder; using that preset (finetune_eat.preset %s is for "
                     "init: random)", cfg.official_checkpoint, preset, cfg.preset)
        kwargs = _tagger_kwargs(cfg, preset, n_classes, sample_rate)
        tagger = _build_tagger(kwargs)
        load_official(tagger.encoder, raw)  # encoder only: our class list differs
        return tagger, kwargs
    kwargs = _tagger_kwargs(cfg, cfg.preset, n_classes, sample_rate)
    return _build_tagger(kwargs), kwargs


def prior_baseline(train_targets: np.ndarray, valid_targets: np.ndarray) -> dict[str, float]:
    """Tagging metrics of the class-prior baseline: every clip scored with the training label frequencies."""
    return tagging_metrics(valid_targets, np.tile(class_prior(train_targets), (len(valid_targets), 1)))


class _SplitItems(Dataset):
    """A split's `ClipDataset` whose items also name the split (`split`: the pack's file stem), for cache keys."""

    def __init__(self, dataset: ClipDataset) -> None:
        self.dataset, self.split = dataset, Path(dataset.reader.path).stem

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.dataset[index], "split": self.split}


def _all_targets(datasets: list[ClipDataset]) -> np.ndarray:
    return np.concatenate([ds.reader.all_targets for ds in datasets])


def finetune_eat(
    cfg: FinetuneEatConfig,
    *,
    clips_dir: Path,
    pretrained: Path | None,
    checkpoint: Path,
    tracker: Any = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> TaskResult:
    """Fine-tune, keep the best epoch by `valid/mAP`, return its metrics plus the prior baseline."""
    torch.manual_seed(cfg.seed)
    clips_dir = Path(clips_dir)
    train_sets = open_splits(clips_dir, cfg.train_splits, cfg.clip_seconds)
    valid_set = open_splits(clips_dir, [cfg.valid_split], cfg.clip_seconds)[0]
    class_names, sample_rate = train_sets[0].class_names, train_sets[0].sample_rate
    if valid_set.class_names != class_names or valid_set.sample_rate != sample_rate:
        raise ValueError(f"{valid_set.reader.path}: class list or sample rate differs from the training splits")
    train: ConcatDataset[dict[str, Any]] = ConcatDataset([_SplitItems(ds) for ds in train_sets])
    drop_last = len(train) >= cfg.batch_size
    loader = make_loader(train, cfg.batch_size, shuffle=True, seed=cfg.seed, num_workers=cfg.num_workers,
                         drop_last=drop_last)
    valid_loader = DataLoader(valid_set, batch_size=cfg.eval_batch_size, shuffle=False, num_workers=cfg.num_workers)

    tagger, builder_kwargs = build_tagger(cfg, Path(pretrained) if pretrained else None, len(class_names), sample_rate)
    model = AugmentedTagger(tagger, mixup_alpha=cfg.mixup_alpha, mixup_prob=cfg.mixup_prob, mask_ratio=cfg.mask_ratio,
                            roll_mag=cfg.roll_mag, gain_db=cfg.gain_db,
                            cache=FbankCache(len(train)) if cfg.cache_features else None)
    groups = param_groups_layer_decay(model, lr=cfg.lr, layer_decay=cfg.layer_decay, weight_decay=cfg.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=1e-8, weight_decay=cfg.weight_decay)
    steps = len(loader)  # optimizer steps per epoch: this rank's share under DDP
    total = max(1, cfg.epochs * steps)
    scheduler = fairseq_cosine(optimizer, warmup_steps=min(total, round(cfg.warmup_fraction * total)),
                               total_steps=total, min_lr=cfg.lr * cfg.min_lr_ratio)
    prior = prior_baseline(_all_targets(train_sets), _all_targets([valid_set]))
    log.info("finetune_eat: init=%s, %d train / %d valid clips, %d steps, prior-baseline mAP %.4f",
             cfg.init, len(train), len(valid_set), total, prior["mAP"])

    def step_fn(m: nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        logits, targets = m(batch["audio"], batch["labels"], list(zip(batch["split"], batch["clip_id"])))
        return {"loss": bce_loss(logits, targets, cfg.bce_normaliser)}

    def validate(m: nn.Module, epoch: int) -> dict[str, float]:
        device = next(m.parameters()).device
        logits, targets = predict_logits(tagger, valid_loader, device)
        scores = tagging_metrics(targets, logits)
        return {"valid/mAP": scores["mAP"], "valid/roc_auc": scores["roc_auc"], "valid/loss": float(
            F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(targets)))}

    def snapshot(epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        return _payload(tagger, builder_kwargs, class_names, sample_rate, cfg,
                        {**metrics, "valid/mAP_prior": prior["mAP"], "best_epoch": float(epoch)})

    def finish(outcome: Outcome) -> tuple[dict[str, float], dict[str, Any]]:
        best, history = outcome.best, outcome.history
        assert best is not None
        if best.payload is None:  # no epoch validated (epochs: 0): keep the initial weights rather than nothing
            best.keep(cfg.epochs - 1, _payload(tagger, builder_kwargs, class_names, sample_rate, cfg,
                                               {"valid/mAP_prior": prior["mAP"]}))
        assert best.payload is not None
        best_metrics = best.payload["metrics"]
        last = history.epochs[-1] if history.epochs else {}
        metrics = {
            "valid/mAP": best.best if best.best is not None else math.nan,
            "valid/roc_auc": best_metrics.get("valid/roc_auc", math.nan),
            "valid/mAP_last": float(last.get("valid/mAP", math.nan)),
            "valid/mAP_prior": prior["mAP"],
            "valid/roc_auc_prior": prior["roc_auc"],
            "best_epoch": float(best.best_epoch),
            "train/loss_last": history.steps[-1]["train/loss"] if history.steps else math.nan,
            "train/steps": float(len(history.steps)),
        }
        return metrics, best.payload

    task = TrainingTask(
        model, loader, step_fn, optimizer, scheduler,
        settings=FitSettings(epochs=cfg.epochs, device=cfg.device, amp=cfg.amp, seed=cfg.seed, desc="finetune_eat"),
        finish=finish, validate=validate, selection=Selection("valid/mAP", "max"), snapshot=snapshot,
    )
    key = resume_key(to_dict(cfg), packs=[d.reader.content_hash for d in [*train_sets, valid_set]],
                     init=input_digest(pretrained), official=input_digest(cfg.official_checkpoint))
    return run_task(task, checkpoint=checkpoint, key=key, tracker=tracker, on_epoch_end=on_epoch_end)


def _payload(tagger: EATTagger, builder_kwargs: dict[str, Any], class_names: list[str], sample_rate: int,
             cfg: FinetuneEatConfig, metrics: dict[str, float]) -> dict[str, Any]:
    return {
        "builder": "eat_tagger",
        "builder_kwargs": builder_kwargs,
        "model": {k: v.detach().cpu() for k, v in tagger.state_dict().items()},
        "class_names": list(class_names),
        "sample_rate": sample_rate,
        "config": to_dict(cfg),
        "metrics": metrics,
    }
