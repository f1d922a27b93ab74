"""Cost of serving a logged tagger from a fresh environment: `mlflow models predict --env-manager uv`.

    .venv/bin/python benchmarks/mlflow_env.py                  # work folder in the system temp dir, removed after
    .venv/bin/python benchmarks/mlflow_env.py --workdir /tmp/x --keep

Logs a tiny MobileNet tagger (random weights, 3 classes) as the project logs its taggers (pyfunc from code,
`code_paths`, pinned requirements), registers it as `student`, then runs `mlflow models predict -m
models:/student/1 --env-manager uv` on a 1-s and a 12-s clip twice: with an empty uv cache (MLflow builds the
environment from PyPI: the pinned Python, requirements.txt, then the prediction) and again with that cache warm
(MLflow still builds a new environment per call, uv links it from its cache). Prints wall times, the sum of
the download sizes uv prints (it names only the larger wheels, so a lower bound) and the size of its cache.
Needs PyPI; uv comes with the dev extra and must be on PATH (this script puts the interpreter's bin folder
first). Downloads several GB (PyPI's Linux torch is the CUDA build): point --workdir at a disk with ~6 GB free.
Measured (2 shared cores, load ~7): cold 87.4 s (>= 2.71 GiB downloaded, 5.05 GiB uv cache), warm 56.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
_SIZE = re.compile(r"Downloading \S+ \(([\d.]+)(KiB|MiB|GiB)\)")
_UNIT = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def log_tiny_tagger(root: Path) -> str:
    """A tiny registered tagger in a sqlite store under `root`; returns the tracking URI."""
    import mlflow
    import torch

    from audiopipe.models import build_model
    from audiopipe.storage import save_checkpoint
    from audiopipe.tracking.pyfunc_model import log_pyfunc_model

    kwargs = {"width_mult": 0.1, "n_classes": 3, "sample_rate": 16000, "n_mels": 32, "hop_length": 320}
    torch.manual_seed(0)
    model = build_model("mn_tagger", **kwargs)
    checkpoint = save_checkpoint(root / "student.pt", {
        "builder": "mn_tagger", "builder_kwargs": kwargs, "model": model.state_dict(), "sample_rate": 16000,
        "class_names": ["Speech", "Dog", "Alarm"], "config": {}, "metrics": {}, "postprocessing": {}})
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("mlflow_env", artifact_location=str(root / "artifacts"))
    with mlflow.start_run(experiment_id=experiment):
        log_pyfunc_model(mlflow, checkpoint, "student")
    return uri


def write_request(path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    clips = [0.1 * rng.standard_normal(seconds * 16000).astype(np.float32) for seconds in (1, 12)]
    path.write_text(json.dumps({"dataframe_split": {"columns": ["audio", "sample_rate"],
                                                    "data": [[clip.tolist(), 16000] for clip in clips]}}))


def predict(root: Path, uri: str, label: str) -> dict[str, float]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "UV_CACHE_DIR": str(root / "uv-cache"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = root / f"{label}.json"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mlflow", "models", "predict", "-m", "models:/student/1",
                           "-i", str(root / "input.json"), "-t", "json", "-o", str(out), "--env-manager", "uv"],
                          capture_output=True, text=True, env=env, cwd=root, check=False)
    wall_s = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{label}: mlflow models predict failed:\n{proc.stderr[-3000:]}")
    rows = json.loads(out.read_text())["predictions"]
    downloaded = sum(float(n) * _UNIT[unit] for n, unit in _SIZE.findall(proc.stdout + proc.stderr))
    cache = subprocess.run(["du", "-sb", str(root / "uv-cache")], capture_output=True, text=True, check=True)
    return {"wall_s": round(wall_s, 1), "rows": len(rows), "large_downloads_GiB": round(downloaded / 2**30, 2),
            "uv_cache_GiB": round(int(cache.stdout.split()[0]) / 2**30, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new folder in the temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (store, uv cache)")
    args = parser.parse_args()
    if shutil.which("uv", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}") is None:
        raise SystemExit("uv not found: pip install -e '.[dev]' (uv is in the dev extra)")
    root = Path(tempfile.mkdtemp(prefix="mlflow_env_", dir=args.workdir))
    try:
        uri = log_tiny_tagger(root)
        write_request(root / "input.json")
        results = {label: predict(root, uri, label) for label in ("cold_cache", "warm_cache")}
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"nproc": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2), **results}, indent=2))


if __name__ == "__main__":
    main()
