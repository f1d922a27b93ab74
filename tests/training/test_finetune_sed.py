"""Smoke test of audiopipe.training.finetune_sed: phase 1 (frozen encoder) then phase 2 on a tiny synthetic pack."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from audiopipe.config import AtstStage1Config, AtstStage2Config
from audiopipe.data.synthetic import make_synthetic_pack
from audiopipe.models import load_model
from audiopipe.storage import load_checkpoint
from audiopipe.training.finetune_sed import (
    learning_rates,
    lr_factor,
    median_windows,
    output_frames,
    param_groups,
    step_settings,
    train_atst_sed,
)

METRIC_KEYS = {
    f"{split}/{model}_{metric}"
    for split in ("valid", "test")
    for model in ("student", "teacher")
    for metric in ("psds1", "psds2", "event_f1", "intersection_f1")
}


def tiny_config(**overrides: object) -> AtstStage1Config:
    values = dict(
        model="sed_eat",
        encoder_preset="eat_demo",
        encoder_kwargs={"depth": 1},
        crnn_kwargs={"channels": [4, 4, 4, 4, 4, 4, 4], "rnn_hidden": 4, "rnn_layers": 1, "dropout": 0.0},
        clip_duration_s=1.0,
        train_splits=["train", "weak", "unlabelled"],
        batch_sizes=[1, 1, 1],
        epochs=1,
        warmup_epochs=0.5,
        lr_cnn=1e-2,
        lr_rnn=1e-2,
        lr_encoder=1e-2,
        encoder_lr_scale=0.5,
        cos_down=True,
        const_max=2.0,
        consistency="ict",
        weak_loss_weight=0.5,
        ema_decay=0.9,
        ema_warm_start=True,
        mixup_prob=1.0,
        mixup_alpha=0.2,
        mixup_encoder_input=True,
        freq_warp_prob=0.5,
        frame_shift_max_frames=1,
        mask_time_frames=2.0,
        mask_freq_bins=8.0,
        head_prior_init=True,
        cache_features=False,
        median_window=[3],
        val_every=1,
        eval_batch_size=3,
        operating_point_psds=False,
        seed=0,
        device="cpu",
        num_workers=0,
        progress=False,
    )
    values.update(overrides)
    return AtstStage1Config(**values)  # type: ignore[arg-type]


def tiny_config2(**overrides: object) -> AtstStage2Config:
    """tiny_config's values for phase 2 (whose section has no model keys: the model comes from phase 1's file)."""
    names = {f.name for f in dataclasses.fields(AtstStage2Config)}
    return AtstStage2Config(**{k: v for k, v in dataclasses.asdict(tiny_config(**overrides)).items() if k in names})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sed")
    make_synthetic_pack(root / "pack", n_per_split=2, duration_s=1.0, seed=3, sample_rate=32000)  # resampled to 16k
    phase1 = train_atst_sed(
        tiny_config(),
        phase=1,
        clips_dir=root / "pack",
        encoder_checkpoint=None,
        init_checkpoint=None,
        checkpoint=root / "s1" / "model.pt",
    )
    phase2 = train_atst_sed(
        tiny_config2(),
        phase=2,
        clips_dir=root / "pack",
        encoder_checkpoint=None,
        init_checkpoint=phase1.checkpoint,
        checkpoint=root / "s2" / "model.pt",
    )
    return {
        "root": root,
        "s1": phase1.checkpoint,
        "s2": phase2.checkpoint,
        "metrics1": phase1.metrics,
        "metrics2": phase2.metrics,
    }  # type: ignore[dict-item]


def _encoder(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith("eat_frame.")}


def test_phase1_freezes_encoder_and_trains_crnn(runs: dict) -> None:
    from audiopipe.models import build_model

    payload = load_checkpoint(runs["s1"])
    torch.manual_seed(0)  # same init as the task (it seeds before building)
    fresh = build_model("sed_eat", **payload["builder_kwargs"]).state_dict()
    for key, value in _encoder(payload["model"]).items():
        torch.testing.assert_close(value, fresh[key], msg=f"encoder weight {key} changed in phase 1")
    assert not torch.equal(payload["model"]["dense.weight"], fresh["dense.weight"])


def test_phase2_updates_encoder(runs: dict) -> None:
    before, after = load_checkpoint(runs["s1"])["model"], load_checkpoint(runs["s2"])["model"]
    changed = [k for k, v in _encoder(after).items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert changed, "no encoder weight changed in phase 2"


def test_mean_teacher_differs_from_student(runs: dict) -> None:
    payload = load_checkpoint(runs["s2"])
    assert payload["mean_teacher"].keys() == payload["model"].keys()
    assert not torch.equal(payload["mean_teacher"]["dense.weight"], payload["model"]["dense.weight"])


@pytest.mark.parametrize("key", ["metrics1", "metrics2"])
def test_metrics_of_student_and_teacher_present(runs: dict, key: str) -> None:
    metrics = runs[key]
    assert METRIC_KEYS <= set(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in METRIC_KEYS)


def test_checkpoint_rebuilds_and_writes_roc(runs: dict) -> None:
    model, payload = load_model(runs["s2"])
    strong, weak = model(torch.zeros(1, 16000))
    assert strong.shape[:2] == weak.shape == (1, len(payload["class_names"]))
    assert payload["postprocessing"]["median_windows"] == [3] * len(payload["class_names"])
    assert (runs["s2"].parent / "psd_roc.csv").is_file() and (runs["s2"].parent / "psd_roc.png").is_file()


@pytest.mark.parametrize(
    ("encoder", "init", "message"),
    [(None, None, "pass init_checkpoint"), ("eat.pt", "s1.pt", "encoder_checkpoint .* would be ignored")],
)
def test_phase2_needs_init_and_no_encoder_checkpoint(tmp_path: Path, encoder: str | None, init: str | None,
                                                     message: str) -> None:
    """Phase 2 builds its whole model, encoder included, from phase 1's checkpoint."""
    with pytest.raises(ValueError, match=message):
        train_atst_sed(
            tiny_config2(),
            phase=2,
            clips_dir=tmp_path,
            encoder_checkpoint=None if encoder is None else tmp_path / encoder,
            init_checkpoint=None if init is None else tmp_path / init,
            checkpoint=tmp_path / "m.pt",
        )


