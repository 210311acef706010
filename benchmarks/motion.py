"""Motion benchmark: text-to-motion, physics projection and pose lifting at a CPU budget.

::

    python benchmarks/motion.py [--clips 2000] [--steps 1000] [--lift-steps 3000] [--work benchmarks/scratch/motion]

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

from common import log, machine_info, make_demo_data, train_once, write_report  # noqa: E402
from common import portable as _portable  # noqa: E402


def build_data(work: Path, clips: int) -> dict:
    return make_demo_data("motion", work, ["--clips", str(clips), "--overwrite"], "root")


def train(work: Path, config: str, name: str, steps: int, threads: int, extra: list[str]) -> dict:
    return train_once("motion", work, config, name, steps, threads, ["--data.root", str(work / "data"), *extra])


def t2m_args(args: argparse.Namespace) -> list[str]:
    net = "--model.init_args.denoiser.init_args."
    return [f"{net}dim", str(args.dim), f"{net}ff", str(args.ff), f"{net}layers", "4", f"{net}heads", "4",
            "--data.init_args.batch_size", str(args.batch_size), "--model.init_args.ema_decay", "0.995",
            "--model.init_args.optimizer.init_args.lr", str(args.lr)]


def lift_args(args: argparse.Namespace) -> list[str]:
    return ["--model.init_args.lr_scheduler.init_args.T_max", str(args.lift_steps)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=1000, help="optimiser steps of each text-to-motion model")
    parser.add_argument("--lift-steps", type=int, default=4000, help="optimiser steps of each lifter")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--ff", type=int, default=256)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sample-steps", type=int, default=20,
                        help="DDIM steps at evaluation (the model's default is 50; 20 keeps the CPU evaluation short)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hypotheses", type=int, default=10, help="hypotheses of the diffusion lifter")
    parser.add_argument("--repeats", type=int, default=5, help="motions per text for multimodality (20 texts)")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "scratch" / "motion")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "motion.json")
    parser.add_argument("--stage", choices=("train-diffusion", "train-regressor", "train-lifters", "all"), default="all",
                        help="only train one model (to run trainings side by side), or run everything")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    machine = machine_info()
    data = build_data(args.work, args.clips)
    log(f"data: {data}")
    if args.stage == "train-lifters":
        for config, name in (("lift", "lifter"), ("lift-deterministic", "lifter-deterministic")):
            log(f"{name}: {train(args.work, config, name, args.lift_steps, args.threads, lift_args(args))}")
        return 0
    if args.stage == "train-regressor":
        log(f"regressor: {train(args.work, 't2m-regressor', 'regressor', args.steps, args.threads, t2m_args(args))}")
        return 0
    diffusion = train(args.work, "t2m", "diffusion", args.steps, args.threads, t2m_args(args))
    log(f"diffusion: {diffusion}")
    if args.stage == "train-diffusion":
        return 0
    regressor = train(args.work, "t2m-regressor", "regressor", args.steps, args.threads, t2m_args(args))
    lifters = {name: train(args.work, config, name, args.lift_steps, args.threads, lift_args(args))
               for config, name in (("lift", "lifter"), ("lift-deterministic", "lifter-deterministic"))}

    t2m_rows = {}
    for name, ckpt, extra in (("diffusion", diffusion["checkpoint"], ["--physics", "--baseline", "retrieval",
                                                                      "--repeats", str(args.repeats), "--mm-texts", "10"]),
                              ("regressor", regressor["checkpoint"], [])):
        rows = evaluate_t2m(args.work, name, ckpt, args.sample_steps, args.threads, extra)
        t2m_rows.update(rows)
    lifting = evaluate_lifters(args.work, lifters, args.hypotheses, args.threads)
    timelines = evaluate_timelines(args.work, diffusion["checkpoint"], args.sample_steps, args.threads)
    results = {"data": data, "training": {"diffusion": diffusion, "regressor": regressor, **lifters},
               "text_to_motion": t2m_rows, "lifting": lifting, "timelines": timelines}
    report = {
        "command": "python benchmarks/motion.py " + " ".join(sys.argv[1:]),
        "machine": machine,
        "budget": {"clips": args.clips, "t2m_steps": args.steps, "lift_steps": args.lift_steps, "dim": args.dim,
                   "ff": args.ff, "layers": 4, "batch_size": args.batch_size, "lr": args.lr,
                   "sample_steps": args.sample_steps, "hypotheses": args.hypotheses, "threads": args.threads,
                   "train_minutes": {k: v["minutes"] for k, v in results["training"].items()},
                   "total_minutes_this_run": round((time.perf_counter() - started) / 60, 1)},
        "results": results,
        "targets": build_targets(t2m_rows, lifting),
    }
    write_report(args.out, report)
    return 0


def evaluate_t2m(work: Path, name: str, ckpt: str, steps: int, threads: int, extra: list[str]) -> dict:
    out = work / f"eval-{name}.json"
    if not out.exists():
        command = [sys.executable, "-m", "polydiff", "motion", "evaluate", "--ckpt", str(work / ckpt), "--data.root",
                   str(work / "data"), "--steps", str(steps), "-o", str(out), "--overwrite", *extra]
        log(f"evaluate {name}: {_portable(' '.join(['polydiff', *command[3:]]))}")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        started = time.perf_counter()
        rc = subprocess.run(command, env=env).returncode
        if rc != 0:
            raise SystemExit(f"evaluating {name} failed (exit status {rc})")
        record = json.loads(out.read_text())
        record["settings"]["command"] = _portable(" ".join(["polydiff", *command[3:]]))
        record["settings"]["minutes"] = round((time.perf_counter() - started) / 60, 1)
        out.write_text(json.dumps(record, indent=1) + "\n")
    record = json.loads(out.read_text())
    rows = {}
    for label, row in record["rows"].items():
        key = {"MotionDiffusion": "diffusion", "MotionDiffusion + physics": "diffusion + physics",
               "MotionRegressor": "regressor", "retrieval": "retrieval", "real (test)": "real"}.get(label, label)
        rows[key] = {**row, "evaluated_by": record["settings"].get("command")}
    return rows


def evaluate_lifters(work: Path, lifters: dict, hypotheses: int, threads: int) -> dict:
    import torch

    from polydiff_motion.lifting import LiftingDataModule, evaluate_lifter, load_lifter

    torch.set_num_threads(threads)
    out = {}
    for name, record in lifters.items():
        model = load_lifter(work / record["checkpoint"])
        info = model.require_info()
        data = LiftingDataModule(str(work / "data"), window=int(info["window"]))
        started = time.perf_counter()
        h = 1 if name == "lifter-deterministic" else hypotheses
        aggregates = ("mean",) if h == 1 else ("mean", "reprojection", "pose")
        result = evaluate_lifter(model, data, hypotheses=h, aggregates=aggregates, split="test", seed=0)
        result["seconds"] = round(time.perf_counter() - started, 1)
        log(f"lifting {name}: {result}")
        out[name] = result
    return out


#: Single-action prompts in the corpus's wording, for the timeline evaluation.
_ACTIONS = {
    "walk": "a person walks forward", "run": "a person runs forward", "jump": "a person jumps twice",
    "sit": "a person sits down", "crouch": "a person crouches down", "kick": "a person kicks with the right leg once",
    "turn": "a person turns left", "idle": "a person stands still",
}
_ARMS = {"wave_r": ("a person waves with the right hand", ["right_arm"]),
         "wave_l": ("a person waves with the left hand", ["left_arm"]),
         "raise": ("a person raises both arms", ["arms"])}


def make_timelines(seed: int = 0, count: int = 24) -> list[dict]:
    """Two-prompt timelines: half sequential (two actions one after the other, full body), half
    simultaneous (walking or standing legs with an arm prompt over part of it)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    timelines = []
    names = list(_ACTIONS)
    for k in range(count):
        if k % 2 == 0:
            a, b = rng.choice(names, size=2, replace=False)
            first = float(rng.uniform(2.5, 3.5))
            timelines.append({"duration": first + 3.0, "intervals": [
                {"text": _ACTIONS[a], "start": 0.0, "end": first, "body_parts": ["full_body"]},
                {"text": _ACTIONS[b], "start": first, "end": first + 3.0, "body_parts": ["full_body"]}]})
        else:
            legs = _ACTIONS[str(rng.choice(["walk", "idle"]))]
            text, parts = _ARMS[str(rng.choice(list(_ARMS)))]
            timelines.append({"duration": 6.0, "intervals": [
                {"text": legs, "start": 0.0, "end": 6.0, "body_parts": ["lower_body"]},
                {"text": text, "start": 1.5, "end": 4.5, "body_parts": parts}]})
    return timelines


