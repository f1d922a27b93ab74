"""The `params.yaml` sections as frozen dataclasses: one per section, no defaults, read by `load_params`.

Every value DVC tracks is written in `params.yaml`; `config/loading.py` checks each key against these fields.
Each owner edits only its own block (keep the marker comments).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from audiopipe.config.loading import from_dict

Device = Literal["auto", "cpu", "cuda"]
Amp = Literal["none", "bf16", "fp16"]  # mixed precision, CUDA only
EatPreset = Literal["eat_demo", "eat_small", "eat_base", "eat_large"]


# >>> section: data (download, resample, pack_hdf5)
@dataclasses.dataclass(frozen=True)
class DownloadConfig:
    """`download`: which corpus to fetch or build, and the demo set's size (realmix/synthetic)."""

    source: Literal["realmix", "synthetic", "esc50", "desed", "fsd50k", "audioset", "folder"]
    seed: int
    sample_rate: int  # rate of the generated soundscapes (realmix/synthetic)
    clip_duration_s: float
    n_train: int
    n_valid: int
    n_test: int
    n_weak: int
    n_unlabelled: int
    max_events: int
    max_polyphony: int
    snr_min_db: float
    snr_max_db: float
    url: str | None  # override the corpus URL (mirrors, tests); folder: the user's directory
    sha256: str | None  # expected checksum of `url` when overridden


@dataclasses.dataclass(frozen=True)
class ResampleConfig:
    """`resample`: any input -> mono PCM16 wav at `sample_rate`."""

    sample_rate: int
    workers: int
    max_reject_fraction: float


@dataclasses.dataclass(frozen=True)
class PackHdf5Config:
    """`pack_hdf5`: one .h5 per split."""

    codec: Literal["pcm16", "mp3"]
    mp3_bitrate_kbps: int
# <<< section: data

# >>> section: eat (pretrain_eat, finetune_eat, predict_teacher)
@dataclasses.dataclass(frozen=True)
class PretrainEatConfig:
    """`pretrain_eat` section: EAT self-supervised pre-training (spec §3); read by stages/pretrain_eat.py."""

    preset: EatPreset  # encoder size
    splits: list[str]  # packed splits whose audio is used (labels unused); absent ones are skipped
    clip_seconds: float  # crop/pad each clip to this length before the fbank
    target_frames: int  # fbank frames fed to the encoder (multiple of 16)
    mask_ratio: float  # fraction of patches hidden from the student (inverse block masking)
    clones: int  # K masked clones per clip sharing one teacher pass
    epochs: int
    batch_size: int  # clips per optimizer step (before cloning)
    lr: float  # peak learning rate
    weight_decay: float  # AdamW, applied to every parameter (fairseq composite quirk)
    betas: tuple[float, float]
    warmup_fraction: float  # linear warm-up share of all steps, then cosine to 0
    max_grad_norm: float
    ema_decay_start: float
    ema_decay_end: float
    ema_anneal_steps: int  # linear anneal of the EMA decay, start -> end
    checkpoint_every_steps: int  # resume file cadence (0: only at epoch ends)
    seed: int
    device: Device
    amp: Amp  # CUDA only
    num_workers: int


