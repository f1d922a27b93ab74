"""A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temp folder, TCP on 127.0.0.1, trust auth.

Binaries: $AUDIOPIPE_PG_BIN, else `make postgres`'s local copy (.venv/postgresql/usr/lib/postgresql/*/bin),
else a system install (/usr/lib/postgresql/*/bin). PostgreSQL refuses to run as root, so under root the
server runs as `nobody` (setpriv) in a folder that user owns.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
USER = "audiopipe"


def find_bin() -> Path | None:
    candidates = [os.environ.get("AUDIOPIPE_PG_BIN", "")]
    candidates += sorted(str(p.parent) for p in (ROOT / ".venv/postgresql/usr/lib/postgresql").glob("*/bin/initdb"))
    candidates += sorted(str(p.parent) for p in Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    for folder in filter(None, candidates):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def postgres_server(databases: tuple[str, ...]) -> Iterator[str]:
    """Start a server, create `databases`; yield the base URL `postgresql+psycopg://audiopipe@127.0.0.1:PORT`."""
    import psycopg

    pg_bin = find_bin()
    if pg_bin is None:
        raise FileNotFoundError("no PostgreSQL server binaries: run `make postgres`")
    as_root = os.geteuid() == 0
    prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if as_root else []
    base = Path(tempfile.mkdtemp(prefix="audiopipe_pg_"))
    base.chmod(0o755)
    if as_root:
        shutil.chown(base, "nobody")
    data, port = base / "data", _free_port()

    def run(*args: str) -> None:
        out = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")

    run(str(pg_bin / "initdb"), "-D", str(data), "-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8", "--locale=C")
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c jit=off -c max_connections=50"
    run(str(pg_bin / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "server.log"), "-w", "-t", "60",
        "start")
    try:
        with psycopg.connect(f"host=127.0.0.1 port={port} user={USER} dbname=postgres", autocommit=True) as conn:
            for name in databases:
                conn.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+psycopg://{USER}@127.0.0.1:{port}"
    finally:
        run(str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)
