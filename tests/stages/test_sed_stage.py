"""Smoke test of stages/train_atst_sed.py: pretrain_eat -> atst_stage1 (--encoder eat.pt) -> atst_stage2 (--init).

Runs each script's main() in-process on a tiny synthetic pack with the repository's params sections shrunk
to 1-s clips, one epoch and a tiny CRNN; the declared outputs must exist and hold the expected metrics.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import yaml

from audiopipe.config import AtstStage1Config, AtstStage2Config, PretrainEatConfig, load_params
from audiopipe.data.synthetic import make_synthetic_pack
from audiopipe.models import load_model

ROOT = Path(__file__).resolve().parents[2]
TINY_SED = {
    "clip_duration_s": 1.0,
    "batch_sizes": [1, 1, 1],
    "epochs": 1,
    "eval_batch_size": 3,
    "device": "cpu",
    "operating_point_psds": False,
    "median_window": [3],
}
TINY_CRNN = {"crnn_kwargs": {"channels": [4] * 7, "rnn_hidden": 4, "rnn_layers": 1, "dropout": 0.0}}  # phase 1 builds
TINY_EAT = {"clip_seconds": 1.0, "target_frames": 96, "clones": 2, "epochs": 1, "batch_size": 3, "device": "cpu"}


def test_repository_params_load() -> None:
    cfg = load_params("atst_stage1", AtstStage1Config, ROOT / "params.yaml")
    cfg2 = load_params("atst_stage2", AtstStage2Config, ROOT / "params.yaml")
    assert len(cfg.batch_sizes) == len(cfg.train_splits) and len(cfg2.batch_sizes) == len(cfg2.train_splits)
    eat = load_params("pretrain_eat", PretrainEatConfig, ROOT / "params.yaml")
    assert cfg.model != "sed_eat" or cfg.encoder_preset == eat.preset, "the SED encoder must match pretrain_eat"


def _run(argv: list[str], monkeypatch: pytest.MonkeyPatch, script: str = "train_atst_sed") -> None:
    monkeypatch.setattr(sys, "argv", [f"stages/{script}.py", *argv])
    runpy.run_path(str(ROOT / "stages" / f"{script}.py"), run_name="stage_under_test")["main"]()


def test_sed_stages_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clips = tmp_path / "data" / "pack_hdf5"
    make_synthetic_pack(clips, n_per_split=2, sample_rate=16000, seed=5)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    tiny = {"atst_stage1": {**params["atst_stage1"], **TINY_SED, **TINY_CRNN},
            "atst_stage2": {**params["atst_stage2"], **TINY_SED}}
    tiny["pretrain_eat"] = {**params["pretrain_eat"], **TINY_EAT}
    tiny["tracking"] = {**params["tracking"], "enabled": False}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny))
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    _run(["--clips", str(clips), "--out", str(data / "pretrain_eat")], monkeypatch, script="pretrain_eat")

    _run(
        [
            "--phase",
            "1",
            "--clips",
            str(clips),
            "--encoder",
            str(data / "pretrain_eat" / "eat.pt"),
            "--out",
            str(data / "atst_stage1"),
        ],
        monkeypatch,
    )
    _run(
        [
            "--phase",
            "2",
            "--clips",
            str(clips),
            "--init",
            str(data / "atst_stage1" / "model.pt"),
            "--out",
            str(data / "atst_stage2"),
        ],
        monkeypatch,
    )
    for stage in ("atst_stage1", "atst_stage2"):
        metrics = json.loads((data / stage / "metrics.json").read_text())
        assert {"test/student_psds1", "test/teacher_psds2", "valid/teacher_event_f1"} <= set(metrics)
        assert (data / stage / "psd_roc.csv").is_file()
    model, payload = load_model(data / "atst_stage2" / "model.pt")
    assert payload["builder"] == "sed_eat" and "mean_teacher" in payload


def test_phase2_without_init_exits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit, match="--init"):
        _run(["--phase", "2", "--clips", str(tmp_path), "--out", str(tmp_path)], monkeypatch)


def test_phase2_with_encoder_exits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Phase 2 rebuilds the model, encoder included, from --init: an --encoder there would be silently ignored."""
    with pytest.raises(SystemExit, match="drop --encoder"):
        _run(["--phase", "2", "--clips", str(tmp_path), "--out", str(tmp_path), "--init", str(tmp_path / "m.pt"),
              "--encoder", str(tmp_path / "eat.pt")], monkeypatch)
