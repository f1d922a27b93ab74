"""DVC stage `predict_teacher`: teacher logits for every packed clip of every split, for distillation.

Reads the `predict_teacher` section of params.yaml, the packs under --clips and the tagger checkpoints
--checkpoints (plus `extra_checkpoints` from params; several are ensembled by averaging logits); writes
--out/predictions.h5 (aligned by clip with the packs) and --out/metrics.json (teacher mAP per labelled split).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from audiopipe.config import PredictTeacherConfig, TrackingConfig, load_params
from audiopipe.stage_lock import hold_output_lock
from audiopipe.storage import write_json_atomic
from audiopipe.tracking import stage_run
from audiopipe.training.predict import predict_teacher

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
    hold_output_lock(args.out)  # one writer per output folder, even when an orphaned run is still alive
    cfg = load_params("predict_teacher", CONFIG, args.params)
    tracking = load_params("tracking", TrackingConfig, args.params)
    args.out.mkdir(parents=True, exist_ok=True)
    with stage_run("predict_teacher", params=cfg, enabled=tracking.enabled, experiment=tracking.experiment) as run:
        result = predict_teacher(cfg, clips_dir=args.clips, checkpoints=list(args.checkpoints),
                                 out=args.out / "predictions.h5", tracker=run)
    metrics = {k: v if math.isfinite(v) else None for k, v in result.metrics.items()}  # NaN is not JSON
    write_json_atomic(args.out / "metrics.json", metrics)
    log.info("predict_teacher: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics.items())))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
