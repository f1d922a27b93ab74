"""Per-step learning-rate schedules as `torch.optim.lr_scheduler.LambdaLR` factories.

The factor multiplies every parameter group's own initial LR, so layer-wise LR decay (groups with scaled
LRs) keeps its ratios. Step the scheduler once per optimizer step (`fit` does). Step `s` (0-based, the
number of optimizer steps already taken) runs at `base_lr * factor(s)`.

Warm-up is linear from `warmup_start` (fraction of the peak) to 1 over `warmup_steps` steps, reaching the
peak on the last warm-up step, so with `warmup_start=0` the very first step is not wasted at LR 0.

Example:
    >>> f = warmup_cosine_factor(warmup_steps=2, total_steps=6)
    >>> [round(f(s), 3) for s in range(7)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "fairseq_cosine",
    "warmup_cosine",
    "warmup_cosine_factor",
    "warmup_linear",
    "warmup_linear_factor",
]


def _warmup(step: int, warmup_steps: int, warmup_start: float) -> float:
    return warmup_start + (1.0 - warmup_start) * (step + 1) / warmup_steps


def _check(warmup_steps: int, total_steps: int) -> None:
    if total_steps <= 0 or warmup_steps < 0 or warmup_steps > total_steps:
        raise ValueError(f"need 0 <= warmup_steps <= total_steps and total_steps > 0, "
                         f"got warmup_steps={warmup_steps}, total_steps={total_steps}")


def warmup_cosine_factor(
    *, warmup_steps: int, total_steps: int, min_ratio: float = 0.0, warmup_start: float = 0.0
) -> Callable[[int], float]:
    """LR factor: linear warm-up, then half-cosine from 1 to `min_ratio` at `total_steps` (held after it).

    EAT pre-training: warm-up 53,333 of 400,000 updates, cosine to 0 (fairseq `cosine_lr_scheduler`).
    """
    _check(warmup_steps, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return _warmup(step, warmup_steps, warmup_start)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def warmup_linear_factor(
    *, warmup_steps: int, total_steps: int, min_ratio: float = 0.0, warmup_start: float = 0.0
) -> Callable[[int], float]:
    """LR factor: linear warm-up, then linear decay from 1 to `min_ratio` at `total_steps` (held after it)."""
    _check(warmup_steps, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return _warmup(step, warmup_steps, warmup_start)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1.0 - (1.0 - min_ratio) * progress

    return factor


def warmup_cosine(
    optimizer: Optimizer, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.0, warmup_start: float = 0.0
) -> LambdaLR:
    """`LambdaLR` over `warmup_cosine_factor` (one factor for every parameter group)."""
    return LambdaLR(
        optimizer,
        warmup_cosine_factor(
            warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio, warmup_start=warmup_start
        ),
    )


def warmup_linear(
    optimizer: Optimizer, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.0, warmup_start: float = 0.0
) -> LambdaLR:
    """`LambdaLR` over `warmup_linear_factor` (one factor for every parameter group)."""
    return LambdaLR(
        optimizer,
        warmup_linear_factor(
            warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio, warmup_start=warmup_start
        ),
    )


def fairseq_cosine(optimizer: Optimizer, *, warmup_steps: int, total_steps: int, min_lr: float) -> LambdaLR:
    """fairseq `cosine` with an absolute floor, per parameter group (EAT fine-tuning, spec eat.md §4.4).

    A group whose peak LR (its initial `lr`, e.g. scaled by layer decay) is above `min_lr` warms up linearly
    from `min_lr` to its peak, then follows a half-cosine down to `min_lr`. A group whose peak is at or below
    `min_lr` gets `min_lr := peak` and so runs at a constant LR with no warm-up or decay (EAT-base at 5e-5:
    blocks 0-2).
    """
    _check(warmup_steps, total_steps)

    def constant(step: int) -> float:
        return 1.0

    factors: list[Callable[[int], float]] = []
    for group in optimizer.param_groups:
        peak = float(group.get("initial_lr", group["lr"]))
        if peak <= min_lr:
            factors.append(constant)
            continue
        ratio = min_lr / peak
        factors.append(warmup_cosine_factor(
            warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=ratio, warmup_start=ratio
        ))
    return LambdaLR(optimizer, factors)
