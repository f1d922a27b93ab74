"""DVC stage `finetune_eat`: fine-tune the EAT tagging teacher on the labelled packed clips.

Reads the `finetune_eat` section of params.yaml, the packs under --clips and, when `init: pretrained`,
the pre-trained encoder --pretrained; writes --out/eat_tagger.pt (best validation mAP) and
--out/metrics.json (valid/mAP and the class-prior baseline valid/mAP_prior).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from audiopipe.config import FinetuneEatConfig
from audiopipe.training.finetune_eat import finetune_eat
from audiopipe.training.stage import open_stage, run_stage_task

log = logging.getLogger(__name__)
CONFIG, TASK = FinetuneEatConfig, finetune_eat  # what `audiopipe sweep` calls (audiopipe.stage_registry)
TUNABLE = {"finetune_eat": frozenset({"batch_size", "epochs", "lr", "weight_decay", "seed", "layer_decay",
                                      "mixup_alpha", "drop_path"})}


def task_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """TASK's inputs and output from this script's options (a sweep trial passes its own --out)."""
    return {"clips_dir": args.clips, "pretrained": args.pretrained, "checkpoint": args.out / "eat_tagger.pt"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, required=True, help="folder with <split>.h5 packs")
    parser.add_argument("--pretrained", type=Path, required=True,
                        help="pre-trained encoder (pretrain_eat output); used when init is 'pretrained'")
    parser.add_argument("--out", type=Path, required=True, help="output folder of this stage")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    return parser.parse_args(argv)


OFFICIAL_DIR = Path("models/official")  # a DVC dependency of this stage (dvc.yaml)


def _check_official_location(path: Path) -> None:
    """Refuse an official checkpoint outside models/official: DVC would not see it change, nor rerun the stage."""
    if not path.is_file():
        raise SystemExit(f"finetune_eat.official_checkpoint: {path} does not exist; download the EAT checkpoint "
                         f"into {OFFICIAL_DIR}/ and set the path in params.yaml")
    if OFFICIAL_DIR.resolve() not in path.resolve().parents:
        raise SystemExit(f"finetune_eat.official_checkpoint: {path} is outside {OFFICIAL_DIR}/, which is this "
                         f"stage's DVC dependency; move the file into {OFFICIAL_DIR}/ so that `dvc repro` reruns "
                         "the stage when it changes")


def main() -> None:
    args = parse_args()
    cfg = open_stage("finetune_eat", CONFIG, args.out, args.params)
    kwargs = task_kwargs(args)
    if cfg.init != "pretrained":
        kwargs["pretrained"] = None
    if cfg.init == "official" and cfg.official_checkpoint:
        _check_official_location(Path(cfg.official_checkpoint))
    result = run_stage_task("finetune_eat", cfg, TASK, kwargs, out=args.out, params=args.params,
                            checkpoint=kwargs["checkpoint"], log_model=True)
    if result is not None:
        log.info("finetune_eat (init %s): valid/mAP=%.4f (class-prior baseline %.4f), checkpoint %s", cfg.init,
                 result.metrics["valid/mAP"], result.metrics["valid/mAP_prior"], result.checkpoint)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
