"""Teacher predictions file (`predict_teacher` -> `distill_mobilenet`): clip-aligned logits per split.

Layout of `predictions.h5` (see docs/architecture.md):
    /<split>/clip_ids   (N,) utf-8 strings, same order as the split's packed clip file
    /<split>/logits     (N, C) float32
    attrs: class_names (JSON list), teacher (identity string), checkpoints (JSON list of paths)

The file is written to a temporary name in the same folder and renamed, so a reader never sees half a file.
Both functions refuse a label list that differs from the one the caller expects (the pack's), because
logits indexed by another vocabulary would silently train the student on the wrong classes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from audiopipe.data.failed_writes import discard, write_error
from audiopipe.storage import atomic_write

ATTR_CLASS_NAMES = "class_names"
ATTR_TEACHER = "teacher"
ATTR_CHECKPOINTS = "checkpoints"
DS_CLIP_IDS = "clip_ids"
DS_LOGITS = "logits"

# What to do about a predictions file that cannot be used: it is an output of the predict_teacher stage.
_RERUN = "delete it and rerun `dvc repro predict_teacher`"


class PredictionsError(ValueError):
    """A predictions file is missing, malformed or does not match the expected labels (names the file)."""


def check_class_names(found: Sequence[str], expected: Sequence[str], where: str) -> None:
    """Raise `PredictionsError` naming the first difference when two label lists are not identical."""
    found, expected = list(found), list(expected)
    if found == expected:
        return
    if len(found) != len(expected):
        detail = f"{len(found)} classes vs {len(expected)} expected"
    else:
        i = next(i for i, (a, b) in enumerate(zip(found, expected)) if a != b)
        detail = f"class {i} is {found[i]!r}, expected {expected[i]!r}"
    raise PredictionsError(f"{where}: label list differs from the packed clips' ({detail}); "
                           "the teacher must be trained on the same vocabulary as the pack")


def write_predictions(
    path: str | Path,
    per_split: Mapping[str, tuple[Sequence[str], np.ndarray]],
    class_names: Sequence[str],
    teacher: str,
    checkpoints: Sequence[str | Path],
    *,
    expected_class_names: Sequence[str] | None = None,
) -> Path:
    """Write `{split: (clip_ids, logits (N, C))}` atomically to `path`.

    Raises:
        PredictionsError: `class_names` differ from `expected_class_names`, or a split's shapes disagree.
    """
    path = Path(path)
    if expected_class_names is not None:
        check_class_names(class_names, expected_class_names, str(path))
    for split, (clip_ids, logits) in per_split.items():
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape != (len(clip_ids), len(class_names)):
            raise PredictionsError(f"{path}: split '{split}' has logits {logits.shape} for {len(clip_ids)} clips "
                                   f"and {len(class_names)} classes")
        if not np.isfinite(logits).all():
            raise PredictionsError(f"{path}: split '{split}' has non-finite logits")
    with atomic_write(path, suffix=".tmp") as tmp:
        f = h5py.File(tmp, "w")
        try:
            f.attrs[ATTR_CLASS_NAMES] = json.dumps(list(class_names))
            f.attrs[ATTR_TEACHER] = teacher
            f.attrs[ATTR_CHECKPOINTS] = json.dumps([str(p) for p in checkpoints])
            for split, (clip_ids, logits) in per_split.items():
                group = f.create_group(split)
                group.create_dataset(DS_CLIP_IDS, data=list(clip_ids), dtype=h5py.string_dtype("utf-8"))
                group.create_dataset(DS_LOGITS, data=np.asarray(logits, dtype=np.float32))
            f.flush()  # a failed write surfaces here, not inside close() (see audiopipe.data.failed_writes.discard)
            f.close()
        except (OSError, RuntimeError) as err:
            discard(f)
            raise write_error(tmp, err, "rerun `dvc repro predict_teacher`") from err
        except BaseException:
            discard(f)
            raise
    return path


def _open(path: Path) -> h5py.File:
    """Open a predictions file for reading; a missing, truncated or non-HDF5 file raises `PredictionsError`."""
    if not path.is_file():
        raise PredictionsError(f"{path}: predictions file not found; run the predict_teacher stage first")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise PredictionsError(
            f"{path}: not a readable HDF5 file, truncated or corrupt (a killed copy or a full disk?): {err}; {_RERUN}"
        ) from err


def read_attrs(path: str | Path) -> dict[str, object]:
    """File-level attributes: `class_names` (list), `teacher` (str), `checkpoints` (list), `splits` (list).

    Raises:
        PredictionsError: the file is missing, truncated, not HDF5, or lacks the attributes this module writes.
    """
    path = Path(path)
    with _open(path) as f:
        try:
            missing = [a for a in (ATTR_CLASS_NAMES, ATTR_TEACHER, ATTR_CHECKPOINTS) if a not in f.attrs]
            splits = sorted(f.keys())
            if not missing:
                class_names = json.loads(f.attrs[ATTR_CLASS_NAMES])
                checkpoints = json.loads(f.attrs[ATTR_CHECKPOINTS])
                teacher = str(f.attrs[ATTR_TEACHER])
        except (OSError, KeyError, ValueError) as err:  # json.JSONDecodeError is a ValueError
            raise PredictionsError(f"{path}: cannot read the file's attributes ({err}); {_RERUN}") from err
    if missing:
        raise PredictionsError(
            f"{path}: not an audiopipe predictions file (missing attribute(s) {missing}; top-level entries "
            f"{splits[:8]}), e.g. another tool's output; {_RERUN}"
        )
    if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
        raise PredictionsError(f"{path}: attribute class_names is not a JSON list of strings; {_RERUN}")
    return {"class_names": class_names, "teacher": teacher, "checkpoints": checkpoints, "splits": splits}


def read_predictions(
    path: str | Path, split: str, *, expected_class_names: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray, list[str]]:
    """`(clip_ids, logits (N, C) float32, class_names)` of one split.

    Raises:
        PredictionsError: missing, truncated or foreign file, missing split, labels different from
            `expected_class_names`, or a NaN/inf logit (names the file and the first such clip).
    """
    path = Path(path)
    attrs = read_attrs(path)
    class_names = list(attrs["class_names"])  # type: ignore[call-overload]
    if expected_class_names is not None:
        check_class_names(class_names, expected_class_names, str(path))
    with _open(path) as f:
        if split not in f:
            raise PredictionsError(f"{path}: no split '{split}'; present: {sorted(f.keys())}; {_RERUN}")
        try:
            group = f[split]
            clip_ids = [s.decode() if isinstance(s, bytes) else str(s) for s in group[DS_CLIP_IDS][()]]
            logits = group[DS_LOGITS][()].astype(np.float32)
        except (OSError, KeyError, TypeError) as err:
            raise PredictionsError(f"{path}: cannot read split '{split}' ({err}); {_RERUN}") from err
    if logits.shape != (len(clip_ids), len(class_names)):
        raise PredictionsError(
            f"{path}: split '{split}' has logits {logits.shape} for {len(clip_ids)} clips and "
            f"{len(class_names)} classes; {_RERUN}"
        )
    bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
    if bad.size:
        raise PredictionsError(
            f"predictions file {path} holds non-finite logits at clip {clip_ids[bad[0]][:200]!r} (split '{split}', "
            f"{bad.size} clip(s) in all); rerun predict_teacher (`dvc repro predict_teacher`)"
        )
    return clip_ids, logits, class_names
