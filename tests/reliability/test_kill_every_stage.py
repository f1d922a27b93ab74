"""Kill -9 every training stage at the start, in the middle and in the last epoch; the rerun must match.

For each training stage of dvc.yaml (pretrain_eat, finetune_eat, distill_mobilenet, distill_mobilenet_nokd,
atst_stage1, atst_stage2) the stage script runs as a subprocess in tmp_path with a tiny 3-epoch params.yaml and is
SIGKILLed at one of three points:

* start:  as soon as its output folder exists (before any resume file was written);
* middle: once the resume file shows epoch 1 (the second of three epochs is running);
* last:   once the resume file shows epoch 2 (the last epoch is running).

Then the stage's declared outputs (outs, metrics and plots of its dvc.yaml entry) are deleted, as `dvc repro` deletes
them before it runs a stage again, the stage is rerun to its end, and every file of an uninterrupted reference run's
output folder must be there and equal: checkpoints tensor by tensor bit for bit (weights, EMA/mean teacher, metrics,
config), metrics.json, the curves and the PSD-ROC byte for byte (CPU, one thread). The reference runs and the reruns
call the script's `main()` in this process (a fresh run each time; it saves a torch import per case); only the killed
run needs a process of its own.

pretrain_eat writes a resume file every optimizer step (`checkpoint_every_steps: 1`), so its middle and last kills
land inside an epoch, after at least one of its steps, and the rerun resumes mid-epoch. The other tasks write resume
files only at epoch ends (they take no `checkpoint_every_steps`): their middle and last kills land at a random moment
of the running epoch (training or validation), and the rerun restarts that epoch from its beginning. The packs hold
enough clips that every epoch lasts a few tenths of a second, so polling for the kill point cannot miss it.
"""

from __future__ import annotations

import math
import runpy
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.predictions import write_predictions
from audiopipe.data.synthetic import make_synthetic_pack
from audiopipe.storage import load_checkpoint
from tests.reliability.test_kill_resume import REPO, _command, _kill_when, _write_params

EPOCHS = 3
SED_TINY = {"clip_duration_s": 1.0, "batch_sizes": [3, 1, 1], "epochs": EPOCHS, "eval_batch_size": 4, "device": "cpu",
            "operating_point_psds": False, "median_window": [3], "val_every": 1, "progress": False}
TINY_CRNN = {"crnn_kwargs": {"channels": [4] * 7, "rnn_hidden": 4, "rnn_layers": 1, "dropout": 0.0}}  # phase 1 builds
DISTILL_TINY = {"duration_s": 1.0, "width_mult": 0.1, "epochs": EPOCHS, "batch_size": 3, "device": "cpu", "amp": "none",
                "num_workers": 0, "epoch_len": None, "bn_recalib_batches": 1}
TINY: dict[str, dict[str, Any]] = {
    "pretrain_eat": {"splits": ["valid", "weak", "unlabelled"], "clip_seconds": 1.0, "target_frames": 96, "clones": 2,
                     "epochs": EPOCHS, "batch_size": 2, "device": "cpu", "amp": "none", "num_workers": 0,
                     "checkpoint_every_steps": 1},
    "finetune_eat": {"init": "pretrained", "clip_seconds": 2.0, "target_frames": 192, "epochs": EPOCHS,
                     "batch_size": 2, "eval_batch_size": 4, "device": "cpu", "amp": "none", "num_workers": 0},
    "distill_mobilenet": {**DISTILL_TINY, "kd_lambda": 0.1},
    "distill_mobilenet_nokd": {**DISTILL_TINY, "kd_lambda": 1.0},
    "atst_stage1": {**SED_TINY, **TINY_CRNN},
    "atst_stage2": SED_TINY,
}


@dataclass(frozen=True)
class Stage:
    """How to run one DVC stage here: its script, its arguments besides --params/--out, its resume file."""

    script: str
    args: Callable[[Path, Callable[[str], Path]], list[str | Path]]  # (clips, reference output of a stage)
    resume: str
    step_resume: bool = False  # resume files inside an epoch (checkpoint_every_steps)


