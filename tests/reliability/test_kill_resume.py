"""Kill -9 in the middle of a stage, rerun it, and compare with an uninterrupted run.

The resample stage has this test already (tests/stages/test_data_stages.py); here: pack_hdf5 (outputs must
be byte-identical) and distill_mobilenet (final weights identical on CPU with the same seed). The stage scripts
run as subprocesses in tmp_path with a tiny params.yaml, as `dvc repro` runs them.
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from audiopipe.data.synthetic import build_synthetic_source, make_synthetic_pack

REPO = Path(__file__).resolve().parents[2]
DISTILL_TINY = {"duration_s": 1.0, "epochs": 2, "batch_size": 3, "device": "cpu", "amp": "none", "num_workers": 0,
                "kd_lambda": 1.0, "epoch_len": None}


def _write_params(tmp_path: Path, **sections: dict[str, object]) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, values in sections.items():
        params[name].update(values)
    params["tracking"]["enabled"] = False
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _command(stage: str, params: Path, *args: str | Path) -> list[str]:
    return [sys.executable, str(REPO / "stages" / f"{stage}.py"), "--params", str(params), *map(str, args)]


# One thread per stage process, as in the in-process tests (conftest): same arithmetic, and no oversubscription.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _kill_when(cmd: list[str], cwd: Path, ready: Callable[[], bool], timeout_s: float = 120.0) -> None:
    """Start `cmd`, SIGKILL it as soon as `ready()` holds; fail if it finished first."""
    # the stage runs niced: on a loaded machine the polling test process must not be starved past the kill point
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.nice(10))
    deadline = time.time() + timeout_s
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the stage ended (rc {proc.returncode}) before the kill point: {proc.stderr.read()[-2000:]}")
        assert time.time() < deadline, "the kill point never came"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("metrics.json", "timings.json")}


def test_killed_pack_hdf5_rerun_is_complete_and_byte_identical(tmp_path: Path) -> None:
    src = tmp_path / "data" / "resample"
    counts = {"train": 12, "valid": 12, "weak": 12}
    build_synthetic_source(src / "synthetic", counts=counts, duration_s=0.25, sample_rate=16000, seed=2)
    params = _write_params(tmp_path, pack_hdf5={"codec": "mp3"})  # mp3: one ffmpeg call per clip, so slow enough
    reference, out = tmp_path / "reference", tmp_path / "data" / "pack_hdf5"
    _run(_command("pack_hdf5", params, "--src", src, "--out", reference), tmp_path)
    assert sorted(_tree(reference)) == ["train.h5", "valid.h5", "weak.h5"]

    _kill_when(_command("pack_hdf5", params, "--src", src, "--out", out), tmp_path,
               lambda: (out / "train.h5").is_file())
    assert not (out / "weak.h5").exists() and not (out / "metrics.json").exists(), "the kill should land mid-way"

    _run(_command("pack_hdf5", params, "--src", src, "--out", out), tmp_path)
    assert (out / "metrics.json").is_file()
    produced, expected = _tree(out), _tree(reference)
    for name in expected:
        assert produced.get(name) == expected[name], f"{name} is missing or differs from the uninterrupted run"
    leftovers = sorted(set(produced) - set(expected))
    assert not leftovers, f"the killed run's temporary files are still in {out}: {leftovers}"


def test_killed_distill_mobilenet_resumes_to_identical_weights(tmp_path: Path) -> None:
    clips = tmp_path / "data" / "pack_hdf5"
    make_synthetic_pack(clips, n_per_split={"train": 6, "valid": 3}, sample_rate=16000, seed=4)
    params = _write_params(tmp_path, distill_mobilenet_nokd=DISTILL_TINY)
    reference, out = tmp_path / "reference", tmp_path / "data" / "distill_mobilenet"
    stage = ("distill_mobilenet", params, "--section", "distill_mobilenet_nokd", "--clips", clips, "--out")
    with pytest.MonkeyPatch.context() as mp:  # the uninterrupted reference runs in-process (saves a torch import)
        mp.chdir(tmp_path)
        mp.setattr(sys, "argv", _command(*stage, reference)[1:])
        runpy.run_path(str(REPO / "stages" / "distill_mobilenet.py"), run_name="reference")["main"]()

    resume = out / ".student.resume.pt"  # written at each epoch end
    _kill_when(_command(*stage, out), tmp_path, resume.is_file)
    assert not (out / "metrics.json").exists(), "the kill should land before the stage finished"
    time.sleep(0.05)
    state = torch.load(resume, map_location="cpu", weights_only=True)  # the resume file is never half-written
    assert 1 <= state["progress"]["epoch"] < DISTILL_TINY["epochs"]

    _run(_command(*stage, out), tmp_path)
    assert not resume.exists(), "the resume file is removed once the stage has finished"
    expected = torch.load(reference / "student.pt", map_location="cpu", weights_only=True)
    produced = torch.load(out / "student.pt", map_location="cpu", weights_only=True)
    assert produced["model"].keys() == expected["model"].keys()
    for key, value in expected["model"].items():
        torch.testing.assert_close(produced["model"][key], value, rtol=0, atol=0, msg=f"{key} differs after resume")
    assert produced["metrics"] == expected["metrics"]
    assert (out / "metrics.json").read_text() == (reference / "metrics.json").read_text()
