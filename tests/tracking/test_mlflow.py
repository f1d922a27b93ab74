"""audiopipe.tracking.mlflow against a temporary SQLite store: params, metrics, tags, nesting, failure modes."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import pytest

from audiopipe.tracking import NullRun, default_tracking_uri, stage_run
from audiopipe.tracking.mlflow import PARENT_RUN_ENV, STAGE_TAG, flatten_params, repo_root


@dataclasses.dataclass(frozen=True)
class Inner:
    width: int
    names: list[str]


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    lr: float
    batch_size: int
    model: Inner


CFG = TinyConfig(lr=1e-3, batch_size=3, model=Inner(width=4, names=["a", "b"]))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store per module: migrations cost ~2 s, so create it once."""
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with stage_run("init", tracking_uri=uri, experiment="init"):
        pass
    return uri


@pytest.fixture
def client(store: str):  # noqa: ANN201
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store)


@pytest.fixture(autouse=True)
def _no_parent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)


def test_flatten_params_uses_dotted_keys() -> None:
    assert flatten_params(CFG) == {"lr": "0.001", "batch_size": "3", "model.width": "4", "model.names": "['a', 'b']"}


def test_disabled_run_is_a_noop_that_never_imports_mlflow(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # any `import mlflow` would now raise ImportError
    monkeypatch.chdir(tmp_path)
    with stage_run("resample", params=CFG, enabled=False) as run:
        run.log_metrics({"train/loss": 1.0}, step=0)
        run.log_params({"a": 1})
        run.log_artifact(tmp_path / "missing.json")
        assert run.log_model(object(), example_input=None) is None
        run.set_tag("k", "v")
    assert isinstance(run, NullRun) and run.run_id is None
    assert not (tmp_path / "mlflow.db").exists()


def test_params_metrics_and_tags_are_logged(client, store: str) -> None:  # noqa: ANN001
    with stage_run("distill_mobilenet", params=CFG, tracking_uri=store, experiment="t-log") as run:
        run.log_metrics({"train/loss": 2.0}, step=0)
        run.log_metrics({"train/loss": 1.5, "valid/mAP": 0.25}, step=1)
        run.set_tag("note", "x")
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.info.run_name == "distill_mobilenet"
    assert logged.data.params == {"lr": "0.001", "batch_size": "3", "model.width": "4", "model.names": "['a', 'b']"}
    assert logged.data.tags[STAGE_TAG] == "distill_mobilenet"
    assert logged.data.tags["note"] == "x"
    assert logged.data.metrics == {"train/loss": 1.5, "valid/mAP": 0.25}
    history = client.get_metric_history(run.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(0, 2.0), (1, 1.5)]


def test_git_commit_tag_when_in_a_git_checkout(client, store: str, monkeypatch, tmp_path: Path) -> None:  # noqa: ANN001
    import subprocess

    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "x"], cwd=tmp_path, check=True, env=env)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(tmp_path)
    with stage_run("evaluate", tracking_uri=store, experiment="t-git") as run:
        pass
    assert client.get_run(run.run_id).data.tags["mlflow.source.git.commit"] == head


