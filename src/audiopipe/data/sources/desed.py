"""DESED (DCASE task 4, domestic sound event detection) as a data folder: strong events, weak tags, unlabelled.

Reads a DESED root, the folder holding `audio/` and `metadata/` that DESED_task's download script writes for the
development set, or that `DESED_public_eval.tar.gz` extracts to. Its subsets map onto our splits:

    metadata/train/synthetic*/soundscapes.tsv, metadata/train/audioset_strong.tsv       -> train (strong)
    metadata/validation/validation.tsv, metadata/validation/synthetic*/soundscapes.tsv  -> valid (strong)
    metadata/eval/public.tsv                                                            -> test  (strong)
    metadata/train/weak.tsv                                                             -> weak  (clip tags)
    every audio file under audio/train/unlabel_in_domain/                               -> unlabelled

Other TSVs (`eval_dcase2018.tsv` and `test_dcase2018.tsv` are subsets of `validation.tsv`; `durations.tsv`) are
ignored. The audio of `metadata/<dir>/<name>.tsv` is looked up in `audio/<dir>/<name>/`, then `audio/<dir>/`
(`audioset_strong.tsv`: `audio/train/strong_label_real/` first). Strong TSVs are `filename onset offset
event_label` with that header, one row per event (a clip without events: one row with empty onset, offset and
label); weak TSVs are `filename event_labels` (comma-joined). A label outside the 10 DESED classes is an error
naming the file, line and label. Events running past the end of their clip are cut at the clip's end. Listed
clips without audio are skipped, counted in a warning and listed in `missing_clips.tsv`.

The public evaluation archive alone (the default download, `download.url` unset) has no train or valid subset:
its clips are then split by a hash of the file name into train/valid/test (about 60/20/20), with a warning;
numbers from such a run are not comparable with DCASE results. For the DCASE splits set `download.url` to the
DESED root of the development set (a directory path or file:// URL; it cannot be fetched as one archive).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from audiopipe.data.download import DownloadError
from audiopipe.data.manifests import Clip
from audiopipe.data.sources.staging import (
    AUDIO_SUFFIXES,
    clip_path,
    duration_or_zero,
    fetch_and_extract,
    finish,
    fresh_folder,
    local_dir,
    report_missing,
    stable_bucket,
)
from audiopipe.storage import file_sha256

log = logging.getLogger(__name__)

# The DESED vocabulary in its usual (alphabetical) order: the target order of every split.
DESED_CLASSES = (
    "Alarm_bell_ringing",
    "Blender",
    "Cat",
    "Dishes",
    "Dog",
    "Electric_shaver_toothbrush",
    "Frying",
    "Running_water",
    "Speech",
    "Vacuum_cleaner",
)
STRONG_HEADER = ["filename", "onset", "offset", "event_label"]
WEAK_HEADER = ["filename", "event_labels"]
SUBSETS = (  # (glob under metadata/, our split, label kind)
    ("train/synthetic*/soundscapes.tsv", "train", "strong"),
    ("train/audioset_strong.tsv", "train", "strong"),
    ("validation/validation.tsv", "valid", "strong"),
    ("validation/synthetic*/soundscapes.tsv", "valid", "strong"),
    ("eval/public.tsv", "test", "strong"),
    ("train/weak.tsv", "weak", "weak"),
)
AUDIO_ALIASES = {"train/audioset_strong": "train/strong_label_real"}
UNLABELLED_DIR = "train/unlabel_in_domain"
PUBLIC_ONLY_SPLITS = ("train", "train", "train", "valid", "test")  # indexed by a 5-way file-name hash
LICENCE = "DESED: real clips from AudioSet/YouTube, synthetic ones from Freesound (CC); see the DESED release"

Event = tuple[float, float, str]


@dataclass(frozen=True)
class Listed:
    """A clip named by a metadata TSV (or found in the unlabelled folder); `audio` is None when it is missing."""

    name: str
    split: str
    audio: Path | None
    tags: tuple[str, ...] = ()
    events: tuple[Event, ...] = ()


def build_desed(folder: Path, *, url: str | None = None, sha256: str | None = None) -> list[Clip]:
    """Convert DESED (`url`: archive URL/path, or a DESED root directory; unset: the public eval set) into `folder`."""
    local = local_dir(url)
    fresh_folder(folder)
    root = find_root(local or fetch_and_extract("desed", folder, url, sha256))
    listed = list_subsets(root)
    if not any(item.split in ("train", "valid") for item in listed):
        listed = split_public_eval(listed, root)
    listed += list_unlabelled(root)
    found = [item for item in listed if item.audio is not None]
    fix = f"put the audio under {root / 'audio'} (metadata/<dir>/<name>.tsv: audio/<dir>/<name>/); check download.url"
    report_missing("desed", folder, [(x.split, x.name) for x in listed if x.audio is None], len(found), fix)
    clips = [_clip(folder, root, x, x.audio) for x in tqdm(found, desc="desed clips", unit="clip") if x.audio]
    cut = sum(clip.events != item.events for clip, item in zip(clips, found))
    if cut:
        log.warning("desed: %d clips have events past their end; the events were cut at the clip's end", cut)
    return finish(folder, clips, DESED_CLASSES)


def find_root(base: Path) -> Path:
    """`base`, or the shallowest folder under it, that holds both `audio/` and `metadata/`."""
    if (base / "metadata").is_dir() and (base / "audio").is_dir():
        return base
    found = [p.parent for p in base.rglob("metadata") if p.is_dir() and (p.parent / "audio").is_dir()]
    if not found:
        raise DownloadError(
            f"{base}: no DESED root (a folder holding audio/ and metadata/); check download.url points at "
            "DESED_public_eval.tar.gz or at your DESED dataset folder"
        )
    return min(found, key=lambda p: (len(p.parts), str(p)))


def list_subsets(root: Path) -> list[Listed]:
    """Every clip named by the known metadata TSVs, with its split, labels and audio file (or None)."""
    listed = []
    for pattern, split, kind in SUBSETS:
        for tsv in sorted((root / "metadata").glob(pattern)):
            rows = read_strong(tsv) if kind == "strong" else read_weak(tsv)
            dirs = audio_dirs(root, tsv)
            for name, (tags, events) in rows.items():
                audio = next((d / name for d in dirs if (d / name).is_file()), None)
                listed.append(Listed(name, split, audio, tags, events))
    return listed


def audio_dirs(root: Path, tsv: Path) -> list[Path]:
    """Where the audio of `metadata/<dir>/<name>.tsv` may live, in lookup order."""
    rel = tsv.relative_to(root / "metadata").with_suffix("").as_posix()
    names = [AUDIO_ALIASES[rel]] if rel in AUDIO_ALIASES else []
    return [root / "audio" / name for name in (*names, rel, Path(rel).parent.as_posix())]


def list_unlabelled(root: Path) -> list[Listed]:
    folder = root / "audio" / UNLABELLED_DIR
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES) if folder.is_dir() else []
    return [Listed(p.name, "unlabelled", p) for p in files]


def split_public_eval(listed: list[Listed], root: Path) -> list[Listed]:
    """No train/valid subsets: move the test clips to train/valid/test by a hash of the file name (~60/20/20)."""
    log.warning(
        "desed: %s has no train or valid subset (public evaluation set only); its clips are split ~60/20/20 "
        "into train/valid/test by a hash of the file name, so results are not comparable with DCASE numbers. "
        "Set download.url to a DESED development-set root for the DCASE splits", root,
    )  # fmt: skip
    return [replace(x, split=PUBLIC_ONLY_SPLITS[stable_bucket(x.name, 5)]) if x.split == "test" else x for x in listed]


def _rows(tsv: Path, header: list[str]) -> list[tuple[int, list[str]]]:
    lines = tsv.read_text().splitlines()
    if not lines or [c.strip() for c in lines[0].split("\t")] != header:
        raise DownloadError(
            f"{tsv}:1: expected the header {'<TAB>'.join(header)}, got {lines[0] if lines else ''!r}; "
            "check it is an original DESED metadata file"
        )
    return [(n, line.rstrip("\r").split("\t")) for n, line in enumerate(lines[1:], start=2) if line.strip()]


def _label(tsv: Path, lineno: int, label: str) -> str:
    label = label.strip()
    if label not in DESED_CLASSES:
        raise DownloadError(
            f"{tsv}:{lineno}: unknown label {label!r}; DESED labels are {', '.join(DESED_CLASSES)}; "
            "fix or delete the row"
        )
    return label


def _tags(labels: set[str]) -> tuple[str, ...]:
    return tuple(c for c in DESED_CLASSES if c in labels)


def read_strong(tsv: Path) -> dict[str, tuple[tuple[str, ...], tuple[Event, ...]]]:
    """`filename -> (tags, events)` from a strong TSV; a clip listed without events gets empty ones."""
    events: dict[str, list[Event]] = {}
    for lineno, cells in _rows(tsv, STRONG_HEADER):
        found = events.setdefault(cells[0], [])
        if not any(c.strip() for c in cells[1:]):
            continue
        if len(cells) != 4:
            raise DownloadError(
                f"{tsv}:{lineno}: expected filename<TAB>onset<TAB>offset<TAB>event_label, got {cells}; "
                "fix or delete the line"
            )
        label = _label(tsv, lineno, cells[3])
        try:
            onset, offset = float(cells[1]), float(cells[2])
        except ValueError as err:
            raise DownloadError(f"{tsv}:{lineno}: onset/offset must be numbers, got {cells[1:3]}; fix it") from err
        if not 0 <= onset <= offset:
            raise DownloadError(f"{tsv}:{lineno}: event {onset}-{offset} s needs 0 <= onset <= offset; fix the line")
        found.append((onset, offset, label))
    return {name: (_tags({e[2] for e in evs}), tuple(sorted(evs))) for name, evs in events.items()}


def read_weak(tsv: Path) -> dict[str, tuple[tuple[str, ...], tuple[Event, ...]]]:
    """`filename -> (tags, ())` from a weak TSV (comma-joined labels)."""
    tags: dict[str, set[str]] = {}
    for lineno, cells in _rows(tsv, WEAK_HEADER):
        if len(cells) != 2:
            raise DownloadError(f"{tsv}:{lineno}: expected filename<TAB>event_labels, got {cells}; fix the line")
        labels = {_label(tsv, lineno, x) for x in cells[1].split(",") if x.strip()}
        tags.setdefault(cells[0], set()).update(labels)
    return {name: (_tags(labels), ()) for name, labels in tags.items()}


def _clip(folder: Path, root: Path, item: Listed, audio: Path) -> Clip:
    rel = audio.relative_to(root / "audio").as_posix()
    path = clip_path(folder, audio, rel)
    duration_s = duration_or_zero(audio)
    events = item.events
    if duration_s > 0:  # DESED offsets may run a little past a clip cut short by its YouTube source
        events = tuple((a, min(b, duration_s), label) for a, b, label in events if a < duration_s)
    return Clip(
        str(Path(rel).with_suffix("")), path, item.split, item.tags, events, source=f"DESED:{rel}",
        licence=LICENCE, sha256=file_sha256(folder / path), duration_s=duration_s,
    )  # fmt: skip
