"""audiopipe.sweep with a tiny fake training task: pruning, failed trials, best_params.yaml, 2 workers, MLflow."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from audiopipe.config import SweepConfig, SweepStageConfig  # noqa: E402
from audiopipe.sweep import (  # noqa: E402
    SweepTarget,
    apply_overrides,
    dvc_exp_command,
    init_study,
    register_target,
    run_sweep,
    suggest,
)
from audiopipe.training.runner import TaskResult  # noqa: E402


@dataclasses.dataclass(frozen=True)
class FakeCfg:
    lr: float
    batch_size: int
    epochs: int


BASE = FakeCfg(lr=1e-3, batch_size=2, epochs=3)
SPACE = {"lr": {"low": 1e-4, "high": 1e-1, "log": True}, "batch_size": {"choices": [2, 3]}}
# Per call: the validation value reported at every epoch, or an exception to raise.
SCRIPT: list[Any] = [0.9, RuntimeError("exploded"), 0.1, 0.95]


class FakeTask:
    """Reports `value` per epoch through on_epoch_end (so the pruner sees it) and returns it as the metric."""

    def __init__(self, script: list[Any]) -> None:
        self.script, self.calls, self.epochs_run = list(script), 0, []

    def __call__(self, cfg: FakeCfg, *, data: Path, checkpoint: Path, tracker: Any = None,
                 on_epoch_end: Any = None) -> TaskResult:
        outcome = self.script[self.calls % len(self.script)]
        self.calls += 1
        self.epochs_run.append(0)
        assert data.name == "packs" and checkpoint.parent.name.startswith("trial-")
        if isinstance(outcome, Exception):
            raise outcome
        for epoch in range(cfg.epochs):
            self.epochs_run[-1] += 1
            if tracker is not None:
                tracker.log_metrics({"valid/mAP": outcome}, step=epoch)
            on_epoch_end(epoch, {"valid/mAP": outcome, "train/loss": 1.0})
        checkpoint.write_text("weights")
        return TaskResult(metrics={"valid/mAP": outcome}, checkpoint=checkpoint)


def sweep_cfg() -> SweepConfig:
    stage = SweepStageConfig(metric="valid/mAP", direction="maximize", space=SPACE)
    return SweepConfig(pruner="median", n_startup_trials=1, n_warmup_steps=0, seed=0, stages={"fake": stage})


@pytest.fixture
def fake_task() -> FakeTask:
    task = FakeTask(SCRIPT)
    register_target("fake", SweepTarget(config=FakeCfg, task=task, inputs={"data": "packs"},
                                        outputs={"checkpoint": "model.pt"}))
    return task


def test_suggest_and_apply_overrides() -> None:
    values = suggest(optuna.trial.FixedTrial({"lr": 0.01, "batch_size": 3}), SPACE)
    assert values == {"lr": 0.01, "batch_size": 3}
    assert apply_overrides(BASE, values) == FakeCfg(lr=0.01, batch_size=3, epochs=3)
    with pytest.raises(KeyError, match="momentum"):
        apply_overrides(BASE, {"momentum": 0.9})


def test_suggest_rejects_malformed_space() -> None:
    with pytest.raises(ValueError, match="lr"):
        suggest(optuna.trial.FixedTrial({}), {"lr": {"low": 0.1}})


def test_dvc_exp_command() -> None:
    assert dvc_exp_command("distill_mobilenet", {"lr": 0.001, "batch_size": 64}) == (
        "dvc exp run -S 'distill_mobilenet.batch_size=64' -S 'distill_mobilenet.lr=0.001'")


def test_four_trials_prune_fail_and_write_best(tmp_path: Path, fake_task: FakeTask) -> None:
    out = tmp_path / "sweeps" / "fake"
    summary = run_sweep("fake", BASE, sweep_cfg(), n_trials=4, out_dir=out, root=tmp_path, tracking_enabled=False)
    study = optuna.load_study(study_name="fake", storage=summary.storage)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "PRUNED", "COMPLETE"]
    assert fake_task.epochs_run == [3, 0, 1, 3]  # the bad trial stopped after its first epoch
    assert study.trials[1].user_attrs["fail_reason"] == "RuntimeError: exploded"
    assert (summary.n_complete, summary.n_pruned, summary.n_failed) == (2, 1, 1)
    best = yaml.safe_load((out / "best_params.yaml").read_text())
    assert best["trial"] == 3 and best["value"] == pytest.approx(0.95)
    assert best["params"]["fake"] == study.trials[3].params
    assert best["apply"].startswith("dvc exp run -S 'fake.batch_size=")
    assert (out / "trial-3" / "model.pt").is_file()


def test_rerun_resumes_the_study(tmp_path: Path, fake_task: FakeTask) -> None:
    out = tmp_path / "sweeps" / "fake"
    run_sweep("fake", BASE, sweep_cfg(), n_trials=1, out_dir=out, root=tmp_path, tracking_enabled=False)
    summary = run_sweep("fake", BASE, sweep_cfg(), n_trials=1, out_dir=out, root=tmp_path, tracking_enabled=False)
    assert len(optuna.load_study(study_name="fake", storage=summary.storage).trials) == 2


def test_all_trials_failing_is_an_error(tmp_path: Path) -> None:
    register_target("fake", SweepTarget(config=FakeCfg, task=FakeTask([ValueError("bad data")]),
                                        inputs={"data": "packs"}, outputs={"checkpoint": "model.pt"}))
    with pytest.raises(RuntimeError, match="bad data"):
        run_sweep("fake", BASE, sweep_cfg(), n_trials=2, out_dir=tmp_path, tracking_enabled=False)


WORKER = textwrap.dedent('''
    import dataclasses, sys
    from pathlib import Path
    from audiopipe.config import SweepConfig, SweepStageConfig
    from audiopipe.sweep import SweepTarget, register_target, run_sweep
    from types import SimpleNamespace as TaskResult  # what the objective reads: .metrics (no torch import)

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        lr: float

    def task(cfg, *, checkpoint, tracker=None, on_epoch_end=None):
        on_epoch_end(0, {"valid/mAP": cfg.lr})
        return TaskResult(metrics={"valid/mAP": cfg.lr}, checkpoint=None, history=[])

    register_target("toy", SweepTarget(config=Cfg, task=task, inputs={}, outputs={"checkpoint": "m.pt"}))
    stage = SweepStageConfig(metric="valid/mAP", direction="maximize", space={"lr": {"low": 0.0, "high": 1.0}})
    cfg = SweepConfig(pruner="none", n_startup_trials=0, n_warmup_steps=0, seed=int(sys.argv[4]),
                      stages={"toy": stage})
    run_sweep("toy", Cfg(lr=0.5), cfg, n_trials=int(sys.argv[3]), out_dir=Path(sys.argv[2]), storage=sys.argv[1],
              tracking_enabled=False)
''')  # argv: storage URL, output folder, trials, study seed (the PostgreSQL test runs it too)


def test_two_worker_processes_share_one_storage(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/study.db"
    init_study(storage, "toy", "maximize")  # create the database once, before the workers race for it
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    # Both processes get the same study seed, as two `audiopipe sweep` commands on one params.yaml do.
    workers = [subprocess.Popen([sys.executable, str(script), storage, str(tmp_path), "3", "0"],
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [w.communicate(timeout=120)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], errors
    trials = optuna.load_study(study_name="toy", storage=storage).trials
    assert sorted(t.number for t in trials) == list(range(6))  # none lost, none duplicated
    assert all(t.state.name == "COMPLETE" for t in trials)
    lrs = [t.params["lr"] for t in trials]
    assert len(set(lrs)) == len(lrs), f"processes replayed each other's draws: {lrs}"
    assert (tmp_path / "best_params.yaml").is_file()


def test_worker_seeds_differ_by_worker_and_progress_and_repeat_for_equal_inputs() -> None:
    from audiopipe.sweep import worker_seed

    assert worker_seed(0, 0, 0) == worker_seed(0, 0, 0)
    assert len({worker_seed(0, 0, 0), worker_seed(0, 1, 0), worker_seed(0, 0, 3), worker_seed(1, 0, 0)}) == 4


def test_resumed_study_does_not_replay_its_first_trials(tmp_path: Path, fake_task: FakeTask) -> None:
    cfg = dataclasses.replace(sweep_cfg(), pruner="none")
    for n in (3, 2):  # two sequential runs with the same seed (the issue's `audiopipe sweep` then the flow)
        run_sweep("fake", BASE, cfg, n_trials=n, out_dir=tmp_path, tracking_enabled=False, worker=0)
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{tmp_path.resolve()}/study.db")
    lrs = [t.params["lr"] for t in study.trials]
    assert len(lrs) == 5 and len(set(lrs)) == 5, lrs
    assert study.metric_names == ["valid/mAP"]  # named objective (not "Objective 0" in optuna-dashboard)


def test_demo_pruner_settings_prune_a_bad_trial(tmp_path: Path) -> None:
    """params.yaml's `sweep` pruner settings, through run_sweep: a trial far below the median is pruned."""
    from audiopipe.config import load_params

    demo = load_params("sweep", SweepConfig, Path(__file__).resolve().parents[1] / "params.yaml")
    cfg = dataclasses.replace(sweep_cfg(), pruner=demo.pruner, n_startup_trials=demo.n_startup_trials,
                              n_warmup_steps=demo.n_warmup_steps)
    task = FakeTask([0.6, 0.7, 0.1, 0.65, 0.05])
    register_target("fake", SweepTarget(config=FakeCfg, task=task, inputs={"data": "packs"},
                                        outputs={"checkpoint": "model.pt"}))
    summary = run_sweep("fake", dataclasses.replace(BASE, epochs=4), cfg, n_trials=5, out_dir=tmp_path,
                        tracking_enabled=False)
    assert summary.n_pruned >= 1, f"pruner {demo.pruner} ({demo.n_startup_trials}, {demo.n_warmup_steps}) pruned none"
    assert min(task.epochs_run) < 4  # a pruned trial stopped before its epoch budget


