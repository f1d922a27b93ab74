"""Load official EAT checkpoints (fairseq and Hugging Face layouts, spec §2.6) into our modules, strictly.

Read: a fairseq `.pt` (`{"model": state, "cfg": ...}`; pre-trained with decoder and `_ema` teacher, or
fine-tuned with a `model.` prefix and `fc_norm`/`head`), a Hugging Face `pytorch_model.bin`/`.safetensors`
(`model.local_encoder...`, `model.pre_norm...`), or an already loaded mapping. Files are read with
`torch.load(weights_only=True)`; pickled config objects inside fairseq files (omegaconf) are replaced by
inert placeholders, so no pickled code runs.

`convert_state_dict` renames keys to our layout (`encoder.*`, `decoder.*`, `fc_norm.*`, `head.*`,
`ema_teacher.module.*`), checks the stored sin-cos table against the regenerated one and drops it.
`load_official(model, checkpoint)` loads into an `EATEncoder`, `EATTagger` or `EATPretrainer`, raising
`CheckpointError` that lists missing/unexpected/mis-shaped keys.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from audiopipe.models.eat.encoder import EATEncoder, sincos_2d
from audiopipe.models.eat.pretraining import EATPretrainer
from audiopipe.models.eat.tagger import EATTagger
from audiopipe.storage import CheckpointError, load_state_dict_strict

log = logging.getLogger(__name__)

_P = r"^(?:model\.)?"  # fine-tuned fairseq and HF keys carry a `model.` prefix
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(_P + r"(?:modality_encoders\.IMAGE\.)?local_encoder\.proj\."), "encoder.patch_embed.proj."),
    (re.compile(_P + r"(?:modality_encoders\.IMAGE\.)?extra_tokens$"), "encoder.cls_token"),
    (re.compile(_P + r"modality_encoders\.IMAGE\.context_encoder\.norm\."), "encoder.norm_pre."),
    (re.compile(_P + r"pre_norm\."), "encoder.norm_pre."),
    (re.compile(_P + r"blocks\."), "encoder.blocks."),
    (re.compile(_P + r"modality_encoders\.IMAGE\.decoder\.blocks\.(\d+)\.0\."), r"decoder.convs.\1."),
    (re.compile(_P + r"modality_encoders\.IMAGE\.decoder\.proj\."), "decoder.proj."),
    (re.compile(_P + r"fc_norm\."), "fc_norm."),
    (re.compile(_P + r"head\."), "head."),
]
_POSITIONS = re.compile(_P + r"(?:modality_encoders\.IMAGE\.)?fixed_positional_encoder\.positions$")
_EMA_KEY = "_ema"
_TEACHER = "ema_teacher.module."


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw official state dict of a file (fairseq's `["model"]` unwrapped), loaded without pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: EAT checkpoint not found")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise CheckpointError(f"{path}: reading .safetensors needs the `safetensors` package") from err
        return dict(load_file(str(path)))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # fairseq pickles its omegaconf config next to the weights
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        if not unsafe:
            raise CheckpointError(f"{path}: cannot read checkpoint ({type(err).__name__}: {str(err)[:200]})") from err
        log.info("%s: replacing %d pickled config classes with inert placeholders", path, len(unsafe))
        with torch.serialization.safe_globals([(_placeholder(name), name) for name in unsafe]):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(payload, Mapping) and isinstance(payload.get("model"), Mapping):
        payload = payload["model"]
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, got {type(payload).__name__}")
    return dict(payload)


def _placeholder(qualified_name: str) -> type:
    """An inert class standing in for a pickled global; it only records what it is given."""
    module, _, name = qualified_name.rpartition(".")

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self: Any, state: Any) -> None:
        self.state = state

    return type(name, (), {"__module__": module, "__init__": __init__, "__setstate__": __setstate__})


def convert_state_dict(raw: Mapping[str, Any], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename official keys to our layout; verify and drop the positional table; raise on unknown keys."""
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in raw.items():
        if key == _EMA_KEY and isinstance(value, Mapping):
            teacher = convert_state_dict(value, source=f"{source}[{_EMA_KEY}]")
            converted.update({_TEACHER + k.removeprefix("encoder."): v for k, v in teacher.items()
                              if k.startswith("encoder.")})
            continue
        if _POSITIONS.match(key):
            _check_positions(value, source)
            continue
        for pattern, replacement in _RULES:
            if pattern.match(key):
                converted[pattern.sub(replacement, key, count=1)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source}: keys not in any known EAT layout ({len(unknown)}): {sorted(unknown)[:10]}")
    return converted


