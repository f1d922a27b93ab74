"""Smoke test of the `evaluate` task on a tiny pack: tagging and SED checkpoints, a missing one, the report."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.synthetic import make_synthetic_pack
from audiopipe.evaluation.run import evaluate_pipeline
from audiopipe.models import build_model
from audiopipe.training.checkpoint import save_checkpoint

CFG = SimpleNamespace(split="test", duration_s=1.0, batch_size=4, median_windows=[3], threshold=0.5,
                      timeline_clips=1)


def _save(path: Path, builder: str, kwargs: dict, classes: list[str], **extra: object) -> Path:
    torch.manual_seed(0)
    model = build_model(builder, **kwargs)
    payload = {"builder": builder, "builder_kwargs": kwargs, "model": model.state_dict(), "class_names": classes,
               "sample_rate": int(model.sample_rate), "config": {}, "metrics": {}, **extra}
    if "mean_teacher" in extra:
        payload["mean_teacher"] = model.state_dict()
    return save_checkpoint(path, payload)


def test_evaluate_writes_metrics_and_report_and_marks_missing_models(tmp_path: Path) -> None:
    packs = make_synthetic_pack(tmp_path / "pack", n_per_split=3, sample_rate=16000)
    classes = ClipReader(packs["test"]).class_names
    tagger = _save(tmp_path / "student.pt", "mn_tagger",
                   {"width_mult": 0.1, "n_classes": len(classes), "sample_rate": 16000, "n_mels": 32,
                    "hop_length": 320}, classes)
    sed = _save(tmp_path / "sed.pt", "sed_crnn", {"n_classes": len(classes), "channels": [4, 4, 4, 4, 4, 4, 4],
                                                  "rnn_hidden": 4}, classes, mean_teacher=True,
                postprocessing={"median_windows": [3] * len(classes)})
    result = evaluate_pipeline(
        CFG, clips_dir=tmp_path / "pack", out_dir=tmp_path / "eval", provenance={"git commit": "test"},
        taggers={"KD student": tagger, "EAT teacher": tmp_path / "absent.pt"},
        sed_checkpoints={"stage 2": sed}, stage_dirs={"distill": tmp_path / "nothing"},
    )
    assert set(result.metrics["tagging"]) == {"KD student"}
    assert "test/mAP" in result.metrics["tagging"]["KD student"]
    assert {"stage 2 student", "stage 2 mean teacher"} <= set(result.metrics["sed"])
    assert "EAT teacher" in result.metrics["missing"]
    report = (tmp_path / "eval" / "report.html").read_text()
    assert "missing: stage not run" in report and (tmp_path / "eval" / "sed_psd_roc.png").is_file()
    assert 'src="sed_psd_roc_mean_tpr.png"' in report and (tmp_path / "eval" / "sed_psd_roc_mean_tpr.png").is_file()


def test_stage_curves_read_validation_csv_with_a_step_column(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """The stages write valid_curve.csv with `epoch` *and* `step`: it must still be drawn as validation."""
    from audiopipe.evaluation import plots, run
    from audiopipe.evaluation.report import ReportData

    stage = tmp_path / "finetune_eat"
    stage.mkdir()
    (stage / "train_curve.csv").write_text("step,epoch,train/loss\n1,0,1.0\n2,0,0.8\n")
    (stage / "valid_curve.csv").write_text("epoch,step,valid/mAP\n0,1,0.3\n1,2,0.4\n")
    seen: dict = {}
    monkeypatch.setattr(plots, "training_curves",
                        lambda path, title, train, valid: seen.update(train=train, valid=valid))
    run._curves({"finetune_eat": stage}, tmp_path, ReportData())
    assert seen["valid"]["valid/mAP"] == [0.3, 0.4] and seen["train"]["train/loss"] == [1.0, 0.8]
