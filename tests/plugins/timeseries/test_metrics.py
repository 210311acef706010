"""Forecast and anomaly-detection metrics checked against their definitions on small cases."""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest
import torch

from polydiff_timeseries.metrics import (
    Score,
    anomaly_segments,
    auprc,
    auroc,
    best_f1_threshold,
    crps_ensemble,
    crps_gaussian,
    detection_delay,
    detection_scores,
    forecast_scores,
    interval_coverage,
    point_adjust,
    precision_recall_f1,
    quantile_threshold,
    scores_by_lead,
    spread_skill_ratio,
)


def _crps_brute(samples: np.ndarray, obs: np.ndarray, fair: bool) -> np.ndarray:
    s = samples.shape[0]
    skill = np.abs(samples - obs).mean(axis=0)
    pairs = np.abs(samples[:, None] - samples[None, :]).sum(axis=(0, 1))
    return skill - pairs / (2 * (s * (s - 1) if fair else s * s))


# --- forecasts -------------------------------------------------------------------------------
def test_crps_ensemble_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for s in (2, 3, 7, 16):
        samples = rng.normal(size=(s, 4, 5))
        obs = rng.normal(size=(4, 5))
        for fair in (False, True):
            expected = _crps_brute(samples, obs, fair)
            np.testing.assert_allclose(crps_ensemble(samples, obs, fair=fair), expected, rtol=1e-12, atol=1e-14)


def test_crps_ensemble_with_ties_matches_brute_force() -> None:
    samples = np.array([[1.0], [1.0], [3.0], [0.0], [3.0]])
    obs = np.array([2.0])
    for fair in (False, True):
        np.testing.assert_allclose(crps_ensemble(samples, obs, fair=fair), _crps_brute(samples, obs, fair))


def test_crps_ensemble_single_member_is_absolute_error() -> None:
    samples = np.array([[1.5, -2.0, 0.0]])
    obs = np.array([0.5, 1.0, 0.0])
    np.testing.assert_allclose(crps_ensemble(samples, obs), [1.0, 3.0, 0.0])
    with pytest.raises(ValueError, match="fair"):
        crps_ensemble(samples, obs, fair=True)


def test_crps_ensemble_approaches_gaussian_closed_form() -> None:
    rng = np.random.default_rng(1)
    mu, sd = 0.5, 1.5
    obs = np.array([-3.0, 0.0, 0.5, 1.7, 6.0])
    # Antithetic pairs (x, 2 mu - x): still N(mu, sd) draws, but the ensemble mean is exact, which
    # removes the Monte Carlo error that dominates E|X - y| for observations far in the tails.
    half = rng.normal(mu, sd, size=(10000, 1))
    samples = np.concatenate([half, 2 * mu - half]) * np.ones((1, obs.size))
    expected = crps_gaussian(mu, sd, obs)
    np.testing.assert_allclose(crps_ensemble(samples, obs), expected, atol=1e-2)
    np.testing.assert_allclose(crps_ensemble(samples, obs, fair=True), expected, atol=1e-2)


def test_crps_gaussian_hand_values() -> None:
    # CRPS(N(0, 1), 0) = 2 phi(0) - 1/sqrt(pi) = (sqrt(2) - 1) / sqrt(pi).
    assert crps_gaussian(0.0, 1.0, 0.0) == pytest.approx((math.sqrt(2) - 1) / math.sqrt(math.pi), abs=1e-12)
    assert crps_gaussian(0.0, 1.0, 0.0) == pytest.approx(0.2336949, abs=1e-7)
    # Location-scale: CRPS(N(m, s), y) = s CRPS(N(0, 1), (y - m) / s).
    assert crps_gaussian(3.0, 2.0, 5.0) == pytest.approx(2 * crps_gaussian(0.0, 1.0, 1.0), rel=1e-12)
    np.testing.assert_allclose(crps_gaussian([1.0, 1.0], [0.0, 0.0], [3.0, -1.0]), [2.0, 2.0])
    # Continuous in std at 0.
    assert crps_gaussian(1.0, 1e-9, 3.0) == pytest.approx(2.0, abs=1e-8)
    with pytest.raises(ValueError, match="std"):
        crps_gaussian(0.0, -1.0, 0.0)


