"""Seeded comparisons behind the README's claims: train each variant with several seeds, score it on the test split.

Claims (`CLAIMS`), each two variants of pipeline stages run in-process through `sweep.TARGETS` (the task function
and inputs of the DVC stage), with only `seed` (and the variant's own overrides) changed in the stage's config:

- `eat_init`: `finetune_eat` with `init: pretrained` (data/pretrain_eat/eat.pt) vs `init: random`; tagging.
- `kd`: `distill_mobilenet` (teacher data/predict_teacher/predictions.h5) vs `distill_mobilenet_nokd`; tagging.
- `sed`: `atst_stage1`, then `atst_stage2` initialised from the same seed's stage-1 checkpoint; SED (student).

Test metrics are computed as the `evaluate` stage does (`evaluation.scoring`): tagging `test/mAP`, `test/roc_auc`
(+ score spread and collapse flag), SED `test/psds1`, `test/psds2` (threshold-free), `test/event_f1` (200-ms
collar, threshold 0.5) of the student, with the `evaluate` section's duration_s, batch_size and median windows.

Writes `<out>/<claim>/<variant>/seed-<s>/` (the checkpoint, curve CSVs, metrics.json), then `<out>/claims.json`
(per-seed numbers, means, stds) and `<out>/claims.md` (one table, mean ± std over seeds). A run whose
metrics.json exists is not run again, so a killed experiment resumes. Each run is an MLflow run nested under
one parent run `claims`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from audiopipe import sweep
from audiopipe.tracking import stage_run

METRICS_FILE = "metrics.json"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One arm of a claim: a params.yaml section (= `sweep.TARGETS` key) plus config overrides.

    `unused_inputs`: task keywords passed as None (as the stage script does, e.g. no encoder for random init).
    `init_from`: (task keyword, variant name): that keyword gets the same seed's checkpoint of the other variant.
    """

    name: str  # folder name under <out>/<claim>/
    label: str  # row label in the table
    section: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    unused_inputs: tuple[str, ...] = ()
    init_from: tuple[str, str] | None = None


@dataclasses.dataclass(frozen=True)
class Claim:
    """Variants (run in this order for each seed) and the hypothesis `better <relation> worse` on `metric`."""

    name: str
    title: str
    kind: str  # "tagging" | "sed": how a checkpoint is scored
    variants: tuple[Variant, ...]
    better: str
    relation: str  # ">" | ">="
    worse: str
    metric: str


TAGGING_COLUMNS = {"mAP": "test/mAP", "ROC-AUC": "test/roc_auc"}
SED_COLUMNS = {"PSDS1": "test/psds1", "PSDS2": "test/psds2", "event F1": "test/event_f1"}
COLUMNS = {"tagging": TAGGING_COLUMNS, "sed": SED_COLUMNS}

CLAIMS: dict[str, Claim] = {
    "eat_init": Claim(
        name="eat_init", title="EAT tagger: pre-trained vs random init", kind="tagging",
        variants=(Variant("pretrained", "pre-trained init", "finetune_eat", {"init": "pretrained"}),
                  Variant("random", "random init", "finetune_eat", {"init": "random"}, unused_inputs=("pretrained",))),
        better="pretrained", relation=">", worse="random", metric="test/mAP",
    ),
    "kd": Claim(
        name="kd", title="MobileNet student: KD vs no KD", kind="tagging",
        variants=(Variant("kd", "KD (EAT teacher)", "distill_mobilenet"),
                  Variant("nokd", "no KD", "distill_mobilenet_nokd")),
        better="kd", relation=">", worse="nokd", metric="test/mAP",
    ),
    "sed": Claim(
        name="sed", title="ATST-SED: stage 2 vs stage 1 (student)", kind="sed",
        variants=(Variant("stage1", "stage 1", "atst_stage1"),
                  Variant("stage2", "stage 2 (from stage 1, same seed)", "atst_stage2",
                          init_from=("init_checkpoint", "stage1"))),
        better="stage2", relation=">=", worse="stage1", metric="test/psds1",
    ),
}


class MissingInputError(FileNotFoundError):
    """A pipeline output the claims need is absent; the message names the file and the stage to run."""


def sections(claims: Sequence[str]) -> list[str]:
    """The params.yaml sections (training stages) the given claims run, in order, without repeats."""
    return list(dict.fromkeys(v.section for name in claims for v in CLAIMS[name].variants))


