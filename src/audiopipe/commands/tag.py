"""`audiopipe tag FILE...`: top-k clip tags of audio files with one tagger checkpoint or an ensemble.

Any container, rate, channel count and length: files are decoded with `audiopipe.audio.io.load_audio`
(mono mix), resampled to each model's `sample_rate`, cut into windows of `--window-s` seconds with hop
`--hop-s` (n = ceil((L − W) / H) + 1 windows, the last one zero-padded; a file no longer than one window
is one window of its own length) and run window by window. Several `--checkpoint`s form an ensemble:
their logits are averaged per window (EfficientAT models/ensemble.py), then the sigmoid is applied.
Default output pools the windows (mean of window probabilities); `--windows` reports each window.
Checkpoints are rebuilt with `audiopipe.models.load_model`, so MobileNet students and EAT taggers both
work as long as their class lists agree. A file that cannot be decoded gives one line on stderr naming
it; the others are still tagged and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

from audiopipe.audio.io import load_audio
from audiopipe.audio.resample import resample

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path("data/distill_mobilenet/student.pt")
MIN_SECONDS = 1.0  # shorter files are zero-padded to this length (STFT front ends need a few frames)


@dataclass
class Tagger:
    """One loaded checkpoint: waveform (B, T) at `sample_rate` -> logits (B, C)."""

    model: nn.Module
    sample_rate: int
    class_names: list[str]
    source: str


def load_taggers(paths: list[Path], device: torch.device) -> list[Tagger]:
    """Load checkpoints for an ensemble; all must share one class list (ValueError otherwise)."""
    from audiopipe.models import load_model

    taggers = []
    for path in paths:
        model, payload = load_model(path)
        taggers.append(Tagger(model.to(device).eval(), int(payload["sample_rate"]), list(payload["class_names"]),
                              str(path)))
    for other in taggers[1:]:
        if other.class_names != taggers[0].class_names:
            raise ValueError(f"{other.source}: class list differs from {taggers[0].source}; cannot ensemble them")
    return taggers


def window_starts(duration_s: float, window_s: float, hop_s: float) -> list[float]:
    """Start times (s) of the analysis windows: one window if the file fits, else ceil((L − W) / H) + 1."""
    if window_s <= 0 or hop_s <= 0:
        raise ValueError("window and hop must be positive")
    if duration_s <= window_s:
        return [0.0]
    return [k * hop_s for k in range(math.ceil((duration_s - window_s) / hop_s - 1e-9) + 1)]


@torch.no_grad()
def tag_waveform(
    taggers: list[Tagger],
    waveform: np.ndarray,
    sample_rate: int,
    *,
    window_s: float,
    hop_s: float,
    batch_size: int = 8,
) -> tuple[list[tuple[float, float]], np.ndarray]:
    """Per-window ensemble probabilities of a mono waveform.

    Returns:
        windows [(start_s, end_s)], probabilities (n_windows, C) = sigmoid(mean over models of logits).
    """
    duration = waveform.shape[0] / sample_rate
    starts = window_starts(duration, window_s, hop_s)
    span = max(min(window_s, duration), MIN_SECONDS)
    logits_sum: torch.Tensor | None = None
    for tagger in taggers:
        device = next(tagger.model.parameters()).device
        audio = resample(waveform, sample_rate, tagger.sample_rate)
        length = round(span * tagger.sample_rate)
        outputs = []
        for first in range(0, len(starts), batch_size):  # windows are cut per batch: hours of audio stay cheap
            chunks = []
            for start_s in starts[first:first + batch_size]:
                begin = round(start_s * tagger.sample_rate)
                piece = audio[begin:begin + length]
                chunks.append(np.pad(piece, (0, length - piece.shape[0])))
            outputs.append(tagger.model(torch.from_numpy(np.stack(chunks)).to(device)).float().cpu())
        out = torch.cat(outputs)
        logits_sum = out if logits_sum is None else logits_sum + out
    if logits_sum is None:
        raise ValueError("no tagger given")
    probs = torch.sigmoid(logits_sum / len(taggers)).numpy()
    windows = [(s, min(s + window_s, duration)) for s in starts]
    return windows, probs


def top_k(probs: np.ndarray, class_names: list[str], k: int) -> list[dict[str, Any]]:
    """The k most probable labels, highest first, as [{"label", "probability"}]."""
    order = np.argsort(-probs, kind="stable")[: max(0, min(k, len(class_names)))]
    return [{"label": class_names[i], "probability": round(float(probs[i]), 4)} for i in order]


def tag_file(path: Path, taggers: list[Tagger], args: argparse.Namespace) -> dict[str, Any]:
    """Tag one file; the result dict is what --json prints."""
    waveform, sample_rate = load_audio(path, mono=True)
    windows, probs = tag_waveform(taggers, waveform, sample_rate, window_s=args.window_s, hop_s=args.hop_s)
    names = taggers[0].class_names
    result: dict[str, Any] = {
        "file": str(path),
        "duration_s": round(waveform.shape[0] / sample_rate, 3),
        "n_windows": len(windows),
        "tags": top_k(probs.mean(axis=0), names, args.top_k),
    }
    if args.windows:
        result["windows"] = [
            {"start_s": round(a, 3), "end_s": round(b, 3), "tags": top_k(p, names, args.top_k)}
            for (a, b), p in zip(windows, probs)
        ]
    return result


def _write_table(result: dict[str, Any], out: TextIO) -> None:
    pooled = "pooled over" if result["n_windows"] > 1 else "in"
    out.write(f"{result['file']} ({result['duration_s']:.1f} s, {pooled} {result['n_windows']} window(s))\n")
    sections = [(f"  [{w['start_s']:.1f}-{w['end_s']:.1f} s]", w["tags"]) for w in result.get("windows", [])]
    for title, tags in sections or [("", result["tags"])]:
        if title:
            out.write(title + "\n")
        width = max((len(t["label"]) for t in tags), default=0)
        for t in tags:
            out.write(f"    {t['label']:<{width}}  {t['probability']:.3f}\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audio files (any format ffmpeg reads)")
    parser.add_argument("--checkpoint", type=Path, action="extend", nargs="+", default=None,
                        help=f"tagger checkpoint(s); several = ensemble of mean logits (default {DEFAULT_CHECKPOINT})")
    parser.add_argument("--top-k", type=int, default=10, help="labels to print per file or window")
    parser.add_argument("--windows", action="store_true", help="report every window instead of the pooled mean")
    parser.add_argument("--window-s", type=float, default=10.0, help="window length in seconds")
    parser.add_argument("--hop-s", type=float, default=5.0, help="hop between windows in seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of tables")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    from audiopipe.training.distributed import resolve_device

    taggers = load_taggers(args.checkpoint or [DEFAULT_CHECKPOINT], resolve_device(args.device))
    results, failed = [], 0
    for path in args.files:
        try:
            result = tag_file(path, taggers, args)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
            failed += 1
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            err.write(f"audiopipe tag: {message if str(path) in message else f'{path}: {message}'}\n")
            results.append({"file": str(path), "error": message})
            continue
        results.append(result)
        if not args.json:
            _write_table(result, out)
    if args.json:
        out.write(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0
