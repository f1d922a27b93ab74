"""Fixtures for the data tests: a tiny synthetic pack, a tiny downloaded data folder, a 127.0.0.1 file server."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from audiopipe.data.synthetic import build_synthetic_source, make_synthetic_pack

TINY_COUNTS = {"train": 3, "valid": 2, "test": 2, "weak": 3, "unlabelled": 2}


@pytest.fixture
def synthetic_pack(tmp_path: Path) -> dict[str, Path]:
    return make_synthetic_pack(tmp_path / "pack", n_per_split=3, sample_rate=16000, seed=0)


@pytest.fixture
def synthetic_folder(tmp_path: Path) -> Path:
    """A data folder as the download stage writes it (`<root>/synthetic/...`); returns the folder."""
    folder = tmp_path / "download" / "synthetic"
    build_synthetic_source(folder, counts=TINY_COUNTS, duration_s=1.0, sample_rate=16000, seed=0)
    return folder


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (206), quiet."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: _RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
