"""Unit tests for audiopipe.models.eat: front end, encoder, decoder, masking, pre-trainer, tagger, loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audiopipe.models.eat import NAMES, build
from audiopipe.models.eat.checkpoint import convert_state_dict, load_official
from audiopipe.models.eat.decoder import Decoder2d
from audiopipe.models.eat.encoder import EATEncoder, sincos_2d
from audiopipe.models.eat.frontend import EATFrontEnd, num_frames
from audiopipe.models.eat.masking import clone_masks, compute_block_mask_2d
from audiopipe.models.eat.pretraining import EATPretrainer
from audiopipe.models.eat.tagger import EATTagger, param_groups_layer_decay
from audiopipe.storage import CheckpointError

DEMO = {"embed_dim": 32, "depth": 2, "num_heads": 4}


@pytest.fixture
def encoder() -> EATEncoder:
    torch.manual_seed(0)
    return EATEncoder(**DEMO)


@pytest.fixture
def pretrainer() -> EATPretrainer:
    torch.manual_seed(0)
    return EATPretrainer(**DEMO, decoder_channels=32, decoder_depth=2, clones=3)


def spectrogram(batch: int, frames: int) -> torch.Tensor:
    return torch.randn(batch, 1, frames, 128)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize(("samples", "frames"), [(160_000, 998), (80_000, 498), (16_000, 98), (400, 1), (399, 0)])
def test_frame_count_formula(samples: int, frames: int) -> None:
    assert num_frames(samples) == frames


def test_ten_seconds_give_998_fbank_frames_padded_to_1024() -> None:
    frontend = EATFrontEnd(input_sample_rate=16000, target_frames=1024)
    waveform = torch.rand(1, 160_000) - 0.5
    assert frontend.fbank(waveform).shape == (1, 998, 128)
    out = frontend(waveform)
    assert out.shape == (1, 1, 1024, 128)
    padded = (0.0 - frontend.norm_mean) / (2 * frontend.norm_std)  # zeros padded before normalising
    torch.testing.assert_close(out[0, 0, 998:], torch.full((26, 128), padded))


@pytest.mark.parametrize(("batch", "samples", "target", "frames"),
                         [(1, 16_000, 1024, 1024), (3, 12_345, 1024, 1024), (3, 16_000, None, 112),
                          (1, 80_000, None, 512), (2, 16_000, 64, 64)])
def test_front_end_shapes(batch: int, samples: int, target: int | None, frames: int) -> None:
    out = EATFrontEnd(16000, target_frames=target)(torch.rand(batch, samples) - 0.5)
    assert out.shape == (batch, 1, frames, 128)
    assert torch.isfinite(out).all()


def test_front_end_resamples_and_removes_dc() -> None:
    at_32k = EATFrontEnd(32000, target_frames=None)
    waveform = 0.1 * torch.randn(2, 32_000)
    out = at_32k(waveform)
    assert out.shape == (2, 1, 112, 128)  # 1 s -> 98 frames at 16 kHz, rounded up to 112
    at_16k = EATFrontEnd(16000, target_frames=None)
    torch.testing.assert_close(at_16k(waveform + 0.2), at_16k(waveform), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("samples", [400, 16_000, 160_000 + 123])
def test_batched_fbank_equals_the_per_clip_kaldi_call(samples: int) -> None:
    from torchaudio.compliance import kaldi

    from audiopipe.models.eat.frontend import kaldi_fbank

    waveform = 0.1 * torch.randn(3, samples, generator=torch.Generator().manual_seed(samples))
    waveform = waveform - waveform.mean(dim=-1, keepdim=True)
    per_clip = torch.stack([
        kaldi.fbank(clip.unsqueeze(0), htk_compat=True, sample_frequency=16000, use_energy=False,
                    window_type="hanning", num_mel_bins=128, dither=0.0, frame_length=25.0, frame_shift=10.0)
        for clip in waveform
    ])
    torch.testing.assert_close(kaldi_fbank(waveform), per_clip, rtol=0, atol=1e-5)


def test_front_end_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="multiple"):
        EATFrontEnd(16000, target_frames=1000)
    with pytest.raises(ValueError, match="too short"):
        EATFrontEnd(16000)(torch.zeros(1, 100))


def test_positional_table_halves_encode_frequency_then_time() -> None:
    table = sincos_2d(32, 4, 8).view(4, 8, 32)  # (t, f, D)
    assert torch.equal(table[:, :, :16], table[:1, :, :16].expand(4, -1, -1))  # first half: f only
    assert torch.equal(table[:, :, 16:], table[:, :1, 16:].expand(-1, 8, -1))  # second half: t only
    # p = 0 -> sin = 0, cos = 1
    torch.testing.assert_close(table[0, 0], torch.cat([torch.zeros(8), torch.ones(8)] * 2))


def test_positional_table_supports_variable_length(encoder: EATEncoder) -> None:
    short = sincos_2d(32, 7, 8)
    torch.testing.assert_close(encoder.pos_embed[0, : short.shape[0]], short)  # prefix of the 768-row table
    assert encoder.pos_embed.shape == (1, 768 * 8, 32)
    assert "pos_embed" not in encoder.state_dict()  # fixed, regenerated, never trained
    with pytest.raises(ValueError, match="positional table"):
        EATEncoder(**DEMO, max_time_patches=4)(spectrogram(1, 80))


@pytest.mark.parametrize(("batch", "frames"), [(1, 112), (3, 512), (1, 1024), (3, 48)])
def test_encoder_token_shapes(encoder: EATEncoder, batch: int, frames: int) -> None:
    out = encoder.eval()(spectrogram(batch, frames))
    assert out.shape == (batch, 1 + (frames // 16) * 8, 32)
    assert torch.isfinite(out).all()


def test_waveform_to_tokens_for_ten_seconds(encoder: EATEncoder) -> None:
    spec = EATFrontEnd(16000, target_frames=1024)(torch.rand(1, 160_000) - 0.5)
    assert encoder.eval()(spec).shape == (1, 513, 32)


def test_encoder_output_is_post_layer_normed(encoder: EATEncoder) -> None:
    out = encoder.eval()(spectrogram(2, 64))  # norm2 of the last block is the final normalisation
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 33), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(-1, unbiased=False), torch.ones(2, 33), atol=1e-3, rtol=0)


def test_extract_features(encoder: EATEncoder) -> None:
    spec = spectrogram(3, 96)
    utterance, frames = encoder.eval().extract_features(spec)
    tokens = encoder(spec)
    assert utterance.shape == (3, 32) and frames.shape == (3, 6, 32)
    torch.testing.assert_close(utterance, tokens[:, 0])
    torch.testing.assert_close(frames[:, 2], tokens[:, 1 + 16 : 1 + 24].mean(1))  # time patch 2 = rows 16..23


def test_encode_visible_matches_masked_forward(encoder: EATEncoder) -> None:
    spec = spectrogram(2, 64)  # N = 32 patches
    masks = clone_masks(2, 3, (4, 8), mask_ratio=0.75)
    encoder.eval()
    student = encoder.encode_visible(spec, masks.keep_index)
    assert student.shape == (6, 1 + 8, 32)
    per_clone = encoder(spec.repeat_interleave(3, dim=0), mask=masks.mask)  # clip-major clones
    torch.testing.assert_close(student, per_clone)
    _, layers = encoder.forward_layers(spec)
    assert len(layers) == 2 and layers[0].shape == (2, 33, 32)


def test_encoder_gradients_and_determinism(encoder: EATEncoder) -> None:
    encoder.train()(spectrogram(2, 32)).square().mean().backward()
    assert not [n for n, p in encoder.named_parameters() if p.grad is None]
    x = spectrogram(2, 32)
    encoder.eval()
    torch.testing.assert_close(encoder(x), encoder(x))


@pytest.mark.parametrize(("size", "encoder_params", "decoder_params", "block_params"),
                         [("eat_base", 85_254_144, 2_585_856, 7_087_872),
                          ("eat_large", 302_575_616, 5_967_872, 12_596_224)])
def test_published_parameter_counts(size: str, encoder_params: int, decoder_params: int, block_params: int) -> None:
    with torch.device("meta"):  # shapes only, no memory or forward pass
        model = build("eat_pretrainer", size=size)
    assert count(model.encoder) == encoder_params
    assert count(model.encoder.blocks[0]) == block_params
    assert count(model.decoder) == decoder_params
    assert count(model) == encoder_params + decoder_params  # 87.84 M / 308.54 M; teacher not trainable
    assert model.encoder.pos_embed.shape[1] == 6144


def test_base_state_dict_shapes_match_the_official_layout() -> None:
    with torch.device("meta"):
        state = build("eat_pretrainer", size="eat_base").state_dict()
    assert state["encoder.patch_embed.proj.weight"].shape == (768, 1, 16, 16)
    assert state["encoder.cls_token"].shape == (1, 1, 768)
    assert state["encoder.blocks.11.attn.qkv.weight"].shape == (2304, 768)
    assert state["encoder.blocks.11.mlp.fc1.weight"].shape == (3072, 768)
    assert state["decoder.convs.5.weight"].shape == (768, 48, 3, 3)
    assert state["decoder.proj.weight"].shape == (768, 768)
    assert "ema_teacher.module.blocks.11.norm2.bias" in state and "ema_teacher.module.decoder" not in str(state)


def test_decoder_shapes_and_official_conv_shapes() -> None:
    decoder = Decoder2d(embed_dim=32, channels=32, depth=3, kernel_size=5)
    assert decoder.convs[0].weight.shape == (32, 2, 5, 5)  # groups 16
    out = decoder(torch.randn(2, 7 * 8, 32))
    assert out.shape == (2, 56, 32) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="grid"):
        decoder(torch.randn(2, 12, 32))


@pytest.mark.parametrize(("ratio", "adjust", "visible"), [(0.8, 0.07, 102), (0.75, 0.1, 128)])
def test_mask_counts_are_equal_per_row(ratio: float, adjust: float, visible: int) -> None:
    masks = compute_block_mask_2d(16, (64, 8), mask_ratio=ratio, mask_prob_adjust=adjust)
    assert masks.keep_index.shape == (16, visible) and masks.mask_index.shape == (16, 512 - visible)
    assert (masks.mask.sum(1) == 512 - visible).all()
    union = torch.cat([masks.keep_index, masks.mask_index], dim=1).sort(dim=1).values
    assert torch.equal(union, torch.arange(512).expand(16, -1))  # disjoint and complete
    assert (masks.keep_index.diff(dim=1) > 0).all()  # ascending
    assert not masks.mask.gather(1, masks.keep_index).any()


def test_masks_differ_between_clones_and_are_seedable() -> None:
    first = clone_masks(2, 4, (64, 8), generator=torch.Generator().manual_seed(1))
    again = clone_masks(2, 4, (64, 8), generator=torch.Generator().manual_seed(1))
    assert torch.equal(first.keep_index, again.keep_index)
    assert len({tuple(row.tolist()) for row in first.keep_index}) == 8


def test_visible_patches_form_blocks() -> None:
    # Visible cells come from 5x5 squares, so most have a visible time neighbour (random masks: ~20 %).
    mask = compute_block_mask_2d(64, (64, 8)).mask.view(64, 64, 8)
    visible = ~mask
    neighbour = visible[:, 1:] & visible[:, :-1]
    assert neighbour.sum() / visible[:, 1:].sum() > 0.5


def test_mask_ratio_must_leave_patches() -> None:
    with pytest.raises(ValueError, match="visible"):
        compute_block_mask_2d(1, (2, 8), mask_ratio=0.99)


def test_pretrainer_loss_and_gradients(pretrainer: EATPretrainer) -> None:
    out = pretrainer.train()(spectrogram(2, 64))
    assert set(out) == {"loss", "frame_loss", "utterance_loss"}
    assert all(v.shape == () and torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    trainable = [n for n, p in pretrainer.named_parameters() if p.requires_grad]
    assert all(n.startswith(("encoder.", "decoder.")) for n in trainable)
    assert not [n for n in trainable if pretrainer.get_parameter(n).grad is None]
    teacher = list(pretrainer.ema_teacher.module.parameters())
    assert teacher and all(not p.requires_grad and p.grad is None for p in teacher)
    assert not pretrainer.ema_teacher.module.training


def test_pretrainer_targets_and_masks(pretrainer: EATPretrainer) -> None:
    spec = spectrogram(2, 64)
    targets = pretrainer.targets(spec)
    assert targets.shape == (2, 32, 32)
    keep, masked, _ = pretrainer.make_masks(spec)
    assert keep.shape == (6, 6) and masked.shape == (6, 26)  # int(32 * 0.2) = 6 visible per clone
    torch.manual_seed(3)
    first = pretrainer(spec, keep, masked)["loss"]
    torch.manual_seed(3)
    torch.testing.assert_close(pretrainer(spec, keep, masked)["loss"], first)


def test_dense_baseline_computes_the_same_objective(pretrainer: EATPretrainer) -> None:
    spec = spectrogram(2, 64)
    keep, masked, _ = pretrainer.make_masks(spec)
    out = pretrainer.dense_baseline_step(spec, keep, masked)
    assert set(out) == {"loss", "frame_loss", "utterance_loss"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert pretrainer.encoder.blocks[0].attn.qkv.weight.grad is not None


def test_ema_schedule_and_update(pretrainer: EATPretrainer) -> None:
    assert pretrainer.ema_decay(0) == pytest.approx(0.9998)
    assert pretrainer.ema_decay(50_000) == pytest.approx((0.9998 + 0.99999) / 2)
    assert pretrainer.ema_decay(100_000) == pretrainer.ema_decay(10**6) == pytest.approx(0.99999)
    teacher_before = pretrainer.ema_teacher.module.cls_token.clone()
    with torch.no_grad():
        pretrainer.encoder.cls_token.add_(1.0)
    decay = pretrainer.ema_update(step=0)
    expected = decay * teacher_before + (1 - decay) * pretrainer.encoder.cls_token
    torch.testing.assert_close(pretrainer.ema_teacher.module.cls_token, expected)


@pytest.fixture
def tagger() -> EATTagger:
    torch.manual_seed(0)
    return EATTagger(n_classes=5, sample_rate=32000, **DEMO, target_frames=112)


@pytest.mark.parametrize(("batch", "samples"), [(1, 32_000), (3, 20_001)])
def test_tagger_logit_shapes(tagger: EATTagger, batch: int, samples: int) -> None:
    logits = tagger.eval()(torch.rand(batch, samples) - 0.5)
    assert logits.shape == (batch, 5) and torch.isfinite(logits).all()
    assert tagger.sample_rate == 32000


def test_tagger_gradients_and_determinism(tagger: EATTagger) -> None:
    wave = torch.rand(2, 16_000) - 0.5
    tagger.train()(wave).sum().backward()
    assert not [n for n, p in tagger.named_parameters() if p.grad is None]
    tagger.eval()
    torch.testing.assert_close(tagger(wave), tagger(wave))


def test_layer_decay_groups(tagger: EATTagger) -> None:
    groups = param_groups_layer_decay(tagger, lr=1e-3, layer_decay=0.5, weight_decay=0.05)
    by_name = {g["name"]: g for g in groups}
    assert by_name["block_0"]["lr"] == pytest.approx(1e-3 * 0.5**2)
    assert by_name["block_1"]["lr"] == pytest.approx(1e-3 * 0.5)
    assert by_name["rest"]["lr"] == pytest.approx(1e-3)  # patch conv, CLS, pre-norm, fc_norm, head
    assert all(g["weight_decay"] == 0.05 for g in groups)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in tagger.parameters()) and len(set(grouped)) == len(grouped)


@pytest.mark.parametrize("name", NAMES)
def test_every_name_builds(name: str) -> None:
    kwargs = {"n_classes": 3, "sample_rate": 16000} if name == "eat_tagger" else {}
    with torch.device("meta"):
        model = build(name, **kwargs)
    assert count(model) > 0
    with pytest.raises(KeyError):
        build("eat_unknown")


FAIRSEQ = "modality_encoders.IMAGE."
WB = ("weight", "bias")


def fairseq_encoder_keys(state: dict[str, torch.Tensor], table_rows: int | None) -> dict[str, torch.Tensor]:
    """Our encoder state laid out with fairseq EAT key names (spec §2.6 table), optional stored table."""
    out = {f"{FAIRSEQ}local_encoder.proj.{k}": state[f"patch_embed.proj.{k}"] for k in WB}
    out[f"{FAIRSEQ}extra_tokens"] = state["cls_token"]
    if table_rows:
        out[f"{FAIRSEQ}fixed_positional_encoder.positions"] = sincos_2d(32, 768, 8)[:table_rows].unsqueeze(0)
    out.update({f"{FAIRSEQ}context_encoder.norm.{k}": state[f"norm_pre.{k}"] for k in WB})
    out.update({k: v for k, v in state.items() if k.startswith("blocks.")})
    return out


def official_pretrained(model: EATPretrainer, table_rows: int) -> dict[str, object]:
    """Our pre-trainer's weights laid out as a fairseq EAT pre-training checkpoint, `_ema` teacher included."""
    raw: dict[str, object] = dict(fairseq_encoder_keys(model.encoder.state_dict(), table_rows))
    for j, conv in enumerate(model.decoder.convs):
        raw[f"{FAIRSEQ}decoder.blocks.{j}.0.weight"] = conv.weight
        raw[f"{FAIRSEQ}decoder.blocks.{j}.0.bias"] = conv.bias
    raw[f"{FAIRSEQ}decoder.proj.weight"] = model.decoder.proj.weight
    raw[f"{FAIRSEQ}decoder.proj.bias"] = model.decoder.proj.bias
    raw["_ema"] = fairseq_encoder_keys(model.ema_teacher.module.state_dict(), table_rows)
    return {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in raw.items()}


