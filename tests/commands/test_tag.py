"""`audiopipe tag`: any rate/channels/length, windowing, pooling, ensembles, JSON, undecodable files."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiopipe.audio.resample import resample
from audiopipe.commands import tag
from audiopipe.models import build_model
from audiopipe.storage import save_checkpoint

CLASSES = ["Speech", "Dog", "Alarm", "Music"]
KWARGS = {"width_mult": 0.1, "n_classes": 4, "sample_rate": 16000, "n_mels": 32, "hop_length": 320}


def _checkpoint(path: Path, seed: int, class_names: list[str] = CLASSES) -> Path:
    torch.manual_seed(seed)
    model = build_model("mn_tagger", **KWARGS).eval()
    with torch.no_grad():  # make the head matter: random but non-trivial output biases
        model.net.classifier[-1].bias.copy_(torch.randn(4))  # type: ignore[index]
    return save_checkpoint(path, {"builder": "mn_tagger", "builder_kwargs": KWARGS, "model": model.state_dict(),
                                  "class_names": class_names, "sample_rate": 16000, "config": {}, "metrics": {}})


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tag")
    rng = np.random.default_rng(0)
    t = np.arange(int(25 * 44100)) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.05 * rng.standard_normal(t.size)], axis=1)
    sf.write(d / "long.wav", stereo.astype(np.float32), 44100)
    sf.write(d / "short.flac", (0.1 * rng.standard_normal(8000)).astype(np.float32), 22050)
    (d / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    return {"long": d / "long.wav", "short": d / "short.flac", "broken": d / "broken.wav",
            "ckpt_a": _checkpoint(d / "a.pt", 0), "ckpt_b": _checkpoint(d / "b.pt", 1)}


def _args(files_: list[Path], ckpts: list[Path], **kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    tag.add_arguments(parser)
    argv = [str(f) for f in files_] + [a for c in ckpts for a in ("--checkpoint", str(c))]
    for key, value in kw.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return parser.parse_args(argv)


def _run(args: argparse.Namespace) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return tag.run(args, out=out, err=err), out.getvalue(), err.getvalue()


def test_window_starts_follow_the_efficientat_rule() -> None:
    assert tag.window_starts(25.0, 10.0, 5.0) == [0.0, 5.0, 10.0, 15.0]
    assert tag.window_starts(20.0, 10.0, 5.0) == [0.0, 5.0, 10.0]
    assert tag.window_starts(3.0, 10.0, 5.0) == [0.0]


def test_json_windows_and_pooling_of_a_long_stereo_file(files: dict[str, Path]) -> None:
    code, out, err = _run(_args([files["long"]], [files["ckpt_a"]], json=True, windows=True, top_k=4))
    assert code == 0 and err == ""
    (result,) = json.loads(out)
    assert result["duration_s"] == pytest.approx(25.0) and result["n_windows"] == 4
    assert [w["start_s"] for w in result["windows"]] == [0.0, 5.0, 10.0, 15.0]
    assert result["windows"][-1]["end_s"] == pytest.approx(25.0)
    assert all(len(w["tags"]) == 4 for w in result["windows"]) and len(result["tags"]) == 4
    probs = [t["probability"] for t in result["tags"]]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    per_window = np.array([[{t["label"]: t["probability"] for t in w["tags"]}[c] for c in CLASSES]
                           for w in result["windows"]])
    pooled = {t["label"]: t["probability"] for t in result["tags"]}
    np.testing.assert_allclose([pooled[c] for c in CLASSES], per_window.mean(axis=0), atol=2e-4)  # mean of windows
    assert ((per_window >= 0) & (per_window <= 1)).all()


def test_ensemble_averages_logits(files: dict[str, Path]) -> None:
    taggers = tag.load_taggers([files["ckpt_a"], files["ckpt_b"]], torch.device("cpu"))
    audio = (0.1 * np.random.default_rng(1).standard_normal(12000)).astype(np.float32)
    _, probs = tag.tag_waveform(taggers, audio, 12000, window_s=10.0, hop_s=5.0)
    x = torch.from_numpy(resample(audio, 12000, 16000))[None]
    with torch.no_grad():
        expected = torch.sigmoid((taggers[0].model(x) + taggers[1].model(x)) / 2)
    np.testing.assert_allclose(probs, expected.numpy(), atol=1e-5)
    single = tag.tag_waveform(taggers[:1], audio, 12000, window_s=10.0, hop_s=5.0)[1]
    assert not np.allclose(single, probs)
    code, out, _ = _run(_args([files["short"]], [files["ckpt_a"], files["ckpt_b"]], json=True))
    assert code == 0 and json.loads(out)[0]["n_windows"] == 1


def test_ensemble_refuses_different_class_lists(files: dict[str, Path], tmp_path: Path) -> None:
    other = _checkpoint(tmp_path / "c.pt", 2, class_names=list(reversed(CLASSES)))
    with pytest.raises(ValueError, match="class list differs"):
        tag.load_taggers([files["ckpt_a"], other], torch.device("cpu"))


def test_undecodable_file_is_reported_and_others_still_tagged(files: dict[str, Path]) -> None:
    args = _args([files["broken"], files["short"], files["short"].with_name("missing.mp3")], [files["ckpt_a"]],
                 top_k=2)
    code, out, err = _run(args)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "broken.wav" in lines[0] and "missing.mp3" in lines[1]
    assert "short.flac" in out and "broken.wav" not in out
    assert len([line for line in out.splitlines() if line.startswith("    ")]) == 2  # top-2 table rows


def test_table_with_windows(files: dict[str, Path]) -> None:
    code, out, _ = _run(_args([files["long"]], [files["ckpt_a"]], windows=True, top_k=2, window_s=10, hop_s=10))
    assert code == 0
    assert out.count("  [") == 3 and "[20.0-25.0 s]" in out
