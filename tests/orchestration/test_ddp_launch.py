"""A training stage through `dvc repro` in one process, then through `dvc exp run -S` in 2 gloo processes (CPU).

The project's `finetune_eat` entry of dvc.yaml (cmd `python -m audiopipe.launch finetune_eat ...`, params
`finetune_eat` + `launcher.finetune_eat`) runs in a throwaway git+dvc repo on 64 synthetic 1-s clips, EAT demo
encoder from random init, 2 epochs x 4 steps. Run 1: `launcher.finetune_eat.nproc_per_node: 1`, batch 16.
Run 2: `dvc exp run -S launcher.finetune_eat.nproc_per_node=2 -S finetune_eat.batch_size=8`, i.e. torchrun with 2
processes of 8 clips each: the same global batch of 16. Run 3: two "machines" on this one, the README's multi-node
recipe: `dvc exp run -S launcher.finetune_eat.nnodes=2 -S ...rdzv_endpoint=127.0.0.1:PORT` in the repo (node
rank 0) and `python -m audiopipe.launch --nnodes 2 --nproc-per-node 1 --rdzv-endpoint ... --node-rank 1
finetune_eat ...` in a second folder with the same packs and training params, one process each.

Tolerance. With mixup, SpecAugment masks, roll/gain and stochastic depth off and the BCE averaged ("mean"), the
recipe does not depend on how a batch is split (the EAT encoder has LayerNorm, no BatchNorm); the ranks' batches
k together are the single-process batch k (`DistributedEpochSampler`), DDP averages the two half-batch gradients
(= the full-batch mean), and the LR schedule counts the same optimizer steps. What remains is float32
summation order in the gloo all-reduce: measured (3 runs of 2-3 epochs), valid/loss differs by at most 6e-8
and train/loss by 9e-8, valid/mAP and ROC-AUC are equal. `ATOL = 1e-4` leaves three orders of margin for other
CPUs and BLAS builds and still catches a wrong split: before the fix that came with this test (the LR schedule
counted the un-split steps, so 2 processes decayed it half as fast), valid/mAP differed by 0.05 and valid/loss by
0.03 at 3 epochs.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("dvc")
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")

ROOT = Path(__file__).resolve().parents[2]
STAGE = "finetune_eat"
ATOL = 1e-4
DETERMINISTIC = {  # every random augmentation off; BCE mean (the "positives" normaliser divides per rank)
    "clip_seconds": 1.0, "target_frames": 96, "epochs": 2, "batch_size": 16, "eval_batch_size": 16, "lr": 1.0e-3,
    "init": "random", "train_splits": ["train"], "mixup_alpha": 0.0, "mixup_prob": 0.0, "mask_ratio": 0.0,
    "roll_mag": False, "gain_db": 0.0, "drop_path": 0.0, "bce_normaliser": "mean", "device": "cpu",
}
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "1", "CI": "true", "OMP_NUM_THREADS": "1",
       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}


def _run(repo: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "dvc", *args[1:]] if args[0] == "dvc" else list(args)
    out = subprocess.run(cmd, cwd=repo, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(args)}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def _results(repo: Path) -> dict[str, object]:
    out = repo / "data" / STAGE
    curves = {name: list(csv.DictReader((out / f"{name}_curve.csv").open())) for name in ("train", "valid")}
    return {"metrics": json.loads((out / "metrics.json").read_text()), **curves}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _two_machines(repo: Path, node1: Path, spec: dict[str, object]) -> str:
    """Run 3: node rank 0 through `dvc exp run` in `repo`, node rank 1 through the launcher in `node1`."""
    shutil.copytree(repo / "data" / "pack_hdf5", node1 / "data" / "pack_hdf5")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[STAGE]["batch_size"] = 8  # the same training params on every machine; the launcher values: options
    (node1 / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    endpoint = f"127.0.0.1:{_free_port()}"
    argv = str(spec["cmd"]).split()
    at = argv.index("audiopipe.launch") + 1
    worker = subprocess.Popen(
        [*argv[:at], "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-endpoint", endpoint, "--node-rank", "1",
         *argv[at:]],
        cwd=node1, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        out = _run(repo, "dvc", "exp", "run", STAGE, "-S", f"launcher.{STAGE}.nnodes=2",
                   "-S", f"launcher.{STAGE}.nproc_per_node=1", "-S", f"launcher.{STAGE}.rdzv_endpoint={endpoint}",
                   "-S", f"{STAGE}.batch_size=8")
        log, _ = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert worker.returncode == 0, log[-3000:]
    assert not (node1 / "data" / STAGE / "metrics.json").exists()  # rank 0 alone writes, on node rank 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, object]]:
    from audiopipe.data.synthetic import make_synthetic_pack

    repo = tmp_path_factory.mktemp("ddp")
    make_synthetic_pack(repo / "data" / "pack_hdf5", n_per_split={"train": 64, "valid": 32}, sample_rate=16000)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params[STAGE].update(DETERMINISTIC)
    params["tracking"]["enabled"] = False
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    spec = dict(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][STAGE])
    cmd = " ".join(spec["cmd"].split())
    assert cmd.startswith(f"python -m audiopipe.launch {STAGE} stages/")
    spec["cmd"] = cmd.replace("python ", f"{sys.executable} ", 1).replace(" stages/", f" {ROOT}/stages/", 1)
    spec["deps"] = [d for d in spec["deps"] if (repo / d).exists()]  # code deps live in the project
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {STAGE: spec}}, sort_keys=False))
    _run(repo, "git", "init", "-q")
    _run(repo, "dvc", "init", "-q")
    _run(repo, "git", "add", "-A", ".dvc", "dvc.yaml", "params.yaml")
    _run(repo, "git", "commit", "-qm", "tiny pipeline")

    one = _run(repo, "dvc", "repro", STAGE)
    assert "torch.distributed.run" not in one
    results = {1: _results(repo)}
    _run(repo, "git", "add", "dvc.lock")
    _run(repo, "git", "commit", "-qm", "one process")
    two = _run(repo, "dvc", "exp", "run", STAGE, "-S", f"launcher.{STAGE}.nproc_per_node=2",
               "-S", f"{STAGE}.batch_size=8")
    assert "torch.distributed.run --standalone --nnodes 1 --nproc-per-node 2" in two, two[-2000:]
    results[2] = _results(repo)
    nodes = _two_machines(repo, tmp_path_factory.mktemp("node1"), spec)
    assert "--nnodes 2 --node-rank 0 --rdzv-backend static" in nodes, nodes[-2000:]
    results[3] = _results(repo)
    return results


RUNS = pytest.mark.parametrize("run", [2, 3], ids=["2_processes", "2_machines"])


@RUNS
def test_two_processes_take_the_same_optimizer_steps(runs: dict[int, dict[str, object]], run: int) -> None:
    one, two = runs[1]["metrics"], runs[run]["metrics"]
    assert one["train/steps"] == two["train/steps"] == 8  # 2 epochs x 64 clips / 16 (the global batch)
    assert one["best_epoch"] == two["best_epoch"]


@RUNS
@pytest.mark.parametrize("name", ["valid/mAP", "valid/roc_auc", "valid/mAP_last", "train/loss_last"])
def test_metrics_agree_with_one_process(runs: dict[int, dict[str, object]], run: int, name: str) -> None:
    assert runs[run]["metrics"][name] == pytest.approx(runs[1]["metrics"][name], abs=ATOL)


@RUNS
@pytest.mark.parametrize(("curve", "column"), [("train", "train/loss"), ("train", "train/lr"),
                                                ("valid", "valid/loss"), ("valid", "valid/mAP")])
def test_curves_agree_step_by_step(runs: dict[int, dict[str, object]], run: int, curve: str, column: str) -> None:
    one = [float(row[column]) for row in runs[1][curve]]  # type: ignore[attr-defined]
    two = [float(row[column]) for row in runs[run][curve]]  # type: ignore[attr-defined]
    assert len(one) == len(two) > 0
    assert two == pytest.approx(one, abs=ATOL)
