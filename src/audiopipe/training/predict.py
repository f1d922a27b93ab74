"""Task `predict_teacher`: teacher logits for every packed clip, written clip-aligned to `predictions.h5`.

Each checkpoint is a final-model payload (`audiopipe.models.load_model`) of a tagger mapping waveform
`(B, T)` at `.sample_rate` to logits `(B, C)`. With several checkpoints the logits are averaged
(ensemble). Every split of `cfg.splits` packed in `clips_dir` is predicted in pack order, so row i of
`/<split>/logits` belongs to clip i of `<split>.h5`. A checkpoint whose label list differs from the pack's
is refused before any work (`PredictionsError`), and so is writing such a file.

Returns `TaskResult` with per-split clip counts and, for labelled splits, the ensemble's macro mAP
(`<split>/mAP`); no checkpoint is written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio
from torch import nn
from torch.utils.data import DataLoader

from audiopipe.config import PredictTeacherConfig
from audiopipe.data.datasets import ClipDataset
from audiopipe.data.predictions import check_class_names, write_predictions
from audiopipe.metrics.tagging import tagging_metrics
from audiopipe.models import load_model
from audiopipe.storage import file_sha256
from audiopipe.training import distributed
from audiopipe.training.loop import seed_everything
from audiopipe.training.runner import TaskResult

log = logging.getLogger(__name__)


def load_teachers(paths: Sequence[Path], class_names: Sequence[str]) -> tuple[list[nn.Module], str]:
    """Load every checkpoint (eval mode) and check its labels; returns the models and an identity string."""
    if not paths:
        raise ValueError("predict_teacher needs at least one checkpoint")
    models, parts = [], []
    for path in paths:
        model, payload = load_model(path)
        check_class_names(payload.get("class_names", []), class_names, str(path))
        if not hasattr(model, "sample_rate"):
            raise TypeError(f"{path}: {type(model).__name__} is not a tagger (no .sample_rate); "
                            "pass a fine-tuned tagger checkpoint such as eat_tagger.pt")
        models.append(model.eval())
        parts.append(f"{payload['builder']}:{path.name}@{file_sha256(path)[:12]}")
    return models, " + ".join(parts)


@torch.no_grad()
def ensemble_logits(models: Sequence[nn.Module], loader: DataLoader, sample_rate: int, device: torch.device,
                    amp: str) -> tuple[list[str], np.ndarray]:
    """`(clip_ids, mean logits (N, C))` over `loader`, each model fed audio at its own `.sample_rate`."""
    clip_ids: list[str] = []
    chunks: list[torch.Tensor] = []
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    for batch in loader:
        audio = batch["audio"].to(device)
        total = torch.zeros(())
        for model in models:
            rate = int(model.sample_rate)  # type: ignore[arg-type]
            wave = audio if rate == sample_rate else torchaudio.functional.resample(audio, sample_rate, rate)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None and device.type == "cuda"):
                logits = model(wave).float()
            total = total.to(logits.device) + logits
        chunks.append((total / len(models)).cpu())
        clip_ids.extend(batch["clip_id"])
    return clip_ids, torch.cat(chunks).numpy()


def predict_teacher(
    cfg: PredictTeacherConfig,
    *,
    clips_dir: Path,
    checkpoints: list[Path],
    out: Path,
    tracker: Any = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> TaskResult:
    """Write `out` (predictions.h5) for the packed splits; `checkpoints` + `cfg.extra_checkpoints` are ensembled."""
    seed_everything(cfg.seed)
    clips_dir = Path(clips_dir)
    splits = [s for s in cfg.splits if (clips_dir / f"{s}.h5").is_file()]
    if not splits:
        raise FileNotFoundError(f"{clips_dir}: none of the splits {cfg.splits} is packed; run pack_hdf5 first")
    datasets = {s: ClipDataset(clips_dir / f"{s}.h5", duration_s=cfg.clip_seconds) for s in splits}
    class_names = datasets[splits[0]].class_names
    for ds in datasets.values():
        check_class_names(ds.class_names, class_names, str(ds.reader.path))
    paths = [Path(p) for p in checkpoints] + [Path(p) for p in cfg.extra_checkpoints]
    models, teacher = load_teachers(paths, class_names)
    device = distributed.resolve_device(cfg.device)
    models = [m.to(device) for m in models]
    batch_size = cfg.batch_size if cfg.clip_seconds is not None else 1  # whole clips differ in length
    per_split: dict[str, tuple[list[str], np.ndarray]] = {}
    metrics: dict[str, float] = {}
    for split, ds in datasets.items():
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=cfg.num_workers)
        clip_ids, logits = ensemble_logits(models, loader, ds.sample_rate, device, cfg.amp)
        if clip_ids != ds.reader.clip_ids:
            raise RuntimeError(f"{ds.reader.path}: predictions are not in pack order")  # loader must not shuffle
        per_split[split] = (clip_ids, logits)
        metrics[f"{split}/clips"] = float(len(clip_ids))
        targets = ds.reader.all_targets
        if targets.any():
            metrics[f"{split}/mAP"] = tagging_metrics(targets, logits)["mAP"]
        log.info("predict_teacher: %s, %d clips%s", split, len(clip_ids),
                 f", mAP {metrics[f'{split}/mAP']:.4f}" if f"{split}/mAP" in metrics else "")
    write_predictions(out, per_split, class_names, teacher, [str(p) for p in paths], expected_class_names=class_names)
    metrics["teacher/checkpoints"] = float(len(paths))
    if tracker is not None:
        tracker.log_metrics(metrics, 0)
    return TaskResult(metrics=metrics, checkpoint=None)
