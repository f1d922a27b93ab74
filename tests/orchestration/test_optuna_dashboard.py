"""`make optuna-ui`: optuna-dashboard serves a sweep study on 127.0.0.1 and shows the objective's name."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("optuna_dashboard")
from audiopipe.sweep import init_study  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_make_optuna_ui_serves_the_study_on_loopback(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    init_study(storage, "distill_mobilenet", "maximize", "valid/mAP")
    port = _free_port()
    dry = subprocess.run(["make", "-n", "optuna-ui", f"OPTUNA_STORAGE={storage}", f"OPTUNA_PORT={port}"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    command = next(line for line in dry.splitlines() if "optuna-dashboard" in line)
    assert "--host 127.0.0.1" in command
    exe = str(Path(sys.executable).parent / "optuna-dashboard")
    proc = subprocess.Popen([exe, storage, "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    try:
        deadline, body = time.monotonic() + 60, None
        while body is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    body = json.loads(response.read())
            except OSError:
                time.sleep(0.3)
        assert body is not None, "optuna-dashboard did not answer within 60 s"
        (study,) = body["study_summaries"]
        assert study["study_name"] == "distill_mobilenet"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}", timeout=5) as r:
            detail = json.loads(r.read())
        assert "valid/mAP" in json.dumps(detail), detail  # the objective's name, not "Objective 0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
