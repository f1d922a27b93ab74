"""Clip metadata: the `Clip` record, the label vocabulary and the metadata files of a data folder.

A data folder (`data/download/<source>/`, mirrored by `data/resample/<source>/`) holds audio files and:

    classes.txt     one class name per line (the label vocabulary, in target order)
    manifest.jsonl  one JSON object per clip: clip_id, path (relative), split, source, licence, sha256
    weak.tsv        `filename<TAB>event_labels` (comma-joined clip tags; header row)
    strong.tsv      `filename<TAB>onset<TAB>offset<TAB>event_label` (DESED format; header row); as in DESED, a row
                    with empty onset, offset and label marks a clip without events
    tags.csv        `filename,<class 1>,...,<class C>` multi-hot, for tagging tools

`filename` is the clip's path relative to the folder. Readers validate everything and raise
`ManifestError` naming the file, the line and what to do.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from audiopipe.storage import write_text_atomic

SPLITS = ("train", "valid", "test", "weak", "unlabelled")
STRONG_SPLITS = ("train", "valid", "test")
METADATA_FILES = ("classes.txt", "manifest.jsonl", "weak.tsv", "strong.tsv", "tags.csv")

# The realmix demo vocabulary (../shared/spec/demo_data.md §6) with AudioSet mids for the tagging label space.
DEFAULT_CLASSES = (
    "Speech",
    "Dog",
    "Cat",
    "Alarm_bell_ringing",
    "Running_water",
    "Dishes",
    "Door",
    "Footsteps",
    "Bird",
    "Music",
)
# The realmix demo set's classes (data/realmix_labels.tsv): only classes with enough distinct source recordings
# in the Debian packages to be split by recording (README "Demo data").
REALMIX_CLASSES = (
    "Speech",
    "Animal",
    "Alarm_bell_ringing",
    "Running_water",
    "Breaking",
    "Door",
    "Footsteps",
    "Vehicle",
    "Music",
)
AUDIOSET_MIDS = {
    "Speech": "/m/09x0r",
    "Dog": "/m/0bt9lr",
    "Cat": "/m/01yrx",
    "Alarm_bell_ringing": "/m/07pp8cl",
    "Running_water": "/m/02jz0l",
    "Dishes": "/m/04brg2",
    "Door": "/m/02dgv",
    "Footsteps": "/m/07pbtc8",
    "Bird": "/m/015p6",
    "Music": "/m/04rlf",
    "Animal": "/m/0jbk",
    "Breaking": "/m/07pc8lb",
    "Vehicle": "/m/07yv9",
}


class ManifestError(ValueError):
    """Invalid metadata; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Clip:
    """One audio clip and its labels. `events` are `(onset_s, offset_s, label)`; `labels` are clip tags."""

    clip_id: str
    path: str
    split: str
    labels: tuple[str, ...] = ()
    events: tuple[tuple[float, float, str], ...] = ()
    source: str = ""
    licence: str = ""
    sha256: str = ""
    duration_s: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)


def write_metadata(root: str | Path, clips: Sequence[Clip], class_names: Sequence[str]) -> None:
    """Write classes.txt, manifest.jsonl, weak.tsv, strong.tsv and tags.csv for `clips` under `root`."""
    root = Path(root)
    check_clips(clips, class_names, where=str(root))
    write_text_atomic(root / "classes.txt", "".join(f"{c}\n" for c in class_names))
    rows = []
    for clip in clips:
        row = asdict(clip)
        row.pop("labels"), row.pop("events")
        rows.append(json.dumps(row, sort_keys=True))
    write_text_atomic(root / "manifest.jsonl", "".join(f"{r}\n" for r in rows))
    weak = ["filename\tevent_labels"] + [f"{c.path}\t{','.join(c.labels)}" for c in clips if c.labels]
    write_text_atomic(root / "weak.tsv", "\n".join(weak) + "\n")
    strong = ["filename\tonset\toffset\tevent_label"]
    strong += [f"{c.path}\t{a:.3f}\t{b:.3f}\t{lab}" for c in clips for a, b, lab in c.events]
    write_text_atomic(root / "strong.tsv", "\n".join(strong) + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["filename", *class_names])
    for c in clips:
        if c.split != "unlabelled":
            writer.writerow([c.path, *(int(name in c.labels) for name in class_names)])
    write_text_atomic(root / "tags.csv", buf.getvalue())


