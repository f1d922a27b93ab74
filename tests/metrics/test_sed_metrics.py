"""Tests for audiopipe.metrics.sed: PSDS agreement between psds_eval (operating points, our decoder) and
sed_scores_eval (threshold-free), F1 cross-checks, score tables and the PSD-ROC files
(post-processing: test_sed_postprocessing.py).

Scores are quantised to levels that never equal a threshold, so the 5 operating points passed to psds_eval
produce every binarisation sed_scores_eval visits: the two PSDS values must then coincide.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from audiopipe.metrics import sed
from audiopipe.metrics.psd_roc_files import plot_roc, write_roc_csv
from audiopipe.metrics.sed import PSDS1, PSDS2

CLASSES = ["alarm", "dog", "speech"]
RATE = 15.625  # ATST-SED output frames per second (64 ms)
N_FRAMES = 156  # 10-s clips
LEVELS = (0.3, 0.5, 0.7, 0.9)
OP_THRESHOLDS = (0.09, 0.29, 0.49, 0.69, 0.89)  # one between each pair of score levels


def _generate(seed: int, n_clips: int = 8, perfect: bool = False):
    rng = np.random.default_rng(seed)
    scores, truth, durations = {}, {}, {}
    for k in range(n_clips):
        clip = f"clip{k}"
        s = np.full((len(CLASSES), N_FRAMES), 0.0 if perfect else 0.1)
        events = []
        present = rng.random(len(CLASSES)) < 0.5
        present[k % len(CLASSES)] = True  # every clip has an event, some classes are absent
        for c, label in enumerate(CLASSES):
            fp = int(rng.integers(0, N_FRAMES - 6))
            if not perfect:
                s[c, fp : fp + 6] = rng.choice(LEVELS[:3])  # a false alarm (or an extra hit inside an event)
            if not present[c]:
                continue
            # 10..19 frames and shifts of <= 4 frames keep every boundary off the 200-ms collar (no float ties)
            on, length = int(rng.integers(0, 130)), int(rng.integers(10, 20))
            events.append((on / RATE, (on + length) / RATE, label))
            if perfect:
                s[c, on : on + length] = 0.9
                continue
            shift = int(rng.integers(-4, 5))  # imprecise boundaries
            s[c, max(on + shift, 0) : on + length + shift] = rng.choice(LEVELS)
        scores[clip], truth[clip], durations[clip] = s, events, 10.0
    return scores, truth, durations


def _frames(scores):
    return {
        c: sed.scores_dataframe(s, frame_rate_hz=RATE, class_names=CLASSES, duration_s=10.0) for c, s in scores.items()
    }


def _tables(scores, thresholds):
    return {
        t: sed.events_dataframe(
            {
                c: sed.scores_to_events(s, t, frame_rate_hz=RATE, class_names=CLASSES, duration_s=10.0)
                for c, s in scores.items()
            }
        )
        for t in thresholds
    }


@pytest.mark.parametrize("scenario", [PSDS1, PSDS2], ids=["psds1", "psds2"])
def test_psds_eval_operating_points_match_sed_scores_eval(scenario: sed.PSDSScenario) -> None:
    scores, truth, durations = _generate(seed=1)
    exact = sed.psds_threshold_free(_frames(scores), truth, durations, scenario)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ops = sed.psds_operating_points(_tables(scores, OP_THRESHOLDS), truth, durations, scenario)
    assert 0.05 < exact.value < 0.95, "generated detections should be neither perfect nor useless"
    assert ops.value == pytest.approx(exact.value, abs=1e-4)


def test_perfect_detections_give_psds_close_to_one() -> None:
    scores, truth, durations = _generate(seed=2, perfect=True)
    for scenario in (PSDS1, PSDS2):
        assert sed.psds_threshold_free(_frames(scores), truth, durations, scenario).value > 0.99


def test_empty_detections_give_zero_psds_and_f1() -> None:
    scores, truth, durations = _generate(seed=3)
    empty = {c: np.zeros_like(s) for c, s in scores.items()}
    result = sed.evaluate_sed(
        empty,
        truth,
        durations,
        class_names=CLASSES,
        frame_rate_hz=RATE,
        median_windows=[1, 1, 1],
        operating_points=False,
    )
    assert result.metrics["psds1"] == 0.0
    assert result.metrics["event_f1"] == 0.0
    assert result.metrics["intersection_f1"] == 0.0


def test_no_detections_give_intersection_f1_zero_without_numpy_warnings() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # psds_eval's 0 / 0 must not reach the user's log
        value = sed.intersection_f1(sed.events_dataframe({"a": []}), {"a": [(1.0, 2.0, "Dog")]}, {"a": 10.0})
    assert value == 0.0


def test_perfect_detections_give_f1_one() -> None:
    scores, truth, durations = _generate(seed=4, perfect=True)
    detections = {
        c: sed.scores_to_events(s, 0.5, frame_rate_hz=RATE, class_names=CLASSES, duration_s=10.0)
        for c, s in scores.items()
    }
    assert sed.event_f1(detections, truth) == pytest.approx(1.0)
    assert sed.intersection_f1(sed.events_dataframe(detections), truth, durations) == pytest.approx(1.0)


def test_event_f1_matches_sed_scores_eval_collar_fscore() -> None:
    from sed_scores_eval import collar_based

    scores, truth, _ = _generate(seed=5)
    detections = {
        c: sed.scores_to_events(s, 0.6, frame_rate_hz=RATE, class_names=CLASSES, duration_s=10.0)
        for c, s in scores.items()
    }
    ours = sed.event_f1(detections, truth)
    with sed.sed_scores_eval_compat():  # sed_scores_eval 0.0.4 on pandas >= 3
        theirs, *_ = collar_based.fscore(
            _frames(scores), truth, threshold=0.6, onset_collar=0.2, offset_collar=0.2, offset_collar_rate=0.2
        )
    assert 0.0 < ours < 1.0
    assert ours == pytest.approx(theirs["macro_average"], abs=1e-6)


def test_intersection_f1_matches_sed_scores_eval() -> None:
    from sed_scores_eval import intersection_based

    scores, truth, durations = _generate(seed=6)
    detections = {
        c: sed.scores_to_events(s, 0.6, frame_rate_hz=RATE, class_names=CLASSES, duration_s=10.0)
        for c, s in scores.items()
    }
    ours = sed.intersection_f1(sed.events_dataframe(detections), truth, durations)
    with sed.sed_scores_eval_compat():
        theirs, *_ = intersection_based.fscore(
            _frames(scores), truth, threshold=0.6, dtc_threshold=0.5, gtc_threshold=0.5
        )
    assert 0.0 < ours < 1.0
    assert ours == pytest.approx(theirs["macro_average"], abs=1e-6)


def test_thresholds_are_the_fifty_atst_sed_operating_points() -> None:
    assert len(sed.THRESHOLDS) == 50
    assert sed.THRESHOLDS[0] == pytest.approx(0.01) and sed.THRESHOLDS[-1] == pytest.approx(0.99)


def test_scores_dataframe_clips_frames_to_duration() -> None:
    frame = sed.scores_dataframe(np.full((3, 156), 0.5), frame_rate_hz=15.625, class_names=CLASSES, duration_s=9.5)
    assert frame["offset"].max() == pytest.approx(9.5)
    assert (frame["offset"] > frame["onset"]).all()


def test_merge_connected_joins_touching_same_class_events() -> None:
    merged = sed.merge_connected({"a": [(0.0, 1.0, "dog"), (1.0, 2.0, "dog"), (0.5, 1.5, "cat")]})
    assert merged["a"] == [(0.0, 2.0, "dog"), (0.5, 1.5, "cat")]


def test_evaluate_sed_reports_all_metrics_and_writes_curves(tmp_path) -> None:
    scores, truth, durations = _generate(seed=7, n_clips=3)
    result = sed.evaluate_sed(
        scores,
        truth,
        durations,
        class_names=CLASSES,
        frame_rate_hz=RATE,
        median_windows=[3, 3, 3],
        operating_points=False,
    )
    assert set(result.metrics) == {"psds1", "psds2", "event_f1", "intersection_f1", "psds2_mean_tpr", "frame_auc"}
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    write_roc_csv(tmp_path / "roc.csv", result.rocs)
    plot_roc(tmp_path / "roc.png", result.rocs)
    lines = (tmp_path / "roc.csv").read_text().splitlines()
    assert lines[0] == "curve,efpr,tpr" and len(lines) > 2
    assert (tmp_path / "roc.png").stat().st_size > 1000


def test_evaluate_sed_without_events_raises() -> None:
    with pytest.raises(ValueError, match="no ground-truth events"):
        sed.evaluate_sed(
            {"a": np.zeros((3, 10))},
            {"a": []},
            {"a": 1.0},
            class_names=CLASSES,
            frame_rate_hz=RATE,
            median_windows=[1, 1, 1],
        )
