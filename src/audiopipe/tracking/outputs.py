"""Log a finished stage's files and final model to its MLflow run (one call per stage script).

`log_stage_outputs(run, out_dir, checkpoint)` logs every metrics/curve/plot file of `out_dir` as an
artifact, the checkpoint file itself, and the rebuilt model as an MLflow pytorch model whose signature comes
from a one-second waveform at the model's sample rate. With tracking off (`NullRun`) it returns at once
without loading anything.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from audiopipe.tracking.mlflow import NullRun, StageRun

log = logging.getLogger(__name__)
ARTIFACT_PATTERNS = ("metrics.json", "*curve*.csv", "*.png", "psd_roc.csv", "report.html")


def log_stage_outputs(run: NullRun, out_dir: Path, checkpoint: Path | None = None, log_model: bool = True) -> None:
    """Artifacts (metrics, curves, plots, the checkpoint) and the final model of one stage."""
    if not isinstance(run, StageRun):
        return
    for pattern in ARTIFACT_PATTERNS:
        for path in sorted(out_dir.glob(pattern)):
            run.log_artifact(path)
    if checkpoint is None or not checkpoint.is_file():
        return
    run.log_artifact(checkpoint, artifact_path="checkpoint")
    if log_model:
        _log_model(run, checkpoint)


def _log_model(run: StageRun, checkpoint: Path) -> None:
    import torch

    from audiopipe.models import load_model

    try:
        model, payload = load_model(checkpoint)
    except Exception as exc:  # noqa: BLE001 - e.g. an encoder-only checkpoint with no waveform front end
        log.warning("not logging %s as an MLflow model: %s", checkpoint, exc)
        return
    rate: Any = payload.get("sample_rate") or getattr(model, "sample_rate", None)
    if not rate:
        log.info("%s has no waveform input (no sample_rate); logged as a file only", checkpoint)
        return
    run.log_model(model, torch.zeros(1, int(rate)), name=checkpoint.stem)
