"""dvc.yaml as DVC's users read it: named plot columns, plots with data, metrics without timings, file deps.

Also the baseline check: a `dvc.lock` tracked by git must describe the current dvc.yaml and params.yaml (stages,
commands, deps/outs paths, params values), so `dvc metrics diff` / `dvc exp show` compare against `main`.
Plot checks read the curve CSVs present under data/ in the working tree. tests/orchestration/test_pack_rerun.py
runs the real data stages through `dvc repro` for the metrics/timings split and the rerun behaviour.
"""

from __future__ import annotations

import csv
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from audiopipe.evaluation.run import split_metrics

ROOT = Path(__file__).resolve().parents[2]


def _dvc_yaml() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _params() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _entries(items: list[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for item in items or []:
        if isinstance(item, str):
            yield item, {}
        else:
            (path, props), = item.items()
            yield path, props or {}


def _interpolate(text: str, params: dict[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        node: Any = params
        for part in match.group(1).split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", value, text)


def _plots() -> list[tuple[str, str, dict[str, Any]]]:
    return [(stage, path, props) for stage, spec in _dvc_yaml()["stages"].items()
            for path, props in _entries(spec.get("plots", []))]


@pytest.mark.parametrize(("stage", "path", "props"), _plots(), ids=[p for _, p, _ in _plots()])
def test_plot_names_its_columns_and_has_data(stage: str, path: str, props: dict[str, Any]) -> None:
    assert props.get("x") and props.get("y"), f"{stage}: plot {path} must name x and y (DVC takes the last column)"
    file = ROOT / _interpolate(path, _params())
    if not file.is_file():
        pytest.skip(f"{file} not generated in this checkout (run its stage)")
    with file.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows, f"{path} is a declared plot with only a header"
    header = set(rows[0])
    assert {props["x"], props["y"]} <= header, f"{path}: x/y {props['x']}/{props['y']} not in {sorted(header)}"
    assert any(row[props["y"]] not in ("", None) for row in rows), f"{path}: column {props['y']} is empty"


def test_no_stage_depends_on_a_folder_that_holds_another_stages_metrics_or_timings() -> None:
    """A folder dep changes whenever a metrics/timings file inside it does (pack_hdf5's wall_s retrained all)."""
    stages = _dvc_yaml()["stages"]
    volatile = []  # files rewritten on every run, or not part of what the consumer reads
    for spec in stages.values():
        volatile += [p for p, _ in _entries(spec.get("metrics", []))]
        volatile += [p for p, _ in _entries(spec.get("plots", []))]
        volatile += [p for p, props in _entries(spec.get("outs", [])) if props.get("cache") is False]
    for stage, spec in stages.items():
        own = {p for key in ("outs", "metrics", "plots") for p, _ in _entries(spec.get(key, []))}
        for dep in spec["deps"]:
            inside = [f for f in volatile if f.startswith(dep.rstrip("/") + "/") and f not in own]
            assert not inside, f"{stage} depends on folder {dep}, which holds {inside}: depend on the files it reads"


def test_evaluate_summary_is_short_and_timings_separate() -> None:
    metrics = {
        "tagging": {"KD student": {"test/mAP": 0.4, "test/roc_auc": 0.6, "test/d_prime": 0.5, "test/n_classes": 9.0,
                                   "cpu_latency_ms_10s": 5.9, "params_m": 0.7}},
        "sed": {"ATST-SED stage 2 student": {"psds1": 0.1, "psds2": 0.2, "psds2_mean_tpr": 0.3, "event_f1": 0.05,
                                             "frame_auc": 0.8}},
        "missing": ["EAT teacher"],
    }
    summary, timings = split_metrics(metrics)
    assert summary == {"tagging": {"kd_student": {"mAP": 0.4, "roc_auc": 0.6, "d_prime": 0.5}},
                       "sed": {"atst_sed_stage_2_student": {"psds1": 0.1, "psds2": 0.2, "psds2_mean_tpr": 0.3,
                                                            "event_f1": 0.05}},
                       "missing": 1}
    assert timings == {"tagging": {"kd_student": {"cpu_latency_ms_10s": 5.9}}}


# --- the committed baseline: dvc.lock against dvc.yaml + params.yaml ---------------------------------------


def lock_mismatches(dvc_yaml: dict[str, Any], params: dict[str, Any], lock: dict[str, Any]) -> list[str]:
    """What in `lock` does not describe `dvc_yaml` run with `params` (empty list: consistent)."""
    problems = []
    stages, locked = dvc_yaml["stages"], lock.get("stages", {})
    if set(stages) != set(locked):
        problems.append(f"stages: dvc.yaml {sorted(stages)} vs dvc.lock {sorted(locked)}")
    for name in sorted(set(stages) & set(locked)):
        spec, entry = stages[name], locked[name]
        cmd = " ".join(_interpolate(spec["cmd"], params).split())
        if cmd != " ".join(str(entry.get("cmd", "")).split()):
            problems.append(f"{name}: cmd {entry.get('cmd')!r} != {cmd!r}")
        deps = {_interpolate(p, params) for p, _ in _entries(spec.get("deps", []))}
        if deps != {d["path"] for d in entry.get("deps", [])}:
            problems.append(f"{name}: deps differ: {sorted(deps ^ {d['path'] for d in entry.get('deps', [])})}")
        outs = {_interpolate(p, params) for key in ("outs", "metrics", "plots") for p, _ in _entries(spec.get(key, []))}
        if outs != {o["path"] for o in entry.get("outs", [])}:
            problems.append(f"{name}: outs differ: {sorted(outs ^ {o['path'] for o in entry.get('outs', [])})}")
        locked_params = entry.get("params", {}).get("params.yaml", {})
        for key in spec.get("params", []):
            node: Any = params
            for part in key.split("."):
                node = node[part]
            if locked_params.get(key) != node:
                problems.append(f"{name}: params.yaml `{key}` differs from dvc.lock (rerun the stage, commit dvc.lock)")
    return problems


def test_lock_checker_catches_a_changed_param_and_cmd() -> None:
    spec = {"stages": {"a": {"cmd": "python a.py --n ${a.n}", "deps": ["a.py"], "params": ["a"],
                             "outs": ["out/${a.n}"], "metrics": [{"m.json": {"cache": False}}]}}}
    lock = {"stages": {"a": {"cmd": "python a.py --n 1", "deps": [{"path": "a.py"}],
                             "params": {"params.yaml": {"a": {"n": 1}}},
                             "outs": [{"path": "out/1"}, {"path": "m.json"}]}}}
    assert lock_mismatches(spec, {"a": {"n": 1}}, lock) == []
    assert len(lock_mismatches(spec, {"a": {"n": 2}}, lock)) == 3  # cmd, outs and params


def test_committed_dvc_lock_matches_dvc_yaml_and_params() -> None:
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "dvc.lock"], cwd=ROOT, capture_output=True)
    if tracked.returncode != 0:
        pytest.skip("dvc.lock is not committed yet (the lead commits it after the demo run); "
                    "once it is, this test always runs")
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    problems = lock_mismatches(_dvc_yaml(), _params(), lock)
    assert not problems, "dvc.lock is stale:\n" + "\n".join(problems)