def test_param_groups_decay_encoder_lr_by_layer() -> None:
    from audiopipe.models import build_model

    cfg = tiny_config(encoder_kwargs={"depth": 2})
    model = build_model(
        "sed_eat", n_classes=3, encoder_preset="eat_demo", encoder_kwargs={"depth": 2}, **cfg.crnn_kwargs
    )
    assert [g["name"] for g in param_groups(model, learning_rates(cfg), phase=1)] == ["cnn", "rnn"]
    groups = {g["name"]: g for g in param_groups(model, learning_rates(cfg), phase=2)}
    assert groups["encoder_1"]["lr"] == pytest.approx(cfg.lr_encoder * 0.5)
    assert groups["encoder_3"]["lr"] == pytest.approx(cfg.lr_encoder * 0.125)  # embeddings, below block 0
    n_params = sum(len(g["params"]) for g in groups.values())
    assert n_params == len(list(model.parameters()))


def test_lr_factor_ramps_up_then_cosine_to_ten_percent() -> None:
    first = lr_factor(1, rampup_steps=10, total_steps=100, cos_down=True)
    assert first == pytest.approx(math.exp(-5 * 0.9**2))
    assert lr_factor(10, rampup_steps=10, total_steps=100, cos_down=True) == pytest.approx(1.0)
    assert lr_factor(100, rampup_steps=10, total_steps=100, cos_down=True) == pytest.approx(0.1)
    assert lr_factor(100, rampup_steps=10, total_steps=100, cos_down=False) == pytest.approx(1.0)


