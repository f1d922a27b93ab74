"""Sampling weights for unbalanced multi-label tags (AudioSet/EfficientAT style) and a matching sampler."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler


def tag_sample_weights(targets: np.ndarray, *, smoothing: float = 1.0, power: float = 1.0) -> np.ndarray:
    """Per-clip weights: sum over the clip's positive classes of `1 / (count + smoothing) ** power`.

    Clips of rare classes are drawn more often; clips with no positive tag get the smallest positive-clip
    weight, so they are still seen. Weights are normalised to mean 1.

    Shapes:
        targets `(N, C)` multi-hot -> weights `(N,)` float64
    """
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 2:
        raise ValueError(f"targets must be (N, C), got shape {targets.shape}")
    if targets.shape[0] == 0:
        return np.zeros(0)
    counts = targets.sum(axis=0)
    class_weight = 1.0 / (counts + smoothing) ** power
    weights = (targets > 0).astype(np.float64) @ class_weight
    unlabelled = weights == 0
    weights[unlabelled] = weights[~unlabelled].min() if (~unlabelled).any() else 1.0
    return weights / weights.mean()


def weighted_sampler(targets: np.ndarray, *, num_samples: int | None = None, seed: int = 0) -> WeightedRandomSampler:
    """A with-replacement sampler drawing clips by `tag_sample_weights(targets)`, seeded."""
    weights = tag_sample_weights(targets)
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double),  # type: ignore[arg-type]  # torch's stub says Sequence[float]
        num_samples or len(weights),
        replacement=True,
        generator=generator,
    )
