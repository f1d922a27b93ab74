"""Unit tests for audiopipe.models.dymn: published sizes, official key layout, dynamic layers, temperature, loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from audiopipe.models import build_model
from audiopipe.models.dymn import (
    NAMES,
    DyMN,
    DyMNTagger,
    DynamicConv,
    DyReLUB,
    build,
    context_size,
    load_official_weights,
    tagger_kwargs,
    temperature_schedule,
)
from audiopipe.models.dymn.context import Context, ContextGen
from audiopipe.models.mobilenet.blocks import InvertedResidual
from audiopipe.storage import CheckpointError

GOLDEN = Path(__file__).parents[1] / "golden" / "dymn_dymn10_keys.json"

# spec efficientat.md §3: parameters and buffer elements; README's 1.97 / 10.57 / 40.02 M are their sums
SIZES = {"dymn04_as": (1_961_239, 10_885), "dymn10_as": (10_548_479, 26_645), "dymn20_as": (39_966_143, 53_109)}


def _meta_build(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        return build(name, **kwargs)


@pytest.mark.parametrize(("name", "count"), [(name, size[0]) for name, size in SIZES.items()])
def test_published_parameter_counts(name: str, count: int) -> None:
    assert sum(p.numel() for p in _meta_build(name).parameters()) == count


@pytest.mark.parametrize(("name", "count"), [(name, size[1]) for name, size in SIZES.items()])
def test_buffer_elements(name: str, count: int) -> None:
    assert sum(b.numel() for b in _meta_build(name).buffers()) == count


@pytest.mark.parametrize("name", SIZES)
def test_state_dict_has_578_entries(name: str) -> None:
    assert len(_meta_build(name).state_dict()) == 578


def test_state_dict_keys_and_shapes_match_the_golden_list() -> None:
    golden = json.loads(GOLDEN.read_text())
    ours = [[k, list(v.shape)] for k, v in _meta_build("dymn10_as").state_dict().items()]
    assert ours == golden["keys"]  # same order, same shapes


def test_spec_shape_examples() -> None:
    state = _meta_build("dymn10_as").state_dict()
    assert tuple(state["layers.1.exp_conv.weight"].shape) == (1, 1, 4, 1024)  # 64 x 16 x 1 x 1
    assert tuple(state["layers.1.depth_conv.weight"].shape) == (1, 1, 4, 576)  # 64 x 1 x 3 x 3
    assert tuple(state["layers.1.proj_conv.weight"].shape) == (1, 1, 4, 1536)  # 24 x 64 x 1 x 1
    assert tuple(state["layers.1.exp_conv.residuals.0.weight"].shape) == (4, 32)
    assert tuple(state["layers.1.depth_act.coef_net.0.weight"].shape) == (4 * 64, 32)
    assert tuple(state["layers.1.context_gen.conv_f.weight"].shape) == (64, 32, 1, 1)
    assert not any(k.startswith("layers.0.exp_") for k in state)  # block 0 has no expansion
    assert tuple(state["classifier.2.weight"].shape) == (1280, 960)


@pytest.mark.parametrize(
    ("width", "sizes"),
    [  # spec §3 context size H per block
        (0.4, [16] * 6 + [24] * 4 + [48] * 5),
        (1.0, [32] * 6 + [64, 48, 48, 48, 120] + [128] * 4),
        (2.0, [64] * 6 + [120, 104, 96, 96, 240] + [256] * 4),
    ],
)
def test_context_sizes_per_block(width: float, sizes: list[int]) -> None:
    with torch.device("meta"):
        net = DyMN(width_mult=width)
    assert [block.context_dim for block in net.layers] == sizes
    assert [block.context_gen.joint_conv.out_channels for block in net.layers] == sizes
    assert context_size(net.layers[-1].depth_conv.out_channels, width) == sizes[-1]


def test_dyrelu_buffers_are_persistent() -> None:
    state = build("dymn04_as").state_dict()
    for index in range(15):
        assert state[f"layers.{index}.depth_act.lambdas"].tolist() == [1.0, 1.0, 0.5, 0.5]
        assert state[f"layers.{index}.depth_act.init_v"].tolist() == [1.0, 0.0, 0.0, 0.0]


@pytest.fixture
def small_net() -> DyMN:
    torch.manual_seed(0)
    return DyMN(n_classes=7, width_mult=0.4)


@pytest.mark.parametrize(("batch", "n_mels", "frames"), [(1, 64, 40), (3, 128, 37)])
def test_output_shapes(small_net: DyMN, batch: int, n_mels: int, frames: int) -> None:
    logits, embedding = small_net.eval()(torch.randn(batch, n_mels, frames))
    assert logits.shape == (batch, 7) and embedding.shape == (batch, 384)
    assert torch.isfinite(logits).all() and torch.isfinite(embedding).all()


def test_return_fmaps_gives_17_feature_maps(small_net: DyMN) -> None:
    x = torch.randn(2, 1, 64, 96)
    logits, maps = small_net.eval()(x, return_fmaps=True)
    channels = [8, 8, 16, 16, 16, 16, 16, 32, 32, 32, 32, 48, 48, 64, 64, 64, 384]  # spec §2.2 at alpha 0.4
    sizes = [(32, 48)] * 2 + [(16, 24)] * 2 + [(8, 12)] * 3 + [(4, 6)] * 6 + [(2, 3)] * 4
    assert len(maps) == 17
    assert [(m.shape[1], tuple(m.shape[2:])) for m in maps] == list(zip(channels, sizes))
    torch.testing.assert_close(logits, small_net(x)[0], rtol=0, atol=0)
    torch.testing.assert_close(maps[-1].mean(dim=(2, 3)), small_net(x)[1])


def test_examples_get_their_own_kernels(small_net: DyMN) -> None:
    x = torch.randn(3, 64, 48)
    small_net.eval()
    one_by_one = torch.cat([small_net(x[i : i + 1])[0] for i in range(3)])
    torch.testing.assert_close(small_net(x)[0], one_by_one, rtol=1e-4, atol=1e-5)


def test_gradients_reach_every_parameter(small_net: DyMN) -> None:
    logits, embedding = small_net.train()(torch.randn(2, 64, 48))
    (logits.sum() + embedding.sum()).backward()
    missing = [n for n, p in small_net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for {missing}"


def _context(batch: int, dim: int) -> Context:
    return Context(torch.randn(batch, dim), torch.zeros(0), torch.zeros(0))


def test_dynamic_conv_with_identical_kernels_is_a_static_conv() -> None:
    torch.manual_seed(0)
    conv = DynamicConv(6, 6, context_dim=5, kernel_size=3, stride=2, padding=1, groups=6)
    kernel = torch.randn(6, 1, 3, 3)
    with torch.no_grad():
        conv.weight.copy_(kernel.reshape(1, 1, 1, -1).expand(1, 1, 4, -1))
    x = torch.randn(2, 6, 9, 10)
    expected = F.conv2d(x, kernel, stride=2, padding=1, groups=6)
    torch.testing.assert_close(conv(x, _context(2, 5)), expected)


def test_high_temperature_mixes_kernels_uniformly() -> None:
    torch.manual_seed(0)
    conv = DynamicConv(4, 3, context_dim=5, kernel_size=1, temperature=1e9)
    x = torch.randn(2, 4, 5, 6)
    mean_kernel = conv.weight.detach().view(4, 3, 4, 1, 1).mean(dim=0)
    torch.testing.assert_close(conv(x, _context(2, 5)), F.conv2d(x, mean_kernel))


def test_dyrelu_with_zero_coefficients_is_relu() -> None:
    relu = DyReLUB(channels=3, context_dim=4)
    nn.init.zeros_(relu.coef_net[0].weight)
    nn.init.zeros_(relu.coef_net[0].bias)
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(relu(x, _context(2, 4)), torch.relu(x))


def test_context_gen_shapes_follow_the_stride() -> None:
    gen = ContextGen(context_dim=16, in_channels=8, expanded_channels=24, stride=2).eval()
    context = gen(torch.randn(2, 8, 9, 20))
    assert context.vector.shape == (2, 16)
    assert context.freq.shape == (2, 24, 5, 1) and context.time.shape == (2, 24, 1, 10)


def test_temperature_schedule_values() -> None:
    net = DyMN(width_mult=0.4)
    assert net.temperature == 1.0  # inference default: the value the AudioSet weights need
    taus = [net.update_params(epoch) for epoch in range(40)]
    assert taus[:30] == pytest.approx(list(range(30, 0, -1)))  # 30, 29, ..., 1 at epoch 29
    assert taus[30:] == pytest.approx([1.0] * 10)
    assert temperature_schedule(33, 30, 0.5, 1, 0.05) == pytest.approx(0.8)  # shallow tail only below T_min = 1


def test_temperature_reaches_every_dynamic_conv_and_is_not_state() -> None:
    net = DyMN(width_mult=0.4)
    keys = set(net.state_dict())
    net.update_params(3)
    convs = [m for m in net.modules() if isinstance(m, DynamicConv)]
    assert len(convs) == 44 and {conv.temperature for conv in convs} == {27.0}
    assert set(net.state_dict()) == keys and not any("temp" in key for key in keys)
    with pytest.raises(ValueError, match="positive"):
        net.temperature = 0.0


def test_audioset_presets_keep_tau_at_one() -> None:
    net = build("dymn04_as")
    assert isinstance(net, DyMN) and net.temperature == 1.0
    assert net.update_params(0) == 1.0 and net.update_params(50) == 1.0


def test_strict_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tagger = DyMNTagger(width_mult=0.4, n_classes=6, head_type="fully_convolutional")
    tagger.train()(torch.randn(2, 16000))  # move BN running statistics away from their defaults
    torch.save(tagger.state_dict(), tmp_path / "tagger.pt")
    restored = DyMNTagger(width_mult=0.4, n_classes=6, head_type="fully_convolutional")
    restored.load_state_dict(torch.load(tmp_path / "tagger.pt", weights_only=True), strict=True)
    x = torch.randn(2, 16000)
    torch.testing.assert_close(restored.eval()(x), tagger.eval()(x), rtol=0, atol=0)


def _official_like_state_dict() -> dict[str, torch.Tensor]:
    """Random tensors laid out as an official dymn10_as file, from the golden key list."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in json.loads(GOLDEN.read_text())["keys"]:
        state[key] = torch.tensor(5) if key.endswith("num_batches_tracked") else torch.rand(shape, generator=generator)
    return state