@dataclasses.dataclass(frozen=True)
class FinetuneEatConfig:
    """`finetune_eat` section: EAT tagger fine-tuning (spec §4); read by stages/finetune_eat.py."""

    preset: EatPreset  # encoder size when init is random (else taken from the checkpoint)
    init: Literal["pretrained", "official", "random"]  # pretrained: our pretrain_eat output
    official_checkpoint: str | None  # path of an official fairseq/HF EAT checkpoint when init = official
    train_splits: list[str]  # labelled splits to train on (absent ones are skipped)
    valid_split: str
    clip_seconds: float
    target_frames: int
    epochs: int
    batch_size: int  # even (mixup pairs each clip with the reversed batch)
    eval_batch_size: int
    lr: float  # peak learning rate of the head and non-block parameters
    layer_decay: float  # block i gets lr * layer_decay ** (depth - i)
    weight_decay: float
    betas: tuple[float, float]
    warmup_fraction: float
    min_lr_ratio: float  # fairseq min_lr as a fraction of `lr` (absolute floor of every layer-decay group)
    drop_path: float  # stochastic depth, linear 0 -> drop_path over the blocks
    mixup_alpha: float  # Beta(alpha, alpha); 0 disables mixup
    mixup_prob: float
    mask_ratio: float  # SpecAugment widths: freq 128 * ratio, time target_frames * ratio; 0 disables
    roll_mag: bool  # EAT waveform roll + Beta(10, 10) + 0.5 magnitude
    gain_db: float  # extra random gain +-gain_db (0 disables)
    bce_normaliser: Literal["positives", "mean"]  # positives: EAT AudioSet, BCE sum / positive labels
    seed: int
    device: Device
    amp: Amp
    num_workers: int
    pooling: Literal["cls", "mean"] = "cls"  # head input: CLS token (official) or the mean of the patch tokens
    cache_features: bool = False  # fbank of each training clip computed once; roll/gain act on it (not in EAT)


@dataclasses.dataclass(frozen=True)
class PredictTeacherConfig:
    """`predict_teacher` section: teacher logits for every packed clip; read by stages/predict_teacher.py."""

    extra_checkpoints: list[str]  # official/external tagger checkpoints ensembled with the --checkpoints ones
    splits: list[str]  # splits to predict (absent ones are skipped)
    clip_seconds: float | None  # crop/pad to this length; null = whole clips one at a time
    batch_size: int
    seed: int
    device: Device
    amp: Amp
    num_workers: int


# <<< section: eat

# >>> section: mobilenet (distill_mobilenet)
@dataclasses.dataclass(frozen=True)
class DistillMobilenetConfig:
    """`distill_mobilenet` / `distill_mobilenet_nokd`: MobileNetV3 student from clips + teacher logits."""

    train_split: str
    valid_split: str
    duration_s: float
    student: Literal["mn", "dymn"]  # MobileNetV3 (EfficientAT) | dynamic MobileNet
    width_mult: float
    n_mels: int
    hop_length: int
    dropout: float
    epochs: int
    epoch_len: int | None
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    min_lr_ratio: float
    kd_lambda: float
    temperature: float
    mixup_alpha: float
    roll_samples: int
    gain_db: float
    fmin_aug_range: int
    fmax_aug_range: int
    freqm: int
    timem: int
    weighted_sampling: bool
    sampling_offset: float
    bn_recalib_batches: int  # re-estimate BN running stats on this many train batches before validation; 0 = off
    num_workers: int
    device: Device
    amp: Amp
    seed: int
# <<< section: mobilenet

# >>> section: sed (atst_stage1, atst_stage2)
@dataclasses.dataclass(frozen=True)
class SedTrainingConfig:
    """What both ATST-SED phases read (`training/finetune_sed.py`); each section adds its own fields below."""

    clip_duration_s: float
    train_splits: list[str]  # pack splits, in the order of batch_sizes: strong, weak, unlabelled
    batch_sizes: list[int]
    epochs: int
    warmup_epochs: float
    lr_cnn: float
    lr_rnn: float
    lr_encoder: float
    encoder_lr_scale: float
    cos_down: bool
    const_max: float
    consistency: Literal["mean_teacher", "ict"]  # ict (stage 2): interpolation consistency when mixup fired
    weak_loss_weight: float
    ema_decay: float
    ema_warm_start: bool
    mixup_prob: float
    mixup_alpha: float
    mixup_encoder_input: bool  # stage 2: mix the encoder's linear input with the SED mel (same draw)
    freq_warp_prob: float  # stage 2: 0.5, frequency warping of the encoder input per subset group
    frame_shift_max_frames: int
    mask_time_frames: float
    mask_freq_bins: float
    cache_features: bool  # SED mel (and phase 1's frozen-encoder frames) of each clip computed once, then reused
    median_window: list[int]
    val_every: int
    eval_batch_size: int
    operating_point_psds: bool
    seed: int
    device: Device
    num_workers: int
    progress: bool


