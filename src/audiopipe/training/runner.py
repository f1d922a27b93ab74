"""The task runner: what every training task (pretrain, finetune_eat, distill, ATST-SED) shares around `fit`.

A task function reads its config and data, builds a `TrainingTask` (model, loader, step, optimizer, schedule, fit
settings, validation, the selection metric, what a selected epoch keeps, how the run ends) and hands it to
`run_task`, which owns the rest:

* **best-epoch selection**: after each validation, `Selection.metric` is compared with the best so far
  (`BestTracker`); the winning epoch's `snapshot` (weights copied to CPU, its metrics) is kept. While no epoch has
  a finite value (NaN metrics) the latest epoch is kept, so a run always ends with weights.
* **exact resume**: the resume file `.<checkpoint stem>.resume.pt` next to the checkpoint, keyed by `resume_key`
  (config + input hashes), also holds the `BestTracker` and the task's other resumable state; it is removed once
  the checkpoint is written.
* **the checkpoint**: `finish(outcome)` turns the history and the selected epoch into the final metrics and the
  checkpoint payload, written atomically by rank 0 alone (under DDP the other ranks return empty results).
* **tracking**: per-step and per-epoch metrics go to the tracker (MLflow) as they come, the final metrics at
  the last step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from audiopipe.storage import file_sha256, save_checkpoint
from audiopipe.training import distributed
from audiopipe.training.loop import FitSettings, History, Hooks, Resume, StepFn, fit


@dataclass
class TaskResult:
    """What a training task returns to its stage script (and to the Optuna objective)."""

    metrics: dict[str, float]
    checkpoint: Path | None
    history: History = field(default_factory=History)


class BestTracker:
    """Keeps the best value of a selection metric and the checkpoint payload of that epoch.

    The payload (weights copied to CPU, metrics, whatever the task keeps) travels in the resume file, so a run
    killed after its best epoch still writes that epoch's checkpoint when it is resumed, even though DVC deleted
    the output file before the rerun.
    """

    def __init__(self, mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.mode = mode
        self.best: float | None = None
        self.best_epoch = -1
        self.payload: dict[str, Any] | None = None

    def is_better(self, value: float, ties_win: bool = False) -> bool:
        """Whether `value` beats the best so far (`ties_win`: an equal value also wins); NaN never wins."""
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if ties_win and value == self.best:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def update(self, value: float, epoch: int, payload: Callable[[], dict[str, Any]] | None = None,
               ties_win: bool = False) -> bool:
        """Return True (and remember it, with `payload()` when given) when `value` beats the best so far."""
        better = self.is_better(value, ties_win)
        if better:
            self.best, self.best_epoch = float(value), epoch
            if payload is not None:
                self.payload = detached(payload())
        return better

    def keep(self, epoch: int, payload: dict[str, Any]) -> None:
        """Remember `payload` as the selected epoch's without a metric (e.g. every metric so far was NaN)."""
        self.best_epoch, self.payload = epoch, detached(payload)

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "best": self.best, "best_epoch": self.best_epoch, "payload": self.payload}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mode, self.best, self.best_epoch = state["mode"], state["best"], state["best_epoch"]
        self.payload = state.get("payload")


