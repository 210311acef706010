"""The timeseries plugin as a user drives it: fit through the CLI, then forecast, detect, evaluate.

Two tiny models are trained through ``polydiff timeseries fit`` with the bundled configs (four
steps, an 8-channel one-layer network): a forecaster on a 3×4 grid plus a series (NetCDF), and an
ImDiffusion detector on a labelled table (CSV). The command tests check the files written
(dimensions, coordinates, future time stamps, summary variables, columns), the refusals and
their exit statuses, and that inputs are never written.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

xr = pytest.importorskip("xarray")
pd = pytest.importorskip("pandas")
pytest.importorskip("h5netcdf")
torch = pytest.importorskip("torch")

from polydiff.cli import main  # noqa: E402
from polydiff.registry import Registry  # noqa: E402

QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
         "false", "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_steps", "4",
         "--trainer.val_check_interval", "4", "--trainer.limit_val_batches", "1"]
TINY_NET = ["--model.denoiser.init_args.channels", "8", "--model.denoiser.init_args.layers", "1",
            "--model.denoiser.init_args.heads", "2", "--model.denoiser.init_args.max_nodes", "64",
            "--model.sample_steps", "3"]
STEP = 6.0


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_checkpoint(root: Path) -> Path:
    found = sorted(root.rglob("*.ckpt"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def forecaster(tmp_path_factory, make_fields) -> tuple[Path, Path]:
    """(checkpoint, data) of the ``forecast`` config trained 4 steps on 200 frames (context 4, horizon 4)."""
    root = tmp_path_factory.mktemp("ts-forecast")
    data = root / "fields.nc"
    make_fields(200).to_netcdf(data, engine="h5netcdf")
    status = main(["timeseries", "fit", "-c", "forecast", "--data.path", str(data), "--data.context", "4",
                   "--data.horizon", "4", "--data.coarsen", "1", "--data.batch_size", "8", *TINY_NET,
                   "--model.val_samples", "2", *QUIET, "--trainer.default_root_dir", str(root / "run")])
    assert status == 0
    return _one_checkpoint(root / "run"), data


@pytest.fixture(scope="module")
def detector(tmp_path_factory, make_table) -> tuple[Path, Path]:
    """(checkpoint, table) of the ``anomaly`` config trained 4 steps on a labelled table (windows of 8)."""
    root = tmp_path_factory.mktemp("ts-anomaly")
    table = root / "machine.csv"
    make_table(spikes=(90, 130, 145)).to_csv(table, index=False)  # one labelled spike in validation
    status = main(["timeseries", "fit", "-c", "anomaly", "--data.path", str(table), "--data.horizon", "8",
                   "--data.batch_size", "8", "--model.grating_width", "2", *TINY_NET, *QUIET,
                   "--trainer.default_root_dir", str(root / "run")])
    assert status == 0
    return _one_checkpoint(root / "run"), table


@pytest.fixture
def history(tmp_path, make_fields) -> Path:
    """The last 10 frames of the training fields (times 1140, ..., 1194)."""
    path = tmp_path / "history.nc"
    make_fields(200).isel(time=slice(-10, None)).to_netcdf(path, engine="h5netcdf")
    return path


def _forecast(ckpt: Path, inp: Path, out: Path, *extra: str) -> int:
    return main(["timeseries", "forecast", "--ckpt", str(ckpt), "--input", str(inp), "-o", str(out),
                 "--samples", "3", *extra])


# --- registration -------------------------------------------------------------------------------
def test_plugin_is_registered_with_its_commands_and_configs(capsys):
    import importlib

    import yaml

    plugin = Registry().get("timeseries")
    assert set(plugin.commands) == {"make-demo-data", "forecast", "detect", "evaluate"}
    assert {"forecast", "dyffusion", "deterministic", "anomaly", "anomaly-residual"} <= set(plugin.config_names())
    for command in plugin.commands:
        assert callable(plugin.load_command(command))
    for name in plugin.config_names():
        config = yaml.safe_load(plugin.config_resource(name).read_text())
        module, _, cls = config["model"]["class_path"].rpartition(".")
        assert hasattr(importlib.import_module(module), cls), name
        assert config["data"]["class_path"] == "polydiff_timeseries.data.WindowDataModule", name
    assert main(["timeseries", "--help"]) == 0
    assert "forecast" in capsys.readouterr().out


# --- forecast -----------------------------------------------------------------------------------
def test_fit_checkpoint_loads_with_its_data_description(forecaster, detector):
    from polydiff_timeseries.commands import load_model
    from polydiff_timeseries.module import ConditionalDiffusion, ImDiffusionDetector

    model = load_model(forecaster[0])
    assert isinstance(model, ConditionalDiffusion)
    info = model.data_info
    assert info["layout"]["variables"] == ["u", "s"] and info["layout"]["shapes"] == [[3, 4], []]
    assert (info["context"], info["horizon"], info["source"], info["time_step"]) == (4, 4, "fields.nc", "6.0")
    assert model.denoiser.net.channels == 8  # the CLI overrides reached the network
    anomaly = load_model(detector[0])
    assert isinstance(anomaly, ImDiffusionDetector)
    threshold = anomaly.data_info["threshold"]  # chosen on the labelled validation split
    assert np.isfinite(threshold["value"]) and "best F1" in threshold["rule"]


def test_forecast_writes_samples_summaries_and_future_times(forecaster, history, tmp_path, make_fields):
    ckpt, _ = forecaster
    out = tmp_path / "fc.nc"
    before = _digest(history)
    assert _forecast(ckpt, history, out, "--seed", "1") == 0
    assert _digest(history) == before  # the input is only read
    with xr.open_dataset(out, engine="h5netcdf") as fc:
        fc = fc.load()
    assert fc["u"].dims == ("sample", "time", "y", "x") and fc["s"].dims == ("sample", "time")
    assert fc.sizes["sample"] == 3 and fc.sizes["time"] == 4
    np.testing.assert_array_equal(fc["time"].values, 1194.0 + STEP * np.arange(1, 5))
    ds = make_fields(10)
    np.testing.assert_array_equal(fc["y"].values, ds["y"].values)
    np.testing.assert_array_equal(fc["x"].values, ds["x"].values)
    for v in ("u", "s"):
        assert np.isfinite(fc[v].values).all()
        np.testing.assert_allclose(fc[f"{v}_mean"].values, fc[v].mean("sample").values, rtol=1e-6)
        q = fc[f"{v}_quantiles"]
        np.testing.assert_allclose(q["quantile"].values, [0.05, 0.25, 0.5, 0.75, 0.95])
        np.testing.assert_allclose(q.sel(quantile=0.5).values, fc[v].median("sample").values, rtol=1e-6)
    assert fc["u"].attrs["units"] == "m/s"
    assert fc.attrs["model"] == "ConditionalDiffusion" and int(fc.attrs["samples"]) == 3
    assert int(fc.attrs["network_evaluations_per_sample"]) == 3
    # the file holds the model's standardised forecast from the history, in data units, node by node
    from polydiff_timeseries.commands import load_model
    from polydiff_timeseries.data import Layout, Standardizer, open_source

    model = load_model(ckpt)
    scaler = Standardizer.from_dict(model.data_info["scaler"])
    values = scaler.forward(Layout.from_dict(model.data_info["layout"]).read(open_source(history)))
    expected = model.forecast(torch.from_numpy(values[None]), samples=3, generator=torch.Generator().manual_seed(1))
    expected = scaler.inverse(expected[0].numpy())  # (S, H, 13)
    np.testing.assert_allclose(fc["u"].values, expected[..., :12].reshape(3, 4, 3, 4), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fc["s"].values, expected[..., 12], rtol=1e-5, atol=1e-5)
    # the same seed gives the same file contents
    again = tmp_path / "again.nc"
    assert _forecast(ckpt, history, again, "--seed", "1") == 0
    with xr.open_dataset(again, engine="h5netcdf") as fc2:
        np.testing.assert_array_equal(fc2["u"].values, fc["u"].values)


def test_forecast_continues_datetime_steps_and_a_shorter_horizon(forecaster, tmp_path, make_fields):
    ckpt, _ = forecaster
    hist = tmp_path / "dated.nc"
    dated = make_fields(12, times="datetime")
    dated.to_netcdf(hist, engine="h5netcdf")
    out = tmp_path / "fc.nc"
    assert _forecast(ckpt, hist, out, "--horizon", "2", "--quantiles", "0.1,0.9") == 0
    with xr.open_dataset(out, engine="h5netcdf") as fc:
        last = dated["time"].values[-1]
        np.testing.assert_array_equal(fc["time"].values, [last + np.timedelta64(6, "h"), last + np.timedelta64(12, "h")])
        assert fc.sizes["time"] == 2
        np.testing.assert_allclose(fc["quantile"].values, [0.1, 0.9])


def test_forecast_refuses_to_overwrite_and_to_write_its_input(forecaster, history, tmp_path, capsys):
    ckpt, _ = forecaster
    out = tmp_path / "fc.nc"
    out.write_text("keep me")
    assert _forecast(ckpt, history, out) == 1
    assert out.read_text() == "keep me"
    assert "exists" in capsys.readouterr().err
    before = _digest(history)
    assert _forecast(ckpt, history, history) == 1
    assert _digest(history) == before
    assert "is an input" in capsys.readouterr().err
    assert _forecast(ckpt, history, out, "--overwrite") == 0
    with xr.open_dataset(out, engine="h5netcdf") as fc:
        assert fc.sizes["sample"] == 3


def test_forecast_reports_bad_inputs_with_exit_1(forecaster, tmp_path, make_fields, capsys):
    ckpt, _ = forecaster
    missing = tmp_path / "missing.nc"
    make_fields(10).drop_vars("s").to_netcdf(missing, engine="h5netcdf")
    assert _forecast(ckpt, missing, tmp_path / "a.nc") == 1
    err = capsys.readouterr().err
    assert "missing variable 's'" in err and "missing.nc" in err
    short = tmp_path / "short.nc"
    make_fields(3).to_netcdf(short, engine="h5netcdf")
    assert _forecast(ckpt, short, tmp_path / "b.nc") == 1
    assert "needs 4 context frames" in capsys.readouterr().err
    assert _forecast(ckpt, short.with_name("absent.nc"), tmp_path / "c.nc") == 1
    assert "no such file" in capsys.readouterr().err
    history = tmp_path / "h.nc"
    make_fields(10).to_netcdf(history, engine="h5netcdf")
    assert _forecast(ckpt, history, tmp_path / "d.nc", "--horizon", "5") == 1
    assert "longer than the 4 frames" in capsys.readouterr().err
    assert _forecast(ckpt, history, tmp_path / "e.nc", "--quantiles", "0.5,1.5") == 2
    assert not any((tmp_path / f"{n}.nc").exists() for n in "abcde")


def test_forecast_rejects_foreign_checkpoints(history, tmp_path, capsys):
    plain = tmp_path / "plain.ckpt"
    plain.write_bytes(b"just bytes")
    assert _forecast(plain, history, tmp_path / "a.nc") == 1
    assert "not a torch checkpoint" in capsys.readouterr().err
    audio = tmp_path / "audio.ckpt"
    torch.save({"polydiff": {"format": 1, "plugin": "audio"}, "state_dict": {}}, audio)
    assert _forecast(audio, history, tmp_path / "b.nc") == 1
    assert "plugin 'audio', not 'timeseries'" in capsys.readouterr().err
    assert not (tmp_path / "a.nc").exists() and not (tmp_path / "b.nc").exists()


# --- detect -------------------------------------------------------------------------------------
def test_detect_writes_scores_flags_and_labels(detector, tmp_path, make_table, capsys):
    ckpt, _ = detector
    table = make_table(spikes=(90, 130, 145))
    series = tmp_path / "series.csv"
    table.iloc[100:].to_csv(series, index=False)
    out = tmp_path / "scores.csv"
    assert main(["timeseries", "detect", "--ckpt", str(ckpt), "--input", str(series), "-o", str(out),
                 "--threshold", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "60 scores" in printed and "threshold 0.5 (given)" in printed
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["time", "score", "anomaly", "label"]
    assert len(scores) == 60
    np.testing.assert_array_equal(pd.to_datetime(scores["time"]).to_numpy(), table["timestamp"].to_numpy()[100:])
    np.testing.assert_array_equal(scores["label"], table["label"].to_numpy()[100:])
    assert np.isfinite(scores["score"]).all() and (scores["score"] >= 0).all()
    np.testing.assert_array_equal(scores["anomaly"], (scores["score"] >= 0.5).astype(int))
    # the stored threshold is used without --threshold
    stored = tmp_path / "stored.csv"
    assert main(["timeseries", "detect", "--ckpt", str(ckpt), "--input", str(series), "-o", str(stored)]) == 0
    assert "best F1" in capsys.readouterr().out
    assert "anomaly" in pd.read_csv(stored).columns
    # refusals
    assert main(["timeseries", "detect", "--ckpt", str(ckpt), "--input", str(series), "-o", str(out)]) == 1
    assert "exists" in capsys.readouterr().err


def test_detect_rejects_a_forecaster(forecaster, tmp_path, capsys):
    ckpt, data = forecaster
    out = tmp_path / "scores.csv"
    assert main(["timeseries", "detect", "--ckpt", str(ckpt), "--input", str(data), "-o", str(out)]) == 1
    assert "not an anomaly detector" in capsys.readouterr().err
    assert not out.exists()


# --- evaluate -----------------------------------------------------------------------------------
def test_evaluate_prints_the_table_and_writes_json(forecaster, tmp_path, capsys):
    ckpt, data = forecaster
    out = tmp_path / "scores.json"
    assert main(["timeseries", "evaluate", "--ckpt", str(ckpt), "--data", str(data), "--samples", "2",
                 "--max-windows", "2", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0].split() == ["method", "crps", "mse", "mae", "spread_skill", "coverage_50", "coverage_90"]
    assert [line.split()[0] for line in lines[1:4]] == ["persistence", "climatology", "ConditionalDiffusion"]
    assert "2 windows of the test split, 2 samples each (units: m/s, K)" in printed
    results = json.loads(out.read_text())
    assert set(results["methods"]) == {"persistence", "climatology", "ConditionalDiffusion"}
    assert all(np.isfinite(row["crps"]) for row in results["methods"].values())
    assert main(["timeseries", "evaluate", "--ckpt", str(ckpt), "--data", str(data), "-o", str(out)]) == 1
    assert "exists" in capsys.readouterr().err


# --- make-demo-data -----------------------------------------------------------------------------
def test_make_demo_data_refuses_to_overwrite_without_running_the_solver(tmp_path, monkeypatch, capsys):
    import polydiff_timeseries.navier_stokes as navier_stokes
    import polydiff_timeseries.sample_data as sample_data

    def never(*args, **kwargs):
        raise AssertionError("the demo data must not be built")

    monkeypatch.setattr(navier_stokes, "navier_stokes_dataset", never)
    for name in ("air_temperature", "co2_series", "probe_series", "anomaly_table"):
        monkeypatch.setattr(sample_data, name, never)
    out = tmp_path / "demo"
    out.mkdir()
    (out / "fields.nc").write_text("mine")
    assert main(["timeseries", "make-demo-data", str(out)]) == 1
    err = capsys.readouterr().err
    assert "fields.nc" in err and "--overwrite" in err
    assert (out / "fields.nc").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["fields.nc"]


def test_lightning_test_command_scores_the_test_split(forecaster, tmp_path, capsys):
    """``polydiff timeseries test`` runs the test split through the same loss and forecast scores."""
    ckpt, data = forecaster
    status = main(["timeseries", "test", "-c", "forecast", "--data.path", str(data), "--data.context", "4",
                   "--data.horizon", "4", "--data.coarsen", "1", "--data.batch_size", "8", *TINY_NET,
                   "--model.val_samples", "2", "--trainer.limit_test_batches", "1", "--trainer.logger", "false",
                   "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
                   "--ckpt_path", str(ckpt)])
    assert status == 0
    out = capsys.readouterr().out
    assert "test/crps" in out and "test/loss" in out and "test/mse" in out
