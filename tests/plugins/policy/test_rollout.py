"""Rollout evaluation: one episode's bookkeeping, crashes as failures, the summary and the files.

``rollout_episode`` runs against a scripted fake environment whose coverage per step is given,
so steps, maximum coverage, success and the crash reasons are known exactly; ``evaluate`` runs
the real Push-T for a few steps to show that a crashed episode does not stop the others. The
summary's figures are computed by hand from made-up results.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from polydiff_policy.rollout import (
    EpisodeResult,
    evaluate,
    result_rows,
    rollout_episode,
    summarize,
    write_gif,
    write_results,
)


class FakeEnv:
    """Coverage ``coverage[k]`` after step k; done (and a success) once it passes 0.95."""

    def __init__(self, coverage):
        self.coverage = list(coverage)
        self.actions: list[np.ndarray] = []
        self.seeds: list[int] = []
        self.k = 0

    def reset(self, seed=None):
        self.seeds.append(seed)
        self.k = 0
        return {"agent_pos": np.array([0.0, 0.0])}

    def step(self, action):
        self.actions.append(np.array(action))
        cov = self.coverage[self.k]
        self.k += 1
        success = cov > 0.95
        return {"agent_pos": np.array([float(self.k), 0.0])}, min(cov / 0.95, 1.0), success, \
            {"coverage": cov, "success": success}

    def render(self):
        return np.full((4, 4, 3), self.k, dtype=np.uint8)


class Scripted:
    """Returns ``action(k)`` at step k (may raise); records a fake latency per step."""

    def __init__(self, action=lambda k: np.array([100.0, 200.0])):
        self.action = action
        self.k = 0
        self.latencies: list[float] = [9.0]  # from an earlier episode: not this one's
        self.seeds: list = []

    def reset(self, seed=None):
        self.seeds.append(seed)
        self.k = 0

    def act(self, observation):
        self.latencies.append(0.001 * (self.k + 1))
        action = self.action(self.k)
        self.k += 1
        return action


def test_an_episode_to_the_step_limit():
    env, controller = FakeEnv([0.1, 0.5, 0.3, 0.2]), Scripted()
    frames: list = []
    result = rollout_episode(env, controller, 7, max_steps=3, frames=frames)
    assert (result.seed, result.success, result.max_coverage, result.steps, result.error) == (7, False, 0.5, 3, None)
    assert env.seeds == [7] and controller.seeds == [7]
    assert len(frames) == 4 and [int(f[0, 0, 0]) for f in frames] == [0, 1, 2, 3]
    assert result.chunk_latencies == [0.001, 0.002, 0.003]
    assert result.seconds >= 0
    assert all(a.dtype == np.float64 for a in env.actions)


def test_an_episode_ends_at_success():
    result = rollout_episode(FakeEnv([0.2, 0.97, 0.99]), Scripted(), 1, max_steps=10)
    assert (result.success, result.max_coverage, result.steps, result.error) == (True, 0.97, 2, None)


def test_a_controller_that_raises_is_a_failure_with_the_reason():
    def explode(k):
        if k == 2:
            raise RuntimeError("policy exploded\nsecond line")
        return np.array([1.0, 2.0])

    frames: list = []
    result = rollout_episode(FakeEnv([0.4, 0.6, 0.8]), Scripted(explode), 3, max_steps=10, frames=frames)
    assert (result.success, result.max_coverage, result.steps) == (False, 0.6, 2)
    assert result.error.startswith("RuntimeError: policy exploded (at test_rollout.py:")
    assert "second line" not in result.error
    assert len(frames) == 3


@pytest.mark.parametrize("action, shown", [(np.array([np.nan, 1.0]), "nan"), (np.array([np.inf, 1.0]), "inf"),
                                           (np.array([1.0, 2.0, 3.0]), "3.")])
def test_a_bad_action_is_a_failure_with_the_reason(action, shown):
    result = rollout_episode(FakeEnv([0.3, 0.4]), Scripted(lambda k: action if k == 1 else np.zeros(2)), 0,
                             max_steps=5)
    assert not result.success and result.steps == 1 and result.max_coverage == 0.3
    assert result.error.startswith("ValueError: the policy returned the action array(")
    assert "not two finite numbers (at rollout.py:" in result.error and shown in result.error


def test_a_crash_after_success_is_still_a_failure():
    class Env(FakeEnv):
        def step(self, action):
            if self.k == 1:
                raise RuntimeError("physics")
            obs, reward, _, info = super().step(action)
            return obs, reward, False, {**info, "success": True}  # success reported, episode goes on

    result = rollout_episode(Env([0.96, 0.97]), Scripted(), 0, max_steps=5)
    assert result.success is False and result.error.startswith("RuntimeError: physics")


def test_a_controller_without_latencies():
    class Plain:
        def reset(self, seed=None):
            pass

        def act(self, observation):
            return [1.0, 1.0]

    assert rollout_episode(FakeEnv([0.1]), Plain(), 0, max_steps=1).chunk_latencies == []


# --- evaluation in Push-T ---------------------------------------------------------------------------
def test_evaluate_goes_on_after_a_crashed_episode(tmp_path):
    pytest.importorskip("gym_pusht")

    class Controller(Scripted):
        def act(self, observation):
            assert set(observation) >= {"agent_pos", "environment_state", "block_pose"}
            if self.seeds[-1] == 11 and self.k == 2:
                raise ValueError("bad seed")
            return super().act(observation)

    seen = []
    results, videos = evaluate(Controller(), episodes=3, seed=10, max_steps=4, videos=1, video_dir=tmp_path,
                               progress=lambda done, total, r: seen.append((done, total, r.seed)))
    assert [r.seed for r in results] == [10, 11, 12] and seen == [(1, 3, 10), (2, 3, 11), (3, 3, 12)]
    assert [r.steps for r in results] == [4, 2, 4]
    assert results[1].error.startswith("ValueError: bad seed") and results[0].error is None is results[2].error
    assert videos == [tmp_path / "episode_10.gif"] and videos[0].exists()
    assert summarize(results)["crashed"] == 1


def test_evaluate_runs_to_its_own_step_limit_past_the_environment_default():
    """Push-T's wrapper ends an episode after its own max_steps (300 by default); evaluate must not
    cut longer evaluations short."""
    pytest.importorskip("gym_pusht")

    class Still:
        def reset(self, seed=None):
            pass

        def act(self, observation):
            return np.array([20.0, 20.0])  # in a corner, away from the block: never a success

    (result,), _ = evaluate(Still(), episodes=1, seed=5, max_steps=305)
    assert result.error is None and not result.success and result.steps == 305


# --- the summary and the files ------------------------------------------------------------------------
RESULTS = [
    EpisodeResult(seed=1, success=True, max_coverage=0.96, steps=40, seconds=1.0, chunk_latencies=[0.001, 0.004]),
    EpisodeResult(seed=2, success=False, max_coverage=0.5, steps=100, seconds=2.0, chunk_latencies=[0.002, 0.003]),
    EpisodeResult(seed=3, success=False, max_coverage=0.1, steps=3, seconds=0.1, error="RuntimeError: boom",
                  chunk_latencies=[]),
    EpisodeResult(seed=4, success=True, max_coverage=0.98, steps=57, seconds=1.5, chunk_latencies=[0.010]),
]


def test_summarize_by_hand():
    summary = summarize(RESULTS)
    assert summary["episodes"] == 4 and summary["chunks"] == 5 and summary["crashed"] == 1
    assert summary["success_rate"] == pytest.approx(0.5)
    assert summary["mean_max_coverage"] == pytest.approx((0.96 + 0.5 + 0.1 + 0.98) / 4)
    assert summary["mean_steps"] == pytest.approx(50.0)
    # Latencies 1, 2, 3, 4, 10 ms: median 3; p95 at rank 0.95 * 4 = 3.8 between 4 and 10: 4 + 0.8 * 6.
    assert summary["latency_median_ms"] == pytest.approx(3.0)
    assert summary["latency_p95_ms"] == pytest.approx(8.8)
    assert summary["latency_mean_ms"] == pytest.approx(4.0)


def test_summarize_without_latencies_or_episodes():
    summary = summarize(RESULTS[2:3])
    assert summary["chunks"] == 0 and "latency_median_ms" not in summary
    empty = summarize([])
    assert empty["episodes"] == 0 and math.isnan(empty["success_rate"]) and math.isnan(empty["mean_max_coverage"])


def test_write_results(tmp_path):
    summary = summarize(RESULTS)
    table, metrics = write_results(tmp_path / "new" / "eval", RESULTS, summary)
    assert table == tmp_path / "new" / "eval" / "episodes.csv" and metrics.name == "metrics.json"
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["seed", "success", "max_coverage", "steps", "seconds", "chunks", "median_chunk_ms",
                             "error"]
    assert [r["seed"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0] == {"seed": "1", "success": "1", "max_coverage": "0.9600", "steps": "40", "seconds": "1.000",
                       "chunks": "2", "median_chunk_ms": "2.50", "error": ""}
    assert rows[2]["success"] == "0" and rows[2]["median_chunk_ms"] == "nan"
    assert rows[2]["error"] == "RuntimeError: boom"
    assert rows[3]["median_chunk_ms"] == "10.00"
    assert json.loads(metrics.read_text()) == summary


def test_result_rows_leave_out_the_latencies():
    rows = result_rows(RESULTS[:1])
    assert rows == [{"seed": 1, "success": True, "max_coverage": 0.96, "steps": 40, "seconds": 1.0, "error": None}]


def test_write_gif_writes_every_frame(tmp_path):
    from PIL import Image

    frames = [np.full((10, 12, 3), (40 * k, 255 - 40 * k, 100), dtype=np.uint8) for k in range(5)]
    path = write_gif(tmp_path / "sub" / "episode.gif", frames, fps=5, size=32)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.size == (32, 32) and gif.n_frames == 5 and gif.is_animated
        assert gif.info["duration"] == 200 and gif.info.get("loop") == 0
        gif.seek(3)
        r, g, b = gif.convert("RGB").getpixel((16, 16))
        assert abs(r - 120) <= 8 and abs(g - 135) <= 8


def test_write_gif_needs_frames(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        write_gif(tmp_path / "x.gif", [])
