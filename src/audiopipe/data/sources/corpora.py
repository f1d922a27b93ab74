"""ESC-50 and a user's folder as data folders: `build_esc50`, `build_folder`.

The ESC-50 archive is fetched with `audiopipe.data.sources.staging` (resumable, checksum-checked, `.completed`
markers) and extracted zip-slip-safely; `url`/`sha256` override the upstream file (mirrors; tests serve fixtures
from 127.0.0.1). DESED, FSD50K and AudioSet have one module each (`desed.py`, `fsd50k.py`, `audioset.py`).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path, PurePosixPath, PureWindowsPath

from audiopipe.data.download import DownloadError
from audiopipe.data.manifests import Clip, write_metadata
from audiopipe.data.sources.staging import fetch_and_extract
from audiopipe.storage import file_sha256

ESC50_COLUMNS = ("filename", "fold", "category", "src_file")


def build_esc50(folder: Path, *, url: str | None = None, sha256: str | None = None) -> list[Clip]:
    """ESC-50 (2,000 5-s clips, 50 classes): folds 1-3 train, 4 valid, 5 test; clip tags from meta/esc50.csv."""
    raw = fetch_and_extract("esc50", folder, url, sha256)
    metas = sorted(raw.rglob("meta/esc50.csv"))
    if not metas:
        raise DownloadError(f"{raw}: no meta/esc50.csv in the ESC-50 archive; is the URL right?")
    audio_dir = metas[0].parent.parent / "audio"
    with open(metas[0], newline="") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        missing = [c for c in ESC50_COLUMNS if c not in header]
        if missing:
            raise DownloadError(
                f"{metas[0]}: missing column(s) {missing} (header: {header}); expected the ESC-50 release layout "
                f"with columns {list(ESC50_COLUMNS)}; check download.url points at the original ESC-50 archive, "
                "or delete the edited file and rerun `dvc repro download`"
            )
        rows = list(reader)
    split_of = {"1": "train", "2": "train", "3": "train", "4": "valid", "5": "test"}
    for lineno, r in enumerate(rows, start=2):
        if r["fold"] not in split_of or not r["filename"] or not r["category"]:
            raise DownloadError(
                f"{metas[0]}:{lineno}: expected a fold in 1-5, a filename and a category, got {dict(r)}; "
                "fix or delete the line"
            )
    classes = sorted({r["category"] for r in rows})
    clips = []
    for r in rows:
        path = audio_dir / r["filename"]
        rel = str(path.relative_to(folder))
        clips.append(
            Clip(Path(r["filename"]).stem, rel, split_of[r["fold"]], (r["category"],), source=f"ESC-50:{r['src_file']}",
                 licence="CC-BY-NC-3.0 (ESC-50)", sha256=file_sha256(path), duration_s=5.0)
        )  # fmt: skip
    write_metadata(folder, clips, classes)
    return clips


def build_folder(folder: Path, *, url: str | None = None, sha256: str | None = None) -> list[Clip]:
    """A user's directory `url` holding audio and `labels.tsv` (`filename<TAB>split<TAB>labels`, comma-joined).

    The audio is copied into `folder`, so later stages never touch the user's files.
    """
    if not url:
        raise DownloadError("download.source folder needs download.url: the directory with your audio and labels.tsv")
    src = Path(url.removeprefix("file://"))
    table = src / "labels.tsv"
    if not table.is_file():
        raise DownloadError(f"{table}: missing; write one row per clip: filename<TAB>split<TAB>label1,label2")
    rows = _folder_rows(table)
    if folder.exists():
        shutil.rmtree(folder)
    clips: list[Clip] = []
    classes: set[str] = set()
    for name, split, tags in rows:
        classes.update(tags)
        dst = folder / "audio" / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / name, dst)
        clips.append(
            Clip(Path(name).stem, f"audio/{name}", split, tags, source=f"folder:{name}", sha256=file_sha256(dst))
        )
    write_metadata(folder, clips, sorted(classes))
    return clips


def _folder_rows(table: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    """`(filename, split, tags)` per row of a user's labels.tsv, all checked before anything is copied.

    A filename must be a relative path below the folder holding `table`: absolute paths, `..` components and
    empty names are refused, so the conversion never reads or writes outside the two folders.
    """
    rows = []
    for lineno, line in enumerate(table.read_text().splitlines()[1:], start=2):
        cells = line.split("\t")
        if len(cells) != 3:
            raise DownloadError(f"{table}:{lineno}: expected filename<TAB>split<TAB>labels, got {line[:200]!r}")
        name, split, labels = cells
        parts = PurePosixPath(name.replace("\\", "/")).parts
        outside = name.startswith(("/", "\\")) or PureWindowsPath(name).drive or ".." in parts
        if not parts or outside or parts[-1] == ".":
            raise DownloadError(
                f"{table}:{lineno}: filename {name[:200]!r} is not a path inside {table.parent}; "
                "fix the row to name a file below that folder (no '..', no absolute path)"
            )
        rows.append((name, split, tuple(x for x in labels.split(",") if x)))
    return rows
