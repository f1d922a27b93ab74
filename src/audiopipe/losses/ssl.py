"""EAT's Utterance-Frame Objective and its teacher targets (spec §3.4, §3.5). Pure tensor functions.

Shapes (B clips, K clones, N patches, M masked patches per clone, D width, Lyr teacher blocks):
    layer_results      Lyr x (B, N, D)   teacher FFN outputs with the CLS row dropped
    targets            (B, N, D)         `teacher_targets(layer_results)`
    frame prediction   (B * K, M, D)     decoder output at the masked patches (or any (..., D))
    utterance cls      (B * K, D)        student CLS outputs (final block, no head)

Per-GPU objective, s = 1 / sqrt(D):
    L = (1 / n_masked) sum_{masked p} sum_d s (yhat - y)^2  +  lambda * sum_{clone rows j} sum_d s (c_j - ybar_j)^2
i.e. the frame term is a per-masked-patch mean of channel sums and the utterance term a *sum* over the
B * K clone rows (an effective x(B * K) weight relative to a mean; fairseq's sample-size normalisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def teacher_targets(layer_results: Sequence[torch.Tensor], top_k: int | None = None) -> torch.Tensor:
    """Average of the instance-normalised top-k layer outputs, then a parameter-free LayerNorm, in float32.

    Each layer is normalised per clip and channel over the N patches (eps 1e-5); `top_k=None` uses all.
    """
    if not layer_results:
        raise ValueError("teacher_targets needs at least one layer result")
    layers = list(layer_results)[-top_k:] if top_k else list(layer_results)
    total = torch.zeros_like(layers[0], dtype=torch.float32)
    for layer in layers:
        normed = F.instance_norm(layer.float().transpose(1, 2), eps=1e-5)  # (B, D, N) stats over N
        total = total + normed.transpose(1, 2)
    averaged = total / len(layers)  # (B, N, D)
    return F.layer_norm(averaged, averaged.shape[-1:], eps=1e-5)


def frame_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over masked patches of `sum_d (yhat - y)^2 / sqrt(D)`; inputs `(..., D)`."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ")
    scale = 1.0 / math.sqrt(prediction.shape[-1])
    per_patch = (prediction.float() - target.float()).pow(2).sum(dim=-1) * scale
    return per_patch.mean()


def utterance_loss(cls: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over clone rows of `sum_d (c - ybar)^2 / sqrt(D)`; inputs `(R, D)`."""
    if cls.shape != target.shape:
        raise ValueError(f"cls {tuple(cls.shape)} and target {tuple(target.shape)} differ")
    scale = 1.0 / math.sqrt(cls.shape[-1])
    return (cls.float() - target.float()).pow(2).sum() * scale


def utterance_frame_loss(
    frame_prediction: torch.Tensor,
    frame_target: torch.Tensor,
    cls: torch.Tensor,
    utterance_target: torch.Tensor,
    frame_weight: float = 1.0,
    utterance_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """EAT objective: `{"loss", "frame_loss", "utterance_loss"}` (weights `d2v_loss` 1, `cls_loss` 1).

    With G data-parallel processes the gradient is the mean over processes of this per-process loss;
    a single process with a G-times larger batch should pass `utterance_weight = 1 / G` to match.
    """
    frame = frame_loss(frame_prediction, frame_target)
    utterance = utterance_loss(cls, utterance_target)
    return {"loss": frame_weight * frame + utterance_weight * utterance, "frame_loss": frame,
            "utterance_loss": utterance}
