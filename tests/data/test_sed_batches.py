"""Tests for audiopipe.data.sed_batches: per-subset batch composition, epoch length, order, targets, masks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audiopipe.data.sed_batches import (
    STRONG,
    UNLABELLED,
    WEAK,
    SEDClipDataset,
    SubsetBatchSampler,
    make_mixed_loader,
    subset_masks,
)
from audiopipe.data.synthetic import make_synthetic_pack


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_synthetic_pack(
        tmp_path_factory.mktemp("pack"), n_per_split={"train": 4, "weak": 3, "unlabelled": 5}, duration_s=1.0, seed=1
    )


def _datasets(pack: dict[str, Path]) -> list[SEDClipDataset]:
    return [
        SEDClipDataset(pack[s], duration_s=1.0, n_frames=15, frame_rate_hz=15.625)
        for s in ("train", "weak", "unlabelled")
    ]


def test_epoch_length_is_limited_by_the_scarcest_subset() -> None:
    assert len(SubsetBatchSampler([100, 10, 50], [4, 2, 8], seed=0)) == 5
    assert len(SubsetBatchSampler([100, 10, 50], [4, 0, 8], seed=0)) == 6  # a 0 batch size drops the subset


def test_batches_take_the_given_count_from_each_subset_in_order() -> None:
    sampler = SubsetBatchSampler([10, 6, 20], [2, 1, 4], seed=0)
    for batch in sampler:
        assert all(0 <= i < 10 for i in batch[:2]) and 10 <= batch[2] < 16 and all(16 <= i < 36 for i in batch[3:])
    seen = [i for batch in sampler for i in batch[:2]]
    assert len(seen) == len(set(seen)), "no clip repeats within an epoch"


def test_order_depends_on_seed_and_epoch_only() -> None:
    a, b = SubsetBatchSampler([10, 6, 20], [2, 1, 4], seed=0), SubsetBatchSampler([10, 6, 20], [2, 1, 4], seed=0)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_rejects_bad_batch_sizes() -> None:
    with pytest.raises(ValueError, match="batch sizes for"):
        SubsetBatchSampler([10, 6], [2, 1, 4], seed=0)
    with pytest.raises(ValueError, match="fewer clips"):
        SubsetBatchSampler([10, 2], [2, 3], seed=0)


def test_dataset_kinds_and_targets(pack: dict[str, Path]) -> None:
    strong, weak, unlabelled = _datasets(pack)
    assert (strong.kind, weak.kind, unlabelled.kind) == (STRONG, WEAK, UNLABELLED)
    item = strong[0]
    assert item["audio"].shape == (16000,) and item["strong"].shape == (10, 15)
    assert item["strong"].sum() > 0
    # the clip tags are exactly the classes with active frames
    assert torch.equal(item["strong"].amax(dim=1) > 0, item["weak"] > 0)
    assert weak[0]["strong"].sum() == 0 and weak[0]["weak"].sum() == 1
    assert unlabelled[0]["weak"].sum() == 0 and unlabelled[0]["strong"].sum() == 0


def test_mixed_loader_collates_dicts_with_subset_codes(pack: dict[str, Path]) -> None:
    loader = make_mixed_loader(_datasets(pack), [2, 1, 2], seed=0)
    batches = list(loader)
    assert len(batches) == 2  # min(4 // 2, 3 // 1, 5 // 2)
    batch = batches[0]
    assert batch["audio"].shape == (5, 16000) and batch["strong"].shape == (5, 10, 15)
    assert batch["subset"].tolist() == [STRONG, STRONG, WEAK, UNLABELLED, UNLABELLED]
    masks = subset_masks(batch["subset"])
    assert masks["strong"].tolist() == [True, True, False, False, False]
    assert masks["weak"].tolist() == [False, False, True, False, False]
    assert masks["unlabelled"].tolist() == [False, False, False, True, True]
    assert hasattr(loader.sampler, "set_epoch")  # fit reshuffles every epoch through it


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_take_turns_over_the_single_process_batches(world_size: int) -> None:
    whole = list(SubsetBatchSampler([10, 6, 20], [2, 1, 4], seed=0))  # 5 batches
    shares = [list(SubsetBatchSampler([10, 6, 20], [2, 1, 4], seed=0, rank=r, world_size=world_size))
              for r in range(world_size)]
    steps = len(whole) // world_size
    assert [len(share) for share in shares] == [steps] * world_size  # the same number of optimizer steps
    assert [share[k] for k in range(steps) for share in shares] == whole[: steps * world_size]


def test_weak_mask_selects_the_weak_subset_only() -> None:
    """The clip-level BCE is taken on the weak clips only, not on strong + weak (spec atst_sed.md §6.2)."""
    masks = subset_masks(torch.tensor([STRONG, WEAK, UNLABELLED, WEAK, STRONG]))
    assert masks["weak"].tolist() == [False, True, False, True, False]
    assert masks["strong"].tolist() == [True, False, False, False, True]
    assert masks["unlabelled"].tolist() == [False, False, True, False, False]
