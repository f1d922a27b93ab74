"""Training DataLoaders whose batch order depends only on (seed, epoch), also under DDP (`make_loader`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from audiopipe.training import distributed
from audiopipe.training.samplers import (
    DistributedEpochSampler,
    DistributedWeightedSampler,
    EpochSampler,
    WeightedEpochSampler,
)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    sampler: Sampler | None = None,
    num_workers: int = 0,
    drop_last: bool = False,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """DataLoader whose batch order depends only on (seed, epoch).

    Under DDP each rank reads its share: a `WeightedEpochSampler` becomes a `DistributedWeightedSampler` (the
    same weighted draw of the same length, split over the ranks), no sampler a `DistributedEpochSampler` (the
    single-process order, split); any other sampler is replaced by a `DistributedSampler` over the dataset.
    """
    if distributed.init_distributed():
        ranks = {"rank": distributed.rank(), "world_size": distributed.world_size()}
        if isinstance(sampler, WeightedEpochSampler):
            sampler = DistributedWeightedSampler.from_sampler(sampler, **ranks)
        elif sampler is None:  # the single-process order, split: same global batches at batch_size / world_size
            sampler = DistributedEpochSampler(len(dataset), shuffle, seed, **ranks)  # type: ignore[arg-type]
        else:
            sampler = DistributedSampler(  # type: ignore[arg-type]
                dataset, num_replicas=ranks["world_size"], rank=ranks["rank"], shuffle=shuffle, seed=seed,
                drop_last=drop_last,
            )
    elif sampler is None:
        sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        collate_fn=collate_fn,
        generator=torch.Generator(),
        persistent_workers=False,
    )
