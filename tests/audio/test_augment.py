"""Unit tests for audiopipe.audio.augment: shapes, invariants of mixup, masks, gain and roll."""

from __future__ import annotations

import math

import pytest
import torch

from audiopipe.audio.augment import (
    freq_warp,
    group_mixup_params,
    mix,
    mix_groups,
    mixup,
    mixup_params,
    random_gain,
    random_scale,
    roll_scale_log_spectrogram,
    spec_mask,
    time_roll,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(4, 1600), (4, 1, 50, 16)])
def test_mixup_keeps_shapes_and_is_convex(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    y = torch.eye(4)
    xm, ym = mixup(x, y, alpha=0.8, generator=_gen())
    assert xm.shape == x.shape and ym.shape == y.shape
    assert torch.allclose(ym.sum(dim=1), torch.ones(4))  # convex combination of one-hot rows
    assert ((ym >= 0) & (ym <= 1)).all()


def test_mixup_flip_pairs_example_with_reversed_partner() -> None:
    lam, partner = mixup_params(4, alpha=0.8, generator=_gen())
    assert partner.tolist() == [3, 2, 1, 0]
    assert torch.all(lam == lam[0])  # one lam per batch (EAT)
    x = torch.arange(4.0).unsqueeze(1)
    torch.testing.assert_close(mix(x, lam, partner), lam[:, None] * x + (1 - lam[:, None]) * x.flip(0))


def test_mixup_per_example_permute_folds_lam_above_half() -> None:
    lam, partner = mixup_params(64, alpha=0.3, pairing="permute", per_example=True, generator=_gen())
    assert (lam >= 0.5).all() and lam.unique().numel() > 1
    assert sorted(partner.tolist()) == list(range(64))


@pytest.mark.parametrize(("alpha", "prob"), [(0.0, 1.0), (0.8, 0.0)])
def test_mixup_disabled_is_identity(alpha: float, prob: float) -> None:
    x, y = torch.randn(3, 100), torch.eye(3)
    xm, ym = mixup(x, y, alpha=alpha, prob=prob, generator=_gen())
    torch.testing.assert_close(xm, x)
    torch.testing.assert_close(ym, y)


def test_mixup_is_reproducible_with_generator() -> None:
    x, y = torch.randn(4, 100), torch.eye(4)
    torch.testing.assert_close(mixup(x, y, alpha=0.8, generator=_gen(3)), mixup(x, y, alpha=0.8, generator=_gen(3)))


def test_mixup_rejects_mismatched_batch() -> None:
    with pytest.raises(ValueError, match="examples"):
        mixup(torch.randn(3, 10), torch.eye(4), alpha=0.8)


def test_spec_mask_masks_bands_within_width() -> None:
    spec = torch.ones(3, 1, 40, 16)  # EAT layout (B, 1, T, F)
    out = spec_mask(spec, freq_width=5, time_width=10, freq_axis=-1, time_axis=-2, generator=_gen())
    assert out.shape == spec.shape
    for b in range(3):
        zero = out[b, 0] == 0
        full_rows = zero.all(dim=1).sum().item()  # masked time frames span all freqs
        full_cols = zero.all(dim=0).sum().item()
        assert full_rows < 10 and full_cols < 5
        # every zero lies in a masked row or a masked column
        assert (zero == (zero.all(dim=1, keepdim=True) | zero.all(dim=0, keepdim=True))).all()


def test_spec_mask_masks_something_and_differs_per_example() -> None:
    spec = torch.ones(3, 64, 100)  # project layout (B, F, T)
    out = spec_mask(spec, freq_width=30, time_width=50, fill=-1.0, generator=_gen(1))
    assert (out == -1).any()
    assert not torch.equal(out[0], out[1])


def test_random_gain_within_db_range() -> None:
    x = torch.ones(50, 10)
    out = random_gain(x, max_db=6.0, generator=_gen())
    ratio = out[:, 0]
    assert (ratio >= 10 ** (-6 / 20) - 1e-6).all() and (ratio <= 10 ** (6 / 20) + 1e-6).all()
    assert torch.all(out == ratio[:, None])  # one gain per example


def test_random_scale_between_half_and_one_and_half() -> None:
    out = random_scale(torch.ones(100, 5), generator=_gen())
    assert (out >= 0.5).all() and (out <= 1.5).all()


@pytest.mark.parametrize("max_shift", [None, 3])
def test_time_roll_is_a_per_example_circular_shift(max_shift: int | None) -> None:
    x = torch.arange(20.0).repeat(4, 1)
    out = time_roll(x, max_shift=max_shift, generator=_gen(2))
    for b in range(4):
        shift = int((out[b] == 0).nonzero().item())
        if max_shift is not None:
            assert min(shift, 20 - shift) <= max_shift
        torch.testing.assert_close(out[b], torch.roll(x[b], shift))


@pytest.mark.parametrize(("max_shift", "axis"), [(3, -1), (None, -1), (5, -2), (None, 1)])
def test_time_roll_shifts_by_the_generators_draws(max_shift: int | None, axis: int) -> None:
    """The shifts are the generator's next `randint` draws (one per example), so a seeded run rolls its clips
    exactly as before the per-example implementation; out[i] = x[i - shift] along `axis`."""
    x = torch.randn(5, 3, 12, 4)
    dim = axis % x.dim()
    low, high = (0, x.shape[dim]) if max_shift is None else (-max_shift, max_shift + 1)
    shifts = torch.randint(low, high, (5,), generator=_gen(7)).tolist()
    out = time_roll(x, max_shift=max_shift, axis=axis, generator=_gen(7))
    for b, shift in enumerate(shifts):
        assert torch.equal(out[b], torch.roll(x[b], shift, dims=dim - 1))
    assert time_roll(x[:0], max_shift=max_shift, axis=axis).shape == (0, 3, 12, 4)


def test_time_roll_on_spectrogram_axis_keeps_frequency_content() -> None:
    spec = torch.randn(2, 1, 30, 8)
    out = time_roll(spec, axis=-2, generator=_gen())
    torch.testing.assert_close(out.sum(dim=2), spec.sum(dim=2))


def test_group_mixup_mixes_only_inside_each_group() -> None:
    groups = torch.tensor([0, 0, 0, 1, 1, 2])  # the lone clip of group 2 is never mixed
    draws = group_mixup_params(groups, alpha=0.2, prob=1.0, generator=_gen(1))
    assert sorted(tuple(d.index.tolist()) for d in draws) == [(0, 1, 2), (3, 4)]
    x = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0, 99.0]).unsqueeze(1)
    mixed = mix_groups(x, draws)
    assert mixed[5].item() == 99.0
    assert ((mixed[:3] >= 1.0) & (mixed[:3] <= 3.0)).all() and ((mixed[3:5] >= 10.0) & (mixed[3:5] <= 20.0)).all()
    for draw in draws:  # one weight per group, partners a permutation of the group
        assert torch.all(draw.lam == draw.lam[0]) and sorted(draw.partner.tolist()) == list(range(draw.index.numel()))


