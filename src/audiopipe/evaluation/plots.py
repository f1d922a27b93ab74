"""Matplotlib figures of the evaluation report, written as PNG files (Agg backend, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

Event = tuple[float, float, str]


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def per_class_ap_bars(path: Path, per_model: Mapping[str, Mapping[str, float]]) -> Path:
    """Grouped bars: average precision per class (x) for each model (colour)."""
    classes = sorted({name for aps in per_model.values() for name in aps})
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(classes) + 2), 3.8))
    width = 0.8 / max(1, len(per_model))
    for k, (model, aps) in enumerate(per_model.items()):
        values = [aps.get(name, np.nan) for name in classes]
        ax.bar(np.arange(len(classes)) + k * width, values, width=width, label=model)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=35, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("average precision (test)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def pr_curves(path: Path, curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """Micro-averaged precision-recall curve per model: {model: (precision, recall)}."""
    fig, ax = plt.subplots(figsize=(4.8, 4.0))
    for model, (precision, recall) in curves.items():
        ax.plot(recall, precision, label=model)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("precision-recall (all classes pooled)")
    return _save(fig, path)


def training_curves(path: Path, title: str, train: Mapping[str, Sequence[float]],
                    valid: Mapping[str, Sequence[float]]) -> Path:
    """Loss per optimizer step (left) and validation metrics per epoch (right) of one stage."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.5, 3.0))
    steps = train.get("step", [])
    for key, values in train.items():
        if "loss" in key:
            left.plot(steps, values, label=key, linewidth=1)
    left.set_xlabel("optimizer step")
    left.set_title(f"{title}: training loss")
    if left.lines:
        left.legend(fontsize=7)
    epochs = valid.get("epoch", [])
    for key, values in valid.items():
        if key.startswith("valid/") and np.isfinite(values).any():
            right.plot(epochs, values, marker="o", label=key)
    right.set_xlabel("epoch")
    right.set_title(f"{title}: validation")
    if right.lines:
        right.legend(fontsize=7)
    else:
        right.text(0.5, 0.5, "no validation in this stage", ha="center", va="center", transform=right.transAxes)
    return _save(fig, path)


def event_timeline(path: Path, clip_id: str, duration_s: float, reference: Sequence[Event],
                   detected: Sequence[Event], scores: Mapping[str, np.ndarray] | None = None,
                   frame_rate_hz: float | None = None, threshold: float | None = None) -> Path:
    """Reference (top row of each class) vs detected (bottom row) events of one clip.

    With `scores` (class name -> frame probabilities (T',) at `frame_rate_hz`) the bottom row also draws each
    class's probability curve (0 at the row's bottom, 1 at its middle) and the decision `threshold` dashed, so
    a model whose scores never cross the threshold still shows where it reacts.
    """
    labels = sorted({event[2] for event in (*reference, *detected)}) or ["(none)"]
    fig, ax = plt.subplots(figsize=(8.0, 0.45 * len(labels) + 1.2))
    for row, label in enumerate(labels):
        for onset, offset, name in reference:
            if name == label:
                ax.broken_barh([(onset, offset - onset)], (row + 0.05, 0.4), color="tab:green")
        for onset, offset, name in detected:
            if name == label:
                ax.broken_barh([(onset, offset - onset)], (row - 0.45, 0.4), color="tab:orange")
        if scores is not None and frame_rate_hz and label in scores:
            curve = np.asarray(scores[label], dtype=float)
            times = (np.arange(curve.size) + 0.5) / frame_rate_hz
            ax.plot(times, row - 0.45 + 0.4 * curve, color="tab:blue", linewidth=1)
            if threshold is not None:
                ax.axhline(row - 0.45 + 0.4 * threshold, color="tab:blue", linewidth=0.6, linestyle="--")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlim(0, duration_s)
    ax.set_xlabel("time (s)")
    curve_note = ", blue: frame probability, dashed: threshold" if scores is not None else ""
    ax.set_title(f"{clip_id}: reference (green, upper) vs detected (orange, lower){curve_note}", fontsize=9)
    return _save(fig, path)
