"""Training curves as CSV files that DVC plots, MLflow and the evaluation report all read.

`write_curves(out_dir, history)` writes `train_curve.csv` (one row per optimizer step) and
`valid_curve.csv` (one row per epoch) with a header of metric names; missing values are left empty.
`history` is anything with `steps` and `epochs` row lists (`audiopipe.training.loop.History`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from audiopipe.storage import write_text_atomic

TRAIN_CURVE = "train_curve.csv"
VALID_CURVE = "valid_curve.csv"


def _write_csv_atomic(path: Path, rows: Sequence[Mapping[str, Any]], first: str) -> None:
    columns = [first] + sorted({key for row in rows for key in row} - {first})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "") for key in columns})
    write_text_atomic(path, buffer.getvalue())


class Rows(Protocol):
    """Per-step rows (`steps`) and per-epoch rows (`epochs`) of a training run."""

    @property
    def steps(self) -> Sequence[Mapping[str, Any]]: ...

    @property
    def epochs(self) -> Sequence[Mapping[str, Any]]: ...


def write_curves(out_dir: Path, history: Rows) -> list[Path]:
    """Write the per-step and per-epoch curves of a training `History`."""
    written = []
    for name, rows, first in ((TRAIN_CURVE, history.steps, "step"), (VALID_CURVE, history.epochs, "epoch")):
        _write_csv_atomic(Path(out_dir) / name, rows, first)
        written.append(Path(out_dir) / name)
    return written


def read_curve(path: Path) -> dict[str, list[float]]:
    """Columns of a curve CSV as float lists (empty cells become NaN); {} when the file is missing."""
    if not path.is_file():
        return {}
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {key: [float(row[key]) if row[key] not in ("", None) else float("nan") for row in rows] for key in rows[0]}
