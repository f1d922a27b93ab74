"""Frame-level encoders that plug into the fused CRNN (`models/sed/model.py`), each with its own front end.

Protocol (`FrameEncoder`): `.sample_rate`, `.feature_dim`, `.module_name` (the attribute name under which the
SED model registers it, which fixes its state-dict prefix) and `frame_features(waveform (B, T)) -> (B, T_enc, D)`.

Adapters:
    ATSTFrameEncoder  ATST front end + `FrameAST`; registered as `atst_frame`, so its keys are
                      `atst_frame.atst.<encoder key>` as in ATST-SED checkpoints (spec atst_sed.md §4.3).
                      10 s -> (B, 250, D) at 25 Hz; longer inputs run in 10-s chunks whose tokens are concatenated.
    EATFrameEncoder   EAT Kaldi-fbank front end + `EATEncoder`; frames = mean over the 8 frequency patches of
                      each 16-frame time patch -> (B, ceil(T_f / 16), D) at 6.25 Hz.

Frozen encoders (no parameter requires grad) run under `torch.no_grad()` to save activation memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import nn

from audiopipe.models.atst.encoder import FrameAST
from audiopipe.models.atst.frontend import ATSTFrontEnd

if TYPE_CHECKING:
    from audiopipe.models.eat.encoder import EATEncoder


@runtime_checkable
class FrameEncoder(Protocol):
    """What the SED model needs from a frame-level encoder."""

    sample_rate: int
    feature_dim: int
    module_name: str

    def frame_features(self, waveform: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class AugmentableFrameEncoder(FrameEncoder, Protocol):
    """A `FrameEncoder` whose input can be augmented between its front end and the network (ATST-SED stage 2:
    mixup in the linear power-mel domain, frequency warping of the normalised input).

    `frames_from_input(input_from_linear(linear_input(w)))` equals `frame_features(w)`; `freq_axis` and
    `time_axis` name the axes of the normalised input.
    """

    freq_axis: int
    time_axis: int

    def linear_input(self, waveform: torch.Tensor) -> torch.Tensor: ...

    def input_from_linear(self, linear: torch.Tensor) -> torch.Tensor: ...

    def frames_from_input(self, features: torch.Tensor) -> torch.Tensor: ...


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


class ATSTFrameEncoder(nn.Module):
    """Waveform (B, T) at 16 kHz -> ATST-Frame tokens (B, T_enc, D), last block + `norm_frame`.

    Args:
        encoder: A `FrameAST` (e.g. `audiopipe.models.atst.build("atst_base")`).
        top_db_scope: "batch" (ATST-SED) or "clip" (ATST-Frame pre-training); see `ATSTFrontEnd`.

    Example:
        >>> adapter = ATSTFrameEncoder(FrameAST(dim=96, depth=2, num_heads=4)).eval()
        >>> tuple(adapter.frame_features(torch.randn(1, 160000)).shape)
        (1, 250, 96)
    """

    module_name = "atst_frame"
    freq_axis, time_axis = 1, 2  # normalised mel (B, 64, frames)

    def __init__(self, encoder: FrameAST, top_db_scope: str = "batch") -> None:
        super().__init__()
        self.frontend = ATSTFrontEnd(n_mels=encoder.n_mels, top_db_scope=top_db_scope)
        self.atst = encoder
        self.sample_rate = self.frontend.sample_rate
        self.feature_dim = encoder.dim

    def input_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, T) -> normalised ATST mel (B, 64, frames), the encoder input (augment it here in training)."""
        return self.frontend(waveform)

    def linear_input(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, T) -> linear power mel (B, 64, frames): where ATST-SED stage 2 mixes clips."""
        return self.frontend.power_mel(waveform)

    def input_from_linear(self, linear: torch.Tensor) -> torch.Tensor:
        """Power mel (B, 64, frames) -> normalised ATST mel (dB, floor, clamp, affine)."""
        return self.frontend.normalize(linear)

    def frames_from_input(self, mel: torch.Tensor) -> torch.Tensor:
        """Normalised mel (B, 64, frames) -> (B, frames // 4, D), in chunks of at most `max_tokens` tokens."""
        chunk = self.atst.max_tokens * self.atst.patch_frames  # 1000 mel frames = 10 s
        pieces = [mel[..., start : start + chunk] for start in range(0, mel.shape[-1], chunk)]
        pieces = [p for p in pieces if p.shape[-1] >= self.atst.patch_frames] or pieces[:1]
        with torch.set_grad_enabled(torch.is_grad_enabled() and _trainable(self)):
            return torch.cat([self.atst.frame_features(p) for p in pieces], dim=1)  # (B, T_enc, D)

    def frame_features(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.frames_from_input(self.input_features(waveform))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.frame_features(waveform)


class EATFrameEncoder(nn.Module):
    """Waveform (B, T) at 16 kHz -> EAT frame features (B, ceil(T_f / 16), D).

    The fbank is zero-padded at the end to a multiple of 16 frames (EAT's patch height) before normalisation,
    as EAT's own front end does; the last time patch therefore covers a little padding.

    Args:
        encoder: An `audiopipe.models.eat.encoder.EATEncoder`.
    """

    module_name = "eat_frame"
    freq_axis, time_axis = 3, 2  # normalised fbank (B, 1, T_f', 128)

    def __init__(self, encoder: EATEncoder) -> None:
        super().__init__()
        from audiopipe.models.eat.frontend import SAMPLE_RATE, EATFrontEnd

        self.frontend = EATFrontEnd(input_sample_rate=SAMPLE_RATE, target_frames=None)
        self.eat = encoder
        self.sample_rate = SAMPLE_RATE
        self.feature_dim = encoder.embed_dim

    def input_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, T) -> normalised fbank (B, 1, T_f', 128), T_f' a multiple of 16."""
        return self.frontend(waveform)

    def linear_input(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, T) -> linear mel energies exp(fbank) (B, T_f, 128), unpadded: where clips are mixed."""
        return self.frontend.fbank(waveform).exp()

    def input_from_linear(self, linear: torch.Tensor) -> torch.Tensor:
        """Mel energies (B, T_f, 128) -> log, end padding to a multiple of 16, normalisation (B, 1, T_f', 128).

        Kaldi's fbank floors energies at float32 epsilon before the log; the same floor is applied here."""
        return self.frontend.normalize_fbank(linear.clamp(min=torch.finfo(torch.float32).eps).log())

    def frames_from_input(self, spectrogram: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and _trainable(self)):
            return self.eat.extract_features(spectrogram)[1]  # (B, H, D)

    def frame_features(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.frames_from_input(self.input_features(waveform))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.frame_features(waveform)


def load_eat_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load EAT encoder weights strictly from our final-model payload (`{"builder", "model", ...}` with
    `encoder.*` keys, e.g. `pretrain_eat`/`finetune_eat` outputs) or from an official fairseq/HF file."""
    from audiopipe.models.eat.checkpoint import load_official
    from audiopipe.storage import load_checkpoint, load_state_dict_strict

    path = Path(path)
    if path.is_file() and not torch.serialization.get_unsafe_globals_in_checkpoint(path):
        payload = load_checkpoint(path)
        if "builder" in payload and isinstance(payload.get("model"), dict):
            state = payload["model"]
            encoder_state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
            load_state_dict_strict(encoder, encoder_state or state, source=str(path))
            return
    load_official(encoder, path)  # official fairseq / Hugging Face layouts
