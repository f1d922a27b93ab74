"""Tests for audiopipe.data.predictions: round trip, attributes, label-list refusal, atomic write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audiopipe.data.predictions import PredictionsError, read_attrs, read_predictions, write_predictions

CLASSES = ["Speech", "Dog", "Alarm"]


def _per_split() -> dict[str, tuple[list[str], np.ndarray]]:
    rng = np.random.default_rng(0)
    return {
        "train": (["a", "b"], rng.normal(size=(2, 3)).astype(np.float32)),
        "valid": (["c"], rng.normal(size=(1, 3)).astype(np.float32)),
    }


def test_round_trip_keeps_order_values_and_attrs(tmp_path: Path) -> None:
    path = tmp_path / "out" / "predictions.h5"
    per_split = _per_split()
    write_predictions(path, per_split, CLASSES, teacher="eat_tagger x2", checkpoints=[Path("a.pt"), "b.pt"])
    for split, (ids, logits) in per_split.items():
        got_ids, got_logits, names = read_predictions(path, split)
        assert got_ids == ids and names == CLASSES
        assert got_logits.dtype == np.float32
        np.testing.assert_array_equal(got_logits, logits)
    attrs = read_attrs(path)
    assert attrs["teacher"] == "eat_tagger x2" and attrs["checkpoints"] == ["a.pt", "b.pt"]
    assert attrs["splits"] == ["train", "valid"]
    assert [p.name for p in path.parent.iterdir()] == ["predictions.h5"]  # no temp file left behind


def test_write_refuses_label_list_different_from_pack(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    with pytest.raises(PredictionsError, match="class 1 is 'Dog', expected 'Cat'"):
        write_predictions(path, _per_split(), CLASSES, "t", [], expected_class_names=["Speech", "Cat", "Alarm"])
    assert not path.exists()


def test_read_refuses_label_list_different_from_pack(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.h5", _per_split(), CLASSES, "t", [])
    with pytest.raises(PredictionsError, match="3 classes vs 2 expected"):
        read_predictions(path, "train", expected_class_names=["Speech", "Dog"])


def test_rejects_shape_mismatch(tmp_path: Path) -> None:
    bad = {"train": (["a", "b", "c"], np.zeros((2, 3), np.float32))}
    with pytest.raises(PredictionsError, match="split 'train'"):
        write_predictions(tmp_path / "p.h5", bad, CLASSES, "t", [])


def test_rejects_non_finite_logits(tmp_path: Path) -> None:
    bad = {"train": (["a"], np.array([[0.0, np.nan, 1.0]], np.float32))}
    with pytest.raises(PredictionsError, match="non-finite"):
        write_predictions(tmp_path / "p.h5", bad, CLASSES, "t", [])


def test_missing_split_and_missing_file_are_named(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.h5", _per_split(), CLASSES, "t", [])
    with pytest.raises(PredictionsError, match="no split 'test'"):
        read_predictions(path, "test")
    with pytest.raises(PredictionsError, match="not found"):
        read_predictions(tmp_path / "missing.h5", "train")
