"""Serve `run_pipeline` as a Prefect deployment with a cron schedule (it then shows up in the Prefect UI).

    make prefect-ui                                        # terminal 1: server on http://127.0.0.1:4200
    export PREFECT_API_URL=http://127.0.0.1:4200/api       # terminal 2
    python flows/serve.py --cron "0 2 * * *"               # keeps running; scheduled runs execute here
    prefect deployment run 'audiopipe-pipeline/nightly'    # or the UI's "Run" button

The serving process must stay alive (run it under nohup/systemd on a server). One serving process per
workspace: DVC must never run twice in one checkout at the same time (limit=1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.pipeline import run_pipeline  # noqa: E402

DEFAULT_CRON = "0 2 * * *"  # nightly at 02:00 (server time zone)


def build_deployment(name: str = "nightly", cron: str = DEFAULT_CRON, repo: str = ".") -> object:
    """The RunnerDeployment that `serve` registers (separate so tests can inspect it without a server)."""
    return run_pipeline.to_deployment(
        name=name, cron=cron, parameters={"repo": str(Path(repo).resolve())},
        description="dvc repro of the whole audiopipe DAG, MLflow runs nested under one parent run",
        tags=["audiopipe", "dvc"],
    )


def main() -> None:
    from prefect import serve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="nightly", help="deployment name (default: %(default)s)")
    parser.add_argument("--cron", default=DEFAULT_CRON, help="cron schedule (default: %(default)r)")
    parser.add_argument("--repo", default=".", help="repository root holding dvc.yaml (default: cwd)")
    args = parser.parse_args()
    serve(build_deployment(args.name, args.cron, args.repo), limit=1)


if __name__ == "__main__":
    main()