def test_median_windows_broadcast_and_check() -> None:
    assert median_windows([7], 3) == [7, 7, 7]
    with pytest.raises(ValueError):
        median_windows([1, 2], 3)


def test_config_roundtrip_is_plain() -> None:
    assert dataclasses.asdict(tiny_config())["batch_sizes"] == [1, 1, 1]


def test_frame_targets_line_up_with_model_frames_on_a_32k_pack(tmp_path: Path) -> None:
    """Regression: a 32 kHz pack fed to the 16 kHz SED model must give audio at 16 kHz, T' targets on the model's
    output grid, and each target frame must cover the same time span as the audio under it."""
    import numpy as np

    from audiopipe.data.hdf5 import ClipWriter
    from audiopipe.data.sed_batches import SEDClipDataset
    from audiopipe.models.sed import SEDModel

    pack_rate, duration, onset, offset = 32000, 10.0, 3.0, 5.0
    audio = np.zeros(int(duration * pack_rate), np.float32)
    burst = slice(int(onset * pack_rate), int(offset * pack_rate))
    audio[burst] = 0.5 * np.random.default_rng(0).standard_normal(burst.stop - burst.start).astype(np.float32)
    with ClipWriter(tmp_path / "train.h5", class_names=["a", "b"], sample_rate=pack_rate, has_strong=True) as writer:
        writer.add("c0", audio, targets=[0, 1], events=[(onset, offset, 1)])
    model = SEDModel(n_classes=2, channels=(2,) * 7, rnn_hidden=2, rnn_layers=1)
    n_frames = output_frames(model, duration)
    assert n_frames == 156 and model.frame_rate_hz == 15.625  # 10 s at 64 ms per output frame
    item = SEDClipDataset(
        tmp_path / "train.h5", duration_s=duration, n_frames=n_frames, frame_rate_hz=model.frame_rate_hz,
        sample_rate=model.sample_rate,
    )[0]
    assert item["audio"].shape == (int(duration * model.sample_rate),)
    target = item["strong"][1].numpy()
    assert target.shape == (n_frames,) and item["strong"][0].sum() == 0
    hop = int(model.sample_rate / model.frame_rate_hz)  # 1024 samples of 16 kHz audio per output frame
    loud = (item["audio"].numpy()[: n_frames * hop].reshape(n_frames, hop) ** 2).mean(axis=1) > 1e-3
    # frames fully inside the event are loud and targeted; frames clear of it are silent and untargeted
    k, rate = np.arange(n_frames), model.frame_rate_hz
    inside = (k >= np.ceil(onset * rate)) & (k + 1 <= np.floor(offset * rate))
    outside = (k + 2 <= np.floor(onset * rate)) | (k >= np.ceil(offset * rate) + 1)
    assert loud[inside].all() and (target[inside] == 1).all()
    assert not loud[outside].any() and (target[outside] == 0).all()
    # and the targets are exactly the loud frames up to one boundary frame at each end
    assert abs(int(target.sum()) - int(loud.sum())) <= 2


def _step_inputs(**overrides: object) -> tuple:
    from audiopipe.models import build_model
    from audiopipe.models.ema import EMA

    torch.manual_seed(0)
    values: dict[str, object] = {"mixup_prob": 1.0, "frame_shift_max_frames": 0, "mask_time_frames": 0.0,
                                 "mask_freq_bins": 0.0, **overrides}
    cfg = tiny_config(**values)
    model = build_model("sed_eat", n_classes=3, encoder_preset="eat_demo", encoder_kwargs={"depth": 1},
                        **cfg.crnn_kwargs)
    batch = {
        "audio": 0.1 * torch.randn(4, 16000),
        "strong": (torch.rand(4, 3, output_frames(model, 1.0)) > 0.7).float(),
        "weak": (torch.rand(4, 3) > 0.5).float(),
        "subset": torch.tensor([0, 0, 2, 2]),  # two strong clips, two unlabelled
    }
    return cfg, model, EMA(model, decay=0.9), batch


