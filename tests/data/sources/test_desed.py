"""DESED -> data folder, end to end: the public-eval archive from 127.0.0.1, a development-set root on disk, the
errors (unknown label, checksum, no root), and the download -> resample -> pack_hdf5 stage scripts on DESED."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from audiopipe.data.download import DownloadError, download
from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.manifests import read_metadata
from audiopipe.data.sources.desed import DESED_CLASSES
from audiopipe.storage import file_sha256

REPO = Path(__file__).resolve().parents[3]
Maker = Callable[..., Path]
HEADER = "filename\tonset\toffset\tevent_label\n"
# File names whose 5-way hash puts them in train, train, train, valid, test (public-eval-only split).
PUBLIC = {"Ya0": "train", "Yb0": "train", "Yd1": "train", "Yb2": "valid", "Ya1": "test"}


def _manifest(folder: Path) -> list[tuple[str, str, str]]:
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    return [(r["clip_id"], r["path"], r["split"]) for r in rows]


@pytest.fixture
def dev_root(tmp_path: Path, wav: Callable[..., bytes], write_tree: Callable[..., Path]) -> Path:
    """A DESED development-set root as DESED_task's download script lays it out (one clip per subset)."""
    clip = "_0.000_10.000.wav"
    return write_tree(tmp_path / "DESED" / "dataset", {
        "metadata/train/synthetic21_train/soundscapes.tsv":
            HEADER + "0.wav\t0.100\t0.500\tDog\n0.wav\t0.300\t0.900\tSpeech\n1.wav\t\t\t\n",
        "audio/train/synthetic21_train/soundscapes/0.wav": wav(300),
        "audio/train/synthetic21_train/soundscapes/1.wav": wav(310),
        "metadata/train/audioset_strong.tsv": HEADER + f"Ya0{clip}\t0.000\t1.500\tCat\n",  # past the 1-s clip's end
        f"audio/train/strong_label_real/Ya0{clip}": wav(320),
        "metadata/validation/validation.tsv": HEADER + f"Yv1{clip}\t0.2\t0.4\tBlender\n",
        "metadata/validation/eval_dcase2018.tsv": HEADER + f"Yv1{clip}\t0.2\t0.4\tBlender\n",  # a subset: ignored
        f"audio/validation/validation/Yv1{clip}": wav(330),
        "metadata/validation/synthetic21_validation/soundscapes.tsv": HEADER + "0.wav\t0.0\t1.0\tFrying\n",
        "audio/validation/synthetic21_validation/soundscapes/0.wav": wav(340),
        "metadata/eval/public.tsv": HEADER + f"Ye1{clip}\t0.5\t0.75\tAlarm_bell_ringing\n",
        f"audio/eval/public/Ye1{clip}": wav(350),
        "metadata/train/weak.tsv": f"filename\tevent_labels\nYw1{clip}\tSpeech,Dog\nYw2{clip}\tCat\n",  # Yw2: no audio
        f"audio/train/weak/Yw1{clip}": wav(360),
        "metadata/train/unlabel_in_domain.tsv": f"filename\nYu1{clip}\n",
        f"audio/train/unlabel_in_domain/Yu1{clip}": wav(370),
    })  # fmt: skip


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-url"])
def test_development_root_on_disk(
    dev_root: Path, tmp_path: Path, as_uri: bool, caplog: pytest.LogCaptureFixture
) -> None:
    download("desed", tmp_path / "data", url=dev_root.as_uri() if as_uri else str(dev_root), sha256=None)
    folder = tmp_path / "data" / "desed"
    clip = "_0.000_10.000"
    assert _manifest(folder) == [
        ("train/synthetic21_train/soundscapes/0", "audio/train/synthetic21_train/soundscapes/0.wav", "train"),
        ("train/synthetic21_train/soundscapes/1", "audio/train/synthetic21_train/soundscapes/1.wav", "train"),
        (f"train/strong_label_real/Ya0{clip}", f"audio/train/strong_label_real/Ya0{clip}.wav", "train"),
        (f"validation/validation/Yv1{clip}", f"audio/validation/validation/Yv1{clip}.wav", "valid"),
        ("validation/synthetic21_validation/soundscapes/0", "audio/validation/synthetic21_validation/soundscapes/0.wav",
         "valid"),
        (f"eval/public/Ye1{clip}", f"audio/eval/public/Ye1{clip}.wav", "test"),
        (f"train/weak/Yw1{clip}", f"audio/train/weak/Yw1{clip}.wav", "weak"),
        (f"train/unlabel_in_domain/Yu1{clip}", f"audio/train/unlabel_in_domain/Yu1{clip}.wav", "unlabelled"),
    ]  # fmt: skip
    assert (folder / "classes.txt").read_text() == "".join(f"{c}\n" for c in DESED_CLASSES)
    assert (folder / "strong.tsv").read_text() == HEADER + (
        "audio/train/synthetic21_train/soundscapes/0.wav\t0.100\t0.500\tDog\n"
        "audio/train/synthetic21_train/soundscapes/0.wav\t0.300\t0.900\tSpeech\n"
        f"audio/train/strong_label_real/Ya0{clip}.wav\t0.000\t1.000\tCat\n"
        f"audio/validation/validation/Yv1{clip}.wav\t0.200\t0.400\tBlender\n"
        "audio/validation/synthetic21_validation/soundscapes/0.wav\t0.000\t1.000\tFrying\n"
        f"audio/eval/public/Ye1{clip}.wav\t0.500\t0.750\tAlarm_bell_ringing\n"
    )
    assert (folder / "weak.tsv").read_text() == (
        "filename\tevent_labels\n"
        "audio/train/synthetic21_train/soundscapes/0.wav\tDog,Speech\n"
        f"audio/train/strong_label_real/Ya0{clip}.wav\tCat\n"
        f"audio/validation/validation/Yv1{clip}.wav\tBlender\n"
        "audio/validation/synthetic21_validation/soundscapes/0.wav\tFrying\n"
        f"audio/eval/public/Ye1{clip}.wav\tAlarm_bell_ringing\n"
        f"audio/train/weak/Yw1{clip}.wav\tDog,Speech\n"
    )
    tags = (folder / "tags.csv").read_text().splitlines()
    assert tags[0] == "filename," + ",".join(DESED_CLASSES) and len(tags) == 1 + 7  # unlabelled has no row
    assert tags[1] == "audio/train/synthetic21_train/soundscapes/0.wav,0,0,0,0,1,0,0,0,1,0"
    assert tags[2] == "audio/train/synthetic21_train/soundscapes/1.wav,0,0,0,0,0,0,0,0,0,0"
    assert (folder / "missing_clips.tsv").read_text() == f"split\tfilename\nweak\tYw2{clip}.wav\n"
    assert "1 of 9 listed clips have no audio file" in caplog.text and f"Yw2{clip}.wav" in caplog.text
    assert "1 clips have events past their end" in caplog.text
    linked = folder / "audio/eval/public" / f"Ye1{clip}.wav"  # hard link: no copy of the user's audio
    assert os.stat(linked).st_ino == os.stat(dev_root / "audio/eval/public" / f"Ye1{clip}.wav").st_ino
    read_metadata(folder)  # the folder passes the pipeline's own validation
    assert (folder / ".completed").is_file()


