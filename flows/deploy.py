"""Register `run_pipeline` as a deployment on a process work pool, for workers on this or another machine.

    make prefect-ui                                   # terminal 1: server on http://127.0.0.1:4200
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python flows/deploy.py --cron "0 2 * * *"         # terminal 2: creates pool `audiopipe` + deployment, exits
    make prefect-worker                               # terminal 3 (any machine with this checkout): runs flow runs
    prefect deployment run 'audiopipe-pipeline/nightly' -p 'set_params=["distill_mobilenet.batch_size=16"]'

Unlike `flows/serve.py` (one process that both schedules and runs), the deployment lives on the server and any
worker polling the pool runs it: the worker starts `run_pipeline` in a subprocess from the checkout at --repo
(the flow's code and the DVC workspace). The UI's "Run ▸ Custom run" form shows the flow's parameters: stages,
force, set_params (what `dvc exp run -S` takes) and experiment_name. Start one worker per workspace with
`--limit 1` (DVC refuses two commands at once in one checkout).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.pipeline import run_pipeline  # noqa: E402

DEFAULT_POOL = "audiopipe"
ENTRYPOINT = "flows/pipeline.py:run_pipeline"


def ensure_process_pool(name: str) -> None:
    """Create the process work pool `name` unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass


def deploy(name: str = "nightly", pool: str = DEFAULT_POOL, repo: str = ".", cron: str | None = None,
           parameters: dict[str, Any] | None = None) -> Any:
    """Create/update deployment `audiopipe-pipeline/<name>` on `pool`; returns its id."""
    root = Path(repo).resolve()
    ensure_process_pool(pool)
    flow = run_pipeline.from_source(source=str(root), entrypoint=ENTRYPOINT)
    return flow.deploy(
        name=name, work_pool_name=pool, cron=cron, parameters={"repo": str(root), **(parameters or {})},
        description="dvc status, then dvc repro of the stale stages (or dvc exp run -S set_params)",
        tags=["audiopipe", "dvc"], print_next_steps=False, build=False, push=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="nightly", help="deployment name (default: %(default)s)")
    parser.add_argument("--pool", default=DEFAULT_POOL, help="process work pool (default: %(default)s)")
    parser.add_argument("--cron", help="cron schedule, e.g. '0 2 * * *' (default: none, run on demand)")
    parser.add_argument("--repo", default=".", help="checkout the worker runs in (default: cwd)")
    args = parser.parse_args()
    deployment_id = deploy(args.name, args.pool, args.repo, args.cron)
    print(f"deployment audiopipe-pipeline/{args.name} ({deployment_id}) on pool {args.pool}; start a worker: "
          f"make prefect-worker (or prefect worker start --pool {args.pool} --limit 1)")


if __name__ == "__main__":
    main()
