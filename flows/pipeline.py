"""Prefect flow `run_pipeline`: `dvc status` once, then `dvc repro <stage>` for each stale stage, in order.

    python flows/pipeline.py                      # whole DAG (temporary Prefect server if PREFECT_API_URL unset)
    python flows/pipeline.py pack_hdf5 evaluate   # selected stages (each with its upstream, as `dvc repro` does)
    python flows/pipeline.py -S distill_mobilenet.batch_size=64 -S distill_mobilenet.epochs=4   # dvc exp run

Stale = what `dvc status` reports changed, plus every stage downstream of it in dvc.yaml; the rest is not
touched, and a run with nothing stale opens no MLflow run. `--force` reruns the selected stages. `set_params`
(`-S`, the deployment parameter shown in the Prefect UI) runs one `dvc exp run -S ...` instead, so an experiment
with changed hyper-parameters can be launched from the UI; DVC records it (`dvc exp show`). Each stage's MLflow
run nests under this flow's `pipeline` run through `PIPELINE_PARENT_RUN_ID`. A failing stage fails the flow
(later stages are not started). DVC missing fails the flow at once, before any task or MLflow run.
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
from flows.tasks import (  # noqa: E402
    changed_stages,
    check_stages,
    downstream,
    dvc_command,
    dvc_exp_run,
    repro_task,
    stages_in,
)


def tracking_uri_for(root: Path) -> str:
    """The store the stages will use when run from `root` (same rule as audiopipe.tracking)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def _flow_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or "")


def check_overrides(set_params: list[str], params: dict) -> None:
    """Fail before anything runs if a `key=value` override names no existing params.yaml key."""
    for item in set_params:
        key, sep, _ = item.partition("=")
        node = params
        for part in key.split("."):
            if not sep or not isinstance(node, dict) or part not in node:
                raise ValueError(f"override {item!r}: expected <section>.<key>=<value> with a params.yaml key")
            node = node[part]


@flow(name="audiopipe-pipeline", log_prints=True)
def run_pipeline(stages: list[str] | None = None, repo: str = ".", force: bool = False,
                 set_params: list[str] | None = None, experiment_name: str | None = None) -> list[str]:
    """Run the stale (or, with `force`, all) selected stages in pipeline order; returns the stages run.

    Args:
        stages: dvc.yaml stages to bring up to date (default: all).
        set_params: `dvc exp run -S` overrides, e.g. `["distill_mobilenet.batch_size=64"]`: run the selected
            stages (default: the whole pipeline) as one DVC experiment with these hyper-parameters.
        experiment_name: name of that DVC experiment (default: DVC's generated name).
    """
    import yaml

    dvc_command()  # DvcMissing here: the flow fails at once, with the fix, before any retry or MLflow run
    root = Path(repo).resolve()
    spec = yaml.safe_load((root / "dvc.yaml").read_text()) or {}
    order = stages_in(root / "dvc.yaml")  # the pipeline order: dvc.yaml lists producers first
    check_stages(stages or [], order)
    selected = [stage for stage in order if stages is None or stage in stages]
    logger = get_run_logger()
    if set_params:
        check_overrides(set_params, yaml.safe_load((root / "params.yaml").read_text()) or {})
        todo = selected
    elif force:
        todo = selected
    else:
        stale = downstream(spec, changed_stages(root))
        todo = [stage for stage in selected if stage in stale]
        if not todo:
            logger.info("dvc status: %s up to date; nothing to run", ", ".join(selected))
            return []
    tracking = load_params("tracking", TrackingConfig, root / "params.yaml")
    logger.info("stages: %s", ", ".join(todo))
    done: list[str] = []
    with stage_run("pipeline", params={"stages": ",".join(todo), "force": force, "set_params": set_params or []},
                   enabled=tracking.enabled, experiment=tracking.experiment,
                   tracking_uri=tracking_uri_for(root)) as parent:
        parent.set_tag("prefect.flow_run_id", _flow_run_id())
        if set_params:
            targets = [] if stages is None else todo
            dvc_exp_run(set_params, targets, parent_run_id=parent.run_id, repo=str(root), name=experiment_name)
            done = todo
        else:
            for stage in todo:
                done.append(repro_task(stage)(stage, parent_run_id=parent.run_id, repo=str(root), force=force))
        if (root / "dvc.lock").is_file():
            parent.log_artifact(root / "dvc.lock")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="*", help="dvc.yaml stages to run (default: all, in dvc.yaml order)")
    parser.add_argument("--repo", default=".", help="repository root holding dvc.yaml (default: cwd)")
    parser.add_argument("--force", action="store_true", help="rerun the stages even if DVC finds them up to date")
    parser.add_argument("-S", "--set-param", action="append", dest="set_params", metavar="SECTION.KEY=VALUE",
                        help="run as `dvc exp run -S SECTION.KEY=VALUE ...` (repeatable)")
    parser.add_argument("--name", help="name of the DVC experiment (with -S)")
    args = parser.parse_args()
    ran = run_pipeline(stages=args.stages or None, repo=args.repo, force=args.force, set_params=args.set_params,
                       experiment_name=args.name)
    print(f"ran: {', '.join(ran) or 'nothing (up to date)'}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
