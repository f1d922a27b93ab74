"""No-op cost of the Prefect flow against one plain `dvc repro`, on an up-to-date repository.

    .venv/bin/python benchmarks/noop_flow.py              # toy repo with the project's 11 stage names (default)
    .venv/bin/python benchmarks/noop_flow.py --repo .     # this checkout; refuses unless `dvc status` is clean

Times (wall, median of --repeat): `python -m dvc repro` with nothing to do, one `dvc repro STAGE` per stage
(the flow's former no-op cost, measured once), then `run_pipeline(repo=...)`
in this process: its first call (includes starting Prefect's temporary server when PREFECT_API_URL is unset)
and the later calls (server running). Prints the ratio flow / dvc repro; the target is <= 2 (issue 17).
Never point --repo at a workspace with stale stages: the flow would train them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "1", "CI": "true"}


def toy_repo(root: Path, stages: list[str]) -> Path:
    """A chain of tiny stages named like the project's (each reads the previous one's output)."""
    import yaml

    spec, previous = {}, None
    for name in stages:
        deps = [f"out/{previous}.txt"] if previous else []
        spec[name] = {"cmd": f"python -c \"open('out/{name}.txt', 'w').write('{name}')\"", "deps": deps,
                      "outs": [f"out/{name}.txt"]}
        previous = name
    (root / "out").mkdir(parents=True)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": spec}, sort_keys=False))
    (root / "params.yaml").write_text("tracking: {enabled: false, experiment: bench}\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, env=ENV, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=root, env=ENV, check=True)
    return root


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="an up-to-date DVC repository (default: a toy one)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect_home_"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.update({k: v for k, v in ENV.items() if k.startswith(("DVC_", "CI"))})
    from flows.pipeline import STAGE_ORDER, run_pipeline

    repo = args.repo.resolve() if args.repo else toy_repo(Path(tempfile.mkdtemp(prefix="noop_")), list(STAGE_ORDER))
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=repo, env=ENV,
                            capture_output=True, text=True, check=True)
    if json.loads(status.stdout or "{}"):
        raise SystemExit(f"{repo} has stale stages ({sorted(json.loads(status.stdout))}); not benchmarking")

    def dvc_repro() -> None:
        subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=repo, env=ENV, check=True)

    def flow() -> None:
        assert run_pipeline(repo=str(repo)) == [], "the flow ran stages in an up-to-date repository"

    def per_stage() -> None:  # what the flow did before it asked `dvc status` once
        for stage in STAGE_ORDER:
            subprocess.run([sys.executable, "-m", "dvc", "repro", "-q", stage], cwd=repo, env=ENV, check=True)

    repro_s = statistics.median(timed(dvc_repro) for _ in range(args.repeat))
    per_stage_s = timed(per_stage)
    cold_s = timed(flow)
    warm_s = statistics.median(timed(flow) for _ in range(args.repeat))
    print(json.dumps({"repo": str(repo), "stages": len(STAGE_ORDER), "dvc_repro_noop_s": round(repro_s, 2),
                      "one_dvc_repro_per_stage_s": round(per_stage_s, 2),
                      "flow_noop_first_call_s": round(cold_s, 2), "flow_noop_s": round(warm_s, 2),
                      "ratio_flow_to_dvc_repro": round(warm_s / repro_s, 2),
                      "ratio_first_call_to_dvc_repro": round(cold_s / repro_s, 2),
                      "prefect_api_url": os.environ.get("PREFECT_API_URL", "temporary in-process server")}))


if __name__ == "__main__":
    main()
