"""Tests for `audiopipe features`: shapes per granularity, any rate/channels, per-file errors, exit status."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiopipe.cli import main
from audiopipe.models import build_model
from audiopipe.models.eat.frontend import EATFrontEnd
from audiopipe.storage import save_checkpoint

D = 96  # eat_demo width


@pytest.fixture(scope="module")
def encoder_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("eat_demo")
    path = tmp_path_factory.mktemp("ckpt") / "eat.pt"
    return save_checkpoint(path, {"builder": "eat_demo", "builder_kwargs": {}, "model": model.state_dict(),
                                  "class_names": [], "sample_rate": 16000, "config": {}, "metrics": {}})


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    mono = folder / "mono16k.wav"
    sf.write(mono, (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    stereo = folder / "stereo44k.flac"
    sf.write(stereo, (0.1 * rng.standard_normal((22050, 2))).astype(np.float32), 44100)
    broken = folder / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    return {"mono": mono, "stereo": stereo, "broken": broken}


@pytest.mark.parametrize(("granularity", "shape"), [("all", (57, D)), ("frame", (56, D)), ("utterance", (D,))])
def test_granularity_shapes(granularity: str, shape: tuple[int, ...], encoder_ckpt: Path,
                            audio_files: dict[str, Path], tmp_path: Path) -> None:
    # 1 s at 16 kHz -> 98 fbank frames -> rounded up to 112 -> 7 x 8 = 56 patches
    code = main(["features", str(audio_files["mono"]), "--checkpoint", str(encoder_ckpt), "--out-dir", str(tmp_path),
                 "--granularity", granularity, "--device", "cpu"])
    assert code == 0
    features = np.load(tmp_path / "mono16k.npy")
    assert features.shape == shape and features.dtype == np.float32 and np.isfinite(features).all()


def test_features_match_encoder_on_the_front_end(encoder_ckpt: Path, audio_files: dict[str, Path],
                                                 tmp_path: Path) -> None:
    main(["features", str(audio_files["mono"]), "--checkpoint", str(encoder_ckpt), "--out-dir", str(tmp_path),
          "--target-frames", "128", "--device", "cpu"])
    from audiopipe.models import load_model

    encoder, _ = load_model(encoder_ckpt)
    wave = torch.from_numpy(sf.read(audio_files["mono"], dtype="float32")[0]).unsqueeze(0)
    with torch.no_grad():
        expected = encoder(EATFrontEnd(16000, target_frames=128)(wave))[0].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "mono16k.npy"), expected, rtol=1e-4, atol=1e-5)


def test_any_rate_and_channels_and_tagger_checkpoint(audio_files: dict[str, Path], tmp_path: Path) -> None:
    kwargs = {"size": "eat_demo", "n_classes": 3, "sample_rate": 32000, "target_frames": 96}
    tagger = build_model("eat_tagger", **kwargs)
    ckpt = save_checkpoint(tmp_path / "tagger.pt", {"builder": "eat_tagger", "builder_kwargs": kwargs,
                                                    "model": tagger.state_dict(), "class_names": ["a", "b", "c"],
                                                    "sample_rate": 32000, "config": {}, "metrics": {}})
    code = main(["features", str(audio_files["stereo"]), "--checkpoint", str(ckpt), "--out-dir", str(tmp_path / "o"),
                 "--device", "cpu"])
    assert code == 0
    # 0.5 s at 44.1 kHz, 2 channels -> mono 16 kHz 8000 samples -> 48 frames -> 3 x 8 patches (+ CLS)
    assert np.load(tmp_path / "o" / "stereo44k.npy").shape == (25, D)


def test_bad_file_is_named_others_still_written(encoder_ckpt: Path, audio_files: dict[str, Path], tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    files = [str(audio_files["broken"]), str(audio_files["mono"]), str(tmp_path / "missing.wav")]
    with caplog.at_level(logging.ERROR):
        code = main(["features", *files, "--checkpoint", str(encoder_ckpt), "--out-dir", str(tmp_path), "--device",
                     "cpu"])
    assert code == 1
    assert (tmp_path / "mono16k.npy").is_file() and not (tmp_path / "broken.npy").exists()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("broken.wav" in m for m in errors) and any("missing.wav" in m for m in errors)
    assert all("\n" not in m for m in errors)
    assert "2 of 3 files failed" in errors[-1]


def test_official_fairseq_layout_is_accepted(audio_files: dict[str, Path], tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = build_model("eat_demo", num_heads=1)  # official files carry no head count: D // 64 is assumed
    rename = {"patch_embed.proj.": "modality_encoders.IMAGE.local_encoder.proj.",
              "cls_token": "modality_encoders.IMAGE.extra_tokens",
              "norm_pre.": "modality_encoders.IMAGE.context_encoder.norm."}
    state = {}
    for key, value in encoder.state_dict().items():
        for ours, theirs in rename.items():
            if key.startswith(ours):
                key = theirs + key[len(ours):]
        state[key] = value
    official = tmp_path / "official.pt"
    torch.save({"model": state}, official)
    code = main(["features", str(audio_files["mono"]), "--checkpoint", str(official), "--out-dir", str(tmp_path / "o"),
                 "--granularity", "utterance", "--device", "cpu"])
    assert code == 0
    wave = torch.from_numpy(sf.read(audio_files["mono"], dtype="float32")[0]).unsqueeze(0)
    with torch.no_grad():
        expected = encoder.eval()(EATFrontEnd(16000, target_frames=None)(wave))[0, 0].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "o" / "mono16k.npy"), expected, rtol=1e-4, atol=1e-5)
