"""Fixture builders for the corpus converters: tiny wavs (1 s, 16 kHz) and corpora in their release layouts."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

Files = dict[str, bytes | str]


@pytest.fixture
def wav() -> Callable[..., bytes]:
    """`wav(freq=440.0)`: the bytes of a 1-s, 16-kHz mono PCM16 tone (distinct files get distinct tones)."""

    def make(freq: float = 440.0, seconds: float = 1.0) -> bytes:
        t = np.arange(int(16000 * seconds)) / 16000
        buf = io.BytesIO()
        sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format="WAV", subtype="PCM_16")
        return buf.getvalue()

    return make


def _bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


@pytest.fixture
def write_tree() -> Callable[[Path, Files], Path]:
    """`write_tree(root, {relative path: bytes or text})` writes the files and returns `root`."""

    def write(root: Path, files: Files) -> Path:
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(_bytes(data))
        return root

    return write


@pytest.fixture
def make_archive() -> Callable[[Path, Files], Path]:
    """`make_archive(path, files)` writes a .tar.gz or .zip (by suffix) holding `files`; returns `path`."""

    def make(path: Path, files: Files) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path, "w") as zf:
                for name, data in files.items():
                    zf.writestr(name, _bytes(data))
            return path
        with tarfile.open(path, "w:gz") as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(_bytes(data))
                tf.addfile(info, io.BytesIO(_bytes(data)))
        return path

    return make
