"""AudioSet segment lists plus the audio you fetched yourself, as a data folder of clip tags.

Lists (Google's v1 CSVs): the train list (`balanced_train_segments.csv`, or `unbalanced_train_segments.csv`
when `download.url` names that file), `eval_segments.csv` and `class_labels_indices.csv`
(`index,mid,display_name`). Segment lists start with three `#` comment lines, then rows
`YTID, start_seconds, end_seconds, "mid1,mid2,..."`. Splits: train list -> train, except the clips whose YouTube
id hashes into a fixed 10% -> valid (a clip never moves as more audio arrives); eval_segments -> test.
Classes: class_labels_indices.csv order (527), display names made comma-free the way FSD50K spells them
("Male speech, man speaking" -> "Male_speech_and_man_speaking"); clip tags only. A mid missing from the class
list is an error naming the file, line and mid.

Audio is never downloaded here: fetch the YouTube clips with your own downloader (e.g. yt-dlp). A segment
matches the first audio file below the audio folder (recursively, any suffix in `AUDIO_SUFFIXES`) whose stem is

    Y<YTID>_<start>_<end>     start/end in seconds with three decimals (the DESED/DCASE naming)
    <YTID>_<start>_<end>
    <YTID>_<start in ms>      (the AudioSet strong-label clip id)
    Y<YTID>   or   <YTID>

Where the files come from:

    download.url = a local folder         it holds the three CSVs; the audio is in `<folder>/audio/`
    download.url = a local CSV file       its folder holds the other CSVs; the audio is in `<its folder>/audio/`
    download.url unset, or an http(s) URL of a segments CSV: that CSV and its siblings `eval_segments.csv` and
                                          `class_labels_indices.csv` (same base URL) are fetched; the audio is
                                          looked up in `<cache>/audioset/audio/` (`data/.cache/audioset/audio/`)

`download.sha256` checks the named CSV only (Google publishes no checksums). Segments without audio are
skipped, counted in a warning (with the first few ids) and listed in `missing_clips.tsv`; none at all is an error.
"""

from __future__ import annotations

import csv
import logging
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from audiopipe.data.download import DownloadError
from audiopipe.data.manifests import Clip
from audiopipe.data.sources.staging import (
    CORPORA,
    as_url,
    audio_index,
    clip_path,
    fetch_file,
    finish,
    fresh_folder,
    local_dir,
    report_missing,
    stable_bucket,
)
from audiopipe.storage import file_sha256

log = logging.getLogger(__name__)

TRAIN_LIST = "balanced_train_segments.csv"
EVAL_LIST = "eval_segments.csv"
CLASS_LIST = "class_labels_indices.csv"
CLASS_HEADER = ["index", "mid", "display_name"]
VALID_BUCKETS = 10  # one train clip in ten (by YouTube id hash) is held out as valid
LICENCE = "AudioSet labels CC-BY 4.0 (Google); audio from YouTube, rights stay with the uploaders"


@dataclass(frozen=True)
class Segment:
    ytid: str
    start_s: float
    end_s: float
    split: str
    tags: tuple[str, ...]

    @property
    def clip_id(self) -> str:
        return f"{self.ytid}_{round(self.start_s * 1000)}"

    def stems(self) -> tuple[str, ...]:
        """File stems that name this segment's audio, in matching order."""
        span = f"{self.start_s:.3f}_{self.end_s:.3f}"
        return (f"Y{self.ytid}_{span}", f"{self.ytid}_{span}", self.clip_id, f"Y{self.ytid}", self.ytid)


def build_audioset(
    folder: Path, *, url: str | None = None, sha256: str | None = None, cache_dir: str | Path | None = None
) -> list[Clip]:
    """Convert AudioSet lists + local audio into `folder` (`url`: see the module doc)."""
    fresh_folder(folder)
    lists, train_list, audio_dir = locate(folder, url, sha256, cache_dir)
    classes, by_mid = read_classes(lists / CLASS_LIST)
    segments = read_segments(lists / train_list, "train", by_mid) + read_segments(lists / EVAL_LIST, "test", by_mid)
    index = audio_index(audio_dir) if audio_dir else {}
    matched: dict[str, tuple[Segment, Path]] = {}
    missing = []
    for seg in segments:
        audio = next((index[s] for s in seg.stems() if s in index), None)
        if audio is None:
            missing.append((seg.split, seg.clip_id))
        elif seg.clip_id in matched:
            log.warning("audioset: %s is listed twice; the first row is kept", seg.clip_id)
        else:
            matched[seg.clip_id] = (seg, audio)
    fix = f"put the clips your downloader fetched under {audio_dir or '<cache>/audioset/audio'} (file names: see "
    report_missing("audioset", folder, missing, len(matched), fix + "audiopipe.data.sources.audioset)")
    pairs = tqdm(matched.values(), desc="audioset clips", unit="clip")
    clips = [_clip(folder, audio_dir, seg, audio) for seg, audio in pairs]
    return finish(folder, clips, classes)


