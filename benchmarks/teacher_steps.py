"""How many steps the EAT teacher needs: valid/test mAP and ROC-AUC of `finetune_eat`'s tagger against its step count.

Caches the tagger's normalised fbanks of the packed clips once (train + weak subset, valid, test), then trains the
tagger of the `finetune_eat` section of params.yaml on them (AdamW with layer-wise LR decay under fairseq's cosine,
BCE normalised as the section says) without the waveform/fbank augmentation, and reports the metrics every
`--eval-every` steps beside the linear probe on log-mel statistics that `evaluate` shows. It answers "is the teacher
short of steps or of capacity?" in minutes, where a `dvc exp run` per step budget would take one stage run each.

    python benchmarks/teacher_steps.py --clips data/pack_hdf5 --steps 1200 --eval-every 300 --lr 5e-4
    python benchmarks/teacher_steps.py --init data/pretrain_eat/eat.pt --lr 2e-3 --pooling mean

Measured on 2 CPU cores (2026-12-07, demo preset, random init, the default 1350 clips, batch 16), test mAP / ROC-AUC
at 300 / 600 / 900 / 1200 steps: CLS head, lr 5e-4: 0.38 / 0.63, 0.44 / 0.70, 0.41 / 0.69, 0.43 / 0.70 (303 s);
`--pooling mean --lr 2e-3`: 0.40 / 0.65, 0.52 / 0.76, 0.57 / 0.78, 0.56 / 0.77 (281 s). The loss stays at the
class-prior level for ~300 steps; the make-run teacher had 268 until commit e0c17d4 (now 938: 7 epochs, mean pooling,
lr 2e-3, random init; its `make run` test 0.572 / 0.773). Linear probe 0.39 / 0.64.
Goal: a teacher preset is worth a `make run` only when it passes the no-KD student (test mAP 0.54, ROC-AUC 0.77).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from audiopipe.config import FinetuneEatConfig, load_params
from audiopipe.data.hdf5 import ClipReader
from audiopipe.evaluation.baselines import PROBE_ROW, tagging_baselines
from audiopipe.metrics.tagging import tagging_metrics
from audiopipe.models.eat.tagger import EATTagger, param_groups_layer_decay
from audiopipe.training.finetune_eat import bce_loss, build_tagger
from audiopipe.training.pretrain import open_splits
from audiopipe.training.schedulers import fairseq_cosine


@torch.no_grad()
def cached_fbanks(
    tagger: EATTagger, clips_dir: Path, split: str, limit: int, seconds: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised fbank (N, 1, T_f, 128) in fp16, targets (N, C)) of the first `limit` clips of a split."""
    dataset = open_splits(clips_dir, [split], seconds)[0]
    specs, targets = [], []
    for start in range(0, min(limit, len(dataset)), 32):
        items = [dataset[i] for i in range(start, min(start + 32, limit, len(dataset)))]
        specs.append(tagger.frontend(torch.stack([item["audio"] for item in items])).half())
        targets.append(torch.stack([item["labels"] for item in items]))
    return torch.cat(specs), torch.cat(targets)


@torch.no_grad()
def scores(tagger: EATTagger, specs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Tagging metrics of the tagger on cached fbanks (eval mode)."""
    tagger.eval()
    logits = torch.cat([tagger.forward_spectrogram(specs[i : i + 16].float()) for i in range(0, len(specs), 16)])
    tagger.train()
    return tagging_metrics(targets.numpy(), logits.numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, default=Path("data/pack_hdf5"), help="folder with the <split>.h5 packs")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--init", default="random", help="'random' or a pretrain_eat checkpoint (eat.pt)")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--eval-every", type=int, default=300)
    parser.add_argument("--train-clips", type=int, default=1350, help="train + weak clips cached (fp16, ~0.26 MB each)")
    parser.add_argument("--lr", type=float, default=None, help="peak LR (default: finetune_eat.lr)")
    parser.add_argument("--pooling", choices=["cls", "mean"], default="cls", help="cls: official EAT head")
    args = parser.parse_args()
    if args.steps < 1 or args.eval_every < 1:
        parser.error("--steps and --eval-every must be at least 1")

    cfg = load_params("finetune_eat", FinetuneEatConfig, args.params)
    cfg = dataclasses.replace(
        cfg,
        init="random" if args.init == "random" else "pretrained",
        drop_path=0.0,
        lr=args.lr if args.lr is not None else cfg.lr,
    )
    torch.manual_seed(cfg.seed)
    train_names = [split for split in cfg.train_splits if (args.clips / f"{split}.h5").is_file()]
    train_readers = [ClipReader(args.clips / f"{split}.h5") for split in train_names]
    pretrained = None if args.init == "random" else Path(args.init)
    first = train_readers[0]
    tagger, _ = build_tagger(cfg, pretrained, len(first.class_names), first.sample_rate)
    tagger.pooling = args.pooling

    started = time.perf_counter()
    parts = [cached_fbanks(tagger, args.clips, split, args.train_clips, cfg.clip_seconds) for split in train_names]
    train_x = torch.cat([p[0] for p in parts])[: args.train_clips]
    train_y = torch.cat([p[1] for p in parts])[: args.train_clips]
    held_out = {split: cached_fbanks(tagger, args.clips, split, 10**9, cfg.clip_seconds) for split in ("valid", "test")}
    probe = tagging_baselines(
        train_readers,
        ClipReader(args.clips / "test.h5"),
        cfg.clip_seconds,
        16,
    )[PROBE_ROW]
    print(
        f"{len(train_x)} train clips cached in {time.perf_counter() - started:.0f} s; {cfg.preset} tagger, "
        f"{sum(p.numel() for p in tagger.parameters()):,} parameters, init {args.init}, lr {cfg.lr:g}, "
        f"pooling {args.pooling}; linear probe on test: mAP {probe['test/mAP']:.3f}, "
        f"ROC-AUC {probe['test/roc_auc']:.3f}"
    )

    groups = param_groups_layer_decay(tagger, lr=cfg.lr, layer_decay=cfg.layer_decay, weight_decay=cfg.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler = fairseq_cosine(
        optimizer,
        warmup_steps=round(cfg.warmup_fraction * args.steps),
        total_steps=args.steps,
        min_lr=cfg.lr * cfg.min_lr_ratio,
    )
    generator, losses, started = torch.Generator().manual_seed(cfg.seed), [], time.perf_counter()
    print("step  train_loss  valid_mAP  valid_AUC  test_mAP  test_AUC  seconds")
    for step in range(1, args.steps + 1):
        index = torch.randint(0, len(train_x), (cfg.batch_size,), generator=generator)
        loss = bce_loss(tagger.forward_spectrogram(train_x[index].float()), train_y[index], cfg.bce_normaliser)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            valid, test = (scores(tagger, *held_out[split]) for split in ("valid", "test"))
            print(
                f"{step:4d}  {np.mean(losses[-args.eval_every :]):10.4f}  {valid['mAP']:9.3f}  {valid['roc_auc']:9.3f}"
                f"  {test['mAP']:8.3f}  {test['roc_auc']:8.3f}  {time.perf_counter() - started:7.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
