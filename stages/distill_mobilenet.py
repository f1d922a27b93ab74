"""DVC stage `distill_mobilenet`: train a MobileNetV3 student on packed clips and teacher logits (KD).

Reads the params section named by --section (`distill_mobilenet`, or `distill_mobilenet_nokd` for the
kd_lambda = 1 baseline that needs no --teacher), the packed clips under --clips and the teacher
predictions --teacher; writes --out/student.pt (best validation mAP) and --out/metrics.json.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from audiopipe.config import DistillMobilenetConfig
from audiopipe.training.distill import distill_mobilenet
from audiopipe.training.stage import open_stage, run_stage_task

log = logging.getLogger(__name__)
SECTIONS = ("distill_mobilenet", "distill_mobilenet_nokd")
CONFIG, TASK = DistillMobilenetConfig, distill_mobilenet  # what `audiopipe sweep` calls (audiopipe.stage_registry)
_TUNABLE = frozenset({"batch_size", "epochs", "lr", "weight_decay", "seed", "mixup_alpha"})
TUNABLE = {"distill_mobilenet": _TUNABLE | {"kd_lambda", "temperature"}, "distill_mobilenet_nokd": _TUNABLE}


def task_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """TASK's inputs and output from this script's options (a sweep trial passes its own --out)."""
    return {"clips_dir": args.clips, "teacher_h5": args.teacher, "checkpoint": args.out / "student.pt"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, required=True, help="folder with <split>.h5 packs")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="teacher predictions .h5 (predict_teacher); optional when kd_lambda is 1")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--section", choices=SECTIONS, default=SECTIONS[0], help="params.yaml section to use")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    cfg = open_stage(args.section, CONFIG, args.out, args.params)
    kwargs = task_kwargs(args)
    if cfg.kd_lambda >= 1.0:
        kwargs["teacher_h5"] = None  # the baseline never opens the teacher file
    result = run_stage_task(args.section, cfg, TASK, kwargs, out=args.out, params=args.params,
                            checkpoint=kwargs["checkpoint"], log_model=True)
    if result is not None:
        log.info("%s: valid/mAP=%.4f, checkpoint %s", args.section, result.metrics["valid/mAP"], result.checkpoint)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
