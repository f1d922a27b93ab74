"""audiopipe.claims with tiny fake training tasks on tiny synthetic packs: the table, resuming, missing inputs,
the scores matching `evaluate`, MLflow nesting and the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml

from audiopipe import claims, sweep
from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.synthetic import make_synthetic_pack
from audiopipe.models import build_model
from audiopipe.storage import save_checkpoint
from audiopipe.training.loop import History
from audiopipe.training.runner import TaskResult

EVAL = SimpleNamespace(split="test", duration_s=1.0, batch_size=4, median_windows=[3], threshold=0.5,
                       timeline_clips=1)
SEED_OF_PARAMS = 7  # the seed in params.yaml: every run must override it


@dataclasses.dataclass(frozen=True)
class FakeCfg:
    init: str
    seed: int


def _tagger(path: Path, classes: list[str], seed: int) -> Path:
    torch.manual_seed(seed)
    kwargs = {"width_mult": 0.1, "n_classes": len(classes), "sample_rate": 16000, "n_mels": 32, "hop_length": 320}
    model = build_model("mn_tagger", **kwargs)
    return save_checkpoint(path, {"builder": "mn_tagger", "builder_kwargs": kwargs, "model": model.state_dict(),
                                  "class_names": classes, "sample_rate": 16000, "config": {}, "metrics": {}})


def _sed(path: Path, classes: list[str], seed: int) -> Path:
    torch.manual_seed(seed)
    kwargs = {"n_classes": len(classes), "channels": [4] * 7, "rnn_hidden": 4}
    model = build_model("sed_crnn", **kwargs)
    state = model.state_dict()
    return save_checkpoint(path, {"builder": "sed_crnn", "builder_kwargs": kwargs, "model": state,
                                  "mean_teacher": state, "class_names": classes, "sample_rate": 16000, "config": {},
                                  "metrics": {}, "postprocessing": {"median_windows": [3] * len(classes)}})


class FakeTasks:
    """One fake task per section: records (section, cfg, keywords) and saves a tiny real checkpoint."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, FakeCfg, dict[str, Any]]] = []

    def task(self, section: str) -> Any:
        def run(cfg: FakeCfg, *, clips_dir: Path, checkpoint: Path, tracker: Any = None, **inputs: Any) -> TaskResult:
            self.calls.append((section, cfg, inputs))
            classes = ClipReader(clips_dir / "test.h5").class_names
            save = _sed if section.startswith("atst") else _tagger
            save(checkpoint, classes, cfg.seed * 10 + len(self.calls))
            history = History(epochs=[{"epoch": 0, "step": 1, "valid/mAP": 0.5}])
            return TaskResult(metrics={"valid/mAP": 0.5, "valid/nan": float("nan")}, checkpoint=checkpoint,
                              history=history)

        return run


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTasks:
    """The real TARGETS (inputs, outputs, fixed keywords: from dvc.yaml) with FakeCfg and fake tasks."""
    tasks = FakeTasks()
    sweep.load_targets(Path(__file__).resolve().parents[1])
    for section in claims.sections(list(claims.CLAIMS)):
        monkeypatch.setitem(sweep.TARGETS, section, dataclasses.replace(sweep.TARGETS[section], config=FakeCfg,
                                                                        task=tasks.task(section)))
    return tasks


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """data/ as the DVC stages leave it: packs, the pre-trained encoder, the teacher and its predictions."""
    root = tmp_path / "data"
    make_synthetic_pack(root / "pack_hdf5", n_per_split={"train": 3, "valid": 3, "test": 3}, sample_rate=16000)
    for rel in ("pretrain_eat/eat.pt", "finetune_eat/eat_tagger.pt", "predict_teacher/predictions.h5"):
        (root / rel).parent.mkdir(parents=True)
        (root / rel).write_bytes(b"stand-in")
    return root


def _run(data: Path, out: Path, names: list[str] | None = None, seeds: tuple[int, ...] = (0, 1),
         **kwargs: Any) -> dict[str, Any]:
    names = names or list(claims.CLAIMS)
    configs = {s: FakeCfg(init="official", seed=SEED_OF_PARAMS) for s in claims.sections(names)}
    kwargs.setdefault("tracking_enabled", False)
    return claims.run_claims(names, list(seeds), configs=configs, eval_cfg=EVAL, data_dir=data, out_dir=out,
                             progress=kwargs.pop("progress", lambda line: None), **kwargs)


