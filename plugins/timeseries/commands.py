"""The timeseries plugin's own commands: ``make-demo-data``, ``forecast``, ``detect``, ``evaluate``.

Each is ``fn(argv) -> exit status``, run as ``polydiff timeseries <command> ...``:

* ``make-demo-data OUT`` writes the offline demo data (see :func:`build_demo_data`).
* ``forecast --ckpt M.ckpt --input HISTORY -o FC.nc`` forecasts from the end of a history file
  (NetCDF, zarr or table with the training data's variables) and writes the samples as a
  Dataset with a ``sample`` dimension, the input's spatial coordinates and the future time
  stamps, plus ``<var>_mean`` and ``<var>_quantiles`` (dimension ``quantile``).
* ``detect --ckpt A.ckpt --input SERIES.csv -o SCORES.csv`` scores every time step of a series
  with an anomaly detector (ImDiffusion or the forecast-residual baseline), flags those above
  the threshold, and with a label column prints precision/recall/F1 (with and without point
  adjustment), AUROC, AUPRC and detection delay.
* ``evaluate --ckpt M.ckpt --data FILE`` scores a forecaster on the test split of a file (CRPS,
  MSE/MAE of the ensemble mean, spread–skill, 50/90% coverage) beside persistence and
  climatology.

Input files are only read; an output that exists is refused unless ``--overwrite`` is given,
and an output can never be one of the inputs. Exit status: 0 success, 1 a file could not be
used (named with the reason), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["make_demo_data", "forecast", "detect", "evaluate", "load_model", "build_demo_data"]

DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _fail(message: str) -> None:
    print(f"polydiff timeseries: error: {message}", file=sys.stderr)


class _Refused(Exception):
    """An output that would overwrite something."""


def _check_output(out: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    for path in inputs:
        if out.resolve() == Path(path).resolve():
            raise _Refused(f"{out} is an input; choose another output")
    if out.exists() and not overwrite:
        raise _Refused(f"{out} exists; pass --overwrite to replace it")


# --- make-demo-data ------------------------------------------------------------------------------
def build_demo_data(out: Path, *, frames: int = 1500, probe_frames: int = 4000, seed: int = 0,
                    overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Write the offline demo data into ``out`` and return a summary.

    Files:
        fields.nc: 2D Navier–Stokes vorticity (Kolmogorov flow) from the plugin's spectral
            solver, ``frames`` steps on a 32×32 grid.
        air_temperature.nc: real climate-model air temperature (iris-sample-data's E1
            scenario: 240 annual steps on a 37×49 North-America grid).
        history.nc: the 20 frames of fields.nc before its last 12, to try ``forecast`` on.
        machine.csv: 8 sensor-style probes of a second, independent flow run (``probe_frames``
            steps) with one anomaly per 250 steps injected after the first half (spikes, level
            shifts, variance changes, correlation breaks; 1–24 steps long) and a ``label``
            column.
        co2.csv: real weekly Mauna Loa CO2 (statsmodels; its own missing weeks kept empty) with
            anomalies injected the same way (no correlation breaks: one series).
        series.csv: the last 30% of machine.csv, to try ``detect`` on.
    """
    names = ["fields.nc", "air_temperature.nc", "history.nc", "machine.csv", "co2.csv", "series.csv"]
    existing = [n for n in names if (out / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {', '.join(existing)}; pass --overwrite to replace them")
    from polydiff_timeseries.navier_stokes import navier_stokes_dataset, write_netcdf
    from polydiff_timeseries.sample_data import air_temperature, anomaly_table, co2_series, probe_series

    out.mkdir(parents=True, exist_ok=True)
    for n in existing:
        (out / n).unlink()
    summary: dict[str, Any] = {}

    def say(message: str) -> None:
        if progress:
            print(message, flush=True)

    start = time.perf_counter()
    fields = navier_stokes_dataset(frames=frames, seed=seed)
    write_netcdf(fields, out / "fields.nc")
    write_netcdf(fields.isel(time=slice(-32, -12)), out / "history.nc")
    summary["fields.nc"] = dict(fields.sizes)
    say(f"fields.nc: Navier-Stokes vorticity {dict(fields.sizes)} ({time.perf_counter() - start:.1f} s)")
    air = air_temperature("E1")
    write_netcdf(air, out / "air_temperature.nc")
    summary["air_temperature.nc"] = dict(air.sizes)
    say(f"air_temperature.nc: iris-sample-data E1 air temperature {dict(air.sizes)}")
    probes = probe_series(navier_stokes_dataset(frames=probe_frames, seed=seed + 1), probes=8, seed=seed)
    # About one time step in eight of the labelled part is anomalous.
    machine, events = anomaly_table(probes, train_fraction=0.5, count=max(4, probe_frames // 250), max_length=24,
                                    seed=seed)
    machine.to_csv(out / "machine.csv", index=False)
    tail = machine.iloc[int(round(len(machine) * 0.7)):]
    tail.to_csv(out / "series.csv", index=False)
    summary["machine.csv"] = {"rows": len(machine), "anomalies": len(events), "labelled_rows": int(machine["label"].sum())}
    say(f"machine.csv: {len(machine)} rows x 8 probes, {len(events)} injected anomalies; series.csv: its last {len(tail)} rows")
    co2, co2_events = anomaly_table(co2_series(), train_fraction=0.5, count=12, max_length=20, seed=seed)
    co2.to_csv(out / "co2.csv", index=False)
    summary["co2.csv"] = {"rows": len(co2), "anomalies": len(co2_events), "missing": int(co2["co2"].isna().sum())}
    say(f"co2.csv: {len(co2)} weeks of Mauna Loa CO2, {len(co2_events)} injected anomalies")
    return summary


def make_demo_data(argv: Sequence[str]) -> int:
    """``polydiff timeseries make-demo-data OUT``."""
    parser = argparse.ArgumentParser(
        prog="polydiff timeseries make-demo-data",
        description=("Write the offline demo data: fields.nc (2D Navier-Stokes vorticity from a spectral solver), "
                     "air_temperature.nc (real climate-model data from iris-sample-data), history.nc, "
                     "machine.csv and co2.csv (labelled injected anomalies), series.csv."),
    )
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument("--frames", type=int, default=1500, help="Navier-Stokes frames in fields.nc")
    parser.add_argument("--probe-frames", type=int, default=4000, help="time steps in machine.csv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace earlier demo files in OUT")
    opts = parser.parse_args(list(argv))
    if opts.frames < 64 or opts.probe_frames < 200:
        _fail("--frames must be at least 64 and --probe-frames at least 200")
        return 2
    try:
        build_demo_data(opts.out, frames=opts.frames, probe_frames=opts.probe_frames, seed=opts.seed,
                        overwrite=opts.overwrite)
    except FileExistsError as exc:
        _fail(str(exc))
        return 1
    except ImportError as exc:
        _fail(f"{exc}; install the plugin's dependencies with pip install \"polydiff[timeseries]\"")
        return 1
    print(f"demo data in {opts.out}")
    return 0


# --- loading ------------------------------------------------------------------------------------
def load_model(path: Path, device: str = "cpu") -> Any:
    """A trained time-series model with its data description, in eval mode.

    Raises:
        polydiff.checkpoint.CheckpointError: not a checkpoint of this plugin, or one without its
            data description.
    """
    from polydiff.checkpoint import CheckpointError, load_module
    from polydiff_timeseries.module import TimeSeriesModel

    model = load_module(path, plugin="timeseries", expect=TimeSeriesModel, require=("timeseries",))
    if "layout" not in model.data_info:
        raise CheckpointError(f"{path} has no data layout (it was not trained on a WindowDataModule)")
    return model.to(device).eval()


def _read_input(path: Path, model: Any) -> tuple[Any, Any, Any]:
    """(coarsened Dataset, its standardised (T, N) float32 values, labels or None)."""
    from polydiff_timeseries.data import Layout, Standardizer, coarsen_dataset, open_source

    info = model.data_info
    layout = Layout.from_dict(info["layout"])
    ds = open_source(path, time_dim=layout.time_dim, time_column=info.get("time_column"),
                     label_column=info.get("label_column"))
    ds = coarsen_dataset(ds, layout.coarsen, layout.time_dim)
    layout.check(ds, path)
    values = Standardizer.from_dict(info["scaler"]).forward(layout.read(ds))
    labels = ds["label"].values if "label" in ds.coords else None
    return ds, values, labels


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.empty(0, device=name)
    except (RuntimeError, AssertionError) as exc:
        raise ValueError(f"cannot use device {name!r}: {str(exc).splitlines()[0]}") from None
    return name


def _prepare(opts: argparse.Namespace) -> tuple[str, int]:
    """The device, and 0 — or the exit status for an unusable device (2) or a refused output (1)."""
    try:
        device = _device(opts.device)
        _check_output(opts.output, [opts.input, opts.ckpt], opts.overwrite)
    except (ValueError, _Refused) as exc:
        _fail(str(exc))
        return "", 2 if isinstance(exc, ValueError) else 1
    return device, 0


# --- forecast -----------------------------------------------------------------------------------
def forecast(argv: Sequence[str]) -> int:
    """``polydiff timeseries forecast --ckpt M.ckpt --input HISTORY -o FC.nc``."""
    parser = argparse.ArgumentParser(
        prog="polydiff timeseries forecast",
        description=("Forecast from the end of a history file. Writes the samples (dimension 'sample'), "
                     "<var>_mean and <var>_quantiles (dimension 'quantile') with the input's coordinates "
                     "and the future time stamps, as NetCDF (or zarr for a .zarr output)."),
    )
    parser.add_argument("--ckpt", type=Path, required=True, help="a trained forecaster")
    parser.add_argument("--input", type=Path, required=True, help="history: NetCDF, zarr or table with the trained variables")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .nc or .zarr")
    parser.add_argument("--horizon", type=int, default=None, help="frames to forecast (default: the trained horizon)")
    parser.add_argument("--samples", type=int, default=50, help="ensemble members")
    parser.add_argument("--quantiles", type=str, default=",".join(map(str, DEFAULT_QUANTILES)),
                        help="comma-separated quantile levels to write")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (diffusion) or interpolation times (DYffusion)")
    parser.add_argument("--sampler", type=str, default=None, help="sampler of a diffusion forecaster (e.g. ddim, ddpm, dpmpp_2m)")
    parser.add_argument("--rolling", action="store_true", help="rolling per-frame noise levels (diffusion forecaster)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    opts = parser.parse_args(list(argv))
    try:
        quantiles = [float(q) for q in opts.quantiles.split(",") if q.strip()]
    except ValueError:
        _fail(f"--quantiles must be numbers separated by commas, got {opts.quantiles!r}")
        return 2
    if any(not 0 < q < 1 for q in quantiles) or opts.samples < 1:
        _fail("quantiles must lie in (0, 1) and --samples be positive")
        return 2
    device, status = _prepare(opts)
    if status:
        return status
    import numpy as np
    import torch

    from polydiff.checkpoint import CheckpointError
    from polydiff_timeseries.data import DataError, Layout, Standardizer, future_times

    try:
        model = load_model(opts.ckpt, device)
        ds, values, _ = _read_input(opts.input, model)
        horizon = model._check_horizon(opts.horizon)
        if values.shape[0] < model.context:
            raise DataError(f"{opts.input}: {values.shape[0]} frames, but the model needs {model.context} context frames")
        options: dict[str, Any] = {}
        if opts.steps is not None:
            options["steps"] = opts.steps
        if opts.sampler is not None:
            options["sampler"] = opts.sampler
        if opts.rolling:
            options["rolling"] = True
        generator = torch.Generator(device=device).manual_seed(opts.seed)
        start = time.perf_counter()
        fc = model.forecast(torch.from_numpy(values[None]), samples=opts.samples, horizon=horizon,
                            generator=generator, **options)[0].cpu().numpy()  # (S, H, N)
        seconds = time.perf_counter() - start
    except (CheckpointError, DataError, ValueError, TypeError) as exc:
        _fail(str(exc))
        return 1
    info = model.data_info
    layout = Layout.from_dict(info["layout"])
    fc = Standardizer.from_dict(info["scaler"]).inverse(fc)
    times_in = ds[layout.time_dim].values if layout.time_dim in ds.coords else np.arange(ds.sizes[layout.time_dim])
    times = future_times(times_in, horizon)
    out = layout.to_dataset(fc, ds, times, lead_dims=("sample",), lead_coords={"sample": np.arange(fc.shape[0])})
    for v in layout.variables:
        out[f"{v}_mean"] = out[v].mean("sample")
        out[f"{v}_quantiles"] = out[v].quantile(quantiles, dim="sample")
    out.attrs.update({
        "source": "polydiff timeseries forecast",
        "model": type(model).__name__,
        "checkpoint": opts.ckpt.name,
        "history": opts.input.name,
        "samples": opts.samples,
        "network_evaluations_per_sample": model.network_evaluations(**{k: v for k, v in options.items() if k != "rolling"}),
        "seconds": round(seconds, 3),
    })
    try:
        if opts.output.suffix == ".zarr":
            out.to_zarr(opts.output, mode="w")
        else:
            if opts.output.exists():
                opts.output.unlink()
            out.to_netcdf(opts.output, engine="h5netcdf")
    except Exception as exc:
        _fail(f"{opts.output}: could not be written ({type(exc).__name__}: {exc})")
        return 1
    print(f"{opts.output}: {opts.samples} samples x {horizon} frames of {', '.join(layout.variables)} "
          f"({seconds:.1f} s, {type(model).__name__})")
    return 0


# --- detect -------------------------------------------------------------------------------------
def detect(argv: Sequence[str]) -> int:
    """``polydiff timeseries detect --ckpt A.ckpt --input SERIES.csv -o SCORES.csv``."""
    parser = argparse.ArgumentParser(
        prog="polydiff timeseries detect",
        description=("Score every time step of a series with a trained anomaly detector and flag those at or above "
                     "the threshold (the one chosen on validation data at training, unless --threshold is given). "
                     "Writes time, score, anomaly (and label when the input has one) as CSV."),
    )
    parser.add_argument("--ckpt", type=Path, required=True, help="a trained detector (anomaly or anomaly-residual config)")
    parser.add_argument("--input", type=Path, required=True, help="the series: a table or NetCDF with the trained variables")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output CSV")
    parser.add_argument("--threshold", type=float, default=None, help="flag scores at or above this")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps of the imputation (ImDiffusion)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    opts = parser.parse_args(list(argv))
    device, status = _prepare(opts)
    if status:
        return status
    import numpy as np
    import pandas as pd
    import torch

    from polydiff.checkpoint import CheckpointError
    from polydiff_timeseries.data import DataError
    from polydiff_timeseries.metrics import detection_scores

    try:
        model = load_model(opts.ckpt, device)
        if not hasattr(model, "anomaly_scores"):
            raise CheckpointError(f"{opts.ckpt} holds a {type(model).__name__}, which is not an anomaly detector")
        ds, values, labels = _read_input(opts.input, model)
        options: dict[str, Any] = {"generator": torch.Generator(device=device).manual_seed(opts.seed)}
        if opts.steps is not None:
            options["steps"] = opts.steps
        start = time.perf_counter()
        scores = model.anomaly_scores(torch.from_numpy(values), **options).numpy()
        seconds = time.perf_counter() - start
    except (CheckpointError, DataError, ValueError) as exc:
        _fail(str(exc))
        return 1
    stored = (model.data_info or {}).get("threshold")
    threshold = opts.threshold if opts.threshold is not None else (stored or {}).get("value")
    time_dim = model.data_info["layout"]["time_dim"]
    table = pd.DataFrame({"time": ds[time_dim].values if time_dim in ds.coords else np.arange(len(scores)),
                          "score": scores})
    if threshold is not None:
        table["anomaly"] = (scores >= threshold).astype(int)
    if labels is not None:
        table["label"] = labels.astype(int)
    table.to_csv(opts.output, index=False)
    where = "given" if opts.threshold is not None else (stored or {}).get("rule", "none")
    print(f"{opts.output}: {len(scores)} scores ({seconds:.1f} s, {type(model).__name__}); "
          f"threshold {threshold if threshold is not None else 'none'} ({where})")
    if threshold is None:
        print("no threshold: pass --threshold to flag anomalies")
    elif labels is not None and labels.any():
        metrics = detection_scores(scores, labels.astype(int), float(threshold))
        for key, value in metrics.items():
            print(f"  {key:12s} {value:.4g}" if isinstance(value, float) else f"  {key:12s} {value}")
    return 0


# --- evaluate -----------------------------------------------------------------------------------
def evaluate(argv: Sequence[str]) -> int:
    """``polydiff timeseries evaluate --ckpt M.ckpt --data FILE``: test-split forecast scores."""
    parser = argparse.ArgumentParser(
        prog="polydiff timeseries evaluate",
        description=("Forecast every test window of a file (split as in training) and print CRPS, MSE and MAE of the "
                     "ensemble mean, spread-skill ratio and 50/90%% interval coverage, beside persistence and "
                     "climatology; -o writes them as JSON."),
    )
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="the dataset (NetCDF, zarr or table)")
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--val-fraction", type=float, default=None, help="default: as in training")
    parser.add_argument("--test-fraction", type=float, default=None, help="default: as in training")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--max-windows", type=int, default=None, help="score at most this many windows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, default=None, help="JSON file for the scores")
    parser.add_argument("--overwrite", action="store_true")
    opts = parser.parse_args(list(argv))
    if opts.output is not None:
        try:
            _check_output(opts.output, [opts.data, opts.ckpt], opts.overwrite)
        except _Refused as exc:
            _fail(str(exc))
            return 1
    from polydiff.checkpoint import CheckpointError
    from polydiff_timeseries.data import DataError
    from polydiff_timeseries.evaluation import evaluate_forecasters

    try:
        model = load_model(opts.ckpt)
        results = evaluate_forecasters({type(model).__name__: model}, opts.data, split=opts.split,
                                       val_fraction=opts.val_fraction, test_fraction=opts.test_fraction,
                                       samples=opts.samples, steps=opts.steps, max_windows=opts.max_windows,
                                       seed=opts.seed)
    except (CheckpointError, DataError, ValueError) as exc:
        _fail(str(exc))
        return 1
    keys = ("crps", "mse", "mae", "spread_skill", "coverage_50", "coverage_90")
    print("method".ljust(22) + "".join(k.rjust(13) for k in keys))
    for name, row in results["methods"].items():
        print(name.ljust(22) + "".join(f"{row[k]:13.4f}" for k in keys))
    print(f"{results['windows']} windows of the {opts.split} split, {opts.samples} samples each (units: {results['units']})")
    if opts.output is not None:
        opts.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0
