"""The real data stages through `dvc repro` in a throwaway repo: timings are not metrics, and rerunning
`pack_hdf5` (new wall time, identical packs) leaves a stage that reads the packs as dvc.yaml declares up to date.

Stages download -> resample -> pack_hdf5 run the project's scripts on 12 synthetic 1-s clips; `train` is a
stand-in whose pack deps are copied from the project's `pretrain_eat` entry (the training stages' rule).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("dvc")
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "1", "CI": "true"}
TIMING_WORDS = ("wall_s", "latency", "throughput")


def _dvc(repo: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, f"dvc {' '.join(args)}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}.{key}".strip(".")).items()}
    return {prefix: value}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("packrepo")
    project = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["download"].update(source="synthetic", clip_duration_s=1.0, n_train=4, n_valid=2, n_test=2, n_weak=2,
                              n_unlabelled=2)
    params["resample"].update(sample_rate=16000, workers=1)
    params["tracking"]["enabled"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    stages = {}
    for name in ("download", "resample", "pack_hdf5"):
        spec = dict(project[name])
        spec["cmd"] = f"{sys.executable} {ROOT}/{spec['cmd'].removeprefix('python ')}"
        spec["deps"] = [d for d in spec["deps"] if d.startswith("data/")]  # code deps live in the project
        stages[name] = spec
    packs = [d for d in project["pretrain_eat"]["deps"] if d.startswith("data/pack_hdf5")]
    stages["train"] = {"cmd": "echo trained >> train.log && echo ok > model.txt", "deps": packs, "outs": ["model.txt"]}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    _dvc(root, "init", "-q")
    _dvc(root, "repro")
    return root


def test_data_stage_metrics_hold_no_timings(repo: Path) -> None:
    for stage in ("download", "resample", "pack_hdf5"):
        metrics = _flatten(json.loads((repo / "data" / stage / "metrics.json").read_text()))
        assert metrics and not [k for k in metrics if " " in k]
        assert not [k for k in metrics if any(word in k for word in TIMING_WORDS)], f"{stage}: {sorted(metrics)}"
    assert "pack_hdf5/wall_s" in json.loads((repo / "data/pack_hdf5/timings.json").read_text())
    shown = _dvc(repo, "metrics", "show", "--json")
    assert "wall_s" not in shown


def test_forced_pack_rerun_with_identical_packs_keeps_training_up_to_date(repo: Path) -> None:
    before = (repo / "data/pack_hdf5/timings.json").read_text()
    _dvc(repo, "repro", "-f", "-s", "pack_hdf5")
    assert (repo / "data/pack_hdf5/timings.json").read_text() != before  # a new wall time was written
    status = json.loads(_dvc(repo, "status", "--json"))
    assert "train" not in status, status
    _dvc(repo, "repro")
    assert (repo / "train.log").read_text().count("trained") == 1  # not retrained
