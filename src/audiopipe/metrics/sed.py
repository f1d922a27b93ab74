"""Sound event detection metrics: PSDS (threshold-free and 50 operating points), F1, all at once in `evaluate_sed`.

Inputs are per-clip frame probabilities `scores[clip_id]` of shape (C, T) at `frame_rate_hz`, ground
truth `{clip_id: [(onset_s, offset_s, label), ...]}` and durations `{clip_id: seconds}`.

- PSDS threshold-free: `sed_scores_eval.intersection_based.psds` on the median-filtered scores (what
  ATST-SED reports as `*_sed_scores_eval` and uses for model selection).
- PSDS at operating points: `psds_eval.PSDSEval` fed with event lists decoded at the 50 thresholds
  0.01, 0.03, ..., 0.99 with a strict "score > threshold" (spec atst_sed.md §7, §8.1).
- Event-based F1: `sed_eval` EventBasedMetrics, collar 200 ms / 20 % of length, macro over classes.
- Intersection F1: `psds_eval.compute_macro_f_score` with dtc = gtc = 0.5, cttc = 0.3.
- Diagnostics (not DCASE numbers): `psds2_mean_tpr`, PSDS2 with alpha_st = 0 (no penalty on the spread of
  the per-class TPRs, which alone can zero PSDS for an early, uneven model), and `frame_auc`, the macro
  ROC AUC of the (unfiltered) frame scores against frame targets on the same grid.

Every clip is scored, clips without events too (their false positives and duration count in the eFPR);
only classes with at least one ground-truth event are scored (sed_scores_eval requires it and a class
without events has no TPR); same-class ground-truth events that touch or overlap are merged first
(both libraries reject or mis-count them, DESED issue #55).

Median filtering and thresholding live in `metrics/sed_postprocessing.py`, the PSD-ROC CSV and PNG writers in
`metrics/psd_roc_files.py`; both are importable from here too.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from audiopipe.metrics.psd_roc_files import plot_roc as plot_roc  # re-exported for the training tasks
from audiopipe.metrics.psd_roc_files import write_roc_csv as write_roc_csv
from audiopipe.metrics.sed_postprocessing import frame_boundaries, median_filter_scores, scores_to_events

if TYPE_CHECKING:
    from psds_eval import PSDSEval

GroundTruth = Mapping[str, Sequence[tuple[float, float, str]]]
THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.arange(1 / 100, 1, 1 / 50))  # 50 operating points


@dataclass(frozen=True)
class PSDSScenario:
    """DCASE PSDS parameters (Bilen et al., ICASSP 2020)."""

    dtc: float
    gtc: float
    cttc: float
    alpha_ct: float
    alpha_st: float
    max_efpr: float


PSDS1 = PSDSScenario(dtc=0.7, gtc=0.7, cttc=0.3, alpha_ct=0.0, alpha_st=1.0, max_efpr=100.0)
PSDS2 = PSDSScenario(dtc=0.1, gtc=0.1, cttc=0.3, alpha_ct=0.5, alpha_st=1.0, max_efpr=100.0)


@dataclass(frozen=True)
class PSDSResult:
    """PSDS value and its PSD-ROC (effective FPR per hour, effective TPR)."""

    value: float
    efpr: np.ndarray
    tpr: np.ndarray


# ----------------------------------------------------------------------------- score and event tables


def scores_dataframe(
    scores: np.ndarray, *, frame_rate_hz: float, class_names: Sequence[str], duration_s: float
) -> pd.DataFrame:
    """sed_scores_eval score DataFrame (onset, offset, one column per class) from (C, T) scores."""
    from sed_scores_eval.base_modules.scores import create_score_dataframe

    timestamps = frame_boundaries(scores.shape[1], frame_rate_hz, duration_s)
    keep = timestamps[1:] > timestamps[:-1]  # frames that start at or past the clip end carry no time
    keep_ts = np.concatenate([timestamps[:1], timestamps[1:][keep]])
    return create_score_dataframe(scores.T[keep].astype(np.float64), keep_ts, list(class_names))


def events_dataframe(events: Mapping[str, Sequence[tuple[float, float, str]]]) -> pd.DataFrame:
    """DESED-style table (filename, onset, offset, event_label) from per-clip event lists."""
    rows = [(clip, on, off, label) for clip, evs in events.items() for on, off, label in evs]
    frame = pd.DataFrame(rows, columns=["filename", "onset", "offset", "event_label"])
    return frame.astype({"filename": str, "onset": float, "offset": float, "event_label": str})


def merge_connected(ground_truth: GroundTruth) -> dict[str, list[tuple[float, float, str]]]:
    """Merge same-class ground-truth events of a clip that overlap or touch."""
    merged: dict[str, list[tuple[float, float, str]]] = {}
    for clip, events in ground_truth.items():
        out: list[list] = []
        for on, off, label in sorted(events, key=lambda e: (e[2], e[0])):
            if out and out[-1][2] == label and on <= out[-1][1]:
                out[-1][1] = max(out[-1][1], off)
            else:
                out.append([float(on), float(off), label])
        merged[clip] = sorted((on, off, label) for on, off, label in out)
    return merged


# ----------------------------------------------------------------------------- PSDS


@contextlib.contextmanager
def sed_scores_eval_compat() -> Iterator[None]:
    """Scope in which sed_scores_eval 0.0.4 and psds_eval 0.5.3 run on pandas >= 3 without patching them for good.

    pandas >= 3 (copy-on-write) hands out read-only arrays, which sed_scores_eval's Cython kernel
    `onset_offset_curves` rejects ("buffer source array is read-only"): inside the scope the module attribute
    `sed_scores_eval.base_modules.statistics.onset_offset_curves` gives it writable copies, and the original
    function is put back on exit (also on errors; nested scopes restore in order). The pandas deprecation
    warnings that psds_eval's `inplace=` calls raise (up to ~100 per PSDS) and its "similar operating point
    exists" notice (adjacent thresholds often decode to the same events) are silenced inside the scope only.
    """
    from sed_scores_eval.base_modules import statistics

    original = statistics.onset_offset_curves

    def writable(scores: np.ndarray, timestamps: np.ndarray, *args: object) -> object:
        return original(np.array(scores, dtype=np.float64), np.array(timestamps, dtype=np.float64), *args)

    statistics.onset_offset_curves = writable
    try:
        with warnings.catch_warnings():
            for category in (DeprecationWarning, FutureWarning):
                warnings.filterwarnings("ignore", category=category, module=r"(psds_eval|sed_scores_eval)(\.|$)")
            warnings.filterwarnings("ignore", "A similar operating point exists", UserWarning, r"psds_eval(\.|$)")
            yield
    finally:
        statistics.onset_offset_curves = original


def psds_threshold_free(
    scores: Mapping[str, pd.DataFrame],
    ground_truth: GroundTruth,
    durations: Mapping[str, float],
    scenario: PSDSScenario,
) -> PSDSResult:
    """PSDS over all thresholds with sed_scores_eval (exact, Ebbers et al., ICASSP 2022)."""
    from sed_scores_eval.intersection_based import psds

    with sed_scores_eval_compat():
        value, _, (tpr, efpr), _ = psds(
            dict(scores),
            dict(ground_truth),
            dict(durations),
            dtc_threshold=scenario.dtc,
            gtc_threshold=scenario.gtc,
            cttc_threshold=scenario.cttc if scenario.alpha_ct > 0 else None,
            alpha_ct=scenario.alpha_ct,
            alpha_st=scenario.alpha_st,
            unit_of_time="hour",
            max_efpr=scenario.max_efpr,
        )
    return PSDSResult(float(value), np.asarray(efpr, dtype=float), np.asarray(tpr, dtype=float))


def _step_curve(x: np.ndarray, xp: np.ndarray, yp: np.ndarray) -> np.ndarray:
    """psds_eval 0.5.3 `PSDSEval.step_curve` with `ffill()` for pandas >= 3 (no `fillna(method=...)`)."""
    roc = pd.DataFrame({"x": xp, "y": yp}).groupby("x").agg("max").reset_index().sort_values(by="x")
    if x.size < roc.x.size:
        raise ValueError(f"x: {x.size}, xp: {xp.size}")
    roc["y"] = roc["y"].cummax()  # operating points are not monotonic in TPR
    merged = pd.merge(pd.Series(x, name="x"), roc, how="outer", on="x").ffill().fillna(value=0)
    return merged["y"].to_numpy()


def _auc(x: np.ndarray, y: np.ndarray, max_x: float | None = None, decreasing_y: bool = False) -> float:
    """psds_eval 0.5.3 `PSDSEval._auc` (sum of rectangles up to max_x) without its numpy >= 2 `int(array)`."""
    del decreasing_y  # only used by psds_eval for input checks
    _x, _y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    max_x = float(_x.max()) if max_x is None else max_x
    if max_x not in _x:
        _x = np.sort(np.concatenate([_x, [max_x]]))
        max_i = int(np.flatnonzero(_x == max_x)[0])
        _y = np.concatenate([_y[:max_i], [_y[max_i - 1]], _y[max_i:]])
    valid = _x <= max_x
    return float(np.sum(np.diff(_x[valid]) * _y[valid][:-1]))


def _psds_eval(scenario: PSDSScenario, ground_truth: GroundTruth, durations: Mapping[str, float]) -> PSDSEval:
    from psds_eval import PSDSEval

    class CompatPSDSEval(PSDSEval):
        # psds_eval 0.5.3 predates pandas 3 and numpy 2; these two overrides restore its own semantics
        step_curve = staticmethod(_step_curve)
        _auc = staticmethod(_auc)

    gt = events_dataframe(ground_truth)
    meta = pd.DataFrame({"filename": list(durations), "duration": [float(d) for d in durations.values()]})
    return CompatPSDSEval(
        dtc_threshold=scenario.dtc,
        gtc_threshold=scenario.gtc,
        cttc_threshold=scenario.cttc,
        ground_truth=gt,
        metadata=meta,
    )


def psds_operating_points(
    detections: Mapping[float, pd.DataFrame],
    ground_truth: GroundTruth,
    durations: Mapping[str, float],
    scenario: PSDSScenario,
) -> PSDSResult:
    """PSDS with psds_eval from event tables decoded at fixed thresholds ({threshold: events_dataframe})."""
    with sed_scores_eval_compat():
        evaluator = _psds_eval(scenario, ground_truth, durations)
        for i, (threshold, table) in enumerate(sorted(detections.items())):
            info = {"name": f"op{i:02d}", "threshold": threshold}
            evaluator.add_operating_point(table.reset_index(drop=True), info=info)
        result = evaluator.psds(alpha_ct=scenario.alpha_ct, alpha_st=scenario.alpha_st, max_efpr=scenario.max_efpr)
    return PSDSResult(
        float(result.value), np.asarray(result.plt.xp, dtype=float), np.asarray(result.plt.yp, dtype=float)
    )


# ----------------------------------------------------------------------------- F1 scores


def intersection_f1(detections: pd.DataFrame, ground_truth: GroundTruth, durations: Mapping[str, float]) -> float:
    """Macro intersection-based F1 (psds_eval, dtc = gtc = 0.5, cttc = 0.3)."""
    with sed_scores_eval_compat(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # classes without detections: psds_eval divides 0 / 0
        evaluator = _psds_eval(PSDSScenario(0.5, 0.5, 0.3, 0.0, 0.0, 100.0), ground_truth, durations)
        macro_f, _ = evaluator.compute_macro_f_score(detections.reset_index(drop=True))  # NaN -> F1 0 below
    return float(0.0 if np.isnan(macro_f) else macro_f)


def event_f1(detections: Mapping[str, Sequence[tuple[float, float, str]]], ground_truth: GroundTruth) -> float:
    """Macro (class-wise average) event-based F1 with sed_eval: 200-ms collar, offset 20 % of length."""
    import sed_eval
    from dcase_util.containers import MetaDataContainer

    labels = sorted(
        {e[2] for evs in ground_truth.values() for e in evs} | {e[2] for evs in detections.values() for e in evs}
    )
    metric = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=labels, t_collar=0.2, percentage_of_length=0.2, empty_system_output_handling="zero_score"
    )

    def container(clip: str, events: Sequence[tuple[float, float, str]]) -> MetaDataContainer:
        rows = [{"filename": clip, "onset": on, "offset": off, "event_label": label} for on, off, label in events]
        return MetaDataContainer(rows)

    for clip, reference in ground_truth.items():
        metric.evaluate(
            reference_event_list=container(clip, reference),
            estimated_event_list=container(clip, detections.get(clip, [])),
        )
    value = metric.results_class_wise_average_metrics()["f_measure"]["f_measure"]
    return float(0.0 if value is None or np.isnan(value) else value)


def frame_auc(
    scores: Mapping[str, np.ndarray], ground_truth: GroundTruth, *, class_names: Sequence[str], frame_rate_hz: float
) -> float:
    """Macro ROC AUC of (C, T) frame scores against frame targets encoded on the same grid
    (`audiopipe.data.labels.encode_events`); classes without active or without inactive frames are skipped."""
    from sklearn.metrics import roc_auc_score

    from audiopipe.data.labels import encode_events

    lookup = {name: i for i, name in enumerate(class_names)}
    rows_s, rows_y = [], []
    for clip, s in scores.items():
        events = [(on, off, lookup[lab]) for on, off, lab in ground_truth.get(clip, []) if lab in lookup]
        n_classes, n_frames = len(class_names), s.shape[1]
        rows_y.append(encode_events(events, n_classes=n_classes, n_frames=n_frames, frame_rate_hz=frame_rate_hz))
        rows_s.append(s)
    y, s = np.concatenate(rows_y, axis=1), np.concatenate(rows_s, axis=1)
    aucs = [roc_auc_score(y[c], s[c]) for c in range(len(class_names)) if 0 < y[c].sum() < y.shape[1]]
    return float(np.mean(aucs)) if aucs else float("nan")


# ----------------------------------------------------------------------------- everything at once


@dataclass(frozen=True)
class SEDEvaluation:
    """Scalar metrics and the PSD-ROC curves that produced the PSDS values."""

    metrics: dict[str, float]
    rocs: dict[str, PSDSResult]


def evaluate_sed(
    scores: Mapping[str, np.ndarray],
    ground_truth: GroundTruth,
    durations: Mapping[str, float],
    *,
    class_names: Sequence[str],
    frame_rate_hz: float,
    median_windows: Sequence[int],
    operating_points: bool = True,
) -> SEDEvaluation:
    """PSDS1/PSDS2 (threshold-free; and at 50 operating points if asked), event F1 and intersection F1.

    Args:
        scores: clip id -> (C, T) frame probabilities (not yet median-filtered).
        operating_points: also compute the psds_eval values (`psds1_op`, `psds2_op`), slower.
    """
    gt = merge_connected({clip: list(ground_truth.get(clip, [])) for clip in scores})
    scored = [c for c in class_names if any(e[2] == c for evs in gt.values() for e in evs)]
    if not scored:
        raise ValueError("no ground-truth events: PSDS is undefined")
    index = [list(class_names).index(c) for c in scored]
    filtered = {clip: median_filter_scores(s, median_windows)[index] for clip, s in scores.items()}
    # every clip counts, those without events too: their false positives and their duration enter the eFPR
    # (as in psds_eval and sed_scores_eval on the whole set, and in the operating-point path below)
    frames = {
        clip: scores_dataframe(
            filtered[clip], frame_rate_hz=frame_rate_hz, class_names=scored, duration_s=durations[clip]
        )
        for clip in filtered
    }
    all_dur = {clip: float(durations[clip]) for clip in filtered}
    metrics: dict[str, float] = {}
    rocs: dict[str, PSDSResult] = {}
    for name, scenario in (("psds1", PSDS1), ("psds2", PSDS2)):
        rocs[name] = psds_threshold_free(frames, gt, all_dur, scenario)
        metrics[name] = rocs[name].value
    no_spread = PSDSScenario(PSDS2.dtc, PSDS2.gtc, PSDS2.cttc, PSDS2.alpha_ct, 0.0, PSDS2.max_efpr)
    rocs["psds2_mean_tpr"] = psds_threshold_free(frames, gt, all_dur, no_spread)
    metrics["psds2_mean_tpr"] = rocs["psds2_mean_tpr"].value
    metrics["frame_auc"] = frame_auc(
        {clip: scores[clip][index] for clip in scores}, gt, class_names=scored, frame_rate_hz=frame_rate_hz
    )

    def decode(threshold: float) -> dict[str, list[tuple[float, float, str]]]:
        return {
            clip: scores_to_events(
                s, threshold, frame_rate_hz=frame_rate_hz, class_names=scored, duration_s=durations[clip]
            )
            for clip, s in filtered.items()
        }

    at_half = decode(0.5)
    metrics["event_f1"] = event_f1(at_half, gt)
    metrics["intersection_f1"] = intersection_f1(events_dataframe(at_half), gt, all_dur)
    if operating_points:
        tables = {t: events_dataframe(decode(t)) for t in THRESHOLDS}
        for name, scenario in (("psds1", PSDS1), ("psds2", PSDS2)):
            rocs[f"{name}_op"] = psds_operating_points(tables, gt, all_dur, scenario)
            metrics[f"{name}_op"] = rocs[f"{name}_op"].value
    return SEDEvaluation(metrics, rocs)
