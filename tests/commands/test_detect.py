"""`audiopipe detect`: any rate/channels/length, window merging, teacher vs student, DESED tsv, bad files."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiopipe.commands import detect
from audiopipe.models import build_model
from audiopipe.storage import save_checkpoint

CLASSES = ["Speech", "Dog", "Alarm"]
KWARGS = {"n_classes": 3, "channels": [4] * 7, "rnn_hidden": 4, "rnn_layers": 1, "dropout": 0.0}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    student = build_model("sed_crnn", **KWARGS).eval()
    teacher = build_model("sed_crnn", **KWARGS).eval()
    with torch.no_grad():  # the teacher always hears a Dog, the student never hears anything
        teacher.dense.bias.copy_(torch.tensor([-20.0, 20.0, -20.0]))
        student.dense.bias.fill_(-20.0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    return save_checkpoint(
        path,
        {
            "builder": "sed_crnn",
            "builder_kwargs": KWARGS,
            "model": student.state_dict(),
            "mean_teacher": teacher.state_dict(),
            "class_names": CLASSES,
            "sample_rate": 16000,
            "config": {},
            "metrics": {},
            "postprocessing": {"median_windows": [3, 3, 3], "clip_duration_s": 1.0},
        },
    )


def _args(files: list[Path], checkpoint: Path, **kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    detect.add_arguments(parser)
    argv = [str(f) for f in files] + ["--checkpoint", str(checkpoint)]
    for key, value in kw.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return parser.parse_args(argv)


def _wav(path: Path, seconds: float, rate: int, channels: int = 1) -> Path:
    rng = np.random.default_rng(0)
    sf.write(path, (0.1 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32), rate)
    return path


def test_long_stereo_file_gives_one_merged_event(tmp_path: Path, checkpoint: Path, capsys) -> None:
    wav = _wav(tmp_path / "long.wav", 3.5, 44100, channels=2)
    tsv = tmp_path / "out.tsv"
    assert detect.run(_args([wav], checkpoint, tsv=tsv, hop_s=0.4)) == 0
    lines = tsv.read_text().splitlines()
    assert lines[0] == "filename\tonset\toffset\tevent_label"
    assert len(lines) == 2  # overlapping windows merge into one Dog event
    name, onset, offset, label = lines[1].split("\t")
    assert (name, label, float(onset)) == (str(wav.absolute()), "Dog", 0.0)  # full paths: no two test.wav clash
    assert float(offset) == pytest.approx(3.5, abs=0.07)
    assert "Dog" in capsys.readouterr().out


def test_student_weights_detect_nothing(tmp_path: Path, checkpoint: Path) -> None:
    wav = _wav(tmp_path / "short.wav", 0.6, 16000)
    tsv = tmp_path / "out.tsv"
    assert detect.run(_args([wav], checkpoint, tsv=tsv, weights="student")) == 0
    assert tsv.read_text().splitlines() == ["filename\tonset\toffset\tevent_label", f"{wav.absolute()}\t\t\t"]


def test_undecodable_file_is_reported_and_others_processed(tmp_path: Path, checkpoint: Path, capsys) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio at all")
    good = _wav(tmp_path / "good.wav", 1.0, 16000)
    assert detect.run(_args([bad, good], checkpoint)) == 1
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and "broken.wav" in captured.err
    assert "good.wav: 1 event(s)" in captured.out


def test_frame_probabilities_cover_the_whole_file(checkpoint: Path) -> None:
    model, _ = detect.load_detector(checkpoint)
    audio = np.zeros(int(2.3 * 16000), np.float32)
    probs = detect.frame_probabilities(model, audio, window_s=1.0, hop_s=0.3, batch_size=2)
    assert probs.shape == (3, int(np.ceil(2.3 * model.frame_rate_hz)))
    assert np.allclose(probs[1], 1.0, atol=1e-4) and probs[0].max() < 1e-4


def test_detect_events_threshold_is_strict() -> None:
    probs = np.array([[0.5, 0.5, 0.9, 0.9, 0.1]])
    events = detect.detect_events(
        probs, frame_rate_hz=10.0, class_names=["a"], median_windows=[1], threshold=0.5, duration_s=0.5
    )
    assert events == [(pytest.approx(0.2), pytest.approx(0.4), "a", pytest.approx(0.9))]
