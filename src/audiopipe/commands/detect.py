"""`audiopipe detect FILE...`: sound events (onset, offset, label, score) with a sound event detector.

Checkpoints: our SED models (`data/atst_stage2/model.pt`, `sed_atst` / `sed_eat` / `sed_crnn`) or an ATST-SED
stage-2 Lightning checkpoint (`state_dict` with `sed_student.*` / `sed_teacher.*`: DESED's 10 classes and the
paper's stage-2 median filters [6, 20, 7, 4, 7, 6, 6, 6, 6, 6] frames); see `audiopipe.inference.checkpoints`.

Any container, rate, channel count and length: files are decoded (mono mix), resampled to the model's rate
and cut into `--window-s` windows (default: the training clip length, 10 s) with hop `--hop-s` (default 3 s,
as ATST-SED's `inference.py`); the last window is zero-padded. Files longer than 10 minutes are streamed
(decoded in 30-s blocks). Frame probabilities of overlapping windows are averaged on one frame grid,
median-filtered with the checkpoint's per-class lengths, thresholded with a strict "> --threshold" and turned
into events whose score is the mean probability inside the event. The mean teacher is used when the checkpoint
holds one (`--weights student` to use the student). `--tsv` writes DESED format (filename onset offset
event_label) with each file's absolute path, and a line with empty fields for a file without events; `--json`
prints one JSON list. An undecodable file gives one line on stderr naming it; the others are still processed
and the exit code is 1. Silent or near-silent files get a warning line (exit code 0).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from audiopipe.inference.errors import UserError
from audiopipe.inference.options import device_choice, positive_float, positive_int, probability, require_files

if TYPE_CHECKING:
    import numpy as np

    from audiopipe.inference.checkpoints import InferenceModel
    from audiopipe.models.protocols import SoundEventDetector

DEFAULT_CHECKPOINT = Path("data/atst_stage2/model.pt")
INTERMIXED = True
Event = tuple[float, float, str, float]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", type=Path, metavar="FILE", help="audio files (any format ffmpeg reads)")
    parser.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                        help=f"SED checkpoint: ours or an ATST-SED stage-2 .ckpt (default: {DEFAULT_CHECKPOINT})")
    parser.add_argument("--tsv", type=Path, default=None, help="also write events here (DESED tsv, absolute paths)")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of the text listing")
    parser.add_argument("--threshold", type=probability, default=0.5, help="frame probability threshold (strict >)")
    parser.add_argument("--weights", choices=("teacher", "student"), default="teacher",
                        help="mean-teacher or student weights (when the checkpoint holds both)")
    parser.add_argument("--window-s", type=positive_float, default=None,
                        help="window length in seconds (default: the checkpoint's training clip length, 10 s)")
    parser.add_argument("--hop-s", type=positive_float, default=3.0, help="hop between windows in seconds")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="windows per forward pass")
    parser.add_argument("--list-classes", action="store_true", help="print the checkpoint's classes and exit")
    parser.add_argument("--device", type=device_choice, default="cpu", help="cpu | cuda | cuda:N | auto")


def load_detector(path: Path, weights: str = "teacher") -> tuple[SoundEventDetector, InferenceModel]:
    """The SED model of a checkpoint (mean-teacher weights when asked and present); refuses other kinds."""
    from audiopipe.inference.checkpoints import load_for_inference, require_kind

    loaded = load_for_inference(path, weights=weights)
    require_kind(loaded, ("detector",))
    return loaded.detector().eval(), loaded


class _FrameSums:
    """Growing (C, N) sums and counts of window probabilities on the model's frame grid."""

    def __init__(self) -> None:
        import numpy as np

        self.sums: np.ndarray | None = None
        self.counts = np.zeros(0)

    def add(self, first: int, probs: np.ndarray) -> None:
        import numpy as np

        end = first + probs.shape[1]
        if self.sums is None:
            self.sums = np.zeros((probs.shape[0], max(end, 1024)))
            self.counts = np.zeros(self.sums.shape[1])
        if end > self.sums.shape[1]:
            size = max(end, 2 * self.sums.shape[1])
            self.sums = np.pad(self.sums, ((0, 0), (0, size - self.sums.shape[1])))
            self.counts = np.pad(self.counts, (0, size - self.counts.shape[0]))
        self.sums[:, first:end] += probs
        self.counts[first:end] += 1

    def mean(self, total: int) -> np.ndarray:
        import numpy as np

        assert self.sums is not None
        sums = self.sums[:, :total]
        if sums.shape[1] < total:
            sums = np.pad(sums, ((0, 0), (0, total - sums.shape[1])))
        counts = np.pad(self.counts[:total], (0, max(0, total - self.counts.shape[0])))
        return sums / np.maximum(counts, 1)