@dataclasses.dataclass(frozen=True)
class AtstStage1Config(SedTrainingConfig):
    """`atst_stage1`: phase 1 builds the model (encoder frozen, CRNN and heads trained)."""

    model: Literal["sed_eat", "sed_atst", "sed_crnn"]  # our pretrain_eat encoder | ATST-Frame | no encoder
    encoder_preset: str
    encoder_kwargs: dict[str, Any]
    crnn_kwargs: dict[str, Any]  # SEDModel kwargs: channels, rnn_hidden, dropout, ...
    head_prior_init: bool  # strong-head bias = logit of each class's frame prior (not in ATST-SED)


@dataclasses.dataclass(frozen=True)
class AtstStage2Config(SedTrainingConfig):
    """`atst_stage2`: phase 2 rebuilds the model from phase 1's checkpoint (no model keys) and unfreezes the encoder."""
# <<< section: sed

# >>> section: evaluate (lead)


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """`evaluate` section: test-split evaluation of every final model; read by stages/evaluate.py."""

    split: str  # packed split to evaluate on
    duration_s: float  # clips are cropped/zero-padded to this length
    batch_size: int
    median_windows: list[int]  # per-class median filter lengths in SED frames (one value = all classes)
    threshold: float  # decision threshold of the event timelines and event/intersection F1
    timeline_clips: int  # test clips drawn as reference-vs-detected timelines


# <<< section: evaluate (lead)

# >>> section: evaluate / tracking / sweep
@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    """`tracking` section: read by every stage script for `stage_run(...)`.

    Not listed under any stage's `params:` in dvc.yaml on purpose: switching MLflow on or off changes no
    output, so it must not invalidate DVC's cache.
    """

    enabled: bool  # False: stages log nothing and MLflow is never imported
    experiment: str  # MLflow experiment name


@dataclasses.dataclass(frozen=True)
class SweepStageConfig:
    """Search space of one stage in the `sweep` section (`audiopipe sweep STAGE`)."""

    metric: str  # validation metric the task reports per epoch, e.g. "valid/mAP"
    direction: Literal["maximize", "minimize"]
    space: dict[str, Any]  # <config field>: {choices: [...]} | {low: x, high: y, log: bool}


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """`sweep` section: Optuna settings shared by all stages plus one search space per tunable stage."""

    pruner: Literal["median", "hyperband", "none"]
    n_startup_trials: int  # median pruner: trials finished before pruning starts
    n_warmup_steps: int  # median pruner: epochs of a trial before it can be pruned
    seed: int  # TPE sampler seed
    stages: dict[str, SweepStageConfig]

    def __post_init__(self) -> None:  # the generic loader leaves mapping values raw; type them here
        typed = {
            name: value if isinstance(value, SweepStageConfig) else from_dict(SweepStageConfig, value, f"sweep.{name}")
            for name, value in self.stages.items()
        }
        object.__setattr__(self, "stages", typed)


# <<< section: evaluate / tracking / sweep

# >>> section: launcher (processes per training stage; `python -m audiopipe.launch`)
@dataclasses.dataclass(frozen=True)
class StageLaunchConfig:
    """How many processes run one training stage: one process, or `torchrun` (DDP) when the total exceeds 1."""

    nproc_per_node: int  # processes on each machine (one per GPU; gloo processes on CPU)
    nnodes: int  # machines; > 1 needs rdzv_endpoint and the same command started on every machine
    rdzv_endpoint: str | None  # HOST:PORT on the node-rank-0 machine (reachable from all); null on one machine


@dataclasses.dataclass(frozen=True)
class LauncherConfig:
    """`launcher` section: one entry per training stage (listed under that stage's `params:` in dvc.yaml)."""

    pretrain_eat: StageLaunchConfig
    finetune_eat: StageLaunchConfig
    distill_mobilenet: StageLaunchConfig
    distill_mobilenet_nokd: StageLaunchConfig
    atst_stage1: StageLaunchConfig
    atst_stage2: StageLaunchConfig
# <<< section: launcher
