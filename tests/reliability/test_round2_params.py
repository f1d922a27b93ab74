"""Round two of the params.yaml catalogue: duplicate keys, expanding YAML aliases, out-of-range values.

Every case must end in one `ConfigError` of bounded length that names the file and the `section.key` (or the
line), quickly, before any stage code sees the value; the shipped params.yaml must still load.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import yaml

from audiopipe import config as C
from audiopipe.config import ConfigError, load_params

ROOT = Path(__file__).resolve().parents[2]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
MAX_MESSAGE = 600


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def _section(section: str, **overrides: object) -> str:
    return yaml.safe_dump({section: {**PARAMS[section], **overrides}})


def test_duplicate_key_is_refused_with_its_line(tmp_path: Path) -> None:
    text = "evaluate:\n  split: test\n  duration_s: 10.0\n  batch_size: 8\n  batch_size: 64\n" \
           "  median_windows: [7]\n  threshold: 0.5\n  timeline_clips: 3\n"
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=r"line 5: duplicate key 'batch_size'") as err:
        load_params("evaluate", C.EvaluateConfig, path)
    assert str(path) in str(err.value)


def test_duplicate_section_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, _section("evaluate") + _section("evaluate", batch_size=2))
    with pytest.raises(ConfigError, match=r"duplicate key 'evaluate'"):
        load_params("evaluate", C.EvaluateConfig, path)


def test_billion_laughs_is_refused_fast_and_short(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    text = "\n".join(lines) + "\n" + _section("pretrain_eat", splits="ALIAS").replace("ALIAS", "*a9")
    path = _write(tmp_path, text)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_params("pretrain_eat", C.PretrainEatConfig, path)
    assert time.perf_counter() - start < 5.0
    message = str(err.value)
    assert len(message) <= MAX_MESSAGE, len(message)
    assert "alias" in message and "expand" in message and str(path) in message and "line" in message, message


def test_aliases_written_by_safe_dump_still_load(tmp_path: Path) -> None:
    shared = {"median_windows": [7]}
    doc = {"evaluate": {**PARAMS["evaluate"], **shared}, "other": shared}
    doc["evaluate"]["median_windows"] = doc["other"]["median_windows"]  # safe_dump writes &id001 / *id001
    text = yaml.safe_dump(doc)
    assert "*id001" in text
    assert load_params("evaluate", C.EvaluateConfig, _write(tmp_path, text)).median_windows == [7]


def test_the_no_kd_baseline_is_the_kd_section_with_one_override() -> None:
    """params.yaml writes it as `<<: *distill_mobilenet` plus `kd_lambda`, not as a copy of every key."""
    nokd = yaml.compose((ROOT / "params.yaml").read_text()).value
    own = next(value for key, value in nokd if key.value == "distill_mobilenet_nokd")
    assert [key.tag.rsplit(":", 1)[-1] for key, _ in own.value] == ["merge", "str"]
    kd = load_params("distill_mobilenet", C.DistillMobilenetConfig, ROOT / "params.yaml")
    baseline = load_params("distill_mobilenet_nokd", C.DistillMobilenetConfig, ROOT / "params.yaml")
    assert baseline == dataclasses.replace(kd, kd_lambda=1.0)


@pytest.mark.parametrize(("text", "line"), [
    ("a: &a {x: 1, x: 2}\nb:\n  <<: *a\n", 1),  # a duplicate inside the merged section
    ("a: &a {x: 1}\nb:\n  <<: *a\n  y: 2\n  y: 3\n", 5),  # a duplicate among the overrides
])
def test_merge_keys_load_but_duplicates_around_them_are_refused(tmp_path: Path, text: str, line: int) -> None:
    with pytest.raises(ConfigError, match=rf"line {line}: duplicate key"):
        load_params("b", C.TrackingConfig, _write(tmp_path, text))


def test_a_merged_key_is_overridden_by_the_sections_own_key(tmp_path: Path) -> None:
    text = "base: &base {enabled: true, experiment: a}\ntracking:\n  <<: *base\n  experiment: b\n"
    assert load_params("tracking", C.TrackingConfig, _write(tmp_path, text)) == C.TrackingConfig(True, "b")


def test_huge_wrong_value_gives_a_short_message(tmp_path: Path) -> None:
    path = _write(tmp_path, _section("evaluate", split=["x" * 1000] * 10_000))
    with pytest.raises(ConfigError) as err:
        load_params("evaluate", C.EvaluateConfig, path)
    assert len(str(err.value)) <= MAX_MESSAGE and "evaluate.split" in str(err.value)


def test_many_unknown_keys_give_a_short_message(tmp_path: Path) -> None:
    path = _write(tmp_path, _section("evaluate", **{f"k{i}" * 50: i for i in range(2000)}))
    with pytest.raises(ConfigError, match="unknown key") as err:
        load_params("evaluate", C.EvaluateConfig, path)
    assert len(str(err.value)) <= MAX_MESSAGE


BAD_VALUES = [
    ("distill_mobilenet", C.DistillMobilenetConfig, "batch_size", -4, ">= 1"),
    ("distill_mobilenet", C.DistillMobilenetConfig, "epochs", 0, ">= 1"),
    ("distill_mobilenet", C.DistillMobilenetConfig, "hop_length", 0, ">= 1"),
    ("distill_mobilenet", C.DistillMobilenetConfig, "duration_s", float("inf"), "finite"),
    ("distill_mobilenet", C.DistillMobilenetConfig, "duration_s", float("nan"), "finite"),
    ("distill_mobilenet", C.DistillMobilenetConfig, "duration_s", 0.0, "> 0"),
    ("distill_mobilenet", C.DistillMobilenetConfig, "lr", -1e-3, "> 0"),
    ("distill_mobilenet", C.DistillMobilenetConfig, "kd_lambda", 1.5, r"\[0, 1\]"),
    ("distill_mobilenet", C.DistillMobilenetConfig, "epoch_len", 0, ">= 1"),
    ("finetune_eat", C.FinetuneEatConfig, "mixup_prob", -0.1, r"\[0, 1\]"),
    ("finetune_eat", C.FinetuneEatConfig, "betas", [0.9, 1.5], r"\[0, 1\)"),
    ("pretrain_eat", C.PretrainEatConfig, "mask_ratio", 1.0, r"\[0, 1\)"),
    ("pretrain_eat", C.PretrainEatConfig, "clip_seconds", float("-inf"), "finite"),
    ("atst_stage1", C.AtstStage1Config, "batch_sizes", [16, 0, 4], ">= 1"),
    ("atst_stage1", C.AtstStage1Config, "median_window", [0], ">= 1"),
    ("atst_stage2", C.AtstStage2Config, "ema_decay", 2.0, r"\[0, 1\]"),
    ("evaluate", C.EvaluateConfig, "threshold", 1.2, r"\[0, 1\]"),
    ("evaluate", C.EvaluateConfig, "batch_size", 0, ">= 1"),
    ("resample", C.ResampleConfig, "sample_rate", 0, ">= 1"),
    ("download", C.DownloadConfig, "clip_duration_s", -10.0, "> 0"),
]


@pytest.mark.parametrize(("section", "cls", "key", "value", "allowed"), BAD_VALUES,
                         ids=[f"{s}.{k}={v}" for s, _, k, v, _ in BAD_VALUES])
def test_out_of_range_values_are_refused_at_load(
    tmp_path: Path, section: str, cls: type, key: str, value: object, allowed: str
) -> None:
    path = _write(tmp_path, _section(section, **{key: value}))
    with pytest.raises(ConfigError, match=rf"{section}\.{key}.*{allowed}") as err:
        load_params(section, cls, path)
    assert len(str(err.value)) <= MAX_MESSAGE


def test_shipped_params_load(tmp_path: Path) -> None:
    from audiopipe.stage_registry import load_script, read_stages, stage_config

    sections: dict[str, type] = {name: stage_config(load_script(ROOT / str(stage.script)), name)
                                 for name, stage in read_stages(ROOT / "dvc.yaml").items()}
    sections.update(tracking=C.TrackingConfig, sweep=C.SweepConfig)
    for section, cls in sections.items():
        load_params(section, cls, ROOT / "params.yaml")


def test_range_table_names_only_real_fields() -> None:
    classes = [v for v in vars(C).values() if isinstance(v, type) and dataclasses.is_dataclass(v)]
    names = {f.name for cls in classes for f in dataclasses.fields(cls)}
    assert set(C.RANGES) <= names, sorted(set(C.RANGES) - names)
