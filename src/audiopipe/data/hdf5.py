"""Packed clip files: the HDF5 schema (constants), `ClipWriter` and `ClipReader`, side by side.

One file per split. Layout (N clips, C classes, E strong events, S total samples):

    attrs   format="audiopipe-clips", format_version, class_names (JSON list), sample_rate, codec,
            has_strong, split, content_hash (sha256 of ids, audio, targets and events)
    clip_ids        (N,)   utf-8 strings, unique
    num_samples     (N,)   int64   length of each clip in samples
    audio_offsets   (N+1,) int64   pcm16: clip i is audio_pcm16[offsets[i]:offsets[i+1]]
    audio_pcm16     (S,)   int16   (codec "pcm16")
    audio_mp3       (N,)   vlen uint8 mp3 bytes (codec "mp3"; `data/mp3.py` decodes them in-process with PyAV)
    targets         (N, C) uint8   multi-hot clip tags (all zeros for unlabelled clips)
    event_offsets   (N+1,) int64   events of clip i are rows event_offsets[i]:event_offsets[i+1]
    event_onset_s, event_offset_s (E,) float64; event_class (E,) int32

Writers write to a temporary file and rename it on success, so a killed writer leaves no partial `.h5`.
Readers open the file lazily, once per process (DataLoader worker), and raise `ClipFileError` naming the
file when it is truncated, foreign or incomplete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from audiopipe.data.failed_writes import discard, write_error
from audiopipe.data.mp3 import decode_mp3, encode_mp3
from audiopipe.storage import atomic_target

FORMAT = "audiopipe-clips"
FORMAT_VERSION = 1
CODECS = ("pcm16", "mp3")

ATTR_FORMAT = "format"
ATTR_VERSION = "format_version"
ATTR_CLASS_NAMES = "class_names"
ATTR_SAMPLE_RATE = "sample_rate"
ATTR_CODEC = "codec"
ATTR_HAS_STRONG = "has_strong"
ATTR_SPLIT = "split"
ATTR_CONTENT_HASH = "content_hash"

DS_CLIP_IDS = "clip_ids"
DS_NUM_SAMPLES = "num_samples"
DS_AUDIO_OFFSETS = "audio_offsets"
DS_AUDIO_PCM16 = "audio_pcm16"
DS_AUDIO_MP3 = "audio_mp3"
DS_TARGETS = "targets"
DS_EVENT_OFFSETS = "event_offsets"
DS_EVENT_ONSET = "event_onset_s"
DS_EVENT_OFFSET = "event_offset_s"
DS_EVENT_CLASS = "event_class"

Event = tuple[float, float, int]

# What to do about a clip file that cannot be used: it is an output of the pack_hdf5 stage.
_REPACK = "delete it and rerun `dvc repro pack_hdf5`"


class ClipFileError(RuntimeError):
    """A packed clip file is missing, truncated, foreign or inconsistent (the message names the file)."""


def _clip_digest_input(clip_id: str, pcm: np.ndarray, targets: np.ndarray, events: list[Event]) -> bytes:
    """What `content_hash` covers for one clip: id, PCM16 samples, multi-hot targets (uint8) and events."""
    return clip_id.encode() + b"\0" + pcm.tobytes() + targets.tobytes() + json.dumps(events).encode()


def _header_digest(class_names: Sequence[str], sample_rate: int, codec: str, has_strong: bool, clips: bytes) -> str:
    header = json.dumps([list(class_names), int(sample_rate), codec, bool(has_strong)]).encode()
    return hashlib.sha256(header + clips).hexdigest()


def verify_content_hash(path: str | Path, *, chunk_clips: int = 256) -> str:
    """Recompute a pcm16 pack's `content_hash` from its datasets and compare it with the stored one; returns it.

    Reads the whole file once (~3-7 s per GB here, README "Reliability"). mp3 packs hash the PCM before
    encoding, which the file cannot give back: they raise too (`ClipReader(..., verify=True)` skips them).

    Raises:
        ClipFileError: the hash differs (the file changed after packing), or an index or dataset is unreadable or
            inconsistent; the message names the file.
    """
    path, reader = Path(path), ClipReader(path)
    if reader.codec != "pcm16":
        raise ClipFileError(f"{path}: codec {reader.codec!r}: content_hash covers the PCM before mp3 encoding and "
                            "cannot be verified from the file; repack with codec pcm16 to verify it")
    offsets, n, clips = reader._audio_offsets, len(reader), hashlib.sha256()
    try:
        with h5py.File(path, "r") as f:
            audio, targets = f[DS_AUDIO_PCM16], f[DS_TARGETS][()]
            sizes = np.diff(offsets)
            if offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != audio.shape[0] or \
                    np.any(sizes != reader._num_samples) or reader._event_offsets.shape != (n + 1,):
                raise ValueError("the audio or event index does not match the datasets")
            for lo in range(0, n, chunk_clips):
                hi = min(n, lo + chunk_clips)
                block = audio[offsets[lo] : offsets[hi]]
                for i in range(lo, hi):
                    pcm = block[offsets[i] - offsets[lo] : offsets[i + 1] - offsets[lo]]
                    clips.update(_clip_digest_input(reader.clip_ids[i], pcm, targets[i], reader.events(i)))
    except (OSError, KeyError, ValueError, IndexError) as err:
        raise ClipFileError(f"{path}: unreadable while verifying content_hash ({err}); {_REPACK}") from err
    actual = _header_digest(reader.class_names, reader.sample_rate, reader.codec, reader.has_strong, clips.digest())
    if actual != reader.content_hash:
        raise ClipFileError(
            f"{path}: content_hash mismatch (stored {reader.content_hash[:12]}..., recomputed {actual[:12]}...): the "
            f"file changed after packing (disk corruption, a partial copy or an edit); {_REPACK}"
        )
    return actual


def _to_pcm16(waveform: np.ndarray) -> np.ndarray:
    return np.round(np.clip(waveform, -1.0, 1.0) * 32767.0).astype(np.int16)


class ClipWriter:
    """Write one split's clips to `path` (atomically, on `close()` / leaving the `with` block).

    Example:
        >>> with ClipWriter(path, class_names=["Dog", "Cat"], sample_rate=16000) as w:  # doctest: +SKIP
        ...     w.add("clip1", audio, targets=[1, 0], events=[(0.5, 1.2, 0)])
    """

    def __init__(
        self,
        path: str | Path,
        *,
        class_names: Sequence[str],
        sample_rate: int,
        codec: str = "pcm16",
        has_strong: bool = False,
        split: str = "",
        mp3_bitrate_kbps: int = 128,
    ) -> None:
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}; choose one of {CODECS}")
        self.path = Path(path)
        self.class_names = list(class_names)
        self.sample_rate = int(sample_rate)
        self.codec = codec
        self.has_strong = has_strong
        self.split = split
        self.mp3_bitrate_kbps = mp3_bitrate_kbps
        self._ids: list[str] = []
        self._seen: set[str] = set()
        self._num_samples: list[int] = []
        self._targets: list[np.ndarray] = []
        self._events: list[list[Event]] = []
        self._hash = hashlib.sha256()
        self._tmp = atomic_target(self.path)
        self._file = h5py.File(self._tmp, "w")
        if codec == "pcm16":
            self._audio = self._file.create_dataset(
                DS_AUDIO_PCM16, (0,), maxshape=(None,), dtype=np.int16, chunks=(1 << 16,)
            )
        else:
            self._audio = self._file.create_dataset(
                DS_AUDIO_MP3, (0,), maxshape=(None,), dtype=h5py.vlen_dtype(np.uint8)
            )
        self._total = 0

    def add(
        self,
        clip_id: str,
        audio: np.ndarray,
        *,
        targets: Sequence[float] | np.ndarray | None = None,
        events: Sequence[Event] = (),
    ) -> None:
        """Append one clip: mono float audio `(T,)`, multi-hot `targets` `(C,)`, events `(onset_s, offset_s, class)`."""
        if clip_id in self._seen:
            raise ValueError(f"{self.path}: duplicate clip id {clip_id!r}; clip ids must be unique within a split")
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"{clip_id}: audio must be mono (T,), got shape {audio.shape}")
        n_classes = len(self.class_names)
        tgt = np.zeros(n_classes, np.uint8) if targets is None else np.asarray(targets, dtype=np.uint8)
        if tgt.shape != (n_classes,):
            raise ValueError(f"{clip_id}: targets must have shape ({n_classes},), got {tgt.shape}")
        for onset, offset, cls in events:
            if not 0 <= cls < n_classes or not onset <= offset:
                raise ValueError(f"{clip_id}: invalid event ({onset}, {offset}, {cls})")
        pcm = _to_pcm16(audio)
        blob = None
        if self.codec == "mp3":
            mp3 = encode_mp3(pcm.astype(np.float32) / 32767.0, self.sample_rate, self.mp3_bitrate_kbps)
            blob = np.frombuffer(mp3, np.uint8)
        try:
            if blob is None:
                self._audio.resize((self._total + pcm.shape[0],))
                self._audio[self._total :] = pcm
            else:
                self._audio.resize((len(self._ids) + 1,))
                self._audio[len(self._ids)] = blob
        except (OSError, RuntimeError) as err:  # a chunk evicted from the cache could not be written
            self.abort()
            raise write_error(self._tmp, err, "rerun `dvc repro pack_hdf5`") from err
        self._total += pcm.shape[0]
        self._ids.append(clip_id)
        self._seen.add(clip_id)
        self._num_samples.append(int(pcm.shape[0]))
        self._targets.append(tgt)
        evs = [(float(a), float(b), int(c)) for a, b, c in events]
        self._events.append(evs)
        self._hash.update(_clip_digest_input(clip_id, pcm, tgt, evs))

    def content_hash(self) -> str:
        """sha256 over the header (classes, rate, codec) and every clip's id, PCM16 audio, targets and events."""
        return _header_digest(self.class_names, self.sample_rate, self.codec, self.has_strong, self._hash.digest())

    def close(self) -> Path:
        """Write the index datasets and attributes, then rename the temporary file into place.

        If that fails (e.g. the disk fills up), the temporary file is dropped and an `OSError` naming it is
        raised (h5py reports failed writes as `RuntimeError` too); nothing at `path` is touched.
        """
        try:
            return self._finish()
        except (OSError, RuntimeError) as err:
            self.abort()
            raise write_error(self._tmp, err, "rerun `dvc repro pack_hdf5`") from err
        except BaseException:
            self.abort()
            raise

    def _finish(self) -> Path:
        f = self._file
        n = len(self._ids)
        f.create_dataset(DS_CLIP_IDS, data=np.array(self._ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
        f.create_dataset(DS_NUM_SAMPLES, data=np.array(self._num_samples, np.int64))
        f.create_dataset(DS_AUDIO_OFFSETS, data=np.concatenate([[0], np.cumsum(self._num_samples)]).astype(np.int64))
        targets = np.stack(self._targets) if n else np.zeros((0, len(self.class_names)), np.uint8)
        f.create_dataset(DS_TARGETS, data=targets, dtype=np.uint8)
        counts = [len(e) for e in self._events]
        f.create_dataset(DS_EVENT_OFFSETS, data=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        flat = [e for evs in self._events for e in evs]
        f.create_dataset(DS_EVENT_ONSET, data=np.array([e[0] for e in flat], np.float64))
        f.create_dataset(DS_EVENT_OFFSET, data=np.array([e[1] for e in flat], np.float64))
        f.create_dataset(DS_EVENT_CLASS, data=np.array([e[2] for e in flat], np.int32))
        f.attrs.update(
            {
                ATTR_FORMAT: FORMAT,
                ATTR_VERSION: FORMAT_VERSION,
                ATTR_CLASS_NAMES: json.dumps(self.class_names),
                ATTR_SAMPLE_RATE: self.sample_rate,
                ATTR_CODEC: self.codec,
                ATTR_HAS_STRONG: bool(self.has_strong),
                ATTR_SPLIT: self.split,
                ATTR_CONTENT_HASH: self.content_hash(),
            }
        )
        f.flush()  # a failed write must surface here, not inside close() (see `discard`)
        f.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (nothing at `path` is touched)."""
        try:
            discard(self._file)
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ClipWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ClipReader:
    """Random access to one packed split. Metadata is read on construction (validating the file);
    the data handle opens lazily once per process, so a reader can be handed to DataLoader workers.
    """

    def __init__(self, path: str | Path, *, verify: bool = False) -> None:
        """`verify=True` also recomputes the stored `content_hash` (`verify_content_hash`; pcm16 packs only)."""
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid = -1
        with self._open() as f:
            attrs = dict(f.attrs)
            self.class_names: list[str] = json.loads(attrs[ATTR_CLASS_NAMES])
            self.sample_rate = int(attrs[ATTR_SAMPLE_RATE])
            self.codec = str(attrs[ATTR_CODEC])
            self.has_strong = bool(attrs[ATTR_HAS_STRONG])
            self.split = str(attrs.get(ATTR_SPLIT, ""))
            self.content_hash = str(attrs[ATTR_CONTENT_HASH])
            try:
                self.clip_ids: list[str] = [s.decode() if isinstance(s, bytes) else s for s in f[DS_CLIP_IDS][()]]
                self._num_samples = f[DS_NUM_SAMPLES][()]
                self._audio_offsets = f[DS_AUDIO_OFFSETS][()]
                self._targets = f[DS_TARGETS][()].astype(np.float32)
                self._event_offsets = f[DS_EVENT_OFFSETS][()]
                self._events = (f[DS_EVENT_ONSET][()], f[DS_EVENT_OFFSET][()], f[DS_EVENT_CLASS][()])
            except (KeyError, OSError) as err:
                raise ClipFileError(f"{self.path}: truncated or inconsistent clip file ({err}); {_REPACK}") from err
        if self._targets.shape != (len(self.clip_ids), len(self.class_names)):
            raise ClipFileError(
                f"{self.path}: targets shape {self._targets.shape} does not match the clip/class counts; {_REPACK}"
            )
        if verify and self.codec == "pcm16":
            verify_content_hash(self.path)

    def _open(self) -> h5py.File:
        if not self.path.is_file():
            raise ClipFileError(f"{self.path}: clip file not found; run the pack_hdf5 stage first")
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise ClipFileError(
                f"{self.path}: not a readable HDF5 file, truncated or corrupt (a killed copy or a full disk?): {err}; "
                f"{_REPACK}"
            ) from err
        try:
            fmt, version = f.attrs.get(ATTR_FORMAT), f.attrs.get(ATTR_VERSION, -1)
        except (OSError, KeyError) as err:
            f.close()
            raise ClipFileError(f"{self.path}: cannot read the file's attributes ({err}); {_REPACK}") from err
        if fmt != FORMAT:
            entries = sorted(f.keys())[:8]
            f.close()
            raise ClipFileError(
                f"{self.path}: not an audiopipe clip file (attribute format is {fmt!r}, expected {FORMAT!r}; "
                f"top-level entries {entries}), e.g. another tool's pack; {_REPACK} to write it from the data folder"
            )
        if int(version) != FORMAT_VERSION:
            f.close()
            raise ClipFileError(f"{self.path}: format_version {version} != {FORMAT_VERSION}; {_REPACK}")
        return f

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = self._open()
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        """Close the data handle (it reopens on the next read)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, -1
        return state

    def __len__(self) -> int:
        return len(self.clip_ids)

    def _check_index(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.path}: clip index {i} out of range for {len(self)} clips")
        return i % len(self)

    def read_audio(self, i: int) -> np.ndarray:
        """Float32 waveform `(T,)` in [-1, 1] of clip `i`."""
        i = self._check_index(i)
        try:
            if self.codec == "pcm16":
                start, stop = self._audio_offsets[i], self._audio_offsets[i + 1]
                return self._handle()[DS_AUDIO_PCM16][start:stop].astype(np.float32) / 32767.0
            blob = self._handle()[DS_AUDIO_MP3][i]
        except OSError as err:
            raise ClipFileError(f"{self.path}: cannot read clip {i} ({err}); truncated? {_REPACK}") from err
        return decode_mp3(blob.tobytes(), self.sample_rate, int(self._num_samples[i]))

    def num_samples(self, i: int) -> int:
        return int(self._num_samples[self._check_index(i)])

    def targets(self, i: int) -> np.ndarray:
        """Multi-hot clip tags `(C,)` float32."""
        return self._targets[self._check_index(i)].copy()

    @property
    def all_targets(self) -> np.ndarray:
        """All clip tags `(N, C)` float32 (for samplers and metrics)."""
        return self._targets.copy()

    def events(self, i: int) -> list[Event]:
        """Strong events `(onset_s, offset_s, class_index)` of clip `i`, `[]` if none."""
        i = self._check_index(i)
        lo, hi = self._event_offsets[i], self._event_offsets[i + 1]
        on, off, cls = self._events
        return [(float(on[k]), float(off[k]), int(cls[k])) for k in range(lo, hi)]
