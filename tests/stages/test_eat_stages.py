"""Smoke tests of the EAT stage scripts: pretrain_eat -> finetune_eat -> predict_teacher in tmp_path.

Each script's main() runs in-process (argv monkeypatched) on a tiny synthetic pack with the repository's
params.yaml sections shrunk to 1-s clips and one epoch; the declared outputs must exist and be readable.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from audiopipe.config import FinetuneEatConfig, PredictTeacherConfig, PretrainEatConfig, load_params
from audiopipe.data.predictions import read_attrs
from audiopipe.data.synthetic import make_synthetic_pack
from audiopipe.models import load_model

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {"pretrain_eat": PretrainEatConfig, "finetune_eat": FinetuneEatConfig,
            "predict_teacher": PredictTeacherConfig}
TINY: dict[str, dict[str, Any]] = {
    "pretrain_eat": {"clip_seconds": 1.0, "target_frames": 96, "clones": 2, "epochs": 1, "batch_size": 3,
                     "device": "cpu"},
    "finetune_eat": {"clip_seconds": 1.0, "target_frames": 96, "epochs": 1, "batch_size": 2, "eval_batch_size": 3,
                     "device": "cpu"},
    "predict_teacher": {"clip_seconds": 1.0, "batch_size": 3, "device": "cpu"},
}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_repository_params_load_into_the_dataclasses(section: str) -> None:
    cfg = load_params(section, SECTIONS[section], ROOT / "params.yaml")
    assert cfg.device in ("auto", "cpu", "cuda") and cfg.amp in ("none", "bf16", "fp16")


def _run_stage(name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [f"stages/{name}.py", *argv])
    runpy.run_path(str(ROOT / "stages" / f"{name}.py"), run_name="stage_under_test")["main"]()


def test_eat_stages_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clips = tmp_path / "data" / "pack_hdf5"
    make_synthetic_pack(clips, n_per_split={"train": 3, "valid": 2, "test": 1}, sample_rate=16000, seed=3)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    tiny = {name: {**params[name], **TINY[name]} for name in SECTIONS}
    tiny["tracking"] = {**params["tracking"], "enabled": False}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny))
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"

    _run_stage("pretrain_eat", ["--clips", str(clips), "--out", str(data / "pretrain_eat")], monkeypatch)
    assert load_model(data / "pretrain_eat" / "eat.pt")[1]["builder"] == "eat_demo"
    curve = (data / "pretrain_eat" / "train_curve.csv").read_text().splitlines()
    assert curve[0].split(",")[0] == "step" and "train/loss" in curve[0].split(",") and len(curve) == 1 + 5 // 3
    assert json.loads((data / "pretrain_eat" / "metrics.json").read_text())["train/steps"] == 1.0

    _run_stage("finetune_eat", ["--clips", str(clips), "--pretrained", str(data / "pretrain_eat" / "eat.pt"),
                                "--out", str(data / "finetune_eat")], monkeypatch)
    metrics = json.loads((data / "finetune_eat" / "metrics.json").read_text())
    assert {"valid/mAP", "valid/mAP_prior"} <= set(metrics)
    tagger = data / "finetune_eat" / "eat_tagger.pt"
    assert load_model(tagger)[1]["builder"] == "eat_tagger"

    _run_stage("predict_teacher", ["--clips", str(clips), "--checkpoints", str(tagger),
                                   "--out", str(data / "predict_teacher")], monkeypatch)
    assert read_attrs(data / "predict_teacher" / "predictions.h5")["splits"] == ["test", "train", "valid"]
    assert json.loads((data / "predict_teacher" / "metrics.json").read_text())["train/clips"] == 3.0


def test_stage_help_explains_paths(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _run_stage("predict_teacher", ["--help"], monkeypatch)
    assert exit_info.value.code == 0
    assert "--checkpoints" in capsys.readouterr().out


def test_official_eat_checkpoint_must_live_in_the_dvc_tracked_folder(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """finetune_eat depends on models/official (dvc.yaml): a checkpoint elsewhere would change unseen by DVC."""
    import runpy

    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["finetune_eat"]["deps"]
    assert "models/official" in deps and (ROOT / "models" / "official" / "README.md").is_file()
    check = runpy.run_path(str(ROOT / "stages" / "finetune_eat.py"), run_name="stage")["_check_official_location"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "official").mkdir(parents=True)
    inside, outside = tmp_path / "models" / "official" / "EAT.pt", tmp_path / "EAT.pt"
    inside.write_bytes(b"x")
    outside.write_bytes(b"x")
    check(Path("models/official/EAT.pt"))  # accepted
    with pytest.raises(SystemExit, match=r"EAT\.pt is outside models/official/, which is this stage's DVC dep"):
        check(outside)
    with pytest.raises(SystemExit, match="does not exist; download the EAT checkpoint into models/official/"):
        check(Path("models/official/missing.pt"))
