"""polydiff_timeseries: probabilistic spatiotemporal forecasting and time-series anomaly detection.

Conditional Gaussian diffusion over windows of fields or tables (CSDI-style, with a rolling
per-frame noise option), DYffusion's interpolator–forecaster pair, and ImDiffusion's
imputation-based anomaly detector. This module only describes the plugin (no torch, no xarray),
so that ``polydiff list`` stays cheap; the commands, data modules and models are imported when
used.
"""

from polydiff.plugin import Plugin

plugin = Plugin(
    name="timeseries",
    description="Probabilistic forecasting of fields and tables (CSDI-style, DYffusion) and anomaly detection (ImDiffusion).",
    extra="timeseries",
    requires=("numpy", "scipy", "pandas", "xarray", "h5netcdf", "dask", "matplotlib"),
    datamodule_class="polydiff_timeseries.data.WindowDataModule",
    model_class="polydiff_timeseries.module.TimeSeriesModel",
    config_package="polydiff_timeseries.configs",
    commands={
        "make-demo-data": "polydiff_timeseries.commands:make_demo_data",
        "forecast": "polydiff_timeseries.commands:forecast",
        "detect": "polydiff_timeseries.commands:detect",
        "evaluate": "polydiff_timeseries.commands:evaluate",
    },
    demo="polydiff_timeseries.demo:run_demo",
)
