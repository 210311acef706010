"""Offline demo and benchmark data for the time-series plugin: real series shipped in packages.

Nothing here downloads: the data come from installed packages or from a dataset made by
:mod:`polydiff_timeseries.navier_stokes`.

* :func:`air_temperature`: near-surface air temperature over North America from Met Office
  Unified Model climate runs, 240 annual means 1860–2099 on a 37 × 49 latitude–longitude
  grid, for two emission scenarios. The files ship with the ``iris-sample-data`` package (the
  gallery data of the Iris project).
* :func:`co2_series`: weekly atmospheric CO₂ at Mauna Loa, 1958–2001 (Keeling et al., Scripps
  CO₂ program), as shipped with ``statsmodels``.
* :func:`probe_series`: a sensor-style multivariate table sampled from a gridded field at a few
  fixed, well-separated points (the way multivariate anomaly-detection benchmarks such as SMD or
  SWaT record many sensors of one system).
* :func:`anomaly_table`: such a table with labelled anomalies injected after a clean training
  part (:func:`polydiff_timeseries.anomalies.inject_anomalies`), the set-up of
  reconstruction/imputation detectors like ImDiffusion (Chen et al. 2023), which learn
  normality from the training part.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from polydiff_timeseries.anomalies import AnomalyEvent, inject_anomalies

if TYPE_CHECKING:
    import pandas
    import xarray

__all__ = ["AIR_TEMPERATURE_SCENARIOS", "air_temperature", "co2_series", "probe_series", "anomaly_table"]

AIR_TEMPERATURE_SCENARIOS: tuple[str, ...] = ("E1", "A1B")

_INSTALL_HINT = 'pip install "polydiff[timeseries]"'


def air_temperature(scenario: str = "E1") -> "xarray.Dataset":
    """Climate-model surface air temperature over North America (``iris-sample-data``).

    Annual means of near-surface (1.5 m) air temperature in kelvin from the Met Office Unified
    Model 6.05, 240 steps from 1860 to 2099 (each the mean from 1 December to 1 December) on a
    regular 37 × 49 grid (latitude 15°N–60°N by 1.25°, longitude 225°E–315°E by 1.875°).
    ``"E1"`` is the ENSEMBLES E1 mitigation scenario and ``"A1B"`` the SRES A1B one; both
    continue the same historical run, so their first 140 years (1860–1999) are identical.

    The variable ``air_temperature`` (float32, dims ``(time, latitude, longitude)``) keeps its
    attributes (``units = "K"``, ``standard_name``, ...); the file's auxiliary coordinates and
    bounds (forecast period, reference time, height, time bounds, grid mapping) are dropped, and
    so are the file encodings, so that the dataset can be written anywhere. ``time`` is kept as
    in the file: ``cftime.Datetime360Day`` objects (the model's 360-day calendar), each
    1 June, exactly 360 days apart — strictly increasing with a constant step (checked).

    Args:
        scenario: ``"E1"`` or ``"A1B"``.

    Returns:
        The dataset, loaded into memory (no file stays open).

    Raises:
        ValueError: for an unknown ``scenario``, or if the file's time steps are not constant.
        ImportError: if ``iris-sample-data`` (or ``xarray``/``h5netcdf``/``cftime``) is missing.
    """
    import importlib.resources

    if scenario not in AIR_TEMPERATURE_SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; valid scenarios are {list(AIR_TEMPERATURE_SCENARIOS)}")
    try:
        import iris_sample_data
        import xarray as xr
    except ImportError as error:
        raise ImportError(f"air_temperature needs iris-sample-data and xarray: {_INSTALL_HINT}") from error

    resource = importlib.resources.files(iris_sample_data) / "sample_data" / f"{scenario}_north_america.nc"
    with importlib.resources.as_file(resource) as path:
        with xr.open_dataset(path, engine="h5netcdf") as raw:
            temperature = raw["air_temperature"]
            extra = [name for name in temperature.coords if name not in temperature.dims]
            ds = temperature.drop_vars(extra).to_dataset().load()
            file_attrs = dict(raw.attrs)
    ds = ds.drop_encoding()
    ds.attrs = {
        **file_attrs,
        "title": f"Met Office Unified Model near-surface air temperature, North America, scenario {scenario}",
        "source": "iris-sample-data package: Met Office Unified Model 6.05",
        "scenario": scenario,
    }
    # The dropped grid-mapping variable and time bounds must not stay referenced.
    ds["air_temperature"].attrs.pop("grid_mapping", None)
    ds["time"].attrs.pop("bounds", None)

    if not ds.indexes["time"].is_monotonic_increasing:
        ds = ds.sortby("time")
    times = ds["time"].values
    steps = {b - a for a, b in zip(times[:-1], times[1:])}
    if len(steps) != 1 or next(iter(steps)).total_seconds() <= 0:
        raise ValueError(f"air temperature times of scenario {scenario} are not evenly spaced: steps {sorted(steps)}")
    return ds


def co2_series() -> "pandas.DataFrame":
    """Weekly atmospheric CO₂ at Mauna Loa (ppm), from ``statsmodels.datasets.co2``.

    2284 weeks, 1958-03-29 to 2001-12-29 (week ending Saturday). The record's 59 missing weeks
    are kept as NaN, so that imputation and forecasting code meets real gaps.

    Returns:
        A frame with a default integer index and columns ``time`` (datetime64) and ``co2``
        (float64).

    Raises:
        ImportError: if ``statsmodels`` or ``pandas`` is missing.
    """
    try:
        from statsmodels.datasets import co2
    except ImportError as error:
        raise ImportError(f"co2_series needs statsmodels: {_INSTALL_HINT}") from error
    data = co2.load_pandas().data
    frame = data.rename_axis("time").reset_index()
    return frame[["time", "co2"]].astype({"co2": np.float64})


def _separated_points(shape: tuple[int, int], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct grid points, greedily accepted in random order at a minimum distance.

    The distance starts at 0.7 × the spacing of ``count`` points spread evenly over the grid
    and shrinks by 10% until enough points are accepted, so the points are as far apart as
    this simple scheme manages. Distances are Euclidean in index units.
    """
    ny, nx = shape
    order = rng.permutation(ny * nx)
    candidates = np.stack(np.unravel_index(order, shape), axis=1).astype(float)
    distance = 0.7 * math.sqrt(ny * nx / count)
    while True:
        chosen: list[np.ndarray] = []
        for point in candidates:
            if all(np.hypot(*(point - other)) >= distance for other in chosen):
                chosen.append(point)
                if len(chosen) == count:
                    return np.array(chosen, dtype=int)
        distance *= 0.9


def probe_series(
    ds: "xarray.Dataset", *, probes: int = 8, variable: str = "vorticity", seed: int = 0
) -> "pandas.DataFrame":
    """A sensor-style multivariate series: a gridded field read at fixed probe points.

    The probes are ``probes`` distinct grid points chosen with ``seed``, well separated (each
    pair at least a set distance apart in grid-index units, the largest this greedy random
    scheme reaches from 0.7 × the even-spread spacing), so the columns are related but not
    copies of each other. ``ds`` is not modified.

    Args:
        ds: a dataset whose ``variable`` has dims ``(time, <row dim>, <column dim>)``, e.g.
            :func:`~polydiff_timeseries.navier_stokes.navier_stokes_dataset` (``y``, ``x``) or
            :func:`air_temperature` (``latitude``, ``longitude``).
        probes: number of probe points.
        variable: the field to read.
        seed: seed of the probe placement.

    Returns:
        A frame with columns ``time`` (the dataset's time values as they are) and
        ``probe_0 .. probe_{probes-1}`` (the field's values and dtype). ``frame.attrs["probes"]``
        maps each probe column to its coordinates, ``{dim: value}``, and
        ``frame.attrs["probe_indices"]`` to its integer grid indices ``(row, column)``.

    Raises:
        ValueError: for a missing variable, a variable not shaped ``(time, a, b)``, or a bad
            ``probes``.
    """
    import pandas as pd

    if variable not in ds.data_vars:
        raise ValueError(f"variable {variable!r} is not in the dataset; it has {sorted(map(str, ds.data_vars))}")
    field = ds[variable]
    if field.ndim != 3 or field.dims[0] != "time":
        raise ValueError(f"variable {variable!r} must have dims (time, row, column); got {field.dims}")
    row_dim, col_dim = field.dims[1:]
    shape = field.shape[1:]
    if isinstance(probes, bool) or not isinstance(probes, (int, np.integer)) or not 1 <= probes <= shape[0] * shape[1]:
        raise ValueError(f"probes must be an integer in [1, {shape[0] * shape[1]}] (grid points); got {probes!r}")

    points = _separated_points(shape, int(probes), np.random.default_rng(seed))
    values = field.values[:, points[:, 0], points[:, 1]]
    names = [f"probe_{i}" for i in range(len(points))]
    frame = pd.DataFrame({"time": ds["time"].values, **{name: values[:, i] for i, name in enumerate(names)}})

    def coordinate(dim: str, index: int) -> Any:
        if dim not in field.coords:
            return index
        value = field.coords[dim].values[index]
        return value.item() if isinstance(value, np.generic) else value

    frame.attrs["probes"] = {
        name: {row_dim: coordinate(row_dim, int(r)), col_dim: coordinate(col_dim, int(c))}
        for name, (r, c) in zip(names, points)
    }
    frame.attrs["probe_indices"] = {name: (int(r), int(c)) for name, (r, c) in zip(names, points)}
    return frame


def anomaly_table(
    frame: "pandas.DataFrame",
    *,
    train_fraction: float = 0.5,
    count: int = 20,
    seed: int = 0,
    **inject_options: Any,
) -> tuple["pandas.DataFrame", list[AnomalyEvent]]:
    """Inject labelled anomalies into a table after a clean training part.

    Every column except ``time`` is a channel of
    :func:`~polydiff_timeseries.anomalies.inject_anomalies`, with ``start`` set to
    ``ceil(train_fraction * rows)``: the rows before stay exactly as they were (a detector's
    normal training data), the events lie after. ``frame`` is not modified.

    Args:
        frame: the table, numeric columns plus an optional ``time`` column (kept as is).
        train_fraction: leading fraction of the rows kept free of anomalies, in ``[0, 1)``.
        count: number of anomalies.
        seed: seed of the injection.
        **inject_options: other keyword arguments of ``inject_anomalies`` (``kinds``,
            ``min_length``, ``max_length``, ``magnitude``, ``min_gap``); not ``start``.

    Returns:
        ``(table, events)``: a new frame with the same columns (float columns keep their dtype,
        others become float64) plus an int8 column ``label`` (1 inside an anomaly), and the
        events, whose ``start``/``stop`` are row positions (0-based, not index labels).

    Raises:
        ValueError: for a bad ``train_fraction``, a ``start`` option, a non-numeric channel, an
            existing ``label`` column, no channel, or any error of ``inject_anomalies``.
    """
    import pandas as pd
    from pandas.api.types import is_bool_dtype, is_float_dtype, is_numeric_dtype

    if not 0.0 <= train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in [0, 1); got {train_fraction!r}")
    if "start" in inject_options:
        raise ValueError("start is set from train_fraction; do not pass it")
    if "label" in frame.columns:
        raise ValueError("frame already has a 'label' column")
    channels = [name for name in frame.columns if name != "time"]
    if not channels:
        raise ValueError("frame has no columns besides 'time' to inject anomalies into")
    non_numeric = [name for name in channels if not is_numeric_dtype(frame[name]) or is_bool_dtype(frame[name])]
    if non_numeric:
        raise ValueError(f"every column besides 'time' must be numeric; {non_numeric} are not")

    start = math.ceil(train_fraction * len(frame))
    values = frame[channels].to_numpy(dtype=np.float64, na_value=np.nan)
    out, labels, events = inject_anomalies(values, count=count, start=start, seed=seed, **inject_options)
    table = frame.copy()
    for j, name in enumerate(channels):
        dtype = frame[name].dtype if is_float_dtype(frame[name]) else np.float64
        table[name] = pd.Series(out[:, j], index=frame.index).astype(dtype)
    table["label"] = labels
    return table, events
