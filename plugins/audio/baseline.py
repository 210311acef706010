"""Classical single-channel speech enhancement, the non-diffusion baseline of the audio table.

Two textbook gain rules in the STFT domain, both driven by a noise power spectral density (PSD)
that is estimated from the noisy signal itself, so neither needs a noise-only recording or
assumes the file starts with a pause:

- :func:`enhance_wiener`: the Wiener gain ``xi / (1 + xi)`` with the a-priori SNR ``xi`` from
  Ephraim and Malah's decision-directed rule (1984, Eq. 51; smoothing 0.98) and a floor on
  ``xi`` against musical noise (Cappé 1994).
- :func:`enhance_spectral_subtraction`: magnitude spectral subtraction with over-subtraction
  and a spectral floor (Berouti, Schwartz and Makhoul 1979).

The noise PSD comes from :func:`mcra_noise_psd`, minima-controlled recursive averaging
(Cohen and Berdugo 2002): a bin counts as speech when its smoothed power rises well above its
minimum over the last ~1.5 s, and the noise estimate is a recursive average that is frozen in
proportion to the smoothed speech-presence probability.

The STFT uses a square-root Hann window for analysis and synthesis with 75 % overlap (32 ms
frames, 8 ms hop at 16 kHz); the signal is padded (by reflection) so every sample is covered by a
full set of frames, so a unit gain reconstructs the input exactly (:func:`apply_spectral_gain`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "GainRule",
    "stft_sizes",
    "apply_spectral_gain",
    "mcra_noise_psd",
    "wiener_gain",
    "spectral_subtraction_gain",
    "enhance_wiener",
    "enhance_spectral_subtraction",
]

Signal = TypeVar("Signal", np.ndarray, Tensor)

GainRule = Callable[[np.ndarray, float], np.ndarray]
"""``gain_rule(power, hop_s) -> gain``: real gains for a noisy power spectrogram.

