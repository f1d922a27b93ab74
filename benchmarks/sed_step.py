"""ATST-SED training step on CPU with and without the per-clip feature cache (`cache_features`).

Times one `SEDStep` (augmentation, student forward + backward, mean-teacher forward; no optimizer) of the
`atst_stage1` / `atst_stage2` sections of params.yaml on random 10-s clips with those sections' batch sizes,
once with `cache_features: false` and once with a warm cache (every clip of the batch seen before).

    python benchmarks/sed_step.py                   # both phases, demo params
    python benchmarks/sed_step.py --phases 1 --repeats 5

Goal: the warm cache makes the demo phase-1 step at least 1.3x faster (it removes the frozen encoder and
the SED STFT from every step after the first epoch; the CRNN forward/backward and the mean-teacher CRNN
forward remain). Phase 2 trains the encoder, so only the SED mel is cached there: expect a smaller gain.
CPU step times vary by about 20 % from run to run: use --repeats 5 and compare several runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from audiopipe.config import AtstStage1Config, AtstStage2Config, SedTrainingConfig, load_params
from audiopipe.models import build_model
from audiopipe.models.ema import EMA
from audiopipe.training.finetune_sed import output_frames, step_settings
from audiopipe.training.sed.step import SEDStep


def step_seconds(arch: AtstStage1Config, cfg: SedTrainingConfig, phase: int, repeats: int) -> float:
    """Median seconds of one step + backward on a fixed batch (one untimed warm-up step fills the cache).

    `arch` (the atst_stage1 section) gives the model both phases train; `cfg` the phase's batch and augmentation.
    """
    torch.manual_seed(0)
    kwargs = {} if arch.model == "sed_crnn" else {"encoder_preset": arch.encoder_preset, **arch.encoder_kwargs}
    model = build_model(arch.model, n_classes=10, **kwargs, **arch.crnn_kwargs)
    if model.encoder is not None:
        model.freeze_encoder(phase == 1)
    n = sum(cfg.batch_sizes)
    subset = torch.cat([torch.full((b,), kind) for kind, b in enumerate(cfg.batch_sizes)])
    batch = {
        "audio": 0.1 * torch.randn(n, int(cfg.clip_duration_s * model.sample_rate)),
        "strong": torch.zeros(n, 10, output_frames(model, cfg.clip_duration_s)),
        "weak": torch.zeros(n, 10),
        "subset": subset,
        "split": [str(int(k)) for k in subset],
        "clip_id": [str(i) for i in range(n)],
    }
    step = SEDStep(step_settings(cfg), phase, EMA(model, decay=0.9), torch.Generator().manual_seed(0), rampup_steps=1)
    timings = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        step(model, batch, torch.device("cpu"))["loss"].backward()
        model.zero_grad(set_to_none=True)
        if i > 0:
            timings.append(time.perf_counter() - start)
    return sorted(timings)[len(timings) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--phases", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    arch = load_params("atst_stage1", AtstStage1Config, args.params)
    for phase in args.phases:
        cfg = arch if phase == 1 else load_params("atst_stage2", AtstStage2Config, args.params)
        plain = step_seconds(arch, dataclasses.replace(cfg, cache_features=False), phase, args.repeats)
        cached = step_seconds(arch, dataclasses.replace(cfg, cache_features=True), phase, args.repeats)
        print(
            f"phase {phase}, batch {cfg.batch_sizes}: {plain:.2f} s/step without the cache, {cached:.2f} s/step with "
            f"a warm cache: {plain / cached:.2f}x"
        )


if __name__ == "__main__":
    main()
