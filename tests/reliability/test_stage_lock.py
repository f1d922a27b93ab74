"""A second writer of one stage output folder is refused while the first (e.g. an orphan of a killed `dvc repro`)
is alive, and the lock dies with its process, even by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audiopipe.stage_lock import StageBusyError, hold_output_lock

REPO = Path(__file__).resolve().parents[2]
HOLDER = ("import sys, time\nfrom audiopipe.stage_lock import hold_output_lock\nhold_output_lock(sys.argv[1])\n"
          "print('locked', flush=True)\ntime.sleep(120)\n")


def _start_holder(out: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_stage_process_is_refused_while_an_orphan_writes(tmp_path: Path) -> None:
    out = tmp_path / "data" / "pretrain_eat"
    holder = _start_holder(out)
    try:
        started = time.time()
        stage = subprocess.run([sys.executable, str(REPO / "stages" / "pretrain_eat.py"), "--clips",
                                str(tmp_path / "no_packs"), "--out", str(out), "--params", str(REPO / "params.yaml")],
                               capture_output=True, text=True, timeout=120, check=False)
        assert stage.returncode != 0
        assert f"process {holder.pid} is still writing this stage's outputs" in stage.stderr, stage.stderr[-2000:]
        assert f"kill {holder.pid}" in stage.stderr
        assert time.time() - started < 60
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert hold_output_lock(out) == (out.parent / "pretrain_eat.lock").resolve()  # released by SIGKILL


def test_the_same_process_may_take_its_own_lock_again(tmp_path: Path) -> None:
    first = hold_output_lock(tmp_path / "stage")
    assert hold_output_lock(tmp_path / "stage") == first  # in-process reruns (tests, sweeps) are not refused


def test_the_error_names_the_folder(tmp_path: Path) -> None:
    holder = _start_holder(tmp_path / "evaluate")
    try:
        with pytest.raises(StageBusyError, match=rf"{tmp_path.name}/evaluate: process {holder.pid} is still"):
            hold_output_lock(tmp_path / "evaluate")
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
