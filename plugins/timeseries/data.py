"""Time-series and gridded-field data: opening files, their layout, windows and the DataModule.

Every source becomes an ``xarray.Dataset`` with a time dimension:

- **NetCDF** (``.nc``, ``.nc4``, ``.cdf``, ``.h5``) and **zarr** stores, opened lazily with dask
  chunks, so a dataset larger than memory trains (each window reads only its own frames);
- **tables** (``.csv``, ``.tsv``, ``.parquet``) in wide form: one row per time step, a time
  column (or the row number) and one numeric column per variable; an optional label column
  (anomaly detection) is kept apart as a ``label`` coordinate along time.

A :class:`Layout` says how the chosen variables, each with its own spatial dimensions, are
flattened into the ``N`` series ("nodes") the networks see, and turns model output back into a
Dataset with the input's coordinates. Values are standardised per variable with the training
split's mean and standard deviation. Missing values (NaN) are never filled in: a window carries
an ``observed`` mask, missing targets carry no loss, and missing context values are not given
to the model as known.

Time stamps must be strictly increasing and evenly spaced: duplicated or irregular time stamps
are an error naming the file and the first offending position (resample first, e.g. with
``Dataset.resample``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "DataError", "open_source", "check_time", "Layout", "Standardizer", "WindowDataset", "WindowDataModule",
    "time_step", "future_times", "split_bounds", "NETCDF_SUFFIXES", "TABLE_SUFFIXES",
]

NETCDF_SUFFIXES = (".nc", ".nc4", ".cdf", ".netcdf", ".h5", ".hdf5")
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
_TIME_NAMES = ("time", "timestamp", "date", "datetime", "ds")
#: Below this many bytes a dataset is read into memory once instead of window by window.
_MEMORY_LIMIT = 512 * 2**20

Split = Literal["train", "val", "test"]


class DataError(ValueError):
    """A data file that cannot be used as given; the message names the file and the problem."""


# --- opening ------------------------------------------------------------------------------------
def open_source(
    path: str | Path,
    *,
    time_dim: str = "time",
    time_column: str | None = None,
    label_column: str | None = "label",
    chunks: Any = "auto",
) -> Any:
    """Open a NetCDF file, zarr store or table as an ``xarray.Dataset`` with a time dimension.

    Args:
        path: the file (or zarr folder).
        time_dim: the time dimension of NetCDF/zarr data; tables get a dimension of this name.
        time_column: a table's time column (default: the first column named time, timestamp,
            date, datetime or ds, case-insensitive; none means the row number is the time).
        label_column: a table column holding 0/1 anomaly labels, kept as the ``label``
            coordinate instead of a variable (``None``: no label column).
        chunks: dask chunks for NetCDF/zarr (``"auto"`` one chunk along time per ~128 MB;
            ``None`` reads eagerly).

    Raises:
        DataError: the file is missing, of an unknown kind, unreadable, or its time axis is
            duplicated, irregular or absent.
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".zarr":
        try:
            ds = xr.open_zarr(path, chunks={} if chunks == "auto" else chunks)
        except Exception as exc:
            raise DataError(f"{path}: not a readable zarr store ({type(exc).__name__}: {_first_line(exc)})") from None
    elif suffix in NETCDF_SUFFIXES:
        ds = _open_netcdf(path, chunks)
    elif suffix in TABLE_SUFFIXES:
        ds = _open_table(path, time_dim=time_dim, time_column=time_column, label_column=label_column)
    else:
        raise DataError(
            f"{path}: unknown kind of file {suffix or '(no suffix)'!r}; polydiff reads NetCDF "
            f"({', '.join(NETCDF_SUFFIXES)}), zarr stores and tables ({', '.join(TABLE_SUFFIXES)})"
        )
    if time_dim not in ds.dims:
        raise DataError(f"{path}: no time dimension {time_dim!r} (dimensions: {', '.join(map(str, ds.dims)) or 'none'}); "
                        "set time_dim")
    check_time(ds, time_dim, path)
    return ds


