"""DVC stage `pretrain_eat`: EAT self-supervised pre-training on every packed clip (labels unused).

Reads the `pretrain_eat` section of params.yaml and the `<split>.h5` packs under --clips; writes
--out/eat.pt (student encoder, builder `eat_<preset>`), --out/train_curve.csv + valid_curve.csv (per-step losses) and
--out/metrics.json (first/last loss).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from audiopipe.config import PretrainEatConfig, TrackingConfig, load_params
from audiopipe.stage_lock import hold_output_lock
from audiopipe.storage import write_json_atomic
from audiopipe.tracking import stage_run
from audiopipe.tracking.outputs import log_stage_outputs
from audiopipe.training.curves import write_curves
from audiopipe.training.distributed import launched_rank
from audiopipe.training.pretrain import pretrain_eat

log = logging.getLogger(__name__)
CONFIG = PretrainEatConfig  # the dataclass of this stage's params section (audiopipe.stage_registry)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, required=True, help="folder with <split>.h5 packs")
    parser.add_argument("--out", type=Path, required=True, help="output folder of this stage")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    main_rank = launched_rank() == 0  # under torchrun, rank 0 alone locks, tracks and writes the outputs
    if main_rank:
        hold_output_lock(args.out)  # one writer per output folder, even when an orphaned run is still alive
    cfg = load_params("pretrain_eat", CONFIG, args.params)
    tracking = load_params("tracking", TrackingConfig, args.params)
    args.out.mkdir(parents=True, exist_ok=True)
    enabled = tracking.enabled and main_rank
    with stage_run("pretrain_eat", params=cfg, enabled=enabled, experiment=tracking.experiment) as run:
        result = pretrain_eat(cfg, clips_dir=args.clips, checkpoint=args.out / "eat.pt", tracker=run)
        if not main_rank:
            return
        write_curves(args.out, result.history)
        metrics = {k: v if math.isfinite(v) else None for k, v in result.metrics.items()}  # NaN is not JSON
        write_json_atomic(args.out / "metrics.json", metrics)
        log_stage_outputs(run, args.out, args.out / "eat.pt", log_model=False)
    log.info("pretrain_eat: loss %.4f -> %.4f over %d steps, checkpoint %s", result.metrics["train/loss_first"],
             result.metrics["train/loss_last"], int(result.metrics["train/steps"]), args.out / "eat.pt")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
