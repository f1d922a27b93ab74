"""Fixtures for the data tests: a tiny synthetic pack and a tiny downloaded/resampled data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiopipe.data.synthetic import build_synthetic_source, make_synthetic_pack

TINY_COUNTS = {"train": 3, "valid": 2, "test": 2, "weak": 3, "unlabelled": 2}


@pytest.fixture
def synthetic_pack(tmp_path: Path) -> dict[str, Path]:
    return make_synthetic_pack(tmp_path / "pack", n_per_split=3, sample_rate=16000, seed=0)


@pytest.fixture
def synthetic_folder(tmp_path: Path) -> Path:
    """A data folder as the download stage writes it (`<root>/synthetic/...`); returns the folder."""
    folder = tmp_path / "download" / "synthetic"
    build_synthetic_source(folder, counts=TINY_COUNTS, duration_s=1.0, sample_rate=16000, seed=0)
    return folder
