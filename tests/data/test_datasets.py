"""Tests for audiopipe.data.datasets.ClipDataset and the synthetic pack helper it is tested on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from audiopipe.data.datasets import ClipDataset, fit_length
from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.manifests import DEFAULT_CLASSES
from audiopipe.data.synthetic import make_synthetic_pack


def test_item_keys_shapes_and_dtypes(synthetic_pack: dict[str, Path]) -> None:
    ds = ClipDataset(synthetic_pack["train"], duration_s=0.5)
    item = ds[1]
    assert set(item) == {"audio", "labels", "clip_id", "index"}
    assert item["audio"].shape == (8000,) and item["audio"].dtype == torch.float32
    assert item["labels"].shape == (len(DEFAULT_CLASSES),) and item["labels"].dtype == torch.float32
    assert item["clip_id"] == "train_00001" and item["index"] == 1
    assert item["audio"].abs().max() <= 1.0


def test_padding_to_duration(synthetic_pack: dict[str, Path]) -> None:
    item = ClipDataset(synthetic_pack["train"], duration_s=1.5)[0]
    assert item["audio"].shape == (24000,)
    assert torch.all(item["audio"][16000:] == 0)


def test_default_collate_batches(synthetic_pack: dict[str, Path]) -> None:
    batch = next(iter(DataLoader(ClipDataset(synthetic_pack["valid"], duration_s=1.0), batch_size=3)))
    assert batch["audio"].shape == (3, 16000) and batch["labels"].shape == (3, 10)
    assert batch["clip_id"] == ["valid_00000", "valid_00001", "valid_00002"]


def test_unlabelled_split_has_zero_labels(synthetic_pack: dict[str, Path]) -> None:
    ds = ClipDataset(synthetic_pack["unlabelled"])
    assert all(ds[i]["labels"].sum() == 0 for i in range(len(ds)))


def test_labelled_splits_have_tags_matching_events(synthetic_pack: dict[str, Path]) -> None:
    reader = ClipReader(synthetic_pack["test"])
    for i in range(len(reader)):
        classes = {c for _, _, c in reader.events(i)}
        assert classes and classes == set(np.flatnonzero(reader.targets(i)))
        assert all(0 <= a <= b <= 1.0 for a, b, _ in reader.events(i))


def test_synthetic_pack_is_deterministic(tmp_path: Path) -> None:
    a = make_synthetic_pack(tmp_path / "a", n_per_split=2, seed=3)
    b = make_synthetic_pack(tmp_path / "b", n_per_split=2, seed=3)
    c = make_synthetic_pack(tmp_path / "c", n_per_split=2, seed=4)
    assert ClipReader(a["train"]).content_hash == ClipReader(b["train"]).content_hash
    assert ClipReader(a["train"]).content_hash != ClipReader(c["train"]).content_hash


def test_synthetic_pack_counts_per_split(tmp_path: Path) -> None:
    paths = make_synthetic_pack(tmp_path, n_per_split={"train": 2, "weak": 1}, sample_rate=8000)
    assert sorted(paths) == ["train", "weak"]
    assert len(ClipReader(paths["weak"])) == 1 and ClipReader(paths["train"]).sample_rate == 8000


@pytest.mark.parametrize(("length", "target"), [(5, 3), (3, 5), (4, 4)])
def test_fit_length(length: int, target: int) -> None:
    out = fit_length(np.ones(length, np.float32), target)
    assert out.shape == (target,) and out[: min(length, target)].sum() == min(length, target)
