"""Policy benchmark: Diffusion Policy on Push-T at a CPU budget, with RTI-DP inference and baselines.

::

    python benchmarks/policy.py [--demos 200] [--steps 6000] [--episodes 50] [--work benchmarks/scratch/policy]

Data: ``--demos`` episodes of the scripted expert (environment seeds 0, 1, ...), only the
successful ones kept, written as a LeRobot dataset.

Training (the same data and number of optimiser steps for both, ``--threads`` CPU threads):

- Diffusion Policy, ``-c pusht`` (CNN variant, 1D temporal U-Net with FiLM, level widths
  ``--down-dims``; low-dimensional observations: agent position and the T's 8 corners),
  ``--steps`` steps of ``--batch-size`` chunks;
- the MLP behaviour-cloning baseline, ``-c pusht-mlp`` (MSE on the same chunks), the same steps.

Evaluation: ``--episodes`` seeded episodes (seeds 100000, 100001, ...; never demonstrated), the
same seeds for every policy; success (coverage > 95 %), mean maximum coverage, and the latency of
every action chunk (median and p95, batch 1, ``--eval-threads`` threads, ``--parallel`` rollout
processes at a time). Policies: DDPM over the full 100-step grid (``--ddpm-episodes``), DDIM with 10 steps, RTI with 1, 2 and 3 warm-started steps, the MLP baseline,
and the expert itself.

Training is reused from ``--work`` when it finished. Writes ``benchmarks/results/policy.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import log, machine_info, make_demo_data, train_once, write_report  # noqa: E402
from common import portable as _portable  # noqa: E402


def build_data(work: Path, demos: int) -> dict:
    return make_demo_data("policy", work, ["--episodes", str(demos), "--overwrite", "--quiet"], "dataset")


def train(work: Path, config: str, name: str, steps: int, threads: int, extra: list[str]) -> dict:
    return train_once("policy", work, config, name, steps, threads,
                      ["--data.path", str(work / "data" / "pusht"),
                       "--model.init_args.lr_scheduler.init_args.T_max", str(steps), *extra])


def rollout_command(work: Path, name: str, args: list[str], episodes: int, threads: int) -> list[str]:
    return [sys.executable, "-m", "polydiff", "policy", "rollout", *args, "-o", str(work / f"eval-{name}"),
            "--episodes", str(episodes), "--threads", str(threads), "--quiet", "--overwrite"]


def run_rollouts(work: Path, plan: dict[str, tuple[list[str], int]], threads: int, parallel: int) -> dict:
    """Every planned rollout (reusing finished ones), ``parallel`` processes at a time."""
    results, pending = {}, []
    for name, (args, episodes) in plan.items():
        metrics = work / f"eval-{name}" / "metrics.json"
        if metrics.exists():
            results[name] = json.loads(metrics.read_text())
        else:
            pending.append((name, rollout_command(work, name, args, episodes, threads)))
    running: list[tuple[str, list[str], subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < parallel:
            name, command = pending.pop(0)
            log(f"rollout {name}: {_portable(' '.join(['polydiff', *command[3:]]))}")
            running.append((name, command, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
        time.sleep(1.0)
        for item in list(running):
            name, command, proc = item
            if proc.poll() is None:
                continue
            running.remove(item)
            metrics = work / f"eval-{name}" / "metrics.json"
            if not metrics.exists():
                raise SystemExit(f"rollout {name} failed (exit status {proc.returncode}):\n{proc.stderr.read()[-2000:]}")
            row = json.loads(metrics.read_text())
            row["command"] = _portable(" ".join(["polydiff", *command[3:]]).replace(str(work) + "/", "WORK/"))
            metrics.write_text(json.dumps(row, indent=2) + "\n")
            results[name] = row
            log(f"  {name}: success {row['success_rate']:.3f} coverage {row['mean_max_coverage']:.3f} "
                f"latency {row.get('latency_median_ms', float('nan')):.1f} ms")
    return {name: results[name] for name in plan}


def build_targets(results: dict) -> list[dict]:
    ddim, mlp = results["ddim10"], results["mlp"]
    targets = [dict(name="diffusion policy (DDIM-10) success rate > MLP baseline success rate",
                    value=ddim["success_rate"], threshold=mlp["success_rate"],
                    met=bool(ddim["success_rate"] > mlp["success_rate"]))]
    for k in (1, 2, 3):
        rti = results[f"rti{k}"]
        speedup = ddim["latency_median_ms"] / rti["latency_median_ms"]
        targets.append(dict(name=f"RTI-{k} median chunk latency speed-up over DDIM-10 >= 3x",
                            value=round(speedup, 2), threshold=3.0, met=bool(speedup >= 3.0)))
        gap = ddim["success_rate"] - rti["success_rate"]
        targets.append(dict(name=f"RTI-{k} success rate within 5 points of DDIM-10 (DDIM-10 minus RTI-{k})",
                            value=round(gap, 3), threshold=0.05, met=bool(gap <= 0.05)))
    return targets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demos", type=int, default=200)
    parser.add_argument("--steps", type=int, default=6000, help="optimiser steps of each policy")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64, help="chunks per optimiser step")
    parser.add_argument("--down-dims", type=int, nargs="+", default=[32, 64, 128], help="the U-Net's level widths")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for training")
    parser.add_argument("--eval-threads", type=int, default=1, help="CPU threads for rollouts (batch-1 inference)")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "scratch" / "policy")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "policy.json")
    parser.add_argument("--ddpm-episodes", type=int, default=20,
                        help="episodes of the full 100-step DDPM rollout (a second per chunk on a CPU)")
    parser.add_argument("--parallel", type=int, default=2, help="rollout processes at a time")
    parser.add_argument("--skip", nargs="*", default=[], help="evaluation rows to skip (e.g. ddpm100)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    machine = machine_info()
    data = build_data(args.work, args.demos)
    log(f"data: {data}")
    batch = ["--data.init_args.batch_size", str(args.batch_size)]
    dp = train(args.work, "pusht", "diffusion", args.steps, args.threads,
               ["--model.init_args.denoiser.init_args.down_dims", json.dumps(args.down_dims), *batch])
    mlp = train(args.work, "pusht-mlp", "mlp", args.steps, args.threads, batch)
    dp_ckpt, mlp_ckpt = str(args.work / dp["checkpoint"]), str(args.work / mlp["checkpoint"])
    n, videos = args.episodes, ["--videos", "1"]
    plan = {
        "expert": (["--expert", *videos], n),
        "mlp": (["--ckpt", mlp_ckpt, *videos], n),
        "ddim10": (["--ckpt", dp_ckpt, "--sampler", "ddim", "--steps", "10", *videos], n),
        "rti1": (["--ckpt", dp_ckpt, "--sampler", "rti", "--steps", "1", "--videos", "0"], n),
        "rti2": (["--ckpt", dp_ckpt, "--sampler", "rti", "--steps", "2", "--videos", "0"], n),
        "rti3": (["--ckpt", dp_ckpt, "--sampler", "rti", "--steps", "3", *videos], n),
        "ddpm100": (["--ckpt", dp_ckpt, "--sampler", "ddpm", "--steps", "100", "--videos", "0"], args.ddpm_episodes),
    }
    plan = {k: v for k, v in plan.items() if k not in args.skip}
    results = run_rollouts(args.work, plan, args.eval_threads, args.parallel)
    from polydiff_policy.commands import format_table

    print(format_table([{**row, "label": name} for name, row in results.items()]))
    report = {
        "command": "python benchmarks/policy.py " + " ".join(sys.argv[1:]),
        "machine": machine,
        "budget": {"demos": args.demos, "train_steps": args.steps, "batch_size": args.batch_size,
                   "unet_down_dims": args.down_dims, "train_threads": args.threads,
                   "eval_threads": args.eval_threads, "parallel_rollouts": args.parallel, "episodes": args.episodes,
                   "ddpm_episodes": args.ddpm_episodes,
                   "train_minutes": {"diffusion": dp["minutes"], "mlp": mlp["minutes"]},
                   "total_minutes": round((time.perf_counter() - started) / 60, 1)},
        "results": {"data": data, "training": {"diffusion": dp, "mlp": mlp}, "rollouts": results},
        "targets": build_targets(results),
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
