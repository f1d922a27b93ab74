"""What every training stage script does around its task (stages/pretrain_eat.py, finetune_eat.py,
distill_mobilenet.py, train_atst_sed.py), so the scripts keep only their options and inputs.

`open_stage` locks the output folder (one writer, also against an orphaned run; under torchrun rank 0 alone),
reads the stage's params section and creates the folder. `run_stage_task` runs the task inside the stage's MLflow
run and, on rank 0, writes `train_curve.csv` / `valid_curve.csv`, `metrics.json` (NaN as null: JSON has no NaN)
and logs the outputs (and the checkpoint as an MLflow model when `log_model`). Other ranks get None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from audiopipe.config import TrackingConfig, load_params
from audiopipe.stage_lock import hold_output_lock
from audiopipe.storage import write_json_atomic
from audiopipe.tracking import stage_run
from audiopipe.tracking.curves import write_curves
from audiopipe.tracking.outputs import log_stage_outputs
from audiopipe.training.distributed import launched_rank
from audiopipe.training.runner import TaskResult

Config = TypeVar("Config")


def open_stage(section: str, config: type[Config], out: Path, params: Path) -> Config:
    """Lock `out` (rank 0), read the `section` of `params` as `config`, create `out`."""
    if launched_rank() == 0:
        hold_output_lock(out)
    cfg = load_params(section, config, params)
    out.mkdir(parents=True, exist_ok=True)
    return cfg


def json_metrics(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """`metrics` with NaN/inf as None (null in metrics.json)."""
    return {k: v if math.isfinite(v) else None for k, v in metrics.items()}


def run_stage_task(section: str, cfg: Any, task: Callable[..., TaskResult], task_kwargs: dict[str, Any], *,
                   out: Path, params: Path, checkpoint: Path, log_model: bool) -> TaskResult | None:
    """Run `task(cfg, **task_kwargs, tracker=run)` in the stage's MLflow run and write its outputs (module doc)."""
    tracking = load_params("tracking", TrackingConfig, params)
    main_rank = launched_rank() == 0
    with stage_run(section, params=cfg, enabled=tracking.enabled and main_rank, experiment=tracking.experiment) as run:
        result = task(cfg, **task_kwargs, tracker=run)
        if not main_rank:
            return None
        write_curves(out, result.history)
        write_json_atomic(out / "metrics.json", json_metrics(result.metrics))
        log_stage_outputs(run, out, checkpoint, log_model=log_model)
    return result
