"""Print what the pipeline produced: headline metrics per stage and where the report and MLflow runs are.

Run from the repository root after `dvc repro` (`make run` does this): `python -m audiopipe.summary`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from audiopipe.config import flatten

STAGES = ("pretrain_eat", "finetune_eat", "distill_mobilenet", "distill_mobilenet_nokd", "atst_stage1",
          "atst_stage2", "evaluate")
HEADLINE_KEYS = ("loss", "map", "psds1", "psds2", "f1", "auc")


def headline(metrics: dict[str, object]) -> dict[str, float]:
    """The metrics worth a line in the terminal: losses, mAP, PSDS and F1 values."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and any(word in key.lower() for word in HEADLINE_KEYS):
            out[key] = float(value)
    return out


def summarise(root: Path) -> str:
    lines = ["", "audiopipe: pipeline finished", "=" * 60]
    for stage in STAGES:
        path = root / "data" / stage / "metrics.json"
        if not path.is_file():
            lines.append(f"{stage:<24} (no metrics.json: stage not run)")
            continue
        metrics = headline(flatten(json.loads(path.read_text())))
        shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())[:6])
        if len(metrics) > 6:
            shown += f", ... ({len(metrics) - 6} more in {path})"
        lines.append(f"{stage:<24} {shown}")
    report = root / "data" / "evaluate" / "report" / "report.html"
    lines += [
        "=" * 60,
        "metrics:  data/<stage>/metrics.json   (dvc metrics show)",
        f"report:   {report if report.is_file() else 'data/evaluate/report/report.html (not written yet)'}",
        f"MLflow:   sqlite:///{root / 'mlflow.db'}   (make mlflow-ui, then http://127.0.0.1:5000)",
        "Prefect:  make prefect-ui, then python flows/serve.py for the scheduled deployment",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    print(summarise(Path.cwd()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
