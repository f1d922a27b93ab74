"""Does each training recipe learn? Overfit one fixed synthetic batch with the task's own model and step.

One batch of six 1 s clips at 16 kHz: three classes, each a tone burst at its own frequency (440, 1250,
3100 Hz) over faint noise, one or two events per clip with known onsets. For each task the model is built
with the task's builder and kwargs helper, trained with the task's optimizer family through `fit` and the
task's step (augmentation off), and must (1) bring the training loss below `LOSS_RATIO` of its first value and
(2) rank, in eval mode, the positive labels of each clip above its negatives (`ranking_auc` >= `MIN_AUC`; for
SED frames `MIN_FRAME_AUC`).
A recipe that does not learn (e.g. no gradient reaching the weights, misaligned labels, eval-mode BatchNorm
left uncalibrated) fails one of the two; the negative controls show that the checks do fail for a
learning rate of 0, for the MobileNet student evaluated without the recipe's BatchNorm recalibration and for
SED frame targets shifted by two frames (which the loss alone would not reveal).

Torch runs single-threaded here: on a loaded 2-core machine that is ~10x faster than two threads.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import torch
from torch import nn

from audiopipe.audio.augment import mix, mixup_params
from audiopipe.config import AtstStage1Config, DistillMobilenetConfig, FinetuneEatConfig
from audiopipe.data.labels import encode_events
from audiopipe.losses.distillation import kd_loss_terms, teacher_probabilities
from audiopipe.models import build_model
from audiopipe.models.eat.tagger import param_groups_layer_decay
from audiopipe.models.ema import EMA
from audiopipe.training.distill import _student_kwargs, _StudentStep, recalibrate_batchnorm
from audiopipe.training.finetune_eat import AugmentedTagger, bce_loss, build_tagger
from audiopipe.training.finetune_sed import _build, learning_rates, output_frames, step_settings
from audiopipe.training.loop import FitSettings, Hooks, fit
from audiopipe.training.sed.optim import param_groups
from audiopipe.training.sed.step import SEDStep

SAMPLE_RATE = 16000
DURATION_S = 1.0
CLASS_HZ = (440.0, 1250.0, 3100.0)
# (onset s, offset s, class) per clip; every class is present in 3 of the 6 clips
EVENTS: list[list[tuple[float, float, int]]] = [
    [(0.10, 0.50, 0)],
    [(0.40, 0.90, 1)],
    [(0.20, 0.70, 2)],
    [(0.05, 0.45, 0), (0.50, 0.95, 1)],
    [(0.30, 0.80, 1), (0.10, 0.40, 2)],
    [(0.60, 0.95, 0), (0.00, 0.35, 2)],
]
N_CLASSES = len(CLASS_HZ)
LOSS_RATIO = 0.3  # final training loss must be below this fraction of the first
MIN_AUC = 0.9
MIN_FRAME_AUC = 0.99  # SED frames (64 ms): targets off by one frame give ~0.987, by two ~0.93


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Waveforms (B, T) of `EVENTS` (tone bursts with 10 ms ramps over -40 dB noise) and clip labels (B, C)."""
    g = torch.Generator().manual_seed(0)
    n = int(DURATION_S * SAMPLE_RATE)
    t = torch.arange(n) / SAMPLE_RATE
    audio = 0.01 * torch.randn(len(EVENTS), n, generator=g)
    labels = torch.zeros(len(EVENTS), N_CLASSES)
    for i, events in enumerate(EVENTS):
        for onset, offset, cls in events:
            ramp = 0.01
            env = ((t - onset) / ramp).clamp(0, 1) * ((offset - t) / ramp).clamp(0, 1)
            phase = 2 * math.pi * torch.rand(1, generator=g)
            audio[i] += 0.3 * env * torch.sin(2 * math.pi * CLASS_HZ[cls] * t + phase)
            labels[i, cls] = 1.0
    return audio, labels


def loss_fell(losses: Sequence[float], ratio: float = LOSS_RATIO) -> bool:
    """True when every loss is finite and the mean of the last 3 is below `ratio` times the first."""
    if len(losses) < 4 or not all(math.isfinite(v) for v in losses):
        return False
    return sum(losses[-3:]) / 3 < ratio * losses[0]


