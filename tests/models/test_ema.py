"""Tests for audiopipe.models.ema: parameter averaging and the two buffer policies."""

from __future__ import annotations

import torch
from torch import nn

from audiopipe.models.ema import EMA


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2))


def test_parameters_move_towards_the_student() -> None:
    student = _net()
    ema = EMA(student, decay=0.75)
    start = ema.module[0].weight.clone()
    with torch.no_grad():
        student[0].weight.add_(1.0)
    ema.update(student)
    torch.testing.assert_close(ema.module[0].weight, 0.75 * start + 0.25 * student[0].weight)
    assert all(not p.requires_grad for p in ema.module.parameters())


def test_default_copies_the_student_buffers() -> None:
    """EAT's EMA teacher (spec eat.md §3.6: non-averaged tensors are copied); its only buffer is the fixed
    position table, so copying keeps it equal to the student's."""
    student = _net()
    ema = EMA(student, decay=0.9)
    student(torch.randn(4, 1, 5, 5))  # train mode: updates the student's running statistics
    ema.update(student)
    torch.testing.assert_close(ema.module[1].running_mean, student[1].running_mean)
    assert int(ema.module[1].num_batches_tracked) == 1


def test_parameters_only_keeps_the_teachers_own_buffers() -> None:
    """The SED mean teacher (spec atst_sed.md §4.4, §6.3): BN running statistics are never averaged or copied."""
    student = _net()
    ema = EMA(student, decay=0.9, copy_buffers=False)
    own = ema.module[1].running_mean.clone()
    student(torch.randn(4, 1, 5, 5))
    ema.update(student)
    torch.testing.assert_close(ema.module[1].running_mean, own)
    assert int(ema.module[1].num_batches_tracked) == 0
    assert not torch.allclose(ema.module[1].running_mean, student[1].running_mean)
