"""Batched inference helpers shared by the training tasks (validation, teacher predictions)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader


@torch.no_grad()
def predict_logits(tagger: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """`(logits (N, C), targets (N, C))` of a waveform tagger in eval mode over `ClipDataset` batches, in order."""
    tagger.eval()
    logits, targets = [], []
    for batch in loader:
        logits.append(tagger(batch["audio"].to(device)).float().cpu())
        targets.append(batch["labels"])
    return torch.cat(logits).numpy(), torch.cat(targets).numpy()
