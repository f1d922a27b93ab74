"""`audiopipe sweep STAGE --n-trials N [--storage URL] [--study NAME]`: Optuna sweep of one training stage.

Reads the stage's section, `sweep` and `tracking` from params.yaml; writes data/sweeps/<stage>/ (study.db,
trial-<n>/, best_params.yaml) and prints the `dvc exp run -S ...` command that applies the winner.
Several processes may run this at once on one storage (each runs its own N trials): start one first, or
initialise the study with `optuna create-study --skip-if-exists`, before starting the others.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", help="params.yaml section / DVC stage to tune (e.g. distill_mobilenet)")
    parser.add_argument("--n-trials", type=int, required=True, help="trials to run in this process")
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite file under --out)")
    parser.add_argument("--study", help="study name (default: the stage name); reuse it to resume")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="output folder (default: data/sweeps/<stage>)")
    parser.add_argument("--worker", type=int, help="worker index, mixed into the sampler seed (default: process id)")


def run(args: argparse.Namespace) -> int:
    from audiopipe.config import SweepConfig, TrackingConfig, load_params
    from audiopipe.sweep import load_targets, run_sweep

    targets = load_targets(args.params.resolve().parent)  # the training stages of dvc.yaml beside params.yaml
    if args.stage not in targets:
        raise SystemExit(f"audiopipe sweep: '{args.stage}' is not sweepable; choose from {sorted(targets)}")
    if args.n_trials < 1:
        raise SystemExit("audiopipe sweep: --n-trials must be >= 1")
    config_cls, _ = targets[args.stage].resolve()
    base_cfg: object = load_params(args.stage, config_cls, args.params)
    sweep_cfg = load_params("sweep", SweepConfig, args.params)
    tracking = load_params("tracking", TrackingConfig, args.params)
    summary = run_sweep(
        args.stage, base_cfg, sweep_cfg,
        n_trials=args.n_trials,
        out_dir=args.out or Path("data/sweeps") / args.stage,
        root=args.params.resolve().parent,
        storage=args.storage,
        study_name=args.study,
        tracking_enabled=tracking.enabled,
        experiment=tracking.experiment,
        worker=args.worker,
    )
    print(f"study {summary.study_name}: {summary.n_complete} complete, {summary.n_pruned} pruned, "
          f"{summary.n_failed} failed; best {sweep_cfg.stages[args.stage].metric} = {summary.best_value:.4f}")
    print(f"best params: {summary.best_params_file}")
    print(f"apply with:  {summary.command}")
    return 0
