"""Tests of the offline sample data: packaged real series, probe tables and anomaly tables."""

from __future__ import annotations

import builtins
import datetime

import numpy as np
import pytest

from polydiff_timeseries.sample_data import (
    AIR_TEMPERATURE_SCENARIOS,
    air_temperature,
    anomaly_table,
    co2_series,
    probe_series,
)

xr = pytest.importorskip("xarray")
pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def e1() -> "xr.Dataset":
    pytest.importorskip("iris_sample_data")
    pytest.importorskip("h5netcdf")
    return air_temperature("E1")


def _field(frames: int = 30, ny: int = 12, nx: int = 10) -> "xr.Dataset":
    """A small synthetic field whose every value says where it is: 10000 t + 100 y + x (exact in float32)."""
    t = np.arange(frames)[:, None, None]
    y = np.arange(ny)[None, :, None]
    x = np.arange(nx)[None, None, :]
    values = (10000.0 * t + 100.0 * y + x).astype(np.float32)
    return xr.Dataset(
        {"vorticity": (("time", "y", "x"), values)},
        coords={"time": 0.5 * np.arange(frames), "y": 0.1 + 0.2 * np.arange(ny), "x": 0.3 * np.arange(nx)},
    )


def test_air_temperature_layout(e1: "xr.Dataset") -> None:
    assert list(e1.data_vars) == ["air_temperature"]
    temperature = e1["air_temperature"]
    assert temperature.dims == ("time", "latitude", "longitude")
    assert temperature.shape == (240, 37, 49)
    assert set(e1.coords) == {"time", "latitude", "longitude"}
    assert temperature.attrs["units"] == "K"
    values = temperature.values
    assert np.all(np.isfinite(values))
    assert 240.0 < values.min() and values.max() < 320.0  # plausible near-surface kelvin
    # A warmer south: the mean over time and longitude falls with latitude.
    assert temperature.mean(("time", "longitude")).values[0] > temperature.mean(("time", "longitude")).values[-1] + 15
    np.testing.assert_allclose(np.diff(e1["latitude"].values), 1.25)


def test_air_temperature_time_steps_are_constant(e1: "xr.Dataset") -> None:
    times = e1["time"].values
    steps = {b - a for a, b in zip(times[:-1], times[1:])}
    assert steps == {datetime.timedelta(days=360)}  # annual, in the model's 360-day calendar
    assert (times[0].year, times[-1].year) == (1860, 2099)
    assert e1["time"].dt.calendar == "360_day"


def test_air_temperature_scenarios_share_their_history(e1: "xr.Dataset") -> None:
    a1b = air_temperature("A1B")
    assert a1b["air_temperature"].shape == (240, 37, 49)
    assert a1b.attrs["scenario"] == "A1B" and e1.attrs["scenario"] == "E1"
    same = [np.array_equal(a, b) for a, b in zip(e1["air_temperature"].values, a1b["air_temperature"].values)]
    assert all(same[:140]) and not any(same[140:])
    # The business-as-usual scenario ends warmer than the mitigation one.
    assert float(a1b["air_temperature"][-20:].mean()) > float(e1["air_temperature"][-20:].mean()) + 1.0


def test_air_temperature_round_trips_through_netcdf(e1: "xr.Dataset", tmp_path) -> None:
    path = tmp_path / "air.nc"
    e1.to_netcdf(path, engine="h5netcdf")
    with xr.open_dataset(path, engine="h5netcdf") as back:
        xr.testing.assert_identical(back.load(), e1)


def test_air_temperature_rejects_unknown_scenario() -> None:
    assert AIR_TEMPERATURE_SCENARIOS == ("E1", "A1B")
    with pytest.raises(ValueError, match=r"'B2'.*\['E1', 'A1B'\]"):
        air_temperature("B2")


