"""dvc.yaml is the one stage registry: every stage is reachable from the flows and the sweeps, and `evaluate`
declares every file it writes (report.html and everything it links included).

`reachability_problems(root)` is the check: the flow runs the stages of dvc.yaml in its order, and every stage that
validates per epoch (a `valid_curve` plot of a `valid/` metric) is sweepable through the task its script exports.
A stage added to dvc.yaml that the flows or sweeps cannot reach fails
`test_every_stage_is_reachable_from_flows_and_sweeps`.
"""

from __future__ import annotations

import html.parser
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from audiopipe import sweep
from audiopipe.stage_registry import read_stages, stage_options

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # `flows/` lives at the repository root
STAGES = read_stages(ROOT / "dvc.yaml")


def validating_stages(root: Path) -> set[str]:
    """Stages with a per-epoch validation curve: a `valid_curve` plot whose y is a `valid/` metric (pretrain_eat's
    valid_curve holds its per-epoch training loss: no validation, nothing to select or sweep)."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return {name for name, stage in spec.items() for plot in stage.get("plots", []) if isinstance(plot, dict)
            for path, opts in plot.items()
            if Path(path).name.startswith("valid_curve") and str((opts or {}).get("y", "")).startswith("valid/")}


def reachability_problems(root: Path) -> list[str]:
    """Why a stage of `<root>/dvc.yaml` is not reachable from the flows and the sweeps (empty: all are)."""
    pytest.importorskip("prefect")
    from flows.tasks import stages_in

    stages = read_stages(root / "dvc.yaml")
    order = stages_in(root / "dvc.yaml")  # what flows/pipeline.py runs, in this order
    problems = [f"{name}: not in the flow's stage order {order}" for name in stages if name not in order]
    try:
        targets = sweep.derive_targets(root)  # what `audiopipe sweep` and flows/sweep.py sweep
    except ValueError as err:
        return [*problems, str(err)]
    validating = validating_stages(root)
    problems += [f"{name}: validates per epoch but {stage.script} exports no sweep task (TASK, task_kwargs, TUNABLE)"
                 for name, stage in stages.items() if name in validating and name not in targets]
    return problems


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_runs_a_script_that_accepts_its_dvc_yaml_options(name: str) -> None:
    module, args = stage_options(ROOT, STAGES[name])
    assert name in STAGES[name].params, f"{name}: its params section is its name"
    assert hasattr(module, "CONFIG"), f"{STAGES[name].script}: export CONFIG (the dataclass of its section)"
    assert f"data/{name}" in {str(args.out), *STAGES[name].outs}, f"{name}: --out data/{name}"


@pytest.mark.parametrize("script", sorted({str(stage.script) for stage in STAGES.values()}))
def test_no_stage_script_restates_a_data_path(script: str) -> None:
    """Paths come from the command line written once in dvc.yaml (STYLE.md 3): no argparse default under data/."""
    assert 'Path("data' not in (ROOT / script).read_text()


def test_every_stage_is_reachable_from_flows_and_sweeps() -> None:
    assert reachability_problems(ROOT) == []


def test_sweep_targets_are_the_stages_that_validate_per_epoch() -> None:
    assert set(sweep.derive_targets(ROOT)) == validating_stages(ROOT)


@pytest.mark.parametrize(("added", "cmd", "problem"), [
    ("atst_stage3", "python stages/train_atst_sed.py --phase 2 --clips data/pack_hdf5 --init data/atst_stage2/model.pt "
                    "--out data/atst_stage3", "declares no TUNABLE keys"),
    ("distill_dymn", "python stages/distill_mobilenet.py --section distill_dymn --clips data/pack_hdf5 "
                     "--out data/distill_dymn", "rejects its cmd options"),
])
def test_a_stage_added_to_dvc_yaml_but_not_sweepable_is_caught(tmp_path: Path, added: str, cmd: str,
                                                               problem: str) -> None:
    (tmp_path / "stages").symlink_to(ROOT / "stages")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    spec["stages"][added] = {"cmd": cmd, "deps": ["data/pack_hdf5/train.h5"], "params": [added],
                             "outs": [f"data/{added}/model.pt"],
                             "plots": [{f"data/{added}/valid_curve.csv": {"x": "epoch", "y": "valid/mAP"}}]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    problems = reachability_problems(tmp_path)
    assert len(problems) == 1 and added in problems[0] and problem in problems[0]


def test_evaluate_reads_the_models_and_curves_that_dvc_yaml_declares() -> None:
    module, args = stage_options(ROOT, STAGES["evaluate"])
    models = {str(args.data / rel) for rel in {**module.TAGGERS, **module.SED}.values()}
    curves = {str(args.data / stage) for stage in module.CURVE_STAGES}
    trained = {out for name in validating_stages(ROOT) for out in STAGES[name].outs if out.endswith(".pt")}
    assert models == trained
    assert curves == {str(Path(plot).parent) for stage in STAGES.values() for plot in stage.plots
                      if Path(plot).name == "train_curve.csv"}
    deps = set(STAGES["evaluate"].deps)
    assert models <= deps and {f"{folder}/train_curve.csv" for folder in curves} <= deps


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for key, value in attrs if key in ("src", "href") and value and "://" not in value
                       and not value.startswith(("#", "data:", "mailto:"))]


def _tiny_pipeline_outputs(data: Path) -> None:
    """Packs, one tagger, one SED model and one stage's curves, as the stages leave them under data/."""
    import torch

    from audiopipe.data.hdf5 import ClipReader
    from audiopipe.data.synthetic import make_synthetic_pack
    from audiopipe.models import build_model
    from audiopipe.storage import save_checkpoint
    from audiopipe.tracking.curves import write_curves
    from audiopipe.training.loop import History

    packs = make_synthetic_pack(data / "pack_hdf5", n_per_split=3, sample_rate=16000)
    classes = ClipReader(packs["test"]).class_names
    for path, builder, kwargs, extra in [
        ("distill_mobilenet/student.pt", "mn_tagger", {"width_mult": 0.1, "n_classes": len(classes),
                                                       "sample_rate": 16000, "n_mels": 32, "hop_length": 320}, {}),
        ("atst_stage2/model.pt", "sed_crnn", {"n_classes": len(classes), "channels": [4] * 7, "rnn_hidden": 4},
         {"postprocessing": {"median_windows": [3] * len(classes)}}),
    ]:
        torch.manual_seed(0)
        model = build_model(builder, **kwargs)
        payload = {"builder": builder, "builder_kwargs": kwargs, "model": model.state_dict(), "class_names": classes,
                   "sample_rate": int(model.sample_rate), "config": {}, "metrics": {}, **extra}
        if builder == "sed_crnn":
            payload["mean_teacher"] = model.state_dict()
        save_checkpoint(data / path, payload)
    write_curves(data / "distill_mobilenet", History(steps=[{"epoch": 0, "step": 1, "train/loss": 0.7}],
                                                     epochs=[{"epoch": 0, "step": 1, "valid/mAP": 0.4}]))


