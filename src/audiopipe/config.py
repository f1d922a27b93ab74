"""Typed configuration: one frozen dataclass per `params.yaml` section, loaded by `load_params`.

Only stage scripts, flows and CLIs call `load_params`; library code takes typed keyword arguments.
Dataclasses carry no defaults, so every value DVC tracks is written in `params.yaml`, and a missing,
unknown or ill-typed key fails at start-up with a message that names it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A params section does not match its dataclass (names the file, section and key)."""


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _check_type(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not of type {annotation}")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_check_type(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_type = args[0] if args else Any
        items = [_check_type(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], raw: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown, missing and ill-typed keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields))
    missing = sorted(set(fields) - set(raw))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(fields)}")
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}; add them to params.yaml")
    values = {name: _check_type(raw[name], hints[name], f"{where}.{name}") for name in fields}
    return cls(**values)


def load_params(section: str, cls: type[T], path: str | Path = "params.yaml") -> T:
    """Load one section of `params.yaml` into its frozen dataclass.

    Raises:
        ConfigError: the file or section is missing, or a key is unknown, missing or of the wrong type.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the repository root")
    data = yaml.safe_load(path.read_text()) or {}
    if section not in data:
        raise ConfigError(f"{path}: no section '{section}'; sections present: {sorted(data)}")
    return from_dict(cls, data[section], f"{path}:{section}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict view of a config dataclass (for checkpoints and tracking)."""
    return dataclasses.asdict(cfg)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts with dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


# ---------------------------------------------------------------------------------------------
# Sections. Each owner edits only its own block (keep the marker comments).
# ---------------------------------------------------------------------------------------------

# >>> section: data (download, resample, pack_hdf5)
# <<< section: data

# >>> section: eat (pretrain_eat, finetune_eat, predict_teacher)
# <<< section: eat

# >>> section: mobilenet (distill_mobilenet)
# <<< section: mobilenet

# >>> section: sed (atst_stage1, atst_stage2)
# <<< section: sed

# >>> section: evaluate / tracking / sweep
@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    """`tracking` section: read by every stage script for `stage_run(...)`.

    Not listed under any stage's `params:` in dvc.yaml on purpose: switching MLflow on or off changes no
    output, so it must not invalidate DVC's cache.
    """

    enabled: bool  # False: stages log nothing and MLflow is never imported
    experiment: str  # MLflow experiment name


@dataclasses.dataclass(frozen=True)
class SweepStageConfig:
    """Search space of one stage in the `sweep` section (`audiopipe sweep STAGE`)."""

    metric: str  # validation metric the task reports per epoch, e.g. "valid/mAP"
    direction: str  # "maximize" | "minimize"
    space: dict[str, Any]  # <config field>: {choices: [...]} | {low: x, high: y, log: bool}


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """`sweep` section: Optuna settings shared by all stages plus one search space per tunable stage."""

    pruner: str  # "median" | "hyperband" | "none"
    n_startup_trials: int  # median pruner: trials finished before pruning starts
    n_warmup_steps: int  # median pruner: epochs of a trial before it can be pruned
    seed: int  # TPE sampler seed
    stages: dict[str, SweepStageConfig]


# <<< section: evaluate / tracking / sweep
