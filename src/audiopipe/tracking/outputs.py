"""Log a finished stage's files and final model to its MLflow run (one call per stage script).

`log_stage_outputs(run, out_dir, checkpoint)` logs every metrics/curve/plot file of `out_dir` as an
artifact, the checkpoint file itself, and, for taggers and detectors, the servable pyfunc model of
`tracking.pyfunc_model` registered under a name per stage output (`registered_name`). With tracking off
(`NullRun`) it returns at once without loading anything.
"""

from __future__ import annotations

import logging
from pathlib import Path

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


# checkpoint stem -> the stage folder it is normally written to; a suffix of the folder name (e.g. `_nokd`)
# is added to the registered name so each stage output gets its own registered model
_STAGE_FOLDERS = {"student": "distill_mobilenet", "eat_tagger": "finetune_eat"}


def registered_name(checkpoint: Path) -> str:
    """`student` (data/distill_mobilenet/student.pt), `student_nokd`, `eat_tagger`, `atst_stage2` (model.pt)."""
    folder, stem = checkpoint.parent.name, checkpoint.stem
    if stem == "model":
        return folder or stem
    base = _STAGE_FOLDERS.get(stem)
    return stem + (folder[len(base):] if base and folder.startswith(base) else "")


def _log_model(run: StageRun, checkpoint: Path) -> None:
    """The servable pyfunc model (audiopipe.tracking.pyfunc_model) of a tagger or detector checkpoint."""
    from audiopipe.inference.checkpoints import load_for_inference

    try:
        kind = load_for_inference(checkpoint).kind
    except Exception as exc:  # noqa: BLE001 - an unreadable checkpoint must not fail the stage
        log.warning("not logging %s as an MLflow model: %s", checkpoint, exc)
        return
    if kind not in ("tagger", "detector"):
        log.info("%s is a %s checkpoint, logged as a file only", checkpoint, kind)
        return
    run.log_checkpoint_model(checkpoint, registered_name(checkpoint))
