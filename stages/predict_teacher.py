"""DVC stage `predict_teacher`: teacher logits for every packed clip of every split, for distillation.

Reads the `predict_teacher` section of params.yaml, the packs under --clips and the tagger checkpoints
--checkpoints (plus `extra_checkpoints` from params; several are ensembled by averaging logits); writes
--out/predictions.h5 (aligned by clip with the packs) and --out/metrics.json (teacher mAP per labelled split).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from audiopipe.config import PredictTeacherConfig, TrackingConfig, load_params
from audiopipe.storage import write_json_atomic
from audiopipe.tracking import stage_run
from audiopipe.training.predict import predict_teacher
from audiopipe.training.stage import json_metrics, open_stage

log = logging.getLogger(__name__)
CONFIG = PredictTeacherConfig  # the dataclass of this stage's params section (audiopipe.stage_registry)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, required=True, help="folder with <split>.h5 packs")
    parser.add_argument("--checkpoints", type=Path, nargs="+", required=True,
                        help="tagger checkpoint(s); logits of several are averaged")
    parser.add_argument("--out", type=Path, required=True, help="output folder of this stage")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    cfg = open_stage("predict_teacher", CONFIG, args.out, args.params)
    tracking = load_params("tracking", TrackingConfig, args.params)
    with stage_run("predict_teacher", params=cfg, enabled=tracking.enabled, experiment=tracking.experiment) as run:
        result = predict_teacher(cfg, clips_dir=args.clips, checkpoints=list(args.checkpoints),
                                 out=args.out / "predictions.h5", tracker=run)
    write_json_atomic(args.out / "metrics.json", json_metrics(result.metrics))
    log.info("predict_teacher: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics.items())))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
