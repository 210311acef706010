"""The compressed complex STFT of SGMSE+: exact inverse, compression by hand, layouts, padding."""

from __future__ import annotations

import math

import pytest
import torch

from polydiff_audio.stft import (
    SpectrogramTransform,
    channels_to_complex,
    complex_to_channels,
    crop_frames,
    pad_frames,
)


def test_defaults_are_sgmse_plus():
    tr = SpectrogramTransform()
    assert (tr.n_fft, tr.hop_length, tr.window, tr.alpha, tr.beta) == (510, 128, "hann", 0.5, 0.15)
    assert tr.num_bins == 256
    assert tr.num_frames(16000) == 1 + 16000 // 128


@pytest.mark.parametrize(
    "shape, dtype, window, atol",
    [
        ((2, 1, 4000), torch.float32, "hann", 1e-5),
        ((1, 2, 3001), torch.float32, "hann", 1e-5),
        ((1, 1, 2000), torch.float32, "sqrthann", 1e-5),
        ((2, 1, 777), torch.float64, "hann", 1e-12),
    ],
)
def test_round_trip_is_exact(shape, dtype, window, atol):
    generator = torch.Generator().manual_seed(0)
    wav = torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1
    tr = SpectrogramTransform(window=window)
    spec = tr(wav)
    assert spec.is_complex() and spec.shape == (shape[0], shape[1], 256, tr.num_frames(shape[-1]))
    back = tr.inverse(spec, shape[-1])
    assert back.dtype == dtype and back.shape == wav.shape
    torch.testing.assert_close(back, wav, atol=atol, rtol=0)


def test_compression_by_hand():
    tr = SpectrogramTransform()
    x = torch.tensor([4.0 * complex(math.cos(math.pi / 3), math.sin(math.pi / 3)), 0j, -9.0 + 0j])
    # 0.15 * |X|^0.5 with the phase kept: |4| -> 0.3, |0| -> 0, |-9| -> 0.45 at angle pi.
    expected = torch.tensor([0.3 * complex(math.cos(math.pi / 3), math.sin(math.pi / 3)), 0j, -0.45 + 0j])
    compressed = tr.compress(x)
    torch.testing.assert_close(compressed, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(tr.decompress(compressed), x, atol=1e-5, rtol=0)
    plain = SpectrogramTransform(alpha=1.0, beta=2.0)
    torch.testing.assert_close(plain.compress(x), 2 * x)


def test_sine_energy_lands_in_its_bin():
    tr = SpectrogramTransform()
    sr, k = 16000, 40
    freq = k * sr / tr.n_fft  # the centre frequency of bin k
    t = torch.arange(8000, dtype=torch.float64) / sr
    wav = torch.sin(2 * math.pi * freq * t).reshape(1, 1, -1)
    magnitude = tr(wav).abs()[0, 0, :, 4:-4].mean(dim=-1)  # inner frames: away from the padded edges
    assert int(magnitude.argmax()) == k
    # A Hann window leaks into the two neighbours only; everything further is far below.
    far = torch.cat([magnitude[: k - 2], magnitude[k + 3 :]])
    assert float(far.max()) < 0.05 * float(magnitude[k])


def test_channel_layout_round_trip_and_order():
    spec = torch.randn(3, 2, 5, 7, dtype=torch.complex64)
    real = complex_to_channels(spec)
    assert real.shape == (3, 4, 5, 7) and not real.is_complex()
    torch.testing.assert_close(real[:, 0], spec[:, 0].real)
    torch.testing.assert_close(real[:, 1], spec[:, 0].imag)
    torch.testing.assert_close(real[:, 3], spec[:, 1].imag)
    torch.testing.assert_close(channels_to_complex(real), spec)
    with pytest.raises(ValueError, match="even channel count"):
        channels_to_complex(torch.randn(1, 3, 2, 2))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.float32])
def test_pad_and_crop_frames(dtype):
    spec = torch.randn(2, 1, 4, 13, dtype=dtype)
    before = spec.clone()
    padded, frames = pad_frames(spec, 8)
    assert frames == 13 and padded.shape == (2, 1, 4, 16) and padded.dtype == dtype
    assert bool((padded[..., 13:] == 0).all())
    torch.testing.assert_close(crop_frames(padded, frames), spec)
    torch.testing.assert_close(spec, before)  # the input is left alone
    same, frames = pad_frames(padded, 4)
    assert same.shape == padded.shape and frames == 16


def test_immutable_and_checked():
    tr = SpectrogramTransform()
    with pytest.raises(AttributeError, match="immutable"):
        tr.beta = 0.3
    with pytest.raises(ValueError, match="valid: hann, sqrthann"):
        SpectrogramTransform(window="hamming")
    with pytest.raises(ValueError, match="at least 256 samples"):
        tr(torch.zeros(1, 1, 100))
    with pytest.raises(ValueError, match="256 frequency bins"):
        tr.inverse(torch.zeros(1, 1, 129, 3, dtype=torch.complex64), 256)
    assert tr == SpectrogramTransform() and tr != SpectrogramTransform(beta=0.2)


def test_constant_padding_handles_short_signals():
    tr = SpectrogramTransform(pad_mode="constant")
    wav = torch.rand(1, 1, 100, dtype=torch.float64) - 0.5
    torch.testing.assert_close(tr.inverse(tr(wav), 100), wav, atol=1e-12, rtol=0)
