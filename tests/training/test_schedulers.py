"""Unit tests for audiopipe.training.schedulers: warm-up, decay shape, end values, group ratios."""

from __future__ import annotations

import pytest
import torch

from audiopipe.training.schedulers import warmup_cosine, warmup_cosine_factor, warmup_linear, warmup_linear_factor


@pytest.mark.parametrize("make", [warmup_cosine_factor, warmup_linear_factor])
def test_warmup_rises_linearly_to_peak(make) -> None:  # noqa: ANN001
    f = make(warmup_steps=4, total_steps=20)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize("make", [warmup_cosine_factor, warmup_linear_factor])
def test_decays_monotonically_to_min_ratio(make) -> None:  # noqa: ANN001
    f = make(warmup_steps=2, total_steps=12, min_ratio=0.1)
    values = [f(s) for s in range(2, 13)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1)
    assert f(100) == pytest.approx(0.1)


def test_cosine_midpoint_is_half_and_linear_midpoint_is_half() -> None:
    cos = warmup_cosine_factor(warmup_steps=0, total_steps=10)
    lin = warmup_linear_factor(warmup_steps=0, total_steps=10)
    assert cos(5) == pytest.approx(0.5) and lin(5) == pytest.approx(0.5)
    assert cos(2) > lin(2)  # cosine stays high longer


def test_warmup_start_fraction() -> None:
    f = warmup_cosine_factor(warmup_steps=2, total_steps=10, warmup_start=0.5)
    assert f(0) == pytest.approx(0.75)


def test_rejects_warmup_longer_than_training() -> None:
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine_factor(warmup_steps=11, total_steps=10)


@pytest.mark.parametrize("factory", [warmup_cosine, warmup_linear])
def test_lambda_lr_keeps_group_ratios(factory) -> None:  # noqa: ANN001
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}])
    sched = factory(opt, warmup_steps=2, total_steps=8)
    lrs = []
    for _ in range(8):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx([0.5, 0.05])
    assert lrs[1] == pytest.approx([1.0, 0.1])
    assert all(hi == pytest.approx(10 * lo) for hi, lo in lrs)


def test_fairseq_cosine_floor_is_absolute_and_low_groups_run_constant() -> None:
    """EAT-base fine-tuning: base 5e-5, min_lr 1e-6, layer decay 0.65 over 12 blocks (spec eat.md §4.4)."""
    from audiopipe.training.schedulers import fairseq_cosine

    peaks = [5e-5 * 0.65 ** (12 - i) for i in range(12)] + [5e-5]
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in peaks]
    optimizer = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, peaks)], lr=5e-5)
    scheduler = fairseq_cosine(optimizer, warmup_steps=4, total_steps=20, min_lr=1e-6)
    history = []
    for _ in range(21):
        history.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    constant = [i for i, lr in enumerate(peaks) if lr <= 1e-6]
    assert constant == [0, 1, 2]  # blocks 0-2 of the base model
    for i in constant:
        assert all(row[i] == pytest.approx(peaks[i]) for row in history)
    for i in range(3, len(peaks)):
        column = [row[i] for row in history]
        assert column[0] == pytest.approx(1e-6 + (peaks[i] - 1e-6) / 4)  # warm-up starts at min_lr
        assert max(column) == pytest.approx(peaks[i])
        assert column[-1] == pytest.approx(1e-6)  # every decaying group ends at the same absolute floor
