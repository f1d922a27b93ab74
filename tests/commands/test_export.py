"""`audiopipe export onnx`: the front end is exported too and onnxruntime matches torch within 1e-4."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from audiopipe.audio.features import EfficientATMel
from audiopipe.commands import export
from audiopipe.models import build_model
from audiopipe.storage import save_checkpoint

KWARGS = {"width_mult": 0.1, "n_classes": 5, "sample_rate": 16000, "n_mels": 32, "hop_length": 320}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("mn_tagger", **KWARGS).eval()
    path = tmp_path_factory.mktemp("export") / "student.pt"
    return save_checkpoint(path, {"builder": "mn_tagger", "builder_kwargs": KWARGS, "model": model.state_dict(),
                                  "class_names": list("abcde"), "sample_rate": 16000, "config": {}, "metrics": {}})


@pytest.mark.parametrize("samples", [16000, 12345])
def test_real_valued_front_end_equals_the_stft_one(samples: int) -> None:
    mel = EfficientATMel(sample_rate=16000, n_mels=32).eval()
    x = 0.3 * torch.randn(2, samples, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(export.ExportableMel(mel)(x), mel(x), atol=2e-4, rtol=0)


def test_onnxruntime_equals_torch(checkpoint: Path, tmp_path: Path) -> None:
    out, sample_rate = export.export_onnx(checkpoint, tmp_path / "student.onnx", seconds=1.0)
    assert out.is_file() and sample_rate == 16000
    assert export.check_onnx(checkpoint, out, seconds=1.5) <= 1e-4  # other length than traced: dynamic axis
    import onnx

    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["waveform"] and [o.name for o in graph.output] == ["logits"]
    assert any(node.op_type == "Conv" for node in graph.node)


def test_cli_run_applies_the_tolerance(checkpoint: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    args = parser.parse_args(["onnx", str(checkpoint), str(tmp_path / "m.onnx"), "--seconds", "1", "--atol", "-1"])
    assert export.run(args) == 1  # no difference can be below a negative tolerance: the check is applied
    assert (tmp_path / "m.onnx").stat().st_size > 1000
