"""audiopipe.training.runner: selection of the kept epoch, the checkpoint it writes, resume, tracking."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from audiopipe.storage import load_checkpoint
from audiopipe.training import distributed
from audiopipe.training.loop import FitSettings
from audiopipe.training.runner import (
    Outcome,
    Selection,
    TrainingTask,
    resume_path,
    run_task,
)


class Recorder:
    def __init__(self) -> None:
        self.rows: list[tuple[dict[str, float], int]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.rows.append((dict(metrics), step))


HIGHEST = Selection("valid/score", "max")


def toy_task(scores: list[float], selection: Selection | None = HIGHEST,
             epochs: int | None = None) -> TrainingTask:
    """A linear model trained a few steps per epoch; `scores[epoch]` is what its validation reports."""
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    batches = [{"x": torch.randn(4, 2), "y": torch.randn(4, 1)} for _ in range(3)]

    def step(m: nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.mse_loss(m(batch["x"]), batch["y"])}

    def validate(m: nn.Module, epoch: int) -> dict[str, float]:
        return {"valid/score": scores[epoch]}

    def snapshot(epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        return {"model": model.state_dict(), "epoch": epoch, "metrics": dict(metrics)}

    def finish(outcome: Outcome) -> tuple[dict[str, float], dict[str, Any]]:
        kept = outcome.best.payload if outcome.best is not None else None
        payload = kept or {"model": model.state_dict(), "epoch": len(outcome.history.epochs) - 1, "metrics": {}}
        return {"kept_epoch": float(payload["epoch"])}, payload

    return TrainingTask(model, batches, step, torch.optim.SGD(model.parameters(), lr=0.1), None,
                        settings=FitSettings(epochs=epochs or len(scores), progress=False), finish=finish,
                        validate=validate, selection=selection, snapshot=snapshot)


@pytest.mark.parametrize(("scores", "selection", "kept"), [
    ([0.2, 0.5, 0.4], Selection("valid/score", "max"), 1),
    ([0.2, 0.5, 0.4], Selection("valid/score", "min"), 0),
    ([0.5, 0.5, 0.1], Selection("valid/score", "max"), 0),
    ([0.5, 0.5, 0.1], Selection("valid/score", "max", ties_win=True), 1),
    ([math.nan, math.nan, math.nan], Selection("valid/score", "max"), 2),  # no finite value: the latest epoch
    ([math.nan, 0.3, math.nan], Selection("valid/score", "max"), 1),
    ([0.2, 0.5, 0.4], None, 2),  # no selection: the task's finish decides (here: the last weights)
])
def test_the_selected_epoch_is_the_checkpoint(tmp_path: Path, scores: list[float], selection: Selection | None,
                                              kept: int) -> None:
    recorder = Recorder()
    result = run_task(toy_task(scores, selection), checkpoint=tmp_path / "model.pt", key="k", tracker=recorder)
    payload = load_checkpoint(tmp_path / "model.pt")
    assert payload["epoch"] == kept and result.metrics == {"kept_epoch": float(kept)}
    assert result.checkpoint == tmp_path / "model.pt"
    assert not resume_path(tmp_path / "model.pt").exists(), "the resume file outlived the finished run"
    assert len(result.history.steps) == 3 * len(scores) and len(result.history.epochs) == len(scores)
    assert recorder.rows[-1] == ({"kept_epoch": float(kept)}, 3 * len(scores))  # final metrics, at the last step
    assert sum("train/loss" in row for row, _ in recorder.rows) == 3 * len(scores)


class Killed(Exception):
    pass


def test_a_resumed_run_keeps_the_best_epoch_it_saw_before_the_kill(tmp_path: Path) -> None:
    """The best epoch (0) lies before the interruption; the resumed run never beats it and still writes it."""
    scores = [0.9, 0.1, 0.2]
    reference = run_task(toy_task(scores), checkpoint=tmp_path / "ref.pt", key="k")

    def kill_after_first_epoch(epoch: int, metrics: dict[str, float]) -> None:
        raise Killed  # after the epoch's resume file was written, as a kill -9 would land

    checkpoint = tmp_path / "model.pt"
    with pytest.raises(Killed):
        run_task(toy_task(scores), checkpoint=checkpoint, key="k", on_epoch_end=kill_after_first_epoch)
    assert resume_path(checkpoint).exists() and not checkpoint.exists()
    resumed = run_task(toy_task(scores), checkpoint=checkpoint, key="k")
    assert resumed.metrics == reference.metrics == {"kept_epoch": 0.0}
    assert len(resumed.history.epochs) == 3  # epoch 0 restored from the resume file, 1 and 2 trained
    for name, value in load_checkpoint(tmp_path / "ref.pt")["model"].items():
        torch.testing.assert_close(load_checkpoint(checkpoint)["model"][name], value, rtol=0, atol=0)


def test_a_resume_file_of_another_run_is_not_used(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.pt"
    with pytest.raises(Killed):
        run_task(toy_task([0.9, 0.1, 0.2]), checkpoint=checkpoint, key="old settings",
                 on_epoch_end=lambda epoch, metrics: (_ for _ in ()).throw(Killed()))
    result = run_task(toy_task([0.1, 0.2, 0.3]), checkpoint=checkpoint, key="new settings")
    assert result.metrics == {"kept_epoch": 2.0}  # the old run's best epoch 0 (0.9) was not carried over


def test_other_ranks_write_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "is_main_process", lambda: False)
    result = run_task(toy_task([0.2, 0.5]), checkpoint=tmp_path / "model.pt", key="k")
    assert result.metrics == {} and result.checkpoint is None and not (tmp_path / "model.pt").exists()
