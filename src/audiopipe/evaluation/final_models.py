"""What the `evaluate` stage reads under its data folder (`--data`): the final models and the curve folders.

`TAGGERS` and `SED` map a model's report name to its checkpoint, `CURVE_STAGES` names the stage folders whose
`*curve*.csv` files the report plots; paths are relative to the data folder. dvc.yaml lists each of them as an
`evaluate` dep (checked by tests/orchestration/test_stage_registry.py).
"""

from __future__ import annotations

TAGGERS = {"EAT teacher": "finetune_eat/eat_tagger.pt", "KD student": "distill_mobilenet/student.pt",
           "no-KD student": "distill_mobilenet_nokd/student.pt"}
SED = {"ATST-SED stage 1": "atst_stage1/model.pt", "ATST-SED stage 2": "atst_stage2/model.pt"}
CURVE_STAGES = ("pretrain_eat", "finetune_eat", "distill_mobilenet", "distill_mobilenet_nokd", "atst_stage1",
                "atst_stage2")
