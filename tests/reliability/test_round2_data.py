"""Round two of the data-file catalogue: DESED's event-free strong.tsv rows, NaN teacher logits, and packs
whose bytes changed after packing (the stored content_hash is now verified).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from audiopipe.data.hdf5 import DS_AUDIO_PCM16, ClipFileError, ClipReader, ClipWriter, verify_content_hash
from audiopipe.data.manifests import Clip, ManifestError, read_metadata, write_metadata
from audiopipe.data.predictions import PredictionsError, read_predictions, write_predictions

CLASSES = ["Dog", "Cat"]
RATE = 16000

# ------------------------------------------------------------------ strong.tsv: DESED's clip without events


def _folder(tmp_path: Path) -> Path:
    clips = [
        Clip("a", "audio/test/a.wav", "test", ("Dog",), ((0.5, 1.0, "Dog"),), duration_s=2.0),
        Clip("b", "audio/test/b.wav", "test", (), (), duration_s=2.0),
    ]
    write_metadata(tmp_path, clips, CLASSES)
    return tmp_path


@pytest.mark.parametrize("row", ["audio/test/b.wav\t\t\t", "audio/test/b.wav\t \t \t "])
def test_strong_tsv_accepts_desed_event_free_rows(tmp_path: Path, row: str) -> None:
    folder = _folder(tmp_path)
    with open(folder / "strong.tsv", "a") as fh:
        fh.write(row + "\n")
    _, clips = read_metadata(folder)
    by_id = {c.clip_id: c for c in clips}
    assert by_id["b"].events == () and by_id["a"].events == ((0.5, 1.0, "Dog"),)


def test_strong_tsv_event_free_row_must_name_a_known_clip(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    with open(folder / "strong.tsv", "a") as fh:
        fh.write("audio/test/zzz.wav\t\t\t\n")
    with pytest.raises(ManifestError, match=r"strong\.tsv:3: clip 'audio/test/zzz.wav' is not in manifest"):
        read_metadata(folder)


def test_strong_tsv_event_without_label_is_still_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    with open(folder / "strong.tsv", "a") as fh:
        fh.write("audio/test/b.wav\t0.1\t0.2\t\n")
    with pytest.raises(ManifestError, match=r"strong\.tsv:3: event without a label"):
        read_metadata(folder)


# ------------------------------------------------------------------ predictions.h5 with a NaN logit


def test_non_finite_logit_names_file_and_clip(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "predictions.h5", {"train": (["c0", "c1", "c2"], np.zeros((3, 2)))},
                             CLASSES, teacher="t", checkpoints=[])
    with h5py.File(path, "r+") as f:  # what a bit flip or a foreign writer can leave
        f["train/logits"][1, 0] = np.nan
    with pytest.raises(PredictionsError) as err:
        read_predictions(path, "train", expected_class_names=CLASSES)
    message = str(err.value)
    assert f"predictions file {path} holds non-finite logits at clip 'c1'" in message
    assert "rerun predict_teacher" in message


# ------------------------------------------------------------------ pack content_hash


def _pack(path: Path, n: int = 8, seconds: float = 1.0) -> Path:
    rng = np.random.default_rng(0)
    with ClipWriter(path, class_names=CLASSES, sample_rate=RATE, has_strong=True, split="valid") as writer:
        for i in range(n):
            audio = (0.3 * rng.standard_normal(int(RATE * seconds))).clip(-1, 1).astype(np.float32)
            writer.add(f"clip{i}", audio, targets=[i % 2, 1 - i % 2], events=[(0.1, 0.4, i % 2)])
    return path


def test_intact_pack_verifies(tmp_path: Path) -> None:
    path = _pack(tmp_path / "valid.h5")
    assert verify_content_hash(path) == ClipReader(path).content_hash
    ClipReader(path, verify=True)


def _audio_byte_range(path: Path) -> tuple[int, int]:
    with h5py.File(path, "r") as f:
        ds = f[DS_AUDIO_PCM16]
        info = ds.id.get_chunk_info(0)
        return info.byte_offset, info.size


def test_4kb_flipped_in_the_audio_is_caught(tmp_path: Path) -> None:
    path = _pack(tmp_path / "valid.h5")
    start, size = _audio_byte_range(path)
    assert size > 8192
    data = bytearray(path.read_bytes())
    at = start + size // 2
    data[at : at + 4096] = bytes(b ^ 0xFF for b in data[at : at + 4096])
    path.write_bytes(bytes(data))
    ClipReader(path)  # round one: every clip reads, one silently different
    with pytest.raises(ClipFileError, match=rf"{path}: content_hash mismatch.*rerun `dvc repro pack_hdf5`"):
        verify_content_hash(path)
    with pytest.raises(ClipFileError, match=str(path)):
        ClipReader(path, verify=True)


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_4kb_flipped_anywhere_gives_a_clear_error(tmp_path: Path, where: float) -> None:
    path = _pack(tmp_path / "valid.h5")
    data = bytearray(path.read_bytes())
    at = int(len(data) * where)
    data[at : at + 4096] = bytes(b ^ 0xFF for b in data[at : at + 4096])
    path.write_bytes(bytes(data))
    with pytest.raises(ClipFileError, match=str(path)):
        ClipReader(path, verify=True)


def test_edited_targets_are_caught(tmp_path: Path) -> None:
    path = _pack(tmp_path / "valid.h5")
    with h5py.File(path, "r+") as f:
        f["targets"][0, 0] = 1 - f["targets"][0, 0]
    with pytest.raises(ClipFileError, match="content_hash mismatch"):
        verify_content_hash(path)


def test_mp3_pack_cannot_be_verified_but_opens(tmp_path: Path) -> None:
    path = tmp_path / "mp3.h5"
    with ClipWriter(path, class_names=CLASSES, sample_rate=RATE, codec="mp3") as writer:
        writer.add("c0", np.zeros(RATE // 4, np.float32), targets=[1, 0])
    ClipReader(path, verify=True)
    with pytest.raises(ClipFileError, match="cannot be verified"):
        verify_content_hash(path)


def test_content_hash_unchanged_for_existing_packs(tmp_path: Path) -> None:
    """The writer's hash is the same function as before the refactoring (packs already on disk stay valid)."""
    import hashlib

    path = _pack(tmp_path / "valid.h5", n=2)
    reader = ClipReader(path)
    clips = hashlib.sha256()
    for i in range(len(reader)):
        pcm = np.round(reader.read_audio(i) * 32767.0).astype(np.int16)
        tgt = reader.targets(i).astype(np.uint8)
        clips.update(reader.clip_ids[i].encode() + b"\0" + pcm.tobytes() + tgt.tobytes()
                     + json.dumps(reader.events(i)).encode())
    header = json.dumps([CLASSES, RATE, "pcm16", True]).encode()
    assert reader.content_hash == hashlib.sha256(header + clips.digest()).hexdigest()


@pytest.mark.parametrize("split", ["test", "train"])
def test_evaluate_refuses_a_corrupted_pack(tmp_path: Path, split: str) -> None:
    """`evaluate` opens the test pack and the training packs of the baselines with the hash check on."""
    from types import SimpleNamespace

    from audiopipe.data.synthetic import make_synthetic_pack
    from audiopipe.evaluation.run import evaluate_pipeline

    packs = make_synthetic_pack(tmp_path / "pack", n_per_split={"test": 3, "train": 3}, sample_rate=16000)
    with h5py.File(packs[split], "r+") as f:  # one sample changed: every clip still reads
        f[DS_AUDIO_PCM16][100] = f[DS_AUDIO_PCM16][100] ^ 0x55
    cfg = SimpleNamespace(split="test", duration_s=1.0, batch_size=4, median_windows=[3], threshold=0.5,
                          timeline_clips=1)
    with pytest.raises(ClipFileError, match=rf"{packs[split]}: content_hash mismatch"):
        evaluate_pipeline(cfg, clips_dir=tmp_path / "pack", out_dir=tmp_path / "eval", provenance={},
                          taggers={}, sed_checkpoints={}, stage_dirs={})
