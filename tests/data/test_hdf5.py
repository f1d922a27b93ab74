"""Tests for audiopipe.data.hdf5: round trips (pcm16, mp3), content hash, atomic writes, bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from audiopipe.data.hdf5 import ClipFileError, ClipReader, ClipWriter

CLASSES = ["a", "b", "c"]


def _write(path: Path, codec: str = "pcm16", n: int = 3, sample_rate: int = 16000) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    clips = [(0.3 * rng.standard_normal(sample_rate // 4 * (i + 1))).clip(-1, 1).astype(np.float32) for i in range(n)]
    with ClipWriter(path, class_names=CLASSES, sample_rate=sample_rate, codec=codec, has_strong=True) as w:
        for i, audio in enumerate(clips):
            w.add(f"clip{i}", audio, targets=np.eye(3)[i % 3], events=[(0.0, 0.1 * (i + 1), i % 3)] * (i % 2))
    return clips


def test_pcm16_round_trip(tmp_path: Path) -> None:
    clips = _write(tmp_path / "x.h5")
    reader = ClipReader(tmp_path / "x.h5")
    assert len(reader) == 3 and reader.clip_ids == ["clip0", "clip1", "clip2"]
    assert reader.class_names == CLASSES and reader.sample_rate == 16000 and reader.has_strong
    for i, audio in enumerate(clips):
        out = reader.read_audio(i)
        assert out.dtype == np.float32 and out.shape == audio.shape
        np.testing.assert_allclose(out, audio, atol=1 / 32767 + 1e-6)
        np.testing.assert_array_equal(reader.targets(i), np.eye(3, dtype=np.float32)[i % 3])
    assert reader.events(0) == [] and reader.events(1) == [(0.0, 0.2, 1)]


def test_mp3_round_trip_keeps_length_and_signal(tmp_path: Path) -> None:
    t = np.arange(8000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    with ClipWriter(tmp_path / "m.h5", class_names=CLASSES, sample_rate=16000, codec="mp3") as w:
        w.add("tone", tone)
    out = ClipReader(tmp_path / "m.h5").read_audio(0)
    assert out.shape == tone.shape and out.dtype == np.float32
    corr = np.corrcoef(out[2000:6000], tone[2000:6000])[0, 1]
    assert corr > 0.95


def test_content_hash_is_deterministic_and_content_sensitive(tmp_path: Path) -> None:
    _write(tmp_path / "a.h5")
    _write(tmp_path / "b.h5")
    _write(tmp_path / "c.h5", n=2)
    hashes = [ClipReader(tmp_path / f"{k}.h5").content_hash for k in "abc"]
    assert hashes[0] == hashes[1] != hashes[2]


def test_duplicate_clip_id_is_rejected_and_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "dup.h5"
    with pytest.raises(ValueError, match="duplicate clip id"):
        with ClipWriter(path, class_names=CLASSES, sample_rate=16000) as w:
            w.add("x", np.zeros(10, np.float32))
            w.add("x", np.zeros(10, np.float32))
    assert not path.exists() and not list(tmp_path.iterdir())


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "keep.h5"
    _write(path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with ClipWriter(path, class_names=CLASSES, sample_rate=16000) as w:
            w.add("x", np.zeros(10, np.float32))
            raise RuntimeError("killed")
    assert path.read_bytes() == before


def test_truncated_file_raises_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    _write(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ClipFileError, match=str(path)):
        ClipReader(path)


def test_foreign_hdf5_raises_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ClipFileError, match="not an audiopipe clip file"):
        ClipReader(path)


def test_missing_file_raises_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClipFileError, match="not found"):
        ClipReader(tmp_path / "nope.h5")


def test_reader_pickles_without_open_handle(tmp_path: Path) -> None:
    _write(tmp_path / "p.h5")
    reader = ClipReader(tmp_path / "p.h5")
    reader.read_audio(0)
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read_audio(1), reader.read_audio(1))


def test_index_out_of_range(tmp_path: Path) -> None:
    _write(tmp_path / "i.h5")
    with pytest.raises(IndexError):
        ClipReader(tmp_path / "i.h5").read_audio(3)


def test_invalid_targets_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="targets must have shape"):
        with ClipWriter(tmp_path / "s.h5", class_names=CLASSES, sample_rate=16000) as w:
            w.add("x", np.zeros(10, np.float32), targets=[1, 0])
