"""The MLflow pyfunc model: any-length audio in, class-name columns out, registered under distinct names,
loadable through the registry and the `champion` alias, servable by `mlflow models predict` in a Python that
holds only the logged requirements, with an environment (Python, requirements.txt) that resolves from PyPI."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from audiopipe.models import build_model
from audiopipe.storage import save_checkpoint

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


def _requirement_closure(lines: list[str]) -> list[metadata.Distribution]:
    """The installed distributions that `lines` (requirement specifiers) need, dependencies and extras included."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, tuple[metadata.Distribution, set[str]]] = {}
    todo = [(Requirement(line), "") for line in lines]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        if name in found and set(req.extras) <= found[name][1]:
            continue
        dist = metadata.distribution(name)
        extras = found.get(name, (dist, set()))[1] | set(req.extras)
        found[name] = (dist, extras)
        todo += [(Requirement(spec), e) for spec in dist.requires or [] for e in ("", *extras)]
    return [dist for dist, _ in found.values()]


def _model_dir(registry, name: str) -> Path:
    return Path(mlflow.artifacts.download_artifacts(registry["infos"][name].model_uri,
                                                    dst_path=str(registry["root"] / "env" / name)))


@pytest.fixture(scope="module")
def logged_env_python(registry) -> Path:
    """A Python whose site-packages holds only the closure of the logged requirements.txt (symlinked from this
    environment, file by file): no audiopipe, nothing else the tests happen to have installed."""
    requirements = (_model_dir(registry, "student") / "requirements.txt").read_text().splitlines()
    root = registry["root"] / "logged_env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    owners: dict[str, set[str]] = {}  # top-level entry of site-packages -> the installed distributions using it
    for dist in metadata.distributions():
        for top in {file.parts[0] for file in dist.files or []}:
            owners.setdefault(top, set()).add(dist.metadata["Name"])
    for dist in _requirement_closure([r for r in requirements if r.strip() and not r.startswith(("#", "-"))]):
        for file in dist.files or []:
            # a folder of one distribution is linked whole, shared ones (namespaces such as nvidia/) file by file
            link = Path(file.parts[0]) if len(owners[file.parts[0]]) == 1 else Path(file)
            target = site / link
            if file.parts[0] != ".." and not target.is_symlink():  # ".." are console scripts in bin/
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(dist.locate_file(link))
    return python


def _clean_env(**extra: str) -> dict[str, str]:
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def test_logged_env_python_has_no_audiopipe(logged_env_python: Path, tmp_path: Path) -> None:
    proc = subprocess.run([logged_env_python, "-c", "import audiopipe"], capture_output=True, text=True,
                          cwd=tmp_path, env=_clean_env(), check=False)
    assert proc.returncode != 0 and "No module named 'audiopipe'" in proc.stderr


@pytest.mark.parametrize("name", ["student", "atst_stage2"])
def test_mlflow_models_predict_serves_the_registered_model_with_only_its_logged_requirements(
        registry, logged_env_python: Path, tmp_path: Path, name: str) -> None:
    """`--env-manager local` in a Python holding only the logged requirements: the code comes from `code_paths`
    and nothing the model imports is missing from requirements.txt (`--env-manager uv` builds that environment
    from PyPI; benchmarks/mlflow_env.py runs it for real)."""
    request = tmp_path / "input.json"
    audio = _audio()
    request.write_text(json.dumps({"dataframe_split": {"columns": ["audio", "sample_rate"],
                                                       "data": [[a.tolist(), r] for a, r in zip(audio["audio"],
                                                                                                audio["sample_rate"])]}}))
    out = tmp_path / "out.json"
    proc = subprocess.run([logged_env_python, "-m", "mlflow", "models", "predict", "-m", f"models:/{name}/1",
                           "-i", str(request), "-t", "json", "-o", str(out), "--env-manager", "local"],
                          capture_output=True, text=True, env=_clean_env(MLFLOW_TRACKING_URI=str(registry["uri"])),
                          cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Type hint used in the model's predict function is not supported" not in proc.stderr
    served = pd.DataFrame(json.loads(out.read_text())["predictions"])
    expected = mlflow.pyfunc.load_model(f"models:/{name}/1").predict(audio)
    assert list(served.columns) == CLASSES
    np.testing.assert_allclose(served.to_numpy(), expected.to_numpy(), atol=1e-5)


def test_every_model_family_imports_with_only_the_logged_requirements(registry, logged_env_python: Path,
                                                                       tmp_path: Path) -> None:
    """Other families (EAT, ATST, DyMN) are logged the same way: every module of the packages a served model
    draws on must import there too."""
    code = _model_dir(registry, "student") / "code"
    packages = ["audiopipe.audio", "audiopipe.models", "audiopipe.inference"]
    modules = ["audiopipe.commands.tag", "audiopipe.commands.detect", "audiopipe.metrics.sed",
               "audiopipe.tracking.pyfunc_model"]
    script = (f"import importlib, pkgutil, sys; sys.path.insert(0, {str(code)!r})\n"
              f"for name in {modules!r}: importlib.import_module(name)\n"
              f"for package in {packages!r}:\n"
              "    path = importlib.import_module(package).__path__\n"
              "    for info in pkgutil.walk_packages(path, package + '.'): importlib.import_module(info.name)\n")
    proc = subprocess.run([logged_env_python, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env=_clean_env(), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.network
def test_logged_environment_resolves_from_pypi(registry) -> None:
    """What `--env-manager uv` installs on a fresh Linux x86_64 machine, resolved from PyPI (metadata only, no
    wheels downloaded): the pinned Python is one uv can download, the build dependencies and requirements.txt
    resolve, and torch keeps the logged version."""
    uv = pytest.importorskip("uv", reason="uv (dev extra) runs --env-manager uv").find_uv_bin()
    local = _model_dir(registry, "student")
    python_env = yaml.safe_load((local / "python_env.yaml").read_text())
    env = {k: v for k, v in _clean_env().items() if not k.startswith("UV_")}
    listed = subprocess.run([uv, "python", "list", str(python_env["python"]), "--only-downloads", "--no-config",
                             "--output-format", "json"], capture_output=True, text=True, env=env, check=True)
    assert [p for p in json.loads(listed.stdout) if p["version"] == str(python_env["python"])], listed.stdout
    build = local / "build-requirements.txt"
    build.write_text("\n".join(python_env["build_dependencies"]))
    locked = {}
    for requirements in (build, local / "requirements.txt"):
        proc = subprocess.run([uv, "pip", "compile", str(requirements), "--no-config", "--no-cache", "--no-header",
                               "--default-index", "https://pypi.org/simple", "--python-version",
                               str(python_env["python"]), "--python-platform", "x86_64-manylinux_2_28"],
                              capture_output=True, text=True, env=env, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        locked.update(line.split("==") for line in proc.stdout.splitlines() if "==" in line)
    assert locked["torch"] == metadata.version("torch").split("+")[0]
    assert locked["mlflow"] == mlflow.__version__


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
