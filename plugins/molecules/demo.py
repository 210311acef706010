"""The molecules part of ``polydiff quickstart``: a short Graph DiT training on RDKit's molecules.

Builds the demo data from the molecule sets RDKit ships (a few thousand real molecules, no
downloads), trains a small conditional graph-diffusion model for a few hundred steps, generates
molecules unconditionally and conditioned on QED and logP, and writes the SMILES, a PNG grid and
the metric table beside the training marginals baseline. A few minutes of CPU training give a
model far from converged: the point is the whole path, with honest figures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["run_demo"]


#: The demo's network: small enough to train a few hundred steps in a minute or two on a CPU.
_DEMO_ARGS = [
    "--data.init_args.conditions", "[qed, logp]",
    "--model.init_args.denoiser.init_args.hidden_nodes", "64",
    "--model.init_args.denoiser.init_args.hidden_edges", "16",
    "--model.init_args.denoiser.init_args.hidden_graph", "64",
    "--model.init_args.denoiser.init_args.layers", "3",
    "--model.init_args.denoiser.init_args.heads", "4",
    "--model.init_args.val_samples", "0",
    "--model.init_args.ema_decay", "0.99",
    "--model.init_args.optimizer.init_args.lr", "2.0e-3",
]


def run_demo(out_dir: Path, *, progress: bool = True, max_steps: int = 400, seed: int = 0,
             per_source: int = 1500, samples: int = 64, sample_steps: int = 50) -> dict[str, Any]:
    """Train briefly on RDKit's molecules, generate, and score against the marginal baseline.

    Args:
        out_dir: everything is written here (``data/``, ``run/``, ``generated.csv``,
            ``conditional.csv``, ``baseline.csv`` and a PNG grid beside each (``generated.csv.png``, ...), ``metrics.json``).
        progress: show progress bars.
        max_steps: training steps.
        seed: seed of the data split, the training and the sampling.
        per_source: molecules read from each RDKit set.
        samples: molecules generated per run (model, conditional, baseline).
        sample_steps: sampling steps.

    Returns:
        Validity, uniqueness, novelty and connectedness of the model's and the baseline's
        molecules, the QED/logP MAE of conditional and unconditional samples, and the run's
        details.
    """
    from polydiff.cli import fit_for_demo
    from polydiff_molecules import commands
    from polydiff_molecules.demo_data import build_demo_data

    started = time.perf_counter()
    out_dir = Path(out_dir)
    data = out_dir / "data"
    if not (data / "train.csv").exists():
        build_demo_data(data, seed=seed, overwrite=True, limit=per_source)
    ckpt = fit_for_demo("molecules", "graph-dit", out_dir / "run", max_steps=max_steps, seed=seed, progress=progress,
                        args=["--data.path", str(data / "train.csv"), *_DEMO_ARGS])

    runs = {
        "generated": ["-n", str(samples)],
        "conditional": ["-n", str(samples), "--condition", "qed=0.8", "--condition", "logp=2.5", "--guidance", "2"],
        "baseline": ["-n", str(samples), "--baseline", "marginal"],
    }
    for name, extra in runs.items():
        status = commands.generate(["--ckpt", str(ckpt), "-o", str(out_dir / f"{name}.csv"), "--steps", str(sample_steps),
                                    "--seed", str(seed), "--overwrite", *extra])
        if status != 0:
            raise RuntimeError(f"generate {name} failed (exit status {status})")
    report = out_dir / "metrics-table.json"
    status = commands.evaluate([str(out_dir / f"{name}.csv") for name in runs] + [
        "--reference", str(data / "train.csv"), "--condition", "qed=0.8", "--condition", "logp=2.5",
        "--json", str(report), "--overwrite", "--max-kl-molecules", "2000"])
    if status != 0:
        raise RuntimeError(f"evaluate failed (exit status {status})")
    table = json.loads(report.read_text())
    metrics: dict[str, Any] = {}
    for path, row in table.items():
        name = Path(path).stem
        for key in ("validity", "uniqueness", "novelty", "connected", "mae_qed", "mae_logp"):
            value = row.get(key)
            metrics[f"{key}_{name}"] = None if value is None else round(float(value), 3)
    metrics["train_steps"] = max_steps
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
