"""The inference CLIs fail in one line that names the file or flag, check arguments before any work, refuse a
checkpoint of the wrong kind before reading audio, and flag silent, near-silent and over-range input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiopipe.cli import COMMANDS, available, main
from audiopipe.models import build_model
from audiopipe.storage import save_checkpoint

TAG_KWARGS = {"width_mult": 0.1, "n_classes": 3, "sample_rate": 16000, "n_mels": 32, "hop_length": 320}
SED_KWARGS = {"n_classes": 3, "channels": [4] * 7, "rnn_hidden": 4, "rnn_layers": 1, "dropout": 0.0}
CLASSES = ["Speech", "Dog", "Alarm"]


def _payload(builder: str, kwargs: dict, classes: list[str]) -> dict:
    torch.manual_seed(0)
    model = build_model(builder, **kwargs)
    return {"builder": builder, "builder_kwargs": kwargs, "model": model.state_dict(), "class_names": classes,
            "sample_rate": 16000, "config": {}, "metrics": {}, "postprocessing": {"median_windows": [1, 1, 1]}}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpts")
    return {"tagger": save_checkpoint(d / "student.pt", _payload("mn_tagger", TAG_KWARGS, CLASSES)),
            "sed": save_checkpoint(d / "model.pt", _payload("sed_crnn", SED_KWARGS, CLASSES)),
            "short_list": save_checkpoint(d / "bad.pt", _payload("mn_tagger", TAG_KWARGS, CLASSES[:2]))}


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "noise.wav"
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000)
    return path


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(("command", "kind"), [("tag", "sed"), ("detect", "tagger"), ("features", "tagger")])
def test_wrong_kind_refused_once_before_audio_is_read(command: str, kind: str, ckpts, tmp_path: Path,
                                                      capsys) -> None:
    missing = [str(tmp_path / f"missing{i}.wav") for i in range(3)]  # never opened: the refusal comes first
    extra = ["--out-dir", str(tmp_path)] if command == "features" else []
    code, out, err = _cli([command, *missing, "--checkpoint", str(ckpts[kind]), *extra], capsys)
    line = _one_line(err)
    assert code == 2 and str(ckpts[kind]) in line and "missing" not in line and out == ""
    assert ("audiopipe detect" in line) if kind == "sed" else ("audiopipe tag" in line)


@pytest.mark.parametrize(("command", "flag", "value"), [
    ("tag", "--hop-s", "0"), ("tag", "--top-k", "0"), ("tag", "--window-s", "0"), ("tag", "--batch-size", "0"),
    ("detect", "--hop-s", "0"), ("detect", "--window-s", "-1"), ("detect", "--threshold", "1.5"),
    ("tag", "--device", "gpu"),
])
def test_arguments_are_checked_before_any_work(command: str, flag: str, value: str, ckpts, wav: Path,
                                               capsys) -> None:
    ckpt = ckpts["tagger" if command == "tag" else "sed"]
    code, out, err = _cli([command, str(wav), "--checkpoint", str(ckpt), flag, value], capsys)
    assert code == 2 and flag in _one_line(err) and out == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_names_the_flag(ckpts, wav: Path, capsys) -> None:
    code, _, err = _cli(["tag", str(wav), "--checkpoint", str(ckpts["tagger"]), "--device", "cuda"], capsys)
    line = _one_line(err)
    assert code == 2 and "--device cuda" in line and "params.yaml" not in line


def test_default_checkpoint_missing_outside_the_repository(wav: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    for command in ("tag", "detect"):
        code, _, err = _cli([command, str(wav)], capsys)
        assert code == 2 and "--checkpoint" in _one_line(err)


def test_unreadable_checkpoint_is_one_line_without_advice_to_delete(wav: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    code, _, err = _cli(["tag", str(wav), "--checkpoint", str(bad)], capsys)
    line = _one_line(err)
    assert code == 1 and str(bad) in line and "delete" not in line.lower()


def test_class_list_shorter_than_outputs_is_a_checkpoint_problem(ckpts, wav: Path, capsys) -> None:
    code, _, err = _cli(["tag", str(wav), "--checkpoint", str(ckpts["short_list"])], capsys)
    line = _one_line(err)
    assert code == 1 and "checkpoint problem" in line and "2 class names for 3" in line


def test_checkpoint_takes_one_value_so_files_may_follow(ckpts, wav: Path, tmp_path: Path, capsys) -> None:
    second = tmp_path / "second.wav"
    second.write_bytes(wav.read_bytes())
    code, out, err = _cli(["tag", str(wav), "--checkpoint", str(ckpts["tagger"]), str(second), "--json"], capsys)
    assert code == 0, err
    assert [r["file"] for r in json.loads(out)] == [str(wav), str(second)]


def test_silence_and_over_range_are_reported(ckpts, tmp_path: Path, capsys) -> None:
    silent, quiet, loud = tmp_path / "silent.wav", tmp_path / "quiet.wav", tmp_path / "loud.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    sf.write(quiet, (1e-5 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000)
    sf.write(loud, (3.0 * np.sin(np.arange(16000) / 5)).astype(np.float32), 16000, subtype="FLOAT")
    code, out, err = _cli(["tag", str(silent), str(quiet), str(loud), "--checkpoint", str(ckpts["tagger"]), "--json"],
                          capsys)
    assert code == 0
    results = {Path(r["file"]).name: r for r in json.loads(out)}
    assert "digital silence" in results["silent.wav"]["warnings"][0]
    assert "near-silent" in results["quiet.wav"]["warnings"][0]
    assert "beyond ±1" in results["loud.wav"]["warnings"][0] and "±3.00" in results["loud.wav"]["warnings"][0]
    assert len(err.strip().splitlines()) == 3 and all("warning" in line for line in err.strip().splitlines())
    code, out, _ = _cli(["detect", str(silent), "--checkpoint", str(ckpts["sed"])], capsys)
    assert code == 0 and "digital silence" in out


def test_odd_paths_get_their_own_messages(ckpts, wav: Path, tmp_path: Path, capsys) -> None:
    loop = tmp_path / "loop.wav"
    loop.symlink_to(loop)
    folder = tmp_path / "folder"
    folder.mkdir()
    code, out, err = _cli(["tag", str(folder), "/dev/zero", str(loop), str(wav), "--checkpoint",
                           str(ckpts["tagger"]), "--json"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 3 and "Traceback" not in err
    assert "is a directory" in lines[0] and "not a regular file" in lines[1] and "symbolic link loop" in lines[2]
    assert json.loads(out)[-1]["file"] == str(wav)


def test_names_that_look_like_ffmpeg_protocols_are_read_as_files(ckpts, wav: Path, tmp_path: Path,
                                                                 monkeypatch, capsys) -> None:
    from audiopipe.audio.io import ffmpeg_exe

    monkeypatch.chdir(tmp_path)
    names = ["-", "pipe:x.m4a", "concat:a.m4a|b.m4a"]
    for name in names:
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(wav), "-c:a", "aac", "-f", "ipod",
                        "file:" + str(tmp_path / name)], check=True)
    code, out, err = _cli(["tag", *names, "--checkpoint", str(ckpts["tagger"]), "--json"], capsys)
    assert code == 0, err
    assert [r["file"] for r in json.loads(out)] == names
    assert all(r["duration_s"] == pytest.approx(1.0, abs=0.05) for r in json.loads(out))


def test_help_shows_every_default_and_lists_only_working_commands(capsys) -> None:
    for command in ("tag", "detect", "features", "convert"):
        code, out, _ = _cli([command, "--help"], capsys)
        assert code == 0
        if command == "tag":
            for text in ("(default: 10)", "(default: 10.0)", "(default: 5.0)", "(default: 8)",
                         "data/distill_mobilenet/student.pt", "(default: cpu)"):
                assert text in " ".join(out.split()), text
        if command == "detect":
            for text in ("(default: 0.5)", "(default: 3.0)", "(default: 4)", "(default: teacher)",
                         "data/atst_stage2/model.pt"):
                assert text in " ".join(out.split()), text
    code, out, _ = _cli(["--help"], capsys)
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert listed == list(available()) and set(listed) <= set(COMMANDS)
    for command in listed:  # every listed command at least parses its --help
        assert _cli([command, "--help"], capsys)[0] == 0, command


def test_list_classes(ckpts, capsys) -> None:
    code, out, _ = _cli(["tag", "--list-classes", "--checkpoint", str(ckpts["tagger"])], capsys)
    assert code == 0 and out.splitlines() == ["0\tSpeech", "1\tDog", "2\tAlarm"]


def test_unexpected_errors_are_one_line(ckpts, wav: Path, monkeypatch, capsys) -> None:
    from audiopipe.commands import tag

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something odd\nwith two lines")

    monkeypatch.setattr(tag, "load_taggers", boom)
    code, _, err = _cli(["tag", str(wav), "--checkpoint", str(ckpts["tagger"])], capsys)
    assert code == 1 and "AUDIOPIPE_DEBUG" in _one_line(err)


def test_help_does_not_import_torch() -> None:
    code = ("import sys; from audiopipe.cli import main; main(['--help']); main(['tag', '--help']) if False else None;"
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    for c in ('tag', 'detect', 'features', 'convert', 'export'):\n"
            "        try: main([c, '--help'])\n"
            "        except SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'numpy', 'scipy') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_no_files_is_one_line(ckpts, capsys) -> None:
    code, _, err = _cli(["tag", "--checkpoint", str(ckpts["tagger"])], capsys)
    assert code == 2 and _one_line(err) == "audiopipe tag: no audio FILE given (see `audiopipe tag --help`)"


@pytest.mark.parametrize("command", ["tag", "detect"])
def test_a_checkpoint_given_as_audio_names_the_flag(ckpts, capsys, command: str) -> None:
    """`audiopipe tag model.pt clip.wav` (a user's first try): say to pass the model as --checkpoint."""
    code, _, err = _cli([command, str(ckpts["tagger"]), "clip.wav"], capsys)
    assert code == 2 and f"pass it as `--checkpoint {ckpts['tagger']}`" in _one_line(err)


def test_export_refuses_other_kinds_and_broken_files_in_one_line(ckpts, tmp_path: Path, capsys) -> None:
    code, _, err = _cli(["export", "onnx", str(ckpts["sed"]), str(tmp_path / "x.onnx")], capsys)
    assert code == 2 and "audiopipe detect" in _one_line(err)
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    code, _, err = _cli(["export", "onnx", str(bad), str(tmp_path / "x.onnx")], capsys)
    assert code == 1 and "delete" not in _one_line(err).lower()


def test_a_mistyped_flag_or_command_gets_the_likely_one_named(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["tag", "clip.wav", "--checkpoit", "model.pt"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--checkpoit" in err and "did you mean --checkpoint?" in err
    with pytest.raises(SystemExit):
        main(["tag", "clip.wav", "--zzz"])
    assert "did you mean" not in capsys.readouterr().err  # nothing close: no guess
    assert main(["tga", "clip.wav"]) == 2
    assert "unknown command 'tga' (did you mean 'tag'?)" in capsys.readouterr().err
