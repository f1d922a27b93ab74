"""One MLflow run per stage execution, behind `stage_run(...)`; a free no-op when tracking is off.

    with stage_run("distill_mobilenet", params=cfg, enabled=tracking.enabled) as run:
        run.log_metrics({"valid/mAP": 0.41}, step=3)
        run.log_artifact(out / "metrics.json")
        run.log_model(model, example_input=torch.zeros(1, 32000))

What is recorded: params = the flattened dataclass (dotted keys), tags `dvc.stage` (= the run name) and
`mlflow.source.git.commit`. Nesting: under `parent_run_id` when given, else under the run active in this
process (Optuna trials inside a sweep), else under the environment's `PIPELINE_PARENT_RUN_ID` (set by the
Prefect flow for the `dvc repro` subprocesses), else a top-level run.

Store: `MLFLOW_TRACKING_URI` if set, else `sqlite:///<repo root>/mlflow.db` where the repo root is the first
folder from the working directory upwards that holds `dvc.yaml` (the working directory if none does).
This package is the only place in `src/` that reads environment variables.

A failing tracking backend never kills a stage: errors are logged as warnings and the run continues
untracked. Exceptions raised by the body of the `with` block propagate unchanged (the run is marked FAILED).
An unreachable tracking server costs seconds, not minutes: unless set in the environment, MLflow's HTTP client
gets `HTTP_DEFAULTS` (2 retries, 1-s backoff factor, 10-s timeout; MLflow's own defaults are 7 retries with 2-s
exponential backoff and 120 s), the failure is logged once per process and later runs in the process skip the
server at once. `AUDIOPIPE_MLFLOW_REQUIRED=1` makes an unreachable store an error instead (`TrackingUnavailable`).

New experiments are tagged `mlflow.experimentKind=custom_model_development`, so MLflow 3's UI treats them as
training experiments, not GenAI ones (`experiment_url` adds `workflowType=machine_learning` for the UI's toggle).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PARENT_RUN_ENV = "PIPELINE_PARENT_RUN_ID"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
STAGE_TAG = "dvc.stage"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
_MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
REQUIRED_ENV = "AUDIOPIPE_MLFLOW_REQUIRED"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # MLflow 3 UI: "Machine learning" (vs "genai_development")
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
_unreachable: dict[str, str] = {}  # tracking URI -> first error, so a dead server is tried (and reported) once


class TrackingUnavailable(RuntimeError):
    """The tracking store could not be reached and AUDIOPIPE_MLFLOW_REQUIRED is set."""


def tracking_required() -> bool:
    return os.environ.get(REQUIRED_ENV, "").strip().lower() in ("1", "true", "yes")


def bound_http_retries() -> None:
    """Set MLflow's HTTP retry/timeout variables to `HTTP_DEFAULTS` where the user has not set them."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def experiment_url(ui: str, experiment_id: str) -> str:
    """Link that opens the experiment's training runs in MLflow 3's UI (not the GenAI overview)."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def repo_root(start: Path | None = None) -> Path:
    """First folder from `start` (default: cwd) upwards holding `dvc.yaml`; `start` itself if none does."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    return start


def default_tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else the embedded SQLite store `sqlite:///<repo root>/mlflow.db`."""
    return os.environ.get(TRACKING_URI_ENV) or f"sqlite:///{repo_root() / 'mlflow.db'}"


def flatten_params(params: Any) -> dict[str, str]:
    """Dataclass or mapping -> {dotted key: string value} (nested sections joined with '.')."""
    if params is None:
        return {}
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = dataclasses.asdict(params)
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dataclass instance or a mapping, got {type(params).__name__}")
    flat: dict[str, str] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, Mapping) and value:
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = str(value)[:_MAX_PARAM_CHARS]

    walk(params, "")
    return flat


def git_commit(cwd: Path | None = None) -> str | None:
    """HEAD's commit hash, or None outside a Git checkout / before the first commit."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class NullRun:
    """Tracking switched off (or its backend unavailable): every call does nothing."""

    run_id: str | None = None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_params(self, params: Any) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_model(self, model: Any, example_input: Any, name: str = "model") -> str | None:
        return None

    def log_checkpoint_model(self, checkpoint: str | Path, name: str) -> str | None:
        return None

    def set_tag(self, key: str, value: Any) -> None:
        pass


class StageRun(NullRun):
    """An active MLflow run; each call that fails in the backend logs a warning and is skipped."""

    def __init__(self, mlflow: Any, run_id: str) -> None:
        self._mlflow = mlflow
        self.run_id = run_id

    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking must never kill a stage
            log.warning("MLflow %s failed (%s: %s); continuing without it", what, type(exc).__name__, exc)
            return None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = {str(k): float(v) for k, v in metrics.items()}
        if values:
            self._guard("log_metrics", self._mlflow.log_metrics, values, step=step)

    def log_params(self, params: Any) -> None:
        flat = flatten_params(params)
        if flat:
            self._guard("log_params", self._mlflow.log_params, flat)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._guard("log_artifact", self._mlflow.log_artifact, str(path), artifact_path=artifact_path)

    def log_model(self, model: Any, example_input: Any, name: str = "model") -> str | None:
        """Log `model` as an MLflow pytorch model with a signature inferred from `example_input`.

        Returns the model URI (`models:/<id>`), or None when logging failed.
        """
        info = self._guard("log_model", _log_torch_model, self._mlflow, model, example_input, name)
        return None if info is None else str(info.model_uri)

    def log_checkpoint_model(self, checkpoint: str | Path, name: str) -> str | None:
        """Log a tagger/detector checkpoint as the servable pyfunc model of `tracking.pyfunc_model` (any-length
        audio in, class-name columns out) and register it as `name`. Returns the model URI or None."""
        from audiopipe.tracking.pyfunc_model import log_pyfunc_model

        info = self._guard("log_model", log_pyfunc_model, self._mlflow, checkpoint, name)
        return None if info is None else str(info.model_uri)

    def set_tag(self, key: str, value: Any) -> None:
        self._guard("set_tag", self._mlflow.set_tag, key, str(value))