STAGES = {
    "pretrain_eat": Stage("pretrain_eat", lambda clips, ref: ["--clips", clips], ".eat.resume.pt",
                          step_resume=True),
    "finetune_eat": Stage("finetune_eat", lambda clips, ref: ["--clips", clips, "--pretrained",
                                                              ref("pretrain_eat") / "eat.pt"],
                          ".eat_tagger.resume.pt"),
    "distill_mobilenet": Stage("distill_mobilenet", lambda clips, ref: [
        "--section", "distill_mobilenet", "--clips", clips, "--teacher", clips.parent / "predictions.h5"],
        ".student.resume.pt"),
    "distill_mobilenet_nokd": Stage("distill_mobilenet", lambda clips, ref: [
        "--section", "distill_mobilenet_nokd", "--clips", clips], ".student.resume.pt"),
    "atst_stage1": Stage("train_atst_sed", lambda clips, ref: [
        "--phase", "1", "--clips", clips, "--encoder", ref("pretrain_eat") / "eat.pt"], ".model.resume.pt"),
    "atst_stage2": Stage("train_atst_sed", lambda clips, ref: [
        "--phase", "2", "--clips", clips, "--init", ref("atst_stage1") / "model.pt"], ".model.resume.pt"),
}
KILL_POINTS = ("start", "middle", "last")


def declared_outputs(stage: str) -> list[str]:
    """File names of the outs, metrics and plots that dvc.yaml declares for `stage` (all under data/<stage>/)."""
    entry = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    names = []
    for kind in ("outs", "metrics", "plots"):
        for item in entry.get(kind, []):
            path = Path(item if isinstance(item, str) else next(iter(item)))
            assert path.parent == Path("data") / stage, f"{stage}: output {path} outside data/{stage}/"
            names.append(path.name)
    return names


