"""Flipped bytes inside a checkpoint's weights are refused at load instead of giving different predictions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audiopipe.models import build_model, load_model
from audiopipe.training.checkpoint import CHECKSUM_KEY, CheckpointError, load_checkpoint, save_checkpoint


def _student_checkpoint(path: Path) -> tuple[Path, torch.Tensor]:
    kwargs = {"width_mult": 0.1, "n_classes": 3, "sample_rate": 16000, "n_mels": 32}
    model = build_model("mn_tagger", **kwargs)
    weight = next(v for k, v in model.state_dict().items() if v.numel() >= 64 and v.is_floating_point())
    save_checkpoint(path, {"builder": "mn_tagger", "builder_kwargs": kwargs, "model": model.state_dict(),
                           "class_names": ["a", "b", "c"], "sample_rate": 16000, "config": {}, "metrics": {}})
    return path, weight


def _flip(path: Path, pattern: bytes, n_bytes: int) -> None:
    raw = bytearray(path.read_bytes())
    at = raw.find(pattern)
    assert at >= 0, "the tensor's bytes were not found in the file"
    for i in range(at, at + n_bytes):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("n_bytes", [16, 64])
def test_flipped_weight_bytes_are_refused_with_the_file_name(tmp_path: Path, n_bytes: int) -> None:
    path, weight = _student_checkpoint(tmp_path / "student.pt")
    assert load_model(path) is not None  # intact: loads
    _flip(path, weight.contiguous().view(torch.uint8).numpy().tobytes()[:64], n_bytes)
    with pytest.raises(CheckpointError, match=r"student\.pt: checkpoint is corrupted"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_model(path)


def test_the_checksum_covers_metadata_and_is_not_returned(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "x.pt", {"model": {"w": torch.ones(3)}, "class_names": ["dog", "cat"]})
    payload = load_checkpoint(path)
    assert CHECKSUM_KEY not in payload and payload["class_names"] == ["dog", "cat"]
    stored = torch.load(path, weights_only=True)
    stored["class_names"] = ["cat", "dog"]  # a swapped label order is a different model
    torch.save(stored, path)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path)


def test_files_without_a_checksum_still_load(tmp_path: Path) -> None:
    torch.save({"model": {"w": torch.ones(2)}}, tmp_path / "official.pt")  # e.g. a published checkpoint
    assert torch.equal(load_checkpoint(tmp_path / "official.pt")["model"]["w"], torch.ones(2))
