"""Flipped bytes inside a checkpoint's weights are refused at load instead of giving different predictions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audiopipe.models import build_model, load_model
from audiopipe.storage import CHECKSUM_KEY, CheckpointError, load_checkpoint, save_checkpoint


def _student_checkpoint(path: Path) -> tuple[Path, torch.Tensor]:
    kwargs = {"width_mult": 0.1, "n_classes": 3, "sample_rate": 16000, "n_mels": 32}
    model = build_model("mn_tagger", **kwargs)
    weight = next(v for k, v in model.state_dict().items() if v.numel() >= 64 and v.is_floating_point())
    save_checkpoint(path, {"builder": "mn_tagger", "builder_kwargs": kwargs, "model": model.state_dict(),
                           "class_names": ["a", "b", "c"], "sample_rate": 16000, "config": {}, "metrics": {}})
    return path, weight


def _flip(path: Path, pattern: bytes, n_bytes: int) -> None:
    raw = bytearray(path.read_bytes())
    at = raw.find(pattern)
    assert at >= 0, "the tensor's bytes were not found in the file"
    for i in range(at, at + n_bytes):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("n_bytes", [16, 64])
def test_flipped_weight_bytes_are_refused_with_the_file_name(tmp_path: Path, n_bytes: int) -> None:
    path, weight = _student_checkpoint(tmp_path / "student.pt")
    assert load_model(path) is not None  # intact: loads
    _flip(path, weight.contiguous().view(torch.uint8).numpy().tobytes()[:64], n_bytes)
    with pytest.raises(CheckpointError, match=r"student\.pt: checkpoint is corrupted"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_model(path)


def test_the_checksum_covers_metadata_and_is_not_returned(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "x.pt", {"model": {"w": torch.ones(3)}, "class_names": ["dog", "cat"]})
    payload = load_checkpoint(path)
    assert CHECKSUM_KEY not in payload and payload["class_names"] == ["dog", "cat"]
    stored = torch.load(path, weights_only=True)
    stored["class_names"] = ["cat", "dog"]  # a swapped label order is a different model
    torch.save(stored, path)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path)


def test_files_without_a_checksum_still_load(tmp_path: Path) -> None:
    torch.save({"model": {"w": torch.ones(2)}}, tmp_path / "official.pt")  # e.g. a published checkpoint
    assert torch.equal(load_checkpoint(tmp_path / "official.pt")["model"]["w"], torch.ones(2))


def test_a_forged_architecture_is_refused_before_any_weights_are_allocated(tmp_path: Path) -> None:
    """width_mult 400 with mn04 weights: the shape check runs on a meta model, so nothing giant is built."""
    import subprocess
    import sys

    path, _ = _student_checkpoint(tmp_path / "student.pt")
    payload = load_checkpoint(path)
    payload["builder_kwargs"]["width_mult"] = 400.0
    save_checkpoint(path, payload)  # a valid checksum: only the architecture is forged
    script = ("import sys\nfrom audiopipe.models import load_model\nfrom audiopipe.storage import "
              "CheckpointError\ntry:\n    load_model(sys.argv[1])\nexcept CheckpointError as err:\n"
              "    print('refused:', str(err)[:200])\n"  # VmHWM: this process image's peak (ru_maxrss keeps the
              "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"  # forked parent's)
              "print('peak_mb', int(hwm.split()[1]) / 1024)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0 and "refused:" in proc.stdout and "does not match" in proc.stdout, proc.stderr[-2000:]
    peak_mb = float(proc.stdout.split("peak_mb")[-1])
    assert peak_mb < 1500, f"the loader allocated {peak_mb:.0f} MB before refusing"


def test_a_full_disk_while_saving_names_the_checkpoint_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno


    def no_space(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(OSError, match=r"model\.pt: cannot write checkpoint \(No space left on device\)") as err:
        save_checkpoint(tmp_path / "out" / "model.pt", {"model": {"w": torch.ones(2)}})
    assert err.value.errno == errno.ENOSPC
    assert list((tmp_path / "out").iterdir()) == []


def test_the_cli_refuses_a_corrupted_or_forged_checkpoint_in_one_line(tmp_path: Path) -> None:
    """`audiopipe tag` reads checkpoints through its own loader: the same two checks must hold there."""
    import subprocess
    import sys

    import numpy as np
    import soundfile as sf

    audio = tmp_path / "clip.wav"
    sf.write(audio, (0.1 * np.random.default_rng(0).standard_normal(16000)).astype("float32"), 16000)
    corrupted, weight = _student_checkpoint(tmp_path / "corrupted.pt")
    _flip(corrupted, weight.contiguous().view(torch.uint8).numpy().tobytes()[:64], 16)
    forged, _ = _student_checkpoint(tmp_path / "forged.pt")
    payload = load_checkpoint(forged)
    payload["builder_kwargs"]["width_mult"] = 400.0
    save_checkpoint(forged, payload)
    for path, message in ((corrupted, "checkpoint is corrupted"), (forged, "does not match")):
        proc = subprocess.run([sys.executable, "-m", "audiopipe.cli", "tag", str(audio), "--checkpoint", str(path)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_a_full_disk_inside_torch_zip_writer_is_an_oserror_naming_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in a real `make run`: torch.save on a full disk ends in `RuntimeError: [enforce fail at
    inline_container.cc] unexpected pos` raised while handling the OSError, a traceback without the file."""
    import errno


    def zip_writer_on_full_disk(*_: object, **__: object) -> None:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1019776 vs 1019664")  # noqa: B904 - torch chains implicitly

    monkeypatch.setattr(torch, "save", zip_writer_on_full_disk)
    with pytest.raises(OSError, match=r"\.resume\.pt: cannot write checkpoint \(No space left on device\)"):
        save_checkpoint(tmp_path / ".student.resume.pt", {"model": {"w": torch.ones(2)}})
    assert list(tmp_path.iterdir()) == []

    def other_runtime_error(*_: object, **__: object) -> None:
        raise RuntimeError("a bug, not the disk")

    monkeypatch.setattr(torch, "save", other_runtime_error)
    with pytest.raises(RuntimeError, match="a bug, not the disk"):
        save_checkpoint(tmp_path / "x.pt", {"model": {}})
