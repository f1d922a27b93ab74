"""SED model: the DCASE-baseline CRNN, optionally fused with a frame-level encoder (ATST-SED); `build`.

Shapes (B batch, T samples at 16 kHz, K classes, T' = (1 + T // 256) // 4 output frames, 64 ms each):
    input  waveform (B, T)
    output strong   (B, K, T')   frame probabilities (sigmoid); 10 s -> 156 frames
           weak     (B, K)       clip probabilities (class-softmax attention pooling of strong)

Data flow (spec atst_sed.md §1, §4; `ATST-SED desed_task/nnet/CRNN_e2e.py`):
    waveform -> SED mel (B, 128, 626) -> CNN -> (B, 156, 128) ─┐
    waveform -> encoder -> (B, T_enc, D) -> pool/interp to 156 ─┴ concat -> cat_tf Linear(128 + D -> 128)
             -> BiGRU (2 x 128 per direction) -> dropout -> strong / weak heads
Without an encoder (`sed_crnn`) the CNN output feeds the BiGRU directly (DCASE baseline without embeddings).

State-dict keys match ATST-SED's CRNN (`cnn.cnn.*`, `rnn.rnn.*`, `cat_tf`, `dense`, `dense_softmax`,
`atst_frame.atst.*`), so the `sed_student` / `sed_teacher` entries of its checkpoints load strictly.
Front-end buffers are non-persistent and do not appear in the state dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from audiopipe.models.sed.crnn import CNN, BidirectionalGRU, strong_weak_heads
from audiopipe.models.sed.encoders import ATSTFrameEncoder, EATFrameEncoder, FrameEncoder, load_eat_encoder_weights
from audiopipe.models.sed.frontend import SEDMelFrontEnd

__all__ = [
    "ATSTFrameEncoder", "EATFrameEncoder", "FrameEncoder", "SEDModel", "as_sed_model", "build", "resample_frames",
]

ATST_SED_CHANNELS = (16, 32, 64, 128, 128, 128, 128)
RESAMPLE_MODES = ("adaptive_avg", "linear")
ATST_SED_POOLS = ((2, 2), (2, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2))  # (time, freq) per block


def resample_frames(frames: torch.Tensor, n_frames: int, mode: str) -> torch.Tensor:
    """Encoder frames (B, T_enc, D) -> (B, n_frames, D) by "adaptive_avg" pooling (ATST-SED) or "linear" interp."""
    x = frames.transpose(1, 2)  # (B, D, T_enc)
    if mode == "adaptive_avg":
        x = F.adaptive_avg_pool1d(x, n_frames)
    elif mode == "linear":
        x = F.interpolate(x, size=n_frames, mode="linear", align_corners=False)
    else:
        raise ValueError(f"unknown encoder_pool '{mode}'; choose 'adaptive_avg' or 'linear'")
    return x.transpose(1, 2)  # (B, n_frames, D)


class SEDModel(nn.Module):
    """CRNN sound event detector with an optional fused frame encoder; waveform in, probabilities out.

    Args:
        encoder: A `FrameEncoder` module (`ATSTFrameEncoder`, `EATFrameEncoder`) or None for the plain CRNN.
        channels: Conv channels per block; `pools` gives each block's (time, freq) average pooling.
        activation: "cg" (context gating, ATST-SED) or "glu" (DCASE 2023 baseline).
        encoder_pool: How encoder frames reach the CRNN frame rate: "adaptive_avg" or "linear".

    Example:
        >>> model = SEDModel(n_classes=10, channels=(4,) * 7, rnn_hidden=8).eval()
        >>> strong, weak = model(torch.randn(2, 160000))
        >>> tuple(strong.shape), tuple(weak.shape), model.frame_rate_hz
        ((2, 10, 156), (2, 10), 15.625)
    """

    def __init__(
        self,
        n_classes: int,
        encoder: nn.Module | None = None,
        n_mels: int = 128,
        channels: Sequence[int] = ATST_SED_CHANNELS,
        pools: Sequence[Sequence[int]] = ATST_SED_POOLS,
        activation: str = "cg",
        dropout: float = 0.5,
        rnn_hidden: int = 128,
        rnn_layers: int = 2,
        encoder_pool: str = "adaptive_avg",
    ) -> None:
        super().__init__()
        self.mel_spec = SEDMelFrontEnd(n_mels=n_mels)
        self.sample_rate = self.mel_spec.sample_rate
        self.cnn = CNN(n_mels, channels, pools, activation, dropout)
        self.frame_rate_hz = self.sample_rate / self.mel_spec.hop_length / self.cnn.time_pool
        self.encoder_name: str | None = None
        self.encoder_pool = encoder_pool
        n_in = self.cnn.out_dim
        if encoder is not None:
            if not isinstance(encoder, FrameEncoder):
                raise TypeError(f"{type(encoder).__name__} lacks sample_rate/feature_dim/module_name/frame_features")
            if encoder.sample_rate != self.sample_rate:
                raise ValueError(f"encoder expects {encoder.sample_rate} Hz, the CRNN front end {self.sample_rate} Hz")
            if encoder_pool not in RESAMPLE_MODES:
                raise ValueError(f"unknown encoder_pool '{encoder_pool}'; choose one of {RESAMPLE_MODES}")
            self.encoder_name = encoder.module_name
            self.add_module(encoder.module_name, encoder)
            self.cat_tf = nn.Linear(n_in + encoder.feature_dim, n_in)
        self.rnn = BidirectionalGRU(n_in, rnn_hidden, rnn_layers)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(2 * rnn_hidden, n_classes)
        self.dense_softmax = nn.Linear(2 * rnn_hidden, n_classes)
        self.builder_kwargs: dict[str, Any] = {}  # filled by `build` so checkpoints can rebuild the model

    @property
    def encoder(self) -> nn.Module | None:
        """The fused frame encoder (registered under its own `module_name`), or None."""
        return None if self.encoder_name is None else self.get_submodule(self.encoder_name)

    @property
    def frame_encoder(self) -> FrameEncoder | None:
        """`encoder` typed as the `FrameEncoder` the constructor checked it to be, or None."""
        encoder = self.encoder
        if encoder is not None and not isinstance(encoder, FrameEncoder):
            raise TypeError(f"{type(encoder).__name__} registered as the encoder is not a FrameEncoder")
        return encoder

    def freeze_encoder(self, frozen: bool = True) -> SEDModel:
        """Switch `requires_grad` of every encoder parameter; a fully frozen encoder runs without autograd."""
        if self.encoder is None:
            raise ValueError("this SED model has no encoder to freeze")
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(not frozen)
        return self

    def forward_features(
        self, mel: torch.Tensor, encoder_frames: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised SED mel (B, F, T) and encoder frames (B, T_enc, D) -> (strong (B, K, T'), weak (B, K)).

        Lets training code augment each branch's input (mixup in the linear mel domains, frequency warping of
        the encoder input) before the network; `forward` is this applied to the model's own front ends.
        """
        x = self.cnn(mel)  # (B, T', C_last · F')
        if self.encoder_name is not None:
            if encoder_frames is None:
                raise ValueError("this SED model fuses an encoder; pass its frame features")
            frames = resample_frames(encoder_frames.to(x.dtype), x.shape[1], self.encoder_pool)  # (B, T', D)
            x = self.cat_tf(torch.cat([x, frames], dim=-1))  # (B, T', C_last · F')
        x = self.dropout(self.rnn(x))  # (B, T', 2 · rnn_hidden)
        return strong_weak_heads(x, self.dense, self.dense_softmax)

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self.frame_encoder
        frames = None if encoder is None else encoder.frame_features(waveform)
        return self.forward_features(self.mel_spec(waveform), frames)


