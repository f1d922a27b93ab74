"""EfficientAT MobileNetV3 family: `build(name, **kwargs)` for the published model names and the `mn_tagger`.

Published names (spec efficientat.md §2.5) build a bare `MobileNetV3` on (B, F, T) log-mel input with the
published architecture; keyword arguments override the preset (e.g. `n_classes=10`). Hop/mel variants have the
mn10 shapes; `front_end_kwargs(name)` gives the mel settings they expect. `mn_tagger` builds the waveform-in
`MobileNetTagger` from explicit keyword arguments (what the training stages save in their checkpoints).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from audiopipe.models.mobilenet.model import MobileNetV3
from audiopipe.models.mobilenet.tagger import MobileNetTagger, load_official_weights

# EfficientAT helpers/utils.py NAME_TO_WIDTH
WIDTHS: dict[str, float] = {
    "mn01": 0.1, "mn02": 0.2, "mn04": 0.4, "mn05": 0.5, "mn06": 0.6, "mn08": 0.8, "mn10": 1.0,
    "mn12": 1.2, "mn14": 1.4, "mn16": 1.6, "mn20": 2.0, "mn30": 3.0, "mn40": 4.0,
}  # fmt: skip

# name -> (network kwargs, front-end kwargs) beyond the width multiplier
_VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "mn40_as_ext": ({}, {}),
    "mn40_as_no_im_pre": ({}, {}),
    "mn10_as_fc": ({"head_type": "fully_convolutional"}, {}),
    "mn10_as_fc_s2221": ({"head_type": "fully_convolutional", "strides": (2, 2, 2, 1)}, {}),
    "mn10_as_fc_s2211": ({"head_type": "fully_convolutional", "strides": (2, 2, 1, 1)}, {}),
    **{
        f"mn10_as_hop_{hop_ms}": ({"input_dim_t": 1 + (320000 - 1) // (32 * hop_ms)}, {"hop_length": 32 * hop_ms})
        for hop_ms in (5, 15, 20, 25)
    },
    **{f"mn10_as_mels_{n}": ({"input_dim_f": n}, {"n_mels": n}) for n in (40, 64, 256)},
}

NAMES: tuple[str, ...] = (*(f"{prefix}_as" for prefix in WIDTHS), *_VARIANTS, "mn_tagger")

__all__ = ["NAMES", "WIDTHS", "MobileNetTagger", "MobileNetV3", "build", "front_end_kwargs", "load_official_weights"]


def _preset(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    prefix = name.split("_")[0]
    if name not in NAMES or prefix not in WIDTHS:
        raise KeyError(f"unknown MobileNet name '{name}'; known: {', '.join(NAMES)}")
    net_kwargs, mel_kwargs = _VARIANTS.get(name, ({}, {}))
    return {"width_mult": WIDTHS[prefix], "n_classes": 527, **net_kwargs}, dict(mel_kwargs)


def front_end_kwargs(name: str) -> dict[str, Any]:
    """Mel settings a published name expects beyond the defaults (e.g. `{"hop_length": 480}` for mn10_as_hop_15)."""
    return _preset(name)[1]


def tagger_kwargs(name: str) -> dict[str, Any]:
    """`mn_tagger` keyword arguments equivalent to a published name (to wrap official weights)."""
    net_kwargs, mel_kwargs = _preset(name)
    net_kwargs.pop("input_dim_f", None)
    return {**net_kwargs, **mel_kwargs}


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build `MobileNetV3` for a published name, or `MobileNetTagger` for `mn_tagger`.

    Example:
        >>> net = build("mn04_as")
        >>> sum(p.numel() for p in net.parameters())
        983599
    """
    if name == "mn_tagger":
        return MobileNetTagger(**kwargs)
    net_kwargs, _ = _preset(name)
    return MobileNetV3(**{**net_kwargs, **kwargs})