def test_all_claims_two_seeds_write_the_table_and_per_seed_numbers(tmp_path: Path, data: Path,
                                                                   fake: FakeTasks) -> None:
    out = tmp_path / "claims"
    lines: list[str] = []
    summary = _run(data, out, progress=lines.append)
    assert len(fake.calls) == 12 and {cfg.seed for _, cfg, _ in fake.calls} == {0, 1}
    inits = {(section, cfg.init, inputs.get("pretrained")) for section, cfg, inputs in fake.calls
             if section == "finetune_eat"}
    assert inits == {("finetune_eat", "pretrained", data / "pretrain_eat" / "eat.pt"),
                     ("finetune_eat", "random", None)}
    teachers = {s: inputs["teacher_h5"] for s, _, inputs in fake.calls if s.startswith("distill")}
    assert teachers == {"distill_mobilenet": data / "predict_teacher" / "predictions.h5",
                        "distill_mobilenet_nokd": None}
    encoders = {inputs["encoder_checkpoint"] for s, _, inputs in fake.calls if s == "atst_stage1"}
    assert encoders == {data / "finetune_eat" / "eat_tagger.pt"}  # dvc.yaml's frame encoder: the teacher's
    stage2 = [(cfg.seed, inputs) for s, cfg, inputs in fake.calls if s == "atst_stage2"]
    for seed, inputs in stage2:  # initialised from the same seed's stage-1 checkpoint, not data/atst_stage1
        assert inputs["init_checkpoint"] == out / "sed" / "stage1" / f"seed-{seed}" / "model.pt"
        assert inputs["phase"] == 2
    for claim in claims.CLAIMS.values():
        for variant in claim.variants:
            for seed in (0, 1):
                record = json.loads((out / claim.name / variant.name / f"seed-{seed}" / "metrics.json").read_text())
                assert record["seed"] == seed and record["task"]["valid/nan"] is None
                assert set(claims.COLUMNS[claim.kind].values()) <= set(record["test"])
    per_seed = json.loads((out / "claims.json").read_text())
    assert per_seed == json.loads(json.dumps(summary))
    kd = per_seed["claims"]["kd"]["variants"]["kd"]
    assert set(kd["per_seed"]) == {"0", "1"} and kd["n"]["test/mAP"] == 2
    table = (out / "claims.md").read_text().splitlines()
    assert table[0] == "| claim | variant | mAP | ROC-AUC | PSDS1 | PSDS2 | event F1 | n seeds | holds? |"
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:8]]
    assert [row[1] for row in rows] == [v.label for c in claims.CLAIMS.values() for v in c.variants]
    for row, kind in zip(rows, ["tagging"] * 4 + ["sed"] * 2):
        filled, empty = (row[2:4], row[4:7]) if kind == "tagging" else (row[4:7], row[2:4])
        assert all(" ± " in cell for cell in filled) and all(cell == "–" for cell in empty), row
        assert row[7] == "2"
    for row, claim in zip(rows[::2], claims.CLAIMS.values()):
        holds = per_seed["claims"][claim.name]["holds"]
        relation = {">": ">", ">=": "≥"}[claim.relation]
        assert row[8].startswith(f"{'yes' if holds else 'no'}: {claim.better} {relation} {claim.worse} on ")
    assert all(row[0] == row[8] == "" for row in rows[1::2])  # the verdict stands on each claim's first row only
    assert "only 2 seed(s)" in (out / "claims.md").read_text()
    assert sum("done in" in line for line in lines) == 12 and lines[0].startswith("[ 1/12] eat_init/pretrained")


def test_rerun_skips_finished_runs_and_resumes_a_killed_one(tmp_path: Path, data: Path, fake: FakeTasks) -> None:
    out = tmp_path / "claims"
    _run(data, out, ["kd", "sed"])
    assert len(fake.calls) == 8
    fake.calls.clear()
    lines: list[str] = []
    _run(data, out, ["kd", "sed"], progress=lines.append)
    assert fake.calls == [] and sum("skipped" in line for line in lines) == 8
    assert not any("WARNING" in line for line in lines)
    (out / "sed" / "stage2" / "seed-1" / "metrics.json").unlink()  # killed before its metrics were written
    _run(data, out, ["kd", "sed"])
    assert [(s, cfg.seed) for s, cfg, _ in fake.calls] == [("atst_stage2", 1)]


