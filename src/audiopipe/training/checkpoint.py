"""Checkpoint files: atomic writes, safe loading (`weights_only=True`), strict state-dict loading.

Final-model payload (see docs/architecture.md): `{"builder", "builder_kwargs", "model", "class_names",
"sample_rate", "config", "metrics"}`; resume payloads written by `training.loop.fit` add optimizer,
scheduler, RNG and progress fields.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read or does not fit the model (names the file and what to do)."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` with torch.save to a temp file in the same folder, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint without executing pickled code.

    Raises:
        CheckpointError: missing, truncated or unsafe file (the message says which and what to do).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; run the stage that writes it (dvc repro)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError ... depending on damage
        text = str(err)
        if "weights_only" in text or "Unsupported global" in text:
            raise CheckpointError(
                f"{path}: refused to load, the file contains pickled Python objects (possible code execution). "
                "Load it only if you trust its source, and re-save it as a plain state dict."
            ) from err
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(err).__name__}: {text[:200]}); "
                              "the file is truncated or not a torch checkpoint, delete it and rerun the stage") from err
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a dict payload, got {type(payload).__name__}")
    return payload


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """`model.load_state_dict(strict=True)` with an error that lists missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:10]) + (f" ... (+{len(keys) - 10} more)" if len(keys) > 10 else "")

        parts = [f"{source}: checkpoint does not match {type(model).__name__}"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {show(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {show(shapes)}")
        parts.append("check that the model name/size in params matches the checkpoint")
        raise CheckpointError("; ".join(parts))
    model.load_state_dict(state_dict, strict=True)