def test_trials_are_nested_mlflow_runs(tmp_path: Path, fake_task: FakeTask, monkeypatch) -> None:  # noqa: ANN001
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("PIPELINE_PARENT_RUN_ID", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_sweep("fake", BASE, sweep_cfg(), n_trials=4, out_dir=tmp_path / "out", root=tmp_path,
              tracking_uri=uri, experiment="sweep-test")
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sweep-test").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    parent = by_name["sweep-fake"]
    trials = [by_name[f"trial-{n}"] for n in range(4)]
    assert all(t.data.tags["mlflow.parentRunId"] == parent.info.run_id for t in trials)
    assert [t.info.status for t in trials] == ["FINISHED", "FAILED", "FINISHED", "FINISHED"]
    assert trials[2].data.tags["optuna.state"] == "PRUNED"
    assert trials[3].data.params["batch_size"] in ("2", "3")
    assert [m.value for m in client.get_metric_history(trials[3].info.run_id, "valid/mAP")] == [0.95] * 3
    assert parent.data.metrics["best/valid/mAP"] == pytest.approx(0.95)


def test_cli_runs_a_sweep_and_prints_the_dvc_exp_command(tmp_path: Path, fake_task: FakeTask, capsys) -> None:  # noqa: ANN001
    import argparse

    from audiopipe.commands import sweep as command

    space = {"metric": "valid/mAP", "direction": "maximize", "space": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}}}
    params = {"fake": dataclasses.asdict(BASE), "tracking": {"enabled": False, "experiment": "x"},
              "sweep": {"pruner": "hyperband", "n_startup_trials": 1, "n_warmup_steps": 0, "seed": 0,
                        "stages": {"fake": space}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["fake", "--n-trials", "2", "--params", str(tmp_path / "params.yaml"),
                              "--out", str(tmp_path / "out")])
    assert command.run(args) == 0
    printed = capsys.readouterr().out
    assert "1 complete, 0 pruned, 1 failed" in printed
    assert "apply with:  dvc exp run -S 'fake.lr=" in printed
    assert (tmp_path / "out" / "best_params.yaml").is_file()