def ranking_auc(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over rows (clips) of the fraction of (positive, negative) cells ranked correctly, ties count 1/2.

    Rows are flattened, so (B, C, T) frame scores are ranked over all classes and frames of a clip.
    """
    aucs = []
    for s, y in zip(scores.flatten(1).float(), targets.flatten(1) > 0.5):
        pos, neg = s[y], s[~y]
        if len(pos) and len(neg):
            diff = pos[:, None] - neg[None, :]
            aucs.append(((diff > 0).float() + 0.5 * (diff == 0).float()).mean().item())
    return sum(aucs) / len(aucs) if aucs else math.nan


def _train(
    model: nn.Module,
    step_fn: Any,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, Any],
    steps: int,
    on_optimizer_step: Any = None,
) -> list[float]:
    """`steps` optimizer steps of the task's `fit` on the same batch; returns the per-step training losses."""
    history = fit(model, [batch] * steps, step_fn, optimizer, settings=FitSettings(epochs=1, seed=0, progress=False),
                  hooks=Hooks(on_optimizer_step=on_optimizer_step))
    return [row["train/loss"] for row in history.steps]


# --- distill_mobilenet: mn_tagger student, _StudentStep, kd_loss_terms with a teacher -----------------------

DISTILL = DistillMobilenetConfig(
    train_split="train", valid_split="train", duration_s=DURATION_S, student="mn", width_mult=0.1, n_mels=32,
    hop_length=320, dropout=0.0, epochs=1, epoch_len=None, batch_size=len(EVENTS), lr=3e-3, weight_decay=0.0,
    warmup_epochs=0.0, min_lr_ratio=1.0, kd_lambda=0.1, temperature=1.0, mixup_alpha=0.0, roll_samples=0,
    gain_db=0.0, fmin_aug_range=10, fmax_aug_range=1000, freqm=0, timem=0, weighted_sampling=False,
    sampling_offset=1.0, bn_recalib_batches=1, num_workers=0, device="cpu", amp="none", seed=0,
)  # fmt: skip


def run_distill(lr: float, steps: int = 40) -> tuple[list[float], float, float]:
    """(training losses, eval ranking AUC on the batch after the recipe's BatchNorm recalibration, the same AUC
    before it) of the distillation recipe."""
    torch.manual_seed(DISTILL.seed)
    tagger = build_model("mn_tagger", **_student_kwargs(DISTILL, N_CLASSES, SAMPLE_RATE))
    audio, labels = synthetic_batch()
    teacher_logits = 6.0 * (2 * labels - 1)  # a confident, correct teacher
    optimizer = torch.optim.AdamW(tagger.parameters(), lr=lr, weight_decay=DISTILL.weight_decay)

    def step_fn(net: nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        # distill_mobilenet's step with gain, roll and mixup off (mixup_alpha 0 gives lam = 1)
        lam, partner = mixup_params(
            batch["audio"].shape[0], alpha=DISTILL.mixup_alpha, pairing="permute", per_example=True
        )
        logits = net(batch["audio"], lam.to(device), partner.to(device))
        probs = mix(teacher_probabilities(batch["teacher"], DISTILL.temperature), lam, partner)
        return kd_loss_terms(logits, probs, mix(batch["labels"], lam, partner), DISTILL.kd_lambda)

    batch = {"audio": audio, "labels": labels, "teacher": teacher_logits}
    losses = _train(_StudentStep(tagger), step_fn, optimizer, batch, steps)
    with torch.no_grad():
        uncalibrated = tagger.eval()(audio)
    # the recipe's precise-BN pass before validation (bn_recalib_batches > 0): BN momentum 0.01 leaves the
    # running statistics near their init after tens of steps
    recalibrate_batchnorm(tagger, [audio], torch.device("cpu"))
    with torch.no_grad():
        scores = tagger.eval()(audio)
    return losses, ranking_auc(scores, labels), ranking_auc(uncalibrated, labels)


@pytest.fixture(scope="module")
def distill_run() -> tuple[list[float], float, float]:
    return run_distill(lr=DISTILL.lr)


def test_distill_student_overfits_one_batch(distill_run: tuple[list[float], float, float]) -> None:
    losses, auc, _ = distill_run
    assert loss_fell(losses), f"loss {losses[0]:.4f} -> {losses[-1]:.4f}"
    assert auc >= MIN_AUC, f"eval ranking AUC {auc:.3f}"


# --- finetune_eat: eat_tagger (eat_demo) in AugmentedTagger, bce_loss, layer-decay AdamW -----------------------
# augmentation and stochastic depth off (params.yaml: drop_path 0.1, lr 5e-4)

FINETUNE_EAT = FinetuneEatConfig(
    preset="eat_demo", init="random", official_checkpoint=None, train_splits=["train"], valid_split="train",
    clip_seconds=DURATION_S, target_frames=96, epochs=1, batch_size=len(EVENTS), eval_batch_size=len(EVENTS),
    lr=1e-3, layer_decay=0.75, weight_decay=0.05, betas=(0.9, 0.95), warmup_fraction=0.0, min_lr_ratio=1.0,
    drop_path=0.0, mixup_alpha=0.0, mixup_prob=0.0, mask_ratio=0.0, roll_mag=False, gain_db=0.0,
    bce_normaliser="positives", seed=0, device="cpu", amp="none", num_workers=0,
)  # fmt: skip


def run_finetune_eat(lr: float, steps: int = 60) -> tuple[list[float], float]:
    """(training losses, eval ranking AUC on the batch) of the EAT fine-tuning recipe."""
    cfg = dataclasses.replace(FINETUNE_EAT, lr=lr)
    torch.manual_seed(cfg.seed)
    tagger, _ = build_tagger(cfg, None, N_CLASSES, SAMPLE_RATE)
    model = AugmentedTagger(
        tagger,
        mixup_alpha=cfg.mixup_alpha,
        mixup_prob=cfg.mixup_prob,
        mask_ratio=cfg.mask_ratio,
        roll_mag=cfg.roll_mag,
        gain_db=cfg.gain_db,
    )
    groups = param_groups_layer_decay(model, lr=cfg.lr, layer_decay=cfg.layer_decay, weight_decay=cfg.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=1e-8, weight_decay=cfg.weight_decay)

    def step_fn(m: nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        logits, targets = m(batch["audio"], batch["labels"])  # finetune_eat's step
        return {"loss": bce_loss(logits, targets, cfg.bce_normaliser)}

    audio, labels = synthetic_batch()
    losses = _train(model, step_fn, optimizer, {"audio": audio, "labels": labels}, steps)
    with torch.no_grad():
        scores, _ = model.eval()(audio, labels)
    return losses, ranking_auc(scores, labels)


def test_finetune_eat_tagger_overfits_one_batch() -> None:
    losses, auc = run_finetune_eat(lr=FINETUNE_EAT.lr)
    assert loss_fell(losses), f"loss {losses[0]:.4f} -> {losses[-1]:.4f}"
    assert auc >= MIN_AUC, f"eval ranking AUC {auc:.3f}"


# --- ATST-SED phase 1: sed_eat (frozen eat_demo encoder) + CRNN, SEDStep with the mean teacher -----------------

SED = AtstStage1Config(
    model="sed_eat", encoder_preset="eat_demo", encoder_kwargs={"depth": 1},
    crnn_kwargs={"channels": [4, 8, 16, 32, 32, 32, 32], "rnn_hidden": 32, "dropout": 0.0},
    clip_duration_s=DURATION_S, train_splits=["train", "weak"], batch_sizes=[4, 2], epochs=1, warmup_epochs=0.0,
    lr_cnn=3e-3, lr_rnn=3e-3, lr_encoder=0.0, encoder_lr_scale=0.5, cos_down=False, const_max=2.0,
    consistency="mean_teacher", weak_loss_weight=1.0, ema_decay=0.95, ema_warm_start=True, mixup_prob=0.0,
    mixup_alpha=0.2, mixup_encoder_input=False, freq_warp_prob=0.0, frame_shift_max_frames=0, mask_time_frames=0.0,
    mask_freq_bins=0.0, head_prior_init=False, cache_features=False, median_window=[3], val_every=1,
    eval_batch_size=len(EVENTS), operating_point_psds=False, seed=0, device="cpu", num_workers=0, progress=False,
)  # fmt: skip
N_STRONG = SED.batch_sizes[0]  # the first clips are strong-labelled, the rest weak (subset 0 and 1)


def run_sed(lr: float, steps: int = 40, *, target_shift: int = 0) -> tuple[list[float], float, float]:
    """(training losses, eval frame AUC on the strong clips, eval clip AUC of the weak head) of phase 1.

    `target_shift` rolls the training frame targets by that many frames (a misalignment); the AUCs are always
    measured against the true targets.
    """
    cfg = dataclasses.replace(SED, lr_cnn=lr, lr_rnn=lr)
    torch.manual_seed(cfg.seed)
    model, _, _ = _build(cfg, None, None, N_CLASSES)
    model.freeze_encoder(True)
    n_frames = output_frames(model, cfg.clip_duration_s)
    teacher = EMA(model, decay=cfg.ema_decay, copy_buffers=False)
    audio, labels = synthetic_batch()
    rate = float(model.frame_rate_hz)
    strong = torch.stack([
        torch.from_numpy(encode_events(ev, n_classes=N_CLASSES, n_frames=n_frames, frame_rate_hz=rate)) for ev in EVENTS
    ])  # fmt: skip
    subset = torch.tensor([0] * N_STRONG + [1] * (len(EVENTS) - N_STRONG))
    trained = strong.roll(target_shift, dims=-1) * (subset == 0)[:, None, None]
    batch = {"audio": audio, "strong": trained, "weak": labels, "subset": subset}
    step_fn = SEDStep(step_settings(cfg), 1, teacher, torch.Generator().manual_seed(cfg.seed), rampup_steps=steps // 2)

    def on_step(step: int) -> None:  # train_atst_sed's mean-teacher update
        step_fn.step = step
        decay = min(1.0 - 1.0 / (step + 1), cfg.ema_decay) if cfg.ema_warm_start else cfg.ema_decay
        teacher.update(model, decay=decay)

    optimizer = torch.optim.Adam(param_groups(model, learning_rates(cfg), 1), betas=(0.9, 0.999), eps=1e-8)
    losses = _train(model, step_fn, optimizer, batch, steps, on_optimizer_step=on_step)
    with torch.no_grad():
        frame_scores, clip_scores = model.eval()(audio)
    return losses, ranking_auc(frame_scores[:N_STRONG], strong[:N_STRONG]), ranking_auc(clip_scores, labels)


def test_sed_phase1_overfits_one_batch() -> None:
    losses, frame_auc, clip_auc = run_sed(lr=SED.lr_cnn)
    assert loss_fell(losses), f"loss {losses[0]:.4f} -> {losses[-1]:.4f}"
    assert frame_auc >= MIN_FRAME_AUC, f"eval frame AUC {frame_auc:.3f}"
    assert clip_auc >= MIN_AUC, f"eval clip AUC {clip_auc:.3f}"


# --- negative controls -----------------------------------------------------------------------------------------


RUNS: dict[str, Callable[[float], tuple[Any, ...]]] = {
    "distill": run_distill,
    "finetune_eat": run_finetune_eat,
    "sed_phase1": run_sed,
}


@pytest.mark.parametrize("task", sorted(RUNS))
def test_zero_learning_rate_fails_the_checks(task: str) -> None:
    losses, *aucs = RUNS[task](0.0)
    assert not loss_fell(losses), f"loss {losses[0]:.4f} -> {losses[-1]:.4f} with lr = 0"
    assert all(auc < MIN_AUC for auc in aucs), aucs


def test_frame_check_catches_misaligned_sed_targets() -> None:
    """Targets two frames (128 ms) late are still memorised (the loss falls) but rank the true frames worse."""
    losses, frame_auc, _ = run_sed(lr=SED.lr_cnn, target_shift=2)
    assert loss_fell(losses)
    assert frame_auc < MIN_FRAME_AUC, f"eval frame AUC {frame_auc:.3f} with shifted targets"


def test_ranking_check_catches_uncalibrated_batchnorm(distill_run: tuple[list[float], float, float]) -> None:
    """Without the recipe's recalibration the eval-mode student scores every clip alike (distill.py docstring)."""
    _, _, uncalibrated_auc = distill_run
    assert uncalibrated_auc < MIN_AUC, f"uncalibrated eval AUC {uncalibrated_auc:.3f}"


def test_checks_reject_bad_inputs() -> None:
    assert not loss_fell([1.0, 0.5, math.nan, 0.1, 0.1, 0.1])
    assert not loss_fell([1.0, 0.9, 0.8, 0.7])
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    assert ranking_auc(y, y) == 1.0 and ranking_auc(1 - y, y) == 0.0 and ranking_auc(torch.zeros(2, 3), y) == 0.5
