"""Tests for audiopipe.models.atst: front end, FrameAST encoder, presets and the official-checkpoint loader."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
import torchaudio

from audiopipe.models import atst
from audiopipe.models.atst.checkpoint import load_atst_checkpoint, map_atst_keys
from audiopipe.models.atst.encoder import FrameAST
from audiopipe.models.atst.frontend import ATST_NORM_MAX_DB, ATST_NORM_MIN_DB, ATSTFrontEnd
from audiopipe.storage import CheckpointError

GOLDEN = Path(__file__).parents[1] / "golden" / "atst_keys.json"
SR = 16000


def tiny_encoder(**kwargs: object) -> FrameAST:
    torch.manual_seed(0)
    return atst.build("atst_demo", **{"dim": 32, "depth": 2, "num_heads": 2, **kwargs})


# --- presets and state-dict layout -------------------------------------------------------------------------


def test_base_parameter_count_is_exact() -> None:
    with torch.device("meta"):  # no memory, no init cost
        encoder = atst.build("atst_base")
    assert sum(p.numel() for p in encoder.parameters()) == 85_419_264
    assert len(encoder.state_dict()) == 138


def test_base_keys_and_shapes_match_spec_golden() -> None:
    golden = {key: tuple(shape) for key, shape in json.loads(GOLDEN.read_text())["keys"]}
    with torch.device("meta"):
        encoder = atst.build("atst_base")
    assert {k: tuple(v.shape) for k, v in encoder.state_dict().items()} == golden


def test_demo_preset_is_small_with_base_patching() -> None:
    encoder = atst.build("atst_demo")
    assert (encoder.dim, len(encoder.blocks)) == (96, 2)
    assert encoder.patch_embed.patch_embed.in_features == 64 * 4
    assert encoder.pos_embed.shape == (1, 251, 96)


def test_unknown_preset_is_rejected() -> None:
    with pytest.raises(KeyError, match="atst_demo"):
        atst.build("atst_huge")


# --- front end ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "samples"), [(1, SR), (3, 5 * SR), (1, 10 * SR), (3, SR + 77)])
def test_frontend_frame_count(batch: int, samples: int) -> None:
    mel = ATSTFrontEnd()(0.1 * torch.randn(batch, samples))
    assert mel.shape == (batch, 64, 1 + samples // 160)
    assert torch.isfinite(mel).all()


def test_ten_seconds_give_1001_mel_frames() -> None:
    assert ATSTFrontEnd()(torch.zeros(1, 10 * SR)).shape[-1] == 1001


def test_frontend_matches_torchaudio_atst_sed_pipeline() -> None:
    """Parity with the reference recipe: torchaudio MelSpectrogram + AmplitudeToDB(top_db 80) + clamp + affine."""
    wave = 0.3 * torch.randn(2, SR)
    mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=1024, hop_length=160, f_min=60, f_max=7800, n_mels=64)(wave)
    db = torchaudio.transforms.AmplitudeToDB("power", top_db=80)(mel).clamp(-50, 80)
    expected = 2 * (db - ATST_NORM_MIN_DB) / (ATST_NORM_MAX_DB - ATST_NORM_MIN_DB) - 1
    torch.testing.assert_close(ATSTFrontEnd()(wave), expected, rtol=1e-5, atol=1e-5)


def test_silence_maps_to_clamped_floor() -> None:
    floor = 2 * (-50 - ATST_NORM_MIN_DB) / (ATST_NORM_MAX_DB - ATST_NORM_MIN_DB) - 1
    torch.testing.assert_close(ATSTFrontEnd()(torch.zeros(1, SR)), torch.full((1, 64, 101), floor))
    assert floor == pytest.approx(-0.5450, abs=1e-4)


def test_top_db_floor_is_batch_wide_or_per_clip() -> None:
    t = torch.arange(SR) / SR
    loud = torch.sin(2 * torch.pi * 1000 * t)  # peaks near +48 dB: the 80-dB floor (-32 dB) beats the clamp
    quiet = 1e-3 * torch.randn(SR)
    batch = torch.stack([loud, quiet])
    batch_fe, clip_fe = ATSTFrontEnd(top_db_scope="batch"), ATSTFrontEnd(top_db_scope="clip")
    assert not torch.allclose(batch_fe(batch)[1], batch_fe(quiet[None])[0])  # ATST-SED: depends on the batch
    torch.testing.assert_close(clip_fe(batch)[1], clip_fe(quiet[None])[0])


def test_frontend_rejects_bad_scope() -> None:
    with pytest.raises(ValueError, match="top_db_scope"):
        ATSTFrontEnd(top_db_scope="global")


# --- encoder -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "frames"), [(1, 101), (3, 501), (1, 1001), (3, 1003)])
def test_encoder_frame_shapes(batch: int, frames: int) -> None:
    out = tiny_encoder().eval().frame_features(torch.randn(batch, 64, frames))
    assert out.shape == (batch, frames // 4, 32)
    assert torch.isfinite(out).all()


def test_ten_seconds_give_250_encoder_frames() -> None:
    mel = ATSTFrontEnd()(0.1 * torch.randn(1, 10 * SR))
    assert tiny_encoder().eval().frame_features(mel).shape == (1, 250, 32)


def test_accepts_official_four_dim_layout() -> None:
    encoder, mel = tiny_encoder().eval(), torch.randn(2, 64, 101)
    torch.testing.assert_close(encoder(mel.unsqueeze(1)), encoder(mel))


@pytest.mark.parametrize("frames", [3, 1005])
def test_encoder_rejects_too_short_or_too_long_inputs(frames: int) -> None:
    with pytest.raises(ValueError, match="tokens"):
        tiny_encoder().frame_features(torch.randn(1, 64, frames))


def test_patches_are_flattened_frequency_major() -> None:
    encoder = FrameAST(dim=256, depth=0, num_heads=1)
    with torch.no_grad():
        encoder.patch_embed.patch_embed.weight.copy_(torch.eye(256))
        encoder.patch_embed.patch_embed.bias.zero_()
    mel = torch.zeros(1, 64, 8)
    mel[0, 5, 4 + 2] = 1.0  # f = 5, t = 2 inside the second patch
    tokens = encoder.patch_embed(mel)
    assert tokens.shape == (1, 2, 256)
    assert tokens[0, 0].abs().sum() == 0 and tokens[0, 1].argmax().item() == 5 * 4 + 2


def test_positions_use_rows_one_to_n() -> None:
    encoder = FrameAST(dim=16, depth=0, num_heads=1).eval()
    with torch.no_grad():
        encoder.patch_embed.patch_embed.weight.zero_()
        encoder.patch_embed.patch_embed.bias.zero_()
    out = encoder.frame_features(torch.randn(1, 64, 12))  # 3 tokens
    torch.testing.assert_close(out, encoder.norm_frame(encoder.pos_embed[:, 1:4]))


def test_gradient_reaches_every_used_parameter() -> None:
    encoder = tiny_encoder(drop=0.1, drop_path=0.1).train()
    encoder.frame_features(torch.randn(2, 64, 101)).square().mean().backward()
    missing = {name for name, p in encoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    assert missing == {"mask_embed"}  # pre-training only, kept for checkpoint parity


def test_eval_mode_is_deterministic() -> None:
    encoder, mel = tiny_encoder(drop=0.2, drop_path=0.2).eval(), torch.randn(2, 64, 101)
    torch.testing.assert_close(encoder(mel), encoder(mel))


def test_layer_groups_cover_parameters_top_down() -> None:
    encoder = tiny_encoder()
    groups = encoder.layer_groups()
    assert len(groups) == len(encoder.blocks) + 2
    assert groups[0][0] is encoder.norm_frame.weight and groups[1][0] is encoder.blocks[-1].norm1.weight
    assert sum(len(g) for g in groups) == len(list(encoder.parameters()))


# --- checkpoint loader -------------------------------------------------------------------------------------


def _official_layout(source: FrameAST, kind: str) -> dict[str, object]:
    """A checkpoint laid out like the official files, holding `source`'s tensors plus decoys."""
    state = {k: v.clone() for k, v in source.state_dict().items()}
    decoy = torch.full((3,), 7.0)
    if kind == "finetuned":  # audiossl FineTuningPLModule, the atst_as2M.ckpt case
        sd = {f"encoder.encoder.{k}": v for k, v in state.items()}
        sd |= {"head.linear.weight": torch.zeros(527, 32), "encoder.encoder.blocks.0.total_ops": decoy}
    elif kind == "pretrain":  # audiossl FrameATSTLightningModule teacher, ATST-Clip-style final norm name
        sd = {f"model.teacher.encoder.{k}": v for k, v in state.items() if not k.startswith("norm_frame")}
        sd |= {
            "model.teacher.encoder.norm.weight": state["norm_frame.weight"],
            "model.teacher.encoder.norm.bias": state["norm_frame.bias"],
            "model.teacher.encoder.cls_token": decoy,
            "model.student.encoder.pos_embed": decoy,
        }
    else:  # ATST-C2F distillation
        sd = {f"encoder.encoder.frame_encoder.{k}": v for k, v in state.items()}
        sd |= {"encoder.encoder.teacher_module.pos_embed": decoy}
    return {"state_dict": sd, "epoch": 3, "global_step": 100}


