"""Two `dvc repro` invocations on one workspace at the same time: the second gets DVC's lock error with a
clear message (the busy output and the process holding it), and the cache and lock file are not corrupted
(status clean, a third repro is a no-op).

Two sweep workers on one Optuna storage are covered by tests/test_sweep.py
(`test_two_worker_processes_share_one_storage`: N trials in total, none lost or duplicated).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

DVC = Path(sys.executable).with_name("dvc")
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "1", "GIT_AUTHOR_NAME": "t",
       "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}

# The stage announces that it runs, then waits for the test's go-ahead, so the overlap never depends on timing.
STAGE = """
import pathlib, sys, time
pathlib.Path("started").write_text("1")
deadline = time.time() + 120
while not pathlib.Path("release").exists() and time.time() < deadline:
    time.sleep(0.02)
text = pathlib.Path("input.txt").read_text()
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/result.txt").write_text(text.upper() * 1000)
"""


def _sh(cmd: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=180,
                          check=False)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    if not DVC.exists() or shutil.which("git") is None:
        pytest.fail("dvc (in the venv) and git are required for this test")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "stage.py").write_text(STAGE)
    (repo / "input.txt").write_text("toy data\n")
    dvc_yaml = {"stages": {"toy": {"cmd": f"{sys.executable} stage.py", "deps": ["stage.py", "input.txt"],
                                   "outs": ["out"]}}}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml))
    (repo / ".gitignore").write_text("started\nrelease\n")
    for cmd in (["git", "init", "-q"], [DVC, "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "toy"]):
        proc = _sh(cmd, repo)  # type: ignore[arg-type]
        assert proc.returncode == 0, proc.stderr
    return repo


def test_second_dvc_repro_gets_a_clear_lock_error_and_the_cache_survives(workspace: Path) -> None:
    first = subprocess.Popen([str(DVC), "repro"], cwd=workspace, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (workspace / "started").exists():
        assert first.poll() is None, f"the first repro ended early: {first.stdout.read()}"  # type: ignore[union-attr]
        assert time.time() < deadline, "the first repro never started its stage"
        time.sleep(0.05)

    second = _sh([DVC, "repro"], workspace)
    (workspace / "release").write_text("go")
    first_out, _ = first.communicate(timeout=180)

    assert second.returncode != 0, f"the second repro should be refused while the first runs: {second.stdout}"
    message = second.stdout + second.stderr
    # DVC holds the repo lock only while it plans; during the stage's command the outputs carry a read/write
    # lock, so the refusal names the busy output, the blocking process and what to do if that process is gone.
    repo_lock = "Unable to acquire lock" in message and "another DVC process is running" in message
    rw_lock = f"'{workspace / 'out'}' is busy" in message and f"(PID {first.pid})" in message
    assert repo_lock or rw_lock, message
    assert "remove" in message or "try again" in message or "terminated" in message, message
    assert first.returncode == 0, first_out

    result = (workspace / "out" / "result.txt").read_bytes()
    assert result == b"TOY DATA\n" * 1000
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    out_entry = lock["stages"]["toy"]["outs"][0]
    assert out_entry["path"] == "out" and out_entry["nfiles"] == 1

    status = _sh([DVC, "status"], workspace)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout + status.stderr
    again = _sh([DVC, "repro"], workspace)
    assert again.returncode == 0, again.stderr
    assert "didn't change, skipping" in again.stdout or "up to date" in again.stdout, again.stdout
    assert not (workspace / "started").stat().st_mtime > (workspace / "release").stat().st_mtime, "the stage reran"

    # The cached copy is the file that was produced (dvc's md5 of a text file is the plain md5 here: no CRLF).
    cached = list((workspace / ".dvc" / "cache" / "files" / "md5").rglob("*"))
    digest = hashlib.md5(result).hexdigest()
    assert any(p.is_file() and p.read_bytes() == result and p.parent.name + p.name == digest for p in cached)
    check = _sh([DVC, "data", "status", "--granular", "--unchanged"], workspace)
    assert check.returncode == 0 and "Not in cache" not in check.stdout, check.stdout
