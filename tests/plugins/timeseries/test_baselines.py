"""Persistence, climatology and rolling z-score baselines checked by hand and against loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polydiff_timeseries.baselines import Climatology, RollingZScore, persistence_forecast


# --- persistence -----------------------------------------------------------------------------
def test_persistence_by_hand() -> None:
    context = np.array(
        [
            [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
            [[7.0, np.nan, np.nan], [8.0, np.nan, 9.0]],
        ]
    )  # (B=2, C=2, N=3)
    c0 = context.copy()
    out = persistence_forecast(context, 3)
    assert out.shape == (2, 1, 3, 3)
    for h in range(3):
        np.testing.assert_array_equal(out[0, 0, h], [4.0, 5.0, 6.0])
        np.testing.assert_array_equal(out[1, 0, h], [8.0, np.nan, 9.0])
    np.testing.assert_array_equal(context, c0)


def test_persistence_falls_back_to_last_finite_value() -> None:
    context = np.array([[[1.0, 5.0], [2.0, np.nan], [np.nan, np.nan]]])  # (1, 3, 2)
    out = persistence_forecast(context, 2)
    np.testing.assert_array_equal(out[0, 0], [[2.0, 5.0], [2.0, 5.0]])
    np.testing.assert_array_equal(persistence_forecast(torch.from_numpy(context), 2), out)


def test_persistence_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="horizon"):
        persistence_forecast(np.zeros((1, 2, 3)), 0)
    with pytest.raises(ValueError, match="context"):
        persistence_forecast(np.zeros((2, 3)), 1)


# --- climatology -----------------------------------------------------------------------------
def test_climatology_members_are_training_frames() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 5))
    clim = Climatology().fit(train)
    out = clim.predict(np.zeros((3, 4, 5)), horizon=6, samples=7, seed=1)
    assert out.shape == (3, 7, 6, 5)
    frames = out.reshape(-1, 5)
    # Every drawn frame equals some training frame exactly, all nodes together.
    match = (frames[:, None, :] == train[None, :, :]).all(axis=2)
    assert match.any(axis=1).all()
    # Independent draws over windows, members and lead times: many distinct frames appear.
    assert np.unique(match.argmax(axis=1)).size > 20


def test_climatology_seed_reproducibility_and_statistics() -> None:
    rng = np.random.default_rng(1)
    train = rng.normal(2.0, 3.0, size=(50, 4))
    train[3, 1] = np.nan
    t0 = train.copy()
    clim = Climatology().fit(train)
    context = np.zeros((2, 3, 4))
    a = clim.predict(context, 5, samples=8, seed=123)
    b = clim.predict(context, 5, samples=8, seed=123)
    c = clim.predict(context, 5, samples=8, seed=124)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # The incomplete frame is never drawn.
    assert np.isfinite(a).all()
    assert not (a.reshape(-1, 4)[:, 0] == train[3, 0]).any()
    np.testing.assert_allclose(clim.mean, np.nanmean(train, axis=0))
    np.testing.assert_allclose(clim.std, np.nanstd(train, axis=0))
    np.testing.assert_array_equal(train, t0)
    with pytest.raises(ValueError, match="nodes"):
        clim.predict(np.zeros((2, 3, 5)), 5)


def test_climatology_without_complete_frames_fills_per_node() -> None:
    train = np.array([[1.0, np.nan], [np.nan, 10.0], [3.0, np.nan]])
    out = Climatology().fit(train).predict(np.zeros((4, 1, 2)), 3, samples=5, seed=0)
    assert np.isfinite(out).all()
    assert set(np.unique(out[..., 0])) <= {1.0, 3.0}
    assert set(np.unique(out[..., 1])) == {10.0}


def test_climatology_errors() -> None:
    with pytest.raises(RuntimeError, match="fit"):
        Climatology().mean
    with pytest.raises(ValueError, match="node 1"):
        Climatology().fit(np.array([[1.0, np.nan], [2.0, np.nan]]))


# --- rolling z-score -------------------------------------------------------------------------
def _zscore_loop(x: np.ndarray, window: int, eps: float) -> np.ndarray:
    t, d = x.shape
    out = np.zeros(t)
    for i in range(t):
        best = 0.0
        for j in range(d):
            past = x[max(0, i - window) : i, j]
            past = past[np.isfinite(past)]
            if not np.isfinite(x[i, j]) or past.size < 2:
                continue
            best = max(best, abs(x[i, j] - past.mean()) / (past.std(ddof=1) + eps))
        out[i] = best
    return out


def test_rolling_zscore_matches_loop_with_nans() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 3)) * [1.0, 5.0, 0.1] + [0.0, 100.0, -3.0]
    x[rng.uniform(size=x.shape) < 0.15] = np.nan
    x[40:47, 1] = np.nan  # a gap longer than nothing but shorter than the window
    x0 = x.copy()
    for window in (2, 5, 50):
        detector = RollingZScore(window=window, eps=1e-6)
        np.testing.assert_allclose(detector.score(x), _zscore_loop(x, window, 1e-6), rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(x, x0)


def test_rolling_zscore_first_steps_and_one_channel() -> None:
    x = np.array([1.0, 5.0, 2.0, 3.0])
    scores = RollingZScore(window=3).score(x)
    assert scores[0] == scores[1] == 0.0
    # t = 2: past [1, 5], mean 3, std sqrt(8) -> |2 - 3| / sqrt(8).
    assert scores[2] == pytest.approx(1 / np.sqrt(8))
    np.testing.assert_array_equal(RollingZScore(window=3).score(x[:, None]), scores)


def test_rolling_zscore_spike_gets_top_score() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 4))
    x[200, 2] += 8.0
    scores = RollingZScore(window=50).score(x)
    # Once the window is full: z-scores from an expanding window of a few points are heavy-tailed
    # (Student-t with few degrees of freedom) and not comparable.
    assert 50 + int(np.argmax(scores[50:])) == 200


def test_rolling_zscore_uses_only_the_past() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(80, 2))
    before = RollingZScore(window=10).score(x)
    for t in (0, 1, 30, 78):
        changed = x.copy()
        changed[t + 1] += 50.0
        after = RollingZScore(window=10).score(changed)
        np.testing.assert_array_equal(after[: t + 1], before[: t + 1])
        if t + 1 >= 2:  # steps 0 and 1 always score 0
            assert after[t + 1] > before[t + 1]


def test_rolling_zscore_flat_stretch() -> None:
    x = np.concatenate([np.full(30, 1e3), [1e3 + 1.0], np.full(5, 1e3)])[:, None]
    scores = RollingZScore(window=10, eps=1e-3).score(x)
    np.testing.assert_allclose(scores[:30], 0.0, atol=1e-9)
    assert scores[30] == pytest.approx(1e3, rel=1e-6)


def test_rolling_zscore_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="window"):
        RollingZScore(window=1)
    with pytest.raises(ValueError, match="eps"):
        RollingZScore(eps=0.0)
    with pytest.raises(ValueError, match="values"):
        RollingZScore().score(np.zeros((2, 3, 4)))
