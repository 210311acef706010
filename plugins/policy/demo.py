"""The policy part of ``polydiff quickstart``: a short Diffusion Policy training on scripted Push-T demos.

Records a few dozen demonstrations with the scripted expert (no downloads), writes them as a
LeRobot dataset, trains a small Diffusion Policy and the MSE behaviour-cloning baseline for a few
hundred steps each, rolls both out on seeded episodes (DDIM with 10 steps and real-time iteration
with 2 steps for the diffusion policy), and writes a GIF of an episode and the metric table.
Minutes of CPU training give a policy far from converged: the point is the whole path, with
honest figures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["run_demo"]

_DEMO_ARGS = [
    "--model.init_args.denoiser.init_args.down_dims", "[32, 64, 128]",
    "--model.init_args.ema_decay", "0.99",
    "--data.init_args.batch_size", "128",
]


def run_demo(out_dir: Path, *, progress: bool = True, max_steps: int = 600, seed: int = 0, demos: int = 24,
             episodes: int = 4) -> dict[str, Any]:
    """Record demos, train briefly, roll out, and compare with the expert and the MLP baseline.

    Args:
        out_dir: everything is written here (``data/pusht``, ``run/``, ``run-mlp/``, ``eval-*/``
            with ``episodes.csv``, ``metrics.json`` and GIFs, and ``metrics.json``).
        progress: show progress bars.
        max_steps: training steps of each policy.
        seed: seed of the demonstrations, the training and the rollouts.
        demos: expert episodes recorded.
        episodes: evaluation episodes per policy.

    Returns:
        Success rate and mean maximum coverage of the expert, the diffusion policy (DDIM-10 and
        RTI-2) and the MLP baseline, the chunk latencies, and the run's details.
    """
    from polydiff.cli import fit_for_demo
    from polydiff_policy import commands

    started = time.perf_counter()
    out_dir = Path(out_dir)
    data = out_dir / "data" / "pusht"
    if not data.exists():
        status = commands.make_demo_data([str(out_dir / "data"), "--episodes", str(demos), "--seed", str(seed),
                                          *([] if progress else ["--quiet"])])
        if status != 0:
            raise RuntimeError(f"make-demo-data failed (exit status {status})")
    steps_arg = ["--model.init_args.lr_scheduler.init_args.T_max", str(max_steps)]
    ckpt = fit_for_demo("policy", "pusht", out_dir / "run", max_steps=max_steps, seed=seed, progress=progress,
                        args=["--data.path", str(data), *_DEMO_ARGS, *steps_arg])
    mlp = fit_for_demo("policy", "pusht-mlp", out_dir / "run-mlp", max_steps=max_steps, seed=seed, progress=progress,
                       args=["--data.path", str(data), "--model.init_args.denoiser.init_args.hidden", "[256, 256]",
                             "--model.init_args.ema_decay", "0.99", "--data.init_args.batch_size", "128", *steps_arg])
    runs = {
        "ddim10": ["--ckpt", str(ckpt), "--sampler", "ddim", "--steps", "10"],
        "rti2": ["--ckpt", str(ckpt), "--sampler", "rti", "--steps", "2", "--videos", "0"],
        "mlp": ["--ckpt", str(mlp), "--videos", "0"],
        "expert": ["--expert", "--videos", "0"],
    }
    rows = []
    metrics: dict[str, Any] = {}
    for name, extra in runs.items():
        target = out_dir / f"eval-{name}"
        status = commands.rollout([*extra, "-o", str(target), "--episodes", str(episodes), "--seed", str(100_000 + seed),
                                   "--overwrite", "--quiet"])
        if status != 0:
            raise RuntimeError(f"rollout {name} failed (exit status {status}); see {target / 'episodes.csv'}")
        row = json.loads((target / "metrics.json").read_text())
        rows.append({**row, "label": name})
        metrics[f"success_{name}"] = round(row["success_rate"], 3)
        metrics[f"coverage_{name}"] = round(row["mean_max_coverage"], 3)
        if "latency_median_ms" in row:
            metrics[f"latency_ms_{name}"] = round(row["latency_median_ms"], 2)
    table = commands.format_table(rows)
    (out_dir / "table.txt").write_text(table + "\n")
    if progress:
        print(table)
    gifs = sorted((out_dir / "eval-ddim10").glob("*.gif"))
    metrics["video"] = str(gifs[0].relative_to(out_dir)) if gifs else None
    metrics["demos"] = demos
    metrics["train_steps"] = max_steps
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
