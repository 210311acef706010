"""Timeseries benchmark: probabilistic forecasting on two gridded datasets and anomaly detection.

::

    python benchmarks/timeseries.py [--scale 1.0] [--jobs 2] [--work benchmarks/scratch/timeseries]

Forecasting (test split, the last 20-25% of each record, never seen in training):

- ``fields``: 2D Navier–Stokes vorticity (Kolmogorov flow) from the plugin's spectral solver,
  1,500 frames, 16×16 after 2× coarsening; 8 context frames, 12 forecast.
- ``air_temperature``: real climate-model air temperature (iris-sample-data, E1 scenario), 240
  annual frames, 12×16 after 3× coarsening; 6 context frames, 6 forecast.

Methods: the CSDI-style conditional diffusion forecaster (sampled with DDIM, and with rolling
per-frame noise levels), DYffusion (all physical steps, and its accelerated schedule), the
deterministic network of the same backbone and size trained with MSE, persistence and
climatology. Metrics: CRPS, MSE/MAE of the ensemble mean, spread–skill ratio, 50/90% coverage,
seconds and network evaluations per forecast.

Anomaly detection (test split, the last 30%; thresholds chosen on the validation split's labels
by best un-adjusted F1, the same rule for every method): ``machine.csv`` (8 flow probes, 16
injected anomalies) and ``co2.csv`` (real weekly Mauna Loa CO2, 12 injected anomalies).
Methods: ImDiffusion, the forecast-residual detector of the same backbone size, and the rolling
z-score. Metrics: precision/recall/F1 without and with point adjustment, AUROC, AUPRC,
detection delay.

Every model trains for a fixed number of optimiser steps (``--scale`` multiplies them), one CPU
thread per training, ``--jobs`` trainings at once; wall times are recorded. Trained runs in
``--work`` are reused. Writes ``benchmarks/results/timeseries.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine_info, write_report  # noqa: E402

FORECAST_DATA = {
    "fields": {"file": "fields.nc", "overrides": []},
    "air_temperature": {"file": "air_temperature.nc", "overrides": [
        "--data.coarsen", "3", "--data.context", "6", "--data.horizon", "6", "--data.test_fraction", "0.25",
        "--data.batch_size", "16"]},
}
FORECAST_MODELS = {"diffusion": "forecast", "dyffusion": "dyffusion", "deterministic": "deterministic"}
ANOMALY_DATA = {"machine": "machine.csv", "co2": "co2.csv"}
ANOMALY_MODELS = {"imdiffusion": "anomaly", "residual": "anomaly-residual"}

#: Optimiser steps per (dataset, model) at --scale 1.
STEPS = {"fields": 3000, "air_temperature": 1500, "machine": 3000, "co2": 2000}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def build_data(work: Path) -> Path:
    data = work / "data"
    if not (data / "co2.csv").exists():
        from polydiff_timeseries.commands import build_demo_data

        build_demo_data(data, overwrite=True)
    return data


def _checkpoint(run: Path) -> Path | None:
    found = sorted(run.glob("**/checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _portable(text: str) -> str:
    """A command line with this checkout's location left out (paths relative to the repository)."""
    return text.replace(f"{ROOT}/", "")


