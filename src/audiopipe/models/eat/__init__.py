"""EAT family (Efficient Audio Transformer): `build(name, **kwargs)` for the registry.

Names:
    eat_demo, eat_small, eat_base, eat_large   `EATEncoder` presets (kwargs override, e.g. drop_path_rate)
    eat_tagger                                 `EATTagger`; `size="eat_base"` picks the encoder preset
    eat_pretrainer                             `EATPretrainer`; `size=` picks encoder + decoder + masking preset

Example:
    >>> model = build("eat_tagger", size="eat_demo", n_classes=3, sample_rate=16000, target_frames=64)
    >>> type(model).__name__, model.encoder.embed_dim
    ('EATTagger', 96)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from audiopipe.models.eat.decoder import Decoder2d
from audiopipe.models.eat.encoder import PRESETS, EATEncoder
from audiopipe.models.eat.frontend import EATFrontEnd
from audiopipe.models.eat.pretraining import EATPretrainer
from audiopipe.models.eat.tagger import EATTagger, param_groups_layer_decay

# Pre-training settings per size (spec §2.4, §3.2, §3.6); demo/small are ours, scaled down.
PRETRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "eat_demo": {"decoder_channels": 96, "decoder_depth": 2, "decoder_kernel_size": 3},
    "eat_small": {"decoder_channels": 384, "decoder_depth": 4, "decoder_kernel_size": 3},
    "eat_base": {"decoder_channels": 768, "decoder_depth": 6, "decoder_kernel_size": 3},
    "eat_large": {"decoder_channels": 1024, "decoder_depth": 3, "decoder_kernel_size": 5, "mask_ratio": 0.75,
                  "mask_prob_adjust": 0.1, "ema_anneal_steps": 150_000},
}
NAMES: tuple[str, ...] = (*PRESETS, "eat_tagger", "eat_pretrainer")


def _preset(size: str) -> dict[str, int]:
    if size not in PRESETS:
        raise KeyError(f"unknown EAT size {size!r}; known: {sorted(PRESETS)}")
    return dict(PRESETS[size])


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build an EAT model by name; kwargs override the preset (they must be JSON-able for checkpoints)."""
    if name in PRESETS:
        return EATEncoder(**{**_preset(name), **kwargs})
    if name == "eat_tagger":
        size = kwargs.pop("size", "eat_base")
        return EATTagger(**{**_preset(size), **kwargs})
    if name == "eat_pretrainer":
        size = kwargs.pop("size", "eat_base")
        return EATPretrainer(**{**_preset(size), **PRETRAIN_PRESETS[size], **kwargs})
    raise KeyError(f"unknown EAT model {name!r}; known: {list(NAMES)}")


__all__ = ["NAMES", "Decoder2d", "EATEncoder", "EATFrontEnd", "EATPretrainer", "EATTagger", "build",
           "param_groups_layer_decay"]
