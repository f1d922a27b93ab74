"""Tests for audiopipe.training.samplers: (seed, epoch)-pure orders and the distributed weighted sampler."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from audiopipe.training import loaders
from audiopipe.training.samplers import (
    DistributedEpochSampler,
    DistributedWeightedSampler,
    EpochSampler,
    WeightedEpochSampler,
)

WEIGHTS = [0.5, 3.0, 0.0, 1.0, 2.0, 0.25, 4.0]


def test_epoch_sampler_depends_on_seed_and_epoch_only() -> None:
    a, b = EpochSampler(20, shuffle=True, seed=1), EpochSampler(20, shuffle=True, seed=1)
    assert list(a) == list(b) and sorted(a) == list(range(20))
    b.set_epoch(1)
    assert list(a) != list(b)


def test_weighted_sampler_never_draws_zero_weight_items() -> None:
    drawn = list(WeightedEpochSampler(WEIGHTS, 200, seed=0))
    assert len(drawn) == 200 and 2 not in drawn


@pytest.mark.parametrize("epoch", [0, 3])
def test_rank_shares_interleave_to_the_single_process_draw(epoch: int) -> None:
    single = WeightedEpochSampler(WEIGHTS, 12, seed=7)
    single.set_epoch(epoch)
    shares = []
    for rank in range(3):
        sampler = DistributedWeightedSampler(WEIGHTS, 12, seed=7, rank=rank, world_size=3)
        sampler.set_epoch(epoch)
        shares.append(list(sampler))
        assert len(sampler) == 4 == len(shares[-1])
    merged = [shares[i % 3][i // 3] for i in range(12)]
    assert merged == list(single)


def test_uneven_draws_are_padded_so_every_rank_takes_the_same_number_of_steps() -> None:
    single = list(WeightedEpochSampler(WEIGHTS, 10, seed=7))
    shares = [list(DistributedWeightedSampler(WEIGHTS, 10, seed=7, rank=r, world_size=4)) for r in range(4)]
    assert [len(s) for s in shares] == [3, 3, 3, 3]
    merged = [shares[i % 4][i // 4] for i in range(12)]
    assert merged == single + single[:2]  # DistributedSampler's convention: wrap around to the start


def test_new_epoch_gives_a_new_draw_on_every_rank() -> None:
    sampler = DistributedWeightedSampler(WEIGHTS, 30, seed=7, rank=1, world_size=2)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_rank_and_world_size_are_checked() -> None:
    with pytest.raises(ValueError, match="rank"):
        DistributedWeightedSampler(WEIGHTS, 10, seed=0, rank=2, world_size=2)


class _Items(Dataset):
    def __len__(self) -> int:
        return len(WEIGHTS)

    def __getitem__(self, index: int) -> int:
        return index


def test_make_loader_keeps_weighted_sampling_under_ddp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under DDP a WeightedEpochSampler becomes this rank's share of the same weighted draw (it used to be
    replaced by a plain DistributedSampler, losing the weights and epoch_len)."""
    monkeypatch.setattr(loaders.distributed, "init_distributed", lambda: True)
    monkeypatch.setattr(loaders.distributed, "rank", lambda: 1)
    monkeypatch.setattr(loaders.distributed, "world_size", lambda: 2, raising=False)
    weighted = WeightedEpochSampler(WEIGHTS, 16, seed=5)
    weighted.set_epoch(2)
    loader = loaders.make_loader(_Items(), batch_size=4, shuffle=True, seed=5, sampler=weighted)
    assert isinstance(loader.sampler, DistributedWeightedSampler)
    assert (loader.sampler.rank, loader.sampler.world_size, len(loader.sampler)) == (1, 2, 8)
    drawn = torch.cat(list(loader)).tolist()
    assert drawn == list(weighted)[1::2]
    loader.sampler.set_epoch(3)
    weighted.set_epoch(3)
    assert torch.cat(list(loader)).tolist() == list(weighted)[1::2]


@pytest.mark.parametrize("shuffle", [True, False])
def test_make_loader_splits_the_single_process_order_under_ddp(monkeypatch: pytest.MonkeyPatch,
                                                               shuffle: bool) -> None:
    """Without a sampler the ranks' batches k together are the single-process batch k (a DistributedSampler
    shuffles with another seed, so 2 x batch/2 would not train on the batches 1 x batch does)."""
    items = list(range(8))  # a multiple of the world size: no padding
    single = [batch.tolist() for batch in loaders.make_loader(items, batch_size=4, shuffle=shuffle, seed=5)]
    monkeypatch.setattr(loaders.distributed, "init_distributed", lambda: True)
    monkeypatch.setattr(loaders.distributed, "world_size", lambda: 2, raising=False)
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(loaders.distributed, "rank", lambda rank=rank: rank)
        loader = loaders.make_loader(items, batch_size=2, shuffle=shuffle, seed=5)
        assert isinstance(loader.sampler, DistributedEpochSampler)
        shares.append([batch.tolist() for batch in loader])
    merged = [sorted(a + b) for a, b in zip(*shares, strict=True)]
    assert merged == [sorted(batch) for batch in single]
