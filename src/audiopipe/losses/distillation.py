"""Knowledge-distillation loss of EfficientAT (spec efficientat.md §4.2): BCE on labels + BCE on teacher.

With student logits z (B, C), (possibly mixed) hard targets y (B, C) and teacher probabilities
p = sigmoid(teacher_logits / T):

    L = λ · mean BCE-with-logits(z, y) + (1 − λ) · mean BCE-with-logits(z, p)

λ = `kd_lambda` weighs the *label* term (published 0.1), T = `temperature` (published 1). The student
logits are never divided by T and the distillation term is a BCE, not a KL divergence, so it is not
zero when the student equals the teacher: it is then the teacher's binary entropy, its minimum over
the student (zero gradient). λ = 1 returns the label BCE exactly (the "no KD" baseline) and needs no
teacher. Because BCE is linear in its target, mixup of the teacher term is done by mixing the teacher
probabilities (`kd_loss_terms` takes them already mixed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def teacher_probabilities(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """sigmoid(teacher_logits / temperature), the distillation targets."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.sigmoid(teacher_logits.float() / temperature)


def kd_loss_terms(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor | None,
    targets: torch.Tensor,
    kd_lambda: float,
) -> dict[str, torch.Tensor]:
    """Total loss and its two terms: {"loss", "label_loss", "kd_loss"} (kd_loss absent when λ = 1).

    Args:
        student_logits: (B, C) raw student outputs.
        teacher_probs: (B, C) teacher probabilities at the chosen temperature, or None when λ = 1.
        targets: (B, C) labels in [0, 1] (multi-hot or mixup-mixed).
        kd_lambda: weight λ ∈ [0, 1] of the label term; 1 − λ weighs the distillation term.
    """
    if not 0.0 <= kd_lambda <= 1.0:
        raise ValueError(f"kd_lambda must be in [0, 1], got {kd_lambda}")
    if student_logits.shape != targets.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} vs targets {tuple(targets.shape)}")
    logits = student_logits.float()
    label_loss = F.binary_cross_entropy_with_logits(logits, targets.float())
    if kd_lambda == 1.0:
        return {"loss": label_loss, "label_loss": label_loss}
    if teacher_probs is None:
        raise ValueError(f"kd_lambda={kd_lambda} < 1 needs teacher probabilities")
    if teacher_probs.shape != student_logits.shape:
        raise ValueError(f"teacher {tuple(teacher_probs.shape)} vs student {tuple(student_logits.shape)}")
    distill = F.binary_cross_entropy_with_logits(logits, teacher_probs.float())
    total = kd_lambda * label_loss + (1.0 - kd_lambda) * distill
    return {"loss": total, "label_loss": label_loss, "kd_loss": distill}


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    targets: torch.Tensor,
    kd_lambda: float,
    temperature: float,
) -> torch.Tensor:
    """λ · BCE(student, targets) + (1 − λ) · BCE(student, sigmoid(teacher_logits / T)); scalar.

    Example:
        >>> z, y = torch.zeros(2, 3), torch.ones(2, 3)
        >>> round(kd_loss(z, None, y, kd_lambda=1.0, temperature=1.0).item(), 4)
        0.6931
    """
    probs = None if teacher_logits is None or kd_lambda == 1.0 else teacher_probabilities(teacher_logits, temperature)
    return kd_loss_terms(student_logits, probs, targets, kd_lambda)["loss"]
