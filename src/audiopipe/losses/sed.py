"""Semi-supervised SED losses (ATST-SED, spec atst_sed.md §6.2, §6.4).

All functions take probabilities (the SED models end in sigmoid / attention pooling), never logits.

Shapes (B batch, C classes, T frames):
    strong (B, C, T), weak (B, C); masks are boolean (B,).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from audiopipe.audio.augment import GroupMix, mix_groups

# ATST-SED stage 2 divides the summed per-group ICT losses by 6 and by 4 (`stage2_trainer.py`, spec §6.2).
ICT_NORMALISER = 24.0


def _masked_bce(probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if not bool(mask.any()):
        return probs.sum() * 0.0  # keeps the graph (and the dtype/device) when a subset is absent
    return F.binary_cross_entropy(probs[mask].clamp(0.0, 1.0), targets[mask].to(probs.dtype))


def strong_bce(strong: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Frame-level BCE (mean) on the strong-labelled clips selected by `mask`."""
    return _masked_bce(strong, targets, mask)


def weak_bce(weak: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Clip-level BCE (mean) on clips with clip labels (in ATST-SED: weak clips; the strong clips' tags
    are their event classes, so pass `strong | weak` to use both)."""
    return _masked_bce(weak, targets, mask)


def consistency_mse(
    strong_student: torch.Tensor,
    weak_student: torch.Tensor,
    strong_teacher: torch.Tensor,
    weak_teacher: torch.Tensor,
    *,
    weak_weight: float = 1.0,
) -> torch.Tensor:
    """Mean-teacher consistency MSE over the whole batch; the teacher side is detached.

    Stage 1 uses `weak_weight=1`, stage 2 (plain mean teacher) `weak_weight=0.5`.
    """
    return F.mse_loss(strong_student, strong_teacher.detach()) + weak_weight * F.mse_loss(
        weak_student, weak_teacher.detach()
    )


def ict_consistency(
    strong_student: torch.Tensor,
    weak_student: torch.Tensor,
    strong_teacher: torch.Tensor,
    weak_teacher: torch.Tensor,
    draws: list[GroupMix],
    *,
    weak_weight: float = 0.5,
) -> torch.Tensor:
    """Interpolation consistency (ICT, ATST-SED stage 2 when mixup fired): the student saw the mixed batch, the
    teacher the clean one; each group's targets are the teacher outputs mixed with that group's draw (clamped
    to [0, 1]). Returns sum over groups of [MSE(strong) + weak_weight * MSE(weak)] / 24 (spec §6.2).

    Args:
        draws: The `group_mixup_params` draws that mixed the student's input (non-empty).
    """
    if not draws:
        raise ValueError("ICT needs the mixup draws of this batch; use consistency_mse when nothing was mixed")
    strong_target = mix_groups(strong_teacher.detach(), draws, clamp=(0.0, 1.0))
    weak_target = mix_groups(weak_teacher.detach(), draws, clamp=(0.0, 1.0))
    total = strong_student.new_zeros(())
    for draw in draws:
        index = draw.index.to(strong_student.device)
        total = total + F.mse_loss(strong_student[index], strong_target[index])
        total = total + weak_weight * F.mse_loss(weak_student[index], weak_target[index])
    return total / ICT_NORMALISER


def rampup_weight(step: int, rampup_steps: int) -> float:
    """Sigmoid-shaped ramp-up exp(-5 (1 - min(step, R)/R)^2) in [e^-5, 1]; 1 when R <= 0.

    Used for both the learning-rate warm-up and the consistency weight (ATST-SED `local/utils.py`
    `exp_rampup`); `step` counts optimizer steps starting at 1.
    """
    if rampup_steps <= 0:
        return 1.0
    phase = 1.0 - min(max(step, 0), rampup_steps) / rampup_steps
    return math.exp(-5.0 * phase * phase)


def consistency_weight(step: int, *, rampup_steps: int, const_max: float) -> float:
    """w = const_max * rampup(step): the consistency weight does not decay after the ramp."""
    return const_max * rampup_weight(step, rampup_steps)
