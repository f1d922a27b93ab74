"""Bad-input catalogue: one row per case, each run through the module a stage really calls.

Every row expects either a clear error (its message names the file or key and says what to do) or a
listed reject (a `rejects.tsv` row, or an accepted-and-converted input for odd-but-valid audio), and the
harness checks afterwards that files written before the failure are byte-identical and that no temporary
(`.part` / `.tmp`) file was left behind. `len(CASES)` is the number of cases tried.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import struct
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from torch import nn

from audiopipe.audio.io import REJECT_REASONS, AudioDecodeError, audio_info, ffmpeg_exe, save_audio
from audiopipe.audio.resample import resample_file
from audiopipe.config import ConfigError, ResampleConfig, load_params
from audiopipe.data.download import DownloadError, download, extract, fetch
from audiopipe.data.hdf5 import ClipFileError, ClipReader, ClipWriter
from audiopipe.data.manifests import Clip, ManifestError, write_metadata
from audiopipe.data.predictions import PredictionsError, read_predictions, write_predictions
from audiopipe.data.prepare import pack_dataset, resample_dataset
from audiopipe.storage import (
    CheckpointError,
    load_checkpoint,
    load_state_dict_strict,
    save_checkpoint,
    write_json_atomic,
)

REPO = Path(__file__).resolve().parents[2]
RATE = 16000
# A message "says what to do" when it contains one of these instructions.
TODO = r"(rerun|re-run|run the|repack|add (it|them)|fix|delete|check|re-save|use one of|choose|allowed keys|expected)"


def _tone(seconds: float = 0.25, rate: int = RATE, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


class Workspace:
    """tmp_path plus the files that must survive a failure unchanged."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.monkeypatch = root, monkeypatch
        self.kept: dict[Path, bytes] = {}

    def keep(self, path: Path, data: bytes) -> Path:
        """Write `data` to `path` as an earlier run's output that the failing call must not touch."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.kept[path] = data
        return path

    def check(self) -> None:
        for path, data in self.kept.items():
            assert path.is_file() and path.read_bytes() == data, f"{path} was lost or changed by the failure"
        temps = [p for p in self.root.rglob("*") if p.name.endswith((".part", ".tmp", ".partial"))]
        assert not temps, f"half-written files left behind: {temps}"


@dataclass(frozen=True)
class Case:
    """`act(ws)` builds the bad input and calls the entry point; it raises `error` whose message matches
    `expect`, or (error None) returns a report (reject row, conversion summary) that matches `expect`."""

    name: str
    act: Callable[[Workspace], str]
    error: type[BaseException] | tuple[type[BaseException], ...] | None
    expect: str


# ---------------------------------------------------------------- audio through the resample stage's task


def _resample_with(ws: Workspace, name: str, make: Callable[[Path], None]) -> str:
    """Resample a folder holding one good clip and `name`; return the rejects.tsv rows (header dropped)."""
    src, out = ws.root / "download", ws.root / "resample"
    src.mkdir()
    sf.write(src / "good.wav", _tone(), RATE)
    make(src / name)
    ws.keep(out / "earlier" / "kept.wav", b"RIFF an earlier run's output")
    resample_dataset(src, out, sample_rate=RATE, workers=1, max_reject_fraction=1.0, progress=False)
    assert audio_info(out / "good.wav").frames == int(0.25 * RATE), "the good clip must still be converted"
    assert not (out / name).with_suffix(".wav").exists(), "a rejected input must leave no output"
    return "\n".join((out / "rejects.tsv").read_text().splitlines()[1:])


def _reject(name: str, make: Callable[[Path], None]) -> Callable[[Workspace], str]:
    return lambda ws: _resample_with(ws, name, make)


def _riff(fmt_tag: int, data: bytes, channels: int = 1, bits: int = 16) -> bytes:
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, RATE, RATE * channels * bits // 8, channels * bits // 8, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _non_finite(value: float) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        audio = _tone()
        audio[100] = value
        sf.write(path, audio, RATE, subtype="FLOAT")

    return make


def _video_only(path: Path) -> None:
    cmd = [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "color=c=black:s=16x16:d=0.2", "-c:v", "mpeg4"]
    subprocess.run([*cmd, "-f", "mp4", "-y", str(path)], check=True, capture_output=True)


def _converted(rate: int, channels: int) -> Callable[[Workspace], str]:
    """An odd but valid input: accepted, mono PCM16 at RATE, right duration, signal kept (channel 0 carries it)."""

    def act(ws: Workspace) -> str:
        src, out = ws.root / "download", ws.root / "resample"
        src.mkdir()
        audio = np.zeros((int(rate * 0.5), channels), np.float32)
        audio[:, 0] = _tone(0.5, rate, 300.0)
        sf.write(src / "odd.wav", audio, rate)
        resample_dataset(src, out, sample_rate=RATE, workers=1, max_reject_fraction=0.0, progress=False)
        result, result_rate = sf.read(out / "odd.wav", dtype="float32")
        info = sf.info(out / "odd.wav")
        reference = _tone(0.5, RATE, 300.0)
        corr = float(np.corrcoef(result[200:-200], reference[200:-200])[0, 1])
        assert (result_rate, info.channels, info.subtype, result.shape[0]) == (RATE, 1, "PCM_16", RATE // 2)
        assert corr > 0.99, f"the converted signal lost its content (correlation {corr:.3f})"
        return f"odd.wav -> {result_rate} Hz mono, {result.shape[0]} samples"

    return act


# VmHWM (peak RSS of this process image, in kB) rather than ru_maxrss, which Linux carries over from the
# forking parent across exec and would hide the growth.
HUGE_SCRIPT = """
import sys
from audiopipe.audio.resample import resample_file
def peak_kib():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
before = peak_kib()
seconds = resample_file(sys.argv[1], sys.argv[2], 32000)
print(seconds, (peak_kib() - before) / 1024)
"""


def _huge_file(ws: Workspace) -> str:
    """A 20-minute 8 kHz wav to 32 kHz: peak RSS of the converting process must not grow by the decoded size."""
    src = ws.root / "long.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(src, "w", samplerate=8000, channels=1, subtype="PCM_16") as fh:
        for _ in range(20):
            fh.write((0.05 * rng.standard_normal(8000 * 60)).astype(np.float32))
    dst = ws.root / "long32k.wav"
    proc = subprocess.run([sys.executable, "-c", HUGE_SCRIPT, str(src), str(dst)], capture_output=True, text=True,
                          timeout=120, check=True)
    seconds, growth_mib = (float(x) for x in proc.stdout.split())
    assert seconds == pytest.approx(1200.0) and audio_info(dst).frames == 1200 * 32000
    decoded_mib = 1200 * 32000 * 4 / 2**20
    assert growth_mib < 64, (f"resample_file grew peak RSS by {growth_mib:.0f} MiB for a 20-min file "
                             f"({decoded_mib:.0f} MiB decoded): it loads the whole file instead of streaming")
    return f"long.wav streamed, peak RSS +{growth_mib:.0f} MiB"


# ---------------------------------------------------------------- metadata through the pack stage's task

CLASSES = ["Dog", "Cat"]


def _metadata_folder(ws: Workspace, edit: Callable[[Path], None]) -> str:
    """A data folder whose metadata `edit` breaks; pack_dataset must refuse it and keep the earlier pack."""
    folder = ws.root / "resample" / "demo"
    clips = [
        Clip("a", "audio/train/a.wav", "train", ("Dog",), ((0.1, 0.2, "Dog"),), duration_s=0.25),
        Clip("b", "audio/train/b.wav", "train", ("Cat",), ((0.0, 0.25, "Cat"),), duration_s=0.25),
        Clip("c", "audio/weak/c.wav", "weak", ("Cat",), duration_s=0.25),
    ]
    write_metadata(folder, clips, CLASSES)
    for clip in clips:
        (folder / clip.path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / clip.path, _tone(), RATE)
    edit(folder)
    out = ws.root / "pack_hdf5"
    ws.keep(out / "train.h5", b"an earlier pack")
    pack_dataset(folder.parent, out, codec="pcm16", mp3_bitrate_kbps=128, progress=False)
    return "packed"


def _append(name: str, row: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        with open(folder / name, "a") as fh:
            fh.write(row + "\n")

    return edit


def _replace_text(name: str, old: str, new: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / name
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))

    return edit


def _meta(edit: Callable[[Path], None]) -> Callable[[Workspace], str]:
    return lambda ws: _metadata_folder(ws, edit)


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _esc50_bad_csv(ws: Workspace) -> str:
    """ESC-50 archive whose meta/esc50.csv lacks the `fold` column (a different release or a broken edit)."""
    wav = io.BytesIO()
    sf.write(wav, _tone(), RATE, format="WAV")
    csv_text = "filename,target,category,src_file\n1-100-A-0.wav,0,dog,100\n"
    archive = _zip(ws.root / "esc50.zip", {"ESC-50-master/meta/esc50.csv": csv_text.encode(),
                                           "ESC-50-master/audio/1-100-A-0.wav": wav.getvalue()})
    download("esc50", ws.root / "download", url=archive.as_uri(), sha256=None)
    return "built"


def _folder_bad_labels(ws: Workspace) -> str:
    user = ws.root / "my_audio"
    user.mkdir()
    sf.write(user / "x.wav", _tone(), RATE)
    (user / "labels.tsv").write_text("filename\tsplit\tlabels\nx.wav\ttrain\tDog\ny.wav train Dog\n")
    download("folder", ws.root / "download", url=str(user))
    return "built"


# ---------------------------------------------------------------- HDF5 files read by the training stages


def _pack(path: Path) -> Path:
    with ClipWriter(path, class_names=CLASSES, sample_rate=RATE, has_strong=True, split="train") as writer:
        for i in range(3):
            writer.add(f"clip{i}", _tone(), targets=[1, 0], events=[(0.0, 0.1, 0)])
    return path


def _truncated_pack(ws: Workspace) -> str:
    path = _pack(ws.root / "train.h5")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    ClipReader(path).read_audio(2)
    return "read"


def _foreign_pack(ws: Workspace) -> str:
    path = ws.root / "train.h5"
    with h5py.File(path, "w") as f:  # e.g. a PaSST/EfficientAT mp3 pack or a Keras weights file
        f.create_dataset("mp3", data=np.zeros((3, 10), np.uint8))
        f.create_dataset("target", data=np.zeros((3, 527), np.float32))
    ClipReader(path)
    return "read"


def _foreign_predictions(ws: Workspace) -> str:
    path = ws.root / "predictions.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("train/logits", data=np.zeros((3, 2), np.float32))
    read_predictions(path, "train")
    return "read"


def _truncated_predictions(ws: Workspace) -> str:
    path = ws.root / "predictions.h5"
    write_predictions(path, {"train": (["a", "b"], np.zeros((2, 2), np.float32))}, CLASSES, "t", [])
    path.write_bytes(path.read_bytes()[:600])
    read_predictions(path, "train")
    return "read"


# ---------------------------------------------------------------- checkpoints


def _tiny_model() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))


def _load_edited(edit: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Workspace], str]:
    def act(ws: Workspace) -> str:
        state = _tiny_model().state_dict()
        edit(state)
        path = save_checkpoint(ws.root / "student.pt", {"builder": "toy", "model": state})
        load_state_dict_strict(_tiny_model(), load_checkpoint(path)["model"], source=str(path))
        return "loaded"

    return act


class Planted:
    """Unpickling this object runs os.mkdir(marker): stands in for any code an attacker pickles."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (self.marker,)


