"""Smoke test of stages/distill_mobilenet.py: both params sections (KD and the kd_lambda = 1 baseline)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from audiopipe.config import DistillMobilenetConfig, load_params
from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.predictions import write_predictions
from audiopipe.data.synthetic import make_synthetic_pack
from audiopipe.models import load_model

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "stages" / "distill_mobilenet.py"
TINY = {"duration_s": 1.0, "width_mult": 0.1, "n_mels": 32, "hop_length": 320, "epochs": 1, "batch_size": 3,
        "fmax_aug_range": 1000, "device": "cpu"}


def test_repository_sections_differ_only_in_kd_lambda() -> None:
    kd = load_params("distill_mobilenet", DistillMobilenetConfig, ROOT / "params.yaml")
    nokd = load_params("distill_mobilenet_nokd", DistillMobilenetConfig, ROOT / "params.yaml")
    assert kd.kd_lambda < 1.0 and nokd.kd_lambda == 1.0
    assert {**vars(kd), "kd_lambda": 1.0} == vars(nokd)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    pack = tmp_path / "pack"
    make_synthetic_pack(pack, n_per_split={"train": 4, "valid": 3}, sample_rate=16000, duration_s=1.0)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    doc = {"tracking": {"enabled": False, "experiment": "test"}}
    for section in ("distill_mobilenet", "distill_mobilenet_nokd"):
        doc[section] = {**params[section], **TINY}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    per_split = {}
    for split in ("train", "valid"):
        reader = ClipReader(pack / f"{split}.h5")
        logits = np.random.default_rng(0).normal(size=reader.all_targets.shape)
        per_split[split] = (reader.clip_ids, logits)
    teacher = write_predictions(tmp_path / "predictions.h5", per_split, reader.class_names, "fixture", [])
    return pack, teacher, tmp_path / "params.yaml"


@pytest.mark.parametrize("section", ["distill_mobilenet", "distill_mobilenet_nokd"])
def test_stage_writes_student_and_metrics(setup, section: str, tmp_path: Path, monkeypatch) -> None:
    pack, teacher, params = setup
    out = tmp_path / section
    argv = [str(SCRIPT), "--clips", str(pack), "--out", str(out), "--section", section, "--params", str(params)]
    if section == "distill_mobilenet":
        argv += ["--teacher", str(teacher)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"valid/mAP", "valid/roc_auc", "valid/d_prime", "valid/loss"} <= set(metrics)
    assert ("teacher/valid_mAP" in metrics) == (section == "distill_mobilenet")
    model, payload = load_model(out / "student.pt")
    assert payload["config"]["kd_lambda"] == (1.0 if section.endswith("nokd") else 0.1)
