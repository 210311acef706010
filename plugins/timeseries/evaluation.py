"""Scoring forecasters on the windows of a dataset split, beside persistence and climatology.

:func:`evaluate_forecasters` forecasts every window of a split (context then horizon frames,
one window per ``horizon`` frames so the targets tile the split) with each model and the two
reference forecasts, and scores them with :func:`~polydiff_timeseries.metrics.forecast_scores`
in the data's own units (the models' standardisation undone). The split is the one the models
were trained with (the fractions recorded in their checkpoints), so test windows were never
seen in training. ``polydiff timeseries evaluate`` and ``benchmarks/timeseries.py`` use it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["split_windows", "evaluate_forecasters"]


def split_windows(values: np.ndarray, start: int, stop: int, context: int, horizon: int,
                  max_windows: int | None = None) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Context and target arrays of the windows inside ``[start, stop)``, ``horizon`` apart.

    Shapes:
        values: (T, N); returns context (W, context, N), targets (W, horizon, N), and the first
        target frame of each window.
    """
    firsts = list(range(start + context, stop - horizon + 1, horizon))
    if max_windows is not None and len(firsts) > max_windows:
        keep = np.linspace(0, len(firsts) - 1, max_windows).round().astype(int)
        firsts = [firsts[i] for i in keep]
    if not firsts:
        raise ValueError(f"the split [{start}, {stop}) holds no window of {context} + {horizon} frames")
    ctx = np.stack([values[f - context:f] for f in firsts])
    tgt = np.stack([values[f:f + horizon] for f in firsts])
    return ctx, tgt, firsts


def evaluate_forecasters(
    models: dict[str, Any],
    path: str | Path,
    *,
    split: str = "test",
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    samples: int = 20,
    steps: int | None = None,
    max_windows: int | None = None,
    seed: int = 0,
    batch_windows: int = 16,
    baselines: bool = True,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Forecast scores of trained models and of persistence and climatology on one split.

    All models must share the data layout, context and horizon (trained on the same data).

    Args:
        models: name to trained :class:`~polydiff_timeseries.module.TimeSeriesModel`.
        path: the dataset.
        split: ``val`` or ``test``.
        val_fraction, test_fraction: the split fractions (default: those the first model was
            trained with).
        samples: ensemble members per window (deterministic models give one).
        steps: sampling steps for every model (default: each model's own).
        max_windows: score at most this many windows, evenly spread over the split.
        options: per-model extra ``forecast`` arguments (e.g. ``{"rolling": True}``).

    Returns:
        ``{"windows", "units", "methods": {name: scores + seconds_per_window, nfe}}``.
    """
    from polydiff_timeseries.baselines import Climatology, persistence_forecast
    from polydiff_timeseries.data import DataError, Layout, Standardizer, coarsen_dataset, open_source, split_bounds
    from polydiff_timeseries.metrics import forecast_scores
    from polydiff_timeseries.module import Deterministic

    if not models:
        raise ValueError("no model to evaluate")
    first = next(iter(models.values()))
    info = first.data_info
    for name, model in models.items():
        other = model.data_info
        if (other["layout"], other["context"], other["horizon"]) != (info["layout"], info["context"], info["horizon"]):
            raise ValueError(f"model {name!r} was trained on other data (layout, context or horizon differ)")
    layout = Layout.from_dict(info["layout"])
    scaler = Standardizer.from_dict(info["scaler"])
    ds = open_source(path, time_dim=layout.time_dim, time_column=info.get("time_column"),
                     label_column=info.get("label_column"))
    ds = coarsen_dataset(ds, layout.coarsen, layout.time_dim)
    layout.check(ds, path)
    raw = layout.read(ds)
    n = raw.shape[0]
    val_fraction = info.get("val_fraction", 0.1) if val_fraction is None else val_fraction
    test_fraction = info.get("test_fraction", 0.2) if test_fraction is None else test_fraction
    bounds = split_bounds(n, val_fraction, test_fraction)
    if split not in ("val", "test"):
        raise ValueError(f"split must be val or test, got {split!r}")
    c, h = int(info["context"]), int(info["horizon"])
    try:
        ctx_raw, truth, firsts = split_windows(raw, *bounds[split], c, h, max_windows)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None
    results: dict[str, Any] = {"windows": len(firsts), "samples": samples, "split": split,
                               "units": ", ".join(str(ds[v].attrs.get("units", "data units")) for v in layout.variables),
                               "methods": {}}
    if baselines:
        start = time.perf_counter()
        pers = persistence_forecast(ctx_raw, h)
        results["methods"]["persistence"] = {**forecast_scores(pers.transpose(1, 0, 2, 3), truth),
                                             "seconds_per_window": (time.perf_counter() - start) / len(firsts), "nfe": 0}
        clim = Climatology().fit(raw[slice(*bounds["train"])])
        start = time.perf_counter()
        members = clim.predict(ctx_raw, h, samples=samples, seed=seed)
        results["methods"]["climatology"] = {**forecast_scores(members.transpose(1, 0, 2, 3), truth),
                                             "seconds_per_window": (time.perf_counter() - start) / len(firsts), "nfe": 0}
    ctx = scaler.forward(ctx_raw).astype(np.float32)
    for name, model in models.items():
        extra = dict((options or {}).get(name, {}))
        if steps is not None and not isinstance(model, Deterministic):
            extra.setdefault("steps", steps)
        generator = torch.Generator(device=model.device).manual_seed(seed)
        outs = []
        start = time.perf_counter()
        for i in range(0, len(ctx), batch_windows):
            fc = model.forecast(torch.from_numpy(ctx[i:i + batch_windows]), samples=samples, generator=generator, **extra)
            outs.append(fc.cpu().numpy())
        seconds = time.perf_counter() - start
        fc = scaler.inverse(np.concatenate(outs))  # (W, S, H, N)
        nfe_options = {k: v for k, v in extra.items() if k in ("steps", "sampler")}
        results["methods"][name] = {**forecast_scores(fc.transpose(1, 0, 2, 3), truth),
                                    "seconds_per_window": seconds / len(firsts),
                                    "nfe": model.network_evaluations(**nfe_options)}
    return results
