"""Motion benchmark: text-to-motion, physics projection and pose lifting at a CPU budget.

::

    python benchmarks/motion.py [--clips 2000] [--steps 2500] [--lift-steps 3000] [--work benchmarks/scratch/motion]

Data: the procedural demo corpus, ``polydiff motion make-demo-data`` with ``--clips`` clips
(HumanML3D layout; the test split holds out action pairs and caption templates).

Training (``--threads`` CPU threads, reused from ``--work`` when it finished):

- text-to-motion diffusion, ``-c t2m`` with a smaller transformer than the bundled config
  (``--dim``, ``--ff``, 4 layers; batch ``--batch-size``), ``--steps`` optimiser steps;
- the deterministic text-to-motion regressor, ``-c t2m-regressor``: the same network, data,
  batch and steps, trained with a mean-squared error;
- the diffusion lifter (``-c lift``) and the deterministic lifter of the same size
  (``-c lift-deterministic``), ``--lift-steps`` steps each.

Evaluation on the test split, one motion per test caption at the clip's length, features from the
shipped motion-text evaluator (trained on the default demo corpus): FID, R-precision, matching
score, diversity, multimodality, foot skating, penetration and floating, for the real test
motions, the diffusion model (DDIM, ``--sample-steps`` steps, guidance 2.5) with and without the
physics projection, caption nearest-neighbour retrieval and the regressor; MPJPE and P-MPJPE of
the lifters on the test motions seen through fixed random cameras.

Writes ``benchmarks/results/motion.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine_info, write_report  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _portable(text: str) -> str:
    return text.replace(f"{ROOT}/", "")


def build_data(work: Path, clips: int) -> dict:
    done = work / "data.json"
    if done.exists():
        return json.loads(done.read_text())
    command = [sys.executable, "-m", "polydiff", "motion", "make-demo-data", str(work / "data"), "--clips", str(clips),
               "--overwrite"]
    log(f"data: {_portable(' '.join(['polydiff', *command[3:]]))}")
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"make-demo-data failed:\n{out.stderr}")
    record = json.loads(out.stdout)
    record["root"] = _portable(record["root"])
    done.write_text(json.dumps(record, indent=1) + "\n")
    return record


def train(work: Path, config: str, name: str, steps: int, threads: int, extra: list[str]) -> dict:
    run = work / name
    done = run / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    command = [sys.executable, "-m", "polydiff", "motion", "fit", "-c", config, "--data.root", str(work / "data"),
               "--seed_everything", "0", "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps),
               "--trainer.limit_val_batches", "4", "--trainer.enable_progress_bar", "false",
               "--trainer.default_root_dir", str(run), *extra]
    log(f"train {name}: {_portable(' '.join(['polydiff', *command[3:]]))}")
    run.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with open(run / "train.log", "w") as out:
        rc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        raise SystemExit(f"training {name} failed (exit status {rc}); see {run / 'train.log'}")
    ckpts = sorted(run.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    record = {"checkpoint": str(ckpts[-1].relative_to(work)), "minutes": round((time.perf_counter() - started) / 60, 1),
              "steps": steps, "threads": threads, "command": _portable(" ".join(["polydiff", *command[3:]]))}
    done.write_text(json.dumps(record, indent=1) + "\n")
    return record


def t2m_args(args: argparse.Namespace) -> list[str]:
    net = "--model.init_args.denoiser.init_args."
    return [f"{net}dim", str(args.dim), f"{net}ff", str(args.ff), f"{net}layers", "4", f"{net}heads", "4",
            "--data.init_args.batch_size", str(args.batch_size), "--model.init_args.ema_decay", "0.995",
            "--model.init_args.optimizer.init_args.lr", str(args.lr)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=2500, help="optimiser steps of each text-to-motion model")
    parser.add_argument("--lift-steps", type=int, default=3000, help="optimiser steps of each lifter")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--ff", type=int, default=256)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "scratch" / "motion")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "motion.json")
    parser.add_argument("--stage", choices=("train-diffusion", "train", "all"), default="all",
                        help="stop after training the diffusion model, after all training, or run everything")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    machine = machine_info()
    data = build_data(args.work, args.clips)
    log(f"data: {data}")
    diffusion = train(args.work, "t2m", "diffusion", args.steps, args.threads, t2m_args(args))
    log(f"diffusion: {diffusion}")
    if args.stage == "train-diffusion":
        return 0
    raise SystemExit("evaluation stages not written yet")


if __name__ == "__main__":
    raise SystemExit(main())