def test_nan_observations_are_excluded() -> None:
    rng = np.random.default_rng(2)
    samples = rng.normal(size=(8, 30))
    obs = rng.normal(size=30)
    obs_nan = obs.copy()
    obs_nan[::3] = np.nan
    keep = ~np.isnan(obs_nan)
    crps = crps_ensemble(samples, obs_nan)
    assert np.isnan(crps[~keep]).all() and np.isfinite(crps[keep]).all()
    full = forecast_scores(samples, obs_nan)
    ref = forecast_scores(samples[:, keep], obs[keep])
    assert full["count"] == keep.sum() == ref["count"]
    for key in ("crps", "mse", "mae", "spread_skill", "coverage_50", "coverage_90"):
        assert full[key] == pytest.approx(ref[key], rel=1e-12), key
    # A member may be NaN only where the observation is missing.
    samples_nan = samples.copy()
    samples_nan[0, 0] = np.nan
    forecast_scores(samples_nan, obs_nan)
    samples_nan[0, 1] = np.nan
    with pytest.raises(ValueError, match="samples"):
        forecast_scores(samples_nan, obs_nan)


def test_inputs_are_not_modified_and_torch_is_accepted() -> None:
    rng = np.random.default_rng(3)
    samples = rng.normal(size=(5, 6))
    obs = rng.normal(size=6)
    obs[2] = np.nan
    s0, o0 = samples.copy(), obs.copy()
    result = forecast_scores(samples, obs)
    np.testing.assert_array_equal(samples, s0)
    np.testing.assert_array_equal(obs, o0)
    result_torch = forecast_scores(torch.from_numpy(samples).float(), torch.from_numpy(obs).float())
    assert result_torch["crps"] == pytest.approx(result["crps"], rel=1e-5)


def test_spread_skill_calibrated_and_underdispersed() -> None:
    rng = np.random.default_rng(4)
    members = rng.normal(size=(10, 20000))
    obs = rng.normal(size=20000)
    assert spread_skill_ratio(members, obs) == pytest.approx(1.0, abs=0.03)
    assert spread_skill_ratio(0.5 * members, obs) < 0.7
    single = spread_skill_ratio(members[:1], obs)
    assert math.isnan(single) and "2 ensemble members" in single.reason


def test_interval_coverage_hand_and_calibrated() -> None:
    # Members 1..5: the central 50 % interval is [q(0.25), q(0.75)] = [2, 4], ends included.
    samples = np.tile(np.arange(1.0, 6.0)[:, None], (1, 4))
    obs = np.array([3.0, 4.5, 4.0, 0.0])
    assert interval_coverage(samples, obs, 0.5) == pytest.approx(0.5)
    rng = np.random.default_rng(5)
    members = rng.normal(size=(99, 4000))
    obs = rng.normal(size=4000)
    assert interval_coverage(members, obs, 0.9) == pytest.approx(0.9, abs=0.025)
    assert interval_coverage(members, obs, 0.5) == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ValueError, match="level"):
        interval_coverage(members, obs, 1.5)


def test_forecast_scores_single_member() -> None:
    samples = np.array([[1.0, 2.0, 4.0]])
    obs = np.array([0.0, 2.0, 5.0])
    scores = forecast_scores(samples, obs)
    assert set(scores) == {"crps", "mse", "mae", "spread_skill", "coverage_50", "coverage_90", "count"}
    assert scores["crps"] == pytest.approx(scores["mae"]) == pytest.approx(2 / 3)
    assert scores["mse"] == pytest.approx(2 / 3)
    assert math.isnan(scores["spread_skill"]) and math.isnan(scores["coverage_90"])
    assert scores["count"] == 3
    empty = forecast_scores(samples, np.full(3, np.nan))
    assert empty["count"] == 0 and math.isnan(empty["crps"]) and empty["crps"].reason


