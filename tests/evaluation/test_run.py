"""Smoke test of the `evaluate` task on a tiny pack: tagging and SED checkpoints, a missing one, the report,
the tagging baselines and the collapse flag."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import torch

from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.synthetic import make_synthetic_pack
from audiopipe.evaluation.baselines import PRIOR_ROW, PROBE_ROW
from audiopipe.evaluation.run import evaluate_pipeline
from audiopipe.evaluation.scoring import waveform_batch
from audiopipe.models import build_model
from audiopipe.storage import save_checkpoint

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
    assert set(result.metrics["tagging"]) == {"KD student", PRIOR_ROW, PROBE_ROW}
    assert "test/mAP" in result.metrics["tagging"]["KD student"]
    assert {"stage 2 student", "stage 2 mean teacher"} <= set(result.metrics["sed"])
    assert "EAT teacher" in result.metrics["missing"]
    report = (tmp_path / "eval" / "report.html").read_text()
    assert "missing: stage not run" in report and (tmp_path / "eval" / "sed_psd_roc.png").is_file()
    assert 'src="sed_psd_roc_mean_tpr.png"' in report and (tmp_path / "eval" / "sed_psd_roc_mean_tpr.png").is_file()


def _eat_tagger(path: Path, reader: ClipReader, *, constant: bool) -> Path:
    """A tiny EAT tagger. constant: the final layer's weights are zero, so only its bias (no input) counts.
    Otherwise the final layer is refit so that its logits spread by ~2 over `reader`'s clips (a random encoder's
    embeddings differ little between clips, so a random head would look collapsed too)."""
    torch.manual_seed(0)
    kwargs = {"size": "eat_demo", "n_classes": len(reader.class_names), "target_frames": 96, "drop_path_rate": 0.0,
              "sample_rate": 16000}
    model = build_model("eat_tagger", **kwargs).eval()
    seen: dict[str, torch.Tensor] = {}
    hook = model.head.register_forward_hook(lambda module, inputs, output: seen.update(x=inputs[0]))
    with torch.no_grad():
        model(waveform_batch(reader, list(range(len(reader))), 16000, CFG.duration_s))
        weight = torch.zeros_like(model.head.weight) if constant else torch.randn_like(model.head.weight)
        logits = (seen["x"] - seen["x"].mean(0)) @ weight.T  # (N, C) centred logits
        weight *= 1.0 if constant else 2.0 / logits.std()
        model.head.weight.copy_(weight)
        model.head.bias.copy_(torch.linspace(-2.0, 1.0, weight.shape[0]) - seen["x"].mean(0) @ weight.T)
    hook.remove()
    return save_checkpoint(path, {"builder": "eat_tagger", "builder_kwargs": kwargs, "model": model.state_dict(),
                                  "class_names": reader.class_names, "sample_rate": 16000, "config": {},
                                  "metrics": {}})


def test_a_constant_tagger_is_flagged_collapsed_and_the_baselines_are_reported(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    packs = make_synthetic_pack(tmp_path / "pack", n_per_split=4, sample_rate=16000)
    test = ClipReader(packs["test"])
    taggers = {"constant tagger": _eat_tagger(tmp_path / "constant.pt", test, constant=True),
               "varying tagger": _eat_tagger(tmp_path / "varying.pt", test, constant=False)}
    with caplog.at_level(logging.WARNING, logger="audiopipe.evaluation.run"):
        result = evaluate_pipeline(CFG, clips_dir=tmp_path / "pack", out_dir=tmp_path / "eval", provenance={},
                                   taggers=taggers, sed_checkpoints={}, stage_dirs={})
    constant, varying = result.metrics["tagging"]["constant tagger"], result.metrics["tagging"]["varying tagger"]
    assert constant["test/collapsed"] == 1.0 and constant["test/score_spread"] < 1e-6
    assert varying["test/collapsed"] == 0.0 and varying["test/score_spread"] > 0.01
    warned = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("constant tagger" in m for m in warned) and not any("varying tagger" in m for m in warned)
    tagging = result.metrics["tagging"]
    assert {"test/mAP", "test/roc_auc"} <= set(tagging[PRIOR_ROW]) & set(tagging[PROBE_ROW])
    report = (tmp_path / "eval" / "report.html").read_text()
    row = {name: report[report.index(f"<th>{name}"):].split("</tr>")[0] for name in (*taggers, PRIOR_ROW, PROBE_ROW)}
    assert "collapsed" in row["constant tagger"] and "collapsed" not in row["varying tagger"]
    assert all('class="baseline"' in report[:report.index(row[name])][-30:] for name in (PRIOR_ROW, PROBE_ROW))
    assert all(">baseline</span>" in row[name] for name in (PRIOR_ROW, PROBE_ROW))


def test_baselines_without_training_packs_are_reported_missing(tmp_path: Path) -> None:
    make_synthetic_pack(tmp_path / "pack", n_per_split={"test": 3}, sample_rate=16000)
    result = evaluate_pipeline(CFG, clips_dir=tmp_path / "pack", out_dir=tmp_path / "eval", provenance={},
                               taggers={}, sed_checkpoints={}, stage_dirs={})
    assert result.metrics["tagging"] == {} and "tagging baselines" in result.metrics["missing"]
    report = (tmp_path / "eval" / "report.html").read_text()
    assert "missing: stage not run" in report[report.index(f"<th>{PROBE_ROW}"):].split("</tr>")[0]


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
