"""`audiopipe complexity MODEL`: parameters, MACs for a clip (10 s by default) and analytical peak memory.

MODEL is a registry name (`mn10_as`, `mn_tagger`, `eat_base`, ...) built with `audiopipe.models.build_model`
(extra constructor arguments via `--model-arg KEY=VALUE`), or a final-model checkpoint `.pt` file.
The example input (batch 1) is chosen by what the model takes:
* a bare MobileNetV3 or DyMN: the EfficientAT log-mel of a zero clip, (1, 1, n_mels, frames), with the mel settings the
  published name implies (e.g. hop 480 for `mn10_as_hop_15`), as EfficientAT's complexity.py does;
* a model with `.sample_rate` (tagger and SED wrappers): a zero waveform (1, seconds x sample_rate);
* otherwise the model must define `example_input(duration_s: float) -> Tensor`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from audiopipe.audio.features import EfficientATMel
from audiopipe.models.complexity import ComplexityReport, find_mobilenet, profile
from audiopipe.models.dymn.model import DyMN
from audiopipe.models.mobilenet.model import MobileNetV3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="registry name (e.g. mn10_as, mn_tagger, eat_base) or a checkpoint .pt file")
    parser.add_argument("--input-seconds", type=float, default=10.0, help="clip length in seconds (default 10)")
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="constructor argument for a registry name (YAML value), repeatable, e.g. --model-arg width_mult=0.4",
    )
    parser.add_argument("--bits", type=int, default=16, help="bits per activation element for memory (default 16)")


def _parse_model_args(items: list[str]) -> dict[str, Any]:
    kwargs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--model-arg expects KEY=VALUE, got '{item}'")
        kwargs[key.strip()] = yaml.safe_load(value)
    return kwargs


def _load(model: str, kwargs: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    from audiopipe.models import build_model, load_model

    if model.endswith(".pt") or Path(model).is_file():
        loaded, payload = load_model(model)
        return loaded, {}
    mel_kwargs: dict[str, Any] = {}
    if model.startswith("mn") and model != "mn_tagger":
        from audiopipe.models.mobilenet import front_end_kwargs

        mel_kwargs = front_end_kwargs(model)
        if "input_dim_f" in kwargs:
            mel_kwargs["n_mels"] = kwargs["input_dim_f"]
    return build_model(model, **kwargs), mel_kwargs


def example_inputs(
    model: nn.Module, seconds: float, mel_kwargs: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(model input, inner MobileNetV3 input or None) for one clip of `seconds`."""
    if isinstance(model, (MobileNetV3, DyMN)):
        mel = EfficientATMel(**mel_kwargs)
        waveform = torch.zeros(1, round(seconds * mel.sample_rate))
        with torch.no_grad():
            spectrogram = mel.train()(waveform).unsqueeze(1)  # (1, 1, n_mels, frames); train mode as upstream
        return spectrogram, spectrogram
    if hasattr(model, "sample_rate"):
        sample_rate: Any = model.sample_rate
        waveform = torch.zeros(1, round(seconds * int(sample_rate)))
        net, front_end = find_mobilenet(model), getattr(model, "mel", None)
        mel_input = None
        if net is not None and isinstance(front_end, nn.Module):
            with torch.no_grad():
                mel_input = front_end.eval()(waveform)
        return waveform, mel_input
    if hasattr(model, "example_input"):
        make_input: Any = model.example_input
        return make_input(seconds), None
    raise ValueError(f"{type(model).__name__} has no `sample_rate` and no `example_input(duration_s)`")


def format_report(name: str, report: ComplexityReport, input_shape: tuple[int, ...], seconds: float) -> str:
    lines = [
        f"model          {name}",
        f"input          {tuple(input_shape)} for {seconds:g} s",
        f"parameters     {report.params / 1e6:.2f} M ({report.params:,})",
        f"MACs           {report.macs / 1e9:.2f} G ({report.macs:,}; {report.macs / 1e9:.3f} G)",
        f"peak memory    {report.peak_memory_kb:.1f} kB (plain execution, fp16 activations)",
    ]
    if report.peak_memory_efficient_kb is not None:
        lines.append(f"               {report.peak_memory_efficient_kb:.1f} kB (memory-efficient inference)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    model, mel_kwargs = _load(args.model, _parse_model_args(args.model_arg))
    model_input, mel_input = example_inputs(model, args.input_seconds, mel_kwargs)
    report = profile(model.eval(), model_input, bits_per_element=args.bits, mel_input=mel_input)
    print(format_report(args.model, report, tuple(model_input.shape), args.input_seconds))
    return 0
