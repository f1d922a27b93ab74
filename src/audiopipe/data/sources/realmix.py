"""`realmix`: a DESED-like demo set of real recordings from pinned Debian packages, built offline.

Recipe (../shared/spec/demo_data.md §6): `apt-get download` the pinned packages into `cache_dir` (no
install), read the recordings out of the .deb/.rcc/.pk3/.cat containers, label them with the committed table
`audiopipe/data/realmix_labels.tsv`, segment foregrounds by energy, split by source recording, and mix
10-s soundscapes over real ambiences with onset/offset ground truth. Deterministic in `seed`; the decoded
recording pool is cached in `cache_dir` under a hash of the packages, the table and the sample rate.

Outputs (a data folder, see `audiopipe.data.manifests`): train/valid/test soundscapes (strong + weak
labels), `weak` isolated events from train-side recordings, `unlabelled` train-side soundscapes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import logging
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile as sf

from audiopipe.audio.io import save_audio
from audiopipe.audio.resample import resample
from audiopipe.data.download import DownloadError
from audiopipe.data.manifests import REALMIX_CLASSES, SPLITS, Clip, write_metadata
from audiopipe.data.mixer import Foreground, choose_onsets, crop_or_loop, mix_soundscape, normalise_rms, segment_events
from audiopipe.data.sources.containers import read_cat, read_deb, read_pk3, read_rcc
from audiopipe.storage import atomic_write, file_sha256

log = logging.getLogger(__name__)

PACKAGES = {
    "gcompris-qt-data": "3.1-2",
    "ufoai-sound": "2.5-2",
    "openttd-opensfx": "1.0.3-2",
    "sound-theme-freedesktop": "0.8-2",
    "ktuberling-data": "4:22.12.3-1",
}
LICENCES = {
    "gcompris-qt-data": "GPL-3+ (LR* files: Free Art License 1.2)",
    "ufoai-sound": "GPL-2+ (some CC-BY-3.0/CC-BY-SA-3.0, see debian/copyright)",
    "openttd-opensfx": "see title",
    "sound-theme-freedesktop": "CC-BY-SA-3.0 / CC-BY-3.0 / GPL-2",
    "ktuberling-data": "GPL-2+",
}
BACKGROUND = "background"
SOUNDSCAPE_SPLITS = ("train", "valid", "test")
MAX_SPEECH_RECORDINGS = 160  # keeps decoding quick; ktuberling has 1,702 words


@dataclass(frozen=True)
class Recording:
    """A decoded, labelled source recording. `group` is the split unit (ktuberling: one language = one speaker)."""

    key: str
    label: str
    group: str
    licence: str
    audio: np.ndarray


def _table_rows() -> list[list[str]]:
    text = resources.files("audiopipe.data").joinpath("realmix_labels.tsv").read_text()
    return [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")][1:]


def load_label_table() -> list[tuple[str, str, str]]:
    """Rows `(source_pkg, inner_path, class)` of the committed table (comment lines skipped)."""
    return [(r[0], r[1], r[2]) for r in _table_rows()]


def load_recording_groups() -> dict[tuple[str, str], str]:
    """`(source_pkg, inner_path) -> group` for the rows whose 4th column names one original recording."""
    return {(r[0], r[1]): r[3] for r in _table_rows() if len(r) > 3 and r[3]}


def fetch_packages(cache_dir: Path) -> dict[str, Path]:
    """The pinned .debs in `cache_dir`, fetched with `apt-get download` when missing."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = {pkg: sorted(cache_dir.glob(f"{pkg}_*.deb")) for pkg in PACKAGES}
    missing = [pkg for pkg, paths in found.items() if not paths]
    if missing:
        if shutil.which("apt-get") is None:
            raise DownloadError(
                "realmix needs apt-get (Debian/Ubuntu) to fetch its pinned packages, and apt-get is not installed. "
                f"Put the .debs {missing} into {cache_dir} by hand, or set `download.source: synthetic` in params.yaml "
                "to build the procedural demo set instead."
            )
        specs = [f"{pkg}={PACKAGES[pkg]}" for pkg in missing]
        proc = subprocess.run(
            ["apt-get", "download", *specs], cwd=cache_dir, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise DownloadError(
                f"`apt-get download {' '.join(specs)}` failed: {proc.stderr.strip()[-400:]}. Run `apt-get update` "
                "(needs root, once) or set `download.source: synthetic` in params.yaml."
            )
        found = {pkg: sorted(cache_dir.glob(f"{pkg}_*.deb")) for pkg in PACKAGES}
    return {pkg: paths[-1] for pkg, paths in found.items() if paths}


def _members(pkg: str, deb: bytes) -> dict[str, tuple[bytes, str]]:
    """Every file of a package as `inner_path -> (bytes, licence)`, containers opened."""
    out: dict[str, tuple[bytes, str]] = {}
    for path, data in read_deb(deb):
        if path.endswith(".rcc"):
            out.update({f"{path}:{name}": (b, LICENCES[pkg]) for name, b in read_rcc(data)})
        elif path.endswith(".pk3"):
            out.update({f"{path}:{name}": (b, LICENCES[pkg]) for name, b in read_pk3(data)})
        elif path.endswith(".cat"):
            for index, title, b in read_cat(data):
                licence = title.split("License:")[-1].strip().rstrip(".") if "License:" in title else LICENCES[pkg]
                out[f"{path}:{index}"] = (b, licence)
        else:
            out[path] = (data, LICENCES[pkg])
    return out


def _decode(data: bytes, sample_rate: int) -> np.ndarray:
    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return resample(audio.mean(axis=1), int(rate), sample_rate)


def _group(pkg: str, inner: str, groups: dict[tuple[str, str], str]) -> str:
    """Split unit of a recording: the table's group, a ktuberling language (one speaker), else the file."""
    if (pkg, inner) in groups:
        return groups[(pkg, inner)]
    return f"{pkg}:{inner.rsplit('/', 1)[0]}" if pkg == "ktuberling-data" else f"{pkg}:{inner}"


def extract_recordings(debs: dict[str, Path], sample_rate: int) -> list[Recording]:
    """Decode every recording the label table names (a trailing `*` matches a folder)."""
    table, groups = load_label_table(), load_recording_groups()
    recordings = []
    for pkg in sorted(debs):
        rows = [(inner, label) for p, inner, label in table if p == pkg]
        members = _members(pkg, debs[pkg].read_bytes())
        for inner, label in rows:
            names = sorted(fnmatch.filter(members, inner)) if inner.endswith("*") else [inner]
            if inner.endswith("*") and label == "Speech":
                names = [n for n in names if n.endswith((".ogg", ".wav"))]
            for name in names:
                if name not in members or not members[name][0]:
                    log.warning("realmix: %s %s is not in the package; skipped", pkg, name)
                    continue
                try:
                    audio = _decode(members[name][0], sample_rate)
                except (sf.LibsndfileError, RuntimeError, ValueError) as err:
                    log.warning("realmix: cannot decode %s %s (%s); skipped", pkg, name, err)
                    continue
                recordings.append(Recording(f"{pkg}:{name}", label, _group(pkg, name, groups), members[name][1], audio))
    speech = [r for r in recordings if r.label == "Speech"]
    if len(speech) > MAX_SPEECH_RECORDINGS:
        keep = {
            r.key
            for r in sorted(speech, key=lambda r: hashlib.sha1(r.key.encode()).hexdigest())[:MAX_SPEECH_RECORDINGS]
        }
        recordings = [r for r in recordings if r.label != "Speech" or r.key in keep]
    return recordings


def assign_splits(recordings: list[Recording], seed: int) -> dict[str, str]:
    """group -> train/valid/test: per class, groups shuffled by seed and dealt ~60/20/20.

    valid and test get `round(0.2 n)` groups each, at least 1 when a class has ≥ 3 groups and at least 2 when it
    has ≥ 8, so that no class is judged on a single held-out recording where it has enough of them.
    """
    by_label: dict[str, list[str]] = defaultdict(list)
    for r in recordings:
        if r.group not in by_label[r.label]:
            by_label[r.label].append(r.group)
    out: dict[str, str] = {}
    for label in sorted(by_label):
        groups = sorted(g for g in by_label[label] if g not in out)
        np.random.default_rng([seed, len(label)] + list(label.encode())).shuffle(groups)
        n = len(groups)
        floor = 2 if n >= 8 else 1
        n_valid = max(floor, round(0.2 * n)) if n >= 3 else 0
        n_test = max(floor, round(0.2 * n)) if n >= 3 else (1 if n == 2 else 0)
        for i, group in enumerate(groups):
            out[group] = "valid" if i < n_valid else "test" if i < n_valid + n_test else "train"
    return out


def _segments(rec: Recording, sample_rate: int) -> list[Foreground]:
    return [Foreground(rec.audio[a:b], rec.label, rec.key) for a, b in segment_events(rec.audio, sample_rate)]


def _pool(
    recordings: list[Recording], splits: dict[str, str], sample_rate: int
) -> dict[str, dict[str, list[Foreground]]]:
    """split -> class -> event segments (Speech: 1-3 words of one language concatenated)."""
    pool: dict[str, dict[str, list[Foreground]]] = {s: defaultdict(list) for s in SOUNDSCAPE_SPLITS}
    for rec in recordings:
        if rec.label != BACKGROUND:
            pool[splits[rec.group]][rec.label].extend(_segments(rec, sample_rate))
    return pool


def _pick_events(
    pool: dict[str, list[Foreground]], rng: np.random.Generator, n: int, max_samples: int
) -> list[Foreground]:
    """`n` events, class-balanced (uniform over the classes present), at most `max_samples` long."""
    classes = sorted(c for c, segs in pool.items() if segs)
    picked = []
    for label in (classes[int(i)] for i in rng.integers(0, len(classes), n)):
        segs = pool[label]
        fg = segs[int(rng.integers(len(segs)))]
        if label == "Speech":  # 1-3 words of the same language (same group)
            same = [s for s in segs if s.source_id.rsplit("/", 1)[0] == fg.source_id.rsplit("/", 1)[0]]
            words = [fg] + [same[int(rng.integers(len(same)))] for _ in range(int(rng.integers(0, 3)))]
            fg = Foreground(np.concatenate([w.audio for w in words]), label, fg.source_id)
        picked.append(Foreground(fg.audio[:max_samples], label, fg.source_id))
    return picked


def build_realmix(
    folder: Path,
    *,
    counts: dict[str, int],
    duration_s: float,
    sample_rate: int,
    seed: int,
    max_events: int,
    max_polyphony: int,
    snr_db: tuple[float, float],
    cache_dir: Path | None,
) -> list[Clip]:
    """Build the realmix data folder in `folder` (see the module docstring)."""
    cache_dir = Path(cache_dir or folder.parent / ".cache") / "realmix"
    recordings = _cached_recordings(cache_dir, sample_rate)
    splits = assign_splits(recordings, seed)
    pool = _pool(recordings, splits, sample_rate)
    backgrounds = {
        s: [r for r in recordings if r.label == BACKGROUND and splits[r.group] == s] for s in SOUNDSCAPE_SPLITS
    }
    for split in SOUNDSCAPE_SPLITS:
        if not backgrounds[split] or not any(pool[split].values()):
            raise DownloadError(
                f"realmix: split {split!r} has no backgrounds or no events; the packages look incomplete"
            )
    if folder.exists():
        shutil.rmtree(folder)
    clips = []
    for split in SPLITS:
        side = split if split in SOUNDSCAPE_SPLITS else "train"  # weak/unlabelled use train-side recordings only
        for k in range(counts.get(split, 0)):
            rng = np.random.default_rng([seed, SPLITS.index(split), k])
            clip_id = f"{split}_{k:05d}"
            events: list[tuple[float, float, str]]  # (onset_s, offset_s, label)
            if split == "weak":
                fg = _pick_events(pool[side], rng, 1, int(4 * sample_rate))[0]
                audio, events, sources = normalise_rms(fg.audio, -20.0), [], [fg.source_id]
                labels: tuple[str, ...] = (fg.label,)
            else:
                bg_rec = backgrounds[side][int(rng.integers(len(backgrounds[side])))]
                n = int(duration_s * sample_rate)
                bg = normalise_rms(crop_or_loop(bg_rec.audio, n, rng), float(rng.uniform(-35, -25)))
                fgs = _pick_events(pool[side], rng, int(rng.integers(1, max_events + 1)), min(n, int(4 * sample_rate)))
                onsets = choose_onsets([f.audio.shape[0] / sample_rate for f in fgs], duration_s, rng, max_polyphony)
                placed = [(f, on, float(rng.uniform(*snr_db))) for f, on in zip(fgs, onsets) if on is not None]
                audio, events = mix_soundscape(bg, placed, sample_rate)
                sources = [bg_rec.key] + [f.source_id for f, _, _ in placed]
                labels = tuple(c for c in REALMIX_CLASSES if any(e[2] == c for e in events))
            if split == "unlabelled":
                labels, events = (), []
            path = f"audio/{split}/{clip_id}.wav"
            save_audio(folder / path, audio, sample_rate)
            licences = sorted({r.licence for r in recordings if r.key in set(sources)})
            duration = round(audio.shape[0] / sample_rate, 4)
            clips.append(Clip(clip_id, path, split, labels, tuple(events), duration_s=duration,
                              source="; ".join(sources), licence="; ".join(licences),
                              sha256=file_sha256(folder / path)))
    write_metadata(folder, clips, REALMIX_CLASSES)
    return clips


def _cached_recordings(cache_dir: Path, sample_rate: int) -> list[Recording]:
    """Decoded recordings, cached as .npz keyed by (deb checksums, label table, sample rate)."""
    debs = fetch_packages(cache_dir)
    table = resources.files("audiopipe.data").joinpath("realmix_labels.tsv").read_bytes()
    key_src = json.dumps([sorted((p, file_sha256(d)) for p, d in debs.items()), sample_rate, MAX_SPEECH_RECORDINGS])
    key = hashlib.sha256(key_src.encode() + table).hexdigest()[:16]
    cached = cache_dir / f"pool-{key}.npz"
    if cached.is_file():
        with np.load(cached, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            return [Recording(m[0], m[1], m[2], m[3], npz[f"a{i}"]) for i, m in enumerate(meta)]
    recordings = extract_recordings(debs, sample_rate)
    meta = json.dumps([[r.key, r.label, r.group, r.licence] for r in recordings])
    arrays = {f"a{i}": r.audio for i, r in enumerate(recordings)}
    with atomic_write(cached) as tmp, open(tmp, "wb") as handle:  # a handle: np.savez would append .npz to a name
        np.savez(handle, meta=np.array(meta), **arrays)  # type: ignore[arg-type]  # numpy's stub matches **kwds to allow_pickle
    return recordings
