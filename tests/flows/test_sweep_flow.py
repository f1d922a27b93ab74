"""flows/sweep.py: the declared spaces are checked before any worker starts, against the stage scripts' TUNABLE."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

optuna = pytest.importorskip("optuna")
pytest.importorskip("prefect")
from audiopipe.sweep import check_tunable, load_targets, suggest  # noqa: E402
from flows.sweep import check_space  # noqa: E402

TARGETS = load_targets(ROOT)


def test_kd_space_draws_lambda_and_temperature() -> None:
    space = {"kd_lambda": {"low": 0.1, "high": 0.9}, "temperature": {"choices": [1.0, 2.0]}}
    check_tunable("distill_mobilenet", space)
    values = suggest(optuna.trial.FixedTrial({"kd_lambda": 0.5, "temperature": 2.0}), space)
    assert values == {"kd_lambda": 0.5, "temperature": 2.0}


@pytest.mark.parametrize(("stage", "key"), [("distill_mobilenet", "n_mels"), ("distill_mobilenet_nokd", "kd_lambda")])
def test_untunable_key_is_rejected(stage: str, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        check_tunable(stage, {key: {"choices": [64]}})


def test_repository_space_passes_the_check() -> None:
    cfg = check_space("distill_mobilenet", ROOT)
    assert cfg.stages["distill_mobilenet"].metric == "valid/mAP"


@pytest.mark.parametrize("stage", ["distill_mobilenet", "distill_mobilenet_nokd", "atst_stage2"])
def test_flow_accepts_every_space_the_cli_sweeps(stage: str) -> None:
    """One list of tunable keys: `python flows/sweep.py atst_stage2` failed on `batch_sizes` before."""
    check_space(stage, ROOT)


def test_tunable_keys_are_fields_of_their_configs() -> None:
    import dataclasses

    for stage, target in TARGETS.items():
        config_cls, _ = target.resolve()
        assert target.tunable is not None and target.tunable <= {f.name for f in dataclasses.fields(config_cls)}, stage
