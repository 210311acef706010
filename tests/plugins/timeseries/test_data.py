"""Opening files, the time-axis checks, layouts, standardisation, windows and the DataModule.

Expected values are computed by hand (or with plain numpy on the same arrays) on a 3×4 grid
plus one scalar series, and on a two-column labelled table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

xr = pytest.importorskip("xarray")
pd = pytest.importorskip("pandas")
pytest.importorskip("h5netcdf")
torch = pytest.importorskip("torch")

from polydiff_timeseries.data import (  # noqa: E402
    DataError,
    Layout,
    Standardizer,
    WindowDataModule,
    WindowDataset,
    check_time,
    coarsen_dataset,
    future_times,
    open_source,
    time_step,
)


# --- opening --------------------------------------------------------------------------------------
def test_netcdf_round_trip_keeps_values_coordinates_and_attributes(tmp_path, make_fields):
    ds = make_fields(50)
    path = tmp_path / "f.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    lazy = open_source(path)
    assert lazy["u"].chunks is not None  # opened lazily with dask by default
    eager = open_source(path, chunks=None)
    assert eager["u"].chunks is None
    for opened in (lazy, eager):
        assert set(opened.data_vars) == {"u", "s"}
        np.testing.assert_array_equal(opened["u"].values, ds["u"].values)
        np.testing.assert_array_equal(opened["s"].values, ds["s"].values)
        for c in ("time", "y", "x"):
            np.testing.assert_array_equal(opened[c].values, ds[c].values)
        assert opened["u"].attrs["units"] == "m/s"


def test_netcdf3_file_is_read_too(tmp_path, make_fields):
    pytest.importorskip("scipy")
    path = tmp_path / "f3.nc"
    make_fields(20).to_netcdf(path, engine="scipy")
    assert path.read_bytes()[:3] == b"CDF"
    np.testing.assert_allclose(open_source(path)["u"].values, make_fields(20)["u"].values)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_table_round_trip_detects_time_column_and_keeps_labels_apart(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    frame = pd.DataFrame({
        "a": [1.0, 2.0, np.nan, 4.0, 5.0],
        "Timestamp": pd.date_range("2024-03-01", periods=5, freq="h"),  # not first, not lower-case
        "b": [10, 20, 30, 40, 50],
        "label": [0, 0, 1, 1, 0],
    })
    path = tmp_path / f"t{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    ds = open_source(path)
    assert set(ds.data_vars) == {"a", "b"}  # neither time nor label is a variable
    assert list(ds.dims) == ["time"]
    np.testing.assert_array_equal(ds["time"].values.astype("datetime64[s]"),
                                  frame["Timestamp"].to_numpy().astype("datetime64[s]"))
    np.testing.assert_array_equal(ds["a"].values, [1.0, 2.0, np.nan, 4.0, 5.0])
    np.testing.assert_array_equal(ds["b"].values, [10.0, 20.0, 30.0, 40.0, 50.0])
    assert ds["b"].dtype == np.float64
    np.testing.assert_array_equal(ds["label"].values, [0, 0, 1, 1, 0])
    assert "label" in ds.coords


def test_table_time_column_options(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"step": [5, 7, 9], "label": [0, 1, 0], "v": [1.0, 2.0, 3.0]}).to_csv(path, index=False)
    by_row = open_source(path)  # no time-like name: the row number is the time, "step" a variable
    np.testing.assert_array_equal(by_row["time"].values, [0, 1, 2])
    assert set(by_row.data_vars) == {"step", "v"}
    named = open_source(path, time_column="step")
    np.testing.assert_array_equal(named["time"].values, [5, 7, 9])
    assert set(named.data_vars) == {"v"}
    as_variable = open_source(path, label_column=None)
    assert set(as_variable.data_vars) == {"step", "label", "v"} and "label" not in as_variable.coords
    with pytest.raises(DataError, match="no time column 'when'"):
        open_source(path, time_column="when")


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("label", [0, 2, 0], "only 0 and 1"),
        ("v", ["1.0", "oops", "3"], r"column 'v' is not numeric \(row 3 holds 'oops'\)"),
    ],
)
def test_table_bad_columns_are_named(tmp_path, column, values, message):
    frame = pd.DataFrame({"time": [0, 1, 2], "v": [1.0, 2.0, 3.0], "label": [0, 0, 0]})
    frame[column] = values
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=message) as info:
        open_source(path)
    assert "bad.csv" in str(info.value)


def test_table_datetime_extra_column_is_a_data_error(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "extra.parquet"
    pd.DataFrame({"time": np.arange(4), "v": np.arange(4.0),
                  "recorded": pd.date_range("2024-01-01", periods=4, freq="D")}).to_parquet(path)
    with pytest.raises(DataError, match="recorded"):
        open_source(path)


def _table(tmp_path: Path, times) -> Path:
    path = tmp_path / "times.csv"
    pd.DataFrame({"time": times, "v": np.arange(len(times), dtype=float)}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("times", "message"),
    [
        ([0, 1, 1, 2], r"duplicated time stamp 1 \(positions 1 and 2\)"),
        ([0, 1, 3, 2], "not increasing"),
        ([0, 1, 2, 4], "irregular time steps"),
        (["2024-01-01", "2024-01-02", "2024-01-02", "2024-01-03"], "duplicated time stamp"),
        (["2024-01-01", "2024-01-03", "2024-01-02"], "not increasing"),
        (["2024-01-01", "2024-01-02", "2024-01-04"], "irregular time steps"),
    ],
)
def test_bad_time_axes_in_tables_are_data_errors_naming_the_file(tmp_path, times, message):
    with pytest.raises(DataError, match=message) as info:
        open_source(_table(tmp_path, times))
    assert "times.csv" in str(info.value)


@pytest.mark.parametrize(
    ("times", "message"), [([0.0, 6.0, 6.0, 12.0], "duplicated"), ([0.0, 12.0, 6.0, 18.0], "not increasing"),
                           ([0.0, 6.0, 12.0, 24.0], "irregular")],
)
def test_bad_time_axes_in_netcdf_are_data_errors_naming_the_file(tmp_path, times, message):
    path = tmp_path / "bad_times.nc"
    xr.Dataset({"v": (("time",), np.arange(4.0))}, coords={"time": times}).to_netcdf(path, engine="h5netcdf")
    with pytest.raises(DataError, match=message) as info:
        open_source(path)
    assert "bad_times.nc" in str(info.value)


def test_time_axis_without_coordinate_or_single_frame_passes():
    check_time(xr.Dataset({"v": (("time",), np.arange(3.0))}), "time")
    check_time(xr.Dataset({"v": (("time",), [1.0])}, coords={"time": [5.0]}), "time")


def test_regular_float_time_step_is_accepted_despite_rounding(tmp_path):
    times = np.arange(200) / 24.0  # hourly, in days: the differences differ in their last bits
    assert len(set(np.diff(times).tolist())) > 1
    path = tmp_path / "hours.nc"
    xr.Dataset({"v": (("time",), np.zeros(200))}, coords={"time": times}).to_netcdf(path, engine="h5netcdf")
    assert open_source(path).sizes["time"] == 200
    irregular = times.copy()
    irregular[100:] += 0.01  # a real gap is still found
    with pytest.raises(DataError, match="irregular"):
        check_time(xr.Dataset({"v": (("time",), np.zeros(200))}, coords={"time": irregular}), "time")


def test_not_netcdf_unknown_suffix_and_missing_file(tmp_path):
    fake = tmp_path / "fake.nc"
    fake.write_text("time,v\n0,1\n")
    with pytest.raises(DataError, match="fake.nc is not a NetCDF file"):
        open_source(fake)
    odd = tmp_path / "data.xyz"
    odd.write_text("1,2,3\n")
    with pytest.raises(DataError, match=r"data.xyz: unknown kind of file '\.xyz'"):
        open_source(odd)
    with pytest.raises(DataError, match="no such file"):
        open_source(tmp_path / "absent.nc")
    empty = tmp_path / "empty.csv"
    empty.write_text("time,v\n")
    with pytest.raises(DataError, match="no rows"):
        open_source(empty)


def test_missing_time_dimension_is_named(tmp_path):
    path = tmp_path / "notime.nc"
    xr.Dataset({"v": (("t",), np.arange(3.0))}).to_netcdf(path, engine="h5netcdf")
    with pytest.raises(DataError, match="no time dimension 'time'"):
        open_source(path)
    assert "v" in open_source(path, time_dim="t").data_vars


# --- time stamps ----------------------------------------------------------------------------------
def test_future_times_continue_the_step():
    np.testing.assert_array_equal(future_times(np.array([0.0, 6.0, 12.0]), 3), [18.0, 24.0, 30.0])
    np.testing.assert_array_equal(future_times(np.array([3, 5]), 2), [7, 9])
    dates = pd.date_range("2024-01-01", periods=3, freq="6h").to_numpy()
    got = future_times(dates, 2)
    assert got.dtype == dates.dtype
    np.testing.assert_array_equal(got, np.array(["2024-01-01T18:00", "2024-01-02T00:00"], dtype="datetime64[ns]"))
    assert time_step(dates) == np.timedelta64(6, "h")


# --- layout ---------------------------------------------------------------------------------------
def test_layout_of_two_variables_with_different_spatial_dims(make_fields):
    ds = make_fields(30)
    layout = Layout.of(ds, ["u", "s"], "time")
    assert layout.dims == (("y", "x"), ()) and layout.shapes == ((3, 4), ())
    assert layout.n_nodes == 13
    assert layout.slices == [slice(0, 12), slice(12, 13)]
    assert Layout.from_dict(layout.as_dict()) == layout
    frames = layout.read(ds)
    assert frames.shape == (30, 13) and frames.dtype == np.float32
    np.testing.assert_allclose(frames[:, :12], ds["u"].values.reshape(30, 12), rtol=1e-6)  # C order over (y, x)
    np.testing.assert_allclose(frames[:, 12], ds["s"].values, rtol=1e-6)
    np.testing.assert_array_equal(layout.read(ds, 5, 9), frames[5:9])
    assert set(Layout.of(ds, None, "time").variables) == {"u", "s"}  # default: every numeric variable


def test_layout_reads_variables_whatever_their_dimension_order(make_fields):
    ds = make_fields(10)
    flipped = ds.assign(u=ds["u"].transpose("y", "time", "x"))
    layout = Layout.of(ds, ["u"], "time")
    np.testing.assert_array_equal(layout.read(flipped), layout.read(ds))


def test_layout_to_dataset_round_trip(make_fields):
    ds = make_fields(12)
    layout = Layout.of(ds, ["u", "s"], "time")
    frames = layout.read(ds)
    back = layout.to_dataset(frames, ds, ds["time"].values)
    for v in ("u", "s"):
        assert back[v].dims == ds[v].dims
        np.testing.assert_allclose(back[v].values, ds[v].values, rtol=1e-6)
        assert back[v].attrs == ds[v].attrs
    for c in ("time", "y", "x"):
        np.testing.assert_array_equal(back[c].values, ds[c].values)
    # With a leading sample dimension.
    stacked = np.stack([frames, 2 * frames])
    out = layout.to_dataset(stacked, ds, ds["time"].values, lead_dims=("sample",), lead_coords={"sample": [0, 1]})
    assert out["u"].dims == ("sample", "time", "y", "x") and out["s"].dims == ("sample", "time")
    np.testing.assert_allclose(out["u"].sel(sample=1).values, 2 * ds["u"].values, rtol=1e-6)


def test_missing_variable_is_named(make_fields, tmp_path):
    ds = make_fields(10)
    with pytest.raises(DataError, match=r"missing variable 'nope'"):
        Layout.of(ds, ["u", "nope"], "time")
    layout = Layout.of(ds, ["u", "s"], "time")
    with pytest.raises(DataError, match=r"missing variable 's', which the model was trained on"):
        layout.check(ds.drop_vars("s"))
    with pytest.raises(DataError, match=r"variable 'u' has shape \(2, 4\), the model expects \(3, 4\)"):
        layout.check(ds.isel(y=slice(0, 2)))
    with pytest.raises(DataError, match="not numeric"):
        Layout.of(ds.assign(w=("time", np.array(["a"] * 10))), ["w"], "time")
    path = tmp_path / "f.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    with pytest.raises(DataError, match="nope"):
        WindowDataModule(str(path), variables=["nope"], context=2, horizon=2).setup()


def test_coarsen_averages_blocks_by_hand():
    u = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    ds = xr.Dataset({"u": (("time", "y", "x"), u), "s": (("time",), [1.0, 2.0])},
                    coords={"time": [0, 1], "y": [0.0, 1.0, 2.0], "x": [0.0, 1.0, 2.0, 3.0]})
    out = coarsen_dataset(ds, 2, "time")
    assert out["u"].shape == (2, 1, 2)  # the trailing partial row of y is dropped
    # frame 0: rows 0-1, columns 0-1 hold 0, 1, 4, 5; columns 2-3 hold 2, 3, 6, 7
    np.testing.assert_array_equal(out["u"].values[0], [[2.5, 4.5]])
    np.testing.assert_array_equal(out["u"].values[1], [[14.5, 16.5]])
    np.testing.assert_array_equal(out["s"].values, [1.0, 2.0])  # a series has nothing to coarsen
    np.testing.assert_array_equal(out["x"].values, [0.5, 2.5])
    assert coarsen_dataset(ds, 1, "time") is ds


# --- standardisation ------------------------------------------------------------------------------
def test_standardizer_fit_ignores_nan_and_round_trips():
    u = np.arange(4 * 2 * 1, dtype=float).reshape(4, 2, 1)  # frames 0..3 of 2 nodes
    u[1, 0, 0] = np.nan
    s = np.array([1.0, 3.0, np.nan, 100.0])
    ds = xr.Dataset({"u": (("time", "y", "x"), u), "s": (("time",), s)})
    layout = Layout.of(ds, ["u", "s"], "time")
    scaler = Standardizer.fit(ds, layout, stop=3)  # frames 0..2 only
    train_u = np.array([0.0, 1.0, 3.0, 4.0, 5.0])  # 2.0 is NaN
    assert scaler.mean == pytest.approx([train_u.mean(), 2.0])
    assert scaler.std == pytest.approx([train_u.std(), 1.0])  # population std; s: |1 - 2| = 1
    assert scaler.sizes == [2, 1]
    mean, std = scaler.node_arrays()
    np.testing.assert_allclose(mean, [train_u.mean(), train_u.mean(), 2.0])
    values = np.array([[1.0, 2.0, 3.0], [np.nan, -1.0, 0.5]], dtype=np.float32)
    z = scaler.forward(values)
    np.testing.assert_allclose(z[0], (values[0] - mean) / std, rtol=1e-6)
    assert np.isnan(z[1, 0])
    np.testing.assert_allclose(scaler.inverse(z), values, rtol=1e-6)
    assert Standardizer.from_dict(scaler.as_dict()) == scaler


def test_standardizer_constant_variable_gets_unit_std_and_all_nan_is_an_error():
    ds = xr.Dataset({"c": (("time",), [2.0, 2.0, 2.0]), "n": (("time",), [np.nan, np.nan, 1.0])})
    scaler = Standardizer.fit(ds, Layout.of(ds, ["c"], "time"), 3)
    assert scaler.mean == [2.0] and scaler.std == [1.0]
    with pytest.raises(DataError, match="'n' has no finite value"):
        Standardizer.fit(ds, Layout.of(ds, ["n"], "time"), 2)


# --- windows --------------------------------------------------------------------------------------
def _tiny_dataset(frames: np.ndarray, horizon: int, length: int, **kw) -> WindowDataset:
    n = frames.shape[1]
    layout = Layout("time", tuple(f"v{i}" for i in range(n)), ((),) * n, ((),) * n)
    scaler = Standardizer([1.0] * n, [2.0] * n, [1] * n)
    return WindowDataset(frames, layout, scaler, length=length, horizon=horizon, **kw)


def test_window_nan_entries_are_unobserved_and_zero():
    frames = np.arange(20, dtype=np.float32).reshape(10, 2)
    frames[3, 1] = np.nan
    ds = _tiny_dataset(frames, horizon=2, length=4, start=0, stop=10, stride=1)
    item = ds[2]  # frames 2..5
    assert item["index"] == 2
    assert item["x0"].dtype == torch.float32 and item["observed"].dtype == torch.bool
    expected = (frames[2:6] - 1.0) / 2.0
    assert not item["observed"][1, 1] and item["x0"][1, 1] == 0.0
    assert int(item["observed"].sum()) == 7
    ok = np.isfinite(expected)
    np.testing.assert_allclose(item["x0"].numpy()[ok], expected[ok])
    assert "label" not in item


def test_windows_whose_target_is_all_missing_are_skipped():
    frames = np.ones((10, 2), dtype=np.float32)
    frames[6:8] = np.nan  # frames 6 and 7 entirely missing
    ds = _tiny_dataset(frames, horizon=2, length=4, start=0, stop=10, stride=1)
    # window s has target frames s+2, s+3: s = 4 (6, 7) is skipped, s = 3 (5, 6) and 5 (7, 8) are kept
    assert ds.starts == [0, 1, 2, 3, 5, 6]


def test_window_starts_with_stride_reach_the_end():
    frames = np.zeros((30, 1), dtype=np.float32)
    ds = _tiny_dataset(frames, horizon=3, length=5, start=10, stop=21, stride=3)
    assert ds.starts == [10, 13, 16]  # 16 + 5 = 21 reaches the stop exactly
    ds = _tiny_dataset(frames, horizon=3, length=5, start=10, stop=23, stride=3)
    assert ds.starts == [10, 13, 16, 18]  # the last window is moved back to end at the stop
    assert _tiny_dataset(frames, horizon=3, length=5, start=10, stop=14, stride=1).starts == []


def _module(path: Path, **kw) -> WindowDataModule:
    args = dict(context=4, horizon=3, batch_size=4)
    args.update(kw)
    dm = WindowDataModule(str(path), **args)
    dm.setup()
    return dm


def test_windows_never_cross_split_boundaries(fields_nc):
    dm = _module(fields_nc, stride=2)
    bounds = dm.split_bounds(200)
    assert bounds == {"train": (0, 140), "val": (140, 160), "test": (160, 200)}
    for split, (start, stop) in bounds.items():
        starts = dm.datasets[split].starts
        assert starts, split
        assert all(start <= s and s + dm.length <= stop for s in starts), split
    assert dm.datasets["train"].starts[:3] == [0, 2, 4]
    assert dm.datasets["train"].starts[-1] == 140 - dm.length


def test_eval_windows_tile_the_split(fields_nc):
    dm = _module(fields_nc, context=4, horizon=4)  # eval stride = horizon
    for split in ("val", "test"):
        start, stop = dm.split_bounds(200)[split]
        starts = dm.datasets[split].starts
        assert np.all(np.diff(starts) == 4)
        covered = sorted({f for s in starts for f in range(s + 4, s + 8)})
        assert covered == list(range(start + 4, stop)), split  # every target frame once, none outside


def test_datamodule_items_batches_and_info(fields_nc):
    dm = _module(fields_nc)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x0"].shape == (4, 7, 13) and batch["observed"].shape == (4, 7, 13)
    info = dm.info()
    assert info["layout"] == dm.layout.as_dict() and info["scaler"] == dm.scaler.as_dict()
    assert (info["context"], info["horizon"], info["time_step"], info["source"]) == (4, 3, "6.0", "fields.nc")
    raw = dm.layout.read(dm.ds)
    np.testing.assert_allclose(dm.scaler.mean, [np.mean(raw[:140, :12]), np.mean(raw[:140, 12])], rtol=1e-4)
    item = dm.datasets["val"][0]
    np.testing.assert_allclose(item["x0"].numpy(), dm.scaler.forward(raw[140:147]), rtol=1e-5, atol=1e-6)


def test_lazy_windows_equal_in_memory_windows(fields_nc):
    eager = _module(fields_nc, in_memory="always")
    lazy = _module(fields_nc, in_memory="never")
    assert isinstance(eager.datasets["train"].frames, np.ndarray)
    assert not isinstance(lazy.datasets["train"].frames, np.ndarray)
    for split in ("train", "val", "test"):
        assert lazy.datasets[split].starts == eager.datasets[split].starts
        for i in (0, len(eager.datasets[split]) - 1):
            a, b = eager.datasets[split][i], lazy.datasets[split][i]
            assert a["index"] == b["index"]
            torch.testing.assert_close(a["x0"], b["x0"])
            assert torch.equal(a["observed"], b["observed"])
    np.testing.assert_array_equal(lazy.split_series("test")[0], eager.split_series("test")[0])


def test_split_series_is_standardised_with_labels(table_csv, make_table):
    dm = _module(table_csv, context=0, horizon=8, val_fraction=0.2, test_fraction=0.3)
    values, labels = dm.split_series("test")
    start, stop = dm.split_bounds(160)["test"]
    assert (start, stop) == (112, 160)
    table = make_table()
    raw = table[["a", "b"]].to_numpy()
    expected = (raw[start:stop] - np.array(dm.scaler.mean)) / np.array(dm.scaler.std)
    assert values.dtype == np.float32 and values.shape == (48, 2)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels, table["label"].to_numpy()[start:stop])
    assert dm.layout.variables == ("a", "b")  # the label column is no variable
    item = dm.datasets["test"][0]
    assert item["label"].dtype == torch.int64
    np.testing.assert_array_equal(item["label"].numpy(), table["label"].to_numpy()[item["index"]:item["index"] + 8])
    assert dm.info()["time_step"] is not None


def test_coarsened_datamodule_reads_block_means(fields_nc, make_fields):
    dm = _module(fields_nc, coarsen=2)
    assert dm.layout.shapes == ((1, 2), ()) and dm.layout.n_nodes == 3 and dm.layout.coarsen == 2
    u = make_fields(200)["u"].values
    raw = dm.layout.read(dm.ds)
    np.testing.assert_allclose(raw[:, 0], u[:, 0:2, 0:2].mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(raw[:, 1], u[:, 0:2, 2:4].mean(axis=(1, 2)), rtol=1e-5)


def test_datamodule_argument_and_size_errors(fields_nc, tmp_path, make_fields):
    with pytest.raises(ValueError, match="horizon"):
        WindowDataModule(str(fields_nc), horizon=0)
    with pytest.raises(ValueError, match="val_fraction"):
        WindowDataModule(str(fields_nc), val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="in_memory"):
        WindowDataModule(str(fields_nc), in_memory="sometimes")
    short = tmp_path / "short.nc"
    make_fields(10).to_netcdf(short, engine="h5netcdf")
    with pytest.raises(DataError, match="fewer than one window"):
        WindowDataModule(str(short), context=4, horizon=4).setup()
    dm = WindowDataModule(str(fields_nc), context=4, horizon=4, val_fraction=0.01)
    with pytest.raises(DataError, match="val split holds no complete window"):
        dm.val_dataloader()
