"""`dvc.yaml` read as the one stage registry: stage order, each stage's script and options, params and outputs.

A stage is declared once, in `dvc.yaml`. The flows (`flows/pipeline.py` runs the stages in file order), the
sweeps and claims (`audiopipe.sweep.load_targets`) and the tests read it through this module instead of
restating it. Each stage script exports `CONFIG`, the dataclass of its params section (a script that serves
several sections with different dataclasses, `train_atst_sed.py`, maps section -> dataclass; `stage_config` reads
either); a training stage's script also exports what a sweep calls:

    TASK         the training function its `main()` calls
    task_kwargs  parsed options -> TASK's keywords (paths under `--out` are the stage's outputs)
    TUNABLE      {stage: the config keys a sweep space may name}

so a sweep trial is the stage's own call with the options `dvc.yaml` gives it, `--out` moved to the trial's
folder. Only entry points (CLIs, flows, tests) call this module: it reads files and imports scripts by path.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shlex
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml


@dataclasses.dataclass(frozen=True)
class Stage:
    """One `dvc.yaml` stage, `${...}` resolved from the params.yaml beside it."""

    name: str
    script: str | None  # the stage script `cmd` runs, relative to the repository root (None: no `*.py` in cmd)
    argv: tuple[str, ...]  # the script's options in `cmd` (no script: the whole `cmd`)
    params: tuple[str, ...]
    deps: tuple[str, ...]
    outs: tuple[str, ...]  # outs, metrics and plots
    plots: tuple[str, ...]


def _paths(items: list[Any] | None) -> tuple[str, ...]:
    return tuple(item if isinstance(item, str) else next(iter(item)) for item in items or [])


def _interpolate(text: str, params: dict[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        node: Any = params
        for part in match.group(1).split("."):
            if not isinstance(node, dict) or part not in node:
                return match.group(0)
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", value, text)


def read_stages(dvc_yaml: Path) -> dict[str, Stage]:
    """The stages of `dvc_yaml` in file order (the pipeline order; `dvc.yaml` lists producers first).

    A stage's script is the first `*.py` word of its `cmd` (`python [-m audiopipe.launch ...] stages/x.py ...`).
    """
    spec = yaml.safe_load(dvc_yaml.read_text()) or {}
    params_file = dvc_yaml.parent / "params.yaml"
    params = (yaml.safe_load(params_file.read_text()) or {}) if params_file.is_file() else {}
    stages: dict[str, Stage] = {}
    for name, entry in (spec.get("stages") or {}).items():
        words = shlex.split(_interpolate(" ".join(str(entry.get("cmd", "")).split()), params))
        at = next((i for i, word in enumerate(words) if word.endswith(".py")), None)

        def paths(key: str, entry: dict[str, Any] = entry) -> tuple[str, ...]:
            return tuple(_interpolate(p, params) for p in _paths(entry.get(key)))

        script, argv = (None, words) if at is None else (words[at], words[at + 1:])
        stages[name] = Stage(name=name, script=script, argv=tuple(argv),
                             params=tuple(str(p) for p in entry.get("params") or []), deps=paths("deps"),
                             outs=paths("outs") + paths("metrics") + paths("plots"), plots=paths("plots"))
    return stages


def load_script(path: Path) -> ModuleType:
    """Import a stage script by its path (once per path; its `main()` is not run)."""
    path = path.resolve()
    name = "audiopipe_stage_" + re.sub(r"\W", "_", str(path))
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import stage script {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return module


def stage_config(module: ModuleType, section: str) -> type:
    """The dataclass of `section` that the stage script `module` exports as `CONFIG` (a class, or a mapping)."""
    config = module.CONFIG
    return config[section] if isinstance(config, dict) else config


def stage_options(root: Path, stage: Stage) -> tuple[ModuleType, Any]:
    """The stage's script and its options as `dvc.yaml`'s `cmd` gives them (the script's own `parse_args`).

    Raises:
        ValueError: `cmd` runs no script, or the script rejects the options `cmd` gives it (argparse's message is
            printed above).
    """
    if stage.script is None:
        raise ValueError(f"dvc.yaml stage {stage.name}: cmd runs no stage script (*.py): {' '.join(stage.argv)}")
    module = load_script(root / stage.script)
    try:
        return module, module.parse_args(list(stage.argv))
    except SystemExit as err:
        raise ValueError(f"dvc.yaml stage {stage.name}: {stage.script} rejects its cmd options {stage.argv}") from err