def _spy(module: torch.nn.Module, name: str, seen: list) -> None:
    original = getattr(module, name)

    def record(x: torch.Tensor, *args: object) -> object:
        seen.append(x.detach().clone())
        return original(x, *args)

    setattr(module, name, record)


@pytest.mark.parametrize("consistency", ["ict", "mean_teacher"])
def test_stage2_teacher_sees_clean_input_only_with_ict(consistency: str) -> None:
    from audiopipe.training.sed.step import SEDStep

    cfg, model, teacher, batch = _step_inputs(consistency=consistency, freq_warp_prob=0.0, mixup_encoder_input=True)
    teacher_mels: list = []
    teacher_inputs: list = []
    _spy(teacher.module, "forward_features", teacher_mels)
    _spy(teacher.module.encoder, "frames_from_input", teacher_inputs)
    out = SEDStep(step_settings(cfg), 2, teacher, torch.Generator().manual_seed(0), rampup_steps=1)(
        model, batch, torch.device("cpu")
    )
    clean_mel = model.mel_spec(batch["audio"])
    clean_input = model.encoder.input_features(batch["audio"])
    assert out["ict"].item() == float(consistency == "ict") and torch.isfinite(out["loss"])
    if consistency == "ict":  # spec §6.2: teacher on the original un-mixed SED mel and encoder mel
        torch.testing.assert_close(teacher_mels[0], clean_mel, atol=1e-5, rtol=0)
        torch.testing.assert_close(teacher_inputs[0], clean_input, atol=1e-5, rtol=0)
    else:  # plain mean teacher: the same mixed input as the student
        assert not torch.allclose(teacher_mels[0], clean_mel, atol=1e-3)
        assert not torch.allclose(teacher_inputs[0], clean_input, atol=1e-3)


def test_stage2_frequency_warp_draws_separately_for_student_and_teacher() -> None:
    from audiopipe.training.sed.step import SEDStep

    cfg, model, teacher, batch = _step_inputs(mixup_prob=0.0, freq_warp_prob=1.0)
    student_inputs: list = []
    teacher_inputs: list = []
    _spy(model.encoder, "frames_from_input", student_inputs)
    _spy(teacher.module.encoder, "frames_from_input", teacher_inputs)
    SEDStep(step_settings(cfg), 2, teacher, torch.Generator().manual_seed(0), rampup_steps=1)(
        model, batch, torch.device("cpu")
    )
    clean_input = model.encoder.input_features(batch["audio"])
    assert student_inputs[0].shape == clean_input.shape
    assert not torch.allclose(student_inputs[0], clean_input, atol=1e-3)
    assert not torch.allclose(teacher_inputs[0], clean_input, atol=1e-3)
    assert not torch.allclose(student_inputs[0], teacher_inputs[0], atol=1e-3)


def test_unknown_consistency_type_is_rejected(tmp_path: Path) -> None:
    make_synthetic_pack(tmp_path / "pack", n_per_split=2, duration_s=1.0, seed=3)
    with pytest.raises(ValueError, match="consistency"):
        train_atst_sed(tiny_config(consistency="pseudo_label"), phase=1, clips_dir=tmp_path / "pack",
                       encoder_checkpoint=None, init_checkpoint=None, checkpoint=tmp_path / "m.pt")


def test_tag_only_validation_pack_is_a_clear_error(tmp_path: Path) -> None:
    import numpy as np

    from audiopipe.data.hdf5 import ClipWriter
    from audiopipe.training.sed.validation import eval_split

    path = tmp_path / "valid.h5"
    with ClipWriter(path, class_names=["Dog", "Cat"], sample_rate=16000, codec="pcm16", has_strong=False) as writer:
        writer.add("clip0", np.zeros(16000, np.float32), targets=np.array([1.0, 0.0], np.float32))
    with pytest.raises(ValueError, match=r"valid\.h5: no strong .*download\.source"):
        eval_split(path, duration_s=1.0, sample_rate=16000)


