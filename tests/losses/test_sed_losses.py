"""Tests for audiopipe.losses.sed: masked BCE, consistency MSE, the exponential ramp-up."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from audiopipe.audio.augment import GroupMix
from audiopipe.losses.sed import (
    consistency_mse,
    consistency_weight,
    ict_consistency,
    rampup_weight,
    strong_bce,
    weak_bce,
)


def test_strong_bce_uses_only_masked_clips() -> None:
    probs = torch.tensor([[[0.9, 0.1]], [[0.5, 0.5]]])
    targets = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])
    mask = torch.tensor([True, False])
    expected = F.binary_cross_entropy(probs[:1], targets[:1])
    torch.testing.assert_close(strong_bce(probs, targets, mask), expected)


def test_bce_with_empty_mask_is_zero_and_keeps_the_graph() -> None:
    probs = torch.rand(2, 3, requires_grad=True)
    loss = weak_bce(probs, torch.ones(2, 3), torch.tensor([False, False]))
    assert loss.item() == 0.0
    loss.backward()
    assert probs.grad is not None and probs.grad.abs().sum() == 0


def test_consistency_is_zero_for_identical_outputs_and_does_not_train_the_teacher() -> None:
    strong, weak = torch.rand(2, 3, 5), torch.rand(2, 3)
    assert consistency_mse(strong, weak, strong.clone(), weak.clone()).item() == 0.0
    student = torch.rand(2, 3, 5, requires_grad=True)
    teacher = torch.rand(2, 3, 5, requires_grad=True)
    consistency_mse(student, weak, teacher, weak.clone(), weak_weight=0.5).backward()
    assert student.grad is not None and teacher.grad is None


def test_consistency_weights_the_weak_term() -> None:
    s, t = torch.zeros(1, 1, 2), torch.zeros(1, 1, 2)
    ws, wt = torch.zeros(1, 1), torch.ones(1, 1)
    assert consistency_mse(s, ws, t, wt, weak_weight=0.5).item() == pytest.approx(0.5)


@pytest.mark.parametrize(("step", "expected"), [(0, math.exp(-5)), (5, math.exp(-5 * 0.25)), (10, 1.0), (50, 1.0)])
def test_rampup_is_exponential_sigmoid_shape(step: int, expected: float) -> None:
    assert rampup_weight(step, 10) == pytest.approx(expected)


def test_no_rampup_and_const_max() -> None:
    assert rampup_weight(0, 0) == 1.0
    assert consistency_weight(10, rampup_steps=10, const_max=70.0) == pytest.approx(70.0)


def test_ict_targets_are_teacher_outputs_mixed_like_the_input() -> None:
    torch.manual_seed(0)
    s_strong, t_strong = torch.rand(4, 2, 5), torch.rand(4, 2, 5)
    s_weak, t_weak = torch.rand(4, 2), torch.rand(4, 2)
    draws = [GroupMix(torch.tensor([0, 1]), torch.tensor([0.3, 0.3]), torch.tensor([1, 0])),
             GroupMix(torch.tensor([2, 3]), torch.tensor([0.8, 0.8]), torch.tensor([1, 0]))]
    expected = torch.zeros(())
    for rows, lam in (([0, 1], 0.3), ([2, 3], 0.8)):
        a, b = rows

        def mixed(t: torch.Tensor, a: int = a, b: int = b, lam: float = lam) -> torch.Tensor:
            return torch.stack([lam * t[a] + (1 - lam) * t[b], lam * t[b] + (1 - lam) * t[a]])

        target_strong, target_weak = mixed(t_strong), mixed(t_weak)
        expected = expected + F.mse_loss(s_strong[rows], target_strong) + 0.5 * F.mse_loss(s_weak[rows], target_weak)
    loss = ict_consistency(s_strong, s_weak, t_strong, t_weak, draws, weak_weight=0.5)
    torch.testing.assert_close(loss, expected / 24.0)


def test_ict_is_zero_when_the_student_matches_the_mixed_teacher_and_needs_draws() -> None:
    t_strong, t_weak = torch.rand(2, 3, 4), torch.rand(2, 3)
    draw = GroupMix(torch.tensor([0, 1]), torch.tensor([0.5, 0.5]), torch.tensor([1, 0]))
    s_strong = (0.5 * t_strong + 0.5 * t_strong.flip(0)).requires_grad_()
    s_weak = 0.5 * t_weak + 0.5 * t_weak.flip(0)
    assert ict_consistency(s_strong, s_weak, t_strong, t_weak, [draw]).item() < 1e-12
    with pytest.raises(ValueError, match="mixup draws"):
        ict_consistency(s_strong, s_weak, t_strong, t_weak, [])
