"""FSD50K (51,197 Freesound clips, 200 AudioSet-ontology classes, clip tags only) as a data folder.

Reads `FSD50K.ground_truth/`: `vocabulary.csv` (`index,label,mid` rows, no header: the class list, in order),
`dev.csv` (`fname,labels,mids,split`, split train|val) and `eval.csv` (`fname,labels,mids`); labels are
comma-joined. Audio is `FSD50K.dev_audio/<fname>.wav` and `FSD50K.eval_audio/<fname>.wav`. Splits: dev train ->
train, dev val -> valid, eval -> test; no strong events. A label missing from vocabulary.csv is an error naming
the file, line and label.

Where the files come from (the audio zips are multi-part and are never fetched here: join and extract them,
e.g. `zip -s 0 FSD50K.dev_audio.zip --out dev.zip && unzip dev.zip`):

    download.url = your FSD50K folder   it holds FSD50K.ground_truth/ (or FSD50K.ground_truth.zip) and the
                                        extracted FSD50K.dev_audio/ and FSD50K.eval_audio/
    download.url unset (or an archive)  FSD50K.ground_truth.zip is fetched (Zenodo record 4060432, md5-pinned)
                                        and the two audio folders are looked up in `<cache>/fsd50k/` (the
                                        download stage's --cache: `data/.cache/fsd50k/`; a symlink works)

Clips listed without audio are skipped, counted in a warning (with the first few names) and listed in
`missing_clips.tsv`; no audio at all is an error. Audio is hard-linked (or copied) into the data folder.
"""

from __future__ import annotations

import csv
from pathlib import Path

from tqdm import tqdm

from audiopipe.data.download import DownloadError, extract
from audiopipe.data.manifests import Clip
from audiopipe.data.sources.staging import (
    clip_path,
    duration_or_zero,
    fetch_and_extract,
    finish,
    fresh_folder,
    local_dir,
    report_missing,
)
from audiopipe.storage import file_sha256

GROUND_TRUTH = "FSD50K.ground_truth"
AUDIO_DIRS = {"dev": "FSD50K.dev_audio", "eval": "FSD50K.eval_audio"}
COLUMNS = {"dev": ("fname", "labels", "split"), "eval": ("fname", "labels")}
DEV_SPLITS = {"train": "train", "val": "valid"}
_TABLES = ("dev.csv", "eval.csv", "vocabulary.csv")
LICENCE = "FSD50K: CC-BY 4.0 collection; per-clip Creative Commons licences in FSD50K.metadata"

Row = tuple[str, str, tuple[str, ...], str]  # (fname, split, tags, part: dev | eval)


def build_fsd50k(
    folder: Path, *, url: str | None = None, sha256: str | None = None, cache_dir: str | Path | None = None
) -> list[Clip]:
    """Convert FSD50K into `folder` (`url`: your FSD50K folder, or the ground-truth archive; see the module doc)."""
    local = local_dir(url)
    fresh_folder(folder)
    truth = _local_truth(local, folder) if local else _truth_dir(fetch_and_extract("fsd50k", folder, url, sha256))
    audio_root = local or (Path(cache_dir) / "fsd50k" if cache_dir else None)
    classes = read_vocabulary(truth / "vocabulary.csv")
    rows = read_labels(truth / "dev.csv", "dev", classes) + read_labels(truth / "eval.csv", "eval", classes)
    audio = {r[0]: audio_root / AUDIO_DIRS[r[3]] / f"{r[0]}.wav" for r in rows} if audio_root else {}
    found = [r for r in rows if r[0] in audio and audio[r[0]].is_file()]
    have = {r[0] for r in found}
    fix = (
        f"extract FSD50K.dev_audio/ and FSD50K.eval_audio/ into {audio_root or '<cache>/fsd50k'}, "
        "or set download.url to your FSD50K folder (ground truth + both audio folders)"
    )
    report_missing("fsd50k", folder, [(r[1], f"{r[0]}.wav") for r in rows if r[0] not in have], len(found), fix)
    clips = [
        Clip(
            fname,
            clip_path(folder, audio[fname], f"{AUDIO_DIRS[part]}/{fname}.wav"),
            split,
            tags,
            source=f"FSD50K:{fname}",
            licence=LICENCE,
            sha256=file_sha256(audio[fname]),
            duration_s=duration_or_zero(audio[fname]),
        )
        for fname, split, tags, part in tqdm(found, desc="fsd50k clips", unit="clip")
    ]
    return finish(folder, clips, classes)


def _local_truth(root: Path, folder: Path) -> Path:
    if (root / GROUND_TRUTH / "dev.csv").is_file():
        return root / GROUND_TRUTH
    archive = root / f"{GROUND_TRUTH}.zip"
    if archive.is_file():
        return _truth_dir(extract(archive, folder / "raw"))
    raise DownloadError(
        f"{root}: holds neither {GROUND_TRUTH}/ nor {GROUND_TRUTH}.zip; download FSD50K.ground_truth.zip "
        "(Zenodo record 4060432) into it, or set download.url to the folder that has it"
    )


def _truth_dir(raw: Path) -> Path:
    found = sorted(p.parent for p in raw.rglob("dev.csv") if all((p.parent / f).is_file() for f in _TABLES))
    if not found:
        raise DownloadError(
            f"{raw}: no dev.csv, eval.csv and vocabulary.csv side by side; check download.url points at "
            "FSD50K.ground_truth.zip"
        )
    return found[0]


def read_vocabulary(path: Path) -> list[str]:
    """Class names in vocabulary.csv order (`index,label,mid` rows without header)."""
    names = []
    with open(path, newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row:
                continue
            if len(row) != 3 or not row[0].strip().isdigit():
                raise DownloadError(
                    f"{path}:{lineno}: expected index,label,mid (no header), got {row}; check it is FSD50K's "
                    "vocabulary.csv"
                )
            names.append(row[1].strip())
    if not names or len(set(names)) != len(names):
        raise DownloadError(f"{path}: class names must be present and unique; check it is FSD50K's vocabulary.csv")
    return names


def read_labels(path: Path, part: str, classes: list[str]) -> list[Row]:
    """`(fname, split, tags, part)` per row of dev.csv (`part="dev"`) or eval.csv (`part="eval"`)."""
    known = set(classes)
    rows = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS[part] if c not in (reader.fieldnames or [])]
        if missing:
            raise DownloadError(
                f"{path}: missing column(s) {missing} (header: {reader.fieldnames}); expected FSD50K's {path.name} "
                f"with columns {list(COLUMNS[part])}; check download.url"
            )
        for row in reader:
            where = f"{path}:{reader.line_num}"
            split = DEV_SPLITS.get(row["split"]) if part == "dev" else "test"
            if split is None:
                raise DownloadError(f"{where}: split {row['split']!r} is not train or val; fix the row")
            labels = {x.strip() for x in row["labels"].split(",") if x.strip()}
            for label in sorted(labels - known):
                raise DownloadError(
                    f"{where}: unknown label {label!r} (not in vocabulary.csv); fix the row or use the "
                    "vocabulary.csv of the same release"
                )
            rows.append((row["fname"].strip(), split, tuple(c for c in classes if c in labels), part))
    return rows
