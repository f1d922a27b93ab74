"""Procedural soundscapes with the same outputs as the real-audio `realmix` source (tests, CPU fallback).

Each class has its own signature (harmonic voice-like tones for Speech, barks, chirps, beeps, noise bands,
clicks, ...), so small models can learn the task. Splits: `train`/`valid`/`test` soundscapes with strong
events, `weak` isolated events with clip tags, `unlabelled` soundscapes without labels.

`make_synthetic_pack(out_dir)` writes tiny `<split>.h5` files in seconds for other modules' tests:

    >>> paths = make_synthetic_pack(tmp_path, n_per_split=3, sample_rate=16000, seed=0)  # doctest: +SKIP
    >>> sorted(paths)  # doctest: +SKIP
    ['test', 'train', 'unlabelled', 'valid', 'weak']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from audiopipe.data.hdf5 import ClipWriter
from audiopipe.data.manifests import DEFAULT_CLASSES, SPLITS, STRONG_SPLITS, Clip
from audiopipe.data.mixer import Foreground, choose_onsets, mix_soundscape

Generator = Callable[[np.random.Generator, int, float], np.ndarray]


def _t(sample_rate: int, duration_s: float) -> np.ndarray:
    return np.arange(max(int(duration_s * sample_rate), 1), dtype=np.float64) / sample_rate


def _harmonic(f0: np.ndarray, t: np.ndarray, sample_rate: int, n_harm: int, tilt: float) -> np.ndarray:
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    out = np.zeros_like(t)
    for k in range(1, n_harm + 1):
        mask = (k * f0) < 0.45 * sample_rate  # keep harmonics below Nyquist
        out += mask * np.sin(k * phase) / k**tilt
    return out


def _env(t: np.ndarray, attack_s: float, decay_s: float) -> np.ndarray:
    return np.minimum(t / max(attack_s, 1e-3), 1.0) * np.exp(-t / max(decay_s, 1e-3))


def _bandnoise(rng: np.random.Generator, n: int, sample_rate: int, lo_hz: float, hi_hz: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    spec[(freqs < lo_hz) | (freqs > min(hi_hz, 0.45 * sample_rate))] = 0
    return np.fft.irfft(spec, n)


def _speech(rng: np.random.Generator, sr: int, dur: float) -> np.ndarray:
    t = _t(sr, dur)
    f0 = rng.uniform(110, 220) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    syllables = 0.5 * (1 - np.cos(2 * np.pi * rng.uniform(3, 5) * t))
    return _harmonic(f0, t, sr, 12, 1.0) * syllables


def _dog(rng: np.random.Generator, sr: int, dur: float) -> np.ndarray:
    t = _t(sr, dur)
    period = rng.uniform(0.3, 0.5)
    local = np.mod(t, period)
    f0 = rng.uniform(350, 550) * (1 - 0.3 * local / period)
    return _harmonic(f0, t, sr, 8, 0.7) * _env(local, 0.01, 0.06)


def _cat(rng: np.random.Generator, sr: int, dur: float) -> np.ndarray:
    t = _t(sr, dur)
    f0 = rng.uniform(500, 700) + 300 * np.sin(np.pi * t / max(dur, 1e-3))
    return _harmonic(f0, t, sr, 6, 1.2) * np.sin(np.pi * t / max(dur, 1e-3))


def _alarm(rng: np.random.Generator, sr: int, dur: float) -> np.ndarray:
    t = _t(sr, dur)
    f = np.where(np.mod(t, 0.25) < 0.125, rng.uniform(2000, 2400), rng.uniform(2600, 3000))
    return np.sin(2 * np.pi * np.cumsum(f) / sr) * 0.8


def _water(rng: np.random.Generator, sr: int, dur: float) -> np.ndarray:
    n = len(_t(sr, dur))
    return _bandnoise(rng, n, sr, 1000, 4000) * (1 + 0.5 * _bandnoise(rng, n, sr, 2, 20))


def _dishes(rng: np.random.Generator, sr: int, dur: float) -> np.ndarray:
    t = _t(sr, dur)
    out = np.zeros_like(t)
    for onset in rng.uniform(0, max(dur - 0.1, 0.01), size=rng.integers(2, 5)):
        local = np.clip(t - onset, 0, None)
        out += (t >= onset) * np.sin(2 * np.pi * rng.uniform(4500, 6500) * local) * np.exp(-local / 0.04)
    return out


def _door(rng: np.random.Generator, sr: int, dur: float) -> np.ndarray:
    t = _t(sr, dur)
    creak = _harmonic(np.full_like(t, rng.uniform(70, 120)), t, sr, 20, 0.5) * 0.3 * (t < 0.7 * dur)
    slam_at = 0.7 * dur
    local = np.clip(t - slam_at, 0, None)
    slam = (t >= slam_at) * _bandnoise(rng, len(t), sr, 40, 300) * 4 * np.exp(-local / 0.08)
    return creak + slam


def _footsteps(rng: np.random.Generator, sr: int, dur: float) -> np.ndarray:
    t = _t(sr, dur)
    local = np.mod(t, rng.uniform(0.45, 0.6))
    return _bandnoise(rng, len(t), sr, 150, 1200) * _env(local, 0.005, 0.03) * 3


def _bird(rng: np.random.Generator, sr: int, dur: float) -> np.ndarray:
    t = _t(sr, dur)
    period = rng.uniform(0.12, 0.2)
    local = np.mod(t, period)
    f = rng.uniform(3000, 4000) + 2500 * local / period
    return np.sin(2 * np.pi * np.cumsum(f) / sr) * (local < 0.6 * period)


def _music(rng: np.random.Generator, sr: int, dur: float) -> np.ndarray:
    t = _t(sr, dur)
    root = rng.uniform(180, 330)
    chord = sum(_harmonic(np.full_like(t, root * r), t, sr, 5, 1.5) for r in (1.0, 1.26, 1.5))
    return chord * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t) ** 2)


GENERATORS: dict[str, Generator] = dict(
    zip(DEFAULT_CLASSES, (_speech, _dog, _cat, _alarm, _water, _dishes, _door, _footsteps, _bird, _music))
)


def synth_event(label: str, rng: np.random.Generator, sample_rate: int, duration_s: float) -> np.ndarray:
    """One procedural event of class `label`, peak-normalised to 0.5, with 10-ms fades."""
    x = GENERATORS[label](rng, sample_rate, duration_s)
    fade = min(int(0.01 * sample_rate), x.shape[0] // 2)
    if fade:
        ramp = np.linspace(0, 1, fade)
        x[:fade] *= ramp
        x[-fade:] *= ramp[::-1]
    peak = float(np.abs(x).max()) or 1.0
    return (0.5 * x / peak).astype(np.float32)


def synth_background(rng: np.random.Generator, num_samples: int, sample_rate: int) -> np.ndarray:
    """Brown-ish noise plus mains hum at about -30 dBFS."""
    brown = np.cumsum(rng.standard_normal(num_samples))
    brown -= np.convolve(brown, np.ones(401) / 401, mode="same")  # remove the drift
    hum = np.sin(2 * np.pi * 50 * np.arange(num_samples) / sample_rate) * 0.3
    x = brown / (np.std(brown) + 1e-8) + hum + 0.3 * rng.standard_normal(num_samples)
    return (x * 0.03 / (np.std(x) + 1e-8)).astype(np.float32)


def generate_clips(
    counts: dict[str, int],
    *,
    duration_s: float,
    sample_rate: int,
    seed: int,
    class_names: Sequence[str] = DEFAULT_CLASSES,
    max_events: int = 3,
) -> Iterator[tuple[Clip, np.ndarray]]:
    """Yield `(clip, audio)` for every split in `counts`; deterministic in `seed`."""
    for split in SPLITS:
        for k in range(counts.get(split, 0)):
            rng = np.random.default_rng([seed, SPLITS.index(split), k])
            clip_id = f"{split}_{k:05d}"
            if split == "weak":
                label = class_names[k % len(class_names)]
                ev_dur = float(rng.uniform(0.5, 1.0) * duration_s)
                audio = synth_event(label, rng, sample_rate, ev_dur)
                clip = Clip(clip_id, f"audio/{split}/{clip_id}.wav", split, labels=(label,), source="synthetic")
                yield _with_duration(clip, audio, sample_rate), audio
                continue
            n = int(duration_s * sample_rate)
            n_events = int(rng.integers(1, max_events + 1))
            labels = [class_names[int(i)] for i in rng.integers(0, len(class_names), n_events)]
            durs = [float(min(rng.uniform(0.3, 3.0), 0.8 * duration_s)) for _ in labels]
            onsets = choose_onsets(durs, duration_s, rng, max_polyphony=2)
            placed = [
                (Foreground(synth_event(lab, rng, sample_rate, d), lab, "synthetic"), on, float(rng.uniform(5, 20)))
                for lab, d, on in zip(labels, durs, onsets)
                if on is not None
            ]
            audio, events = mix_soundscape(synth_background(rng, n, sample_rate), placed, sample_rate)
            if split == "unlabelled":
                clip = Clip(clip_id, f"audio/{split}/{clip_id}.wav", split, source="synthetic")
            else:
                tags = tuple(c for c in class_names if any(e[2] == c for e in events))
                clip = Clip(clip_id, f"audio/{split}/{clip_id}.wav", split, tags, tuple(events), source="synthetic")
            yield _with_duration(clip, audio, sample_rate), audio


def _with_duration(clip: Clip, audio: np.ndarray, sample_rate: int) -> Clip:
    from dataclasses import replace

    return replace(clip, licence="CC0-1.0 (procedural)", duration_s=round(audio.shape[0] / sample_rate, 4))


def make_synthetic_pack(
    out_dir: str | Path,
    *,
    n_per_split: int | dict[str, int] = 4,
    sample_rate: int = 16000,
    seed: int = 0,
    duration_s: float = 1.0,
    codec: str = "pcm16",
    class_names: Sequence[str] = DEFAULT_CLASSES,
) -> dict[str, Path]:
    """Write tiny packed splits `<out_dir>/<split>.h5` (train/valid/test with strong events, weak, unlabelled).

    Args:
        n_per_split: clips per split (an int for all splits, or a dict split -> count).

    Returns:
        split name -> path of its `.h5` file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = n_per_split if isinstance(n_per_split, dict) else {s: n_per_split for s in SPLITS}
    index = {c: i for i, c in enumerate(class_names)}
    paths = {}
    for split in SPLITS:
        if split not in counts:
            continue
        path = out_dir / f"{split}.h5"
        with ClipWriter(
            path,
            class_names=class_names,
            sample_rate=sample_rate,
            codec=codec,
            has_strong=split in STRONG_SPLITS,
            split=split,
        ) as writer:
            clips = generate_clips(
                {split: counts[split]},
                duration_s=duration_s,
                sample_rate=sample_rate,
                seed=seed,
                class_names=class_names,
            )
            for clip, audio in clips:
                targets = np.array([c in clip.labels for c in class_names], np.float32)
                events = [(a, b, index[lab]) for a, b, lab in clip.events]
                writer.add(clip.clip_id, audio, targets=targets, events=events)
        paths[split] = path
    return paths


def build_synthetic_source(
    dest: str | Path,
    *,
    counts: dict[str, int],
    duration_s: float,
    sample_rate: int,
    seed: int,
    class_names: Sequence[str] = DEFAULT_CLASSES,
    max_events: int = 3,
) -> list[Clip]:
    """Write the `synthetic` source as a data folder (audio/<split>/*.wav + metadata files, see manifests)."""
    from dataclasses import replace

    from audiopipe.audio.io import save_audio
    from audiopipe.data.manifests import write_metadata
    from audiopipe.storage import file_sha256

    dest = Path(dest)
    clips = []
    for clip, audio in generate_clips(
        counts,
        duration_s=duration_s,
        sample_rate=sample_rate,
        seed=seed,
        class_names=class_names,
        max_events=max_events,
    ):
        save_audio(dest / clip.path, audio, sample_rate)
        clips.append(replace(clip, sha256=file_sha256(dest / clip.path)))
    write_metadata(dest, clips, class_names)
    return clips
