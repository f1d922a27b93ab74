"""Samplers whose order is a pure function of (seed, epoch), so a resumed run sees the same batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Shuffled (or sequential) indices; `set_epoch(e)` reseeds the permutation with `seed + e`."""

    def __init__(self, n_items: int, shuffle: bool, seed: int) -> None:
        self.n_items, self.shuffle, self.seed, self.epoch = n_items, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_items

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n_items))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n_items, generator=generator).tolist())


class WeightedEpochSampler(Sampler[int]):
    """Draws `num_samples` indices with replacement, proportional to `weights` (unbalanced tags)."""

    def __init__(self, weights: Sequence[float], num_samples: int, seed: int) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        if self.weights.numel() == 0 or not torch.isfinite(self.weights).all() or (self.weights < 0).any():
            raise ValueError("sampling weights must be finite, non-negative and not empty")
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator).tolist())
