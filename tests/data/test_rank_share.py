"""Tests for audiopipe.training.samplers.RankShare: one DDP rank's share of an epoch sampler's order.

Expected indices are written out: those of the distributed samplers are what the two separate classes gave
before they became thin constructors over `RankShare` (the split must not change a single index).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from audiopipe.training.samplers import (
    DistributedEpochSampler,
    DistributedWeightedSampler,
    EpochSampler,
    RankShare,
    WeightedEpochSampler,
)

WEIGHTS = [0.5, 3.0, 0.0, 1.0, 2.0, 0.25, 4.0]


class _Fixed:
    """An epoch sampler with a written-out order per epoch."""

    def __init__(self, orders: dict[int, list[int]]) -> None:
        self.orders, self.epoch = orders, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.orders[self.epoch])

    def __iter__(self) -> Iterator[int]:
        return iter(self.orders[self.epoch])


def test_share_takes_every_world_size_th_item_and_pads_with_the_first_ones() -> None:
    base = _Fixed({0: [10, 11, 12, 13, 14], 1: [20, 21, 22, 23, 24, 25]})
    shares = [RankShare(base, rank=r, world_size=2) for r in (0, 1)]
    assert [list(s) for s in shares] == [[10, 12, 14], [11, 13, 10]]
    assert [len(s) for s in shares] == [3, 3]
    shares[0].set_epoch(1)  # the base is shared: both ranks move to epoch 1
    assert (shares[1].epoch, [list(s) for s in shares]) == (1, [[20, 22, 24], [21, 23, 25]])


def test_share_of_an_empty_order_is_empty() -> None:
    assert list(RankShare(_Fixed({0: []}), rank=1, world_size=3)) == []


@pytest.mark.parametrize(("rank", "world_size"), [(2, 2), (-1, 2), (0, 0)])
def test_rank_and_world_size_are_checked(rank: int, world_size: int) -> None:
    with pytest.raises(ValueError, match="rank must be in"):
        RankShare(_Fixed({0: [1]}), rank=rank, world_size=world_size)
    with pytest.raises(ValueError, match="rank must be in"):
        DistributedWeightedSampler([], 10, seed=0, rank=rank, world_size=world_size)  # checked before the weights


def test_distributed_weighted_sampler_indices() -> None:
    shares = []
    for rank in range(3):
        sampler = DistributedWeightedSampler(WEIGHTS, 10, seed=7, rank=rank, world_size=3)
        sampler.set_epoch(2)
        shares.append(list(sampler))
        assert isinstance(sampler, RankShare) and len(sampler) == 4
    assert shares == [[6, 4, 6, 6], [1, 1, 0, 6], [1, 4, 6, 1]]
    single = WeightedEpochSampler(WEIGHTS, 10, seed=7)
    single.set_epoch(2)
    generator = torch.Generator().manual_seed(7 * 100_003 + 2)
    drawn = torch.multinomial(torch.tensor(WEIGHTS, dtype=torch.double), 10, replacement=True, generator=generator)
    assert list(single) == drawn.tolist() == [6, 1, 1, 4, 1, 4, 6, 0, 6, 6]


def test_distributed_weighted_sampler_from_sampler_keeps_the_epoch() -> None:
    single = WeightedEpochSampler(WEIGHTS, 10, seed=7)
    single.set_epoch(2)
    share = DistributedWeightedSampler.from_sampler(single, rank=1, world_size=3)
    assert (share.epoch, share.rank, share.world_size, list(share)) == (2, 1, 3, [1, 1, 0, 6])


def test_distributed_epoch_sampler_indices() -> None:
    shuffled, ordered = [], []
    for rank in (0, 1):
        sampler = DistributedEpochSampler(7, True, 3, rank=rank, world_size=2)
        sampler.set_epoch(1)
        shuffled.append(list(sampler))
        ordered.append(list(DistributedEpochSampler(7, False, 3, rank=rank, world_size=2)))
        assert len(sampler) == 4
    assert shuffled == [[2, 4, 1, 6], [5, 3, 0, 2]]
    assert ordered == [[0, 2, 4, 6], [1, 3, 5, 0]]
    single = EpochSampler(7, True, 3)
    single.set_epoch(1)
    permutation = torch.randperm(7, generator=torch.Generator().manual_seed(3 * 100_003 + 1)).tolist()
    assert list(single) == permutation == [2, 5, 4, 3, 1, 0, 6]
