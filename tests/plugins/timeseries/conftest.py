"""Tiny data files shared by the timeseries plugin's data, model and command tests.

Everything is small enough to write in milliseconds: a 3×4 grid of fields plus one scalar series
(NetCDF, written with h5netcdf), and a two-column table with anomaly labels (CSV). xarray and
pandas are imported where used, so the plugin's other tests do not depend on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

GRID = (3, 4)
STEP = 6.0  # the numeric time step of the fields


def fields_dataset(frames: int = 200, *, times: str = "numeric", seed: int = 0) -> "xarray.Dataset":
    """``u`` (time, y, x) on a 3×4 grid and ``s`` (time,): noisy sines of different periods.

    ``times``: ``numeric`` (0, 6, 12, ...), ``datetime`` (6-hourly from 2000-01-01) or ``none``
    (no time coordinate).
    """
    xr = pytest.importorskip("xarray")
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(seed)
    t = np.arange(frames)
    phase = 0.3 * np.arange(GRID[0] * GRID[1]).reshape(GRID)
    u = np.sin(2 * np.pi * t[:, None, None] / 20 + phase) + 0.1 * rng.standard_normal((frames, *GRID))
    s = 3.0 + 2.0 * np.cos(2 * np.pi * t / 15) + 0.05 * rng.standard_normal(frames)
    coords = {"y": [10.0, 20.0, 30.0], "x": [1.0, 2.0, 3.0, 4.0]}
    if times == "numeric":
        coords["time"] = t * STEP
    elif times == "datetime":
        coords["time"] = pd.date_range("2000-01-01", periods=frames, freq="6h").to_numpy()
    return xr.Dataset(
        {"u": (("time", "y", "x"), u, {"units": "m/s"}), "s": (("time",), s, {"units": "K"})}, coords=coords
    )


def write_fields(path: Path, frames: int = 200, **kwargs) -> Path:
    pytest.importorskip("h5netcdf")
    fields_dataset(frames, **kwargs).to_netcdf(path, engine="h5netcdf")
    return path


def labelled_table(rows: int = 160, *, seed: int = 0, spikes: tuple[int, ...] = (130, 145)) -> "pandas.DataFrame":
    """``timestamp`` (hourly), ``a``, ``b`` and a 0/1 ``label`` column marking injected spikes."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    a = np.sin(2 * np.pi * t / 16) + 0.05 * rng.standard_normal(rows)
    b = np.cos(2 * np.pi * t / 16) + 0.05 * rng.standard_normal(rows)
    label = np.zeros(rows, dtype=int)
    for k in spikes:
        a[k] += 8.0
        label[k] = 1
    return pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=rows, freq="h"), "a": a, "b": b,
                         "label": label})


@pytest.fixture
def fields_nc(tmp_path: Path) -> Path:
    """200 frames of the fields with numeric times (step 6) as NetCDF."""
    return write_fields(tmp_path / "fields.nc")


@pytest.fixture
def table_csv(tmp_path: Path) -> Path:
    """160 hourly rows of two series with a label column, as CSV."""
    path = tmp_path / "table.csv"
    labelled_table().to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def make_fields():
    """``make_fields(frames=200, times="numeric", seed=0)``: the fields as an in-memory Dataset."""
    return fields_dataset


@pytest.fixture(scope="session")
def make_table():
    """``make_table(rows=160, seed=0, spikes=(130, 145))``: the labelled table as a DataFrame."""
    return labelled_table
