"""Unit tests for audiopipe.models.mobilenet: published sizes, official key layout, shapes, gradients, loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from audiopipe.models import build_model
from audiopipe.models.mobilenet import NAMES, MobileNetTagger, MobileNetV3, build, load_official_weights, tagger_kwargs
from audiopipe.models.mobilenet.blocks import make_divisible
from audiopipe.models.mobilenet.model import block_configs
from audiopipe.storage import CheckpointError

GOLDEN = Path(__file__).parents[1] / "golden" / "mobilenet_mn10_keys.json"

# spec efficientat.md §2.6: exact parameter counts, 527 classes, MLP head unless noted
PARAM_COUNTS = {
    "mn01_as": 123_783,
    "mn02_as": 324_695,
    "mn04_as": 983_599,
    "mn05_as": 1_431_239,
    "mn06_as": 1_947_583,
    "mn08_as": 3_246_647,
    "mn10_as": 4_876_831,
    "mn12_as": 6_836_831,
    "mn14_as": 9_140_807,
    "mn16_as": 11_710_071,
    "mn20_as": 17_909_287,
    "mn30_as": 39_086_367,
    "mn40_as": 68_427_303,
    "mn10_as_fc": 3_478_638,
    "mn10_as_fc_s2221": 3_478_638,
    "mn10_as_fc_s2211": 3_478_638,
    "mn10_as_hop_15": 4_876_831,
    "mn10_as_mels_256": 4_876_831,
    "mn40_as_ext": 68_427_303,
}


def _meta_build(name: str, **kwargs: object) -> torch.nn.Module:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        return build(name, **kwargs)


@pytest.mark.parametrize(("name", "count"), PARAM_COUNTS.items())
def test_published_parameter_counts(name: str, count: int) -> None:
    assert sum(p.numel() for p in _meta_build(name).parameters()) == count


@pytest.mark.parametrize(("name", "entries"), [("mn01_as", 294), ("mn02_as", 312), ("mn10_as", 312), ("mn40_as", 312)])
def test_state_dict_entry_counts(name: str, entries: int) -> None:
    assert len(_meta_build(name).state_dict()) == entries


def test_state_dict_keys_and_shapes_match_the_spec_table() -> None:
    golden = json.loads(GOLDEN.read_text())
    ours = [[k, list(v.shape)] for k, v in _meta_build("mn10_as").state_dict().items()]
    assert ours == golden["keys"]  # same order, same shapes


def test_fc_head_keys_and_batchnorm_defaults() -> None:
    net = _meta_build("mn10_as_fc")
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items() if k.startswith("classifier")}
    assert shapes["classifier.0.weight"] == (527, 960, 1, 1)
    assert shapes["classifier.1.running_var"] == (527,)
    assert (net.classifier[1].eps, net.classifier[1].momentum) == (1e-5, 0.1)
    assert (net.features[3].block[0][1].eps, net.features[3].block[0][1].momentum) == (1e-3, 0.01)


@pytest.mark.parametrize(
    ("width", "stem", "expanded", "out", "hidden"),
    [  # spec §2.2 scaled-channel table
        (0.1, 8, "8,8,8,8,16,16,24,24,24,24,48,64,64,96,96", "8,8,8,8,8,8,8,8,8,8,16,16,16,16,16", 128),
        (0.4, 8, "8,24,32,32,48,48,96,80,72,72,192,272,272,384,384",
         "8,16,16,16,16,16,32,32,32,32,48,48,64,64,64", 512),
        (0.5, 8, "8,32,40,40,64,64,120,104,96,96,240,336,336,480,480",
         "8,16,16,24,24,24,40,40,40,40,56,56,80,80,80", 640),
        (3.0, 48, "48,192,216,216,360,360,720,600,552,552,1440,2016,2016,2880,2880",
         "48,72,72,120,120,120,240,240,240,240,336,336,480,480,480", 3840),
    ],
)  # fmt: skip
def test_scaled_channel_table(width: float, stem: int, expanded: str, out: str, hidden: int) -> None:
    configs, mlp_hidden = block_configs(width)
    assert configs[0].in_channels == stem
    assert [c.expanded_channels for c in configs] == [int(v) for v in expanded.split(",")]
    assert [c.out_channels for c in configs] == [int(v) for v in out.split(",")]
    assert mlp_hidden == hidden


def test_make_divisible_rounding() -> None:
    rounded = [make_divisible(v) for v in (3.2, 12, 19.9, 20, 28.8, 100)]
    assert rounded == [8, 16, 24, 24, 32, 104]  # 19.9: 16 would lose more than 10 %, so 24
    assert make_divisible(72 // 4) == 24 and make_divisible(960 // 4) == 240  # SE squeeze sizes (spec §2.3)


def test_mn10_feature_map_sizes() -> None:
    net = build("mn10_as").eval()
    with torch.no_grad():
        maps = net.feature_maps(torch.zeros(1, 1, 128, 1000))
    expected = [(16, 64, 500), (16, 64, 500), (24, 32, 250), (24, 32, 250)] + [(40, 16, 125)] * 3
    expected += [(80, 8, 63)] * 4 + [(112, 8, 63)] * 2 + [(160, 4, 32)] * 3 + [(960, 4, 32)]
    assert [tuple(m.shape[1:]) for m in maps] == expected


@pytest.fixture
def small_net() -> MobileNetV3:
    torch.manual_seed(0)
    return MobileNetV3(n_classes=7, width_mult=0.1)


@pytest.mark.parametrize(("batch", "frames"), [(1, 100), (3, 100), (1, 37), (3, 501), (2, 1000)])
def test_output_shapes(small_net: MobileNetV3, batch: int, frames: int) -> None:
    logits, embedding = small_net.eval()(torch.randn(batch, 128, frames))
    assert logits.shape == (batch, 7) and embedding.shape == (batch, 96)
    assert torch.isfinite(logits).all() and torch.isfinite(embedding).all()


def test_accepts_channel_axis_and_rejects_other_layouts(small_net: MobileNetV3) -> None:
    x = torch.randn(2, 128, 50)
    small_net.eval()
    torch.testing.assert_close(small_net(x)[0], small_net(x.unsqueeze(1))[0])
    with pytest.raises(ValueError, match="expected"):
        small_net(torch.randn(2, 3, 128, 50))


def test_single_class_single_example_keeps_both_axes() -> None:
    logits, embedding = MobileNetV3(n_classes=1, width_mult=0.1).eval()(torch.randn(1, 64, 40))
    assert logits.shape == (1, 1) and embedding.shape == (1, 96)


@pytest.mark.parametrize(
    ("head_type", "se_dims"),
    [("mlp", "c"), ("fully_convolutional", "c"), ("attention", "c"), ("mlp", "cft"), ("mlp", "none")],
)
def test_gradients_reach_every_parameter(head_type: str, se_dims: str) -> None:
    torch.manual_seed(0)
    net = MobileNetV3(n_classes=5, width_mult=0.1, head_type=head_type, se_dims=se_dims, input_dim_f=64, input_dim_t=96)
    logits, embedding = net.train()(torch.randn(2, 64, 96))
    assert logits.shape == (2, 5)
    (logits.sum() + embedding.sum()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for {missing}"


def test_frequency_and_time_se_shapes() -> None:
    net = MobileNetV3(n_classes=3, width_mult=1.0, se_dims="cft", se_agg="avg", input_dim_f=128, input_dim_t=1000)
    se = net.features[4].block[2].conc_se_layers  # block 3: after stride 2 twice -> F 16, T 125 (spec §2.3)
    assert [tuple(layer.fc1.weight.shape) for layer in se] == [(24, 72), (8, 16), (32, 125)]


def test_eval_mode_is_deterministic(small_net: MobileNetV3) -> None:
    x = torch.randn(2, 128, 80)
    small_net.eval()
    torch.testing.assert_close(small_net(x), small_net(x), rtol=0, atol=0)


def test_mn40_forward_on_one_second() -> None:
    tagger = MobileNetTagger(width_mult=4.0).eval()
    with torch.no_grad():
        logits = tagger(torch.randn(1, 32000) * 0.1)
    assert logits.shape == (1, 527) and torch.isfinite(logits).all()


@pytest.mark.parametrize(("batch", "seconds"), [(1, 1.0), (3, 0.5), (2, 0.77)])
def test_tagger_maps_waveform_to_logits(batch: int, seconds: float) -> None:
    tagger = build_model("mn_tagger", width_mult=0.1, n_classes=4, sample_rate=32000, n_mels=64).eval()
    assert isinstance(tagger, MobileNetTagger) and tagger.sample_rate == 32000
    logits = tagger(torch.randn(batch, int(seconds * 32000)).clamp(-1, 1))
    assert logits.shape == (batch, 4) and torch.isfinite(logits).all()


def test_tagger_state_dict_is_the_official_layout_under_net() -> None:
    tagger = MobileNetTagger(width_mult=1.0)
    golden = [k for k, _ in json.loads(GOLDEN.read_text())["keys"]]
    assert list(tagger.state_dict()) == [f"net.{k}" for k in golden]


def test_strict_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tagger = MobileNetTagger(width_mult=0.1, n_classes=6, head_type="fully_convolutional")
    tagger.train()(torch.randn(2, 16000))  # move BN running statistics away from their defaults
    torch.save(tagger.state_dict(), tmp_path / "tagger.pt")
    restored = MobileNetTagger(width_mult=0.1, n_classes=6, head_type="fully_convolutional")
    restored.load_state_dict(torch.load(tmp_path / "tagger.pt", weights_only=True), strict=True)
    x = torch.randn(2, 16000)
    torch.testing.assert_close(restored.eval()(x), tagger.eval()(x), rtol=0, atol=0)


def _official_like_state_dict() -> dict[str, torch.Tensor]:
    """Random tensors laid out as an official mn10_as file, from the spec's key table."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in json.loads(GOLDEN.read_text())["keys"]:
        state[key] = torch.tensor(5) if key.endswith("num_batches_tracked") else torch.rand(shape, generator=generator)
    return state


