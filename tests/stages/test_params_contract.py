"""The contract tying dvc.yaml, params.yaml and audiopipe.config together.

Rules: every DVC stage lists exactly one params section, its own (stage key == section name), whose dataclass is
the `CONFIG` its stage script exports for it (the stage list is dvc.yaml's, `audiopipe.stage_registry`). Sections that
are not DVC stages are `tracking` (read by every stage script but not a DVC param: it changes no output, so
switching MLflow off must not invalidate the cache), `sweep` (read only by `audiopipe sweep`) and `launcher` (one
entry per training stage, listed as `launcher.<stage>` beside the stage's own section). Every section
of params.yaml has exactly the fields of its dataclass, and every sweep space names fields of its stage.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from audiopipe import config as C
from audiopipe.stage_registry import load_script, read_stages, stage_config

ROOT = Path(__file__).resolve().parents[2]
NOT_STAGE_SECTIONS: dict[str, type] = {"tracking": C.TrackingConfig, "sweep": C.SweepConfig,
                                       "launcher": C.LauncherConfig}
SECTIONS: dict[str, type] = {
    **{name: stage_config(load_script(ROOT / str(stage.script)), name)
       for name, stage in read_stages(ROOT / "dvc.yaml").items()},
    **NOT_STAGE_SECTIONS,
}
NOT_STAGES = set(NOT_STAGE_SECTIONS)

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("stage", sorted(DVC))
def test_dvc_stage_lists_exactly_its_own_section(stage: str) -> None:
    launcher = [f"launcher.{stage}"] if stage in PARAMS["launcher"] else []  # training stages: their processes
    assert DVC[stage].get("params") == [stage, *launcher]


@pytest.mark.parametrize("stage", sorted(PARAMS["launcher"]))
def test_launcher_entries_are_stages_started_through_the_launcher(stage: str) -> None:
    assert " ".join(DVC[stage]["cmd"].split()).startswith(f"python -m audiopipe.launch {stage} stages/")


def test_every_section_is_a_stage_or_a_declared_shared_block() -> None:
    assert set(PARAMS) == set(DVC) | NOT_STAGES
    assert set(SECTIONS) == set(PARAMS)


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_params_keys_equal_dataclass_fields(section: str) -> None:
    cls = SECTIONS[section]
    assert set(PARAMS[section]) == {f.name for f in dataclasses.fields(cls)}
    C.load_params(section, cls, ROOT / "params.yaml")  # types check out too


@pytest.mark.parametrize("stage", sorted(PARAMS["sweep"]["stages"]))
def test_sweep_spaces_name_fields_of_their_stage(stage: str) -> None:
    optuna = pytest.importorskip("optuna")
    from audiopipe.sweep import apply_overrides, load_targets, suggest

    targets = load_targets(ROOT)

    sweep = C.load_params("sweep", C.SweepConfig, ROOT / "params.yaml")
    space = sweep.stages[stage].space
    assert stage in targets, f"sweep.stages.{stage}: {stage} is not a training stage of dvc.yaml (no TASK)"
    low = {k: v["choices"][0] if "choices" in v else v["low"] for k, v in space.items()}
    low = {k: json.dumps(v) if isinstance(v, list) else v for k, v in low.items()}  # list choices: stored as JSON
    base = C.load_params(stage, SECTIONS[stage], ROOT / "params.yaml")
    apply_overrides(base, suggest(optuna.trial.FixedTrial(low), space))
    assert sweep.stages[stage].direction in ("maximize", "minimize")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tracking: {enabled: true, experiment: x, colour: red}\n", "colour"),
        ("tracking: {enabled: true}\n", "experiment"),
        ("tracking: {enabled: 'yes', experiment: x}\n", "tracking.enabled"),
        ("other: {}\n", "no section 'tracking'"),
    ],
)
def test_load_params_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(C.ConfigError, match=message):
        C.load_params("tracking", C.TrackingConfig, path)


def test_sweep_stage_entries_are_typed(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("sweep: {pruner: median, n_startup_trials: 1, n_warmup_steps: 0, seed: 0,\n"
                    "        stages: {x: {metric: m, direction: maximize}}}\n")
    with pytest.raises(C.ConfigError, match="space"):
        C.load_params("sweep", C.SweepConfig, path)
