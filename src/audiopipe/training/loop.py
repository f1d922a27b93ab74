"""The one training loop: `fit(model, loader, step_fn, optimizer, ...)` shared by every training task.

What it owns: device placement, bf16/fp16 autocast on CUDA (+ GradScaler for fp16), gradient accumulation,
gradient clipping, NaN/inf loss detection, tqdm progress, per-step metric callbacks, per-epoch evaluation,
DDP (`torchrun`, gloo on CPU / NCCL on CUDA) and **exact resume**: a resume file written every N optimizer
steps and at each epoch end holds model, optimizer, scheduler, scaler, extra state, progress and RNG states,
so a killed run restarted with the same seed ends with the same weights as an unkilled one (on CPU).

What it does not own: losses and augmentation (the task's `step_fn`), model selection, the final checkpoint
and the tracking of a task's results (`audiopipe.training.runner`, which every training task goes through).

`fit(model, loader, step_fn, optimizer, scheduler, settings=FitSettings(...), hooks=Hooks(...),
resume=Resume(...))`: the fixed settings of the run, the task's callbacks, and where and under which key the
resume file lives (plus the task's other resumable objects).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from audiopipe.storage import load_checkpoint, save_checkpoint
from audiopipe.training import distributed

log = logging.getLogger(__name__)

StepFn = Callable[[nn.Module, dict[str, Any], torch.device], dict[str, torch.Tensor]]
RESUME_FORMAT = 1


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite (the message names the step and the clips of the batch)."""


@dataclass
class History:
    """Per-optimizer-step training metrics and per-epoch evaluation metrics."""

    steps: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class FitSettings:
    """The fixed settings of one `fit` call (`desc` labels the progress bar)."""

    epochs: int
    device: str | torch.device = "cpu"
    amp: str = "none"
    grad_accum_steps: int = 1
    max_grad_norm: float | None = None
    checkpoint_every_steps: int = 0
    seed: int = 0
    progress: bool = True
    desc: str = "train"


@dataclass
class Hooks:
    """A task's callbacks into `fit`; see `fit` for when each runs."""

    evaluate: Callable[[nn.Module, int], dict[str, float]] | None = None
    on_metrics: Callable[[dict[str, float], int], None] | None = None
    on_optimizer_step: Callable[[int], object] | None = None
    on_epoch_start: Callable[[int], None] | None = None
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None