def test_public_eval_archive_from_local_server(
    server: tuple[str, Path], tmp_path: Path, wav: Callable[..., bytes], make_archive: Callable[..., Path],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    url, www = server
    rows = "".join(f"{n}_0.000_10.000.wav\t0.25\t0.5\tDog\n" for n in PUBLIC) + "Ya1_0.000_10.000.wav\t0.5\t1.0\tCat\n"
    files = {f"dataset/audio/eval/public/{n}_0.000_10.000.wav": wav(200 + 10 * i) for i, n in enumerate(PUBLIC)}
    files["dataset/metadata/eval/public.tsv"] = HEADER + rows
    archive = make_archive(www / "DESED_public_eval.tar.gz", files)
    download("desed", tmp_path / "data", url=f"{url}/DESED_public_eval.tar.gz", sha256=file_sha256(archive))
    folder = tmp_path / "data" / "desed"
    assert _manifest(folder) == [
        (f"eval/public/{n}_0.000_10.000", f"audio/eval/public/{n}_0.000_10.000.wav", split)
        for n, split in PUBLIC.items()
    ]
    assert not (folder / "raw").exists()  # the extracted archive is dropped; its clips are linked under audio/
    classes, clips = read_metadata(folder)
    assert classes == list(DESED_CLASSES)
    assert clips[-1].events == ((0.25, 0.5, "Dog"), (0.5, 1.0, "Cat")) and clips[-1].labels == ("Cat", "Dog")
    assert "public evaluation set only" in caplog.text and not (folder / "missing_clips.tsv").exists()


def test_checksum_mismatch_is_a_clear_error(
    server: tuple[str, Path], tmp_path: Path, wav: Callable[..., bytes], make_archive: Callable[..., Path]
) -> None:
    url, www = server
    files = {"dataset/metadata/eval/public.tsv": HEADER, "dataset/audio/eval/public/a.wav": wav()}
    make_archive(www / "desed.tar.gz", files)
    with pytest.raises(DownloadError, match=r"desed\.tar\.gz: sha256 [0-9a-f]{64} != expected f{64}; .*rerun"):
        download("desed", tmp_path / "data", url=f"{url}/desed.tar.gz", sha256="f" * 64)


@pytest.mark.parametrize(("tsv", "row", "lineno"), [
    ("metadata/eval/public.tsv", "Ye1_0.000_10.000.wav\t0.1\t0.2\tUnicorn", 3),
    ("metadata/train/weak.tsv", "Yw3_0.000_10.000.wav\tDog,Unicorn", 4),
])  # fmt: skip
def test_unknown_label_names_file_line_and_label(
    dev_root: Path, tmp_path: Path, tsv: str, row: str, lineno: int
) -> None:
    with open(dev_root / tsv, "a") as fh:
        fh.write(row + "\n")
    expect = rf"{tsv}:{lineno}: unknown label 'Unicorn'; DESED labels are Alarm_bell_ringing, .*; fix or delete"
    with pytest.raises(DownloadError, match=expect):
        download("desed", tmp_path / "data", url=str(dev_root), sha256=None)


def test_archive_without_desed_layout(server: tuple[str, Path], tmp_path: Path, make_archive: Maker) -> None:
    url, www = server
    make_archive(www / "other.tar.gz", {"readme.txt": "not DESED"})
    with pytest.raises(DownloadError, match=r"no DESED root \(a folder holding audio/ and metadata/\); check download"):
        download("desed", tmp_path / "data", url=f"{url}/other.tar.gz", sha256=None)


def _stage(name: str, cwd: Path, *args: str) -> None:
    cmd = [sys.executable, str(REPO / "stages" / f"{name}.py"), "--params", str(cwd / "params.yaml"), *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_download_resample_pack_stages_accept_desed(dev_root: Path, tmp_path: Path) -> None:
    """The DAG's first three stage scripts, as `dvc repro` runs them, on `download.source: desed`."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["download"].update(source="desed", url=str(dev_root), sha256=None)
    params["resample"].update(sample_rate=8000, workers=1, max_reject_fraction=0.0)
    params["tracking"]["enabled"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    d = tmp_path / "data"
    _stage("download", tmp_path, "--out", str(d / "download"), "--cache", str(d / ".cache"))
    _stage("resample", tmp_path, "--src", str(d / "download"), "--out", str(d / "resample"))
    _stage("pack_hdf5", tmp_path, "--src", str(d / "resample"), "--out", str(d / "pack_hdf5"))
    assert json.loads((d / "download" / "metrics.json").read_text())["download/clips"] == 8
    counts = {"train": 3, "valid": 2, "test": 1, "weak": 1, "unlabelled": 1}
    assert {k: len(ClipReader(d / "pack_hdf5" / f"{k}.h5")) for k in counts} == counts
    train = ClipReader(d / "pack_hdf5" / "train.h5")
    assert train.class_names == list(DESED_CLASSES) and train.sample_rate == 8000 and train.has_strong
    assert train.clip_ids[0] == "train/synthetic21_train/soundscapes/0"
    assert train.events(0) == [(0.1, 0.5, 4), (0.3, 0.9, 8)]
    np.testing.assert_array_equal(train.targets(0), np.eye(10, dtype=np.float32)[[4, 8]].sum(0))
    assert train.read_audio(0).shape == (8000,)
    unlabelled = ClipReader(d / "pack_hdf5" / "unlabelled.h5")
    assert not unlabelled.has_strong and not unlabelled.targets(0).any()
