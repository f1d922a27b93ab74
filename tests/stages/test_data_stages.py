"""Smoke and robustness tests of the data stages (download -> resample -> pack_hdf5) on tiny synthetic data.

The stage scripts run as subprocesses in tmp_path with a tiny params.yaml, exactly as `dvc repro` runs them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.prepare import RejectLimitError, pack_dataset, resample_dataset

REPO = Path(__file__).resolve().parents[2]
COUNTS = {"n_train": 3, "n_valid": 2, "n_test": 2, "n_weak": 3, "n_unlabelled": 2}


@pytest.fixture
def synthetic_folder(tmp_path: Path) -> Path:
    from audiopipe.data.synthetic import build_synthetic_source

    folder = tmp_path / "download" / "synthetic"
    build_synthetic_source(
        folder,
        counts={"train": 3, "valid": 2, "test": 2, "weak": 3, "unlabelled": 2},
        duration_s=1.0,
        sample_rate=16000,
        seed=0,
    )
    return folder


def _params(tmp_path: Path, **resample: object) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["download"].update(source="synthetic", clip_duration_s=1.0, **COUNTS)
    params["resample"].update(sample_rate=16000, workers=1, **resample)
    params["tracking"]["enabled"] = False
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _stage(name: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(REPO / "stages" / f"{name}.py"), "--params", str(tmp_path / "params.yaml"), *args]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("metrics.json", "timings.json")  # timings: wall time, differs per run
    }


def test_three_stages_end_to_end(tmp_path: Path) -> None:
    _params(tmp_path)
    d = tmp_path / "data"
    for name, args in [
        ("download", ["--out", str(d / "download"), "--cache", str(d / ".cache")]),
        ("resample", ["--src", str(d / "download"), "--out", str(d / "resample")]),
        ("pack_hdf5", ["--src", str(d / "resample"), "--out", str(d / "pack_hdf5")]),
    ]:
        proc = _stage(name, tmp_path, *args)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads((d / name / "metrics.json").read_text())
    assert (d / "download" / "synthetic" / ".completed").is_file()
    for split, n in [("train", 3), ("valid", 2), ("test", 2), ("weak", 3), ("unlabelled", 2)]:
        reader = ClipReader(d / "pack_hdf5" / f"{split}.h5")
        assert len(reader) == n and reader.sample_rate == 16000
        assert reader.has_strong == (split in ("train", "valid", "test"))
    assert (d / "resample" / "rejects.tsv").read_text() == "path\treason\tdetail\n"


def test_bad_files_are_listed_and_good_ones_kept(synthetic_folder: Path, tmp_path: Path) -> None:
    src = synthetic_folder.parent
    (synthetic_folder / "audio" / "train" / "text.wav").write_text("not audio at all\n" * 10)
    (synthetic_folder / "audio" / "train" / "empty.wav").write_bytes(b"")
    out = tmp_path / "resample"
    metrics = resample_dataset(src, out, sample_rate=16000, workers=1, max_reject_fraction=0.5, progress=False)
    rows = (out / "rejects.tsv").read_text().splitlines()
    assert rows[0] == "path\treason\tdetail" and len(rows) == 3 and metrics["resample/rejects"] == 2
    assert {tuple(r.split("\t")[:2]) for r in rows[1:]} == {
        ("synthetic/audio/train/text.wav", "not audio"),
        ("synthetic/audio/train/empty.wav", "empty"),
    }
    assert len(list((out / "synthetic" / "audio").rglob("*.wav"))) == 12


def test_reject_limit_fails_after_listing(synthetic_folder: Path, tmp_path: Path) -> None:
    (synthetic_folder / "audio" / "weak" / "bad.wav").write_bytes(b"RIFF garbage")
    out = tmp_path / "resample"
    with pytest.raises(RejectLimitError, match="max_reject_fraction"):
        resample_dataset(
            synthetic_folder.parent, out, sample_rate=16000, workers=1, max_reject_fraction=0.0, progress=False
        )
    assert "bad.wav" in (out / "rejects.tsv").read_text()
    assert len(list((out / "synthetic" / "audio").rglob("*.wav"))) == 12


def test_pack_skips_clips_without_audio(synthetic_folder: Path, tmp_path: Path) -> None:
    (synthetic_folder / "audio" / "train" / "train_00001.wav").unlink()
    metrics = pack_dataset(
        synthetic_folder.parent, tmp_path / "pack", codec="pcm16", mp3_bitrate_kbps=128, progress=False
    )
    assert metrics["pack_hdf5/train_clips"] == 2
    assert ClipReader(tmp_path / "pack" / "train.h5").clip_ids == ["train_00000", "train_00002"]


def test_tag_only_corpus_is_packed_without_strong_labels(synthetic_folder: Path, tmp_path: Path) -> None:
    """ESC-50 / FSD50K / AudioSet have clip tags only: SED training must not read 'no events' as negatives."""
    strong = synthetic_folder / "strong.tsv"
    strong.write_text(strong.read_text().splitlines()[0] + "\n")  # header only
    pack_dataset(synthetic_folder.parent, tmp_path / "pack", codec="pcm16", mp3_bitrate_kbps=128, progress=False)
    for split in ("train", "valid", "test"):
        reader = ClipReader(tmp_path / "pack" / f"{split}.h5")
        assert not reader.has_strong and sum(reader.targets(i).sum() for i in range(len(reader))) > 0, split


def test_killed_resample_rerun_is_complete_and_identical(tmp_path: Path) -> None:
    from audiopipe.data.synthetic import build_synthetic_source

    src = tmp_path / "download"
    build_synthetic_source(src / "synthetic", counts={"unlabelled": 30}, duration_s=0.25, sample_rate=16000, seed=1)
    _params(tmp_path)
    reference = tmp_path / "reference"
    resample_dataset(src, reference, sample_rate=16000, workers=1, max_reject_fraction=0.0, progress=False)
    out = tmp_path / "resample"
    cmd = [sys.executable, str(REPO / "stages" / "resample.py"), "--params", str(tmp_path / "params.yaml")]
    proc = subprocess.Popen([*cmd, "--src", str(src), "--out", str(out)], cwd=tmp_path, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.rglob("*.wav"))) < 3:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(out.rglob("*.wav")))
    assert 3 <= done < 30, "the kill should land mid-way"
    assert _stage("resample", tmp_path, "--src", str(src), "--out", str(out)).returncode == 0
    assert _tree(out) == _tree(reference)
