"""Training-time augmentations as pure tensor -> tensor functions (no state, no config objects).

All functions work on a batch whose first axis is the example axis and draw their randomness from an
optional `torch.Generator` (CPU generator; the random numbers are moved to the input's device), so a
seeded caller gets reproducible batches.

Shapes (B batch, T samples or frames, F mel bins, C classes):
    waveform     (B, T)
    spectrogram  (B, F, T) project layout, or (B, 1, T, F) for EAT - pass the axis numbers
    targets      (B, C)    multi-hot or soft targets (teacher probabilities mix the same way)

Mixup comes in two parts so that several tensors (input, labels, teacher outputs) can be mixed with the
same draw: `mixup_params` draws (lam, partner) once and `mix` applies it to any tensor; `mixup` does both
for the common (x, targets) pair.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(4, 16000), torch.eye(4)
    >>> x_mixed, y_mixed = mixup(x, y, alpha=0.8, generator=g)
    >>> tuple(x_mixed.shape), tuple(y_mixed.shape)
    ((4, 16000), (4, 4))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "GroupMix",
    "freq_warp",
    "group_mixup_params",
    "mix",
    "mix_groups",
    "mixup",
    "mixup_params",
    "random_gain",
    "random_scale",
    "roll_scale_log_spectrogram",
    "spec_mask",
    "time_roll",
]


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _beta(n: int, a: float, b: float, generator: torch.Generator | None) -> torch.Tensor:
    """n Beta(a, b) draws (float32); seeded from `generator` because torch's Beta takes no generator."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
    return torch.from_numpy(np.random.default_rng(seed).beta(a, b, size=n).astype(np.float32))


