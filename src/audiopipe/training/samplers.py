"""Samplers whose order is a pure function of (seed, epoch), so a resumed run sees the same batches.

`RankShare` splits any such sampler's order over DDP ranks; `DistributedWeightedSampler` is the share of
`WeightedEpochSampler`'s draw and `DistributedEpochSampler` of `EpochSampler`'s order (`make_loader` uses them
under DDP), so that with a per-rank batch of `batch_size / world_size` the ranks' batches k together are the
single-process batch k.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import torch
from torch.utils.data import Sampler


class EpochOrder(Protocol):
    """A sampler whose order depends only on its settings and `epoch` (`EpochSampler`, `WeightedEpochSampler`)."""

    epoch: int

    def set_epoch(self, epoch: int) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[int]: ...


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


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of world_size {world_size}")


class RankShare(Sampler[int]):
    """One DDP rank's share of an `EpochOrder` sampler's order (`base`).

    Every rank computes the same global order from (seed, epoch) and takes the items `rank, rank + world_size,
    ...`, so the ranks together see exactly the single-process order and each rank `ceil(len(base) / world_size)`
    items. When `len(base)` is not a multiple of `world_size`, the global order is padded with its own first items
    (DistributedSampler's convention), so every rank takes the same number of steps.

    Example:
        >>> shares = [list(RankShare(EpochSampler(5, False, seed=0), rank=r, world_size=2)) for r in (0, 1)]
        >>> shares
        [[0, 2, 4], [1, 3, 0]]
    """

    def __init__(self, base: EpochOrder, *, rank: int, world_size: int) -> None:
        _check_rank(rank, world_size)
        self.base, self.rank, self.world_size = base, rank, world_size

    @property
    def epoch(self) -> int:
        return self.base.epoch

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return -(-len(self.base) // self.world_size)

    def __iter__(self) -> Iterator[int]:
        indices = list(self.base)
        total = -(-len(indices) // self.world_size) * self.world_size
        while indices and len(indices) < total:
            indices += indices[: total - len(indices)]
        return iter(indices[self.rank : total : self.world_size])


class DistributedEpochSampler(RankShare):
    """One DDP rank's share of `EpochSampler`'s order.

    Example:
        >>> shares = [list(DistributedEpochSampler(5, True, seed=0, rank=r, world_size=2)) for r in (0, 1)]
        >>> [i for pair in zip(*shares) for i in pair][:5] == list(EpochSampler(5, True, seed=0))
        True
    """

    def __init__(self, n_items: int, shuffle: bool, seed: int, *, rank: int, world_size: int) -> None:
        _check_rank(rank, world_size)  # before the base sampler checks its own arguments
        super().__init__(EpochSampler(n_items, shuffle, seed), rank=rank, world_size=world_size)


class DistributedWeightedSampler(RankShare):
    """One DDP rank's share of `WeightedEpochSampler`'s draw.

    Example:
        >>> shares = [list(DistributedWeightedSampler([1.0, 2.0, 3.0], 6, seed=0, rank=r, world_size=2))
        ...           for r in (0, 1)]
        >>> [i for pair in zip(*shares) for i in pair] == list(WeightedEpochSampler([1.0, 2.0, 3.0], 6, seed=0))
        True
    """

    base: WeightedEpochSampler

    def __init__(
        self, weights: Sequence[float], num_samples: int, seed: int, *, rank: int, world_size: int
    ) -> None:
        _check_rank(rank, world_size)  # before the base sampler checks the weights
        super().__init__(WeightedEpochSampler(weights, num_samples, seed), rank=rank, world_size=world_size)

    @classmethod
    def from_sampler(cls, sampler: WeightedEpochSampler, *, rank: int, world_size: int) -> DistributedWeightedSampler:
        """The share of `sampler`'s draw (same weights, length, seed and current epoch)."""
        out = cls(sampler.weights.tolist(), sampler.num_samples, sampler.seed, rank=rank, world_size=world_size)
        out.set_epoch(sampler.epoch)
        return out