def test_nested_under_env_parent(client, store: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import mlflow

    mlflow.set_tracking_uri(store)
    mlflow.set_experiment("t-nest")
    parent = mlflow.start_run(run_name="pipeline")
    parent_id = parent.info.run_id
    mlflow.end_run()  # a dvc subprocess has no active run in its own process, only the env var
    monkeypatch.setenv(PARENT_RUN_ENV, parent_id)
    with stage_run("resample", tracking_uri=store, experiment="t-nest") as run:
        pass
    assert client.get_run(run.run_id).data.tags["mlflow.parentRunId"] == parent_id


def test_in_process_nesting_prefers_the_active_run(client, store: str, monkeypatch) -> None:  # noqa: ANN001
    with stage_run("pipeline", tracking_uri=store, experiment="t-inproc") as top:
        pass
    monkeypatch.setenv(PARENT_RUN_ENV, top.run_id)  # used by the outer run, ignored by the inner one
    with stage_run("sweep", tracking_uri=store, experiment="t-inproc") as outer:
        with stage_run("trial-0", params={"lr": 0.1}, tracking_uri=store, experiment="t-inproc") as inner:
            inner.log_metrics({"valid/mAP": 0.5}, step=0)
    assert client.get_run(outer.run_id).data.tags["mlflow.parentRunId"] == top.run_id
    assert client.get_run(inner.run_id).data.tags["mlflow.parentRunId"] == outer.run_id
    assert client.get_run(outer.run_id).info.status == "FINISHED"


def test_missing_env_parent_falls_back_to_a_top_level_run(client, store: str, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv(PARENT_RUN_ENV, "0" * 32)  # e.g. a parent in another store
    with stage_run("resample", tracking_uri=store, experiment="t-orphan") as run:
        pass
    assert run.run_id is not None
    assert "mlflow.parentRunId" not in client.get_run(run.run_id).data.tags


def test_exception_in_body_propagates_and_marks_run_failed(client, store: str) -> None:  # noqa: ANN001
    with pytest.raises(RuntimeError, match="boom"):
        with stage_run("pretrain_eat", tracking_uri=store, experiment="t-fail") as run:
            raise RuntimeError("boom")
    assert client.get_run(run.run_id).info.status == "FAILED"


def test_unavailable_backend_warns_and_continues(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    (tmp_path / "a_file").write_text("not a folder")
    bad_uri = f"sqlite:///{tmp_path / 'a_file' / 'mlflow.db'}"  # the store cannot be created
    ran = False
    with caplog.at_level(logging.WARNING), stage_run("resample", tracking_uri=bad_uri) as run:
        run.log_metrics({"a": 1.0}, step=0)
        ran = True
    assert ran and isinstance(run, NullRun) and run.run_id is None
    assert "MLflow unavailable" in caplog.text


def test_log_model_records_a_pytorch_model_with_signature(client, store: str) -> None:  # noqa: ANN001
    torch = pytest.importorskip("torch")
    import mlflow

    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with stage_run("finetune_eat", tracking_uri=store, experiment="t-model") as run:
        uri = run.log_model(model, example_input=torch.zeros(3, 4))
    assert uri is not None and uri.startswith("models:/")
    info = mlflow.models.get_model_info(uri)
    assert info.signature is not None
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 4]
    reloaded = mlflow.pytorch.load_model(uri)
    x = torch.randn(2, 4)
    torch.testing.assert_close(reloaded(x), model(x))


def test_default_uri_points_at_repo_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "stages").mkdir()
    monkeypatch.chdir(tmp_path / "stages")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert repo_root() == tmp_path.resolve()
    assert default_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri() == "http://127.0.0.1:5000"


def test_backend_error_during_logging_warns_and_continues(
    store: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow

    def broken(*args: object, **kwargs: object) -> None:
        raise ConnectionError("server went away")

    with stage_run("resample", tracking_uri=store, experiment="t-broken") as run:
        monkeypatch.setattr(mlflow, "log_metrics", broken)
        with caplog.at_level(logging.WARNING):
            run.log_metrics({"train/loss": 1.0}, step=0)
        after = "reached"
    assert after == "reached"
    assert "log_metrics failed" in caplog.text and "server went away" in caplog.text


def test_stage_outputs_are_logged_as_artifacts_and_model(client, store: str, tmp_path: Path) -> None:  # noqa: ANN001
    import mlflow

    from audiopipe.models import build_model
    from audiopipe.storage import save_checkpoint
    from audiopipe.tracking.outputs import log_stage_outputs

    kwargs = {"width_mult": 0.1, "n_classes": 3, "sample_rate": 16000, "n_mels": 32, "hop_length": 320}
    model = build_model("mn_tagger", **kwargs)
    save_checkpoint(tmp_path / "student.pt", {"builder": "mn_tagger", "builder_kwargs": kwargs,
                                              "model": model.state_dict(), "class_names": ["a", "b", "c"],
                                              "sample_rate": 16000, "config": {}, "metrics": {}})
    (tmp_path / "metrics.json").write_text('{"valid/mAP": 0.5}')
    (tmp_path / "train_curve.csv").write_text("step,train/loss\n1,0.7\n")
    with stage_run("distill_mobilenet", tracking_uri=store, experiment="t-outputs") as run:
        log_stage_outputs(run, tmp_path, tmp_path / "student.pt")
    names = {a.path for a in client.list_artifacts(run.run_id)}
    assert {"metrics.json", "train_curve.csv", "checkpoint"} <= names
    models = mlflow.search_logged_models(experiment_ids=[client.get_run(run.run_id).info.experiment_id],
                                         output_format="list")
    ours = [m for m in models if m.source_run_id == run.run_id]
    assert len(ours) == 1
    assert mlflow.models.get_model_info(ours[0].model_uri).signature is not None
