"""Exponential moving average of a model's weights.

Used for EAT's `ema_teacher` (pre-training targets) and the SED `mean_teacher` (consistency targets).
The EMA copy never receives gradients. Buffers follow one of two policies (`copy_buffers`):
- copied from the model at every update (default; EAT, spec eat.md §3.6: tensors that are not averaged are
  copied; the EAT encoder's only buffer is its fixed position table);
- left alone (ATST-SED mean teacher, spec atst_sed.md §4.4/§6.3: parameters only; the teacher's BatchNorm
  running statistics come from its own train-mode forward passes).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA(nn.Module):
    """EMA copy of `model`: `ema = decay * ema + (1 - decay) * model` for every floating parameter.

    Args:
        decay: Default decay of `update`.
        copy_buffers: Copy the model's buffers (e.g. BatchNorm running statistics) at every update; False keeps
            the EMA copy's own buffers (parameters-only EMA).

    Example:
        >>> student = nn.Linear(2, 2)
        >>> ema = EMA(student, decay=0.9)
        >>> ema.update(student)
        >>> all(not p.requires_grad for p in ema.module.parameters())
        True
    """

    def __init__(self, model: nn.Module, decay: float, *, copy_buffers: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.copy_buffers = copy_buffers
        self.module = copy.deepcopy(self._unwrap(model)).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    @staticmethod
    def _unwrap(model: nn.Module) -> nn.Module:
        return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float | None = None) -> None:
        """Move the EMA weights towards `model`'s; `decay` overrides the stored decay for this call."""
        decay = self.decay if decay is None else decay
        source = self._unwrap(model)
        ema_params = dict(self.module.named_parameters())
        for name, param in source.named_parameters():
            target = ema_params[name]
            if target.dtype.is_floating_point:
                target.mul_(decay).add_(param.detach().to(target.dtype), alpha=1.0 - decay)
        if not self.copy_buffers:
            return
        ema_buffers = dict(self.module.named_buffers())
        for name, buffer in source.named_buffers():
            ema_buffers[name].copy_(buffer)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)
