"""Tagging baselines on a tiny pack of pure tones, one frequency per class: the probe must beat the prior."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audiopipe.data.hdf5 import ClipReader, ClipWriter
from audiopipe.evaluation.baselines import (
    N_MELS,
    PRIOR_ROW,
    PROBE_ROW,
    class_prior,
    log_mel_stats,
    probe_scores,
    tagging_baselines,
)

TONES_HZ = {"low": 300.0, "mid": 1200.0, "high": 4000.0}
SAMPLE_RATE = 16000


def write_tone_pack(path: Path, n_clips: int, seed: int, classes: tuple[str, ...] = tuple(TONES_HZ)) -> Path:
    """1 s clips of white noise plus, per class present (p = 0.5), a sine at that class's frequency."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    with ClipWriter(path, class_names=list(classes), sample_rate=SAMPLE_RATE, split=path.stem) as writer:
        for k in range(n_clips):
            present = rng.random(len(classes)) < 0.5
            audio = 0.01 * rng.standard_normal(SAMPLE_RATE)
            for name, on in zip(classes, present):
                if on and name in TONES_HZ:
                    audio += rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * TONES_HZ[name] * t + rng.uniform(0, 6.28))
            writer.add(f"{path.stem}_{k:03d}", audio.astype(np.float32), targets=present.astype(np.float32))
    return path


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> tuple[ClipReader, ClipReader]:
    folder = tmp_path_factory.mktemp("tones")
    return (ClipReader(write_tone_pack(folder / "train.h5", 24, seed=1)),
            ClipReader(write_tone_pack(folder / "test.h5", 12, seed=2)))


def test_log_mel_stats_are_192_finite_features_per_clip(tones: tuple[ClipReader, ClipReader]) -> None:
    train, _ = tones
    features = log_mel_stats(train, duration_s=1.0, batch_size=5)
    assert features.shape == (len(train), 3 * N_MELS) == (24, 192) and np.isfinite(features).all()


def test_linear_probe_beats_the_class_prior_on_separable_tones(tones: tuple[ClipReader, ClipReader]) -> None:
    train, test = tones
    rows = tagging_baselines([train], test, duration_s=1.0, batch_size=8)
    prior, probe = rows[PRIOR_ROW], rows[PROBE_ROW]
    assert prior["test/roc_auc"] == pytest.approx(0.5)  # constant scores: chance ranking
    assert probe["test/roc_auc"] > 0.95 and probe["test/mAP"] > prior["test/mAP"] + 0.3
    assert prior["n_train_clips"] == probe["n_train_clips"] == 24.0


def test_baselines_are_deterministic(tones: tuple[ClipReader, ClipReader]) -> None:
    train, test = tones
    assert tagging_baselines([train], test, 1.0, 8) == tagging_baselines([train], test, 1.0, 8)


def test_a_class_without_training_positives_scores_the_prior() -> None:
    rng = np.random.default_rng(0)
    train_x, test_x = rng.standard_normal((20, 4)), rng.standard_normal((6, 4))
    train_y = np.zeros((20, 2))
    train_y[::2, 0] = 1.0  # class 0 half positive, class 1 never positive
    scores = probe_scores(train_x, train_y, test_x)
    assert scores.shape == (6, 2) and np.all(scores[:, 1] == 0.0)
    np.testing.assert_allclose(class_prior(train_y), [0.5, 0.0])


def test_training_pack_with_other_classes_is_refused(tmp_path: Path, tones: tuple[ClipReader, ClipReader]) -> None:
    _, test = tones
    other = ClipReader(write_tone_pack(tmp_path / "train.h5", 4, seed=3, classes=("low", "mid")))
    with pytest.raises(ValueError, match="differ"):
        tagging_baselines([other], test, 1.0, 8)
