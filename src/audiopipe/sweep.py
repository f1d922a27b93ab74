"""Optuna sweeps over one training stage, run in-process on the same task function the DVC stage calls.

Each trial: `suggest(trial, space)` draws overrides from the stage's search space (the `sweep.stages.<stage>`
block of params.yaml), `apply_overrides` `dataclasses.replace`s them into the stage's config, and the task runs
with `on_epoch_end` reporting the validation metric per epoch so the pruner can stop it (`optuna.TrialPruned`).
Each trial is a nested MLflow run (`trial-<n>`, tags `optuna.study`, `optuna.trial`) under the sweep's run.
A trial that raises is recorded as FAIL and the study goes on. Outputs of trial n go to `<out_dir>/trial-<n>/`.

Storage defaults to `sqlite:///<out_dir>/study.db`, so rerunning continues the study; several processes may
share one storage once `init_study` has created it. The winner is written to `<out_dir>/best_params.yaml`
together with the `dvc exp run -S ...` command that applies it (a sweep never edits params.yaml).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from audiopipe.config import SweepConfig, SweepStageConfig
from audiopipe.storage import write_text_atomic
from audiopipe.tracking import stage_run

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SweepTarget:
    """How to call one stage's training task: the same callable and paths as its DVC stage.

    Derived from dvc.yaml and the stage script by `derive_targets`. `config` and `task` are objects or
    "module:attribute" strings (imported on first use). `inputs` maps task keyword -> path relative to the repo
    root (as in dvc.yaml); `outputs` maps task keyword -> path inside the trial's own folder; `fixed` holds
    constant keywords (`phase=1`, `teacher_h5=None`); `tunable` is the stage script's `TUNABLE` entry, the one
    list of keys both entry points (`audiopipe sweep`, `flows/sweep.py`) accept in `sweep.stages.<stage>.space`.
    """

    config: Any
    task: Any
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tunable: frozenset[str] | None = None  # the config keys a search space may name (None: any field)

    def resolve(self) -> tuple[type, Callable[..., Any]]:
        return _load(self.config), _load(self.task)


def _load(obj: Any) -> Any:
    if isinstance(obj, str):
        module, _, attr = obj.partition(":")
        return getattr(importlib.import_module(module), attr)
    return obj


_OVERRIDES = "config_overrides"  # trial user attribute: the config values a trial ran with

# Stage (= params.yaml section) -> its task with the inputs of its dvc.yaml entry: filled by `load_targets` from
# dvc.yaml and the stage scripts; `register_target` adds others (tests' tiny fake tasks).
TARGETS: dict[str, SweepTarget] = {}


def derive_targets(root: Path) -> dict[str, SweepTarget]:
    """A target for every `<root>/dvc.yaml` stage whose script exports a task (`audiopipe.stage_registry`).

    The task's keywords come from the script's `task_kwargs` applied to the options of the stage's `cmd`: paths
    under `--out` become `outputs` (relative to it), other paths `inputs` (relative to `root`, as in dvc.yaml),
    the rest (`phase=1`, `teacher_h5=None`) `fixed`.

    Raises:
        ValueError: a training script has no `TUNABLE` entry for the stage, or rejects its `cmd` options.
    """
    from audiopipe.stage_registry import load_script, read_stages, stage_config, stage_options

    targets: dict[str, SweepTarget] = {}
    for name, stage in read_stages(root / "dvc.yaml").items():
        if stage.script is None or not hasattr(load_script(root / stage.script), "task_kwargs"):
            continue  # not a training stage (download ... evaluate)
        module, args = stage_options(root, stage)
        if name not in module.TUNABLE:
            raise ValueError(f"dvc.yaml stage {name}: {stage.script} declares no TUNABLE keys for it")
        inputs, outputs, fixed = {}, {}, {}
        for key, value in module.task_kwargs(args).items():
            if isinstance(value, Path) and args.out in value.parents:
                outputs[key] = str(value.relative_to(args.out))
            elif isinstance(value, Path):
                inputs[key] = str(value)
            else:
                fixed[key] = value
        targets[name] = SweepTarget(config=stage_config(module, name), task=module.TASK, inputs=inputs, outputs=outputs,
                                    fixed=fixed, tunable=frozenset(module.TUNABLE[name]))
    return targets


def load_targets(root: Path) -> dict[str, SweepTarget]:
    """`TARGETS` with every sweepable stage of `<root>/dvc.yaml` added (registered targets are kept; no dvc.yaml
    there: only the registered ones)."""
    if not (root / "dvc.yaml").is_file():
        return TARGETS
    for name, target in derive_targets(root).items():
        TARGETS.setdefault(name, target)
    return TARGETS


def register_target(stage: str, target: SweepTarget) -> None:
    """Add or replace a sweepable stage (tests register tiny fake tasks this way)."""
    TARGETS[stage] = target


def suggest(trial: Any, space: Mapping[str, Any]) -> dict[str, Any]:
    """Draw one value per entry of `space`: {choices: [...]}, or {low, high[, log]} (int if both are ints).

    Choices may be lists (e.g. `batch_sizes: {choices: [[4, 4, 8, 8], [24, 24, 48, 48]]}`); the trial then
    records their JSON text and the drawn value is decoded, so `trial.params` stay storable scalars.
    """
    values: dict[str, Any] = {}
    for name, spec in space.items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"sweep space '{name}': expected a mapping, got {spec!r}")
        if "choices" in spec:
            if set(spec) != {"choices"} or not spec["choices"]:
                raise ValueError(f"sweep space '{name}': use only a non-empty 'choices' list, got {dict(spec)}")
            choices = list(spec["choices"])
            if all(choice is None or isinstance(choice, (bool, int, float, str)) for choice in choices):
                values[name] = trial.suggest_categorical(name, choices)
            else:  # lists (per-subset batch sizes): Optuna stores only scalars, so draw among their JSON texts
                values[name] = json.loads(trial.suggest_categorical(name, [json.dumps(c) for c in choices]))
            continue
        unknown = set(spec) - {"low", "high", "log"}
        if unknown or not {"low", "high"} <= set(spec):
            raise ValueError(f"sweep space '{name}': expected keys low, high[, log], got {sorted(spec)}")
        low, high, use_log = spec["low"], spec["high"], bool(spec.get("log", False))
        if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool):
            values[name] = trial.suggest_int(name, low, high, log=use_log)
        else:
            values[name] = trial.suggest_float(name, float(low), float(high), log=use_log)
    return values


def check_tunable(stage: str, space: Mapping[str, Any]) -> None:
    """Raise ValueError if `space` names keys outside `TARGETS[stage].tunable` (both entry points call this)."""
    tunable = TARGETS[stage].tunable
    extra = sorted(set(space) - tunable) if tunable is not None else []
    if extra:
        raise ValueError(f"sweep.stages.{stage}.space: {extra} not tunable here; allowed: {sorted(tunable or ())}")


def worker_seed(seed: int, worker: int | None, n_existing: int) -> int:
    """Sampler seed of one worker process: the study seed mixed with the worker and the study's progress.

    Processes that shared `seed` used to replay the same start-up draws (duplicate trials). `worker` is the
    index the flow gives each process (default: the process id); `n_existing` (trials already in the study)
    keeps a resumed study from replaying its own first trials. Same inputs, same seed: runs stay reproducible.
    """
    text = f"{seed}/{os.getpid() if worker is None else worker}/{n_existing}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def apply_overrides(cfg: Any, overrides: Mapping[str, Any]) -> Any:
    """`dataclasses.replace` dotted keys ("model.width") into a frozen config; unknown keys raise KeyError."""
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cfg)}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head not in names:
            raise KeyError(f"sweep parameter '{key}' is not a field of {type(cfg).__name__} ({sorted(names)})")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[head] = value
    for head, sub in nested.items():
        flat[head] = apply_overrides(getattr(cfg, head), sub)
    return dataclasses.replace(cfg, **flat)


def make_pruner(cfg: SweepConfig, max_epochs: int | None = None) -> Any:
    import optuna

    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps)
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs or "auto")
    if cfg.pruner == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"sweep.pruner must be median, hyperband or none, got {cfg.pruner!r}")


def default_storage(out_dir: Path) -> str:
    return f"sqlite:///{out_dir.resolve() / 'study.db'}"


def init_study(storage: str, study_name: str, direction: str, metric: str | None = None) -> None:
    """Create the study (and its database) once, before several worker processes share it.

    `metric` names the objective (`study.set_metric_names`), so optuna-dashboard shows `valid/mAP`, not
    "Objective 0".
    """
    import optuna

    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be maximize or minimize, got {direction!r}")
    study = optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True,
                                direction=optuna.study.StudyDirection[direction.upper()])
    if metric and study.metric_names != [metric]:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, unchanged through 5.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric])
    engine = getattr(study._storage, "engine", None)  # release SQLite handles before others open the file
    if engine is not None:
        engine.dispose()


def dvc_exp_command(stage: str, params: Mapping[str, Any]) -> str:
    """`dvc exp run -S stage.key=value ...` applying `params` to section `stage`."""
    def text(value: Any) -> str:  # `-S` values are parsed as YAML; JSON scalars and lists are valid YAML
        return value if isinstance(value, str) else json.dumps(value)

    sets = " ".join(f"-S '{stage}.{key}={text(value)}'" for key, value in sorted(params.items()))
    return f"dvc exp run {sets}"


@dataclasses.dataclass(frozen=True)
class SweepSummary:
    study_name: str
    storage: str
    n_complete: int
    n_pruned: int
    n_failed: int
    best_value: float
    best_params: dict[str, Any]
    best_params_file: Path
    command: str


def run_sweep(
    stage: str,
    base_cfg: Any,
    sweep_cfg: SweepConfig,
    *,
    n_trials: int,
    out_dir: Path,
    root: Path = Path("."),
    storage: str | None = None,
    study_name: str | None = None,
    tracking_enabled: bool = True,
    experiment: str = "audiopipe",
    tracking_uri: str | None = None,
    worker: int | None = None,
) -> SweepSummary:
    """Run `n_trials` more trials of the study for `stage` in this process and write best_params.yaml.

    `worker` (the index `flows/sweep.py` gives each process; default the process id) enters the sampler seed.
    """
    import optuna

    load_targets(root)  # the stages of <root>/dvc.yaml (callers that registered targets keep them)
    if stage not in TARGETS:
        raise KeyError(f"stage '{stage}' is not sweepable; sweepable stages: {sorted(TARGETS)}")
    if stage not in sweep_cfg.stages:
        raise KeyError(f"params.yaml has no sweep.stages.{stage}; declared: {sorted(sweep_cfg.stages)}")
    space_cfg: SweepStageConfig = sweep_cfg.stages[stage]
    check_tunable(stage, space_cfg.space)
    target = TARGETS[stage]
    _, task = target.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(out_dir)
    study_name = study_name or stage
    metric = space_cfg.metric
    init_study(storage, study_name, space_cfg.direction, metric)
    epochs_spec = space_cfg.space.get("epochs", {})
    study = optuna.load_study(
        study_name=study_name,
        storage=storage,
        pruner=make_pruner(sweep_cfg, epochs_spec.get("high") if isinstance(epochs_spec, Mapping) else None),
    )
    seed = worker_seed(sweep_cfg.seed, worker, len(study.get_trials(deepcopy=False)))
    study.sampler = optuna.samplers.TPESampler(seed=seed)
    log.info("study %s: sampler seed %d (sweep.seed %d, worker %s)", study_name, seed, sweep_cfg.seed,
             worker if worker is not None else f"pid {os.getpid()}")

    def objective(trial: optuna.Trial) -> float:
        overrides = suggest(trial, space_cfg.space)
        trial.set_user_attr(_OVERRIDES, overrides)  # decoded values (trial.params hold list choices as JSON text)
        cfg = apply_overrides(base_cfg, overrides)
        trial_dir = out_dir / f"trial-{trial.number}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Any] = dict(target.fixed)
        paths.update({key: root / value for key, value in target.inputs.items()})
        paths.update({key: trial_dir / value for key, value in target.outputs.items()})

        def on_epoch_end(epoch: int, metrics: Mapping[str, float]) -> None:
            if metric not in metrics:
                if any(key.startswith("valid/") for key in metrics):  # validated, but not this metric: a typo
                    raise KeyError(f"task reported {sorted(metrics)} but the sweep metric is '{metric}'")
                return  # no validation this epoch (`val_every` > 1): nothing to report or prune on
            trial.report(float(metrics[metric]), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: {metric}={metrics[metric]:.4g}")

        pruned: optuna.TrialPruned | None = None
        with stage_run(f"trial-{trial.number}", params=cfg, enabled=tracking_enabled, experiment=experiment,
                       tracking_uri=tracking_uri) as run:
            run.set_tag("optuna.study", study_name)
            run.set_tag("optuna.trial", trial.number)
            if run.run_id:
                trial.set_user_attr("mlflow_run_id", run.run_id)
            try:
                result = task(cfg, **paths, tracker=run, on_epoch_end=on_epoch_end)
            except optuna.TrialPruned as exc:
                run.set_tag("optuna.state", "PRUNED")
                pruned = exc
            except Exception as exc:  # recorded on the trial (Optuna marks it FAIL and the study goes on)
                trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
                raise
        if pruned is not None:
            raise pruned
        if metric not in result.metrics:
            raise KeyError(f"task result has {sorted(result.metrics)} but the sweep metric is '{metric}'")
        value = float(result.metrics[metric])
        if math.isnan(value):
            raise ValueError(f"{metric} is NaN")
        return value

    with stage_run(f"sweep-{stage}", params={"n_trials": n_trials, "study": study_name, "storage": storage,
                                             "sampler_seed": seed},
                   enabled=tracking_enabled, experiment=experiment, tracking_uri=tracking_uri) as parent:
        parent.set_tag("optuna.study", study_name)
        study.optimize(objective, n_trials=n_trials, catch=(Exception,))
        summary = write_best(study, stage, out_dir, storage)
        parent.log_metrics({f"best/{metric}": summary.best_value})
        parent.log_artifact(summary.best_params_file)
    return summary


def write_best(study: Any, stage: str, out_dir: Path, storage: str) -> SweepSummary:
    """Write `<out_dir>/best_params.yaml` from the study's best COMPLETE trial; raise if none completed."""
    import optuna

    states = [t.state for t in study.trials]
    count = {s: states.count(s) for s in optuna.trial.TrialState}
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
        reason = failed[-1].user_attrs.get("fail_reason", "") if failed else ""
        raise RuntimeError(f"no trial of study '{study.study_name}' completed ({dict(count)}); last failure: {reason}")
    best = study.best_trial
    params = dict(best.user_attrs.get(_OVERRIDES, best.params))
    command = dvc_exp_command(stage, params)
    path = out_dir / "best_params.yaml"
    doc = {"stage": stage, "study": study.study_name, "storage": storage, "trial": best.number,
           "value": best.value, "params": {stage: params}, "apply": command}
    write_text_atomic(path, yaml.safe_dump(doc, sort_keys=False))
    return SweepSummary(
        study_name=study.study_name, storage=storage,
        n_complete=len(complete), n_pruned=count[optuna.trial.TrialState.PRUNED],
        n_failed=count[optuna.trial.TrialState.FAIL], best_value=float(best.value),
        best_params=params, best_params_file=path, command=command,
    )