@pytest.mark.parametrize("table_rows", [512, 6144])  # old and new fairseq positional tables
def test_fairseq_pretrained_layout_loads_strict(pretrainer: EATPretrainer, table_rows: int) -> None:
    with torch.no_grad():
        pretrainer.ema_teacher.module.cls_token.add_(1.0)  # teacher differs from the student
    raw = official_pretrained(pretrainer, table_rows)
    torch.manual_seed(1)
    fresh = EATPretrainer(**DEMO, decoder_channels=32, decoder_depth=2, clones=3)
    load_official(fresh, raw)
    for key, value in pretrainer.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value, msg=key)
    encoder = EATEncoder(**DEMO)
    load_official(encoder, raw)  # decoder and teacher are ignored, student weights used
    torch.testing.assert_close(encoder.cls_token, pretrainer.encoder.cls_token)


def test_fine_tuned_and_hf_layouts_load_into_the_tagger(tagger: EATTagger) -> None:
    ours = tagger.state_dict()
    fairseq = {"model." + k: v for k, v in official_pretrained_encoder(ours).items()}
    fairseq.update({k: ours[k] for k in ("fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias")})
    hf = {k.replace("modality_encoders.IMAGE.", "").replace("context_encoder.norm", "pre_norm"): v
          for k, v in fairseq.items()}
    hf.update({"model." + k: ours[k] for k in ("fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias")})
    for raw in (fairseq, hf):
        torch.manual_seed(2)
        fresh = EATTagger(n_classes=5, sample_rate=32000, **DEMO, target_frames=112)
        load_official(fresh, raw)
        for key, value in ours.items():
            torch.testing.assert_close(fresh.state_dict()[key], value, msg=key)


