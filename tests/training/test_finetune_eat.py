"""Tests for audiopipe.training.finetune_eat: init modes, augmentation wrapper, loss, best checkpoint."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from audiopipe.config import FinetuneEatConfig, PretrainEatConfig
from audiopipe.data.synthetic import make_synthetic_pack
from audiopipe.models import load_model
from audiopipe.models.eat.tagger import EATTagger
from audiopipe.storage import load_checkpoint
from audiopipe.training.finetune_eat import (
    AugmentedTagger,
    FbankCache,
    bce_loss,
    build_tagger,
    finetune_eat,
    prior_baseline,
)
from audiopipe.training.pretrain import pretrain_eat

PRETRAIN: dict[str, Any] = dict(
    preset="eat_demo", splits=["train", "valid", "weak", "unlabelled"], clip_seconds=1.0, target_frames=96,
    mask_ratio=0.8, clones=2, epochs=2, batch_size=3, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95),
    warmup_fraction=0.2, max_grad_norm=4.0, ema_decay_start=0.9, ema_decay_end=0.99, ema_anneal_steps=10,
    checkpoint_every_steps=0, seed=0, device="cpu", amp="none", num_workers=0,
)

FINETUNE: dict[str, Any] = dict(
    preset="eat_demo", init="random", official_checkpoint=None, train_splits=["train", "weak"], valid_split="valid",
    clip_seconds=1.0, target_frames=96, epochs=2, batch_size=2, eval_batch_size=3, lr=1e-3, layer_decay=0.75,
    weight_decay=0.05, betas=(0.9, 0.95), warmup_fraction=0.1, min_lr_ratio=0.02, drop_path=0.1, mixup_alpha=0.8,
    mixup_prob=0.9, mask_ratio=0.2, roll_mag=True, gain_db=3.0, bce_normaliser="positives", seed=0, device="cpu",
    amp="none", num_workers=0,
)


def pretrain_cfg(**overrides: Any) -> PretrainEatConfig:
    return PretrainEatConfig(**{**PRETRAIN, **overrides})


def finetune_cfg(**overrides: Any) -> FinetuneEatConfig:
    return FinetuneEatConfig(**{**FINETUNE, **overrides})



@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pack")
    make_synthetic_pack(out, n_per_split={"train": 4, "valid": 3, "weak": 2}, sample_rate=16000, seed=1)
    return out


@pytest.fixture(scope="module")
def pretrained(pack: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ckpt = tmp_path_factory.mktemp("pre") / "eat.pt"
    pretrain_eat(pretrain_cfg(epochs=1, splits=["train"]), clips_dir=pack, checkpoint=ckpt)
    return ckpt


def test_pretrained_init_copies_the_encoder(pretrained: Path) -> None:
    tagger, kwargs = build_tagger(finetune_cfg(init="pretrained"), pretrained, n_classes=10, sample_rate=16000)
    encoder_state = load_checkpoint(pretrained)["model"]
    for name, value in tagger.encoder.state_dict().items():
        torch.testing.assert_close(value, encoder_state[name])
    assert kwargs["size"] == "eat_demo" and kwargs["n_classes"] == 10


@pytest.mark.parametrize(("init", "pretrained_path", "match"), [
    ("pretrained", None, "no pre-trained checkpoint"),
    ("official", None, "official_checkpoint is null"),
    ("imagenet", None, "must be one of"),
])
def test_init_errors_are_explicit(init: str, pretrained_path: Path | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_tagger(finetune_cfg(init=init), pretrained_path, n_classes=3, sample_rate=16000)


def test_augmented_tagger_mixes_labels_only_in_training() -> None:
    torch.manual_seed(0)
    tagger, _ = build_tagger(finetune_cfg(), None, n_classes=3, sample_rate=16000)
    model = AugmentedTagger(tagger, mixup_alpha=0.8, mixup_prob=1.0, mask_ratio=0.2, roll_mag=True, gain_db=3.0)
    audio, labels = torch.randn(2, 16000) * 0.1, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    logits, mixed = model.train()(audio, labels)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    assert not torch.equal(mixed, labels) and torch.allclose(mixed.sum(1), torch.ones(2))
    logits_eval, same = model.eval()(audio, labels)
    assert torch.equal(same, labels)
    torch.testing.assert_close(logits_eval, tagger.eval()(audio))


def test_bce_positive_normaliser_divides_by_positive_count() -> None:
    logits, targets = torch.zeros(2, 4), torch.tensor([[1.0, 0, 0, 0], [1.0, 1.0, 0, 0]])
    assert bce_loss(logits, targets, "positives").item() == pytest.approx(8 * math.log(2) / 3)
    assert bce_loss(logits, targets, "mean").item() == pytest.approx(math.log(2))


def test_prior_baseline_map_equals_mean_valid_prevalence() -> None:
    train = np.array([[1, 0, 0], [1, 1, 0]], np.float32)
    valid = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 0]], np.float32)
    # all clips tie within a class, so AP = the class's positive rate; class 2 has no positive (left out)
    assert prior_baseline(train, valid)["mAP"] == pytest.approx(0.5)


def test_finetune_keeps_best_epoch_and_reports_baseline(pack: Path, pretrained: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "eat_tagger.pt"
    seen: list[tuple[int, dict[str, float]]] = []
    result = finetune_eat(finetune_cfg(init="pretrained"), clips_dir=pack, pretrained=pretrained, checkpoint=ckpt,
                          on_epoch_end=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == [0, 1]
    maps = [m["valid/mAP"] for _, m in seen]
    assert all(0.0 <= v <= 1.0 for v in maps)
    assert result.metrics["valid/mAP"] == pytest.approx(max(maps))
    assert result.metrics["best_epoch"] == float(int(np.argmax(maps)))
    assert 0.0 < result.metrics["valid/mAP_prior"] <= 1.0
    assert result.metrics["train/steps"] == 2 * (6 // 2)
    model, payload = load_model(ckpt)
    assert isinstance(model, EATTagger) and payload["builder"] == "eat_tagger"
    assert payload["metrics"]["valid/mAP"] == pytest.approx(result.metrics["valid/mAP"])
    assert model(torch.zeros(1, 16000)).shape == (1, len(payload["class_names"]))
    assert not ckpt.with_name(".eat_tagger.resume.pt").exists()


def test_random_init_runs_without_pretrained_checkpoint(pack: Path, tmp_path: Path) -> None:
    result = finetune_eat(finetune_cfg(init="random", epochs=1), clips_dir=pack, pretrained=None,
                          checkpoint=tmp_path / "t.pt")
    assert math.isfinite(result.metrics["valid/mAP"]) and (tmp_path / "t.pt").is_file()


def test_official_init_takes_the_encoder_size_from_the_checkpoint(tmp_path: Path) -> None:
    """`init: official` with `preset: eat_base` and an eat_demo-sized file: the file decides (it used to fail
    with "unexpected keys (120): blocks.10 ..." and no hint)."""
    from audiopipe.models.eat import build as build_eat
    from tests.models.test_eat import fairseq_encoder_keys

    encoder = build_eat("eat_demo")
    path = tmp_path / "EAT-demo_fairseq.pt"
    torch.save({"model": fairseq_encoder_keys(encoder.state_dict(), None)}, path)
    cfg = finetune_cfg(init="official", official_checkpoint=str(path), preset="eat_base")
    tagger, kwargs = build_tagger(cfg, None, n_classes=3, sample_rate=16000)
    assert kwargs["size"] == "eat_demo"
    for name, value in encoder.state_dict().items():
        torch.testing.assert_close(tagger.encoder.state_dict()[name], value, rtol=0, atol=0)


def test_official_init_with_an_unknown_encoder_size_names_width_depth_and_presets(tmp_path: Path) -> None:
    from audiopipe.models.eat.encoder import EATEncoder
    from audiopipe.storage import CheckpointError
    from tests.models.test_eat import fairseq_encoder_keys

    path = tmp_path / "odd.pt"
    torch.save({"model": fairseq_encoder_keys(EATEncoder(64, 3, 4).state_dict(), None)}, path)
    message = r"width 64 and depth 3 matches no EAT preset; known: eat_demo \(96 x 2\)"
    with pytest.raises(CheckpointError, match=message):
        build_tagger(finetune_cfg(init="official", official_checkpoint=str(path)), None, n_classes=3,
                     sample_rate=16000)


def test_cached_fbank_path_gives_the_uncached_logits_and_computes_each_clip_once() -> None:
    torch.manual_seed(0)
    tagger, _ = build_tagger(finetune_cfg(drop_path=0.0), None, 3, 16000)
    plain = dict(mixup_alpha=0.0, mixup_prob=0.0, mask_ratio=0.0, roll_mag=False, gain_db=0.0)
    cache = FbankCache(capacity=2)
    cached, uncached = AugmentedTagger(tagger, **plain, cache=cache), AugmentedTagger(tagger, **plain)
    audio, labels = 0.1 * torch.randn(2, 16000), torch.eye(3)[:2]
    keys = [("train", "a"), ("weak", "a")]  # the same clip id in two splits: two entries
    expected, _ = uncached.train()(audio, labels)
    got, _ = cached.train()(audio, labels, keys)
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=2e-3)  # the cache holds float16 fbanks
    assert len(cache) == 2
    again, _ = cached(torch.zeros_like(audio), labels, keys)  # cached clips are not recomputed from the audio
    torch.testing.assert_close(again, got)
    with pytest.raises(RuntimeError, match="more than 2 distinct clips"):
        cached(audio[:1], labels[:1], [("train", "b")])
    rolled, _ = AugmentedTagger(tagger, **{**plain, "roll_mag": True}, cache=cache).train()(audio, labels, keys)
    assert not torch.allclose(rolled, got)  # roll_mag acts on the cached fbank


def test_mean_pooling_is_a_builder_kwarg(pack: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "tagger.pt"
    finetune_eat(finetune_cfg(epochs=1, pooling="mean", cache_features=True), clips_dir=pack, pretrained=None,
                 checkpoint=ckpt)
    model, _ = load_model(ckpt)
    assert isinstance(model, EATTagger) and model.pooling == "mean"
