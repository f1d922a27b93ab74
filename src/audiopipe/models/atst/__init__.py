"""ATST-Frame family: front end, `FrameAST` encoder and checkpoint loader.

`build("atst_base")` is the published ATST-Frame base encoder (85,419,264 parameters); `build("atst_demo")` is
a tiny CPU preset with the same patching (64 mel x 4 frames -> one 40-ms token). Keyword arguments override the
preset's constructor arguments; `checkpoint=<path>` loads an `atst_as2M.ckpt`-style file strictly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audiopipe.models.atst.checkpoint import load_atst_checkpoint
from audiopipe.models.atst.encoder import FrameAST
from audiopipe.models.atst.frontend import ATSTFrontEnd

__all__ = ["PRESETS", "ATSTFrontEnd", "FrameAST", "build", "load_atst_checkpoint"]

PRESETS: dict[str, dict[str, Any]] = {
    "atst_base": {"dim": 768, "depth": 12, "num_heads": 12},  # audiossl `FrameAST_base`
    "atst_demo": {"dim": 96, "depth": 2, "num_heads": 4},
}


def build(name: str, checkpoint: str | Path | None = None, **kwargs: Any) -> FrameAST:
    """Build a `FrameAST` preset by name; kwargs override preset values, `checkpoint` loads weights strictly."""
    if name not in PRESETS:
        raise KeyError(f"unknown ATST model '{name}'; choose one of {sorted(PRESETS)}")
    encoder = FrameAST(**{**PRESETS[name], **kwargs})
    if checkpoint is not None:
        load_atst_checkpoint(encoder, checkpoint)
    return encoder
