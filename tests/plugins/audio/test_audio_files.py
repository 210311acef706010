"""Reading, writing and checking audio: resampling is exact, nothing is overwritten, bad input is named."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from polydiff_audio.audio_files import (
    AudioError,
    check_audio,
    find_audio_files,
    read_audio,
    resample,
    write_audio,
)


def _sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_sine_keeps_its_frequency_from_8k_to_16k(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, _sine(440.0, 8000, 1.0), 8000, subtype="FLOAT")

    wav, original_rate = read_audio(path, rate=16000)

    assert original_rate == 8000
    assert wav.shape == (1, 16000) and wav.dtype == torch.float32
    spectrum = np.abs(np.fft.rfft(wav[0].numpy() * np.hanning(16000)))
    assert np.fft.rfftfreq(16000, 1 / 16000)[spectrum.argmax()] == pytest.approx(440.0, abs=1.0)
    # Amplitude survives too: the interpolation filter has unit gain in its pass band.
    assert float(wav[0, 2000:-2000].abs().max()) == pytest.approx(0.5, abs=0.01)


def test_resampling_round_trip_restores_a_band_limited_signal():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    # Components well under 4 kHz, the Nyquist frequency of the 8 kHz stop on the way.
    x = sum(
        rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (130, 710, 1900, 3100)
    )
    wav = torch.tensor(x, dtype=torch.float32)[None]

    back = resample(resample(wav, 16000, 8000), 8000, 16000)

    assert back.shape == wav.shape
    interior = slice(800, -800)  # the filters' edge transients
    error = (back[0, interior] - wav[0, interior]).abs().max()
    assert float(error) < 2e-3 * float(wav.abs().max())


def test_resampling_uses_the_exact_rational_factor():
    wav = torch.zeros(2, 22050)
    out = resample(wav, 22050, 16000)  # up 320, down 441: exactly 16000 samples, 2 channels
    assert out.shape == (2, 16000)


def test_write_then_read_round_trip_keeps_channels(tmp_path):
    stereo = torch.stack(
        [torch.from_numpy(_sine(300.0, 16000, 0.25)), torch.from_numpy(_sine(500.0, 16000, 0.25))]
    )
    path = write_audio(tmp_path / "sub" / "stereo.wav", stereo, 16000)

    wav, rate = read_audio(path, rate=None)

    assert rate == 16000 and wav.shape == (2, 4000)
    assert float((wav - stereo).abs().max()) <= 1 / 32768  # 16-bit PCM step
    assert sf.info(path).subtype == "PCM_16"


def test_write_refuses_to_overwrite(tmp_path):
    path = tmp_path / "keep.wav"
    write_audio(path, torch.full((1, 100), 0.25), 16000)
    before = path.read_bytes()

    with pytest.raises(FileExistsError, match="keep.wav"):
        write_audio(path, torch.zeros(1, 50), 16000)
    assert path.read_bytes() == before

    write_audio(path, torch.zeros(1, 50), 16000, overwrite=True)
    assert sf.info(path).frames == 50


def test_write_rejects_nan_and_clips_out_of_range(tmp_path, caplog):
    with pytest.raises(ValueError, match="NaN"):
        write_audio(tmp_path / "nan.wav", torch.tensor([[0.0, math.nan]]), 16000)
    assert not (tmp_path / "nan.wav").exists()

    write_audio(tmp_path / "loud.wav", torch.tensor([[0.5, 1.5, -2.0]]), 16000, subtype="FLOAT")
    data, _ = sf.read(tmp_path / "loud.wav")
    assert data.tolist() == [0.5, 1.0, -1.0]
    assert "clipping 2 samples" in caplog.text


def _bad_inputs(tmp_path):
    """(path, reason fragment) for each kind of bad input, written to disk."""
    rate = 16000
    cases = []
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    cases.append((text, "not readable as audio"))
    empty_bytes = tmp_path / "zero_bytes.wav"
    empty_bytes.write_bytes(b"")
    cases.append((empty_bytes, "not readable as audio"))
    no_frames = tmp_path / "no_frames.wav"
    sf.write(no_frames, np.zeros(0, dtype=np.float32), rate)
    cases.append((no_frames, "empty"))
    zeros = tmp_path / "zeros.wav"
    sf.write(zeros, np.zeros(rate, dtype=np.float32), rate)
    cases.append((zeros, "silent"))
    hiss = tmp_path / "hiss.wav"  # about -90 dBFS: below the -80 dBFS silence floor
    sf.write(hiss, 3e-5 * np.random.default_rng(0).standard_normal(rate), rate, subtype="FLOAT")
    cases.append((hiss, "silent"))
    clipped = tmp_path / "clipped.wav"
    sf.write(clipped, np.clip(3 * _sine(200.0, rate, 1.0), -1, 1), rate)
    cases.append((clipped, "clipped"))
    short = tmp_path / "short.wav"
    sf.write(short, _sine(200.0, rate, 0.01), rate)  # 160 samples < one 512-sample frame
    cases.append((short, "too short"))
    nan = tmp_path / "nan.wav"
    values = _sine(200.0, rate, 1.0)
    values[100] = np.nan
    sf.write(nan, values, rate, subtype="FLOAT")
    cases.append((nan, "NaN"))
    return cases


def test_each_bad_input_raises_audio_error_naming_the_file(tmp_path):
    for path, reason in _bad_inputs(tmp_path):
        with pytest.raises(AudioError) as info:
            wav, _ = read_audio(path)
            check_audio(wav, 16000, min_samples=512, path=path)
        error = info.value
        assert isinstance(error, ValueError)
        assert error.path == str(path) and str(path) in str(error), path.name
        assert reason in error.reason, (path.name, error.reason)


def test_good_speech_like_signal_passes_and_clipping_threshold_is_a_fraction(tmp_path):
    wav = torch.from_numpy(_sine(200.0, 16000, 1.0))[None]
    check_audio(wav, 16000, min_samples=512)

    few = wav.clone()
    few[0, :8] = 1.0  # 0.05 % of the samples at full scale: below the 0.1 % limit
    check_audio(few, 16000, min_samples=512)
    many = wav.clone()
    many[0, :32] = -1.0  # 0.2 %
    with pytest.raises(AudioError, match="clipped"):
        check_audio(many, 16000, min_samples=512, path="many.wav")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(AudioError, match="no such file") as info:
        read_audio(tmp_path / "absent.flac")
    assert info.value.path.endswith("absent.flac")


def test_find_audio_files_lists_readable_endings_sorted(tmp_path):
    for name in ("b.FLAC", "a.wav", "c.txt", ".hidden.wav", "d.ogg", "e.mp3"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.wav").write_bytes(b"")

    names = [p.name for p in find_audio_files(tmp_path)]
    expected = ["a.wav", "b.FLAC", "d.ogg"] + (["e.mp3"] if "MP3" in sf.available_formats() else [])
    assert names == expected
    assert [p.name for p in find_audio_files(tmp_path, recursive=True)][-1] == "f.wav"
    with pytest.raises(NotADirectoryError):
        find_audio_files(tmp_path / "a.wav")
