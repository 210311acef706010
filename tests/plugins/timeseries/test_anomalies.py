"""Tests of labelled anomaly injection: placement, labels, and what each kind does."""

from __future__ import annotations

import numpy as np
import pytest

from polydiff_timeseries.anomalies import ANOMALY_TYPES, AnomalyEvent, channel_scales, inject_anomalies


def _series(rows: int = 2000, channels: int = 4, seed: int = 0) -> np.ndarray:
    """Correlated, trending channels: white noise on a shared sine plus per-channel trends."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)[:, None]
    return (
        np.sin(2 * np.pi * t / 97) * np.arange(1, channels + 1)
        + 0.01 * t * np.arange(channels)
        + rng.standard_normal((rows, channels)) * np.linspace(0.5, 2.0, channels)
    )


def _changed_channels(before: np.ndarray, after: np.ndarray, event: AnomalyEvent) -> tuple[int, ...]:
    rows = slice(event.start, event.stop)
    return tuple(np.flatnonzero(np.any(before[rows] != after[rows], axis=0)).tolist())


def test_channel_scales_are_robust_step_scales() -> None:
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.standard_normal((20000, 1)) * 3.0, axis=0)  # steps of std 3, huge spread
    steps = np.zeros((50, 1))
    steps[30:] = 10.0  # one jump among 49 changes: MAD 0, so the std of the changes is used
    scales = channel_scales(np.hstack([walk[:50], steps]))
    assert scales.shape == (2,)
    assert scales[1] == pytest.approx(np.diff(steps[:, 0]).std()) and scales[1] > 1.0
    assert channel_scales(walk)[0] == pytest.approx(3.0, rel=0.03)
    with_nan = walk.copy()
    with_nan[::7] = np.nan
    assert channel_scales(with_nan)[0] == pytest.approx(3.0, rel=0.05)
    assert channel_scales(np.zeros((10, 1)))[0] == 1.0


def test_labels_cover_events_and_everything_else_is_untouched() -> None:
    values = _series()
    before = values.copy()
    out, labels, events = inject_anomalies(values, count=16, start=300, min_gap=20, seed=1)
    np.testing.assert_array_equal(values, before)
    assert out is not values and out.shape == values.shape and out.dtype == values.dtype
    assert labels.dtype == np.int8 and labels.shape == (len(values),)

    expected = np.zeros(len(values), dtype=np.int8)
    for event in events:
        expected[event.start:event.stop] = 1
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(out[labels == 0], values[labels == 0])

    assert len(events) == 16
    assert {e.kind for e in events} == set(ANOMALY_TYPES)
    assert sorted(events, key=lambda e: e.start) == events
    assert events[0].start >= 300 and events[-1].stop <= len(values)
    for first, second in zip(events, events[1:]):
        assert second.start - first.stop >= 20
    for event in events:
        assert event.length == (event.stop - event.start) >= 1
        if event.kind == "spike":
            assert 1 <= event.length <= 3
        else:
            assert 5 <= event.length <= 40
        # Each event changes exactly the channels it names (and only inside it).
        assert _changed_channels(values, out, event) == event.channels


def test_spike_and_level_shift_have_their_stated_size() -> None:
    values = _series()
    scales = channel_scales(values)
    for kind, size in (("spike", 4.0), ("level_shift", 2.0)):
        out, _, events = inject_anomalies(values, count=10, kinds=[kind], magnitude=4.0, seed=2)
        assert all(e.kind == kind and e.magnitude == 4.0 for e in events)
        for event in events:
            rows, cols = slice(event.start, event.stop), list(event.channels)
            offset = out[rows][:, cols] - values[rows][:, cols]
            # A constant ± size · scale over the event, per channel.
            np.testing.assert_allclose(np.abs(offset), np.broadcast_to(size * scales[cols], offset.shape), rtol=1e-12)
            np.testing.assert_allclose(offset, np.broadcast_to(offset[0], offset.shape), rtol=1e-12)


def test_variance_change_scales_the_step_changes() -> None:
    rng = np.random.default_rng(3)
    values = rng.standard_normal((6000, 2))
    magnitude = 4.0
    out, _, events = inject_anomalies(
        values, count=30, kinds=["variance_change"], magnitude=magnitude, min_length=40, max_length=40, min_gap=100
    )
    scales = channel_scales(values)
    inside = []
    for event in events:
        for c in event.channels:
            inside.append(np.diff(out[event.start:event.stop, c]) / scales[c])
    ratio = np.concatenate(inside).std()
    assert ratio == pytest.approx(1 + magnitude / 2, rel=0.1)
    # The local mean is kept: the burst is zero-mean noise.
    assert abs(np.mean([out[e.start:e.stop, list(e.channels)].mean() for e in events])) < 0.15


def test_correlation_break_copies_a_distant_window_of_the_same_channel() -> None:
    values = _series(rows=1500, channels=3, seed=4)
    out, _, events = inject_anomalies(values, count=8, kinds=["correlation_break"], min_gap=30, seed=5)
    assert len(events) == 8
    for event in events:
        (channel,) = event.channels
        s, length = event.start, event.length
        column = values[:, channel]
        got = out[s:event.stop, channel]
        # Find the donor window the event must have come from.
        windows = np.lib.stride_tricks.sliding_window_view(column[1:], length)  # window d − 1 starts at d
        shifted = windows - column[:len(windows), None] + column[s - 1]
        matches = (np.flatnonzero(np.all(np.abs(shifted - got) <= 1e-12, axis=1)) + 1).tolist()
        assert matches, event
        assert all(d + length + max(30, length) <= s or d >= s + length + max(30, length) for d in matches)
        # The other channels keep their values: only the cross-channel relation breaks.
        others = [c for c in range(3) if c != channel]
        np.testing.assert_array_equal(out[s:event.stop, others], values[s:event.stop, others])


def test_single_channel_skips_correlation_breaks() -> None:
    values = _series(channels=1)
    out, labels, events = inject_anomalies(values, count=9, seed=6)
    assert len(events) == 9
    assert {e.kind for e in events} == {"spike", "level_shift", "variance_change"}
    assert all(e.channels == (0,) for e in events)
    with pytest.raises(ValueError, match="needs at least 2 channels"):
        inject_anomalies(values, count=1, kinds=["correlation_break"])


def test_seed_reproducibility() -> None:
    values = _series()
    first = inject_anomalies(values, count=8, seed=7)
    again = inject_anomalies(values, count=8, seed=7)
    other = inject_anomalies(values, count=8, seed=8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2] == again[2]
    assert first[2] != other[2]


def test_nans_stay_nan_and_none_are_added() -> None:
    values = _series(rows=1200, channels=3, seed=9)
    values[::5, 1] = np.nan
    values[400:460, 2] = np.nan
    out, _, events = inject_anomalies(values, count=10, seed=10)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(values))
    assert len(events) == 10


def test_float32_and_integer_inputs() -> None:
    ints = np.arange(400).reshape(200, 2) % 7
    out, _, _ = inject_anomalies(ints, count=2, kinds=["level_shift"])
    assert out.dtype == np.float64
    out32, _, _ = inject_anomalies(ints.astype(np.float32), count=2, kinds=["level_shift"])
    assert out32.dtype == np.float32


def test_zero_count_is_a_copy() -> None:
    values = _series(rows=50)
    out, labels, events = inject_anomalies(values, count=0)
    np.testing.assert_array_equal(out, values)
    assert out is not values and not labels.any() and events == []


def test_tight_fit_shortens_events_but_keeps_them_valid() -> None:
    values = _series(rows=300, channels=2)
    out, labels, events = inject_anomalies(
        values, count=8, kinds=["level_shift"], min_length=10, max_length=40, min_gap=20
    )
    assert len(events) == 8 and all(10 <= e.length <= 40 for e in events)
    assert all(b.start - a.stop >= 20 for a, b in zip(events, events[1:]))
    assert labels.sum() == sum(e.length for e in events)


def test_errors_name_the_problem() -> None:
    values = _series(rows=300, channels=2)
    with pytest.raises(ValueError, match="unknown anomaly kinds.*'dropout'.*valid kinds.*'spike'"):
        inject_anomalies(values, count=1, kinds=["spike", "dropout"])
    with pytest.raises(ValueError, match="at most 10 fit"):
        # Rows [50, 300): 10 × 5 + 9 × 20 = 230 fit in 250, 11 × 5 + 10 × 20 = 255 do not.
        inject_anomalies(values, count=40, kinds=["level_shift"], min_length=5, min_gap=20, start=50)
    with pytest.raises(ValueError, match=r"unknown anomaly kinds \['spikes'\]"):
        inject_anomalies(values, count=1, kinds="spikes")
    with pytest.raises(ValueError, match="2-D"):
        inject_anomalies(values[:, 0], count=1)
    with pytest.raises(ValueError, match="max_length"):
        inject_anomalies(values, count=1, min_length=10, max_length=5)
    with pytest.raises(ValueError, match="magnitude"):
        inject_anomalies(values, count=1, magnitude=-1.0)
    with pytest.raises(ValueError, match="count"):
        inject_anomalies(values, count=-1)
