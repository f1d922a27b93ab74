"""The MLflow pyfunc model: any-length audio in, class-name columns out, registered under distinct names,
loadable through the registry and the `champion` alias, servable by `mlflow models predict`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from audiopipe.models import build_model
from audiopipe.training.checkpoint import save_checkpoint

mlflow = pytest.importorskip("mlflow")

TAG_KWARGS = {"width_mult": 0.1, "n_classes": 3, "sample_rate": 16000, "n_mels": 32, "hop_length": 320}
SED_KWARGS = {"n_classes": 3, "channels": [4] * 7, "rnn_hidden": 4, "rnn_layers": 1, "dropout": 0.0}
CLASSES = ["Speech", "Dog", "Alarm"]


def _ckpt(path: Path, builder: str, kwargs: dict) -> Path:
    torch.manual_seed(0)
    model = build_model(builder, **kwargs)
    return save_checkpoint(path, {"builder": builder, "builder_kwargs": kwargs, "model": model.state_dict(),
                                  "class_names": CLASSES, "sample_rate": 16000, "config": {}, "metrics": {},
                                  "postprocessing": {"median_windows": [3, 3, 3], "clip_duration_s": 1.0}})


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    from audiopipe.tracking.pyfunc_model import log_pyfunc_model

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("pyfunc", artifact_location=str(root / "artifacts"))
    student = _ckpt(root / "student.pt", "mn_tagger", TAG_KWARGS)
    nokd = _ckpt(root / "student_nokd.pt", "mn_tagger", TAG_KWARGS)
    sed = _ckpt(root / "model.pt", "sed_crnn", SED_KWARGS)
    infos = {}
    with mlflow.start_run(experiment_id=experiment):
        for name, path in (("student", student), ("student_nokd", nokd), ("atst_stage2", sed)):
            infos[name] = log_pyfunc_model(mlflow, path, name)
    return {"uri": uri, "infos": infos, "student": student, "root": root}


def _audio() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    clips = [0.1 * rng.standard_normal(16000), 0.1 * rng.standard_normal(12 * 16000)]  # 1 s and 12 s
    return pd.DataFrame({"audio": [c.astype(np.float32) for c in clips], "sample_rate": [16000, 16000]})


def test_registered_under_distinct_names_with_a_variable_length_signature(registry) -> None:
    client = mlflow.MlflowClient(registry["uri"])
    names = {m.name for m in client.search_registered_models()}
    assert {"student", "student_nokd", "atst_stage2"} <= names
    signature = registry["infos"]["student"].signature
    assert signature.inputs.input_names() == ["audio", "sample_rate"]
    assert signature.outputs.input_names() == CLASSES


def test_tagger_predicts_any_length_with_class_columns(registry) -> None:
    from audiopipe.commands.tag import load_taggers, tag_waveform

    model = mlflow.pyfunc.load_model("models:/student/1")
    audio = _audio()
    out = model.predict(audio)
    assert list(out.columns) == CLASSES and out.shape == (2, 3)
    assert ((out.to_numpy() >= 0) & (out.to_numpy() <= 1)).all()
    taggers = load_taggers([registry["student"]], torch.device("cpu"))
    _, probs = tag_waveform(taggers, audio["audio"][1], 16000, window_s=10.0, hop_s=5.0)
    np.testing.assert_allclose(out.iloc[1].to_numpy(), probs.mean(axis=0), atol=1e-5)


def test_detector_and_champion_alias(registry) -> None:
    from audiopipe.tracking.pyfunc_model import set_champion

    out = mlflow.pyfunc.load_model("models:/atst_stage2/1").predict(_audio())
    assert list(out.columns) == CLASSES and out.shape == (2, 3)
    set_champion("student", 1, client=mlflow.MlflowClient(registry["uri"]))
    champion = mlflow.pyfunc.load_model("models:/student@champion")
    assert list(champion.predict(_audio()).columns) == CLASSES


def test_no_pickled_model_in_the_artifacts(registry) -> None:
    local = Path(mlflow.artifacts.download_artifacts(registry["infos"]["student"].model_uri,
                                                     dst_path=str(registry["root"] / "dl")))
    assert not list(local.rglob("*.pkl")) and (local / "MLmodel").is_file()
    assert "audiopipe_model.py" in (local / "MLmodel").read_text()  # models from code
    assert list(local.rglob("checkpoint/*.pt")) or list(local.rglob("artifacts/*.pt"))


def test_mlflow_models_predict_serves_the_registered_model(registry, tmp_path: Path) -> None:
    request = tmp_path / "input.json"
    audio = _audio()
    request.write_text(json.dumps({"dataframe_split": {"columns": ["audio", "sample_rate"],
                                                       "data": [[a.tolist(), r] for a, r in zip(audio["audio"],
                                                                                                audio["sample_rate"])]}}))
    env = {**os.environ, "MLFLOW_TRACKING_URI": str(registry["uri"])}
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "mlflow", "models", "predict", "-m", "models:/student/1",
                           "-i", str(request), "-t", "json", "-o", str(out), "--env-manager", "local"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    predictions = json.loads(out.read_text())["predictions"]
    assert len(predictions) == 2 and set(predictions[0]) == set(CLASSES)


def test_each_stage_output_gets_its_own_registered_name() -> None:
    from audiopipe.tracking.outputs import registered_name

    assert registered_name(Path("data/distill_mobilenet/student.pt")) == "student"
    assert registered_name(Path("data/distill_mobilenet_nokd/student.pt")) == "student_nokd"
    assert registered_name(Path("data/finetune_eat/eat_tagger.pt")) == "eat_tagger"
    assert registered_name(Path("data/atst_stage2/model.pt")) == "atst_stage2"


def test_crown_champions_aliases_the_newest_version_of_the_best_model(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from audiopipe.tracking.pyfunc_model import CHAMPION, crown_champions

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                          registry_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name, versions in {"student": 2, "student_nokd": 1, "atst_stage2": 1}.items():
        client.create_registered_model(name)
        for _ in range(versions):
            client.create_model_version(name, source=str(tmp_path))
    crowned = crown_champions({"tagger": {"student": 0.61, "student_nokd": 0.55, "eat_tagger": 0.9},
                               "detector": {"atst_stage1": float("nan"), "atst_stage2": 0.05}}, client=client)
    # eat_tagger scores best but was never registered (e.g. tracking was off for that stage): next best wins
    assert crowned == {"tagger": "student/2", "detector": "atst_stage2/1"}
    assert int(client.get_model_version_by_alias("student", CHAMPION).version) == 2
