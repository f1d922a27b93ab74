"""flows/: stage order, env hand-over to `dvc repro`, retries on download, flow state (one Prefect harness)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # `flows/` lives at the repository root, outside src/

pytest.importorskip("prefect")
from flows import tasks  # noqa: E402
from flows.pipeline import STAGE_ORDER, run_pipeline  # noqa: E402


class FakeRunner:
    """Stands in for the subprocess: records (stage, PIPELINE_PARENT_RUN_ID, MLFLOW_RUN_ID) per call."""

    def __init__(self, fail: Mapping[str, int] | None = None) -> None:
        self.fail = dict(fail or {})  # stage -> number of calls that exit 1 before one succeeds
        self.calls: list[tuple[str, str | None, str | None]] = []

    def __call__(self, args: list[str], env: Mapping[str, str], cwd: Path, log_line: Callable[[str], None]) -> int:
        assert args[:2] == ["dvc", "repro"]
        stage = args[2]
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
    (tmp_path / "params.yaml").write_text("tracking: {enabled: false, experiment: test}\n")
    return tmp_path


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> FakeRunner:
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