@pytest.mark.parametrize("kind", ["finetuned", "pretrain", "c2f"])
def test_loader_strips_official_prefixes(tmp_path: Path, kind: str) -> None:
    source = tiny_encoder()
    path = tmp_path / "atst.ckpt"
    torch.save(_official_layout(source, kind), path)
    torch.manual_seed(1)
    target = load_atst_checkpoint(FrameAST(dim=32, depth=2, num_heads=2), path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value, msg=key)


def test_map_keys_ignores_heads_and_other_modules() -> None:
    mapped = map_atst_keys(
        {
            "head.linear.weight": torch.zeros(1),
            "model.student.encoder.pos_embed": torch.zeros(1),
            "encoder.encoder.pos_embed": torch.ones(1),
        }
    )
    assert list(mapped) == ["pos_embed"]


def test_loader_lists_missing_and_unexpected_keys(tmp_path: Path) -> None:
    payload = _official_layout(tiny_encoder(), "finetuned")
    state = payload["state_dict"]
    assert isinstance(state, dict)
    del state["encoder.encoder.norm_frame.bias"]
    state["encoder.encoder.extra_token"] = torch.zeros(1)
    torch.save(payload, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match=r"norm_frame\.bias(.|\n)*extra_token"):
        load_atst_checkpoint(FrameAST(dim=32, depth=2, num_heads=2), tmp_path / "bad.ckpt")


