"""Round two of the bad-input catalogue for the download stage: what got through round one.

* a `folder` source whose labels.tsv names a file outside the user's folder (`../`, an absolute path);
* tar archives with dangerous members (setuid bits, character devices, FIFOs, links leaving the target).
Each case asserts one clear error naming the file, and that nothing was read or written outside.
"""

from __future__ import annotations

import io
import stat
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiopipe.data.download import DownloadError, download, extract

RATE = 16000


def _wav_bytes() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(np.arange(RATE // 4) * 0.1)).astype(np.float32), RATE, format="WAV")
    return buf.getvalue()


# ------------------------------------------------------------------------------------ folder source


def _user_folder(root: Path, rows: list[str]) -> Path:
    user = root / "data_in" / "my_audio"
    user.mkdir(parents=True)
    (user / "ok.wav").write_bytes(_wav_bytes())
    (user / "labels.tsv").write_text("filename\tsplit\tlabels\n" + "".join(r + "\n" for r in rows))
    return user


@pytest.mark.parametrize(
    "name",
    ["../../../x/a.wav", "../../x/a.wav", "../secret.wav", "sub/../../secret.wav", "ABSOLUTE", "", "./", "sub/.."],
)
def test_folder_source_refuses_names_outside_the_folder(tmp_path: Path, name: str) -> None:
    secret = tmp_path / "data_in" / "secret.wav"
    user = _user_folder(tmp_path, [])
    secret.write_bytes(_wav_bytes())
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.wav").write_bytes(_wav_bytes())
    if name == "ABSOLUTE":
        name = str(secret)
    (user / "labels.tsv").write_text(f"filename\tsplit\tlabels\nok.wav\ttrain\tDog\n{name}\ttrain\tDog\n")
    dest = tmp_path / "out" / "download"
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(DownloadError) as err:
        download("folder", dest, url=str(user))
    message = str(err.value)
    assert str(user / "labels.tsv") in message and ":3:" in message, message
    assert "\n" not in message and len(message) < 500, message
    after = sorted(p for p in tmp_path.rglob("*"))
    outside = [p for p in after if p not in before and not p.is_relative_to(dest)]
    assert not outside, f"written outside {dest}: {outside}"
    assert not (dest / "folder" / ".completed").exists()


def test_folder_source_still_accepts_subfolders(tmp_path: Path) -> None:
    user = _user_folder(tmp_path, ["ok.wav\ttrain\tDog", "sub/b.wav\tvalid\tCat"])
    (user / "sub").mkdir()
    (user / "sub" / "b.wav").write_bytes(_wav_bytes())
    download("folder", tmp_path / "download", url=str(user))
    assert (tmp_path / "download" / "folder" / "audio" / "sub" / "b.wav").is_file()


# ------------------------------------------------------------------------------------ tar members


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    return info


def _esc50_members(csv_member: tuple[tarfile.TarInfo, bytes | None] | None = None):
    csv_text = b"filename,fold,target,category,esc10,src_file,take\n1-100-A-0.wav,1,0,dog,True,100,A\n"
    return [
        csv_member or (_info("ESC-50-master/meta/esc50.csv"), csv_text),
        (_info("ESC-50-master/audio/1-100-A-0.wav"), _wav_bytes()),
    ]


@pytest.mark.parametrize("has_filter", [True, False], ids=["data-filter", "python-without-filters"])
def test_setuid_bits_are_stripped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, has_filter: bool) -> None:
    if not has_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    members = _esc50_members() + [(_info("ESC-50-master/tool.sh", mode=0o4777), b"#!/bin/sh\n")]
    archive = _tar(tmp_path / "a.tar.gz", members)
    out = extract(archive, tmp_path / "raw")
    mode = (out / "ESC-50-master" / "tool.sh").stat().st_mode
    assert not mode & (stat.S_ISUID | stat.S_ISGID), oct(mode)
    assert not mode & stat.S_IWOTH, oct(mode)


@pytest.mark.parametrize(
    ("kind", "label"),
    [(tarfile.CHRTYPE, "character device"), (tarfile.BLKTYPE, "block device"), (tarfile.FIFOTYPE, "FIFO")],
)
def test_special_members_are_refused(tmp_path: Path, kind: bytes, label: str) -> None:
    members = _esc50_members() + [(_info("ESC-50-master/dev0", kind=kind), None)]
    archive = _tar(tmp_path / "a.tar.gz", members)
    with pytest.raises(DownloadError, match=rf"{archive}.*ESC-50-master/dev0.*{label}"):
        extract(archive, tmp_path / "raw")
    assert not (tmp_path / "raw" / "ESC-50-master" / "dev0").exists()


@pytest.mark.parametrize(
    "link",
    [
        _info("ESC-50-master/up", kind=tarfile.SYMTYPE, link="../../outside"),
        _info("ESC-50-master/abs", kind=tarfile.SYMTYPE, link="/etc/passwd"),
        _info("ESC-50-master/hard", kind=tarfile.LNKTYPE, link="/etc/passwd"),
    ],
    ids=["symlink-up", "symlink-absolute", "hardlink-absolute"],
)
def test_links_leaving_the_target_are_refused(tmp_path: Path, link: tarfile.TarInfo) -> None:
    archive = _tar(tmp_path / "a.tar.gz", _esc50_members() + [(link, None)])
    with pytest.raises(DownloadError, match=str(archive)):
        extract(archive, tmp_path / "raw")


def test_fifo_metadata_does_not_hang_the_download(tmp_path: Path) -> None:
    """`meta/esc50.csv` as a pipe: round one's download blocked forever opening it."""
    fifo = _info("ESC-50-master/meta/esc50.csv", tarfile.FIFOTYPE)
    archive = _tar(tmp_path / "esc50.tar.gz", _esc50_members((fifo, None)))
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            download("esc50", tmp_path / "download", url=archive.as_uri(), sha256=None)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():
        # unblock the reader so the thread ends, then fail
        for fifo in (tmp_path / "download").rglob("esc50.csv"):
            with open(fifo, "w"):
                pass
        pytest.fail("download of an archive holding a FIFO hung")
    assert outcome and isinstance(outcome[0], DownloadError), outcome
    assert "FIFO" in str(outcome[0]) and "meta/esc50.csv" in str(outcome[0])