def frame_probabilities_blocks(
    model: SoundEventDetector, blocks: Iterable[np.ndarray], *, window_s: float, hop_s: float, batch_size: int
) -> tuple[np.ndarray, float]:
    """(C, N) probabilities on the model's frame grid and the duration (s) of a stream of mono blocks at the
    model's rate; overlapping windows are averaged. Memory: one window batch plus the (C, N) grid."""
    import math

    import numpy as np
    import torch

    from audiopipe.inference.stream import sliding_windows

    sr, rate = int(model.sample_rate), float(model.frame_rate_hz)
    win, hop = int(round(window_s * sr)), max(1, int(round(hop_s * sr)))
    device = next(model.parameters()).device
    grid, total = _FrameSums(), [0]

    def counted() -> Iterable[np.ndarray]:
        for block in blocks:
            total[0] += block.shape[0]
            yield block

    def flush(starts: list[int], chunk: list[np.ndarray]) -> None:
        with torch.no_grad():
            strong, _ = model(torch.from_numpy(np.stack(chunk)).to(device))
        for start, probs in zip(starts, strong.float().cpu().numpy()):
            grid.add(int(round(start / sr * rate)), probs)

    starts: list[int] = []
    chunk: list[np.ndarray] = []
    for start, piece in sliding_windows(counted(), win, hop, min_len=win):
        starts.append(start)
        chunk.append(piece)
        if len(chunk) == batch_size:
            flush(starts, chunk)
            starts, chunk = [], []
    if chunk:
        flush(starts, chunk)
    n_frames = max(1, math.ceil(total[0] / sr * rate))
    return grid.mean(n_frames), total[0] / sr


def frame_probabilities(
    model: SoundEventDetector, waveform: np.ndarray, *, window_s: float, hop_s: float, batch_size: int
) -> np.ndarray:
    """(C, N) probabilities on the model's frame grid for an in-memory waveform at the model's rate."""
    return frame_probabilities_blocks(model, [waveform], window_s=window_s, hop_s=hop_s, batch_size=batch_size)[0]


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
    from audiopipe.data.labels import active_runs
    from audiopipe.metrics.sed_postprocessing import median_filter_scores

    filtered = median_filter_scores(probs, median_windows)
    events = []
    for c, row in enumerate(filtered):
        for a, b in active_runs(row > threshold):
            onset, offset = a / frame_rate_hz, min(b / frame_rate_hz, duration_s)
            if offset > onset:
                events.append((onset, offset, class_names[c], float(row[a:b].mean())))
    return sorted(events)


def _checkpoint(args: argparse.Namespace) -> Path:
    if args.checkpoint is not None:
        return Path(args.checkpoint)
    if not DEFAULT_CHECKPOINT.exists():
        raise UserError(f"no --checkpoint given and the default {DEFAULT_CHECKPOINT} is not here (it exists inside "
                        "the audiopipe repository after `dvc repro`); pass --checkpoint FILE", exit_code=2)
    return DEFAULT_CHECKPOINT


def detect_file(path: Path, model: SoundEventDetector, loaded: InferenceModel, args: argparse.Namespace,
                window_s: float) -> dict[str, Any]:
    """Events of one file (streamed when long) as the dict `--json` prints."""
    from audiopipe.inference.stream import LevelMeter, audio_blocks

    meter = LevelMeter()
    blocks = audio_blocks(path, int(model.sample_rate), meter)
    probs, duration = frame_probabilities_blocks(model, blocks, window_s=window_s, hop_s=args.hop_s,
                                                 batch_size=args.batch_size)
    post = loaded.postprocessing
    events = detect_events(
        probs,
        frame_rate_hz=float(model.frame_rate_hz),
        class_names=loaded.class_names,
        median_windows=list(post.get("median_windows", [1] * len(loaded.class_names))),
        threshold=args.threshold,
        duration_s=duration,
    )
    result: dict[str, Any] = {
        "file": str(path),
        "duration_s": round(duration, 3),
        "events": [{"onset": round(a, 3), "offset": round(b, 3), "label": label, "score": round(score, 4)}
                   for a, b, label, score in events],
    }
    if meter.warnings():
        result["warnings"] = meter.warnings()
    return result


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    from audiopipe.inference.options import resolve_device
    from audiopipe.storage import write_text_atomic

    if not args.list_classes:
        require_files(args.files, "detect")
    device = resolve_device(args.device)
    model, loaded = load_detector(_checkpoint(args), args.weights)
    if args.list_classes:
        out.write("".join(f"{i}\t{name}\n" for i, name in enumerate(loaded.class_names)))
        return 0
    loaded.model.to(device)  # the module behind `model`
    window_s = args.window_s or float(loaded.postprocessing.get("clip_duration_s", 10.0))
    results, rows, failed = [], [], 0
    for path in args.files:
        try:
            result = detect_file(path, model, loaded, args, window_s)
        except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
            failed += 1
            message = " ".join(str(error).split()) or type(error).__name__
            err.write(f"audiopipe detect: {message if str(path) in message else f'{path}: {message}'}\n")
            results.append({"file": str(path), "error": message})
            continue
        results.append(result)
        for warning in result.get("warnings", []):
            err.write(f"audiopipe detect: warning: {path}: {warning}\n")
        full = str(Path(path).absolute())
        rows += [f"{full}\t{e['onset']:.3f}\t{e['offset']:.3f}\t{e['label']}" for e in result["events"]]
        if not result["events"]:
            rows.append(f"{full}\t\t\t")  # a file without events still gets its line
        if not args.json:
            out.write(f"{path}: {len(result['events'])} event(s)\n")
            for warning in result.get("warnings", []):
                out.write(f"  ! {warning}\n")
            for e in result["events"]:
                out.write(f"  {e['onset']:8.3f} {e['offset']:8.3f}  {e['label']:<24} {e['score']:.3f}\n")
    if args.json:
        out.write(json.dumps(results, indent=2) + "\n")
    if args.tsv is not None:
        write_text_atomic(args.tsv, "filename\tonset\toffset\tevent_label\n" + "".join(r + "\n" for r in rows))
    return 1 if failed else 0
