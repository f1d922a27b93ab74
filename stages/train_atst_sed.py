"""DVC stages `atst_stage1` / `atst_stage2`: ATST-SED semi-supervised SED training, one script with --phase.

Reads the params section `atst_stage1` or `atst_stage2` (by --phase), the packed clips under --clips
(train/weak/unlabelled for training, valid for model selection, test for the final numbers), the frame-encoder
weights --encoder (phase 1; the demo DAG passes finetune_eat's tagger) or phase 1's checkpoint --init (phase 2); writes
--out/model.pt (student + mean teacher), --out/metrics.json and the test PSD-ROC (--out/psd_roc.csv, .png).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from audiopipe.config import AtstStage1Config, AtstStage2Config
from audiopipe.training.finetune_sed import train_atst_sed
from audiopipe.training.stage import open_stage, run_stage_task

log = logging.getLogger(__name__)
SECTIONS = {1: "atst_stage1", 2: "atst_stage2"}  # --phase -> params section (= DVC stage)
CONFIG = {"atst_stage1": AtstStage1Config, "atst_stage2": AtstStage2Config}  # section -> dataclass
TASK = train_atst_sed  # what `audiopipe sweep` calls (audiopipe.stage_registry)
_TUNABLE = frozenset({"batch_sizes", "epochs", "lr_cnn", "lr_rnn", "weak_loss_weight", "const_max", "seed"})
TUNABLE = {"atst_stage1": _TUNABLE | {"mixup_prob"}, "atst_stage2": _TUNABLE | {"lr_encoder"}}


def task_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """TASK's inputs and output from this script's options (a sweep trial passes its own --out)."""
    return {"phase": args.phase, "clips_dir": args.clips, "encoder_checkpoint": args.encoder,
            "init_checkpoint": args.init, "checkpoint": args.out / "model.pt"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", type=int, choices=(1, 2), required=True, help="1: encoder frozen, 2: fine-tune all")
    parser.add_argument("--clips", type=Path, required=True, help="folder with <split>.h5 packs")
    parser.add_argument(
        "--encoder",
        type=Path,
        default=None,
        help="phase 1 only: frame-encoder weights (the demo: data/finetune_eat/eat_tagger.pt; "
        "data/pretrain_eat/eat.pt, an official EAT or an ATST-Frame checkpoint); phase 2 takes the encoder from --init",
    )
    parser.add_argument("--init", type=Path, default=None, help="phase 2: phase 1's model.pt")
    parser.add_argument("--out", type=Path, required=True, help="output folder (data/atst_stage<phase>)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.phase == 2 and args.init is None:
        raise SystemExit("--phase 2 needs --init (phase 1's model.pt)")
    if args.phase == 2 and args.encoder is not None:
        raise SystemExit("--phase 2 takes its encoder from --init (phase 1's model.pt holds the encoder weights): "
                         "drop --encoder")
    section = SECTIONS[args.phase]
    cfg: AtstStage1Config | AtstStage2Config = open_stage(section, CONFIG[section], args.out, args.params)
    kwargs = task_kwargs(args)
    result = run_stage_task(section, cfg, TASK, kwargs, out=args.out, params=args.params,
                            checkpoint=kwargs["checkpoint"], log_model=True)
    if result is not None:
        m = result.metrics
        log.info("%s: test PSDS1 student %.4f / teacher %.4f, PSDS2 student %.4f / teacher %.4f", section,
                 m["test/student_psds1"], m["test/teacher_psds1"], m["test/student_psds2"], m["test/teacher_psds2"])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
