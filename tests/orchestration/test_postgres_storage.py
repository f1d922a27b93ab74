"""Optuna and MLflow on a real PostgreSQL server (started by the test): 2 worker processes, nothing lost or doubled.

Needs the server binaries (`make postgres`, part of `make test`); skipped with the reason if they are missing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("psycopg")
optuna = pytest.importorskip("optuna")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from postgres import find_bin, postgres_server  # noqa: E402

from audiopipe.sweep import init_study  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_bin() is None, reason="no PostgreSQL server binaries: run `make postgres`")]

from tests.test_sweep import WORKER as OPTUNA_WORKER  # noqa: E402 - argv: storage URL, folder, trials, seed

MLFLOW_WORKER = textwrap.dedent('''
    import sys
    from audiopipe.tracking import stage_run
    for i in range(int(sys.argv[3])):
        with stage_run(f"{sys.argv[2]}-{i}", params={"i": i}, tracking_uri=sys.argv[1], experiment="pg") as run:
            assert run.run_id, "not tracked"
            run.log_metrics({"valid/mAP": i / 10}, step=0)
''')


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with postgres_server(("optuna", "mlflow")) as url:
        yield url


def _workers(script: str, args: list[list[str]], tmp_path: Path) -> None:
    path = tmp_path / "worker.py"
    path.write_text(script)
    procs = [subprocess.Popen([sys.executable, str(path), *a], stderr=subprocess.PIPE, text=True) for a in args]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), "\n".join(e[-3000:] for e in errors)


def test_two_optuna_workers_share_a_postgres_study(server: str, tmp_path: Path) -> None:
    storage = f"{server}/optuna"
    init_study(storage, "toy", "maximize", "valid/mAP")
    _workers(OPTUNA_WORKER, [[storage, str(tmp_path / f"w{i}"), "4", "0"] for i in range(2)], tmp_path)
    trials = optuna.load_study(study_name="toy", storage=storage).trials
    assert sorted(t.number for t in trials) == list(range(8))  # none lost, none duplicated
    assert all(t.state.name == "COMPLETE" for t in trials)
    lrs = [t.params["lr"] for t in trials]
    assert len(set(lrs)) == 8, lrs


def test_two_processes_log_to_an_mlflow_store_on_postgres(server: str, tmp_path: Path) -> None:
    import mlflow

    from audiopipe.tracking import stage_run

    store = f"{server}/mlflow"
    with stage_run("init", tracking_uri=store, experiment="pg") as run:  # migrate once, before parallel writers
        assert run.run_id
    _workers(MLFLOW_WORKER, [[store, f"w{i}", "3"] for i in range(2)], tmp_path)
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("pg")
    names = sorted(r.info.run_name for r in client.search_runs([experiment.experiment_id]))
    assert names == sorted(["init"] + [f"w{i}-{j}" for i in range(2) for j in range(3)])
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