def test_group_mixup_coin_and_clamp() -> None:
    assert group_mixup_params(torch.zeros(4, dtype=torch.long), alpha=0.2, prob=0.0, generator=_gen()) == []
    draws = group_mixup_params(torch.zeros(4, dtype=torch.long), alpha=0.2, prob=1.0, generator=_gen())
    labels = torch.tensor([[1.5], [0.0], [1.5], [0.0]])
    assert mix_groups(labels, draws, clamp=(0.0, 1.0)).max().item() <= 1.0
    assert torch.equal(mix_groups(labels, []), labels)


def test_freq_warp_with_full_band_is_identity() -> None:
    x = torch.randn(2, 64, 30)
    torch.testing.assert_close(freq_warp(x, freq_axis=1, time_axis=2, min_scale=1.0, generator=_gen()), x)


@pytest.mark.parametrize("seed", range(5))
def test_freq_warp_stretches_one_band_shared_by_the_batch(seed: int) -> None:
    n_freq, n_time = 64, 7
    ramp = torch.arange(n_freq, dtype=torch.float32)  # value = bin index, so the output reveals the crop
    x = torch.stack([ramp + 100.0 * b for b in range(3)]).unsqueeze(-1).expand(3, n_freq, n_time).contiguous()
    out = freq_warp(x, freq_axis=1, time_axis=2, min_scale=0.6, generator=_gen(seed))
    relative = out - 100.0 * torch.arange(3.0).view(3, 1, 1)
    torch.testing.assert_close(relative, relative[:1].expand_as(relative), atol=1e-3, rtol=0)  # same crop, all clips
    torch.testing.assert_close(out, out[..., :1].expand_as(out))  # time untouched
    low, high = relative[0, 0, 0].item(), relative[0, -1, 0].item()  # align_corners: end bins are exact
    band = round(high - low) + 1
    assert abs(low - round(low)) < 1e-4 and int(0.6 * n_freq) <= band <= n_freq and high <= n_freq - 1 + 1e-4