def detached(value: Any) -> Any:
    """A copy of `value` whose tensors are detached CPU clones (nested dicts/lists/tuples followed)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: detached(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(detached(v) for v in value)
    return value


def resume_key(config: dict[str, Any], **inputs: Any) -> str:
    """The identity of a run for its resume file: the stage config plus the content (hashes) of its inputs.

    A resume file written under another key is ignored, so changed data, a rewritten teacher or a new init
    checkpoint at the same path restarts the run instead of mixing the two.
    """
    return json.dumps({"config": config, "inputs": inputs}, sort_keys=True, default=str)


def input_digest(path: str | Path | None) -> str | None:
    """sha256 of an input file for `resume_key` (None when there is no such file)."""
    return file_sha256(path) if path and Path(path).is_file() else None


@dataclass(frozen=True)
class Selection:
    """Which validation metric picks the kept epoch, and in which direction (`ties_win`: an equal value moves the
    choice to the later, longer-trained epoch)."""

    metric: str
    mode: Literal["max", "min"] = "max"
    ties_win: bool = False


@dataclass
class Outcome:
    """What `finish` gets: the run's history and the selected epoch (`best.payload` is its snapshot; None when
    the task has no selection)."""

    history: History
    best: BestTracker | None


@dataclass
class TrainingTask:
    """One training task as the runner sees it (built by the task function from its config).

    `validate(model, epoch)` returns validation metrics ({} on epochs it skips); `snapshot(epoch, metrics)` is what
    a selected epoch keeps; `finish(outcome)` returns (final metrics, checkpoint payload). `state` holds the task's
    other resumable objects (`state_dict()` / `load_state_dict()`); `on_train_metrics(metrics, step)` sees every
    logged metric row before the tracker does.
    """

    model: nn.Module
    loader: Iterable[Any]
    step_fn: StepFn
    optimizer: torch.optim.Optimizer
    scheduler: Any
    settings: FitSettings
    finish: Callable[[Outcome], tuple[dict[str, float], dict[str, Any]]]
    validate: Callable[[nn.Module, int], dict[str, float]] | None = None
    selection: Selection | None = None
    snapshot: Callable[[int, dict[str, float]], dict[str, Any]] | None = None
    on_optimizer_step: Callable[[int], object] | None = None
    on_epoch_start: Callable[[int], None] | None = None
    on_train_metrics: Callable[[dict[str, float], int], None] | None = None
    state: dict[str, Any] = field(default_factory=dict)


def resume_path(checkpoint: Path) -> Path:
    """The resume file of the run that writes `checkpoint` (hidden, next to it)."""
    return checkpoint.with_name(f".{checkpoint.stem}.resume.pt")


def _selecting_validate(task: TrainingTask, best: BestTracker) -> Callable[[nn.Module, int], dict[str, float]]:
    assert task.validate is not None and task.selection is not None and task.snapshot is not None
    validate, selection, snapshot = task.validate, task.selection, task.snapshot

    def evaluate(model: nn.Module, epoch: int) -> dict[str, float]:
        metrics = validate(model, epoch)
        if selection.metric not in metrics:  # an epoch without validation
            return metrics
        chosen = best.update(metrics[selection.metric], epoch, lambda: snapshot(epoch, metrics), selection.ties_win)
        if not chosen and best.best is None:  # no finite value so far: keep the latest epoch
            best.keep(epoch, snapshot(epoch, metrics))
        return metrics

    return evaluate


def run_task(task: TrainingTask, *, checkpoint: Path, key: str, tracker: Any = None,
             on_epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> TaskResult:
    """Train `task` through `fit` and write its checkpoint; see the module docstring."""
    checkpoint = Path(checkpoint)
    best = BestTracker(task.selection.mode) if task.selection is not None else None
    evaluate = _selecting_validate(task, best) if best is not None else task.validate

    def on_metrics(metrics: dict[str, float], step: int) -> None:
        if task.on_train_metrics is not None:
            task.on_train_metrics(metrics, step)
        if tracker is not None:
            tracker.log_metrics(metrics, step)

    state = {**task.state, **({"best": best} if best is not None else {})}
    history = fit(
        task.model, task.loader, task.step_fn, task.optimizer, task.scheduler, settings=task.settings,
        hooks=Hooks(evaluate=evaluate, on_metrics=on_metrics, on_optimizer_step=task.on_optimizer_step,
                    on_epoch_start=task.on_epoch_start, on_epoch_end=on_epoch_end),
        resume=Resume(resume_path(checkpoint), key, state),
    )
    if not distributed.is_main_process():  # under DDP rank 0 alone evaluated: it alone holds the kept epoch
        return TaskResult(metrics={}, checkpoint=None, history=history)
    metrics, payload = task.finish(Outcome(history, best))
    save_checkpoint(checkpoint, payload)
    resume_path(checkpoint).unlink(missing_ok=True)
    if tracker is not None:
        tracker.log_metrics(metrics, history.steps[-1]["step"] if history.steps else 0)
    return TaskResult(metrics=metrics, checkpoint=checkpoint, history=history)