def as_sed_model(module: nn.Module, what: str = "model") -> SEDModel:
    """`module` typed as an `SEDModel`, or a TypeError naming what it is (e.g. a tagger checkpoint given to SED)."""
    if not isinstance(module, SEDModel):
        raise TypeError(f"{what} is a {type(module).__name__}, not an SED model (sed_crnn / sed_atst / sed_eat)")
    return module


def _atst_encoder(preset: str, checkpoint: str | Path | None, top_db_scope: str, **kwargs: Any) -> nn.Module:
    from audiopipe.models import atst

    return ATSTFrameEncoder(atst.build(preset, checkpoint=checkpoint, **kwargs), top_db_scope=top_db_scope)


def _eat_encoder(preset: str, checkpoint: str | Path | None, **kwargs: Any) -> nn.Module:
    from audiopipe.models.eat.encoder import PRESETS, EATEncoder

    if preset not in PRESETS:
        raise KeyError(f"unknown EAT preset '{preset}'; choose one of {sorted(PRESETS)}")
    encoder = EATEncoder(**{**PRESETS[preset], **kwargs})
    if checkpoint is not None:
        load_eat_encoder_weights(encoder, checkpoint)
    return EATFrameEncoder(encoder)


def build(
    name: str,
    n_classes: int = 10,
    encoder_preset: str | None = None,
    encoder_kwargs: dict[str, Any] | None = None,
    encoder_checkpoint: str | Path | None = None,
    freeze_encoder: bool = False,
    top_db_scope: str = "batch",
    encoder_pool: str | None = None,
    **crnn_kwargs: Any,
) -> SEDModel:
    """Build `sed_crnn` (CRNN alone), `sed_atst` (ATST-Frame fused) or `sed_eat` (EAT fused) from plain kwargs.

    Args:
        encoder_preset: `atst_base` / `atst_demo` for `sed_atst` (default `atst_base`); an EAT preset such as
            `eat_base` / `eat_demo` for `sed_eat` (default `eat_base`).
        encoder_kwargs: Overrides of the encoder preset's constructor arguments.
        encoder_checkpoint: Encoder weights loaded strictly (ATST: `atst_as2M.ckpt`-style files).
        encoder_pool: Default "adaptive_avg" (ATST-SED) for ATST, "linear" interpolation for EAT.
        crnn_kwargs: `SEDModel` arguments (`channels`, `pools`, `rnn_hidden`, `dropout`, ...).

    The returned model's `.builder_kwargs` holds every argument except `encoder_checkpoint` (the weights live
    in the model's state dict), so `build(name, **model.builder_kwargs)` rebuilds it without that file.
    """
    extra = dict(encoder_kwargs or {})
    encoder: nn.Module | None
    if name == "sed_crnn":
        if encoder_preset or encoder_checkpoint or extra:
            raise ValueError("sed_crnn has no encoder; drop encoder_preset/encoder_kwargs/encoder_checkpoint")
        encoder, pool = None, encoder_pool or "adaptive_avg"
    elif name == "sed_atst":
        encoder_preset = encoder_preset or "atst_base"
        encoder = _atst_encoder(encoder_preset, encoder_checkpoint, top_db_scope, **extra)
        pool = encoder_pool or "adaptive_avg"
    elif name == "sed_eat":
        encoder_preset = encoder_preset or "eat_base"
        encoder, pool = _eat_encoder(encoder_preset, encoder_checkpoint, **extra), encoder_pool or "linear"
    else:
        raise KeyError(f"unknown SED model '{name}'; choose one of ['sed_atst', 'sed_crnn', 'sed_eat']")
    model = SEDModel(n_classes=n_classes, encoder=encoder, encoder_pool=pool, **crnn_kwargs)
    if encoder is not None and freeze_encoder:
        model.freeze_encoder(True)
    model.builder_kwargs = {
        "n_classes": n_classes,
        "encoder_preset": encoder_preset,
        "encoder_kwargs": extra,
        "freeze_encoder": freeze_encoder,
        "top_db_scope": top_db_scope,
        "encoder_pool": pool,
        **crnn_kwargs,
    }
    return model
