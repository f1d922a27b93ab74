"""Typed configuration: one frozen dataclass per `params.yaml` section, loaded by `load_params`.

Only stage scripts, flows and CLIs call `load_params`; library code takes typed keyword arguments.
Dataclasses carry no defaults, so every value DVC tracks is written in `params.yaml`, and a missing,
unknown or ill-typed key fails at start-up with a message that names it.

    loading.py   load_params, from_dict, ConfigError, the RANGES table, to_dict / flatten
    sections.py  the section dataclasses (DownloadConfig ... LauncherConfig)
"""

from audiopipe.config.loading import (
    AT_LEAST_1,
    MAX_MESSAGE_CHARS,
    MAX_YAML_NODES,
    NON_NEGATIVE,
    POSITIVE,
    RANGES,
    UNIT,
    UNIT_HALF_OPEN,
    Bounds,
    ConfigError,
    flatten,
    from_dict,
    load_params,
    to_dict,
)
from audiopipe.config.sections import (
    Amp,
    AtstStage1Config,
    AtstStage2Config,
    Device,
    DistillMobilenetConfig,
    DownloadConfig,
    EatPreset,
    EvaluateConfig,
    FinetuneEatConfig,
    LauncherConfig,
    PackHdf5Config,
    PredictTeacherConfig,
    PretrainEatConfig,
    ResampleConfig,
    SedTrainingConfig,
    StageLaunchConfig,
    SweepConfig,
    SweepStageConfig,
    TrackingConfig,
)

__all__ = [
    "AT_LEAST_1", "MAX_MESSAGE_CHARS", "MAX_YAML_NODES", "NON_NEGATIVE", "POSITIVE", "RANGES", "UNIT",
    "UNIT_HALF_OPEN", "Amp", "AtstStage1Config", "AtstStage2Config", "Bounds", "ConfigError", "Device",
    "DistillMobilenetConfig", "DownloadConfig", "EatPreset", "EvaluateConfig", "FinetuneEatConfig",
    "LauncherConfig", "PackHdf5Config", "PredictTeacherConfig", "PretrainEatConfig", "ResampleConfig",
    "SedTrainingConfig", "StageLaunchConfig", "SweepConfig", "SweepStageConfig", "TrackingConfig", "flatten",
    "from_dict", "load_params", "to_dict",
]
