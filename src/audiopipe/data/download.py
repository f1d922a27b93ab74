"""The `download` task: fetch or build one corpus into `dest/<source>/` as a data folder (see manifests).

Sources:
    realmix                  real recordings from pinned Debian packages, mixed into DESED-like soundscapes
                             (default, offline)
    synthetic                procedural soundscapes with the same outputs (tests, machines without apt)
    esc50, folder            ESC-50 / a user's folder with labels.tsv (`audiopipe.data.sources.corpora`)
    desed, fsd50k, audioset  public corpora converted from their release layouts (`data.sources.<source>`;
                             where each reads its files from: `data.sources.staging`)

A finished folder carries `.completed` holding the hash of the options that built it; a rerun with the
same options returns at once. HTTP helpers here resume partial downloads (Range), verify sha256 (or md5 where
only that is published) and extract archives without letting members escape the target folder.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import shutil
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audiopipe.storage import file_digest, file_sha256, write_text_atomic

log = logging.getLogger(__name__)

COMPLETED = ".completed"
SOURCES = ("realmix", "synthetic", "esc50", "desed", "fsd50k", "audioset", "folder")


class DownloadError(RuntimeError):
    """A download, checksum or extraction failed (the message says which file and what to do)."""


def options_hash(source: str, opts: dict[str, Any]) -> str:
    """Stable hash of the options that define a built corpus (the `.completed` content)."""
    return hashlib.sha256(json.dumps([source, opts], sort_keys=True, default=str).encode()).hexdigest()


def is_completed(folder: Path, digest: str) -> bool:
    marker = folder / COMPLETED
    return marker.is_file() and marker.read_text().strip() == digest


def download(source: str, dest: str | Path, **opts: Any) -> dict[str, float]:
    """Build `dest/<source>/` unless its `.completed` marker matches these options; returns metrics.

    `opts` are the source's keyword arguments (counts, seed, sample_rate, ... for realmix/synthetic;
    url/sha256 for the corpora; `cache_dir` for realmix's package cache and, for fsd50k/audioset fetched from a
    URL, the folder whose `<source>/` subfolder holds the audio the user downloaded).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown download source {source!r}; choose one of {SOURCES}")
    folder = Path(dest) / source
    cache_dir = opts.pop("cache_dir", None)
    digest = options_hash(source, opts)
    if is_completed(folder, digest):
        log.info("%s is complete (options unchanged); nothing to do", folder)
        return {"download/clips": float(_count_clips(folder)), "download/skipped": 1.0}
    if folder.exists():
        (folder / COMPLETED).unlink(missing_ok=True)
    builder = _builder(source)
    if source in ("realmix", "fsd50k", "audioset"):  # fsd50k/audioset: <cache_dir>/<source>/ may hold the audio
        opts = {**opts, "cache_dir": cache_dir}
    builder(folder, **opts)
    write_text_atomic(folder / COMPLETED, digest + "\n")
    return {"download/clips": float(_count_clips(folder)), "download/skipped": 0.0}


def _count_clips(folder: Path) -> int:
    manifest = folder / "manifest.jsonl"
    return sum(1 for line in manifest.read_text().splitlines() if line.strip()) if manifest.is_file() else 0


def _builder(source: str) -> Callable[..., Any]:
    if source == "synthetic":
        return _build_synthetic
    if source == "realmix":
        from audiopipe.data.sources.realmix import build_realmix

        return build_realmix
    module = source if source in ("desed", "fsd50k", "audioset") else "corpora"
    return getattr(importlib.import_module(f"audiopipe.data.sources.{module}"), f"build_{source}")


def _build_synthetic(folder: Path, **opts: Any) -> None:
    from audiopipe.data.synthetic import build_synthetic_source

    if folder.exists():
        shutil.rmtree(folder)
    build_synthetic_source(
        folder,
        counts=opts["counts"],
        duration_s=opts["duration_s"],
        sample_rate=opts["sample_rate"],
        seed=opts["seed"],
        max_events=opts.get("max_events", 3),
    )