def _open_netcdf(path: Path, chunks: Any) -> Any:
    import xarray as xr

    with open(path, "rb") as f:
        head = f.read(8)
    # NetCDF-3 starts with "CDF", NetCDF-4 is HDF5; anything else is not NetCDF whatever its name.
    if not (head.startswith(b"CDF") or head.startswith(b"\x89HDF")):
        raise DataError(f"{path} is not a NetCDF file (it starts with neither 'CDF' nor the HDF5 signature)")
    engine = "scipy" if head.startswith(b"CDF") else "h5netcdf"
    try:
        return xr.open_dataset(path, engine=engine, chunks={} if chunks == "auto" else chunks)
    except Exception as exc:
        raise DataError(f"{path}: could not be read as NetCDF ({type(exc).__name__}: {_first_line(exc)})") from None


def _open_table(path: Path, *, time_dim: str, time_column: str | None, label_column: str | None) -> Any:
    import pandas as pd
    import xarray as xr

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            frame = pd.read_csv(path, sep=sep)
    except Exception as exc:
        raise DataError(f"{path}: could not be read as a table ({type(exc).__name__}: {_first_line(exc)})") from None
    if frame.empty:
        raise DataError(f"{path}: the table has no rows")
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if time_column is None:
        time_column = next((c for c in columns if c.lower() in _TIME_NAMES), None)
    elif time_column not in columns:
        raise DataError(f"{path}: no time column {time_column!r} (columns: {', '.join(columns)})")
    if time_column is not None:
        raw = frame[time_column]
        if raw.dtype.kind in "iuf":
            times = raw.to_numpy()
        else:
            try:
                times = pd.to_datetime(raw).to_numpy()
            except (ValueError, TypeError) as exc:
                raise DataError(f"{path}: time column {time_column!r} is not numbers or dates ({_first_line(exc)})") from None
        if pd.isna(times).any():
            row = int(np.flatnonzero(pd.isna(times))[0])
            raise DataError(f"{path}: time column {time_column!r} is empty at row {row + 2}")
        frame = frame.drop(columns=[time_column])
    else:
        times = np.arange(len(frame))
    labels = None
    if label_column is not None and label_column in frame.columns:
        labels = frame[label_column].to_numpy()
        if not np.isin(labels[~pd.isna(labels)], (0, 1)).all():
            raise DataError(f"{path}: label column {label_column!r} must hold only 0 and 1")
        labels = np.nan_to_num(labels.astype(float), nan=0.0).astype(np.int8)
        frame = frame.drop(columns=[label_column])
    bad = [c for c in frame.columns if frame[c].dtype.kind not in "iufb"]
    for column in bad:  # a numeric column with a stray word is a data error worth naming
        converted = pd.to_numeric(frame[column], errors="coerce")
        wrong = (converted.isna() & frame[column].notna()).to_numpy()
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0]) + 2
            raise DataError(f"{path}: column {column!r} is not numeric (row {row} holds {frame[column].iloc[row - 2]!r})")
        raise DataError(f"{path}: column {column!r} holds {frame[column].dtype} values, not numbers; drop it or pass "
                        "the value columns as variables")
    if frame.shape[1] == 0:
        raise DataError(f"{path}: the table has no value columns")
    data = {c: ((time_dim,), frame[c].to_numpy(dtype=np.float64)) for c in frame.columns}
    coords: dict[str, Any] = {time_dim: times}
    if labels is not None:
        coords["label"] = ((time_dim,), labels)
    return xr.Dataset(data, coords=coords)


def check_time(ds: Any, time_dim: str, path: str | Path = "<dataset>") -> None:
    """Raise :class:`DataError` unless the time coordinate is strictly increasing and evenly spaced.

    A dimension without a coordinate counts as evenly spaced (its index is its time).
    """
    if time_dim not in ds.coords:
        return
    times = ds[time_dim].values
    if len(times) < 2:
        return
    steps = _diffs(times)
    dup = [i for i, s in enumerate(steps) if _is_zero(s)]
    if dup:
        raise DataError(f"{path}: duplicated time stamp {times[dup[0]]} (positions {dup[0]} and {dup[0] + 1})")
    back = [i for i, s in enumerate(steps) if _is_negative(s)]
    if back:
        raise DataError(f"{path}: time stamps are not increasing ({times[back[0]]} is followed by {times[back[0] + 1]}); sort them")
    first = steps[0]
    if times.dtype.kind == "f":
        # Float time stamps written as t0 + n dt carry rounding noise in their differences.
        odd = [int(i) for i in np.flatnonzero(~np.isclose(steps, first, rtol=1e-6, atol=0.0))]
    else:
        odd = [i for i, s in enumerate(steps) if s != first]
    if odd:
        i = odd[0]
        raise DataError(
            f"{path}: irregular time steps: {times[0]} to {times[1]} is {first}, but {times[i]} to "
            f"{times[i + 1]} is {steps[i]}; resample the data to a regular step first"
        )