def _pickled_code(ws: Workspace) -> str:
    marker = ws.root / "code_ran"
    path = ws.root / "downloaded.pt"
    torch.save({"model": _tiny_model().state_dict(), "config": Planted(marker)}, path)
    try:
        load_checkpoint(path)
    finally:
        assert not marker.exists(), "loading the checkpoint executed pickled code"
    return "loaded"


def _truncated_checkpoint(ws: Workspace) -> str:
    path = save_checkpoint(ws.root / "eat.pt", {"model": _tiny_model().state_dict()})
    path.write_bytes(path.read_bytes()[:300])
    load_checkpoint(path)
    return "loaded"


# ---------------------------------------------------------------- params


def _params(edit: Callable[[dict[str, object]], None] | str) -> Callable[[Workspace], str]:
    def act(ws: Workspace) -> str:
        path = ws.root / "params.yaml"
        if isinstance(edit, str):
            path.write_text(edit)
        else:
            section: dict[str, object] = {"sample_rate": 32000, "workers": 2, "max_reject_fraction": 0.05}
            edit(section)
            path.write_text(yaml.safe_dump({"resample": section}))
        load_params("resample", ResampleConfig, path)
        return "loaded"

    return act


# ---------------------------------------------------------------- downloads and archives


def _checksum_mismatch(ws: Workspace) -> str:
    payload = ws.root / "www" / "corpus.zip"
    payload.parent.mkdir()
    payload.write_bytes(b"tampered or truncated archive bytes")
    target = ws.keep(ws.root / "archives" / "corpus.zip", b"the archive fetched last time")
    fetch(payload.as_uri(), target, sha256="0" * 64)
    return "fetched"


