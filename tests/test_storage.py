"""Unit tests for audiopipe.storage: atomic writes leave no temp file, checksums, strict state-dict loading."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from audiopipe.storage import (
    CheckpointError,
    atomic_write,
    check_state_dict,
    file_digest,
    file_sha256,
    load_checkpoint,
    load_state_dict_strict,
    save_checkpoint,
    write_json_atomic,
    write_text_atomic,
)


def test_file_sha256(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"abc")
    assert file_sha256(tmp_path / "x") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert file_digest(tmp_path / "x", "md5") == "900150983cd24fb0d6963f7d28e17f72"


def test_atomic_write_replaces_the_target_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_atomic_write_failure_keeps_the_old_file_and_removes_the_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_text_and_json_writers(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "t.txt", "hello\n")
    write_json_atomic(tmp_path / "m.json", {"b": 1, "a": [1.5]})
    assert (tmp_path / "t.txt").read_text() == "hello\n"
    assert (tmp_path / "m.json").read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [1.5], "b": 1}


def test_checkpoint_round_trip_and_checksum(tmp_path: Path) -> None:
    payload = {"model": {"w": torch.arange(4.0)}, "step": 3}
    save_checkpoint(tmp_path / "c.pt", payload)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["step"] == 3
    torch.testing.assert_close(loaded["model"]["w"], payload["model"]["w"])
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("bias"), r"missing keys \(1\): bias"),
        (lambda s: s.update(extra=torch.zeros(1)), r"unexpected keys \(1\): extra"),
        (lambda s: s.update(weight=torch.zeros(3, 3)), r"shape mismatches \(1\): weight"),
    ],
)
def test_strict_loading_raises_one_exception_type(edit: Callable[[dict], object], message: str) -> None:
    model = nn.Linear(2, 2)
    state = dict(model.state_dict())
    edit(state)
    with pytest.raises(CheckpointError, match=message):
        check_state_dict(model, state, source="x.pt")
    with pytest.raises(CheckpointError, match=message):
        load_state_dict_strict(model, state, source="x.pt")
