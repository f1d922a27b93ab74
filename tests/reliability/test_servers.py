"""Local servers bind to 127.0.0.1 unless the user asks otherwise (neither MLflow nor Prefect has auth).

Checks the commands only (`make -n`, a patched `prefect.serve`); no long-running server is started.
"""

from __future__ import annotations

import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _make_n(target: str, *overrides: str) -> str:
    if shutil.which("make") is None:
        pytest.fail("GNU make is required (the Makefile is the documented entry point)")
    proc = subprocess.run(["make", "-n", target, *overrides], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.replace("\\\n", " ")  # join continued recipe lines


def _server_line(text: str, program: str) -> str:
    lines = [line for line in text.splitlines() if re.search(rf"\b{program}\b", line) and "--host" in line]
    assert len(lines) == 1, f"expected one {program} command in:\n{text}"
    return lines[0]


@pytest.mark.parametrize(("target", "program", "port"), [("mlflow-ui", "mlflow ui", "5000"),
                                                          ("prefect-ui", "prefect server start", "4200")])
def test_make_ui_targets_bind_loopback(target: str, program: str, port: str) -> None:
    line = _server_line(_make_n(target), program)
    assert re.search(r"--host 127\.0\.0\.1(\s|$)", line), line
    assert f"--port {port}" in line


@pytest.mark.parametrize(("target", "program", "variable"), [("mlflow-ui", "mlflow ui", "MLFLOW_PORT"),
                                                              ("prefect-ui", "prefect server start", "PREFECT_PORT")])
def test_changing_the_port_keeps_loopback(target: str, program: str, variable: str) -> None:
    line = _server_line(_make_n(target, f"{variable}=5123"), program)
    assert "--host 127.0.0.1" in line and "--port 5123" in line


def test_no_recipe_or_flow_binds_all_interfaces() -> None:
    files = [REPO / "Makefile", *(REPO / "mk").glob("*.mk"), *(REPO / "flows").glob("*.py")]
    code = {p: "\n".join(line.split("#")[0] for line in p.read_text().splitlines()) for p in files}  # drop comments
    offenders = [str(p.relative_to(REPO)) for p, text in code.items() if re.search(r"0\.0\.0\.0|--host\s+::", text)]
    assert not offenders, f"these files bind a server to every interface: {offenders}"


def test_flow_serving_starts_no_public_webserver(monkeypatch: pytest.MonkeyPatch) -> None:
    """flows/serve.py registers the deployment and polls the API; it must not open a webserver on all interfaces."""
    import prefect
    from prefect.settings import PREFECT_RUNNER_SERVER_ENABLE, PREFECT_RUNNER_SERVER_HOST, PREFECT_SERVER_API_HOST

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(prefect, "serve", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(sys, "argv", ["flows/serve.py", "--cron", "0 3 * * *"])
    runpy.run_path(str(REPO / "flows" / "serve.py"), run_name="__main__")
    assert len(calls) == 1
    args, kwargs = calls[0]
    assert len(args) == 1 and kwargs.get("limit") == 1  # one serving process: DVC never runs twice in a checkout
    assert not kwargs.get("webserver", False), "serve(webserver=True) opens the runner's HTTP server"
    # If someone switches the runner webserver or the API server on, prefect's defaults are loopback.
    assert PREFECT_RUNNER_SERVER_ENABLE.value() is False
    assert PREFECT_RUNNER_SERVER_HOST.value() in ("localhost", "127.0.0.1")
    assert PREFECT_SERVER_API_HOST.value() in ("localhost", "127.0.0.1")