def parse_checksum(pin: str) -> tuple[str, str]:
    """`(algorithm, hex digest)` of a pin: `<64 hex>` or `sha256:<64 hex>` (sha256), `md5:<32 hex>` (md5)."""
    algo, _, digest = pin.strip().rpartition(":")
    algo, digest = (algo.lower() or "sha256"), digest.lower()
    sizes = {"sha256": 64, "md5": 32}
    if algo not in sizes or len(digest) != sizes[algo] or any(c not in "0123456789abcdef" for c in digest):
        raise DownloadError(
            f"checksum {pin!r}: expected 64 hex digits (sha256) or 'md5:' and 32 hex digits; fix download.sha256"
        )
    return algo, digest


def fetch(
    url: str, target: Path, *, sha256: str | None = None, timeout_s: float = 60.0, chunk_bytes: int = 1 << 20
) -> Path:
    """Download `url` to `target`, resuming a `<target>.partial` file with an HTTP Range request.

    `sha256` is the expected checksum: 64 hex digits (sha256) or `md5:<32 hex>` for sources that publish md5
    only (Zenodo). The finished file is checked before it is renamed into place, and a `<target>.completed`
    marker (holding the file's sha256) is written; a later call with the marker present does nothing, unless
    a checksum is given that the file does not match, in which case it is fetched again.
    """
    pin = parse_checksum(sha256) if sha256 else None
    marker = target.with_name(target.name + COMPLETED)
    if target.is_file() and marker.is_file():
        if pin is None or file_digest(target, pin[0]) == pin[1]:
            return target
        log.warning("%s does not match the checksum %s; fetching it again", target, sha256)
        target.unlink()
        marker.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            if have and response.status != 206:  # server ignored the Range header: start over
                have = 0
            with open(partial, "ab" if have else "wb") as fh:
                while block := response.read(chunk_bytes):
                    fh.write(block)
    except OSError as err:
        raise DownloadError(
            f"{url}: download failed ({err}); {partial} keeps {partial.stat().st_size if partial.exists() else 0} "
            "bytes and a rerun resumes from there"
        ) from err
    if pin:
        actual = file_digest(partial, pin[0])
        if actual != pin[1]:
            partial.unlink()
            raise DownloadError(f"{url}: {pin[0]} {actual} != expected {pin[1]}; the partial file was deleted, rerun")
    os.replace(partial, target)
    write_text_atomic(marker, (pin[1] if pin and pin[0] == "sha256" else file_sha256(target)) + "\n")
    return target


def _safe_member(root: Path, name: str) -> Path:
    dest = (root / name).resolve()
    if not dest.is_relative_to(root.resolve()):
        raise DownloadError(f"archive member {name!r} would be written outside {root}; refusing to extract")
    return dest


_TAR_KINDS = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "FIFO"}


def _check_tar_member(archive: Path, target: Path, member: tarfile.TarInfo) -> None:
    """Refuse a member that escapes `target`, a link, or anything but a regular file or a directory."""
    _safe_member(target, member.name)
    if member.issym() or member.islnk():
        raise DownloadError(f"{archive}: member {member.name!r} is a link; refusing to extract")
    if not (member.isfile() or member.isdir()):
        kind = _TAR_KINDS.get(member.type, f"special file (tar type {member.type!r})")
        raise DownloadError(
            f"{archive}: member {member.name!r} is a {kind}, not a regular file; refusing to extract "
            "(check download.url points at the original archive)"
        )


def extract(archive: Path, target: Path) -> Path:
    """Extract a zip or tar archive into `target`, refusing members that escape it (zip-slip), links, devices and
    FIFOs; tar members go through the standard library's `data` filter (setuid/setgid/sticky and group/other write
    bits cleared, owners not restored)."""
    target.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _safe_member(target, info.filename)
            zf.extractall(target)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                _check_tar_member(archive, target, member)
            if not hasattr(tarfile, "data_filter"):  # Python < 3.10.12 / 3.11.4: the filter's effect by hand
                for member in members:
                    member.mode &= 0o755
                    member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
                tf.extractall(target, members=members)
                return target
            try:
                tf.extractall(target, members=members, filter="data")
            except tarfile.FilterError as exc:  # a second line of defence; the checks above should catch all
                raise DownloadError(f"{archive}: {str(exc)[:300]}; refusing to extract") from exc
    else:
        raise DownloadError(f"{archive}: not a zip or tar archive")
    return target