def check_clips(clips: Iterable[Clip], class_names: Sequence[str], where: str) -> None:
    """Raise `ManifestError` on duplicate ids/paths, unknown splits or labels, or bad event times."""
    known = set(class_names)
    seen_ids: set[str] = set()
    seen_paths: set[str] = set()
    for clip in clips:
        if clip.clip_id in seen_ids or clip.path in seen_paths:
            raise ManifestError(
                f"{where}: duplicate clip name {clip.clip_id!r} ({clip.path}); clip names must be unique"
            )
        seen_ids.add(clip.clip_id)
        seen_paths.add(clip.path)
        if clip.split not in SPLITS:
            raise ManifestError(f"{where}: clip {clip.clip_id!r} has unknown split {clip.split!r}; use one of {SPLITS}")
        for label in (*clip.labels, *(e[2] for e in clip.events)):
            if label not in known:
                raise ManifestError(f"{where}: clip {clip.clip_id!r}: unknown label {label!r}; add it to classes.txt")
        for onset, offset, _ in clip.events:
            limit = clip.duration_s + 1e-3 if clip.duration_s > 0 else float("inf")
            if not 0 <= onset <= offset <= limit:
                raise ManifestError(f"{where}: clip {clip.clip_id!r}: event {onset}-{offset} s is not inside the clip")


def read_classes(path: str | Path) -> list[str]:
    """The label vocabulary from classes.txt (one name per line, unique, non-empty)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: missing; every data folder needs classes.txt (one class name per line)")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names or len(set(names)) != len(names):
        raise ManifestError(f"{path}: class names must be non-empty and unique, got {names}")
    return names


def _read_tsv(path: Path, header: Sequence[str]) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    if not lines or lines[0].split("\t") != list(header):
        raise ManifestError(f"{path}:1: expected the header {'<TAB>'.join(header)}; fix the first line")
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(header):
            raise ManifestError(
                f"{path}:{lineno}: malformed row {line!r}: expected {len(header)} tab-separated columns "
                f"({', '.join(header)}), got {len(cells)}; fix or delete the line"
            )
        rows.append((lineno, cells))
    return rows


def _read_manifest(root: Path) -> list[Clip]:
    path = root / "manifest.jsonl"
    if not path.is_file():
        raise ManifestError(f"{path}: missing; run the download stage (or write one row per clip)")
    clips = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            clips.append(Clip(**row))
        except (json.JSONDecodeError, TypeError) as err:
            raise ManifestError(f"{path}:{lineno}: malformed manifest row ({err}); fix or delete the line") from err
    return clips


def read_metadata(root: str | Path) -> tuple[list[str], list[Clip]]:
    """Read and validate a data folder's metadata: `(class_names, clips)` with labels and events filled in."""
    root = Path(root)
    class_names = read_classes(root / "classes.txt")
    known = set(class_names)
    clips = _read_manifest(root)
    check_clips(clips, class_names, where=str(root / "manifest.jsonl"))
    by_path = {c.path: c for c in clips}
    tags: dict[str, tuple[str, ...]] = {}
    for lineno, (name, labels) in _read_tsv(root / "weak.tsv", ("filename", "event_labels")):
        where = f"{root / 'weak.tsv'}:{lineno}"
        parts = tuple(x.strip() for x in labels.split(",") if x.strip())
        _check_row(where, name, parts, known, by_path)
        if name in tags:
            raise ManifestError(f"{where}: duplicate clip name {name!r}; list each clip once")
        tags[name] = parts
    events: dict[str, list[tuple[float, float, str]]] = {}
    for lineno, (name, onset, offset, label) in _read_tsv(
        root / "strong.tsv", ("filename", "onset", "offset", "event_label")
    ):
        where = f"{root / 'strong.tsv'}:{lineno}"
        if not (onset.strip() or offset.strip() or label.strip()):  # DESED's row for a clip without events
            _check_row(where, name, (), known, by_path)
            events.setdefault(name, [])
            continue
        if not label.strip():
            raise ManifestError(f"{where}: event without a label; add one, or leave onset, offset and label all "
                                "empty for a clip without events")
        _check_row(where, name, (label,), known, by_path)
        try:
            a, b = float(onset), float(offset)
        except ValueError as err:
            raise ManifestError(f"{where}: onset/offset must be numbers, got {onset!r}, {offset!r}") from err
        duration = by_path[name].duration_s or float("inf")
        if not 0 <= a <= b <= duration + 1e-3:
            raise ManifestError(f"{where}: event {a}-{b} s must satisfy 0 <= onset <= offset <= {duration} s")
        events.setdefault(name, []).append((a, b, label))
    out = [replace(c, labels=tags.get(c.path, ()), events=tuple(sorted(events.get(c.path, [])))) for c in clips]
    return class_names, out


def _check_row(where: str, name: str, labels: Sequence[str], known: set[str], by_path: dict[str, Clip]) -> None:
    if name not in by_path:
        raise ManifestError(f"{where}: clip {name!r} is not in manifest.jsonl; add it there or delete the row")
    for label in labels:
        if label not in known:
            raise ManifestError(f"{where}: unknown label {label!r}; add it to classes.txt or fix the row")
