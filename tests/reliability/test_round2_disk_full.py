"""Round two: a full disk while `pack_hdf5` writes. Round one raised a clear error, removed the temporary file,
then the process died with SIGSEGV (rc 139) at exit: h5py closed a file whose flush had failed.

The full disk is a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored, so writes past it fail with EFBIG the way
they fail with ENOSPC) on a subprocess running the real stage script.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from audiopipe.data.synthetic import build_synthetic_source

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def resampled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resample")
    counts = {"train": 40, "valid": 2, "test": 2, "weak": 0, "unlabelled": 0}
    build_synthetic_source(root / "synthetic", counts=counts, duration_s=2.0, sample_rate=16000, seed=0)
    return root


@pytest.mark.parametrize("limit_bytes", [20_000, 300_000, 1_500_000], ids=["at-start", "early", "midway"])
def test_full_disk_in_pack_hdf5_exits_cleanly(tmp_path: Path, resampled: Path, limit_bytes: int) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"pack_hdf5": {"codec": "pcm16", "mp3_bitrate_kbps": 128},
                                      "tracking": {"enabled": False, "experiment": "x"}}))
    out = tmp_path / "pack"
    out.mkdir()
    (out / "train.h5").write_bytes(b"an earlier pack")

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / "pack_hdf5.py"), "--src", str(resampled), "--out", str(out),
         "--params", str(params)],
        preexec_fn=limit, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    assert proc.returncode == 1, f"rc {proc.returncode}: {proc.stderr[-1500:]}"
    assert last.startswith("OSError:") and ".train.h5." in last and ".part" in last, last
    assert "temporary file was removed" in last and "dvc repro pack_hdf5" in last, last
    assert sorted(p.name for p in out.iterdir()) == ["train.h5"], "a temporary file was left behind"
    assert (out / "train.h5").read_bytes() == b"an earlier pack"


def test_full_disk_while_writing_predictions_exits_cleanly(tmp_path: Path) -> None:
    script = (
        "import numpy as np\n"
        "from audiopipe.data.predictions import write_predictions\n"
        "ids = [f'c{i}' for i in range(20000)]\n"
        f"write_predictions({str(tmp_path / 'predictions.h5')!r}, {{'train': (ids, np.zeros((20000, 10)))}},\n"
        "                  [f'k{i}' for i in range(10)], teacher='t', checkpoints=[])\n"
    )

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    proc = subprocess.run([sys.executable, "-c", script], preexec_fn=limit, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    assert proc.returncode == 1, f"rc {proc.returncode}: {proc.stderr[-1500:]}"
    assert last.startswith("OSError:") and ".predictions.h5." in last and "predict_teacher" in last, last
    assert list(tmp_path.iterdir()) == [], "a temporary file was left behind"