def _log_torch_model(mlflow: Any, model: Any, example_input: Any, name: str) -> Any:
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            output = model(example_input.to(device))
    finally:
        model.train(was_training)
    if isinstance(output, (tuple, list)):
        output = {f"output_{i}": o.detach().cpu().numpy() for i, o in enumerate(output)}
    else:
        output = output.detach().cpu().numpy()
    signature = infer_signature(example_input.cpu().numpy(), output)
    # "pickle" (not MLflow 3's default "pt2"): torch.export traces a fixed graph and fails on models with
    # data-dependent shapes; the pickle needs `audiopipe` importable where the model is loaded.
    # Explicit requirements skip MLflow's slow requirement inference (it reloads the model in a subprocess).
    return mlflow.pytorch.log_model(
        model,
        name=name,
        signature=signature,
        serialization_format="pickle",
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "cloudpickle", "audiopipe"],
    )


def _set_experiment(mlflow: Any, uri: str, experiment: str) -> None:
    """Select `experiment`, creating it on first use; artifacts of a SQLite store go next to the .db file.

    (MLflow's default artifact root is `./mlruns` under whatever the working directory happens to be.)
    """
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is None:
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
        try:
            mlflow.create_experiment(experiment, artifact_location=location,
                                     tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception:  # noqa: BLE001 - created meanwhile by a concurrent process
            if mlflow.get_experiment_by_name(experiment) is None:
                raise
    elif EXPERIMENT_KIND_TAG not in (existing.tags or {}):  # created by an older audiopipe or by hand
        mlflow.MlflowClient().set_experiment_tag(existing.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_experiment(experiment)


def _start(name: str, params: Any, tracking_uri: str | None, experiment: str, parent_run_id: str | None) -> Any:
    import mlflow

    uri = tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    _set_experiment(mlflow, uri, experiment)
    tags = {STAGE_TAG: name}
    commit = git_commit()
    if commit:
        tags[GIT_COMMIT_TAG] = commit
    active = mlflow.active_run()
    if parent_run_id is None and active is not None:
        run = mlflow.start_run(run_name=name, nested=True, tags=tags)
    else:
        parent = parent_run_id or os.environ.get(PARENT_RUN_ENV) or None
        try:
            run = mlflow.start_run(run_name=name, parent_run_id=parent, nested=active is not None, tags=tags)
        except Exception as exc:  # noqa: BLE001 - e.g. the parent lives in another store: log unnested
            if parent is None:
                raise
            log.warning("MLflow parent run %s unusable (%s); logging %r as a top-level run", parent, exc, name)
            run = mlflow.start_run(run_name=name, tags=tags)
    tracked = StageRun(mlflow, run.info.run_id)
    tracked.log_params(params)
    return tracked


@contextmanager
def stage_run(
    name: str,
    params: Any = None,
    enabled: bool = True,
    tracking_uri: str | None = None,
    experiment: str = "audiopipe",
    parent_run_id: str | None = None,
) -> Iterator[NullRun]:
    """Open one MLflow run named `name` for the duration of the block and yield its logger.

    Args:
        name: Run name, also stored as tag `dvc.stage` (the DVC stage, or `trial-<n>` inside a sweep).
        params: Config dataclass (or mapping) logged as flattened params.
        enabled: False yields a `NullRun` without importing MLflow.
        tracking_uri: Store URI; default `default_tracking_uri()`.
        experiment: MLflow experiment name (created on first use).
        parent_run_id: Explicit parent; default the active run in this process, else `PIPELINE_PARENT_RUN_ID`.
    """
    if not enabled:
        yield NullRun()
        return
    uri = tracking_uri or default_tracking_uri()
    if uri in _unreachable:  # reported once already; do not wait for the same dead server again
        yield NullRun()
        return
    bound_http_retries()
    try:
        tracked = _start(name, params, uri, experiment, parent_run_id)
    except Exception as exc:  # noqa: BLE001 - a stage must not die because MLflow is unavailable
        if tracking_required():
            raise TrackingUnavailable(f"MLflow store {uri} unreachable ({type(exc).__name__}: {exc}); "
                                      f"unset {REQUIRED_ENV} to run untracked") from exc
        _unreachable[uri] = f"{type(exc).__name__}: {exc}"
        log.warning("MLflow unavailable at %s (%s: %s); %r and later runs in this process are untracked "
                    "(set %s=1 to stop instead)", uri, type(exc).__name__, str(exc)[:300], name, REQUIRED_ENV)
        yield NullRun()
        return
    status = "FINISHED"
    try:
        yield tracked
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        tracked._guard("end_run", tracked._mlflow.end_run, status=status)
