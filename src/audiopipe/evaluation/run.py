"""The `evaluate` task: every final model on the test split → metrics.json, PNG plots, report.html.

Reads the tagging checkpoints (EAT teacher, KD student, no-KD student), the SED checkpoints (stage 1 and
stage 2, student and mean teacher), the training curves each stage wrote (`train_curve.csv`,
`valid_curve.csv`), the test pack and the training packs (`train.h5`, `weak.h5`: the tagging baselines are fit
on them, see `baselines`). A missing input is reported as missing (never as zeros). Every tagger also gets a
score-spread check (see `collapse`); a model whose outputs barely depend on the input is flagged and logged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.labels import reference_events
from audiopipe.evaluation import plots
from audiopipe.evaluation.baselines import PRIOR_ROW, PROBE_ROW, tagging_baselines
from audiopipe.evaluation.collapse import collapse_warning, score_spread
from audiopipe.evaluation.report import ReportData, write_report
from audiopipe.evaluation.scoring import (
    check_classes,
    evaluate_sed_model,
    evaluate_tagger,
    load_sed_models,
)
from audiopipe.metrics.psd_roc_files import plot_roc, write_roc_csv
from audiopipe.metrics.sed_postprocessing import scores_to_events
from audiopipe.metrics.tagging import precision_recall_curve
from audiopipe.tracking.curves import read_curve

log = logging.getLogger(__name__)
TRAIN_SPLITS = ("train", "weak")  # the packs the taggers learn from; the tagging baselines are fit on them


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """What `evaluate_pipeline` returns: nested metrics `{"tagging": {model: {metric: value}}, "sed": {...},
    "missing": [input names]}` (unlike a training task's flat metrics; stages/evaluate.py reads it by section)."""

    metrics: dict[str, Any]


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def _tagging_section(cfg: Any, taggers: Mapping[str, Path], reader: ClipReader, out_dir: Path,
                     data: ReportData) -> dict[str, Any]:
    results: dict[str, Any] = {}
    per_class, pr = {}, {}
    for name, path in taggers.items():
        if not path.is_file():
            data.tagging[name] = None
            data.missing[name] = f"{path} not found (run its stage: dvc repro)"
            continue
        evaluation = evaluate_tagger(path, reader, cfg.duration_s, cfg.batch_size)
        data.tagging[name] = results[name] = _with_collapse_check(name, evaluation, data)
        per_class[name] = evaluation["per_class_ap"]
        targets, scores = evaluation["targets"].reshape(-1), evaluation["scores"].reshape(-1)
        if targets.any():
            precision, recall, _ = precision_recall_curve(targets, scores)
            pr[name] = (precision, recall)
    if per_class:
        plots.per_class_ap_bars(out_dir / "tagging_per_class_ap.png", per_class)
        data.figures.append(("Average precision per class (test)", "tagging_per_class_ap.png"))
    if pr:
        plots.pr_curves(out_dir / "tagging_pr.png", pr)
        data.figures.append(("Precision-recall, all classes pooled (test)", "tagging_pr.png"))
    return results


def _with_collapse_check(name: str, evaluation: Mapping[str, Any], data: ReportData) -> dict[str, Any]:
    """The tagger's metrics plus its score spread; a collapsed model is logged and gets a report warning."""
    metrics = {**evaluation["metrics"], **score_spread(evaluation["scores"])}
    warning = collapse_warning(name, metrics)
    if warning is not None:
        log.warning(warning)
        data.tagging_warnings[name] = warning
    return metrics


def _baseline_section(cfg: Any, clips_dir: Path, reader: ClipReader, data: ReportData) -> dict[str, Any]:
    """Class-prior and linear-probe rows, fit on the training packs found in `clips_dir`, scored on `reader`."""
    packs = [clips_dir / f"{split}.h5" for split in TRAIN_SPLITS]
    found = [ClipReader(path, verify=True) for path in packs if path.is_file()]  # content_hash checked
    absent = [str(path) for path in packs if not path.is_file()]
    if not found:
        data.tagging_baselines.update({PRIOR_ROW: None, PROBE_ROW: None})
        data.missing["tagging baselines"] = f"no training pack ({', '.join(absent)}): run pack_hdf5"
        return {}
    if absent:
        data.notes.append(f"tagging baselines fit without {', '.join(absent)} (not found)")
    results = tagging_baselines(found, reader, cfg.duration_s, cfg.batch_size)
    data.tagging_baselines.update(results)
    return results


def _sed_section(cfg: Any, sed_checkpoints: Mapping[str, Path], reader: ClipReader, out_dir: Path,
                 data: ReportData) -> dict[str, Any]:
    results: dict[str, Any] = {}
    reference = reference_events(reader)
    rocs = {}
    diagnostic = {}  # PSDS2 ROCs without the class-spread penalty: visible learning when the official PSDS is 0
    available = [name for name, path in sed_checkpoints.items() if path.is_file()]
    for name, path in sed_checkpoints.items():
        if not path.is_file():
            data.sed[f"{name} student"] = None
            data.missing[name] = f"{path} not found (run its stage: dvc repro)"
            continue
        models, payload = load_sed_models(path)
        check_classes(payload["class_names"], reader, str(path))
        for variant, model in models.items():
            label = f"{name} {variant.replace('_', ' ')}"
            evaluation, scores = evaluate_sed_model(model, payload, reader, cfg, reference)
            data.sed[label] = results[label] = evaluation.metrics
            rocs[f"{label} psds1"] = evaluation.rocs["psds1"]
            rocs[f"{label} psds2"] = evaluation.rocs["psds2"]
            diagnostic[label] = evaluation.rocs["psds2_mean_tpr"]
            if variant == "student" and name == available[-1]:
                _timelines(cfg, scores, reference, reader, model.frame_rate_hz, out_dir, data)
    if rocs:
        plot_roc(out_dir / "sed_psd_roc.png", rocs, title="PSD-ROC (test)")
        write_roc_csv(out_dir / "sed_psd_roc.csv", rocs)
        data.figures.append(("PSD-ROC curves (test)", "sed_psd_roc.png"))
        plot_roc(out_dir / "sed_psd_roc_mean_tpr.png", diagnostic, title="PSDS2 ROC, mean TPR (α_st = 0, test)")
        data.figures.append(("PSDS2 ROC without the class-spread penalty (diagnostic, not a DCASE number)",
                             "sed_psd_roc_mean_tpr.png"))
    return results


def _timelines(cfg: Any, scores: Mapping[str, np.ndarray], reference: Mapping[str, list[Any]], reader: ClipReader,
               frame_rate_hz: float, out_dir: Path, data: ReportData) -> None:
    for clip in list(scores)[: cfg.timeline_clips]:
        detected = scores_to_events(scores[clip], cfg.threshold, frame_rate_hz=frame_rate_hz,
                                    class_names=reader.class_names, duration_s=cfg.duration_s)
        name = f"timeline_{_slug(clip)}.png"
        curves = dict(zip(reader.class_names, scores[clip]))  # (C, T') -> class name -> (T',)
        plots.event_timeline(out_dir / name, clip, cfg.duration_s, reference[clip], detected, scores=curves,
                             frame_rate_hz=frame_rate_hz, threshold=cfg.threshold)
        data.figures.append((f"Events of {clip} (last SED stage, student, threshold {cfg.threshold})", name))


def _curves(stage_dirs: Mapping[str, Path], out_dir: Path, data: ReportData) -> None:
    """One figure per stage from its curve CSVs: `valid_curve*.csv` (or a CSV with only an `epoch` column) holds
    per-epoch validation metrics, the other CSV with a `step` column the per-step training curves."""
    for stage, folder in stage_dirs.items():
        train: dict[str, list[float]] = {}
        valid: dict[str, list[float]] = {}
        for path in sorted(folder.glob("*curve*.csv")) if folder.is_dir() else []:
            columns = read_curve(path)
            # valid_curve.csv has `epoch` and `step` columns (step of the validation); older files only `epoch`
            if path.name.startswith("valid") or ("epoch" in columns and "step" not in columns):
                valid = columns
            elif "step" in columns and not train:
                train = columns
        if not train and not valid:
            data.missing[f"{stage} curves"] = f"no training curve CSV in {folder}"
            continue
        name = f"curves_{stage}.png"
        plots.training_curves(out_dir / name, stage, train, valid)
        data.curves.append((stage, name))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def evaluate_pipeline(cfg: Any, *, clips_dir: Path, taggers: Mapping[str, Path], sed_checkpoints: Mapping[str, Path],
                      stage_dirs: Mapping[str, Path], out_dir: Path, provenance: Mapping[str, str],
                      params_yaml: str = "", tracker: Any = None) -> EvaluationResult:
    """Evaluate every final model on `clips_dir/<cfg.split>.h5`; write plots, report.html, return metrics.

    `metrics["tagging"]` holds one entry per tagger (with `test/score_spread`, `test/collapsed`) and the two
    baseline rows `baselines.PRIOR_ROW` and `baselines.PROBE_ROW` (fit on `clips_dir/{train,weak}.h5`).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    reader = ClipReader(clips_dir / f"{cfg.split}.h5", verify=True)  # content_hash recomputed (pcm16 packs)
    data = ReportData(provenance={**provenance, "test pack content hash": reader.content_hash,
                                  "test clips": str(len(reader))}, params_yaml=params_yaml)
    tagging = {**_tagging_section(cfg, taggers, reader, out_dir, data),
               **_baseline_section(cfg, clips_dir, reader, data)}
    sed = _sed_section(cfg, sed_checkpoints, reader, out_dir, data) if reader.has_strong else {}
    if not reader.has_strong:
        data.notes.append(f"{cfg.split}.h5 has no strong labels: SED metrics skipped")
    _curves(stage_dirs, out_dir, data)
    report = write_report(out_dir / "report.html", data)
    metrics: dict[str, Any] = {"tagging": tagging, "sed": sed, "missing": sorted(data.missing)}
    flat = {f"{_slug(model)}/{key}": value for section in (tagging, sed) for model, values in section.items()
            for key, value in values.items()}
    if tracker is not None:
        tracker.log_metrics(flat, 0)
        for path in sorted(out_dir.glob("*.png")) + [report]:
            tracker.log_artifact(path)
    log.info("report written to %s", report)
    return EvaluationResult(metrics)


def manifest_hash(download_dir: Path) -> str:
    """sha256 of the data set manifest(s) the download stage wrote (`<source>/manifest.jsonl`), or 'missing'."""
    manifests = sorted(download_dir.glob("*/manifest.jsonl")) + sorted(download_dir.glob("manifest.jsonl"))
    if not manifests:
        return "missing"
    return ", ".join(f"{path.parent.name}: {_sha256(path)}" for path in manifests)


def metrics_json(metrics: Mapping[str, Any]) -> str:
    return json.dumps(metrics, indent=2, sort_keys=True, default=float)


# The short, comparable set `dvc metrics show/diff` reads (data/evaluate/metrics.json); everything else goes to
# results.json, and wall-clock measurements (which change on every run) to timings.json.
SUMMARY_KEYS = {"tagging": ("test/mAP", "test/roc_auc", "test/d_prime"),
                "sed": ("psds1", "psds2", "psds2_mean_tpr", "event_f1")}
TIMING_SUFFIXES = ("latency_ms_10s", "wall_s")


def split_metrics(metrics: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary, timings) of `evaluate_pipeline`'s metrics: `{section: {model_slug: {metric: value}}}`.

    Keys carry no spaces (`tagging.kd_student.mAP`); the summary holds only `SUMMARY_KEYS`, the timings only
    keys ending in `TIMING_SUFFIXES`.
    """
    summary: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    for section, keys in SUMMARY_KEYS.items():
        for model, values in (metrics.get(section) or {}).items():
            slug = _slug(model)
            picked = {key.split("/")[-1]: values[key] for key in keys if key in values}
            if picked:
                summary.setdefault(section, {})[slug] = picked
            timed = {key: value for key, value in values.items() if key.endswith(TIMING_SUFFIXES)}
            if timed:
                timings.setdefault(section, {})[slug] = timed
    summary["missing"] = len(metrics.get("missing", []))
    return summary, timings
