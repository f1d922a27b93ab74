"""Unit tests for audiopipe.audio.features.EfficientATMel: frame counts, spec sanity values, parity, modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiopipe.audio.features import EfficientATMel, kaldi_mel_banks

SAMPLE_RATE = 32000


@pytest.fixture
def mel() -> EfficientATMel:
    return EfficientATMel().eval()


@pytest.mark.parametrize(
    ("num_samples", "hop_length", "frames"),
    [
        (320000, 320, 1000),  # 10 s: pre-emphasis drops one sample -> 1000, not 1001 (spec §10.4)
        (320000, 160, 2000),
        (320000, 480, 667),
        (320000, 640, 500),
        (320000, 800, 400),
        (32000, 320, 100),
        (160000, 320, 500),
        (24641, 320, 78),  # odd length: 1 + 24640 // 320
        (641, 320, 3),
    ],
)
def test_frame_count(num_samples: int, hop_length: int, frames: int) -> None:
    mel = EfficientATMel(hop_length=hop_length).eval()
    out = mel(torch.zeros(1, num_samples))
    assert out.shape == (1, 128, frames)
    assert mel.num_frames(num_samples) == frames


@pytest.mark.parametrize("batch", [1, 3])
def test_output_layout_and_dtype(mel: EfficientATMel, batch: int) -> None:
    out = mel(torch.randn(batch, 8000).clamp(-1, 1))
    assert out.shape == (batch, 128, 25)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_silence_maps_to_the_normalised_log_offset(mel: EfficientATMel) -> None:
    out = mel(torch.zeros(1, 10 * SAMPLE_RATE))
    assert out.shape == (1, 128, 1000)
    torch.testing.assert_close(out, torch.full_like(out, (np.log(1e-5) + 4.5) / 5))
    assert abs(out[0, 0, 0].item() - (-1.402585)) < 1e-6


def test_1khz_sine_peaks_in_band_36(mel: EfficientATMel) -> None:
    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    out = mel(0.5 * torch.sin(2 * torch.pi * 1000 * t).unsqueeze(0))
    assert out[0, :, 10:-10].mean(dim=1).argmax().item() == 36


def test_filterbank_matches_torchaudio_kaldi() -> None:
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    for fmin, fmax in [(0.0, 15000.0), (9.0, 16000.0), (4.0, 14001.0)]:
        reference, _ = kaldi.get_mel_banks(128, 1024, float(SAMPLE_RATE), fmin, fmax, 100.0, -500.0, 1.0)
        ours = kaldi_mel_banks(128, 1024, SAMPLE_RATE, fmin, fmax)
        assert ours.shape == (128, 513)
        torch.testing.assert_close(ours[:, :512], reference, rtol=0, atol=1e-7)
        assert (ours[:, 512] == 0).all()


def test_eval_filterbank_edges(mel: EfficientATMel) -> None:
    banks = mel.eval_mel_banks
    assert mel.fmax == 15000.0 and mel.fmin == 0.0
    assert banks.nonzero()[:, 1][banks.nonzero()[:, 0] == 0].tolist() == [1]  # band 0 only touches FFT bin 1
    assert (banks.sum(dim=1) > 0).all()  # no empty band
    assert banks.max() <= 1.0 and banks.min() >= 0.0


def _numpy_reference(x: np.ndarray) -> np.ndarray:
    """Spec §1.2 in float64 NumPy: pre-emphasis, reflect-padded STFT with symmetric Hann, power, mel, log, norm."""
    x = x[1:] - 0.97 * x[:-1]
    n_fft, hop, win = 1024, 320, 800
    window = np.zeros(n_fft)
    window[(n_fft - win) // 2 : (n_fft - win) // 2 + win] = np.hanning(win)  # np.hanning is symmetric
    padded = np.pad(x, n_fft // 2, mode="reflect")
    frames = 1 + (len(padded) - n_fft) // hop
    stack = np.stack([padded[i * hop : i * hop + n_fft] * window for i in range(frames)], axis=1)
    power = np.abs(np.fft.rfft(stack, axis=0)) ** 2
    banks = kaldi_mel_banks(128, n_fft, SAMPLE_RATE, 0.0, 15000.0).double().numpy()
    return (np.log(banks @ power + 1e-5) + 4.5) / 5


def test_matches_numpy_reference(mel: EfficientATMel, waveform: np.ndarray) -> None:
    x = waveform[:16000].astype(np.float64)  # 0.5 s at 32 kHz
    ours = mel(torch.from_numpy(x).float().unsqueeze(0))[0].double().numpy()
    np.testing.assert_allclose(ours, _numpy_reference(x), atol=1e-4)


def test_has_no_parameters_and_no_persistent_state(mel: EfficientATMel) -> None:
    assert list(mel.parameters()) == []
    assert mel.state_dict() == {}


def test_eval_mode_is_deterministic_and_ignores_the_global_seed(mel: EfficientATMel) -> None:
    x = torch.randn(2, 8000)
    torch.manual_seed(1)
    first = mel(x)
    torch.manual_seed(2)
    torch.testing.assert_close(mel(x), first, rtol=0, atol=0)


def test_train_mode_jitters_the_filterbank() -> None:
    mel = EfficientATMel().train()
    x = torch.randn(1, 8000)
    torch.manual_seed(0)
    a = mel(x)
    torch.manual_seed(0)
    torch.testing.assert_close(mel(x), a, rtol=0, atol=0)  # reproducible from the global seed
    outputs = [mel(x) for _ in range(4)]
    assert any(not torch.equal(a, other) for other in outputs)  # fmin/fmax drawn anew on each call


def test_train_jitter_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[float, float]] = []

    def spy(n_mels: int, n_fft: int, sample_rate: float, fmin: float, fmax: float) -> torch.Tensor:
        calls.append((fmin, fmax))
        return kaldi_mel_banks(n_mels, n_fft, sample_rate, fmin, fmax)

    monkeypatch.setattr("audiopipe.audio.features.kaldi_mel_banks", spy)
    mel = EfficientATMel().train()
    for _ in range(40):
        mel(torch.randn(1, 2000))
    fmins, fmaxs = zip(*calls, strict=True)
    assert all(0 <= f <= 9 for f in fmins) and all(14001 <= f <= 16000 for f in fmaxs)
    assert len(set(fmaxs)) > 1


def test_masks_only_in_train_mode() -> None:
    x = torch.randn(2, 16000)
    masked = EfficientATMel(freqm=48, timem=20)
    plain = EfficientATMel()
    torch.testing.assert_close(masked.eval()(x), plain.eval()(x))
    torch.manual_seed(0)
    out = masked.train()(x)
    filled = (out == 0.9).all(dim=2).any() or (out == 0.9).all(dim=1).any()  # log 0 -> (0 + 4.5) / 5
    assert filled


def test_rejects_bad_input(mel: EfficientATMel) -> None:
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        mel(torch.zeros(1, 1, 8000))
    with pytest.raises(ValueError, match="too short"):
        mel(torch.zeros(1, 400))
    with pytest.raises(ValueError, match="aug_range"):
        EfficientATMel(fmin_aug_range=0)
