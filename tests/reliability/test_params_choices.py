"""Choice fields (`Literal` in config/sections.py) are checked when params.yaml is loaded, not deep inside a stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from audiopipe import config as C
from audiopipe.config import ConfigError, load_params

PARAMS = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())

TYPOS = [
    ("distill_mobilenet", C.DistillMobilenetConfig, "device", "gpu", "auto, cpu, cuda"),
    ("distill_mobilenet", C.DistillMobilenetConfig, "amp", "fp32", "none, bf16, fp16"),
    ("distill_mobilenet", C.DistillMobilenetConfig, "student", "mobilenet", "mn, dymn"),
    ("atst_stage2", C.AtstStage2Config, "consistency", "ICT", "mean_teacher, ict"),
    ("atst_stage1", C.AtstStage1Config, "model", "sed_beats", "sed_eat, sed_atst, sed_crnn"),
    ("finetune_eat", C.FinetuneEatConfig, "init", "pretrain", "pretrained, official, random"),
    ("pretrain_eat", C.PretrainEatConfig, "preset", "eat_tiny", "eat_demo, eat_small, eat_base, eat_large"),
    ("pack_hdf5", C.PackHdf5Config, "codec", "flac", "pcm16, mp3"),
    ("download", C.DownloadConfig, "source", "esc-50", "realmix, synthetic, esc50"),
]


@pytest.mark.parametrize(("section", "cls", "key", "value", "choices"), TYPOS, ids=[f"{t[0]}.{t[2]}" for t in TYPOS])
def test_a_typo_in_a_choice_field_is_refused_at_load_with_the_choices(
    tmp_path: Path, section: str, cls: type, key: str, value: str, choices: str
) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({section: {**PARAMS[section], key: value}}))
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: '{value}' is not allowed; choose one of {choices}"):
        load_params(section, cls, path)


def test_every_choice_in_the_shipped_params_is_accepted() -> None:
    for section, cls in [("atst_stage1", C.AtstStage1Config), ("atst_stage2", C.AtstStage2Config),
                         ("distill_mobilenet", C.DistillMobilenetConfig), ("sweep", C.SweepConfig)]:
        load_params(section, cls, Path(__file__).resolve().parents[2] / "params.yaml")
