"""Unit tests for audiopipe.losses.ssl: EAT teacher targets and the Utterance-Frame Objective."""

from __future__ import annotations

import math

import pytest
import torch

from audiopipe.losses.ssl import frame_loss, teacher_targets, utterance_frame_loss, utterance_loss


def test_losses_vanish_for_identical_inputs() -> None:
    x = torch.randn(6, 10, 16)
    assert frame_loss(x, x) == 0
    assert utterance_loss(x[:, 0], x[:, 0]) == 0
    assert utterance_frame_loss(x, x, x[:, 0], x[:, 0])["loss"] == 0


def test_frame_loss_is_patch_mean_of_scaled_channel_sum() -> None:
    prediction, target = torch.zeros(2, 3, 16), torch.ones(2, 3, 16)
    # every patch: sum_d 1 / sqrt(16) = 16 / 4 = 4; the mean over 6 patches stays 4
    assert frame_loss(prediction, target).item() == pytest.approx(4.0)


def test_utterance_loss_sums_over_clone_rows() -> None:
    one_row = utterance_loss(torch.zeros(1, 16), torch.ones(1, 16))
    five_rows = utterance_loss(torch.zeros(5, 16), torch.ones(5, 16))
    assert one_row.item() == pytest.approx(4.0)
    assert five_rows.item() == pytest.approx(5 * one_row.item())


def test_objective_weights_and_keys() -> None:
    pred, target = torch.randn(4, 7, 8), torch.randn(4, 7, 8)
    cls, cls_target = torch.randn(4, 8), torch.randn(4, 8)
    out = utterance_frame_loss(pred, target, cls, cls_target, frame_weight=2.0, utterance_weight=0.5)
    assert set(out) == {"loss", "frame_loss", "utterance_loss"}
    expected = 2.0 * out["frame_loss"] + 0.5 * out["utterance_loss"]
    torch.testing.assert_close(out["loss"], expected)
    manual = ((pred - target) ** 2).sum(-1).mean() / math.sqrt(8)
    torch.testing.assert_close(out["frame_loss"], manual)


def test_loss_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ"):
        frame_loss(torch.zeros(2, 3, 4), torch.zeros(2, 4, 4))


def test_targets_are_layer_normalised_per_patch() -> None:
    layers = [torch.randn(2, 12, 16) * 5 + 3 for _ in range(3)]
    y = teacher_targets(layers)
    assert y.shape == (2, 12, 16) and y.dtype == torch.float32
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 12), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(2, 12), atol=1e-3, rtol=0)


def test_targets_ignore_per_clip_channel_offsets_and_scales() -> None:
    # Instance norm over patches removes any per-(clip, channel) affine change of a layer.
    layer = torch.randn(2, 12, 16)
    scaled = layer * torch.rand(2, 1, 16).add(0.5) + torch.randn(2, 1, 16)
    torch.testing.assert_close(teacher_targets([layer]), teacher_targets([scaled]), atol=1e-4, rtol=1e-4)


def test_targets_average_all_or_top_k_layers() -> None:
    layers = [torch.randn(1, 8, 16) for _ in range(4)]
    torch.testing.assert_close(teacher_targets(layers, top_k=1), teacher_targets(layers[-1:]))
    assert not torch.allclose(teacher_targets(layers), teacher_targets(layers, top_k=2))


def test_gradient_flows_to_predictions() -> None:
    pred = torch.randn(2, 5, 8, requires_grad=True)
    cls = torch.randn(2, 8, requires_grad=True)
    utterance_frame_loss(pred, torch.randn(2, 5, 8), cls, torch.randn(2, 8))["loss"].backward()
    assert pred.grad is not None and cls.grad is not None
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