def test_scores_by_lead() -> None:
    rng = np.random.default_rng(6)
    samples = rng.normal(size=(4, 3, 5, 2))  # (S, B, H, N)
    obs = rng.normal(size=(3, 5, 2))
    per_lead = scores_by_lead(samples, obs, lead_axis=1)
    assert len(per_lead) == 5
    for h, scores in enumerate(per_lead):
        assert scores["crps"] == pytest.approx(crps_ensemble(samples[:, :, h], obs[:, h]).mean())
    assert scores_by_lead(samples, obs, lead_axis=-2)[3]["mse"] == per_lead[3]["mse"]
    with pytest.raises(ValueError, match="lead_axis"):
        scores_by_lead(samples, obs, lead_axis=3)


def test_shape_mismatch_names_arguments() -> None:
    with pytest.raises(ValueError, match="samples"):
        crps_ensemble(np.zeros((3, 4)), np.zeros(5))


def test_score_pickles_with_reason() -> None:
    score = Score.undefined("why")
    back = pickle.loads(pickle.dumps(score))
    assert math.isnan(back) and back.reason == "why"


# --- anomaly detection -----------------------------------------------------------------------
LABELS = np.array([0, 0, 1, 1, 1, 0, 0, 1, 1, 0])


def test_anomaly_segments() -> None:
    assert anomaly_segments(LABELS) == [(2, 5), (7, 9)]
    assert anomaly_segments([1, 1, 0, 1]) == [(0, 2), (3, 4)]
    assert anomaly_segments(np.zeros(4, dtype=int)) == []
    assert anomaly_segments(np.array([], dtype=int)) == []
    with pytest.raises(ValueError, match="labels"):
        anomaly_segments([0, 2, 1])


def test_precision_recall_f1_and_point_adjust_by_hand() -> None:
    pred = np.array([0, 1, 0, 1, 0, 0, 0, 0, 0, 0])  # one false alarm, one hit in segment 1
    p0 = pred.copy()
    # Unadjusted: TP 1, FP 1, FN 4 -> P 1/2, R 1/5, F1 2/7.
    precision, recall, f1 = precision_recall_f1(pred, LABELS)
    assert (precision, recall, f1) == pytest.approx((1 / 2, 1 / 5, 2 / 7))
    adjusted = point_adjust(pred, LABELS)
    np.testing.assert_array_equal(adjusted, [0, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(pred, p0)
    # Adjusted: TP 3, FP 1, FN 2 -> P 3/4, R 3/5, F1 2/3.
    assert precision_recall_f1(pred, LABELS, adjust=True) == pytest.approx((3 / 4, 3 / 5, 2 / 3))
    # Undefined ratios are 0.0, not NaN.
    assert precision_recall_f1(np.zeros(10), LABELS) == (0.0, 0.0, 0.0)
    assert precision_recall_f1(np.ones(4), np.zeros(4)) == (0.0, 0.0, 0.0)


def test_detection_delay_by_hand() -> None:
    pred = np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 0])  # segment 1 at its 3rd point, segment 2 at its 2nd
    delay, detected = detection_delay(pred, LABELS)
    assert (delay, detected) == (1.5, 2)
    delay, detected = detection_delay(np.zeros(10), LABELS)
    assert math.isnan(delay) and detected == 0


def test_auroc_extremes_and_ties() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1])
    separating = labels + 0.1 * np.arange(6)
    assert auroc(separating, labels) == 1.0
    assert auroc(-separating, labels) == 0.0
    assert auroc(np.ones(6), labels) == 0.5
    # Positives 0.9, 0.8, 0.1 against negatives 0.8, 0.3: 3.5 of 6 pairs.
    assert auroc([0.9, 0.8, 0.8, 0.3, 0.1], [1, 0, 1, 0, 1]) == pytest.approx(7 / 12)
    assert math.isnan(auroc([0.1, 0.2], [0, 0]))


