"""`audiopipe tag FILE...`: top-k clip tags of audio files with one tagger checkpoint or an ensemble.

Checkpoints: our `mn_tagger` / `dymn_tagger` / `eat_tagger` files, EfficientAT `mn*_as*.pt` / `dymn*_as*.pt`
(architecture from the file name or `--model`), fine-tuned EAT (fairseq or Hugging Face); see
`audiopipe.inference.checkpoints`. Published AudioSet models show the 527 AudioSet names.

Any container, rate, channel count and length: files are decoded (mono mix), resampled by ffmpeg to each model's
`sample_rate`, cut into windows of `--window-s` seconds with hop `--hop-s` (n = ceil((L − W) / H) + 1 windows,
the last one zero-padded; a file no longer than one window is one window of its own length, at least 1 s) and
run `--batch-size` windows at a time. Files longer than 10 minutes are streamed (decoded in 30-s blocks), so
memory does not grow with the length. Several `--checkpoint`s form an ensemble: their logits are averaged per
window (EfficientAT models/ensemble.py), then the sigmoid is applied. Default output pools the windows (mean
of window probabilities); `--windows` reports each window. A file that cannot be decoded gives one line on
stderr naming it; the others are still tagged and the exit code is 1. Silent or near-silent files and float
samples beyond ±1 get a warning line (and a "warnings" entry in `--json`); the exit code stays 0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from audiopipe.inference.errors import UserError
from audiopipe.inference.options import device_choice, positive_float, positive_int, require_files

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

DEFAULT_CHECKPOINT = Path("data/distill_mobilenet/student.pt")
MIN_SECONDS = 1.0  # shorter files are zero-padded to this length (STFT front ends need a few frames)
INTERMIXED = True  # `tag a.wav --checkpoint ck.pt b.wav` tags both files


@dataclass
class Tagger:
    """One loaded checkpoint: waveform (B, T) at `sample_rate` -> logits (B, C)."""

    model: nn.Module
    sample_rate: int
    class_names: list[str]
    source: str


def load_taggers(paths: list[Path], device: torch.device, model_name: str | None = None) -> list[Tagger]:
    """Load checkpoints for an ensemble; each must be a tagger and all must share one class list (UserError)."""
    from audiopipe.inference.checkpoints import load_for_inference, require_kind

    taggers = []
    for path in paths:
        loaded = load_for_inference(path, model_name=model_name)
        require_kind(loaded, ("tagger",))
        taggers.append(Tagger(loaded.model.to(device).eval(), loaded.sample_rate, loaded.class_names, str(path)))
    for other in taggers[1:]:
        if other.class_names != taggers[0].class_names:
            raise UserError(f"--checkpoint {other.source}: class list differs from {taggers[0].source}; cannot "
                            "ensemble them (pass checkpoints trained on the same classes)", exit_code=2)
    return taggers


def window_starts(duration_s: float, window_s: float, hop_s: float) -> list[float]:
    """Start times (s) of the analysis windows: one window if the file fits, else ceil((L − W) / H) + 1."""
    if window_s <= 0 or hop_s <= 0:
        raise ValueError("window and hop must be positive")
    if duration_s <= window_s:
        return [0.0]
    return [k * hop_s for k in range(math.ceil((duration_s - window_s) / hop_s - 1e-9) + 1)]


def _counted(blocks: Iterable[np.ndarray], total: list[int]) -> Iterator[np.ndarray]:
    for block in blocks:
        total[0] += block.shape[0]
        yield block


def _tag_blocks(
    taggers: list[Tagger], blocks_for: Any, *, window_s: float, hop_s: float, batch_size: int
) -> tuple[list[tuple[float, float]], np.ndarray, float]:
    """Shared core: `blocks_for(sample_rate)` gives the mono blocks at that rate."""
    import numpy as np
    import torch

    from audiopipe.inference.stream import sliding_windows

    logits_sum: torch.Tensor | None = None
    starts: list[float] = []
    duration = 0.0
    for tagger in taggers:
        device = next(tagger.model.parameters()).device
        sr = tagger.sample_rate
        total = [0]
        windows = sliding_windows(_counted(blocks_for(sr), total), round(window_s * sr), round(hop_s * sr),
                                  min_len=round(MIN_SECONDS * sr))
        outputs, these_starts, batch = [], [], []
        with torch.no_grad():
            for start, piece in windows:
                these_starts.append(start / sr)
                batch.append(piece)
                if len(batch) == batch_size:
                    outputs.append(tagger.model(torch.from_numpy(np.stack(batch)).to(device)).float().cpu())
                    batch = []
            if batch:
                outputs.append(tagger.model(torch.from_numpy(np.stack(batch)).to(device)).float().cpu())
        out = torch.cat(outputs)
        duration = total[0] / sr
        if logits_sum is None:
            logits_sum, starts = out, these_starts
        else:  # another rate can round the last window away: keep the windows all models saw
            n = min(len(out), len(logits_sum))
            logits_sum, starts = logits_sum[:n] + out[:n], starts[:n]
    if logits_sum is None:
        raise ValueError("no tagger given")
    probs = torch.sigmoid(logits_sum / len(taggers)).numpy()
    windows_s = [(s, min(s + window_s, duration)) for s in starts]
    return windows_s, probs, duration


def tag_waveform(
    taggers: list[Tagger],
    waveform: np.ndarray,
    sample_rate: int,
    *,
    window_s: float,
    hop_s: float,
    batch_size: int = 8,
) -> tuple[list[tuple[float, float]], np.ndarray]:
    """Per-window ensemble probabilities of an in-memory mono waveform.

    Returns:
        windows [(start_s, end_s)], probabilities (n_windows, C) = sigmoid(mean over models of logits).
    """
    from audiopipe.audio.resample import resample

    def blocks_for(rate: int) -> list[np.ndarray]:
        return [resample(waveform, sample_rate, rate) if rate != sample_rate else waveform]

    windows, probs, _ = _tag_blocks(taggers, blocks_for, window_s=window_s, hop_s=hop_s, batch_size=batch_size)
    return windows, probs


def top_k(probs: np.ndarray, class_names: list[str], k: int) -> list[dict[str, Any]]:
    """The k most probable labels, highest first, as [{"label", "probability"}]."""
    import numpy as np

    order = np.argsort(-probs, kind="stable")[: max(0, min(k, len(class_names)))]
    return [{"label": class_names[i], "probability": round(float(probs[i]), 4)} for i in order]


def tag_file(path: Path, taggers: list[Tagger], args: argparse.Namespace) -> dict[str, Any]:
    """Tag one file (streamed when long); the result dict is what --json prints."""
    from audiopipe.inference.stream import LevelMeter, audio_blocks

    meters: list[LevelMeter] = []

    def blocks_for(rate: int) -> Iterator[np.ndarray]:
        meters.append(LevelMeter())
        return audio_blocks(path, rate, meters[-1])

    windows, probs, duration = _tag_blocks(taggers, blocks_for, window_s=args.window_s, hop_s=args.hop_s,
                                           batch_size=args.batch_size)
    names = taggers[0].class_names
    result: dict[str, Any] = {
        "file": str(path),
        "duration_s": round(duration, 3),
        "n_windows": len(windows),
        "tags": top_k(probs.mean(axis=0), names, args.top_k),
    }
    warnings = meters[0].warnings() if meters else []
    if warnings:
        result["warnings"] = warnings
    if args.windows:
        result["windows"] = [
            {"start_s": round(a, 3), "end_s": round(b, 3), "tags": top_k(p, names, args.top_k)}
            for (a, b), p in zip(windows, probs)
        ]
    return result


def _write_table(result: dict[str, Any], out: TextIO) -> None:
    pooled = "pooled over" if result["n_windows"] > 1 else "in"
    out.write(f"{result['file']} ({result['duration_s']:.1f} s, {pooled} {result['n_windows']} window(s))\n")
    for warning in result.get("warnings", []):
        out.write(f"  ! {warning}\n")
    sections = [(f"  [{w['start_s']:.1f}-{w['end_s']:.1f} s]", w["tags"]) for w in result.get("windows", [])]
    for title, tags in sections or [("", result["tags"])]:
        if title:
            out.write(title + "\n")
        width = max((len(t["label"]) for t in tags), default=0)
        for t in tags:
            out.write(f"    {t['label']:<{width}}  {t['probability']:.3f}\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", type=Path, metavar="FILE", help="audio files (any format ffmpeg reads)")
    parser.add_argument("--checkpoint", type=Path, action="append", default=None, metavar="FILE",
                        help="tagger checkpoint: ours, EfficientAT mn*/dymn*_as.pt or fine-tuned EAT; repeat the "
                             f"flag for an ensemble of mean logits (default: {DEFAULT_CHECKPOINT})")
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="EfficientAT architecture (e.g. mn10_as, dymn10_as) when the file name does not say")
    parser.add_argument("--top-k", type=positive_int, default=10, help="labels to print per file or window")
    parser.add_argument("--windows", action="store_true", help="report every window instead of the pooled mean")
    parser.add_argument("--window-s", type=positive_float, default=10.0, help="window length in seconds")
    parser.add_argument("--hop-s", type=positive_float, default=5.0, help="hop between windows in seconds")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of tables")
    parser.add_argument("--list-classes", action="store_true", help="print the checkpoint's classes and exit")
    parser.add_argument("--device", type=device_choice, default="cpu", help="cpu | cuda | cuda:N | auto")


def _checkpoints(args: argparse.Namespace) -> list[Path]:
    if args.checkpoint:
        return list(args.checkpoint)
    if not DEFAULT_CHECKPOINT.exists():
        raise UserError(f"no --checkpoint given and the default {DEFAULT_CHECKPOINT} is not here (it exists inside "
                        "the audiopipe repository after `dvc repro`); pass --checkpoint FILE", exit_code=2)
    return [DEFAULT_CHECKPOINT]


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    from audiopipe.inference.options import resolve_device

    if not args.list_classes:
        require_files(args.files, "tag")
    device = resolve_device(args.device)
    taggers = load_taggers(_checkpoints(args), device, getattr(args, "model", None))
    if args.list_classes:
        out.write("".join(f"{i}\t{name}\n" for i, name in enumerate(taggers[0].class_names)))
        return 0
    results, failed = [], 0
    for path in args.files:
        try:
            result = tag_file(path, taggers, args)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
            failed += 1
            message = " ".join(str(exc).split()) or type(exc).__name__
            err.write(f"audiopipe tag: {message if str(path) in message else f'{path}: {message}'}\n")
            results.append({"file": str(path), "error": message})
            continue
        for warning in result.get("warnings", []):
            err.write(f"audiopipe tag: warning: {path}: {warning}\n")
        results.append(result)
        if not args.json:
            _write_table(result, out)
    if args.json:
        out.write(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0
