"""Unit tests for audiopipe.audio.augment: shapes, invariants of mixup, masks, gain and roll."""

from __future__ import annotations

import pytest
import torch

from audiopipe.audio.augment import mix, mixup, mixup_params, random_gain, random_scale, spec_mask, time_roll


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


def test_time_roll_on_spectrogram_axis_keeps_frequency_content() -> None:
    spec = torch.randn(2, 1, 30, 8)
    out = time_roll(spec, axis=-2, generator=_gen())
    torch.testing.assert_close(out.sum(dim=2), spec.sum(dim=2))
