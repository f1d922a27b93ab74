"""Benchmark: EAT pre-training step (student encodes visible patches only) vs a dense baseline.

Both variants see the same batch of 10-s clips and the same K inverse block masks per clip, use the same
encoder, decoder, teacher pass, loss and AdamW optimizer; the dense baseline encodes all N patches of
every clone (masked patches replaced by noise tokens). Prints clips/s of both and the speed-up.

    python benchmarks/eat_pretrain.py                       # CPU, dim 192, depth 4, batch 2, K 16, ratio 0.8
    python benchmarks/eat_pretrain.py --device cuda --dim 768 --depth 12 --heads 12 --batch 12
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from audiopipe.models.eat.frontend import EATFrontEnd
from audiopipe.models.eat.pretraining import EATPretrainer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=192, help="encoder width D (multiple of 16)")
    parser.add_argument("--depth", type=int, default=4, help="encoder blocks")
    parser.add_argument("--heads", type=int, default=3, help="attention heads")
    parser.add_argument("--decoder-depth", type=int, default=2, help="CNN decoder layers")
    parser.add_argument("--batch", type=int, default=2, help="clips per step")
    parser.add_argument("--clones", type=int, default=16, help="masked clones K per clip")
    parser.add_argument("--mask-ratio", type=float, default=0.8, help="masked fraction")
    parser.add_argument("--duration-s", type=float, default=10.0, help="clip length (padded to 1024 frames)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after 1 warm-up)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    return parser.parse_args()


def time_steps(
    model: EATPretrainer,
    step: Callable[..., dict[str, torch.Tensor]],
    spectrogram: torch.Tensor,
    masks: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    device: str,
) -> float:
    """Seconds per optimizer step (forward + backward + AdamW + EMA update), after one warm-up step."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95))
    elapsed = []
    for index in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = step(spectrogram, *masks)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 4.0)
        optimizer.step()
        model.ema_update(index + 1)
        if device == "cuda":
            torch.cuda.synchronize()
        if index:  # the first step warms up allocators and kernels
            elapsed.append(time.perf_counter() - start)
    return sum(elapsed) / len(elapsed)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    waveform = torch.rand(args.batch, int(16000 * args.duration_s)) - 0.5
    spectrogram = EATFrontEnd(16000, target_frames=1024)(waveform).to(args.device)  # (B, 1, 1024, 128)
    model = EATPretrainer(embed_dim=args.dim, depth=args.depth, num_heads=args.heads, decoder_channels=args.dim,
                          decoder_depth=args.decoder_depth, clones=args.clones, mask_ratio=args.mask_ratio)
    model = model.to(args.device).train()
    keep_index, mask_index, _ = model.make_masks(spectrogram, generator=torch.Generator().manual_seed(0))
    masks = (keep_index, mask_index)
    print(f"device={args.device} threads={torch.get_num_threads()} D={args.dim} depth={args.depth} "
          f"batch={args.batch} clones={args.clones} mask_ratio={args.mask_ratio} "
          f"visible/clone={keep_index.shape[1]} of {keep_index.shape[1] + mask_index.shape[1]} patches")
    eat_s = time_steps(model, model.forward, spectrogram, masks, args.steps, args.device)
    dense_s = time_steps(model, model.dense_baseline_step, spectrogram, masks, args.steps, args.device)
    print(f"EAT step   : {eat_s:.3f} s/step  {args.batch / eat_s:.3f} clips/s")
    print(f"dense step : {dense_s:.3f} s/step  {args.batch / dense_s:.3f} clips/s")
    print(f"speed-up   : {dense_s / eat_s:.2f}x (goal >= 3x)")


if __name__ == "__main__":
    main()
