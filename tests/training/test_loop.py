"""Tests for audiopipe.training.loop: training progress, accumulation, NaN detection, exact resume, DDP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from audiopipe.training.loaders import make_loader
from audiopipe.training.loop import FitSettings, Hooks, NonFiniteLossError, Resume, fit
from audiopipe.training.runner import BestTracker

SCRIPT = Path(__file__).with_name("loop_script.py")


class Toy(Dataset):
    def __init__(self, n: int = 24) -> None:
        generator = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 4, generator=generator)
        self.y = (self.x.sum(1, keepdim=True) > 0).float()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": self.x[i], "y": self.y[i], "clip_id": f"clip{i}"}


def step(model: nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    noise = 0.1 * torch.randn_like(batch["x"])  # uses the global RNG, so resume must restore it
    logits = model(batch["x"] + noise)
    return {"loss": nn.functional.binary_cross_entropy_with_logits(logits, batch["y"])}


def train(epochs: int, accum: int = 1, resume: Path | None = None) -> tuple[nn.Module, Any]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loader = make_loader(Toy(), batch_size=4, shuffle=True, seed=3)
    history = fit(model, loader, step, optimizer,
                  settings=FitSettings(epochs=epochs, grad_accum_steps=accum, checkpoint_every_steps=2, seed=3,
                                       progress=False),
                  resume=Resume(resume) if resume is not None else None)
    return model, history


def test_loss_decreases_and_history_is_recorded() -> None:
    _, history = train(epochs=6)
    first = sum(s["train/loss"] for s in history.steps[:6]) / 6
    last = sum(s["train/loss"] for s in history.steps[-6:]) / 6
    assert last < first
    assert len(history.steps) == 6 * 6 and len(history.epochs) == 6


def test_gradient_accumulation_counts_optimizer_steps() -> None:
    _, history = train(epochs=1, accum=3)
    assert len(history.steps) == 2  # 6 batches / 3


def test_same_seed_gives_same_weights() -> None:
    a, _ = train(epochs=2)
    b, _ = train(epochs=2)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_nan_loss_raises_with_clip_names() -> None:
    model = nn.Linear(4, 1)
    loader = make_loader(Toy(8), batch_size=4, shuffle=False, seed=0)

    def bad_step(m: nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        return {"loss": m(batch["x"]).sum() * float("nan")}

    with pytest.raises(NonFiniteLossError, match="clip0"):
        fit(model, loader, bad_step, torch.optim.SGD(model.parameters(), lr=0.1),
            settings=FitSettings(epochs=1, progress=False))


def test_resume_in_process_matches_uninterrupted(tmp_path: Path) -> None:
    reference, _ = train(epochs=3)
    train(epochs=1, resume=tmp_path / "resume.pt")  # writes a resume file at the end of epoch 1
    resumed, history = train(epochs=3, resume=tmp_path / "resume.pt")
    assert len(history.steps) == 18
    for p, q in zip(reference.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_on_epoch_start_sees_every_epoch_and_the_restored_one_after_resume(tmp_path: Path) -> None:
    def run(epochs: int) -> list[int]:
        started: list[int] = []
        model = nn.Linear(4, 1)
        loader = make_loader(Toy(8), batch_size=4, shuffle=False, seed=0)
        fit(model, loader, step, torch.optim.SGD(model.parameters(), lr=0.1),
            settings=FitSettings(epochs=epochs, progress=False), hooks=Hooks(on_epoch_start=started.append),
            resume=Resume(tmp_path / "r.pt"))
        return started

    assert run(2) == [0, 1]
    assert run(4) == [2, 3]  # resumed after epoch 2: the per-epoch hook picks up at the restored epoch


def test_resume_file_with_other_settings_is_ignored(tmp_path: Path) -> None:
    model = nn.Linear(4, 1)
    loader = make_loader(Toy(8), batch_size=4, shuffle=False, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    once = FitSettings(epochs=1, progress=False)
    fit(model, loader, step, opt, settings=once, resume=Resume(tmp_path / "r.pt", key="a"))
    history = fit(model, loader, step, opt, settings=once, resume=Resume(tmp_path / "r.pt", key="b"))
    assert len(history.steps) == 2  # trained again instead of resuming a finished run of other settings


def test_resume_file_without_the_tasks_extra_state_is_ignored(tmp_path: Path) -> None:
    """A resume file of older code, before the task resumed more state (pretrain_eat's epoch losses), restarts."""
    model = nn.Linear(4, 1)
    loader = make_loader(Toy(8), batch_size=4, shuffle=False, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    once = FitSettings(epochs=1, progress=False)
    fit(model, loader, step, opt, settings=once, resume=Resume(tmp_path / "r.pt"))
    history = fit(model, loader, step, opt, settings=once,
                  resume=Resume(tmp_path / "r.pt", extra_state={"best": BestTracker()}))
    assert len(history.steps) == 2


def test_best_tracker_modes() -> None:
    tracker = BestTracker("max")
    assert tracker.update(0.5, 0) and not tracker.update(0.4, 1) and tracker.update(0.6, 2)
    assert not tracker.update(float("nan"), 3) and tracker.best_epoch == 2
    low = BestTracker("min")
    assert low.update(2.0, 0) and low.update(1.0, 1) and not low.update(3.0, 2)


def test_kill_and_resume_gives_identical_weights(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    reference = tmp_path / "reference.pt"
    subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "ref_resume.pt"), str(reference), "0"],
                   check=True, env=env, timeout=120)
    resume, final = tmp_path / "resume.pt", tmp_path / "final.pt"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(resume), str(final), "0.05"], env=env)
    deadline = time.time() + 60
    while not resume.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert resume.exists() and not final.exists(), "the run should have been killed mid-training"
    subprocess.run([sys.executable, str(SCRIPT), str(resume), str(final), "0"], check=True, env=env, timeout=120)
    a, b = torch.load(reference), torch.load(final)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_ddp_on_gloo_with_two_processes(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    out = tmp_path / "ddp.pt"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
                    str(SCRIPT), str(tmp_path / "ddp_resume.pt"), str(out), "0"], check=True, env=env, timeout=180)
    state = torch.load(out)
    assert all(torch.isfinite(v).all() for v in state.values())
    assert (tmp_path / "ddp_world_size.txt").read_text() == "2"
