"""Prefect tasks that run DVC stages as subprocesses; DVC owns caching, so Prefect caching is off.

`dvc_repro(stage, parent_run_id=...)` runs `dvc repro <stage>` in the repository, streams its output line by
line to the Prefect logger and raises `StageFailed` (with the output's tail) on a non-zero exit. The child
environment never carries `MLFLOW_RUN_ID` (it would override the parent in child runs, mlflow#15713) and
carries `PIPELINE_PARENT_RUN_ID` so each stage's MLflow run nests under the flow's run.

`RUNNER` is the one place that starts processes; tests replace it with a fake that records the calls.
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

PARENT_RUN_ENV = "PIPELINE_PARENT_RUN_ID"
DOWNLOAD_RETRIES = 2  # network fetches are the only flaky step; training failures are not retried
DOWNLOAD_RETRY_DELAY_S = 30


class StageFailed(RuntimeError):
    """A `dvc repro` subprocess exited non-zero (the message holds the end of its output)."""


def _subprocess_runner(args: list[str], env: Mapping[str, str], cwd: Path, log_line: Callable[[str], None]) -> int:
    with subprocess.Popen(args, cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log_line(line.rstrip("\n"))
        return proc.wait()


# (args, env, cwd, log_line) -> exit code. Replaced in tests.
RUNNER: Callable[[list[str], Mapping[str, str], Path, Callable[[str], None]], int] = _subprocess_runner


def child_env(parent_run_id: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a stage subprocess: without MLFLOW_RUN_ID, with PIPELINE_PARENT_RUN_ID when known."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if k not in ("MLFLOW_RUN_ID", PARENT_RUN_ENV)}
    if parent_run_id:
        env[PARENT_RUN_ENV] = parent_run_id
    return env


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:  # called outside a flow (`dvc_repro.fn(...)`, scripts)
        return logging.getLogger(__name__)


def run_command(args: list[str], *, cwd: Path, parent_run_id: str | None, name: str) -> None:
    """Run `args` through RUNNER, streaming output to the Prefect logger; raise StageFailed on failure."""
    logger = _logger()
    tail: collections.deque[str] = collections.deque(maxlen=40)

    def log_line(line: str) -> None:
        tail.append(line)
        logger.info("[%s] %s", name, line)

    logger.info("running %s", " ".join(args))
    code = RUNNER(args, child_env(parent_run_id), cwd, log_line)
    if code != 0:
        raise StageFailed(f"{' '.join(args)} exited with {code}; last output:\n" + "\n".join(tail))


@task(name="dvc-repro", cache_policy=NO_CACHE, retries=0, task_run_name="dvc repro {stage}")
def dvc_repro(stage: str, parent_run_id: str | None = None, repo: str = ".", force: bool = False) -> str:
    """`dvc repro <stage>` (upstream stages included, cached ones are no-ops); returns the stage name."""
    args = ["dvc", "repro", stage] + (["--force", "--single-item"] if force else [])
    run_command(args, cwd=Path(repo), parent_run_id=parent_run_id, name=stage)
    return stage


def repro_task(stage: str) -> Callable[..., str]:
    """The task for one stage: `download` retries (network), everything else fails fast."""
    if stage == "download":
        return dvc_repro.with_options(retries=DOWNLOAD_RETRIES, retry_delay_seconds=DOWNLOAD_RETRY_DELAY_S)
    return dvc_repro


def stages_in(dvc_yaml: Path) -> list[str]:
    """Stage names of a dvc.yaml in file order (`foreach`/`matrix` stages are not used in this project)."""
    import yaml

    return list((yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}))


def check_stages(requested: Iterable[str], known: Iterable[str]) -> None:
    unknown = sorted(set(requested) - set(known))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; dvc.yaml has {list(known)}")
