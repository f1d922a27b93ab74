"""Argument types and checks shared by the inference commands (imported at `--help` time: no torch here)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from audiopipe.inference.errors import UserError


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def probability(text: str) -> float:
    """argparse type: a threshold in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def device_choice(text: str) -> str:
    """argparse type: cpu | cuda | cuda:N | auto (availability is checked by `resolve_device`)."""
    if text in ("cpu", "cuda", "auto") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"choose cpu, cuda, cuda:N or auto, got {text!r}")


def resolve_device(flag: str):  # noqa: ANN201 - returns torch.device; torch is imported lazily
    """`--device` value -> torch.device; CUDA asked for but missing is a one-line error naming the flag."""
    import torch

    if flag == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if flag.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {flag}: CUDA is not available on this machine; use --device cpu or auto",
                            exit_code=2)
        index = int(flag[5:]) if ":" in flag else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {flag}: only {torch.cuda.device_count()} CUDA device(s) here", exit_code=2)
    return torch.device(flag)


def require_files(files: list[Path], command: str) -> None:
    """Audio arguments are required unless a listing flag was given (checked after parsing)."""
    if not files:
        raise UserError(f"no audio FILE given (see `audiopipe {command} --help`)", exit_code=2)