def mixup_params(
    batch_size: int,
    *,
    alpha: float,
    prob: float = 1.0,
    pairing: str = "flip",
    per_example: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw mixing weights and partners for one batch.

    Args:
        alpha: Beta(alpha, alpha) concentration; `alpha <= 0` disables mixup (lam = 1).
        prob: Probability that the batch is mixed at all (EAT: 0.9).
        pairing: "flip" mixes example i with example B-1-i (EAT); "permute" with a random partner (EfficientAT).
        per_example: One lam per example (EfficientAT, lam folded to max(lam, 1-lam)) instead of one per batch.

    Returns:
        lam (B,) float32 weights of the example itself, partner (B,) int64 indices of the other example.
    """
    if pairing == "flip":
        partner = torch.arange(batch_size - 1, -1, -1)
    elif pairing == "permute":
        partner = torch.randperm(batch_size, generator=generator)
    else:
        raise ValueError(f"pairing must be 'flip' or 'permute', got {pairing!r}")
    if alpha <= 0 or torch.rand(1, generator=generator).item() >= prob:
        return torch.ones(batch_size), partner
    lam = _beta(batch_size if per_example else 1, float(alpha), float(alpha), generator)
    if per_example:
        lam = torch.maximum(lam, 1.0 - lam)
    return lam.expand(batch_size).clone(), partner


def mix(t: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """Mix `t` (B, ...) with its partners: lam * t + (1 - lam) * t[partner]."""
    lam = lam.to(device=t.device, dtype=t.dtype).view(-1, *([1] * (t.dim() - 1)))
    return lam * t + (1.0 - lam) * t[partner.to(t.device)]


def mixup(
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    alpha: float,
    prob: float = 1.0,
    pairing: str = "flip",
    per_example: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup of inputs (waveforms or spectrograms) and targets with one draw; see `mixup_params`.

    Returns:
        (mixed x, mixed targets), same shapes and dtypes as the inputs.
    """
    if x.shape[0] != targets.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but targets {targets.shape[0]}")
    lam, partner = mixup_params(
        x.shape[0], alpha=alpha, prob=prob, pairing=pairing, per_example=per_example, generator=generator
    )
    return mix(x, lam, partner), mix(targets, lam, partner)


@dataclass(frozen=True)
class GroupMix:
    """One mixup draw inside one group of a batch: rows `index` are mixed with rows `index[partner]`."""

    index: torch.Tensor  # (n,) int64 rows of the batch that form the group
    lam: torch.Tensor  # (n,) float32 weight of each row itself
    partner: torch.Tensor  # (n,) int64 positions *within the group* of each row's partner


def group_mixup_params(
    groups: torch.Tensor, *, alpha: float, prob: float, generator: torch.Generator | None = None
) -> list[GroupMix]:
    """ATST-SED mixup draws: one coin per batch (`prob`), then per group (value of `groups`, e.g. strong / weak /
    unlabelled) its own Beta(alpha, alpha) weight and random permutation; groups of fewer than 2 rows are not
    mixed. Returns [] when the batch is not mixed.

    Shapes:
        groups (B,) integer group id of each row.
    """
    if alpha <= 0 or torch.rand(1, generator=generator).item() >= prob:
        return []
    draws = []
    for group in groups.unique().tolist():
        index = torch.nonzero(groups == group).flatten()
        if index.numel() < 2:
            continue
        lam, partner = mixup_params(index.numel(), alpha=alpha, pairing="permute", generator=generator)
        draws.append(GroupMix(index, lam, partner))
    return draws


def mix_groups(
    t: torch.Tensor, draws: list[GroupMix], *, clamp: tuple[float, float] | None = None
) -> torch.Tensor:
    """Apply `group_mixup_params` draws to any tensor with the batch on axis 0 (inputs, labels, teacher
    outputs); rows outside every group are unchanged. `clamp` bounds the mixed rows (soft labels: (0, 1))."""
    out = t.clone()
    for draw in draws:
        index = draw.index.to(t.device)
        mixed = mix(t[index], draw.lam, draw.partner)
        out[index] = mixed if clamp is None else mixed.clamp(*clamp)
    return out


def freq_warp(
    spec: torch.Tensor,
    *,
    freq_axis: int,
    time_axis: int,
    min_scale: float = 0.6,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Frequency warping (ATST-SED `RandomResizeCrop((1, 1.0), time_scale=(1.0, 1.0))`): crop one band of
    floor(U(min_scale, 1) * F) bins at a random offset and resize it back to F bins with bicubic interpolation
    (align_corners=True); time is kept. One crop per call, shared by every example of `spec`.

    Shapes:
        spec (B, ...) with the named frequency and time axes (ATST mel (B, F, T); EAT fbank (B, 1, T, F));
        output has the same shape and dtype.
    """
    freq_axis, time_axis = freq_axis % spec.dim(), time_axis % spec.dim()
    if 0 in (freq_axis, time_axis) or freq_axis == time_axis:
        raise ValueError("freq_axis and time_axis must be distinct non-batch axes")
    if not 0.0 < min_scale <= 1.0:
        raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
    n_freq, n_time = spec.shape[freq_axis], spec.shape[time_axis]
    band = max(1, int(float(_uniform(1, min_scale, 1.0, generator)) * n_freq))
    start = int(torch.randint(0, n_freq - band + 1, (1,), generator=generator))
    others = [a for a in range(1, spec.dim()) if a not in (freq_axis, time_axis)]
    order = [0, *others, freq_axis, time_axis]
    x = spec.permute(order)  # (B, ..., F, T)
    lead = x.shape[:-2]
    x = x.narrow(-2, start, band).reshape(-1, 1, band, n_time).float()
    x = F.interpolate(x, size=(n_freq, n_time), mode="bicubic", align_corners=True)
    x = x.reshape(*lead, n_freq, n_time).to(spec.dtype)
    return x.permute([order.index(a) for a in range(spec.dim())]).contiguous()


def _axis_mask(size: int, max_width: float, batch: int, generator: torch.Generator | None) -> torch.Tensor:
    """(B, size) bool mask with one band per example: width ~ U[0, max_width), start ~ U[0, size - width)."""
    width = (torch.rand(batch, generator=generator) * max_width).floor().clamp(max=size)
    start = (torch.rand(batch, generator=generator) * (size - width)).floor()
    idx = torch.arange(size).unsqueeze(0)
    return (idx >= start.unsqueeze(1)) & (idx < (start + width).unsqueeze(1))


def spec_mask(
    spec: torch.Tensor,
    *,
    freq_width: float,
    time_width: float,
    freq_axis: int = -2,
    time_axis: int = -1,
    n_freq: int = 1,
    n_time: int = 1,
    fill: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SpecAugment-style masking: `n_freq` frequency bands and `n_time` time bands per example, set to `fill`.

    Each band's width is drawn uniformly in [0, width) and its start uniformly among the positions where it
    fits, independently per example (torchaudio `iid_masks=True`). EAT: one mask each, widths
    128 * mask_ratio and target_length * mask_ratio, fill 0 on the normalised fbank, layout (B, 1, T, F)
    i.e. `freq_axis=-1, time_axis=-2`.

    Shapes:
        spec (B, ...) with the two named axes; output has the same shape and dtype.
    """
    batch = spec.shape[0]
    freq_axis, time_axis = freq_axis % spec.dim(), time_axis % spec.dim()
    if 0 in (freq_axis, time_axis) or freq_axis == time_axis:
        raise ValueError("freq_axis and time_axis must be distinct non-batch axes")
    masked = torch.zeros(spec.shape, dtype=torch.bool)
    for axis, width, count in ((freq_axis, freq_width, n_freq), (time_axis, time_width, n_time)):
        for _ in range(count):
            band = _axis_mask(spec.shape[axis], width, batch, generator)  # (B, size)
            view = [batch] + [1] * (spec.dim() - 1)
            view[axis] = spec.shape[axis]
            masked |= band.view(view)
    return spec.masked_fill(masked.to(spec.device), fill)


def random_gain(
    x: torch.Tensor, *, max_db: float, min_db: float | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Multiply each example by a gain drawn uniformly in [min_db, max_db] dB (min_db defaults to -max_db).

    EfficientAT uses +-7 dB on waveforms. Works on waveforms only (a log-spectrogram needs an additive shift).
    """
    low = -max_db if min_db is None else min_db
    db = _uniform(x.shape[0], low, max_db, generator)
    gain = torch.pow(10.0, db / 20.0).to(device=x.device, dtype=x.dtype)
    return x * gain.view(-1, *([1] * (x.dim() - 1)))


def random_scale(
    x: torch.Tensor, *, beta: float = 10.0, offset: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Multiply each example by Beta(beta, beta) + offset: the magnitude half of EAT's `roll_mag` (0.5..1.5)."""
    scale = _beta(x.shape[0], beta, beta, generator) + offset
    return x * scale.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))


def time_roll(
    x: torch.Tensor, *, max_shift: int | None = None, axis: int = -1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Circularly shift each example along `axis` by its own integer offset.

    The offset is uniform in [-max_shift, max_shift], or in [0, size) when `max_shift` is None (EAT's
    `roll_mag` draws over the whole clip length).
    """
    axis = axis % x.dim()
    if axis == 0:
        raise ValueError("cannot roll along the batch axis")
    size, batch = x.shape[axis], x.shape[0]
    if max_shift is None:
        shift = torch.randint(0, size, (batch,), generator=generator)
    else:
        shift = torch.randint(-max_shift, max_shift + 1, (batch,), generator=generator)
    if batch == 0:
        return x.clone()
    # out[i] = x[i - shift]: one torch.roll (a copy in two slices) per example, ~10x faster on CPU than a gather
    # through an index tensor of the input's size, with the same result
    return torch.stack([torch.roll(example, s, dims=axis - 1) for example, s in zip(x, shift.tolist())])



def roll_scale_log_spectrogram(
    spec: torch.Tensor,
    *,
    valid_frames: int,
    per_log_unit: float,
    time_axis: int = -2,
    roll_mag: bool = True,
    max_gain_db: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """EAT's `roll_mag` and/or a random gain applied to a (normalised) log-power spectrogram.

    The spectrogram-domain twin of `random_gain(random_scale(time_roll(waveform)))` for a front end that computes
    `(log power - mean) * per_log_unit` (EAT: `per_log_unit = 1 / (2 std)`): each example's first `valid_frames`
    frames (the clip; frames after them are padding) are rolled circularly by an offset uniform in
    [0, valid_frames), and a waveform gain g adds `2 ln g * per_log_unit` to those frames (power scales by g^2).
    `roll_mag=False` applies the gain only. The random numbers are drawn in the waveform functions' order (roll
    offset, Beta(10, 10) + 0.5 magnitude, gain in dB); the roll moves whole frames instead of samples, and the log
    floor of digital silence is shifted too, so only the wrapped frame edge and silent bands differ from
    augmenting the waveform.
    """
    axis = time_axis % spec.dim()
    if axis == 0:
        raise ValueError("cannot roll along the batch axis")
    valid = min(valid_frames, spec.shape[axis])
    batch = spec.shape[0]
    clip, padding = spec.narrow(axis, 0, valid), spec.narrow(axis, valid, spec.shape[axis] - valid)
    log_gain = torch.zeros(batch)
    if roll_mag:
        clip = time_roll(clip, axis=axis, generator=generator)
        log_gain = torch.log(_beta(batch, 10.0, 10.0, generator) + 0.5)
    if max_gain_db > 0:
        log_gain = log_gain + _uniform(batch, -max_gain_db, max_gain_db, generator) * (np.log(10.0) / 20.0)
    shift = (2.0 * per_log_unit * log_gain).to(device=spec.device, dtype=spec.dtype)
    clip = clip + shift.view(-1, *([1] * (spec.dim() - 1)))
    return torch.cat([clip, padding], dim=axis)
