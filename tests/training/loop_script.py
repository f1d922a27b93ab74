"""Subprocess helper for test_loop: trains the toy model with resume; argv = resume, out, per-step sleep."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from audiopipe.training import distributed
from audiopipe.training.loaders import make_loader
from audiopipe.training.loop import FitSettings, Resume, fit


class Toy(Dataset):
    def __len__(self) -> int:
        return 32

    def __getitem__(self, i: int) -> dict[str, Any]:
        x = torch.sin(torch.arange(4.0) * (i + 1))
        return {"x": x, "y": (x.sum(0, keepdim=True) > 0).float()}


def main() -> None:
    resume, out, pause = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = make_loader(Toy(), batch_size=2, shuffle=True, seed=5)

    def step(m: nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        time.sleep(pause)
        noisy = batch["x"] + 0.1 * torch.randn_like(batch["x"])
        return {"loss": nn.functional.binary_cross_entropy_with_logits(m(noisy), batch["y"])}

    fit(model, loader, step, optimizer,
        settings=FitSettings(epochs=4, checkpoint_every_steps=3, seed=5, progress=False), resume=Resume(resume))
    if distributed.is_main_process():
        torch.save(model.state_dict(), out)
        world = torch.distributed.get_world_size() if distributed.is_distributed() else 1
        out.with_name(out.stem + "_world_size.txt").write_text(str(world))


if __name__ == "__main__":
    main()
