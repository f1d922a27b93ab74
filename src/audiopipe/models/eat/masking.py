"""Inverse block masking for EAT pre-training (`compute_block_mask_2d`, EAT utils/data_utils.py; spec §3.2).

For every row (one masked clone of a clip) independently: draw `c = floor(L * (keep + adjust) / b^2)` block
centres uniformly with replacement over the (H, W) grid, mark a b x b square around each (clamped to
the grid), then force exactly `floor(L * keep)` marked cells (unmark random marked cells or mark random
unmarked ones). The marked cells are the *visible* patches (inverse mode), all others are masked, so
every row keeps the same number of patches and the student batch can be gathered densely.

Shapes (R rows = B * K clip-major clones, L = H * W patches, time-major n = t * W + f):
    keep_index  (R, L_keep)    ascending patch indices the student encodes
    mask_index  (R, L - L_keep) ascending patch indices the decoder must predict
    mask        (R, L) bool    True = masked
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class BlockMask(NamedTuple):
    keep_index: torch.Tensor
    mask_index: torch.Tensor
    mask: torch.Tensor


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Visible patches per row: base (512, 0.8) -> 102, large (512, 0.75) -> 128."""
    return int(num_patches * (1.0 - mask_ratio))


def compute_block_mask_2d(
    rows: int,
    grid: tuple[int, int],
    mask_ratio: float = 0.8,
    mask_prob_adjust: float = 0.07,
    block_size: int = 5,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> BlockMask:
    """Inverse block masks with an identical visible count per row.

    Args:
        rows: Number of masks to draw (B * K for K clones of B clips).
        grid: (H, W) patch grid, e.g. (64, 8) for 1024 frames x 128 mel bins.
        mask_ratio: Target masked fraction (base 0.8, large 0.75).
        mask_prob_adjust: Added to the keep ratio when counting block centres (base 0.07, large 0.1).
        block_size: Side b of each square block (5).

    Example:
        >>> m = compute_block_mask_2d(rows=4, grid=(64, 8))
        >>> tuple(m.keep_index.shape), tuple(m.mask_index.shape)
        ((4, 102), (4, 410))
    """
    height, width = grid
    length = height * width
    keep_ratio = 1.0 - mask_ratio
    n_keep = num_visible(length, mask_ratio)
    if not 0 < n_keep < length:
        raise ValueError(f"mask_ratio={mask_ratio} leaves {n_keep} of {length} patches visible")
    n_centres = int(length * (keep_ratio + mask_prob_adjust) / block_size**2)
    marked = torch.zeros(rows, height, width, dtype=torch.bool)
    if n_centres > 0:
        centres = torch.randint(0, length, (rows, n_centres), generator=generator)  # with replacement
        offsets = torch.arange(block_size) - (block_size - 1) // 2  # -2..2 for b = 5
        t = (centres // width)[:, :, None, None] + offsets[None, None, :, None]  # (R, c, b, 1)
        f = (centres % width)[:, :, None, None] + offsets[None, None, None, :]  # (R, c, 1, b)
        t, f = t.clamp(0, height - 1), f.clamp(0, width - 1)  # squares collapse onto the border
        cells = (t * width + f).reshape(rows, -1)  # (R, c * b * b)
        marked.view(rows, length).scatter_(1, cells, True)
    # Marked cells score in [1, 2), unmarked in [0, 1): the top n_keep are a uniform subset of the
    # marked cells when there are too many, or all of them plus uniform unmarked cells when too few.
    scores = marked.view(rows, length).float() + torch.rand(rows, length, generator=generator)
    keep_index = scores.topk(n_keep, dim=1).indices.sort(dim=1).values  # (R, n_keep)
    mask = torch.ones(rows, length, dtype=torch.bool).scatter_(1, keep_index, False)
    mask_index = mask.nonzero()[:, 1].view(rows, length - n_keep)  # (R, L - n_keep) ascending
    return BlockMask(keep_index.to(device), mask_index.to(device), mask.to(device))


def clone_masks(
    batch_size: int,
    clones: int,
    grid: tuple[int, int],
    mask_ratio: float = 0.8,
    mask_prob_adjust: float = 0.07,
    block_size: int = 5,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> BlockMask:
    """K independent masks per clip, rows clip-major (row b * K + k is clone k of clip b)."""
    return compute_block_mask_2d(
        batch_size * clones, grid, mask_ratio, mask_prob_adjust, block_size, generator=generator, device=device
    )
