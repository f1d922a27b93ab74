"""DVC stage `pretrain_eat`: EAT self-supervised pre-training on every packed clip (labels unused).

Reads the `pretrain_eat` section of params.yaml and the `<split>.h5` packs under --clips; writes
--out/eat.pt (student encoder, builder `eat_<preset>`), --out/train_curve.csv + valid_curve.csv (per-step losses) and
--out/metrics.json (first/last loss).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from audiopipe.config import PretrainEatConfig
from audiopipe.training.pretrain import pretrain_eat
from audiopipe.training.stage import open_stage, run_stage_task

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
    cfg = open_stage("pretrain_eat", CONFIG, args.out, args.params)
    kwargs = {"clips_dir": args.clips, "checkpoint": args.out / "eat.pt"}
    result = run_stage_task("pretrain_eat", cfg, pretrain_eat, kwargs, out=args.out, params=args.params,
                            checkpoint=kwargs["checkpoint"], log_model=False)
    if result is not None:
        m = result.metrics
        log.info("pretrain_eat: loss %.4f -> %.4f over %d steps, checkpoint %s", m["train/loss_first"],
                 m["train/loss_last"], int(m["train/steps"]), result.checkpoint)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