def evaluate_timelines(work: Path, ckpt: str, steps: int, threads: int) -> dict:
    """Per-interval R-precision of STMC and of the single joined prompt on the same timelines."""
    import numpy as np
    import torch

    from polydiff_motion.commands import load_motion_model
    from polydiff_motion.control import parse_timeline
    from polydiff_motion.evaluation import interval_r_precision, load_evaluator
    from polydiff_motion.text import get_encoder

    out = work / "eval-timelines.json"
    if out.exists():
        return json.loads(out.read_text())
    torch.set_num_threads(threads)
    started = time.perf_counter()
    model = load_motion_model(work / ckpt)
    evaluator = load_evaluator()
    encoder = get_encoder(model.require_info()["text_encoder"])
    fps = float(model.require_info()["fps"])
    specs = make_timelines()
    pool = list(dict.fromkeys([*_ACTIONS.values(), *(t for t, _ in _ARMS.values())]))
    scores: dict[str, list] = {"stmc": [], "joined": []}
    for index, spec in enumerate(specs):
        timeline = parse_timeline(spec, f"timeline {index}")
        texts = [i.text for i in timeline.intervals]
        emb = torch.from_numpy(encoder.encode(texts + [timeline.joined_text]))
        generator = torch.Generator().manual_seed(index)
        stmc = model.generate_timeline(timeline, emb[:-1], emb[-1], steps=steps, generator=generator)[0]
        generator = torch.Generator().manual_seed(index)
        frames = torch.tensor([timeline.frames(fps)])
        joined = model.generate(emb[-1:], frames, steps=steps, generator=generator)[0]
        intervals = [(i.start, i.end, i.text) for i in timeline.intervals]
        for name, motion in (("stmc", stmc), ("joined", joined)):
            scores[name].append(interval_r_precision(evaluator, motion.numpy(), intervals, pool, fps=fps))
    result = {"timelines": len(specs), "pool": len(pool), "sample_steps": steps,
              "seconds": round(time.perf_counter() - started, 1)}
    for name, rows in scores.items():
        for k in (1, 3):
            result[f"{name}_interval_top{k}"] = float(np.mean([r[f"top{k}"] for r in rows]))
    log(f"timelines: {result}")
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def _target(name: str, value: float, threshold: float, met: bool) -> dict:
    return {"name": name, "value": value, "threshold": threshold, "met": bool(met)}


