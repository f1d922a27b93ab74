"""AudioSet lists + locally fetched audio -> data folder, end to end: CSVs from 127.0.0.1 with audio in the cache
folder, a local folder, a local unbalanced list, the matched file-name forms, missing clips and label errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from audiopipe.data.download import DownloadError, download
from audiopipe.data.manifests import read_metadata
from audiopipe.storage import file_sha256

Writer = Callable[..., Path]

CLASSES = 'index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/05zppz,"Male speech, man speaking"\n2,/m/0bt9lr,Dog\n'
COMMENTS = (
    "# Segments csv created Sun Mar  5 10:54:31 2017\n"
    "# num_ytids=4\n"
    "# YTID, start_seconds, end_seconds, positive_labels\n"
)
TRAIN = COMMENTS + (
    '--aE2O5G5WE, 0.000, 10.000, "/m/09x0r,/m/05zppz"\n'  # its id hashes into the held-out 10%: valid
    '-0SdAVK79lg, 30.000, 40.000, "/m/0bt9lr"\n'
    '0AHsTzDCzOo, 30.000, 40.000, "/m/0bt9lr,/m/09x0r"\n'
    '1Ro0FgMWTUE, 0.000, 10.000, "/m/09x0r"\n'  # never downloaded
)
EVAL = COMMENTS + '2xBFsDr3Bzs, 10.000, 20.000, "/m/05zppz"\n3-ZZ2y0Z5lk, 0.000, 10.000, "/m/0bt9lr"\n'
LISTS = {"balanced_train_segments.csv": TRAIN, "eval_segments.csv": EVAL, "class_labels_indices.csv": CLASSES}
# One file per naming form the converter matches (a downloader's choice), one in a subfolder.
AUDIO = ("Y--aE2O5G5WE_0.000_10.000.wav", "-0SdAVK79lg_30000.wav", "balanced/Y0AHsTzDCzOo.flac",
         "2xBFsDr3Bzs_10.000_20.000.wav", "3-ZZ2y0Z5lk.wav")  # fmt: skip


@pytest.fixture
def audio(wav: Callable[..., bytes]) -> dict[str, bytes]:
    return {name: wav(300 + 50 * i) for i, name in enumerate(AUDIO)}


def _check_folder(folder: Path, train_split: str = "train") -> None:
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    assert [(r["clip_id"], r["path"], r["split"]) for r in rows] == [
        ("--aE2O5G5WE_0", "audio/Y--aE2O5G5WE_0.000_10.000.wav", "valid"),
        ("-0SdAVK79lg_30000", "audio/-0SdAVK79lg_30000.wav", train_split),
        ("0AHsTzDCzOo_30000", "audio/balanced/Y0AHsTzDCzOo.flac", train_split),
        ("2xBFsDr3Bzs_10000", "audio/2xBFsDr3Bzs_10.000_20.000.wav", "test"),
        ("3-ZZ2y0Z5lk_0", "audio/3-ZZ2y0Z5lk.wav", "test"),
    ]
    assert rows[0]["source"] == "AudioSet:--aE2O5G5WE:0.000-10.000" and rows[0]["duration_s"] == 10.0
    assert (folder / "classes.txt").read_text() == "Speech\nMale_speech_and_man_speaking\nDog\n"
    assert (folder / "weak.tsv").read_text() == (
        "filename\tevent_labels\n"
        "audio/Y--aE2O5G5WE_0.000_10.000.wav\tSpeech,Male_speech_and_man_speaking\n"
        "audio/-0SdAVK79lg_30000.wav\tDog\n"
        "audio/balanced/Y0AHsTzDCzOo.flac\tSpeech,Dog\n"
        "audio/2xBFsDr3Bzs_10.000_20.000.wav\tMale_speech_and_man_speaking\n"
        "audio/3-ZZ2y0Z5lk.wav\tDog\n"
    )
    assert (folder / "tags.csv").read_text().splitlines()[:2] == [
        "filename,Speech,Male_speech_and_man_speaking,Dog",
        "audio/Y--aE2O5G5WE_0.000_10.000.wav,1,1,0",
    ]
    assert (folder / "strong.tsv").read_text() == "filename\tonset\toffset\tevent_label\n"
    assert (folder / "missing_clips.tsv").read_text() == f"split\tfilename\n{train_split}\t1Ro0FgMWTUE_0\n"
    read_metadata(folder)


def test_lists_from_local_server_with_audio_in_cache(
    server: tuple[str, Path], tmp_path: Path, audio: dict[str, bytes], write_tree: Callable[..., Path],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    url, www = server
    write_tree(www / "csv", LISTS)
    write_tree(tmp_path / "cache" / "audioset" / "audio", audio)
    pin = file_sha256(www / "csv" / "balanced_train_segments.csv")
    download("audioset", tmp_path / "data", url=f"{url}/csv/balanced_train_segments.csv", sha256=pin,
             cache_dir=tmp_path / "cache")  # fmt: skip
    _check_folder(tmp_path / "data" / "audioset")
    assert "audioset: 1 of 6 listed clips have no audio file and were skipped (first: 1Ro0FgMWTUE_0)" in caplog.text


def test_local_folder_with_audio_subfolder(tmp_path: Path, audio: dict[str, bytes], write_tree: Writer) -> None:
    root = write_tree(tmp_path / "audioset", {**LISTS, **{f"audio/{k}": v for k, v in audio.items()}})
    download("audioset", tmp_path / "data", url=str(root), sha256=None)
    _check_folder(tmp_path / "data" / "audioset")


def test_url_naming_the_unbalanced_list_selects_it(
    tmp_path: Path, audio: dict[str, bytes], write_tree: Callable[..., Path]
) -> None:
    unbalanced = TRAIN.replace('-0SdAVK79lg, 30.000, 40.000, "/m/0bt9lr"', '-0SdAVK79lg, 30.000, 40.000, "/m/09x0r"')
    files = {**LISTS, "unbalanced_train_segments.csv": unbalanced, **{f"audio/{k}": v for k, v in audio.items()}}
    root = write_tree(tmp_path / "audioset", files)
    download("audioset", tmp_path / "data", url=str(root / "unbalanced_train_segments.csv"), sha256=None)
    classes, clips = read_metadata(tmp_path / "data" / "audioset")
    assert [c.labels for c in clips if c.clip_id == "-0SdAVK79lg_30000"] == [("Speech",)]


def test_unknown_mid_names_file_line_and_label(
    tmp_path: Path, audio: dict[str, bytes], write_tree: Callable[..., Path]
) -> None:
    root = write_tree(tmp_path / "audioset", {**LISTS, "eval_segments.csv": EVAL + 'zzz, 0.0, 10.0, "/m/nope"\n'})
    with pytest.raises(DownloadError, match=r"eval_segments\.csv:6: unknown label '/m/nope' \(not in class_labels"):
        download("audioset", tmp_path / "data", url=str(root), sha256=None)


def test_malformed_row_names_file_and_line(tmp_path: Path, write_tree: Callable[..., Path]) -> None:
    root = write_tree(tmp_path / "audioset", {**LISTS, "balanced_train_segments.csv": TRAIN + "abc 0.0 10.0\n"})
    with pytest.raises(DownloadError, match=r"balanced_train_segments\.csv:8: expected YTID, start_seconds.*fix or"):
        download("audioset", tmp_path / "data", url=str(root), sha256=None)


def test_no_audio_at_all_is_an_error(tmp_path: Path, write_tree: Callable[..., Path]) -> None:
    root = write_tree(tmp_path / "audioset", LISTS)
    with pytest.raises(
        DownloadError,
        match=r"audioset: none of the 6 listed clips has audio .*put the clips your "
        r"downloader fetched under .*audioset/audio",
    ):
        download("audioset", tmp_path / "data", url=str(root), sha256=None)
