"""Start a training stage script in one process, or under `torchrun` when its `launcher` entry asks for more.

Usage (the form every training stage's `cmd` in dvc.yaml takes):

    python -m audiopipe.launch [--nproc-per-node N] [--nnodes N] [--rdzv-endpoint HOST:PORT] [--node-rank R]
                               SECTION SCRIPT [ARGS ...]

SECTION names the entry of the `launcher` section of params.yaml (the params file the script reads: its
`--params` argument, else params.yaml). With `nproc_per_node * nnodes == 1` the launcher replaces itself with
`python SCRIPT ARGS` (same process id, exit status and signals as running the script directly); otherwise with
`python -m torch.distributed.run ... SCRIPT ARGS`: `--standalone` on one machine; across machines the static
rendezvous at `rdzv_endpoint` with this machine's `--node-rank` (default 0). Static, not c10d: c10d numbers the
machines by host name, while the stage's outputs are written by global rank 0, which must run on the machine
whose `dvc repro` records them (node rank 0). The options override the params values for this launch only; the
other machines of a multi-node run use them to join without changing their params.yaml.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from audiopipe.config import ConfigError, LauncherConfig, StageLaunchConfig, load_params

log = logging.getLogger(__name__)


def _check_endpoint(endpoint: str, where: str) -> None:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{where}.rdzv_endpoint: {endpoint!r} is not HOST:PORT (e.g. node0.example.org:29400)")


def launch_argv(cfg: StageLaunchConfig, section: str, script: str, args: list[str], python: str,
                node_rank: int = 0) -> list[str]:
    """The command that runs `script args` with `cfg`'s processes (`python` = the interpreter to use).

    Raises:
        ConfigError: nnodes > 1 without rdzv_endpoint, an endpoint on one machine, one that is not HOST:PORT, or
            node_rank outside [0, nnodes).

    Example:
        >>> one = StageLaunchConfig(nproc_per_node=1, nnodes=1, rdzv_endpoint=None)
        >>> launch_argv(one, "distill_mobilenet", "stages/distill_mobilenet.py", ["--out", "d"], "python")
        ['python', 'stages/distill_mobilenet.py', '--out', 'd']
        >>> launch_argv(replace(one, nproc_per_node=8), "s", "x.py", [], "python")[3:7]
        ['--standalone', '--nnodes', '1', '--nproc-per-node']
    """
    where = f"launcher.{section}"
    if cfg.nnodes > 1 and cfg.rdzv_endpoint is None:
        raise ConfigError(
            f"{where}: nnodes={cfg.nnodes} needs rdzv_endpoint (HOST:PORT of the first machine, reachable from all)"
        )
    if cfg.nnodes == 1 and cfg.rdzv_endpoint is not None:
        raise ConfigError(f"{where}: rdzv_endpoint is only used with nnodes > 1; set it to null or raise nnodes")
    if not 0 <= node_rank < cfg.nnodes:
        raise ConfigError(f"{where}: node rank {node_rank} is outside [0, nnodes={cfg.nnodes})")
    if cfg.nproc_per_node * cfg.nnodes == 1:
        return [python, script, *args]
    torchrun = [python, "-m", "torch.distributed.run"]
    if cfg.nnodes == 1:
        torchrun += ["--standalone", "--nnodes", "1"]
    else:
        assert cfg.rdzv_endpoint is not None  # checked above
        _check_endpoint(cfg.rdzv_endpoint, where)
        torchrun += ["--nnodes", str(cfg.nnodes), "--node-rank", str(node_rank), "--rdzv-backend", "static",
                     "--rdzv-endpoint", cfg.rdzv_endpoint]
    return [*torchrun, "--nproc-per-node", str(cfg.nproc_per_node), script, *args]


def _params_path(script_args: list[str]) -> Path:
    """The params file the script will read: its `--params PATH` / `--params=PATH`, else params.yaml."""
    for i, arg in enumerate(script_args):
        if arg == "--params" and i + 1 < len(script_args):
            return Path(script_args[i + 1])
        if arg.startswith("--params="):
            return Path(arg.split("=", 1)[1])
    return Path("params.yaml")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc-per-node", type=int, default=None, help="override launcher.SECTION.nproc_per_node")
    parser.add_argument("--nnodes", type=int, default=None, help="override launcher.SECTION.nnodes")
    parser.add_argument("--rdzv-endpoint", default=None, help="override launcher.SECTION.rdzv_endpoint (HOST:PORT)")
    parser.add_argument("--node-rank", type=int, default=0,
                        help="this machine's rank when nnodes > 1 (0: the machine that runs dvc, default)")
    parser.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    parser.add_argument("section", help="entry of the launcher section (the stage's name)")
    parser.add_argument("script", help="stage script, e.g. stages/distill_mobilenet.py")
    parser.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments passed to the script unchanged")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    launcher = load_params("launcher", LauncherConfig, _params_path(args.script_args))
    cfg = getattr(launcher, args.section, None)
    if not isinstance(cfg, StageLaunchConfig):
        raise SystemExit(f"launcher: no entry '{args.section}'; entries: {', '.join(vars(launcher))}")
    overrides = {"nproc_per_node": args.nproc_per_node, "nnodes": args.nnodes, "rdzv_endpoint": args.rdzv_endpoint}
    for name in ("nproc_per_node", "nnodes"):
        if overrides[name] is not None and overrides[name] < 1:  # type: ignore[operator]
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {overrides[name]}")
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    try:
        argv_out = launch_argv(cfg, args.section, args.script, args.script_args, sys.executable, args.node_rank)
    except ConfigError as err:
        raise SystemExit(str(err)) from None
    if args.dry_run:
        print(shlex.join(argv_out))
        return
    log.info("%s: %d x %d process(es): %s", args.section, cfg.nnodes, cfg.nproc_per_node, shlex.join(argv_out))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv_out[0], argv_out)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
