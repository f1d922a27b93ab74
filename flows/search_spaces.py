"""Per-stage search spaces: `suggest_<stage>(trial, space) -> dict` of overrides for the stage's section.

The ranges themselves live in params.yaml (`sweep.stages.<stage>.space`) so that they are versioned with the
other hyperparameters; the drawing is `audiopipe.sweep.suggest` (the `audiopipe sweep` CLI uses it directly).
These functions add the per-stage rule of which keys may be tuned, and are what `flows/sweep.py` checks a
declared space against before it starts any worker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from audiopipe.sweep import TARGETS, check_tunable, suggest

# The tunable keys live on the sweep targets (`audiopipe.sweep.TARGETS[stage].tunable`), the one list that
# `audiopipe sweep` and this flow both check.
TUNABLE: dict[str, frozenset[str]] = {stage: target.tunable for stage, target in TARGETS.items()
                                      if target.tunable is not None}


def _checked(stage: str, trial: Any, space: Mapping[str, Any]) -> dict[str, Any]:
    check_tunable(stage, space)
    return suggest(trial, space)


def suggest_finetune_eat(trial: Any, space: Mapping[str, Any]) -> dict[str, Any]:
    return _checked("finetune_eat", trial, space)


def suggest_distill_mobilenet(trial: Any, space: Mapping[str, Any]) -> dict[str, Any]:
    """Batch size, epochs, learning rate and the KD weight λ / temperature T."""
    return _checked("distill_mobilenet", trial, space)


def suggest_distill_mobilenet_nokd(trial: Any, space: Mapping[str, Any]) -> dict[str, Any]:
    return _checked("distill_mobilenet_nokd", trial, space)


def suggest_atst_stage1(trial: Any, space: Mapping[str, Any]) -> dict[str, Any]:
    return _checked("atst_stage1", trial, space)


def suggest_atst_stage2(trial: Any, space: Mapping[str, Any]) -> dict[str, Any]:
    return _checked("atst_stage2", trial, space)


SUGGEST: dict[str, Callable[[Any, Mapping[str, Any]], dict[str, Any]]] = {
    "finetune_eat": suggest_finetune_eat,
    "distill_mobilenet": suggest_distill_mobilenet,
    "distill_mobilenet_nokd": suggest_distill_mobilenet_nokd,
    "atst_stage1": suggest_atst_stage1,
    "atst_stage2": suggest_atst_stage2,
}
