"""Tests for audiopipe.training.pretrain: a tiny EAT pre-training run end to end."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from audiopipe.config import PretrainEatConfig
from audiopipe.data.synthetic import make_synthetic_pack
from audiopipe.models import load_model
from audiopipe.models.eat.encoder import EATEncoder
from audiopipe.storage import load_checkpoint
from audiopipe.training.pretrain import open_splits, pretrain_eat

PRETRAIN: dict[str, Any] = dict(
    preset="eat_demo", splits=["train", "valid", "weak", "unlabelled"], clip_seconds=1.0, target_frames=96,
    mask_ratio=0.8, clones=2, epochs=2, batch_size=3, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95),
    warmup_fraction=0.2, max_grad_norm=4.0, ema_decay_start=0.9, ema_decay_end=0.99, ema_anneal_steps=10,
    checkpoint_every_steps=0, seed=0, device="cpu", amp="none", num_workers=0,
)


def pretrain_cfg(**overrides: Any) -> PretrainEatConfig:
    return PretrainEatConfig(**{**PRETRAIN, **overrides})



@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pack")
    make_synthetic_pack(out, n_per_split={"train": 3, "valid": 2, "unlabelled": 2}, sample_rate=16000, seed=0)
    return out


@pytest.fixture(scope="module")
def run(pack: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, list]:
    ckpt = tmp_path_factory.mktemp("out") / "eat.pt"
    epochs: list = []
    result = pretrain_eat(pretrain_cfg(), clips_dir=pack, checkpoint=ckpt,
                          on_epoch_end=lambda e, m: epochs.append((e, m)))
    return result, ckpt, epochs


def test_open_splits_skips_absent_splits(pack: Path) -> None:
    datasets = open_splits(pack, ["train", "weak", "unlabelled"], 1.0)
    assert [d.reader.path.name for d in datasets] == ["train.h5", "unlabelled.h5"]


def test_open_splits_without_any_split_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pack_hdf5"):
        open_splits(tmp_path, ["train"], 1.0)


def test_loss_curve_has_one_finite_row_per_step(run: tuple) -> None:
    result, _, _ = run
    steps = [row for row in result.history.steps if "train/loss" in row]
    assert len(steps) == 2 * (7 // 3)  # 7 clips, batch 3, drop_last, 2 epochs
    assert all(math.isfinite(row["train/loss"]) for row in steps)
    assert {"train/frame_loss", "train/utterance_loss", "train/lr"} <= set(steps[0])
    assert result.metrics["train/loss_first"] == steps[0]["train/loss"]
    assert result.metrics["train/clips"] == 7.0


def test_on_epoch_end_called_per_epoch(run: tuple) -> None:
    _, _, epochs = run
    assert [e for e, _ in epochs] == [0, 1]
    assert all(math.isfinite(m["train/epoch_loss"]) for _, m in epochs)


def test_checkpoint_rebuilds_the_student_encoder(run: tuple) -> None:
    result, ckpt, _ = run
    assert result.checkpoint == ckpt and ckpt.is_file()
    assert not ckpt.with_name(".eat.resume.pt").exists()
    model, payload = load_model(ckpt)
    assert isinstance(model, EATEncoder) and payload["builder"] == "eat_demo"
    assert payload["sample_rate"] == 16000 and payload["config"]["clones"] == 2
    out = model(torch.zeros(1, 1, 96, 128))
    assert out.shape == (1, 1 + 6 * 8, 96)
    teacher = load_checkpoint(ckpt)["ema_teacher"]
    assert set(teacher) == set(payload["model"])
    # the teacher moved towards, but is not equal to, the student
    assert not torch.equal(teacher["blocks.0.mlp.fc1.weight"], payload["model"]["blocks.0.mlp.fc1.weight"])
