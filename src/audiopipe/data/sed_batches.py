"""Mixed strong / weak / unlabelled batches for semi-supervised SED (ATST-SED `ConcatDatasetBatchSampler`).

Every batch draws a fixed number of clips from each subset, in the order the subsets are given (the
paper's `[12, 12, 24, 24]` = [real strong, synthetic strong, weak, unlabelled]; our packs have one strong
split, so the demo list is `[strong, weak, unlabelled]` = e.g. `train, weak, unlabelled`). An epoch is
min_i floor(len(subset_i) / batch_i) batches, as in ATST-SED (spec atst_sed.md §6.1).

Items of `SEDClipDataset` (C classes, T samples at the model rate, T' output frames):
    audio    FloatTensor (T,)      zero-padded / cropped from the start to `duration_s`, then resampled to the
                                   model's `sample_rate` (32 kHz packs -> 16 kHz front ends)
    strong   FloatTensor (C, T')   frame targets (zeros unless the subset is strong)
    weak     FloatTensor (C,)      clip tags (zeros for unlabelled clips)
    subset   int                   STRONG, WEAK or UNLABELLED (a LongTensor (B,) after collation)
    split    str                   the pack's file stem (`train`, `weak`, ...); with clip_id, unique over packs
    clip_id  str
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler, default_collate

from audiopipe.data.datasets import fit_length, read_clip
from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.labels import encode_events

STRONG, WEAK, UNLABELLED = 0, 1, 2
SUBSET_NAMES = ("strong", "weak", "unlabelled")


def subset_kind(reader: ClipReader, split: str) -> int:
    """STRONG for packs with strong events, UNLABELLED for the `unlabelled` split, WEAK otherwise."""
    if reader.has_strong:
        return STRONG
    return UNLABELLED if split == "unlabelled" else WEAK


class SEDClipDataset(Dataset):
    """Clips of one packed split with frame targets at the model's output rate (see module docstring).

    Args:
        duration_s: Clip length; audio is cropped/padded at the pack rate, then resampled to `sample_rate`.
        n_frames, frame_rate_hz: The model's output frames for `duration_s` and their rate (targets are encoded
            at exactly this grid, so frame k of the targets covers [k / rate, (k + 1) / rate)).
        sample_rate: The model's input rate (default: the pack's). Resampling uses torchaudio's windowed sinc,
            about 7x cheaper on CPU than scipy's polyphase filter for 32 -> 16 kHz.
        cache: Keep each clip's resampled audio in memory (float16, 2 bytes per sample) after its first read, so
            later epochs and repeated evaluations skip decoding and resampling. Each DataLoader worker holds
            its own cache; use it with `num_workers=0` or small packs.
        exact: Evaluation reading: resample with `audiopipe.audio.resample` (the polyphase filter `evaluate` and
            `audiopipe detect` use) and cache float32, so a stage's own test metrics equal `evaluate`'s.
    """

    def __init__(
        self, h5_path: str | Path, *, duration_s: float, n_frames: int, frame_rate_hz: float, kind: int | None = None,
        sample_rate: int | None = None, cache: bool = False, exact: bool = False,
    ) -> None:
        self.reader = ClipReader(h5_path)
        self.split = Path(h5_path).stem
        self.sample_rate = sample_rate or self.reader.sample_rate  # audio is resampled to it on read
        self.kind = subset_kind(self.reader, self.split) if kind is None else kind
        self.num_samples = int(round(duration_s * self.reader.sample_rate))  # at the pack rate, before resampling
        self.n_frames, self.frame_rate_hz = n_frames, frame_rate_hz
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None
        self.exact = exact

    def __len__(self) -> int:
        return len(self.reader)

    def audio(self, index: int) -> torch.Tensor:
        """Waveform (T,) float32 at `self.sample_rate`, cropped/padded to `duration_s`."""
        if self.cache is not None and index in self.cache:
            return self.cache[index].float()
        if self.exact:
            exact = read_clip(self.reader, index, self.num_samples, self.sample_rate)
            wave = torch.from_numpy(np.ascontiguousarray(exact, np.float32))
        else:
            wave = torch.from_numpy(np.ascontiguousarray(fit_length(self.reader.read_audio(index), self.num_samples)))
            if self.sample_rate != self.reader.sample_rate:
                import torchaudio

                wave = torchaudio.functional.resample(wave.float(), self.reader.sample_rate, self.sample_rate)
        if self.cache is None:
            return wave.float()
        self.cache[index] = wave.float() if self.exact else wave.half()
        return self.cache[index].float()  # the same (rounded) values on every read

    def __getitem__(self, index: int) -> dict[str, Any]:
        n_classes = len(self.reader.class_names)
        strong = np.zeros((n_classes, self.n_frames), np.float32)
        if self.kind == STRONG:
            strong = encode_events(
                self.reader.events(index), n_classes=n_classes, n_frames=self.n_frames, frame_rate_hz=self.frame_rate_hz
            )
        weak = self.reader.targets(index) if self.kind != UNLABELLED else np.zeros(n_classes, np.float32)
        return {
            "audio": self.audio(index),
            "strong": torch.from_numpy(strong),
            "weak": torch.from_numpy(np.asarray(weak, dtype=np.float32)),
            "subset": self.kind,
            "split": self.split,
            "clip_id": self.reader.clip_ids[index],
        }


class SubsetBatchSampler(Sampler[list[int]]):
    """Batches of indices into `ConcatDataset(subsets)` with `batch_sizes[i]` items from subset i.

    Each subset is reshuffled every epoch by a generator seeded with (seed, epoch), so the order depends
    only on those two numbers (exact resume). Subsets are concatenated in the given order inside a batch.
    Under DDP rank r of `world_size` takes the batches r, r + world_size, ... of that order, every rank the same
    number (an epoch's last `len % world_size` batches are dropped): one optimizer step sees `world_size` batches.

    Example:
        >>> sampler = SubsetBatchSampler([10, 6, 20], [2, 1, 4], seed=0)
        >>> len(sampler), len(next(iter(sampler)))
        (5, 7)
    """

    def __init__(self, subset_sizes: Sequence[int], batch_sizes: Sequence[int], *, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank {rank} of world_size {world_size}")
        if len(subset_sizes) != len(batch_sizes):
            raise ValueError(f"{len(batch_sizes)} batch sizes for {len(subset_sizes)} subsets")
        if any(b < 0 for b in batch_sizes) or sum(batch_sizes) == 0:
            raise ValueError(f"batch sizes must be >= 0 with a positive sum, got {list(batch_sizes)}")
        short = [i for i, (n, b) in enumerate(zip(subset_sizes, batch_sizes)) if b > n]
        if short:
            raise ValueError(
                f"subsets {short} hold fewer clips {list(subset_sizes)} than one batch {list(batch_sizes)}"
            )
        self.subset_sizes, self.batch_sizes = list(subset_sizes), list(batch_sizes)
        self.offsets = np.concatenate([[0], np.cumsum(self.subset_sizes)[:-1]]).astype(int).tolist()
        self.seed, self.epoch = seed, 0
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return min(n // b for n, b in zip(self.subset_sizes, self.batch_sizes) if b > 0) // self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        orders = [torch.randperm(n, generator=generator).tolist() for n in self.subset_sizes]
        for step in range(self.rank, len(self) * self.world_size, self.world_size):
            batch: list[int] = []
            for order, offset, size in zip(orders, self.offsets, self.batch_sizes):
                batch.extend(offset + i for i in order[step * size : (step + 1) * size])
            yield batch


class MixedBatchDataset(Dataset):
    """`ConcatDataset` whose items are whole collated batches: `dataset[[i, j, ...]]` -> dict of tensors.

    Paired with `SubsetBatchSampler` as the loader's *sampler* (with `batch_size=None`), so `fit` finds the
    sampler at `loader.sampler` and calls its `set_epoch`, and each worker builds a full batch.
    """

    def __init__(self, datasets: Sequence[SEDClipDataset]) -> None:
        self.concat: ConcatDataset[dict[str, Any]] = ConcatDataset(list(datasets))

    def __len__(self) -> int:
        return len(self.concat)

    def __getitem__(self, indices: list[int]) -> dict[str, Any]:
        return default_collate([self.concat[i] for i in indices])


def make_mixed_loader(
    datasets: Sequence[SEDClipDataset], batch_sizes: Sequence[int], *, seed: int, num_workers: int = 0,
    rank: int = 0, world_size: int = 1,
) -> DataLoader:
    """DataLoader of mixed batches (DDP: this rank's share); `loader.sampler.set_epoch(e)` reshuffles (`fit`)."""
    sampler = SubsetBatchSampler([len(d) for d in datasets], batch_sizes, seed=seed, rank=rank,
                                 world_size=world_size)
    return DataLoader(MixedBatchDataset(datasets), sampler=sampler, batch_size=None, num_workers=num_workers)


def subset_masks(subset: torch.Tensor) -> dict[str, torch.Tensor]:
    """Boolean (B,) masks of the three subsets: `strong`, `weak` and `unlabelled`.

    `weak` selects the weak subset only: ATST-SED takes the clip-level BCE on the weak clips, not on the
    strong clips' tags as well (spec atst_sed.md §6.2).
    """
    return {"strong": subset == STRONG, "weak": subset == WEAK, "unlabelled": subset == UNLABELLED}
