"""A deployment on a process work pool, run by a real `prefect worker` against a local Prefect server.

Throwaway server (temp PREFECT_HOME, 127.0.0.1, free port), a toy DVC repo holding a copy of flows/, then
`flows/deploy.py`, `prefect deployment run ... -p set_params=...` and `prefect worker start --run-once`: the flow
run must complete and the DVC experiment must have used the override. Slow (~1 min): marked `slow`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytest.importorskip("prefect")
pytest.importorskip("dvc")
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home, port = tmp_path_factory.mktemp("prefect_home"), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               DVC_NO_ANALYTICS="1", DVC_STUDIO_OFFLINE="1", CI="true", PATH=f"{BIN}{os.pathsep}{env['PATH']}")
    log = (home / "server.log").open("w")
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (home / "server.log").read_text()[-3000:]
                time.sleep(0.5)
        yield {**env, "PREFECT_API_URL": url}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 240) -> str:
    out = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(args)}:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out.stdout + out.stderr


def test_deployment_runs_through_a_process_worker(server: dict[str, str], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "flows", repo / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "params.yaml").write_text(yaml.safe_dump({"tracking": {"enabled": False, "experiment": "t"},
                                                      "train": {"lr": 1}}))
    (repo / "train.py").write_text("import yaml\nprint(yaml.safe_load(open('params.yaml'))['train']['lr'], "
                                   "file=open('lr.txt', 'w'))\n")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": {
        "cmd": "python train.py", "deps": ["train.py"], "params": ["train"], "outs": ["lr.txt"]}}}))
    env = {**server, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}
    _run(["git", "init", "-q"], env, repo)
    _run([sys.executable, "-m", "dvc", "init", "-q"], env, repo)
    _run(["git", "add", "-A"], env, repo)
    _run(["git", "commit", "-qm", "toy"], env, repo)
    start = time.perf_counter()
    _run([sys.executable, "flows/deploy.py", "--name", "toy", "--pool", "toy-pool", "--repo", str(repo)], env, repo)
    printed = _run([str(BIN / "prefect"), "deployment", "run", "audiopipe-pipeline/toy",
                    "-p", 'set_params=["train.lr=7"]', "-p", "experiment_name=lr7"], env, repo)
    assert "Created flow run" in printed
    _run([str(BIN / "prefect"), "worker", "start", "--pool", "toy-pool", "--type", "process", "--run-once"],
         env, tmp_path)
    runs = json.loads(_run([sys.executable, "-c", (
        "import json; from prefect.client.orchestration import get_client\n"
        "with get_client(sync_client=True) as c:\n"
        "    print(json.dumps([r.state.type.value for r in c.read_flow_runs()]))")], env, repo).splitlines()[-1])
    print(f"deploy -> worker -> completed flow run: {time.perf_counter() - start:.1f} s")
    assert runs == ["COMPLETED"]
    assert (repo / "lr.txt").read_text().strip() == "7"  # ran as `dvc exp run -S train.lr=7`
    assert "lr7" in _run([sys.executable, "-m", "dvc", "exp", "list", "--name-only"], env, repo)