def _slip(kind: str, member: str) -> Callable[[Workspace], str]:
    def act(ws: Workspace) -> str:
        archive = ws.root / f"evil.{kind}"
        victim = ws.keep(ws.root / "victim.txt", b"a file outside the extraction folder")
        if kind == "zip":
            _zip(archive, {"ok.txt": b"fine", member: b"overwritten"})
        else:
            with tarfile.open(archive, "w") as tf:
                for name, data in (("ok.txt", b"fine"), (member, b"overwritten")):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        target = ws.root / "raw" / "inner"
        try:
            extract(archive, target)
        finally:
            assert victim.read_bytes() == b"a file outside the extraction folder"
            assert not list(target.rglob("ok.txt")), "nothing is extracted from a refused archive"
        return "extracted"

    return act


# ---------------------------------------------------------------- disk full midway through a write


def _enospc(path: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _half_then_full(real: Callable[..., object]) -> Callable[..., object]:
    """Wrap a writer `real(target, ...)`: the bytes it would write are cut in half, then ENOSPC is raised."""

    def fake(target: object, *args: object, **kwargs: object) -> object:
        real(target, *args, **kwargs)
        path = Path(target.name if hasattr(target, "name") else target)  # type: ignore[arg-type, union-attr]
        if path.is_file():
            os.truncate(path, path.stat().st_size // 2)
        raise _enospc(path)

    return fake


def _full_save_audio(ws: Workspace) -> str:
    target = ws.keep(ws.root / "clip.wav", b"RIFF an earlier, complete file")
    ws.monkeypatch.setattr(sf, "write", _half_then_full(sf.write))
    save_audio(target, _tone(), RATE)
    return "written"


def _full_resample_file(ws: Workspace) -> str:
    src = ws.root / "in.wav"
    sf.write(src, _tone(), RATE * 2)  # needs resampling, so ffmpeg runs (a wav already at RATE is only copied)
    target = ws.keep(ws.root / "out" / "in.wav", b"RIFF an earlier, complete file")
    # ffmpeg writes the wav itself: stand in for it with a program that writes half a file to its output
    # path (the argument after "-f wav") and fails the way ffmpeg does on a full disk
    fake = ws.root / "fake_ffmpeg"
    fake.write_text(
        "#!/bin/sh\nprev=''\nfor a in \"$@\"; do\n  if [ \"$prev\" = wav ]; then head -c 2048 /dev/zero > \"$a\"; fi\n"
        "  prev=\"$a\"\ndone\necho 'Error writing trailer: No space left on device' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    ws.monkeypatch.setattr("audiopipe.audio.resample.ffmpeg_exe", lambda: str(fake))
    resample_file(src, target, RATE)
    return "written"


def _full_checkpoint(ws: Workspace) -> str:
    target = ws.keep(ws.root / "student.pt", b"an earlier checkpoint")
    ws.monkeypatch.setattr(torch, "save", _half_then_full_stream(torch.save))
    save_checkpoint(target, {"model": _tiny_model().state_dict()})
    return "written"


def _half_then_full_stream(real: Callable[..., object]) -> Callable[..., object]:
    def fake(obj: object, handle: io.BufferedWriter, *args: object, **kwargs: object) -> object:
        buffer = io.BytesIO()
        real(obj, buffer, *args, **kwargs)
        handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise _enospc(getattr(handle, "name", "checkpoint"))

    return fake


def _fail_nth_dataset(ws: Workspace, n: int) -> None:
    real = h5py.Group.create_dataset
    calls = {"n": 0}

    def fake(self: h5py.Group, name: str, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == n:
            raise _enospc(self.file.filename)
        return real(self, name, *args, **kwargs)

    ws.monkeypatch.setattr(h5py.Group, "create_dataset", fake)


def _full_pack(ws: Workspace) -> str:
    from audiopipe.data.synthetic import build_synthetic_source

    src = ws.root / "resample"
    build_synthetic_source(src / "synthetic", counts={"train": 2}, duration_s=0.25, sample_rate=RATE, seed=0)
    target = ws.keep(ws.root / "pack_hdf5" / "train.h5", b"an earlier pack")
    _fail_nth_dataset(ws, 4)  # audio written, index half written
    pack_dataset(src, target.parent, codec="pcm16", mp3_bitrate_kbps=128, progress=False)
    return "written"


def _full_predictions(ws: Workspace) -> str:
    target = ws.keep(ws.root / "predictions.h5", b"earlier predictions")
    _fail_nth_dataset(ws, 2)
    write_predictions(target, {"train": (["a"], np.zeros((1, 2), np.float32))}, CLASSES, "t", [])
    return "written"


def _full_metrics(ws: Workspace) -> str:
    target = ws.keep(ws.root / "metrics.json", b'{"valid/mAP": 0.5}\n')
    real = Path.write_text

    def fake(self: Path, text: str, *args: object, **kwargs: object) -> int:
        real(self, text[: len(text) // 2])
        raise _enospc(self)

    ws.monkeypatch.setattr(Path, "write_text", fake)
    write_json_atomic(target, {"valid/mAP": 0.75})
    return "written"


def _reject_row(name: str, reason: str, detail: str = ".+") -> str:
    return rf"^{re.escape(name)}\t{reason}\t{detail}$"


ENOSPC = "No space left on device"
CASES: list[Case] = [
    # audio: rejected with a reason in rejects.tsv, the rest of the folder still converted
    Case("corrupt_wav", _reject("corrupt.wav", lambda p: p.write_bytes(b"RIFF\x24\x10\0\0WAVEfmt " + bytes(300))),
         None, _reject_row("corrupt.wav", "corrupt")),
    Case("empty_file", _reject("empty.wav", lambda p: p.write_bytes(b"")), None, _reject_row("empty.wav", "empty")),
    Case("zero_samples", _reject("zero.wav", lambda p: sf.write(p, np.zeros(0, np.float32), RATE)), None,
         _reject_row("zero.wav", "zero duration")),
    Case("nan_samples", _reject("nan.wav", _non_finite(np.nan)), None, _reject_row("nan.wav", "non-finite samples")),
    Case("inf_samples", _reject("inf.wav", _non_finite(np.inf)), None, _reject_row("inf.wav", "non-finite samples")),
    Case("text_named_wav", _reject("notes.wav", lambda p: p.write_text("meeting notes\n" * 20)), None,
         _reject_row("notes.wav", "not audio")),
    Case("unsupported_codec", _reject("codec.wav", lambda p: p.write_bytes(_riff(0x1234, bytes(2000)))), None,
         _reject_row("codec.wav", "(corrupt|not audio)", r".*(codec|[Dd]ecoder|unsupported).*")),
    Case("video_without_audio", _reject("clip.mp4", _video_only), None,
         _reject_row("clip.mp4", "not audio", "no audio stream")),
    Case("all_zero_samples", _reject("mute.wav", lambda p: sf.write(p, np.zeros(4000, np.float32), RATE)), None,
         _reject_row("mute.wav", "silent")),
    # audio: odd but valid, converted to mono PCM16 at the target rate
    Case("stereo", _converted(RATE, 2), None, r"16000 Hz mono, 8000 samples"),
    Case("multichannel_5_1", _converted(48000, 6), None, r"16000 Hz mono, 8000 samples"),
    Case("rate_8k", _converted(8000, 1), None, r"16000 Hz mono, 8000 samples"),
    Case("rate_44k1", _converted(44100, 1), None, r"16000 Hz mono, 8000 samples"),
    Case("rate_96k", _converted(96000, 1), None, r"16000 Hz mono, 8000 samples"),
    Case("huge_file_streamed", _huge_file, None, r"long\.wav streamed"),
    # metadata (read by pack_hdf5): refused with file:line and the fix; the earlier pack stays
    Case("unknown_label_weak", _meta(_append("weak.tsv", "audio/train/a.wav\tDog,Unicorn")), ManifestError,
         r"weak\.tsv:5: unknown label 'Unicorn'; add it to classes\.txt"),
    Case("unknown_label_strong", _meta(_append("strong.tsv", "audio/train/a.wav\t0.1\t0.2\tHorse")), ManifestError,
         r"strong\.tsv:4: unknown label 'Horse'; add it to classes\.txt"),
    Case("malformed_tsv_columns", _meta(_append("strong.tsv", "audio/train/a.wav 0.1 0.2 Dog")), ManifestError,
         r"strong\.tsv:4: malformed row .* fix or delete the line"),
    Case("malformed_tsv_header", _meta(_replace_text("strong.tsv", "event_label", "label")), ManifestError,
         r"strong\.tsv:1: expected the header .*fix the first line"),
    Case("malformed_manifest_json", _meta(_append("manifest.jsonl", '{"clip_id": "d", "path": ')), ManifestError,
         r"manifest\.jsonl:4: malformed manifest row .*fix or delete the line"),
    Case("malformed_csv_esc50", _esc50_bad_csv, (DownloadError, ManifestError),
         rf"esc50\.csv.*(fold|column).*{TODO}"),
    Case("malformed_labels_tsv_folder", _folder_bad_labels, DownloadError,
         r"labels\.tsv:3: expected filename<TAB>split<TAB>labels"),
    Case("duplicate_clip_in_manifest",
         _meta(_append("manifest.jsonl", json.dumps({"clip_id": "a", "path": "audio/weak/a2.wav", "split": "weak"}))),
         ManifestError, r"manifest\.jsonl: duplicate clip name 'a' .*must be unique"),
    Case("duplicate_clip_in_weak_tsv", _meta(_append("weak.tsv", "audio/train/a.wav\tCat")), ManifestError,
         r"weak\.tsv:5: duplicate clip name 'audio/train/a\.wav'; list each clip once"),
    Case("onset_after_offset", _meta(_append("strong.tsv", "audio/train/a.wav\t0.2\t0.1\tDog")), ManifestError,
         r"strong\.tsv:4: event 0\.2-0\.1 s must satisfy 0 <= onset <= offset"),
    Case("event_after_clip_end", _meta(_append("strong.tsv", "audio/train/a.wav\t0.1\t3.0\tDog")), ManifestError,
         r"strong\.tsv:4: event 0\.1-3\.0 s must satisfy .* <= 0\.25 s"),
    Case("negative_onset", _meta(_append("strong.tsv", "audio/train/a.wav\t-0.1\t0.1\tDog")), ManifestError,
         r"strong\.tsv:4: event -0\.1-0\.1 s must satisfy 0 <= onset"),
    Case("non_numeric_onset", _meta(_append("strong.tsv", "audio/train/a.wav\tearly\t0.1\tDog")), ManifestError,
         r"strong\.tsv:4: onset/offset must be numbers"),
    # packed clips and teacher predictions
    Case("truncated_hdf5", _truncated_pack, ClipFileError, rf"train\.h5.*{TODO}"),
    Case("hdf5_from_another_tool", _foreign_pack, ClipFileError, rf"train\.h5: not an audiopipe clip file.*{TODO}"),
    Case("predictions_from_another_tool", _foreign_predictions, PredictionsError, rf"predictions\.h5.*{TODO}"),
    Case("truncated_predictions", _truncated_predictions, PredictionsError, rf"predictions\.h5.*{TODO}"),
    # checkpoints
    Case("checkpoint_missing_keys", _load_edited(lambda s: s.pop("2.bias")), CheckpointError,
         r"student\.pt: .*missing keys \(1\): 2\.bias; check that the model name/size"),
    Case("checkpoint_extra_keys", _load_edited(lambda s: s.update({"head.weight": torch.zeros(1)})), CheckpointError,
         r"student\.pt: .*unexpected keys \(1\): head\.weight; check that the model name/size"),
    Case("checkpoint_shape_mismatch", _load_edited(lambda s: s.update({"0.weight": torch.zeros(5, 2)})),
         CheckpointError, r"student\.pt: .*0\.weight: checkpoint \(5, 2\) vs model \(3, 2\); check that"),
    Case("checkpoint_with_pickled_code", _pickled_code, CheckpointError,
         r"downloaded\.pt: refused to load.*pickled Python objects.*re-save it as a plain state dict"),
    Case("truncated_checkpoint", _truncated_checkpoint, CheckpointError,
         r"eat\.pt: cannot read checkpoint.*rerun the stage that wrote it"),
    # params
    Case("params_unknown_key", _params(lambda s: s.update(sample_rat=16000)), ConfigError,
         r"params\.yaml:resample: unknown key\(s\) \['sample_rat'\]; allowed keys are"),
    Case("params_missing_key", _params(lambda s: s.pop("workers")), ConfigError,
         r"params\.yaml:resample: missing key\(s\) \['workers'\]; add them to params\.yaml"),
    Case("params_ill_typed", _params(lambda s: s.update(sample_rate="fast")), ConfigError,
         r"params\.yaml:resample\.sample_rate: expected an integer, got 'fast'"),
    Case("params_bool_for_int", _params(lambda s: s.update(workers=True)), ConfigError,
         r"params\.yaml:resample\.workers: expected an integer, got True"),
    Case("params_missing_section", _params("pack_hdf5: {codec: pcm16}\n"), ConfigError,
         r"params\.yaml: no section 'resample'; sections present: \['pack_hdf5'\]"),
    Case("params_broken_yaml", _params("resample:\n  sample_rate: 32000\n\tworkers: 2\n"), ConfigError,
         rf"params\.yaml.*line 3.*{TODO}"),
    # downloads and archives
    Case("download_checksum_mismatch", _checksum_mismatch, DownloadError,
         r"corpus\.zip: sha256 [0-9a-f]{64} != expected 0{64}; the partial file was deleted, rerun"),
    Case("zip_slip_dotdot", _slip("zip", "../../victim.txt"), DownloadError,
         r"'\.\./\.\./victim\.txt' would be written outside .*refusing to extract"),
    Case("tar_slip_dotdot", _slip("tar", "../../victim.txt"), DownloadError,
         r"'\.\./\.\./victim\.txt' would be written outside .*refusing to extract"),
    Case("tar_absolute_path", _slip("tar", "/tmp/audiopipe-victim.txt"), DownloadError,
         r"'/tmp/audiopipe-victim\.txt' would be written outside .*refusing to extract"),
    # disk full midway through a write: the error surfaces, the earlier file is intact, no temp file is left
    Case("disk_full_save_audio", _full_save_audio, OSError, ENOSPC),
    Case("disk_full_resample_file", _full_resample_file, OSError, ENOSPC),
    Case("disk_full_checkpoint", _full_checkpoint, OSError, ENOSPC),
    Case("disk_full_pack_hdf5", _full_pack, OSError, ENOSPC),
    Case("disk_full_predictions", _full_predictions, OSError, ENOSPC),
    Case("disk_full_metrics_json", _full_metrics, OSError, ENOSPC),
]


def test_catalogue_is_large_and_names_are_unique() -> None:
    assert len(CASES) >= 24
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = Workspace(tmp_path, monkeypatch)
    if case.error is None:
        report = case.act(ws)
        assert re.search(case.expect, report, flags=re.MULTILINE), f"{case.name}: got {report!r}"
        if report.count("\t") >= 2:  # a rejects.tsv row: its reason is one of the documented ones
            assert report.split("\t")[1] in REJECT_REASONS
    else:
        with pytest.raises(case.error) as info:
            case.act(ws)
        assert re.search(case.expect, str(info.value)), f"{case.name}: unclear message {str(info.value)!r}"
    monkeypatch.undo()
    ws.check()


def test_decode_error_names_file_and_reason(tmp_path: Path) -> None:
    """The exception behind each reject row carries the file name (for logs) and a documented reason."""
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF" + bytes(100))
    with pytest.raises(AudioDecodeError) as info:
        resample_file(path, tmp_path / "out.wav", RATE)
    assert info.value.reason in REJECT_REASONS and str(path) in str(info.value)
