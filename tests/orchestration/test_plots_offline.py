"""`flows/plots.py`: DVC's plot data (named x/y columns) drawn as PNGs behind an index.html with no CDN."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dvc")
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "1", "CI": "true"}


def test_plots_render_offline_from_dvc_json(tmp_path: Path) -> None:
    (tmp_path / "curve.csv").write_text("epoch,valid/mAP,train/lr\n0,0.1,1.0\n1,0.3,0.5\n2,0.4,0.1\n")
    (tmp_path / "dvc.yaml").write_text("plots:\n  - curve.csv:\n      x: epoch\n      y: valid/mAP\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, env=ENV, check=True)
    out = subprocess.run([sys.executable, str(ROOT / "flows" / "plots.py"), "--out", "site"], cwd=tmp_path, env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "site" / "index.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "valid/mAP over epoch" in page  # the declared y column, not the last one (train/lr)
    pngs = list((tmp_path / "site").glob("*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:4] == b"\x89PNG"