def test_evaluate_declares_every_file_it_writes_and_every_file_report_html_links(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, args = stage_options(ROOT, STAGES["evaluate"])
    data = tmp_path / args.data
    _tiny_pipeline_outputs(data)
    params = {"evaluate": {"split": "test", "duration_s": 1.0, "batch_size": 4, "median_windows": [3],
                           "threshold": 0.5, "timeline_clips": 1},
              "tracking": {"enabled": False, "experiment": "test"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)  # the stage's cmd, with its relative paths, run in a copy of the repository layout
    monkeypatch.setattr(sys, "argv", ["evaluate.py", *STAGES["evaluate"].argv])
    runpy.run_path(str(ROOT / str(STAGES["evaluate"].script)), run_name="stage_under_test")["main"]()

    declared = [(tmp_path / out).resolve() for out in STAGES["evaluate"].outs]

    def is_declared(path: Path) -> bool:
        return any(path == out or out in path.parents for out in declared)

    written = [path.resolve() for path in (tmp_path / args.out).rglob("*") if path.is_file()]
    assert written and [p for p in written if not is_declared(p)] == []
    report = next(p for p in written if p.name == "report.html")
    parser = _Links()
    parser.feed(report.read_text())
    linked = [(report.parent / link).resolve() for link in parser.links]
    assert len(linked) >= 5  # plots of tagging, SED, the timeline and the curves
    assert [p for p in linked if not p.is_file() or not is_declared(p)] == []
