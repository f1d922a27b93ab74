"""Prefect flow `run_pipeline`: one MLflow parent run, then `dvc repro <stage>` for each stage in STAGE_ORDER.

    python flows/pipeline.py                      # whole DAG (temporary Prefect server if PREFECT_API_URL unset)
    python flows/pipeline.py pack_hdf5 evaluate   # selected stages (each with its upstream, as `dvc repro` does)

DVC decides what actually reruns; each stage's MLflow run nests under this flow's `pipeline` run through
`PIPELINE_PARENT_RUN_ID`. A failing stage fails the flow (later stages are not started).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from prefect import flow, get_run_logger

if __package__ in (None, ""):  # `python flows/pipeline.py`: make `flows` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiopipe.config import TrackingConfig, load_params  # noqa: E402
from audiopipe.tracking import stage_run  # noqa: E402
from flows.tasks import check_stages, repro_task, stages_in  # noqa: E402

STAGE_ORDER: tuple[str, ...] = (
    "download",
    "resample",
    "pack_hdf5",
    "pretrain_eat",
    "finetune_eat",
    "predict_teacher",
    "distill_mobilenet",
    "distill_mobilenet_nokd",
    "atst_stage1",
    "atst_stage2",
    "evaluate",
)


def tracking_uri_for(root: Path) -> str:
    """The store the stages will use when run from `root` (same rule as audiopipe.tracking)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def _flow_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or "")


@flow(name="audiopipe-pipeline", log_prints=True)
def run_pipeline(stages: list[str] | None = None, repo: str = ".", force: bool = False) -> list[str]:
    """Run the selected stages (default: all) in pipeline order; returns the stages run, in order."""
    root = Path(repo).resolve()
    order = list(STAGE_ORDER)
    check_stages(stages or [], order)
    selected = [stage for stage in order if stages is None or stage in stages]
    tracking = load_params("tracking", TrackingConfig, root / "params.yaml")
    logger = get_run_logger()
    logger.info("stages: %s", ", ".join(selected))
    done: list[str] = []
    with stage_run("pipeline", params={"stages": ",".join(selected), "force": force}, enabled=tracking.enabled,
                   experiment=tracking.experiment, tracking_uri=tracking_uri_for(root)) as parent:
        parent.set_tag("prefect.flow_run_id", _flow_run_id())
        for stage in selected:
            done.append(repro_task(stage)(stage, parent_run_id=parent.run_id, repo=str(root), force=force))
        if (root / "dvc.lock").is_file():
            parent.log_artifact(root / "dvc.lock")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="*", help=f"stages to run (default: all): {', '.join(STAGE_ORDER)}")
    parser.add_argument("--repo", default=".", help="repository root holding dvc.yaml (default: cwd)")
    parser.add_argument("--force", action="store_true", help="rerun the stages even if DVC finds them up to date")
    args = parser.parse_args()
    missing = set(STAGE_ORDER) ^ set(stages_in(Path(args.repo) / "dvc.yaml"))
    if missing:
        parser.error(f"STAGE_ORDER and dvc.yaml disagree on {sorted(missing)}")
    run_pipeline(stages=args.stages or None, repo=args.repo, force=args.force)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