def test_loader_rejects_file_without_encoder(tmp_path: Path) -> None:
    torch.save({"state_dict": {"head.weight": torch.zeros(2)}}, tmp_path / "head.ckpt")
    with pytest.raises(CheckpointError, match="no ATST-Frame encoder tensors"):
        load_atst_checkpoint(FrameAST(dim=32, depth=2, num_heads=2), tmp_path / "head.ckpt")


def test_strict_save_load_round_trip(tmp_path: Path) -> None:
    source = tiny_encoder().eval()
    torch.save(source.state_dict(), tmp_path / "plain.pt")
    loaded = atst.build("atst_demo", dim=32, depth=2, num_heads=2, checkpoint=tmp_path / "plain.pt").eval()
    mel = torch.randn(1, 64, 101)
    torch.testing.assert_close(loaded(mel), source(mel))


def test_loader_reads_lightning_file_with_pickled_hyper_parameters(tmp_path: Path) -> None:
    source = tiny_encoder()
    payload = _official_layout(source, "finetuned")
    payload["hyper_parameters"] = argparse.Namespace(lr=1e-4)  # Lightning pickles such objects
    torch.save(payload, tmp_path / "lightning.ckpt")
    target = load_atst_checkpoint(FrameAST(dim=32, depth=2, num_heads=2), tmp_path / "lightning.ckpt")
    torch.testing.assert_close(target.pos_embed, source.pos_embed)
