"""The timeseries part of ``polydiff quickstart``, end to end with two-step trainings."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("xarray")
pytest.importorskip("matplotlib")
pytest.importorskip("iris_sample_data")
pytest.importorskip("statsmodels")


def test_quickstart_demo_writes_forecast_scores_plots_and_metrics(tmp_path):
    import pandas as pd
    import xarray as xr

    from polydiff_timeseries.demo import run_demo

    metrics = run_demo(tmp_path, progress=False, max_steps=2)
    for name in ("forecast.png", "anomaly.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with xr.open_dataset(tmp_path / "forecast.nc", engine="h5netcdf") as fc:
        assert fc["vorticity"].dims == ("sample", "time", "y", "x")
        assert fc.sizes["sample"] == 16 and fc.sizes["time"] == 12
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert list(scores.columns) == ["time", "score", "anomaly", "label"]
    assert scores["score"].notna().all() and scores["label"].sum() > 0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    # Over the 12-frame horizon persistence beats climatology on this flow (lag-12 correlation 0.44);
    # the numbers themselves depend on two training steps and say nothing about the model.
    for key in ("crps_persistence", "crps_climatology", "crps_diffusion", "f1_imdiffusion", "f1_zscore"):
        assert metrics[key] == metrics[key]  # not NaN
    assert metrics["crps_persistence"] < metrics["crps_climatology"]
