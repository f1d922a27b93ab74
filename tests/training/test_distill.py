"""distill_mobilenet on a tiny synthetic pack: KD and no-KD runs, checkpoint contract, teacher alignment."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from audiopipe.config import DistillMobilenetConfig
from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.predictions import PredictionsError, write_predictions
from audiopipe.data.synthetic import make_synthetic_pack
from audiopipe.models import build_model, load_model
from audiopipe.training.distill import (
    align_teacher,
    distill_mobilenet,
    recalibrate_batchnorm,
    sample_weights,
)

CFG = DistillMobilenetConfig(
    train_split="train", valid_split="valid", duration_s=1.0, student="mn", width_mult=0.1, n_mels=32, hop_length=320,
    dropout=0.0, epochs=2, epoch_len=None, batch_size=3, lr=1e-3, weight_decay=0.0, warmup_epochs=0.5,
    min_lr_ratio=0.01, kd_lambda=0.1, temperature=2.0, mixup_alpha=0.3, roll_samples=400, gain_db=6.0,
    fmin_aug_range=10, fmax_aug_range=1000, freqm=4, timem=8, weighted_sampling=True, sampling_offset=1.0,
    bn_recalib_batches=2, num_workers=0, device="cpu", amp="none", seed=0,
)  # fmt: skip


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pack")
    make_synthetic_pack(out, n_per_split={"train": 6, "valid": 4}, sample_rate=16000, duration_s=1.0, seed=0)
    return out


def _teacher_file(pack: Path, path: Path, *, drop_last: bool = False, class_names: list[str] | None = None) -> Path:
    per_split = {}
    for split in ("train", "valid"):
        reader = ClipReader(pack / f"{split}.h5")
        ids, targets = list(reader.clip_ids), reader.all_targets
        logits = 4 * targets - 2 + np.random.default_rng(1).normal(size=targets.shape)
        per_split[split] = (ids[:-1], logits[:-1]) if drop_last else (ids, logits)
        names = reader.class_names
    return write_predictions(path, per_split, class_names or names, teacher="fixture", checkpoints=[])


def test_kd_run_writes_a_loadable_best_checkpoint(pack: Path, tmp_path: Path) -> None:
    teacher = _teacher_file(pack, tmp_path / "predictions.h5")
    seen: list[int] = []
    result = distill_mobilenet(CFG, clips_dir=pack, teacher_h5=teacher, checkpoint=tmp_path / "student.pt",
                               on_epoch_end=lambda epoch, metrics: seen.append(epoch))
    epochs = [row for row in result.history.epochs if "valid/mAP" in row]
    assert seen == [0, 1] and len(epochs) == 2
    for key in ("valid/mAP", "valid/roc_auc", "valid/d_prime", "valid/loss", "teacher/valid_mAP"):
        assert np.isfinite(result.metrics[key]), key
    best = max(epochs, key=lambda e: e["valid/mAP"])
    assert result.metrics["valid/mAP"] == pytest.approx(best["valid/mAP"])
    model, payload = load_model(tmp_path / "student.pt")
    assert payload["builder"] == "mn_tagger" and payload["sample_rate"] == 16000
    assert payload["class_names"] == ClipReader(pack / "train.h5").class_names
    assert payload["metrics"]["epoch"] == result.metrics["best_epoch"]
    with torch.no_grad():
        assert model(torch.zeros(2, 16000)).shape == (2, len(payload["class_names"]))
    assert not (tmp_path / ".student.resume.pt").exists()


def test_no_kd_run_needs_no_teacher_and_lambda_changes_training(pack: Path, tmp_path: Path) -> None:
    cfg = dataclasses.replace(CFG, kd_lambda=1.0, epochs=1)
    result = distill_mobilenet(cfg, clips_dir=pack, teacher_h5=None, checkpoint=tmp_path / "a.pt")
    assert np.isfinite(result.metrics["valid/loss"]) and "teacher/valid_mAP" not in result.metrics
    teacher = _teacher_file(pack, tmp_path / "p.h5")
    kd = distill_mobilenet(dataclasses.replace(cfg, kd_lambda=0.0), clips_dir=pack, teacher_h5=teacher,
                           checkpoint=tmp_path / "b.pt")
    assert kd.metrics["valid/loss"] != result.metrics["valid/loss"]


def test_teacher_is_required_below_lambda_one(pack: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs teacher"):
        distill_mobilenet(CFG, clips_dir=pack, teacher_h5=None, checkpoint=tmp_path / "s.pt")


def test_misaligned_teacher_is_a_clear_error(pack: Path, tmp_path: Path) -> None:
    teacher = _teacher_file(pack, tmp_path / "short.h5", drop_last=True)
    with pytest.raises(PredictionsError, match=r"not aligned.*1 pack clip\(s\) without teacher logits"):
        distill_mobilenet(CFG, clips_dir=pack, teacher_h5=teacher, checkpoint=tmp_path / "s.pt")
    names = list(reversed(ClipReader(pack / "train.h5").class_names))
    other = _teacher_file(pack, tmp_path / "labels.h5", class_names=names)
    with pytest.raises(PredictionsError, match="label list differs"):
        distill_mobilenet(CFG, clips_dir=pack, teacher_h5=other, checkpoint=tmp_path / "s.pt")


def test_align_teacher_reorders_by_clip_id(pack: Path, tmp_path: Path) -> None:
    reader = ClipReader(pack / "train.h5")
    ids = list(reader.clip_ids)
    logits = np.arange(len(ids) * len(reader.class_names), dtype=np.float32).reshape(len(ids), -1)
    path = write_predictions(tmp_path / "rev.h5", {"train": (ids[::-1], logits[::-1])}, reader.class_names,
                             teacher="t", checkpoints=[])
    torch.testing.assert_close(align_teacher(path, "train", ids, reader.class_names), torch.from_numpy(logits))


def test_sample_weights_favour_rare_classes() -> None:
    targets = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 0]], dtype=np.float32)
    w = sample_weights(targets, offset=0.0)
    np.testing.assert_allclose(w[:4], [1000 / 3] * 3 + [1000.0])
    assert w[4] == pytest.approx(1000 / 3)  # unlabelled clip: smallest positive weight


def _clip_spread(model: torch.nn.Module, audio: torch.Tensor, *, batch_stats: bool) -> float:
    """Mean over classes of the std over clips of the logits, in eval mode or with BN on batch statistics."""
    model.eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.train(batch_stats)
    with torch.no_grad():
        spread = model(audio).std(dim=0).mean().item()
    model.eval()
    return spread


def test_trained_student_does_not_collapse_in_eval_mode(pack: Path, tmp_path: Path) -> None:
    # Regression: with BN momentum 0.01 and a few steps the running statistics stayed at their init, and the
    # eval-mode logits were the same for every clip (valid ROC-AUC 0.5) while batch-statistics logits differed.
    cfg = dataclasses.replace(CFG, kd_lambda=1.0, epochs=1)
    result = distill_mobilenet(cfg, clips_dir=pack, teacher_h5=None, checkpoint=tmp_path / "s.pt")
    model, _ = load_model(tmp_path / "s.pt")
    reader = ClipReader(pack / "valid.h5")
    audio = torch.stack([torch.as_tensor(reader.read_audio(i)).float() for i in range(len(reader.clip_ids))])
    eval_spread = _clip_spread(model, audio, batch_stats=False)
    train_spread = _clip_spread(model, audio, batch_stats=True)
    assert train_spread > 0
    assert eval_spread > 0.2 * train_spread, (eval_spread, train_spread)  # collapsed: ratio ~1e-4
    assert np.isfinite(result.metrics["valid/roc_auc"])


def test_recalibrate_batchnorm_uses_the_batch_statistics_and_keeps_momentum() -> None:
    torch.manual_seed(0)
    tagger = build_model("mn_tagger", width_mult=0.1, n_classes=3, sample_rate=16000, n_mels=32)
    stem_bn = tagger.net.features[0][1]
    seen: list[torch.Tensor] = []
    stem_bn.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    batches = [torch.randn(3, 16000) * 0.1, torch.randn(3, 16000) * 0.3]
    assert recalibrate_batchnorm(tagger, iter(batches), torch.device("cpu")) == 2
    expected_mean = torch.stack([x.mean(dim=(0, 2, 3)) for x in seen]).mean(0)
    expected_var = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x in seen]).mean(0)
    torch.testing.assert_close(stem_bn.running_mean, expected_mean)
    torch.testing.assert_close(stem_bn.running_var, expected_var)
    assert stem_bn.momentum == pytest.approx(0.01) and not tagger.training and not stem_bn.training
    before = stem_bn.running_mean.clone()
    assert recalibrate_batchnorm(tagger, iter([]), torch.device("cpu")) == 0  # nothing to average: untouched
    torch.testing.assert_close(stem_bn.running_mean, before)


def test_dymn_student_trains_with_its_temperature_schedule(
    pack: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from audiopipe.models import load_model
    from audiopipe.models.dymn.tagger import DyMNTagger

    taus: list[tuple[int, float]] = []
    original = DyMNTagger.update_params

    def record(self: DyMNTagger, epoch: int) -> float:
        tau = original(self, epoch)
        taus.append((epoch, tau))
        return tau

    monkeypatch.setattr(DyMNTagger, "update_params", record)
    cfg = replace(CFG, student="dymn", kd_lambda=1.0, bn_recalib_batches=0)
    result = distill_mobilenet(cfg, clips_dir=pack, teacher_h5=None, checkpoint=tmp_path / "dymn.pt")
    assert np.isfinite(result.metrics["valid/mAP"])
    assert taus == [(0, 30.0), (1, 29.0)]  # from scratch: T_max 30, one step down per epoch
    model, payload = load_model(tmp_path / "dymn.pt")
    assert payload["builder"] == "dymn_tagger" and type(model).__name__ == "DyMNTagger"


def test_unknown_student_family_is_rejected(pack: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    with pytest.raises(ValueError, match="student must be one of"):
        distill_mobilenet(replace(CFG, student="resnet", kd_lambda=1.0), clips_dir=pack, teacher_h5=None,
                          checkpoint=tmp_path / "x.pt")


def test_validation_loader_leaves_the_global_rng_alone() -> None:
    """Iterating the whole-split validation loader must not draw from torch's global RNG: a DataLoader without its
    own generator does, and that shifted every later augmentation of the training run (students' metrics moved)."""
    from torch.utils.data import DataLoader, TensorDataset

    from audiopipe.training.distill import whole_split_loader

    data = TensorDataset(torch.arange(10.0))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    assert [b[0].tolist() for b in whole_split_loader(data, 4, 0)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert torch.equal(torch.get_rng_state(), before)
    list(DataLoader(data, batch_size=4, shuffle=False))  # negative control: the plain loader draws a seed
    assert not torch.equal(torch.get_rng_state(), before)