@pytest.mark.parametrize(("missing", "stage", "names"), [
    ("pretrain_eat/eat.pt", "pretrain_eat", ["eat_init"]),
    ("predict_teacher/predictions.h5", "predict_teacher", ["kd"]),
    ("pack_hdf5/test.h5", "pack_hdf5", ["sed"]),
])
def test_a_missing_input_is_one_line_naming_the_file_and_stage(tmp_path: Path, data: Path, fake: FakeTasks,
                                                               missing: str, stage: str, names: list[str]) -> None:
    (data / missing).unlink()
    with pytest.raises(claims.MissingInputError) as error:
        _run(data, tmp_path / "claims", names)
    message = str(error.value)
    assert "\n" not in message and str(data / missing) in message and f"run `dvc repro {stage}` first" in message
    assert fake.calls == []  # checked before anything trains


def test_scores_match_the_evaluate_stage(tmp_path: Path) -> None:
    from audiopipe.evaluation.run import evaluate_pipeline

    packs = make_synthetic_pack(tmp_path / "pack", n_per_split={"test": 4}, sample_rate=16000)
    reader = ClipReader(packs["test"])
    tagger = _tagger(tmp_path / "student.pt", reader.class_names, 0)
    sed = _sed(tmp_path / "model.pt", reader.class_names, 0)
    evaluated = evaluate_pipeline(EVAL, clips_dir=tmp_path / "pack", out_dir=tmp_path / "eval", provenance={},
                                  taggers={"KD student": tagger}, sed_checkpoints={"stage 2": sed}, stage_dirs={})
    ours = claims.score_checkpoint("tagging", tagger, reader, EVAL)
    theirs = evaluated.metrics["tagging"]["KD student"]
    for key in ("test/mAP", "test/roc_auc", "test/score_spread"):
        assert ours[key] == pytest.approx(theirs[key])
    ours = claims.score_checkpoint("sed", sed, reader, EVAL)
    theirs = evaluated.metrics["sed"]["stage 2 student"]
    for key in ("psds1", "psds2", "event_f1", "intersection_f1", "frame_auc"):
        assert ours[f"test/{key}"] == pytest.approx(theirs[key])


def test_runs_are_mlflow_runs_nested_under_claims(tmp_path: Path, data: Path, fake: FakeTasks,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("PIPELINE_PARENT_RUN_ID", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _run(data, tmp_path / "claims", ["kd"], tracking_enabled=True, tracking_uri=uri, experiment="claims-test")
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("claims-test").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    parent = by_name.pop("claims")
    assert sorted(by_name) == ["kd/kd/seed-0", "kd/kd/seed-1", "kd/nokd/seed-0", "kd/nokd/seed-1"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in by_name.values())
    assert by_name["kd/nokd/seed-1"].data.params["seed"] == "1"
    assert "test/mAP" in by_name["kd/kd/seed-0"].data.metrics and "kd/kd/test/mAP_mean" in parent.data.metrics


def test_cli_runs_the_claims_and_prints_the_table(tmp_path: Path, data: Path, fake: FakeTasks, capsys) -> None:  # noqa: ANN001
    from audiopipe.commands import claims as command

    assert set(command.CLAIM_NAMES) == set(claims.CLAIMS)
    params = {s: {"init": "official", "seed": SEED_OF_PARAMS} for s in claims.sections(list(claims.CLAIMS))}
    params.update(evaluate=vars(EVAL), tracking={"enabled": False, "experiment": "x"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--seeds", "3", "4", "--claims", "kd", "--params", str(tmp_path / "params.yaml"),
                              "--data", str(data), "--out", str(tmp_path / "out")])
    assert command.run(args) == 0
    printed = capsys.readouterr().out
    assert "| MobileNet student: KD vs no KD | KD (EAT teacher) |" in printed and "done in" in printed
    assert sorted(cfg.seed for _, cfg, _ in fake.calls) == [3, 3, 4, 4]
    (data / "predict_teacher" / "predictions.h5").unlink()
    args.out = tmp_path / "other"
    with pytest.raises(SystemExit, match=r"predictions.h5 not found: run `dvc repro predict_teacher` first"):
        command.run(args)


def test_claims_help_works_without_importing_torch() -> None:
    code = ("import sys\nfrom audiopipe import cli\ntry:\n    cli.main(['claims', '--help'])\n"
            "except SystemExit as exit:\n    assert exit.code == 0\nassert 'torch' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--seeds" in done.stdout and "--claims" in done.stdout and "eat_init" in done.stdout
