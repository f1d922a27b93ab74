"""Prefect tasks that run DVC stages as subprocesses; DVC owns caching, so Prefect caching is off.

`dvc_repro(stage, parent_run_id=...)` runs `dvc repro <stage>` in the repository, streams its output line by
line to the Prefect logger and raises `StageFailed` (with the output's tail) on a non-zero exit. The child
environment never carries `MLFLOW_RUN_ID` (it would override the parent in child runs, mlflow#15713) and
carries `PIPELINE_PARENT_RUN_ID` so each stage's MLflow run nests under the flow's run.

`RUNNER` (streamed stages) and `STATUS_RUNNER` (`dvc status --json`) are the only places that start processes;
tests replace them with fakes. DVC is started as `<this python> -m dvc` when importable (so a venv that is not
on PATH still works), and the child PATH starts with this interpreter's folder (dvc.yaml commands say `python`).
"""

from __future__ import annotations

import collections
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
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


class DvcMissing(RuntimeError):
    """Neither this interpreter nor PATH provides DVC; raised before any task, so nothing is retried."""


def dvc_command() -> list[str]:
    """How to start DVC: this interpreter's `-m dvc` (the venv's, even when the venv is not on PATH), else PATH."""
    if importlib.util.find_spec("dvc") is not None:
        return [sys.executable, "-m", "dvc"]
    found = shutil.which("dvc")
    if found:
        return [found]
    raise DvcMissing(f"dvc is not installed for {sys.executable} and not on PATH. Fix: `make install`, then run "
                     "the flow with the project's interpreter (`.venv/bin/python flows/pipeline.py`) or put "
                     "`.venv/bin` on PATH")


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
    if base is None:  # dvc.yaml commands say `python`: the flow's interpreter (the venv) must come first on PATH
        bindir = str(Path(sys.executable).parent)
        if env.get("PATH", "").split(os.pathsep)[0] != bindir:
            env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")]).rstrip(os.pathsep)
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
    args = [*dvc_command(), "repro", stage] + (["--force", "--single-item"] if force else [])
    run_command(args, cwd=Path(repo), parent_run_id=parent_run_id, name=stage)
    return stage


@task(name="dvc-exp-run", cache_policy=NO_CACHE, retries=0, task_run_name="dvc exp run {set_params}")
def dvc_exp_run(set_params: list[str], targets: list[str], parent_run_id: str | None = None, repo: str = ".",
                name: str | None = None) -> str:
    """`dvc exp run -S key=value ... [targets]`: an experiment with changed hyper-parameters (DVC records it)."""
    args = [*dvc_command(), "exp", "run", *[arg for item in set_params for arg in ("-S", item)]]
    args += (["--name", name] if name else []) + targets
    run_command(args, cwd=Path(repo), parent_run_id=parent_run_id, name="exp")
    return name or "experiment"


def _status_subprocess(args: list[str], cwd: Path) -> tuple[int, str]:
    out = subprocess.run(args, cwd=cwd, env=child_env(None), capture_output=True, text=True, check=False)
    return out.returncode, out.stdout if out.returncode == 0 else out.stderr


# (args, cwd) -> (exit code, stdout or stderr). Replaced in tests.
STATUS_RUNNER: Callable[[list[str], Path], tuple[int, str]] = _status_subprocess


def changed_stages(repo: Path) -> set[str]:
    """Stages `dvc status` reports as changed (one call for the whole pipeline)."""
    code, text = STATUS_RUNNER([*dvc_command(), "status", "--json"], repo)
    if code != 0:
        raise StageFailed(f"dvc status failed:\n{text[-4000:]}")
    return {name.rsplit(":", 1)[-1] for name in json.loads(text or "{}")}


def downstream(dvc_yaml: Mapping[str, object], changed: Iterable[str]) -> set[str]:
    """`changed` plus every stage that reads (transitively) an output of one of them, from dvc.yaml alone."""
    stages: Mapping[str, Mapping[str, list]] = dvc_yaml.get("stages", {})  # type: ignore[assignment]

    def paths(items: list) -> list[str]:
        return [item if isinstance(item, str) else next(iter(item)) for item in items or []]

    outs = {name: paths(spec.get("outs", [])) + paths(spec.get("metrics", [])) + paths(spec.get("plots", []))
            for name, spec in stages.items()}
    result, frontier = set(changed), list(changed)
    while frontier:
        produced = outs.get(frontier.pop(), [])
        for name, spec in stages.items():
            reads = paths(spec.get("deps", []))
            if name not in result and any(d == o or d.startswith(o + "/") or o.startswith(d + "/")
                                          for d in reads for o in produced):
                result.add(name)
                frontier.append(name)
    return result


def repro_task(stage: str) -> Callable[..., str]:
    """The task for one stage: `download` retries (network), everything else fails fast."""
    if stage == "download":
        return dvc_repro.with_options(retries=DOWNLOAD_RETRIES, retry_delay_seconds=DOWNLOAD_RETRY_DELAY_S)
    return dvc_repro


def stages_in(dvc_yaml: Path) -> list[str]:
    """Stage names of a dvc.yaml in file order, the pipeline order (`audiopipe.stage_registry`, the one reader)."""
    from audiopipe.stage_registry import read_stages

    return list(read_stages(dvc_yaml))


def check_stages(requested: Iterable[str], known: Iterable[str]) -> None:
    unknown = sorted(set(requested) - set(known))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; dvc.yaml has {list(known)}")