def _diffs(times: np.ndarray) -> list[Any]:
    if times.dtype.kind in "iufM":
        return list(np.diff(times))
    return [b - a for a, b in zip(times[:-1], times[1:])]  # cftime dates and other objects


def _is_zero(step: Any) -> bool:
    return step == step * 0


def _is_negative(step: Any) -> bool:
    return step < step * 0


def time_step(times: np.ndarray) -> Any:
    """The (constant) step between time stamps."""
    return _diffs(times[:2])[0]


def future_times(times: np.ndarray, horizon: int) -> np.ndarray:
    """The ``horizon`` time stamps after the last of ``times``, at its constant step."""
    step = time_step(times)
    last = times[-1]
    out = [last + step * (k + 1) for k in range(horizon)]
    return np.array(out, dtype=times.dtype)


def split_bounds(n_frames: int, val_fraction: float, test_fraction: float) -> dict[str, tuple[int, int]]:
    """Chronological frame ranges ``[start, stop)`` of the train, val and test splits."""
    n_test = int(round(n_frames * test_fraction))
    n_val = int(round(n_frames * val_fraction))
    n_train = n_frames - n_val - n_test
    return {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n_frames)}


# --- layout -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """How variables with spatial dimensions are flattened into the ``N`` nodes the model sees.

    Node order: variable by variable (in ``variables`` order), each flattened C-order over its
    spatial dimensions. Stored in checkpoints as plain data (:meth:`as_dict`).

    Attributes:
        time_dim: the time dimension.
        variables: names, in node order.
        dims: each variable's spatial dimensions (``()`` for a series).
        shapes: each variable's spatial shape.
        coarsen: spatial block-averaging factor applied before flattening.
    """

    time_dim: str
    variables: tuple[str, ...]
    dims: tuple[tuple[str, ...], ...]
    shapes: tuple[tuple[int, ...], ...]
    coarsen: int = 1

    @property
    def n_nodes(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def slices(self) -> list[slice]:
        out, start = [], 0
        for shape in self.shapes:
            size = math.prod(shape)
            out.append(slice(start, start + size))
            start += size
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"time_dim": self.time_dim, "variables": list(self.variables), "dims": [list(d) for d in self.dims],
                "shapes": [list(s) for s in self.shapes], "coarsen": self.coarsen}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Layout:
        return cls(data["time_dim"], tuple(data["variables"]), tuple(tuple(d) for d in data["dims"]),
                   tuple(tuple(int(n) for n in s) for s in data["shapes"]), int(data.get("coarsen", 1)))

    @classmethod
    def of(cls, ds: Any, variables: Sequence[str] | None, time_dim: str, coarsen: int = 1,
           path: str | Path = "<dataset>") -> Layout:
        """The layout of ``ds`` (already coarsened) for ``variables`` (default: every numeric
        variable with the time dimension)."""
        if variables is None:
            variables = [str(v) for v, da in ds.data_vars.items()
                         if time_dim in da.dims and da.dtype.kind in "iufb"]
            if not variables:
                raise DataError(f"{path}: no numeric variable has the time dimension {time_dim!r}")
        missing = [v for v in variables if v not in ds.data_vars]
        if missing:
            raise DataError(f"{path}: missing variable {', '.join(map(repr, missing))} (variables: "
                            f"{', '.join(map(str, ds.data_vars)) or 'none'})")
        dims, shapes = [], []
        for v in variables:
            da = ds[v]
            if time_dim not in da.dims:
                raise DataError(f"{path}: variable {v!r} has no time dimension {time_dim!r} (dims {da.dims})")
            if da.dtype.kind not in "iufb":
                raise DataError(f"{path}: variable {v!r} is not numeric ({da.dtype})")
            spatial = tuple(str(d) for d in da.dims if d != time_dim)
            dims.append(spatial)
            shapes.append(tuple(int(da.sizes[d]) for d in spatial))
        return cls(time_dim, tuple(variables), tuple(dims), tuple(shapes), coarsen)

    def check(self, ds: Any, path: str | Path = "<dataset>") -> None:
        """Raise :class:`DataError` unless ``ds`` holds this layout's variables with the same sizes."""
        for v, spatial, shape in zip(self.variables, self.dims, self.shapes):
            if v not in ds.data_vars:
                raise DataError(f"{path}: missing variable {v!r}, which the model was trained on "
                                f"(the file has: {', '.join(map(str, ds.data_vars)) or 'none'})")
            da = ds[v]
            got = tuple(str(d) for d in da.dims if d != self.time_dim)
            if got != spatial:
                raise DataError(f"{path}: variable {v!r} has dimensions {got}, the model expects {spatial}")
            sizes = tuple(int(da.sizes[d]) for d in spatial)
            if sizes != shape:
                raise DataError(f"{path}: variable {v!r} has shape {sizes}, the model expects {shape}")

    def read(self, ds: Any, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``start:stop`` as a float32 array (T, N) (NaN where missing)."""
        parts = []
        for v in self.variables:
            da = ds[v].isel({self.time_dim: slice(start, stop)})
            da = da.transpose(self.time_dim, *[d for d in da.dims if d != self.time_dim])
            values = np.asarray(da.values, dtype=np.float32)
            parts.append(values.reshape(values.shape[0], -1))
        return np.concatenate(parts, axis=1)

    def to_dataset(self, values: np.ndarray, coords_from: Any, times: np.ndarray,
                   lead_dims: Sequence[str] = (), lead_coords: dict[str, Any] | None = None) -> Any:
        """Values (..., T, N) back into a Dataset with the spatial coordinates of ``coords_from``.

        Args:
            values: leading dimensions named by ``lead_dims`` (e.g. ``("sample",)``), then time,
                then nodes.
            coords_from: a Dataset (coarsened like the training data) whose spatial coordinates
                are copied.
            times: the time coordinate of the T frames.
        """
        import xarray as xr

        lead_dims = tuple(lead_dims)
        data = {}
        for v, spatial, shape, sl in zip(self.variables, self.dims, self.shapes, self.slices):
            block = values[..., sl].reshape(*values.shape[:-1], *shape)
            coords = {d: coords_from[d].values for d in spatial if d in coords_from.coords}
            data[v] = xr.DataArray(block, dims=(*lead_dims, self.time_dim, *spatial),
                                   coords={**coords, self.time_dim: times, **(lead_coords or {})},
                                   attrs=dict(coords_from[v].attrs) if v in coords_from else {})
        return xr.Dataset(data)


def coarsen_dataset(ds: Any, factor: int, time_dim: str) -> Any:
    """Block-average every spatial dimension by ``factor`` (a trailing partial block is dropped)."""
    if factor == 1:
        return ds
    spatial = {d: factor for d in ds.dims if d != time_dim and ds.sizes[d] >= factor}
    if not spatial:
        return ds
    return ds.coarsen(spatial, boundary="trim").mean()


# --- standardisation ----------------------------------------------------------------------------
@dataclass
class Standardizer:
    """Per-variable mean and standard deviation, expanded to one value per node.

    Attributes:
        mean, std: lists of per-variable floats (plain data for checkpoints).
    """

    mean: list[float]
    std: list[float]
    sizes: list[int] = field(default_factory=list)

    @classmethod
    def fit(cls, ds: Any, layout: Layout, stop: int) -> Standardizer:
        """Fit on frames ``[0, stop)`` of ``ds``, ignoring NaNs (computed lazily with dask)."""
        means, stds = [], []
        for v in layout.variables:
            da = ds[v].isel({layout.time_dim: slice(0, stop)})
            mean = float(da.mean(skipna=True).values)
            std = float(da.std(skipna=True).values)
            if not math.isfinite(mean):
                raise DataError(f"variable {v!r} has no finite value in the training split")
            means.append(mean)
            stds.append(std if std > 1e-12 and math.isfinite(std) else 1.0)
        return cls(means, stds, [math.prod(s) for s in layout.shapes])

    def node_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        mean = np.concatenate([np.full(n, m, np.float32) for m, n in zip(self.mean, self.sizes)])
        std = np.concatenate([np.full(n, s, np.float32) for s, n in zip(self.std, self.sizes)])
        return mean, std

    def forward(self, values: np.ndarray) -> np.ndarray:
        mean, std = self.node_arrays()
        return (values - mean) / std

    def inverse(self, values: np.ndarray) -> np.ndarray:
        mean, std = self.node_arrays()
        return values * std + mean

    def as_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "sizes": list(self.sizes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Standardizer:
        return cls([float(x) for x in data["mean"]], [float(x) for x in data["std"]], [int(n) for n in data["sizes"]])


# --- windows ------------------------------------------------------------------------------------
class WindowDataset(Dataset):
    """Windows of ``length`` frames starting every ``stride`` frames within ``[start, stop)``.

    Items are dicts: ``x0`` (length, N) standardised float32 with 0 where missing, ``observed``
    (length, N) bool, ``index`` the window's first frame, and ``label`` (length,) int64 when the
    source has labels. Windows whose target part (the last ``horizon`` frames) has no observed
    value are skipped.

    Args:
        frames: the source: an in-memory (T, N) float32 array, or a Dataset and its layout read
            lazily window by window.
    """

    def __init__(self, frames: Any, layout: Layout, scaler: Standardizer, *, length: int, horizon: int,
                 start: int, stop: int, stride: int, labels: np.ndarray | None = None):
        self.frames, self.layout, self.length = frames, layout, int(length)
        self.mean, self.std = scaler.node_arrays()
        self.labels = labels
        starts = list(range(start, stop - length + 1, stride))
        if starts and starts[-1] + length < stop and stride > 1:
            starts.append(stop - length)  # the evaluation windows reach the end of the split
        self.starts = [s for s in starts if self._has_target(s, horizon)]

    def _read(self, start: int) -> np.ndarray:
        if isinstance(self.frames, np.ndarray):
            return self.frames[start:start + self.length]
        return self.layout.read(self.frames, start, start + self.length)

    def _has_target(self, start: int, horizon: int) -> bool:
        if not isinstance(self.frames, np.ndarray):
            return True  # checking would read every window of a lazy dataset
        target = self.frames[start + self.length - horizon:start + self.length]
        return bool(np.isfinite(target).any())

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        start = self.starts[i]
        raw = self._read(start)
        observed = np.isfinite(raw)
        x0 = np.where(observed, (raw - self.mean) / self.std, 0.0).astype(np.float32)
        item = {"x0": torch.from_numpy(x0), "observed": torch.from_numpy(observed), "index": start}
        if self.labels is not None:
            item["label"] = torch.from_numpy(self.labels[start:start + self.length].astype(np.int64))
        return item


class WindowDataModule(pl.LightningDataModule):
    """Windows of context + horizon frames from a NetCDF/zarr dataset or a wide table.

    The time axis is split chronologically: the first ``1 - val_fraction - test_fraction`` of
    the frames train, the next ``val_fraction`` validate, the last ``test_fraction`` test; no
    window crosses a split boundary. Standardisation statistics come from the training split.

    Args:
        path: NetCDF file, zarr store, or CSV/TSV/Parquet table.
        variables: the variables to model (default: every numeric variable with the time
            dimension; a table's columns other than time and label).
        time_dim: the time dimension (tables get one of this name).
        time_column: a table's time column (default: detected by name, else the row number).
        label_column: a table's 0/1 anomaly-label column (kept out of the variables).
        context: frames given to the model.
        horizon: frames it predicts (for anomaly detection: context 0 and horizon the window).
        stride: frames between training windows.
        eval_stride: frames between validation/test windows (default: ``horizon``, so the
            forecast targets tile the split).
        val_fraction, test_fraction: fractions of the frames in each split.
        coarsen: spatial block-averaging factor (1 keeps the grid).
        batch_size: windows per batch.
        num_workers: DataLoader workers.
        in_memory: ``auto`` reads a dataset under 512 MB into memory once; ``always`` and
            ``never`` force the choice (``never`` reads each window lazily from disk).
    """

    def __init__(
        self,
        path: str,
        variables: list[str] | None = None,
        time_dim: str = "time",
        time_column: str | None = None,
        label_column: str | None = "label",
        context: int = 8,
        horizon: int = 8,
        stride: int = 1,
        eval_stride: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        coarsen: int = 1,
        batch_size: int = 32,
        num_workers: int = 0,
        in_memory: Literal["auto", "always", "never"] = "auto",
    ):
        super().__init__()
        if context < 0 or horizon < 1:
            raise ValueError(f"context must be >= 0 and horizon >= 1, got context={context}, horizon={horizon}")
        if stride < 1 or (eval_stride is not None and eval_stride < 1):
            raise ValueError("stride and eval_stride must be positive")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(f"val_fraction + test_fraction must lie in [0, 1), got {val_fraction} + {test_fraction}")
        if coarsen < 1:
            raise ValueError(f"coarsen must be a positive integer, got {coarsen}")
        if in_memory not in ("auto", "always", "never"):
            raise ValueError(f"in_memory must be auto, always or never, got {in_memory!r}")
        self.path, self.variables, self.time_dim = str(path), variables, time_dim
        self.time_column, self.label_column = time_column, label_column
        self.context, self.horizon, self.stride = int(context), int(horizon), int(stride)
        self.eval_stride = int(eval_stride) if eval_stride is not None else int(horizon)
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.coarsen, self.batch_size, self.num_workers = int(coarsen), int(batch_size), int(num_workers)
        self.in_memory = in_memory
        self.ds = None
        self.layout: Layout | None = None
        self.scaler: Standardizer | None = None
        self.datasets: dict[str, WindowDataset] = {}

    @property
    def length(self) -> int:
        return self.context + self.horizon

    def split_bounds(self, n_frames: int) -> dict[str, tuple[int, int]]:
        """Frame ranges ``[start, stop)`` of the train, val and test splits."""
        return split_bounds(n_frames, self.val_fraction, self.test_fraction)

    def open(self) -> Any:
        """The (coarsened) source Dataset, opened lazily."""
        ds = open_source(self.path, time_dim=self.time_dim, time_column=self.time_column,
                         label_column=self.label_column)
        return coarsen_dataset(ds, self.coarsen, self.time_dim)

    def setup(self, stage: str | None = None) -> None:
        if self.ds is not None:
            return
        ds = self.open()
        layout = Layout.of(ds, self.variables, self.time_dim, self.coarsen, self.path)
        n = int(ds.sizes[self.time_dim])
        bounds = self.split_bounds(n)
        if bounds["train"][1] - bounds["train"][0] < self.length:
            raise DataError(
                f"{self.path}: the training split has {bounds['train'][1]} frames, fewer than one window of "
                f"context {self.context} + horizon {self.horizon}"
            )
        scaler = Standardizer.fit(ds, layout, bounds["train"][1])
        nbytes = n * layout.n_nodes * 4
        frames: Any = ds
        if self.in_memory == "always" or (self.in_memory == "auto" and nbytes <= _MEMORY_LIMIT):
            frames = layout.read(ds)
        labels = ds["label"].values.astype(np.int8) if "label" in ds.coords else None
        self.ds, self.layout, self.scaler, self.labels = ds, layout, scaler, labels
        for split, (start, stop) in bounds.items():
            stride = self.stride if split == "train" else self.eval_stride
            self.datasets[split] = WindowDataset(frames, layout, scaler, length=self.length, horizon=self.horizon,
                                                 start=start, stop=stop, stride=stride, labels=labels)

    def info(self) -> dict[str, Any]:
        """Plain data a model keeps in its checkpoint to read and write data like this module."""
        self.setup()
        times = self.ds[self.time_dim].values if self.time_dim in self.ds.coords else None
        return {
            "layout": self.layout.as_dict(),
            "scaler": self.scaler.as_dict(),
            "context": self.context,
            "horizon": self.horizon,
            "time_dim": self.time_dim,
            "time_column": self.time_column,
            "label_column": self.label_column,
            "time_step": None if times is None or len(times) < 2 else str(time_step(times)),
            "source": Path(self.path).name,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
        }

    def split_series(self, split: Split) -> tuple[np.ndarray, np.ndarray | None]:
        """A whole split as one standardised (T, N) float32 array (NaN where missing) and its
        labels (T,) (``None`` when the source has none), for scoring series end to end."""
        self.setup()
        start, stop = self.split_bounds(int(self.ds.sizes[self.time_dim]))[split]
        frames = self.datasets[split].frames
        raw = frames[start:stop] if isinstance(frames, np.ndarray) else self.layout.read(self.ds, start, stop)
        values = self.scaler.forward(raw).astype(np.float32)
        labels = None if self.labels is None else self.labels[start:stop]
        return values, labels

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        dataset = self.datasets[split]
        if len(dataset) == 0:
            raise DataError(f"{self.path}: the {split} split holds no complete window of {self.length} frames")
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          drop_last=shuffle and len(dataset) > self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