def test_hf_safetensors_file_loads_into_the_tagger(tagger: EATTagger, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    ours = tagger.state_dict()
    hf = {k.replace("modality_encoders.IMAGE.", "").replace("context_encoder.norm", "pre_norm"): v
          for k, v in official_pretrained_encoder(ours).items()}
    hf = {"model." + k: v for k, v in hf.items()}
    hf.update({"model." + k: ours[k] for k in ("fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias")})
    path = tmp_path / "model.safetensors"
    save_file({k: v.detach().clone().contiguous() for k, v in hf.items()}, str(path))
    torch.manual_seed(2)
    fresh = EATTagger(n_classes=5, sample_rate=32000, **DEMO, target_frames=112)
    load_official(fresh, path)
    for key, value in ours.items():
        torch.testing.assert_close(fresh.state_dict()[key], value, msg=key)


def official_pretrained_encoder(tagger_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    encoder = {k.removeprefix("encoder."): v for k, v in tagger_state.items() if k.startswith("encoder.")}
    return fairseq_encoder_keys(encoder, table_rows=None)


def test_loader_errors_list_the_offending_keys(tagger: EATTagger) -> None:
    raw = official_pretrained_encoder(tagger.state_dict())
    with pytest.raises(CheckpointError, match="not in any known EAT layout.*mystery"):
        load_official(tagger.encoder, {**raw, "mystery.weight": torch.zeros(1)})
    del raw["blocks.1.mlp.fc2.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): blocks.1.mlp.fc2.bias"):
        load_official(tagger.encoder, raw)
    swapped = sincos_2d(32, 64, 8).roll(16, dims=1).unsqueeze(0)  # time/frequency halves exchanged
    with pytest.raises(CheckpointError, match="positional table"):
        convert_state_dict({"modality_encoders.IMAGE.fixed_positional_encoder.positions": swapped})


class FakeFairseqConfig:
    """Stands in for the omegaconf config that fairseq pickles next to the weights."""

    def __init__(self) -> None:
        self.task = {"_name": "mae_image_pretraining"}


def test_fairseq_file_with_pickled_config_loads_without_running_it(pretrainer: EATPretrainer, tmp_path) -> None:
    path = tmp_path / "EAT-base_epoch10_pt.pt"
    torch.save({"model": official_pretrained(pretrainer, 512), "cfg": FakeFairseqConfig()}, path)
    fresh = EATPretrainer(**DEMO, decoder_channels=32, decoder_depth=2, clones=3)
    load_official(fresh, path)
    torch.testing.assert_close(fresh.decoder.proj.weight, pretrainer.decoder.proj.weight)


def test_strict_save_load_round_trip(tagger: EATTagger, tmp_path) -> None:
    from audiopipe.models import load_model
    from audiopipe.storage import save_checkpoint

    kwargs = {"size": "eat_demo", "n_classes": 5, "sample_rate": 32000, "target_frames": 112}
    torch.manual_seed(4)
    model = build("eat_tagger", **kwargs).eval()
    payload = {"builder": "eat_tagger", "builder_kwargs": kwargs, "model": model.state_dict(),
               "class_names": list("abcde"), "sample_rate": 32000, "config": {}, "metrics": {}}
    save_checkpoint(tmp_path / "eat_tagger.pt", payload)
    loaded, _ = load_model(tmp_path / "eat_tagger.pt")
    wave = torch.rand(1, 8000) - 0.5
    torch.testing.assert_close(loaded(wave), model(wave))
