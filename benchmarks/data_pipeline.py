"""Benchmark of the data stages on the same files (not a test): prints rates and the ratio to raw ffmpeg.

    python benchmarks/data_pipeline.py --clips 40 --workers 2

1. raw ffmpeg decode + resample to `--sample-rate` mono (the physical limit), `--workers` processes, audio-s / wall-s
2. our resample_dataset + pack_dataset (pcm16) on the same files, same workers; ratio to 1 (goal >= 0.8)
3. HDF5 random-access read rate (clips/s) for pcm16 and mp3 packs
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from audiopipe.audio.io import audio_info, ffmpeg_exe
from audiopipe.data.hdf5 import ClipReader
from audiopipe.data.prepare import pack_dataset, resample_dataset
from audiopipe.data.synthetic import build_synthetic_source


def _raw_ffmpeg(job: tuple[str, int]) -> None:
    path, sample_rate = job
    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-i", path, "-ac", "1", "-ar", str(sample_rate), "-f", "s16le", "-"]
    subprocess.run(cmd, capture_output=True, check=True)


def _read_rate(path: Path, n_reads: int, seed: int = 0) -> float:
    reader = ClipReader(path)
    order = np.random.default_rng(seed).integers(0, len(reader), n_reads)
    start = time.perf_counter()
    for i in order:
        reader.read_audio(int(i))
    return n_reads / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=40, help="10-s soundscapes to generate")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--source-rate", type=int, default=44100, help="sample rate of the generated inputs")
    parser.add_argument("--sample-rate", type=int, default=32000, help="resample target")
    parser.add_argument("--reads", type=int, default=200, help="random reads per HDF5 codec")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "download" / "synthetic"
        build_synthetic_source(
            folder, counts={"train": args.clips}, duration_s=10.0, sample_rate=args.source_rate, seed=0
        )
        files = sorted(str(p) for p in folder.rglob("*.wav"))
        audio_s = sum(audio_info(f).duration_s for f in files)
        start = time.perf_counter()
        with ProcessPoolExecutor(args.workers) as pool:
            list(pool.map(_raw_ffmpeg, [(f, args.sample_rate) for f in files]))
        raw_rate = audio_s / (time.perf_counter() - start)
        start = time.perf_counter()
        resample_dataset(root / "download", root / "resample", sample_rate=args.sample_rate, workers=args.workers,
                         max_reject_fraction=0.0, progress=False)  # fmt: skip
        pack_dataset(root / "resample", root / "pcm16", codec="pcm16", mp3_bitrate_kbps=128, progress=False)
        ours_rate = audio_s / (time.perf_counter() - start)
        pack_dataset(root / "resample", root / "mp3", codec="mp3", mp3_bitrate_kbps=128, progress=False)
        pcm_reads = _read_rate(root / "pcm16" / "train.h5", args.reads)
        mp3_reads = _read_rate(root / "mp3" / "train.h5", args.reads)
    print(f"files: {len(files)} x 10 s at {args.source_rate} Hz -> {args.sample_rate} Hz mono, workers={args.workers}")
    print(f"raw ffmpeg decode+resample : {raw_rate:8.1f} audio-s / wall-s")
    print(
        f"resample + pack_hdf5 (ours): {ours_rate:8.1f} audio-s / wall-s"
        f"   ratio {ours_rate / raw_rate:.2f} (goal >= 0.8)"
    )
    print(f"HDF5 random access pcm16   : {pcm_reads:8.1f} clips/s")
    print(f"HDF5 random access mp3     : {mp3_reads:8.1f} clips/s")


if __name__ == "__main__":
    main()
