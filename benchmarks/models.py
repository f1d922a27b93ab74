"""Throughput of the model families: forward and forward+backward clips/s on waveform batches.

Default: CPU, batch 8 x 10 s clips, float32; `--device cuda --bf16` adds bf16 autocast on a GPU.
Every row is a waveform-in tagger (B, T) at `model.sample_rate` -> logits, so the front end is included.

    python benchmarks/models.py                       # all rows
    python benchmarks/models.py --rows mn04 mn10 --repeats 2

Prints the torch thread count first; record the numbers in the README together with that count and the CPU.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from audiopipe.models import build_model

# (row name, build function) -> a tagger mapping waveform (B, T) at `.sample_rate` to logits (B, C).
# EAT and ATST-SED engineers: append your rows here (e.g. ("eat_demo", lambda: build_model("eat_tagger", ...)),
# ("atst_sed_base", ...)); SED wrappers returning (strong, weak) work too, the loss sums every output.
ROWS: list[tuple[str, Callable[[], nn.Module]]] = [
    ("mn04", lambda: build_model("mn_tagger", width_mult=0.4, n_classes=527)),
    ("mn10", lambda: build_model("mn_tagger", width_mult=1.0, n_classes=527)),
    ("eat_demo", lambda: build_model("eat_tagger", size="eat_demo", n_classes=527, sample_rate=32000)),
    ("eat_base", lambda: build_model("eat_tagger", size="eat_base", n_classes=527, sample_rate=32000)),
    ("atst_sed_demo", lambda: build_model("sed_atst", encoder_preset="atst_demo")),  # (strong, weak) outputs
    ("atst_sed_base", lambda: build_model("sed_atst", encoder_preset="atst_base")),  # encoder trainable (stage 2)
]


def _loss(output: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    outputs = output if isinstance(output, tuple) else (output,)
    return sum(o.float().mean() for o in outputs)  # type: ignore[return-value]


def clips_per_second(
    model: nn.Module, waveform: torch.Tensor, backward: bool, repeats: int, autocast_dtype: torch.dtype | None
) -> float:
    """Median clips/s over `repeats` timed steps after one warm-up step."""
    model.train(backward)
    timings = []
    for step in range(repeats + 1):
        start = time.perf_counter()
        with torch.autocast(waveform.device.type, dtype=autocast_dtype or torch.float32, enabled=bool(autocast_dtype)):
            if backward:
                _loss(model(waveform)).backward()
                model.zero_grad(set_to_none=True)
            else:
                with torch.no_grad():
                    model(waveform)
        if waveform.device.type == "cuda":
            torch.cuda.synchronize()
        if step > 0:
            timings.append(time.perf_counter() - start)
    return waveform.shape[0] / sorted(timings)[len(timings) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="*", default=None, help="row names to run (default: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per measurement (after one warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="also measure under bf16 autocast")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
          f"batch {args.batch_size} x {args.seconds:g} s")  # fmt: skip
    print(f"{'model':<16} {'precision':<9} {'forward clips/s':>16} {'fwd+bwd clips/s':>16}")
    precisions: list[torch.dtype | None] = [None, torch.bfloat16] if args.bf16 else [None]
    for name, build in ROWS:
        if args.rows and name not in args.rows:
            continue
        model = build().to(args.device)
        waveform = torch.randn(args.batch_size, round(args.seconds * model.sample_rate), device=args.device) * 0.1
        for dtype in precisions:
            forward = clips_per_second(model, waveform, False, args.repeats, dtype)
            both = clips_per_second(model, waveform, True, args.repeats, dtype)
            label = "bf16" if dtype else "fp32"
            print(f"{name:<16} {label:<9} {forward:>16.1f} {both:>16.1f}", flush=True)


if __name__ == "__main__":
    main()