``power`` is ``|Y|^2`` of shape (frames, bins) in float64, ``hop_s`` the frame hop in seconds;
the gains have the same shape.
"""

_FRAME_S = 0.032  # 32 ms: long enough to resolve the harmonics of a 100 Hz voice, short enough to be stationary
_OVERLAP = 4  # frames covering each sample (75 % overlap)


def stft_sizes(rate: int) -> tuple[int, int]:
    """``(n_fft, hop)`` of the baseline STFT at ``rate``: the power of two nearest 32 ms, hop a quarter.

    512 and 128 samples at 16 kHz, 256 and 64 at 8 kHz, 2048 and 512 at 48 kHz.
    """
    if int(rate) != rate or rate <= 0:
        raise ValueError(f"rate must be a positive integer number of samples per second, got {rate!r}")
    n_fft = 2 ** max(3, round(math.log2(_FRAME_S * rate)))
    return n_fft, n_fft // _OVERLAP


def _window(n_fft: int) -> np.ndarray:
    # Periodic Hann tiles under overlap-add; its square root used twice (analysis and
    # synthesis) multiplies back to Hann, so the overlap-add of window products is constant.
    return np.sqrt(0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft))


def _stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Complex spectrogram (frames, bins) of a 1-D signal padded for full frame coverage."""
    pad = n_fft - hop
    frames = -(-(x.size + pad) // hop)  # ceil: the last sample still has all its frames
    # Reflection rather than zeros: the edge frames then carry as much power as their
    # neighbours, where zero-padded ones would look like a quiet stretch to the noise
    # tracker's minimum search. The padding is cropped again, so reconstruction stays exact.
    padded = np.pad(x, (pad, (frames - 1) * hop + n_fft - pad - x.size), mode="reflect")
    segments = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    return np.fft.rfft(segments * _window(n_fft), axis=-1)


def _istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Weighted overlap-add inverse of :func:`_stft`, cropped to ``length`` samples."""
    window = _window(n_fft)
    frames = np.fft.irfft(spec, n=n_fft, axis=-1) * window
    count = frames.shape[0]
    overlap = n_fft // hop
    # Frame i's k-th hop-sized chunk lands on output chunk i + k: add the chunks with shifts
    # instead of looping over frames.
    chunks = frames.reshape(count, overlap, hop)
    out = np.zeros((count + overlap - 1, hop))
    for k in range(overlap):
        out[k : k + count] += chunks[:, k]
    # The sum of the shifted window products; constant on every fully covered sample.
    envelope = (window**2).reshape(overlap, hop).sum(axis=0)
    out = (out / envelope).reshape(-1)
    pad = n_fft - hop
    return out[pad : pad + length]


def _to_numpy(wav: Signal) -> tuple[np.ndarray, Callable[[np.ndarray], Signal]]:
    """float64 (channels, samples) view of the input and a function restoring type, dtype and shape."""
    if isinstance(wav, Tensor):
        if not wav.is_floating_point():
            raise TypeError(f"expected a real floating-point waveform, got {wav.dtype}")
        array = wav.detach().cpu().numpy()

        def restore(out: np.ndarray) -> Tensor:
            return torch.from_numpy(out.reshape(wav.shape)).to(dtype=wav.dtype, device=wav.device)

    else:
        array = np.asarray(wav)
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"expected a real floating-point waveform, got {array.dtype}")
        dtype, shape = array.dtype, array.shape

        def restore(out: np.ndarray) -> np.ndarray:
            return out.reshape(shape).astype(dtype, copy=False)

    if array.ndim == 0:
        raise ValueError("expected a waveform of shape (..., samples), got a scalar")
    if not np.all(np.isfinite(array)):
        raise ValueError("the waveform holds non-finite samples")
    channels = math.prod(array.shape[:-1])  # reshape(-1, S) is ambiguous for S = 0
    return array.reshape(channels, array.shape[-1]).astype(np.float64), restore


def apply_spectral_gain(wav: Signal, rate: int, gain_rule: GainRule) -> Signal:
    """Filter a waveform by a real gain in the STFT domain (sqrt-Hann, 75 % overlap).

    Channels (all leading axes) are processed independently. A gain of exactly 1 returns the
    input up to float rounding.

    Args:
        wav: the waveform, a numpy array or torch tensor of floats.
        rate: its sampling rate in Hz (sets the frame size, see :func:`stft_sizes`).
        gain_rule: maps the power spectrogram of one channel and the hop in seconds to gains.

    Returns:
        The filtered waveform: same type, dtype, device and shape as ``wav``.

    Shapes:
        wav: (..., S); returns (..., S).
    """
    n_fft, hop = stft_sizes(rate)
    channels, restore = _to_numpy(wav)
    out = np.zeros_like(channels)
    for c, x in enumerate(channels):
        if x.size == 0:
            continue
        spec = _stft(x, n_fft, hop)
        power = spec.real**2 + spec.imag**2
        gain = np.asarray(gain_rule(power, hop / rate), dtype=np.float64)
        if gain.shape != power.shape:
            raise ValueError(f"gain_rule returned shape {gain.shape}, expected {power.shape}")
        out[c] = _istft(spec * gain, n_fft, hop, x.size)
    return restore(out)


def _power_floor(power: np.ndarray) -> float:
    # Keeps every ratio finite: digital silence gives 0/0 otherwise; relative to the file's
    # mean power so the gains stay scale-invariant.
    return 1e-12 * float(power.mean()) + np.finfo(np.float64).tiny


def mcra_noise_psd(
    power: np.ndarray,
    hop_s: float,
    *,
    window_s: float = 1.5,
    smoothing: float = 0.8,
    noise_smoothing: float = 0.95,
    presence_smoothing: float = 0.2,
    threshold: float = 5.0,
) -> np.ndarray:
    """Noise PSD by minima-controlled recursive averaging (MCRA; Cohen and Berdugo 2002).

    The periodogram is smoothed over 3 frequency bins (a normalised Hann window) and then over
    time (``smoothing``), its minimum tracked over the last ``window_s`` seconds; a bin is
    speech when the smoothed power exceeds ``threshold`` times that minimum. The speech-presence
    probability ``p`` is that indicator smoothed over time (``presence_smoothing``), and the
    noise PSD a recursive average of the periodogram with the time-varying factor
    ``noise_smoothing + (1 - noise_smoothing) p``, so it adapts in noise and holds in speech.
    The paper keeps the minimum in two alternating buffers to save memory; an exact sliding
    minimum is cheap here and tracks a falling noise level without the buffers' lag.

    Args:
        power: the noisy periodogram ``|Y|^2``.
        hop_s: the frame hop in seconds.
        window_s: the minimum-search window in seconds; must exceed the longest stretch of
            continuous speech in one bin (the paper's 0.5 to 1.5 s).
        smoothing: time smoothing of the periodogram (alpha_s, 0.8).
        noise_smoothing: recursive-average factor of the noise PSD in noise (alpha_d, 0.95).
        presence_smoothing: time smoothing of the speech indicator (alpha_p, 0.2).
        threshold: the ratio to the minimum above which a bin counts as speech (delta, 5).

    Returns:
        The noise PSD estimate, same shape as ``power``; each frame's estimate includes it.

    Shapes:
        power: (frames, bins); returns (frames, bins).
    """
    from scipy.ndimage import convolve1d, minimum_filter1d
    from scipy.signal import lfilter

    power = np.asarray(power, dtype=np.float64)
    if power.ndim != 2:
        raise ValueError(f"power must be (frames, bins), got shape {power.shape}")
    if power.shape[0] == 0:
        return power.copy()
    for name, value in (
        ("smoothing", smoothing),
        ("noise_smoothing", noise_smoothing),
        ("presence_smoothing", presence_smoothing),
    ):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must lie in [0, 1), got {value}")
    smoothed = convolve1d(power, np.array([0.25, 0.5, 0.25]), axis=1, mode="nearest")
    # First-order recursive smoothing over time, started at the first frame rather than zero.
    smoothed = lfilter([1.0 - smoothing], [1.0, -smoothing], smoothed, axis=0, zi=smoothing * smoothed[:1])[0]
    span = max(1, round(window_s / hop_s))
    # origin shifts the window onto the current and the span - 1 previous frames (causal).
    minimum = minimum_filter1d(smoothed, span, axis=0, mode="nearest", origin=(span - 1) // 2)
    speech = (smoothed > threshold * minimum).astype(np.float64)
    presence = lfilter([1.0 - presence_smoothing], [1.0, -presence_smoothing], speech, axis=0)
    factor = noise_smoothing + (1.0 - noise_smoothing) * presence
    noise = np.empty_like(power)
    noise[0] = power[0]
    for t in range(1, power.shape[0]):
        noise[t] = factor[t] * noise[t - 1] + (1.0 - factor[t]) * power[t]
    return noise


def wiener_gain(
    power: np.ndarray,
    noise_psd: np.ndarray,
    *,
    dd_smoothing: float = 0.98,
    min_prior_snr_db: float = -25.0,
) -> np.ndarray:
    """Wiener gain with the decision-directed a-priori SNR (Ephraim and Malah 1984).

    ``xi_t = a G_{t-1}^2 gamma_{t-1} + (1 - a) max(gamma_t - 1, 0)`` with the a-posteriori SNR
    ``gamma = |Y|^2 / noise``, floored at ``min_prior_snr_db``, and gain ``xi / (1 + xi)``.
    The first frame uses the maximum-likelihood ``max(gamma - 1, 0)`` alone.

    Args:
        power: the noisy periodogram ``|Y|^2``.
        noise_psd: the noise PSD estimate.
        dd_smoothing: the decision-directed weight ``a`` (0.98 in Ephraim and Malah).
        min_prior_snr_db: floor on ``xi`` in dB; -25 dB keeps musical noise low (Cappé 1994)
            while still attenuating noise-only bins by ~25 dB.

    Shapes:
        power, noise_psd: (frames, bins); returns (frames, bins).
    """
    if not 0.0 <= dd_smoothing < 1.0:
        raise ValueError(f"dd_smoothing must lie in [0, 1), got {dd_smoothing}")
    power = np.asarray(power, dtype=np.float64)
    noise = np.maximum(np.asarray(noise_psd, dtype=np.float64), _power_floor(power))
    gamma = power / noise
    xi_min = 10.0 ** (min_prior_snr_db / 10.0)
    gain = np.empty_like(power)
    previous = np.zeros(power.shape[1:])
    for t in range(power.shape[0]):
        ml_estimate = np.maximum(gamma[t] - 1.0, 0.0)
        xi = ml_estimate if t == 0 else dd_smoothing * previous + (1.0 - dd_smoothing) * ml_estimate
        xi = np.maximum(xi, xi_min)
        gain[t] = xi / (1.0 + xi)
        # |S_hat_t|^2 / noise_t, the first term of the next frame's decision-directed estimate.
        previous = gain[t] ** 2 * gamma[t]
    return gain


def spectral_subtraction_gain(
    power: np.ndarray,
    noise_psd: np.ndarray,
    *,
    over_subtraction: float = 2.0,
    floor: float = 0.05,
) -> np.ndarray:
    """Magnitude spectral subtraction as a gain (Berouti, Schwartz and Makhoul 1979).

    ``|S_hat| = max(|Y| - over_subtraction |N|, floor |Y|)`` with ``|N| = sqrt(noise_psd)``,
    i.e. the gain ``max(1 - over_subtraction |N| / |Y|, floor)``. Subtracting more than the
    mean noise removes most of the isolated noise peaks that would otherwise sound as musical
    noise; the floor keeps a little broadband noise to mask what remains.

    Args:
        power: the noisy periodogram ``|Y|^2``.
        noise_psd: the noise PSD estimate.
        over_subtraction: the factor on the noise magnitude (>= 1; 1 is plain subtraction).
        floor: the smallest gain, in [0, 1].

    Shapes:
        power, noise_psd: (frames, bins); returns (frames, bins).
    """
    if over_subtraction < 0:
        raise ValueError(f"over_subtraction must be non-negative, got {over_subtraction}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must lie in [0, 1], got {floor}")
    power = np.asarray(power, dtype=np.float64)
    noise = np.asarray(noise_psd, dtype=np.float64)
    ratio = np.sqrt(np.maximum(noise, 0.0) / np.maximum(power, _power_floor(power)))
    return np.clip(1.0 - over_subtraction * ratio, floor, 1.0)


def enhance_wiener(
    wav: Signal,
    rate: int,
    *,
    dd_smoothing: float = 0.98,
    min_prior_snr_db: float = -25.0,
    noise_window_s: float = 1.5,
) -> Signal:
    """Denoise with a decision-directed Wiener filter and an MCRA noise estimate.

    Args:
        wav: the noisy waveform (numpy array or torch tensor of floats).
        rate: its sampling rate in Hz.
        dd_smoothing: decision-directed weight (see :func:`wiener_gain`).
        min_prior_snr_db: floor on the a-priori SNR in dB (see :func:`wiener_gain`).
        noise_window_s: minimum-search window of the noise estimate (see :func:`mcra_noise_psd`).

    Returns:
        The enhanced waveform, same type, dtype and shape as ``wav``.

    Shapes:
        wav: (..., S), channels processed independently; returns (..., S).
    """

    def gain_rule(power: np.ndarray, hop_s: float) -> np.ndarray:
        noise = mcra_noise_psd(power, hop_s, window_s=noise_window_s)
        return wiener_gain(power, noise, dd_smoothing=dd_smoothing, min_prior_snr_db=min_prior_snr_db)

    return apply_spectral_gain(wav, rate, gain_rule)


def enhance_spectral_subtraction(
    wav: Signal,
    rate: int,
    *,
    over_subtraction: float = 2.0,
    floor: float = 0.05,
    noise_window_s: float = 1.5,
) -> Signal:
    """Denoise by magnitude spectral subtraction with an MCRA noise estimate.

    Args:
        wav: the noisy waveform (numpy array or torch tensor of floats).
        rate: its sampling rate in Hz.
        over_subtraction: factor on the noise magnitude (see :func:`spectral_subtraction_gain`).
        floor: the smallest gain (see :func:`spectral_subtraction_gain`).
        noise_window_s: minimum-search window of the noise estimate (see :func:`mcra_noise_psd`).

    Returns:
        The enhanced waveform, same type, dtype and shape as ``wav``.

    Shapes:
        wav: (..., S), channels processed independently; returns (..., S).
    """

    def gain_rule(power: np.ndarray, hop_s: float) -> np.ndarray:
        noise = mcra_noise_psd(power, hop_s, window_s=noise_window_s)
        return spectral_subtraction_gain(power, noise, over_subtraction=over_subtraction, floor=floor)

    return apply_spectral_gain(wav, rate, gain_rule)
