"""`audiopipe export onnx CHECKPOINT OUT.onnx`: the MobileNet student as one ONNX graph, front end included.

The graph maps `waveform` (batch, samples) float32 at the checkpoint's sample rate to `logits`
(batch, classes); both axes are dynamic. `torch.onnx.export` (TorchScript exporter, `dynamo=False`)
cannot export the complex `torch.stft` of `EfficientATMel`, so the eval-mode front end is re-expressed
with real operations that compute the same numbers: pre-emphasis, reflect padding, a strided Conv1d
whose kernels are the windowed cosine/sine DFT rows (= the STFT), power, the eval mel filterbank, log
and the fixed normalisation. After writing, the file is checked with onnxruntime against the torch
model on a random clip (max |Δlogit| must stay ≤ `--atol`, 1e-4 by default). Models without an
`EfficientATMel` front end are exported as they are, if the exporter can trace them. CHECKPOINT may be any
tagger `audiopipe tag` accepts (e.g. an EfficientAT `mn10_as_mAP_471.pt`); other kinds are refused in one line.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_MOVED = ("ExportableMel", "ExportableTagger", "exportable")  # torch-heavy: imported on first use


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from audiopipe.inference import onnx_export

        return getattr(onnx_export, name)
    raise AttributeError(name)


def export_onnx(checkpoint: Path, out: Path, *, seconds: float = 10.0, opset: int = 17) -> tuple[Path, int]:
    """Write `out` from a final-model checkpoint; returns (out, sample_rate)."""
    import torch

    from audiopipe.inference.checkpoints import load_for_inference, require_kind
    from audiopipe.inference.onnx_export import exportable

    loaded = load_for_inference(checkpoint)
    require_kind(loaded, ("tagger",), flag="CHECKPOINT")
    model, sample_rate = loaded.model, loaded.sample_rate
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
    import numpy as np
    import onnxruntime as ort
    import torch

    from audiopipe.inference.checkpoints import load_for_inference

    loaded = load_for_inference(checkpoint)
    model = loaded.model
    generator = torch.Generator().manual_seed(seed)
    clip = 0.3 * torch.randn(2, round(seconds * loaded.sample_rate), generator=generator).clamp(-3, 3)
    with torch.no_grad():
        expected = model.eval()(clip).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"waveform": clip.numpy()})
    return float(np.abs(got - expected).max())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=["onnx"], help="export format")
    parser.add_argument("checkpoint", type=Path,
                        help="tagger checkpoint (e.g. data/distill_mobilenet/student.pt or mn10_as_mAP_471.pt)")
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
