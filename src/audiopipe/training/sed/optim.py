"""Optimisation pieces of ATST-SED training: Adam parameter groups with layer-wise encoder LR decay
(spec atst_sed.md §6.4) and the ramp-up / cosine LR multiplier."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from audiopipe.losses.sed import rampup_weight
from audiopipe.models.sed import SEDModel


def _encoder_depth(name: str, n_blocks: int) -> int:
    """Layer-wise LR decay index counted from the top: final norm 0, last block 1, ..., embeddings n + 1."""
    found = re.search(r"blocks\.(\d+)\.", name)
    if found:
        return n_blocks - int(found.group(1))
    return 0 if "norm" in name and "norm_pre" not in name else n_blocks + 1


@dataclass(frozen=True)
class LearningRates:
    """Learning rates of the parameter groups; the encoder's block at depth d gets `encoder * encoder_scale ** d`."""

    cnn: float
    rnn: float
    encoder: float
    encoder_scale: float


def param_groups(model: SEDModel, lrs: LearningRates, phase: int) -> list[dict[str, Any]]:
    """Adam groups (spec §6.4): `cnn.*` at lr_cnn; GRU, cat_tf and heads at lr_rnn; in phase 2 each encoder
    layer at lr_encoder * encoder_lr_scale ** depth (depth 0 = final norm, counting down to the embeddings)."""
    cnn = [p for n, p in model.named_parameters() if n.startswith("cnn.")]
    enc_prefix = f"{model.encoder_name}." if model.encoder_name else None
    rnn = [
        p
        for n, p in model.named_parameters()
        if not n.startswith("cnn.") and not (enc_prefix and n.startswith(enc_prefix))
    ]
    groups = [{"params": cnn, "lr": lrs.cnn, "name": "cnn"}, {"params": rnn, "lr": lrs.rnn, "name": "rnn"}]
    if phase == 2 and model.encoder is not None:
        named = list(model.encoder.named_parameters())
        n_blocks = 1 + max((int(m.group(1)) for n, _ in named if (m := re.search(r"blocks\.(\d+)\.", n))), default=-1)
        by_depth: dict[int, list[nn.Parameter]] = {}
        for name, param in named:
            by_depth.setdefault(_encoder_depth(name, n_blocks), []).append(param)
        groups += [
            {"params": ps, "lr": lrs.encoder * lrs.encoder_scale**d, "name": f"encoder_{d}"}
            for d, ps in sorted(by_depth.items())
        ]
    return groups


def lr_factor(step: int, *, rampup_steps: int, total_steps: int, cos_down: bool) -> float:
    """ATST-SED LR multiplier at optimizer step `step` (from 1): exp ramp-up, then constant or cosine to 10 %."""
    if step < rampup_steps or not cos_down:
        return rampup_weight(step, rampup_steps)
    progress = min(1.0, (step - rampup_steps) / max(1, total_steps - rampup_steps))
    return 0.1 + 0.9 * (1.0 + math.cos(math.pi * progress)) / 2.0
