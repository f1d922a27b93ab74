"""audiopipe.launch: the command a training stage's `launcher` entry turns into, and its errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from audiopipe.config import ConfigError, LauncherConfig, StageLaunchConfig, load_params
from audiopipe.launch import launch_argv, main

ROOT = Path(__file__).resolve().parents[1]
SCRIPT, ARGS = "stages/distill_mobilenet.py", ["--section", "distill_mobilenet", "--out", "data/distill_mobilenet"]


def _cfg(nproc_per_node: int = 1, nnodes: int = 1, rdzv_endpoint: str | None = None) -> StageLaunchConfig:
    return StageLaunchConfig(nproc_per_node=nproc_per_node, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint)


def test_one_process_runs_the_script_with_the_same_python() -> None:
    assert launch_argv(_cfg(), "distill_mobilenet", SCRIPT, ARGS, "/venv/python") == ["/venv/python", SCRIPT, *ARGS]


def test_one_machine_uses_a_standalone_rendezvous() -> None:
    assert launch_argv(_cfg(nproc_per_node=8), "distill_mobilenet", SCRIPT, ARGS, "py") == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "8", SCRIPT, *ARGS,
    ]


@pytest.mark.parametrize("node_rank", [0, 1])
def test_two_machines_join_a_static_rendezvous_with_their_node_rank(node_rank: int) -> None:
    cfg = _cfg(nproc_per_node=8, nnodes=2, rdzv_endpoint="node0.example.org:29400")
    assert launch_argv(cfg, "distill_mobilenet", SCRIPT, ARGS, "py", node_rank) == [
        "py", "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node_rank),
        "--rdzv-backend", "static", "--rdzv-endpoint", "node0.example.org:29400",
        "--nproc-per-node", "8", SCRIPT, *ARGS,
    ]


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (_cfg(nnodes=2), "nnodes=2 needs rdzv_endpoint"),
        (_cfg(nproc_per_node=2, rdzv_endpoint="node0:29400"), "only used with nnodes > 1"),
        (_cfg(nnodes=2, rdzv_endpoint="node0"), "not HOST:PORT"),
        (_cfg(nnodes=2, rdzv_endpoint="node0:http"), "not HOST:PORT"),
        (_cfg(nnodes=2, rdzv_endpoint="node0:70000"), "not HOST:PORT"),
    ],
)
def test_nonsense_is_refused_naming_the_entry(cfg: StageLaunchConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        launch_argv(cfg, "atst_stage1", "stages/train_atst_sed.py", [], "py")
    assert "launcher.atst_stage1" in str(err.value)


def test_a_node_rank_beyond_the_machines_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"node rank 2 is outside \[0, nnodes=2\)"):
        launch_argv(_cfg(nnodes=2, rdzv_endpoint="node0:29400"), "atst_stage1", "x.py", [], "py", node_rank=2)


def test_repository_entries_start_one_process() -> None:
    launcher = load_params("launcher", LauncherConfig, ROOT / "params.yaml")
    assert {entry.nproc_per_node * entry.nnodes for entry in vars(launcher).values()} == {1}


def _params(tmp_path: Path, entry: dict[str, object]) -> Path:
    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    doc["launcher"]["distill_mobilenet"] = entry
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("form", ["--params={}", "--params {}"])
def test_main_reads_the_params_file_the_script_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     form: str) -> None:
    params = _params(tmp_path, {"nproc_per_node": 2, "nnodes": 1, "rdzv_endpoint": None})
    main(["--dry-run", "distill_mobilenet", SCRIPT, *form.format(params).split()])
    printed = capsys.readouterr().out.split()
    assert printed[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert printed[printed.index("--nproc-per-node") + 1] == "2"


def test_main_options_override_the_entry_for_the_other_machines(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    params = _params(tmp_path, {"nproc_per_node": 1, "nnodes": 1, "rdzv_endpoint": None})
    main(["--dry-run", "--nnodes", "2", "--nproc-per-node", "4", "--rdzv-endpoint", "node0:29400", "--node-rank", "1",
          "distill_mobilenet", SCRIPT, "--params", str(params)])
    printed = capsys.readouterr().out
    assert "--nnodes 2 --node-rank 1 --rdzv-backend static --rdzv-endpoint node0:29400" in printed
    assert "--nproc-per-node 4" in printed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no_such_stage", SCRIPT], "no entry 'no_such_stage'"),
        (["--nnodes", "3", "distill_mobilenet", SCRIPT], "nnodes=3 needs rdzv_endpoint"),
        (["--nproc-per-node", "0", "distill_mobilenet", SCRIPT], "must be >= 1"),
    ],
)
def test_main_exits_with_a_message(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        main(["--dry-run", *argv, "--params", str(ROOT / "params.yaml")])


def test_zero_processes_is_out_of_range(tmp_path: Path) -> None:
    params = _params(tmp_path, {"nproc_per_node": 0, "nnodes": 1, "rdzv_endpoint": None})
    with pytest.raises(ConfigError, match=r"launcher.distill_mobilenet.nproc_per_node: 0 is out of range"):
        load_params("launcher", LauncherConfig, params)
