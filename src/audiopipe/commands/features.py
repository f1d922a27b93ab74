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
from pathlib import Path
from typing import TYPE_CHECKING

from audiopipe.inference.errors import UserError
from audiopipe.inference.options import device_choice, positive_int

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from audiopipe.models.eat.encoder import EATEncoder

log = logging.getLogger(__name__)
GRANULARITIES = ("all", "frame", "utterance")
INTERMIXED = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audio files (any format ffmpeg reads)")
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="FILE",
                        help="eat.pt / eat_tagger.pt from the pipeline, or an official EAT checkpoint "
                             "(fairseq .pt, Hugging Face .bin/.safetensors)")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for the <stem>.npy files")
    parser.add_argument("--granularity", choices=GRANULARITIES, default="all",
                        help="all: CLS + patches (1+N, D); frame: patches (N, D); utterance: CLS (D,)")
    parser.add_argument("--target-frames", type=positive_int, default=None,
                        help="pad/crop the fbank to this many frames (multiple of 16; EAT uses 1024; "
                             "default: the clip's own length rounded up to 16)")
    parser.add_argument("--device", type=device_choice, default="auto", help="auto | cpu | cuda | cuda:N")


def load_encoder(path: Path) -> tuple[EATEncoder, float, float]:
    """`(encoder in eval mode, fbank mean, fbank std)` from a pipeline or official EAT checkpoint; any other
    kind of checkpoint is refused with one line naming it."""
    from audiopipe.inference.checkpoints import USE, WHAT, load_for_inference
    from audiopipe.models.eat.encoder import EATEncoder
    from audiopipe.models.eat.frontend import AUDIOSET_MEAN, AUDIOSET_STD, EATFrontEnd

    loaded = load_for_inference(path)
    model = loaded.model
    encoder = model if isinstance(model, EATEncoder) else getattr(model, "encoder", None)
    if not isinstance(encoder, EATEncoder):
        raise UserError(f"--checkpoint {path}: {WHAT.get(loaded.kind, 'a model')} checkpoint ({loaded.builder}) "
                        "without an EAT encoder; features needs data/pretrain_eat/eat.pt, "
                        "data/finetune_eat/eat_tagger.pt or an official EAT file"
                        + (f" (use `{USE[loaded.kind]}` with this one)" if loaded.kind in USE else ""), exit_code=2)
    frontend = getattr(model, "frontend", None)
    if isinstance(frontend, EATFrontEnd):
        return encoder.eval(), frontend.norm_mean, frontend.norm_std
    return encoder.eval(), AUDIOSET_MEAN, AUDIOSET_STD


def extract(encoder: EATEncoder, frontend: nn.Module, waveform: np.ndarray, granularity: str) -> np.ndarray:
    """Features of one mono waveform `(T,)` as float32 (see the module docstring for the shapes)."""
    import torch

    device = next(encoder.parameters()).device
    with torch.no_grad():
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
    import numpy as np

    from audiopipe.audio.io import load_audio
    from audiopipe.inference.options import resolve_device
    from audiopipe.inference.stream import LevelMeter
    from audiopipe.models.eat.frontend import EATFrontEnd

    device = resolve_device(args.device)
    encoder, mean, std = load_encoder(args.checkpoint)
    encoder.to(device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    failed, used = 0, set[Path]()
    for path in args.files:
        try:
            waveform, sample_rate = load_audio(path, mono=True, clip=False)
            meter = LevelMeter()
            meter.update(waveform)
            for warning in meter.warnings():
                log.warning("%s: %s", path, warning.replace("scores below", "features"))
            waveform = np.clip(waveform, -1.0, 1.0)
            frontend = EATFrontEnd(sample_rate, args.target_frames, mean, std)
            features = extract(encoder, frontend, waveform, args.granularity)
            target = _output_path(args.out_dir, path, used)
            np.save(target, features.astype(np.float32))
            log.info("%s -> %s %s", path, target, features.shape)
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the others
            failed += 1
            message = " ".join(str(err).split()) or type(err).__name__
            log.error("cannot extract features: %s", message if str(path) in message else f"{path}: {message}")
    if failed:
        log.error("%d of %d files failed", failed, len(args.files))
    return 1 if failed else 0