def test_stage2_teacher_uses_its_own_encoder_when_the_encoder_is_not_augmentable() -> None:
    from torch import nn

    from audiopipe.models.ema import EMA
    from audiopipe.models.sed import SEDModel
    from audiopipe.training.sed.step import SEDStep

    class PlainEncoder(nn.Module):  # FrameEncoder without linear_input/input_from_linear
        module_name, sample_rate, feature_dim = "plain", 16000, 3

        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(1, 3)

        def frame_features(self, waveform: torch.Tensor) -> torch.Tensor:
            return self.proj(waveform.unfold(1, 320, 320).square().mean(-1, keepdim=True))

    cfg = tiny_config(mixup_prob=0.0, mixup_encoder_input=False, freq_warp_prob=0.0, consistency="mean_teacher",
                      frame_shift_max_frames=0, mask_time_frames=0.0, mask_freq_bins=0.0)
    model = SEDModel(n_classes=3, encoder=PlainEncoder(), channels=[4] * 7, rnn_hidden=4, encoder_pool="linear")
    teacher = EMA(model, decay=0.9)
    with torch.no_grad():
        teacher.module.encoder.proj.weight.add_(1.0)  # the EMA encoder differs from the student's
    seen: list = []
    original = teacher.module.forward_features

    def record_frames(mel: torch.Tensor, frames: torch.Tensor | None = None) -> object:
        seen.append(frames.detach().clone())
        return original(mel, frames)

    teacher.module.forward_features = record_frames
    batch = {"audio": 0.1 * torch.randn(2, 16000), "strong": torch.zeros(2, 3, output_frames(model, 1.0)),
             "weak": torch.zeros(2, 3), "subset": torch.tensor([0, 0])}
    SEDStep(step_settings(cfg), 2, teacher, torch.Generator().manual_seed(0), rampup_steps=1)(
        model, batch, torch.device("cpu")
    )
    with torch.no_grad():
        expected = teacher.module.encoder.frame_features(batch["audio"])
    torch.testing.assert_close(seen[-1], expected)



@pytest.mark.parametrize("phase", [1, 2])
def test_feature_cache_gives_the_uncached_step_and_runs_the_front_ends_once_per_clip(phase: int) -> None:
    from audiopipe.training.sed.step import SEDStep

    overrides = {"consistency": "mean_teacher", "mixup_prob": 0.0, "mixup_encoder_input": False,
                 "freq_warp_prob": 0.0}
    cfg, model, teacher, batch = _step_inputs(**overrides)
    model.freeze_encoder(phase == 1)
    batch = {**batch, "split": ["train", "train", "unlabelled", "unlabelled"], "clip_id": ["a", "b", "a", "b"]}
    plain = SEDStep(step_settings(cfg), phase, teacher, torch.Generator().manual_seed(0), rampup_steps=1)(
        model, batch, torch.device("cpu")
    )
    encoder_calls: list = []
    mel_calls: list = []
    _spy(model.encoder, "frame_features", encoder_calls)
    _spy(model.mel_spec, "magnitude", mel_calls)
    step = SEDStep(step_settings(dataclasses.replace(cfg, cache_features=True)), phase, teacher,
                   torch.Generator().manual_seed(0), rampup_steps=1)
    first = step(model, batch, torch.device("cpu"))
    second = step(model, batch, torch.device("cpu"))
    # same split + clip id = one entry; "a" of train and "a" of unlabelled are different clips
    assert len(mel_calls) == 1 and mel_calls[0].shape[0] == 4 and len(step.cache.mels) == 4
    # phase 2 trains the encoder: its frames are never cached
    assert len(encoder_calls) == (1 if phase == 1 else 0) and len(step.cache.frames) == (4 if phase == 1 else 0)
    for key in ("loss", "strong_bce", "consistency"):
        torch.testing.assert_close(first[key], plain[key], atol=1e-5, rtol=0)
        torch.testing.assert_close(second[key], plain[key], atol=1e-5, rtol=0)


