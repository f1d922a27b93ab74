"""flows/: stage order, env hand-over to `dvc repro`, retries on download, flow state (one Prefect harness)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # `flows/` lives at the repository root, outside src/

pytest.importorskip("prefect")
from flows import tasks  # noqa: E402
from flows.pipeline import run_pipeline  # noqa: E402

STAGE_ORDER = tasks.stages_in(ROOT / "dvc.yaml")  # the pipeline order is dvc.yaml's


class FakeRunner:
    """Stands in for the subprocess: records (stage, PIPELINE_PARENT_RUN_ID, MLFLOW_RUN_ID) per call."""

    def __init__(self, fail: Mapping[str, int] | None = None) -> None:
        self.fail = dict(fail or {})  # stage -> number of calls that exit 1 before one succeeds
        self.calls: list[tuple[str, str | None, str | None]] = []

    def __call__(self, args: list[str], env: Mapping[str, str], cwd: Path, log_line: Callable[[str], None]) -> int:
        args = args[args.index("dvc") + 1:] if "dvc" in args else args  # after `python -m dvc` or `dvc`
        if args[:2] == ["exp", "run"]:
            self.calls.append(("exp " + " ".join(args[2:]), env.get("PIPELINE_PARENT_RUN_ID"), None))
            return 0
        assert args[0] == "repro"
        stage = args[1]
        self.calls.append((stage, env.get("PIPELINE_PARENT_RUN_ID"), env.get("MLFLOW_RUN_ID")))
        log_line(f"Running stage '{stage}'")
        if self.fail.get(stage, 0) > 0:
            self.fail[stage] -= 1
            log_line("ERROR: failed to reproduce")
            return 1
        return 0

    @property
    def stages(self) -> list[str]:
        return [call[0] for call in self.calls]


@pytest.fixture(scope="session")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    from prefect.settings import PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings(updates={PREFECT_HOME: str(tmp_path_factory.mktemp("prefect_home"))}):
        with prefect_test_harness(server_startup_timeout=90):
            yield


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_text("tracking: {enabled: false, experiment: test}\n"
                                          "distill_mobilenet: {batch_size: 8}\n")
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    return tmp_path


class FakeStatus:
    """Stands in for `dvc status --json`: reports `changed` (default: every stage) and counts the calls."""

    def __init__(self) -> None:
        self.changed: list[str] = list(STAGE_ORDER)
        self.calls = 0

    def __call__(self, args: list[str], cwd: Path) -> tuple[int, str]:
        assert args[-2:] == ["status", "--json"]
        self.calls += 1
        return 0, json.dumps({stage: [{"changed deps": {}}] for stage in self.changed})


@pytest.fixture
def status(monkeypatch: pytest.MonkeyPatch) -> FakeStatus:
    fake = FakeStatus()
    monkeypatch.setattr(tasks, "STATUS_RUNNER", fake)
    return fake


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, status: FakeStatus) -> FakeRunner:
    fake = FakeRunner()
    monkeypatch.setattr(tasks, "RUNNER", fake)
    monkeypatch.setattr(tasks, "DOWNLOAD_RETRY_DELAY_S", 0)
    return fake


def test_stage_order_matches_dvc_yaml_and_its_data_flow() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(STAGE_ORDER) == list(stages)
    produced: dict[str, str] = {}
    for stage in STAGE_ORDER:
        for out in stages[stage].get("outs", []):
            produced[str(out if isinstance(out, str) else next(iter(out)))] = stage
    for position, stage in enumerate(STAGE_ORDER):
        for dep in stages[stage]["deps"]:
            for out, producer in produced.items():
                if dep == out or dep.startswith(out + "/") or out.startswith(dep + "/"):
                    assert STAGE_ORDER.index(producer) < position, f"{stage} reads {dep} of later {producer}"


def test_only_stale_stages_and_their_downstream_run_after_one_status_call(harness: None, runner: FakeRunner,
                                                                          status: FakeStatus, repo: Path) -> None:
    status.changed = ["distill_mobilenet"]
    assert run_pipeline(repo=str(repo)) == ["distill_mobilenet", "evaluate"]
    assert runner.stages == ["distill_mobilenet", "evaluate"] and status.calls == 1


def test_noop_flow_runs_nothing_and_opens_no_mlflow_run(harness: None, runner: FakeRunner, status: FakeStatus,
                                                        repo: Path) -> None:
    import mlflow

    store = f"sqlite:///{repo / 'mlflow.db'}"
    (repo / "params.yaml").write_text("tracking: {enabled: true, experiment: noop}\n")
    status.changed = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", store)
        assert run_pipeline(repo=str(repo)) == []
    assert runner.calls == []
    experiment = mlflow.MlflowClient(store).get_experiment_by_name("noop")
    assert experiment is None or not mlflow.MlflowClient(store).search_runs([experiment.experiment_id])


def test_missing_dvc_fails_at_once_with_the_fix(harness: None, runner: FakeRunner, repo: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(tasks.shutil, "which", lambda name: None)
    monkeypatch.setattr(tasks, "DOWNLOAD_RETRY_DELAY_S", 30)  # would show as a 60-s delay if it were retried
    start = time.perf_counter()
    state = run_pipeline(repo=str(repo), return_state=True)
    assert state.is_failed() and time.perf_counter() - start < 20
    with pytest.raises(tasks.DvcMissing, match="make install"):
        state.result()
    assert runner.calls == []


def test_set_params_run_one_dvc_experiment(harness: None, runner: FakeRunner, repo: Path) -> None:
    run_pipeline(stages=["distill_mobilenet"], repo=str(repo), set_params=["distill_mobilenet.batch_size=16"],
                 experiment_name="bs16")
    assert runner.stages == ["exp -S distill_mobilenet.batch_size=16 --name bs16 distill_mobilenet"]
    state = run_pipeline(repo=str(repo), set_params=["distill_mobilenet.batch_sise=16"], return_state=True)
    assert state.is_failed() and len(runner.calls) == 1  # a misspelt key fails before DVC runs


def test_child_env_puts_this_interpreter_first_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin")
    assert tasks.child_env(None)["PATH"].split(":")[0] == str(Path(sys.executable).parent)


def test_child_env_strips_mlflow_run_id_and_sets_parent() -> None:
    env = tasks.child_env("parent123", base={"MLFLOW_RUN_ID": "x", "PIPELINE_PARENT_RUN_ID": "old", "PATH": "/bin"})
    assert env == {"PATH": "/bin", "PIPELINE_PARENT_RUN_ID": "parent123"}
    assert "PIPELINE_PARENT_RUN_ID" not in tasks.child_env(None, base={"PIPELINE_PARENT_RUN_ID": "old"})


def test_task_body_runs_dvc_repro_and_raises_with_output_tail(runner: FakeRunner, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_RUN_ID", "leaked")
    assert tasks.dvc_repro.fn("resample", parent_run_id="p1", repo=str(tmp_path)) == "resample"
    assert runner.calls == [("resample", "p1", None)]
    runner.fail["evaluate"] = 1
    with pytest.raises(tasks.StageFailed, match="failed to reproduce"):
        tasks.dvc_repro.fn("evaluate", repo=str(tmp_path))


def test_only_download_retries() -> None:
    assert tasks.repro_task("download").retries == tasks.DOWNLOAD_RETRIES > 0
    assert tasks.repro_task("distill_mobilenet").retries == 0


def test_flow_runs_all_stages_in_order(harness: None, runner: FakeRunner, repo: Path) -> None:
    state = run_pipeline(repo=str(repo), return_state=True)
    assert state.is_completed()
    assert state.result() == list(STAGE_ORDER)
    assert runner.stages == list(STAGE_ORDER)
    assert all(parent is None and leaked is None for _, parent, leaked in runner.calls)  # tracking off here


def test_flow_subset_keeps_pipeline_order(harness: None, runner: FakeRunner, repo: Path) -> None:
    assert run_pipeline(stages=["evaluate", "resample"], repo=str(repo)) == ["resample", "evaluate"]
    assert runner.stages == ["resample", "evaluate"]


def test_download_is_retried_then_the_flow_goes_on(harness: None, runner: FakeRunner, repo: Path) -> None:
    runner.fail["download"] = 2
    state = run_pipeline(stages=["download", "resample"], repo=str(repo), return_state=True)
    assert state.is_completed()
    assert runner.stages == ["download", "download", "download", "resample"]


def test_failing_stage_fails_the_flow_and_stops_it(harness: None, runner: FakeRunner, repo: Path) -> None:
    runner.fail["pretrain_eat"] = 1
    state = run_pipeline(repo=str(repo), return_state=True)
    assert state.is_failed()
    assert runner.stages == list(STAGE_ORDER[: STAGE_ORDER.index("pretrain_eat") + 1])  # no retry, no later stage


def test_serve_builds_a_cron_deployment(harness: None, repo: Path) -> None:
    from flows.serve import build_deployment

    deployment = build_deployment(name="nightly", cron="0 2 * * *", repo=str(repo))
    assert deployment.name == "nightly"
    assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]
    assert deployment.parameters == {"repo": str(repo.resolve())}
