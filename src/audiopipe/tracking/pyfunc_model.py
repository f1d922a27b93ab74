"""The MLflow model of a tagger or detector: a pyfunc over audio of any length, class names as output columns.

Logged by `log_pyfunc_model(mlflow, checkpoint, name)`:
    artifacts   `checkpoint`: the final-model checkpoint (our documented payload: a state dict plus builder
                name and kwargs; no pickled code)
    code        `audiopipe` copied as `code_paths`, so the model loads where audiopipe is not installed;
                the model itself is defined "from code" (a three-line entry script), not pickled
    environment `requirements.txt`: `PYFUNC_REQUIREMENTS` pinned to the logging environment's versions (plus
                the `mlflow` pin MLflow adds), all resolvable from PyPI; `python_env.yaml` pins the exact
                Python (uv downloads it where it is missing), so `mlflow models predict --env-manager uv`
                builds the environment on a fresh machine. On Linux x86_64 PyPI's torch is the CUDA build
                (measured: >= 2.7 GiB of wheels with its nvidia-* dependencies, 5 GiB in uv's cache)
    signature   input: a DataFrame with column `audio` (array of double, any length, mono, [-1, 1]) and
                optional `sample_rate` (long; default the model's rate); output: one column per class name,
                float probabilities
    registry    registered as `name` (distinct per stage output: `student`, `student_nokd`, ...)

Prediction: taggers pool the sigmoid probabilities of 10-s windows with a 5-s hop (as `audiopipe tag`);
detectors return, per class, the maximum over time of the median-filtered frame probabilities (as
`audiopipe detect` before thresholding). `set_champion(name, version)` points the `champion` alias at a version.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

PYFUNC_REQUIREMENTS = ("torch", "torchaudio", "numpy", "scipy", "soundfile", "pandas", "safetensors")
CHAMPION = "champion"
_ENTRY = ("import mlflow\n"
          "from audiopipe.tracking.pyfunc_model import AudioPipeModel\n"
          "mlflow.models.set_model(AudioPipeModel())\n")


class AudioPipeModel(PythonModel):
    """Loads the `checkpoint` artifact with `load_for_inference` and predicts clip-level probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded: Any = None

    def load_context(self, context: Any) -> None:
        from audiopipe.inference.checkpoints import load_for_inference

        self.loaded = load_for_inference(context.artifacts["checkpoint"])

    # `pd.DataFrame`: a hint MLflow skips for schema inference (with `Any` it warns on every prediction)
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        if self.loaded is None:
            self.load_context(context)
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        rates = frame["sample_rate"] if "sample_rate" in frame else [None] * len(frame)
        rows = [self.probabilities(audio, rate) for audio, rate in zip(frame["audio"], rates)]
        return pd.DataFrame(rows, columns=list(self.loaded.class_names))

    def probabilities(self, audio: Any, sample_rate: int | None = None) -> list[float]:
        """Clip-level probabilities (C,) of one mono waveform."""
        import numpy as np

        from audiopipe.audio.resample import resample

        loaded = self.loaded
        wave = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
        rate = int(sample_rate) if sample_rate is not None and not _is_nan(sample_rate) else loaded.sample_rate
        if rate != loaded.sample_rate:
            wave = resample(wave, rate, loaded.sample_rate)
        if loaded.kind == "detector":
            from audiopipe.commands.detect import frame_probabilities
            from audiopipe.metrics.sed_postprocessing import median_filter_scores

            post = loaded.postprocessing
            probs = frame_probabilities(loaded.model, wave, window_s=float(post.get("clip_duration_s", 10.0)),
                                        hop_s=3.0, batch_size=4)
            windows = list(post.get("median_windows", [1] * probs.shape[0]))
            return [float(p) for p in median_filter_scores(probs, windows).max(axis=1)]
        from audiopipe.commands.tag import Tagger, tag_waveform

        tagger = Tagger(loaded.model, loaded.sample_rate, loaded.class_names, loaded.source)
        _, probs = tag_waveform([tagger], wave, loaded.sample_rate, window_s=10.0, hop_s=5.0)
        return [float(p) for p in probs.mean(axis=0)]


def _is_nan(value: Any) -> bool:
    try:
        return bool(value != value)
    except Exception:  # noqa: BLE001
        return False


def signature(class_names: list[str]) -> Any:
    """Variable-length audio in, one probability column per class out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Schema

    inputs = Schema([ColSpec(Array(DataType.double), "audio"), ColSpec(DataType.long, "sample_rate", required=False)])
    outputs = Schema([ColSpec(DataType.double, name) for name in class_names])
    return ModelSignature(inputs=inputs, outputs=outputs)


def requirements() -> list[str]:
    """Pinned versions of what the model imports (torch without its local `+cpu`/`+cu` suffix)."""
    import importlib.metadata as metadata

    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in PYFUNC_REQUIREMENTS]


def log_pyfunc_model(mlflow: Any, checkpoint: str | Path, name: str, registered_name: str | None = None) -> Any:
    """Log `checkpoint` (a tagger or detector) as a pyfunc model in the active run; register it under
    `registered_name` (default `name`). Returns MLflow's ModelInfo. Raises on a checkpoint of another kind."""
    import mlflow.pyfunc

    import audiopipe
    from audiopipe.inference.checkpoints import load_for_inference

    loaded = load_for_inference(checkpoint)
    if loaded.kind not in ("tagger", "detector"):
        raise ValueError(f"{checkpoint}: a {loaded.kind} checkpoint has no class probabilities to serve")
    with tempfile.TemporaryDirectory() as tmp:
        entry = Path(tmp) / "audiopipe_model.py"
        entry.write_text(_ENTRY)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(entry),
            artifacts={"checkpoint": str(checkpoint)},
            code_paths=[str(Path(audiopipe.__file__).parent)],
            signature=signature(loaded.class_names),
            input_example=None,
            pip_requirements=requirements(),
            registered_model_name=registered_name or name,
        )


def set_champion(name: str, version: str | int, client: Any = None) -> None:
    """Point the registered model's `champion` alias at `version`."""
    if client is None:
        from mlflow import MlflowClient

        client = MlflowClient()
    client.set_registered_model_alias(name, CHAMPION, str(version))


def crown_champions(scores: dict[str, dict[str, float]], client: Any = None) -> dict[str, str]:
    """For each group (e.g. "tagger", "detector") of `{registered name: score}`, point `champion` at the newest
    version of the best-scoring registered model (NaN never wins; models never registered are skipped).
    Returns {group: "name/version"} for the aliases set."""
    import math

    if client is None:
        from mlflow import MlflowClient

        client = MlflowClient()
    crowned: dict[str, str] = {}
    for group, by_name in scores.items():
        ranked = sorted(((v, n) for n, v in by_name.items() if not math.isnan(v)), reverse=True)
        for _, name in ranked:
            versions = client.search_model_versions(f"name='{name}'")
            if versions:
                newest = max(versions, key=lambda v: int(v.version))
                set_champion(name, newest.version, client)
                crowned[group] = f"{name}/{newest.version}"
                break
    return crowned
