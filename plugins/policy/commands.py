"""The policy plugin's own commands: ``make-demo-data`` and ``rollout``.

Each is ``fn(argv) -> exit status``, run as ``polydiff policy <command> ...``:

* ``make-demo-data OUT --episodes 200`` runs the scripted Push-T expert (a sampling planner over
  pushes, no downloads) from random initial states and writes the demonstrations as a LeRobot
  dataset in ``OUT/pusht`` (or Chi et al.'s zarr replay buffer ``OUT/pusht.zarr`` with
  ``--format zarr``), with its success rate.
* ``rollout --ckpt P.ckpt --episodes 50 --sampler ddim --steps 10 -o eval/`` rolls a trained
  policy out in Push-T (``--sampler rti --steps 3`` for real-time iteration) and writes
  ``episodes.csv``, ``metrics.json`` and a GIF of the first episodes; ``--expert`` evaluates the
  scripted expert on the same seeds instead.

Inputs are only read; outputs that exist are refused unless ``--overwrite`` is given.
Exit status: 0 success, 1 a file could not be used or an episode crashed (named, with the
reason; the other episodes still run), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["make_demo_data", "rollout", "load_policy", "format_table"]


def _fail(message: str) -> None:
    print(f"polydiff policy: error: {message}", file=sys.stderr)


def _progress_printer(label: str, enabled: bool):
    def report(done: int, total: int, *rest: Any) -> None:
        if enabled:
            print(f"\r{label}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)
    return report


# --- make-demo-data ------------------------------------------------------------------------------
def make_demo_data(argv: Sequence[str]) -> int:
    """``polydiff policy make-demo-data OUT --episodes 200``."""
    parser = argparse.ArgumentParser(
        prog="polydiff policy make-demo-data",
        description="Record Push-T demonstrations with the scripted expert (a sampling planner over pushes that "
                    "uses the simulator state; no downloads) and write them as a LeRobot dataset (OUT/pusht) or a "
                    "zarr replay buffer (OUT/pusht.zarr).",
    )
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--episodes", type=int, default=200, help="episodes to record (environment seeds SEED, SEED+1, ...)")
    parser.add_argument("--seed", type=int, default=0, help="the first environment seed")
    parser.add_argument("--format", choices=("lerobot", "zarr"), default="lerobot")
    parser.add_argument("--images", action="store_true", help="also record the 96x96 camera image of every frame")
    parser.add_argument("--keep-failures", action="store_true",
                        help="keep the expert's unsuccessful episodes (by default only successful ones are written)")
    parser.add_argument("--workers", type=int, default=0, help="processes (0: one per CPU core)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    opts = parser.parse_args(list(argv))
    if opts.episodes < 1 or opts.workers < 0:
        _fail("--episodes must be at least 1 and --workers non-negative")
        return 2
    import os

    from polydiff_policy.expert import generate_demonstrations
    from polydiff_policy.formats import write_lerobot, write_zarr

    target = opts.out / ("pusht.zarr" if opts.format == "zarr" else "pusht")
    if target.exists() and not opts.overwrite:
        _fail(f"{target} exists; pass --overwrite to replace it")
        return 1
    workers = opts.workers or (os.cpu_count() or 1)
    started = time.perf_counter()
    episodes = generate_demonstrations(opts.episodes, seed=opts.seed, workers=workers, image=opts.images,
                                       progress=_progress_printer("expert episodes", not opts.quiet))
    seconds = time.perf_counter() - started
    kept = episodes if opts.keep_failures else [e for e in episodes if e.success]
    if not kept:
        _fail("the expert solved none of the episodes; nothing written")
        return 1
    try:
        if opts.format == "zarr":
            write_zarr(target, kept, overwrite=opts.overwrite)
        else:
            write_lerobot(target, kept, overwrite=opts.overwrite)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
        return 1
    successes = sum(bool(e.success) for e in episodes)
    summary = {
        "dataset": str(target),
        "format": opts.format,
        "episodes_recorded": len(episodes),
        "episodes_written": len(kept),
        "frames_written": int(sum(len(e) for e in kept)),
        "expert_success_rate": successes / len(episodes),
        "expert_mean_max_coverage": sum(float(e.max_coverage or 0.0) for e in episodes) / len(episodes),
        "seconds": round(seconds, 1),
    }
    print(json.dumps(summary, indent=2))
    return 0


# --- loading -------------------------------------------------------------------------------------
def load_policy(path: Path, device: str = "cpu") -> Any:
    """A trained policy (diffusion or regression baseline) with its data description, in eval mode.

    Raises:
        polydiff.checkpoint.CheckpointError: not a checkpoint of this plugin, or one trained for
            another environment.
    """
    from polydiff.checkpoint import CheckpointError, load_module
    from polydiff_policy.module import ENV_ID, DiffusionPolicy

    model = load_module(path, plugin="policy", expect=DiffusionPolicy, require=("policy",))
    env = model.require_info().get("env", ENV_ID)
    if env != ENV_ID:
        raise CheckpointError(f"{path} is a policy for the environment {env!r}; rollouts here run {ENV_ID!r}")
    return model.to(device).eval()


# --- rollout -------------------------------------------------------------------------------------
def rollout(argv: Sequence[str]) -> int:
    """``polydiff policy rollout --ckpt P.ckpt --episodes 50 --sampler ddim --steps 10 -o eval/``."""
    parser = argparse.ArgumentParser(
        prog="polydiff policy rollout",
        description="Roll a trained policy out in Push-T over seeded episodes: success rate, mean maximum coverage "
                    "and action-chunk latency; writes episodes.csv, metrics.json and GIFs of the first episodes.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", type=Path, help="a trained policy checkpoint")
    source.add_argument("--expert", action="store_true", help="evaluate the scripted expert instead of a policy")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=100_000, help="the first evaluation seed")
    parser.add_argument("--sampler", choices=("ddpm", "ddim", "rti"), default="ddim",
                        help="ddpm/ddim: every chunk from noise; rti: warm-started from the previous chunk")
    parser.add_argument("--steps", type=int, default=None,
                        help="denoising steps per chunk (default: 10 for ddim, 100 for ddpm, 3 for rti)")
    parser.add_argument("--action-horizon", type=int, default=None, help="actions executed per chunk (default: the model's)")
    parser.add_argument("--rti-start", type=float, default=None,
                        help="rti: the time the warm start is re-noised to (default: where the last STEPS steps of a "
                             "10-step DDIM grid start)")
    parser.add_argument("--rti-cold-steps", type=int, default=10, help="rti: DDIM steps of an episode's first chunk")
    parser.add_argument("--discrete-dims", type=int, nargs="*", default=[], help="rti: discrete action dimensions")
    parser.add_argument("--max-steps", type=int, default=300, help="environment steps per episode")
    parser.add_argument("--videos", type=int, default=1, help="episodes written as GIFs")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overwrite", action="store_true", help="replace the results in an existing output folder")
    parser.add_argument("--quiet", action="store_true")
    opts = parser.parse_args(list(argv))
    if opts.episodes < 1 or opts.max_steps < 1 or opts.videos < 0 or opts.threads < 0:
        _fail("--episodes and --max-steps must be positive, --videos and --threads non-negative")
        return 2
    if opts.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            _fail(f"--device {opts.device}: CUDA is not available on this machine")
            return 2
    if (opts.output / "metrics.json").exists() and not opts.overwrite:
        _fail(f"{opts.output / 'metrics.json'} exists; pass --overwrite to replace the results")
        return 1
    import torch

    from polydiff_policy.rollout import evaluate, summarize, write_results

    if opts.threads:
        torch.set_num_threads(opts.threads)
    started = time.perf_counter()
    progress = _progress_printer("episodes", not opts.quiet)
    if opts.expert:
        results, videos = _expert_rollouts(opts, progress)
        setting: dict[str, Any] = {"policy": "expert"}
    else:
        from polydiff.checkpoint import CheckpointError
        from polydiff_policy.inference import ChunkRunner

        try:
            model = load_policy(opts.ckpt, device=opts.device)
        except CheckpointError as exc:
            _fail(str(exc))
            return 1
        steps = opts.steps if opts.steps is not None else {"ddim": 10, "ddpm": 100, "rti": 3}[opts.sampler]
        try:
            runner = ChunkRunner(model, opts.sampler, steps, action_horizon=opts.action_horizon, t_start=opts.rti_start,
                                 cold_steps=opts.rti_cold_steps, discrete_dims=opts.discrete_dims, seed=opts.seed)
        except ValueError as exc:
            _fail(str(exc))
            return 2
        image = bool(model.require_info().get("image_feature"))
        results, videos = evaluate(runner, episodes=opts.episodes, seed=opts.seed, image=image, max_steps=opts.max_steps,
                                   videos=opts.videos, video_dir=opts.output, progress=progress)
        kind = type(model).__name__
        setting = {"policy": kind, "checkpoint": opts.ckpt.name, "sampler": opts.sampler if kind == "DiffusionPolicy" else "regression",
                   "steps": steps if kind == "DiffusionPolicy" else 1, "action_horizon": runner.action_horizon}
        if opts.sampler == "rti":
            setting.update({"rti_start": runner.t_start, "rti_cold_steps": runner.cold_steps})
    summary = {**setting, **summarize(results), "first_seed": opts.seed, "max_steps": opts.max_steps,
               "threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - started, 1),
               "videos": [p.name for p in videos]}
    table, metrics = write_results(opts.output, results, summary)
    print(format_table([summary]))
    for r in results:
        if r.error:
            _fail(f"episode with seed {r.seed} crashed after {r.steps} steps: {r.error}")
    print(f"results in {table} and {metrics}")
    return 1 if summary["crashed"] else 0


def _expert_rollouts(opts: Any, progress: Any) -> tuple[list[Any], list[Path]]:
    from polydiff_policy.expert import run_expert_episode
    from polydiff_policy.rollout import EpisodeResult, write_gif

    results, videos = [], []
    for i in range(opts.episodes):
        seed = opts.seed + i
        started = time.perf_counter()
        try:
            episode = run_expert_episode(seed, max_steps=opts.max_steps)
            result = EpisodeResult(seed=seed, success=bool(episode.success), max_coverage=float(episode.max_coverage or 0.0),
                                   steps=len(episode), seconds=time.perf_counter() - started)
        except Exception as err:  # a crashed episode is a failure with its reason
            result = EpisodeResult(seed=seed, success=False, max_coverage=0.0, steps=0,
                                   seconds=time.perf_counter() - started,
                                   error=f"{type(err).__name__}: {err}".splitlines()[0])
        if i < opts.videos and result.error is None:
            videos.append(write_gif(opts.output / f"episode_{seed}.gif", _replay_frames(seed, episode)))
        results.append(result)
        progress(i + 1, opts.episodes, result)
    return results, videos


def _replay_frames(seed: int, episode: Any) -> list[Any]:
    """Frames of an expert episode, replayed from its actions."""
    from polydiff_policy.pusht import PushT

    env = PushT()
    try:
        env.reset(seed=seed)
        frames = [env.render()]
        for action in episode.actions:
            env.step(action)
            frames.append(env.render())
    finally:
        env.close()
    return frames


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of rollout summaries (one row each)."""
    header = f"{'policy':<18} {'sampler':<10} {'steps':>5} {'episodes':>8} {'success':>8} {'coverage':>8} {'median ms':>9} {'p95 ms':>8} {'crashed':>7}"
    lines = [header, "-" * len(header)]
    for r in rows:
        med = r.get("latency_median_ms")
        p95 = r.get("latency_p95_ms")
        lines.append(
            f"{str(r.get('label', r.get('policy', '?'))):<18} {str(r.get('sampler', '-')):<10} {str(r.get('steps', '-')):>5} "
            f"{r['episodes']:>8} {r['success_rate']:>8.3f} {r['mean_max_coverage']:>8.3f} "
            f"{(f'{med:.1f}' if med is not None else '-'):>9} {(f'{p95:.1f}' if p95 is not None else '-'):>8} {r['crashed']:>7}"
        )
    return "\n".join(lines)
