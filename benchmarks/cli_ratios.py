"""Start-up time and memory of the inference CLI, as ratios to `python -c "import torch"` on the same machine.

Measured (each a fresh process, median of `--repeats`, wall time and peak RSS from `resource.getrusage` of the
child): `import torch`; `audiopipe --help`; `audiopipe tag --help`; `audiopipe tag FILE` on one 10-s demo
recording with the demo student; and, with `--hours H`, `audiopipe tag --windows --json` and `audiopipe detect`
on a generated H-hour 16-kHz recording (peak RSS; the goal is < 1 GB for 2 h). Goals (issue 16): help ≤ 0.3×,
tagging one file ≤ 2× the torch import time.

    python benchmarks/cli_ratios.py --repeats 5
    python benchmarks/cli_ratios.py --repeats 1 --hours 2 --detect-hop-s 10

Needs the demo checkpoints (data/distill_mobilenet/student.pt, data/atst_stage2/model.pt) and a recording under
data/download (falls back to a generated 10-s wav).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).parents[1]
CLI = [sys.executable, "-m", "audiopipe.cli"]


_WRAPPER = (
    "import resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "wall = time.perf_counter() - start\n"
    "print(code, wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def measure(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one child process (run under a fresh wrapper so the peak is its own)."""
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    code, wall, peak_kb = proc.stdout.split()
    if int(code) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-300:]}")
    return float(wall), int(peak_kb) / 1024


def median(cmd: list[str], repeats: int) -> tuple[float, float]:
    runs = [measure(cmd) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs)


def long_recording(folder: Path, hours: float, rate: int = 16000) -> Path:
    """An H-hour mono PCM16 wav of tones in noise, written in 60-s blocks."""
    import numpy as np
    import soundfile as sf

    path = folder / f"long_{hours:g}h.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as out:
        for minute in range(int(hours * 60)):
            t = np.arange(60 * rate) / rate
            block = 0.2 * np.sin(2 * np.pi * (220 + 10 * (minute % 30)) * t) + 0.05 * rng.standard_normal(t.size)
            out.write(block.astype(np.float32))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hours", type=float, default=0.0, help="also measure RSS on a recording this long")
    parser.add_argument("--detect-hop-s", type=float, default=3.0, help="detect hop for the long recording")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    clips = sorted((ROOT / "data" / "download" / "realmix" / "audio").glob("test/*.wav"))
    tmp = Path(tempfile.mkdtemp(prefix="cli_ratios_"))
    if clips:
        clip = clips[0]
    else:
        import numpy as np
        import soundfile as sf

        clip = tmp / "clip.wav"
        sf.write(clip, (0.1 * np.random.default_rng(0).standard_normal(160000)).astype(np.float32), 16000)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    torch_s, torch_mb = median([sys.executable, "-c", "import torch"], args.repeats)
    label = 'python -c "import torch"'
    print(f"{label:<40} {torch_s:6.2f} s  {torch_mb:7.0f} MB  1.00x")
    rows = [("audiopipe --help", [*CLI, "--help"]), ("audiopipe tag --help", [*CLI, "tag", "--help"]),
            (f"audiopipe tag {clip.name} (demo student)", [*CLI, "tag", str(clip), "--top-k", "5"])]
    for name, cmd in rows:
        wall, mb = median(cmd, args.repeats)
        print(f"{name:<40} {wall:6.2f} s  {mb:7.0f} MB  {wall / torch_s:.2f}x")
    if args.hours > 0:
        long = long_recording(tmp, args.hours)
        for name, cmd in [
            (f"tag --windows --json, {args.hours:g} h", [*CLI, "tag", str(long), "--windows", "--json"]),
            (f"detect --hop-s {args.detect_hop_s:g}, {args.hours:g} h",
             [*CLI, "detect", str(long), "--hop-s", str(args.detect_hop_s)]),
        ]:
            wall, mb = measure(cmd)
            print(f"{name:<40} {wall:6.1f} s  {mb:7.0f} MB peak RSS")
        long.unlink()


if __name__ == "__main__":
    main()