def data_path(data_dir: Path, path: str) -> Path:
    """A `sweep.TARGETS` input (`data/<stage>/...`, relative to the repo root) under `data_dir` instead."""
    parts = Path(path).parts
    return data_dir.joinpath(*parts[1:]) if parts and parts[0] == "data" else Path(path)


def _stage_of(path: str) -> str:
    parts = Path(path).parts
    return parts[1] if len(parts) > 1 and parts[0] == "data" else "<its stage>"


def check_inputs(claims: Sequence[str], data_dir: Path, test_split: str) -> Path:
    """Raise MissingInputError for the first absent input of the claims; return the test pack's path."""
    needed: dict[str, Path] = {}
    for name in claims:
        for variant in CLAIMS[name].variants:
            skip = set(variant.unused_inputs) | ({variant.init_from[0]} if variant.init_from else set())
            for key, rel in sweep.TARGETS[variant.section].inputs.items():
                if key not in skip:
                    needed.setdefault(rel, data_path(data_dir, rel))
    packs = sweep.TARGETS[CLAIMS[claims[0]].variants[0].section].inputs["clips_dir"]
    test_pack = data_path(data_dir, packs) / f"{test_split}.h5"
    needed.setdefault(f"{packs}/{test_split}.h5", test_pack)
    for rel, path in needed.items():
        if not path.exists():
            raise MissingInputError(f"{path} not found: run `dvc repro {_stage_of(rel)}` first")
    return test_pack


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def score_checkpoint(kind: str, checkpoint: Path, reader: Any, eval_cfg: Any) -> dict[str, float | None]:
    """Test metrics of one checkpoint, computed as `evaluate` computes them (NaN -> None)."""
    from audiopipe.evaluation.collapse import score_spread
    from audiopipe.evaluation.scoring import evaluate_sed_checkpoint, evaluate_tagger

    if kind == "tagging":
        evaluation = evaluate_tagger(checkpoint, reader, eval_cfg.duration_s, eval_cfg.batch_size)
        metrics = {**evaluation["metrics"], **score_spread(evaluation["scores"])}
    elif kind == "sed":
        student = evaluate_sed_checkpoint(checkpoint, reader, eval_cfg, variants=("student",))["student"]
        metrics = {f"test/{key}": value for key, value in student.items()}
    else:
        raise ValueError(f"claim kind must be tagging or sed, got {kind!r}")
    return {key: _finite(float(value)) for key, value in metrics.items()}


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _train_and_score(claim: Claim, variant: Variant, seed: int, run_dir: Path, *, configs: Mapping[str, Any],
                     data_dir: Path, out_dir: Path, reader: Any, eval_cfg: Any, tracking: Mapping[str, Any]
                     ) -> dict[str, Any]:
    from audiopipe.storage import write_json_atomic
    from audiopipe.tracking.curves import write_curves
    from audiopipe.tracking.outputs import log_stage_outputs

    target = sweep.TARGETS[variant.section]
    _, task = target.resolve()
    cfg = sweep.apply_overrides(configs[variant.section], {**variant.overrides, "seed": seed})
    kwargs: dict[str, Any] = dict(target.fixed)
    kwargs.update({key: data_path(data_dir, rel) for key, rel in target.inputs.items()})
    kwargs.update({key: None for key in variant.unused_inputs})
    if variant.init_from is not None:
        key, source = variant.init_from
        source_outputs = sweep.TARGETS[_variant(claim, source).section].outputs
        init = out_dir / claim.name / source / f"seed-{seed}" / source_outputs["checkpoint"]
        if not init.is_file():
            raise MissingInputError(f"{init} not found: delete {init.parent / METRICS_FILE} and rerun to retrain it")
        kwargs[key] = init
    kwargs.update({key: run_dir / rel for key, rel in target.outputs.items()})
    run_dir.mkdir(parents=True, exist_ok=True)
    with stage_run(f"{claim.name}/{variant.name}/seed-{seed}", params=cfg, **tracking) as run:
        for key, value in (("claims.claim", claim.name), ("claims.variant", variant.name), ("claims.seed", seed),
                           ("claims.section", variant.section)):
            run.set_tag(key, value)
        start = time.monotonic()
        result = task(cfg, **kwargs, tracker=run)
        write_curves(run_dir, result.history)
        test = score_checkpoint(claim.kind, kwargs["checkpoint"], reader, eval_cfg)
        run.log_metrics({key: value for key, value in test.items() if value is not None})
        record = {"claim": claim.name, "variant": variant.name, "section": variant.section, "seed": seed,
                  "checkpoint": str(kwargs["checkpoint"]), "elapsed_s": time.monotonic() - start,
                  "test_pack_hash": getattr(reader, "content_hash", None),
                  "test": test, "task": {key: _finite(float(v)) for key, v in result.metrics.items()}}
        write_json_atomic(run_dir / METRICS_FILE, record)  # written last: its presence marks the run finished
        log_stage_outputs(run, run_dir, None)
    return record


