"""Tests for audiopipe.models.sed (model, crnn, frontend, encoders): CRNN, fusion, adapters, builders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torchaudio
from torch import nn

from audiopipe.models import build_model, load_model
from audiopipe.models import sed as sed_module
from audiopipe.models.sed import SEDModel, build, resample_frames
from audiopipe.models.sed.crnn import strong_weak_heads
from audiopipe.models.sed.frontend import SEDMelFrontEnd
from audiopipe.storage import save_checkpoint

GOLDEN = Path(__file__).parents[1] / "golden" / "sed_atst_crnn_keys.json"
SR = 16000
TINY_CRNN: dict[str, Any] = {"channels": [4, 8, 8, 8, 8, 8, 8], "rnn_hidden": 8}
TINY_ATST: dict[str, Any] = {"encoder_preset": "atst_demo", "encoder_kwargs": {"dim": 32, "depth": 1, "num_heads": 2}}


def out_frames(samples: int) -> int:
    return (1 + samples // 256) // 4


@pytest.fixture
def model() -> SEDModel:
    torch.manual_seed(0)
    return build("sed_atst", **TINY_ATST, **TINY_CRNN)


# --- SED front end -----------------------------------------------------------------------------------------


def test_frontend_ten_seconds_give_626_frames_in_unit_range() -> None:
    mel = SEDMelFrontEnd()(0.1 * torch.randn(2, 10 * SR))
    assert mel.shape == (2, 128, 626)
    assert mel.amin() >= 0 and mel.amax() <= 1
    torch.testing.assert_close(mel.amin(dim=(1, 2)), torch.zeros(2))  # per-clip min-max


def test_frontend_matches_torchaudio_desed_mel() -> None:
    wave = 0.3 * torch.randn(2, SR)
    ref = torchaudio.transforms.MelSpectrogram(
        SR,
        n_fft=2048,
        win_length=2048,
        hop_length=256,
        f_min=0,
        f_max=8000,
        n_mels=128,
        window_fn=torch.hamming_window,
        wkwargs={"periodic": False},
        power=1,
    )(wave)
    torch.testing.assert_close(SEDMelFrontEnd().magnitude(wave), ref, rtol=1e-4, atol=1e-5)
    db = (20 * torch.log10(ref.clamp(min=1e-5))).clamp(-50, 80)
    low, high = db.amin(dim=(1, 2), keepdim=True), db.amax(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(SEDMelFrontEnd()(wave), (db - low) / (high - low + 1e-8), rtol=1e-4, atol=1e-4)


# --- fused model: shapes, ranges, gradients, determinism ---------------------------------------------------


@pytest.mark.parametrize(("batch", "samples"), [(1, SR), (3, SR + 77), (1, 5 * SR), (3, 10 * SR)])
def test_output_shapes(model: SEDModel, batch: int, samples: int) -> None:
    strong, weak = model.eval()(0.1 * torch.randn(batch, samples))
    assert strong.shape == (batch, 10, out_frames(samples))
    assert weak.shape == (batch, 10)


def test_ten_seconds_give_156_frames_at_15_625_hz(model: SEDModel) -> None:
    strong, _ = model.eval()(0.1 * torch.randn(1, 10 * SR))
    assert strong.shape[-1] == 156
    assert model.frame_rate_hz == 15.625 and model.sample_rate == SR


def test_longer_than_ten_seconds_runs_in_encoder_chunks(model: SEDModel) -> None:
    wave = 0.1 * torch.randn(1, 12 * SR)
    encoder = model.encoder
    assert encoder is not None
    assert encoder.frame_features(wave).shape == (1, 300, 32)  # 1201 mel frames -> 250 + 50 tokens
    assert model.eval()(wave)[0].shape == (1, 10, out_frames(12 * SR))


def test_outputs_are_finite_probabilities(model: SEDModel) -> None:
    strong, weak = model.train()(0.1 * torch.randn(3, SR))
    for probs in (strong, weak):
        assert torch.isfinite(probs).all()
        assert ((probs >= 0) & (probs <= 1)).all()


def test_gradient_reaches_every_parameter(model: SEDModel) -> None:
    strong, weak = model.train()(0.1 * torch.randn(2, SR))
    (strong.mean() + weak.mean()).backward()
    missing = {name for name, p in model.named_parameters() if p.grad is None}
    assert missing == {"atst_frame.atst.mask_embed"}  # ATST pre-training token, unused downstream


def test_frozen_encoder_gets_no_gradient(model: SEDModel) -> None:
    model.freeze_encoder(True).train()
    strong, weak = model(0.1 * torch.randn(2, SR))
    (strong.mean() + weak.mean()).backward()
    for name, p in model.named_parameters():
        assert (p.grad is None) == name.startswith("atst_frame."), name
    model.freeze_encoder(False)
    assert all(p.requires_grad for p in model.parameters())


def test_eval_mode_is_deterministic(model: SEDModel) -> None:
    wave = 0.1 * torch.randn(2, SR)
    model.eval()
    torch.testing.assert_close(model(wave), model(wave))


def test_crnn_alone_has_no_fusion_layer() -> None:
    crnn = build("sed_crnn", n_classes=5, **TINY_CRNN).eval()
    assert crnn.encoder is None and not hasattr(crnn, "cat_tf")
    strong, weak = crnn(0.1 * torch.randn(2, SR))
    assert strong.shape == (2, 5, out_frames(SR)) and weak.shape == (2, 5)


def test_glu_activation_uses_baseline_names() -> None:
    crnn = build("sed_crnn", activation="glu", **TINY_CRNN)
    assert "cnn.cnn.glu0.linear.weight" in crnn.state_dict()


def test_rejects_incompatible_mel_bins() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        build("sed_crnn", n_mels=100, **TINY_CRNN)


# --- key layout and parameter counts (spec §4.1, §4.3) -----------------------------------------------------


def test_atst_sed_layout_and_count_match_spec() -> None:
    with torch.device("meta"):
        full = build("sed_atst")  # atst_base + published CRNN
    state = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    golden = {k: tuple(s) for k, s in json.loads(GOLDEN.read_text())["keys"]}
    assert {k: s for k, s in state.items() if not k.startswith("atst_frame.atst.")} == golden
    assert sum(k.startswith("atst_frame.atst.") for k in state) == 138
    assert sum(p.numel() for p in full.parameters()) == 86_646_500


def test_weak_head_is_class_softmax_attention() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 7, 6)
    dense, dense_softmax = nn.Linear(6, 3), nn.Linear(6, 3)
    strong, weak = strong_weak_heads(x, dense, dense_softmax)
    probs = torch.sigmoid(dense(x))
    attention = torch.softmax(dense_softmax(x), dim=-1).clamp(1e-7, 1)  # over classes, not time
    torch.testing.assert_close(strong, probs.transpose(1, 2))
    torch.testing.assert_close(weak, (probs * attention).sum(1) / attention.sum(1))


def test_adaptive_pool_uses_atst_sed_windows() -> None:
    frames = torch.arange(250.0).view(1, 250, 1)
    pooled = resample_frames(frames, 156, "adaptive_avg")[0, :, 0]
    for i in (0, 77, 155):
        start, end = (i * 250) // 156, -((-(i + 1) * 250) // 156)
        assert pooled[i].item() == pytest.approx(frames[0, start:end, 0].mean().item())


def test_linear_resampling_and_bad_mode() -> None:
    assert resample_frames(torch.randn(2, 7, 4), 15, "linear").shape == (2, 15, 4)
    with pytest.raises(ValueError, match="encoder_pool"):
        resample_frames(torch.randn(2, 7, 4), 15, "cubic")


# --- pluggable encoders --------------------------------------------------------------------------------------


class StubEncoder(nn.Module):
    """Minimal FrameEncoder: 20-ms frame energies through a Linear."""

    module_name = "stub"

    def __init__(self, sample_rate: int = SR) -> None:
        super().__init__()
        self.sample_rate, self.feature_dim = sample_rate, 5
        self.proj = nn.Linear(1, 5)

    def frame_features(self, waveform: torch.Tensor) -> torch.Tensor:
        energy = waveform.unfold(1, 320, 320).square().mean(-1, keepdim=True)  # (B, T // 320, 1)
        return self.proj(energy)


def test_any_object_following_the_protocol_plugs_in() -> None:
    fused = SEDModel(n_classes=4, encoder=StubEncoder(), encoder_pool="linear", **TINY_CRNN)
    strong, _ = fused(0.1 * torch.randn(2, SR))
    strong.mean().backward()
    assert strong.shape == (2, 4, out_frames(SR)) and fused.stub.proj.weight.grad is not None


def test_encoder_sample_rate_and_protocol_are_checked() -> None:
    with pytest.raises(ValueError, match="Hz"):
        SEDModel(n_classes=4, encoder=StubEncoder(sample_rate=32000), **TINY_CRNN)
    with pytest.raises(TypeError, match="frame_features"):
        SEDModel(n_classes=4, encoder=nn.Linear(2, 2), **TINY_CRNN)


def test_eat_adapter_frames_and_fusion() -> None:
    torch.manual_seed(0)
    fused = build(
        "sed_eat", encoder_preset="eat_demo", encoder_kwargs={"embed_dim": 32, "depth": 1, "num_heads": 4}, **TINY_CRNN
    ).eval()
    wave = 0.1 * torch.randn(3, SR)
    encoder = fused.encoder
    assert encoder is not None and encoder.module_name == "eat_frame"
    assert encoder.frame_features(wave).shape == (3, 7, 32)  # 98 fbank frames -> padded 112 -> 7 time patches
    strong, weak = fused(wave)
    assert strong.shape == (3, 10, out_frames(SR)) and ((weak >= 0) & (weak <= 1)).all()


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("sed_atst", TINY_ATST),
     ("sed_eat", {"encoder_preset": "eat_demo", "encoder_kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 4}})],
)
def test_encoder_input_splits_at_the_linear_mel(name: str, kwargs: dict[str, Any]) -> None:
    """Stage 2 mixes clips between `linear_input` and `input_from_linear`: the split must be lossless."""
    from audiopipe.models.sed.encoders import AugmentableFrameEncoder

    torch.manual_seed(0)
    encoder = build(name, **kwargs, **TINY_CRNN).eval().encoder
    assert isinstance(encoder, AugmentableFrameEncoder)
    wave = 0.1 * torch.randn(2, SR)
    linear = encoder.linear_input(wave)
    assert (linear >= 0).all()
    features = encoder.input_from_linear(linear)
    torch.testing.assert_close(features, encoder.input_features(wave), atol=1e-5, rtol=0)
    torch.testing.assert_close(encoder.frames_from_input(features), encoder.frame_features(wave), atol=1e-5, rtol=0)
    assert features.shape[encoder.freq_axis] in (64, 128) and features.shape[encoder.time_axis] > 64


def test_unknown_name_is_rejected() -> None:
    with pytest.raises(KeyError, match="sed_atst"):
        build("sed_beats")


# --- checkpoints and rebuilding ----------------------------------------------------------------------------


def test_encoder_checkpoint_is_loaded_strictly(tmp_path: Path) -> None:
    from audiopipe.models import atst

    torch.manual_seed(3)
    source = atst.build("atst_demo", dim=32, depth=1, num_heads=2)
    official = {"state_dict": {f"encoder.encoder.{k}": v for k, v in source.state_dict().items()}}
    torch.save(official, tmp_path / "atst_as2M.ckpt")
    fused = build(
        "sed_atst", **TINY_ATST, encoder_checkpoint=str(tmp_path / "atst_as2M.ckpt"), freeze_encoder=True, **TINY_CRNN
    )
    torch.testing.assert_close(fused.state_dict()["atst_frame.atst.pos_embed"], source.pos_embed.detach())
    assert not any(p.requires_grad for p in fused.atst_frame.parameters())
    assert "encoder_checkpoint" not in fused.builder_kwargs


def test_strict_round_trip_through_load_model(model: SEDModel, tmp_path: Path) -> None:
    model.eval()
    payload = {
        "builder": "sed_atst",
        "builder_kwargs": model.builder_kwargs,
        "model": model.state_dict(),
        "class_names": [f"c{i}" for i in range(10)],
        "sample_rate": model.sample_rate,
        "config": {},
        "metrics": {},
    }
    save_checkpoint(tmp_path / "model.pt", payload)
    rebuilt, _ = load_model(tmp_path / "model.pt")
    wave = 0.1 * torch.randn(2, SR)
    torch.testing.assert_close(rebuilt(wave), model(wave))


def test_registry_dispatches_sed_names() -> None:
    assert isinstance(build_model("sed_crnn", **TINY_CRNN), sed_module.SEDModel)


def test_eat_encoder_checkpoint_from_our_payload(tmp_path: Path) -> None:
    from audiopipe.models.eat.encoder import EATEncoder

    torch.manual_seed(4)
    source = EATEncoder(embed_dim=32, depth=1, num_heads=4)
    state = {f"encoder.{k}": v for k, v in source.state_dict().items()} | {"decoder.proj.weight": torch.zeros(2)}
    save_checkpoint(tmp_path / "eat.pt", {"builder": "eat_pretrainer", "builder_kwargs": {}, "model": state})
    fused = build(
        "sed_eat",
        encoder_preset="eat_demo",
        encoder_kwargs={"embed_dim": 32, "depth": 1, "num_heads": 4},
        encoder_checkpoint=tmp_path / "eat.pt",
        **TINY_CRNN,
    )
    torch.testing.assert_close(fused.state_dict()["eat_frame.eat.cls_token"], source.cls_token.detach())


def test_eat_encoder_checkpoint_from_a_finetune_eat_tagger(tmp_path: Path) -> None:
    """The demo DAG feeds `finetune_eat`'s tagger (data/finetune_eat/eat_tagger.pt) to ATST-SED as its frame encoder:
    its `encoder.*` weights load strictly, the tagger's head and front end are left out."""
    tiny = {"embed_dim": 32, "depth": 1, "num_heads": 4}
    torch.manual_seed(5)
    tagger = build_model("eat_tagger", size="eat_demo", n_classes=3, sample_rate=16000, target_frames=64, **tiny)
    payload = {"builder": "eat_tagger", "builder_kwargs": {}, "model": tagger.state_dict()}
    save_checkpoint(tmp_path / "eat_tagger.pt", payload)
    fused = build("sed_eat", encoder_preset="eat_demo", encoder_kwargs=tiny,
                  encoder_checkpoint=tmp_path / "eat_tagger.pt", **TINY_CRNN)
    fused_state = fused.state_dict()
    for key, value in tagger.encoder.state_dict().items():
        torch.testing.assert_close(fused_state[f"eat_frame.eat.{key}"], value)
