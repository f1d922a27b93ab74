"""The `resample` and `pack_hdf5` tasks: a downloaded data folder -> mono wavs -> one `.h5` per split.

`resample_dataset(src_root, dst_root, ...)` mirrors `src_root` (e.g. `data/download`) into `dst_root`:
every audio file becomes a mono PCM16 wav at `sample_rate` under the same relative path (suffix `.wav`),
metadata files are copied, and `dst_root/rejects.tsv` lists each file that could not be used with its
reason. Work runs in `workers` processes, finished files are skipped on a rerun, and every write is atomic,
so a killed run resumes to byte-identical outputs.

`pack_dataset(src_root, out_dir, ...)` reads the (single) data folder under `src_root` and writes
`out_dir/<split>.h5` for each split present.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from audiopipe.audio.io import AudioDecodeError, audio_info, load_audio
from audiopipe.audio.resample import resample_file
from audiopipe.data.hdf5 import ClipWriter
from audiopipe.data.manifests import SPLITS, STRONG_SPLITS, Clip, read_metadata
from audiopipe.storage import atomic_write, write_text_atomic

log = logging.getLogger(__name__)

METADATA_SUFFIXES = (".tsv", ".csv", ".txt", ".json", ".jsonl", ".md", ".yaml")
REJECTS_FILE = "rejects.tsv"


class RejectLimitError(RuntimeError):
    """Too many inputs could not be decoded (`rejects.tsv` lists them)."""


def _is_temp(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".part")


def _scan(src_root: Path) -> tuple[list[Path], list[Path]]:
    """(audio files, metadata files) under `src_root`, relative, sorted; hidden files are skipped."""
    audio: list[Path] = []
    meta: list[Path] = []
    for path in sorted(src_root.rglob("*")):
        rel = path.relative_to(src_root)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts) or rel.name == REJECTS_FILE:
            continue
        (meta if path.suffix.lower() in METADATA_SUFFIXES else audio).append(rel)
    return audio, meta


def _convert(job: tuple[str, str, int]) -> tuple[str, float, str, str]:
    """Worker: (rel path, seconds, reject reason, detail); skips outputs that already exist at the right rate."""
    src, dst, sample_rate = job
    if os.path.exists(dst):
        try:
            info = audio_info(dst)
            if info.sample_rate == sample_rate and info.channels == 1:
                return src, info.duration_s, "", ""
        except (AudioDecodeError, RuntimeError):
            pass
    try:
        return src, resample_file(src, dst, sample_rate), "", ""
    except AudioDecodeError as err:
        return src, 0.0, err.reason, err.detail


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_write(dst) as tmp:
        shutil.copyfile(src, tmp)


def resample_dataset(
    src_root: str | Path,
    dst_root: str | Path,
    *,
    sample_rate: int,
    workers: int,
    max_reject_fraction: float,
    progress: bool = True,
) -> dict[str, float]:
    """Resample every audio file under `src_root` into `dst_root`; returns metrics (files, rejects, rates).

    Raises:
        RejectLimitError: more than `max_reject_fraction` of the files were rejected (after writing rejects.tsv).
    """
    src_root, dst_root = Path(src_root), Path(dst_root)
    if not src_root.is_dir():
        raise FileNotFoundError(f"{src_root}: input folder not found; run the download stage first")
    dst_root.mkdir(parents=True, exist_ok=True)
    for stale in dst_root.rglob(".*.part"):  # leftovers of a killed run
        stale.unlink()
    audio, meta = _scan(src_root)
    for rel in meta:
        _copy_atomic(src_root / rel, dst_root / rel)
    jobs = [(str(src_root / rel), str((dst_root / rel).with_suffix(".wav")), sample_rate) for rel in audio]
    for _, dst, _ in jobs:
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = []
    bar = tqdm(total=len(jobs), desc="resample", unit="file", disable=not progress)
    if workers <= 1:
        for job in jobs:
            results.append(_convert(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(_convert, jobs, chunksize=4):
                results.append(result)
                bar.update()
    bar.close()
    wall_s = time.perf_counter() - start
    rejects = [(str(Path(src).relative_to(src_root)), reason, detail) for src, _, reason, detail in results if reason]
    lines = ["path\treason\tdetail"] + ["\t".join(r).replace("\n", " ") for r in rejects]
    write_text_atomic(dst_root / REJECTS_FILE, "\n".join(lines) + "\n")
    audio_s = sum(r[1] for r in results)
    fraction = len(rejects) / max(len(jobs), 1)
    for path, reason, detail in rejects:
        log.warning("rejected %s: %s %s", path, reason, detail)
    if fraction > max_reject_fraction:
        raise RejectLimitError(
            f"{len(rejects)} of {len(jobs)} files rejected ({fraction:.1%} > max_reject_fraction "
            f"{max_reject_fraction:.1%}); see {dst_root / REJECTS_FILE}"
        )
    return {
        "resample/files": float(len(jobs)),
        "resample/rejects": float(len(rejects)),
        "resample/audio_s": audio_s,
        "resample/wall_s": wall_s,
        "resample/audio_s_per_wall_s": audio_s / max(wall_s, 1e-9),
    }


def find_data_folder(root: str | Path) -> Path:
    """The one folder under `root` (or `root` itself) that holds a manifest.jsonl."""
    root = Path(root)
    if (root / "manifest.jsonl").is_file():
        return root
    found = sorted(p.parent for p in root.glob("*/manifest.jsonl"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"{root}: expected exactly one data folder with manifest.jsonl, found {[str(p) for p in found]}; "
            "rerun download and resample"
        )
    return found[0]


def _clip_audio_path(folder: Path, clip: Clip) -> Path:
    path = folder / clip.path
    return path if path.is_file() else path.with_suffix(".wav")


def pack_dataset(
    src_root: str | Path,
    out_dir: str | Path,
    *,
    codec: str,
    mp3_bitrate_kbps: int,
    progress: bool = True,
) -> dict[str, float]:
    """Pack the data folder under `src_root` into `out_dir/<split>.h5`; clips listed as rejects are skipped."""
    folder = find_data_folder(src_root)
    class_names, clips = read_metadata(folder)
    index = {name: i for i, name in enumerate(class_names)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:  # temporary files of a killed run (ClipWriter writes `.<split>.h5.<random>.part`)
        for stale in out_dir.glob(f".{split}.h5.*.part"):
            stale.unlink(missing_ok=True)
    metrics: dict[str, float] = {}
    present = [p for p in (_clip_audio_path(folder, c) for c in clips) if p.is_file()]
    if not present:
        raise FileNotFoundError(f"{folder}: none of the {len(clips)} clips in manifest.jsonl has an audio file")
    sample_rate = audio_info(present[0]).sample_rate
    start = time.perf_counter()
    for split in SPLITS:
        members = [c for c in clips if c.split == split]
        if not members:
            continue
        missing = 0
        # tag-only corpora (ESC-50, FSD50K, AudioSet) have no events: their clips are clip-labelled ("weak")
        has_strong = split in STRONG_SPLITS and any(c.events for c in members)
        if split in STRONG_SPLITS and not has_strong:
            log.info("%s: no strong events in strong.tsv; packed with clip tags only (has_strong=False)", split)
        with ClipWriter(
            out_dir / f"{split}.h5",
            class_names=class_names,
            sample_rate=sample_rate,
            codec=codec,
            has_strong=has_strong,
            split=split,
            mp3_bitrate_kbps=mp3_bitrate_kbps,
        ) as writer:
            for clip in tqdm(members, desc=f"pack {split}", unit="clip", disable=not progress):
                path = _clip_audio_path(folder, clip)
                if not path.is_file():
                    missing += 1
                    continue
                audio, rate = load_audio(path, mono=True)
                if rate != sample_rate:
                    raise ValueError(f"{path}: sample rate {rate} != {sample_rate}; run the resample stage first")
                targets = np.array([name in clip.labels for name in class_names], np.float32)
                events = [(a, b, index[label]) for a, b, label in clip.events]
                writer.add(clip.clip_id, audio, targets=targets, events=events)
        if missing:
            log.warning("%s: %d clips have no audio (rejected by resample?) and were skipped", split, missing)
        metrics[f"pack_hdf5/{split}_clips"] = float(len(members) - missing)
    metrics["pack_hdf5/wall_s"] = time.perf_counter() - start
    return metrics