def test_load_official_weights_strictly(tmp_path: Path) -> None:
    state = _official_like_state_dict()
    torch.save(state, tmp_path / "dymn10_as.pt")
    tagger = DyMNTagger(**tagger_kwargs("dymn10_as"))
    load_official_weights(tagger, tmp_path / "dymn10_as.pt")
    torch.testing.assert_close(tagger.net.layers[5].depth_conv.weight, state["layers.5.depth_conv.weight"])
    assert list(tagger.state_dict()) == [f"net.{k}" for k in state]
    del state["classifier.5.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): classifier.5.bias"):
        load_official_weights(tagger, state)


def test_tagger_maps_waveform_to_logits() -> None:
    tagger = build_model("dymn_tagger", width_mult=0.4, n_classes=4, n_mels=64).eval()
    assert isinstance(tagger, DyMNTagger) and tagger.sample_rate == 32000
    logits = tagger(torch.randn(2, 16000).clamp(-1, 1))
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    assert tagger.update_params(0) == 30.0 and tagger.net.temperature == 30.0  # training schedule by default


def test_replace_se_variant() -> None:
    net = _meta_build("dymn10_replace_se_as")
    dynamic = [i for i, layer in enumerate(net.layers) if not isinstance(layer, InvertedResidual)]
    assert dynamic == [3, 4, 5, 10, 11, 12, 13, 14]  # the SE positions of MN
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 2) == 9.83
    state = net.state_dict()
    assert "layers.0.block.1.0.weight" in state and not any("conc_se" in k for k in state)


def test_registry_names_and_errors() -> None:
    assert {"dymn04_as", "dymn10_as", "dymn20_as", "dymn_tagger"} <= set(NAMES)
    with torch.device("meta"):
        assert isinstance(build_model("dymn10_as"), DyMN)
    with pytest.raises(KeyError, match="unknown DyMN name"):
        build("dymn99_as")
    with pytest.raises(ValueError, match="head_type"):
        DyMN(head_type="attention")
