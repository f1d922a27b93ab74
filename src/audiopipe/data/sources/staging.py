"""Getting a public corpus's files into a data folder: upstream files and pins, local roots, missing clips.

`download.url` means, for the corpora (`esc50`, `desed`, `fsd50k`, `audioset`):

    unset                      the corpus's upstream file in `CORPORA`, checked against its published pin
    http(s)/file URL or path   an archive (AudioSet: a CSV list) from a mirror or a test fixture: fetched to
                               `<dest>/.archives/`, checked against `download.sha256` when given, extracted
                               (copied) to `<folder>/raw/`
    a local directory          (path or file:// URL) an already-extracted corpus, read in place

Either way the clips used are hard-linked into `<folder>/audio/` (copied across file systems), so later stages
never touch the user's files, and `<folder>/raw/` is removed once the metadata files are written.

Checksums are `<64 hex>` (sha256) or `md5:<32 hex>` (Zenodo publishes md5 only); the default pin applies only
to the default URL.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from audiopipe.audio.io import AudioDecodeError, audio_info
from audiopipe.data.download import DownloadError, extract, fetch
from audiopipe.data.manifests import Clip, write_metadata
from audiopipe.storage import write_text_atomic

log = logging.getLogger(__name__)

# Upstream files and their published checksums (None: nothing published; see each comment).
CORPORA = {
    # GitHub's archive of a branch, not a release file: no published checksum, and its bytes may change.
    "esc50": ("https://github.com/karoldvl/ESC-50/archive/master.zip", None),
    # Zenodo record 4560759, the file DESED's own `desed.download.download_eval_public` fetches. No checksum
    # was found published outside Zenodo's page (not reachable from this offline machine), so none is pinned.
    "desed": ("https://zenodo.org/records/4560759/files/DESED_public_eval.tar.gz", None),
    # Zenodo record 4060432: the md5 Zenodo lists for this file, as pinned by soundata's FSD50K loader
    # (soundata/soundata, soundata/datasets/fsd50k.py) and other loaders (size 334,701 bytes).
    "fsd50k": (
        "https://zenodo.org/records/4060432/files/FSD50K.ground_truth.zip",
        "md5:ca27382c195e37d2269c4c866dd73485",
    ),
    # Google's AudioSet v1 CSV lists: no checksums are published.
    "audioset": ("https://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/balanced_train_segments.csv", None),
}
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".webm", ".aac")
MISSING_FILE = "missing_clips.tsv"


def fresh_folder(folder: Path) -> None:
    """Empty `folder` (a rerun of a corpus conversion starts from scratch; archives live outside it)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def local_dir(url: str | None) -> Path | None:
    """The directory `url` names (a path or a file:// URL), or None when it names a file or a remote URL."""
    if not url:
        return None
    if url.startswith("file://"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    elif "://" in url:
        return None
    else:
        path = Path(url).expanduser()
    return path if path.is_dir() else None


def as_url(url: str) -> str:
    """`url` itself, or the file:// URL of the local file it names (a missing file is an error)."""
    if "://" in url:
        return url
    path = Path(url).expanduser()
    if not path.is_file():
        raise DownloadError(
            f"{path}: no such file or directory; set download.url to an archive URL, an archive file or the "
            "folder that holds the extracted corpus"
        )
    return path.resolve().as_uri()


def fetch_file(source: str, folder: Path, url: str | None, checksum: str | None) -> Path:
    """Fetch `url` (default: the corpus's upstream file and pin) to `<folder>/../.archives/`; returns its path."""
    default_url, default_pin = CORPORA[source]
    if not url or url == default_url:
        url, checksum = default_url, checksum or default_pin
    url = as_url(url)
    name = Path(urllib.parse.urlparse(url).path).name or source
    tag = hashlib.sha1(url.encode()).hexdigest()[:8]  # a changed URL never reuses another URL's file
    return fetch(url, folder.parent / ".archives" / f"{source}-{tag}-{name}", sha256=checksum)


def fetch_and_extract(source: str, folder: Path, url: str | None, checksum: str | None) -> Path:
    """Fetch the corpus archive and extract it to `<folder>/raw/`; returns that folder."""
    archive = fetch_file(source, folder, url, checksum)
    raw = folder / "raw"
    if raw.exists():
        shutil.rmtree(raw)
    return extract(archive, raw)


def clip_path(folder: Path, src: Path, rel: str) -> str:
    """Hard-link (across file systems: copy) `src` to `folder/audio/rel`; returns that path relative to `folder`."""
    dst = folder / "audio" / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(src, dst)
    return f"audio/{rel}"


def finish(folder: Path, clips: list[Clip], class_names: Sequence[str]) -> list[Clip]:
    """Write the metadata files and drop `folder/raw/` (the clips used are linked under `folder/audio/`)."""
    write_metadata(folder, clips, class_names)
    shutil.rmtree(folder / "raw", ignore_errors=True)
    return clips


def audio_index(root: Path) -> dict[str, Path]:
    """Audio files under `root` (recursively) by file stem; the first in sorted order wins a tie."""
    index: dict[str, Path] = {}
    for path in sorted(root.rglob("*")) if root.is_dir() else []:
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
            index.setdefault(path.stem, path)
    return index


def duration_or_zero(path: Path) -> float:
    """The file's duration in seconds from its header; 0.0 (unknown) when it cannot be read (resample rejects it)."""
    try:
        return audio_info(path).duration_s
    except (AudioDecodeError, OSError, RuntimeError):
        return 0.0


def stable_bucket(name: str, buckets: int) -> int:
    """A bucket in [0, buckets) that depends on `name` only (splits never move as more clips arrive)."""
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % buckets


def report_missing(source: str, folder: Path, missing: list[tuple[str, str]], found: int, how_to_fix: str) -> None:
    """Write `missing_clips.tsv` and warn about clips listed without audio; raise when no clip has audio.

    `missing` holds `(split, name)` pairs.
    """
    if not found:
        listed = f" (first listed: {', '.join(n for _, n in missing[:3])})" if missing else ""
        raise DownloadError(f"{source}: none of the {len(missing)} listed clips has audio{listed}; {how_to_fix}")
    if not missing:
        return
    rows = "".join(f"{split}\t{name}\n" for split, name in missing)
    write_text_atomic(folder / MISSING_FILE, "split\tfilename\n" + rows)
    first = ", ".join(name for _, name in missing[:5])
    log.warning(
        "%s: %d of %d listed clips have no audio file and were skipped (first: %s); all are listed in %s",
        source, len(missing), len(missing) + found, first, folder / MISSING_FILE,
    )  # fmt: skip
