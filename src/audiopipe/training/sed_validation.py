"""Validation and test scoring of ATST-SED models on packed splits with strong labels.

`eval_split` caches a split's audio at the model rate; `predict_strong` scores several models on the same
batches; `evaluate_split` turns the scores into `audiopipe.metrics.sed.evaluate_sed` results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from audiopipe.config import AtstSedConfig
from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.sed_batches import UNLABELLED, SEDClipDataset

Event = tuple[float, float, str]


def reference_events(reader: ClipReader) -> dict[str, list[Event]]:
    """clip id -> reference events (onset_s, offset_s, class name) of a packed split."""
    names = reader.class_names
    return {cid: [(on, off, names[c]) for on, off, c in reader.events(i)] for i, cid in enumerate(reader.clip_ids)}


def median_windows(window: Sequence[int], n_classes: int) -> list[int]:
    """Per-class median filter lengths; a single value applies to every class."""
    if len(window) == 1:
        return [int(window[0])] * n_classes
    if len(window) != n_classes:
        raise ValueError(f"median_window has {len(window)} entries for {n_classes} classes")
    return [int(w) for w in window]


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


@torch.no_grad()
def predict_strong(
    models: Mapping[str, nn.Module], dataset: SEDClipDataset, *, batch_size: int
) -> dict[str, dict[str, np.ndarray]]:
    """Frame probabilities {model name: {clip_id: (C, T') numpy}} of every clip, all models on each batch."""
    scores: dict[str, dict[str, np.ndarray]] = {name: {} for name in models}
    for model in models.values():
        model.eval()
    for start in range(0, len(dataset), batch_size):
        indices = range(start, min(start + batch_size, len(dataset)))
        audio = torch.stack([dataset.audio(i) for i in indices])
        ids = [dataset.reader.clip_ids[i] for i in indices]
        for name, model in models.items():
            strong, _ = model(audio.to(next(model.parameters()).device))
            scores[name].update({cid: s.float().cpu().numpy() for cid, s in zip(ids, strong)})
    return scores


def evaluate_split(
    models: Mapping[str, nn.Module],
    dataset: SEDClipDataset,
    cfg: AtstSedConfig,
    windows: list[int],
    *,
    operating_points: bool,
) -> dict[str, Any]:
    """`audiopipe.metrics.sed.evaluate_sed` of each model on one split with strong labels: {name: SEDEvaluation}.

    Scores are frame probabilities at the model's `frame_rate_hz` on the same grid the training targets use
    (`audiopipe.data.labels.encode_events`); ground truth, durations and class names come from the pack.
    """
    from audiopipe.metrics.sed import evaluate_sed

    reader = dataset.reader
    names = reader.class_names
    truth = reference_events(reader)
    durations = {
        cid: min(cfg.clip_duration_s, reader.num_samples(i) / reader.sample_rate)
        for i, cid in enumerate(reader.clip_ids)
    }
    scores = predict_strong(models, dataset, batch_size=cfg.eval_batch_size)
    return {
        name: evaluate_sed(
            scores[name],
            truth,
            durations,
            class_names=names,
            frame_rate_hz=float(model.frame_rate_hz),
            median_windows=windows,
            operating_points=operating_points,
        )
        for name, model in models.items()
    }
