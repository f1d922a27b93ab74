"""Argument types and checks shared by the inference commands (imported at `--help` time: no torch here)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from audiopipe.inference.errors import UserError

if TYPE_CHECKING:
    import torch

Number = TypeVar("Number", int, float)


def _checked(text: str, convert: Callable[[str], Number], expected: str, ok: Callable[[Number], bool],
             rule: str) -> Number:
    """Convert an argument with `convert`, then require `ok(value)`; argparse errors say `expected` / `rule`."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"{rule}, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _checked(text, float, "a number of seconds", lambda v: math.isfinite(v) and v > 0, "must be > 0")


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    return _checked(text, int, "a whole number", lambda v: v >= 1, "must be at least 1")


def probability(text: str) -> float:
    """argparse type: a threshold in [0, 1)."""
    return _checked(text, float, "a probability", lambda v: 0.0 <= v < 1.0, "must be in [0, 1)")


def device_choice(text: str) -> str:
    """argparse type: cpu | cuda | cuda:N | auto (availability is checked by `resolve_device`)."""
    if text in ("cpu", "cuda", "auto") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"choose cpu, cuda, cuda:N or auto, got {text!r}")


def resolve_device(flag: str) -> torch.device:  # torch is imported lazily, below
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


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")


def require_files(files: list[Path], command: str) -> None:
    """Audio arguments are required unless a listing flag was given (checked after parsing)."""
    if not files:
        raise UserError(f"no audio FILE given (see `audiopipe {command} --help`)", exit_code=2)
    for path in files:  # `audiopipe tag model.pt clip.wav`: name the flag instead of "not audio"
        if path.suffix.lower() in CHECKPOINT_SUFFIXES:
            raise UserError(f"{path} looks like a model checkpoint, not audio: pass it as `--checkpoint {path}` "
                            f"(see `audiopipe {command} --help`)", exit_code=2)