def _variant(claim: Claim, name: str) -> Variant:
    return next(v for v in claim.variants if v.name == name)


def run_claims(claims: Sequence[str], seeds: Sequence[int], *, configs: Mapping[str, Any], eval_cfg: Any,
               data_dir: Path, out_dir: Path, tracking_enabled: bool = True, experiment: str = "audiopipe",
               tracking_uri: str | None = None, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) every variant × seed of `claims`; write claims.json and claims.md; return the summary.

    `configs` maps each section in `sections(claims)` to its base config; `eval_cfg` is the `evaluate` section.
    """
    from audiopipe.data.hdf5 import ClipReader
    from audiopipe.storage import write_json_atomic, write_text_atomic

    unknown = [name for name in claims if name not in CLAIMS]
    if unknown or not claims:
        raise ValueError(f"unknown or no claims {unknown}; choose from {sorted(CLAIMS)}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {list(seeds)}")
    test_pack = check_inputs(claims, data_dir, eval_cfg.split)
    reader = ClipReader(test_pack)
    tracking: dict[str, Any] = {"enabled": tracking_enabled, "experiment": experiment, "tracking_uri": tracking_uri}
    jobs = [(CLAIMS[name], variant, seed) for name in claims for seed in seeds for variant in CLAIMS[name].variants]
    records: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    started = time.monotonic()
    with stage_run("claims", params={"claims": list(claims), "seeds": list(seeds)}, **tracking) as parent:
        for i, (claim, variant, seed) in enumerate(jobs, 1):
            run_dir = out_dir / claim.name / variant.name / f"seed-{seed}"
            head = f"[{i:>{len(str(len(jobs)))}}/{len(jobs)}] {claim.name}/{variant.name} seed {seed}"
            done = run_dir / METRICS_FILE
            if done.is_file():
                record = json.loads(done.read_text())
                stale = record.get("test_pack_hash") != reader.content_hash
                progress(f"{head}: skipped, {done} exists" + (
                    "; WARNING: scored on another test pack (delete that folder to redo it)" if stale else ""))
            else:
                progress(f"{head}: training {variant.section} -> {run_dir}")
                t0 = time.monotonic()
                record = _train_and_score(claim, variant, seed, run_dir, configs=configs, data_dir=data_dir,
                                          out_dir=out_dir, reader=reader, eval_cfg=eval_cfg, tracking=tracking)
                shown = ", ".join(f"{col} {_num(record['test'].get(key))}" for col, key in COLUMNS[claim.kind].items())
                progress(f"{head}: done in {_duration(time.monotonic() - t0)} "
                         f"(total {_duration(time.monotonic() - started)}): test {shown}")
            records.setdefault(claim.name, {}).setdefault(variant.name, {})[seed] = record["test"]
        summary = summarise(claims, seeds, records, test_pack=test_pack, eval_cfg=eval_cfg)
        summary["test_pack_hash"] = reader.content_hash
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / "claims.json", summary)
        write_text_atomic(out_dir / "claims.md", markdown_table(summary))
        parent.log_metrics({f"{c}/{v}/{key}_mean": value for c, entry in summary["claims"].items()
                            for v, row in entry["variants"].items() for key, value in row["mean"].items()
                            if value is not None})
        parent.log_artifact(out_dir / "claims.json")
        parent.log_artifact(out_dir / "claims.md")
    return summary


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None, None, 0
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else None, len(finite)


def summarise(claims: Sequence[str], seeds: Sequence[int], records: Mapping[str, Mapping[str, Mapping[int, Any]]],
              *, test_pack: Path, eval_cfg: Any) -> dict[str, Any]:
    """Per claim and variant: per-seed test metrics, mean and sample std (ddof 1) over seeds, and the verdict."""
    out: dict[str, Any] = {"seeds": list(seeds), "test_pack": str(test_pack),
                           "evaluate": {"duration_s": eval_cfg.duration_s, "batch_size": eval_cfg.batch_size},
                           "claims": {}}
    for name in claims:
        claim = CLAIMS[name]
        variants: dict[str, Any] = {}
        for variant in claim.variants:
            per_seed = {seed: records[name][variant.name][seed] for seed in seeds}
            keys = sorted({key for metrics in per_seed.values() for key in metrics})
            stats = {key: _mean_std([per_seed[s].get(key) for s in seeds]) for key in keys}
            variants[variant.name] = {
                "label": variant.label, "section": variant.section, "overrides": dict(variant.overrides),
                "per_seed": {str(s): m for s, m in per_seed.items()},
                "mean": {k: v[0] for k, v in stats.items()}, "std": {k: v[1] for k, v in stats.items()},
                "n": {k: v[2] for k, v in stats.items()},
                "collapsed_seeds": [s for s, m in per_seed.items() if m.get("test/collapsed")],
            }
        better = variants[claim.better]["mean"].get(claim.metric)
        worse = variants[claim.worse]["mean"].get(claim.metric)
        holds = None if better is None or worse is None else (better > worse if claim.relation == ">" else
                                                              better >= worse)
        out["claims"][name] = {"title": claim.title, "kind": claim.kind, "metric": claim.metric,
                               "hypothesis": f"{claim.better} {claim.relation} {claim.worse} on {claim.metric}",
                               "holds": holds, "variants": variants}
    return out


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _cell(row: Mapping[str, Any], key: str) -> str:
    mean, std, n = row["mean"].get(key), row["std"].get(key), row["n"].get(key, 0)
    if mean is None:
        return "n/a"
    return f"{mean:.3f}" if n < 2 or std is None else f"{mean:.3f} ± {std:.3f}"


def markdown_table(summary: Mapping[str, Any]) -> str:
    """One markdown table: claim, variant, metric columns (mean ± std over seeds), n seeds, holds?."""
    kinds = list(dict.fromkeys(entry["kind"] for entry in summary["claims"].values()))
    columns = {col: key for kind in kinds for col, key in COLUMNS[kind].items()}
    head = ["claim", "variant", *columns, "n seeds", "holds?"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for name, entry in summary["claims"].items():
        claim = CLAIMS[name]
        better, worse = entry["variants"][claim.better], entry["variants"][claim.worse]
        col = next(c for c, key in columns.items() if key == claim.metric)
        verdict = "n/a" if entry["holds"] is None else "yes" if entry["holds"] else "no"
        relation = "≥" if claim.relation == ">=" else claim.relation
        verdict += (f": {claim.better} {relation} {claim.worse} on {col} "
                    f"({_num(better['mean'].get(claim.metric))} vs {_num(worse['mean'].get(claim.metric))})")
        for i, (vname, row) in enumerate(entry["variants"].items()):
            cells = [_cell(row, key) if key in COLUMNS[entry["kind"]].values() else "–" for key in columns.values()]
            n_seeds = len(row["per_seed"])
            lines.append("| " + " | ".join([entry["title"] if i == 0 else "", row["label"], *cells, str(n_seeds),
                                            verdict if i == 0 else ""]) + " |")
            if row["collapsed_seeds"]:
                notes.append(f"{name}/{vname}: collapsed output (score spread < 0.01) for seeds "
                             f"{', '.join(map(str, row['collapsed_seeds']))}")
    seeds = summary["seeds"]
    notes = [f"Test split `{summary['test_pack']}`, scored as `evaluate` does (clips cropped/padded to "
             f"{summary['evaluate']['duration_s']} s). Mean ± sample std (ddof 1) over seeds {seeds}; "
             "holds? compares the means.",
             "SED: ATST-SED student, PSDS1/PSDS2 threshold-free, event F1 macro event-based (200-ms collar, "
             "threshold 0.5), median windows saved by the stage.",
             *notes]
    if len(seeds) < 3:
        notes.append(f"only {len(seeds)} seed(s): the std is not a reliable spread")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"
