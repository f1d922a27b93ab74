"""Tests for audiopipe.training.predict: pack alignment, ensembling, label checks, written file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from audiopipe.config import PredictTeacherConfig
from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.manifests import DEFAULT_CLASSES
from audiopipe.data.predictions import PredictionsError, read_attrs, read_predictions
from audiopipe.data.synthetic import make_synthetic_pack
from audiopipe.models import build_model, load_model
from audiopipe.storage import save_checkpoint
from audiopipe.training.predict import predict_teacher

PREDICT: dict[str, Any] = dict(
    extra_checkpoints=[], splits=["train", "valid", "test", "weak", "unlabelled"], clip_seconds=1.0, batch_size=3,
    seed=0, device="cpu", amp="none", num_workers=0,
)


def predict_cfg(**overrides: Any) -> PredictTeacherConfig:
    return PredictTeacherConfig(**{**PREDICT, **overrides})


KWARGS = {"size": "eat_demo", "n_classes": len(DEFAULT_CLASSES), "target_frames": 96, "drop_path_rate": 0.0}


def _tagger_checkpoint(path: Path, seed: int, sample_rate: int = 16000, class_names: list[str] | None = None) -> Path:
    torch.manual_seed(seed)
    kwargs = {**KWARGS, "sample_rate": sample_rate}
    model = build_model("eat_tagger", **kwargs)
    return save_checkpoint(path, {"builder": "eat_tagger", "builder_kwargs": kwargs, "model": model.state_dict(),
                                  "class_names": list(class_names or DEFAULT_CLASSES), "sample_rate": sample_rate,
                                  "config": {}, "metrics": {}})


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pack")
    make_synthetic_pack(out, n_per_split={"train": 3, "valid": 2, "unlabelled": 2}, sample_rate=16000, seed=2)
    return out


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    return [_tagger_checkpoint(folder / "a.pt", 0), _tagger_checkpoint(folder / "b.pt", 1, sample_rate=32000)]


def _reference_logits(path: Path, pack: Path, split: str) -> np.ndarray:
    model, _ = load_model(path)
    reader = ClipReader(pack / f"{split}.h5")
    audio = torch.stack([torch.from_numpy(reader.read_audio(i)) for i in range(len(reader))])
    if model.sample_rate != reader.sample_rate:
        import torchaudio

        audio = torchaudio.functional.resample(audio, reader.sample_rate, model.sample_rate)
    with torch.no_grad():
        return model(audio).numpy()


def test_every_present_split_is_written_in_pack_order(pack: Path, teachers: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "predictions.h5"
    result = predict_teacher(predict_cfg(), clips_dir=pack, checkpoints=teachers[:1], out=out)
    assert read_attrs(out)["splits"] == ["train", "unlabelled", "valid"]
    for split in ("train", "valid", "unlabelled"):
        ids, logits, names = read_predictions(out, split)
        assert ids == ClipReader(pack / f"{split}.h5").clip_ids
        assert logits.shape == (len(ids), len(DEFAULT_CLASSES)) and names == list(DEFAULT_CLASSES)
    np.testing.assert_allclose(read_predictions(out, "valid")[1], _reference_logits(teachers[0], pack, "valid"),
                               rtol=1e-4, atol=1e-5)
    assert result.metrics["train/clips"] == 3.0 and "unlabelled/mAP" not in result.metrics
    assert 0.0 <= result.metrics["valid/mAP"] <= 1.0


def test_ensemble_averages_logits_of_all_checkpoints(pack: Path, teachers: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "predictions.h5"
    cfg = predict_cfg(splits=["valid"], extra_checkpoints=[str(teachers[1])])
    predict_teacher(cfg, clips_dir=pack, checkpoints=teachers[:1], out=out)
    expected = (_reference_logits(teachers[0], pack, "valid") + _reference_logits(teachers[1], pack, "valid")) / 2
    np.testing.assert_allclose(read_predictions(out, "valid")[1], expected, rtol=1e-4, atol=1e-5)
    attrs = read_attrs(out)
    assert attrs["checkpoints"] == [str(p) for p in teachers]
    assert "a.pt" in attrs["teacher"] and "b.pt" in attrs["teacher"]


def test_refuses_teacher_with_other_label_list(pack: Path, tmp_path: Path) -> None:
    names = list(DEFAULT_CLASSES)
    names[0], names[1] = names[1], names[0]
    bad = _tagger_checkpoint(tmp_path / "bad.pt", 0, class_names=names)
    out = tmp_path / "predictions.h5"
    with pytest.raises(PredictionsError, match="label list differs"):
        predict_teacher(predict_cfg(), clips_dir=pack, checkpoints=[bad], out=out)
    assert not out.exists()


def test_whole_clip_mode_uses_batches_of_one(pack: Path, teachers: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "predictions.h5"
    predict_teacher(predict_cfg(splits=["valid"], clip_seconds=None), clips_dir=pack, checkpoints=teachers[:1], out=out)
    assert read_predictions(out, "valid")[1].shape == (2, len(DEFAULT_CLASSES))
