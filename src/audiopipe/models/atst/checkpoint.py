"""Load ATST-Frame encoder weights from official checkpoints (`atst_as2M.ckpt` and relatives).

Reads a Lightning checkpoint (`{"state_dict": ...}`) or a plain state dict with `torch.load(weights_only=True)`
and maps its keys onto `FrameAST` by the rules of `ATST-SED desed_task/nnet/atst/atst_model.py`
(spec atst_sed.md §3.3), applied in this order:

    model.teacher.encoder.<k>             audiossl pre-training   strip; `encoder.norm.` -> `norm_frame.`;
                                                                  skip cls_token
    encoder.encoder.frame_encoder.<k>     ATST-C2F distillation   strip
    encoder.encoder.teacher_module.<k>    ATST-C2F                ignore
    encoder.encoder.<k>                   audiossl fine-tuning    strip  (the atst_as2M.ckpt case)
    anything else (head.*, model.student.*, ...)                  ignore

A state dict that already has bare encoder keys (e.g. saved from `FrameAST.state_dict()`) is used as is.
Pickled hyper-parameters in Lightning files are replaced by inert placeholders (no code runs).
The result is loaded strictly; a mismatch raises `CheckpointError` listing missing/unexpected keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from audiopipe.models.atst.encoder import FrameAST
from audiopipe.storage import CheckpointError, load_checkpoint, load_state_dict_strict

_TEACHER = "model.teacher.encoder."
_C2F_FRAME = "encoder.encoder.frame_encoder."
_C2F_TEACHER = "encoder.encoder.teacher_module."
_FINETUNED = "encoder.encoder."
_THOP_BUFFERS = ("total_ops", "total_params")  # added by the thop MAC counter to some authors' files


def map_atst_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official checkpoint keys -> `FrameAST` keys (rules in the module docstring); other keys are dropped."""
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith(_THOP_BUFFERS):
            continue
        if key.startswith(_TEACHER):
            if "cls_token" in key:
                continue
            if "encoder.norm." in key:  # ATST-Clip naming of the final norm
                new_key = "norm_frame." + key.split("encoder.norm.", 1)[1]
            else:
                new_key = key[len(_TEACHER) :]
        elif key.startswith(_C2F_FRAME):
            new_key = key[len(_C2F_FRAME) :]
        elif key.startswith(_C2F_TEACHER):
            continue
        elif key.startswith(_FINETUNED):
            new_key = key[len(_FINETUNED) :]
        else:
            continue
        mapped[new_key] = value
    return mapped


def encoder_state_dict(payload: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """Pick the encoder tensors out of a loaded checkpoint payload (Lightning or plain state dict)."""
    state = payload.get("state_dict", payload)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"'state_dict' entry is a {type(state).__name__}, expected a mapping of tensors")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    mapped = map_atst_keys(tensors)
    if mapped or "pos_embed" not in tensors:
        return mapped
    return {k: v for k, v in tensors.items() if not k.endswith(_THOP_BUFFERS)}  # already bare encoder keys


def _read(path: Path) -> dict[str, object]:
    """`load_checkpoint`, except that Lightning files with pickled hyper-parameters (e.g. a Namespace) are read
    with those classes replaced by inert placeholders (still `weights_only=True`, no pickled code runs)."""
    if path.is_file() and torch.serialization.get_unsafe_globals_in_checkpoint(path):
        from audiopipe.models.eat.checkpoint import read_checkpoint  # the project's placeholder-safe reader

        return read_checkpoint(path)
    return load_checkpoint(path)


def load_atst_checkpoint(encoder: FrameAST, path: str | Path) -> FrameAST:
    """Load an `atst_as2M.ckpt`-style file into `encoder` (strict) and return it.

    Raises:
        CheckpointError: unreadable file, or keys/shapes that do not match the encoder (all listed).
    """
    state = encoder_state_dict(_read(Path(path)))
    if not state:
        raise CheckpointError(
            f"{path}: no ATST-Frame encoder tensors found (expected keys such as "
            "'encoder.encoder.pos_embed' or 'model.teacher.encoder.pos_embed')"
        )
    load_state_dict_strict(encoder, state, source=str(path))
    return encoder
