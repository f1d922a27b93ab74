"""Torch datasets over packed clip files (`audiopipe.data.hdf5`); every item is a dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from audiopipe.data.hdf5 import ClipReader


def fit_length(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """Crop (from the start) or zero-pad a `(T,)` waveform to `num_samples`."""
    if audio.shape[0] >= num_samples:
        return audio[:num_samples]
    return np.pad(audio, (0, num_samples - audio.shape[0]))


class ClipDataset(Dataset):
    """Clips of one split with their clip-level tags.

    Items:
        audio    FloatTensor (T,) in [-1, 1]; T = round(duration_s * sample_rate) when `duration_s` is given
        labels   FloatTensor (C,) multi-hot tags (zeros for unlabelled clips)
        clip_id  str
        index    int, position in the packed file (used to look up teacher predictions)

    The default torch collate stacks `audio`/`labels` (equal lengths need `duration_s`) and lists `clip_id`.
    """

    def __init__(self, h5_path: str | Path, duration_s: float | None = None) -> None:
        self.reader = ClipReader(h5_path)
        self.duration_s = duration_s
        self.num_samples = None if duration_s is None else int(round(duration_s * self.reader.sample_rate))

    @property
    def class_names(self) -> list[str]:
        return self.reader.class_names

    @property
    def sample_rate(self) -> int:
        return self.reader.sample_rate

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> dict[str, Any]:
        audio = self.reader.read_audio(index)
        if self.num_samples is not None:
            audio = fit_length(audio, self.num_samples)
        return {
            "audio": torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
            "labels": torch.from_numpy(self.reader.targets(index)),
            "clip_id": self.reader.clip_ids[index],
            "index": int(index),
        }
