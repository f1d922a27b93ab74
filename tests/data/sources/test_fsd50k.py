"""FSD50K -> data folder, end to end: the ground-truth zip from 127.0.0.1 with audio in the cache folder, a local
FSD50K folder, md5 pins, missing-audio reporting and label errors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from audiopipe.data.download import DownloadError, download, parse_checksum
from audiopipe.data.manifests import read_metadata
from audiopipe.data.sources.staging import CORPORA

Maker = Callable[..., Path]

VOCABULARY = "0,Bark,/m/05tny_\n1,Dog,/m/0bt9lr\n2,Male_speech_and_man_speaking,/m/05zppz\n"
DEV = (
    "fname,labels,mids,split\n"
    '101,"Bark,Dog","/m/05tny_,/m/0bt9lr",train\n'
    "102,Male_speech_and_man_speaking,/m/05zppz,val\n"
    "103,Dog,/m/0bt9lr,train\n"  # listed, but its audio was never extracted
)
EVAL = 'fname,labels,mids\n201,"Dog,Male_speech_and_man_speaking","/m/0bt9lr,/m/05zppz"\n'
TRUTH = {"FSD50K.ground_truth/vocabulary.csv": VOCABULARY, "FSD50K.ground_truth/dev.csv": DEV,
         "FSD50K.ground_truth/eval.csv": EVAL}  # fmt: skip


@pytest.fixture
def audio(wav: Callable[..., bytes]) -> dict[str, bytes]:
    return {"FSD50K.dev_audio/101.wav": wav(300), "FSD50K.dev_audio/102.wav": wav(400),
            "FSD50K.eval_audio/201.wav": wav(500)}  # fmt: skip


def _check_folder(folder: Path) -> None:
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    assert [(r["clip_id"], r["path"], r["split"], r["source"]) for r in rows] == [
        ("101", "audio/FSD50K.dev_audio/101.wav", "train", "FSD50K:101"),
        ("102", "audio/FSD50K.dev_audio/102.wav", "valid", "FSD50K:102"),
        ("201", "audio/FSD50K.eval_audio/201.wav", "test", "FSD50K:201"),
    ]
    assert (folder / "classes.txt").read_text() == "Bark\nDog\nMale_speech_and_man_speaking\n"
    assert (folder / "weak.tsv").read_text() == (
        "filename\tevent_labels\n"
        "audio/FSD50K.dev_audio/101.wav\tBark,Dog\n"
        "audio/FSD50K.dev_audio/102.wav\tMale_speech_and_man_speaking\n"
        "audio/FSD50K.eval_audio/201.wav\tDog,Male_speech_and_man_speaking\n"
    )
    assert (folder / "tags.csv").read_text() == (
        "filename,Bark,Dog,Male_speech_and_man_speaking\n"
        "audio/FSD50K.dev_audio/101.wav,1,1,0\n"
        "audio/FSD50K.dev_audio/102.wav,0,0,1\n"
        "audio/FSD50K.eval_audio/201.wav,0,1,1\n"
    )
    assert (folder / "strong.tsv").read_text() == "filename\tonset\toffset\tevent_label\n"  # tags only
    assert (folder / "missing_clips.tsv").read_text() == "split\tfilename\ntrain\t103.wav\n"
    assert read_metadata(folder)[1][0].duration_s == pytest.approx(1.0)


def test_ground_truth_zip_from_local_server_with_audio_in_cache(
    server: tuple[str, Path], tmp_path: Path, audio: dict[str, bytes], write_tree: Callable[..., Path],
    make_archive: Callable[..., Path], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    url, www = server
    zipped = make_archive(www / "FSD50K.ground_truth.zip", TRUTH)
    write_tree(tmp_path / "cache" / "fsd50k", audio)
    md5 = hashlib.md5(zipped.read_bytes()).hexdigest()
    download("fsd50k", tmp_path / "data", url=f"{url}/FSD50K.ground_truth.zip", sha256=f"md5:{md5}",
             cache_dir=tmp_path / "cache")  # fmt: skip
    _check_folder(tmp_path / "data" / "fsd50k")
    assert "fsd50k: 1 of 4 listed clips have no audio file and were skipped (first: 103.wav)" in caplog.text


@pytest.mark.parametrize("zipped", [False, True], ids=["extracted", "zip"])
def test_local_fsd50k_folder(
    tmp_path: Path, audio: dict[str, bytes], write_tree: Callable[..., Path], make_archive: Callable[..., Path],
    zipped: bool,
) -> None:  # fmt: skip
    root = write_tree(tmp_path / "FSD50K", audio)
    if zipped:
        make_archive(root / "FSD50K.ground_truth.zip", TRUTH)
    else:
        write_tree(root, TRUTH)
    download("fsd50k", tmp_path / "data", url=str(root), sha256=None, cache_dir=tmp_path / "unused")
    _check_folder(tmp_path / "data" / "fsd50k")


def test_md5_mismatch_is_a_clear_error(server: tuple[str, Path], tmp_path: Path, make_archive: Maker) -> None:
    url, www = server
    make_archive(www / "gt.zip", TRUTH)
    with pytest.raises(DownloadError, match=r"gt\.zip: md5 [0-9a-f]{32} != expected 0{32}; the partial file was"):
        download("fsd50k", tmp_path / "data", url=f"{url}/gt.zip", sha256="md5:" + "0" * 32)


def test_no_audio_at_all_is_an_error(server: tuple[str, Path], tmp_path: Path, make_archive: Maker) -> None:
    url, www = server
    make_archive(www / "gt.zip", TRUTH)  # a mirror URL: the upstream md5 pin does not apply to it
    with pytest.raises(
        DownloadError,
        match=r"fsd50k: none of the 4 listed clips has audio \(first listed: 101\.wav.*"
        r"extract FSD50K\.dev_audio/ and FSD50K\.eval_audio/ into .*cache/fsd50k",
    ):
        download("fsd50k", tmp_path / "data", url=f"{url}/gt.zip", sha256=None, cache_dir=tmp_path / "cache")


def test_unknown_label_names_file_line_and_label(
    tmp_path: Path, audio: dict[str, bytes], write_tree: Callable[..., Path]
) -> None:
    bad = {"FSD50K.ground_truth/eval.csv": EVAL + "202,Unicorn,/m/x\n"}
    root = write_tree(tmp_path / "FSD50K", {**audio, **TRUTH, **bad})
    with pytest.raises(DownloadError, match=r"eval\.csv:3: unknown label 'Unicorn' \(not in vocabulary\.csv\); fix"):
        download("fsd50k", tmp_path / "data", url=str(root), sha256=None)


def test_local_folder_without_ground_truth(tmp_path: Path) -> None:
    (tmp_path / "FSD50K").mkdir()
    with pytest.raises(DownloadError, match=r"holds neither FSD50K\.ground_truth/ nor FSD50K\.ground_truth\.zip"):
        download("fsd50k", tmp_path / "data", url=str(tmp_path / "FSD50K"), sha256=None)


def test_upstream_ground_truth_is_pinned_to_the_published_md5() -> None:
    url, pin = CORPORA["fsd50k"]
    assert url == "https://zenodo.org/records/4060432/files/FSD50K.ground_truth.zip"
    assert parse_checksum(pin or "") == ("md5", "ca27382c195e37d2269c4c866dd73485")