def locate(
    folder: Path, url: str | None, sha256: str | None, cache_dir: str | Path | None
) -> tuple[Path, str, Path | None]:
    """`(folder with the three CSVs, train list name, audio folder or None)` for `url` (see the module doc)."""
    local = local_dir(url)
    if local is not None:
        return local, TRAIN_LIST, local / "audio"
    train_url = as_url(url) if url else CORPORA["audioset"][0]
    train_list = Path(urllib.parse.urlparse(train_url).path).name
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in (train_list, EVAL_LIST, CLASS_LIST):
        src = train_url if name == train_list else urllib.parse.urljoin(train_url, name)
        shutil.copyfile(fetch_file("audioset", folder, src, sha256 if name == train_list else None), raw / name)
    if train_url.startswith("file://"):
        csv_dir = Path(urllib.request.url2pathname(urllib.parse.urlparse(train_url).path)).parent
        return raw, train_list, csv_dir / "audio"
    return raw, train_list, Path(cache_dir) / "audioset" / "audio" if cache_dir else None


def class_name(display_name: str) -> str:
    """A display name without commas or spaces, spelled as FSD50K does ("Male speech, man speaking" ->
    "Male_speech_and_man_speaking")."""
    return display_name.strip().replace(", ", "_and_").replace(",", "_").replace(" ", "_")


def read_classes(path: Path) -> tuple[list[str], dict[str, str]]:
    """`(class names in index order, mid -> class name)` from class_labels_indices.csv."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if list(reader.fieldnames or []) != CLASS_HEADER:
            raise DownloadError(
                f"{path}:1: expected the header {','.join(CLASS_HEADER)}, got {reader.fieldnames}; check it is "
                "AudioSet's class_labels_indices.csv"
            )
        by_mid = {row["mid"].strip(): class_name(row["display_name"]) for row in reader}
    names = list(by_mid.values())
    if not names or len(set(names)) != len(names):
        raise DownloadError(f"{path}: class names must be present and unique; check it is class_labels_indices.csv")
    return names, by_mid


def read_segments(path: Path, split: str, by_mid: dict[str, str]) -> list[Segment]:
    """The rows of a segment list; train rows in the held-out hash bucket become `valid`."""
    order = {name: i for i, name in enumerate(by_mid.values())}
    segments = []
    with open(path, newline="") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip() or line.startswith("#"):
                continue
            cells = next(csv.reader([line], skipinitialspace=True))
            if len(cells) != 4:
                raise DownloadError(
                    f'{path}:{lineno}: expected YTID, start_seconds, end_seconds, "labels", got {line.strip()!r}; '
                    "fix or delete the line"
                )
            ytid, start, end, mids = (c.strip() for c in cells)
            try:
                start_s, end_s = float(start), float(end)
            except ValueError as err:
                raise DownloadError(f"{path}:{lineno}: start/end must be numbers, got {start!r}, {end!r}") from err
            labels = [m.strip() for m in mids.split(",") if m.strip()]
            for mid in labels:
                if mid not in by_mid:
                    raise DownloadError(
                        f"{path}:{lineno}: unknown label {mid!r} (not in {CLASS_LIST}); fix the row or use the "
                        f"{CLASS_LIST} of the same release"
                    )
            tags = sorted({by_mid[m] for m in labels}, key=order.__getitem__)
            held_out = split == "train" and stable_bucket(ytid, VALID_BUCKETS) == 0
            segments.append(Segment(ytid, start_s, end_s, "valid" if held_out else split, tuple(tags)))
    return segments


def _clip(folder: Path, audio_dir: Path | None, seg: Segment, audio: Path) -> Clip:
    rel = audio.relative_to(audio_dir).as_posix() if audio_dir else audio.name
    return Clip(
        seg.clip_id, clip_path(folder, audio, rel), seg.split, seg.tags,
        source=f"AudioSet:{seg.ytid}:{seg.start_s:.3f}-{seg.end_s:.3f}", licence=LICENCE,
        sha256=file_sha256(audio), duration_s=max(seg.end_s - seg.start_s, 0.0),
    )  # fmt: skip