def train(job: tuple[str, str, str, list[str], int], work: Path, data: Path) -> dict:
    name, config, file, overrides, steps = job
    run = work / "runs" / name
    done = run / "done.json"
    if done.exists():
        record = json.loads(done.read_text())
        return {**record, "command": _portable(record["command"])}
    run.mkdir(parents=True, exist_ok=True)
    extra = []
    if config == "dyffusion":
        extra = ["--model.interpolator_steps", str(steps // 2)]
    command = [sys.executable, "-m", "polydiff", "timeseries", "fit", "-c", config, "--data.path", str(data / file),
               *overrides, *extra, "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps // 3),
               "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false",
               "--trainer.default_root_dir", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log(f"train {name}: {_portable(' '.join(command[3:]))}")
    start = time.perf_counter()
    with open(run / "train.log", "w") as out:
        rc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - start
    ckpt = _checkpoint(run)
    if rc != 0 or ckpt is None:
        raise RuntimeError(f"training {name} failed (exit {rc}); see {run / 'train.log'}")
    record = {"name": name, "config": config, "steps": steps, "seconds": round(seconds, 1),
              "checkpoint": str(ckpt.relative_to(work)), "command": _portable(" ".join(["polydiff", *command[3:]]))}
    done.write_text(json.dumps(record, indent=1) + "\n")
    log(f"trained {name} in {seconds / 60:.1f} min")
    return record


def forecasting(work: Path, data: Path, trained: dict, samples: int, max_windows: int) -> dict:
    import torch

    from polydiff_timeseries.commands import load_model
    from polydiff_timeseries.evaluation import evaluate_forecasters

    torch.set_num_threads(2)
    out = {}
    for dataset, spec in FORECAST_DATA.items():
        models = {m: load_model(work / trained[f"{dataset}-{m}"]["checkpoint"]) for m in FORECAST_MODELS}
        h = models["dyffusion"].horizon
        fast = max(2, h // 3)
        variants = {
            "diffusion (ddim 20)": (models["diffusion"], {"steps": 20}),
            "diffusion (rolling 20)": (models["diffusion"], {"steps": 20, "rolling": True}),
            "dyffusion": (models["dyffusion"], {}),
            f"dyffusion ({fast} steps)": (models["dyffusion"], {"steps": fast}),
            "deterministic": (models["deterministic"], {}),
        }
        log(f"forecast {dataset}: {samples} samples, at most {max_windows} windows")
        result = evaluate_forecasters({k: v[0] for k, v in variants.items()}, data / spec["file"], samples=samples,
                                      max_windows=max_windows, options={k: v[1] for k, v in variants.items()})
        out[dataset] = result
        log(json.dumps({k: round(v["crps"], 4) for k, v in result["methods"].items()}))
    return out


def anomaly(work: Path, data: Path, trained: dict) -> dict:
    import numpy as np
    import torch

    from polydiff_timeseries.baselines import RollingZScore
    from polydiff_timeseries.commands import load_model
    from polydiff_timeseries.data import WindowDataModule
    from polydiff_timeseries.metrics import best_f1_threshold, detection_scores

    torch.set_num_threads(2)
    out = {}
    for dataset, file in ANOMALY_DATA.items():
        dm = WindowDataModule(str(data / file), context=0, horizon=32, val_fraction=0.2, test_fraction=0.3)
        dm.setup()
        val, val_labels = dm.split_series("val")
        test, test_labels = dm.split_series("test")
        rows = {}
        for method in ANOMALY_MODELS:
            model = load_model(work / trained[f"{dataset}-{method}"]["checkpoint"])
            start = time.perf_counter()
            generator = torch.Generator().manual_seed(0)
            scores = model.anomaly_scores(torch.from_numpy(test), generator=generator).numpy()
            seconds = time.perf_counter() - start
            threshold = model.data_info["threshold"]
            rows[method] = {**detection_scores(scores, test_labels, threshold["value"]),
                            "threshold_rule": threshold["rule"], "seconds": round(seconds, 2)}
        zscore = RollingZScore(window=50)
        # The z-score sees the split's preceding frames too, so its window is full at the start.
        full = np.concatenate([val, test])
        scores_all = zscore.score(full)
        val_scores, test_scores = scores_all[:len(val)], scores_all[len(val):]
        rows["rolling z-score"] = {**detection_scores(test_scores, test_labels, best_f1_threshold(val_scores, val_labels)),
                                   "threshold_rule": "best F1 (unadjusted) on validation labels"}
        out[dataset] = {"test_steps": len(test), "test_segments": int(len(_segments(test_labels))), "methods": rows}
        log(json.dumps({k: round(v["f1"], 3) for k, v in rows.items()}))
    return out


def _segments(labels) -> list:
    from polydiff_timeseries.metrics import anomaly_segments

    return anomaly_segments(labels)


def build_targets(results: dict) -> list[dict]:
    targets = []
    for dataset, result in results["forecasting"].items():
        m = result["methods"]
        for method in ("diffusion (ddim 20)", "dyffusion"):
            for ref in ("persistence", "climatology"):
                targets.append(dict(name=f"{dataset}: {method} CRPS < {ref} CRPS", value=m[method]["crps"],
                                    threshold=m[ref]["crps"], met=bool(m[method]["crps"] < m[ref]["crps"])))
            det = m["deterministic"]
            targets.append(dict(name=f"{dataset}: {method} CRPS < deterministic CRPS", value=m[method]["crps"],
                                threshold=det["crps"], met=bool(m[method]["crps"] < det["crps"])))
            ratio = m[method]["mse"] / det["mse"]
            targets.append(dict(name=f"{dataset}: {method} ensemble-mean MSE / deterministic MSE <= 1.1 (comparable)",
                                value=ratio, threshold=1.1, met=bool(ratio <= 1.1)))
    for dataset, result in results["anomaly"].items():
        m = result["methods"]
        for metric in ("f1", "auprc"):
            for ref in ("residual", "rolling z-score"):
                targets.append(dict(name=f"{dataset}: ImDiffusion {metric} > {ref} {metric}", value=m["imdiffusion"][metric],
                                    threshold=m[ref][metric], met=bool(m["imdiffusion"][metric] > m[ref][metric])))
    return targets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "scratch" / "timeseries")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "timeseries.json")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every training's optimiser steps")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once (one thread each)")
    parser.add_argument("--samples", type=int, default=20, help="ensemble members per forecast")
    parser.add_argument("--max-windows", type=int, default=24, help="test windows per forecasting dataset")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    start = time.perf_counter()
    data = build_data(args.work)
    jobs = []
    for dataset, spec in FORECAST_DATA.items():
        for model, config in FORECAST_MODELS.items():
            jobs.append((f"{dataset}-{model}", config, spec["file"], spec["overrides"], int(STEPS[dataset] * args.scale)))
    for dataset, file in ANOMALY_DATA.items():
        for model, config in ANOMALY_MODELS.items():
            jobs.append((f"{dataset}-{model}", config, file, [], int(STEPS[dataset] * args.scale)))
    # Longest first, so the pool ends together.
    jobs.sort(key=lambda j: -j[4] * (3 if j[2].endswith(".nc") else 1))
    with ThreadPoolExecutor(args.jobs) as pool:
        trained = {r["name"]: r for r in pool.map(lambda j: train(j, args.work, data), jobs)}
    results = {"training": trained, "forecasting": forecasting(args.work, data, trained, args.samples, args.max_windows),
               "anomaly": anomaly(args.work, data, trained)}
    report = {
        "command": "python benchmarks/timeseries.py " + " ".join(sys.argv[1:]),
        "machine": machine,
        "budget": {"steps_at_scale_1": STEPS, "scale": args.scale, "threads_per_training": 1, "parallel_trainings": args.jobs,
                   "training_minutes_total": round(sum(r["seconds"] for r in trained.values()) / 60, 1),
                   "wall_minutes": round((time.perf_counter() - start) / 60, 1),
                   "samples": args.samples, "max_windows": args.max_windows},
        "results": results,
        "targets": build_targets(results),
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
