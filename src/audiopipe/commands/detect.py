"""`audiopipe detect FILE...`: sound events (onset, offset, label, score) with an ATST-SED checkpoint.

Any container, rate, channel count and length: files are decoded with `audiopipe.audio.io.load_audio`
(mono mix), resampled to the model's rate and cut into `--window-s` windows (default: the training clip
length, 10 s) with hop `--hop-s` (default 3 s, as ATST-SED's `inference.py`); the last window is zero-padded.
Frame probabilities of overlapping windows are averaged on one frame grid, median-filtered with the
checkpoint's per-class lengths, thresholded with a strict "> --threshold" and turned into events whose
score is the mean probability inside the event. The mean teacher is used when the checkpoint holds one
(`--weights student` to use the student). `--tsv` writes DESED format (filename onset offset event_label).
An undecodable file gives one line on stderr naming it; the others are still processed and the exit code is 1.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiopipe.audio.io import load_audio
from audiopipe.audio.resample import resample
from audiopipe.data.labels import active_runs

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path("data/atst_stage2/model.pt")
Event = tuple[float, float, str, float]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, help="audio files (any format ffmpeg decodes)")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="ATST-SED model.pt")
    parser.add_argument("--tsv", type=Path, default=None, help="also write events here (DESED tsv)")
    parser.add_argument("--threshold", type=float, default=0.5, help="frame probability threshold (strict >)")
    parser.add_argument("--weights", choices=("teacher", "student"), default="teacher", help="which weights to use")
    parser.add_argument("--window-s", type=float, default=None, help="window length (default: training clip length)")
    parser.add_argument("--hop-s", type=float, default=3.0, help="hop between windows in seconds")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")


def load_detector(path: Path, weights: str = "teacher") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the SED model of a checkpoint; load the mean-teacher weights when asked and present."""
    from audiopipe.models import load_model
    from audiopipe.training.checkpoint import load_state_dict_strict

    model, payload = load_model(path)
    if weights == "teacher" and "mean_teacher" in payload:
        load_state_dict_strict(model, payload["mean_teacher"], source=f"{path} (mean_teacher)")
    return model.eval(), payload


@torch.no_grad()
def frame_probabilities(
    model: torch.nn.Module, waveform: np.ndarray, *, window_s: float, hop_s: float, batch_size: int
) -> np.ndarray:
    """(C, N) probabilities on the model's frame grid for a whole file; overlapping windows are averaged."""
    sr, rate = int(model.sample_rate), float(model.frame_rate_hz)
    win, hop = int(round(window_s * sr)), max(1, int(round(hop_s * sr)))
    n_windows = 1 if waveform.shape[0] <= win else math.ceil((waveform.shape[0] - win) / hop) + 1
    padded = np.pad(waveform, (0, max(0, (n_windows - 1) * hop + win - waveform.shape[0])))
    starts = [k * hop for k in range(n_windows)]
    total = max(1, math.ceil(waveform.shape[0] / sr * rate))
    sums: np.ndarray | None = None
    counts = np.zeros(total)
    for b in range(0, n_windows, batch_size):
        chunk = torch.from_numpy(np.stack([padded[s : s + win] for s in starts[b : b + batch_size]]))
        strong, _ = model(chunk)
        for start, probs in zip(starts[b : b + batch_size], strong.float().numpy()):
            first = int(round(start / sr * rate))
            n = max(0, min(probs.shape[1], total - first))
            if sums is None:
                sums = np.zeros((probs.shape[0], total))
            sums[:, first : first + n] += probs[:, :n]
            counts[first : first + n] += 1
    assert sums is not None
    return sums / np.maximum(counts, 1)


def detect_events(
    probs: np.ndarray,
    *,
    frame_rate_hz: float,
    class_names: list[str],
    median_windows: list[int],
    threshold: float,
    duration_s: float,
) -> list[Event]:
    """Median-filter, threshold (strict >) and decode (C, N) probabilities into scored events."""
    from audiopipe.metrics.sed import median_filter_scores

    filtered = median_filter_scores(probs, median_windows)
    events = []
    for c, row in enumerate(filtered):
        for a, b in active_runs(row > threshold):
            onset, offset = a / frame_rate_hz, min(b / frame_rate_hz, duration_s)
            if offset > onset:
                events.append((onset, offset, class_names[c], float(row[a:b].mean())))
    return sorted(events)


def run(args: argparse.Namespace) -> int:
    from audiopipe.audio.io import write_text_atomic

    model, payload = load_detector(args.checkpoint, args.weights)
    post = payload.get("postprocessing", {})
    class_names = list(payload["class_names"])
    windows = post.get("median_windows", [1] * len(class_names))
    window_s = args.window_s or float(post.get("clip_duration_s", 10.0))
    rows, failed = [], 0
    for path in args.files:
        try:
            audio, sr = load_audio(path, mono=True)
        except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
            print(f"audiopipe detect: cannot decode {path}: {error}", file=sys.stderr)
            failed += 1
            continue
        if sr != model.sample_rate:
            audio = resample(audio, sr, int(model.sample_rate))
        probs = frame_probabilities(model, audio, window_s=window_s, hop_s=args.hop_s, batch_size=args.batch_size)
        events = detect_events(
            probs,
            frame_rate_hz=float(model.frame_rate_hz),
            class_names=class_names,
            median_windows=windows,
            threshold=args.threshold,
            duration_s=audio.shape[0] / model.sample_rate,
        )
        print(f"{path}: {len(events)} event(s)")
        for onset, offset, label, score in events:
            print(f"  {onset:8.3f} {offset:8.3f}  {label:<24} {score:.3f}")
            rows.append(f"{path.name}\t{onset:.3f}\t{offset:.3f}\t{label}")
    if args.tsv is not None:
        write_text_atomic(args.tsv, "filename\tonset\toffset\tevent_label\n" + "".join(r + "\n" for r in rows))
    return 1 if failed else 0
