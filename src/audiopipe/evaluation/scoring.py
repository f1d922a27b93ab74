"""Run final models over a packed split: tagging scores, SED frame scores and metrics, complexity, CPU latency."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from audiopipe.data.datasets import fit_length, read_clip
from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.labels import reference_events
from audiopipe.metrics.sed import SEDEvaluation, evaluate_sed
from audiopipe.metrics.sed_postprocessing import median_windows
from audiopipe.metrics.tagging import average_precision_per_class, tagging_metrics
from audiopipe.models import load_model
from audiopipe.models.complexity import count_macs, count_parameters
from audiopipe.models.protocols import SoundEventDetector, WaveformTagger
from audiopipe.models.sed import SEDModel
from audiopipe.models.sed import build as build_sed_model
from audiopipe.storage import load_state_dict_strict

Event = tuple[float, float, str]


def waveform_batch(reader: ClipReader, indices: list[int], sample_rate: int, duration_s: float) -> torch.Tensor:
    """(B, T) batch of clips cropped/padded to `duration_s` and resampled to the model's rate."""
    length = int(round(duration_s * sample_rate))
    at_pack_rate = int(round(duration_s * reader.sample_rate))
    return torch.from_numpy(np.stack([
        fit_length(read_clip(reader, i, at_pack_rate, sample_rate), length).astype(np.float32) for i in indices
    ]))


def check_classes(model_classes: list[str], reader: ClipReader, source: str) -> None:
    if list(model_classes) != list(reader.class_names):
        raise ValueError(f"{source}: model classes {model_classes} differ from the test pack's "
                         f"{reader.class_names}; rerun the stage on this data (dvc repro)")


@torch.no_grad()
def tagging_scores(model: WaveformTagger, reader: ClipReader, duration_s: float, batch_size: int) -> np.ndarray:
    """Sigmoid probabilities (N, C) of a waveform→logits tagger over every clip of `reader`."""
    out = []
    for start in range(0, len(reader), batch_size):
        indices = list(range(start, min(start + batch_size, len(reader))))
        out.append(torch.sigmoid(model(waveform_batch(reader, indices, model.sample_rate, duration_s))).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(reader.class_names)), dtype=np.float32)


def evaluate_tagger(checkpoint: Path, reader: ClipReader, duration_s: float, batch_size: int) -> dict[str, Any]:
    """Test metrics, per-class AP, pooled PR data and complexity of one tagging checkpoint."""
    model, payload = load_model(checkpoint)
    if not isinstance(model, WaveformTagger):
        raise TypeError(f"{checkpoint}: a '{payload['builder']}' model has no sample_rate; not a waveform tagger")
    check_classes(payload["class_names"], reader, str(checkpoint))
    targets = np.stack([reader.targets(i) for i in range(len(reader))])
    scores = tagging_scores(model, reader, duration_s, batch_size)
    metrics = {f"test/{k}": v for k, v in tagging_metrics(targets, scores).items()}
    ap = average_precision_per_class(targets, scores)
    per_class = {name: float(value) for name, value in zip(reader.class_names, ap) if np.isfinite(value)}
    metrics.update(complexity(model, model.sample_rate, duration_s))
    return {"metrics": metrics, "per_class_ap": per_class, "targets": targets, "scores": scores}


def complexity(model: nn.Module, sample_rate: int, duration_s: float = 10.0, repeats: int = 3) -> dict[str, float]:
    """Parameters (M), GMACs and median CPU latency (ms) for one clip of `duration_s` seconds at `sample_rate`."""
    clip = torch.zeros(1, int(sample_rate * duration_s))
    macs = count_macs(model, clip)
    timings = []
    with torch.no_grad():
        model(clip)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(clip)
            timings.append(time.perf_counter() - start)
    return {"params_m": count_parameters(model) / 1e6, "gmacs_10s": macs / 1e9 * 10.0 / duration_s,
            "cpu_latency_ms_10s": float(np.median(timings)) * 1000 * 10.0 / duration_s}


def load_sed_models(checkpoint: Path) -> tuple[dict[str, SEDModel], dict[str, Any]]:
    """The student and (when saved) the mean teacher of an ATST-SED stage checkpoint."""
    student, payload = load_model(checkpoint, SEDModel)
    models = {"student": student}
    teacher_state = payload.get("mean_teacher")
    if teacher_state is not None:
        teacher = build_sed_model(payload["builder"], **payload["builder_kwargs"])  # the student's builder
        load_state_dict_strict(teacher, teacher_state, source=f"{checkpoint} (mean_teacher)")
        models["mean_teacher"] = teacher.eval()
    return models, payload


@torch.no_grad()
def sed_frame_scores(
    model: SoundEventDetector, reader: ClipReader, duration_s: float, batch_size: int
) -> dict[str, np.ndarray]:
    """clip id -> (C, T') frame probabilities of an SED model over every clip of `reader`."""
    scores: dict[str, np.ndarray] = {}
    for start in range(0, len(reader), batch_size):
        indices = list(range(start, min(start + batch_size, len(reader))))
        strong, _ = model(waveform_batch(reader, indices, model.sample_rate, duration_s))
        for row, i in enumerate(indices):
            scores[reader.clip_ids[i]] = strong[row].float().numpy()
    return scores


def sed_median_windows(cfg: Any, payload: Mapping[str, Any], reader: ClipReader) -> list[int]:
    """Per-class median filter lengths: the ones the SED stage tuned and saved, else `evaluate.median_windows`."""
    saved = (payload.get("postprocessing") or {}).get("median_windows")
    return median_windows(saved or cfg.median_windows, len(reader.class_names))


def evaluate_sed_model(model: SoundEventDetector, payload: Mapping[str, Any], reader: ClipReader, cfg: Any,
                       reference: Mapping[str, list[Event]]) -> tuple[SEDEvaluation, dict[str, np.ndarray]]:
    """Test metrics (PSDS1/2 threshold-free, event and intersection F1, frame AUC) and frame scores of one SED model.

    `cfg` is the `evaluate` section (duration_s, batch_size, median_windows); `payload` the checkpoint it came from.
    """
    scores = sed_frame_scores(model, reader, cfg.duration_s, cfg.batch_size)
    durations = {clip: cfg.duration_s for clip in reader.clip_ids}
    windows = sed_median_windows(cfg, payload, reader)
    evaluation = evaluate_sed(scores, reference, durations, class_names=reader.class_names,
                              frame_rate_hz=model.frame_rate_hz, median_windows=windows, operating_points=False)
    return evaluation, scores


def evaluate_sed_checkpoint(checkpoint: Path, reader: ClipReader, cfg: Any,
                            variants: Sequence[str] = ("student", "mean_teacher")) -> dict[str, dict[str, float]]:
    """variant ("student", "mean_teacher" when saved) -> test metrics of an ATST-SED checkpoint, as `evaluate`."""
    models, payload = load_sed_models(checkpoint)
    check_classes(payload["class_names"], reader, str(checkpoint))
    reference = reference_events(reader)
    return {variant: evaluate_sed_model(models[variant], payload, reader, cfg, reference)[0].metrics
            for variant in variants if variant in models}
