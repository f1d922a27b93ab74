"""Tests for audiopipe.data.manifests: round trip and every validation error names file, line and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiopipe.data.manifests import Clip, ManifestError, read_metadata, write_metadata

CLASSES = ["Dog", "Cat"]


def _clips() -> list[Clip]:
    return [
        Clip("a", "audio/train/a.wav", "train", ("Dog",), ((0.5, 1.0, "Dog"),), duration_s=2.0),
        Clip("b", "audio/weak/b.wav", "weak", ("Cat",), duration_s=1.0),
        Clip("c", "audio/unlabelled/c.wav", "unlabelled", duration_s=1.0),
    ]


def test_round_trip(tmp_path: Path) -> None:
    write_metadata(tmp_path, _clips(), CLASSES)
    classes, clips = read_metadata(tmp_path)
    assert classes == CLASSES
    assert clips == _clips()
    assert (tmp_path / "tags.csv").read_text().splitlines() == [
        "filename,Dog,Cat",
        "audio/train/a.wav,1,0",
        "audio/weak/b.wav,0,1",
    ]


def test_unknown_label_in_weak_tsv(tmp_path: Path) -> None:
    write_metadata(tmp_path, _clips(), CLASSES)
    with open(tmp_path / "weak.tsv", "a") as fh:
        fh.write("audio/unlabelled/c.wav\tDog,Unicorn\n")
    with pytest.raises(ManifestError, match=r"weak\.tsv:4: unknown label 'Unicorn'; add it to classes\.txt"):
        read_metadata(tmp_path)


def test_unknown_label_in_strong_tsv(tmp_path: Path) -> None:
    write_metadata(tmp_path, _clips(), CLASSES)
    with open(tmp_path / "strong.tsv", "a") as fh:
        fh.write("audio/train/a.wav\t0.1\t0.2\tHorse\n")
    with pytest.raises(ManifestError, match=r"strong\.tsv:3: unknown label 'Horse'"):
        read_metadata(tmp_path)


@pytest.mark.parametrize("row", ["audio/train/a.wav\t0.1\tDog", "audio/train/a.wav 0.1 0.2 Dog", "x\t1\t2\t3\t4"])
def test_malformed_strong_rows(tmp_path: Path, row: str) -> None:
    write_metadata(tmp_path, _clips(), CLASSES)
    with open(tmp_path / "strong.tsv", "a") as fh:
        fh.write(row + "\n")
    with pytest.raises(ManifestError, match=r"strong\.tsv:3: malformed row .*fix or delete the line"):
        read_metadata(tmp_path)


def test_non_numeric_onset(tmp_path: Path) -> None:
    write_metadata(tmp_path, _clips(), CLASSES)
    with open(tmp_path / "strong.tsv", "a") as fh:
        fh.write("audio/train/a.wav\tzero\t0.2\tDog\n")
    with pytest.raises(ManifestError, match="onset/offset must be numbers"):
        read_metadata(tmp_path)


@pytest.mark.parametrize(("onset", "offset"), [(0.8, 0.2), (-0.1, 0.5), (1.0, 2.5)])
def test_event_outside_clip_or_reversed(tmp_path: Path, onset: float, offset: float) -> None:
    write_metadata(tmp_path, _clips(), CLASSES)
    with open(tmp_path / "strong.tsv", "a") as fh:
        fh.write(f"audio/train/a.wav\t{onset}\t{offset}\tDog\n")
    with pytest.raises(ManifestError, match=r"strong\.tsv:3: event .* must satisfy 0 <= onset <= offset"):
        read_metadata(tmp_path)


def test_duplicate_clip_names_in_manifest(tmp_path: Path) -> None:
    write_metadata(tmp_path, _clips(), CLASSES)
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    (tmp_path / "manifest.jsonl").write_text("\n".join([*lines, lines[0]]) + "\n")
    with pytest.raises(ManifestError, match="duplicate clip name 'a'"):
        read_metadata(tmp_path)


def test_duplicate_clip_names_in_weak_tsv(tmp_path: Path) -> None:
    write_metadata(tmp_path, _clips(), CLASSES)
    with open(tmp_path / "weak.tsv", "a") as fh:
        fh.write("audio/train/a.wav\tDog\n")
    with pytest.raises(ManifestError, match=r"weak\.tsv:4: duplicate clip name"):
        read_metadata(tmp_path)


def test_duplicates_refused_on_write(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="duplicate clip name"):
        write_metadata(tmp_path, [*_clips(), _clips()[0]], CLASSES)
    assert not (tmp_path / "manifest.jsonl").exists()


def test_row_for_clip_not_in_manifest(tmp_path: Path) -> None:
    write_metadata(tmp_path, _clips(), CLASSES)
    with open(tmp_path / "weak.tsv", "a") as fh:
        fh.write("audio/ghost.wav\tDog\n")
    with pytest.raises(ManifestError, match="is not in manifest.jsonl"):
        read_metadata(tmp_path)


def test_malformed_manifest_json(tmp_path: Path) -> None:
    write_metadata(tmp_path, _clips(), CLASSES)
    with open(tmp_path / "manifest.jsonl", "a") as fh:
        fh.write("{not json\n")
    with pytest.raises(ManifestError, match=r"manifest\.jsonl:4: malformed manifest row"):
        read_metadata(tmp_path)


def test_bad_header(tmp_path: Path) -> None:
    write_metadata(tmp_path, _clips(), CLASSES)
    (tmp_path / "strong.tsv").write_text("file\tstart\tend\tlabel\n")
    with pytest.raises(ManifestError, match=r"strong\.tsv:1: expected the header"):
        read_metadata(tmp_path)


def test_missing_classes_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="classes.txt"):
        read_metadata(tmp_path)
