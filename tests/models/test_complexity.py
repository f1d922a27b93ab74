"""Unit tests for audiopipe.models.complexity and the `audiopipe complexity` command."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from audiopipe.commands import complexity as command
from audiopipe.models.complexity import count_macs, count_parameters, peak_memory_kb, profile
from audiopipe.models.mobilenet import MobileNetTagger, build


def _mel_input(frames: int = 1000, n_mels: int = 128) -> torch.Tensor:
    return torch.zeros(1, 1, n_mels, frames)


@pytest.mark.parametrize(
    ("name", "params", "gmacs", "plain_kb", "efficient_kb"),
    [  # spec efficientat.md §2.6 (params, MACs) and §8 (memory)
        ("mn04_as", 983_599, 0.111, 2048.0, 1008.0),
        ("mn10_as", 4_876_831, 0.541, 5120.0, 2048.0),
    ],
)
def test_published_mobilenet_complexity(
    name: str, params: int, gmacs: float, plain_kb: float, efficient_kb: float
) -> None:
    report = profile(build(name), _mel_input())
    assert report.params == params
    assert round(report.macs / 1e9, 3) == gmacs
    assert report.peak_memory_kb == plain_kb
    assert report.peak_memory_efficient_kb == efficient_kb


@pytest.mark.parametrize(
    ("name", "n_mels", "frames", "gmacs"),
    [("mn10_as_mels_64", 64, 1000, 0.272), ("mn10_as_hop_25", 128, 400, 0.219), ("mn02_as", 128, 1000, 0.040)],
)
def test_macs_scale_with_input_size_as_published(name: str, n_mels: int, frames: int, gmacs: float) -> None:
    assert round(count_macs(build(name), _mel_input(frames, n_mels)) / 1e9, 3) == gmacs


def test_tagger_front_end_is_not_counted() -> None:
    tagger = MobileNetTagger(width_mult=0.1, n_classes=10).eval()
    waveform = torch.zeros(1, 32000)
    mel = tagger.mel(waveform)
    assert count_macs(tagger, waveform) == count_macs(tagger.net, mel)
    assert count_parameters(tagger) == count_parameters(tagger.net)


def test_conv_and_linear_rules() -> None:
    model = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.Conv1d(4, 4, 3, groups=4, bias=False))
    # conv1: 4 x 10 outputs x (3 x 2 + 1); depthwise: 4 x 8 outputs x 3
    assert count_macs(model, torch.zeros(1, 2, 10)) == 4 * 10 * 7 + 4 * 8 * 3


def test_linear_over_a_sequence_counts_every_position() -> None:
    assert count_macs(nn.Linear(8, 5), torch.zeros(1, 7, 8)) == 7 * (8 * 5 + 5)


def test_multihead_attention() -> None:
    mha = nn.MultiheadAttention(16, 4, batch_first=True)

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = mha

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mha(x, x, x, need_weights=False)[0]

    length, dim = 6, 16
    expected = 4 * length * dim * (dim + 1) + 2 * length * length * dim  # q, k, v, out projections + matmuls
    assert count_macs(Wrapper(), torch.zeros(1, length, dim)) == expected


class _CustomAttention(nn.Module):
    """Attention written with functional matmuls, as transformer encoders often do."""

    def __init__(self, dim: int, fused: bool) -> None:
        super().__init__()
        self.qkv, self.fused = nn.Linear(dim, 3 * dim, bias=False), fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unsqueeze(1).chunk(3, dim=-1)  # (B, 1 head, L, D) each
        if self.fused:
            return nn.functional.scaled_dot_product_attention(q, k, v)
        return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v


@pytest.mark.parametrize("fused", [False, True])
def test_functional_attention_matmuls_are_counted(fused: bool) -> None:
    length, dim = 5, 8
    expected = length * dim * 3 * dim + 2 * length * length * dim
    assert count_macs(_CustomAttention(dim, fused), torch.zeros(1, length, dim)) == expected


def test_peak_memory_adds_the_skip_tensor_inside_residual_blocks() -> None:
    class Residual(nn.Module):
        use_res_connect = True

        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 8, 1), nn.Conv2d(8, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.b(self.a(x))

    x = torch.zeros(1, 2, 4, 4)  # 32 elements; expanded 128
    # conv a: 32 + 128; conv b: 128 + 32 + 32 (block input kept for the skip) -> 192 elements x 2 bytes
    assert peak_memory_kb(Residual(), x) == 192 * 16 / 8 / 1000


def test_batch_must_be_one() -> None:
    with pytest.raises(ValueError, match="one example"):
        count_macs(nn.Linear(3, 3), torch.zeros(2, 3))


def _run_command(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert command.run(parser.parse_args(list(argv))) == 0
    return capsys.readouterr().out


def test_command_prints_published_mn10_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run_command(capsys, "mn10_as")
    assert "4.88 M (4,876,831)" in out
    assert "0.54 G" in out and "0.541 G" in out
    assert "5120.0 kB" in out and "2048.0 kB" in out
    assert "(1, 1, 128, 1000)" in out


def test_command_tagger_with_model_args_and_input_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run_command(capsys, "mn_tagger", "--model-arg", "width_mult=0.4", "--input-seconds", "5")
    assert "983,599" in out
    assert "(1, 160000) for 5 s" in out
    macs = int(out.split("MACs")[1].split("(")[1].split(";")[0].replace(",", ""))
    assert macs == count_macs(build("mn04_as"), _mel_input(frames=500))  # 5 s -> 500 frames


def test_command_counts_dymn_dynamic_convs_as_static_convs(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run_command(capsys, "dymn10_as")
    assert "(1, 1, 128, 1000)" in out and "10.55 M (10,548,479)" in out  # parameters only (spec §3)
    macs = int(out.split("MACs")[1].split("(")[1].split(";")[0].replace(",", ""))
    assert macs == pytest.approx(0.513e9 + 0.064e9, rel=0.01)  # README 0.58 G (spec §3)
