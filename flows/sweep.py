"""Prefect flow `sweep`: an Optuna study over one stage, with N worker processes on one storage.

    python flows/sweep.py distill_mobilenet --n-trials 20 --workers 2

Steps: check the declared search space against the stage's config and the keys its stage script declares
tunable (the targets come from dvc.yaml, `audiopipe.sweep.load_targets`), open the MLflow
parent run and create the study once (both databases are initialised before any worker starts: fresh SQLite
files raced by several processes fail their migrations), then run `audiopipe sweep STAGE` in `workers`
subprocesses (each runs its share of the trials; their sweep runs nest under this flow's run), and finally
write best_params.yaml from the whole study. The objective is `audiopipe.sweep`: no training logic here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiopipe.config import SweepConfig, TrackingConfig, load_params  # noqa: E402
from audiopipe.sweep import (  # noqa: E402
    apply_overrides,
    check_tunable,
    default_storage,
    init_study,
    load_targets,
    suggest,
    write_best,
)
from audiopipe.tracking import stage_run  # noqa: E402
from flows.pipeline import tracking_uri_for  # noqa: E402
from flows.tasks import run_command  # noqa: E402


def check_space(stage: str, root: Path) -> SweepConfig:
    """Fail before any worker starts if the declared space names keys the stage cannot take."""
    import optuna

    sweep_cfg = load_params("sweep", SweepConfig, root / "params.yaml")
    targets = load_targets(root)
    if stage not in sweep_cfg.stages or stage not in targets:
        raise ValueError(f"no search space for '{stage}': declared {sorted(sweep_cfg.stages)}, "
                         f"sweepable {sorted(targets)}")
    space = sweep_cfg.stages[stage].space
    def first(spec: dict) -> object:  # list choices are drawn as their JSON text (audiopipe.sweep.suggest)
        value = spec["choices"][0] if "choices" in spec else spec["low"]
        return json.dumps(value) if isinstance(value, (list, dict)) else value

    low = {k: first(v) for k, v in space.items()}
    check_tunable(stage, space)
    overrides = suggest(optuna.trial.FixedTrial(low), space)
    config_cls, _ = targets[stage].resolve()
    apply_overrides(load_params(stage, config_cls, root / "params.yaml"), overrides)
    return sweep_cfg


@task(name="sweep-worker", cache_policy=NO_CACHE, task_run_name="sweep worker {index}")
def sweep_worker(stage: str, n_trials: int, storage: str, study: str, repo: str, parent_run_id: str | None,
                 index: int) -> None:
    args = [sys.executable, "-m", "audiopipe.cli", "sweep", stage, "--n-trials", str(n_trials),
            "--storage", storage, "--study", study, "--worker", str(index)]
    run_command(args, cwd=Path(repo), parent_run_id=parent_run_id, name=f"{stage}/worker-{index}")


@flow(name="audiopipe-sweep")
def sweep(stage: str, n_trials: int, workers: int = 1, storage: str | None = None, study: str | None = None,
          repo: str = ".") -> dict:
    """Run `n_trials` trials split over `workers` processes; returns the best trial's value and params."""
    import optuna

    root = Path(repo).resolve()
    sweep_cfg = check_space(stage, root)
    out_dir = root / "data" / "sweeps" / stage
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(out_dir)
    study = study or stage
    tracking = load_params("tracking", TrackingConfig, root / "params.yaml")
    with stage_run(f"sweep-flow-{stage}", params={"n_trials": n_trials, "workers": workers, "study": study},
                   enabled=tracking.enabled, experiment=tracking.experiment,
                   tracking_uri=tracking_uri_for(root)) as parent:
        init_study(storage, study, sweep_cfg.stages[stage].direction, sweep_cfg.stages[stage].metric)
        shares = [n_trials // workers + (i < n_trials % workers) for i in range(workers)]
        futures = [sweep_worker.submit(stage, share, storage, study, str(root), parent.run_id, i)
                   for i, share in enumerate(shares) if share]
        for future in futures:
            future.result()
        summary = write_best(optuna.load_study(study_name=study, storage=storage), stage, out_dir, storage)
        parent.log_artifact(summary.best_params_file)
    return {"value": summary.best_value, "params": summary.best_params, "apply": summary.command}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=sorted(load_targets(Path("."))))
    parser.add_argument("--n-trials", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (at most 2 on 2 cores)")
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite under data/sweeps/<stage>)")
    parser.add_argument("--study", help="study name (default: the stage)")
    args = parser.parse_args()
    result = sweep(args.stage, args.n_trials, args.workers, args.storage, args.study)
    print(f"best {result['value']:.4f} with {result['params']}\napply with: {result['apply']}")


if __name__ == "__main__":
    main()
