"""The timeseries part of ``polydiff quickstart``: brief trainings, a forecast and an anomaly scan.

:func:`run_demo` goes through what a user does, with the same commands:

1. ``polydiff timeseries make-demo-data`` with a short flow record (a few seconds);
2. ``polydiff timeseries fit -c forecast`` on ``fields.nc`` for ``max_steps`` steps, then
   ``forecast`` from ``history.nc`` and ``evaluate`` on the test split (CRPS, MSE, spread–skill,
   coverage) beside persistence and climatology;
3. ``polydiff timeseries fit -c anomaly`` (ImDiffusion) on ``machine.csv``, then ``detect`` on
   ``series.csv`` (its labelled last 30%), beside the rolling z-score baseline;

and writes ``forecast.png`` (truth, ensemble mean and 50/90% bands at one grid cell, and the
fields), ``anomaly.png`` (scores, threshold and the labelled anomalies), ``forecast.nc``,
``scores.csv`` and ``metrics.json``. A model trained for a minute on a CPU is far from
converged: the table shows where it stands against the baselines; ``benchmarks/timeseries.py``
measures longer trainings.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["run_demo", "plot_forecast", "plot_anomalies"]


def plot_forecast(history: Any, forecast: Any, truth: Any, variable: str, path: Path) -> Path:
    """Truth, ensemble mean and 50/90% bands at the grid's centre cell, and the last fields.

    Args:
        history: the context Dataset; forecast: the ``forecast`` command's Dataset; truth: the
            Dataset of the true future frames (same grid as the forecast).
    """
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib import pyplot as plt

    da = forecast[variable]
    spatial = [d for d in da.dims if d not in ("sample", "time")]
    centre = {d: da.sizes[d] // 2 for d in spatial}
    cell = {d: float(da[d].values[i]) for d, i in centre.items()}

    def at_cell(obj: Any) -> Any:
        return obj.sel(cell, method="nearest")

    fig = plt.figure(figsize=(11, 6))
    ax = fig.add_subplot(2, 1, 1)
    t_hist = np.arange(-history.sizes["time"] + 1, 1)
    t_fc = np.arange(1, da.sizes["time"] + 1)
    samples = at_cell(da).values  # (S, H)
    for lo, hi, alpha in ((0.05, 0.95, 0.2), (0.25, 0.75, 0.4)):
        ax.fill_between(t_fc, np.quantile(samples, lo, 0), np.quantile(samples, hi, 0), color="C0", alpha=alpha,
                        label=f"{int(round((hi - lo) * 100))}% band")
    ax.plot(t_fc, samples.mean(0), color="C0", label="ensemble mean")
    ax.plot(t_hist, at_cell(history[variable]).values, color="k", label="history")
    ax.plot(t_fc, at_cell(truth[variable]).values, color="k", ls="--", label="truth")
    ax.set_xlabel("frames from the forecast start")
    ax.set_title(f"{variable} at " + ", ".join(f"{k}={v:.2f}" for k, v in cell.items()), fontsize=9)
    ax.legend(fontsize=8, ncol=3)
    if len(spatial) == 2:
        last = da.sizes["time"] - 1
        panels = [("truth, last lead", truth[variable].isel(time=last).values),
                  ("ensemble mean", forecast[f"{variable}_mean"].isel(time=last).values),
                  ("one member", da.isel(sample=0, time=last).values)]
        vmax = float(np.nanmax(np.abs(panels[0][1])))
        for i, (title, field) in enumerate(panels):
            axi = fig.add_subplot(2, 3, 4 + i)
            axi.imshow(field, cmap="RdBu_r", vmin=-vmax, vmax=vmax, origin="lower")
            axi.set_title(title, fontsize=9)
            axi.set_xticks([])
            axi.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_anomalies(table: Any, threshold: float | None, path: Path, baseline: Any = None) -> Path:
    """Scores over time with the threshold and the labelled anomalies shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib import pyplot as plt

    from polydiff_timeseries.metrics import anomaly_segments

    rows = 2 if baseline is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(11, 2.6 * rows), sharex=True, squeeze=False)
    x = np.arange(len(table))
    series = [("ImDiffusion score", table["score"].to_numpy(), threshold)]
    if baseline is not None:
        series.append(("rolling z-score", np.asarray(baseline[0]), baseline[1]))
    for ax, (title, scores, thr) in zip(axes[:, 0], series):
        ax.plot(x, scores, lw=0.8)
        if thr is not None:
            ax.axhline(thr, color="C3", lw=0.8, ls="--", label="threshold")
        if "label" in table:
            for start, stop in anomaly_segments(table["label"].to_numpy()):
                ax.axvspan(start, stop, color="C1", alpha=0.25, lw=0)
        ax.set_yscale("log")
        ax.set_title(title + " (shaded: labelled anomalies)", fontsize=9)
    axes[-1, 0].set_xlabel("time step of the series")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_demo(out_dir: Path, *, progress: bool = True, max_steps: int = 300, seed: int = 0) -> dict[str, Any]:
    """Train a forecaster and an anomaly detector briefly on the demo data and use them.

    Args:
        out_dir: everything is written here (``data/``, ``forecast-run/``, ``anomaly-run/``,
            ``forecast.nc``, ``forecast.png``, ``scores.csv``, ``anomaly.png``, ``metrics.json``).
        progress: show progress bars.
        max_steps: training steps of the forecaster (the detector trains twice as many: its steps
            are cheaper).
        seed: seed of the data, the training and the sampling.

    Returns:
        CRPS and MSE of the diffusion forecaster, persistence and climatology on test windows;
        F1 (without and with point adjustment) and AUPRC of ImDiffusion and the rolling z-score
        on ``series.csv``; and the run's details.
    """
    import numpy as np
    import pandas as pd
    import xarray as xr

    from polydiff.cli import fit_for_demo
    from polydiff_timeseries import commands
    from polydiff_timeseries.baselines import RollingZScore
    from polydiff_timeseries.data import open_source
    from polydiff_timeseries.evaluation import evaluate_forecasters
    from polydiff_timeseries.metrics import best_f1_threshold, detection_scores

    started = time.perf_counter()
    out_dir = Path(out_dir)
    data = out_dir / "data"
    if not (data / "series.csv").exists():
        commands.build_demo_data(data, frames=600, probe_frames=2400, seed=seed, overwrite=True, progress=progress)

    # Forecasting: train, forecast from history.nc, score the test split.
    ckpt = fit_for_demo("timeseries", "forecast", out_dir / "forecast-run", max_steps=max_steps, seed=seed,
                        progress=progress, args=["--data.path", str(data / "fields.nc"), "--model.val_samples", "0"])
    forecast_nc = out_dir / "forecast.nc"
    status = commands.forecast(["--ckpt", str(ckpt), "--input", str(data / "history.nc"), "--samples", "16",
                                "-o", str(forecast_nc), "--seed", str(seed), "--overwrite"])
    if status != 0:
        raise RuntimeError(f"forecast failed (exit status {status})")
    model = commands.load_model(ckpt)
    scores = evaluate_forecasters({"diffusion": model}, data / "fields.nc", samples=8, max_windows=6, seed=seed)
    metrics: dict[str, Any] = {}
    for method, row in scores["methods"].items():
        metrics[f"crps_{method}"] = round(row["crps"], 4)
        metrics[f"mse_{method}"] = round(row["mse"], 4)
    metrics["spread_skill_diffusion"] = round(scores["methods"]["diffusion"]["spread_skill"], 3)
    metrics["coverage_90_diffusion"] = round(scores["methods"]["diffusion"]["coverage_90"], 3)
    fields = open_source(data / "fields.nc")
    coarse = fields.coarsen(y=2, x=2).mean()
    history = coarse.isel(time=slice(-32, -12))
    truth = coarse.isel(time=slice(-12, None))
    with xr.open_dataset(forecast_nc, engine="h5netcdf") as fc:
        plot_forecast(history, fc.load(), truth, "vorticity", out_dir / "forecast.png")

    # Anomaly detection: ImDiffusion on machine.csv, scored on series.csv.
    ackpt = fit_for_demo("timeseries", "anomaly", out_dir / "anomaly-run", max_steps=2 * max_steps, seed=seed,
                         progress=progress, args=["--data.path", str(data / "machine.csv"), "--model.sample_steps", "10"])
    scores_csv = out_dir / "scores.csv"
    status = commands.detect(["--ckpt", str(ackpt), "--input", str(data / "series.csv"), "-o", str(scores_csv),
                              "--seed", str(seed), "--overwrite"])
    if status != 0:
        raise RuntimeError(f"detect failed (exit status {status})")
    table = pd.read_csv(scores_csv)
    detector = commands.load_model(ackpt)
    threshold = detector.data_info["threshold"]["value"]
    labels = table["label"].to_numpy()
    found = detection_scores(table["score"].to_numpy(), labels, threshold)
    machine = pd.read_csv(data / "machine.csv")
    values = machine.drop(columns=["time", "label"]).to_numpy()
    start = len(machine) - len(table)
    z_all = RollingZScore(window=50).score(values)
    val = slice(int(round(len(machine) * 0.5)), start)  # the validation part, as in training
    z_threshold = best_f1_threshold(z_all[val], machine["label"].to_numpy()[val])
    z = detection_scores(z_all[start:], labels, z_threshold)
    for method, row in (("imdiffusion", found), ("zscore", z)):
        for key in ("f1", "f1_pa", "auprc"):
            metrics[f"{key}_{method}"] = round(float(row[key]), 4)
    plot_anomalies(table, threshold, out_dir / "anomaly.png", baseline=(z_all[start:], z_threshold))

    metrics.update(
        forecast_checkpoint=str(ckpt.relative_to(out_dir)),
        anomaly_checkpoint=str(ackpt.relative_to(out_dir)),
        forecast_windows=scores["windows"],
        anomaly_threshold_rule=detector.data_info["threshold"]["rule"],
        seconds=round(time.perf_counter() - started, 1),
    )
    metrics = {k: (float(v) if isinstance(v, np.floating) else v) for k, v in metrics.items()}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics
