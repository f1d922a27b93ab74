"""Round two, SED metrics on real-data conventions: clips without events, DESED's empty strong.tsv rows,
and the psds_eval / sed_scores_eval compatibility shims (scoped, warning-free, version-bounded).

The scores are quantised to levels that never equal one of the 50 operating-point thresholds, so psds_eval at
those thresholds visits every binarisation sed_scores_eval does and both PSDS values must coincide.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from audiopipe.metrics import sed
from audiopipe.metrics.sed import PSDS1, PSDS2

CLASSES = ["alarm", "dog", "speech"]
RATE = 15.625
N_FRAMES = 156
LEVELS = (0.3, 0.5, 0.7, 0.9)


def _generate(seed: int, n_clips: int = 6):
    """Clips with 1-3 events and a few false alarms, plus `quiet*` clips without events but with false alarms."""
    rng = np.random.default_rng(seed)
    scores, truth, durations = {}, {}, {}
    for k in range(n_clips):
        s = np.full((len(CLASSES), N_FRAMES), 0.1)
        events = []
        present = rng.random(len(CLASSES)) < 0.5
        present[k % len(CLASSES)] = True
        for c, label in enumerate(CLASSES):
            fp = int(rng.integers(0, N_FRAMES - 6))
            s[c, fp : fp + 6] = rng.choice(LEVELS[:3])
            if present[c]:
                on, length = int(rng.integers(0, 130)), int(rng.integers(10, 20))
                events.append((on / RATE, (on + length) / RATE, label))
                shift = int(rng.integers(-4, 5))
                s[c, max(on + shift, 0) : on + length + shift] = rng.choice(LEVELS)
        scores[f"clip{k}"], truth[f"clip{k}"], durations[f"clip{k}"] = s, events, 10.0
    for k in range(2):  # event-free clips, each with one confident false alarm
        s = np.full((len(CLASSES), N_FRAMES), 0.1)
        s[k, 40:60] = 0.9
        scores[f"quiet{k}"], truth[f"quiet{k}"], durations[f"quiet{k}"] = s, [], 10.0
    return scores, truth, durations


def _evaluate(scores, truth, durations, operating_points: bool = False) -> dict[str, float]:
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning):  # the shims must not leak deprecation warnings
            warnings.simplefilter("error", category)
        return sed.evaluate_sed(scores, truth, durations, class_names=CLASSES, frame_rate_hz=RATE,
                                median_windows=[1, 1, 1], operating_points=operating_points).metrics


def test_event_free_clips_count_in_threshold_free_psds() -> None:
    scores, truth, durations = _generate(seed=7)
    evented = {c: s for c, s in scores.items() if truth[c]}
    with_quiet = _evaluate(scores, truth, durations)
    without = _evaluate(evented, truth, durations)
    for name in ("psds1", "psds2", "psds2_mean_tpr"):
        assert with_quiet[name] < without[name], (name, with_quiet[name], without[name])


def test_threshold_free_psds_matches_the_operating_point_path_with_event_free_clips() -> None:
    scores, truth, durations = _generate(seed=8)
    metrics = _evaluate(scores, truth, durations, operating_points=True)
    assert 0.005 < metrics["psds1"] < 0.98 and 0.005 < metrics["psds2"] < 0.98
    assert metrics["psds1"] == pytest.approx(metrics["psds1_op"], abs=1e-4)
    assert metrics["psds2"] == pytest.approx(metrics["psds2_op"], abs=1e-4)


@pytest.mark.parametrize("scenario", [PSDS1, PSDS2], ids=["psds1", "psds2"])
def test_threshold_free_psds_matches_sed_scores_eval_on_all_clips(scenario: sed.PSDSScenario) -> None:
    from sed_scores_eval.intersection_based import psds

    scores, truth, durations = _generate(seed=9)
    metrics = _evaluate(scores, truth, durations)
    frames = {c: sed.scores_dataframe(s, frame_rate_hz=RATE, class_names=CLASSES, duration_s=10.0)
              for c, s in scores.items()}
    with sed.sed_scores_eval_compat():
        reference, *_ = psds(frames, truth, durations, dtc_threshold=scenario.dtc, gtc_threshold=scenario.gtc,
                             cttc_threshold=scenario.cttc if scenario.alpha_ct > 0 else None,
                             alpha_ct=scenario.alpha_ct, alpha_st=scenario.alpha_st, unit_of_time="hour",
                             max_efpr=scenario.max_efpr)
    name = "psds1" if scenario is PSDS1 else "psds2"
    assert metrics[name] == pytest.approx(float(reference), abs=1e-9)


def test_compat_patch_is_scoped_and_restored_on_error() -> None:
    from sed_scores_eval.base_modules import statistics

    original = statistics.onset_offset_curves
    scores, truth, durations = _generate(seed=10)
    _evaluate(scores, truth, durations)
    assert statistics.onset_offset_curves is original, "evaluate_sed left sed_scores_eval patched"
    with pytest.raises(RuntimeError), sed.sed_scores_eval_compat():
        assert statistics.onset_offset_curves is not original
        raise RuntimeError("boom")
    assert statistics.onset_offset_curves is original


def test_psds_eval_calls_emit_no_pandas_deprecation_warnings() -> None:
    scores, truth, durations = _generate(seed=11)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _evaluate_plain = sed.evaluate_sed(scores, truth, durations, class_names=CLASSES, frame_rate_hz=RATE,
                                           median_windows=[1, 1, 1], operating_points=True)
    assert _evaluate_plain.metrics["psds1_op"] >= 0.0
    noisy = [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert not noisy, {str(w.message)[:80] for w in noisy}
    # outside the scope the user's warning filters are untouched
    with warnings.catch_warnings(record=True) as after:
        warnings.simplefilter("always")
        warnings.warn("still visible", DeprecationWarning, stacklevel=1)
    assert len(after) == 1


def test_dependency_versions_are_bounded_to_the_tested_ones() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    from pathlib import Path

    deps = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    specs = {d.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower().replace("_", "-"): d
             for d in deps["dependencies"]}
    for name in ("pandas", "psds-eval", "sed-scores-eval"):
        assert name in specs, name
        assert "<" in specs[name] or "==" in specs[name], f"{specs[name]} has no upper bound"