def _check_positions(stored: torch.Tensor, source: str) -> None:
    """The stored table must equal the regenerated one on its prefix (old files hold 512 rows, new 6144)."""
    rows, dim = stored.shape[-2], stored.shape[-1]
    expected = sincos_2d(dim, -(-rows // 8), 8)[:rows]
    if not torch.allclose(stored.reshape(rows, dim).float(), expected, atol=1e-3):
        raise CheckpointError(f"{source}: stored positional table differs from the regenerated sin-cos table "
                              "(axis order or half order mismatch)")


def _subset(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def encoder_preset_of(state: Mapping[str, torch.Tensor], source: str) -> str:
    """The `PRESETS` name whose width and depth match a converted state dict's encoder, or CheckpointError."""
    from audiopipe.models.eat.encoder import PRESETS

    if "encoder.patch_embed.proj.weight" not in state:
        raise CheckpointError(f"{source}: no EAT encoder weights (encoder.patch_embed.proj.weight) in this file")
    width = int(state["encoder.patch_embed.proj.weight"].shape[0])
    depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"encoder\.blocks\.(\d+)\.", k))), default=-1)
    for name, preset in PRESETS.items():
        if preset["embed_dim"] == width and preset["depth"] == depth:
            return name
    sizes = ", ".join(f"{n} ({p['embed_dim']} x {p['depth']})" for n, p in PRESETS.items())
    raise CheckpointError(f"{source}: encoder of width {width} and depth {depth} matches no EAT preset; known: {sizes}")


def load_official(model: nn.Module, checkpoint: str | Path | Mapping[str, Any]) -> None:
    """Load an official EAT checkpoint (file or raw state dict) into our module, strictly.

    * `EATEncoder`: the student encoder weights (decoder, teacher and head in the file are ignored).
    * `EATTagger`: encoder + `fc_norm`/`head` when the file has them (fine-tuned); from a pre-trained
      file only the encoder is loaded and the head keeps its initialisation.
    * `EATPretrainer`: encoder + decoder; the teacher from `_ema` when present, else a copy of the student.
    """
    source = str(checkpoint) if isinstance(checkpoint, (str, Path)) else "state dict"
    raw = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
    state = convert_state_dict(raw, source)
    if isinstance(model, EATEncoder):
        load_state_dict_strict(model, _subset(state, "encoder."), source)
    elif isinstance(model, EATTagger):
        head = {k: v for k, v in state.items() if k.startswith(("fc_norm.", "head."))}
        if head:
            tagger_state = {**{k: v for k, v in state.items() if k.startswith("encoder.")}, **head}
            load_state_dict_strict(model, tagger_state, source)
        else:
            load_state_dict_strict(model.encoder, _subset(state, "encoder."), source)
    elif isinstance(model, EATPretrainer):
        student = {k: v for k, v in state.items() if k.startswith(("encoder.", "decoder."))}
        teacher = {k: v for k, v in state.items() if k.startswith(_TEACHER)}
        if not teacher:
            teacher = {_TEACHER + k: v for k, v in _subset(state, "encoder.").items()}
        load_state_dict_strict(model, {**student, **teacher}, source)
    else:
        raise TypeError(f"load_official expects an EATEncoder, EATTagger or EATPretrainer, got {type(model).__name__}")
