"""Validation and test scoring of ATST-SED models on packed splits with strong labels.

`eval_split` caches a split's audio at the model rate; `predict_scores` scores several models on the same
batches (frame and clip probabilities); `evaluate_split` turns the frame scores into
`audiopipe.metrics.sed.evaluate_sed` results; `validation_bce` gives the strong (frame) and weak (clip) BCE
against the pack's labels, phase 1's selection criterion (spec atst_sed.md §6.5).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audiopipe.data.labels import encode_events, reference_events
from audiopipe.data.sed_batches import UNLABELLED, SEDClipDataset
from audiopipe.metrics.sed_postprocessing import median_windows as median_windows  # re-exported for finetune_sed
from audiopipe.models.sed import as_sed_model


def eval_split(h5_path: Path, *, duration_s: float, sample_rate: int) -> SEDClipDataset:
    """A strong-labelled split for evaluation: audio at the model rate, cached so that every later
    validation reads and resamples nothing (`kind=UNLABELLED`: no frame targets are built). `exact` reading:
    the same resampler and float32 audio as `evaluate` and `audiopipe detect`, so the numbers agree.

    Raises:
        ValueError: the pack has no strong labels (a tag-only corpus), so PSDS and event F1 are undefined.
    """
    dataset = SEDClipDataset(
        h5_path, duration_s=duration_s, n_frames=0, frame_rate_hz=1.0, kind=UNLABELLED, sample_rate=sample_rate,
        cache=True, exact=True,
    )
    if not dataset.reader.has_strong:
        raise ValueError(
            f"{h5_path}: no strong (onset/offset) labels, so PSDS and event F1 cannot be computed; the SED stages "
            "need a corpus with events in valid/test (download.source: realmix, synthetic or desed)"
        )
    return dataset


Scores = dict[str, dict[str, np.ndarray]]  # model name -> clip id -> probabilities


@torch.no_grad()
def predict_scores(
    models: Mapping[str, nn.Module], dataset: SEDClipDataset, *, batch_size: int
) -> tuple[Scores, Scores]:
    """(frame, clip) probabilities of every clip, all models (in eval mode) on each batch:
    {model name: {clip_id: (C, T') numpy}} and {model name: {clip_id: (C,) numpy}}."""
    strong_scores: Scores = {name: {} for name in models}
    weak_scores: Scores = {name: {} for name in models}
    for model in models.values():
        model.eval()
    for start in range(0, len(dataset), batch_size):
        indices = range(start, min(start + batch_size, len(dataset)))
        audio = torch.stack([dataset.audio(i) for i in indices])
        ids = [dataset.reader.clip_ids[i] for i in indices]
        for name, model in models.items():
            strong, weak = model(audio.to(next(model.parameters()).device))
            strong_scores[name].update({cid: s.float().cpu().numpy() for cid, s in zip(ids, strong)})
            weak_scores[name].update({cid: w.float().cpu().numpy() for cid, w in zip(ids, weak)})
    return strong_scores, weak_scores


def predict_strong(models: Mapping[str, nn.Module], dataset: SEDClipDataset, *, batch_size: int) -> Scores:
    """Frame probabilities {model name: {clip_id: (C, T') numpy}} of every clip, all models on each batch."""
    return predict_scores(models, dataset, batch_size=batch_size)[0]


def validation_bce(
    strong: Mapping[str, np.ndarray], weak: Mapping[str, np.ndarray], dataset: SEDClipDataset, *,
    frame_rate_hz: float,
) -> dict[str, float]:
    """{"strong_bce", "weak_bce"} of one model's scores on a strong-labelled split: frame-level BCE (mean over
    clips, classes and frames) against the pack's events encoded on the training grid (`encode_events` at
    `frame_rate_hz`, T' frames), and clip-level BCE (mean over clips and classes) against the pack's clip tags.

    ATST-SED takes the weak BCE on its weak validation split and the strong BCE on its real-strong one; our
    packs have one validation split with both events and tags, so both come from it.
    """
    reader = dataset.reader
    n_classes = len(reader.class_names)
    frame_targets, clip_targets, frame_scores, clip_scores = [], [], [], []
    for i, cid in enumerate(reader.clip_ids):
        n_frames = strong[cid].shape[-1]
        frame_targets.append(
            encode_events(reader.events(i), n_classes=n_classes, n_frames=n_frames, frame_rate_hz=frame_rate_hz)
        )
        clip_targets.append(reader.targets(i))
        frame_scores.append(strong[cid])
        clip_scores.append(weak[cid])

    def bce(scores: list[np.ndarray], targets: list[np.ndarray]) -> float:
        probs = torch.from_numpy(np.stack(scores).astype(np.float32)).clamp(0.0, 1.0)
        return float(F.binary_cross_entropy(probs, torch.from_numpy(np.stack(targets).astype(np.float32))))

    return {"strong_bce": bce(frame_scores, frame_targets), "weak_bce": bce(clip_scores, clip_targets)}


def evaluate_split(
    models: Mapping[str, nn.Module],
    dataset: SEDClipDataset,
    windows: list[int],
    *,
    clip_duration_s: float,
    batch_size: int,
    operating_points: bool,
    scores: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """`audiopipe.metrics.sed.evaluate_sed` of each model on one split with strong labels: {name: SEDEvaluation}.

    Scores are frame probabilities at the model's `frame_rate_hz` on the same grid the training targets use
    (`audiopipe.data.labels.encode_events`); ground truth, durations and class names come from the pack.
    `scores` ({name: {clip_id: (C, T')}}, e.g. from `predict_scores`) skips the models' forward passes.
    """
    from audiopipe.metrics.sed import evaluate_sed

    reader = dataset.reader
    names = reader.class_names
    truth = reference_events(reader)
    durations = {
        cid: min(clip_duration_s, reader.num_samples(i) / reader.sample_rate)
        for i, cid in enumerate(reader.clip_ids)
    }
    if scores is None:
        scores = predict_strong(models, dataset, batch_size=batch_size)
    return {
        name: evaluate_sed(
            scores[name],
            truth,
            durations,
            class_names=names,
            frame_rate_hz=as_sed_model(model, name).frame_rate_hz,
            median_windows=windows,
            operating_points=operating_points,
        )
        for name, model in models.items()
    }
