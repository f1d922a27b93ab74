"""Shared test set-up: one CPU thread, quiet offline tooling, seeded RNG, tiny waveforms."""

from __future__ import annotations

import os

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DVC_STUDIO_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def tiny_waveform(sample_rate: int = 16000, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A float32 mono test signal in [-1, 1]: a chirp plus noise."""
    generator = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    chirp = 0.4 * np.sin(2 * np.pi * (200 + 800 * t) * t)
    return (chirp + 0.05 * generator.standard_normal(t.shape)).astype(np.float32)


@pytest.fixture
def waveform() -> np.ndarray:
    return tiny_waveform()