@dataclass
class Resume:
    """Where the resume file lives, the run identity it must match (`runner.resume_key`), and the task's other
    resumable objects (each with `state_dict()` / `load_state_dict()`), saved and restored with the model."""

    path: Path
    key: str = ""
    extra_state: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # numpy's stub types get_state() as the dict of legacy=False; the default (legacy=True) is MT19937's tuple
        "numpy": _numpy_state_to_tensors(np.random.get_state()),  # type: ignore[arg-type]
        "python": _python_state_to_tensors(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state_to_tensors(state: tuple[Any, ...]) -> dict[str, Any]:
    # weights_only loading accepts tensors and plain containers, not numpy arrays
    return {"keys": torch.from_numpy(state[1].astype(np.int64)), "pos": int(state[2]),
            "has_gauss": int(state[3]), "gauss": float(state[4])}


def _python_state_to_tensors(state: tuple[Any, ...]) -> dict[str, Any]:
    return {"version": state[0], "internal": torch.tensor(state[1], dtype=torch.int64),
            "gauss": state[2] if state[2] is None else float(state[2])}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


def _autocast(device: torch.device, amp: str) -> Any:
    if amp not in ("none", "bf16", "fp16"):
        raise ValueError(f"amp must be 'none', 'bf16' or 'fp16', got {amp!r}")
    if amp == "none" or device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@dataclass
class _Progress:
    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0


class _Trainer:
    """State of one `fit` call; split out so each method stays short."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, device: torch.device,
                 amp: str, resume: Resume | None) -> None:
        self.raw_model = model
        self.optimizer, self.scheduler, self.device, self.amp = optimizer, scheduler, device, amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=(amp == "fp16" and device.type == "cuda"))
        self.resume_path = Path(resume.path) if resume is not None else None
        self.resume_key = resume.key if resume is not None else ""
        self.extra_state = resume.extra_state if resume is not None else {}
        self.progress, self.history = _Progress(), History()
        self.model: nn.Module = model
        if distributed.is_distributed():
            ids = [device.index] if device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def save_resume(self) -> None:
        if self.resume_path is None or not distributed.is_main_process():
            return
        save_checkpoint(self.resume_path, {
            "format": RESUME_FORMAT, "resume_key": self.resume_key,
            "model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "extra_state": {name: obj.state_dict() for name, obj in self.extra_state.items()},
            "progress": vars(self.progress).copy(), "rng": _rng_state(),
            "history": {"steps": self.history.steps, "epochs": self.history.epochs},
        })

    def try_resume(self) -> bool:
        if self.resume_path is None or not self.resume_path.is_file():
            return False
        state = load_checkpoint(self.resume_path)
        if (state.get("format") != RESUME_FORMAT or state.get("resume_key") != self.resume_key
                or set(state.get("extra_state", {})) != set(self.extra_state)):  # older code: other task state
            log.warning("%s was written for other settings; starting from scratch", self.resume_path)
            return False
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        for name, obj in self.extra_state.items():
            obj.load_state_dict(state["extra_state"][name])
        self.progress = _Progress(**state["progress"])
        self.history = History(steps=list(state["history"]["steps"]), epochs=list(state["history"]["epochs"]))
        self.saved_rng = state["rng"]
        log.info("resumed from %s at epoch %d, step %d", self.resume_path, self.progress.epoch, self.progress.step)
        return True


def _check_finite(loss: torch.Tensor, batch: dict[str, Any], progress: _Progress) -> None:
    if torch.isfinite(loss).all():
        return
    clips = batch.get("clip_id", "?") if isinstance(batch, dict) else "?"
    raise NonFiniteLossError(
        f"loss is {loss.item()} at epoch {progress.epoch}, optimizer step {progress.step} (clips {clips}); "
        "lower the learning rate, set max_grad_norm, or check these clips for NaN/inf samples"
    )


def _epoch_batches(trainer: _Trainer, loader: Iterable[Any], seed: int) -> Iterator[Any]:
    """Batches of the current epoch, skipping the ones a resumed run has already seen."""
    epoch, skip = trainer.progress.epoch, trainer.progress.batch_in_epoch
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)  # type: ignore[union-attr]
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed * 7919 + epoch)  # worker seeds depend on (seed, epoch) only
    saved_rng = getattr(trainer, "saved_rng", None)
    if saved_rng is not None and skip == 0:
        _set_rng_state(saved_rng)
        trainer.saved_rng = None
    iterator = iter(loader)
    for _ in range(skip):
        next(iterator)
    if saved_rng is not None and skip > 0:
        _set_rng_state(saved_rng)
        trainer.saved_rng = None
    yield from iterator


def fit(
    model: nn.Module,
    train_loader: Iterable[Any],
    step_fn: StepFn,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    *,
    settings: FitSettings,
    hooks: Hooks | None = None,
    resume: Resume | None = None,
) -> History:
    """Train `model` for `settings.epochs` epochs; see the module docstring for what is handled here.

    `step_fn(model, batch, device)` returns a dict with a scalar `"loss"` (plus optional scalars logged as
    `train/<name>`). `hooks.on_epoch_start(epoch)` runs before each epoch's first batch, also when a resumed run
    re-enters a half-done epoch (DyMN's temperature schedule). `hooks.evaluate(model, epoch)` returns validation
    metrics after each epoch (rank 0 only); they go to `hooks.on_metrics`, `History.epochs` and
    `hooks.on_epoch_end(epoch, metrics)` (which may raise to stop, e.g. optuna.TrialPruned). A rerun with an
    existing `resume.path` written with the same `resume.key` continues where the last resume file left off.
    """
    hooks = hooks or Hooks()
    if settings.grad_accum_steps < 1 or settings.epochs < 0:
        raise ValueError("grad_accum_steps must be >= 1 and epochs >= 0")
    device = settings.device
    dev = distributed.resolve_device(str(device)) if not isinstance(device, torch.device) else device
    seed_everything(settings.seed)
    model.to(dev)
    trainer = _Trainer(model, optimizer, scheduler, dev, settings.amp, resume)
    trainer.try_resume()
    epochs = settings.epochs
    while trainer.progress.epoch < epochs:
        if hooks.on_epoch_start is not None:  # also after a resume, with the restored epoch (per-epoch schedules)
            hooks.on_epoch_start(trainer.progress.epoch)
        _run_epoch(trainer, train_loader, step_fn, settings, hooks,
                   f"{settings.desc} {trainer.progress.epoch + 1}/{epochs}")
        metrics = _end_epoch(trainer, hooks.evaluate, hooks.on_metrics)
        trainer.progress = _Progress(epoch=trainer.progress.epoch + 1, batch_in_epoch=0, step=trainer.progress.step)
        trainer.save_resume()
        if hooks.on_epoch_end is not None and distributed.is_main_process():
            hooks.on_epoch_end(trainer.progress.epoch - 1, metrics)
    distributed.barrier()
    return trainer.history


def _end_epoch(trainer: _Trainer, evaluate: Callable[[nn.Module, int], dict[str, float]] | None,
               on_metrics: Callable[[dict[str, float], int], None] | None) -> dict[str, float]:
    metrics: dict[str, float] = {}
    if evaluate is not None and distributed.is_main_process():
        trainer.raw_model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in evaluate(trainer.raw_model, trainer.progress.epoch).items()}
        trainer.raw_model.train()
    trainer.history.epochs.append({"epoch": trainer.progress.epoch, "step": trainer.progress.step, **metrics})
    if on_metrics is not None and metrics and distributed.is_main_process():
        on_metrics(metrics, trainer.progress.step)
    return metrics


def _run_epoch(trainer: _Trainer, loader: Iterable[Any], step_fn: StepFn, settings: FitSettings, hooks: Hooks,
               desc: str) -> None:
    accum, every = settings.grad_accum_steps, settings.checkpoint_every_steps
    trainer.model.train()
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(total=total, initial=trainer.progress.batch_in_epoch, desc=desc, leave=False,
               disable=not (settings.progress and distributed.is_main_process()), dynamic_ncols=True)
    sums: dict[str, float] = {}
    for batch in _epoch_batches(trainer, loader, settings.seed):
        batch = _to_device(batch, trainer.device)
        with _autocast(trainer.device, trainer.amp):
            outputs = step_fn(trainer.model, batch, trainer.device)
        loss = outputs["loss"]
        _check_finite(loss.detach(), batch, trainer.progress)
        trainer.scaler.scale(loss / accum).backward()
        for name, value in outputs.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        trainer.progress.batch_in_epoch += 1
        bar.update(1)
        if trainer.progress.batch_in_epoch % accum and trainer.progress.batch_in_epoch != total:
            continue
        step_metrics = _optimizer_step(trainer, settings.max_grad_norm, sums, accum)
        sums = {}
        bar.set_postfix(loss=f"{step_metrics['train/loss']:.4f}")
        if hooks.on_optimizer_step is not None:
            hooks.on_optimizer_step(trainer.progress.step)
        if hooks.on_metrics is not None and distributed.is_main_process():
            hooks.on_metrics(step_metrics, trainer.progress.step)
        if every and trainer.progress.step % every == 0:
            trainer.save_resume()
    bar.close()


def _optimizer_step(trainer: _Trainer, max_grad_norm: float | None, sums: dict[str, float],
                    accum: int) -> dict[str, float]:
    if max_grad_norm is not None:
        trainer.scaler.unscale_(trainer.optimizer)
        torch.nn.utils.clip_grad_norm_(trainer.raw_model.parameters(), max_grad_norm)
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    trainer.optimizer.zero_grad(set_to_none=True)
    if trainer.scheduler is not None:
        trainer.scheduler.step()
    trainer.progress.step += 1
    n = trainer.progress.batch_in_epoch % accum or accum
    metrics = {f"train/{name}": value / n for name, value in sums.items()}
    # under DDP: the global batch's mean (equal per-rank batches), not rank 0's share
    metrics = dict(zip(metrics, distributed.mean_over_ranks(list(metrics.values())), strict=True))
    metrics["train/lr"] = float(trainer.optimizer.param_groups[0]["lr"])
    metrics["epoch"] = float(trainer.progress.epoch)
    trainer.history.steps.append({"step": trainer.progress.step, **metrics})
    return metrics