def build_targets(rows: dict, lifting: dict) -> list[dict]:
    real, dm, phys = rows["real"], rows["diffusion"], rows["diffusion + physics"]
    targets = [
        _target("FID: diffusion below caption retrieval", dm["fid"], rows["retrieval"]["fid"],
                dm["fid"] < rows["retrieval"]["fid"]),
        _target("FID: diffusion below the deterministic regressor", dm["fid"], rows["regressor"]["fid"],
                dm["fid"] < rows["regressor"]["fid"]),
        _target("diversity within 10% of the test set's (relative difference)",
                abs(dm["diversity"] - real["diversity"]) / real["diversity"], 0.10,
                abs(dm["diversity"] - real["diversity"]) <= 0.10 * real["diversity"]),
    ]
    for key, label in (("skate_ratio", "foot-skate ratio"), ("penetration_mean", "mean penetration")):
        ratio = phys[key] / dm[key] if dm[key] > 0 else (0.0 if phys[key] == 0 else float("inf"))
        targets.append(_target(f"projection: {label} with / without (ratio)", ratio, 0.5, ratio <= 0.5))
    targets.append(_target("projection: FID with / without (ratio)", phys["fid"] / max(dm["fid"], 1e-12), 1.10,
                           phys["fid"] <= 1.10 * dm["fid"]))
    det = lifting["lifter-deterministic"]["mean_mpjpe_mm"]
    diff = lifting["lifter"]
    best_agg = min(("mean", "reprojection", "pose"), key=lambda k: diff.get(f"{k}_mpjpe_mm", float("inf")))
    targets.append(_target(f"lifting MPJPE (mm): diffusion, {diff['hypotheses']} hypotheses aggregated by "
                           f"'{best_agg}' (no ground truth used), below the deterministic lifter",
                           diff[f"{best_agg}_mpjpe_mm"], det, diff[f"{best_agg}_mpjpe_mm"] < det))
    targets.append(_target(f"lifting MPJPE (mm): diffusion, best of {diff['hypotheses']} hypotheses (the "
                           "multi-hypothesis protocol), below the deterministic lifter", diff["best_mpjpe_mm"], det,
                           diff["best_mpjpe_mm"] < det))
    return targets


if __name__ == "__main__":
    raise SystemExit(main())