def test_freq_warp_on_eat_layout_warps_the_last_axis() -> None:
    ramp = torch.arange(128, dtype=torch.float32)
    x = ramp.expand(1, 1, 5, 128).contiguous()  # (B, 1, T, F)
    out = freq_warp(x, freq_axis=-1, time_axis=-2, min_scale=0.6, generator=_gen(3))
    assert out.shape == x.shape
    torch.testing.assert_close(out, out[:, :, :1].expand_as(out))
    assert not torch.equal(out, x)


def test_freq_warp_rejects_bad_axes_and_scale() -> None:
    with pytest.raises(ValueError, match="distinct"):
        freq_warp(torch.zeros(1, 4, 4), freq_axis=1, time_axis=1)
    with pytest.raises(ValueError, match="min_scale"):
        freq_warp(torch.zeros(1, 4, 4), freq_axis=1, time_axis=2, min_scale=0.0)


# --- roll_scale_log_spectrogram: EAT's roll_mag in the log-fbank domain (finetune_eat cache_features) ---------


def test_waveform_gain_is_a_constant_log_fbank_shift() -> None:
    """The identity the cached path rests on: fbank(g x) = fbank(x) + 2 ln g (Kaldi log power, no eps hit)."""
    from audiopipe.models.eat.frontend import EATFrontEnd

    frontend = EATFrontEnd(16000, None)
    audio = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    gain = torch.tensor([[0.6], [1.4]])
    clean = frontend.fbank(audio)
    shift = frontend.fbank(gain * audio) - clean
    expected = 2 * torch.log(gain).view(2, 1, 1).expand_as(shift)
    above_floor = clean > math.log(torch.finfo(torch.float32).eps) + 5  # empty low mel bands sit at the eps floor
    assert above_floor.float().mean() > 0.9
    # float32 log power: 1.6e-4 apart in 3 of ~25k bins on an AVX-512 Intel host (1e-4 held on AMD); a wrong gain
    # factor or a missed square would be off by 0.3-1.0 here
    torch.testing.assert_close(shift[above_floor], expected[above_floor], atol=5e-4, rtol=0)


def test_a_whole_frame_waveform_roll_is_a_fbank_roll_away_from_the_edge() -> None:
    from audiopipe.models.eat.frontend import EATFrontEnd

    frontend = EATFrontEnd(16000, None)
    audio = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(1))
    frames = 7
    rolled = frontend.fbank(torch.roll(audio, frames * 160, dims=-1))
    expected = torch.roll(frontend.fbank(audio), frames, dims=1)
    torch.testing.assert_close(rolled[:, frames + 3 : -3], expected[:, frames + 3 : -3], atol=1e-3, rtol=1e-3)


def test_roll_scale_log_spectrogram_rolls_the_clip_and_shifts_it_by_one_constant() -> None:
    spec = torch.randn(3, 1, 20, 8)
    out = roll_scale_log_spectrogram(spec, valid_frames=15, per_log_unit=0.5, time_axis=2,
                                     generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :, 15:], spec[:, :, 15:])  # padding frames untouched
    for clip, original in zip(out[:, 0, :15], spec[:, 0, :15]):
        shifts = [(clip - torch.roll(original, k, dims=0)) for k in range(15)]
        constant = [s for s in shifts if torch.allclose(s, s.flatten()[0].expand_as(s), atol=1e-5)]
        assert len(constant) == 1  # one circular roll of the clip frames, one additive constant
        offset = constant[0].flatten()[0].item()
        assert 0.5 * 2 * math.log(0.5) <= offset <= 0.5 * 2 * math.log(1.5)  # Beta(10, 10) + 0.5 magnitude


def test_roll_scale_log_spectrogram_gain_only_keeps_the_frame_order() -> None:
    spec = torch.randn(4, 30, 8)
    out = roll_scale_log_spectrogram(spec, valid_frames=30, per_log_unit=1.0, time_axis=1, roll_mag=False,
                                     max_gain_db=6.0, generator=torch.Generator().manual_seed(0))
    delta = out - spec
    assert torch.allclose(delta, delta[:, :1, :1].expand_as(delta), atol=1e-5)
    db = 20 * delta[:, 0, 0] / 2 / math.log(10)  # 2 ln g = shift -> g in dB
    assert db.abs().max() <= 6.0 + 1e-4 and db.abs().max() > 0.1
