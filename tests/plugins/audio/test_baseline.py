"""The classical baseline: exact STFT round trip, noise tracking, and a measurable denoising gain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("scipy")

from polydiff_audio.baseline import (  # noqa: E402
    apply_spectral_gain,
    enhance_spectral_subtraction,
    enhance_wiener,
    mcra_noise_psd,
    stft_sizes,
    wiener_gain,
)
from polydiff_audio.metrics import si_sdr  # noqa: E402

RATE = 16000
ENHANCERS = [enhance_wiener, enhance_spectral_subtraction]


def white_noise_like(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(x.size)
    return noise * np.sqrt(np.mean(x**2) / np.mean(noise**2) / 10 ** (snr_db / 10))


def power_spectrogram(x: np.ndarray, rate: int = RATE) -> np.ndarray:
    """|Y|^2 exactly as the enhancers see it, captured through a unit gain rule."""
    seen = []
    apply_spectral_gain(x, rate, lambda power, hop_s: seen.append(power) or np.ones_like(power))
    return seen[0]


def test_stft_sizes_are_32_ms_powers_of_two_with_75_percent_overlap():
    assert stft_sizes(16000) == (512, 128)
    assert stft_sizes(8000) == (256, 64)
    assert stft_sizes(48000) == (2048, 512)
    with pytest.raises(ValueError, match="rate"):
        stft_sizes(0)


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
@pytest.mark.parametrize("length", [1, 127, 513, 12345])
def test_unit_gain_reconstructs_the_input_exactly(rate, length):
    x = np.random.default_rng(length).standard_normal(length)
    y = apply_spectral_gain(x, rate, lambda power, hop_s: np.ones_like(power))
    np.testing.assert_allclose(y, x, rtol=0, atol=1e-12)


def test_mcra_tracks_the_psd_of_white_noise_alone_and_under_speech(synthetic_speech):
    sigma = 0.1
    noise = sigma * np.random.default_rng(3).standard_normal(2 * RATE)
    n_fft, hop = stft_sizes(RATE)
    # E|Y(k)|^2 of white noise is sigma^2 times the window energy, sum(sqrt-Hann^2) = n_fft / 2.
    expected = sigma**2 * n_fft / 2
    for signal in (noise, noise + synthetic_speech()):
        estimate = mcra_noise_psd(power_spectrogram(signal), hop / RATE)
        assert 0.8 < np.median(estimate / expected) < 1.25


@pytest.mark.parametrize("enhance", ENHANCERS)
def test_enhancers_improve_si_sdr_at_0_db(synthetic_speech, enhance):
    clean = synthetic_speech()
    noisy = clean + white_noise_like(clean, 0.0)
    gain = si_sdr(enhance(noisy, RATE), clean) - si_sdr(noisy, clean)
    assert gain > 5.0  # about 8.5 dB for both on this signal


@pytest.mark.parametrize("enhance", ENHANCERS)
def test_enhancers_keep_shape_dtype_and_type_and_leave_the_input_alone(synthetic_speech, enhance):
    stereo = np.stack([synthetic_speech(0.5), synthetic_speech(0.5)[::-1]]).astype(np.float32)[:, :7777]
    stereo = stereo + white_noise_like(stereo.reshape(-1), 5.0).reshape(stereo.shape).astype(np.float32)
    before = stereo.copy()
    out = enhance(stereo, RATE)
    assert out.shape == stereo.shape and out.dtype == np.float32 and np.all(np.isfinite(out))
    np.testing.assert_array_equal(stereo, before)
    # Channels are independent: the first channel alone gives the same first channel.
    np.testing.assert_allclose(enhance(stereo[0], RATE), out[0], atol=1e-6)
    tensor = torch.from_numpy(stereo[:1].astype(np.float64))
    out_tensor = enhance(tensor, RATE)
    assert isinstance(out_tensor, torch.Tensor) and out_tensor.dtype == torch.float64 and out_tensor.shape == (1, 7777)


@pytest.mark.parametrize("enhance", ENHANCERS)
def test_enhancers_are_scale_invariant(synthetic_speech, enhance):
    noisy = synthetic_speech(0.5) + white_noise_like(synthetic_speech(0.5), 0.0)
    np.testing.assert_allclose(enhance(1000.0 * noisy, RATE), 1000.0 * enhance(noisy, RATE), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("enhance", ENHANCERS)
@pytest.mark.parametrize("length", [0, 1, 300, RATE])
def test_silence_stays_silent_without_nan(enhance, length):
    out = enhance(np.zeros(length), RATE)
    assert out.shape == (length,) and np.all(out == 0.0)
    # Silence followed by noise: the gains are finite everywhere.
    mixed = np.concatenate([np.zeros(length), white_noise_like(np.ones(RATE // 4), 0.0)])
    assert np.all(np.isfinite(enhance(mixed, RATE)))


def test_wiener_gain_is_floored_and_approaches_one_at_high_snr():
    power = np.array([[0.0, 1.0, 1e6]] * 5)
    gain = wiener_gain(power, np.ones_like(power), min_prior_snr_db=-20.0)
    assert np.all(gain >= 0.01 / 1.01 - 1e-12) and np.all(gain <= 1.0)
    assert gain[-1, 2] > 0.999 and gain[-1, 0] == pytest.approx(0.01 / 1.01)


@pytest.mark.parametrize("enhance", ENHANCERS)
def test_enhancers_reject_non_finite_and_integer_input(enhance):
    with pytest.raises(ValueError, match="non-finite"):
        enhance(np.array([0.0, np.nan, 1.0]), RATE)
    with pytest.raises(TypeError, match="floating-point"):
        enhance(np.zeros(10, dtype=np.int16), RATE)