class Setting:
    """The shared inputs (pack, teacher predictions, params.yaml) and the uninterrupted reference runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clips = root / "data" / "pack_hdf5"
        make_synthetic_pack(self.clips, n_per_split={"train": 48, "valid": 4, "test": 2, "weak": 8, "unlabelled": 8},
                            sample_rate=16000, seed=7)
        _teacher(self.clips, root / "data" / "predictions.h5")
        self.params = _write_params(root, **TINY)
        self._references: dict[str, Path] = {}

    def command(self, stage: str, out: Path) -> list[str]:
        spec = STAGES[stage]
        return _command(spec.script, self.params, *spec.args(self.clips, self.reference), "--out", out)

    def run(self, stage: str, out: Path) -> None:
        """Run `stage` to its end in this process (a fresh `main()`, as in a new process, minus the imports)."""
        argv = self.command(stage, out)[1:]
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(self.root)
            mp.setattr(sys, "argv", argv)
            runpy.run_path(argv[0], run_name="stage_under_test")["main"]()

    def reference(self, stage: str) -> Path:
        """Output folder of the uninterrupted run of `stage` (run once)."""
        if stage not in self._references:
            self.run(stage, self.root / "reference" / stage)
            self._references[stage] = self.root / "reference" / stage
        return self._references[stage]


def _teacher(clips: Path, path: Path) -> Path:
    per_split = {}
    for split in ("train", "valid"):
        reader = ClipReader(clips / f"{split}.h5")
        per_split[split] = (list(reader.clip_ids), np.random.default_rng(1).normal(size=reader.all_targets.shape) * 3)
    return write_predictions(path, per_split, ClipReader(clips / "train.h5").class_names, teacher="fixture",
                             checkpoints=[])


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> Setting:
    return Setting(tmp_path_factory.mktemp("kill_every_stage"))


class _Progress:
    """`progress` of the resume file at `path` (None while there is none), re-read only when the file changed."""

    def __init__(self, path: Path) -> None:
        self.path, self._seen, self._value = path, None, None

    def __call__(self) -> dict[str, int] | None:
        try:
            stat = self.path.stat()
            if (stat.st_ino, stat.st_mtime_ns) != self._seen:  # written by os.replace: never half a file
                self._value = torch.load(self.path, map_location="cpu", weights_only=True)["progress"]
                self._seen = (stat.st_ino, stat.st_mtime_ns)
        except FileNotFoundError:  # not yet written, or removed by a stage that has finished
            return None
        return self._value


def _kill_point(point: str, step_resume: bool) -> tuple[int, Callable[[dict[str, int]], bool]]:
    """The epoch that the resume file must show, and the condition on its progress that triggers the kill."""
    epoch = {"middle": 1, "last": EPOCHS - 1}[point]
    # with step resume files: a file written inside that epoch (one optimizer step of it done)
    return epoch, lambda p: p["epoch"] == epoch and (p["batch_in_epoch"] >= 1 or not step_resume)


def _same(produced: Any, expected: Any, where: str) -> None:
    """Equal payloads: tensors bit for bit, floats with NaN == NaN, containers item by item."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(produced, torch.Tensor) and produced.dtype == expected.dtype, f"{where}: type differs"
        torch.testing.assert_close(produced, expected, rtol=0, atol=0, equal_nan=True, msg=f"{where} differs")
    elif isinstance(expected, dict):
        assert isinstance(produced, dict) and produced.keys() == expected.keys(), f"{where}: keys differ"
        for key, value in expected.items():
            _same(produced[key], value, f"{where}.{key}")
    elif isinstance(expected, list | tuple):
        assert type(produced) is type(expected) and len(produced) == len(expected), f"{where}: length differs"
        for i, (a, b) in enumerate(zip(produced, expected, strict=True)):
            _same(a, b, f"{where}[{i}]")
    elif isinstance(expected, float) and math.isnan(expected):
        assert isinstance(produced, float) and math.isnan(produced), f"{where}: {produced} != nan"
    else:
        assert produced == expected, f"{where}: {produced!r} != {expected!r}"


@pytest.mark.parametrize("point", KILL_POINTS)
@pytest.mark.parametrize("stage", list(STAGES))
def test_killed_stage_reruns_to_the_uninterrupted_outputs(setting: Setting, tmp_path: Path, stage: str,
                                                          point: str) -> None:
    spec = STAGES[stage]
    reference = setting.reference(stage)
    out = tmp_path / stage
    resume = out / spec.resume

    if point == "start":
        _kill_when(setting.command(stage, out), setting.root, out.is_dir)
        assert not resume.exists(), "the kill should land before the first resume file"
    else:
        epoch, ready = _kill_point(point, spec.step_resume)
        progress = _Progress(resume)
        _kill_when(setting.command(stage, out), setting.root, lambda: (p := progress()) is not None and ready(p))
        state = progress()
        assert state is not None and state["epoch"] == epoch, f"the kill landed at {state}, not in epoch {epoch}"
    assert not (out / "metrics.json").exists(), "the kill should land before the stage finished"

    outputs = declared_outputs(stage)
    for name in outputs:  # what `dvc repro` does before it runs the stage again
        (out / name).unlink(missing_ok=True)
    setting.run(stage, out)

    assert not resume.exists(), "the resume file outlived the finished stage"
    missing = [name for name in outputs if not (out / name).is_file()]
    assert not missing, f"declared outputs missing after the rerun: {missing}"
    for path in sorted(reference.iterdir()):  # the declared outputs and the rest (valid curve, PSD-ROC)
        name = path.name
        assert (out / name).is_file(), f"{name} is missing after the rerun"
        if name.endswith(".pt"):
            _same(load_checkpoint(out / name), load_checkpoint(path), name)
        else:
            assert (out / name).read_bytes() == path.read_bytes(), f"{name} differs from the uninterrupted run"
