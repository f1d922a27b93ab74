"""Model registry: `build_model(name, **kwargs)` and `load_model(path)`.

Names are dispatched by an explicit table to the family package's `build(name, **kwargs)`; no import magic.
Families: MobileNetV3 / EfficientAT (`mn04_as` ... `mn40_as`, ...), EAT (`eat_*`), ATST-Frame (`atst_*`),
SED wrappers (`sed_*`), and the tagger wrappers that the stages save (`*_tagger`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, TypeVar, overload

from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)

# prefix -> module that defines build(name, **kwargs) -> nn.Module
_FAMILIES: dict[str, str] = {
    "mn": "audiopipe.models.mobilenet",
    "dymn": "audiopipe.models.dymn",
    "eat": "audiopipe.models.eat",
    "atst": "audiopipe.models.atst",
    "crnn": "audiopipe.models.sed",
    "sed": "audiopipe.models.sed",
}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a model by registry name, e.g. `build_model("mn10_as")`, `build_model("eat_base")`."""
    prefix = name.split("_")[0].rstrip("0123456789")
    if prefix not in _FAMILIES:
        raise KeyError(f"unknown model name '{name}'; known families: {sorted(_FAMILIES)}")
    module = importlib.import_module(_FAMILIES[prefix])
    return module.build(name, **kwargs)


@overload
def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]: ...


@overload
def load_model(path: str | Path, expected: type[ModuleT]) -> tuple[ModuleT, dict[str, Any]]: ...


def load_model(path: str | Path, expected: type[nn.Module] = nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a final-model checkpoint written by the stages (strict load). Returns (model, payload).

    `expected` (a model class such as `SEDModel`) types the result; a checkpoint of another builder is a TypeError
    naming both, raised before any weights are loaded.
    """
    import torch

    from audiopipe.storage import check_state_dict, load_checkpoint, load_state_dict_strict

    payload = load_checkpoint(path)
    with torch.device("meta"):  # shapes only: a forged builder_kwargs (width_mult 400) must not allocate GBs
        skeleton = build_model(payload["builder"], **payload["builder_kwargs"])
    if not isinstance(skeleton, expected):
        raise TypeError(f"{path}: holds a '{payload['builder']}' model ({type(skeleton).__name__}), "
                        f"not the {expected.__name__} expected here")
    check_state_dict(skeleton, payload["model"], source=str(path))
    model = build_model(payload["builder"], **payload["builder_kwargs"])
    load_state_dict_strict(model, payload["model"], source=str(path))
    return model.eval(), payload
