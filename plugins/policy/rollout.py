"""Evaluation by rollouts: success rate, maximum target coverage and chunk latency over seeded episodes.

Each episode starts from the environment's random initial state for its seed (evaluation seeds
default to 100000 on, away from the demonstrations' 0, 1, 2, ...). An episode succeeds when the
coverage of the goal passes the environment's threshold (95 % for Push-T) before the step limit;
its score is the highest coverage reached, the figure Diffusion Policy reports for Push-T. An
episode that raises (a policy error, a physics failure) is recorded as a failure with the reason
and the evaluation goes on.
"""

from __future__ import annotations

import csv
import json
import math
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

__all__ = ["EpisodeResult", "Controller", "rollout_episode", "evaluate", "summarize", "write_gif", "write_results"]


class Controller(Protocol):
    """What a rollout drives: ``reset(seed)`` at the start of an episode, then ``act(obs)`` per step."""

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass
class EpisodeResult:
    """One episode's outcome.

    Attributes:
        seed: the environment seed.
        success: whether the goal coverage passed the threshold.
        max_coverage: the highest coverage reached (0 if the episode crashed before any step).
        steps: environment steps taken.
        seconds: wall time of the episode.
        error: the reason, when the episode crashed (it then counts as a failure).
    """

    seed: int
    success: bool
    max_coverage: float
    steps: int
    seconds: float
    error: str | None = None
    chunk_latencies: list[float] = field(default_factory=list, repr=False)


def rollout_episode(env: Any, controller: Controller, seed: int, *, max_steps: int = 300,
                    frames: list[np.ndarray] | None = None) -> EpisodeResult:
    """Run one episode; exceptions become a failed result with the reason.

    Args:
        env: a :class:`~polydiff_policy.pusht.PushT`.
        controller: the policy.
        seed: the environment (and controller) seed.
        max_steps: the step limit.
        frames: if given, a rendered frame per step is appended (for a video).
    """
    started = time.perf_counter()
    latencies = getattr(controller, "latencies", None)
    first_latency = len(latencies) if latencies is not None else 0
    steps, best, success = 0, 0.0, False
    try:
        controller.reset(seed)
        obs = env.reset(seed=seed)
        if frames is not None:
            frames.append(env.render())
        for _ in range(max_steps):
            action = np.asarray(controller.act(obs), dtype=np.float64)
            if action.shape != (2,) or not np.isfinite(action).all():
                raise ValueError(f"the policy returned the action {action!r}, not two finite numbers")
            obs, _, done, info = env.step(action)
            steps += 1
            best = max(best, float(info["coverage"]))
            success = success or bool(info["success"])
            if frames is not None:
                frames.append(env.render())
            if done:
                break
        error = None
    except Exception as err:  # a crashed episode is a failure with its reason; the evaluation goes on
        error = f"{type(err).__name__}: {err}".splitlines()[0]
        success = False
        last = traceback.extract_tb(err.__traceback__)[-1:]
        if last:
            error += f" (at {Path(last[0].filename).name}:{last[0].lineno})"
    chunk_latencies = list(latencies[first_latency:]) if latencies is not None else []
    return EpisodeResult(seed=int(seed), success=success, max_coverage=best, steps=steps,
                         seconds=time.perf_counter() - started, error=error, chunk_latencies=chunk_latencies)


def summarize(results: list[EpisodeResult]) -> dict[str, Any]:
    """Success rate, mean maximum coverage, crash count and chunk latency (median, p95, mean) in ms."""
    n = len(results)
    latencies = np.array([x for r in results for x in r.chunk_latencies], dtype=np.float64)
    summary: dict[str, Any] = {
        "episodes": n,
        "success_rate": float(np.mean([r.success for r in results])) if n else math.nan,
        "mean_max_coverage": float(np.mean([r.max_coverage for r in results])) if n else math.nan,
        "crashed": int(sum(r.error is not None for r in results)),
        "mean_steps": float(np.mean([r.steps for r in results])) if n else math.nan,
        "chunks": int(latencies.size),
    }
    if latencies.size:
        summary.update({
            "latency_median_ms": float(np.median(latencies) * 1e3),
            "latency_p95_ms": float(np.percentile(latencies, 95) * 1e3),
            "latency_mean_ms": float(latencies.mean() * 1e3),
        })
    return summary


def evaluate(
    controller: Controller,
    *,
    episodes: int = 50,
    seed: int = 100_000,
    image: bool = False,
    max_steps: int = 300,
    videos: int = 0,
    video_dir: Path | None = None,
    progress: Callable[[int, int, EpisodeResult], None] | None = None,
) -> tuple[list[EpisodeResult], list[Path]]:
    """Roll a controller out over ``episodes`` seeded episodes (seeds ``seed``, ``seed + 1``, ...).

    Args:
        controller: the policy.
        episodes: how many episodes.
        seed: the first seed.
        image: give the controller image observations.
        max_steps: the step limit of an episode.
        videos: how many of the first episodes are written as GIFs into ``video_dir``.
        video_dir: where the GIFs go.
        progress: called after every episode with (done, total, result).

    Returns:
        The per-episode results and the video files written.
    """
    from polydiff_policy.pusht import PushT

    env = PushT(image=image, max_steps=max_steps)
    written: list[Path] = []
    results: list[EpisodeResult] = []
    try:
        for i in range(episodes):
            frames: list[np.ndarray] | None = [] if i < videos and video_dir is not None else None
            result = rollout_episode(env, controller, seed + i, max_steps=max_steps, frames=frames)
            results.append(result)
            if frames:
                path = Path(video_dir) / f"episode_{seed + i}.gif"
                write_gif(path, frames)
                written.append(path)
            if progress is not None:
                progress(i + 1, episodes, result)
    finally:
        env.close()
    return results, written


def write_gif(path: Path, frames: list[np.ndarray], *, fps: int = 10, size: int = 256) -> Path:
    """Write RGB frames (H, W, 3) uint8 as an animated GIF, resized to ``size`` pixels."""
    from PIL import Image

    if not frames:
        raise ValueError("no frames to write")
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)).resize((size, size), Image.BILINEAR) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0, optimize=False)
    return path


def write_results(out_dir: Path, results: list[EpisodeResult], summary: dict[str, Any]) -> tuple[Path, Path]:
    """``episodes.csv`` (one row per episode) and ``metrics.json`` (the summary) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "episodes.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seed", "success", "max_coverage", "steps", "seconds", "chunks", "median_chunk_ms", "error"])
        for r in results:
            lat = np.median(r.chunk_latencies) * 1e3 if r.chunk_latencies else float("nan")
            writer.writerow([r.seed, int(r.success), f"{r.max_coverage:.4f}", r.steps, f"{r.seconds:.3f}",
                             len(r.chunk_latencies), f"{lat:.2f}", r.error or ""])
    metrics = out_dir / "metrics.json"
    metrics.write_text(json.dumps(summary, indent=2) + "\n")
    return table, metrics


def result_rows(results: list[EpisodeResult]) -> list[dict[str, Any]]:
    """Plain dicts of the results (without the per-chunk latencies)."""
    rows = []
    for r in results:
        row = asdict(r)
        row.pop("chunk_latencies")
        rows.append(row)
    return rows
