"""Reference rows of the tagging table: the class prior and a linear probe on clip-level log-mel statistics.

Reads the training packs (`train.h5`, `weak.h5`: the clips the taggers learn from) and the test pack through
`ClipReader`; writes nothing. Both baselines are scored with `audiopipe.metrics.tagging.tagging_metrics`, the
function the models are scored with, so their `test/mAP`, `test/roc_auc` and `test/d_prime` read side by side
with the model rows. A model that does not beat both has not learned anything a trivial classifier could not.

- **class prior** (`PRIOR_ROW`): every test clip gets, per class, the frequency of that label over the training
  clips. Scores are constant over clips, so ROC-AUC is 0.5 and AP equals the class's test prevalence.
- **linear probe** (`PROBE_ROW`): clips cropped/zero-padded to `duration_s`, resampled to 16 kHz, 64 log-mel bands
  (`EfficientATMel` in eval mode: 25 ms window, 10 ms hop, 0-8 kHz, no jitter); features are the mean, std and
  max over time of each band (192 dims), standardised with a `StandardScaler` fit on the training clips; one
  `LogisticRegression` per class (one-vs-rest, C=1, lbfgs, max_iter=1000, seed 0, no class weights).
  A class without a positive (or without a negative) training clip gets the prior instead.

Deterministic: the front end draws no random numbers in eval mode and lbfgs is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from audiopipe.audio.features import EfficientATMel
from audiopipe.data.hdf5 import ClipReader
from audiopipe.evaluation.scoring import waveform_batch
from audiopipe.metrics.tagging import class_prior, tagging_metrics

PRIOR_ROW = "baseline: class prior"
PROBE_ROW = "baseline: linear probe (log-mel stats)"
SAMPLE_RATE = 16000
N_MELS = 64
PROBE_C = 1.0
PROBE_MAX_ITER = 1000
PROBE_SEED = 0


def log_mel_front_end() -> EfficientATMel:
    """The probe's fixed front end: (B, T) at 16 kHz -> (B, 64, frames) log-mel, deterministic."""
    return EfficientATMel(sample_rate=SAMPLE_RATE, n_fft=512, win_length=400, hop_length=160, n_mels=N_MELS,
                          fmin=0.0, fmax=SAMPLE_RATE / 2, fmin_aug_range=1, fmax_aug_range=1).eval()


@torch.no_grad()
def log_mel_stats(reader: ClipReader, duration_s: float, batch_size: int) -> np.ndarray:
    """(N, 3 * 64) float64: per band the mean, std and max over time of every clip of `reader`."""
    front_end = log_mel_front_end()
    out = [np.zeros((0, 3 * N_MELS))]
    for start in range(0, len(reader), batch_size):
        indices = list(range(start, min(start + batch_size, len(reader))))
        mel = front_end(waveform_batch(reader, indices, SAMPLE_RATE, duration_s)).double()  # (B, 64, frames)
        out.append(torch.cat([mel.mean(2), mel.std(2, correction=0), mel.amax(2)], dim=1).numpy())
    return np.concatenate(out)


def probe_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """(N_test, C) probabilities of one logistic regression per class on standardised features.

    Classes whose training labels are all negative or all positive score the prior.
    """
    scaler = StandardScaler().fit(train_x)
    train_z, test_z = scaler.transform(train_x), scaler.transform(test_x)
    positive = np.asarray(train_y) > 0.5
    scores = np.tile(class_prior(train_y), (len(test_x), 1))
    for c in range(positive.shape[1]):
        if 0 < positive[:, c].sum() < len(positive):
            probe = LogisticRegression(C=PROBE_C, max_iter=PROBE_MAX_ITER, random_state=PROBE_SEED)
            scores[:, c] = probe.fit(train_z, positive[:, c]).predict_proba(test_z)[:, 1]
    return scores


def _metrics(targets: np.ndarray, scores: np.ndarray, n_train: int) -> dict[str, float]:
    return {**{f"test/{k}": v for k, v in tagging_metrics(targets, scores).items()}, "n_train_clips": float(n_train)}


def tagging_baselines(train_readers: Sequence[ClipReader], test_reader: ClipReader, duration_s: float,
                      batch_size: int) -> dict[str, dict[str, Any]]:
    """`{PRIOR_ROW: metrics, PROBE_ROW: metrics}` on the test pack, trained on every clip of `train_readers`."""
    if not train_readers:
        raise ValueError("tagging baselines need at least one training pack")
    for reader in train_readers:
        if reader.class_names != test_reader.class_names:
            raise ValueError(f"{reader.path}: classes {reader.class_names} differ from {test_reader.path}'s "
                             f"{test_reader.class_names}; repack both (dvc repro pack_hdf5)")
    train_y = np.concatenate([reader.all_targets for reader in train_readers])
    train_x = np.concatenate([log_mel_stats(reader, duration_s, batch_size) for reader in train_readers])
    test_x = log_mel_stats(test_reader, duration_s, batch_size)
    test_y = test_reader.all_targets
    prior = np.tile(class_prior(train_y), (len(test_y), 1))
    return {PRIOR_ROW: _metrics(test_y, prior, len(train_y)),
            PROBE_ROW: _metrics(test_y, probe_scores(train_x, train_y, test_x), len(train_y))}