def test_auprc_by_hand_with_ties() -> None:
    # Thresholds 0.9, 0.8 (tie of a positive and a negative), 0.3, 0.1:
    # (R, P) = (1/3, 1), (2/3, 2/3), (2/3, 1/2), (1, 3/5) -> AP = 1/3 + 2/9 + 0 + 1/5 = 34/45.
    assert auprc([0.9, 0.8, 0.8, 0.3, 0.1], [1, 0, 1, 0, 1]) == pytest.approx(34 / 45)
    assert auprc([0.1, 0.2, 0.9], [0, 0, 1]) == pytest.approx(1.0)
    assert auprc(np.ones(4), [1, 0, 0, 0]) == pytest.approx(0.25)
    assert math.isnan(auprc([0.1, 0.2], [0, 0]))


def test_nan_scores_are_an_error() -> None:
    scores = np.array([0.1, np.nan, 0.3])
    for fn in (auroc, auprc, best_f1_threshold):
        with pytest.raises(ValueError, match="scores contain NaN"):
            fn(scores, [0, 1, 0])
    with pytest.raises(ValueError, match="scores"):
        detection_scores(scores, [0, 1, 0], 0.2)
    with pytest.raises(ValueError, match="reference_scores"):
        quantile_threshold(scores)


def _f1_brute(scores: np.ndarray, labels: np.ndarray, adjust: bool) -> np.ndarray:
    return np.array([precision_recall_f1(scores >= t, labels, adjust=adjust)[2] for t in np.unique(scores)])


@pytest.mark.parametrize("adjust", [False, True])
def test_best_f1_threshold_matches_brute_force(adjust: bool) -> None:
    rng = np.random.default_rng(7)
    for trial in range(20):
        t = 60
        labels = np.zeros(t, dtype=int)
        for _ in range(rng.integers(1, 4)):
            start = rng.integers(0, t - 5)
            labels[start : start + rng.integers(1, 8)] = 1
        scores = np.round(rng.normal(size=t) + labels * rng.uniform(0, 2), 1)  # rounding makes ties
        thr = best_f1_threshold(scores, labels, adjust=adjust)
        brute = _f1_brute(scores, labels, adjust)
        best = brute.max()
        assert precision_recall_f1(scores >= thr, labels, adjust=adjust)[2] == pytest.approx(best), trial
        # Ties in F1 resolve to the largest threshold.
        assert thr == np.unique(scores)[np.flatnonzero(np.isclose(brute, best))[-1]], trial


def test_best_f1_threshold_needs_anomalies() -> None:
    with pytest.raises(ValueError, match="labels"):
        best_f1_threshold([0.1, 0.2], [0, 0])


def test_quantile_threshold() -> None:
    assert quantile_threshold(np.arange(101.0), 0.99) == pytest.approx(99.0)
    assert quantile_threshold(np.arange(11.0), q=0.5) == 5.0
    with pytest.raises(ValueError, match="q"):
        quantile_threshold(np.arange(5.0), 1.5)


def test_detection_scores_keys_and_values() -> None:
    scores = np.array([0.1, 0.7, 0.2, 0.9, 0.3, 0.1, 0.2, 0.4, 0.5, 0.0])
    result = detection_scores(scores, LABELS, 0.6)  # predicts steps 1 and 3
    assert set(result) == {
        "precision", "recall", "f1", "precision_pa", "recall_pa", "f1_pa",
        "auroc", "auprc", "delay", "detected", "segments", "threshold",
    }  # fmt: skip
    assert (result["precision"], result["recall"]) == pytest.approx((1 / 2, 1 / 5))
    assert (result["precision_pa"], result["recall_pa"]) == pytest.approx((3 / 4, 3 / 5))
    assert result["delay"] == 1.0 and result["detected"] == 1 and result["segments"] == 2
    assert result["threshold"] == 0.6
    assert result["auroc"] == auroc(scores, LABELS)
    assert result["auprc"] == auprc(scores, LABELS)


def test_auroc_matches_pair_count_on_random_data() -> None:
    rng = np.random.default_rng(8)
    scores = np.round(rng.normal(size=40), 1)
    labels = (rng.uniform(size=40) < 0.3).astype(int)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    assert auroc(scores, labels) == pytest.approx(np.mean(pairs))
