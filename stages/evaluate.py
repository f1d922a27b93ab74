"""DVC stage `evaluate`: every final model on the test split → metrics.json and report/ (report.html + its plots).

Reads the packs under --clips (the test split, and train.h5 + weak.h5 for the tagging baselines), the final
checkpoints of finetune_eat, distill_mobilenet(_nokd), atst_stage1 and atst_stage2 (missing ones are reported as
missing), their training curves, and the `evaluate` section of params.yaml; writes into --out: metrics.json (the
short set `dvc metrics diff` compares), results.json (every number), timings.json (latency) and report/: report.html
with every file it links (PNG plots, the PSD-ROC CSV), one folder that dvc.yaml declares as one output.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from audiopipe.config import EvaluateConfig, TrackingConfig, load_params
from audiopipe.evaluation.champions import crown_champions
from audiopipe.evaluation.final_models import CURVE_STAGES, SED, TAGGERS  # what --data must hold
from audiopipe.evaluation.run import evaluate_pipeline, manifest_hash, metrics_json, split_metrics
from audiopipe.stage_lock import hold_output_lock
from audiopipe.storage import write_text_atomic
from audiopipe.tracking import stage_run
from audiopipe.tracking.mlflow import git_commit

log = logging.getLogger(__name__)
CONFIG = EvaluateConfig  # the dataclass of this stage's params section (audiopipe.stage_registry)
REPORT_DIR = "report"  # under --out: report.html and everything it links (a dvc.yaml out of its own)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, required=True, help="folder with <split>.h5 packs")
    parser.add_argument("--data", type=Path, required=True, help="folder holding the stage outputs")
    parser.add_argument("--out", type=Path, required=True, help="output folder of this stage")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    hold_output_lock(args.out)  # one writer per output folder, even when an orphaned run is still alive
    cfg = load_params("evaluate", CONFIG, args.params)
    tracking = load_params("tracking", TrackingConfig, args.params)
    provenance = {"git commit": git_commit() or "unknown",
                  "data manifest sha256": manifest_hash(args.data / "download")}
    with stage_run("evaluate", params=cfg, enabled=tracking.enabled, experiment=tracking.experiment) as run:
        result = evaluate_pipeline(
            cfg, clips_dir=args.clips, out_dir=args.out / REPORT_DIR, provenance=provenance, tracker=run,
            taggers={name: args.data / rel for name, rel in TAGGERS.items()},
            sed_checkpoints={name: args.data / rel for name, rel in SED.items()},
            stage_dirs={stage: args.data / stage for stage in CURVE_STAGES},
            params_yaml=args.params.read_text(),
        )
        if tracking.enabled:
            crown_champions(result.metrics, args.data)
    summary, timings = split_metrics(result.metrics)
    write_text_atomic(args.out / "metrics.json", metrics_json(summary))  # the DVC metrics: a short set
    write_text_atomic(args.out / "results.json", metrics_json(result.metrics))  # every number, per model
    write_text_atomic(args.out / "timings.json", metrics_json(timings))  # CPU latency: not a DVC metric
    log.info("evaluate: report %s, missing inputs: %s", args.out / REPORT_DIR / "report.html",
             result.metrics["missing"] or "none")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
