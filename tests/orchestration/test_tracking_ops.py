"""MLflow as its users meet it: experiments open on training runs; a dead server costs seconds and is reported once."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest

pytest.importorskip("mlflow")
from audiopipe.tracking import mlflow as tracking  # noqa: E402
from audiopipe.tracking import stage_run  # noqa: E402


def test_new_and_existing_experiments_are_marked_as_model_training(tmp_path: Path) -> None:
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with stage_run("resample", tracking_uri=store, experiment="fresh"):
        pass
    client = mlflow.MlflowClient(store)
    assert client.get_experiment_by_name("fresh").tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    client.create_experiment("old")  # made before this fix (or by hand): no kind tag
    with stage_run("resample", tracking_uri=store, experiment="old"):
        pass
    assert client.get_experiment_by_name("old").tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert tracking.experiment_url("http://127.0.0.1:5000/", "3") == (
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning")


@pytest.fixture
def dead_server(monkeypatch: pytest.MonkeyPatch) -> str:
    for key in tracking.HTTP_DEFAULTS:  # our bounded defaults apply only where the user set nothing
        monkeypatch.setenv(key, "placeholder")
        monkeypatch.delenv(key)
    monkeypatch.delenv(tracking.REQUIRED_ENV, raising=False)
    monkeypatch.setattr(tracking, "_unreachable", {})
    with socket.socket() as sock:  # a port nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_dead_server_fails_fast_once_and_the_stage_runs_untracked(dead_server: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING), stage_run("resample", tracking_uri=dead_server) as run:
        run.log_metrics({"a": 1.0})
    first = time.perf_counter() - start
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING), stage_run("pack_hdf5", tracking_uri=dead_server) as again:
        pass
    second = time.perf_counter() - start
    assert isinstance(run, tracking.NullRun) and isinstance(again, tracking.NullRun)
    assert first < 20, f"a dead tracking server took {first:.1f} s (MLflow's defaults: minutes)"
    assert second < 0.5
    assert caplog.text.count("MLflow unavailable") == 1
    assert "Max retries exceeded" in caplog.text  # a real connection failure, not a configuration error
    print(f"dead server: first run gave up after {first:.2f} s, second after {second:.3f} s")


def test_dead_server_stops_the_stage_when_tracking_is_required(dead_server: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracking.REQUIRED_ENV, "1")
    ran = False
    with pytest.raises(tracking.TrackingUnavailable, match="unreachable"):
        with stage_run("resample", tracking_uri=dead_server):
            ran = True
    assert not ran