def test_load_official_weights_strictly(tmp_path: Path) -> None:
    state = _official_like_state_dict()
    torch.save(state, tmp_path / "mn10_as_mAP_471.pt")
    tagger = MobileNetTagger(**tagger_kwargs("mn10_as"))
    load_official_weights(tagger, tmp_path / "mn10_as_mAP_471.pt")
    torch.testing.assert_close(tagger.net.features[4].block[2].conc_se_layers[0].fc1.weight, state[
        "features.4.block.2.conc_se_layers.0.fc1.weight"])  # fmt: skip


def test_load_official_weights_lists_mismatches() -> None:
    state = _official_like_state_dict()
    del state["classifier.5.bias"]
    state["classifier.9.weight"] = torch.zeros(1)
    listed = r"missing keys \(1\): classifier.5.bias; unexpected keys \(1\): classifier.9.weight"
    with pytest.raises(CheckpointError, match=listed):
        load_official_weights(build("mn10_as"), state)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_official_weights(build("mn10_as", n_classes=10), _official_like_state_dict())


def test_hop_variant_front_end_settings() -> None:
    kwargs = tagger_kwargs("mn10_as_hop_15")
    assert kwargs["hop_length"] == 480 and kwargs["input_dim_t"] == 667 and kwargs["width_mult"] == 1.0
    assert tagger_kwargs("mn10_as_mels_64")["n_mels"] == 64
    assert tagger_kwargs("mn10_as_fc_s2211")["strides"] == (2, 2, 1, 1)


def test_registry_names_and_errors() -> None:
    assert {"mn04_as", "mn05_as", "mn10_as", "mn20_as", "mn30_as", "mn40_as", "mn_tagger"} <= set(NAMES)
    assert isinstance(build_model("mn04_as", n_classes=3, width_mult=0.1), MobileNetV3)
    with pytest.raises(KeyError, match="unknown MobileNet name"):
        build("mn99_as")
    with pytest.raises(ValueError, match="head_type"):
        MobileNetV3(head_type="transformer")
    with pytest.raises(ValueError, match="se_dims"):
        MobileNetV3(se_dims="cx")
