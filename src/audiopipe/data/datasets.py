"""Torch datasets over packed clip files (`audiopipe.data.hdf5`); every item is a dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from audiopipe.audio.resample import resample
from audiopipe.data.hdf5 import ClipReader


def fit_length(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """Crop (from the start) or zero-pad a `(T,)` waveform to `num_samples`."""
    if audio.shape[0] >= num_samples:
        return audio[:num_samples]
    return np.pad(audio, (0, num_samples - audio.shape[0]))


def read_clip(reader: ClipReader, index: int, num_samples: int | None, sample_rate: int) -> np.ndarray:
    """Audio of clip `index`, cropped/padded to `num_samples` (at the pack's rate), then resampled to `sample_rate`."""
    audio = reader.read_audio(index)
    if num_samples is not None:
        audio = fit_length(audio, num_samples)
    if sample_rate != reader.sample_rate:
        audio = resample(audio, reader.sample_rate, sample_rate)
    return audio


class ClipDataset(Dataset):
    """Clips of one split with their clip-level tags.

    Items:
        audio    FloatTensor (T,) in [-1, 1]; T = round(duration_s * sample_rate) when `duration_s` is given
        labels   FloatTensor (C,) multi-hot tags (zeros for unlabelled clips)
        clip_id  str
        index    int, position in the packed file (used to look up teacher predictions)

    `sample_rate` resamples every clip on read (for models whose front end expects another rate).
    The default torch collate stacks `audio`/`labels` (equal lengths need `duration_s`) and lists `clip_id`.
    """

    def __init__(self, h5_path: str | Path, duration_s: float | None = None, sample_rate: int | None = None) -> None:
        self.reader = ClipReader(h5_path)
        self.duration_s = duration_s
        self.target_sample_rate = sample_rate or self.reader.sample_rate
        self.num_samples = None if duration_s is None else int(round(duration_s * self.reader.sample_rate))

    @property
    def class_names(self) -> list[str]:
        return self.reader.class_names

    @property
    def sample_rate(self) -> int:
        """Rate of the returned audio: the pack's, or the `sample_rate` asked for (resampled on read)."""
        return self.target_sample_rate

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> dict[str, Any]:
        audio = read_clip(self.reader, index, self.num_samples, self.target_sample_rate)
        return {
            "audio": torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
            "labels": torch.from_numpy(self.reader.targets(index)),
            "clip_id": self.reader.clip_ids[index],
            "index": int(index),
        }
