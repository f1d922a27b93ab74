"""EfficientAT Dynamic MobileNet family: `build(name, **kwargs)` for the published names and the `dymn_tagger`.

Published names (spec efficientat.md §3) build a bare `DyMN` on (B, F, T) log-mel input; keyword arguments
override the preset (e.g. `n_classes=10`). Like upstream `get_model(pretrained_name="dymn10_as")`, the AudioSet
presets fix the temperature schedule at T_max = 1 (tau stays 1 through `update_params`), which is what the
published weights need for inference and fine-tuning. `dymn_tagger` builds the waveform-in `DyMNTagger` from
explicit keyword arguments, with the training schedule (tau 30 -> 1) as default.

Example:
    >>> net = build("dymn04_as")
    >>> sum(p.numel() for p in net.parameters()), len(net.state_dict())
    (1961239, 578)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from audiopipe.models.dymn.context import ContextGen, context_size
from audiopipe.models.dymn.dynamic import CoordAtt, DynamicConv, DyReLUB, temperature_schedule
from audiopipe.models.dymn.model import DyBlock, DyMN
from audiopipe.models.dymn.tagger import DyMNTagger, load_official_weights

# EfficientAT helpers/utils.py NAME_TO_WIDTH (keyed on the first 6 characters for dymn)
WIDTHS: dict[str, float] = {"dymn04": 0.4, "dymn10": 1.0, "dymn20": 2.0}

# name -> network kwargs beyond the width multiplier (EfficientAT models/dymn/model.py `pretrained_models`)
_VARIANTS: dict[str, dict[str, Any]] = {
    "dymn04_replace_se_as": {"use_dy_blocks": "replace_se"},
    "dymn10_replace_se_as": {"use_dy_blocks": "replace_se"},
}

NAMES: tuple[str, ...] = (*(f"{prefix}_as" for prefix in WIDTHS), *_VARIANTS, "dymn_tagger")

__all__ = [
    "NAMES", "WIDTHS", "ContextGen", "CoordAtt", "DyBlock", "DyMN", "DyMNTagger", "DyReLUB", "DynamicConv",
    "build", "context_size", "load_official_weights", "tagger_kwargs", "temperature_schedule",
]  # fmt: skip


def _preset(name: str) -> dict[str, Any]:
    prefix = name.split("_")[0]
    if name not in NAMES or prefix not in WIDTHS:
        raise KeyError(f"unknown DyMN name '{name}'; known: {', '.join(NAMES)}")
    # AudioSet weights: final temperature of pre-training, tau = 1 (upstream `pretrain_final_temp`)
    return {"width_mult": WIDTHS[prefix], "n_classes": 527, "T_max": 1.0, **_VARIANTS.get(name, {})}


def tagger_kwargs(name: str) -> dict[str, Any]:
    """`dymn_tagger` keyword arguments equivalent to a published name (to wrap official weights)."""
    return _preset(name)


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build `DyMN` for a published name, or `DyMNTagger` for `dymn_tagger`."""
    if name == "dymn_tagger":
        return DyMNTagger(**kwargs)
    return DyMN(**{**_preset(name), **kwargs})
