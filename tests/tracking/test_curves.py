"""Round trip of training curves through CSV."""

from __future__ import annotations

import math
from pathlib import Path

from audiopipe.tracking.curves import read_curve, write_curves
from audiopipe.training.loop import History


def test_curves_round_trip_with_missing_values(tmp_path: Path) -> None:
    history = History(steps=[{"step": 1, "train/loss": 2.0}, {"step": 2, "train/loss": 1.5, "train/lr": 0.1}],
                      epochs=[{"epoch": 0, "valid/mAP": 0.3}])
    train_csv, valid_csv = write_curves(tmp_path, history)
    train = read_curve(train_csv)
    assert train["step"] == [1.0, 2.0] and train["train/loss"] == [2.0, 1.5]
    assert math.isnan(train["train/lr"][0]) and train["train/lr"][1] == 0.1
    assert read_curve(valid_csv)["valid/mAP"] == [0.3]
    assert read_curve(tmp_path / "absent.csv") == {}
