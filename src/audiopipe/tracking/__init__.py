"""Experiment tracking for stages, flows and sweeps (MLflow behind a small, optional interface).

`stage_run(name, params=cfg, enabled=...)` is the only entry point stages use; see `tracking.mlflow`.
"""

from __future__ import annotations

from audiopipe.tracking.mlflow import NullRun, StageRun, default_tracking_uri, stage_run

__all__ = ["NullRun", "StageRun", "default_tracking_uri", "stage_run"]
