"""What code that runs a model reads from it, as typing protocols: waveform taggers and sound event detectors.

`build_model` and `load_model` return a bare `nn.Module` (the registry cannot know the family statically), and
`nn.Module.__getattr__` types every other attribute as `Tensor | Module`. Callers that only run a model take one
of these protocols; where a module comes out of the registry they narrow it with `isinstance` (the protocols are
runtime-checkable) or ask `load_model(path, SEDModel)` for the concrete class, so that a checkpoint of the wrong
kind fails with an error naming it instead of an `AttributeError` deep inside.

Shapes (B batch, T samples at `sample_rate`, C classes, T' output frames at `frame_rate_hz`):
    WaveformTagger      waveform (B, T) -> logits (B, C)
    SoundEventDetector  waveform (B, T) -> strong (B, C, T') frame probabilities, weak (B, C) clip probabilities
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class WaveformTagger(Protocol):
    """A clip tagger on raw audio: `MobileNetTagger`, `DyMNTagger`, `EATTagger`."""

    sample_rate: int

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SoundEventDetector(Protocol):
    """A frame-level detector on raw audio (`audiopipe.models.sed.SEDModel`); `frame_rate_hz` is its output grid."""

    sample_rate: int
    frame_rate_hz: float

    def __call__(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def eval(self) -> SoundEventDetector: ...
