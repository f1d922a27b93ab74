"""A run that dies after its best epoch, rerun the way `dvc repro` reruns it, still writes that epoch's checkpoint.

DVC deletes a stage's outputs before it runs the command again, so the best checkpoint a killed run had already
written is gone; the rerun resumes after the best epoch and (before this fix) never wrote it again. Here every
training task is stopped right after an epoch end (its resume file is on disk, as after a kill -9 at that moment),
its checkpoint is deleted, and the rerun must give the checkpoint of an uninterrupted run. The validation metric is
faked so that the first epoch is the best: the later epochs never beat it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.predictions import write_predictions
from audiopipe.data.synthetic import make_synthetic_pack
from audiopipe.storage import load_checkpoint
from audiopipe.training import distill, finetune_eat, finetune_sed
from tests.training.test_distill import CFG as DISTILL_CFG
from tests.training.test_finetune_eat import finetune_cfg
from tests.training.test_finetune_sed import tiny_config


class Killed(Exception):
    """Stands in for SIGKILL right after the resume file of an epoch end was written."""


def _die_after(epoch: int) -> Callable[[int, dict[str, float]], None]:
    def on_epoch_end(done: int, metrics: dict[str, float]) -> None:
        if done == epoch:
            raise Killed(f"killed after epoch {done}")
    return on_epoch_end


def _first_call_wins(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str, key: str, good: float, bad: float
) -> None:
    """Patch `module.name` so that its first call in this run reports `key = good` and every later call `bad`."""
    real = getattr(module, name)
    calls = {"n": 0}

    def fake(*args: Any, **kwargs: Any) -> dict[str, float]:
        calls["n"] += 1
        return {**real(*args, **kwargs), key: good if calls["n"] == 1 else bad}

    monkeypatch.setattr(module, name, fake)


def _same_weights(produced: dict[str, Any], expected: dict[str, Any], key: str = "model") -> None:
    assert produced[key].keys() == expected[key].keys()
    for name, value in expected[key].items():
        torch.testing.assert_close(produced[key][name], value, rtol=0, atol=0, msg=f"{key}.{name} differs")


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pack")
    make_synthetic_pack(out, n_per_split={"train": 6, "valid": 4, "weak": 2}, sample_rate=16000, duration_s=1.0,
                        seed=0)
    return out


def test_distill_rerun_after_a_late_kill_writes_the_best_epoch(pack: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = dataclasses.replace(DISTILL_CFG, epochs=3, kd_lambda=1.0)
    _first_call_wins(monkeypatch, distill, "tagging_metrics", "mAP", 1.0, 0.0)
    reference = distill.distill_mobilenet(cfg, clips_dir=pack, teacher_h5=None, checkpoint=tmp_path / "ref" / "s.pt")

    out = tmp_path / "run" / "s.pt"
    _first_call_wins(monkeypatch, distill, "tagging_metrics", "mAP", 1.0, 0.0)
    with pytest.raises(Killed):
        distill.distill_mobilenet(cfg, clips_dir=pack, teacher_h5=None, checkpoint=out, on_epoch_end=_die_after(1))
    out.unlink(missing_ok=True)  # what dvc repro does before running the stage again
    _first_call_wins(monkeypatch, distill, "tagging_metrics", "mAP", 0.5, 0.0)  # epoch 2 never beats epoch 0
    rerun = distill.distill_mobilenet(cfg, clips_dir=pack, teacher_h5=None, checkpoint=out)

    assert out.is_file(), "the best epoch's checkpoint was lost"
    expected, produced = load_checkpoint(reference.checkpoint), load_checkpoint(out)  # type: ignore[arg-type]
    assert produced["metrics"]["epoch"] == expected["metrics"]["epoch"] == 0.0
    _same_weights(produced, expected)
    assert rerun.metrics["best_epoch"] == reference.metrics["best_epoch"] == 0.0


def _teacher(pack: Path, path: Path, seed: int) -> Path:
    per_split = {}
    for split in ("train", "valid"):
        reader = ClipReader(pack / f"{split}.h5")
        logits = np.random.default_rng(seed).normal(size=reader.all_targets.shape) * 3
        per_split[split] = (list(reader.clip_ids), logits)
    return write_predictions(path, per_split, ClipReader(pack / "train.h5").class_names, teacher="fixture",
                             checkpoints=[])


def test_distill_restarts_when_the_teacher_file_was_rewritten_at_the_same_path(pack: Path, tmp_path: Path) -> None:
    cfg = dataclasses.replace(DISTILL_CFG, epochs=2, kd_lambda=0.1)
    new_teacher = _teacher(pack, tmp_path / "new" / "predictions.h5", seed=2)
    reference = distill.distill_mobilenet(cfg, clips_dir=pack, teacher_h5=new_teacher,
                                          checkpoint=tmp_path / "ref" / "s.pt")

    teacher, out = tmp_path / "run" / "predictions.h5", tmp_path / "run" / "s.pt"
    _teacher(pack, teacher, seed=1)
    with pytest.raises(Killed):
        distill.distill_mobilenet(cfg, clips_dir=pack, teacher_h5=teacher, checkpoint=out, on_epoch_end=_die_after(0))
    _teacher(pack, teacher, seed=2)  # `dvc repro predict_teacher` rewrote the file in between
    epochs_run: list[int] = []
    distill.distill_mobilenet(cfg, clips_dir=pack, teacher_h5=teacher, checkpoint=out,
                              on_epoch_end=lambda epoch, _: epochs_run.append(epoch))

    assert epochs_run == [0, 1], "a student half-trained on the old teacher was resumed"
    _same_weights(load_checkpoint(out), load_checkpoint(reference.checkpoint))  # type: ignore[arg-type]


def test_finetune_eat_rerun_after_a_late_kill_writes_the_best_epoch(pack: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = finetune_cfg(init="random", epochs=3)
    _first_call_wins(monkeypatch, finetune_eat, "tagging_metrics", "mAP", 1.0, 0.0)
    reference = finetune_eat.finetune_eat(cfg, clips_dir=pack, pretrained=None, checkpoint=tmp_path / "ref" / "t.pt")

    out = tmp_path / "run" / "t.pt"
    _first_call_wins(monkeypatch, finetune_eat, "tagging_metrics", "mAP", 1.0, 0.0)
    with pytest.raises(Killed):
        finetune_eat.finetune_eat(cfg, clips_dir=pack, pretrained=None, checkpoint=out, on_epoch_end=_die_after(1))
    out.unlink(missing_ok=True)
    _first_call_wins(monkeypatch, finetune_eat, "tagging_metrics", "mAP", 0.5, 0.0)
    rerun = finetune_eat.finetune_eat(cfg, clips_dir=pack, pretrained=None, checkpoint=out)

    assert out.is_file(), "the best epoch's checkpoint was lost"
    _same_weights(load_checkpoint(out), load_checkpoint(reference.checkpoint))  # type: ignore[arg-type]
    assert rerun.metrics["best_epoch"] == 0.0
    assert np.isfinite(rerun.metrics["valid/roc_auc"]), "the best epoch's metrics did not survive the resume"
    assert rerun.metrics["valid/roc_auc"] == reference.metrics["valid/roc_auc"]


@pytest.fixture(scope="module")
def sed_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sedpack")
    make_synthetic_pack(out, n_per_split=2, duration_s=1.0, seed=3, sample_rate=16000)
    return out


@pytest.mark.parametrize("cache", [False, True])
def test_atst_sed_resumes_after_a_kill_and_keeps_the_best_epoch(sed_pack: Path, tmp_path: Path, cache: bool,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(epochs=3, cache_features=cache, mixup_encoder_input=False, freq_warp_prob=0.0)
    # phase 1 keeps the epoch with the lowest mean teacher BCE on valid: make the first epoch the best
    _first_call_wins(monkeypatch, finetune_sed, "validation_bce", "strong_bce", 0.1, 9.0)
    kwargs = dict(phase=1, clips_dir=sed_pack, encoder_checkpoint=None, init_checkpoint=None)
    reference = finetune_sed.train_atst_sed(cfg, checkpoint=tmp_path / "ref" / "model.pt", **kwargs)

    out = tmp_path / "run" / "model.pt"
    _first_call_wins(monkeypatch, finetune_sed, "validation_bce", "strong_bce", 0.1, 9.0)
    with pytest.raises(Killed):
        finetune_sed.train_atst_sed(cfg, checkpoint=out, on_epoch_end=_die_after(1), **kwargs)
    out.unlink(missing_ok=True)
    _first_call_wins(monkeypatch, finetune_sed, "validation_bce", "strong_bce", 5.0, 9.0)
    epochs_run: list[int] = []
    rerun = finetune_sed.train_atst_sed(cfg, checkpoint=out, on_epoch_end=lambda e, _: epochs_run.append(e), **kwargs)

    assert epochs_run == [2], "ATST-SED started over instead of resuming"
    assert rerun.metrics["train/best_epoch"] == reference.metrics["train/best_epoch"] == 0.0
    expected, produced = load_checkpoint(reference.checkpoint), load_checkpoint(out)  # type: ignore[arg-type]
    _same_weights(produced, expected, "model")
    _same_weights(produced, expected, "mean_teacher")
    assert not out.with_name(".model.resume.pt").exists(), "the resume file outlived the finished stage"
