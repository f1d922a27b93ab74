"""`audiopipe export onnx CHECKPOINT OUT.onnx`: the MobileNet student as one ONNX graph, front end included.

The graph maps `waveform` (batch, samples) float32 at the checkpoint's sample rate to `logits`
(batch, classes); both axes are dynamic. `torch.onnx.export` (TorchScript exporter, `dynamo=False`)
cannot export the complex `torch.stft` of `EfficientATMel`, so the eval-mode front end is re-expressed
with real operations that compute the same numbers: pre-emphasis, reflect padding, a strided Conv1d
whose kernels are the windowed cosine/sine DFT rows (= the STFT), power, the eval mel filterbank, log
and the fixed normalisation. After writing, the file is checked with onnxruntime against the torch
model on a random clip (max |Δlogit| must stay ≤ `--atol`, 1e-4 by default). Models without an
`EfficientATMel` front end are exported as they are, if the exporter can trace them.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audiopipe.audio.features import LOG_OFFSET, NORM_SCALE, NORM_SHIFT, PREEMPHASIS, EfficientATMel

log = logging.getLogger(__name__)


class ExportableMel(nn.Module):
    """Eval-mode `EfficientATMel` built from ONNX-friendly real operations (no complex tensors).

    Example:
        >>> mel = EfficientATMel(sample_rate=16000, n_mels=32).eval()
        >>> x = torch.randn(1, 16000) * 0.1
        >>> bool(torch.allclose(ExportableMel(mel)(x), mel(x), atol=1e-3))
        True
    """

    dft: torch.Tensor
    banks: torch.Tensor

    def __init__(self, mel: EfficientATMel) -> None:
        super().__init__()
        n_fft, win = mel.n_fft, mel.win_length
        window = torch.zeros(n_fft, dtype=torch.float64)
        left = (n_fft - win) // 2  # torch.stft centres a shorter window inside n_fft
        window[left:left + win] = mel.window.double()
        bins = n_fft // 2 + 1
        angle = 2 * math.pi * torch.arange(bins, dtype=torch.float64)[:, None] * torch.arange(n_fft)[None] / n_fft
        kernels = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])  # (2 * bins, n_fft)
        self.register_buffer("dft", kernels.float().unsqueeze(1), persistent=False)  # (2 * bins, 1, n_fft)
        self.register_buffer("banks", mel.eval_mel_banks.clone().float(), persistent=False)  # (n_mels, bins)
        self.n_fft, self.hop_length, self.bins = n_fft, mel.hop_length, bins

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = waveform[:, 1:] - PREEMPHASIS * waveform[:, :-1]  # (B, T - 1)
        x = F.pad(x.unsqueeze(1), (self.n_fft // 2, self.n_fft // 2), mode="reflect")  # (B, 1, T - 1 + n_fft)
        spec = F.conv1d(x, self.dft, stride=self.hop_length)  # (B, 2 * bins, frames)
        real, imag = spec[:, : self.bins], spec[:, self.bins :]
        mel = torch.matmul(self.banks, real * real + imag * imag)  # (B, n_mels, frames)
        return (torch.log(mel + LOG_OFFSET) + NORM_SHIFT) / NORM_SCALE


class ExportableTagger(nn.Module):
    """waveform (B, T) -> logits (B, C) for a `MobileNetTagger`-like model (`.mel` + `.net`)."""

    def __init__(self, tagger: nn.Module) -> None:
        super().__init__()
        self.mel = ExportableMel(tagger.mel)  # type: ignore[arg-type]
        self.net: Any = tagger.net

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.net(self.mel(waveform))[0]


def exportable(model: nn.Module) -> nn.Module:
    """The module to trace: the real-valued front end for EfficientAT taggers, else the model itself."""
    if isinstance(getattr(model, "mel", None), EfficientATMel) and hasattr(model, "net"):
        return ExportableTagger(model).eval()
    return model.eval()


def export_onnx(checkpoint: Path, out: Path, *, seconds: float = 10.0, opset: int = 17) -> tuple[Path, int]:
    """Write `out` from a final-model checkpoint; returns (out, sample_rate)."""
    from audiopipe.models import load_model

    model, payload = load_model(checkpoint)
    sample_rate = int(payload["sample_rate"])
    example = torch.zeros(1, max(2048, round(seconds * sample_rate)))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        exportable(model), (example,), str(out), dynamo=False, opset_version=opset,
        input_names=["waveform"], output_names=["logits"],
        dynamic_axes={"waveform": {0: "batch", 1: "samples"}, "logits": {0: "batch"}},
    )  # fmt: skip
    return out, sample_rate


def check_onnx(checkpoint: Path, onnx_path: Path, *, seconds: float = 3.0, seed: int = 0) -> float:
    """Max |onnxruntime − torch| over the logits of a random clip (batch 2) of `seconds` seconds."""
    import onnxruntime as ort

    from audiopipe.models import load_model

    model, payload = load_model(checkpoint)
    generator = torch.Generator().manual_seed(seed)
    clip = 0.3 * torch.randn(2, round(seconds * int(payload["sample_rate"])), generator=generator).clamp(-3, 3)
    with torch.no_grad():
        expected = model.eval()(clip).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"waveform": clip.numpy()})
    return float(np.abs(got - expected).max())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=["onnx"], help="export format")
    parser.add_argument("checkpoint", type=Path, help="final-model checkpoint (e.g. data/distill_mobilenet/student.pt)")
    parser.add_argument("out", type=Path, help="output file (e.g. student.onnx)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the tracing example (axes stay dynamic)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    parser.add_argument("--atol", type=float, default=1e-4, help="max |logit difference| accepted by the check")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")


def run(args: argparse.Namespace) -> int:
    out, sample_rate = export_onnx(args.checkpoint, args.out, seconds=args.seconds, opset=args.opset)
    log.info("wrote %s (input: waveform (batch, samples) float32 at %d Hz, output: logits)", out, sample_rate)
    if args.no_check:
        return 0
    diff = check_onnx(args.checkpoint, out)
    if diff > args.atol:
        log.error("%s: onnxruntime logits differ from torch by %.2e > %.0e", out, diff, args.atol)
        return 1
    log.info("onnxruntime matches torch: max |logit difference| %.2e", diff)
    return 0
