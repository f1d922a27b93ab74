"""kd_loss follows spec efficientat.md §4.2: λ·BCE(labels) + (1−λ)·BCE(sigmoid(teacher/T))."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from audiopipe.losses.distillation import kd_loss, kd_loss_terms, teacher_probabilities


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    student = torch.randn(3, 5, generator=g)
    teacher = 2 * torch.randn(3, 5, generator=g)
    targets = (torch.rand(3, 5, generator=g) < 0.4).float()
    return student, teacher, targets


def test_lambda_one_is_plain_bce_exactly_and_needs_no_teacher(batch) -> None:
    student, teacher, targets = batch
    bce = F.binary_cross_entropy_with_logits(student, targets)
    assert torch.equal(kd_loss(student, teacher, targets, kd_lambda=1.0, temperature=2.0), bce)
    assert torch.equal(kd_loss(student, None, targets, kd_lambda=1.0, temperature=1.0), bce)


def test_matches_the_spec_formula(batch) -> None:
    student, teacher, targets = batch
    lam, temp = 0.1, 2.0
    expected = lam * F.binary_cross_entropy_with_logits(student, targets) + (1 - lam) * (
        F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher / temp))
    )
    torch.testing.assert_close(kd_loss(student, teacher, targets, kd_lambda=lam, temperature=temp), expected)
    # λ = 0: distillation only, labels ignored
    only_kd = kd_loss(student, teacher, 1 - targets, kd_lambda=0.0, temperature=temp)
    torch.testing.assert_close(only_kd, F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher / temp)))


def test_gradient_flows_and_vanishes_when_student_matches_teacher(batch) -> None:
    student, teacher, targets = batch
    z = student.clone().requires_grad_(True)
    kd_loss(z, teacher, targets, kd_lambda=0.3, temperature=1.0).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # BCE against soft targets: at z == teacher logits (T = 1) the KD term is minimal, not zero
    z = teacher.clone().requires_grad_(True)
    terms = kd_loss_terms(z, teacher_probabilities(teacher, 1.0), targets, kd_lambda=0.0)
    terms["loss"].backward()
    torch.testing.assert_close(z.grad, torch.zeros_like(z.grad), atol=1e-7, rtol=0)
    p = torch.sigmoid(teacher)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log()).mean()
    torch.testing.assert_close(terms["kd_loss"], entropy)
    nudged = kd_loss_terms(teacher + 0.1, p, targets, kd_lambda=0.0)["kd_loss"]
    assert nudged > terms["kd_loss"]


def test_temperature_softens_teacher_probabilities(batch) -> None:
    _, teacher, _ = batch
    sharp, soft = teacher_probabilities(teacher, 1.0), teacher_probabilities(teacher, 4.0)
    assert ((soft - 0.5).abs() <= (sharp - 0.5).abs() + 1e-7).all()
    assert (soft - 0.5).abs().mean() < (sharp - 0.5).abs().mean()
    student = torch.zeros_like(teacher)  # at z = 0 every target costs log 2 regardless of T ...
    a = kd_loss(student, teacher, torch.zeros_like(teacher), kd_lambda=0.0, temperature=1.0)
    b = kd_loss(student, teacher, torch.zeros_like(teacher), kd_lambda=0.0, temperature=4.0)
    torch.testing.assert_close(a, b)
    z = teacher.clone().requires_grad_(True)  # ... and T > 1 pulls a student equal to the teacher towards 0
    kd_loss(z, teacher, torch.zeros_like(teacher), kd_lambda=0.0, temperature=4.0).backward()
    assert (z.grad * teacher > 0).all()


def test_errors(batch) -> None:
    student, teacher, targets = batch
    with pytest.raises(ValueError, match="needs teacher"):
        kd_loss(student, None, targets, kd_lambda=0.5, temperature=1.0)
    with pytest.raises(ValueError, match="kd_lambda"):
        kd_loss(student, teacher, targets, kd_lambda=1.5, temperature=1.0)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(student, teacher, targets, kd_lambda=0.5, temperature=0.0)
    with pytest.raises(ValueError, match="teacher"):
        kd_loss(student, teacher[:, :3], targets, kd_lambda=0.5, temperature=1.0)