def test_air_temperature_without_the_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_sample_data(name, *args, **kwargs):
        if name == "iris_sample_data":
            raise ImportError("No module named 'iris_sample_data'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sample_data)
    with pytest.raises(ImportError, match=r'pip install "polydiff\[timeseries\]"'):
        air_temperature("E1")


def test_co2_series() -> None:
    pytest.importorskip("statsmodels")
    frame = co2_series()
    assert list(frame.columns) == ["time", "co2"]
    assert len(frame) == 2284
    assert frame["co2"].isna().sum() == 59
    assert pd.api.types.is_datetime64_any_dtype(frame["time"])
    assert frame["time"].iloc[0] == pd.Timestamp("1958-03-29")
    assert (frame["time"].diff().dropna() == pd.Timedelta(days=7)).all()
    assert 310 < frame["co2"].min() and frame["co2"].max() < 380


def test_probe_series_reads_the_field_at_separated_points() -> None:
    ds = _field()
    before = ds.copy(deep=True)
    frame = probe_series(ds, probes=6, seed=2)
    xr.testing.assert_identical(ds, before)
    assert list(frame.columns) == ["time"] + [f"probe_{i}" for i in range(6)]
    assert frame["probe_0"].dtype == np.float32
    np.testing.assert_array_equal(frame["time"].to_numpy(), ds["time"].values)
    indices = frame.attrs["probe_indices"]
    assert len(set(indices.values())) == 6
    for name, (row, col) in indices.items():
        # The synthetic field encodes its own position, so the column names its grid point.
        np.testing.assert_array_equal(frame[name].to_numpy(), 10000.0 * np.arange(30) + 100.0 * row + col)
        located = ds["vorticity"].sel(frame.attrs["probes"][name])
        np.testing.assert_array_equal(frame[name].to_numpy(), located.values)
    points = np.array(list(indices.values()))
    gaps = np.hypot(*(points[:, None] - points[None]).transpose(2, 0, 1))
    assert gaps[np.triu_indices(6, 1)].min() >= 2.0  # well separated on a 12 × 10 grid

    np.testing.assert_array_equal(probe_series(ds, probes=6, seed=2).to_numpy(), frame.to_numpy())
    assert probe_series(ds, probes=6, seed=3).attrs["probe_indices"] != indices


def test_probe_series_of_air_temperature(e1: "xr.Dataset") -> None:
    frame = probe_series(e1, probes=4, variable="air_temperature", seed=0)
    assert frame.shape == (240, 5)
    for name, where in frame.attrs["probes"].items():
        assert set(where) == {"latitude", "longitude"}
        np.testing.assert_array_equal(frame[name].to_numpy(), e1["air_temperature"].sel(where).values)


def test_probe_series_errors() -> None:
    ds = _field()
    with pytest.raises(ValueError, match="'pressure' is not in the dataset"):
        probe_series(ds, variable="pressure")
    with pytest.raises(ValueError, match="probes"):
        probe_series(ds, probes=0)
    with pytest.raises(ValueError, match=r"dims \(time, row, column\)"):
        probe_series(ds.isel(x=0))


def _table(rows: int = 600) -> "pd.DataFrame":
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "time": pd.date_range("2020-01-01", periods=rows, freq="h"),
            "a": np.sin(np.arange(rows) / 10) + 0.1 * rng.standard_normal(rows),
            "b": rng.standard_normal(rows).astype(np.float32),
            "c": rng.integers(0, 5, rows),
        }
    )


def test_anomaly_table_keeps_the_training_part() -> None:
    frame = _table()
    before = frame.copy()
    table, events = anomaly_table(frame, train_fraction=0.5, count=6, seed=1, min_gap=10)
    pd.testing.assert_frame_equal(frame, before)
    assert list(table.columns) == ["time", "a", "b", "c", "label"]
    assert table["label"].dtype == np.int8
    assert table["b"].dtype == np.float32 and table["c"].dtype == np.float64
    train = slice(0, 300)
    pd.testing.assert_frame_equal(
        table.iloc[train][["time", "a", "b"]], frame.iloc[train][["time", "a", "b"]]
    )
    np.testing.assert_array_equal(table["c"].to_numpy()[train], frame["c"].to_numpy()[train].astype(float))
    assert not table["label"].iloc[train].any()
    pd.testing.assert_series_equal(table["time"], frame["time"])

    expected = np.zeros(len(frame), dtype=np.int8)
    for event in events:
        assert event.start >= 300
        expected[event.start:event.stop] = 1
    np.testing.assert_array_equal(table["label"].to_numpy(), expected)
    assert len(events) == 6
    # Rows outside the events keep their values; rows inside changed on the event's channels.
    values = frame[["a", "b", "c"]].to_numpy(dtype=float)
    new = table[["a", "b", "c"]].to_numpy(dtype=float)
    np.testing.assert_array_equal(new[expected == 0], values[expected == 0])
    for event in events:
        rows, cols = slice(event.start, event.stop), list(event.channels)
        assert np.any(new[rows][:, cols] != values[rows][:, cols])


def test_anomaly_table_on_co2_keeps_its_gaps() -> None:
    pytest.importorskip("statsmodels")
    frame = co2_series()
    table, events = anomaly_table(frame, count=20, seed=0)
    assert len(events) == 20 and all(e.channels == (0,) for e in events)
    assert all(e.kind != "correlation_break" for e in events)  # a single channel
    np.testing.assert_array_equal(table["co2"].isna().to_numpy(), frame["co2"].isna().to_numpy())
    assert table["label"].sum() == sum(e.length for e in events)


def test_anomaly_table_errors() -> None:
    frame = _table(200)
    with pytest.raises(ValueError, match="train_fraction"):
        anomaly_table(frame, train_fraction=1.0)
    with pytest.raises(ValueError, match="start"):
        anomaly_table(frame, count=1, start=5)
    with pytest.raises(ValueError, match=r"\['name'\] are not"):
        anomaly_table(frame.assign(name="x"), count=1)
    with pytest.raises(ValueError, match="label"):
        anomaly_table(frame.assign(label=0), count=1)
    with pytest.raises(ValueError, match="at most"):
        anomaly_table(frame, count=50)
