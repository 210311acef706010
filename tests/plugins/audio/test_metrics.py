"""Speech metrics checked against their published definitions on hand-made signals."""

from __future__ import annotations

import csv
import math
import pickle

import numpy as np
import pytest
import torch

pytest.importorskip("pesq")
pytest.importorskip("pystoi")
soundfile = pytest.importorskip("soundfile")

from polydiff_audio.metrics import (  # noqa: E402
    SI_SDR_CAP_DB,
    Score,
    estoi,
    evaluate_pairs,
    format_table,
    pairs_from_folders,
    pesq_wb,
    si_sdr,
    si_sdr_torch,
    summarise,
    write_csv,
)

RATE = 16000


def add_white_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(x.size)
    noise *= np.sqrt(np.mean(x**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return x + noise


# --- SI-SDR ----------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1.0, 0.25, -3.0])
def test_si_sdr_of_a_scaled_copy_is_the_cap(scale):
    reference = np.random.default_rng(0).standard_normal(4000)
    assert si_sdr(scale * reference, reference) == SI_SDR_CAP_DB


@pytest.mark.parametrize("ratio_db", [-5.0, 0.0, 7.5, 20.0])
def test_si_sdr_with_orthogonal_noise_is_the_power_ratio(ratio_db):
    rng = np.random.default_rng(1)
    reference = rng.standard_normal(8000)
    reference -= reference.mean()
    noise = rng.standard_normal(8000)
    noise -= noise.mean()
    noise -= (noise @ reference) / (reference @ reference) * reference  # orthogonal to s, so alpha = 1
    noise *= np.sqrt((reference @ reference) / (noise @ noise) / 10 ** (ratio_db / 10))
    assert si_sdr(reference + noise, reference) == pytest.approx(ratio_db, abs=1e-9)


def test_si_sdr_of_sine_plus_half_cosine_is_20_log10_2():
    # Over whole periods sin and cos are orthogonal with equal energy: target sin, residual
    # 0.5 cos, so the ratio is 1 / 0.25 and SI-SDR = 10 log10 4.
    t = np.arange(RATE) / RATE
    sine = np.sin(2 * np.pi * 50 * t)
    assert si_sdr(sine + 0.5 * np.cos(2 * np.pi * 50 * t), sine) == pytest.approx(10 * math.log10(4), abs=1e-9)


def test_si_sdr_is_invariant_to_scale_and_offset_of_the_estimate(synthetic_speech):
    reference = synthetic_speech(0.5)
    estimate = add_white_noise(reference, 5.0)
    base = si_sdr(estimate, reference)
    assert si_sdr(7.0 * estimate, reference) == pytest.approx(base, abs=1e-9)
    assert si_sdr(0.01 * estimate + 0.3, reference) == pytest.approx(base, abs=1e-9)


def test_si_sdr_undefined_cases_are_nan_with_a_reason():
    silent = np.zeros(100)
    ramp = np.linspace(-1, 1, 100)
    assert math.isnan(si_sdr(ramp, silent)) and si_sdr(ramp, silent).reason == "silent reference"
    assert math.isnan(si_sdr(silent, ramp)) and si_sdr(silent, ramp).reason == "silent estimate"
    assert si_sdr(ramp, ramp).reason is None
    with pytest.raises(ValueError, match="differ in length"):
        si_sdr(ramp[:-1], ramp)


def test_si_sdr_torch_matches_numpy_on_a_batch():
    rng = np.random.default_rng(2)
    reference = rng.standard_normal((2, 3, 1000))
    estimate = reference + rng.standard_normal((2, 3, 1000)) * rng.uniform(0.1, 3.0, (2, 3, 1))
    estimate[0, 0] = 2.0 * reference[0, 0]  # a perfect copy: the cap
    expected = np.array([[si_sdr(e, r) for e, r in zip(es, rs)] for es, rs in zip(estimate, reference)])
    result = si_sdr_torch(torch.from_numpy(estimate), torch.from_numpy(reference))
    assert result.shape == (2, 3)
    np.testing.assert_allclose(result.numpy(), expected, rtol=0, atol=1e-9)
    single = si_sdr_torch(torch.from_numpy(estimate).float(), torch.from_numpy(reference).float())
    assert single.dtype == torch.float32
    np.testing.assert_allclose(single.numpy(), expected, atol=1e-3)
    assert torch.isnan(si_sdr_torch(torch.ones(1, 10), torch.zeros(1, 10))).all()


def test_score_is_a_float_that_keeps_its_reason_through_pickle():
    score = Score.undefined("silent reference")
    copy = pickle.loads(pickle.dumps(score))
    assert isinstance(copy, float) and math.isnan(copy) and copy.reason == "silent reference"
    assert str(Score(1.5)) == "1.5"


# --- PESQ and ESTOI --------------------------------------------------------------------------
def test_pesq_of_clean_against_itself_is_the_wideband_maximum_and_noise_lowers_it(synthetic_speech):
    clean = synthetic_speech()
    assert pesq_wb(clean, clean) == pytest.approx(4.64, abs=0.01)
    assert pesq_wb(add_white_noise(clean, 10.0), clean) < 3.0


def test_pesq_resamples_other_rates_to_16_khz(synthetic_speech):
    clean = synthetic_speech(rate=24000)
    assert pesq_wb(clean, clean, rate=24000) == pytest.approx(4.64, abs=0.01)


def test_pesq_returns_nan_with_a_reason_for_input_it_refuses(synthetic_speech):
    too_short = synthetic_speech(0.1)  # P.862 needs at least 1/4 s
    score = pesq_wb(too_short, too_short)
    assert math.isnan(score) and "PESQ refused" in score.reason and "1/4" in score.reason
    silent = pesq_wb(synthetic_speech(), np.zeros(2 * RATE))
    assert math.isnan(silent) and silent.reason == "silent reference"


def test_estoi_is_one_for_identical_signals_and_lower_with_noise(synthetic_speech):
    clean = synthetic_speech()
    assert estoi(clean, clean, RATE) == pytest.approx(1.0, abs=1e-6)
    assert estoi(add_white_noise(clean, 0.0), clean, RATE) < 0.8


def test_estoi_with_too_little_speech_is_nan_not_pystois_1e_5(synthetic_speech):
    short = synthetic_speech(0.2)
    score = estoi(short, short, RATE)
    assert math.isnan(score) and "30 frames" in score.reason


# --- files -----------------------------------------------------------------------------------
def write_wav(path, samples, rate=RATE):
    soundfile.write(str(path), samples, rate, subtype="FLOAT")
    return path


def test_evaluate_pairs_reports_broken_files_and_scores_the_rest(synthetic_speech, tmp_path):
    clean = synthetic_speech(1.0)
    for folder in ("clean", "enhanced", "noisy"):
        (tmp_path / folder).mkdir()
    names = ["good.wav", "trimmed.wav", "too_long.wav", "not_audio.wav", "missing.wav", "other_rate.wav"]
    for name in names:
        write_wav(tmp_path / "clean" / name, clean)
        write_wav(tmp_path / "noisy" / name, add_white_noise(clean, 0.0))
    write_wav(tmp_path / "enhanced" / "good.wav", add_white_noise(clean, 10.0))
    write_wav(tmp_path / "enhanced" / "trimmed.wav", np.concatenate([clean, np.zeros(100)]))  # < 10 ms
    write_wav(tmp_path / "enhanced" / "too_long.wav", np.concatenate([clean, np.zeros(RATE // 2)]))
    (tmp_path / "enhanced" / "not_audio.wav").write_text("not a RIFF header")
    from scipy.signal import resample_poly

    write_wav(tmp_path / "enhanced" / "other_rate.wav", resample_poly(clean, 3, 2), rate=24000)

    pairs = pairs_from_folders(tmp_path / "clean", tmp_path / "enhanced", tmp_path / "noisy")
    assert [p[0] for p in pairs] == sorted(names)
    rows = {row["name"]: row for row in evaluate_pairs(pairs)}

    good = rows["good.wav"]
    assert good["status"] == "ok" and good["notes"] == ""
    assert good["si_sdr"] == pytest.approx(10.0, abs=0.5)  # white noise at 10 dB is nearly orthogonal
    assert good["noisy_si_sdr"] == pytest.approx(0.0, abs=0.5)
    for metric in ("si_sdr", "pesq", "estoi"):
        assert good["delta_" + metric] == pytest.approx(good[metric] - good["noisy_" + metric])
        assert good["delta_" + metric] > 0
    assert rows["trimmed.wav"]["status"] == "ok" and "trimmed" in rows["trimmed.wav"]["notes"]
    assert rows["trimmed.wav"]["si_sdr"] == SI_SDR_CAP_DB
    assert rows["other_rate.wav"]["status"] == "ok" and "resampled from 24000 Hz" in rows["other_rate.wav"]["notes"]
    assert rows["other_rate.wav"]["si_sdr"] > 40
    for name, reason in [
        ("too_long.wav", "differ by 500.0 ms"),
        ("not_audio.wav", "cannot read estimate"),
        ("missing.wav", "does not exist"),
    ]:
        assert rows[name]["status"] == "failed" and reason in rows[name]["notes"]
        assert rows[name]["si_sdr"] is None

    summary = summarise(list(rows.values()))
    assert summary.files == 6 and summary.scored == 3
    assert {name for name, _ in summary.failed} == {"too_long.wav", "not_audio.wav", "missing.wav"}
    assert summary.metrics["si_sdr"].count == 3


def test_evaluate_pairs_without_resampling_reports_a_rate_mismatch(synthetic_speech, tmp_path):
    clean = write_wav(tmp_path / "clean.wav", synthetic_speech(0.5))
    estimate = write_wav(tmp_path / "estimate.wav", synthetic_speech(0.5, rate=8000), rate=8000)
    [row] = evaluate_pairs([("a", clean, estimate, None)], resample=False)
    assert row["status"] == "failed" and "rate 8000 Hz differs from clean rate 16000 Hz" in row["notes"]


def hand_rows():
    nan = math.nan
    return [
        {"name": "a", "status": "ok", "si_sdr": 10.0, "pesq": 3.0, "estoi": 0.9, "noisy_si_sdr": 2.0, "notes": ""},
        {
            "name": "b",
            "status": "ok",
            "si_sdr": 14.0,
            "pesq": nan,
            "estoi": 0.7,
            "noisy_si_sdr": nan,
            "notes": "estimate pesq: PESQ refused the input",
        },
        {
            "name": "c",
            "status": "failed",
            "si_sdr": None,
            "pesq": None,
            "estoi": None,
            "noisy_si_sdr": None,
            "notes": "cannot read estimate file 'c'",
        },
    ]


def test_summarise_excludes_and_counts_nans():
    summary = summarise(hand_rows())
    assert summary.files == 3 and summary.scored == 2 and summary.failed == (("c", "cannot read estimate file 'c'"),)
    assert (summary.metrics["si_sdr"].mean, summary.metrics["si_sdr"].count, summary.metrics["si_sdr"].nan) == (
        12.0,
        2,
        0,
    )
    assert (summary.metrics["pesq"].mean, summary.metrics["pesq"].count, summary.metrics["pesq"].nan) == (3.0, 1, 1)
    assert summary.metrics["estoi"].mean == pytest.approx(0.8)
    assert summary.metrics["noisy_si_sdr"].count == 1 and summary.metrics["noisy_si_sdr"].nan == 1
    assert "delta_si_sdr" not in summary.metrics


def test_format_table_shows_means_counts_and_failures():
    table = format_table(summarise(hand_rows()))
    assert "SI-SDR (dB)" in table and "12.000" in table and "noisy input" in table
    pesq_line = next(line for line in table.splitlines() if line.startswith("PESQ"))
    assert pesq_line.split()[-3:] == ["3.000", "1", "1"]
    assert "3 files: 2 scored, 1 failed" in table and "FAILED c: cannot read" in table


def test_write_csv_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "out" / "metrics.csv"
    rows = hand_rows()
    write_csv(rows, path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_csv(rows[:1], path)
    with open(path, newline="") as handle:
        read = list(csv.DictReader(handle))
    assert [r["name"] for r in read] == ["a", "b", "c"]
    assert read[1]["pesq"] == "nan" and read[2]["si_sdr"] == "" and float(read[0]["si_sdr"]) == 10.0
    write_csv(rows[:1], path, overwrite=True)
    with open(path, newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 1
