"""`audiopipe features FILE... --checkpoint X --out-dir D`: EAT encoder features of audio files as .npy.

Like EAT's `feature_extract/feature_extract.py` (spec §5.1), for any file `load_audio` decodes (any rate,
length or channel count: channels are averaged, the front end resamples to 16 kHz). The fbank is padded
to `--target-frames` (default: the clip's own length rounded up to a multiple of 16 frames; EAT's script
uses 1024) and the encoder runs without masking. Written per file, float32 `D/<stem>.npy`:
    all        (1 + N, D)  CLS row then the N patch tokens (time-major, 8 frequency patches per 160 ms)
    frame      (N, D)      patch tokens only
    utterance  (D,)        the CLS output (works better than pooled frames for classification, per EAT)

The checkpoint may be our `pretrain_eat` (`eat.pt`) or `finetune_eat` (`eat_tagger.pt`) output, or an
official EAT fairseq/Hugging Face file. A file that cannot be processed is reported in one line naming it;
the others are still written, and the exit status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audiopipe.audio.io import load_audio
from audiopipe.models.eat.encoder import EATEncoder
from audiopipe.models.eat.frontend import AUDIOSET_MEAN, AUDIOSET_STD, EATFrontEnd

log = logging.getLogger(__name__)
GRANULARITIES = ("all", "frame", "utterance")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audio files (any format ffmpeg reads)")
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="eat.pt / eat_tagger.pt from the pipeline, or an official EAT checkpoint")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for the <stem>.npy files")
    parser.add_argument("--granularity", choices=GRANULARITIES, default="all",
                        help="all: CLS + patches (1+N, D); frame: patches (N, D); utterance: CLS (D,)")
    parser.add_argument("--target-frames", type=int, default=None,
                        help="pad/crop the fbank to this many frames (multiple of 16; EAT uses 1024)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")


def load_encoder(path: Path) -> tuple[EATEncoder, float, float]:
    """`(encoder in eval mode, fbank mean, fbank std)` from a pipeline or official EAT checkpoint."""
    from audiopipe.models import load_model
    from audiopipe.training.checkpoint import CheckpointError, load_checkpoint

    try:
        payload = load_checkpoint(path)
    except CheckpointError:
        payload = {}  # official fairseq files hold pickled configs: read them through the EAT loader
    if "builder" in payload:
        model, _ = load_model(path)
        frontend = getattr(model, "frontend", None)
        encoder = getattr(model, "encoder", model)
        if not isinstance(encoder, EATEncoder):
            raise ValueError(f"{path}: {type(model).__name__} has no EAT encoder")
        if isinstance(frontend, EATFrontEnd):
            return encoder.eval(), frontend.norm_mean, frontend.norm_std
        return encoder.eval(), AUDIOSET_MEAN, AUDIOSET_STD
    return _official_encoder(path), AUDIOSET_MEAN, AUDIOSET_STD


def _official_encoder(path: Path) -> EATEncoder:
    from audiopipe.models.eat.checkpoint import convert_state_dict, load_official, read_checkpoint

    state = convert_state_dict(read_checkpoint(path), str(path))
    embed_dim = int(state["encoder.patch_embed.proj.weight"].shape[0])
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.blocks\.(\d+)\.", k)))
    encoder = EATEncoder(embed_dim=embed_dim, depth=depth, num_heads=embed_dim // 64)  # 64-wide heads: base, large
    load_official(encoder, path)
    return encoder.eval()


@torch.no_grad()
def extract(encoder: EATEncoder, frontend: nn.Module, waveform: np.ndarray, granularity: str) -> np.ndarray:
    """Features of one mono waveform `(T,)` as float32 (see the module docstring for the shapes)."""
    device = next(encoder.parameters()).device
    spectrogram = frontend(torch.from_numpy(waveform).unsqueeze(0).to(device))  # (1, 1, T_f, 128)
    tokens = encoder(spectrogram)[0].float().cpu().numpy()  # (1 + N, D)
    if granularity == "frame":
        return tokens[1:]
    if granularity == "utterance":
        return tokens[0]
    return tokens


def _output_path(out_dir: Path, source: Path, used: set[Path]) -> Path:
    target = out_dir / f"{source.stem}.npy"
    k = 1
    while target in used:  # two inputs with the same name from different folders
        target, k = out_dir / f"{source.stem}-{k}.npy", k + 1
    used.add(target)
    return target


def run(args: argparse.Namespace) -> int:
    from audiopipe.training.distributed import resolve_device

    device = resolve_device(args.device)
    encoder, mean, std = load_encoder(args.checkpoint)
    encoder.to(device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    failed, used = 0, set[Path]()
    for path in args.files:
        try:
            waveform, sample_rate = load_audio(path, mono=True)
            frontend = EATFrontEnd(sample_rate, args.target_frames, mean, std)
            features = extract(encoder, frontend, waveform, args.granularity)
            target = _output_path(args.out_dir, path, used)
            np.save(target, features.astype(np.float32))
            log.info("%s -> %s %s", path, target, features.shape)
        except Exception as err:  # one bad file must not stop the others
            failed += 1
            message = " ".join(str(err).split())
            log.error("cannot extract features from %s: %s", path, message if str(path) in message else
                      f"{type(err).__name__}: {message}")
    if failed:
        log.error("%d of %d files failed", failed, len(args.files))
    return 1 if failed else 0