def test_feature_cache_rolls_mels_and_frames_with_the_frame_shift() -> None:
    from audiopipe.training.sed.feature_cache import ClipFeatureCache

    _, model, _, batch = _step_inputs()
    n_frames = output_frames(model, 1.0)
    samples_per_frame = int(model.sample_rate / model.frame_rate_hz)  # 1024 = 4 hops of 256
    cache, shifts = ClipFeatureCache(), [2, -1, 0, 3]
    keys = [("train", str(i)) for i in range(4)]
    still = cache.encoder_frames(model, batch["audio"], keys, [0] * 4, n_frames)
    shifted = cache.encoder_frames(model, batch["audio"], keys, shifts, n_frames)
    mel = cache.sed_magnitude(model, batch["audio"], keys, shifts, samples_per_frame)
    assert still.shape == (4, n_frames, model.encoder.feature_dim)
    for clip, shift in enumerate(shifts):
        torch.testing.assert_close(shifted[clip], torch.roll(still[clip], shift, dims=0))
        # away from the wrapped edge, the rolled cached mel is the mel of the rolled waveform
        rolled = torch.roll(batch["audio"][clip], shift * samples_per_frame)
        direct = model.mel_spec.magnitude(rolled[None])[0]
        inner = slice(4 * 4 + 8, -4 * 4 - 8)
        torch.testing.assert_close(mel[clip][:, inner], direct[:, inner], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(shifted[0], still[0])


def test_feature_cache_refuses_batches_without_clip_keys() -> None:
    from audiopipe.training.sed.step import SEDStep

    cfg, model, teacher, batch = _step_inputs(cache_features=True)
    step = SEDStep(step_settings(cfg), 2, teacher, torch.Generator().manual_seed(0), rampup_steps=1)
    with pytest.raises(ValueError, match="'split' and 'clip_id'"):
        step(model, batch, torch.device("cpu"))


def test_stage_test_scores_equal_the_evaluate_stage_scores(runs: dict) -> None:
    """The stage's own test metrics and `evaluate`'s must come from the same frame scores (same audio path)."""
    from audiopipe.data.hdf5 import ClipReader
    from audiopipe.evaluation.scoring import load_sed_models, sed_frame_scores
    from audiopipe.training.sed.validation import eval_split, predict_strong

    models, _ = load_sed_models(runs["s2"])
    test_pack = runs["root"] / "pack" / "test.h5"
    for name, model in models.items():
        assert ClipReader(test_pack).sample_rate != model.sample_rate  # the resampling path is exercised
        stage = predict_strong({name: model}, eval_split(test_pack, duration_s=1.0, sample_rate=model.sample_rate),
                               batch_size=3)[name]
        evaluate = sed_frame_scores(model, ClipReader(test_pack), 1.0, 3)
        assert stage.keys() == evaluate.keys()
        for clip in stage:
            np.testing.assert_allclose(stage[clip], evaluate[clip], atol=1e-6, err_msg=f"{name} {clip}")


@pytest.mark.filterwarnings("error::UserWarning")  # e.g. Optuna's "choices ... should be a tuple of None, bool, ..."
def test_stage2_batch_size_ablation_is_a_plain_optuna_sweep(runs: dict, tmp_path: Path) -> None:
    """The paper's stage-2 batch sizes x epochs ablation as `sweep.stages.atst_stage2` (no code changes): list
    choices for `batch_sizes`, an epoch range, and epochs without validation (`val_every` 2) are not reported."""
    import shutil

    import yaml

    from audiopipe.config import SweepConfig, SweepStageConfig
    from audiopipe.sweep import run_sweep

    repo = Path(__file__).resolve().parents[2]
    shutil.copy(repo / "dvc.yaml", tmp_path / "dvc.yaml")  # the sweep derives its targets from dvc.yaml
    shutil.copytree(repo / "stages", tmp_path / "stages")
    (tmp_path / "data" / "atst_stage1").mkdir(parents=True)
    shutil.copytree(runs["root"] / "pack", tmp_path / "data" / "pack_hdf5")
    shutil.copy(runs["s1"], tmp_path / "data" / "atst_stage1" / "model.pt")
    space = {"batch_sizes": {"choices": [[1, 1, 1], [2, 1, 1]]}, "epochs": {"low": 1, "high": 2}}
    sweep = SweepConfig(pruner="none", n_startup_trials=0, n_warmup_steps=0, seed=0, stages={
        "atst_stage2": SweepStageConfig(metric="valid/student_psds2_mean_tpr", direction="maximize", space=space)})
    summary = run_sweep("atst_stage2", tiny_config2(val_every=2), sweep, n_trials=3, out_dir=tmp_path / "sweep",
                        root=tmp_path, tracking_enabled=False)
    assert summary.n_complete == 3 and summary.n_failed == 0
    assert summary.best_params["batch_sizes"] in ([1, 1, 1], [2, 1, 1])
    assert "-S 'atst_stage2.batch_sizes=[" in summary.command
    best = yaml.safe_load(summary.best_params_file.read_text())
    assert best["params"]["atst_stage2"]["epochs"] in (1, 2)
    for trial in range(3):
        assert (tmp_path / "sweep" / f"trial-{trial}" / "model.pt").is_file()
    resumed = run_sweep("atst_stage2", tiny_config2(val_every=2), sweep, n_trials=1, out_dir=tmp_path / "sweep",
                        root=tmp_path, tracking_enabled=False)  # the stored study (list choices) reloads
    assert resumed.n_complete == 4 and resumed.n_failed == 0


def test_weak_bce_is_taken_on_the_weak_clips_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spec §6.2: BCE(weak_s[weak], y_weak) with `weak` = the weak subset, not strong + weak clips."""
    from audiopipe.training.sed import step as sed_step

    cfg, model, teacher, batch = _step_inputs(consistency="mean_teacher", mixup_prob=0.0)
    batch = {**batch, "subset": torch.tensor([0, 1, 1, 2])}  # strong, weak, weak, unlabelled
    masks: list = []
    original = sed_step.weak_bce

    def record(weak: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        masks.append(mask.clone())
        return original(weak, targets, mask)

    monkeypatch.setattr(sed_step, "weak_bce", record)
    out = sed_step.SEDStep(step_settings(cfg), 1, teacher, torch.Generator().manual_seed(0), rampup_steps=1)(
        model, batch, torch.device("cpu")
    )
    assert [m.tolist() for m in masks] == [[False, True, True, False]]
    assert torch.isfinite(out["weak_bce"])


def test_mean_teacher_keeps_its_own_batchnorm_statistics() -> None:
    """Spec §4.4/§6.3: the EMA averages parameters only; the teacher's BN running statistics come from its own
    train-mode forward passes and are never copied from the student."""
    from audiopipe.models.ema import EMA
    from audiopipe.training.sed.step import SEDStep

    cfg, model, _, batch = _step_inputs(consistency="ict")
    teacher = EMA(model, decay=0.9, copy_buffers=False)
    bn = [name for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    before = teacher.module.get_submodule(bn).running_mean.clone()
    step = SEDStep(step_settings(cfg), 2, teacher, torch.Generator().manual_seed(0), rampup_steps=1)
    step(model, batch, torch.device("cpu"))
    after_forward = teacher.module.get_submodule(bn).running_mean.clone()
    assert not torch.allclose(after_forward, before)  # the teacher's forward in train mode updates its own stats
    teacher.update(model, decay=0.9)
    student_stats = model.get_submodule(bn).running_mean
    teacher_stats = teacher.module.get_submodule(bn).running_mean
    torch.testing.assert_close(teacher_stats, after_forward)  # the EMA update left the buffers alone
    assert not torch.allclose(teacher_stats, student_stats)


def test_trained_mean_teacher_has_its_own_batchnorm_statistics(runs: dict) -> None:
    for key in ("s1", "s2"):
        payload = load_checkpoint(runs[key])
        stats = [k for k in payload["model"] if k.endswith("running_mean")]
        assert stats
        assert any(not torch.equal(payload["model"][k], payload["mean_teacher"][k]) for k in stats), key


def _warped(inputs: torch.Tensor, clean: torch.Tensor, groups: list[slice]) -> list[bool]:
    return [not torch.allclose(inputs[g], clean[g], atol=1e-5) for g in groups]


def test_stage2_frequency_warp_tosses_one_coin_per_batch() -> None:
    """Spec §5.5: p = 0.5 per batch; when it fires, every group of the student and of the teacher input is
    warped (each with its own crop); otherwise none is."""
    from audiopipe.training.sed.step import SEDStep

    cfg, model, teacher, batch = _step_inputs(mixup_prob=0.0, freq_warp_prob=0.5)
    clean = model.encoder.input_features(batch["audio"])
    groups = [slice(0, 2), slice(2, 4)]  # strong, unlabelled
    outcomes = []
    for seed in range(12):
        student_inputs: list = []
        teacher_inputs: list = []
        _spy(model.encoder, "frames_from_input", student_inputs)
        _spy(teacher.module.encoder, "frames_from_input", teacher_inputs)
        SEDStep(step_settings(cfg), 2, teacher, torch.Generator().manual_seed(seed), rampup_steps=1)(
            model, batch, torch.device("cpu")
        )
        del model.encoder.frames_from_input, teacher.module.encoder.frames_from_input  # drop the spies
        warped = _warped(student_inputs[0], clean, groups) + _warped(teacher_inputs[0], clean, groups)
        assert len(set(warped)) == 1, f"seed {seed}: warped (student s/u, teacher s/u) = {warped}"
        if warped[0]:  # crops are drawn separately for each group and branch
            assert not torch.allclose(student_inputs[0][:2], teacher_inputs[0][:2], atol=1e-3)
        outcomes.append(warped[0])
    assert 0 < sum(outcomes) < len(outcomes)


def test_phase_selection_criteria() -> None:
    """Spec §6.5: phase 1 keeps the epoch with the lowest mean of the teacher's weak and strong validation BCE,
    phase 2 the highest teacher PSDS1 + PSDS2."""
    from audiopipe.training.finetune_sed import selection_criterion

    assert selection_criterion(1) == ("valid/teacher_bce_mean", "min")
    assert selection_criterion(2) == ("valid/teacher_psds_sum", "max")


def test_phase1_keeps_the_epoch_with_the_lowest_teacher_validation_bce(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from audiopipe.training import finetune_sed

    make_synthetic_pack(tmp_path / "pack", n_per_split=2, duration_s=1.0, seed=3)
    scripted = iter([0.9, 0.2, 0.5])  # teacher strong BCE at each validation; lowest at epoch 1
    real = finetune_sed.validation_bce

    def fake(*args: object, **kwargs: object) -> dict[str, float]:
        losses = real(*args, **kwargs)
        return {**losses, "strong_bce": next(scripted)}

    monkeypatch.setattr(finetune_sed, "validation_bce", fake)
    result = train_atst_sed(
        tiny_config(epochs=3, consistency="mean_teacher", mixup_encoder_input=False, freq_warp_prob=0.0),
        phase=1, clips_dir=tmp_path / "pack", encoder_checkpoint=None, init_checkpoint=None,
        checkpoint=tmp_path / "s1" / "model.pt",
    )
    rows = [row for row in result.history.epochs if "valid/teacher_bce_mean" in row]
    assert len(rows) == 3
    for row in rows:
        assert row["valid/teacher_bce_mean"] == pytest.approx(
            (row["valid/teacher_weak_bce"] + row["valid/teacher_strong_bce"]) / 2
        )
        assert row["valid/obj_metric"] == row["valid/teacher_bce_mean"]
    assert result.metrics["train/best_epoch"] == 1.0
    assert result.metrics["valid/teacher_strong_bce"] == 0.2  # the restored epoch's validation metrics
